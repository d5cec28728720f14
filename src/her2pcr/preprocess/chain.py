"""The deterministic preprocessing chain: one object for training, evaluation, validation and serving.

Default order: bias-field correction of each whole volume, crop to the tumour box widened in-plane by a margin
in mm (the peritumoural region carries signal), one intensity reference per exam (so enhancement survives),
resampling in-plane to one physical spacing, pad/crop to the CNN input size, derived subtraction inputs, stacks
of adjacent slices as channels. The reference study's exact setting (section 4.2: no margin, native spacing,
zero-pad to 156, each input over its own maximum) is ``conf/profiles/paper.yaml``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from her2pcr.preprocess.bias import N4BiasCorrection
from her2pcr.preprocess.settings import PreprocessConfig, phase_names
from her2pcr.preprocess.voi import (
    CropToBox,
    CropWithMargin,
    ExamReferenceScale,
    NormaliseMax,
    PadOrCropInPlane,
    ResampleInPlane,
    SliceStacks,
    subtraction_name,
)

#: Bump when the chain's behaviour changes without a config change, so cached outputs are invalidated.
CHAIN_VERSION = 3


class PreprocessChain:
    """Exam (phase, slice, row, column) + spacing + tumour box -> CNN inputs by name.

    ``chain(image4d, spacing, box)`` returns ``{"pre": x0, "post1": x1, ..., "sub1": x1 - x0, ...}``,
    each float32 of shape (n_stacks, input_size, input_size, channels) in [0, 1], where n_stacks is the
    number of box slices inside the volume.
    """

    def __init__(self, config: PreprocessConfig | None = None) -> None:
        self.config = cfg = config if config is not None else PreprocessConfig()
        self.bias = N4BiasCorrection(mode=cfg.n4_mode, shrink_factor=cfg.n4_shrink_factor)
        self.box = CropToBox(clip=True)
        self.crop = CropWithMargin(margin_mm=cfg.margin_mm)
        self.resample = ResampleInPlane(target_mm=cfg.spacing_mm,
                                        fit_size=cfg.input_size if cfg.fit_voi else None)
        self.pad = PadOrCropInPlane(size=cfg.input_size)
        self.stacks = SliceStacks(channels=cfg.channels)
        self.normalise = NormaliseMax(input_ndim=3) if cfg.intensity == "max_per_input" \
            else ExamReferenceScale(intensity_range=cfg.intensity_range,
                                    basis="enhancement" if cfg.intensity == "exam_enhancement" else "pre")

    def __repr__(self) -> str:
        return f"PreprocessChain({self.config!r})"

    def _transforms(self) -> tuple:
        return self.bias, self.box, self.crop, self.resample, self.pad, self.stacks, self.normalise

    def __call__(self, image4d: np.ndarray, spacing: Sequence[float], box: Sequence[int]) -> dict[str, np.ndarray]:
        image4d = np.asarray(image4d)
        if image4d.ndim != 4:
            raise ValueError(f"expected a 4-D (phase, slice, row, column) exam, got shape {image4d.shape}")
        # Validate the box before the (slow) bias correction, so a bad annotation fails fast.
        box_index = self.box.slices(image4d.shape[1:], box)
        corrected = self.bias(image4d, spacing)  # whole volume: the field needs the whole breast
        voi = self.crop(corrected, spacing, box).astype(np.float32)  # (phase, slice, row, column)
        if isinstance(self.normalise, ExamReferenceScale):
            voi = self.normalise(voi, corrected[(slice(None), *box_index)])
        voi = self.pad(self.resample(voi, spacing))
        names = phase_names(image4d.shape[0])
        volumes = dict(zip(names, voi, strict=True))
        if self.config.subtractions:
            volumes.update({subtraction_name(p): volumes[p] - volumes["pre"] for p in names[1:]})
        out = {}
        for name, volume in volumes.items():
            stacked = self.stacks(volume)  # (stack, size, size, channels)
            scaled = self.normalise(stacked) if isinstance(self.normalise, NormaliseMax) \
                else np.clip(stacked, 0.0, 1.0)
            # Rounded to float16, the precision data/processed stores, so a served exam and its stored
            # inputs are the same numbers (1e-3 in [0, 1], far below the image noise).
            out[name] = scaled.astype(np.float16).astype(np.float32)
        return out

    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of everything that determines the output (cache key).

        Covers the config, ``CHAIN_VERSION`` and each transform's type and settings, read from its attributes
        (so a new setting is hashed without anyone writing it down; they include N4 constants such as
        iterations that the config does not expose). Library versions are pinned by the lock file.
        """
        payload = {
            "version": CHAIN_VERSION,
            "config": self.config.model_dump(mode="json"),
            "transforms": [transform_settings(t) for t in self._transforms()],
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def transform_settings(transform) -> dict:
    """A transform's type and settings (its attributes, nested transforms included), as JSON-ready values."""
    def value(v):
        if isinstance(v, tuple | list):
            return [value(x) for x in v]
        if isinstance(v, bool | int | float | str) or v is None:
            return v
        if hasattr(v, "__dict__"):
            return transform_settings(v)
        raise TypeError(f"{type(transform).__qualname__}: setting of type {type(v).__name__} cannot be fingerprinted")

    return {"type": type(transform).__qualname__, **{k: value(v) for k, v in sorted(vars(transform).items())}}

"""The deterministic preprocessing chain: one object for training, evaluation, validation and serving.

Order follows the reference study (section 4.2): bias-field correction of each
whole volume, crop to the tumour box, zero-pad in-plane to the CNN input size,
stacks of adjacent slices as channels, normalisation of each input by its maximum.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from her2pcr.preprocess.bias import N4BiasCorrection
from her2pcr.preprocess.voi import CropToBox, NormaliseMax, PadOrCropInPlane, SliceStacks

#: Bump when the chain's behaviour changes without a config change, so cached outputs are invalidated.
CHAIN_VERSION = 1


class PreprocessConfig(BaseModel):
    """Settings of the deterministic chain (the ``preprocess`` section of params)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n4_mode: Literal["per_exam", "per_phase", "off"] = "per_exam"
    n4_shrink_factor: int = Field(default=4, ge=1)
    input_size: int = Field(default=156, ge=1)
    channels: int = Field(default=3, ge=1)

    @field_validator("channels")
    @classmethod
    def _odd_channels(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"channels must be odd (a centre slice and its neighbours), got {value}")
        return value


def phase_names(n_phases: int) -> list[str]:
    """Input names of an exam's phases: ``pre``, ``post1``, ``post2``, ..."""
    if n_phases < 1:
        raise ValueError("an exam needs at least one phase")
    return ["pre"] + [f"post{k}" for k in range(1, n_phases)]


class PreprocessChain:
    """Exam (phase, slice, row, column) + spacing + tumour box -> per-phase CNN inputs.

    ``chain(image4d, spacing, box)`` returns ``{"pre": x0, "post1": x1, ...}``,
    each float32 of shape (n_stacks, input_size, input_size, channels) in [0, 1],
    where n_stacks is the number of box slices inside the volume.
    """

    def __init__(self, config: PreprocessConfig | None = None) -> None:
        self.config = config if config is not None else PreprocessConfig()
        self.bias = N4BiasCorrection(mode=self.config.n4_mode, shrink_factor=self.config.n4_shrink_factor)
        self.crop = CropToBox(clip=True)
        self.pad = PadOrCropInPlane(size=self.config.input_size)
        self.stacks = SliceStacks(channels=self.config.channels)
        self.normalise = NormaliseMax(input_ndim=3)

    def __repr__(self) -> str:
        return f"PreprocessChain({self.config!r})"

    def __call__(self, image4d: np.ndarray, spacing: Sequence[float], box: Sequence[int]) -> dict[str, np.ndarray]:
        image4d = np.asarray(image4d)
        if image4d.ndim != 4:
            raise ValueError(f"expected a 4-D (phase, slice, row, column) exam, got shape {image4d.shape}")
        # Validate the box before the (slow) bias correction, so a bad annotation fails fast.
        self.crop.slices(image4d.shape[1:], box)
        corrected = self.bias(image4d, spacing)  # whole volume: the field needs the whole breast
        voi = self.crop(corrected, box)  # (phase, slice, row, column)
        stacks = self.normalise(self.stacks(self.pad(voi)))  # (phase, stack, size, size, channels)
        return {name: stacks[i] for i, name in enumerate(phase_names(image4d.shape[0]))}

    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of everything that determines the output (cache key).

        Covers the config, ``CHAIN_VERSION`` and each transform's settings (which
        include N4 constants such as iterations that the config does not expose).
        Library versions are pinned by the lock file and not hashed here.
        """
        payload = {
            "version": CHAIN_VERSION,
            "config": self.config.model_dump(mode="json"),
            "transforms": [repr(t) for t in (self.bias, self.crop, self.pad, self.stacks, self.normalise)],
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

"""Training-time augmentation applied identically to every phase of a sample (Supplementary Figure 4).

Rotations, horizontal and vertical flips, translations and random resizing (zoom) are drawn once per sample and
applied to all of its phase inputs, so that the phases stay co-registered. Keras' random image layers draw one
transform per sample of the tensor they receive, so the phases are stacked along the channel axis, transformed
by ``RandomFlip -> RandomRotation -> RandomTranslation -> RandomZoom`` and split back. Areas moved into view are
filled with 0, like the zero padding of the VOIs, and the result is clipped to [0, 1] (bilinear interpolation of
values in [0, 1] cannot leave it except by rounding).

``Augmenter`` is a Keras layer taking and returning ``{phase: (N, H, W, C)}`` (or unbatched ``(H, W, C)`` in a
``tf.data`` map on the TensorFlow backend). It is the identity when ``training=False`` (e.g. inside
``model.predict``) and when ``strength == 0``. With a ``seed`` the sequence of transforms is reproducible: two
augmenters built from the same config produce the same outputs for the same calls.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Literal

import keras
from pydantic import BaseModel, ConfigDict, Field

# Ranges are clamped so that a large strength cannot produce invalid layer arguments.
_MAX_ROTATION_DEG = 180.0
_MAX_FRACTION = 0.9


class AugmentConfig(BaseModel):
    """Ranges at ``strength == 1``; ``strength`` scales rotation, translation and zoom, and 0 turns all off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rotation_deg: float = Field(20.0, ge=0, le=_MAX_ROTATION_DEG, description="uniform in [-r, r] degrees")
    horizontal_flip: bool = True
    vertical_flip: bool = True
    translation: float = Field(0.1, ge=0, le=_MAX_FRACTION, description="fraction of height/width, each way")
    zoom: float = Field(0.1, ge=0, le=_MAX_FRACTION, description="random resizing: scale in [1 - z, 1 + z]")
    strength: float = Field(1.0, ge=0, description="0 = no augmentation")
    interpolation: Literal["bilinear", "nearest"] = "bilinear"
    seed: int | None = None


@keras.saving.register_keras_serializable(package="her2pcr")
class Augmenter(keras.layers.Layer):
    """Same random geometric transform for every phase of a sample; identity at inference."""

    def __init__(self, config: AugmentConfig | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config or AugmentConfig()
        cfg, s = self.config, self.config.strength

        def seed(offset: int) -> int | None:
            return None if cfg.seed is None else cfg.seed + offset

        self._steps: list[keras.layers.Layer] = []
        if s == 0:
            return
        flip_mode = {(True, True): "horizontal_and_vertical", (True, False): "horizontal",
                     (False, True): "vertical"}.get((cfg.horizontal_flip, cfg.vertical_flip))
        if flip_mode:
            self._steps.append(keras.layers.RandomFlip(flip_mode, seed=seed(0), name="flip"))
        fill = {"fill_mode": "constant", "fill_value": 0.0, "interpolation": cfg.interpolation}
        rotation = min(cfg.rotation_deg * s, _MAX_ROTATION_DEG) / 360.0  # Keras' factor is a fraction of 2*pi
        if rotation > 0:
            self._steps.append(keras.layers.RandomRotation(rotation, seed=seed(1), name="rotation", **fill))
        shift = min(cfg.translation * s, _MAX_FRACTION)
        if shift > 0:
            self._steps.append(keras.layers.RandomTranslation(shift, shift, seed=seed(2), name="translation",
                                                              **fill))
        zoom = min(cfg.zoom * s, _MAX_FRACTION)
        if zoom > 0:  # width_factor=None keeps the aspect ratio: a random isotropic resizing
            self._steps.append(keras.layers.RandomZoom((-zoom, zoom), seed=seed(3), name="zoom", **fill))

    @property
    def steps(self) -> tuple[keras.layers.Layer, ...]:
        """The Keras random layers applied in order (empty when ``strength == 0``)."""
        return tuple(self._steps)

    def build(self, input_shape: Mapping) -> None:
        shapes = list(input_shape.values())
        stacked = (*shapes[0][:-1], sum(int(s[-1]) for s in shapes))
        for step in self._steps:
            step.build(stacked)
        self.built = True

    def call(self, inputs: Mapping, training: bool = True) -> dict:
        phases = list(inputs)
        if not training or not self._steps:
            return {p: inputs[p] for p in phases}
        widths = [int(inputs[p].shape[-1]) for p in phases]
        x = keras.ops.concatenate([keras.ops.cast(inputs[p], self.compute_dtype) for p in phases], axis=-1)
        for step in self._steps:
            x = step(x, training=True)
        x = keras.ops.clip(x, 0.0, 1.0)
        if len(phases) == 1:
            return {phases[0]: x}
        bounds = [sum(widths[: i + 1]) for i in range(len(widths) - 1)]
        return dict(zip(phases, keras.ops.split(x, bounds, axis=-1), strict=True))

    def compute_output_spec(self, inputs: Mapping, training: bool = True) -> dict:
        return {p: keras.KerasTensor(inputs[p].shape, dtype=self.compute_dtype) for p in inputs}

    def get_config(self) -> dict:
        return {**super().get_config(), "config": self.config.model_dump()}

    @classmethod
    def from_config(cls, config: dict) -> Augmenter:
        config = dict(config)
        return cls(AugmentConfig(**config.pop("config")), **config)


def with_augmentation(model: keras.Model, augmenter: Augmenter) -> keras.Model:
    """``model`` preceded by ``augmenter``: augments in ``fit`` only, identical to ``model`` in ``predict``.

    The inner model is shared (same weights), so save or explain ``model`` itself after training.
    """
    inputs = {p: keras.Input(t.shape[1:], name=t.name, dtype=t.dtype) for p, t in model.input.items()}
    with warnings.catch_warnings():  # dict keys are phase names, input names the paper's (see cnn.build_model)
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict", category=UserWarning)
        return keras.Model(inputs, model(augmenter(inputs)), name=f"{model.name}_augmented")

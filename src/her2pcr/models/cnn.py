"""Multi-input CNN: one convolutional branch per DCE-MRI phase, concatenated deep features, dense head.

The paper configuration (``paper_config()``) reproduces Supplementary Table 3 of the reference study layer by
layer (names, output shapes, 3,343,938 trainable parameters). Two details of that table differ from the prose of
section 4.3 and the table wins, because it is the Keras ``model.summary()`` of the model that was trained:

- max pooling follows *every* convolution, including block 1 (the text says block 1 has none; without it the
  flattened features would be 17x17x64 per branch and the parameter count would not match), so
  ``pool_from_block=1``;
- the output is ``dense_2`` with **2 units**, and the text says this last layer has a sigmoid activation, so the
  head is ``Dense(2, activation="sigmoid")`` trained with binary cross-entropy on one-hot targets (Keras 2 idiom).
  P(pCR) is the positive-class unit, ``output[:, 1]`` (see ``positive_class``); ``encode_labels`` builds targets.

Layers are named Keras-2 style (``conv2d_1``, ``max_pooling2d_1``, ...) in the same interleaved creation order as
the table (block by block, one layer per branch), and inputs are ``INPUT_DCEMRI_<PHASE>``. The model takes a dict
keyed by phase name (``{"pre": x, "post3": y}``), matching the preprocessing contract.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from collections.abc import Mapping
from typing import Literal

import keras
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Activation = Literal["relu", "elu", "selu", "tanh", "sigmoid", "leaky_relu", "gelu", "silu"]
Initializer = Literal[
    "random_normal", "random_uniform", "glorot_uniform", "glorot_normal",
    "he_normal", "he_uniform", "lecun_normal", "lecun_uniform",
]
PHASE_PATTERN = r"^(pre|post[1-9][0-9]*|sub[1-9][0-9]*)$"


class CNNConfig(BaseModel):
    """Architecture of the multi-input CNN. Defaults are Supplementary Tables 3 and 4 except ``phases``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phases: list[str] = Field(min_length=1, max_length=4, description="one input branch per phase, in order")
    input_size: int = Field(156, ge=8, description="height = width of each phase input")
    channels: int = Field(3, ge=1, description="adjacent slices stacked as channels")
    blocks: int = Field(4, ge=1, description="convolutional blocks per branch")
    filters: list[int] = Field(default_factory=lambda: [32, 32, 64, 64], description="kernels per block")
    kernel_size: int = Field(3, ge=1)
    padding: Literal["valid", "same"] = "valid"
    pool_from_block: int = Field(1, ge=1, description="first block (1-based) followed by max pooling")
    pool_size: int = Field(2, ge=2)
    dropout_every: int = Field(2, ge=1, description="a dropout layer after every this many blocks")
    dropout_rates: list[float] = Field(default_factory=lambda: [0.25, 0.30], description="one per dropout layer")
    dense_units: int = Field(512, ge=1)
    dense_dropout: float = Field(0.40, ge=0, lt=1)
    activation: Activation = "relu"
    initializer: Initializer = "random_normal"
    normalization: Literal["none", "batch"] = Field("none", description="batch: conv -> batch norm -> activation")
    head: Literal["flatten", "global_average"] = Field("flatten", description="how a branch's maps become features")
    output_units: Literal[1, 2] = 2
    output_activation: Literal["sigmoid", "softmax"] = "sigmoid"

    @field_validator("phases")
    @classmethod
    def _phase_names(cls, phases: list[str]) -> list[str]:
        bad = [p for p in phases if not re.match(PHASE_PATTERN, p)]
        if bad:
            raise ValueError(f"phase names must be 'pre', 'postN' or 'subN': {bad}")
        if len(set(phases)) != len(phases):
            raise ValueError(f"duplicate phases: {phases}")
        return phases

    @field_validator("dropout_rates")
    @classmethod
    def _rates_in_range(cls, rates: list[float]) -> list[float]:
        if any(not 0 <= r < 1 for r in rates):
            raise ValueError(f"dropout rates must be in [0, 1): {rates}")
        return rates

    @model_validator(mode="after")
    def _consistent(self) -> CNNConfig:
        if len(self.filters) != self.blocks or min(self.filters) < 1:
            raise ValueError(f"filters needs {self.blocks} positive counts, got {self.filters}")
        if len(self.dropout_rates) != self.blocks // self.dropout_every:
            raise ValueError(f"dropout_rates needs {self.blocks // self.dropout_every} values "
                             f"(one per {self.dropout_every} blocks), got {self.dropout_rates}")
        if self.output_units == 1 and self.output_activation == "softmax":
            raise ValueError("a 1-unit softmax is constant; use sigmoid")
        if self.feature_map_size() < 1:
            raise ValueError(f"input_size {self.input_size} too small for {self.blocks} blocks")
        return self

    def feature_map_size(self) -> int:
        """Spatial size of each branch's last feature map (before flattening)."""
        size = self.input_size
        for block in range(1, self.blocks + 1):
            if self.padding == "valid":
                size -= self.kernel_size - 1
            if block >= self.pool_from_block:
                size //= self.pool_size
        return size


def paper_config(phases: list[str] | None = None) -> CNNConfig:
    """Supplementary Tables 3 and 4: two inputs, pre-contrast and 3rd post-contrast (the best pair, "Pre-3").

    Table 3 calls the second input ``INPUT_DCEMRI_POST``; with the project's phase names it is ``..._POST3``.
    """
    return CNNConfig(
        phases=phases or ["pre", "post3"], input_size=156, channels=3, blocks=4, filters=[32, 32, 64, 64],
        kernel_size=3, padding="valid", pool_from_block=1, pool_size=2, dropout_every=2,
        dropout_rates=[0.25, 0.30], dense_units=512, dense_dropout=0.40, activation="relu",
        initializer="random_normal", output_units=2, output_activation="sigmoid",
    )


def input_name(phase: str) -> str:
    """Name of a phase's input layer, as in Supplementary Table 3."""
    return f"INPUT_DCEMRI_{phase.upper()}"


class _Namer:
    """Keras-2 style names: ``conv2d_1``, ``conv2d_2``, ... counted per layer type in creation order."""

    def __init__(self) -> None:
        self._counts: defaultdict[str, int] = defaultdict(int)

    def __call__(self, kind: str) -> str:
        self._counts[kind] += 1
        return f"{kind}_{self._counts[kind]}"


def build_model(config: CNNConfig) -> keras.Model:
    """The multi-input CNN for ``config``; inputs are a dict keyed by phase name.

    Layers are created block by block across branches (all branches' conv, then all pools, then all dropouts)
    so that names and order follow Supplementary Table 3. Weight initialisation draws from Keras' global RNG:
    call ``keras.utils.set_random_seed`` first for reproducible weights.
    """
    name = _Namer()
    inputs = {p: keras.Input((config.input_size, config.input_size, config.channels), name=input_name(p),
                             dtype="float32") for p in config.phases}
    x = dict(inputs)
    batch_norm = config.normalization == "batch"
    for block in range(1, config.blocks + 1):
        for p in config.phases:
            # With batch norm the convolution is linear and unbiased; the activation follows the normalisation.
            x[p] = keras.layers.Conv2D(config.filters[block - 1], config.kernel_size, padding=config.padding,
                                       activation=None if batch_norm else config.activation,
                                       use_bias=not batch_norm, kernel_initializer=config.initializer,
                                       name=name("conv2d"))(x[p])
        if batch_norm:
            for p in config.phases:
                x[p] = keras.layers.BatchNormalization(name=name("batch_normalization"))(x[p])
                x[p] = keras.layers.Activation(config.activation, name=name("activation"))(x[p])
        if block >= config.pool_from_block:
            for p in config.phases:
                x[p] = keras.layers.MaxPooling2D(config.pool_size, name=name("max_pooling2d"))(x[p])
        if block % config.dropout_every == 0:
            rate = config.dropout_rates[block // config.dropout_every - 1]
            for p in config.phases:
                x[p] = keras.layers.Dropout(rate, name=name("dropout"))(x[p])
    if config.head == "flatten":
        flat = [keras.layers.Flatten(name=name("flatten"))(x[p]) for p in config.phases]
    else:  # a few hundred features instead of tens of thousands: less to memorise on 85 patients
        flat = [keras.layers.GlobalAveragePooling2D(name=name("global_average_pooling2d"))(x[p])
                for p in config.phases]
    features = keras.layers.Concatenate(name=name("concatenate"))(flat) if len(flat) > 1 else flat[0]
    hidden = keras.layers.Dense(config.dense_units, activation=config.activation,
                                kernel_initializer=config.initializer, name=name("dense"))(features)
    hidden = keras.layers.Dropout(config.dense_dropout, name=name("dropout"))(hidden)
    output = keras.layers.Dense(config.output_units, activation=config.output_activation,
                                kernel_initializer=config.initializer, name=name("dense"))(hidden)
    with warnings.catch_warnings():
        # Keras asks dict keys to equal input names; ours are phase names by contract while the layers keep the
        # paper's INPUT_DCEMRI_* names. Calls, fit, save and load all map the dict by key (tested).
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict", category=UserWarning)
        return keras.Model(inputs=inputs, outputs=output, name="her2pcr_cnn")


def build_ensemble(members: list[keras.Model]) -> keras.Model:
    """One model whose P(pCR) is the mean of its members' outputs (the fold models of cross-validation).

    Members share the phase inputs; a single member is returned as it is.
    """
    if len(members) == 1:
        return members[0]
    phases = model_phases(members[0])
    shape = members[0].input[phases[0]].shape[1:]
    inputs = {p: keras.Input(shape, name=input_name(p), dtype="float32") for p in phases}
    outputs = [keras.layers.Identity(name=f"member_{k + 1}")(m(inputs)) for k, m in enumerate(members)]
    for k, m in enumerate(members):
        m.name = f"fold_{k + 1}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict", category=UserWarning)
        return keras.Model(inputs=inputs, outputs=keras.layers.Average(name="ensemble_mean")(outputs),
                           name="her2pcr_cnn_ensemble")


def ensemble_members(model: keras.Model) -> list[keras.Model]:
    """The member models of an ensemble built by ``build_ensemble``; ``[model]`` for a single model."""
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return members or [model]


def model_phases(model: keras.Model) -> list[str]:
    """Phase names a built model expects, in input order."""
    if isinstance(model.input, Mapping):
        return list(model.input)
    return [t.name.removeprefix("INPUT_DCEMRI_").lower() for t in model.inputs]  # pragma: no cover


def positive_class(outputs):
    """P(pCR) from the network output, shape (N,): the positive-class unit of a 2-unit head, else the only unit.

    Works on NumPy arrays and backend tensors (used inside gradients by Grad-CAM).
    """
    return outputs[:, -1]


def encode_labels(labels, output_units: int) -> np.ndarray:
    """Training targets for the head: one-hot (N, 2) for a 2-unit head, (N, 1) for a single sigmoid."""
    y = np.asarray(labels, dtype="float32").reshape(-1)
    if output_units == 2:
        return np.stack([1.0 - y, y], axis=1).astype("float32")
    return y[:, None]


def predict_probability(model: keras.Model, inputs: Mapping[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
    """P(pCR) per slice stack, shape (N,), whichever head the model has."""
    feed = {p: np.asarray(inputs[p], dtype="float32") for p in model_phases(model)}
    if len(next(iter(feed.values()))) <= batch_size:  # one batch: skip predict()'s per-call set-up (serving)
        outputs = model.predict_on_batch(feed)
    else:
        outputs = model.predict(feed, batch_size=batch_size, verbose=0)
    return np.asarray(positive_class(np.asarray(outputs)), dtype="float64")

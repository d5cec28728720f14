"""Grad-CAM, guided backpropagation and guided Grad-CAM per phase branch, for one sample.

The explained score is the logit of P(pCR), i.e. the pre-activation of the output layer as in the Grad-CAM paper
(Selvaraju et al.): a saturated sigmoid would otherwise make the gradients vanish. Explanations run on a clone of
the model with a linear output layer (``z1 - z0`` for a 2-unit softmax, the positive unit's logit for sigmoid
heads); the original model is never modified. For a phase:

- ``gradcam``: the last convolution of that phase's branch gives activations ``A`` (h, w, k). The rest of the
  network is cut out as a sub-model ``head(A, other phases) -> output``, so the gradient d score / d A is an
  ordinary input gradient; channel weights are its spatial mean, the map is ``relu(sum_k w_k A_k)``, resized
  bilinearly to the input size and divided by its maximum (all zeros when nothing contributes positively).
- ``guided_backprop``: the gradient of the score with respect to that phase's input through a *clone* of the
  model whose hidden activations are replaced by "guided" ones: same forward values, but the backward pass keeps
  only positive incoming gradients *and* positive forward inputs (for ReLU: ``g * (g > 0) * (x > 0)``, Springenberg
  et al. 2015). For other activations the local derivative replaces ``(x > 0)``. The custom gradient is written
  once with ``keras.ops.custom_gradient``.
- ``guided_gradcam``: ``guided_backprop * gradcam[..., None]`` (H, W, C).

Only ``_gradient`` knows the backend (TensorFlow: ``GradientTape``; JAX: ``jax.grad``); the models stay
backend-agnostic Keras 3.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import keras
import numpy as np
from keras import ops

from her2pcr.models.cnn import ensemble_members, input_name, model_phases, positive_class

_ACT_KEY = "__activations__"


def _gradient(fn: Callable, x) -> np.ndarray:
    """d fn(x) / d x for a scalar-valued ``fn``, on the active Keras backend."""
    backend = keras.backend.backend()
    x = ops.convert_to_tensor(x, dtype="float32")
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return np.asarray(tape.gradient(y, x))
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(fn)(x))
    raise NotImplementedError(f"gradients on the {backend!r} backend")


def _quiet_model(inputs, outputs, name: str | None = None) -> keras.Model:
    with warnings.catch_warnings():  # dict keys are not input names on purpose (see cnn.build_model)
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict", category=UserWarning)
        return keras.Model(inputs, outputs, name=name)


def _batch(inputs: Mapping[str, np.ndarray], phases: list[str]) -> dict:
    feed = {}
    for p in phases:
        x = np.asarray(inputs[p], dtype="float32")
        x = x[None] if x.ndim == 3 else x
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(f"{p}: expected one sample (1, H, W, C) or (H, W, C), got {x.shape}")
        feed[p] = ops.convert_to_tensor(x)
    return feed


def _branch_input(layer: keras.layers.Layer) -> str | None:
    """Name of the InputLayer a single-input layer descends from, None past the branches' merge."""
    tensor = layer.input
    while not isinstance(tensor, list | tuple | dict):
        operation = tensor._keras_history.operation
        if isinstance(operation, keras.layers.InputLayer):
            return operation.name
        tensor = operation.input
    return None


def last_conv_layer(model: keras.Model, phase: str) -> keras.layers.Layer:
    """The last Conv2D of ``phase``'s branch."""
    target = model.input[phase].name if isinstance(model.input, Mapping) else input_name(phase)
    convs = [layer for layer in model.layers
             if isinstance(layer, keras.layers.Conv2D) and _branch_input(layer) == target]
    if not convs:
        raise ValueError(f"no convolution in the branch of phase {phase!r}")
    return convs[-1]


def gradcam(model: keras.Model, inputs: Mapping[str, np.ndarray], phase: str) -> np.ndarray:
    """Grad-CAM of the logit of P(pCR) for ``phase`` at its branch's last convolution: (H, W) float32 in [0, 1]."""
    phases = model_phases(model)
    feed = _batch(inputs, phases)
    scored = _score_model(model, guided=False)
    conv = scored.get_layer(last_conv_layer(model, phase).name)
    activations = _quiet_model(scored.input, conv.output)(feed, training=False)
    others = {p: scored.input[p] for p in phases if p != phase}
    head = _quiet_model({_ACT_KEY: conv.output, **others}, scored.output)
    rest = {p: feed[p] for p in others}
    logit = _logit_of_pcr(model)

    def score(a):
        return logit(head({_ACT_KEY: a, **rest}, training=False))[0]

    grads = _gradient(score, activations)[0]  # (h, w, k)
    acts = np.asarray(activations)[0]
    cam = np.maximum((acts * grads.mean(axis=(0, 1))).sum(axis=-1), 0.0)
    height, width = feed[phase].shape[1:3]
    cam = np.asarray(ops.image.resize(cam[None, :, :, None].astype("float32"), (height, width),
                                      interpolation="bilinear"))[0, :, :, 0]
    cam = np.clip(cam, 0.0, None)
    peak = float(cam.max())
    return (cam / peak if peak > 0 else np.zeros_like(cam)).astype("float32")


# d activation / d pre-activation, written with keras.ops so the guided gradient is backend-agnostic.
_SQRT2 = math.sqrt(2.0)
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
_DERIVATIVES: dict[str, Callable] = {
    "relu": lambda x: ops.cast(x > 0, x.dtype),
    "elu": lambda x: ops.where(x > 0, 1.0, ops.exp(x)),
    "selu": lambda x: _SELU_SCALE * ops.where(x > 0, 1.0, _SELU_ALPHA * ops.exp(x)),
    "leaky_relu": lambda x: ops.where(x > 0, 1.0, 0.2),
    "tanh": lambda x: 1.0 - ops.tanh(x) ** 2,
    "sigmoid": lambda x: ops.sigmoid(x) * (1.0 - ops.sigmoid(x)),
    "silu": lambda x: ops.sigmoid(x) * (1.0 + x * (1.0 - ops.sigmoid(x))),
    "gelu": lambda x: 0.5 * (1.0 + ops.erf(x / _SQRT2)) + x * ops.exp(-0.5 * x * x) / math.sqrt(2 * math.pi),
}


def _guided_activation(name: str) -> Callable:
    forward = keras.activations.get(name)
    derivative = _DERIVATIVES[name]

    @ops.custom_gradient
    def guided(x):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return upstream * ops.cast(upstream > 0, upstream.dtype) * derivative(x)

        return forward(x), grad

    return guided


def _output_layer(model: keras.Model) -> keras.layers.Layer:
    return model.output._keras_history.operation


def _score_model(model: keras.Model, guided: bool) -> keras.Model:
    """Clone of ``model`` (same weights, same layer names) whose output layer is linear (logits), and, if
    ``guided``, whose hidden activations have guided gradients."""
    output_layer = _output_layer(model)

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer is output_layer:
            return layer.__class__.from_config({**config, "activation": "linear"})
        activation = config.get("activation")
        if not guided or activation not in _DERIVATIVES:
            return layer.__class__.from_config(config)
        new = layer.__class__.from_config({**config, "activation": "linear"})
        new.activation = _guided_activation(activation)
        return new

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict", category=UserWarning)
        scored = keras.models.clone_model(model, clone_function=clone)
    scored.set_weights(model.get_weights())
    return scored


def _logit_of_pcr(model: keras.Model) -> Callable:
    """Maps the logits of ``model``'s output layer to the logit of P(pCR) (a monotone function of it)."""
    config = _output_layer(model).get_config()
    if config.get("activation") == "softmax" and config.get("units") == 2:
        return lambda z: z[:, 1] - z[:, 0]  # softmax over 2 units = sigmoid(z1 - z0)
    return positive_class  # sigmoid units: P(pCR) = sigmoid(z[:, -1])


def guided_model(model: keras.Model) -> keras.Model:
    """A clone of ``model`` (same weights) with guided hidden activations and a linear output layer (logits)."""
    return _score_model(model, guided=True)


def guided_backprop(model: keras.Model, inputs: Mapping[str, np.ndarray], phase: str,
                    guided: keras.Model | None = None) -> np.ndarray:
    """Guided-backpropagation gradient of the logit of P(pCR) w.r.t. ``phase``'s input: (H, W, C) float32.

    Pass ``guided=guided_model(model)`` to reuse one clone across phases and samples.
    """
    guided = guided or guided_model(model)
    phases = model_phases(model)
    feed = _batch(inputs, phases)
    rest = {p: feed[p] for p in phases if p != phase}
    logit = _logit_of_pcr(model)

    def score(x):
        return logit(guided({**rest, phase: x}, training=False))[0]

    return _gradient(score, feed[phase])[0].astype("float32")


def guided_gradcam(model: keras.Model, inputs: Mapping[str, np.ndarray], phase: str,
                   guided: keras.Model | None = None) -> np.ndarray:
    """Guided backpropagation weighted by the upsampled Grad-CAM map: (H, W, C) float32."""
    return guided_backprop(model, inputs, phase, guided) * gradcam(model, inputs, phase)[..., None]


def explain(model: keras.Model, inputs: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """All three maps for every phase of one sample: ``{phase: {"gradcam", "guided_backprop", "guided_gradcam"}}``.

    For an ensemble (``cnn.build_ensemble``) each map is the mean of its members' maps, the explanation of the
    mean prediction's parts.
    """
    members = ensemble_members(model)
    out: dict[str, dict[str, np.ndarray]] = {}
    for member in members:
        guided = guided_model(member)
        for phase in model_phases(member):
            cam = gradcam(member, inputs, phase)
            backprop = guided_backprop(member, inputs, phase, guided)
            maps = {"gradcam": cam, "guided_backprop": backprop, "guided_gradcam": backprop * cam[..., None]}
            for name, value in maps.items():
                out.setdefault(phase, {})[name] = out.get(phase, {}).get(name, 0) + value / len(members)
    return out


def _centre_channel(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype="float32")
    x = x[0] if x.ndim == 4 else x
    return x[..., x.shape[-1] // 2] if x.ndim == 3 else x


def save_figure(path: str | Path, inputs: Mapping[str, np.ndarray], maps: Mapping[str, np.ndarray],
                title: str | None = None, alpha: float = 0.4) -> Path:
    """One column per phase: the centre slice (channel) of the input, and the same with ``maps[phase]`` overlaid.

    ``maps`` values are (H, W) Grad-CAM maps or (H, W, C) guided maps (their centre channel, scaled by its
    largest absolute value, is shown). Written with matplotlib's Agg canvas, no global pyplot state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    phases = [p for p in inputs if p in maps]
    fig = Figure(figsize=(3 * len(phases), 6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(phases), squeeze=False)
    for col, phase in enumerate(phases):
        image = _centre_channel(inputs[phase])
        overlay = _centre_channel(maps[phase])
        scale = float(np.abs(overlay).max()) or 1.0
        overlay = np.abs(overlay) / scale if np.asarray(maps[phase]).ndim == 3 else overlay
        for row in range(2):
            axes[row, col].imshow(image, cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_axis_off()
        axes[1, col].imshow(overlay, cmap="jet", alpha=alpha, vmin=0, vmax=1)
        axes[0, col].set_title(phase)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path

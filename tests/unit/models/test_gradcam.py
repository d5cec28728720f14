"""Grad-CAM, guided backpropagation and guided Grad-CAM on a tiny two-phase model fit on a bright-blob task."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from her2pcr.models.cnn import CNNConfig, build_model, encode_labels, predict_probability
from her2pcr.models.gradcam import (
    _gradient,
    _guided_activation,
    explain,
    gradcam,
    guided_backprop,
    guided_gradcam,
    guided_model,
    last_conv_layer,
    save_figure,
)

SIZE = 32
CONFIG = CNNConfig(phases=["pre", "post1"], input_size=SIZE, padding="same", filters=[4, 4, 8, 8], dense_units=8,
                   dropout_rates=[0.0, 0.0], dense_dropout=0.0, initializer="he_normal")


def blob_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dim noise; positives carry a bright disc at a random place (the same in both phases)."""
    rng = np.random.default_rng(seed)
    x = 0.2 * rng.random((n, SIZE, SIZE, 3), dtype=np.float32)
    y = np.arange(n) % 2
    rows, cols = np.mgrid[:SIZE, :SIZE]
    for i in np.flatnonzero(y):
        r, c = rng.integers(8, SIZE - 8, 2)
        x[i][(rows - r) ** 2 + (cols - c) ** 2 < 16] = 1.0
    return x, y


@pytest.fixture(scope="module")
def fitted():
    keras.utils.set_random_seed(0)
    model = build_model(CONFIG)
    x, y = blob_data(32)
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    model.fit({"pre": x, "post1": x}, encode_labels(y, 2), epochs=6, batch_size=8, verbose=0)
    i = int(np.flatnonzero(y)[0])
    sample = {"pre": x[i : i + 1], "post1": x[i : i + 1]}
    return model, sample, x[i, ..., 1] > 0.9


def test_the_tiny_model_learned_the_blob(fitted):
    model, _, _ = fitted
    x, y = blob_data(16, seed=1)
    assert np.mean((predict_probability(model, {"pre": x, "post1": x}) > 0.5) == y) >= 0.8


def test_last_conv_layer_is_found_per_branch(fitted):
    model, _, _ = fitted
    assert last_conv_layer(model, "pre").name == "conv2d_7"
    assert last_conv_layer(model, "post1").name == "conv2d_8"
    with pytest.raises(KeyError):
        last_conv_layer(model, "post2")


@pytest.mark.parametrize("phase", ["pre", "post1"])
def test_gradcam_is_a_normalised_non_constant_map(fitted, phase):
    model, sample, _ = fitted
    cam = gradcam(model, sample, phase)
    assert cam.shape == (SIZE, SIZE) and cam.dtype == np.float32
    assert np.all(np.isfinite(cam)) and cam.min() >= 0.0
    assert cam.max() == pytest.approx(1.0)
    assert cam.std() > 0.01


@pytest.mark.filterwarnings("ignore:When providing `inputs` as a dict")  # keys are phases by design
def test_gradcam_matches_the_reference_keras_recipe(fitted):
    """Standard recipe: one model returning (conv activations, output), tape gradient of P(pCR) wrt activations.

    For a sigmoid unit, d P / d A = sigma' * d logit / d A, so the normalised maps agree.
    """
    if keras.backend.backend() != "tensorflow":
        pytest.skip("reference written with tf.GradientTape")
    import tensorflow as tf

    model, sample, _ = fitted
    conv = last_conv_layer(model, "pre")
    probe = keras.Model(model.input, [conv.output, model.output])
    with tf.GradientTape() as tape:
        activations, output = probe({k: tf.constant(v) for k, v in sample.items()}, training=False)
        score = output[:, 1]
    grads = tape.gradient(score, activations)[0].numpy()
    cam = np.maximum((activations[0].numpy() * grads.mean(axis=(0, 1))).sum(-1), 0)
    cam = keras.ops.convert_to_numpy(keras.ops.image.resize(cam[None, ..., None], (SIZE, SIZE)))[0, ..., 0]
    np.testing.assert_allclose(gradcam(model, sample, "pre"), cam / cam.max(), atol=1e-4)


def test_guided_relu_passes_only_positive_gradients_through_positive_inputs():
    guided = _guided_activation("relu")
    x = np.array([-1.0, 1.0, 2.0, 0.5], np.float32)
    upstream = keras.ops.convert_to_tensor([1.0, -1.0, 3.0, 0.0])
    grad = _gradient(lambda t: keras.ops.sum(guided(t) * upstream), x)
    np.testing.assert_allclose(grad, [0.0, 0.0, 3.0, 0.0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(guided(keras.ops.convert_to_tensor(x))), np.maximum(x, 0))


def test_guided_backprop_highlights_the_blob(fitted):
    model, sample, blob = fitted
    backprop = guided_backprop(model, sample, "post1")
    assert backprop.shape == (SIZE, SIZE, 3) and np.all(np.isfinite(backprop))
    magnitude = np.abs(backprop).sum(axis=-1)
    assert magnitude[blob].mean() > 2 * magnitude[~blob].mean()


def test_guided_gradcam_and_explain_combine_the_maps(fitted):
    model, sample, _ = fitted
    guided = guided_model(model)
    combined = guided_gradcam(model, sample, "pre", guided)
    expected = guided_backprop(model, sample, "pre", guided) * gradcam(model, sample, "pre")[..., None]
    np.testing.assert_allclose(combined, expected, rtol=1e-5, atol=1e-9)
    maps = explain(model, sample)
    assert set(maps) == {"pre", "post1"}
    assert {k: v.shape for k, v in maps["post1"].items()} == {
        "gradcam": (SIZE, SIZE), "guided_backprop": (SIZE, SIZE, 3), "guided_gradcam": (SIZE, SIZE, 3)}


def test_explaining_leaves_the_model_unchanged(fitted):
    model, sample, _ = fitted
    before = predict_probability(model, sample)
    guided_model(model)
    gradcam(model, sample, "pre")
    assert model.get_layer("dense_2").activation is keras.activations.sigmoid
    assert model.get_layer("conv2d_1").activation is keras.activations.relu
    np.testing.assert_array_equal(predict_probability(model, sample), before)


@pytest.mark.parametrize(("units", "activation"), [(1, "sigmoid"), (2, "softmax")])
def test_other_heads_and_activations_give_finite_maps(units, activation):
    keras.utils.set_random_seed(1)
    config = CONFIG.model_copy(update={"output_units": units, "output_activation": activation, "activation": "elu"})
    model = build_model(config)
    x, _ = blob_data(1)
    sample = {"pre": x, "post1": x[0]}  # an unbatched (H, W, C) sample is accepted too
    cam = gradcam(model, sample, "pre")
    assert cam.shape == (SIZE, SIZE) and np.all(np.isfinite(cam)) and 0 <= cam.min() <= cam.max() <= 1
    assert np.all(np.isfinite(guided_backprop(model, sample, "post1")))


def test_more_than_one_sample_is_rejected(fitted):
    model, _, _ = fitted
    x, _ = blob_data(2)
    with pytest.raises(ValueError, match="one sample"):
        gradcam(model, {"pre": x, "post1": x}, "pre")


def test_save_figure_writes_a_png(fitted, tmp_path):
    model, sample, _ = fitted
    maps = explain(model, sample)
    cams = tmp_path / "figs" / "gradcam.png"
    guided = tmp_path / "guided.png"
    assert save_figure(cams, sample, {p: m["gradcam"] for p, m in maps.items()}, title="pCR") == cams
    save_figure(guided, sample, {p: m["guided_gradcam"] for p, m in maps.items()})
    for path in (cams, guided):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.filterwarnings("ignore:When providing `inputs` as a dict")  # keys are phases by design
def test_a_saved_and_loaded_model_is_explained_the_same(fitted, tmp_path):
    model, sample, _ = fitted
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert last_conv_layer(loaded, "post1").name == "conv2d_8"
    np.testing.assert_allclose(gradcam(loaded, sample, "post1"), gradcam(model, sample, "post1"), atol=1e-6)

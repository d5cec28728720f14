"""Augmentation: one random transform per sample, shared by all its phases; identity at inference."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from pydantic import ValidationError

from her2pcr.models.augment import AugmentConfig, Augmenter, with_augmentation
from her2pcr.models.cnn import CNNConfig, build_model, encode_labels

SIZE = 24


def image_batch(n: int = 4, seed: int = 0) -> np.ndarray:
    """Random texture inside a zero-padded square, like a VOI stack: (n, SIZE, SIZE, 3) in [0, 1]."""
    x = np.zeros((n, SIZE, SIZE, 3), np.float32)
    x[:, 4:-4, 4:-4] = np.random.default_rng(seed).random((n, SIZE - 8, SIZE - 8, 3), dtype=np.float32)
    return x


def numpy(outputs: dict) -> dict[str, np.ndarray]:
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


def test_phases_identical_before_stay_identical_after():
    x = image_batch()
    out = numpy(Augmenter(AugmentConfig(seed=0))({"pre": x, "post1": x.copy(), "post3": x[..., 1:2].copy()}))
    assert {k: v.shape for k, v in out.items()} == {"pre": x.shape, "post1": x.shape, "post3": (4, SIZE, SIZE, 1)}
    np.testing.assert_array_equal(out["pre"], out["post1"])
    np.testing.assert_array_equal(out["pre"][..., 1:2], out["post3"])
    assert not np.allclose(out["pre"], x)  # something did happen


def test_the_same_geometry_moves_different_phase_contents():
    """Every transform is linear in intensity with zero fill, so a phase that is half another stays half of it."""
    x = image_batch()
    out = numpy(Augmenter(AugmentConfig(seed=1))({"pre": x, "post2": 0.5 * x}))
    np.testing.assert_allclose(out["post2"], 0.5 * out["pre"], atol=1e-6)


def test_flips_are_exact_and_shared():
    x, y = image_batch(8, seed=1), image_batch(8, seed=2)
    config = AugmentConfig(rotation_deg=0, translation=0, zoom=0, seed=3)
    out = numpy(Augmenter(config)({"pre": x, "post1": y}))
    flips = [lambda a: a, lambda a: a[::-1], lambda a: a[:, ::-1], lambda a: a[::-1, ::-1]]
    for i in range(8):
        (k,) = [k for k, flip in enumerate(flips) if np.array_equal(out["pre"][i], flip(x[i]))]
        np.testing.assert_array_equal(out["post1"][i], flips[k](y[i]))


def test_each_sample_draws_its_own_transform():
    x = np.repeat(image_batch(1), 4, axis=0)
    out = numpy(Augmenter(AugmentConfig(seed=0))({"pre": x}))["pre"]
    assert not np.allclose(out[0], out[1])


def test_identity_at_inference_and_at_zero_strength():
    x = image_batch()
    np.testing.assert_array_equal(numpy(Augmenter(AugmentConfig(seed=0))({"pre": x}, training=False))["pre"], x)
    off = Augmenter(AugmentConfig(strength=0))
    assert off.steps == ()
    np.testing.assert_array_equal(numpy(off({"pre": x, "post1": x}))["post1"], x)


def test_deterministic_given_a_seed():
    x = image_batch()
    first = [numpy(Augmenter(AugmentConfig(seed=7))({"pre": x})) for _ in range(2)]
    np.testing.assert_array_equal(first[0]["pre"], first[1]["pre"])
    other = numpy(Augmenter(AugmentConfig(seed=8))({"pre": x}))
    assert not np.allclose(other["pre"], first[0]["pre"])


def test_values_stay_in_unit_range():
    x = np.ones((4, SIZE, SIZE, 3), np.float32)
    x[:, ::2] = 0.0
    out = numpy(Augmenter(AugmentConfig(strength=3.0, seed=0))({"pre": x}))["pre"]
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_strength_scales_the_ranges():
    config = AugmentConfig(rotation_deg=20, translation=0.1, zoom=0.2, strength=0.5)
    flip, rotation, translation, zoom = Augmenter(config).steps
    assert flip.mode == "horizontal_and_vertical"
    assert rotation.factor == pytest.approx((-10 / 360, 10 / 360))
    assert translation.height_factor == pytest.approx(0.05) and translation.width_factor == pytest.approx(0.05)
    assert zoom.height_factor == pytest.approx((-0.1, 0.1)) and zoom.width_factor is None
    assert all(step.fill_mode == "constant" for step in (rotation, translation, zoom))
    only_vertical = Augmenter(AugmentConfig(horizontal_flip=False, rotation_deg=0, translation=0, zoom=0))
    assert [step.mode for step in only_vertical.steps] == ["vertical"]


@pytest.mark.parametrize("updates", [{"strength": -1}, {"translation": 1.5}, {"rotation_deg": 200}, {"x": 1}])
def test_invalid_configurations_are_rejected(updates):
    with pytest.raises(ValidationError):
        AugmentConfig(**updates)


def test_config_round_trip():
    augmenter = Augmenter(AugmentConfig(seed=4, zoom=0.3), name="aug")
    clone = Augmenter.from_config(augmenter.get_config())
    assert clone.config == augmenter.config and clone.name == "aug"


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data needs the TensorFlow backend")
def test_inside_a_tf_data_map_per_sample_and_reproducible():
    import tensorflow as tf

    x = image_batch()

    def run(seed: int) -> list[dict[str, np.ndarray]]:
        augmenter = Augmenter(AugmentConfig(seed=seed))
        dataset = tf.data.Dataset.from_tensor_slices(({"pre": x, "post1": x}, np.arange(4)))
        dataset = dataset.map(lambda inputs, label: (augmenter(inputs), label))
        return [{k: v.numpy() for k, v in inputs.items()} for inputs, _ in dataset]

    first, second = run(5), run(5)
    for a, b in zip(first, second, strict=True):
        assert a["pre"].shape == (SIZE, SIZE, 3)
        np.testing.assert_array_equal(a["pre"], a["post1"])
        np.testing.assert_array_equal(a["pre"], b["pre"])


def test_as_a_layer_it_augments_in_fit_only():
    keras.utils.set_random_seed(0)
    model = build_model(CNNConfig(phases=["pre", "post1"], input_size=SIZE, padding="same", filters=[2, 2, 4, 4],
                                  dense_units=4))
    training_model = with_augmentation(model, Augmenter(AugmentConfig(seed=0)))
    x = image_batch()
    inputs = {"pre": x, "post1": x}
    np.testing.assert_array_equal(training_model.predict(inputs, verbose=0), model.predict(inputs, verbose=0))
    before = model.get_weights()
    training_model.compile(keras.optimizers.SGD(0.1), "binary_crossentropy")
    training_model.fit(inputs, encode_labels([0, 1, 0, 1], 2), epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))  # shared

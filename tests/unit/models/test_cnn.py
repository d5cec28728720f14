"""Multi-input CNN: Supplementary Table 3 layer by layer, configurable options, heads and P(pCR)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from pydantic import ValidationError

from her2pcr.models.cnn import (
    CNNConfig,
    build_model,
    encode_labels,
    input_name,
    model_phases,
    paper_config,
    positive_class,
    predict_probability,
)

# Supplementary Table 3 of the reference study (Keras 2.2.4 model.summary()), transcribed in order:
# (layer name, layer type, output shape without the batch axis, parameter count). The table calls the second
# input INPUT_DCEMRI_POST; the best pair is pre + 3rd post-contrast, named post3 in this project.
TABLE_3 = [
    ("INPUT_DCEMRI_PRE", "InputLayer", (156, 156, 3), 0),
    ("INPUT_DCEMRI_POST", "InputLayer", (156, 156, 3), 0),
    ("conv2d_1", "Conv2D", (154, 154, 32), 896),
    ("conv2d_2", "Conv2D", (154, 154, 32), 896),
    ("max_pooling2d_1", "MaxPooling2D", (77, 77, 32), 0),
    ("max_pooling2d_2", "MaxPooling2D", (77, 77, 32), 0),
    ("conv2d_3", "Conv2D", (75, 75, 32), 9248),
    ("conv2d_4", "Conv2D", (75, 75, 32), 9248),
    ("max_pooling2d_3", "MaxPooling2D", (37, 37, 32), 0),
    ("max_pooling2d_4", "MaxPooling2D", (37, 37, 32), 0),
    ("dropout_1", "Dropout", (37, 37, 32), 0),
    ("dropout_2", "Dropout", (37, 37, 32), 0),
    ("conv2d_5", "Conv2D", (35, 35, 64), 18496),
    ("conv2d_6", "Conv2D", (35, 35, 64), 18496),
    ("max_pooling2d_5", "MaxPooling2D", (17, 17, 64), 0),
    ("max_pooling2d_6", "MaxPooling2D", (17, 17, 64), 0),
    ("conv2d_7", "Conv2D", (15, 15, 64), 36928),
    ("conv2d_8", "Conv2D", (15, 15, 64), 36928),
    ("max_pooling2d_7", "MaxPooling2D", (7, 7, 64), 0),
    ("max_pooling2d_8", "MaxPooling2D", (7, 7, 64), 0),
    ("dropout_3", "Dropout", (7, 7, 64), 0),
    ("dropout_4", "Dropout", (7, 7, 64), 0),
    ("flatten_1", "Flatten", (3136,), 0),
    ("flatten_2", "Flatten", (3136,), 0),
    ("concatenate_1", "Concatenate", (6272,), 0),
    ("dense_1", "Dense", (512,), 3211776),
    ("dropout_5", "Dropout", (512,), 0),
    ("dense_2", "Dense", (2,), 1026),
]
TABLE_3_TOTAL = 3_343_938

# Small but complete: 4 blocks with 'same' padding on 32x32 inputs.
TINY = dict(input_size=32, padding="same", filters=[4, 4, 8, 8], dense_units=8)


def tiny(**updates) -> CNNConfig:
    return CNNConfig(**{"phases": ["pre", "post1"], **TINY, **updates})


def layers_of(model: keras.Model, kind: type) -> list:
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_paper_model_matches_supplementary_table_3_layer_by_layer():
    model = build_model(paper_config())
    rows = [(layer.name, type(layer).__name__, tuple(layer.output.shape[1:]), layer.count_params())
            for layer in model.layers]
    expected = [(name.replace("INPUT_DCEMRI_POST", "INPUT_DCEMRI_POST3"), kind, shape, params)
                for name, kind, shape, params in TABLE_3]
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        assert row == want
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == model.count_params() == TABLE_3_TOTAL
    assert not model.non_trainable_weights
    assert sum(params for *_, params in TABLE_3) == TABLE_3_TOTAL


def test_paper_configuration_follows_supplementary_table_4():
    config = paper_config()
    assert config.phases == ["pre", "post3"]
    assert config.activation == "relu" and config.initializer == "random_normal"
    assert config.dropout_rates == [0.25, 0.30] and config.dense_dropout == 0.40
    model = build_model(config)
    assert [layer.rate for layer in layers_of(model, keras.layers.Dropout)] == [0.25, 0.25, 0.30, 0.30, 0.40]
    head = model.get_layer("dense_2")
    assert head.units == 2 and head.activation is keras.activations.sigmoid
    assert isinstance(model.get_layer("conv2d_1").kernel_initializer, keras.initializers.RandomNormal)


def test_defaults_are_the_paper_architecture():
    assert CNNConfig(phases=["pre", "post3"]) == paper_config()


def test_four_phase_model_has_four_named_inputs():
    config = paper_config(["pre", "post1", "post2", "post3"])
    model = build_model(config)
    assert model_phases(model) == ["pre", "post1", "post2", "post3"]
    assert sorted(t.name for t in model.inputs) == sorted(input_name(p) for p in config.phases)
    assert len(layers_of(model, keras.layers.Conv2D)) == 16
    assert model.get_layer("concatenate_1").output.shape[1:] == (4 * 3136,)
    assert model.get_layer("dense_1").count_params() == 4 * 3136 * 512 + 512


def test_single_phase_model_has_no_concatenate():
    model = build_model(tiny(phases=["post1"]))
    assert not layers_of(model, keras.layers.Concatenate)
    assert model.get_layer("dense_1").input.shape[1:] == (2 * 2 * 8,)


@pytest.mark.parametrize(
    ("updates", "check"),
    [
        ({"filters": [3, 5, 6, 7]},
         lambda m: [layer.filters for layer in layers_of(m, keras.layers.Conv2D)] == [3, 3, 5, 5, 6, 6, 7, 7]),
        ({"dense_units": 13}, lambda m: m.get_layer("dense_1").units == 13),
        ({"activation": "elu"},
         lambda m: all(layer.activation is keras.activations.elu
                       for layer in layers_of(m, keras.layers.Conv2D) + [m.get_layer("dense_1")])),
        ({"initializer": "he_normal"},
         lambda m: isinstance(m.get_layer("dense_1").kernel_initializer, keras.initializers.HeNormal)),
        ({"kernel_size": 5}, lambda m: m.get_layer("conv2d_1").kernel_size == (5, 5)),
        ({"dropout_rates": [0.1, 0.2], "dense_dropout": 0.3},
         lambda m: [layer.rate for layer in layers_of(m, keras.layers.Dropout)] == [0.1, 0.1, 0.2, 0.2, 0.3]),
        ({"dropout_every": 1, "dropout_rates": [0.1, 0.2, 0.3, 0.4]},
         lambda m: len(layers_of(m, keras.layers.Dropout)) == 9),
        ({"pool_from_block": 2},  # the prose of section 4.3: no pooling in block 1
         lambda m: len(layers_of(m, keras.layers.MaxPooling2D)) == 6
         and m.get_layer("conv2d_3").output.shape[1:3] == (32, 32)),
        ({"blocks": 3, "filters": [4, 4, 8], "dropout_rates": [0.2]},
         lambda m: len(layers_of(m, keras.layers.Conv2D)) == 6),
        ({"channels": 5, "input_size": 40}, lambda m: m.input["pre"].shape[1:] == (40, 40, 5)),
        ({"padding": "valid", "input_size": 48}, lambda m: m.get_layer("conv2d_1").output.shape[1:3] == (46, 46)),
        ({"output_units": 1}, lambda m: m.output.shape[1:] == (1,)),
        ({"output_activation": "softmax"}, lambda m: m.get_layer("dense_2").activation is keras.activations.softmax),
    ],
)
def test_each_option_changes_the_model(updates, check):
    assert check(build_model(tiny(**updates)))


@pytest.mark.parametrize(
    "updates",
    [
        {"phases": []},
        {"phases": ["pre", "post1", "post2", "post3", "post4"]},
        {"phases": ["pre", "pre"]},
        {"phases": ["arterial"]},
        {"filters": [4, 4, 8]},
        {"dropout_rates": [0.2]},
        {"dropout_rates": [0.2, 1.0]},
        {"input_size": 16, "padding": "valid"},
        {"output_units": 1, "output_activation": "softmax"},
        {"activation": "mish"},
        {"unknown": 1},
    ],
)
def test_invalid_configurations_are_rejected(updates):
    with pytest.raises(ValidationError):
        tiny(**updates)


def test_config_is_frozen():
    with pytest.raises(ValidationError):
        paper_config().dense_units = 3


@pytest.mark.parametrize(("units", "activation"), [(2, "sigmoid"), (2, "softmax"), (1, "sigmoid")])
def test_predict_probability_reads_the_positive_class_of_every_head(units, activation):
    keras.utils.set_random_seed(0)
    model = build_model(tiny(output_units=units, output_activation=activation))
    rng = np.random.default_rng(0)
    inputs = {p: rng.random((3, 32, 32, 3), dtype=np.float32) for p in ("post1", "pre")}  # key order irrelevant
    raw = model.predict(inputs, verbose=0)
    prob = predict_probability(model, inputs)
    assert prob.shape == (3,)
    assert np.all((prob >= 0) & (prob <= 1))
    np.testing.assert_allclose(prob, raw[:, units - 1], rtol=1e-6)
    if activation == "softmax":
        np.testing.assert_allclose(raw.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(positive_class(raw), raw[:, -1])


def test_encode_labels_matches_the_head():
    np.testing.assert_array_equal(encode_labels([0, 1, 1], 2), [[1, 0], [0, 1], [0, 1]])
    np.testing.assert_array_equal(encode_labels([0, 1], 1), [[0], [1]])
    assert encode_labels([1], 2).dtype == np.float32


@pytest.mark.filterwarnings("ignore:When providing `inputs` as a dict")  # keys are phases by design
def test_save_and_load_keep_phase_keyed_inputs(tmp_path):
    model = build_model(tiny())
    inputs = {p: np.full((2, 32, 32, 3), 0.5, np.float32) for p in ("pre", "post1")}
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert model_phases(loaded) == ["pre", "post1"]
    np.testing.assert_allclose(predict_probability(loaded, inputs), predict_probability(model, inputs), rtol=1e-6)


def test_phase_inputs_are_not_interchangeable():
    keras.utils.set_random_seed(1)
    model = build_model(tiny(initializer="he_normal"))
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 1, 32, 32, 3), dtype=np.float32)
    swapped = predict_probability(model, {"pre": b, "post1": a})
    assert np.abs(predict_probability(model, {"pre": a, "post1": b}) - swapped).max() > 1e-4

import keras
import pytest

from her2pcr.config import load_params
from her2pcr.training.fit import make_optimizer, resolve_params
from her2pcr.training.tracking import flatten, params_hash
from tests.conftest import REPO

TRAIN = load_params(REPO / "params.yaml").train


def test_search_result_file_overrides_params_when_present(tmp_path):
    best = tmp_path / "best.yaml"
    params = TRAIN.model_copy(update={"best_params_file": best})
    assert resolve_params(params) == (params, "params.yaml")
    best.write_text("learning_rate: 0.01\nphases: [post1, post2]\n")
    resolved, source = resolve_params(params)
    assert resolved.learning_rate == 0.01 and resolved.phases == ["post1", "post2"] and source == str(best)
    best.write_text("epochs: 3\n")
    with pytest.raises(ValueError, match="not tunable"):
        resolve_params(params)


def test_sgd_with_momentum_and_per_epoch_decay():
    optimizer = make_optimizer(TRAIN.model_copy(update={"decay": 0.5, "learning_rate": 0.1}), steps_per_epoch=10)
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum == TRAIN.momentum
    schedule = optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.1) and float(schedule(10)) == pytest.approx(0.1 / 1.5)
    assert isinstance(make_optimizer(TRAIN.model_copy(update={"optimizer": "adam"}), 5), keras.optimizers.Adam)


def test_params_flatten_and_hash_are_stable():
    flat = flatten("", {"a": {"b": 1, "c": [1, 2]}, "d": "x"})
    assert flat == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}
    assert params_hash({"a": 1, "b": 2}) == params_hash({"b": 2, "a": 1})

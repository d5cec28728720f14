import keras
import numpy as np
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
    sgd = TRAIN.model_copy(update={"optimizer": "sgd", "momentum": 0.99, "decay": 0.5, "learning_rate": 0.1})
    optimizer = make_optimizer(sgd, steps_per_epoch=10)
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum == 0.99
    schedule = optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.1) and float(schedule(10)) == pytest.approx(0.1 / 1.5)
    assert isinstance(make_optimizer(TRAIN.model_copy(update={"optimizer": "adam"}), 5), keras.optimizers.Adam)


def test_params_flatten_and_hash_are_stable():
    flat = flatten("", {"a": {"b": 1, "c": [1, 2]}, "d": "x"})
    assert flat == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}
    assert params_hash({"a": 1, "b": 2}) == params_hash({"b": 2, "a": 1})


def test_paper_profile_builds_supplementary_table_3_exactly():
    from her2pcr.models.cnn import build_model, paper_config
    from her2pcr.training.fit import cnn_config
    from tests.conftest import profile_params

    params = profile_params("paper")
    chain = params.preprocess.chain_config()
    assert (chain.margin_mm, chain.spacing_mm, chain.input_size, chain.intensity) == (0.0, None, 156,
                                                                                    "max_per_input")
    assert not chain.subtractions
    config = cnn_config(params.train, input_size=chain.input_size, channels=chain.channels)
    assert config == paper_config(["pre", "post3"])
    assert build_model(config).count_params() == 3_343_938


def separable_stacks(n_patients: int = 16, stacks: int = 2, size: int = 16, seed: int = 0):
    """Patients whose pCR shows as a brighter centre in every stack (learnable in a few epochs)."""
    from her2pcr.training.data import StackSet

    rng = np.random.default_rng(seed)
    labels = np.arange(n_patients) % 2
    x = rng.uniform(0, 0.3, (n_patients * stacks, size, size, 3)).astype("float32")
    y = np.repeat(labels, stacks)
    x[y == 1, size // 4: 3 * size // 4, size // 4: 3 * size // 4] += 0.5
    ids = np.repeat([f"p{k:02d}" for k in range(n_patients)], stacks).astype(object)
    return StackSet({"sub1": x}, y, ids)


def small_params(**updates):
    return TRAIN.model_copy(update={"phases": ["sub1"], "filters": [4, 4], "dropout": [0.0], "dense_units": 8,
                                    "epochs": 4, "batch_size": 8, "cv_folds": 2, "min_epoch": 0,
                                    "augmentation_strength": 0.0, **updates})


def test_averaged_weights_are_the_elementwise_mean_from_the_first_epoch_kept_in_their_dtype():
    from her2pcr.training.fit import averaged_weights

    epochs = [[np.full((2, 2), float(e), "float32"), np.array([e], "int64")] for e in range(5)]
    kernel, counter = averaged_weights(epochs, first=2)
    np.testing.assert_array_equal(kernel, np.full((2, 2), 3.0))  # mean of epochs 2, 3, 4
    assert kernel.dtype == np.float32 and counter.dtype == np.int64
    np.testing.assert_array_equal(averaged_weights(epochs, first=9)[0], epochs[-1][0])  # past the end: the last


@pytest.mark.parametrize("average", [False, True])
def test_holdout_returns_the_weights_which_reproduce_the_reported_auc(average):
    from her2pcr.training.fit import fit_holdout, patient_auc

    train, validation = separable_stacks(seed=1), separable_stacks(seed=2)
    params = small_params(average_weights=average, min_epoch=1)
    result = fit_holdout(params, train, validation)
    if average:
        assert result.best_epoch is None and result.averaged_epochs == (1, params.epochs - 1)
    else:
        assert result.averaged_epochs is None
        assert result.best_val_patient_auc == result.history["val_patient_auc"].iloc[result.best_epoch]
    scored = validation.central(params.central_stack_fraction)  # a patient's probability: its middle stacks
    assert params.central_stack_fraction < 1 and len(scored) < len(validation)
    value, probabilities = patient_auc(result.model, scored)
    assert value == pytest.approx(result.best_val_patient_auc)
    np.testing.assert_allclose(probabilities, result.held_out.probability.loc[probabilities.index], rtol=1e-5)


@pytest.mark.parametrize("average", [False, True])
def test_cv_ensemble_members_reproduce_their_out_of_fold_predictions(average):
    from her2pcr.models.cnn import ensemble_members, predict_probability
    from her2pcr.stats.roc import auc
    from her2pcr.training.data import patient_probabilities
    from her2pcr.training.fit import cv_folds, fit_cv_ensemble

    stacks = separable_stacks(n_patients=12)
    params = small_params(average_weights=average)
    result = fit_cv_ensemble(params, stacks)
    members = ensemble_members(result.model)
    folds = cv_folds(stacks.patient_labels(), params.cv_folds, params.seed)
    assert len(members) == len(folds) == 2 and result.selection == "cv"
    assert sorted(result.out_of_fold.index) == sorted(set(stacks.patient_ids))  # every patient once
    for k, (member, (_, held_out)) in enumerate(zip(members, folds, strict=True)):
        assert (result.folds.loc[held_out] == k).all()  # out_of_fold.csv's fold column names the member
        held = stacks.subset(held_out).central(params.central_stack_fraction)
        again = patient_probabilities(predict_probability(member, held.inputs), held.patient_ids)
        np.testing.assert_allclose(again, result.out_of_fold.loc[again.index], rtol=1e-5)
    labels = stacks.patient_labels().loc[result.out_of_fold.index]
    assert result.best_val_patient_auc == pytest.approx(auc(labels, result.out_of_fold))
    mean = result.history["val_patient_auc"]
    if average:
        assert result.best_epoch is None and result.averaged_epochs == (0, params.epochs - 1)
    else:
        assert result.best_epoch == int(mean.fillna(-1).idxmax()) and result.averaged_epochs is None
    ensemble = patient_probabilities(predict_probability(result.model, stacks.inputs), stacks.patient_ids)
    members_mean = np.mean([patient_probabilities(predict_probability(m, stacks.inputs), stacks.patient_ids)
                            for m in members], axis=0)
    np.testing.assert_allclose(ensemble, members_mean, rtol=1e-5)

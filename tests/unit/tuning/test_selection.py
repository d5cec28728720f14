"""The one-standard-error rule: a tuning trial replaces the train section only when it is clearly better."""

import numpy as np
import optuna
import pytest

from her2pcr.stats.roc import auc
from her2pcr.tuning.study import PREDICTIONS_ATTR, REFERENCE_ATTR, select_trial

LABELS = np.tile([0, 1], 30)


def trial(number: int, probabilities: np.ndarray, reference: bool = False) -> optuna.trial.FrozenTrial:
    held_out = {f"p{k:02d}": [int(y), float(p)] for k, (y, p) in enumerate(zip(LABELS, probabilities, strict=True))}
    made = optuna.trial.create_trial(value=auc(LABELS, probabilities),
                                     user_attrs={PREDICTIONS_ATTR: held_out, REFERENCE_ATTR: reference})
    made.number = number
    return made


def scores(signal: float, seed: int) -> np.ndarray:
    return signal * LABELS + np.random.default_rng(seed).normal(size=LABELS.size)


def test_a_trial_better_by_less_than_one_se_leaves_the_train_section():
    reference, challenger = trial(0, scores(0.8, 1), reference=True), trial(1, scores(0.9, 3))
    assert challenger.value > reference.value
    chosen, why = select_trial([reference, challenger], min_improvement_se=1.0)
    assert chosen.number == 0
    assert why["best_trial"] == 1 and 0 < why["improvement"] < why["improvement_se"]
    assert why["patients"] == LABELS.size


def test_a_clearly_better_trial_is_selected():
    reference, challenger = trial(0, scores(0.2, 1), reference=True), trial(1, scores(3.0, 2))
    chosen, why = select_trial([reference, challenger], min_improvement_se=1.0)
    assert chosen.number == 1 and why["improvement"] > why["improvement_se"]


def test_zero_se_is_plain_argmax_and_without_a_reference_the_best_wins():
    reference, challenger = trial(0, scores(0.8, 1), reference=True), trial(1, scores(0.9, 3))
    assert select_trial([reference, challenger], min_improvement_se=0.0)[0].number == 1
    others = [trial(0, scores(0.8, 1)), trial(1, scores(0.9, 3))]
    chosen, why = select_trial(others, min_improvement_se=1.0)
    assert chosen.number == 1 and why["reference_trial"] is None


def test_trials_without_paired_predictions_fall_back_to_the_best_objective():
    reference, challenger = trial(0, scores(0.8, 1), reference=True), trial(1, scores(0.9, 3))
    challenger.user_attrs.pop(PREDICTIONS_ATTR)
    chosen, why = select_trial([reference, challenger], min_improvement_se=1.0)
    assert chosen.number == 1 and why["rule"].startswith("best objective")


def test_no_complete_trial_is_an_error():
    with pytest.raises(ValueError, match="no complete trial"):
        select_trial([], min_improvement_se=1.0)

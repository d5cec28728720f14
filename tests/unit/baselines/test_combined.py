"""CNN + clinical model: per-coefficient p-values, separation handling, per-cohort association tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from her2pcr.baselines.clinical import SeparationError
from her2pcr.baselines.combined import fit_cnn_clinical, independent_association, predict_combined


def cohort(n: int, seed: int, name: str = "D2") -> pd.DataFrame:
    """CNN probability strongly predictive of pCR; ER and PR unrelated to it."""
    rng = np.random.default_rng(seed)
    cnn = rng.beta(2, 2, n)
    return pd.DataFrame({
        "cohort": name,
        "pcr": (rng.random(n) < expit(-0.3 + 8.0 * (cnn - 0.5))).astype(int),
        "cnn_probability": cnn,
        "er": np.where(rng.random(n) < 0.5, "positive", "negative"),
        "pr": np.where(rng.random(n) < 0.4, "positive", "negative"),
    }, index=pd.Index([f"{name}_{i:03d}" for i in range(n)], name="patient_id"))


def test_planted_cnn_score_is_significant_and_noise_is_not():
    model = fit_cnn_clinical(cohort(150, seed=0), ["er", "pr"])
    assert model.method == "maximum_likelihood" and not model.notes
    table = model.coefficients.set_index("term")
    assert list(table.index) == ["const", "cnn_probability", "er", "pr"]
    assert list(table.columns) == ["coef", "se", "z", "p_value", "odds_ratio", "or_ci_low", "or_ci_high"]
    assert table.loc["cnn_probability", "p_value"] < 0.01
    assert table.loc["er", "p_value"] > 0.05 and table.loc["pr", "p_value"] > 0.05
    assert table.loc["cnn_probability", "or_ci_low"] > 1


def test_predictions_are_probabilities_increasing_with_the_cnn_score():
    model = fit_cnn_clinical(cohort(150, seed=1), ["er"])
    test = cohort(30, seed=2, name="D3")
    p = predict_combined(model, test)
    assert p.name == "cnn_clinical" and p.index.equals(test.index) and p.between(0, 1).all()
    same_er = test[test.er == "positive"].sort_values("cnn_probability")
    assert np.all(np.diff(p[same_er.index]) > 0)


def test_without_clinical_variables_the_cnn_score_stands_alone():
    model = fit_cnn_clinical(cohort(80, seed=3), [])
    assert model.clinical_variables == [] and list(model.coefficients.term) == ["const", "cnn_probability"]


def test_a_cnn_term_without_positive_weight_is_warned_about():
    train = cohort(150, seed=5)
    train["cnn_probability"] = 1 - train.cnn_probability  # a CNN that ranks its training patients upside down
    model = fit_cnn_clinical(train, ["er"])
    assert model.coefficients.set_index("term").coef["cnn_probability"] < 0
    assert any("does not rank the patients by pCR" in note for note in model.notes)


def test_separation_uses_firth_or_raises():
    train = cohort(40, seed=4)
    train["pcr"] = (train.cnn_probability > 0.5).astype(int)  # an over-confident CNN separates D2
    model = fit_cnn_clinical(train, ["er"])
    assert model.method == "firth" and any("Firth" in note for note in model.notes)
    assert np.isfinite(model.coefficients[["coef", "se", "p_value"]].to_numpy()).all()
    with pytest.raises(SeparationError):
        fit_cnn_clinical(train, ["er"], separation="raise")


def test_independent_association_fits_the_model_within_each_testing_cohort():
    frame = pd.concat([cohort(120, seed=5, name="D3"), cohort(100, seed=6, name="D4")])
    table = independent_association(frame, ["er", "pr"])
    assert list(table.cohort.unique()) == ["D3", "D4"]
    assert table.groupby("cohort").n.first().to_dict() == {"D3": 120, "D4": 100}
    cnn = table[table.term == "cnn_probability"].set_index("cohort")
    assert (cnn.p_value < 0.01).all()
    with pytest.raises(ValueError, match="no patients"):
        independent_association(frame, ["er"], cohorts=["D5"])


def offset_folds(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Two fold models that rank their own patients well, one shifted by +3 logits and twice as spread."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], 40)
    logit = 1.5 * y + rng.normal(size=y.size)
    fold = np.repeat([0, 1], 40)
    logit = np.where(fold == 1, 3 + 2 * logit, logit)
    index = pd.Index([f"p{i:03d}" for i in range(y.size)], name="patient_id")
    return pd.DataFrame({"probability": expit(logit), "fold": fold}, index=index), pd.Series(y, index=index)


def test_fold_standardised_scores_remove_offsets_between_fold_models():
    from her2pcr.baselines.combined import fold_standardisation, out_of_fold_score
    from her2pcr.stats.roc import auc

    out_of_fold, y = offset_folds()
    table = fold_standardisation(out_of_fold)
    assert table.centre[1] - table.centre[0] > 2 and table.spread[1] / table.spread[0] > 1.5
    score = out_of_fold_score(out_of_fold, table)
    for k in (0, 1):
        in_fold = score[out_of_fold.fold == k]
        assert in_fold.mean() == pytest.approx(0, abs=1e-9) and in_fold.std() == pytest.approx(1)
    assert auc(y, score) > auc(y, out_of_fold.probability) + 0.05  # the pooled probabilities mix two scales


def test_a_new_patient_is_scored_by_the_mean_of_its_members_standardised_logits():
    from her2pcr.baselines.combined import fold_standardisation, member_score

    table = fold_standardisation(offset_folds()[0])
    at_centres = expit(table.centre.to_numpy())
    one_up = expit(table.centre.to_numpy() + table.spread.to_numpy())
    members = pd.DataFrame([at_centres, one_up, [at_centres[0], one_up[1]]], index=["a", "b", "c"])
    np.testing.assert_allclose(member_score(members, table), [0.0, 1.0, 0.5], atol=1e-6)
    with pytest.raises(ValueError, match="member predictions"):
        member_score(members.iloc[:, :1], table)

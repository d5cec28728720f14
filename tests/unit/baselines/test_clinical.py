"""Clinical models: univariate tests, encoding, the two logistic regressions, the fallbacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from scipy.special import expit

from her2pcr.baselines.clinical import (
    VARIABLES,
    SeparationError,
    _firth,
    design_matrix,
    fit_clinical_models,
    fit_logistic,
    predict,
    univariate_tests,
)


def clinical(n: int = 120, seed: int = 0, er_effect: bool = True) -> pd.DataFrame:
    """D1-like clinical table; pCR depends strongly on ER status only (if ``er_effect``)."""
    rng = np.random.default_rng(seed)
    er = rng.random(n) < 0.5
    p = np.where(er, 0.15, 0.75) if er_effect else np.full(n, 0.4)
    return pd.DataFrame({
        "cohort": "D1",
        "pcr": (rng.random(n) < p).astype(int),
        "age": rng.normal(50, 10, n).round(),
        "er": np.where(er, "positive", "negative"),
        "pr": np.where(rng.random(n) < 0.4, "positive", "negative"),
        "lymph_node": np.where(rng.random(n) < 0.55, "positive", "negative"),
        "stage": rng.choice(["I", "IIA", "IIB", "III", "IV"], n, p=[0.15, 0.3, 0.3, 0.2, 0.05]),
        "longest_diameter_mm": np.exp(rng.normal(np.log(40), 0.5, n)).round(1),
        "regimen": "TCHP",
        "institution": "inst1",
    }, index=pd.Index([f"P{i:03d}" for i in range(n)], name="patient_id"))


def test_the_strongly_associated_variable_alone_is_significant():
    tests = univariate_tests(clinical())
    assert list(tests.columns[:4]) == ["variable", "test", "statistic", "p_value"]
    tests = tests.set_index("variable")
    assert tests.loc["er", "p_value"] < 1e-4
    others = [v for v in VARIABLES if v != "er"]
    assert (tests.loc[others, "p_value"] > 0.05).all()
    assert tests.loc[["age", "longest_diameter_mm"], "test"].eq("wilcoxon_rank_sum").all()
    assert tests.loc[["er", "pr", "stage", "lymph_node"], "test"].eq("chi_squared").all()
    assert tests.loc["stage", "dof"] == 3  # I, II, III, IV (sub-stages pooled)


def test_tests_match_scipy():
    frame = clinical(seed=1)
    tests = univariate_tests(frame).set_index("variable")
    pcr, non = frame.age[frame.pcr == 1], frame.age[frame.pcr == 0]
    expected = stats.mannwhitneyu(pcr, non, alternative="two-sided")
    assert tests.loc["age", "statistic"] == pytest.approx(expected.statistic)
    assert tests.loc["age", "p_value"] == pytest.approx(expected.pvalue)
    table = pd.crosstab(frame.er, frame.pcr).to_numpy()
    assert tests.loc["er", "p_value"] == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    yates = univariate_tests(frame, yates=True).set_index("variable")
    assert yates.loc["er", "p_value"] == pytest.approx(stats.chi2_contingency(table, correction=True).pvalue)


def test_design_matrix_encoding():
    frame = pd.DataFrame({"er": ["positive", "Negative", None], "stage": ["IIB", "Stage IV", "I"],
                          "lymph_node": ["negative", "positive", "positive"], "age": [40, None, 61.5]})
    X = design_matrix(frame, ["er", "stage", "lymph_node", "age"])
    np.testing.assert_array_equal(X.er, [1, 0, np.nan])
    np.testing.assert_array_equal(X.stage, [2, 4, 1])
    np.testing.assert_array_equal(X.lymph_node, [0, 1, 1])
    np.testing.assert_array_equal(X.age, [40, np.nan, 61.5])
    with pytest.raises(ValueError, match="stage"):
        design_matrix(pd.DataFrame({"stage": ["V"]}), ["stage"])
    with pytest.raises(ValueError, match="er"):
        design_matrix(pd.DataFrame({"er": ["unknown"]}), ["er"])
    with pytest.raises(ValueError, match="lacks"):
        design_matrix(frame, ["pr"])


def test_clinical_models_use_the_significant_variable_and_all_variables():
    train, test = clinical(seed=0), clinical(seed=2)
    models = fit_clinical_models(train)
    assert models.significant_variables == ["er"] and not models.fallback
    assert models.significant_model.method == "maximum_likelihood"
    assert models.all_model.variables == list(VARIABLES)
    expected = sm.Logit(train.pcr.to_numpy(), sm.add_constant(design_matrix(train, ["er"]))).fit(disp=0)
    np.testing.assert_allclose(models.significant_model.params, expected.params)
    coefficients = models.all_model.coefficients()
    assert list(coefficients.term) == ["const", *VARIABLES]
    np.testing.assert_allclose(coefficients.odds_ratio, np.exp(coefficients.coef))
    assert (coefficients.or_ci_low < coefficients.odds_ratio).all()
    assert coefficients.set_index("term").loc["er", "p_value"] < 0.01
    probabilities = predict(models, test)
    assert list(probabilities.columns) == ["clinical_significant", "clinical_all"]
    assert probabilities.index.equals(test.index)
    assert probabilities.apply(lambda c: c.between(0, 1)).all().all()
    significant, er_positive = probabilities.clinical_significant, test.er == "positive"
    assert significant[er_positive].max() < significant[~er_positive].min()


def test_no_significant_variable_falls_back_to_the_most_significant():
    train = clinical(n=60, seed=4, er_effect=False)
    tests = univariate_tests(train)
    assert (tests.p_value >= 0.05).all()
    models = fit_clinical_models(train)
    assert models.fallback
    assert models.significant_variables == [tests.loc[tests.p_value.idxmin(), "variable"]]


def test_separation_falls_back_to_firth_or_raises():
    train = clinical(n=80, seed=5)
    train["pcr"] = (train.er == "negative").astype(int)  # ER separates the outcome perfectly
    fit = fit_logistic(train, ["er", "age"])
    assert fit.method == "firth"
    assert any("Firth" in note for note in fit.notes)
    table = fit.coefficients()
    assert np.isfinite(table[["coef", "se", "p_value"]].to_numpy()).all()
    assert table.set_index("term").loc["er", "coef"] < -3
    with pytest.raises(SeparationError, match="separation"):
        fit_logistic(train, ["er", "age"], separation="raise")


def test_quasi_complete_separation_is_detected():
    train = clinical(n=80, seed=10)
    train.loc[train.er == "negative", "pcr"] = 1  # every ER-negative patient responds; ER-positive mixed
    assert train.pcr[train.er == "positive"].nunique() == 2
    fit = fit_logistic(train, ["er"])
    assert fit.method == "firth"
    assert np.isfinite(fit.coefficients().se).all()


def test_a_converged_fit_with_fitted_probabilities_of_0_or_1_is_treated_as_separated():
    """15 patients and a confident predictor with a narrow overlap: maximum likelihood converges, but on a log
    odds ratio in the hundreds (the study-size D2 fit of CNN + clinical); Firth gives a usable estimate."""
    x = np.r_[np.linspace(0.05, 0.49, 7), 0.5, np.linspace(0.52, 0.95, 7)]
    y = np.r_[np.zeros(7), 0, np.ones(7)].astype(int)
    y[6], y[7] = 1, 0  # the overlap: 0.49 responds, 0.5 does not
    ml = sm.Logit(y, sm.add_constant(x)).fit(disp=0)
    assert ml.mle_retvals["converged"] and abs(ml.params[1]) > 30  # what maximum likelihood alone would report
    train = pd.DataFrame({"cnn_probability": x, "pcr": y})
    fit = fit_logistic(train, ["cnn_probability"])
    assert fit.method == "firth" and any("quasi-complete separation" in n for n in fit.notes)
    assert abs(fit.coefficients().set_index("term").loc["cnn_probability", "coef"]) < 30


def test_a_collinear_variable_is_left_out_with_a_note_not_a_crash():
    train = clinical(n=40, seed=3)
    train["pr"] = train["er"]  # in a small training set one variable can copy another
    fit = fit_logistic(train, ["er", "pr", "age"])
    assert fit.variables == ["er", "age"] and any("collinear" in note and "pr" in note for note in fit.notes)
    assert np.isfinite(fit.coefficients()[["coef", "se"]].to_numpy()).all()
    assert fit.predict(train).between(0, 1).all()


def test_firth_solves_the_penalised_score_equation_and_shrinks_towards_zero():
    rng = np.random.default_rng(6)
    X = sm.add_constant(rng.standard_normal((40, 2)))
    y = (rng.random(40) < expit(X @ [0.2, 1.0, -0.5])).astype(float)
    beta, covariance, converged = _firth(X, y)
    assert converged
    p = expit(X @ beta)
    w = p * (1 - p)
    hat = w * np.einsum("ij,jk,ik->i", X, covariance, X)
    np.testing.assert_allclose(X.T @ (y - p + hat * (0.5 - p)), 0, atol=1e-7)
    mle = sm.Logit(y, X).fit(disp=0).params
    assert np.all(np.abs(beta[1:]) < np.abs(mle[1:]))


def test_missing_values_are_left_out_of_the_fit_and_imputed_at_prediction():
    train = clinical(seed=7)
    train.loc[train.index[:3], "age"] = np.nan
    models = fit_clinical_models(train)
    assert models.all_model.n == len(train) - 3
    assert any("3 training patient" in note for note in models.all_model.notes)
    test = clinical(n=10, seed=8)
    test.loc[test.index[0], "er"] = None
    probabilities = predict(models, test)
    assert probabilities.notna().all().all()


def test_labels_must_hold_both_classes():
    train = clinical(n=30, seed=9)
    train["pcr"] = 0
    with pytest.raises(ValueError, match="one class"):
        univariate_tests(train)

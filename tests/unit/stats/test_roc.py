"""ROC statistics: AUC with ties, DeLong against hand and brute-force computations, bootstrap, threshold metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from her2pcr.stats.roc import (
    DeLongResult,
    PairedResult,
    auc,
    auc_for_ci_low,
    bootstrap_auc_ci,
    delong,
    delong_paired,
    hanley_mcneil_se,
    roc_curve_points,
    summarise,
    threshold_metrics,
)

# Cases 0.4, 0.8, 0.3 against controls 0.1, 0.4 (one case-control tie), worked by hand in
# test_delong_matches_a_hand_computation.
TINY_Y = np.array([0, 0, 1, 1, 1])
TINY_S = np.array([0.1, 0.4, 0.4, 0.8, 0.3])


def tied_scores(n=40, n_pos=18, seed=1, shift=0.8):
    """Labels and two correlated score sets rounded to 1 decimal, so ties are frequent."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, dtype=int), np.zeros(n - n_pos, dtype=int)]
    latent = rng.normal(size=n) + shift * y
    a = np.round(latent, 1)
    b = np.round(0.6 * latent + 0.8 * rng.normal(size=n), 1)
    return y, a, b


def brute_force_placements(y, s):
    """DeLong's structural components straight from the definition: psi over every case-control pair."""
    cases, controls = s[y == 1], s[y == 0]
    psi = (cases[:, None] > controls[None, :]) + 0.5 * (cases[:, None] == controls[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


# --- auc ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "s", "expected"),
    [
        ([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9], 3.5 / 4),  # one case-control tie counts 1/2
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),
        ([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1], 0.0),  # never flipped to 1 - AUC
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all tied
        ([0, 0, 0, 1, 1], [0.1, 0.3, 0.3, 0.3, 0.7], 5 / 6),  # case 0.3 scores 1 + 1/2 + 1/2 of 3, case 0.7 all 3
        (TINY_Y, TINY_S, 0.75),
    ],
)
def test_auc_hand_values_with_ties(y, s, expected):
    assert auc(y, s) == pytest.approx(expected, abs=1e-12)


def test_auc_equals_sklearn_and_is_symmetric():
    y, a, _ = tied_scores()
    value = auc(y, a)
    assert value == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert auc(1 - y, a) == pytest.approx(1 - value, abs=1e-12)
    assert auc(y, -a) == pytest.approx(1 - value, abs=1e-12)
    assert auc(y, np.exp(a)) == pytest.approx(value, abs=1e-12)  # rank-based: monotone transforms are free
    assert auc(y.astype(bool), a) == auc(y.astype(float), a) == value
    assert auc(list(y), list(a)) == value


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "only class 1"),
        ([0, 0], [0.1, 0.2], "only class 0"),
        ([0, 1, 1], [0.1, 0.2], "length mismatch"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "(scores|probabilities) contains NaN"),
        ([0, np.nan, 1], [0.1, 0.2, 0.3], "y_true is missing for 1 of 3 patients"),
        ([0, 2, 1], [0.1, 0.2, 0.3], "only 0"),
        ([0, 1, 1], [0.1, np.inf, 0.3], "infinite"),
        ([], [], "empty"),
        (["a", "b"], [0.1, 0.2], "0/1 labels"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_degenerate_inputs_are_clear_value_errors(y, s, match):
    for function in (auc, delong, bootstrap_auc_ci, threshold_metrics, roc_curve_points, summarise):
        with pytest.raises(ValueError, match=match):
            function(y, s)


# --- delong -------------------------------------------------------------------------------------


def test_delong_matches_a_hand_computation():
    # Case placements (fraction of controls beaten, ties 1/2): 0.4 -> 0.75, 0.8 -> 1, 0.3 -> 0.5.
    # Control placements (fraction of cases above): 0.1 -> 1, 0.4 -> 0.5. Both average to AUC = 0.75.
    # Var = S_cases / m + S_controls / n = (0.125 / 2) / 3 + (0.125 / 1) / 2 = 1/48 + 1/16 = 1/12.
    result = delong(TINY_Y, TINY_S)
    assert isinstance(result, DeLongResult)
    se = math.sqrt(1 / 12)
    assert result.auc == pytest.approx(0.75, abs=1e-12)
    assert result.se == pytest.approx(se, abs=1e-12)
    assert result.ci_low == pytest.approx(0.75 - 1.959963984540054 * se, abs=1e-9)
    assert result.ci_high == 1.0  # 0.75 + 0.566 clipped
    assert result.z == pytest.approx(0.25 / se, abs=1e-12)
    assert result.p_value == pytest.approx(0.3864762307712326, abs=1e-9)  # 2 * (1 - Phi(0.8660254))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_delong_matches_the_definition_on_tied_data(seed):
    y, a, _ = tied_scores(n=37, n_pos=11, seed=seed)
    theta, v_cases, v_controls = brute_force_placements(y, a)
    variance = v_cases.var(ddof=1) / v_cases.size + v_controls.var(ddof=1) / v_controls.size
    result = delong(y, a)
    assert result.auc == pytest.approx(theta, abs=1e-12)
    assert result.se == pytest.approx(math.sqrt(variance), abs=1e-12)


def test_delong_is_symmetric_under_label_and_score_flips():
    y, a, _ = tied_scores()
    base = delong(y, a)
    for flipped in (delong(1 - y, a), delong(y, -a)):
        assert flipped.auc == pytest.approx(1 - base.auc, abs=1e-12)
        assert flipped.se == pytest.approx(base.se, abs=1e-12)
        assert flipped.z == pytest.approx(-base.z, abs=1e-12)
        assert flipped.p_value == pytest.approx(base.p_value, abs=1e-12)


def test_delong_degenerate_curves():
    perfect = delong([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert (perfect.auc, perfect.se, perfect.ci_low, perfect.ci_high, perfect.p_value) == (1.0, 0.0, 1.0, 1.0, 0.0)
    assert perfect.z == math.inf
    flat = delong([0, 0, 1, 1], [0.5] * 4)
    assert (flat.auc, flat.se, flat.z, flat.p_value) == (0.5, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="at least 2 patients in each class"):
        delong([0, 0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="level"):
        delong(TINY_Y, TINY_S, level=1.5)


def test_delong_level_narrows_the_interval():
    y, a, _ = tied_scores()
    wide, narrow = delong(y, a, level=0.99), delong(y, a, level=0.90)
    assert wide.ci_low < narrow.ci_low < narrow.auc < narrow.ci_high < wide.ci_high
    assert narrow.ci_high - narrow.auc == pytest.approx(1.6448536269514722 * narrow.se, abs=1e-12)


# --- delong_paired ------------------------------------------------------------------------------


def test_paired_matches_the_definition():
    y, a, b = tied_scores(n=45, n_pos=20, seed=7)
    theta_a, ca, na = brute_force_placements(y, a)
    theta_b, cb, nb = brute_force_placements(y, b)
    variance = np.var(ca - cb, ddof=1) / ca.size + np.var(na - nb, ddof=1) / na.size
    result = delong_paired(y, a, b)
    assert isinstance(result, PairedResult)
    assert (result.auc_a, result.auc_b) == (pytest.approx(theta_a, abs=1e-12), pytest.approx(theta_b, abs=1e-12))
    assert result.difference == pytest.approx(theta_a - theta_b, abs=1e-12)
    assert result.se == pytest.approx(math.sqrt(variance), abs=1e-12)
    assert result.z == pytest.approx((theta_a - theta_b) / math.sqrt(variance), abs=1e-9)
    assert 0 < result.p_value < 1


def test_paired_is_antisymmetric_and_identical_curves_do_not_differ():
    y, a, b = tied_scores()
    ab, ba = delong_paired(y, a, b), delong_paired(y, b, a)
    assert ab.difference == pytest.approx(-ba.difference, abs=1e-12)
    assert ab.se == pytest.approx(ba.se, abs=1e-12)
    assert ab.p_value == pytest.approx(ba.p_value, abs=1e-12)
    same = delong_paired(y, a, a)
    assert (same.difference, same.se, same.z, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # A monotone transform leaves the ROC curve, hence the comparison, unchanged.
    assert delong_paired(y, a, np.exp(a)).p_value == 1.0


def test_paired_rejects_mismatched_scores():
    y, a, b = tied_scores()
    with pytest.raises(ValueError, match="scores_b"):
        delong_paired(y, a, b[:-1])
    with pytest.raises(ValueError, match="scores_a contains NaN"):
        delong_paired(y, np.where(y == 1, np.nan, a), b)


def test_hanley_mcneil_se_reproduces_the_papers_example():
    # Hanley & McNeil (1982), the worked CT rating example: AUC 0.893 from 51 abnormal and 58 normal images, SE 0.032
    assert hanley_mcneil_se(0.893, 51, 58) == pytest.approx(0.032, abs=1e-3)


def test_auc_for_ci_low_puts_the_bound_at_the_target_and_falls_with_the_cohorts_size():
    needed = auc_for_ci_low(0.5, 16, 12)
    assert needed - 1.959964 * hanley_mcneil_se(needed, 16, 12) == pytest.approx(0.5, abs=1e-6)
    assert 0.5 < auc_for_ci_low(0.5, 500, 500) < auc_for_ci_low(0.5, 50, 50) < needed < auc_for_ci_low(0.5, 5, 5)
    assert auc_for_ci_low(0.5, 16, 12, level=0.9) < needed
    with pytest.raises(ValueError, match="both classes"):
        auc_for_ci_low(0.5, 0, 12)


# --- bootstrap ----------------------------------------------------------------------------------


def test_bootstrap_is_deterministic_and_contains_the_auc():
    y, a, _ = tied_scores(n=60, n_pos=25)
    first = bootstrap_auc_ci(y, a, n_resamples=1000, seed=0)
    assert first == bootstrap_auc_ci(y, a, n_resamples=1000, seed=0)
    assert first != bootstrap_auc_ci(y, a, n_resamples=1000, seed=1)
    assert first[0] < auc(y, a) < first[1]
    # Close to the DeLong interval on a sample this size.
    result = delong(y, a)
    assert first[0] == pytest.approx(result.ci_low, abs=0.05)
    assert first[1] == pytest.approx(result.ci_high, abs=0.05)


def test_bootstrap_equals_a_naive_stratified_loop():
    # White-box: a single chunk (n_resamples <= 256) draws every case index, then every control index.
    y, a, _ = tied_scores(n=30, n_pos=9)
    cases, controls = a[y == 1], a[y == 0]
    rng = np.random.default_rng(5)
    case_idx = rng.integers(0, cases.size, size=(200, cases.size))
    control_idx = rng.integers(0, controls.size, size=(200, controls.size))
    aucs = [roc_auc_score(np.r_[np.ones(cases.size), np.zeros(controls.size)], np.r_[cases[i], controls[j]])
            for i, j in zip(case_idx, control_idx, strict=True)]
    expected = np.quantile(aucs, [0.05, 0.95])
    assert bootstrap_auc_ci(y, a, n_resamples=200, seed=5, level=0.90) == pytest.approx(tuple(expected), abs=1e-12)


def test_bootstrap_edge_cases():
    assert bootstrap_auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_resamples=50) == (1.0, 1.0)
    assert bootstrap_auc_ci([0, 1], [0.3, 0.3], n_resamples=10) == (0.5, 0.5)  # one of each class is enough
    low, high = bootstrap_auc_ci(*tied_scores()[:2], n_resamples=1001)  # spans several chunks
    assert 0 <= low <= high <= 1
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_resamples"):
            bootstrap_auc_ci(TINY_Y, TINY_S, n_resamples=bad)
    with pytest.raises(ValueError, match="level"):
        bootstrap_auc_ci(TINY_Y, TINY_S, level=0)


# --- threshold metrics, curve, summary ----------------------------------------------------------


def test_threshold_metrics_counts():
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    p = [0.9, 0.5, 0.49, 0.7, 0.1, 0.5, 0.2, 0.3, 0.0, 0.6]
    metrics = threshold_metrics(y, p)
    # 0.5 counts as pCR: tp = 0.9, 0.5, 0.7; fn = 0.49; fp = 0.5, 0.6; tn = the other four.
    assert metrics == {"sensitivity": 0.75, "specificity": 4 / 6, "accuracy": 0.7, "tp": 3, "tn": 4, "fp": 2, "fn": 1}
    strict = threshold_metrics(y, p, threshold=0.55)
    assert (strict["tp"], strict["fn"], strict["fp"], strict["tn"]) == (2, 2, 1, 5)


def test_roc_curve_points_frame():
    y, a, _ = tied_scores()
    points = roc_curve_points(y, a)
    assert list(points.columns) == ["fpr", "tpr", "threshold"]
    assert (points.fpr.iloc[0], points.tpr.iloc[0]) == (0.0, 0.0)
    assert (points.fpr.iloc[-1], points.tpr.iloc[-1]) == (1.0, 1.0)
    assert points.fpr.is_monotonic_increasing and points.tpr.is_monotonic_increasing
    assert np.trapezoid(points.tpr, points.fpr) == pytest.approx(auc(y, a), abs=1e-12)
    # The 0.5 operating point lies on the curve.
    at = points[points.threshold >= 0.5].iloc[-1]
    metrics = threshold_metrics(y, a)
    assert (at.tpr, 1 - at.fpr) == (pytest.approx(metrics["sensitivity"]), pytest.approx(metrics["specificity"]))


def test_summarise_is_plain_json():
    y, a, _ = tied_scores(n=28, n_pos=16)
    probabilities = 1 / (1 + np.exp(-a))
    summary = summarise(y, probabilities, n_bootstrap=300, seed=3)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert all(type(v) in (int, float) for v in summary.values())
    assert (summary["n"], summary["n_positive"], summary["n_bootstrap"]) == (28, 16, 300)
    result = delong(y, probabilities)
    assert summary["auc"] == result.auc and summary["delong_se"] == result.se
    assert summary["delong_p_value"] == result.p_value
    assert (summary["delong_ci_low"], summary["delong_ci_high"]) == (result.ci_low, result.ci_high)
    assert (summary["bootstrap_ci_low"], summary["bootstrap_ci_high"]) == bootstrap_auc_ci(
        y, probabilities, n_resamples=300, seed=3)
    metrics = threshold_metrics(y, probabilities)
    assert all(summary[k] == metrics[k] for k in metrics)
    assert summary == summarise(pd.Series(y), pd.Series(probabilities), n_bootstrap=300, seed=3)

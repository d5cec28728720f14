"""ROC statistics of the reference study (paper section 4.6).

The paper reports the AUC with a DeLong et al. (1988) standard error and significance (MedCalc), a
1,000-iteration bootstrap 95 % CI, and sensitivity, specificity and accuracy at a threshold of 0.5.
The conventions follow R's pROC 1.18, which ``tests/integration/test_stats_vs_proc.py`` checks against:

* label 1 (pCR) is the positive class ("case") and a higher score means pCR, i.e. pROC's
  ``roc(..., levels=c(0, 1), direction="<")``; the direction is never flipped to make the AUC > 0.5;
* ties between a case and a control count 1/2 (Mann-Whitney), so the AUC equals sklearn's ``roc_auc_score``;
* DeLong variance with n - 1 denominators (pROC's ``var(roc)``); CI = AUC +/- z_{1-a/2} * SE clipped to
  [0, 1] (pROC's ``ci.auc(method="delong")``); the paired comparison is pROC's
  ``roc.test(method="delong", paired=TRUE)``;
* the bootstrap resamples cases and controls separately and takes R's default (type 7, numpy's "linear")
  percentiles, as pROC's ``ci.auc(method="bootstrap", boot.stratified=TRUE)``; the random streams differ
  from R's, so only the distribution, not the digits, is comparable.

DeLong is hand-written here because no maintained Python package implements it (scipy, sklearn and
statsmodels have none); it uses the fast midrank algorithm of Sun & Xu (2014), IEEE SPL 21(11):1389-1393.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import optimize, stats
from sklearn.metrics import roc_curve

# Resamples ranked at once by ``bootstrap_auc_ci``: a fixed number, so results never depend on memory size.
_BOOTSTRAP_CHUNK = 256


class DeLongResult(NamedTuple):
    """AUC with its DeLong standard error, confidence interval and z-test against AUC = 0.5."""

    auc: float
    se: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float


class PairedResult(NamedTuple):
    """DeLong test of two correlated AUCs on the same patients (difference = auc_a - auc_b)."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float


# --- validation ---------------------------------------------------------------------------------


def binary_labels(values, name: str = "y_true", both_classes: bool = True) -> np.ndarray:
    """1-D int array of 0 (non-pCR) / 1 (pCR) labels, with both classes present unless ``both_classes`` is False;
    ValueError naming the problem otherwise. The one check of pCR labels every statistic uses."""
    y = np.asarray(values)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty")
    if y.dtype.kind == "O":  # a table column: numbers and missing values (None, NaN, pd.NA), or text
        missing = pd.isna(y)
        if not all(isinstance(v, int | float | np.number) for v in y[~missing]):
            raise ValueError(f"{name} must hold 0/1 labels, got {sorted(map(str, set(y[~missing])))[:5]}")
        y = np.where(missing, np.nan, y).astype(np.float64)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold 0/1 labels, got dtype {y.dtype}")
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError(f"{name} is missing for {int(np.isnan(y).sum())} of {y.size} patients (NaN)")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise ValueError(f"{name} must hold only 0 (non-pCR) and 1 (pCR), got {np.unique(y[bad])[:5].tolist()}")
    y = y.astype(np.int64)
    n_pos = int(y.sum())
    if both_classes and (n_pos == 0 or n_pos == y.size):
        only = "1 (pCR)" if n_pos else "0 (non-pCR)"
        raise ValueError(f"{name} holds only class {only} ({y.size} patients); ROC statistics need both classes")
    return y


def _labels(y_true) -> np.ndarray:
    return binary_labels(y_true)


def _scores(scores, n: int, name: str = "scores") -> np.ndarray:
    """1-D finite float array of length ``n``; ValueError naming the problem otherwise."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {s.shape}")
    if s.size != n:
        raise ValueError(f"length mismatch: y_true has {n} values, {name} has {s.size}")
    if np.isnan(s).any():
        raise ValueError(f"{name} contains NaN ({int(np.isnan(s).sum())} of {s.size} values)")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains infinite values")
    return s


def _two_sided_p(z: float) -> float:
    return float(2.0 * stats.norm.sf(abs(z)))


# --- AUC and DeLong -----------------------------------------------------------------------------


def auc(y_true, scores) -> float:
    """Area under the ROC curve: P(score of a pCR > score of a non-pCR), ties counting 1/2.

    The Mann-Whitney U of the pCR scores divided by n_pCR * n_non-pCR; equals sklearn's ``roc_auc_score``.
    """
    y = _labels(y_true)
    s = _scores(scores, y.size)
    pos, neg = s[y == 1], s[y == 0]
    u = stats.mannwhitneyu(pos, neg, alternative="two-sided", method="asymptotic").statistic
    return float(u / (pos.size * neg.size))


def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeLong structural components by midranks (Sun & Xu 2014) for k score sets at once.

    ``scores`` has shape (k, N). Returns (aucs (k,), case placements (k, m), control placements (k, n)):
    a case's placement is the fraction of controls it beats (ties 1/2), a control's the fraction of
    cases that beat it; each averages to the AUC.
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    rank_pos = stats.rankdata(pos, axis=1)
    rank_neg = stats.rankdata(neg, axis=1)
    rank_all = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = (rank_all[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v_cases = (rank_all[:, :m] - rank_pos) / n
    v_controls = 1.0 - (rank_all[:, m:] - rank_neg) / m
    return aucs, v_cases, v_controls


def _delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(aucs (k,), DeLong covariance (k, k)) with n - 1 denominators, as pROC."""
    m, n = int(y.sum()), int(y.size - y.sum())
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong variance needs at least 2 patients in each class, got {m} pCR and {n} non-pCR"
        )
    aucs, v_cases, v_controls = _placements(y, scores)
    cov = np.atleast_2d(np.cov(v_cases)) / m + np.atleast_2d(np.cov(v_controls)) / n
    return aucs, cov


def _z(difference: float, se: float) -> float:
    """difference / se, with 0/0 read as z = 0 (pROC does the same for identical curves)."""
    if se == 0.0:
        return 0.0 if difference == 0.0 else float(np.copysign(np.inf, difference))
    return difference / se


def delong(y_true, scores, level: float = 0.95) -> DeLongResult:
    """AUC with DeLong standard error, CI (clipped to [0, 1]) and two-sided z-test against AUC = 0.5.

    Matches pROC's ``auc``, ``sqrt(var(roc))`` and ``ci.auc(roc, method="delong")``. A perfectly
    separating score has SE 0, CI [1, 1] and p = 0 (pROC warns that this "can be misleading").
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    y = _labels(y_true)
    s = _scores(scores, y.size)
    aucs, cov = _delong_covariance(y, s[None, :])
    value = float(aucs[0])
    se = float(np.sqrt(max(cov[0, 0], 0.0)))
    half = float(stats.norm.ppf(0.5 + level / 2.0)) * se
    z = _z(value - 0.5, se)
    return DeLongResult(
        auc=value, se=se, ci_low=max(value - half, 0.0), ci_high=min(value + half, 1.0), z=z,
        p_value=_two_sided_p(z),
    )


def delong_paired(y_true, scores_a, scores_b) -> PairedResult:
    """DeLong test of two correlated ROC curves on the same patients (``roc.test(method="delong", paired=TRUE)``).

    ``difference = auc_a - auc_b``; ``se`` is the DeLong SE of that difference; the p-value is two-sided.
    """
    y = _labels(y_true)
    a = _scores(scores_a, y.size, "scores_a")
    b = _scores(scores_b, y.size, "scores_b")
    aucs, cov = _delong_covariance(y, np.stack([a, b]))
    difference = float(aucs[0] - aucs[1])
    se = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1], 0.0)))
    z = _z(difference, se)
    return PairedResult(
        auc_a=float(aucs[0]), auc_b=float(aucs[1]), difference=difference, se=se, z=z, p_value=_two_sided_p(z)
    )


def hanley_mcneil_se(auc_value: float, n_positive: int, n_negative: int) -> float:
    """The AUC's standard error expected at ``auc_value`` with these class counts (Hanley & McNeil 1982,
    Radiology 143:29-36; its exponential approximation of Q1 and Q2). Hand-written: a closed form of three
    lines that no maintained package exposes."""
    a = auc_value
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    variance = (a * (1.0 - a) + (n_positive - 1) * (q1 - a * a) + (n_negative - 1) * (q2 - a * a)) \
        / (n_positive * n_negative)
    return float(np.sqrt(max(variance, 0.0)))


def auc_for_ci_low(ci_low: float, n_positive: int, n_negative: int, level: float = 0.95) -> float:
    """The AUC whose CI's lower bound (AUC - z * Hanley-McNeil SE) equals ``ci_low`` at these class counts:
    how high a cohort of this size needs the AUC to be before it can show a lower bound of ``ci_low``."""
    if n_positive < 1 or n_negative < 1 or not 0.0 <= ci_low < 1.0:
        raise ValueError(f"needs both classes and 0 <= ci_low < 1, got {n_positive}, {n_negative}, {ci_low}")
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    return float(optimize.brentq(lambda a: a - z * hanley_mcneil_se(a, n_positive, n_negative) - ci_low,
                                 ci_low, 1.0))


# --- bootstrap ----------------------------------------------------------------------------------


def bootstrap_auc_ci(
    y_true, scores, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Stratified percentile bootstrap CI of the AUC, as pROC's ``ci.auc(method="bootstrap", boot.stratified=TRUE)``.

    Each resample draws the pCR and the non-pCR patients with replacement separately (so both classes are
    always present); the bounds are the (1 - level)/2 and (1 + level)/2 percentiles of the resampled AUCs
    (linear interpolation, R's default type 7). Deterministic for a given ``seed``.
    """
    if isinstance(n_resamples, bool) or int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    y = _labels(y_true)
    s = _scores(scores, y.size)
    pos, neg = s[y == 1], s[y == 0]
    m, n = pos.size, neg.size
    rng = np.random.default_rng(seed)
    aucs = np.empty(int(n_resamples))
    for start in range(0, int(n_resamples), _BOOTSTRAP_CHUNK):
        b = min(_BOOTSTRAP_CHUNK, int(n_resamples) - start)
        sample = np.concatenate([pos[rng.integers(0, m, size=(b, m))], neg[rng.integers(0, n, size=(b, n))]], axis=1)
        ranks = stats.rankdata(sample, axis=1)
        aucs[start:start + b] = (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    low, high = np.quantile(aucs, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


# --- operating point and curve ------------------------------------------------------------------


def threshold_metrics(y_true, probabilities, threshold: float = 0.5) -> dict:
    """Sensitivity, specificity, accuracy and the confusion counts at ``threshold``.

    A patient is predicted pCR when ``probability >= threshold`` (sklearn ``roc_curve``'s convention, so the
    operating point lies on the curve of ``roc_curve_points``).
    """
    y = _labels(y_true)
    p = _scores(probabilities, y.size, "probabilities")
    predicted = p >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    fn = int(np.sum(~predicted & (y == 1)))
    tn = int(np.sum(~predicted & (y == 0)))
    fp = int(np.sum(predicted & (y == 0)))
    return {
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "accuracy": (tp + tn) / y.size,
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
    }


def roc_curve_points(y_true, scores) -> pd.DataFrame:
    """The empirical ROC curve (sklearn ``roc_curve``) as a DataFrame with columns fpr, tpr, threshold.

    As in sklearn, the first row (nobody predicted pCR) has threshold +inf, and collinear points are dropped.
    """
    y = _labels(y_true)
    s = _scores(scores, y.size)
    fpr, tpr, thresholds = roc_curve(y, s, pos_label=1)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds})


def summarise(y_true, probabilities, n_bootstrap: int = 1000, seed: int = 0, threshold: float = 0.5) -> dict:
    """The paper's per-cohort summary as a JSON-serialisable dict of plain floats and ints.

    Keys: n, n_positive, auc, delong_se, delong_ci_low, delong_ci_high, delong_p_value, bootstrap_ci_low,
    bootstrap_ci_high, n_bootstrap, threshold, sensitivity, specificity, accuracy, tp, tn, fp, fn.
    """
    y = _labels(y_true)
    p = _scores(probabilities, y.size, "probabilities")
    result = delong(y, p)
    low, high = bootstrap_auc_ci(y, p, n_resamples=n_bootstrap, seed=seed)
    metrics = threshold_metrics(y, p, threshold=threshold)
    return {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "auc": result.auc,
        "delong_se": result.se,
        "delong_ci_low": result.ci_low,
        "delong_ci_high": result.ci_high,
        "delong_p_value": result.p_value,
        "bootstrap_ci_low": low,
        "bootstrap_ci_high": high,
        "n_bootstrap": int(n_bootstrap),
        "threshold": float(threshold),
        **{key: (int(v) if isinstance(v, int) else float(v)) for key, v in metrics.items()},
    }

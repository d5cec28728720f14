"""Subgroup performance and equalized-odds disparity (MAMA-MIA's fairness measure) of patient-level predictions.

For one subgroup variable (age band, receptor status, field strength, site, vendor, ...), each group gets n, its
AUC with a DeLong CI (when both classes have at least two patients) and its TPR and FPR at the decision
threshold. The equalized-odds disparity of the variable is the range of TPR plus the range of FPR over the groups
that can be judged: at least ``min_n`` patients of each class, since a TPR is a proportion of the group's pCR
patients and an FPR one of its other patients. Other groups are listed, never folded into a pass. Why per class:
a perfectly fair model (TPR 0.6 and FPR 0.2 in every group) exceeds a limit of 0.6 by chance in 29 % of cohorts
whose two age groups hold 3 pCR patients each (as a 29-patient external cohort's do), and in 5 % with 10 patients
per class and group (``bench/fairness.py``). The CI is a percentile bootstrap that resamples patients
within each group and class, so every judged group keeps both classes in every resample. A range is never
negative, so in small groups both the estimate and its resamples sit above a true disparity of zero.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from her2pcr.stats.roc import binary_labels, delong

MISSING_GROUP = "missing"  # a patient without a value forms a group of its own: nobody is dropped


def balanced_accuracy(y_true, probabilities, threshold: float = 0.5) -> float:
    """Mean of sensitivity and specificity at ``threshold`` (probability >= threshold is predicted pCR)."""
    y = binary_labels(y_true)
    return float(balanced_accuracy_score(y, (np.asarray(probabilities, dtype=float) >= threshold).astype(int)))


def _rates(y: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """(TPR, FPR); NaN for a class nobody belongs to."""
    positives, negatives = y == 1, y == 0
    tpr = float(predicted[positives].mean()) if positives.any() else float("nan")
    fpr = float(predicted[negatives].mean()) if negatives.any() else float("nan")
    return tpr, fpr


@dataclass(frozen=True)
class Subgroup:
    group: str
    n: int
    n_pcr: int
    tpr: float
    fpr: float
    auc: float | None = None
    auc_ci_low: float | None = None
    auc_ci_high: float | None = None
    judged: bool = False
    note: str = ""


@dataclass
class VariableFairness:
    """One subgroup variable: its groups, and the disparity over the judged ones (None below two of them)."""

    variable: str
    groups: list[Subgroup]
    disparity: float | None
    disparity_ci_low: float | None
    disparity_ci_high: float | None
    tpr_range: float | None
    fpr_range: float | None
    too_small: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**asdict(self), "groups": [asdict(g) for g in self.groups]}


def _disparity(y: np.ndarray, predicted: np.ndarray, groups: np.ndarray, judged: list[str]) -> tuple[float, float,
                                                                                                        float]:
    """(TPR range + FPR range, TPR range, FPR range) over the judged groups."""
    rates = np.array([_rates(y[groups == g], predicted[groups == g]) for g in judged])
    tpr_range, fpr_range = float(np.ptp(rates[:, 0])), float(np.ptp(rates[:, 1]))
    return tpr_range + fpr_range, tpr_range, fpr_range


def variable_fairness(frame: pd.DataFrame, variable: str, threshold: float, min_n: int, n_bootstrap: int,
                      seed: int, y_column: str = "pcr", prob_column: str = "probability") -> VariableFairness:
    """Subgroups of ``frame[variable]`` (one row per patient) and their equalized-odds disparity with a CI."""
    if frame.empty:
        raise ValueError("no patients to compare subgroups on")
    y = binary_labels(frame[y_column].to_numpy(), y_column, both_classes=False)
    probabilities = pd.to_numeric(frame[prob_column], errors="coerce").to_numpy(dtype=float)
    if np.isnan(probabilities).any():
        raise ValueError(f"{prob_column} is missing or not numeric for {int(np.isnan(probabilities).sum())} patient(s)")
    predicted = (probabilities >= threshold).astype(float)
    values = frame[variable]
    groups = values.astype("string").fillna(MISSING_GROUP).to_numpy(dtype=str)
    # an ordered variable (age bands) keeps its order; other groups are sorted by name
    order = [str(c) for c in values.cat.categories] if isinstance(values.dtype, pd.CategoricalDtype) else []
    order = [g for g in order if g in set(groups)] + sorted(set(groups) - set(order))
    rows, judged, too_small = [], [], []
    for group in order:
        inside = groups == group
        gy, gp = y[inside], probabilities[inside]
        n_pcr, n = int(gy.sum()), int(inside.sum())
        tpr, fpr = _rates(gy, predicted[inside])
        auc = ci_low = ci_high = None
        if min(n_pcr, n - n_pcr) >= 2:
            result = delong(gy, gp)
            auc, ci_low, ci_high = result.auc, result.ci_low, result.ci_high
        ok = min(n_pcr, n - n_pcr) >= min_n
        note = "" if ok else f"{n_pcr} pCR and {n - n_pcr} non-pCR: fewer than {min_n} in a class"
        rows.append(Subgroup(group, n, n_pcr, tpr, fpr, auc, ci_low, ci_high, ok, note))
        (judged if ok else too_small).append(group)
    if len(judged) < 2:
        return VariableFairness(variable, rows, None, None, None, None, None, too_small)
    disparity, tpr_range, fpr_range = _disparity(y, predicted, groups, judged)
    strata = [np.flatnonzero((groups == g) & (y == c)) for g in judged for c in (0, 1)]
    rng = np.random.default_rng(seed)
    draws = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        chosen = np.concatenate([rng.choice(s, size=len(s), replace=True) for s in strata])
        draws[b] = _disparity(y[chosen], predicted[chosen], groups[chosen], judged)[0]
    low, high = np.percentile(draws, [2.5, 97.5])
    return VariableFairness(variable, rows, disparity, float(low), float(high), tpr_range, fpr_range, too_small)


def age_band(ages: pd.Series, edges: list[float]) -> pd.Series:
    """Age bands from ascending inner edges: [40, 50] gives '<40', '40-49', '>=50' (whole years), as an ordered
    categorical so that tables list them youngest first."""
    edges = sorted(edges)
    labels = [f"<{edges[0]:g}", *(f"{a:g}-{b - 1:g}" for a, b in itertools.pairwise(edges)), f">={edges[-1]:g}"]
    return pd.cut(pd.to_numeric(ages, errors="coerce"), [-np.inf, *edges, np.inf], right=False, labels=labels)

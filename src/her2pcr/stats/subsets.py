"""Subset analyses of the reference study: accuracy by hormone-receptor status and by field strength
(Supplementary Tables 1-2) and the two-sided t-test of model outputs between pCR and non-pCR within each
subtype (paper section 2.3, "the probabilistic output of the CNN differed significantly ... by two-sided t-test").

Both functions take one row per patient with a 0/1 label column and a model-probability column, and return
one row per value of ``group_column`` (missing group values form their own row, so nobody is dropped).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from her2pcr.stats.roc import binary_labels


def _checked(frame: pd.DataFrame, group_column: str, y_column: str, prob_column: str) -> pd.DataFrame:
    """The three columns, labels as int 0/1 and probabilities as float; ValueError naming the problem."""
    missing = [c for c in (group_column, y_column, prob_column) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; it has {list(frame.columns)}")
    if len({group_column, y_column, prob_column}) != 3:
        raise ValueError(f"group_column, y_column and prob_column must differ, got {group_column!r}, "
                         f"{y_column!r}, {prob_column!r}")
    if frame.empty:
        raise ValueError("frame has no rows")
    y_values = binary_labels(frame[y_column].to_numpy(), y_column, both_classes=False)
    prob = pd.to_numeric(frame[prob_column], errors="coerce")
    if prob.isna().any():
        raise ValueError(f"{prob_column} is missing or not numeric for {int(prob.isna().sum())} patient(s)")
    return pd.DataFrame({"group": frame[group_column], "y": y_values, "p": prob.astype(float)}, index=frame.index)


def _fraction(k: int, n: int) -> str:
    """'k/n' as in Supplementary Table 1, 'N/A' when nobody is in that class."""
    return f"{k}/{n}" if n else "N/A"


def subset_accuracy(
    frame: pd.DataFrame,
    group_column: str,
    y_column: str = "pcr",
    prob_column: str = "probability",
    threshold: float = 0.5,
) -> pd.DataFrame:
    """Per value of ``group_column``: how many pCR and non-pCR patients the model identified correctly.

    A patient is predicted pCR when ``probability >= threshold`` (as ``her2pcr.stats.roc.threshold_metrics``).
    Columns: the group value (named ``group_column``), n, n_pcr, n_non_pcr, pcr_correct, non_pcr_correct,
    pcr_identified and non_pcr_identified ('k/n' strings, 'N/A' for an empty class, as Supplementary
    Table 1) and accuracy (correct / n).
    """
    data = _checked(frame, group_column, y_column, prob_column)
    data["correct"] = (data.p >= threshold).astype(int) == data.y
    rows = []
    for value, part in data.groupby("group", dropna=False, sort=True):
        pcr, non = part[part.y == 1], part[part.y == 0]
        pcr_correct, non_correct = int(pcr.correct.sum()), int(non.correct.sum())
        rows.append({
            group_column: value,
            "n": len(part),
            "n_pcr": len(pcr),
            "n_non_pcr": len(non),
            "pcr_correct": pcr_correct,
            "non_pcr_correct": non_correct,
            "pcr_identified": _fraction(pcr_correct, len(pcr)),
            "non_pcr_identified": _fraction(non_correct, len(non)),
            "accuracy": (pcr_correct + non_correct) / len(part),
        })
    return pd.DataFrame(rows)


def outputs_ttest(
    frame: pd.DataFrame,
    group_column: str,
    y_column: str = "pcr",
    prob_column: str = "probability",
) -> pd.DataFrame:
    """Per value of ``group_column``: two-sided Welch t-test of the model outputs, pCR versus non-pCR.

    ``scipy.stats.ttest_ind(pcr, non_pcr, equal_var=False)``, so t > 0 when pCR patients score higher.
    Columns: the group value (named ``group_column``), n_pcr, n_non_pcr, mean_pcr, mean_non_pcr, t,
    p_value and note. t and p_value are NaN, with the reason in ``note``, when a class has fewer than 2
    patients or both classes have zero variance; ``note`` is empty otherwise.
    """
    data = _checked(frame, group_column, y_column, prob_column)
    rows = []
    for value, part in data.groupby("group", dropna=False, sort=True):
        pcr, non = part.p[part.y == 1].to_numpy(), part.p[part.y == 0].to_numpy()
        t = p_value = np.nan
        too_few = [f"{len(x)} {name} patient{'s' if len(x) != 1 else ''}"
                   for x, name in ((pcr, "pCR"), (non, "non-pCR")) if len(x) < 2]
        if too_few:
            note = f"t-test needs at least 2 patients per class; {' and '.join(too_few)}"
        elif np.ptp(pcr) == 0 and np.ptp(non) == 0:
            note = "both classes have zero variance"
        else:
            result = stats.ttest_ind(pcr, non, equal_var=False)
            t, p_value, note = float(result.statistic), float(result.pvalue), ""
        rows.append({
            group_column: value,
            "n_pcr": len(pcr),
            "n_non_pcr": len(non),
            "mean_pcr": float(pcr.mean()) if len(pcr) else np.nan,
            "mean_non_pcr": float(non.mean()) if len(non) else np.nan,
            "t": t,
            "p_value": p_value,
            "note": note,
        })
    return pd.DataFrame(rows)

"""Spearman correlation of model outputs with acquisition parameters, Benjamini-Hochberg adjusted (paper
Table 3): used by the report's Table 3 and by the external-validation gate, so both count the same way."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

#: The acquisition parameters of the study's Table 3 (columns of data/interim/acquisition.parquet).
TABLE3_PARAMETERS = ["pixel_spacing_mm", "slice_thickness_mm", "repetition_time_ms", "echo_time_ms",
                     "phase_encoding_steps", "percent_sampling", "flip_angle_deg", "bolus_volume_ml"]
#: Fewer patients than this with a value give no test (a Spearman p on 3 points means nothing).
MIN_PAIRS = 4


def spearman_bh(scores: pd.Series, covariates: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per column: n, Spearman rho and p of ``scores`` against it, and the BH-adjusted p across the columns.

    Rows are aligned on the index; patients missing a value are left out of that column's test only. A
    column with fewer than ``MIN_PAIRS`` pairs or a single distinct value gets NaN rho, p and adjusted p
    and does not count in the adjustment. Columns: parameter, n, rho, p_value, p_adjusted.
    """
    joined = covariates.reindex(scores.index)
    results = []
    for column in columns:
        pair = pd.DataFrame({"score": scores, "value": joined[column]}).dropna()
        if len(pair) < MIN_PAIRS or pair.value.nunique() < 2 or pair.score.nunique() < 2:
            results.append({"parameter": column, "n": len(pair), "rho": np.nan, "p_value": np.nan})
            continue
        rho, p = stats.spearmanr(pair.score, pair.value)
        results.append({"parameter": column, "n": len(pair), "rho": float(rho), "p_value": float(p)})
    table = pd.DataFrame(results, columns=["parameter", "n", "rho", "p_value"])
    table["p_adjusted"] = np.nan
    finite = np.isfinite(table.p_value.to_numpy(dtype=float))
    if finite.any():
        table.loc[finite, "p_adjusted"] = multipletests(table.p_value[finite].to_numpy(dtype=float),
                                                        method="fdr_bh")[1]
    return table

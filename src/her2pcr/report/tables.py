"""Tables of the reference study, each a DataFrame computed from this run's outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from her2pcr.stats.correlation import TABLE3_PARAMETERS, spearman_bh

ACQUISITION_ROWS = {
    "field_strength_t": "Field strength, T", "pixel_spacing_mm": "Pixel spacing, mm",
    "slice_thickness_mm": "Slice thickness, mm", "repetition_time_ms": "TR, ms", "echo_time_ms": "TE, ms",
    "phase_encoding_steps": "Phase-encoding steps", "percent_sampling": "Percent sampling",
    "flip_angle_deg": "Flip angle, deg", "bolus_volume_ml": "Bolus volume, ml",
    "n_post_phases": "Post-contrast phases", "mean_time_between_phases_s": "Time between phases, s",
}
CORRELATED = TABLE3_PARAMETERS


def _median_range(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "n/a"
    return f"{values.median():.3g} [{values.min():.3g}-{values.max():.3g}] (n={len(values)})"


def _mean_range(values: pd.Series) -> str:
    values = values.dropna()
    return f"{values.mean():.1f} [{values.min():.0f}-{values.max():.0f}]" if len(values) else "n/a"


def table1_clinical(clinical: pd.DataFrame, cohorts: list[str]) -> pd.DataFrame:
    """Table 1: clinical variables per cohort and outcome."""
    columns = {}
    for cohort in cohorts:
        for label, outcome in (("pCR", 1), ("non-pCR", 0)):
            group = clinical[(clinical.cohort == cohort) & (clinical.pcr == outcome)]
            hr_negative = (group.er == "negative") & (group.pr == "negative")
            columns[f"{cohort} {label} (n={len(group)})"] = {
                "Age, years: mean [range]": _mean_range(group.age),
                "Longest diameter, mm: mean [range]": _mean_range(group.longest_diameter_mm),
                "ER positive": f"{(group.er == 'positive').sum()}",
                "PR positive": f"{(group.pr == 'positive').sum()}",
                "ER/PR negative": f"{hr_negative.sum()}",
                "Lymph node positive": f"{(group.lymph_node == 'positive').sum()}",
                **{f"Stage {s}": f"{(group.stage == s).sum()}" for s in ("I", "II", "III", "IV")},
                **{f"Regimen {r}": f"{(group.regimen == r).sum()}" for r in sorted(clinical.regimen.dropna().unique())},
            }
    return pd.DataFrame(columns)


def table2_phase_inputs(trials: pd.DataFrame) -> pd.DataFrame:
    """Table 2: validation AUC of each CNN phase-input configuration (best complete trial of the search)."""
    done = trials[trials.state == "COMPLETE"].copy()
    if done.empty:
        return pd.DataFrame(columns=["phase inputs", "trials", "best validation AUC", "median validation AUC"])
    grouped = done.groupby("params_phases").value
    table = pd.DataFrame({"trials": grouped.size(), "best validation AUC": grouped.max().round(3),
                          "median validation AUC": grouped.median().round(3)})
    table.index.name = "phase inputs"
    return table.sort_values("best validation AUC", ascending=False).reset_index()


def _rounded(value: float) -> float:
    return round(value, 3) if np.isfinite(value) else np.nan


def table3_acquisition_correlation(predictions: pd.DataFrame, acquisition: pd.DataFrame,
                                   cohorts: list[str]) -> pd.DataFrame:
    """Table 3: Spearman correlation of CNN outputs with each acquisition parameter, BH-adjusted per cohort."""
    joined = predictions.join(acquisition, how="inner")
    rows = []
    for cohort in cohorts:
        group = joined[joined.cohort == cohort]
        for row in spearman_bh(group.probability, group, CORRELATED).itertuples():
            rows.append({"cohort": cohort, "parameter": ACQUISITION_ROWS[row.parameter], "n": row.n,
                         "Spearman r": _rounded(row.rho), "p": _rounded(row.p_value),
                         "BH-adjusted p": _rounded(row.p_adjusted)})
    return pd.DataFrame(rows)


def table4_acquisition(acquisition: pd.DataFrame, cohorts: pd.Series) -> pd.DataFrame:
    """Table 4: acquisition parameters per cohort, median [range]."""
    joined = acquisition.join(cohorts)
    out = {}
    for cohort, group in joined.groupby("cohort"):
        column = {label: _median_range(group[name]) for name, label in ACQUISITION_ROWS.items()}
        column["Field strength 1.5 T / 3 T"] = (f"{(group.field_strength_t < 2).sum()} / "
                                               f"{(group.field_strength_t >= 2).sum()}")
        column["Timing tags present"] = f"{int(group.timing_present.sum())} of {len(group)}"
        out[f"{cohort} (n={len(group)})"] = column
    return pd.DataFrame(out)


def subset_table(evaluation: dict, key: str) -> pd.DataFrame:
    """Supplementary Tables 1-2: correctly identified pCR and non-pCR per subgroup and cohort."""
    rows = []
    for cohort, data in evaluation["cohorts"].items():
        for group, row in data.get("subsets", {}).get(key, {}).items():
            rows.append({"cohort": cohort, key.replace("_", " "): group, "pCR identified": row["pcr_identified"],
                         "non-pCR identified": row["non_pcr_identified"],
                         "accuracy": None if row["accuracy"] is None else round(row["accuracy"], 3)})
    return pd.DataFrame(rows)


def auc_table(evaluation: dict, cohorts: list[str]) -> pd.DataFrame:
    """AUC [DeLong 95 % CI] of every model per cohort, with the paired DeLong p-value against the CNN; a model's
    AUC on a cohort it was fitted or selected on is marked as a training-set figure."""
    rows = []
    fitted_on = evaluation.get("fitted_on", {})
    for cohort in cohorts:
        data = evaluation["cohorts"].get(cohort, {})
        for model, s in data.get("models", {}).items():
            paired = data.get("paired_delong_vs_cnn", {}).get(model, {})
            rows.append({"cohort": cohort, "model": model, "n": s["n"],
                         "training set": "yes" if cohort in fitted_on.get(model, []) else "",
                         "AUC [95 % CI]": f"{s['auc']:.3f} [{s['delong_ci_low']:.3f}-{s['delong_ci_high']:.3f}]",
                         "bootstrap CI": f"{s['bootstrap_ci_low']:.3f}-{s['bootstrap_ci_high']:.3f}",
                         "p (AUC=0.5)": round(s["delong_p_value"], 4),
                         "p vs CNN (paired DeLong)": round(paired["p_value"], 4) if paired else None,
                         "accuracy": round(s["accuracy"], 3), "sensitivity": round(s["sensitivity"], 3),
                         "specificity": round(s["specificity"], 3)})
    return pd.DataFrame(rows)

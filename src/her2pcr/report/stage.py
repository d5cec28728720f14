"""The report stage: reports/report.md and report.html regenerating the study's tables and figures."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from her2pcr.config import ReportParams, TrackingParams, ValidateParams
from her2pcr.report import tables
from her2pcr.validation.report import forest_png, subgroup_rows
from her2pcr.validation.subgroups import subgroup_analysis, subgroup_columns

SUBGROUPS_DIR = "subgroups"  # beside report.md: pooled.json (every statistic) and forest.png


def _section(title: str, text: str, table: pd.DataFrame | None = None, index: bool = False) -> str:
    body = f"## {title}\n\n{text}\n\n"
    if table is not None:
        body += (table.to_markdown(index=index) if not table.empty else "_no rows_") + "\n\n"
    return body


def _figure(path: Path, relative_to: Path, caption: str) -> str:
    return f"![{caption}]({os.path.relpath(path, relative_to)})\n\n*{caption}*\n\n"


def subgroup_section(predictions: pd.DataFrame, external: list[str], params: ReportParams,
                     validation: ValidateParams) -> str:
    """The CNN's subgroups on the external cohorts pooled (validation's variables, threshold and gate), with a
    forest plot of their AUCs; each cohort's own analysis is in its validation report."""
    frame = predictions[predictions.cohort.isin(external)]
    if frame.empty:
        raise ValueError(f"the predictions file has no patient of the external cohorts {external}")
    columns = subgroup_columns(frame, params.interim_dir, external, validation.subgroups)
    variables = [v.to_dict() for v in subgroup_analysis(frame, columns, validation.threshold, validation.gate,
                                                        validation.subgroups, validation.seed)]
    folder = params.out_dir / SUBGROUPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pooled.json").write_text(json.dumps({"cohorts": external, "n": len(frame), "variables": variables},
                                                   indent=1, default=float), encoding="utf-8")
    gate = validation.gate
    text = (f"CNN on {' + '.join(external)} pooled (n = {len(frame)}): TPR and FPR at {validation.threshold:g}, AUC "
            f"with DeLong 95 % CI. The equalized-odds disparity of a variable is the range of TPR plus the range of "
            f"FPR over its subgroups of at least {gate.min_subgroup_n} patients of each class (bootstrap 95 % "
            f"CI); the gate allows at most {gate.max_equalized_odds_disparity:g} on each cohort (see its "
            f"validation report).")
    body = _section("Subgroups and fairness", text, pd.DataFrame(subgroup_rows(variables)))
    figure = forest_png(variables, f"{' + '.join(external)}: subgroup AUCs")
    if figure is not None:
        (folder / "forest.png").write_bytes(figure)
        body += _figure(folder / "forest.png", params.out_dir, "Subgroup AUCs, external cohorts pooled")
    return body


def build_report(params: ReportParams, validation: ValidateParams) -> str:
    clinical = pd.read_parquet(params.interim_dir / "clinical.parquet").set_index("patient_id")
    acquisition = pd.read_parquet(params.interim_dir / "acquisition.parquet").set_index("patient_id")
    evaluation = json.loads(params.evaluate_metrics.read_text(encoding="utf-8"))
    predictions = pd.read_csv(params.predictions_file).set_index("patient_id")
    trials = pd.read_csv(params.trials_file) if params.trials_file.exists() else pd.DataFrame(
        columns=["state", "params_phases", "value"])
    cohorts = list(params.cohorts)
    synthetic = params.truth_file is not None and params.truth_file.exists()
    out = params.out_dir
    text = [f"# her2pcr report\n\nGenerated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from this run's data "
            f"({len(clinical)} patients; model run `{evaluation['model_run_id']}`). Research use only.\n\n"]
    if synthetic:
        text.append("The data are **synthetic** (simulator); the `oracle` model is the simulator's true pCR "
                    "probability of each patient, an upper bound no model can exceed on average.\n\n")
    text.append(_section("Table 1. Clinical variables", "Counts per cohort and outcome; age and longest "
                         "diameter as mean [range].", tables.table1_clinical(clinical, cohorts), index=True))
    text.append(_section("Table 2. CNN phase inputs in the validation set",
                         "Best and median patient-level validation AUC of the search trials per phase-input "
                         "configuration (Optuna study of the tune stage).", tables.table2_phase_inputs(trials)))
    text.append(_section("Figure 1 and AUCs. Models per cohort",
                         "AUC with DeLong 95 % CI, stratified bootstrap CI (1000 resamples), DeLong test against "
                         "0.5, paired DeLong test against the CNN; accuracy, sensitivity and specificity at 0.5. "
                         "`training set` marks a model's AUC on a cohort it was fitted or selected on (optimistic).",
                         tables.auc_table(evaluation, cohorts)))
    for cohort in cohorts:
        figure = params.figures_dir / f"roc_{cohort}.png"
        if figure.exists():
            text.append(_figure(figure, out, f"ROC curves, {cohort}"))
    text.append(_section("Table 3. CNN outputs and acquisition parameters",
                         "Spearman correlation of the CNN's patient probability with each acquisition parameter "
                         "in the testing cohorts, Benjamini-Hochberg adjusted within each cohort.",
                         tables.table3_acquisition_correlation(predictions, acquisition, cohorts[2:])))
    text.append(_section("Table 4. Acquisition parameters", "Median [range] (n with the value in DICOM).",
                         tables.table4_acquisition(acquisition, clinical.cohort), index=True))
    text.append(_section("Supplementary Table 1. Accuracy by hormone-receptor status",
                         "Correctly identified pCR and non-pCR patients (k/n) at 0.5.",
                         tables.subset_table(evaluation, "hormone_receptor")))
    text.append(_section("Supplementary Table 2. Accuracy by field strength", "As Supplementary Table 1.",
                         tables.subset_table(evaluation, "field_strength")))
    text.append(subgroup_section(predictions, cohorts[2:], params, validation))
    if params.baselines_file is not None and params.baselines_file.exists():
        baselines = json.loads(params.baselines_file.read_text(encoding="utf-8"))
        text.append(_section("Clinical variables in D1", "Univariate tests (Wilcoxon rank-sum for age and longest "
                             f"diameter, chi-squared otherwise). {clinical_selection_text(baselines)}",
                             pd.DataFrame(baselines["univariate_tests"])))
    combined = evaluation.get("cnn_clinical", {})
    if combined.get("coefficients"):
        text.append(_section("CNN + clinical model", f"Logistic regression fitted on {combined['fitted_on']} "
                             f"({combined['method']}); Wald p-values."
                             + (" cnn_score is the CNN's logit standardised by each fold model's held-out "
                                "patients." if combined.get("cnn_term") == "cnn_score" else "")
                             + "".join(f" **Warning:** {note}." for note in combined.get("notes", [])),
                             pd.DataFrame(combined["coefficients"])))
    elif combined:
        text.append(_section("CNN + clinical model", f"Not fitted: {combined.get('not_fitted')}"))
    if params.pk_search_file is not None and params.pk_search_file.exists():
        search = pd.read_csv(params.pk_search_file)
        best = search[search.best_for_classifier].drop(columns=["best_for_classifier"])
        text.append(_section("Supplementary Table 6. PK model search",
                             "Best ranking and number of features per classifier by cross-validated AUC in D1, "
                             "with its D2 AUC; `chosen` marks the final PK model (best D2 AUC).", best))
    gradcams = sorted((params.figures_dir / "gradcam").glob("*.png"))
    text.append("## Figure 3. Guided Grad-CAM\n\nMost confident correct pCR and non-pCR per cohort; each "
                "column is one phase branch.\n\n")
    text += [_figure(path, out, path.stem) for path in gradcams]
    return "".join(text)


def clinical_selection_text(baselines: dict) -> str:
    """Which clinical variables the clinical model holds and why, with the fits' warnings (e.g. separation)."""
    chosen = ", ".join(baselines["significant_variables"]) or "none"
    if baselines.get("fallback_to_best_variable"):
        text = (f"No variable is significant at 0.05: the clinical model falls back to the variable with the "
                f"smallest p-value ({chosen}).")
    else:
        text = f"Significant at 0.05: {chosen}."
    for name, fit in baselines.get("clinical_fits", {}).items():
        text += "".join(f" **Warning ({name}):** {note}." for note in fit["notes"])
    return text


def write_report(params: ReportParams, validation: ValidateParams, tracking: TrackingParams) -> tuple[Path, Path]:
    import markdown
    import mlflow

    params.out_dir.mkdir(parents=True, exist_ok=True)
    text = build_report(params, validation)
    md_path, html_path = params.out_dir / "report.md", params.out_dir / "report.html"
    md_path.write_text(text, encoding="utf-8")
    body = markdown.markdown(text, extensions=["tables"])
    html_path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>her2pcr report</title>"
                         "<style>body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:"
                         "collapse;font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:45em}"
                         f"</style></head><body>{body}</body></html>", encoding="utf-8")
    evaluation = json.loads(params.evaluate_metrics.read_text(encoding="utf-8"))
    mlflow.set_tracking_uri(tracking.uri)
    client = mlflow.MlflowClient(tracking.uri)
    for path in (md_path, html_path):
        client.log_artifact(evaluation["model_run_id"], str(path), "report")
    return md_path, html_path

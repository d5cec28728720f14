"""The evaluate stage: per-cohort AUC with DeLong and bootstrap CIs, paired tests, subsets, ROC and Grad-CAM."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from her2pcr.config import EvaluateParams, TrackingParams  # noqa: E402
from her2pcr.evaluation.predict import add_covariates, load_registered, predict_cohorts  # noqa: E402
from her2pcr.stats.roc import delong_paired, roc_curve_points, summarise  # noqa: E402
from her2pcr.stats.subsets import outputs_ttest, subset_accuracy  # noqa: E402
from her2pcr.training.tracking import log_cohorts  # noqa: E402

log = logging.getLogger(__name__)
MODEL = "cnn"
# Score columns compared with the CNN on the same patients: the baselines stage's clinical and PK
# models, the CNN + clinical model fitted here, receptor status (the clinical reference of the study's
# subset analysis) and, for synthetic data only, the oracle.
REFERENCES = {"clinical_significant": "clinical_significant", "clinical_all": "clinical_all", "pk": "pk",
              "cnn_clinical": "cnn_clinical", "receptor_status": "receptor_score", "oracle": "oracle"}


def cohort_statistics(frame: pd.DataFrame, params: EvaluateParams) -> dict:
    """AUC summaries of every model, paired DeLong tests against the CNN, and the subset analyses."""
    y = frame.pcr.to_numpy()
    out: dict = {"n": len(frame), "n_pcr": int(y.sum())}
    if min(y.sum(), len(y) - y.sum()) < 2:
        out["note"] = "fewer than 2 patients in a class: no ROC statistics"
        return out
    scores = {MODEL: frame.probability}
    scores.update({name: frame[column] for name, column in REFERENCES.items() if column in frame})
    out["models"], out["paired_delong_vs_cnn"], out["not_scored"] = {}, {}, {}
    for name, score in scores.items():
        # A model may not score every patient (the PK model needs timing): compare on those it scores.
        rows = score.notna().to_numpy()
        y_rows = y[rows]
        if min(y_rows.sum(), len(y_rows) - y_rows.sum()) < 2:
            out["not_scored"][name] = f"scores {int(rows.sum())} of {len(y)} patients: too few per class"
            continue
        if not rows.all():
            out["not_scored"][name] = f"scores {int(rows.sum())} of {len(y)} patients"
        out["models"][name] = summarise(y_rows, score.to_numpy()[rows], params.n_bootstrap, params.seed,
                                        params.threshold)
        if name != MODEL:
            result = delong_paired(y_rows, frame.probability.to_numpy()[rows], score.to_numpy()[rows])
            out["paired_delong_vs_cnn"][name] = {"n": int(rows.sum()), "auc_difference": result.difference,
                                                  "z": _finite(result.z), "p_value": result.p_value}
    out["subsets"] = {}
    for column in ("hormone_receptor", "field_strength"):
        table = subset_accuracy(frame, column, prob_column="probability", threshold=params.threshold)
        out["subsets"][column] = _records(table)
    out["subsets"]["ttest_by_hormone_receptor"] = _records(outputs_ttest(frame, "hormone_receptor",
                                                                         prob_column="probability"))
    return out


def json_safe(value):
    """NaN/inf -> None and numpy scalars -> Python, recursively (regression tables can hold NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _records(table: pd.DataFrame) -> dict:
    """JSON-safe rows keyed by group (NaN -> None)."""
    table = table.astype(object).where(table.notna(), None)
    return {str(k): {c: (v.item() if hasattr(v, "item") else v) for c, v in row.items()}
            for k, row in table.to_dict(orient="index").items()}


def roc_outputs(frame: pd.DataFrame, cohort: str, params: EvaluateParams, stats: dict) -> Path | None:
    """DVC plot files (one CSV per model) and one figure with every model of the cohort."""
    if "models" not in stats:
        return None
    params.plots_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    columns = {MODEL: "probability", **{k: v for k, v in REFERENCES.items() if k in stats["models"]}}
    curves = []
    for name, column in columns.items():
        scored = frame[frame[column].notna()]
        points = roc_curve_points(scored.pcr.to_numpy(), scored[column].to_numpy())
        curves.append(points.replace([float("inf")], 1.0).assign(model=name))
        summary = stats["models"][name]
        label = f"{name}: AUC {summary['auc']:.2f} [{summary['delong_ci_low']:.2f}-{summary['delong_ci_high']:.2f}]"
        if name != MODEL:
            label += f", p={stats['paired_delong_vs_cnn'][name]['p_value']:.3f}"
        ax.plot(points.fpr, points.tpr, drawstyle="steps-post", label=label)
    # one file per cohort, a row per (model, threshold): `dvc plots show` draws one chart per cohort, a line per model
    pd.concat(curves)[["model", "fpr", "tpr"]].to_csv(params.plots_dir / f"{cohort}.csv", index=False)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"{cohort} (n={stats['n']})")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    params.figures_dir.mkdir(parents=True, exist_ok=True)
    path = params.figures_dir / f"roc_{cohort}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def gradcam_figures(model, predictions: pd.DataFrame, params: EvaluateParams) -> list[Path]:
    """Guided Grad-CAM of each phase branch for the most confident correct pCR and non-pCR per cohort."""
    if params.gradcam_per_cohort == 0:
        return []
    import numpy as np

    from her2pcr.models.cnn import model_phases
    from her2pcr.models.gradcam import explain, save_figure

    phases = model_phases(model)
    out_dir = params.figures_dir / "gradcam"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for cohort, frame in predictions.groupby("cohort"):
        correct = frame[(frame.probability >= params.threshold) == (frame.pcr == 1)]
        chosen = pd.concat([correct[correct.pcr == 1].nlargest(1, "probability"),
                            correct[correct.pcr == 0].nsmallest(1, "probability")]).head(params.gradcam_per_cohort)
        for pid in chosen.index:
            with np.load(params.processed_dir / f"{pid}.npz") as data:
                middle = len(data[phases[0]]) // 2  # the central stack: the tumour's largest section
                inputs = {p: data[p][middle:middle + 1] for p in phases}
            path = out_dir / f"{cohort}_{pid}.png"
            maps = {phase: m["guided_gradcam"] for phase, m in explain(model, inputs).items()}
            save_figure(path, inputs, maps, title=f"{cohort} {pid}: pCR={int(frame.pcr[pid])}, "
                                                  f"P(pCR)={frame.probability[pid]:.2f} (guided Grad-CAM)")
            paths.append(path)
    return paths


def add_baselines(predictions: pd.DataFrame, params: EvaluateParams) -> tuple[pd.DataFrame, dict]:
    """Clinical and PK scores of the baselines stage, and the CNN + clinical model: the significant clinical
    variables (section 2.2) and the CNN, fitted on D1's out-of-fold CNN scores or, as the study, on D2's."""
    from her2pcr.baselines.combined import (
        PROBABILITY_COLUMN,
        SCORE_COLUMN,
        fit_cnn_clinical,
        independent_association,
        predict_combined,
    )

    if params.baselines_dir is None:
        return predictions, {}
    baselines = pd.read_csv(params.baselines_dir / "predictions.csv").set_index("patient_id")
    description = json.loads((params.baselines_dir / "baselines.json").read_text(encoding="utf-8"))
    out = predictions.join(baselines[["clinical_significant", "clinical_all", "pk"]])
    clinical = pd.read_parquet(params.interim_dir / "clinical.parquet").set_index("patient_id")
    frame = clinical.loc[out.index].assign(cnn_probability=out.probability)
    variables = description["significant_variables"]
    fitted_on = cohort = description["validation_cohort"]
    column = PROBABILITY_COLUMN
    try:
        if params.cnn_clinical_fit == "out_of_fold":
            cohort = description["train_cohort"]
            fitted_on, column = f"{cohort} (out-of-fold)", SCORE_COLUMN
            train_ids = frame.index[frame.cohort == description["train_cohort"]]
            frame[SCORE_COLUMN] = cnn_scores(out, params.model_dir / "out_of_fold.csv", train_ids)
            train = frame.loc[train_ids]
        else:
            train = frame[frame.cohort == description["validation_cohort"]]
        combined = fit_cnn_clinical(train, variables, probability_column=column)
    except (ValueError, FileNotFoundError) as error:  # e.g. a cohort too small, a model without folds
        log.warning("CNN + clinical model not fitted: %s", error)
        return out, {"fitted_on": fitted_on, "variables": variables, "not_fitted": str(error)}
    out["cnn_clinical"] = predict_combined(combined, frame)
    externals = [c for c in params.cohorts if c not in (description["train_cohort"], description["validation_cohort"])]
    refits = []
    for external in externals:  # the study's per-cohort p-values come from refitting within each testing cohort
        try:
            refits += independent_association(frame, variables, cohorts=[external]).to_dict(orient="records")
        except ValueError as error:
            refits.append({"cohort": external, "not_fitted": str(error)})
    summary = {"fitted_on": fitted_on, "fitted_cohort": cohort, "cnn_term": column, "variables": variables,
               "method": combined.method, "notes": combined.notes,
               "coefficients": combined.coefficients.to_dict(orient="records"), "within_cohort_refits": refits}
    return out, summary


def fitted_cohorts(predictions: pd.DataFrame, training: dict, params: EvaluateParams, combined: dict) -> dict:
    """The cohorts each model was fitted (or selected) on: its AUC there is a training-set figure."""
    out = {MODEL: sorted(predictions.cohort.reindex(training.get("train_patients", [])).dropna().unique())}
    if params.baselines_dir is not None:
        description = json.loads((params.baselines_dir / "baselines.json").read_text(encoding="utf-8"))
        train, validation = description["train_cohort"], description["validation_cohort"]
        out.update(clinical_significant=[train], clinical_all=[train], pk=[train, validation])  # PK: chosen on D2
    if "fitted_cohort" in combined:
        out["cnn_clinical"] = [combined["fitted_cohort"]]
    return out


def summary_metrics(metrics: dict) -> dict:
    """The small file `dvc metrics show` prints: n and AUC [DeLong 95 % CI] per cohort and model."""
    out = {}
    for cohort, stats in metrics["cohorts"].items():
        out[cohort] = {"n": stats.get("n", 0)}
        for model, s in stats.get("models", {}).items():
            out[cohort][model] = {"auc": round(s["auc"], 4), "ci_low": round(s["delong_ci_low"], 4),
                                  "ci_high": round(s["delong_ci_high"], 4)}
    return out


def cnn_scores(predictions: pd.DataFrame, out_of_fold_file: Path, train_ids: pd.Index) -> pd.Series:
    """The fold-standardised CNN logit of every patient: out-of-fold for the training patients (never an
    in-sample prediction), the mean of the members' standardised logits for everyone else."""
    from her2pcr.baselines.combined import fold_standardisation, member_score, out_of_fold_score

    out_of_fold = pd.read_csv(out_of_fold_file).set_index("patient_id")
    missing = train_ids.difference(out_of_fold.index)
    if len(missing):
        raise ValueError(f"{len(missing)} training patients have no out-of-fold prediction in {out_of_fold_file}: "
                         f"{sorted(missing)[:5]}")
    standardisation = fold_standardisation(out_of_fold)
    score = member_score(predictions[[f"member_{k + 1}" for k in range(len(standardisation))]], standardisation)
    score.loc[train_ids] = out_of_fold_score(out_of_fold.loc[train_ids], standardisation)
    return score


def evaluate(params: EvaluateParams, tracking: TrackingParams) -> dict:
    import mlflow

    mlflow.set_tracking_uri(tracking.uri)
    version, served = load_registered(params.registered_file, params.model_dir)
    training = json.loads((params.model_dir / "training.json").read_text(encoding="utf-8"))
    predictions, left_out = predict_cohorts(served, params.processed_dir, params.cohorts)
    predictions = add_covariates(predictions, params.interim_dir, params.truth_file)
    predictions, combined = add_baselines(predictions, params)
    metrics: dict = {"model_run_id": training["run_id"], "model_uri": version.model_uri,
                     "not_evaluated": left_out, "cnn_clinical": combined,
                     "fitted_on": fitted_cohorts(predictions, training, params, combined), "cohorts": {}}
    figures = []
    for cohort in params.cohorts:
        frame = predictions[predictions.cohort == cohort]
        if frame.empty:
            metrics["cohorts"][cohort] = {"n": 0}
            continue
        stats = cohort_statistics(frame, params)
        metrics["cohorts"][cohort] = stats
        figure = roc_outputs(frame, cohort, params, stats)
        if figure is not None:
            figures.append(figure)
    figures += gradcam_figures(served.unwrap_python_model().model, predictions, params)
    params.metrics_file.parent.mkdir(parents=True, exist_ok=True)
    params.metrics_file.write_text(json.dumps(json_safe(metrics), indent=1, allow_nan=False), encoding="utf-8")
    params.summary_file.write_text(json.dumps(json_safe(summary_metrics(metrics)), indent=1), encoding="utf-8")
    predictions.drop(columns=["receptor_score"]).reset_index().to_csv(params.predictions_file, index=False)

    with mlflow.start_run(run_id=training["run_id"]):
        for cohort in params.cohorts:
            log_cohorts(params.processed_dir, [cohort], "evaluation")
        for cohort, stats in metrics["cohorts"].items():
            for key in ("auc", "delong_ci_low", "delong_ci_high", "bootstrap_ci_low", "bootstrap_ci_high",
                        "accuracy", "sensitivity", "specificity"):
                if "models" in stats:
                    mlflow.log_metric(f"{cohort}_{key}", stats["models"][MODEL][key])
        for figure in figures:
            mlflow.log_artifact(str(figure), "evaluation")
        mlflow.log_artifact(str(params.metrics_file), "evaluation")
    return metrics

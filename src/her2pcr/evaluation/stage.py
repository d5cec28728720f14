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
from her2pcr.evaluation.predict import add_covariates, predict_cohorts  # noqa: E402
from her2pcr.stats.roc import delong_paired, roc_curve_points, summarise  # noqa: E402
from her2pcr.stats.subsets import outputs_ttest, subset_accuracy  # noqa: E402

log = logging.getLogger(__name__)
MODEL = "cnn"
# Score columns compared with the CNN on the same patients: receptor status is the clinical
# reference of the study's subset analysis; the oracle exists only for synthetic data.
REFERENCES = {"receptor_status": "receptor_score", "oracle": "oracle"}


def cohort_statistics(frame: pd.DataFrame, params: EvaluateParams) -> dict:
    """AUC summaries of every model, paired DeLong tests against the CNN, and the subset analyses."""
    y = frame.pcr.to_numpy()
    out: dict = {"n": len(frame), "n_pcr": int(y.sum())}
    if min(y.sum(), len(y) - y.sum()) < 2:
        out["note"] = "fewer than 2 patients in a class: no ROC statistics"
        return out
    scores = {MODEL: frame.probability}
    scores.update({name: frame[column] for name, column in REFERENCES.items() if column in frame})
    out["models"] = {name: summarise(y, s.to_numpy(), params.n_bootstrap, params.seed, params.threshold)
                     if name == MODEL else summarise(y, s.to_numpy(), params.n_bootstrap, params.seed, 0.5)
                     for name, s in scores.items()}
    out["paired_delong_vs_cnn"] = {}
    for name, s in scores.items():
        if name != MODEL:
            result = delong_paired(y, frame.probability.to_numpy(), s.to_numpy())
            out["paired_delong_vs_cnn"][name] = {"auc_difference": result.difference, "z": _finite(result.z),
                                                  "p_value": result.p_value}
    out["subsets"] = {}
    for column in ("hormone_receptor", "field_strength"):
        table = subset_accuracy(frame, column, prob_column="probability", threshold=params.threshold)
        out["subsets"][column] = _records(table)
    out["subsets"]["ttest_by_hormone_receptor"] = _records(outputs_ttest(frame, "hormone_receptor",
                                                                         prob_column="probability"))
    return out


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
    columns = {MODEL: "probability", **{k: v for k, v in REFERENCES.items() if v in frame}}
    for name, column in columns.items():
        points = roc_curve_points(frame.pcr.to_numpy(), frame[column].to_numpy())
        points.replace([float("inf")], 1.0).to_csv(params.plots_dir / f"{cohort}_{name}.csv", index=False)
        summary = stats["models"][name]
        label = f"{name}: AUC {summary['auc']:.2f} [{summary['delong_ci_low']:.2f}-{summary['delong_ci_high']:.2f}]"
        if name != MODEL:
            label += f", p={stats['paired_delong_vs_cnn'][name]['p_value']:.3f}"
        ax.plot(points.fpr, points.tpr, drawstyle="steps-post", label=label)
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


def evaluate(params: EvaluateParams, tracking: TrackingParams) -> dict:
    import keras
    import mlflow

    model = keras.saving.load_model(params.model_dir / "model.keras", compile=False)
    training = json.loads((params.model_dir / "training.json").read_text(encoding="utf-8"))
    predictions, left_out = predict_cohorts(model, params.processed_dir, params.cohorts)
    predictions = add_covariates(predictions, params.interim_dir, params.truth_file)
    metrics: dict = {"model_run_id": training["run_id"], "not_evaluated": left_out, "cohorts": {}}
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
    figures += gradcam_figures(model, predictions, params)
    params.metrics_file.parent.mkdir(parents=True, exist_ok=True)
    params.metrics_file.write_text(json.dumps(metrics, indent=1, allow_nan=False), encoding="utf-8")
    predictions.drop(columns=["receptor_score"]).reset_index().to_csv(params.predictions_file, index=False)

    mlflow.set_tracking_uri(tracking.uri)
    with mlflow.start_run(run_id=training["run_id"]):
        for cohort, stats in metrics["cohorts"].items():
            for key in ("auc", "delong_ci_low", "delong_ci_high", "bootstrap_ci_low", "bootstrap_ci_high",
                        "accuracy", "sensitivity", "specificity"):
                if "models" in stats:
                    mlflow.log_metric(f"{cohort}_{key}", stats["models"][MODEL][key])
        for figure in figures:
            mlflow.log_artifact(str(figure), "evaluation")
        mlflow.log_artifact(str(params.metrics_file), "evaluation")
    return metrics

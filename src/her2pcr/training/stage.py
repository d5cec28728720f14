"""The train stage: fit, track in MLflow (params, per-epoch metrics, figures, lineage), save the model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from her2pcr.config import TrackingParams, TrainParams  # noqa: E402
from her2pcr.preprocess.settings import CHAIN_FILE  # noqa: E402
from her2pcr.training.fit import FitResult, fit, resolve_params, save_fit  # noqa: E402
from her2pcr.training.tracking import (  # noqa: E402
    data_version,
    flatten,
    git_commit,
    log_cohorts,
    params_hash,
    setup_mlflow,
)

log = logging.getLogger(__name__)


def curves_figure(result: FitResult, path: Path) -> Path:
    history = result.history
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].plot(history.index, history["loss"], label="training loss")
    axes[0].set_xlabel("epoch")
    axes[0].legend()
    for k, fold in enumerate(result.fold_histories):
        axes[1].plot(fold.index, fold["val_patient_auc"], color="0.75", lw=1, label="folds" if k == 0 else None)
    label = "mean out-of-fold AUC (patients)" if result.selection == "cv" else "validation AUC (patients)"
    axes[1].plot(history.index, history["val_patient_auc"], marker="o", label=label)
    if result.averaged_epochs is None:
        axes[1].axvline(result.best_epoch, color="k", ls=":", label=f"selected epoch {result.best_epoch}")
    else:
        first, last = result.averaged_epochs
        axes[1].axvspan(first - 0.5, last + 0.5, color="0.9", label=f"weights averaged, epochs {first}-{last}")
    axes[1].set_ylim(0, 1)
    axes[1].set_xlabel("epoch")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train(params: TrainParams, tracking: TrackingParams) -> dict:
    """Fit, track the run in MLflow and save the model and its training outputs in model_dir (``register`` then
    makes it a version of the served model)."""
    import keras
    import mlflow

    params, source = resolve_params(params)
    experiment_id = setup_mlflow(tracking.uri, tracking.experiment, tracking.artifact_root)
    version, version_source = data_version(params.processed_dir)
    chain = json.loads((params.processed_dir / CHAIN_FILE).read_text(encoding="utf-8"))
    tags = {"git_commit": git_commit(), "data_version": version, "data_version_source": version_source,
            "params_hash": params_hash(params.model_dump(mode="json")), "phases": ",".join(params.phases),
            "chain_fingerprint": chain["fingerprint"],
            "hyperparameters_from": source, "stage": "train", "keras_backend": keras.backend.backend()}
    with mlflow.start_run(run_name="train", experiment_id=experiment_id) as run:
        mlflow.set_tags(tags)
        mlflow.log_params(flatten("", params.model_dump(mode="json")))
        log_cohorts(params.processed_dir, params.train_cohorts, "training")
        if params.selection == "holdout":
            log_cohorts(params.processed_dir, params.validation_cohorts, "validation")

        def log_epoch(epoch, logs):
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)

        result = fit(params, extra_callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=log_epoch)])
        mlflow.log_metrics({"best_val_patient_auc": result.best_val_patient_auc,
                            "n_train_stacks": result.n_train_stacks, **result.weights_metrics()})
        save_fit(result, params.model_dir, {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                                            "central_stack_fraction": params.central_stack_fraction, **tags})
        mlflow.log_artifact(str(curves_figure(result, params.model_dir / "training_curves.png")), "figures")
        mlflow.log_artifact(str(params.model_dir / "history.csv"), "training")
    summary = {"run_id": run.info.run_id, "best_epoch": result.best_epoch, "weights": result.weights_text(),
               "best_val_patient_auc": result.best_val_patient_auc, "train_stacks": result.n_train_stacks,
               "epochs": len(result.history)}
    (params.model_dir / "run.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary

"""The train stage: fit, track in MLflow (params, per-epoch metrics, model, figures, lineage), save the model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from her2pcr.config import RegistryParams, ServeParams, TrackingParams, TrainParams  # noqa: E402
from her2pcr.preprocess.stage import CHAIN_FILE  # noqa: E402
from her2pcr.registry.register import register_model  # noqa: E402
from her2pcr.training.data import load_stacks, read_index  # noqa: E402
from her2pcr.training.fit import FitResult, fit, resolve_params, save_fit  # noqa: E402
from her2pcr.training.tracking import data_version, flatten, git_commit, params_hash, setup_mlflow  # noqa: E402

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
    axes[1].axvline(result.best_epoch, color="k", ls=":", label=f"selected epoch {result.best_epoch}")
    axes[1].set_ylim(0, 1)
    axes[1].set_xlabel("epoch")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def example_stacks(params: TrainParams, patients: list[str]) -> dict:
    """The processed inputs of one validation (else training) patient: the registered input example."""
    index = read_index(params.processed_dir)
    return load_stacks(params.processed_dir, patients[:1], params.phases, index.pcr).inputs


def train(params: TrainParams, tracking: TrackingParams, registry: RegistryParams, serve: ServeParams) -> dict:
    import keras
    import mlflow

    params, source = resolve_params(params)
    setup_mlflow(tracking.uri, tracking.experiment, tracking.artifact_root)
    version, version_source = data_version(params.processed_dir)
    chain = json.loads((params.processed_dir / CHAIN_FILE).read_text(encoding="utf-8"))
    tags = {"git_commit": git_commit(), "data_version": version, "data_version_source": version_source,
            "params_hash": params_hash(params.model_dump(mode="json")), "phases": ",".join(params.phases),
            "chain_fingerprint": chain["fingerprint"],
            "hyperparameters_from": source, "stage": "train", "keras_backend": keras.backend.backend()}
    with mlflow.start_run(run_name="train") as run:
        mlflow.set_tags(tags)
        mlflow.log_params(flatten("", params.model_dump(mode="json")))

        def log_epoch(epoch, logs):
            mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)

        result = fit(params, extra_callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=log_epoch)])
        mlflow.log_metrics({"best_val_patient_auc": result.best_val_patient_auc, "best_epoch": result.best_epoch,
                            "n_train_stacks": result.n_train_stacks})
        save_fit(result, params.model_dir, {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                                            **tags})
        mlflow.log_artifact(str(curves_figure(result, params.model_dir / "training_curves.png")), "figures")
        mlflow.log_artifact(str(params.model_dir / "history.csv"), "training")
        training = json.loads((params.model_dir / "training.json").read_text(encoding="utf-8"))
        registered = register_model(
            params.model_dir, run.info.run_id, training, params.phases, chain["config"],
            example_stacks(params, result.validation_patients or result.train_patients), registry, serve)
    summary = {"run_id": run.info.run_id, "registered_version": registered.version, "best_epoch": result.best_epoch,
               "best_val_patient_auc": result.best_val_patient_auc, "train_stacks": result.n_train_stacks,
               "epochs": len(result.history)}
    (params.model_dir / "run.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary

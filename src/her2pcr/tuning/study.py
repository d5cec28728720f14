"""The tune stage: a resumable, shareable Optuna study whose trials are nested MLflow runs."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import math
import random
import time
from pathlib import Path

import optuna
import yaml

from her2pcr.config import TrackingParams, TrainParams, TuneParams
from her2pcr.stats.roc import delong_paired
from her2pcr.training.fit import fit
from her2pcr.training.tracking import flatten, git_commit, log_cohorts, setup_mlflow
from her2pcr.tuning.space import default_suggestions, suggest, trial_params

log = logging.getLogger(__name__)
PARENT_ATTR = "mlflow_parent_run_id"
REFERENCE_ATTR = "reference"      # trial user attribute: this trial is params.yaml's own train section
PREDICTIONS_ATTR = "held_out"     # trial user attribute: {patient id: [pcr, probability]} behind its value


#: Tune settings that do not change what a trial computes: the same study goes on whatever they are.
RUN_SETTINGS = ("study_name", "storage", "out_dir", "n_trials", "timeout_s", "heartbeat_s", "min_improvement_se")


#: The code a trial's value depends on. A change starts a new study, as `dvc repro` re-runs the stage after one: a
#: study resumed across code versions would mix trials of both, and its best trial would depend on the workspace's
#: history instead of on the versioned inputs (a fresh clone would select another configuration).
TRIAL_CODE = ("her2pcr.config", "her2pcr.models.augment", "her2pcr.models.cnn", "her2pcr.preprocess.settings",
              "her2pcr.stats.roc", "her2pcr.training.data", "her2pcr.training.fit", "her2pcr.tuning.space",
              "her2pcr.tuning.study")


def code_digest() -> str:
    digest = hashlib.sha256()
    for name in TRIAL_CODE:
        digest.update(Path(importlib.import_module(name).__file__).read_bytes())  # type: ignore[arg-type]
    return digest.hexdigest()[:12]


def study_inputs(base: TrainParams, tune: TuneParams) -> str:
    """A digest of what a trial's value depends on: the training cohorts' processed exams (their cache keys),
    the search space and objective, the train settings a trial starts from and the code that computes it
    (TRIAL_CODE). The study is named after it, so a re-run after any of them changed starts a new study in the
    same storage; a plain re-run resumes."""
    from her2pcr.training.data import read_index

    keys = read_index(base.processed_dir, base.train_cohorts + base.validation_cohorts).key.sort_index()
    content = {"exams": [f"{pid}:{key}" for pid, key in keys.items()], "code": code_digest(),
               "tune": tune.model_dump(mode="json", exclude=set(RUN_SETTINGS)),
               "train": base.model_dump(mode="json", exclude={"model_dir", "best_params_file", "epochs",
                                                              "max_stacks_per_patient", "selection", "cv_folds"})}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def open_study(tune: TuneParams, seed_offset: int = 0, inputs: str | None = None) -> optuna.Study:
    """Create or load the study (``<study_name>-<inputs digest>``); a worker that stops beating for
    `heartbeat_s` has its trial failed."""
    if tune.storage.startswith("sqlite:///"):
        Path(tune.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    storage = _rdb_storage(tune)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=tune.pruner_startup_trials,
                                          n_warmup_steps=tune.pruner_warmup_epochs)
              if tune.pruning else optuna.pruners.NopPruner())
    name = f"{tune.study_name}-{inputs}" if inputs else tune.study_name
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                pruner=pruner, load_if_exists=True)
    # Seeded, yet a resumed study or a second worker does not replay the first trials' draws.
    study.sampler = optuna.samplers.TPESampler(seed=tune.sampler_seed + len(study.trials) + 1000 * seed_offset)
    return study


def _rdb_storage(tune: TuneParams, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Workers started together on an empty database race to create Optuna's tables (optuna#1092): retry."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(tune.storage, heartbeat_interval=tune.heartbeat_s,
                                              grace_period=2 * tune.heartbeat_s)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _study_lock(study: optuna.Study):
    """Serialise workers of one study on a PostgreSQL storage (a session advisory lock); no-op elsewhere."""
    storage = getattr(study._storage, "_backend", study._storage)
    engine = getattr(storage, "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(f"her2pcr:{study.study_name}".encode()).digest()[:8], "big", signed=True)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()


def parent_run(study: optuna.Study, tracking: TrackingParams) -> str:
    """The study's MLflow parent run, created by the first worker and shared through the study."""
    import mlflow

    with _study_lock(study):  # else two workers starting together may each create a parent (and experiment)
        existing = study.user_attrs.get(PARENT_ATTR)
        if existing:
            return existing
        experiment_id = setup_mlflow(tracking.uri, tracking.experiment, tracking.artifact_root)
        run = mlflow.MlflowClient(tracking.uri).create_run(
            experiment_id, run_name=f"tune-{study.study_name}",
            tags={"stage": "tune", "optuna_study": study.study_name, "git_commit": git_commit(),
                  "study_inputs": study.user_attrs.get("inputs", "")})
        study.set_user_attr(PARENT_ATTR, run.info.run_id)
        return run.info.run_id


def make_objective(base: TrainParams, tune: TuneParams, tracking: TrackingParams, parent_id: str):
    import keras
    import mlflow


    def objective(trial: optuna.Trial) -> float:
        tunable = suggest(trial, tune)
        trial.set_user_attr("tunable", json.dumps(tunable))
        params = trial_params(base, tune, tunable)
        mlflow.set_tracking_uri(tracking.uri)
        with mlflow.start_run(run_name=f"trial-{trial.number}", parent_run_id=parent_id,
                              experiment_id=mlflow.get_run(parent_id).info.experiment_id,
                              tags={"optuna_trial": str(trial.number), "stage": "tune"}):
            mlflow.log_params(flatten("", tunable))
            log_cohorts(params.processed_dir, params.train_cohorts, "tuning")
            try:
                value = _run_trial(trial, params, tune, mlflow)
            except optuna.TrialPruned:
                mlflow.set_tag("trial_state", "PRUNED")
                mlflow.end_run("KILLED")  # stopped early by the pruner: not a failure
                raise
            except Exception as error:
                mlflow.set_tag("trial_state", "FAIL")
                mlflow.set_tag("error", str(error)[:500])
                raise
            finally:
                keras.backend.clear_session()
            mlflow.set_tag("trial_state", "COMPLETE")
            mlflow.log_metric("objective_patient_auc", value)
            return value

    return objective


def _run_trial(trial: optuna.Trial, params: TrainParams, tune: TuneParams, mlflow) -> float:
    """The trial's objective: the same selection ``train`` makes, so the search optimises what is registered.

    cv: patient-level folds inside the training cohorts (the validation cohort D2 stays untouched for the
    report), the pooled out-of-fold AUC of the returned weights (the best mean out-of-fold epoch's, or the epochs'
    average). holdout: the validation cohorts' AUC of the returned weights, reported per epoch so the pruner can
    stop hopeless trials.
    """
    if tune.objective == "cv":
        result = fit(params.model_copy(update={"selection": "cv", "cv_folds": tune.cv_folds}))
        for epoch, value in result.history["val_patient_auc"].items():
            mlflow.log_metric("mean_fold_patient_auc", float(value), step=int(epoch))
    else:
        def report(epoch: int, value: float) -> None:
            mlflow.log_metric("val_patient_auc", value, step=epoch)
            if not math.isnan(value):
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        result = fit(params.model_copy(update={"selection": "holdout"}), on_epoch=report)
    value = result.best_val_patient_auc
    mlflow.log_metrics(result.weights_metrics())
    if math.isnan(value):
        raise ValueError("validation AUC undefined (one class only)")
    if result.held_out is not None:
        trial.set_user_attr(PREDICTIONS_ATTR, {str(pid): [int(row.pcr), float(row.probability)]
                                               for pid, row in result.held_out.iterrows()})
    return value


def select_trial(trials: list[optuna.trial.FrozenTrial], min_improvement_se: float
                 ) -> tuple[optuna.trial.FrozenTrial, dict]:
    """The complete trial whose configuration ``train`` gets, and why.

    The best trial by objective replaces the reference (trial 0, params.yaml's train section) only when it
    beats it by more than ``min_improvement_se`` standard errors of the paired difference: paired DeLong on
    the patients both were scored on (the same folds). This is the one-standard-error rule: on 85 patients the
    SE of an AUC is ~0.06, and the maximum of a few noisy trials otherwise wins by noise alone.
    """
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ValueError("no complete trial to select")
    best = max(complete, key=lambda t: (t.value, -t.number))
    reference = next((t for t in complete if t.user_attrs.get(REFERENCE_ATTR)), None)
    if reference is None or best.number == reference.number:
        return best, {"rule": "best objective", "reference_trial": None if reference is None else reference.number}
    ours, theirs = best.user_attrs.get(PREDICTIONS_ATTR) or {}, reference.user_attrs.get(PREDICTIONS_ATTR) or {}
    common = sorted(set(ours) & set(theirs))
    labels = [ours[p][0] for p in common]
    if len(set(labels)) < 2:  # e.g. trials of a study older than this rule
        log.warning("trials %d and %d share no held-out patients of both classes: the best objective wins",
                    best.number, reference.number)
        return best, {"rule": "best objective (no paired predictions)", "reference_trial": reference.number}
    paired = delong_paired(labels, [ours[p][1] for p in common], [theirs[p][1] for p in common])
    chosen = best if paired.difference > min_improvement_se * paired.se else reference
    return chosen, {"rule": f"best trial only if it beats the reference by > {min_improvement_se:g} SE "
                            "(paired DeLong)",
                    "reference_trial": reference.number, "best_trial": best.number,
                    "improvement": paired.difference, "improvement_se": paired.se, "patients": len(common)}


def summarise_study(study: optuna.Study, tune: TuneParams, tracking: TrackingParams, parent_id: str) -> dict:
    """best.yaml (the selected trial's configuration) for `train`, the trial table, and history/importance
    figures on the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    tune.out_dir.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    states = {s.name: sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState}
    summary = {"trials": len(study.trials), **{k.lower(): v for k, v in states.items() if v}}
    # the per-patient predictions stay in the study: the table is one row of settings and value per trial
    study.trials_dataframe().drop(columns=[f"user_attrs_{PREDICTIONS_ATTR}"], errors="ignore").to_csv(
        tune.out_dir / "trials.csv", index=False)
    client = mlflow.MlflowClient(tracking.uri)
    if complete:
        chosen, why = select_trial(study.trials, tune.min_improvement_se)
        (tune.out_dir / "best.yaml").write_text(yaml.safe_dump(json.loads(chosen.user_attrs["tunable"]),
                                                               sort_keys=False), encoding="utf-8")
        summary.update(best_trial=study.best_trial.number, best_value=study.best_value,
                       selected_trial=chosen.number, selected_value=chosen.value, selection=why)
        client.log_metric(parent_id, "best_patient_auc", study.best_value)
        client.log_metric(parent_id, "selected_patient_auc", chosen.value)
        client.set_tag(parent_id, "best_trial", str(study.best_trial.number))
        client.set_tag(parent_id, "selected_trial", str(chosen.number))
        figures = {"optimization_history.png": optuna.visualization.matplotlib.plot_optimization_history}
        if len(complete) >= 2:
            figures["param_importances.png"] = optuna.visualization.matplotlib.plot_param_importances
        for name, plot in figures.items():
            try:
                plot(study)
                path = tune.out_dir / name
                plt.gcf().set_size_inches(8, 5)
                plt.tight_layout()
                plt.savefig(path, dpi=90)
                client.log_artifact(parent_id, str(path), "figures")
            except (ValueError, RuntimeError) as error:  # e.g. importances of a constant objective
                log.warning("could not draw %s: %s", name, error)
            finally:
                plt.close("all")
    client.log_artifact(parent_id, str(tune.out_dir / "trials.csv"))
    (tune.out_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def enqueue_defaults(study: optuna.Study, base: TrainParams, tune: TuneParams) -> None:
    """Trial 0 is params.yaml's own train configuration, so the search never returns worse than the defaults
    by its own objective. Skipped (with a log line) when the defaults lie outside the search space."""
    fixed = default_suggestions(base, tune)
    if fixed is None:
        log.info("train defaults are outside the search space: not enqueued")
        return
    study.enqueue_trial(fixed, user_attrs={REFERENCE_ATTR: True})


def tune_study(base: TrainParams, tune: TuneParams, tracking: TrackingParams, n_trials: int | None = None,
               worker: int = 0) -> dict:
    import mlflow

    inputs = study_inputs(base, tune)
    study = open_study(tune, seed_offset=worker, inputs=inputs)
    study.set_user_attr("objective", tune.objective)
    study.set_user_attr("inputs", inputs)
    if worker == 0 and not study.trials:
        enqueue_defaults(study, base, tune)
    parent_id = parent_run(study, tracking)
    objective = make_objective(base, tune, tracking, parent_id)
    study.optimize(objective, n_trials=n_trials if n_trials is not None else tune.n_trials,
                   timeout=tune.timeout_s, catch=(ValueError,), gc_after_trial=True)
    summary = summarise_study(study, tune, tracking, parent_id)
    # the parent ends with this worker's trials (another worker, or a resumed study, may add more later)
    mlflow.MlflowClient(tracking.uri).set_terminated(parent_id, "FINISHED")
    return summary

"""The Optuna study on tiny data: resumable, tracked as nested MLflow runs, feeding train."""

import json

import mlflow
import optuna
import pytest
import yaml

from her2pcr.training.fit import resolve_params
from her2pcr.tuning import study as study_module
from her2pcr.tuning.study import PARENT_ATTR, PREDICTIONS_ATTR, REFERENCE_ATTR, open_study, study_inputs, tune_study
from tests.conftest import tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture()
def setup(tiny_processed, tmp_path):
    params = tiny_params()
    train = params.train.model_copy(update={"processed_dir": tiny_processed,
                                            "best_params_file": tmp_path / "tune" / "best.yaml"})
    tune = params.tune.model_copy(update={"storage": f"sqlite:///{tmp_path / 'tune' / 'study.db'}",
                                          "out_dir": tmp_path / "tune", "epochs": 1})
    tracking = params.tracking.model_copy(update={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                                  "artifact_root": tmp_path / "artifacts"})
    return train, tune, tracking


def test_a_resumed_study_keeps_its_trials_and_continues_numbering(setup):
    train, tune, tracking = setup
    first = tune_study(train, tune, tracking, n_trials=2)
    second = tune_study(train, tune, tracking, n_trials=1)
    assert first["trials"] == 2 and second["trials"] == 3
    study = open_study(tune, inputs=study_inputs(train, tune))
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_trials_are_nested_mlflow_runs_and_best_yaml_feeds_train(setup):
    train, tune, tracking = setup
    summary = tune_study(train, tune, tracking, n_trials=2)
    parent = open_study(tune, inputs=study_inputs(train, tune)).user_attrs[PARENT_ATTR]
    client = mlflow.MlflowClient(tracking.uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.tags["optuna_trial"] for r in children) == ["0", "1"]
    assert all(r.data.tags["trial_state"] == "COMPLETE" for r in children)
    metric = "mean_fold_patient_auc" if tune.objective == "cv" else "val_patient_auc"
    assert all(len(client.get_metric_history(r.info.run_id, metric)) == tune.epochs for r in children)
    # trial 0 is the train section itself, so the search cannot end below the defaults
    trials = open_study(tune, inputs=study_inputs(train, tune)).trials
    assert trials[0].params["phases"] == ",".join(train.phases) and trials[0].user_attrs[REFERENCE_ATTR]
    assert all(len(t.user_attrs[PREDICTIONS_ATTR]) > 0 for t in trials)  # what the selection rule compares
    assert "figures" in {a.path for a in client.list_artifacts(parent)}
    best = yaml.safe_load(tune.out_dir.joinpath("best.yaml").read_text())
    assert best == json.loads(trials[summary["selected_trial"]].user_attrs["tunable"])
    resolved, source = resolve_params(train)
    assert source.endswith("best.yaml") and resolved.phases == best["phases"]
    assert summary["best_value"] == pytest.approx(open_study(tune, inputs=study_inputs(train, tune)).best_value)
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_study_belongs_to_its_inputs(setup):
    """A changed search space (or data, or starting configuration) starts a new study; the run settings do not."""
    train, tune, tracking = setup
    tune_study(train, tune, tracking, n_trials=1)
    assert study_inputs(train, tune.model_copy(update={"n_trials": 9, "timeout_s": 5.0})) == study_inputs(train, tune)
    assert study_inputs(train.model_copy(update={"epochs": 99}), tune) == study_inputs(train, tune)  # tune's own
    wider = tune.model_copy(update={"dropout": [*tune.dropout, 0.45]})
    assert study_inputs(train, wider) != study_inputs(train, tune)
    assert study_inputs(train.model_copy(update={"seed": train.seed + 1}), tune) != study_inputs(train, tune)
    second = tune_study(train, wider, tracking, n_trials=1)
    assert second["trials"] == 1  # a new study, not trial 2 of the old one


def test_changed_trial_code_starts_a_new_study(setup, tmp_path, monkeypatch):
    """`dvc repro` after a code change must select what a fresh clone selects, not resume the old trials."""
    import her2pcr.tuning.study as study_module

    train, tune, _ = setup
    probe = tmp_path / "trial_code_probe.py"
    probe.write_text("LEARNING = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(study_module, "TRIAL_CODE", (*study_module.TRIAL_CODE, "trial_code_probe"))
    before = study_inputs(train, tune)
    assert study_inputs(train, tune) == before
    probe.write_text("LEARNING = 2\n")
    assert study_inputs(train, tune) != before


def test_a_pruned_trial_is_killed_not_failed(setup, monkeypatch):
    train, tune, tracking = setup

    def pruned(*_args):
        raise optuna.TrialPruned()

    monkeypatch.setattr(study_module, "_run_trial", pruned)
    tune_study(train, tune, tracking, n_trials=1)
    client = mlflow.MlflowClient(tracking.uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    (child,) = client.search_runs([experiment.experiment_id], "tags.optuna_trial = '0'")
    assert child.info.status == "KILLED" and child.data.tags["trial_state"] == "PRUNED"

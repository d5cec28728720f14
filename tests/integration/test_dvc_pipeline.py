"""`dvc repro` end to end on the tiny profile, in a fresh clone-like copy of the repository."""

import json
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, run_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run(cmd, cwd):
    result = run_command(cmd, cwd)
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tracked files of this checkout (as they are now) in a new git repository."""
    root = tmp_path_factory.mktemp("clone") / "her2pcr"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    run(["git", "init", "-q"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", "--allow-empty"], root)
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "snapshot"], root)
    run(["her2pcr", "profile", "tiny"], root)
    return root


def test_dvc_repro_runs_every_stage_then_has_nothing_to_do(workspace):
    run(["dvc", "repro"], workspace)
    out = workspace / "data" / "raw" / "synthetic"
    clinical = pd.read_csv(out / "clinical.csv")
    assert len(clinical) == 22
    assert len(list((out / "dicom").rglob("*.dcm"))) > 100
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    stages = set(run(["dvc", "stage", "list", "--name-only"], workspace).split())
    assert {"validate@D3", "validate@D4"} <= stages  # foreach over cohorts.external
    assert set(lock["stages"]) == stages
    for cohort in ("D3", "D4"):
        gate = json.loads((workspace / "metrics" / "validate" / f"{cohort}.json").read_text())["gate"]
        assert gate["decision"] in {"pass", "fail"} and gate["reasons"]
    second = run(["dvc", "repro"], workspace)
    assert "didn't change, skipping" in second or "Data and pipelines are up to date" in second
    assert "Running stage" not in second
    assert "up to date" in run(["dvc", "status"], workspace)


def test_dvc_push_to_the_default_local_remote(workspace):
    run(["dvc", "repro"], workspace)
    run(["dvc", "push"], workspace)
    assert any((workspace / "dvc-remote").rglob("*"))


def test_changing_a_simulate_param_reruns_the_stage(workspace):
    run(["dvc", "repro"], workspace)
    params = workspace / "params.yaml"
    params.write_text(params.read_text().replace("seed: 20240417", "seed: 7"))
    assert "Running stage 'simulate'" in run(["dvc", "repro"], workspace)


def test_metrics_and_plots_are_declared_for_dvc(workspace):
    run(["dvc", "repro"], workspace)
    metrics = json.loads((workspace / "metrics" / "evaluate.json").read_text())
    assert metrics["cohorts"]["D2"]["models"]["cnn"]["n"] == 4
    combined = metrics["cnn_clinical"]  # fitted on D1's out-of-fold scores, or the reason it could not be
    assert combined["fitted_on"] == "D1 (out-of-fold)"
    assert combined.get("cnn_term") == "cnn_score" or combined["not_fitted"]
    assert "cohorts.D2.models.cnn.auc" in run(["dvc", "metrics", "show", "--json"], workspace).replace('"', "")\
        or "D2" in run(["dvc", "metrics", "show"], workspace)
    run(["dvc", "plots", "show", "-o", "plots-html"], workspace)
    assert (workspace / "plots-html" / "index.html").exists()


def test_training_run_is_tracked_in_mlflow(workspace):
    import mlflow

    run(["dvc", "repro"], workspace)
    summary = json.loads((workspace / "models" / "cnn" / "run.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    tracked = client.get_run(summary["run_id"])
    best = yaml.safe_load((workspace / "models" / "tune" / "best.yaml").read_text())
    assert tracked.data.params["phases"] == json.dumps(best["phases"])  # train used the search result
    assert tracked.data.tags["hyperparameters_from"].endswith("best.yaml")
    assert {"git_commit", "data_version", "params_hash", "phases"} <= set(tracked.data.tags)
    assert len(client.get_metric_history(tracked.info.run_id, "loss")) == summary["epochs"]
    assert "D2_auc" in tracked.data.metrics
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id)}
    assert {"figures", "evaluation", "training"} <= artifacts
    assert client.search_logged_models(experiment_ids=[tracked.info.experiment_id])


def test_report_renders_every_table(workspace):
    run(["dvc", "repro"], workspace)
    report = (workspace / "reports" / "report.md").read_text()
    for heading in ("Table 1.", "Table 2.", "Table 3.", "Table 4.", "Supplementary Table 1.",
                    "Supplementary Table 2.", "Supplementary Table 6.", "Figure 1", "Figure 3.",
                    "Clinical variables in D1", "CNN + clinical model"):
        assert f"## {heading}" in report, heading
    assert "oracle" in report and "pk" in report and "clinical_significant" in report
    assert (workspace / "reports" / "report.html").read_text().count("<table>") >= 8

"""`dvc repro` end to end on the tiny profile, in a fresh clone-like copy of the repository."""

import json
import re
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


def clone(root, *profiles: str):
    """Tracked files of this checkout (as they are now) in a new git repository, with profiles applied."""
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
    for profile in profiles:
        run(["her2pcr", "profile", profile], root)
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return clone(tmp_path_factory.mktemp("clone") / "her2pcr", "tiny")


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


def edited_params(workspace, dotted: str, change) -> None:
    """params.yaml with one key changed by ``change(old value)`` (comments are not kept: a test workspace)."""
    path = workspace / "params.yaml"
    params = yaml.safe_load(path.read_text())
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[leaf] = change(node[leaf])
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def stale_stages(workspace) -> set[str]:
    return set(json.loads(run_command(["dvc", "status", "--json"], workspace).stdout or "{}"))


def test_a_params_key_reaches_only_the_stages_that_read_it(workspace):
    run(["dvc", "repro"], workspace)
    original = (workspace / "params.yaml").read_text()
    try:
        edited_params(workspace, "serve.threshold", lambda t: t / 2)  # frozen into the version: re-register
        assert stale_stages(workspace) == {"register"}
        (workspace / "params.yaml").write_text(original)
        edited_params(workspace, "registry.champion_alias", lambda a: a + "-2")  # read by promote only, not a stage
        assert stale_stages(workspace) == set()
        (workspace / "params.yaml").write_text(original)
        edited_params(workspace, "train.epochs", lambda e: e + 1)  # a trial trains tune.epochs: the study stays valid
        assert stale_stages(workspace) == {"train"}
    finally:
        (workspace / "params.yaml").write_text(original)


def test_registry_stages_are_never_restored_from_the_run_cache(workspace):
    """Changing a gate threshold and reverting it re-runs validate both times, so the version's gate tags always
    say what metrics/validate/<cohort>.json says (a run-cache restore would leave the tags of the edit)."""
    import mlflow

    run(["dvc", "repro"], workspace)
    original = (workspace / "params.yaml").read_text()
    version = json.loads((workspace / "models" / "registered.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")

    def tags_agree_with_metrics() -> str:
        decision = json.loads((workspace / "metrics" / "validate" / "D3.json").read_text())["gate"]["decision"]
        tags = client.get_model_version(version["name"], version["version"]).tags
        assert tags["validation.D3.gate"] == decision
        return decision

    before = tags_agree_with_metrics()
    try:
        edited_params(workspace, "validation.gate.min_auc", lambda _: 1.0)
        run(["dvc", "repro"], workspace)
        assert tags_agree_with_metrics() == "fail"
    finally:
        (workspace / "params.yaml").write_text(original)
    reverted = run(["dvc", "repro"], workspace)
    assert "Running stage 'validate@D3'" in reverted and "from run-cache" not in reverted
    assert tags_agree_with_metrics() == before


def test_a_new_external_cohort_runs_only_its_own_stages(workspace):
    """A site added to conf/sites.yaml and cohorts.external: its patients are simulated (the others reused); tune,
    train, register and the other cohorts' validation do not run again. What runs takes in the new patients
    (ingest, preprocess, PK features), scores every cohort (baselines, evaluate) or reports them."""
    run(["dvc", "repro"], workspace)
    params_file, sites_file = workspace / "params.yaml", workspace / "conf" / "sites.yaml"
    original = params_file.read_text(), sites_file.read_text()
    sites = yaml.safe_load(original[1])
    sites["inst6"] = sites["inst5"]
    sites_file.write_text(yaml.safe_dump(sites, sort_keys=False))
    params = yaml.safe_load(original[0])
    params["simulate"]["cohorts"]["inst6"] = {"n": 4, "n_pcr": 2}
    params["cohorts"]["external"]["D5"] = ["inst6"]
    for section in ("evaluate", "report"):
        params[section]["cohorts"] = [*params[section]["cohorts"], "D5"]
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = run(["dvc", "repro"], workspace)
        ran = set(re.findall(r"Running stage '([^']+)'", out))
        assert {"simulate", "preprocess", "evaluate", "report", "validate@D5"} <= ran
        assert ran <= {"simulate", "ingest", "preprocess", "pk_features", "baselines", "evaluate", "report",
                       "validate@D5"}, ran
        assert "4 rendered" in out  # the other exams were reused, not simulated again
        gate = json.loads((workspace / "metrics" / "gate" / "D5.json").read_text())
        assert gate["n"] == 4
    finally:  # the next test's repro returns to the tiny cohorts
        params_file.write_text(original[0])
        sites_file.write_text(original[1])


def test_dvc_push_to_the_default_local_remote(workspace):
    run(["dvc", "repro"], workspace)
    run(["dvc", "push"], workspace)
    assert any((workspace / "dvc-remote").rglob("*"))


def test_changing_a_simulate_param_reruns_the_stage(workspace):
    run(["dvc", "repro"], workspace)
    original = (workspace / "params.yaml").read_text()
    try:
        edited_params(workspace, "simulate.seed", lambda seed: seed + 1)
        assert stale_stages(workspace) == {"simulate"}
    finally:
        (workspace / "params.yaml").write_text(original)


def test_metrics_and_plots_are_declared_for_dvc(workspace):
    run(["dvc", "repro"], workspace)
    metrics = json.loads((workspace / "metrics" / "evaluate.json").read_text())
    assert metrics["cohorts"]["D2"]["models"]["cnn"]["n"] == 4
    combined = metrics["cnn_clinical"]  # fitted on D1's out-of-fold scores, or the reason it could not be
    assert combined["fitted_on"] == "D1 (out-of-fold)"
    assert combined.get("cnn_term") == "cnn_score" or combined["not_fitted"]
    # the report marks its AUC on the cohort it was fitted on, and only there, as a training-set figure
    assert metrics["fitted_on"].get("cnn_clinical", ["D1"]) == ["D1"]
    # `dvc metrics show`: the small summary (AUC [CI] per cohort and model) and each cohort's gate
    shown = json.loads(run_command(["dvc", "metrics", "show", "--json"], workspace).stdout)
    files = next(iter(shown.values()))["data"]
    assert set(files) == {"metrics/summary.json", "metrics/gate/D3.json", "metrics/gate/D4.json"}
    summary = files["metrics/summary.json"]["data"]
    assert {"auc", "ci_low", "ci_high"} == set(summary["D2"]["cnn"]) and "n" in summary["D3"]
    assert files["metrics/gate/D3.json"]["data"]["gate"] in {"pass", "fail"}
    assert len(run_command(["dvc", "metrics", "show"], workspace).stdout.splitlines()) < 10
    # `dvc plots show`: one ROC chart per cohort with a line per model, and the training curves
    plots = json.loads(run_command(["dvc", "plots", "show", "--json"], workspace).stdout)["data"]
    wanted = [f"plots/roc/{c}.csv" for c in ("D1", "D2", "D3", "D4")] + ["models/cnn/history.csv"]
    assert sorted(plot.removeprefix("dvc.yaml::") for plot in plots) == sorted(wanted)  # each drawn once
    d1 = json.dumps(next(v for k, v in plots.items() if k.endswith("plots/roc/D1.csv")))
    assert all(f'"model": "{m}"' in d1 for m in ("cnn", "clinical_significant", "oracle"))
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
    assert client.get_experiment(tracked.info.experiment_id).name == "her2pcr"  # not Default
    inputs = tracked.inputs.dataset_inputs  # the UI's Dataset column: what the run trained and was scored on
    contexts: dict[str, set] = {}
    for d in inputs:  # one dataset per cohort and data version (earlier tests re-evaluated on other data)
        contexts.setdefault(d.dataset.name.split("@")[0], set()).update(
            t.value for t in d.tags if t.key == "mlflow.data.context")
    # D1's evaluation input is the training dataset itself (MLflow keeps one input per dataset and run)
    assert "training" in contexts["D1"] and all("evaluation" in contexts[c] for c in ("D2", "D3", "D4"))
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["preprocess"]["outs"][0]["md5"]
    assert f"D1@{lock[:12]}" in {d.dataset.name for d in inputs}


def test_report_renders_every_table(workspace):
    run(["dvc", "repro"], workspace)
    report = (workspace / "reports" / "report.md").read_text()
    for heading in ("Table 1.", "Table 2.", "Table 3.", "Table 4.", "Supplementary Table 1.",
                    "Supplementary Table 2.", "Supplementary Table 6.", "Figure 1", "Figure 3.",
                    "Clinical variables in D1", "CNN + clinical model", "Subgroups and fairness"):
        assert f"## {heading}" in report, heading
    pooled = json.loads((workspace / "reports" / "subgroups" / "pooled.json").read_text())
    assert pooled["cohorts"] == ["D3", "D4"]
    for variable in pooled["variables"]:  # every external patient in one subgroup of each variable
        assert sum(g["n"] for g in variable["groups"]) == pooled["n"]
    assert "oracle" in report and "pk" in report and "clinical_significant" in report
    assert (workspace / "reports" / "report.html").read_text().count("<table>") >= 8


@pytest.mark.parametrize("layout", ["duke", "nifti"])
def test_a_public_collection_layout_runs_through_dvc_repro_to_validation_reports(tmp_path_factory, layout):
    """Params only (conf/profiles/<layout>.yaml on top of tiny): the collection's files, sheets and codes."""
    root = clone(tmp_path_factory.mktemp(f"{layout}-clone") / "her2pcr", "tiny", layout)
    output = run(["dvc", "repro"], root)
    assert "ingest: discovered 22 patients = 22 ingested + 0 quarantined" in output
    quarantine = pd.read_csv(root / "data" / "interim" / "quarantine.csv", keep_default_na=False)
    assert (quarantine.action != "excluded").all()
    for cohort in ("D3", "D4"):
        assert (root / "reports" / "validation" / cohort / "report.html").exists()
        gate = json.loads((root / "metrics" / "validate" / f"{cohort}.json").read_text())["gate"]
        assert gate["decision"] in {"pass", "fail"} and gate["reasons"]
    predictions = pd.read_csv(root / "metrics" / "predictions.csv")
    assert len(set(predictions.patient_id)) == 22
    if layout == "duke":  # the collection's pseudonyms, and the follow-up studies left out
        assert predictions.patient_id.str.startswith("Breast_MRI_").all()
        assert (quarantine.action == "series_skipped").any()
    else:  # what the info files lack is flagged for every patient
        assert quarantine.reason.str.contains("acquisition values not in the patient info").sum() == 22

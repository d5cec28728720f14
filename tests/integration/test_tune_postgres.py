"""`her2pcr tune` workers sharing one study on PostgreSQL and one `mlflow server` (PostgreSQL backend).

Two concurrent workers: no trial lost or duplicated, one MLflow parent run with every trial nested once.
A third worker killed mid-trial: the next worker fails its stale trial (heartbeat) and numbering continues.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from her2pcr.config import Params, read_yaml
from her2pcr.profiles import deep_merge
from tests.conftest import REPO
from tests.integration import pg

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STUDY = "her2pcr-pg-test"
HEARTBEAT_S = 2
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the project's declared driver is psycopg2.
SCHEME = "postgresql+psycopg2"
BIN = Path(sys.executable).parent
# No telemetry, no background job runner: nothing tries to reach the network.
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
             "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}


def _env() -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "PG"))}
    return {**env, **QUIET_ENV, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _stop_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a process started with start_new_session=True and everything it spawned (e.g. uvicorn workers)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)


@pytest.fixture(scope="module")
def processed(tiny_cohort, tmp_path_factory) -> Path:
    from her2pcr.ingest.stage import ingest
    from her2pcr.preprocess.stage import preprocess

    out = tmp_path_factory.mktemp("tune-pg-data")
    params = Params.model_validate(deep_merge(read_yaml(REPO / "params.yaml"),
                                              read_yaml(REPO / "conf" / "profiles" / "tiny.yaml")))
    ingest(params.ingest.model_copy(update={"source_dir": tiny_cohort, "out_dir": out / "interim",
                                            "reports_dir": out / "reports"}), params.cohorts, progress=False)
    pre = params.preprocess.model_copy(update={"interim_dir": out / "interim", "out_dir": out / "processed"})
    preprocess(pre, progress=False)
    return pre.out_dir


@pytest.fixture(scope="module")
def postgres():
    reason = pg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pg.postgres_cluster(["optuna", "mlflow"]) as cluster:
        yield cluster


def _start_mlflow_server(backend_uri: str, root: Path) -> tuple[subprocess.Popen, str]:
    log = root / "server.log"
    for _ in range(3):  # a free port may be taken before the server binds it
        port = pg.free_port()
        with open(log, "w") as handle:
            server = subprocess.Popen(
                [str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
                 "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                 "--workers", "1"],
                cwd=root, env=_env(), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180  # the first start creates the schema
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
                    if response.status == 200:
                        return server, uri
            except OSError:
                time.sleep(0.5)
        _stop_group(server)
        if "address already in use" not in _tail(log).lower():
            break
    pytest.fail(f"mlflow server did not become healthy:\n{_tail(log)}")


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    server, uri = _start_mlflow_server(postgres.url("mlflow", SCHEME), tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield uri
    finally:
        _stop_group(server)


@pytest.fixture(scope="module")
def workspace(postgres, mlflow_server, processed, tmp_path_factory) -> SimpleNamespace:
    """A working folder with a tiny-profile params.yaml; runs `her2pcr tune` workers against the shared stores."""
    root = tmp_path_factory.mktemp("tune-pg")
    merged = deep_merge(read_yaml(REPO / "params.yaml"), read_yaml(REPO / "conf" / "profiles" / "tiny.yaml"))
    merged = deep_merge(merged, {
        "train": {"processed_dir": str(processed), "model_dir": str(root / "models" / "cnn"),
                  "best_params_file": str(root / "models" / "tune" / "best.yaml")},
        # Local stores the command line must override: a worker that ignored --storage/--tracking-uri
        # would leave the shared study and server empty.
        "tune": {"study_name": STUDY, "storage": f"sqlite:///{root / 'unused-study.db'}",
                 "out_dir": str(root / "models" / "tune"), "heartbeat_s": HEARTBEAT_S, "pruning": False,
                 "epochs": 1, "timeout_s": None, "objective": "holdout"},
        "tracking": {"uri": f"sqlite:///{root / 'unused-mlflow.db'}", "experiment": "her2pcr-pg-test",
                     "artifact_root": str(root / "mlartifacts")},
    })
    Params.model_validate(merged)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
    storage = postgres.url("optuna", SCHEME)

    def start(worker: int, n_trials: int) -> tuple[subprocess.Popen, Path]:
        log = root / f"worker-{worker}.log"
        with open(log, "w") as handle:
            process = subprocess.Popen(
                [str(BIN / "her2pcr"), "tune", "--params-file", str(params_file), "--storage", storage,
                 "--tracking-uri", mlflow_server, "--n-trials", str(n_trials), "--worker", str(worker)],
                cwd=root, env=_env(), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        return process, log

    def finish(process: subprocess.Popen, log: Path, timeout: float = 300) -> str:
        try:
            rc = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop_group(process)
            pytest.fail(f"worker timed out:\n{_tail(log)}")
        assert rc == 0, f"worker exited with {rc}:\n{_tail(log)}"
        return _tail(log)

    started: list[subprocess.Popen] = []
    try:
        yield SimpleNamespace(root=root, storage=storage, tracking_uri=mlflow_server, start=start, finish=finish,
                              postgres=postgres)
    finally:
        for process in started:
            _stop_group(process, timeout=5)


@functools.cache
def _storage(url: str):
    """One engine for all the test's reads (no heartbeat: reading never fails a trial)."""
    import optuna

    return optuna.storages.RDBStorage(url)


def load_study(storage_url: str):
    import optuna

    storage = _storage(storage_url)  # a fresh cache on every load
    (name,) = optuna.study.get_all_study_names(storage)  # <study_name>-<digest of its inputs>
    assert name.startswith(f"{STUDY}-")
    return optuna.load_study(study_name=name, storage=storage)


def nested_runs(tracking_uri: str, parent_id: str) -> dict[int, list]:
    """MLflow runs of the study's trials under the parent run: trial number -> runs."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], "tags.optuna_trial != ''", max_results=1000)
    by_trial: dict[int, list] = {}
    for run in runs:
        assert run.data.tags.get("mlflow.parentRunId") == parent_id, \
            f"trial {run.data.tags['optuna_trial']} run {run.info.run_id} is nested under " \
            f"{run.data.tags.get('mlflow.parentRunId')}, not the study's parent {parent_id}"
        by_trial.setdefault(int(run.data.tags["optuna_trial"]), []).append(run)
    return by_trial


def test_same_cohorts_logged_by_concurrent_runs(mlflow_server, processed):
    """Runs logging the same new dataset at the same moment (as tuning workers do) all link to one dataset row."""
    import threading

    import mlflow

    from her2pcr.training.tracking import log_cohorts

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        experiment_id = mlflow.set_experiment("her2pcr-dataset-race").experiment_id
        selections = [["D1"], ["D2"], ["D1", "D2"], ["D3"], ["D1", "D3"]]
        errors, run_ids = [], {}
        for selection in selections:  # a name not logged before each round: every round is a fresh race
            barrier = threading.Barrier(4)

            def log(worker: int, selection=selection, barrier=barrier) -> None:
                with mlflow.start_run(experiment_id=experiment_id) as run:  # MLflow's active run is per thread
                    run_ids[(tuple(selection), worker)] = run.info.run_id
                    barrier.wait()
                    try:
                        log_cohorts(processed, selection, "tuning")
                    except Exception as error:  # noqa: BLE001 - collected and asserted below
                        errors.append(error)

            threads = [threading.Thread(target=log, args=(worker,)) for worker in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert not errors, errors
        client = mlflow.MlflowClient(mlflow_server)
        for (selection, _), run_id in run_ids.items():
            inputs = client.get_run(run_id).inputs.dataset_inputs
            assert [i.dataset.name.split("@")[0] for i in inputs] == ["+".join(selection)]
    finally:
        mlflow.set_tracking_uri(previous)


def test_concurrent_workers_then_a_killed_worker(workspace):
    import optuna
    from optuna.trial import TrialState

    # 1. Two workers at once on a fresh database: 3 trials each, nothing lost or duplicated.
    first = [workspace.start(worker, 3) for worker in (0, 1)]
    for process, log in first:
        workspace.finish(process, log)
    study = load_study(workspace.storage)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(6))
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6, [(t.number, t.state) for t in trials]
    assert all(0 <= t.value <= 1 for t in trials)

    import mlflow

    parent_id = study.user_attrs["mlflow_parent_run_id"]
    client = mlflow.MlflowClient(workspace.tracking_uri)
    experiment = client.get_experiment_by_name("her2pcr-pg-test")
    parents = client.search_runs([experiment.experiment_id], "tags.stage = 'tune'", max_results=1000)
    parents = [run for run in parents if "optuna_trial" not in run.data.tags]
    assert [run.info.run_id for run in parents] == [parent_id], \
        f"exactly one parent run, the study's {parent_id}; got {[r.info.run_id for r in parents]}"
    by_trial = nested_runs(workspace.tracking_uri, parent_id)
    assert sorted(by_trial) == list(range(6)) and all(len(runs) == 1 for runs in by_trial.values())
    assert {runs[0].data.tags.get("trial_state") for runs in by_trial.values()} == {"COMPLETE"}

    # 2. A third worker killed (SIGKILL) while its first trial runs and has beaten its heart once.
    process, log = workspace.start(2, 2)
    import psycopg2

    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline:
        assert process.poll() is None, f"third worker ended before it could be killed:\n{_tail(log)}"
        running = load_study(workspace.storage).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if running:
            connection = psycopg2.connect(workspace.postgres.url("optuna"))
            try:
                with connection.cursor() as cursor:  # Optuna's table: a trial with no beat is never failed
                    cursor.execute("SELECT count(*) FROM trial_heartbeats WHERE trial_id = %s",
                                   (running[0]._trial_id,))
                    beating = cursor.fetchone()[0] > 0
            finally:
                connection.close()
            if beating:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
                killed = running[0].number
                killed_at = time.monotonic()
        time.sleep(0.2)
    assert killed == 6, f"no running trial of the third worker seen (got {killed}):\n{_tail(log)}"
    assert load_study(workspace.storage).trials[killed].state == TrialState.RUNNING  # nobody failed it yet

    # 3. After the grace period the next worker fails the stale trial, then runs its own.
    time.sleep(max(0.0, 2 * HEARTBEAT_S + 1 - (time.monotonic() - killed_at)))
    output = workspace.finish(*workspace.start(3, 1))
    assert "8 trials in the study" in output, output
    study = load_study(workspace.storage)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(8))
    states = {t.number: t.state for t in trials}
    assert states[killed] == TrialState.FAIL
    assert [n for n, s in states.items() if s == TrialState.COMPLETE] == [0, 1, 2, 3, 4, 5, 7]
    assert study.best_trial.state == TrialState.COMPLETE
    by_trial = nested_runs(workspace.tracking_uri, parent_id)
    assert all(len(runs) == 1 for runs in by_trial.values())
    assert set(range(6)) | {7} <= set(by_trial) <= set(range(8))
    assert by_trial[7][0].data.tags.get("trial_state") == "COMPLETE"
    assert [n.rsplit("-", 1)[0] for n in optuna.study.get_all_study_names(_storage(workspace.storage))] == [STUDY]
    _storage(workspace.storage).engine.dispose()

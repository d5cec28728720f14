"""Per-exam work on a real Dask cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from her2pcr.config import ComputeParams
from her2pcr.preprocess.stage import preprocess
from her2pcr.serving.server import free_port
from tests.conftest import tiny_params

pytestmark = pytest.mark.integration

DASK = str(Path(sys.executable).parent / "dask")


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-threaded workers, each its own process (no nanny: a killed worker stays dead)."""
    address = f"tcp://127.0.0.1:{free_port()}"
    logs = open(tmp_path / "dask.log", "w")  # noqa: SIM115 - closed below, after the processes
    common = {"stdout": logs, "stderr": subprocess.STDOUT, "cwd": tmp_path}
    scheduler = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                  "--no-dashboard"], **common)
    workers = [subprocess.Popen([DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                 "--host", "127.0.0.1", "--name", f"worker-{k}"], **common) for k in range(2)]
    from distributed import Client

    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, workers
    finally:
        for process in [*workers, scheduler]:
            process.terminate()
        for process in [*workers, scheduler]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a worker whose scheduler closed first may wait to reconnect
                process.kill()
                process.wait()
        logs.close()


def _preprocess_into(out: Path, interim: Path, compute: ComputeParams, workers: int) -> dict:
    params = tiny_params().preprocess.model_copy(update={"interim_dir": interim, "out_dir": out,
                                                         "workers": workers})
    return preprocess(params, progress=False, compute=compute)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def single_process(tiny_processed, tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """The tiny cohort preprocessed in this process (one worker, no cluster): the reference bytes."""
    interim = tiny_processed.parent / "interim"
    out = tmp_path_factory.mktemp("single") / "processed"
    _preprocess_into(out, interim, ComputeParams(), workers=1)
    return interim, _files(out)


def test_preprocess_on_a_cluster_writes_the_single_process_bytes(cluster, single_process, tmp_path):
    address, _ = cluster
    interim, reference = single_process
    counts = _preprocess_into(tmp_path / "processed", interim, ComputeParams(scheduler=address), workers=2)
    assert counts == {"exams": 22, "computed": 22, "reused": 0}
    assert _files(tmp_path / "processed") == reference
    # and a local cluster of two workers (the default) too
    _preprocess_into(tmp_path / "local", interim, ComputeParams(), workers=2)
    assert _files(tmp_path / "local") == reference


def test_a_worker_killed_mid_run_loses_nothing(cluster, single_process, tmp_path):
    address, workers = cluster
    interim, reference = single_process
    out = tmp_path / "processed"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["counts"] = _preprocess_into(out, interim, ComputeParams(scheduler=address), workers=2)
        except Exception as error:  # noqa: BLE001 - the assertion below reports it
            outcome["error"] = error

    stage = threading.Thread(target=run)
    stage.start()
    deadline = time.monotonic() + 120
    while not (out.exists() and any(out.glob("*.npz"))) and time.monotonic() < deadline:
        time.sleep(0.02)
    written_before_kill = len(list(out.glob("*.npz")))
    assert workers[0].poll() is None, "the worker had ended before it could be killed"
    os.kill(workers[0].pid, signal.SIGKILL)
    stage.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert 0 < written_before_kill < 22, "the kill did not fall in the middle of the stage"
    assert outcome["counts"]["computed"] == 22
    assert _files(out) == reference  # no temporary or half-written file, every exam as in one process

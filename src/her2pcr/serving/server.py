"""Start `her2pcr serve` (the documented server) for a registered version on a free loopback port (tests and
benchmarks)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_server(model_uri: str, tracking_uri: str, cwd: Path, log: IO | None = None,
                 start_timeout_s: float = 300, env_manager: str | None = None,
                 extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """The base URL of `her2pcr serve -m MODEL_URI` on 127.0.0.1, stopped on exit.

    With ``env_manager`` (``uv``, ``virtualenv``), MLflow's own `mlflow models serve --env-manager` instead: it
    builds a fresh environment from the version's requirements and serves the code the version carries.
    """
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(extra_env or {})}
    address = ["-m", model_uri, "-h", "127.0.0.1", "-p", str(port)]
    command = ["her2pcr", "serve", *address] if env_manager is None else \
        ["mlflow", "models", "serve", *address, "--env-manager", env_manager]
    # a session of its own: the server's workers (and, with an env manager, the server inside its environment)
    # stop with it
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(command[:3])} exited with {process.returncode}")
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(command[:3])} did not answer /ping within {start_timeout_s:.0f} s")
            time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group may be gone already
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

"""Start `her2pcr serve` (the documented server) for a registered version on a free loopback port (tests and
benchmarks)."""

from __future__ import annotations

import os
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
                 start_timeout_s: float = 300) -> Iterator[str]:
    """The base URL of `her2pcr serve -m MODEL_URI` on 127.0.0.1, stopped on exit."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(["her2pcr", "serve", "-m", model_uri, "-h", "127.0.0.1", "-p", str(port)],
                               cwd=cwd, env=env,
                               stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"her2pcr serve exited with {process.returncode}")
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"her2pcr serve did not answer /ping within {start_timeout_s:.0f} s")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()

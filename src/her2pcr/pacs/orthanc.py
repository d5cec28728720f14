"""Start Orthanc, a real PACS, on 127.0.0.1 with its DICOMweb plugin (`her2pcr pacs`, `make pacs`, the tests)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import requests

DICOMWEB_ROOT = "/dicom-web/"


def orthanc_config(storage_dir: Path, http_port: int, dicomweb_plugin: Path) -> dict:
    """Orthanc's configuration: HTTP on the loopback interface only, no DICOM port, DICOMweb enabled."""
    return {
        "Name": "her2pcr-pacs",
        "StorageDirectory": str(storage_dir / "storage"),
        "IndexDirectory": str(storage_dir / "index"),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,  # answers 127.0.0.1 only
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,   # DICOMweb is the only way in and out
        "OverwriteInstances": True,    # storing a study again (a resumed push) is not an error
        "SaveJobs": False,
        "Plugins": [str(dicomweb_plugin)],
        "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": False},
    }


def write_config(storage_dir: Path, http_port: int, dicomweb_plugin: Path) -> Path:
    if not dicomweb_plugin.is_file():
        raise FileNotFoundError(f"Orthanc's DICOMweb plugin {dicomweb_plugin} is missing "
                                "(Debian: apt-get install orthanc orthanc-dicomweb)")
    storage_dir.mkdir(parents=True, exist_ok=True)
    path = storage_dir / "orthanc.json"
    path.write_text(json.dumps(orthanc_config(storage_dir.resolve(), http_port, dicomweb_plugin), indent=1))
    return path


def orthanc_command(executable: str, config: Path) -> list[str]:
    found = shutil.which(executable)
    if found is None:
        raise FileNotFoundError(f"Orthanc executable {executable!r} not found (Debian: apt-get install orthanc)")
    return [found, str(config)]


def wait_until_up(base_url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Until Orthanc answers with its DICOMweb plugin loaded, or a clear error."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode} before answering on {base_url}")
        with contextlib.suppress(requests.ConnectionError):
            response = requests.get(f"{base_url}/plugins", timeout=2)
            if response.status_code == 200:
                if "dicom-web" not in response.json():
                    raise RuntimeError("Orthanc started without its DICOMweb plugin")
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Orthanc did not answer on {base_url} within {timeout_s:.0f} s")
        time.sleep(0.2)


@contextmanager
def local_orthanc(storage_dir: Path, http_port: int, dicomweb_plugin: Path, executable: str = "Orthanc",
                  log: IO | None = None, start_timeout_s: float = 60) -> Iterator[str]:
    """The DICOMweb root URL of an Orthanc serving ``storage_dir`` on 127.0.0.1, stopped on exit."""
    config = write_config(storage_dir, http_port, dicomweb_plugin)
    process = subprocess.Popen(orthanc_command(executable, config), stdout=log or subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_until_up(base, process, start_timeout_s)
        yield base + DICOMWEB_ROOT.rstrip("/")
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()

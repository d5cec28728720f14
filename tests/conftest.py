"""Shared fixtures: small simulated cohorts written once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from her2pcr.config import Params, SimulateParams, read_yaml
from her2pcr.profiles import deep_merge

REPO = Path(__file__).resolve().parents[1]


def run_command(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """A command with this interpreter's scripts (her2pcr, dvc, mlflow) first on PATH; asserts success if check."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
    return result


def profile_params(*profiles: str) -> Params:
    """params.yaml with profiles' overrides merged in order, as `her2pcr profile A && her2pcr profile B` does
    (``default`` = params.yaml as committed)."""
    merged = read_yaml(REPO / "params.yaml")
    for profile in profiles:
        if profile != "default":
            merged = deep_merge(merged, read_yaml(REPO / "conf" / "profiles" / f"{profile}.yaml"))
    return Params.model_validate(merged)


def profile_simulate_params(profile: str, out_dir: Path, **updates) -> SimulateParams:
    """The simulate section of a profile, writing to ``out_dir``."""
    params = profile_params(profile).simulate
    return params.model_copy(update={"out_dir": out_dir, "sites_file": REPO / params.sites_file,
                                     **updates})


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (.ci/run installs it)")


def dciodvfy_errors(path: Path) -> list[str]:
    """The Error lines dciodvfy prints for one file."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory, tiny_cohort):
    """A real Orthanc (DICOMweb) on a free loopback port, holding the tiny cohorts pushed with `her2pcr push`."""
    from her2pcr.pacs.orthanc import local_orthanc
    from her2pcr.serving.server import free_port

    pacs = profile_params("tiny").pacs
    storage = tmp_path_factory.mktemp("orthanc")
    with open(storage / "orthanc.log", "w") as log, local_orthanc(
            storage, free_port(), pacs.dicomweb_plugin, pacs.orthanc, log=log) as url:
        pushed = run_command(["her2pcr", "push", str(tiny_cohort / "dicom"), "--pacs", url, "--no-progress"], REPO)
        yield {"url": url, "pushed": pushed.stdout}


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    from her2pcr.synth.cohort import simulate_cohorts

    out = tmp_path_factory.mktemp("tiny") / "synthetic"
    simulate_cohorts(profile_simulate_params("tiny", out), out, progress=False)
    return out


@pytest.fixture(scope="session")
def extra_series_cohort(tmp_path_factory) -> Path:
    """The tiny cohorts with every kind of non-DCE series a real study holds written into each exam."""
    from her2pcr.synth.cohort import simulate_cohorts
    from her2pcr.synth.extra_series import EXTRA_SERIES

    out = tmp_path_factory.mktemp("extra-series") / "synthetic"
    params = profile_simulate_params("tiny", out).model_copy(update={"extra_series": list(EXTRA_SERIES)})
    simulate_cohorts(params, out, progress=False)
    return out


@pytest.fixture(scope="session")
def enhanced_cohort(tmp_path_factory) -> Path:
    """The tiny cohorts stored as Enhanced MR Image Storage: one multi-frame file per series."""
    from her2pcr.synth.cohort import simulate_cohorts

    out = tmp_path_factory.mktemp("enhanced") / "synthetic"
    simulate_cohorts(profile_simulate_params("tiny", out).model_copy(update={"storage": "enhanced"}), out,
                     progress=False)
    return out


def collection_cohort(tmp_path_factory, layout: str) -> Path:
    """The tiny cohorts, natively and as the collection of conf/profiles/<layout>.yaml beside them."""
    from her2pcr.synth.cohort import simulate_cohorts

    out = tmp_path_factory.mktemp(layout) / "synthetic"
    params = profile_params("tiny", layout).simulate
    simulate_cohorts(params.model_copy(update={"out_dir": out, "sites_file": REPO / params.sites_file}), out,
                     progress=False)
    return out


@pytest.fixture(scope="session")
def duke_cohort(tmp_path_factory) -> Path:
    """A Duke-Breast-Cancer-MRI-like collection (Duke-Breast-Cancer-MRI/, the two sheets) beside the native one."""
    return collection_cohort(tmp_path_factory, "duke")


@pytest.fixture(scope="session")
def nifti_cohort(tmp_path_factory) -> Path:
    """A MAMA-MIA-like NIfTI collection (``nifti/``) converted from the native one, beside it."""
    return collection_cohort(tmp_path_factory, "nifti")


@pytest.fixture(scope="session")
def fault_cohort(tmp_path_factory) -> Path:
    from her2pcr.synth.cohort import simulate_cohorts

    out = tmp_path_factory.mktemp("faults") / "faults"
    simulate_cohorts(profile_simulate_params("faults", out), out, progress=False)
    return out


def tiny_params(**sections) -> Params:
    """The tiny profile's params, with sections replaced by keyword (e.g. train=...)."""
    return profile_params("tiny").model_copy(update=sections)


@pytest.fixture(scope="session")
def tiny_processed(tiny_cohort, tmp_path_factory) -> Path:
    """The tiny cohort ingested and preprocessed: a processed dir with index.parquet."""
    from her2pcr.ingest.stage import ingest
    from her2pcr.preprocess.stage import preprocess

    out = tmp_path_factory.mktemp("tiny-processed")
    params = tiny_params()
    ingest(params.ingest.model_copy(update={"source_dir": tiny_cohort, "out_dir": out / "interim",
                                            "reports_dir": out / "reports"}), params.cohorts, progress=False)
    preprocess(params.preprocess.model_copy(update={"interim_dir": out / "interim", "out_dir": out / "processed"}),
               progress=False)
    return out / "processed"

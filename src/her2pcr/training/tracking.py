"""MLflow set-up and run lineage: tracking store, experiment, git commit, data and params versions."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pandas as pd
import yaml


def setup_mlflow(tracking_uri: str, experiment: str, artifact_root: Path) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id.

    With a local SQLite store, artifacts go to ``artifact_root`` (mlartifacts/ beside mlflow.db)
    rather than MLflow's default ./mlruns, so one folder holds them all.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    location = artifact_root.resolve().as_uri() if "://" not in tracking_uri or tracking_uri.startswith("sqlite") \
        else None
    return mlflow.create_experiment(experiment, artifact_location=location)


def git_commit(repo: Path = Path(".")) -> str:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
        return result.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_version(processed_dir: Path, lock_file: Path = Path("dvc.lock")) -> tuple[str, str]:
    """DVC's hash of the processed inputs when dvc.lock records it, else a hash of their cache keys."""
    if lock_file.exists():
        lock = yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}
        for out in lock.get("stages", {}).get("preprocess", {}).get("outs", []):
            if Path(out.get("path", "")) == processed_dir and out.get("md5"):
                return out["md5"], "dvc.lock"
    keys = pd.read_parquet(processed_dir / "index.parquet").sort_values("patient_id")
    digest = hashlib.md5("".join(keys.patient_id + ":" + keys.key).encode()).hexdigest()  # noqa: S324 - not security
    return digest, "index.parquet keys"


def params_hash(sections: dict) -> str:
    return hashlib.sha256(json.dumps(sections, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flatten(prefix: str, value, out: dict | None = None) -> dict:
    """Nested params -> flat 'a.b' keys with string values, as MLflow params want."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for key, inner in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


def log_cohorts(processed_dir: Path, cohorts: list[str], context: str) -> None:
    """Log the cohorts' index (patients, labels, exam cache keys) as an MLflow dataset input of the active run, so
    the UI's Dataset column says what it trained, tuned or was evaluated on; its name carries the data's DVC hash."""
    import mlflow
    from mlflow.exceptions import MlflowException

    index = pd.read_parquet(processed_dir / "index.parquet")
    frame = index[index.cohort.isin(cohorts)][["patient_id", "cohort", "pcr", "key"]].reset_index(drop=True)
    version, _ = data_version(processed_dir)
    dataset = mlflow.data.from_pandas(frame, source=str(processed_dir), targets="pcr",
                                      name=f"{'+'.join(cohorts)}@{version[:12]}")
    # MLflow's SQL store looks the dataset up, then inserts it when absent: two tuning workers logging the same
    # cohorts at the same moment both insert, and the loser gets a unique-key violation (BAD_REQUEST, which the
    # client does not retry). Its next attempt finds the winner's row and links the run to it.
    for attempt in range(DATASET_RACE_ATTEMPTS):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as error:
            if attempt == DATASET_RACE_ATTEMPTS - 1 or not any(
                    text in str(error) for text in ("UniqueViolation", "UNIQUE constraint", "Duplicate entry")):
                raise


DATASET_RACE_ATTEMPTS = 3

"""The preprocess stage: interim exams -> per-patient VOI slice stacks, recomputing only what changed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from her2pcr.compute import map_exams, remove_temporaries, replace_atomically
from her2pcr.config import LOCAL_COMPUTE, ComputeParams, PreprocessParams
from her2pcr.interim import write_if_changed
from her2pcr.preprocess.chain import PreprocessChain
from her2pcr.preprocess.settings import CHAIN_FILE, COHORTS_DIR, Box

#: The chain that made the outputs; train freezes it into the served model.


@dataclass(frozen=True)
class Job:
    patient_id: str
    exam_path: Path
    box: tuple[int, ...]
    out_path: Path
    key: str


def chain_from(params: PreprocessParams) -> PreprocessChain:
    return PreprocessChain(params.chain_config())


def cache_key(exam_path: Path, box: tuple[int, ...], fingerprint: str) -> str:
    """Content hash of everything an output depends on: the exam bytes, its box and the chain settings."""
    digest = hashlib.sha256(exam_path.read_bytes())
    digest.update(repr((box, fingerprint)).encode())
    return digest.hexdigest()[:24]


def stored_key(path: Path) -> str | None:
    if not path.exists():
        return None
    with np.load(path) as data:
        return str(data["key"]) if "key" in data else None


def _previous_counts(index_path: Path) -> dict[str, dict[str, int]]:
    """Stack counts of the last run by cache key, so reused outputs need not be decompressed."""
    if not index_path.exists():
        return {}
    index = pd.read_parquet(index_path)
    return {row.key: dict.fromkeys(row.phases.split(";"), int(row.n_stacks)) for row in index.itertuples()}


def _counts_from_file(path: Path) -> dict[str, int]:
    with np.load(path) as data:
        return {k: len(data[k]) for k in data.files if k != "key"}


def _run(args: tuple[Job, PreprocessParams]) -> tuple[str, dict[str, int]]:
    job, params = args
    with np.load(job.exam_path) as exam:
        image, spacing = exam["image"], exam["spacing_mm"]
    stacks = chain_from(params)(image, tuple(spacing), job.box)
    # float16 halves the files; inputs lie in [0, 1], where its 1e-3 resolution is far below the image noise.
    replace_atomically(job.out_path, lambda tmp: np.savez_compressed(
        tmp, key=np.array(job.key), **{k: v.astype(np.float16) for k, v in stacks.items()}))
    return job.patient_id, {name: len(array) for name, array in stacks.items()}


def write_cohort_indexes(index: pd.DataFrame, folder: Path) -> None:
    """Each cohort's rows of the index in its own file (``read_index(..., cohorts)``), the only ones removed or
    rewritten being those of cohorts that changed, so a stage of other cohorts sees unchanged files."""
    folder.mkdir(exist_ok=True)
    cohorts = set(index.cohort.dropna())
    for stale in folder.glob("*.parquet"):
        if stale.stem not in cohorts:
            stale.unlink()
    for cohort in sorted(cohorts):
        write_if_changed(index[index.cohort == cohort].sort_index().reset_index(), folder / f"{cohort}.parquet")


def preprocess(params: PreprocessParams, progress: bool = True,
               compute: ComputeParams = LOCAL_COMPUTE) -> dict[str, int]:
    """Write data/processed/<patient>.npz and index.parquet; reuse outputs whose inputs did not change."""
    clinical = pd.read_parquet(params.interim_dir / "clinical.parquet").set_index("patient_id")
    params.out_dir.mkdir(parents=True, exist_ok=True)
    chain = chain_from(params)
    fingerprint = chain.fingerprint()
    jobs, reused = [], []
    for pid, row in clinical.iterrows():
        box = tuple(int(row[c]) for c in Box._fields)
        exam_path = params.interim_dir / "exams" / f"{pid}.npz"
        out_path = params.out_dir / f"{pid}.npz"
        key = cache_key(exam_path, box, fingerprint)
        (reused if stored_key(out_path) == key else jobs).append(Job(str(pid), exam_path, box, out_path, key))
    wanted = {f"{pid}.npz" for pid in clinical.index} | {"index.parquet", CHAIN_FILE, COHORTS_DIR}
    for stale in params.out_dir.iterdir():
        if stale.name not in wanted:
            stale.unlink()

    counts: dict[str, dict[str, int]] = {}
    for pid, stacks in map_exams(_run, [(job, params) for job in jobs], params.workers, compute, "preprocess",
                                 progress):
        counts[pid] = stacks
    remove_temporaries(params.out_dir)
    previous = _previous_counts(params.out_dir / "index.parquet")
    for job in reused:
        counts[job.patient_id] = previous.get(job.key) or _counts_from_file(job.out_path)
    index = clinical[["cohort", "pcr", "institution"]].copy()
    index["n_stacks"] = [next(iter(counts[pid].values())) for pid in index.index]
    index["phases"] = [";".join(counts[pid]) for pid in index.index]
    keys = {job.patient_id: job.key for job in jobs + reused}
    index["key"] = [keys[pid] for pid in index.index]
    index.reset_index().to_parquet(params.out_dir / "index.parquet", index=False)
    write_cohort_indexes(index, params.out_dir / COHORTS_DIR)
    (params.out_dir / CHAIN_FILE).write_text(json.dumps(
        {"config": chain.config.model_dump(mode="json"), "fingerprint": fingerprint}, indent=1),
        encoding="utf-8")
    return {"exams": len(index), "computed": len(jobs), "reused": len(reused)}

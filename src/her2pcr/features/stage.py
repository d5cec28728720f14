"""PK feature table: interim exams -> 48 semi-quantitative PK features per exam with phase timing.

Exams the features cannot be computed for (no phase timing, an empty tumour mask, a missing exam file, ...)
are listed in a second table with the reason; no exam is dropped silently, so
``len(features) + len(skipped) == len(clinical)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from her2pcr.compute import map_exams
from her2pcr.config import LOCAL_COMPUTE, ComputeParams
from her2pcr.features.pk import FEATURE_NAMES, PKError, check_times, pk_features
from her2pcr.preprocess.settings import Box

SKIPPED_COLUMNS = ["patient_id", "reason"]

Job = tuple[str, Path, tuple[int, ...], float]
Result = tuple[str, dict[str, float] | None, str | None]


def exam_features(job: Job) -> Result:
    """(patient_id, features, None) or (patient_id, None, reason)."""
    pid, exam_path, box, threshold_percent = job
    if not exam_path.exists():
        return pid, None, f"interim exam file not found: {exam_path.name}"
    try:
        with np.load(exam_path) as exam:
            times = exam["phase_times_s"]
            n_phases = int(exam["phase_names"].shape[0]) if "phase_names" in exam.files else times.shape[0]
            check_times(times, n_phases)            # before decompressing the image
            image, spacing = exam["image"], exam["spacing_mm"]
        return pid, pk_features(image, times, box, spacing, threshold_percent), None
    except PKError as error:
        return pid, None, str(error)


def pk_feature_table(interim_dir: Path, threshold_percent: float,
                     workers: int = 1, compute: ComputeParams = LOCAL_COMPUTE,
                     progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features, skipped) for every exam of ``interim_dir/clinical.parquet``.

    features: indexed by patient_id; columns cohort, pcr, then ``FEATURE_NAMES`` (48, float).
    skipped: columns patient_id, reason.
    """
    interim_dir = Path(interim_dir)
    clinical = pd.read_parquet(interim_dir / "clinical.parquet").set_index("patient_id")
    jobs: list[Job] = [(str(pid), interim_dir / "exams" / f"{pid}.npz", tuple(int(row[c]) for c in Box._fields),
                        float(threshold_percent)) for pid, row in clinical.iterrows()]
    results = list(map_exams(exam_features, jobs, workers, compute, "pk_features", progress))

    rows = {pid: features for pid, features, _ in results if features is not None}
    skipped = pd.DataFrame([{"patient_id": pid, "reason": reason} for pid, features, reason in results
                            if features is None], columns=SKIPPED_COLUMNS)
    kept = [pid for pid in clinical.index if pid in rows]
    values = pd.DataFrame([rows[pid] for pid in kept], index=pd.Index(kept, name="patient_id"),
                          columns=list(FEATURE_NAMES), dtype=np.float64)
    features = clinical.loc[kept, ["cohort", "pcr"]].join(values)
    features.index.name = "patient_id"
    return features, skipped


def pk_features_stage(interim_dir: Path, out_dir: Path, threshold_percent: float, workers: int = 1,
                      compute: ComputeParams = LOCAL_COMPUTE, progress: bool = True) -> dict:
    """The pk_features stage: ``out_dir/pk.parquet`` (the features) and ``out_dir/skipped.csv`` (who, and why)."""
    features, skipped = pk_feature_table(interim_dir, threshold_percent, workers, compute, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    features.reset_index().to_parquet(out_dir / "pk.parquet", index=False)
    skipped.to_csv(out_dir / "skipped.csv", index=False)
    return {"features": len(features), "skipped": len(skipped), "skipped_file": out_dir / "skipped.csv"}

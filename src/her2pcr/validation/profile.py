"""One row per patient describing how its exam was acquired and what its tumour box looks like: the table the
training-derived data-quality expectations run on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from her2pcr.preprocess.voi import Box, CropToBox

#: Small sets of values: expected to be one of the training values rather than within its range.
SET_COLUMNS = ("field_strength_t", "n_post_phases", "n_phases", "timing_present")
#: Text columns of acquisition.parquet that name a vendor or product rather than measure the acquisition: a new
#: vendor is what external validation is for, and its physics shows in TR, TE, flip angle, ... anyway.
DESCRIPTIVE_COLUMNS = ("manufacturer", "contrast_agent")
AXES = ("slice", "row", "column")  # order of the interim image axes after the phase axis
EXAM_COLUMNS = ("n_phases", "timing_present", "voi_voxels", *(f"voi_{axis}_mm" for axis in AXES), "pre_mean",
                "pre_p99", "relative_enhancement")


def exam_statistics(image: np.ndarray, spacing_mm: np.ndarray, phase_times_s: np.ndarray,
                    phase_names: list[str], box: Mapping[str, int]) -> dict[str, float | int | bool]:
    """Phases, timing, VOI size and pre-contrast intensity / enhancement inside the box of one interim exam.

    ``image`` is (phase, slice, row, column) in scanner units; ``spacing_mm`` is (slice, row, column).
    Enhancement is (mean last post - mean pre) / mean pre over the box: a ratio of means, because voxel-wise
    ratios explode where fat suppression leaves the pre-contrast signal near zero.
    """
    voi = CropToBox(clip=True).slices(image.shape[1:], [box[name] for name in Box._fields])
    region = image[(slice(None), *voi)].astype(np.float64)
    extents = region.shape[1:]
    out: dict[str, float | int | bool] = {
        "n_phases": int(image.shape[0]),
        "timing_present": bool(np.isfinite(np.asarray(phase_times_s, dtype=float)).all()),
        "voi_voxels": int(np.prod(extents)),
        **{f"voi_{axis}_mm": float(n * step) for axis, n, step in zip(AXES, extents, spacing_mm, strict=True)},
    }
    pre = region[phase_names.index("pre") if "pre" in phase_names else 0]
    out["pre_mean"] = float(pre.mean())
    out["pre_p99"] = float(np.percentile(pre, 99))
    out["relative_enhancement"] = np.nan
    if image.shape[0] > 1 and out["pre_mean"] > 0:
        out["relative_enhancement"] = float((region[-1].mean() - pre.mean()) / pre.mean())
    return out


def read_exam_statistics(path: Path, box: Mapping[str, int]) -> dict[str, float | int | bool]:
    with np.load(path) as exam:
        return exam_statistics(exam["image"], exam["spacing_mm"], exam["phase_times_s"],
                               [str(name) for name in exam["phase_names"]], box)


def acquisition_columns(acquisition: pd.DataFrame) -> list[str]:
    """Numeric acquisition parameters; timing comes from the exam itself (what the model is fed)."""
    return [c for c in acquisition.columns
            if c not in ("patient_id", "timing_present", *DESCRIPTIVE_COLUMNS)
            and pd.api.types.is_numeric_dtype(acquisition[c]) and not pd.api.types.is_bool_dtype(acquisition[c])]


def profile_table(interim_dir: Path, patient_ids: list[str]) -> pd.DataFrame:
    """Acquisition parameters and exam statistics of the patients, one row each (index ``patient_id``).

    A patient without an interim exam keeps NaN statistics, which the not-null expectations then name.
    """
    clinical = pd.read_parquet(interim_dir / "clinical.parquet").set_index("patient_id")
    acquisition = pd.read_parquet(interim_dir / "acquisition.parquet").set_index("patient_id")
    rows = []
    for pid in patient_ids:
        path = interim_dir / "exams" / f"{pid}.npz"
        rows.append({"patient_id": pid, **(read_exam_statistics(path, clinical.loc[pid]) if path.exists() else {})})
    exams = pd.DataFrame(rows).set_index("patient_id").reindex(columns=list(EXAM_COLUMNS))
    columns = acquisition_columns(acquisition.reset_index())
    table = acquisition.reindex(patient_ids)[columns].join(exams)
    table.index.name = "patient_id"
    return table

"""Two per-patient tables the training-derived expectations run on.

* The **model-input** table holds what the model's inputs depend on: whether the exam has every input the model
  uses, the VOI size in mm and its number of slice stacks, and statistics of the standardised inputs themselves
  (data/processed). A cohort outside these is data the model has not seen: this is what the gate checks.
* The **protocol** table describes how an exam was acquired (acquisition parameters, number of phases, timing,
  raw scanner intensities). Another site differs there by nature; the preprocessing exists to absorb it, so a
  shift is reported as a warning and never fails the gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from her2pcr.interim import read_table
from her2pcr.preprocess.voi import Box, CropToBox
from her2pcr.training.data import read_index

#: Small sets of values: expected to be one of the training values rather than within its range.
SET_COLUMNS = ("field_strength_t", "n_post_phases", "n_phases", "timing_present")
#: Text columns of acquisition.parquet that name a vendor or product rather than measure the acquisition: a new
#: vendor is what external validation is for, and its physics shows in TR, TE, flip angle, ... anyway.
DESCRIPTIVE_COLUMNS = ("manufacturer", "contrast_agent")
AXES = ("slice", "row", "column")  # order of the interim image axes after the phase axis
VOI_COLUMNS = tuple(f"voi_{axis}_mm" for axis in AXES)
#: Exam statistics of the protocol table (scanner units and counts the preprocessing standardises away).
PROTOCOL_EXAM_COLUMNS = ("n_phases", "timing_present", "voi_voxels", "pre_mean", "pre_p99", "relative_enhancement")
EXAM_COLUMNS = (*PROTOCOL_EXAM_COLUMNS[:3], *VOI_COLUMNS, *PROTOCOL_EXAM_COLUMNS[3:])
#: Statistics of each standardised model input, per patient over all its stacks and channels.
INPUT_STATISTICS = ("mean", "std", "p01", "p99")
PROCESSED_SKIP = ("key",)  # entries of a processed npz that are not model inputs


def has_input_column(name: str) -> str:
    return f"has_{name}"


def input_columns(inputs: Sequence[str]) -> list[str]:
    """Columns of the model-input table, in order."""
    return [*(has_input_column(name) for name in inputs), "n_stacks", *VOI_COLUMNS,
            *(f"input_{name}_{stat}" for name in inputs for stat in INPUT_STATISTICS)]


def input_set_columns(inputs: Sequence[str]) -> tuple[str, ...]:
    return tuple(has_input_column(name) for name in inputs)


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


def input_statistics(arrays: Mapping[str, np.ndarray], inputs: Sequence[str]) -> dict[str, float]:
    """Mean, standard deviation and 1st / 99th percentile of each model input present in ``arrays``.

    An input the exam lacks gets no entry (NaN in the table, which the not-null expectations then name).
    """
    out: dict[str, float] = {}
    for name in inputs:
        if name not in arrays:
            continue
        values = np.asarray(arrays[name], dtype=np.float64).ravel()
        if values.size == 0:
            continue
        p01, p99 = np.percentile(values, [1, 99])
        out |= {f"input_{name}_mean": float(values.mean()), f"input_{name}_std": float(values.std()),
                f"input_{name}_p01": float(p01), f"input_{name}_p99": float(p99)}
    return out


def read_input_statistics(path: Path, inputs: Sequence[str]) -> dict[str, float]:
    with np.load(path) as data:
        return input_statistics({k: data[k].astype(np.float32) for k in inputs  # stored as float16
                                 if k in data.files and k not in PROCESSED_SKIP}, inputs)


def acquisition_columns(acquisition: pd.DataFrame) -> list[str]:
    """Numeric acquisition parameters; timing comes from the exam itself (what the model is fed)."""
    return [c for c in acquisition.columns
            if c not in ("patient_id", "timing_present", *DESCRIPTIVE_COLUMNS)
            and pd.api.types.is_numeric_dtype(acquisition[c]) and not pd.api.types.is_bool_dtype(acquisition[c])]


def _frame(rows: list[dict], columns: Sequence[str]) -> pd.DataFrame:
    """Rows (each with ``patient_id``) as a table of exactly ``columns``, also when there is no row."""
    return pd.DataFrame.from_records(rows).reindex(columns=["patient_id", *columns]).set_index("patient_id")


def exam_table(interim_dir: Path, patient_ids: list[str], cohorts: list[str] | None = None) -> pd.DataFrame:
    """EXAM_COLUMNS of each patient's interim exam (index ``patient_id``; NaN without an exam). ``cohorts``: the
    patients' cohorts, whose own tables are read (all tables when None)."""
    clinical = read_table(interim_dir, "clinical", cohorts)
    rows = []
    for pid in patient_ids:
        path = interim_dir / "exams" / f"{pid}.npz"
        rows.append({"patient_id": pid, **(read_exam_statistics(path, clinical.loc[pid]) if path.exists() else {})})
    return _frame(rows, EXAM_COLUMNS)


def protocol_table(interim_dir: Path, patient_ids: list[str], exams: pd.DataFrame | None = None,
                   cohorts: list[str] | None = None) -> pd.DataFrame:
    """Acquisition parameters and raw exam statistics of the patients, one row each (index ``patient_id``).

    A patient without an interim exam keeps NaN statistics, which the not-null expectations then name.
    """
    acquisition = read_table(interim_dir, "acquisition", cohorts)
    exams = exam_table(interim_dir, patient_ids, cohorts) if exams is None else exams
    columns = acquisition_columns(acquisition.reset_index())
    table = acquisition.reindex(patient_ids)[columns].join(exams.reindex(patient_ids)[list(PROTOCOL_EXAM_COLUMNS)])
    table.index.name = "patient_id"
    return table


def input_table(processed_dir: Path, patient_ids: list[str], inputs: Sequence[str], exams: pd.DataFrame,
                cohorts: list[str] | None = None) -> pd.DataFrame:
    """The model-input table of the patients (index ``patient_id``), for the model's ``inputs``.

    ``exams`` is :func:`exam_table` of the patients (it holds the VOI size in mm). A patient without a processed
    exam has no input at all and NaN elsewhere.
    """
    index = read_index(processed_dir, cohorts)
    rows = []
    for pid in patient_ids:
        row: dict = {"patient_id": pid}
        available = set(str(index.at[pid, "phases"]).split(";")) if pid in index.index else set()
        row |= {has_input_column(name): name in available for name in inputs}
        if pid in index.index:
            row["n_stacks"] = int(index.at[pid, "n_stacks"])
            path = processed_dir / f"{pid}.npz"
            if path.exists():
                row |= read_input_statistics(path, inputs)
        rows.append(row)
    table = _frame(rows, input_columns(inputs))
    for name in inputs:  # reindex leaves object columns; the has_ columns are plain booleans
        table[has_input_column(name)] = table[has_input_column(name)].fillna(False).astype(bool)
    voi = exams.reindex(patient_ids)[list(VOI_COLUMNS)]
    table[list(VOI_COLUMNS)] = voi.to_numpy(dtype=float)
    table.index.name = "patient_id"
    return table

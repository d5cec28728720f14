"""Read the clinical and box manifests through the column mapping of params, and check each row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from her2pcr.config import IngestParams

REQUIRED_CLINICAL = ("age", "er", "pr", "stage", "lymph_node", "longest_diameter_mm", "regimen", "pcr", "institution")
BOX_AXES = ("row", "column", "slice")


@dataclass(frozen=True)
class Manifests:
    clinical: pd.DataFrame  # canonical columns, indexed by patient_id
    boxes: pd.DataFrame  # 0-based inclusive box, indexed by patient_id
    problems: dict[str, list[str]]  # patient_id -> reasons the rows cannot be used


def read_table(path, mapping: dict[str, str], what: str, header_rows: int = 1, names_row: int = 0) -> pd.DataFrame:
    """Read a CSV (or Excel) manifest and rename its columns to the canonical names.

    A header of several rows (a category row, the names, a coding row, as clinical spreadsheets of public
    collections have) is read as ``header_rows`` rows whose row ``names_row`` holds the column names.
    """
    # Text, like the CSV path: a numeric 0/1 column of a spreadsheet then maps through ingest.positive_values too
    excel = str(path).endswith((".xlsx", ".xls"))
    raw = pd.read_excel(path, dtype=str, header=None) if excel else pd.read_csv(path, dtype=str, header=None)
    frame = raw.iloc[header_rows:].reset_index(drop=True)
    frame.columns = [str(name).strip() if pd.notna(name) else "" for name in raw.iloc[names_row]]
    missing = [source for source in mapping.values() if source not in frame.columns]
    if missing:
        raise ValueError(f"{path}: {what} columns {missing} not found (mapped in params ingest.{what}_columns)")
    frame = frame[list(mapping.values())].rename(columns={v: k for k, v in mapping.items()})
    frame["patient_id"] = frame["patient_id"].astype(str).str.strip()
    return frame


def decode_values(frame: pd.DataFrame, value_maps: dict[str, dict[str, str]]) -> tuple[pd.DataFrame, dict]:
    """Coded values through ``ingest.value_maps``; a code the map lacks is a problem of that patient's row."""
    out = frame.copy()
    problems: dict[str, list[str]] = {}
    for column, mapping in value_maps.items():
        values = out[column].str.strip()
        unknown = values.notna() & ~values.isin(list(mapping))
        for pid, value in zip(out.patient_id[unknown], values[unknown], strict=True):
            problems.setdefault(pid, []).append(
                f"clinical manifest: {column} code {value!r} is not in ingest.value_maps.{column} {sorted(mapping)}")
        out[column] = values.map(mapping).where(~unknown, None)
    return out, problems


def normalise_clinical(frame: pd.DataFrame, params: IngestParams) -> pd.DataFrame:
    positive = {v.lower() for v in params.positive_values}
    out = frame.copy()
    for column in ("er", "pr", "lymph_node"):
        values = out[column].str.strip().str.lower()
        out[column] = np.where(values.isna(), None, np.where(values.isin(positive), "positive", "negative"))
    out["age"] = pd.to_numeric(out["age"], errors="coerce")
    out["longest_diameter_mm"] = pd.to_numeric(out["longest_diameter_mm"], errors="coerce")
    out["pcr"] = pd.to_numeric(out["pcr"], errors="coerce").astype("Int64")
    for column in ("stage", "regimen", "institution"):
        out[column] = out[column].str.strip()
    return out


def row_problems(clinical: pd.DataFrame, boxes: pd.DataFrame) -> dict[str, list[str]]:
    """Reasons, per patient, that a manifest row cannot be used (each names the column)."""
    problems: dict[str, list[str]] = {}

    def add(pid, reason):
        problems.setdefault(pid, []).append(reason)

    for pid, count in clinical.patient_id.value_counts().items():
        if count > 1:
            add(pid, f"clinical manifest: {count} rows for this patient")
    for pid, count in boxes.patient_id.value_counts().items():
        if count > 1:
            add(pid, f"box manifest: {count} rows for this patient")
    for row in clinical.itertuples(index=False):
        if pd.isna(row.pcr):
            add(row.patient_id, "clinical manifest: pcr label is missing")
        elif row.pcr not in (0, 1):
            add(row.patient_id, f"clinical manifest: pcr label {row.pcr} is not 0 or 1")
        for column in REQUIRED_CLINICAL:
            if column != "pcr" and pd.isna(getattr(row, column)):
                add(row.patient_id, f"clinical manifest: {column} is missing or not a number")
    for pid in set(clinical.patient_id) - set(boxes.patient_id):
        add(pid, "box manifest: no tumour box for this patient")
    for pid in set(boxes.patient_id) - set(clinical.patient_id):
        add(pid, "clinical manifest: no clinical row for this patient")
    return problems


def to_zero_based_boxes(boxes: pd.DataFrame, base: int) -> pd.DataFrame:
    out = boxes.copy()
    for axis in BOX_AXES:
        for end in ("start", "end"):
            out[f"{axis}_{end}"] = pd.to_numeric(out[f"{axis}_{end}"], errors="coerce") - base
    return out


def box_in_position_order(box: pd.Series, n_slices: int) -> pd.Series:
    """A box whose slices count from the other end of the volume, in the interim exam's slice order."""
    out = box.copy()
    out["slice_start"], out["slice_end"] = n_slices - 1 - box["slice_end"], n_slices - 1 - box["slice_start"]
    return out


def box_problem(box: pd.Series, shape: tuple[int, int, int]) -> str | None:
    """Why a 0-based inclusive box does not fit a (slices, rows, columns) volume, or None."""
    limits = {"slice": shape[0], "row": shape[1], "column": shape[2]}
    for axis in BOX_AXES:
        start, end = box[f"{axis}_start"], box[f"{axis}_end"]
        if pd.isna(start) or pd.isna(end):
            return f"box manifest: {axis} start/end missing"
        if start > end:
            return f"box manifest: {axis} start {int(start)} > end {int(end)}"
        if start < 0 or end >= limits[axis]:
            return (f"box outside the volume: {axis}s {int(start)}-{int(end)} (0-based) "
                    f"exceed the image's {limits[axis]} {axis}s")
    return None


def read_manifests(params: IngestParams, boxes: pd.DataFrame | None = None) -> Manifests:
    """The clinical and box manifests, canonical and checked; ``boxes`` (canonical columns) when the source itself
    carries them (a NIfTI collection's info files) instead of ``ingest.boxes_file``."""
    source = params.source_dir
    clinical = read_table(source / params.clinical_file, params.clinical_columns, "clinical",
                          params.clinical_header_rows, params.clinical_names_row)
    clinical, code_problems = decode_values(clinical, params.value_maps)
    clinical = normalise_clinical(clinical, params)
    if boxes is None:
        boxes = read_table(source / params.boxes_file, params.box_columns, "box")
    boxes = to_zero_based_boxes(boxes, params.box_index_base)
    problems = row_problems(clinical, boxes)
    for pid, reasons in code_problems.items():
        problems.setdefault(pid, []).extend(reasons)
    return Manifests(clinical.drop_duplicates("patient_id").set_index("patient_id"),
                     boxes.drop_duplicates("patient_id").set_index("patient_id"), problems)

"""Fault injection: broken inputs for robustness tests, each on its own extra patient.

Every injected fault is listed in faults.csv (patient, fault, detail) so tests
can check that ingest reports each one specifically.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.uid import CTImageStorage, generate_uid
from scipy.ndimage import zoom

from her2pcr.config import SimulateParams
from her2pcr.synth.cohort import ExamResult, ExamTask, patient_id
from her2pcr.synth.exam import ExamImages
from her2pcr.synth.patients import draw_patient
from her2pcr.synth.sites import SiteProtocol

FAULT_SITE = "inst1"
FAULT_ID_OFFSET = 900  # fault patients are <site>-9NN, beyond any real cohort size here
# Layout each fault needs to be a genuine fault (e.g. unorderable phases need per-phase series).
FAULT_LAYOUT = {"missing_timing": "per_phase_trigger", "mismatched_matrix": "per_phase_description"}


def plan_faults(params: SimulateParams, sites: dict[str, SiteProtocol], dicom_root: Path) -> list[ExamTask]:
    """One extra patient per requested fault, drawn from the truth model like any other."""
    if not params.faults:
        return []
    site_name = FAULT_SITE if FAULT_SITE in sites else sorted(sites)[0]
    site_index = 99
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, site_index, 0]))
    tasks = []
    for i, fault in enumerate(params.faults):
        site = sites[site_name]
        if fault in FAULT_LAYOUT:
            site = site.model_copy(update={"layout": FAULT_LAYOUT[fault]})
        draw = draw_patient(rng, params.truth, site.pcr_logit_offset)
        k = FAULT_ID_OFFSET + i + 1
        tasks.append(ExamTask(
            patient_id(site_name, k), site_name, site, draw, next(iter(site.regimen)), False,
            fault != "missing_timing", (params.seed, site_index, k), params.matrix, params.slices,
            params.noise, dicom_root, params.seed, fault,
        ))
    return tasks


def apply_image_fault(exam: ExamImages, fault: str) -> ExamImages:
    """Faults made before writing: an exam with only its pre-contrast phase."""
    if fault != "missing_post_contrast":
        return exam
    acq = dataclasses.replace(exam.acquisition, n_post=0, phase_times_s=exam.acquisition.phase_times_s[:1])
    return ExamImages(exam.identity, acq, exam.phases[:1], exam.phase_names[:1])


def apply_manifest_faults(
    clinical: pd.DataFrame, boxes: pd.DataFrame, tasks: list[ExamTask], params: SimulateParams,
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Faults in the manifests: missing label, NaN value, missing rows, a box outside the volume."""
    clinical = clinical.astype({"pcr": "Int64", "age": "Int64"})
    rows = []
    for task in tasks:
        pid, fault = task.patient_id, task.fault
        if fault == "box_outside_volume":
            boxes.loc[boxes.patient_id == pid, ["row_end", "column_end"]] = params.matrix + 25
            rows.append(_row(pid, fault, f"row_end and column_end = {params.matrix + 25} > matrix {params.matrix}"))
        elif fault == "manifest_without_images":
            rows.append(_row(pid, fault, "clinical and box rows, no DICOM written"))
        elif fault == "images_without_manifest":
            clinical = clinical[clinical.patient_id != pid]
            boxes = boxes[boxes.patient_id != pid]
            rows.append(_row(pid, fault, "DICOM written, no clinical or box row"))
        elif fault == "missing_label":
            clinical.loc[clinical.patient_id == pid, "pcr"] = pd.NA
            rows.append(_row(pid, fault, "pcr empty"))
        elif fault == "nan_clinical_value":
            clinical.loc[clinical.patient_id == pid, "age"] = pd.NA
            rows.append(_row(pid, fault, "age empty"))
    return clinical, boxes, rows


def apply_file_faults(tasks: list[ExamTask], results: dict[str, ExamResult]) -> list[dict]:
    """Faults made to written files: truncation, stray files, wrong modality, matrices, duplicates, timing."""
    rows = []
    for task in tasks:
        if task.patient_id not in results:
            continue
        files = sorted(results[task.patient_id].files)
        action = FILE_FAULTS.get(task.fault or "")
        if action is not None:
            rows.append(_row(task.patient_id, task.fault, action(files, task.master_seed)))
        elif task.fault == "missing_post_contrast":
            rows.append(_row(task.patient_id, task.fault, "only the pre-contrast phase written"))
    return rows


def _row(pid: str, fault: str | None, detail: str) -> dict:
    return {"patient_id": pid, "fault": fault, "detail": detail}


def _truncate(files: list[Path], seed: int) -> str:
    target = files[len(files) // 2]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) * 3 // 5])
    return str(target)


def _non_dicom(files: list[Path], seed: int) -> str:
    target = files[0].parent / "IM99999.dcm"
    target.write_text("scanner export log: transfer interrupted, see PACS\n", encoding="utf-8")
    return str(target)


def _rewrite(files: list[Path], change) -> None:
    for path in files:
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path, enforce_file_format=True)


def _non_mr(files: list[Path], seed: int) -> str:
    def to_ct(ds):
        ds.Modality = "CT"
        ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    _rewrite(files, to_ct)
    return "Modality CT, CT Image Storage SOP class"


def _by_series(files: list[Path]) -> dict[int, list[Path]]:
    series: dict[int, list[Path]] = {}
    for path in files:
        number = int(pydicom.dcmread(path, stop_before_pixels=True).SeriesNumber)
        series.setdefault(number, []).append(path)
    return series


def _mismatched_matrix(files: list[Path], seed: int) -> str:
    series = _by_series(files)
    last = series[max(series)]

    def shrink(ds):
        pixels = ds.pixel_array
        small = zoom(pixels.astype(np.float32), 0.75, order=1)
        ds.PixelSpacing = [f"{float(v) * pixels.shape[0] / small.shape[0]:.6g}" for v in ds.PixelSpacing]
        ds.Rows, ds.Columns = small.shape
        ds.PixelData = np.clip(np.rint(small), 0, 65535).astype(np.uint16).tobytes()
    _rewrite(last, shrink)
    return f"series {max(series)} written at 3/4 of the matrix"


def _duplicate(files: list[Path], seed: int) -> str:
    source = files[len(files) // 3]
    target = source.with_name(source.stem + "_dup" + source.suffix)
    shutil.copyfile(source, target)
    ds = pydicom.dcmread(target)
    uid = generate_uid(entropy_srcs=[str(seed), str(source), "duplicate"])
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.save_as(target, enforce_file_format=True)
    return f"{target} repeats the slice of {source}"


def _unorderable(files: list[Path], seed: int) -> str:
    def same_series_number(ds):
        ds.SeriesNumber = 5
    _rewrite(files, same_series_number)
    return "no timing tags; every phase series has the same number and description"


FILE_FAULTS = {
    "truncated_file": _truncate,
    "non_dicom_file": _non_dicom,
    "non_mr_modality": _non_mr,
    "mismatched_matrix": _mismatched_matrix,
    "duplicated_slices": _duplicate,
    "missing_timing": _unorderable,
}

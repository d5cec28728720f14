"""Simulated cohorts laid out as a public collection, so ingest is tested on the layouts users point it at.

``write_duke_like`` copies a native simulated source into the layout of Duke-Breast-Cancer-MRI (TCIA):

- ``Duke-Breast-Cancer-MRI/Breast_MRI_NNN/<study>/<series>/1-NNN.dcm``; PatientID is the pseudonym
  (``Breast_MRI_NNN``) and no Clinical Trial attribute is left;
- every other patient's files count InstanceNumber against the slice normal (feet to head), the reversed z-order
  that the collection's documentation warns about; the box sheet counts slices in InstanceNumber order;
- every fourth patient also holds a later follow-up study (150 days on, fainter enhancement): ingest must choose
  the earliest, pre-treatment study;
- ``Annotation_Boxes.xlsx`` with the collection's columns (1-based, inclusive);
- ``Clinical_and_Other_Features.xlsx`` with a three-row header (category, name, coding) and coded values, read
  through ``ingest.value_maps`` (conf/profiles/duke.yaml).

``truth.csv`` is rewritten with the collection's ids (the native id kept as ``simulated_patient_id``).

``write_nifti_like`` writes a MAMA-MIA-like NIfTI collection beside the native source, converted from its DICOM
as a user converts a collection (here with ingest's own DICOM reader): ``nifti/images/<pid>/<pid>_000K.nii.gz``
per phase, ``nifti/patient_info_files/<pid>.json`` (acquisition times, protocol values, 0-based lesion box) and
``nifti/clinical_and_imaging_info.xlsx``. Like the public JSONs it lacks the phase-encoding steps and percent
sampling, which ingest must then report missing.
"""

from __future__ import annotations

import copy
import datetime
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from her2pcr.synth.dicom_writer import exam_uid

__all__ = ["DUKE_BOX_COLUMNS", "DUKE_CLINICAL", "DUKE_DICOM_DIR", "NIFTI_CLINICAL", "NIFTI_DIR", "REGIMEN_CODES",
           "write_duke_like", "write_nifti_like"]

DUKE_DICOM_DIR = "Duke-Breast-Cancer-MRI"
DUKE_BOXES_FILE = "Annotation_Boxes.xlsx"
DUKE_CLINICAL_FILE = "Clinical_and_Other_Features.xlsx"
DUKE_BOX_COLUMNS = {"patient_id": "Patient ID", "row_start": "Start Row", "row_end": "End Row",
                    "column_start": "Start Column", "column_end": "End Column", "slice_start": "Start Slice",
                    "slice_end": "End Slice"}
REGIMEN_CODES = {"DCTP": "1", "DCT": "2", "TCH": "3", "TCHP": "4"}
_STAGE_CODES = {"I": "1", "II": "2", "III": "3", "IV": "4"}
_STATUS_CODES = {"negative": "0", "positive": "1"}
# canonical column: (category, name in the sheet, coding row text, how a native value is coded)
DUKE_CLINICAL: dict[str, tuple[str, str, str, dict | None]] = {
    "patient_id": ("", "Patient ID", "", None),
    "age": ("Demographics", "Age at MRI (years)", "", None),
    "er": ("Tumor Characteristics", "ER", "{0 = neg, 1 = pos}", _STATUS_CODES),
    "pr": ("", "PR", "{0 = neg, 1 = pos}", _STATUS_CODES),
    "stage": ("", "Clinical stage", "{1 = I, 2 = II, 3 = III, 4 = IV}", _STAGE_CODES),
    "lymph_node": ("", "Staging(Nodes)#(Nx replaced by -1)[N]", "{0 = N0, 1 = N+}", _STATUS_CODES),
    "longest_diameter_mm": ("", "Tumor Size (mm)", "", None),
    "regimen": ("Treatment", "Neoadjuvant Chemotherapy",
                "{" + ", ".join(f"{c} = {r}" for r, c in REGIMEN_CODES.items()) + "}", REGIMEN_CODES),
    "pcr": ("Outcome", "Pathologic Response to Neoadjuvant Therapy", "{0 = non-pCR, 1 = pCR}", None),
    "institution": ("Imaging", "Site", "", None),
}
_FOLLOW_UP_DAYS = 150
_FOLLOW_UP_GAIN = 0.6  # the tumour enhances less after therapy: a follow-up taken for the exam would show it


def _duke_ids(patient_ids: list[str]) -> dict[str, str]:
    return {pid: f"Breast_MRI_{k + 1:03d}" for k, pid in enumerate(sorted(patient_ids))}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in " -_" else "_" for c in text).strip()


def _normal_position(ds: pydicom.Dataset) -> float:
    row, col = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
    return float(np.dot(np.asarray(ds.ImagePositionPatient, float), np.cross(row, col)))


def _reverse_instance_numbers(datasets: list[pydicom.Dataset]) -> None:
    """Within each series time point, InstanceNumbers run against the slice normal (same numbers, reversed)."""
    groups: dict[tuple, list[pydicom.Dataset]] = defaultdict(list)
    for ds in datasets:
        if "PerFrameFunctionalGroupsSequence" not in ds and "ImagePositionPatient" in ds:
            groups[(ds.SeriesInstanceUID, ds.get("TemporalPositionIdentifier"), ds.get("TriggerTime"),
                    ds.get("ContentTime"), ds.get("AcquisitionTime"))].append(ds)
    for group in groups.values():
        numbers = sorted(int(ds.InstanceNumber) for ds in group)
        for ds, number in zip(sorted(group, key=_normal_position), reversed(numbers), strict=True):
            ds.InstanceNumber = number


def _shift_date(value: str, days: int) -> str:
    return (datetime.datetime.strptime(value, "%Y%m%d") + datetime.timedelta(days=days)).strftime("%Y%m%d")


def _follow_up(datasets: list[pydicom.Dataset], duke_id: str, seed: int) -> list[pydicom.Dataset]:
    """A later study of the same series: new UIDs, dates 150 days on, fainter pixels."""
    study_uid = exam_uid(seed, duke_id, "follow-up study")
    out = []
    for source in datasets:
        ds = copy.deepcopy(source)
        ds.StudyInstanceUID = study_uid
        ds.StudyDescription = "BREAST FOLLOW-UP POST NAC"
        ds.SeriesInstanceUID = exam_uid(seed, duke_id, "follow-up series", source.SeriesInstanceUID)
        ds.SOPInstanceUID = exam_uid(seed, duke_id, "follow-up image", source.SOPInstanceUID)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            if keyword in ds:
                setattr(ds, keyword, _shift_date(str(ds[keyword].value), _FOLLOW_UP_DAYS))
        ds.PixelData = (ds.pixel_array * _FOLLOW_UP_GAIN).astype(ds.pixel_array.dtype).tobytes()
        out.append(ds)
    return out


def _series_folder(ds: pydicom.Dataset) -> str:
    return f"{int(ds.SeriesNumber)}.000000-{_slug(str(ds.SeriesDescription))}-{str(ds.SeriesInstanceUID)[-5:]}"


def _study_folder(ds: pydicom.Dataset) -> str:
    description = _slug(str(ds.get("StudyDescription", "BREAST DCE")))
    return f"NA-{description}-{str(ds.StudyInstanceUID)[-5:]}"


def _write_patient(files: list[Path], out: Path, duke_id: str, reverse: bool, follow_up: bool, seed: int) -> None:
    datasets = [pydicom.dcmread(path) for path in files]
    for ds in datasets:
        ds.PatientID = duke_id
        for element in [e for e in ds if e.keyword.startswith("ClinicalTrial")]:
            del ds[element.tag]
        ds.StudyDescription = ds.get("StudyDescription") or "BREAST DCE"
    if reverse:
        _reverse_instance_numbers(datasets)
    if follow_up:
        datasets += _follow_up(datasets, duke_id, seed)
    for ds in datasets:
        folder = out / duke_id / _study_folder(ds) / _series_folder(ds)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"1-{int(ds.InstanceNumber):03d}.dcm"
        ds.save_as(folder / name, enforce_file_format=True)


def _clinical_sheet(clinical: pd.DataFrame) -> pd.DataFrame:
    """The clinical table as a sheet: three header rows (category, name, coding), then coded values."""
    header = [[spec[k] for spec in DUKE_CLINICAL.values()] for k in range(3)]
    rows = []
    for _, row in clinical.iterrows():
        values = []
        for column, (_, _, _, codes) in DUKE_CLINICAL.items():
            value = row[column]
            values.append("" if pd.isna(value) else (codes.get(str(value), str(value)) if codes else str(value)))
        rows.append(values)
    return pd.DataFrame(header + rows)


def write_duke_like(source: Path, seed: int) -> dict[str, int]:
    """Write the native source under ``source`` (dicom/, clinical.csv, boxes.csv, truth.csv) as a Duke-like
    collection beside it; return counts."""
    clinical = pd.read_csv(source / "clinical.csv", dtype=str)
    boxes = pd.read_csv(source / "boxes.csv")
    truth = pd.read_csv(source / "truth.csv")
    ids = _duke_ids(clinical.patient_id.tolist())
    out = source / DUKE_DICOM_DIR
    shutil.rmtree(out, ignore_errors=True)
    slices = truth.set_index("patient_id").acq_slices
    reversed_ids, follow_ups = set(), set()
    for k, pid in enumerate(sorted(ids)):
        files = sorted(p for p in (source / "dicom" / pid).rglob("*") if p.is_file())
        if not files:
            continue
        reverse, follow_up = k % 2 == 1, k % 4 == 3
        _write_patient(files, out, ids[pid], reverse, follow_up, seed)
        if reverse:
            reversed_ids.add(pid)
        if follow_up:
            follow_ups.add(pid)

    boxes = boxes.copy()
    for pid in reversed_ids:  # 1-based slices counted in InstanceNumber order: from the other end
        row = boxes.patient_id == pid
        start, end = boxes.loc[row, "slice_start"].copy(), boxes.loc[row, "slice_end"].copy()
        boxes.loc[row, "slice_start"], boxes.loc[row, "slice_end"] = slices[pid] + 1 - end, slices[pid] + 1 - start
    boxes["patient_id"] = boxes.patient_id.map(ids)
    boxes.rename(columns=DUKE_BOX_COLUMNS).to_excel(source / DUKE_BOXES_FILE, index=False)
    sheet = _clinical_sheet(clinical.assign(patient_id=clinical.patient_id.map(ids)))
    sheet.to_excel(source / DUKE_CLINICAL_FILE, header=False, index=False)
    truth.insert(1, "simulated_patient_id", truth.patient_id)
    truth["patient_id"] = truth.patient_id.map(ids)
    truth.to_csv(source / "truth.csv", index=False)
    return {"patients": len(ids), "reversed": len(reversed_ids), "follow_ups": len(follow_ups)}


NIFTI_DIR = "nifti"
NIFTI_CLINICAL_FILE = "clinical_and_imaging_info.xlsx"
# canonical column -> the NIfTI collection's spreadsheet column
NIFTI_CLINICAL = {"patient_id": "patient_id", "institution": "dataset", "age": "age", "er": "er", "pr": "pr",
                  "stage": "clinical_stage", "lymph_node": "nodal_status", "longest_diameter_mm": "tumor_size_mm",
                  "regimen": "nac_regimen", "pcr": "pcr"}
# what the info JSON holds of the acquisition record (no phase-encoding steps, no percent sampling)
_NIFTI_ACQUISITION = {"field_strength": "field_strength_t", "repetition_time": "repetition_time_ms",
                      "echo_time": "echo_time_ms", "flip_angle": "flip_angle_deg",
                      "slice_thickness": "slice_thickness_mm", "bolus_volume": "bolus_volume_ml",
                      "contrast_agent": "contrast_agent", "scanner_manufacturer": "manufacturer"}
_BOX_AXES = {"y": "row", "x": "column", "z": "slice"}


def write_nifti_like(source: Path) -> dict[str, int]:
    """Convert the native source under ``source`` into a NIfTI collection in ``source/nifti``; return counts."""
    import SimpleITK as sitk

    from her2pcr.config import SeriesRules
    from her2pcr.dicom.discover import discover
    from her2pcr.dicom.exam import load_exam
    from her2pcr.dicom.series import select_dce_series

    out = source / NIFTI_DIR
    shutil.rmtree(out, ignore_errors=True)
    (out / "patient_info_files").mkdir(parents=True)
    clinical = pd.read_csv(source / "clinical.csv", dtype=str)
    boxes = pd.read_csv(source / "boxes.csv").set_index("patient_id")
    found = discover(source / "dicom")
    for pid, headers in found.files_by_patient.items():
        exam = load_exam(select_dce_series(headers, SeriesRules()).headers, pid)
        folder = out / "images" / pid
        folder.mkdir(parents=True)
        for k, volume in enumerate(exam.image):
            image = sitk.GetImageFromArray(volume)
            image.SetSpacing(exam.spacing_mm[::-1])
            image.SetOrigin(exam.origin_mm)
            image.SetDirection(exam.direction)
            sitk.WriteImage(image, str(folder / f"{pid}_{k:04d}.nii.gz"), useCompression=True)
        imaging = {key: exam.acquisition[name] for key, name in _NIFTI_ACQUISITION.items()}
        times = exam.phase_times_s
        imaging["acquisition_times"] = None if None in times else [float(t) for t in times]
        box = boxes.loc[pid]  # native boxes: 1-based inclusive
        bounding_box = {f"{axis}_{end}": int(box[f"{name}_{'start' if end == 'min' else 'end'}"]) - 1
                        for axis, name in _BOX_AXES.items() for end in ("min", "max")}
        info = {"patient_id": pid, "imaging_data": imaging, "primary_lesion": {"bounding_box": bounding_box}}
        (out / "patient_info_files" / f"{pid}.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    sheet = clinical[list(NIFTI_CLINICAL)].rename(columns=NIFTI_CLINICAL)
    for column in ("er", "pr", "nodal_status"):
        sheet[column] = sheet[column].map(_STATUS_CODES)
    sheet.to_excel(out / NIFTI_CLINICAL_FILE, index=False)
    return {"patients": len(found.files_by_patient)}

"""The series a real breast MRI study holds beside the dynamic ones, written into a simulated exam.

Ingest's series selection is tested on them: a three-plane localiser, an axial T2 fast spin echo, a T1 without
fat suppression on the DCE geometry, the scanner's first subtraction (post1 - pre, with the timing and contrast
tags of post1: the series that would pose as an extra phase) and its maximum intensity projection. Their pixels
are derived from the exam's own phases; what matters here is the header each one carries.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from her2pcr.config import ExtraSeriesName
from her2pcr.synth.dicom_writer import (
    _ds,
    _exam_template,
    _normal,
    _phase_template,
    _PhaseEncoder,
    _series_dir,
    exam_uid,
)
from her2pcr.synth.exam import ExamImages

EXTRA_SERIES: tuple[str, ...] = ExtraSeriesName.__args__  # type: ignore[attr-defined]
_AXIAL, _SAGITTAL, _CORONAL = (1, 0, 0, 0, 1, 0), (0, 1, 0, 0, 0, -1), (1, 0, 0, 0, 0, -1)


def _localizer(base: Dataset, exam: ExamImages, seed: int) -> tuple[Dataset, np.ndarray, list[tuple]]:
    ds = copy.deepcopy(base)
    ds.SeriesNumber, ds.SeriesDescription = 1, "3-plane loc"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SliceThickness = _ds(8.0)
    pre = exam.phases[0]
    middle = pre[pre.shape[0] // 2]
    centre = np.asarray(exam.acquisition.origin_mm, float)
    return ds, np.stack([middle] * 3), [(_AXIAL, centre), (_SAGITTAL, centre), (_CORONAL, centre)]


def _t2(base: Dataset, exam: ExamImages, seed: int) -> tuple[Dataset, np.ndarray, None]:
    ds = copy.deepcopy(base)
    ds.SeriesNumber, ds.SeriesDescription = 2, "ax t2 fse"
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "SK", "FS"
    ds.RepetitionTime, ds.EchoTime, ds.FlipAngle, ds.MRAcquisitionType = "4000", "90", "90", "2D"
    return ds, exam.phases[0], None


def _t1_non_fat_sat(base: Dataset, exam: ExamImages, seed: int) -> tuple[Dataset, np.ndarray, None]:
    """A T1 gradient echo on the DCE geometry without fat suppression: the series most easily taken for pre."""
    ds = copy.deepcopy(base)
    ds.SeriesNumber, ds.SeriesDescription = 20, "ax t1 non fs"
    ds.ScanOptions = ""
    ds.FlipAngle = _ds(exam.acquisition.flip_angle_deg + 10.0)
    return ds, exam.phases[0], None


def _subtraction_volume(exam: ExamImages) -> np.ndarray:
    pre, post = (p.astype(np.int32) for p in exam.phases[:2])
    return np.clip(post - pre, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _subtraction(base: Dataset, exam: ExamImages, seed: int) -> tuple[Dataset, np.ndarray, None]:
    """Derived from post1 - pre, keeping post1's timing and contrast tags, as scanners write it."""
    ds = _phase_template(base, exam, 1, seed)
    ds.SeriesNumber, ds.SeriesDescription = 30, "ax dyn 1st pass sub"
    ds.ImageType = ["DERIVED", "SECONDARY", "SUBTRACTION"]
    ds.pop("TemporalPositionIdentifier", None)
    ds.pop("NumberOfTemporalPositions", None)
    return ds, _subtraction_volume(exam), None


def _mip(base: Dataset, exam: ExamImages, seed: int) -> tuple[Dataset, np.ndarray, list[tuple]]:
    ds = copy.deepcopy(base)
    ds.SeriesNumber, ds.SeriesDescription = 31, "mip 1st pass sub"
    ds.ImageType = ["DERIVED", "SECONDARY", "MIP"]
    projection = _subtraction_volume(exam).max(axis=0, keepdims=True)
    acq = exam.acquisition
    middle = np.asarray(acq.origin_mm, float) + (exam.phases[0].shape[0] // 2) * acq.slice_thickness_mm \
        * _normal(acq.direction)
    return ds, projection, [(tuple(acq.direction[:6]), middle)]


_WRITERS: dict[str, Callable] = {"localizer": _localizer, "t2": _t2, "t1_non_fat_sat": _t1_non_fat_sat,
                                 "subtraction": _subtraction, "mip": _mip}


def write_extra_series(exam: ExamImages, root: Path, seed: int, kinds: tuple[str, ...] | list[str]) -> list[Path]:
    """Write each of ``kinds`` (see :data:`EXTRA_SERIES`) into the exam's study; return the paths written.

    Each series has UIDs of its own and, unless the writer gives explicit slice geometry, the DCE geometry.
    """
    acq, pid = exam.acquisition, exam.identity.patient_id
    base = _exam_template(exam, seed)
    written: list[Path] = []
    for kind in kinds:
        template, volume, geometry = _WRITERS[kind](base, exam, seed)
        template.SeriesInstanceUID = exam_uid(seed, pid, "series", f"extra-{kind}")
        template.ProtocolName = template.SeriesDescription
        if geometry is None:  # the DCE slices
            origin, normal = np.asarray(acq.origin_mm, float), _normal(acq.direction)
            geometry = [(tuple(acq.direction[:6]), origin + k * acq.slice_thickness_mm * normal)
                        for k in range(volume.shape[0])]
        folder = _series_dir(root, exam, template)
        folder.mkdir(parents=True, exist_ok=True)
        encoders: dict[tuple, _PhaseEncoder] = {}  # one per orientation: constant elements encoded once
        for k, ((orientation, position), pixels) in enumerate(zip(geometry, volume, strict=True)):
            if orientation not in encoders:
                oriented = copy.deepcopy(template)
                oriented.ImageOrientationPatient = [_ds(v) for v in orientation]
                encoders[orientation] = _PhaseEncoder(oriented)
            sop_uid = exam_uid(seed, pid, "extra", kind, k)
            name = f"{sop_uid}.dcm" if acq.folder_layout == "flat" else f"IM{k + 1:05d}.dcm"
            location = float(np.dot(position, _normal(orientation)))
            encoders[orientation].write(folder / name, sop_uid, k + 1, "\\".join(_ds(v) for v in position),
                                        _ds(location), np.ascontiguousarray(pixels, dtype="<u2"))
            written.append(folder / name)
    return sorted(written)

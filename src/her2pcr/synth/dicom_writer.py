"""Write a rendered exam as scanner-like MR Image Storage DICOM files.

One file per slice per phase, Explicit VR Little Endian, in one of three
vendor layouts (see ``Acquisition.layout``) and two folder layouts.  Output is
a pure function of the inputs and ``seed``: no wall-clock time, no random
UIDs, so the same call writes byte-identical files.
"""

from __future__ import annotations

import copy
import re
import struct
import uuid
from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr, write_data_element
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from her2pcr.synth.exam import Acquisition, ExamImages

__all__ = [
    "GYROMAGNETIC_MHZ_PER_T",
    "dicom_time",
    "exam_uid",
    "phase_description",
    "write_exam",
]

GYROMAGNETIC_MHZ_PER_T = 42.577478  # 1H

_UID_NAMESPACE = uuid.UUID("6f1c2a52-8e0b-5d1e-9a37-4c1b0e2f9d11")  # fixed: UIDs stay stable
_SPONSOR = "HER2PCR SIMULATION CONSORTIUM"
_PROTOCOL_ID = "HER2PCR-NAC-01"
_PROTOCOL_NAME = "Breast DCE-MRI before neoadjuvant therapy in HER2+ cancer"
_TRIGGER_DESCRIPTION = "DYN T1 FS"
_MULTIPHASE_DESCRIPTION = "Ax Vibrant MultiPhase"
_FIRST_SERIES_NUMBER = 3  # series 1-2 would be the localiser and T2 on a real scanner
_LAYOUTS = ("per_phase_description", "per_phase_trigger", "multiphase")
_TIMING_TAGS = ("AcquisitionTime", "ContentTime", "TriggerTime")


def exam_uid(seed: int, patient_id: str, *parts: object) -> str:
    """Deterministic ``2.25.<uuid>`` UID (PS3.5 B.2) from seed, patient and a role."""
    name = "|".join([str(seed), patient_id, *map(str, parts)])
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def phase_description(index: int) -> str:
    """Series description of phase ``index`` in the per-phase-description layout."""
    return "ax dyn pre" if index == 0 else f"ax dyn {_ordinal(index)} pass"


def dicom_time(seconds: float) -> str:
    """Seconds after midnight as DICOM TM ``HHMMSS.FFFFFF`` (wraps past midnight)."""
    micro = round(seconds * 1e6) % (86400 * 10**6)
    s, us = divmod(micro, 10**6)
    return f"{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}.{us:06d}"


def _ds(x: float) -> str:
    """Decimal string of at most 16 chars, rounded so float noise never shows."""
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    s = "0" if s in ("-0", "") else s
    return s if len(s) <= 16 else f"{x:.10g}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _age(birth_date: str, study_date: str) -> str:
    years = int(study_date[:4]) - int(birth_date[:4])
    if study_date[4:8] < birth_date[4:8]:
        years -= 1
    return f"{max(years, 0):03d}Y"


def _window(phases: list[np.ndarray]) -> tuple[str, str]:
    """One VOI window for the whole exam (so enhancement is comparable), from a subsample."""
    sample = np.concatenate([p[::2, ::4, ::4].ravel() for p in phases])
    lo, hi = np.percentile(sample, [1.0, 99.5]) if sample.size else (0.0, 1.0)
    width = max(float(hi - lo), 1.0)
    return _ds(round(lo + width / 2)), _ds(round(width))


def _normal(direction: tuple[float, ...]) -> np.ndarray:
    row, col = np.asarray(direction[:3], float), np.asarray(direction[3:6], float)
    return np.cross(row, col)


def _fat_suppressed(acq: Acquisition) -> bool:
    """Fat saturation flag; follows the site table (conf/sites.yaml) until Acquisition carries it."""
    flag = getattr(acq, "fat_suppression", None)
    return bool(flag) if flag is not None else acq.layout != "per_phase_description"


def _validate(exam: ExamImages) -> None:
    acq = exam.acquisition
    if acq.layout not in _LAYOUTS:
        raise ValueError(f"unknown layout {acq.layout!r}")
    if acq.folder_layout not in ("nested", "flat"):
        raise ValueError(f"unknown folder_layout {acq.folder_layout!r}")
    if acq.timing_tag is not None and acq.timing_tag not in _TIMING_TAGS:
        raise ValueError(f"unknown timing_tag {acq.timing_tag!r}")
    if not exam.phases:
        raise ValueError("exam has no phases")
    if acq.timing_tag is not None and len(acq.phase_times_s) < len(exam.phases):
        raise ValueError("phase_times_s shorter than phases")
    for p, vol in enumerate(exam.phases):
        if vol.dtype != np.uint16:  # a silent cast would wrap or truncate intensities
            raise ValueError(f"phase {p} dtype {vol.dtype} is not uint16")
        if vol.ndim != 3 or vol.shape != exam.phases[0].shape:
            raise ValueError(f"phase {p} shape {vol.shape} differs from {exam.phases[0].shape} or is not 3-D")


def _exam_template(exam: ExamImages, seed: int) -> Dataset:
    """Elements shared by every image of the exam."""
    ident, acq = exam.identity, exam.acquisition
    ds = Dataset()
    names = [ident.patient_name, ident.mrn, ident.accession_number, acq.manufacturer, acq.site]
    if not all(n.isascii() for n in names):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = acq.study_date
    ds.SeriesDate = acq.study_date
    # Study and series times are the session start for every series: they
    # carry no per-phase timing, so "timing missing" stays missing.
    ds.StudyTime = dicom_time(acq.study_time_s)
    ds.SeriesTime = ds.StudyTime
    ds.AccessionNumber = ident.accession_number
    ds.Modality = "MR"
    ds.Manufacturer = acq.manufacturer
    ds.InstitutionName = acq.site
    ds.ReferringPhysicianName = ""
    ds.StationName = _slug(acq.site).upper()[:16] or "MR"
    ds.ManufacturerModelName = acq.model_name
    ds.PatientName = ident.patient_name
    ds.PatientID = ident.mrn
    ds.PatientBirthDate = ident.birth_date
    ds.PatientSex = ident.sex
    ds.PatientAge = _age(ident.birth_date, acq.study_date)
    ds.ClinicalTrialSponsorName = _SPONSOR
    ds.ClinicalTrialProtocolID = _PROTOCOL_ID
    ds.ClinicalTrialProtocolName = _PROTOCOL_NAME
    ds.ClinicalTrialSiteID = _slug(acq.site).upper()[:64]
    ds.ClinicalTrialSiteName = acq.site
    ds.ClinicalTrialSubjectID = ident.patient_id
    ds.BodyPartExamined = "BREAST"
    ds.ImageLaterality = "B"  # bilateral exam: satisfies the paired-body-part rule for Laterality
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = ["SP", "SS"]
    ds.ScanOptions = ["FS"] if _fat_suppressed(acq) else ""
    ds.MRAcquisitionType = "3D"
    ds.AngioFlag = "N"
    ds.SliceThickness = _ds(acq.slice_thickness_mm)
    ds.RepetitionTime = _ds(acq.repetition_time_ms)
    ds.EchoTime = _ds(acq.echo_time_ms)
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = _ds(GYROMAGNETIC_MHZ_PER_T * acq.field_strength_t)
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = _ds(acq.field_strength_t)
    ds.SpacingBetweenSlices = _ds(acq.slice_thickness_mm)
    ds.NumberOfPhaseEncodingSteps = str(int(acq.phase_encoding_steps))
    ds.EchoTrainLength = "1"
    ds.PercentSampling = _ds(acq.percent_sampling)
    ds.PercentPhaseFieldOfView = "100"
    ds.SoftwareVersions = "SIM1.0"
    ds.ReceiveCoilName = "BREAST"
    ds.TransmitCoilName = "BODY"
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.FlipAngle = _ds(acq.flip_angle_deg)
    ds.PatientPosition = "FFP"  # prone, feet first: usual for breast coils
    ds.StudyInstanceUID = exam_uid(seed, ident.patient_id, "study")
    ds.StudyID = "1"
    ds.FrameOfReferenceUID = exam_uid(seed, ident.patient_id, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [_ds(v) for v in acq.direction[:6]]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    rows, cols = exam.phases[0].shape[1:]
    ds.Rows, ds.Columns = int(rows), int(cols)
    ds.PixelSpacing = [_ds(acq.pixel_spacing_mm)] * 2
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = _window(exam.phases)
    ds.WindowCenterWidthExplanation = "DCE"
    ds.LossyImageCompression = "00"
    return ds


def _series_plan(acq: Acquisition, n_phases: int) -> list[tuple[int, str, int]]:
    """(series index, description, series number) for each phase."""
    if acq.layout == "multiphase":
        return [(0, _MULTIPHASE_DESCRIPTION, _FIRST_SERIES_NUMBER)] * n_phases
    if acq.layout == "per_phase_trigger":
        desc = [_TRIGGER_DESCRIPTION] * n_phases
    else:
        desc = [phase_description(p) for p in range(n_phases)]
    return [(p, desc[p], _FIRST_SERIES_NUMBER + p) for p in range(n_phases)]


def _phase_template(base: Dataset, exam: ExamImages, p: int, seed: int) -> Dataset:
    """Series- and phase-level elements: series identity, timing, contrast."""
    acq, pid = exam.acquisition, exam.identity.patient_id
    n = len(exam.phases)
    series_index, description, series_number = _series_plan(acq, n)[p]
    ds = copy.deepcopy(base)
    ds.SeriesInstanceUID = exam_uid(seed, pid, "series", series_index)
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.ProtocolName = description
    ds.AcquisitionNumber = 1
    timed = acq.timing_tag is not None
    offset_s = acq.phase_times_s[p] - acq.phase_times_s[0] if timed else 0.0
    if acq.timing_tag == "AcquisitionTime":
        ds.AcquisitionDate = acq.study_date
        ds.AcquisitionTime = dicom_time(acq.study_time_s + offset_s)
    elif acq.timing_tag == "ContentTime":
        ds.ContentDate = acq.study_date
        ds.ContentTime = dicom_time(acq.study_time_s + offset_s)
    elif acq.timing_tag == "TriggerTime":
        ds.TriggerTime = _ds(round(offset_s * 1000.0, 3))
        # PS3.3 C.8.3.1 allows Trigger Time only with CG or PPG scan options;
        # vendors that time DCE phases this way flag pulse gating, so do we.
        ds.ScanOptions = ["FS", "PPG"] if _fat_suppressed(acq) else "PPG"
    if acq.layout == "multiphase":
        # The index is not a time: it stays when timing is missing.
        ds.TemporalPositionIdentifier = p + 1
        ds.NumberOfTemporalPositions = n
        if timed and n > 1:
            # Time per temporal position: the post-phase spacing (the pre-to-first gap holds the injection).
            times = np.asarray(acq.phase_times_s[:n], float)
            steps = np.diff(times[1:] if n > 2 else times)
            ds.TemporalResolution = _ds(round(float(np.median(steps)) * 1000.0, 3))
    if p > 0:  # the Contrast/Bolus module belongs to post-contrast images only
        ds.ContrastBolusAgent = acq.contrast_agent
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = _ds(acq.bolus_volume_ml)
        if timed:
            ds.ContrastBolusStartTime = dicom_time(acq.study_time_s - acq.phase_times_s[0])
    return ds


def _series_dir(root: Path, exam: ExamImages, ds: Dataset) -> Path:
    patient_dir = root / exam.identity.patient_id
    if exam.acquisition.folder_layout == "flat":
        return patient_dir
    study = f"st{ds.StudyInstanceUID.replace('.', '')[-8:]}"
    return patient_dir / study / f"{ds.SeriesNumber}_{_slug(ds.SeriesDescription)}"


# Elements that differ between the slices of one phase, in tag order.
_SLICE_TAGS = (0x00080018, 0x00200013, 0x00200032, 0x00201041, 0x7FE00010)
_PREAMBLE = b"\x00" * 128 + b"DICM"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


class _PhaseEncoder:
    """Byte-level writer for the slices of one phase.

    pydicom spends ~40 us per element; re-encoding ~90 constant elements for
    every slice would blow the ~5 ms/file budget.  The constant elements are
    encoded once (by pydicom) into the byte runs between the per-slice tags,
    and each slice only encodes its few own elements.  Explicit VR Little
    Endian encodes every element independently, so the result equals what
    ``Dataset.save_as(enforce_file_format=True)`` writes (a test checks it).
    """

    def __init__(self, template: Dataset) -> None:
        clash = [t for t in _SLICE_TAGS if t in template]
        if clash:
            raise ValueError(f"per-slice tags in template: {clash}")
        correct_ambiguous_vr(template, True)
        encodings = template.get("SpecificCharacterSet") or None
        runs: list[list[DataElement]] = [[] for _ in range(len(_SLICE_TAGS) + 1)]
        for elem in template:
            runs[sum(elem.tag > t for t in _SLICE_TAGS)].append(elem)
        self._runs = [_encode(run, encodings) for run in runs]
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = template.SOPClassUID
        meta.MediaStorageSOPInstanceUID = "1.2"  # placeholder: validation only
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        validate_file_meta(meta, enforce_standard=True)  # adds Implementation*
        self._meta_before = _encode([meta[0x00020001], meta[0x00020002]], None)
        self._meta_after = _encode([e for e in meta if e.tag > 0x00020003], None)

    def write(self, path: Path, sop_uid: str, instance: int, ipp: str, location: str, pixels: np.ndarray) -> None:
        """Write one slice; ``pixels`` is a C-contiguous little-endian uint16 2-D array."""
        uid = sop_uid.encode("ascii")
        meta = self._meta_before + _element(0x00020003, b"UI", uid) + self._meta_after
        own = [
            _element(0x00080018, b"UI", uid),
            _element(0x00200013, b"IS", str(instance).encode("ascii")),
            _element(0x00200032, b"DS", ipp.encode("ascii")),
            _element(0x00201041, b"DS", location.encode("ascii")),
            _element(0x7FE00010, b"OW", b"", length=pixels.nbytes),
        ]
        parts = [_PREAMBLE, _element(0x00020000, b"UL", len(meta).to_bytes(4, "little")), meta]
        for run, elem in zip(self._runs[:-1], own, strict=True):
            parts += (run, elem)
        with open(path, "wb") as f:
            f.write(b"".join(parts))
            f.write(memoryview(pixels).cast("B"))  # Pixel Data value, without a copy
            f.write(self._runs[-1])  # elements after Pixel Data (none today)


def _element(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One Explicit VR Little Endian element (header only when ``length`` is given)."""
    if length is None and len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    n = len(value) if length is None else length
    if vr in _LONG_VRS:
        head = struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, n)
    else:
        head = struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, n)
    return head + value


def _encode(elements: list[DataElement], encodings: str | list[str] | None) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    for elem in elements:
        write_data_element(fp, elem, encodings)
    return fp.getvalue()


def write_exam(exam: ExamImages, root: Path, seed: int) -> list[Path]:
    """Write every slice of every phase of ``exam`` under ``root``; return the sorted paths.

    Paths hold only the pseudonymous ``patient_id`` and UIDs, never names,
    MRN or dates.  The same ``exam`` and ``seed`` give byte-identical files.
    """
    _validate(exam)
    acq, pid = exam.acquisition, exam.identity.patient_id
    root = Path(root)
    base = _exam_template(exam, seed)
    origin = np.asarray(acq.origin_mm, float)
    normal = _normal(acq.direction)
    n_slices = exam.phases[0].shape[0]
    # Per-slice geometry is the same for every phase: format it once.
    positions = [origin + k * acq.slice_thickness_mm * normal for k in range(n_slices)]
    ipp = ["\\".join(_ds(v) for v in pos) for pos in positions]
    locations = [_ds(float(pos @ normal)) for pos in positions]
    written: list[Path] = []
    for p, vol in enumerate(exam.phases):
        template = _phase_template(base, exam, p, seed)
        encoder = _PhaseEncoder(template)
        folder = _series_dir(root, exam, template)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.ascontiguousarray(vol, dtype="<u2")
        first_instance = p * n_slices if acq.layout == "multiphase" else 0
        for k in range(n_slices):
            instance = first_instance + k + 1
            sop_uid = exam_uid(seed, pid, "image", p, k)
            name = f"{sop_uid}.dcm" if acq.folder_layout == "flat" else f"IM{instance:05d}.dcm"
            path = folder / name
            encoder.write(path, sop_uid, instance, ipp[k], locations[k], pixels[k])
            written.append(path)
    return sorted(written)

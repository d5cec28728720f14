"""Find the DICOM files of a source tree and keep only the header values ingest needs.

De-identification happens here: a :class:`FileHeader` holds technical values
only (UIDs, geometry, timing, acquisition protocol).  Names, birth dates, MRNs
and accession numbers are never copied out of the pydicom dataset, so nothing
after :func:`discover` can leak them.
"""

from __future__ import annotations

import datetime
import functools
import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from tqdm import tqdm

from her2pcr.dicom.multiframe import frame_headers, is_multiframe

__all__ = ["Discovery", "FileHeader", "FileProblem", "discover", "discover_in_memory", "header_from_dataset",
           "headers_from_dataset", "tm_seconds"]

_PIXEL_DATA = Tag(0x7FE0, 0x0010)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_DEFER_BYTES = 1024  # pixel data is never loaded, only its length and offset are checked
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: an index, not an image


@dataclass(frozen=True)
class FileHeader:
    """Non-identifying header values of one image file.

    Times are converted once: ``acquisition_time_s`` and ``content_time_s``
    are seconds after midnight (DICOM TM), ``trigger_time_ms`` stays in ms as
    stored.  Missing or malformed values are None.
    """

    path: Path
    frame: int | None = None  # 0-based frame of a multi-frame (Enhanced MR) file; None for a single-frame one
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None
    study_description: str | None = None
    # StudyDate + StudyTime as seconds since 1970, only to tell a patient's studies apart in time (which one is
    # pre-treatment). A date is identifying: it is never written anywhere, only compared within one patient.
    study_start_s: float | None = None
    series_number: int | None = None
    series_description: str | None = None
    image_type: tuple[str, ...] | None = None  # upper case: ORIGINAL, PRIMARY, ... DERIVED, SUBTRACTION
    scanning_sequence: str | None = None  # multi-valued as stored: GR, SE, SE\\IR
    scan_options: str | None = None  # FS, PPG, ...
    modality: str | None = None
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    instance_number: int | None = None
    image_position_patient: tuple[float, ...] | None = None
    image_orientation_patient: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, ...] | None = None
    slice_thickness: float | None = None
    rows: int | None = None
    columns: int | None = None
    temporal_position_identifier: int | None = None
    acquisition_time_s: float | None = None
    content_time_s: float | None = None
    trigger_time_ms: float | None = None
    magnetic_field_strength: float | None = None
    repetition_time: float | None = None
    echo_time: float | None = None
    flip_angle: float | None = None
    number_of_phase_encoding_steps: int | None = None
    percent_sampling: float | None = None
    contrast_bolus_volume: float | None = None
    contrast_bolus_agent: str | None = None
    manufacturer: str | None = None
    # Pixel-module values: needed to decode and scale pixels without rereading headers.
    bits_allocated: int | None = None
    samples_per_pixel: int | None = None
    pixel_representation: int | None = None
    number_of_frames: int | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    transfer_syntax_uid: str | None = None


@dataclass(frozen=True)
class FileProblem:
    """A file that ingest skipped, and why."""

    path: Path
    patient_id: str | None
    reason: str


@dataclass
class Discovery:
    """Readable image headers grouped by pseudonymous patient id, and the files that were not."""

    files_by_patient: dict[str, list[FileHeader]] = field(default_factory=dict)
    problems: list[FileProblem] = field(default_factory=list)
    # discover_in_memory: each image's decoded pixels, or its dataset where they cannot be decoded (load_exam says)
    pixels: dict[Path, np.ndarray | Dataset] = field(default_factory=dict)


def tm_seconds(value: Any) -> float | None:
    """DICOM TM (``HHMMSS.FFFFFF``, partial, or ACR-NEMA ``HH:MM:SS``) as seconds after midnight."""
    text = str(value).strip().replace(":", "") if value is not None else ""
    if not text:
        return None
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) % 2 or len(whole) > 6 or (fraction and not fraction.isdigit()):
        return None
    hh, mm, ss = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    return hh * 3600 + mm * 60 + ss + (float(f"0.{fraction}") if fraction else 0.0)


def _text(value: Any) -> str | None:
    text = str(value).strip()
    return text or None


def _words(value: Any) -> str | None:
    """A multi-valued CS (e.g. ScanningSequence ``SE\\IR``) as upper-case text joined by backslashes."""
    values = [value] if isinstance(value, str | bytes) else list(value)
    return "\\".join(str(v).strip().upper() for v in values if str(v).strip()) or None


def _image_type(value: Any) -> tuple[str, ...] | None:
    text = _words(value)
    return tuple(text.split("\\")) if text else None


def _floats(value: Any) -> tuple[float, ...] | None:
    values = [value] if isinstance(value, str | bytes | int | float) else list(value)
    return tuple(float(v) for v in values) or None


# FileHeader field -> (DICOM keyword, converter).  Only these keywords are ever read.
_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "series_instance_uid": ("SeriesInstanceUID", _text),
    "study_instance_uid": ("StudyInstanceUID", _text),
    "study_description": ("StudyDescription", _text),
    "series_number": ("SeriesNumber", int),
    "series_description": ("SeriesDescription", _text),
    "image_type": ("ImageType", _image_type),
    "scanning_sequence": ("ScanningSequence", _words),
    "scan_options": ("ScanOptions", _words),
    "modality": ("Modality", _text),
    "sop_class_uid": ("SOPClassUID", _text),
    "sop_instance_uid": ("SOPInstanceUID", _text),
    "instance_number": ("InstanceNumber", int),
    "image_position_patient": ("ImagePositionPatient", _floats),
    "image_orientation_patient": ("ImageOrientationPatient", _floats),
    "pixel_spacing": ("PixelSpacing", _floats),
    "slice_thickness": ("SliceThickness", float),
    "rows": ("Rows", int),
    "columns": ("Columns", int),
    "temporal_position_identifier": ("TemporalPositionIdentifier", int),
    "acquisition_time_s": ("AcquisitionTime", tm_seconds),
    "content_time_s": ("ContentTime", tm_seconds),
    "trigger_time_ms": ("TriggerTime", float),
    "magnetic_field_strength": ("MagneticFieldStrength", float),
    "repetition_time": ("RepetitionTime", float),
    "echo_time": ("EchoTime", float),
    "flip_angle": ("FlipAngle", float),
    "number_of_phase_encoding_steps": ("NumberOfPhaseEncodingSteps", int),
    "percent_sampling": ("PercentSampling", float),
    "contrast_bolus_volume": ("ContrastBolusVolume", float),
    "contrast_bolus_agent": ("ContrastBolusAgent", _text),
    "manufacturer": ("Manufacturer", _text),
    "bits_allocated": ("BitsAllocated", int),
    "samples_per_pixel": ("SamplesPerPixel", int),
    "pixel_representation": ("PixelRepresentation", int),
    "number_of_frames": ("NumberOfFrames", int),
    "rescale_slope": ("RescaleSlope", float),
    "rescale_intercept": ("RescaleIntercept", float),
}


def _converted(raw: Any, convert: Callable[[Any], Any]) -> Any:
    # A malformed value (e.g. text in a DS) must not drop the whole file: it becomes None.
    try:
        if raw is None or (isinstance(raw, str | bytes) and not raw.strip()):
            return None
        return convert(raw)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None


@functools.cache
def _tag(keyword: str) -> BaseTag:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword!r} is not a DICOM keyword")
    return Tag(tag)


def _value(ds: Dataset, keyword: str, convert: Callable[[Any], Any]) -> Any:
    # By tag, not keyword: pydicom's keyword lookup costs a third of each read, ~40 per file
    try:
        element = ds.get(_tag(keyword))
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None
    return None if element is None else _converted(element.value, convert)


def _field_value(name: str, raw: Any) -> Any:
    return _converted(raw, _FIELDS[name][1])


def _study_start(ds: Dataset) -> float | None:
    date = _value(ds, "StudyDate", _text)
    if date is None:
        return None
    try:
        day = datetime.datetime.strptime(date[:8], "%Y%m%d").replace(tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return None
    return day + (_value(ds, "StudyTime", tm_seconds) or 0.0)


def header_from_dataset(path: Path, ds: Dataset) -> FileHeader:
    """The non-identifying :class:`FileHeader` of a dataset read from ``path``."""
    values = {name: _value(ds, keyword, convert) for name, (keyword, convert) in _FIELDS.items()}
    return FileHeader(path=Path(path), transfer_syntax_uid=_transfer_syntax(ds), study_start_s=_study_start(ds),
                      **values)


def headers_from_dataset(path: Path, ds: Dataset) -> list[FileHeader]:
    """The headers of a file: one, or one per frame of a multi-frame (Enhanced MR) image."""
    header = header_from_dataset(path, ds)
    return frame_headers(header, ds, _field_value) if is_multiframe(ds) else [header]


def _transfer_syntax(ds: Dataset) -> str | None:
    """The file's transfer syntax; for a file without meta header, the encoding the forced read found."""
    meta = getattr(ds, "file_meta", None)
    syntax = _text(meta.get("TransferSyntaxUID", "")) if meta is not None else None
    if syntax:
        return syntax
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return None
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _iter_files(root: Path) -> Iterator[Path]:
    """Every non-hidden regular file under ``root``, in a stable order, whatever its name."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _read(path: Path, data: bytes | None = None) -> Dataset:
    """Read a file's header, or the whole of ``data`` (the file's bytes, held in memory).

    From a path, pixel data is deferred, so only its offset and length are read.
    Without the 'DICM' preamble a second, forced read accepts only datasets that
    look like images, because a forced read "succeeds" on almost any bytes.
    """
    def source():
        return path if data is None else io.BytesIO(data)

    defer = _DEFER_BYTES if data is None else None
    try:
        return pydicom.dcmread(source(), defer_size=defer)
    except InvalidDicomError:
        pass
    try:
        ds = pydicom.dcmread(source(), defer_size=defer, force=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not DICOM" here
        raise InvalidDicomError("not a DICOM file") from exc
    if "SOPClassUID" not in ds or _PIXEL_DATA not in ds:
        raise InvalidDicomError("not a DICOM file")
    return ds


def _pixel_problem(ds: Dataset, size: int) -> str | None:
    """Why the pixel data cannot be whole, or None.

    pydicom silently returns a short Pixel Data value from a truncated file,
    so the declared length is checked against the image size and the file size.
    """
    elem = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    length = getattr(elem, "length", None)
    offset = getattr(elem, "value_tell", None)
    if length is None or offset is None or length == _UNDEFINED_LENGTH:
        return None  # encapsulated (compressed) data: its fragments were already parsed whole
    frames = _value(ds, "NumberOfFrames", int) or 1
    dims = [_value(ds, k, int) for k in ("Rows", "Columns", "BitsAllocated")]
    samples = _value(ds, "SamplesPerPixel", int) or 1
    if None in dims:
        return "unreadable DICOM (truncated?): Rows, Columns or BitsAllocated missing"
    rows, cols, bits = dims
    expected = (rows * cols * samples * frames * bits + 7) // 8
    if length < expected or offset + length > size:
        have = max(0, min(length, size - offset))
        return f"unreadable DICOM (truncated?): pixel data holds {have} of {expected} bytes"
    return None


def _inspect(path: Path, patient_tag: str, data: bytes | None = None,
             pixels: dict[Path, np.ndarray | Dataset] | None = None,
             ) -> tuple[str, list[FileHeader]] | FileProblem | None:
    """One file as (patient id, its headers), a problem, or None for a file to skip silently (DICOMDIR).

    ``data``: the file's bytes, read from memory instead of ``path``; the image's pixels then go into ``pixels``.
    """
    try:
        ds = _read(path, data)
    except InvalidDicomError:
        return FileProblem(path, None, "not a DICOM file")
    except Exception as exc:  # noqa: BLE001 - a broken file is a reported problem, never a crash
        return FileProblem(path, None, f"unreadable DICOM (truncated?): {_short(exc)}")
    meta = getattr(ds, "file_meta", None)
    if _MEDIA_DIRECTORY in (ds.get("SOPClassUID"), meta.get("MediaStorageSOPClassUID") if meta else None):
        return None
    patient = _value(ds, patient_tag, _text)
    if _PIXEL_DATA not in ds:
        return FileProblem(path, patient, f"no pixel data: not an image (SOP class {ds.get('SOPClassUID')})")
    try:
        pixel_problem = _pixel_problem(ds, path.stat().st_size if data is None else len(data))
    except Exception as exc:  # noqa: BLE001
        pixel_problem = f"unreadable DICOM (truncated?): {_short(exc)}"
    if pixel_problem:
        return FileProblem(path, patient, pixel_problem)
    if patient is None:
        return FileProblem(path, None, f"no {patient_tag} value in {path.name}")
    try:
        headers = headers_from_dataset(path, ds)
    except Exception as exc:  # noqa: BLE001 - malformed functional groups are this file's problem
        return FileProblem(path, patient, f"unreadable multi-frame functional groups: {_short(exc)}")
    if pixels is not None:
        pixels[path] = _decoded(ds, headers[0].transfer_syntax_uid)
    return patient, headers


def _short(exc: Exception) -> str:
    """Exception type and first line, bounded: enough to diagnose, never a value dump."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def discover(root: Path, patient_tag: str = "ClinicalTrialSubjectID", progress: bool = False) -> Discovery:
    """Walk ``root`` recursively and read every file's header.

    ``patient_tag`` holds the pseudonymous key (ClinicalTrialSubjectID here;
    PatientID for public collections whose PatientID is already a pseudonym).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"DICOM root {root} is not a folder")
    paths = list(_iter_files(root))
    return _grouped(_inspect(path, patient_tag) for path in tqdm(paths, desc="discover", unit="file",
                                                                 disable=not progress))


def discover_in_memory(files: Mapping[Path, bytes], patient_tag: str) -> Discovery:
    """:func:`discover` over files held in memory (a served request's zip members), each named by its key.

    Each image is read whole, once, and its pixels decoded into ``Discovery.pixels`` for
    :func:`~her2pcr.dicom.exam.load_exam`. Arrays, not datasets, are kept: thousands of live datasets would make
    Python's garbage collector rescan them all through the read (+30 % time, measured).
    """
    pixels: dict[Path, np.ndarray | Dataset] = {}
    found = _grouped(_inspect(Path(path), patient_tag, data, pixels) for path, data in files.items())
    found.pixels = pixels
    return found


def _decoded(ds: Dataset, transfer_syntax_uid: str | None) -> np.ndarray | Dataset:
    """A dataset's pixels as stored (frames, if several, first), or the dataset itself when they cannot be
    decoded: whether that matters is the exam loader's call (an unused series' pixels never do)."""
    # The transfer syntax is passed so files without a File Meta header decode too.
    options = {"transfer_syntax_uid": UID(transfer_syntax_uid)} if transfer_syntax_uid else {}
    try:
        return pixel_array(ds, **options)
    except Exception:  # noqa: BLE001 - load_exam decodes it again and reports the decoder's error
        return ds


def _grouped(results: Iterable[tuple[str, list[FileHeader]] | FileProblem | None]) -> Discovery:
    found = Discovery()
    for result in results:
        if isinstance(result, FileProblem):
            found.problems.append(result)
        elif result is not None:
            patient, headers = result
            found.files_by_patient.setdefault(patient, []).extend(headers)
    found.files_by_patient = dict(sorted(found.files_by_patient.items()))
    return found

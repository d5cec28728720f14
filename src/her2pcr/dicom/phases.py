"""Split one patient's image files into dynamic phases and put them in acquisition order.

Vendors store a DCE exam as one series per phase (ordered by timing tags or
by series number and description) or as one multi-phase series (ordered by
TemporalPositionIdentifier, or by time when that is absent).  Every rule that
orders an exam is named in :attr:`PhaseOrder.rule`, so a reader can tell an
exam ordered by real times from one ordered by series numbers.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.uid import UID

from her2pcr.dicom.discover import FileHeader
from her2pcr.dicom.multiframe import MULTIFRAME_MR_SOP_CLASSES

__all__ = [
    "MR_SOP_CLASSES",
    "ExamError",
    "PhaseError",
    "PhaseOrder",
    "description_rank",
    "order_phases",
    "slice_normal",
    "slice_position",
    "split_series",
]

# Single-frame MR images, and the frames of the multi-frame ones (discover gives each frame its own header).
MR_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.4", *MULTIFRAME_MR_SOP_CLASSES}
_TIME_TAGS = ("ContentTime", "TriggerTime", "AcquisitionTime")  # fallback order when ordering by time
_DAY_S = 86400.0
_POSITION_DECIMALS = 2  # 0.01 mm: far below any slice spacing, far above DS rounding


class ExamError(Exception):
    """An exam that cannot be loaded; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PhaseError(ExamError):
    """The files of an exam cannot be split into ordered, consistent phases."""


@dataclass
class PhaseOrder:
    """Phases in acquisition order (index 0 is pre-contrast), each sorted along the slice normal."""

    phases: list[list[FileHeader]]
    times_s: list[float | None]  # seconds after the pre-contrast phase; None when no timing tag
    rule: str  # TemporalPositionIdentifier | ContentTime | TriggerTime | AcquisitionTime | SeriesNumber+description
    timing_tag: str | None = None  # the tag the times came from
    warnings: list[str] = field(default_factory=list)


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of the slice plane: cross(row cosine, column cosine)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, col)
    return normal / np.linalg.norm(normal)


def slice_position(header: FileHeader, normal: np.ndarray) -> float:
    """Position of a slice along ``normal`` (mm), the only order that is geometric for every vendor."""
    return float(np.dot(np.asarray(header.image_position_patient, float), normal))


_PRE = re.compile(r"\bpre\b|\bpre[-_ ]?contrast|\bnative?\b|\bbaseline\b")
_ORDINAL = re.compile(r"\b(\d+)\s*(?:st|nd|rd|th)\b")
_POST_NUMBER = re.compile(r"\bpost(?:[-_ ]?contrast)?[-_ ]?(\d+)\b")


def description_rank(description: str | None) -> int | None:
    """Phase index a series description states: 0 for 'pre', n for '1st pass', 'post 2'...; else None."""
    text = (description or "").lower().replace("_", " ")
    if _PRE.search(text):
        return 0
    for pattern in (_ORDINAL, _POST_NUMBER):
        match = pattern.search(text)
        if match:
            return int(match.group(1))
    return None


def _tag_value(header: FileHeader, tag: str) -> float | None:
    """A timing tag in seconds (TM tags after midnight; TriggerTime relative)."""
    if tag == "TriggerTime":
        return None if header.trigger_time_ms is None else header.trigger_time_ms / 1000.0
    return header.content_time_s if tag == "ContentTime" else header.acquisition_time_s


def _phase_time(files: list[FileHeader], tag: str) -> float | None:
    """Start of a phase: the earliest time of its files (some vendors time every slice)."""
    values = [_tag_value(h, tag) for h in files]
    if not values or any(v is None for v in values):
        return None
    return min(v for v in values if v is not None)


def _unwrap_midnight(times: list[float], tag: str) -> list[float]:
    """Clock times of an exam that crosses midnight: move the after-midnight ones a day on."""
    if tag == "TriggerTime" or max(times) - min(times) <= _DAY_S / 2:
        return times
    return [t + _DAY_S if t < _DAY_S / 2 else t for t in times]


def _position_key(header: FileHeader, normal: np.ndarray) -> float:
    return round(slice_position(header, normal), _POSITION_DECIMALS)


def _series_label(files: list[FileHeader]) -> str:
    number = files[0].series_number
    return str(number) if number is not None else str(files[0].series_instance_uid)


def _check_images(headers: list[FileHeader]) -> None:
    """Only MR images (or frames of Enhanced MR images) with geometry can form a DCE exam."""
    modalities = sorted({h.modality or "unknown" for h in headers})
    classes = sorted({h.sop_class_uid or "unknown" for h in headers})
    if modalities != ["MR"] or any(c not in MR_SOP_CLASSES for c in classes):
        names = ", ".join(UID(c).name if c != "unknown" else c for c in classes)
        if modalities != ["MR"]:
            raise PhaseError(f"non-MR modality: {', '.join(modalities)} ({names})")
        raise PhaseError(f"unsupported MR SOP class: {names} (MR Image Storage or Enhanced MR Image Storage)")
    if any((h.number_of_frames or 1) > 1 and h.frame is None for h in headers):
        raise PhaseError("multi-frame MR images without per-frame functional groups")
    missing = [h for h in headers if h.image_position_patient is None or h.image_orientation_patient is None
               or h.pixel_spacing is None or h.rows is None or h.columns is None]
    if missing:
        raise PhaseError(f"{len(missing)} image(s) lack geometry (ImagePositionPatient, orientation, spacing, size)")
    studies = {h.study_instance_uid for h in headers}
    if len(studies) > 1:
        raise PhaseError(f"{len(studies)} studies for one patient: ingest one exam at a time")


def _split_by(files: list[FileHeader], key: Callable[[FileHeader], object]) -> list[list[FileHeader]]:
    groups: dict[object, list[FileHeader]] = defaultdict(list)
    for header in files:
        groups[key(header)].append(header)
    return [groups[k] for k in sorted(groups, key=lambda k: (k is None, k))]


def split_series(files: list[FileHeader]) -> list[list[FileHeader]]:
    """One series as one or several phases.

    Several TemporalPositionIdentifiers split it; otherwise repeated slice
    positions split by the first timing tag that gives each position once per
    group.  Anything else stays one phase (its duplicates are caught later).
    """
    temporal = {h.temporal_position_identifier for h in files}
    if len(temporal) > 1:
        return _split_by(files, lambda h: h.temporal_position_identifier)
    normal = slice_normal(files[0].image_orientation_patient or (1, 0, 0, 0, 1, 0))
    counts = Counter(_position_key(h, normal) for h in files)
    if max(counts.values()) == 1:
        return [files]
    for tag in _TIME_TAGS:
        if any(_tag_value(h, tag) is None for h in files):
            continue
        groups = _split_by(files, lambda h, tag=tag: _tag_value(h, tag))
        unique = all(len({_position_key(h, normal) for h in g}) == len(g) for g in groups)
        if len(groups) > 1 and unique:
            return groups
    repeats = set(counts.values())
    if len(repeats) == 1 and len(counts) > 1:
        raise PhaseError(f"cannot split series {_series_label(files)}: each slice position repeats "
                         f"{repeats.pop()} times and no TemporalPositionIdentifier or timing tag separates them")
    return [files]


def _sort_phase(files: list[FileHeader]) -> list[FileHeader]:
    """Sort a phase along its slice normal; reject mixed geometry and duplicated positions."""
    label = _series_label(files)
    orientation = np.asarray(files[0].image_orientation_patient, float)
    if any(not np.allclose(h.image_orientation_patient, orientation, atol=1e-4) for h in files):
        raise PhaseError(f"mixed slice orientations in series {label}")
    if len({(h.rows, h.columns, h.pixel_spacing) for h in files}) > 1:
        raise PhaseError(f"mixed image sizes or pixel spacings in series {label}")
    normal = slice_normal(orientation)
    counts = Counter(_position_key(h, normal) for h in files)
    repeated = sum(1 for n in counts.values() if n > 1)
    if repeated:
        raise PhaseError(f"duplicated slices: {repeated} repeated positions in series {label}")
    return sorted(files, key=lambda h: slice_position(h, normal))


def _single(values: set) -> object | None:
    return next(iter(values)) if len(values) == 1 else None


def _order_by_series(phases: list[list[FileHeader]], warnings: list[str]) -> list[list[FileHeader]]:
    """Order untimed phases by description ('pre', '1st pass', 'post 2'), else by series number."""
    ranks = [description_rank(p[0].series_description) for p in phases]
    numbers = [p[0].series_number for p in phases]
    by_number = None not in numbers and len(set(numbers)) == len(numbers)
    if None not in ranks and len(set(ranks)) == len(ranks):
        ordered = [p for _, p in sorted(zip(ranks, phases, strict=True), key=lambda x: x[0])]
        if by_number and [p[0].series_number for p in ordered] != sorted(numbers):  # type: ignore[type-var]
            warnings.append("series descriptions contradict series numbers; ordered by description")
        return ordered
    if not by_number:
        shared_numbers = sorted({str(n) for n in numbers})
        shared_text = sorted({p[0].series_description or "" for p in phases})
        raise PhaseError(
            f"cannot order phases: {len(phases)} phase series without TemporalPositionIdentifier or timing tags "
            f"share series number(s) {', '.join(shared_numbers)} and description(s) {shared_text}")
    ordered = sorted(phases, key=lambda p: p[0].series_number or 0)
    known = [r for r in (description_rank(p[0].series_description) for p in ordered) if r is not None]
    if known != sorted(known):
        warnings.append("series descriptions disagree with series-number order; ordered by series number")
    return ordered


def _order(phases: list[list[FileHeader]], warnings: list[str]) -> tuple[list[list[FileHeader]], str]:
    """Acquisition order and the rule that gave it."""
    temporal = [_single({h.temporal_position_identifier for h in p}) for p in phases]
    if None not in temporal and len(set(temporal)) == len(temporal):
        return [p for _, p in sorted(zip(temporal, phases, strict=True), key=lambda x: x[0])], \
            "TemporalPositionIdentifier"
    for tag in _TIME_TAGS:
        times = [_phase_time(p, tag) for p in phases]
        if None in times or len(set(times)) < len(times):
            continue  # a tag that is missing somewhere or ties two phases cannot order them
        unwrapped = _unwrap_midnight([t for t in times if t is not None], tag)
        return [p for _, p in sorted(zip(unwrapped, phases, strict=True), key=lambda x: x[0])], tag
    return _order_by_series(phases, warnings), "SeriesNumber+description"


def _times(phases: list[list[FileHeader]], rule: str, warnings: list[str]) -> tuple[list[float | None], str | None]:
    """Seconds after the pre-contrast phase, from the ordering tag or else the first complete timing tag."""
    tags = (rule,) if rule in _TIME_TAGS else _TIME_TAGS
    for tag in tags:
        times = [_phase_time(p, tag) for p in phases]
        if None in times or len(set(times)) < len(times):
            continue
        absolute = _unwrap_midnight([t for t in times if t is not None], tag)
        relative = [round(t - absolute[0], 6) for t in absolute]
        if any(b <= a for a, b in zip(relative, relative[1:], strict=False)):
            warnings.append(f"{tag} does not increase in {rule} order")
        return list(relative), tag
    return [None] * len(phases), None


def _cross_check_pre(phases: list[list[FileHeader]], warnings: list[str]) -> None:
    """The first phase should be the one that descriptions and contrast tags call pre-contrast."""
    ranks = [description_rank(p[0].series_description) for p in phases]
    if ranks[0] not in (None, 0):
        warnings.append(f"first phase's description {phases[0][0].series_description!r} does not say pre-contrast")
    if 0 in ranks[1:]:
        warnings.append(f"phase {ranks.index(0, 1)} is described as pre-contrast but is not first in order")
    bolus = [any(h.contrast_bolus_agent or h.contrast_bolus_volume for h in p) for p in phases]
    if bolus[0] and not all(bolus[1:]):
        warnings.append("the first phase carries contrast bolus tags that a later phase lacks")


def order_phases(headers: list[FileHeader]) -> PhaseOrder:
    """Group one patient's headers into phases, order them, and sort each along the slice normal.

    Raises :class:`PhaseError` for non-MR images, fewer than two phases,
    unorderable phases, duplicated slices or phases with different slice counts.
    """
    if not headers:
        raise PhaseError("no image files")
    _check_images(headers)
    series: dict[str | None, list[FileHeader]] = defaultdict(list)
    for header in headers:
        series[header.series_instance_uid].append(header)
    raw = [phase for files in series.values() for phase in split_series(files)]
    phases = [_sort_phase(p) for p in raw]
    if len(phases) < 2:
        raise PhaseError(f"missing post-contrast phase: only {len(phases)} phase(s)")
    warnings: list[str] = []
    ordered, rule = _order(phases, warnings)
    counts = [len(p) for p in ordered]
    if len(set(counts)) > 1:
        raise PhaseError(f"inconsistent slice count between phases: {counts}")
    times, tag = _times(ordered, rule, warnings)
    if tag is None:
        warnings.append(f"no timing tags: phase times unknown (ordered by {rule})")
    _cross_check_pre(ordered, warnings)
    return PhaseOrder(ordered, times, rule, tag, warnings)

"""Find the dynamic (DCE) series of an exam among everything else a breast MRI study holds.

A real study holds localisers, T2 and diffusion series, a T1 without fat suppression, and the scanner's own
subtractions and MIPs beside the dynamic series. A radiographer picks the dynamic T1 gradient-echo group: one
protocol, several time points. :func:`select_dce_series` does the same in two steps, after MONAI Deploy's series
selector (rules on header values, here in ``ingest.series``):

1. every series is matched against the rules (SOP class, ImageType exclusions such as DERIVED/SUBTRACTION/MIP,
   SeriesDescription regexes, ScanningSequence, echo and repetition time ranges, a minimum slice count);
2. the series left are grouped by acquisition protocol (sequence, scan options, TR, TE, flip angle, slice
   orientation); the group that holds several time points, as one multi-phase series or several single-phase
   series, is the dynamic group.

Every series left out is returned with its reason, for the quarantine report. An exam fails only when no group
remains, or when two groups each hold several time points and nothing tells them apart.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from pydicom.uid import UID

from her2pcr.config import SeriesRules
from her2pcr.dicom.discover import FileHeader
from her2pcr.dicom.phases import MR_SOP_CLASSES, PhaseError, slice_normal, split_series

__all__ = ["SeriesRules", "SeriesSelection", "SkippedSeries", "select_dce_series"]

# Scan options that flag gating, not the protocol: a vendor may set them on some phases only.
_GATING_OPTIONS = {"PPG", "CG", "RG"}


@dataclass(frozen=True)
class SkippedSeries:
    """A series left out of the exam, and why (one row of the quarantine report)."""

    label: str  # series number and description, as a reader finds the series in a viewer
    n_files: int
    folder: str  # where its files are
    reason: str


@dataclass
class SeriesSelection:
    headers: list[FileHeader]  # the files of the dynamic group
    used: list[str]  # labels of its series
    skipped: list[SkippedSeries] = field(default_factory=list)


def _label(files: list[FileHeader]) -> str:
    first = files[0]
    number = first.series_number if first.series_number is not None else "?"
    return f"series {number} '{first.series_description or ''}'"


def _n_files(files: list[FileHeader]) -> int:
    return len({h.path for h in files})  # an Enhanced MR file holds many frames


def _folder(files: list[FileHeader]) -> str:
    folders = sorted({str(h.path.parent) for h in files})
    return folders[0] if len(folders) == 1 else f"{folders[0]} (+{len(folders) - 1} folders)"


def _slice_count(files: list[FileHeader]) -> int:
    """Slice positions of one time point: distinct positions along the slice normal."""
    if files[0].image_orientation_patient is None or any(h.image_position_patient is None for h in files):
        return len(files)
    normal = slice_normal(files[0].image_orientation_patient)
    return len({round(float(np.dot(h.image_position_patient, normal)), 2) for h in files})


def rule_failure(files: list[FileHeader], rules: SeriesRules) -> str | None:
    """Why a series cannot be a DCE phase, or None when it can."""
    first = files[0]
    classes = {h.sop_class_uid for h in files}
    if not classes <= MR_SOP_CLASSES or len(classes) > 1 or {h.modality for h in files} != {"MR"}:
        names = ", ".join(sorted(UID(c).name if c else "unknown" for c in classes))
        modalities = ", ".join(sorted({h.modality or "unknown" for h in files}))
        return f"modality {modalities}, SOP class {names}: not MR Image Storage or Enhanced MR Image Storage"
    excluded = sorted({v for h in files for v in (h.image_type or ())} & set(rules.exclude_image_type))
    if excluded:
        return f"ImageType {'/'.join(excluded)}: not an acquired DCE image (ingest.series.exclude_image_type)"
    description = first.series_description or ""
    if rules.exclude_description and re.search(rules.exclude_description, description):
        return f"SeriesDescription {description!r} matches ingest.series.exclude_description"
    if rules.include_description and not re.search(rules.include_description, description):
        return f"SeriesDescription {description!r} does not match the DCE rule {rules.include_description!r}"
    sequence = first.scanning_sequence
    if sequence is not None and not set(sequence.split("\\")) & set(rules.scanning_sequences):
        return f"ScanningSequence {sequence} is not {'/'.join(rules.scanning_sequences)} (T1 gradient echo)"
    if first.echo_time is not None and first.echo_time > rules.max_echo_time_ms:
        return f"EchoTime {first.echo_time:g} ms over {rules.max_echo_time_ms:g} ms: not T1-weighted"
    if first.repetition_time is not None and first.repetition_time > rules.max_repetition_time_ms:
        return f"RepetitionTime {first.repetition_time:g} ms over {rules.max_repetition_time_ms:g} ms"
    orientations = {tuple(np.round(h.image_orientation_patient, 3)) for h in files
                    if h.image_orientation_patient is not None}
    if len(orientations) > 1:
        return f"{len(orientations)} slice orientations in one series (a localiser or a reformat)"
    slices = _slice_count(files)
    if slices < rules.min_slices:
        return f"{slices} slice position(s), fewer than {rules.min_slices}"
    return None


def _protocol(files: list[FileHeader]) -> tuple:
    """What the phases of one dynamic acquisition share: sequence, options, timing parameters, orientation."""
    first = files[0]
    options = tuple(sorted(set((first.scan_options or "").split("\\")) - _GATING_OPTIONS - {""}))
    normal = (tuple(np.round(slice_normal(first.image_orientation_patient), 2))
              if first.image_orientation_patient is not None else None)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return (first.scanning_sequence, options, rounded(first.repetition_time), rounded(first.echo_time),
            rounded(first.flip_angle), normal)


def _time_points(files: list[FileHeader]) -> int:
    try:
        return len(split_series(files))
    except PhaseError:
        return 1  # unsplittable repeats: the phase reader reports them


def _describe(group: list[list[FileHeader]]) -> str:
    labels = ", ".join(_label(s) for s in group)
    return f"[{labels}] ({sum(_time_points(s) for s in group)} time points)"


def _study_label(files: list[FileHeader]) -> str:
    return f"study '{files[0].study_description or ''}'"


def choose_study(headers: list[FileHeader], rules: SeriesRules) -> tuple[list[FileHeader], list[SkippedSeries]]:
    """A patient's one study by ``rules.study`` (earliest: the pre-treatment exam); every series of the others.

    The studies are ordered by StudyDate + StudyTime; a reason gives the gap in days, never a date.
    """
    by_study: dict[str | None, list[FileHeader]] = defaultdict(list)
    for header in headers:
        by_study[header.study_instance_uid].append(header)
    if len(by_study) == 1:
        return headers, []
    starts = {uid: min((h.study_start_s for h in files if h.study_start_s is not None), default=None)
              for uid, files in by_study.items()}
    if None in starts.values():
        raise PhaseError(f"{len(by_study)} studies for one patient and StudyDate missing in some: the "
                         f"{rules.study} study cannot be chosen")
    ordered = sorted(by_study, key=lambda uid: starts[uid])  # type: ignore[arg-type, return-value]
    chosen = ordered[0] if rules.study == "earliest" else ordered[-1]
    skipped = []
    for uid in ordered:
        if uid == chosen:
            continue
        days = (starts[uid] - starts[chosen]) / 86400.0  # type: ignore[operator]
        when = f"{abs(days):.0f} days {'after' if days > 0 else 'before'}"
        reason = (f"in {_study_label(by_study[uid])}, {when} the chosen {_study_label(by_study[chosen])}: "
                  f"not the {rules.study} study (ingest.series.study)")
        for files in _series_of(by_study[uid]):
            skipped.append(SkippedSeries(_label(files), _n_files(files), _folder(files), reason))
    return by_study[chosen], skipped


def _series_of(headers: list[FileHeader]) -> list[list[FileHeader]]:
    by_series: dict[str | None, list[FileHeader]] = defaultdict(list)
    for header in headers:
        by_series[header.series_instance_uid].append(header)
    return sorted(by_series.values(), key=lambda s: (s[0].series_number is None, s[0].series_number or 0,
                                                     str(s[0].series_instance_uid)))


def select_dce_series(headers: list[FileHeader], rules: SeriesRules) -> SeriesSelection:
    """The files of the exam's dynamic group, and every other series with the reason it was left out.

    A patient with several studies gets one, chosen by ``rules.study``; the others' series are skipped. Raises
    :class:`PhaseError` when no series passes the rules, or when several protocol groups each hold several time
    points (two dynamic acquisitions that the rules cannot tell apart).
    """
    headers, skipped = choose_study(headers, rules)
    groups: dict[tuple, list[list[FileHeader]]] = defaultdict(list)
    for files in _series_of(headers):
        reason = rule_failure(files, rules)
        if reason is None:
            groups[_protocol(files)].append(files)
        else:
            skipped.append(SkippedSeries(_label(files), _n_files(files), _folder(files), reason))
    if not groups:
        reasons = "; ".join(f"{s.label}: {s.reason}" for s in skipped)
        raise PhaseError(f"no DCE series: every series was left out ({reasons})")
    dynamic = [g for g in groups.values() if sum(_time_points(s) for s in g) > 1]
    if len(dynamic) > 1:
        raise PhaseError("two candidate DCE groups cannot be told apart: "
                         + " and ".join(_describe(g) for g in dynamic)
                         + "; set ingest.series rules (e.g. include_description) to choose one")
    if not dynamic and len(groups) > 1:
        raise PhaseError("no dynamic series group: no protocol holds several time points among "
                         + ", ".join(_describe(g) for g in groups.values()))
    chosen = dynamic[0] if dynamic else next(iter(groups.values()))  # one time point: the phase reader says so
    chosen_protocol, chosen_text = _protocol(chosen[0]), _describe(chosen)
    for protocol, group in groups.items():
        if protocol == chosen_protocol:
            continue
        for files in group:
            skipped.append(SkippedSeries(
                _label(files), _n_files(files), _folder(files),
                f"{_time_points(files)} time point(s) outside the dynamic group {chosen_text}: "
                f"{_protocol_difference(protocol, chosen_protocol)}"))
    return SeriesSelection([h for files in chosen for h in files], [_label(s) for s in chosen], skipped)


_PROTOCOL_FIELDS = ("ScanningSequence", "ScanOptions", "RepetitionTime", "EchoTime", "FlipAngle", "slice normal")


def _protocol_difference(protocol: tuple, reference: tuple) -> str:
    return ", ".join(f"{name} {a} vs {b}" for name, a, b in zip(_PROTOCOL_FIELDS, protocol, reference, strict=True)
                     if a != b)

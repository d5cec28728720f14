"""Enhanced (multi-frame) MR images as one :class:`FileHeader` per frame.

An Enhanced MR Image (or a Legacy Converted Enhanced MR Image) holds a whole series, often every phase of a
dynamic, in one file. Its geometry, timing and protocol sit in functional groups: per frame
(PerFrameFunctionalGroupsSequence) or shared by all frames (SharedFunctionalGroupsSequence). Each frame becomes
the header a single-frame file of the same slice would have, so series selection, phase splitting (by the
frame's TemporalPositionIndex) and ordering treat both storages alike. The per-frame times map onto the classic
tag: FrameAcquisitionDateTime -> AcquisitionTime; a legacy-converted file keeps the classic AcquisitionTime,
ContentTime, TriggerTime and TemporalPositionIdentifier in its unassigned converted attributes. The instance-level
ContentTime of a multi-frame object is when the object was made (a conversion, for a legacy-converted one),
never a phase's time, so it is not read.

Only the keywords below are read, as in :mod:`her2pcr.dicom.discover`: nothing identifying.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset

__all__ = ["MULTIFRAME_MR_SOP_CLASSES", "frame_headers", "is_multiframe"]

MULTIFRAME_MR_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
}
# The Enhanced MR Pulse Sequence module names the echo type where a classic image has ScanningSequence.
_ECHO_PULSE_SEQUENCE = {"GRADIENT": "GR", "SPIN": "SE", "BOTH": "SE\\GR"}
_FAT_SUPPRESSION = {"FAT", "FAT_AND_WATER", "SILICON_GEL"}  # SpectrallySelectedSuppression values


def is_multiframe(ds: Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds


def _item(group: Dataset | None, sequence: str) -> Dataset | None:
    value = group.get(sequence) if group is not None else None
    return value[0] if value else None


class _Frame:
    """Look a value up in one frame's functional groups, then the shared ones (PS3.3 C.7.6.16)."""

    def __init__(self, per_frame: Dataset, shared: Dataset | None) -> None:
        self.groups = (per_frame, shared)

    def get(self, sequence: str, keyword: str) -> Any:
        for group in self.groups:
            item = _item(group, sequence)
            if item is not None and item.get(keyword) not in (None, ""):
                return item.get(keyword)
        return None

    def unassigned(self, keyword: str) -> Any:
        """A classic attribute a legacy conversion left in the unassigned converted attribute sequences."""
        return _first(self.get("UnassignedPerFrameConvertedAttributesSequence", keyword),
                      self.get("UnassignedSharedConvertedAttributesSequence", keyword))


def _first(*values: Any) -> Any:
    """The first value that is present: a zero (the pre-contrast phase's trigger time) is a value."""
    return next((v for v in values if v is not None and v != ""), None)


def _time_of(datetime: Any) -> Any:
    """The time part of a DICOM DT (YYYYMMDDHHMMSS.FFFFFF[&ZZXX]), as TM text."""
    if datetime is None:
        return None
    text = str(datetime).strip().split("+")[0].split("-")[0]
    return text[8:] if len(text) > 8 else None


def _scan_options(ds: Dataset, frame: _Frame) -> Any:
    options = _first(ds.get("ScanOptions"), frame.unassigned("ScanOptions"))
    if options is not None:
        return options
    suppression = _first(ds.get("SpectrallySelectedSuppression"),
                         frame.get("MRModifierSequence", "SpectrallySelectedSuppression"))
    return "FS" if suppression in _FAT_SUPPRESSION else None


def _scanning_sequence(ds: Dataset, frame: _Frame) -> Any:
    return _first(ds.get("ScanningSequence"), frame.unassigned("ScanningSequence"),
                  _ECHO_PULSE_SEQUENCE.get(str(ds.get("EchoPulseSequence", "")).strip().upper()))


def _acquisition_time(frame: _Frame) -> Any:
    return _first(_time_of(frame.get("FrameContentSequence", "FrameAcquisitionDateTime")),
                  frame.unassigned("AcquisitionTime"))


def _bolus_volume(ds: Dataset, frame: _Frame) -> Any:
    agents = ds.get("ContrastBolusAgentSequence") or []
    return _first(ds.get("ContrastBolusVolume"), frame.unassigned("ContrastBolusVolume"),
                  *(a.get("ContrastBolusVolume") for a in agents))


def _bolus_agent(ds: Dataset, frame: _Frame) -> Any:
    agents = ds.get("ContrastBolusAgentSequence") or []
    return _first(ds.get("ContrastBolusAgent"), frame.unassigned("ContrastBolusAgent"),
                  *(a.get("CodeMeaning") for a in agents))


def _temporal_position(frame: _Frame) -> Any:
    return _first(frame.get("FrameContentSequence", "TemporalPositionIndex"),
                  frame.unassigned("TemporalPositionIdentifier"))


# FileHeader field -> how one frame's value is found (ds: the dataset, f: the frame's functional groups).
_FRAME_FIELDS: dict[str, Callable[[Dataset, _Frame], Any]] = {
    "image_type": lambda ds, f: _first(f.get("MRImageFrameTypeSequence", "FrameType"), ds.get("ImageType")),
    "scanning_sequence": _scanning_sequence,
    "scan_options": _scan_options,
    "image_position_patient": lambda ds, f: f.get("PlanePositionSequence", "ImagePositionPatient"),
    "image_orientation_patient": lambda ds, f: f.get("PlaneOrientationSequence", "ImageOrientationPatient"),
    "pixel_spacing": lambda ds, f: f.get("PixelMeasuresSequence", "PixelSpacing"),
    "slice_thickness": lambda ds, f: f.get("PixelMeasuresSequence", "SliceThickness"),
    "temporal_position_identifier": lambda ds, f: _temporal_position(f),
    "acquisition_time_s": lambda ds, f: _acquisition_time(f),
    "content_time_s": lambda ds, f: f.unassigned("ContentTime"),
    "trigger_time_ms": lambda ds, f: f.unassigned("TriggerTime"),
    "repetition_time": lambda ds, f: _first(f.get("MRTimingAndRelatedParametersSequence", "RepetitionTime"),
                                            f.unassigned("RepetitionTime")),
    "echo_time": lambda ds, f: _first(f.get("MREchoSequence", "EffectiveEchoTime"), f.unassigned("EchoTime")),
    "flip_angle": lambda ds, f: _first(f.get("MRTimingAndRelatedParametersSequence", "FlipAngle"),
                                       f.unassigned("FlipAngle")),
    "number_of_phase_encoding_steps": lambda ds, f: _first(
        f.get("MRFOVGeometrySequence", "MRAcquisitionPhaseEncodingStepsInPlane"),
        f.unassigned("NumberOfPhaseEncodingSteps")),
    "percent_sampling": lambda ds, f: _first(f.get("MRFOVGeometrySequence", "PercentSampling"),
                                             f.unassigned("PercentSampling")),
    "contrast_bolus_volume": _bolus_volume,
    "contrast_bolus_agent": _bolus_agent,
    "rescale_slope": lambda ds, f: f.get("PixelValueTransformationSequence", "RescaleSlope"),
    "rescale_intercept": lambda ds, f: f.get("PixelValueTransformationSequence", "RescaleIntercept"),
}


def frame_headers(header, ds: Dataset, convert: Callable[[str, Any], Any]) -> list:
    """One header per frame: ``header`` (the file's instance-level values) with each frame's own values.

    ``convert(field, raw)`` turns a raw DICOM value into the FileHeader field's type (None when malformed).
    """
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    frames = []
    for index, per_frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        frame = _Frame(per_frame, shared)
        values = {name: convert(name, find(ds, frame)) for name, find in _FRAME_FIELDS.items()}
        frames.append(dataclasses.replace(header, frame=index, **values))
    return frames


"""Write a rendered exam as Enhanced MR Image Storage: one multi-frame file per series.

The same series as the classic writer (:mod:`her2pcr.synth.dicom_writer`): same UIDs, numbers, descriptions,
pixels and timing, so an exam stored either way must ingest to the same interim exam. A multi-phase series
becomes one file whose frames carry their phase as TemporalPositionIndex; a per-phase series one file per
phase. Geometry, protocol and timing move into functional groups (PS3.3 C.7.6.16, C.8.13). The phase time,
whichever classic tag carries it (AcquisitionTime, ContentTime, or TriggerTime after the pre-contrast phase),
becomes the FrameAcquisitionDateTime (and FrameReferenceDateTime) of its frames, so ingest orders an Enhanced exam
by AcquisitionTime. An exam whose classic files are untimed gets no frame times and stays untimed; dciodvfy then
reports those Type 1C frame times missing, which is what such a file is.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian

from her2pcr.synth.dicom_writer import (
    _ds,
    _exam_template,
    _normal,
    _phase_template,
    _series_dir,
    dicom_time,
    exam_uid,
)
from her2pcr.synth.exam import Acquisition, ExamImages

__all__ = ["write_enhanced_exam"]

# Classic attributes whose content moves into functional groups or other modules of the Enhanced MR IOD.
_MOVED = ("ScanningSequence", "SequenceVariant", "ScanOptions", "SliceThickness", "RepetitionTime", "EchoTime",
          "NumberOfAverages", "ImagingFrequency", "ImagedNucleus", "EchoNumbers", "SpacingBetweenSlices",
          "NumberOfPhaseEncodingSteps", "EchoTrainLength", "PercentSampling", "PercentPhaseFieldOfView",
          "ReceiveCoilName", "TransmitCoilName", "InPlanePhaseEncodingDirection", "FlipAngle",
          "ImageOrientationPatient", "PixelSpacing", "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation",
          "AcquisitionDate", "AcquisitionTime", "ContentDate", "ContentTime", "TriggerTime",
          "TemporalPositionIdentifier", "NumberOfTemporalPositions", "TemporalResolution", "ContrastBolusAgent",
          "ContrastBolusRoute", "ContrastBolusVolume", "ContrastBolusStartTime", "ImageLaterality", "AngioFlag",
          "AcquisitionNumber", "ProtocolName")
_BREAST = ("76752008", "SCT", "Breast")
_IV_ROUTE = ("47625008", "SCT", "Intravenous route")
_LOCAL_SCHEME = "99HER2PCR"  # the simulated agents have no standard code: a private coding scheme names them


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _item(**values) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _one(**values) -> Sequence:
    return Sequence([_item(**values)])


def _shared_groups(classic: Dataset) -> Dataset:
    """The functional groups every frame of the series shares."""
    shared = Dataset()
    shared.PixelMeasuresSequence = _one(PixelSpacing=classic.PixelSpacing, SliceThickness=classic.SliceThickness,
                                        SpacingBetweenSlices=classic.SpacingBetweenSlices)
    shared.PlaneOrientationSequence = _one(ImageOrientationPatient=classic.ImageOrientationPatient)
    shared.FrameAnatomySequence = _one(AnatomicRegionSequence=Sequence([_code(*_BREAST)]), FrameLaterality="B")
    shared.PixelValueTransformationSequence = _one(RescaleIntercept="0", RescaleSlope="1", RescaleType="US")
    shared.FrameVOILUTSequence = _one(WindowCenter=classic.WindowCenter, WindowWidth=classic.WindowWidth,
                                      WindowCenterWidthExplanation=classic.WindowCenterWidthExplanation)
    shared.MRImageFrameTypeSequence = _one(FrameType=["ORIGINAL", "PRIMARY", "OTHER", "NONE"],
                                           PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
                                           VolumeBasedCalculationTechnique="NONE", ComplexImageComponent="MAGNITUDE",
                                           AcquisitionContrast="T1")
    shared.MRTimingAndRelatedParametersSequence = _one(
        RepetitionTime=classic.RepetitionTime, FlipAngle=classic.FlipAngle, EchoTrainLength=1,
        RFEchoTrainLength=0, GradientEchoTrainLength=1,
        OperatingModeSequence=Sequence([_item(OperatingModeType=t, OperatingMode="IEC_NORMAL")
                                        for t in ("STATIC FIELD", "RF", "GRADIENT")]),
        SpecificAbsorptionRateSequence=_one(SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                                            SpecificAbsorptionRateValue=0.5))
    shared.MRFOVGeometrySequence = _one(
        InPlanePhaseEncodingDirection=classic.InPlanePhaseEncodingDirection,
        MRAcquisitionFrequencyEncodingSteps=int(classic.Columns),
        MRAcquisitionPhaseEncodingStepsInPlane=int(classic.NumberOfPhaseEncodingSteps),
        MRAcquisitionPhaseEncodingStepsOutOfPlane=int(classic.get("NumberOfSlices", 1) or 1),
        PercentSampling=classic.PercentSampling, PercentPhaseFieldOfView=classic.PercentPhaseFieldOfView)
    shared.MREchoSequence = _one(EffectiveEchoTime=float(classic.EchoTime))
    shared.MRModifierSequence = _one(InversionRecovery="NO", FlowCompensation="NONE", T2Preparation="NO",
                                     SpectrallySelectedExcitation="NONE",
                                     SpatialPresaturation="NONE", PartialFourier="NO", ParallelAcquisition="NO")
    shared.MRImagingModifierSequence = _one(MagnetizationTransfer="NONE", BloodSignalNulling="NO", Tagging="NONE",
                                            TransmitterFrequency=float(classic.ImagingFrequency),
                                            PixelBandwidth=300.0)
    shared.MRReceiveCoilSequence = _one(ReceiveCoilName=classic.ReceiveCoilName, ReceiveCoilType="SURFACE",
                                        QuadratureReceiveCoil="NO", ReceiveCoilManufacturerName="")
    shared.MRTransmitCoilSequence = _one(TransmitCoilName=classic.TransmitCoilName, TransmitCoilType="BODY",
                                         TransmitCoilManufacturerName="")
    shared.MRAveragesSequence = _one(NumberOfAverages=float(classic.NumberOfAverages))
    return shared


def _frame_datetime(study_date: str, tm: str) -> str:
    return f"{study_date}{tm}"


def _phase_time(phase: Dataset, study_time_s: float) -> str | None:
    """The phase's time as TM, from whichever classic tag carries it (TriggerTime counts from the study start)."""
    for keyword in ("AcquisitionTime", "ContentTime"):
        if keyword in phase:
            return str(phase[keyword].value)
    if "TriggerTime" in phase:
        return dicom_time(study_time_s + float(phase.TriggerTime) / 1000.0)
    return None


def _per_frame(phase: Dataset, temporal_index: int | None, k: int, ipp: list[str], acq: Acquisition,
               duration_ms: float, contrast_module: bool) -> Dataset:
    """One frame's own groups: its position, its place in the dimensions, its time."""
    frame = Dataset()
    content = Dataset()
    content.StackID = "1"
    content.InStackPositionNumber = k + 1
    if temporal_index is not None:
        content.TemporalPositionIndex = temporal_index
        content.DimensionIndexValues = [temporal_index, k + 1]
    else:
        content.DimensionIndexValues = [k + 1]
    time = _phase_time(phase, acq.study_time_s)
    if time is not None:
        content.FrameAcquisitionDateTime = _frame_datetime(acq.study_date, time)
        content.FrameReferenceDateTime = content.FrameAcquisitionDateTime
        content.FrameAcquisitionDuration = duration_ms
    frame.FrameContentSequence = Sequence([content])
    frame.PlanePositionSequence = _one(ImagePositionPatient=ipp[k].split("\\"))
    if contrast_module:  # every frame says whether the agent was given yet (the pre-contrast frames: no)
        given = "YES" if "ContrastBolusAgent" in phase else "NO"
        frame.ContrastBolusUsageSequence = _one(ContrastBolusAgentNumber=1, ContrastBolusAgentAdministered=given,
                                                ContrastBolusAgentDetected=given)
    return frame


def _dimensions(ds: Dataset, temporal: bool) -> None:
    organisation = exam_uid(0, str(ds.SeriesInstanceUID), "dimension-organization")
    ds.DimensionOrganizationSequence = _one(DimensionOrganizationUID=organisation)
    pointers = [("TemporalPositionIndex", "FrameContentSequence")] if temporal else []
    pointers += [("InStackPositionNumber", "FrameContentSequence")]
    items = []
    for index, group in pointers:
        item = Dataset()
        item.DimensionOrganizationUID = organisation
        item.DimensionIndexPointer = index
        item.FunctionalGroupPointer = group
        items.append(item)
    ds.DimensionIndexSequence = Sequence(items)


def _contrast(ds: Dataset, classic: Dataset) -> None:
    """The Enhanced Contrast/Bolus module, from the classic post-contrast phase's values."""
    name = str(classic.ContrastBolusAgent)
    agent = _code(name.upper()[:16], _LOCAL_SCHEME, name)
    agent.ContrastBolusAgentNumber = 1
    agent.ContrastBolusAdministrationRouteSequence = Sequence([_code(*_IV_ROUTE)])
    agent.ContrastBolusIngredientCodeSequence = Sequence([_code("GADOLINIUM", _LOCAL_SCHEME, "Gadolinium")])
    agent.ContrastBolusVolume = classic.ContrastBolusVolume
    agent.ContrastBolusIngredientConcentration = 0.5
    agent.ContrastBolusIngredientOpaque = "NO"
    ds.ContrastBolusAgentSequence = Sequence([agent])


def _enhanced(series: list[Dataset], phases: list[int], exam: ExamImages, ipp: list[str], seed: int) -> Dataset:
    """One Enhanced MR instance for a series: its phases' frames, phase-major then slice."""
    acq = exam.acquisition
    first = series[0]
    ds = copy.deepcopy(first)
    contrast = next((p for p in series if "ContrastBolusAgent" in p), None)
    for keyword in _MOVED:
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = exam_uid(seed, exam.identity.patient_id, "enhanced", first.SeriesInstanceUID)
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER", "NONE"]
    ds.ContentDate, ds.ContentTime = acq.study_date, first.StudyTime
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = _frame_datetime(acq.study_date, first.StudyTime)
    ds.AcquisitionDuration = 0.0
    ds.ContentQualification = "PRODUCT"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.ImageComments = "simulated"
    ds.DeviceSerialNumber = "SIM0001"
    ds.PixelPresentation, ds.VolumetricProperties, ds.VolumeBasedCalculationTechnique = "MONOCHROME", "VOLUME", "NONE"
    ds.ComplexImageComponent, ds.AcquisitionContrast = "MAGNITUDE", "T1"
    ds.PresentationLUTShape = "IDENTITY"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.BitsStored, ds.HighBit = 16, 15
    # MR Pulse Sequence module: the classic ScanningSequence GR with spoiling is a spoiled gradient echo.
    ds.PulseSequenceName = "SIM_FL3D"
    ds.EchoPulseSequence = "GRADIENT"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "NO"
    ds.SaturationRecovery = "NO"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    ds.CoverageOfKSpace = "FULL"
    ds.NumberOfKSpaceTrajectories = 1
    ds.MRAcquisitionType = first.MRAcquisitionType
    ds.AcquisitionContextSequence = Sequence()
    if contrast is not None:
        _contrast(ds, contrast)
    temporal = "TemporalPositionIdentifier" in first
    options = first.get("ScanOptions") or []
    ds.SpectrallySelectedSuppression = "FAT" if "FS" in ([options] if isinstance(options, str) else options) else "NONE"
    ds.SharedFunctionalGroupsSequence = Sequence([_shared_groups(first)])
    # A 3-D gradient echo fills k-space in TR x phase steps x partitions.
    duration_ms = round(float(first.RepetitionTime) * int(first.NumberOfPhaseEncodingSteps) * len(ipp), 3)
    frames = []
    for phase in series:
        temporal_index = int(phase.TemporalPositionIdentifier) if temporal else None
        frames += [_per_frame(phase, temporal_index, k, ipp, acq, duration_ms, contrast is not None)
                   for k in range(len(ipp))]
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.NumberOfFrames = len(frames)
    _dimensions(ds, temporal)
    pixels = np.concatenate([np.ascontiguousarray(exam.phases[p], dtype="<u2") for p in phases])
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def write_enhanced_exam(exam: ExamImages, root: Path, seed: int) -> list[Path]:
    """Write ``exam`` as one Enhanced MR file per series under ``root``; return the sorted paths."""
    acq = exam.acquisition
    base = _exam_template(exam, seed)
    normal = _normal(acq.direction)
    origin = np.asarray(acq.origin_mm, float)
    n_slices = exam.phases[0].shape[0]
    ipp = ["\\".join(_ds(v) for v in origin + k * acq.slice_thickness_mm * normal) for k in range(n_slices)]
    by_series: dict[str, tuple[list[Dataset], list[int]]] = {}
    for p in range(len(exam.phases)):
        template = _phase_template(base, exam, p, seed)
        templates, phases = by_series.setdefault(template.SeriesInstanceUID, ([], []))
        templates.append(template)
        phases.append(p)
    written = []
    for templates, phases in by_series.values():
        ds = _enhanced(templates, phases, exam, ipp, seed)
        folder = _series_dir(root, exam, templates[0])
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return sorted(written)

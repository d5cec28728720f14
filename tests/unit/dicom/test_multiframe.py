"""Enhanced (multi-frame) MR images: one header per frame, values from the functional groups."""

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from her2pcr.config import SeriesRules
from her2pcr.dicom.discover import discover, discover_in_memory, headers_from_dataset
from her2pcr.dicom.exam import load_exam
from her2pcr.dicom.series import select_dce_series
from her2pcr.synth.dicom_writer import write_exam
from her2pcr.synth.enhanced_mr import write_enhanced_exam
from tests.unit.dicom.test_discover import in_memory
from tests.unit.synth.test_dicom_writer import CASES, N_SLICES, SEED, make_exam

RULES = SeriesRules(min_slices=N_SLICES)  # the writer tests' exams are thin


def _one(**values) -> Sequence:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return Sequence([item])


def test_each_frame_of_a_written_enhanced_exam_is_the_slice_of_its_phase(tmp_path):
    exam = make_exam("multiphase", "ContentTime", "nested")
    (path,) = write_enhanced_exam(exam, tmp_path, seed=SEED)
    ds = pydicom.dcmread(path)
    n_phases = len(exam.phases)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1" and int(ds.NumberOfFrames) == n_phases * N_SLICES
    headers = headers_from_dataset(path, ds)
    assert [h.frame for h in headers] == list(range(n_phases * N_SLICES))
    assert [h.temporal_position_identifier for h in headers] == [p + 1 for p in range(n_phases) for _ in
                                                                   range(N_SLICES)]
    acq = exam.acquisition
    offsets = np.array([h.acquisition_time_s for h in headers]) - headers[0].acquisition_time_s
    assert np.allclose(offsets[::N_SLICES], np.asarray(acq.phase_times_s) - acq.phase_times_s[0])
    first = headers[0]
    assert first.scanning_sequence == "GR" and first.scan_options == "FS"
    assert (first.repetition_time, first.echo_time, first.flip_angle) == (
        acq.repetition_time_ms, acq.echo_time_ms, acq.flip_angle_deg)
    assert first.image_type[:2] == ("ORIGINAL", "PRIMARY")
    assert first.content_time_s is None  # the instance's ContentTime is when the file was made, not a phase time
    assert headers[-1].contrast_bolus_agent == acq.contrast_agent
    assert headers[-1].contrast_bolus_volume == acq.bolus_volume_ml


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_an_enhanced_exam_loads_to_the_classic_exam(case, tmp_path):
    exam = make_exam(*case)
    write_exam(exam, tmp_path / "classic", seed=SEED)
    write_enhanced_exam(exam, tmp_path / "enhanced", seed=SEED)
    classic, enhanced = (discover(tmp_path / kind).files_by_patient for kind in ("classic", "enhanced"))
    (pid,) = classic
    a = load_exam(select_dce_series(classic[pid], RULES).headers, pid)
    b = load_exam(select_dce_series(enhanced[pid], RULES).headers, pid)
    assert np.array_equal(a.image, b.image) and a.image.dtype == b.image.dtype
    # the served model's path: the enhanced files read once, from memory
    files, _ = in_memory(tmp_path / "enhanced")
    found = discover_in_memory(files, patient_tag="ClinicalTrialSubjectID")
    served = load_exam(select_dce_series(found.files_by_patient[pid], RULES).headers, pid, found.pixels)
    assert np.array_equal(served.image, b.image) and served.image.dtype == b.image.dtype
    assert (a.spacing_mm, a.origin_mm, a.direction) == (b.spacing_mm, b.origin_mm, b.direction)
    assert a.phase_times_s == b.phase_times_s and a.acquisition == b.acquisition
    assert a.resampled_phases == b.resampled_phases == []
    # An Enhanced frame has one time, FrameAcquisitionDateTime, whichever classic tag timed the phase.
    timed_by_tag = a.order_rule in ("ContentTime", "TriggerTime", "AcquisitionTime")
    assert b.order_rule == ("AcquisitionTime" if timed_by_tag else a.order_rule)


def _legacy_converted() -> Dataset:
    """A Legacy Converted Enhanced MR image as highdicom writes one: classic values in the unassigned sequences."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.4"
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "MR", 4, 4, 2
    ds.ContentTime = "235959"  # the conversion, never a phase's time
    shared = Dataset()
    shared.PixelMeasuresSequence = _one(PixelSpacing=[1, 1], SliceThickness=2)
    shared.PlaneOrientationSequence = _one(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    shared.UnassignedSharedConvertedAttributesSequence = _one(ScanningSequence="GR", RepetitionTime=5, EchoTime=2,
                                                              FlipAngle=12)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in range(2):
        frame = Dataset()
        frame.PlanePositionSequence = _one(ImagePositionPatient=[0, 0, 2 * k])
        frame.FrameContentSequence = _one(InStackPositionNumber=k + 1)
        frame.UnassignedPerFrameConvertedAttributesSequence = _one(TriggerTime=0 if k == 0 else 60000,
                                                                   TemporalPositionIdentifier=k + 1)
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    return ds


def test_a_legacy_converted_image_gives_its_classic_values_per_frame(tmp_path):
    headers = headers_from_dataset(tmp_path / "legacy.dcm", _legacy_converted())
    assert [h.trigger_time_ms for h in headers] == [0.0, 60000.0]  # a zero trigger time is a time
    assert [h.temporal_position_identifier for h in headers] == [1, 2]
    assert {h.scanning_sequence for h in headers} == {"GR"} and {h.flip_angle for h in headers} == {12.0}
    assert [h.image_position_patient for h in headers] == [(0.0, 0.0, 0.0), (0.0, 0.0, 2.0)]
    assert {h.content_time_s for h in headers} == {None} and {h.pixel_spacing for h in headers} == {(1.0, 1.0)}

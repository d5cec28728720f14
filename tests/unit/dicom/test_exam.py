"""load_exam() on the simulated cohorts: phase order, geometry, acquisition record, faults, de-identification."""

import re
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from her2pcr.dicom.discover import FileHeader, discover, discover_in_memory
from her2pcr.dicom.exam import ExamError, LoadedExam, load_exam, phase_grid
from her2pcr.dicom.phases import PhaseError, order_phases
from tests.unit.dicom.test_discover import identifying_values, in_memory, leaked


def floats(text: str) -> list[float]:
    return [float(v) for v in str(text).split(";")]


@pytest.fixture(scope="module")
def tiny(tiny_cohort):
    """Discovery and loaded exams of the tiny cohort, timed once."""
    start = time.perf_counter()
    found = discover(tiny_cohort / "dicom")
    exams = {pid: load_exam(headers, pid) for pid, headers in found.files_by_patient.items()}
    seconds = time.perf_counter() - start
    print(f"\ndiscover + load of {len(exams)} tiny exams: {seconds:.2f} s")
    return found, exams


@pytest.fixture(scope="module")
def faults(fault_cohort):
    found = discover(fault_cohort / "dicom")
    outcomes: dict[str, LoadedExam | ExamError] = {}
    for pid, headers in found.files_by_patient.items():
        try:
            outcomes[pid] = load_exam(headers, pid)
        except ExamError as exc:
            outcomes[pid] = exc
    return found, outcomes


def oracle_phases(exam_dir: Path) -> list[np.ndarray]:
    """Each phase's raw pixels, grouped the way the simulator writes them (independent of ingest)."""
    groups = defaultdict(list)
    for path in sorted(exam_dir.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        key = (int(ds.SeriesNumber), int(ds.get("TemporalPositionIdentifier", 1)))
        groups[key].append((float(ds.ImagePositionPatient[2]), ds.pixel_array))
    return [np.stack([a for _, a in sorted(groups[k], key=lambda x: x[0])]) for k in sorted(groups)]


def test_every_layout_loads_in_the_true_phase_order(tiny_cohort, tiny):
    truth = pd.read_csv(tiny_cohort / "truth.csv").set_index("patient_id")
    boxes = pd.read_csv(tiny_cohort / "boxes.csv").set_index("patient_id")
    _, exams = tiny
    assert set(truth.acq_layout) == {"per_phase_description", "per_phase_trigger", "multiphase"}
    for pid, row in truth.iterrows():
        exam = exams[pid]
        assert exam.image.shape == (row.acq_n_post + 1, row.acq_slices, row.acq_matrix, row.acq_matrix), pid
        assert exam.image.dtype == np.uint16 and exam.resampled_phases == []
        np.testing.assert_array_equal(exam.image, np.stack(oracle_phases(tiny_cohort / "dicom" / pid)))
        box = boxes.loc[pid]  # 1-based, inclusive
        region = exam.image[:, box.slice_start - 1:box.slice_end, box.row_start - 1:box.row_end,
                            box.column_start - 1:box.column_end].astype(float)
        assert region[1].mean() > region[0].mean(), pid  # the tumour enhances: pre really is first
        timed = isinstance(row.acq_timing_tag, str)
        if row.acq_layout == "multiphase":
            assert exam.order_rule == "TemporalPositionIdentifier"
        else:
            assert exam.order_rule == (row.acq_timing_tag if timed else "SeriesNumber+description"), pid
        if timed:
            times = np.array(floats(row.acq_phase_times_s))
            np.testing.assert_allclose(exam.phase_times_s, times - times[0], atol=1.0)
        else:
            assert exam.phase_times_s == [None] * (row.acq_n_post + 1)
            assert any("no timing tags" in w for w in exam.warnings)
        assert exam.acquisition["timing_present"] is timed


def test_geometry_and_acquisition_record_equal_the_protocol(tiny_cohort, tiny):
    truth = pd.read_csv(tiny_cohort / "truth.csv").set_index("patient_id")
    _, exams = tiny
    for pid, row in truth.iterrows():
        exam, acq = exams[pid], exams[pid].acquisition
        np.testing.assert_allclose(exam.spacing_mm, (row.acq_slice_thickness_mm, row.acq_pixel_spacing_mm,
                                                     row.acq_pixel_spacing_mm), rtol=1e-6)
        np.testing.assert_allclose(exam.origin_mm, floats(row.acq_origin_mm), atol=1e-4)
        direction = floats(row.acq_direction)
        normal = np.cross(direction[:3], direction[3:6])
        np.testing.assert_allclose(np.reshape(exam.direction, (3, 3)),
                                   np.column_stack([direction[:3], direction[3:6], normal]), atol=1e-6)
        expected = {
            "field_strength_t": row.acq_field_strength_t, "repetition_time_ms": row.acq_repetition_time_ms,
            "echo_time_ms": row.acq_echo_time_ms, "flip_angle_deg": row.acq_flip_angle_deg,
            "pixel_spacing_mm": row.acq_pixel_spacing_mm, "slice_thickness_mm": row.acq_slice_thickness_mm,
            "phase_encoding_steps": row.acq_phase_encoding_steps, "percent_sampling": row.acq_percent_sampling,
            "bolus_volume_ml": row.acq_bolus_volume_ml, "n_post_phases": row.acq_n_post,
        }
        for key, value in expected.items():
            assert acq[key] == pytest.approx(float(value), abs=1e-3), (pid, key)
        assert acq["manufacturer"] == row.acq_manufacturer and acq["contrast_agent"] == row.acq_contrast_agent
        if isinstance(row.acq_timing_tag, str):
            posts = np.array(floats(row.acq_phase_times_s)[1:])
            assert acq["mean_time_between_phases_s"] == pytest.approx(np.diff(posts).mean(), abs=0.01)
        else:
            assert acq["mean_time_between_phases_s"] is None


@pytest.mark.parametrize(("fault", "reason"), [
    ("non_mr_modality", r"^non-MR modality: CT \(CT Image Storage\)$"),
    ("missing_post_contrast", r"^missing post-contrast phase: only 1 phase\(s\)$"),
    ("duplicated_slices", r"^duplicated slices: 1 repeated positions in series 4$"),
    ("missing_timing", r"^cannot order phases: 4 phase series without TemporalPositionIdentifier or timing tags"),
    ("truncated_file", r"^inconsistent slice count between phases"),  # after discover dropped the file
])
def test_each_image_fault_has_its_own_reason(fault_cohort, faults, fault, reason):
    table = pd.read_csv(fault_cohort / "faults.csv").set_index("fault")
    _, outcomes = faults
    outcome = outcomes[table.loc[fault, "patient_id"]]
    assert isinstance(outcome, PhaseError), (fault, outcome)
    assert re.search(reason, outcome.reason), outcome.reason


def test_a_phase_with_another_matrix_is_resampled_and_flagged(fault_cohort, faults):
    table = pd.read_csv(fault_cohort / "faults.csv").set_index("fault")
    found, outcomes = faults
    pid = table.loc["mismatched_matrix", "patient_id"]
    exam = outcomes[pid]
    assert isinstance(exam, LoadedExam)
    last = exam.image.shape[0] - 1
    assert exam.resampled_phases == [last] and exam.image.dtype == np.float32
    assert exam.image.shape[2:] == (48, 48) and any(f"phase {last} resampled" in w for w in exam.warnings)
    last_files = order_phases(found.files_by_patient[pid]).phases[last]
    small = np.stack([pydicom.dcmread(h.path).pixel_array for h in last_files])
    assert small.shape[1:] == (36, 36)
    assert exam.image[last].mean() == pytest.approx(small.mean(), rel=0.05)
    # Every other fault patient loads cleanly: their faults are in the manifests, not the images.
    image_faults = {"truncated_file", "non_mr_modality", "missing_post_contrast", "duplicated_slices", "missing_timing"}
    for pid, outcome in outcomes.items():
        fault = table.index[table.patient_id == pid]
        if not set(fault) & image_faults:
            assert isinstance(outcome, LoadedExam), (pid, outcome)


def test_nothing_returned_holds_an_identifying_value(tiny, faults):
    for found, results in (tiny, faults):
        for pid, headers in found.files_by_patient.items():
            values = identifying_values(headers[0].path)
            outcome = results[pid]
            texts = [repr(found.files_by_patient[pid]), repr(outcome), str(outcome)]
            if isinstance(outcome, LoadedExam):
                texts.append(repr(order_phases(headers)))
            assert leaked(" ".join(texts), values) == [], pid
        assert leaked(repr(found.problems), values) == []


def rewrite(files: list[Path], change) -> None:
    for path in files:
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)


def copy_exam(cohort: Path, pid: str, tmp_path: Path) -> Path:
    target = tmp_path / pid
    shutil.copytree(cohort / "dicom" / pid, target)
    return target


def test_rescaled_pixels_become_float32_scanner_units(fault_cohort, tmp_path):
    exam_dir = copy_exam(fault_cohort, "inst2-001", tmp_path)  # 5 phases x 12 slices of 48 x 48
    before = load_exam(discover(exam_dir).files_by_patient["inst2-001"], "inst2-001")

    def scale(ds):
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "2", "-10", "US"
    rewrite(sorted(exam_dir.rglob("*.dcm")), scale)
    after = load_exam(discover(exam_dir).files_by_patient["inst2-001"], "inst2-001")
    assert before.image.dtype == np.uint16 and after.image.dtype == np.float32
    np.testing.assert_allclose(after.image, before.image.astype(np.float32) * 2 - 10)


def test_a_shifted_phase_is_resampled_onto_the_pre_contrast_grid(fault_cohort, tmp_path):
    exam_dir = copy_exam(fault_cohort, "inst2-001", tmp_path)
    second = sorted(p for p in exam_dir.rglob("*.dcm") if "/4_" in p.as_posix())
    assert len(second) == 12

    def shift(ds):  # half a pixel along the rows: a real grid change
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [f"{x + float(ds.PixelSpacing[1]) / 2:.6f}", f"{y:.6f}", f"{z:.6f}"]
    rewrite(second, shift)
    exam = load_exam(discover(exam_dir).files_by_patient["inst2-001"], "inst2-001")
    assert exam.resampled_phases == [1] and exam.image.dtype == np.float32
    raw = np.stack([pydicom.dcmread(p).pixel_array for p in second]).astype(np.float32)
    # Linear resampling by half a voxel: interior voxels average their two neighbours.
    np.testing.assert_allclose(exam.image[1][:, :, 1:-1], (raw[:, :, :-2] + raw[:, :, 1:-1]) / 2, rtol=1e-5, atol=1e-2)


def test_missing_slices_make_irregular_spacing_an_error():
    headers = [FileHeader(path=Path(f"/x/{z}"), image_position_patient=(0.0, 0.0, z),
                          image_orientation_patient=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), pixel_spacing=(1.0, 1.0),
                          rows=4, columns=4) for z in (0.0, 2.0, 4.0, 8.0, 10.0)]
    with pytest.raises(ExamError, match="irregular slice spacing in phase 0"):
        phase_grid(headers)
    grid = phase_grid(headers[:3])
    assert grid.size == (3, 4, 4) and grid.spacing == (2.0, 1.0, 1.0) and grid.origin == (0.0, 0.0, 0.0)


def test_exams_discovered_in_memory_load_as_from_their_files(fault_cohort, faults):
    """The served model's path (zip members read once, pixels decoded while reading) loads every exam,
    resampled and rescaled ones included, exactly as ingest does from the files, and fails the same ones."""
    _, from_files = faults
    files, _ = in_memory(fault_cohort / "dicom")
    found = discover_in_memory(files, patient_tag="ClinicalTrialSubjectID")
    for pid, headers in found.files_by_patient.items():
        expected = from_files[pid]
        try:
            exam = load_exam(headers, pid, found.pixels)
        except ExamError as error:
            assert isinstance(expected, ExamError) and str(error) == str(expected), pid
            continue
        assert isinstance(expected, LoadedExam), (pid, exam)
        assert exam.image.dtype == expected.image.dtype and np.array_equal(exam.image, expected.image), pid
        assert (exam.spacing_mm, exam.warnings, exam.acquisition) == \
            (expected.spacing_mm, expected.warnings, expected.acquisition), pid

"""NIfTI collections: phase files by index, times and protocol from the info JSON, every gap said."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from her2pcr.config import NiftiLayout
from her2pcr.dicom.exam import ExamError
from her2pcr.ingest.nifti import discover_nifti, info_boxes, info_path, load_nifti_exam

LAYOUT = NiftiLayout()
SHAPE = (5, 8, 9)  # slices, rows, columns


def write_phase(path, array, spacing=(0.8, 0.7, 2.0), origin=(-10.0, -20.0, 5.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def collection(tmp_path, n=3, info=True, times=(10.0, 90.0, 170.0)):
    rng = np.random.default_rng(0)
    phases = [rng.integers(0, 1000, SHAPE, dtype=np.uint16) for _ in range(n)]
    for k, array in enumerate(phases):
        write_phase(tmp_path / "images" / "p1" / f"p1_{k:04d}.nii.gz", array)
    if info:
        path = info_path(tmp_path, LAYOUT, "p1")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"imaging_data": {"acquisition_times": list(times), "field_strength": 3.0,
                                                     "flip_angle": 12},
                                    "primary_lesion": {"bounding_box": {"x_min": 1, "x_max": 4, "y_min": 2,
                                                                        "y_max": 5, "z_min": 0, "z_max": 3}}}))
    return phases


def load(tmp_path):
    files = discover_nifti(tmp_path, LAYOUT).files_by_patient["p1"]
    return load_nifti_exam("p1", files, info_path(tmp_path, LAYOUT, "p1"), LAYOUT)


def test_phases_times_grid_and_box_come_from_the_files_and_the_info(tmp_path):
    phases = collection(tmp_path)
    exam = load(tmp_path)
    assert np.array_equal(exam.image, np.stack(phases)) and exam.image.dtype == np.uint16
    assert exam.spacing_mm == pytest.approx((2.0, 0.7, 0.8)) and exam.origin_mm == pytest.approx((-10, -20, 5))
    assert exam.phase_times_s == [0.0, 80.0, 160.0] and exam.order_rule == "file index"
    assert exam.acquisition["field_strength_t"] == 3.0 and exam.acquisition["n_post_phases"] == 2
    assert exam.acquisition["mean_time_between_phases_s"] == 80.0 and exam.acquisition["pixel_spacing_mm"] == 0.75
    assert exam.acquisition["echo_time_ms"] is None
    (flag,) = [w for w in exam.warnings if "left missing" in w]
    assert "echo_time_ms" in flag and "field_strength_t" not in flag
    boxes = info_boxes(tmp_path, LAYOUT, ["p1"])
    assert boxes.iloc[0].to_dict() == {"patient_id": "p1", "row_start": 2, "row_end": 5, "column_start": 1,
                                       "column_end": 4, "slice_start": 0, "slice_end": 3}


def test_without_an_info_file_the_exam_loads_untimed_and_says_so(tmp_path):
    collection(tmp_path, info=False)
    exam = load(tmp_path)
    assert exam.phase_times_s == [None, None, None] and exam.acquisition["timing_present"] is False
    assert any("no patient info file p1.json" in w for w in exam.warnings)
    assert info_boxes(tmp_path, LAYOUT, ["p1"]).iloc[0].drop("patient_id").isna().all()


def test_times_that_do_not_fit_the_files_are_unknown_not_guessed(tmp_path):
    collection(tmp_path, times=(0.0, 60.0))
    exam = load(tmp_path)
    assert exam.phase_times_s == [None, None, None]
    assert any("does not hold 3 numbers" in w for w in exam.warnings)


def test_a_phase_on_another_grid_is_resampled_and_flagged(tmp_path):
    collection(tmp_path)
    write_phase(tmp_path / "images" / "p1" / "p1_0002.nii.gz", np.ones(SHAPE, np.uint16), spacing=(0.8, 0.7, 2.5))
    exam = load(tmp_path)
    assert exam.resampled_phases == [2] and exam.image.dtype == np.float32
    assert any("phase 2 resampled" in w for w in exam.warnings)


@pytest.mark.parametrize(("change", "message"), [
    (lambda root: (root / "images" / "p1" / "p1_0001.nii.gz").unlink(), r"indices \[0, 2\] are not 0..1"),
    (lambda root: info_path(root, LAYOUT, "p1").write_text("{not json"), "p1.json is not valid JSON"),
    (lambda root: (root / "images" / "p1" / "p1_0001.nii.gz").write_bytes(b"broken"), "cannot read phase 1"),
])
def test_an_unusable_exam_is_refused_with_the_reason(tmp_path, change, message):
    collection(tmp_path)
    change(tmp_path)
    with pytest.raises(ExamError, match=message):
        load(tmp_path)


def test_a_four_dimensional_file_is_refused(tmp_path):
    collection(tmp_path)
    image = sitk.JoinSeries([sitk.GetImageFromArray(np.zeros(SHAPE, np.uint16))] * 2)
    sitk.WriteImage(image, str(tmp_path / "images" / "p1" / "p1_0001.nii.gz"))
    with pytest.raises(ExamError, match="not a 3-D scalar volume"):
        load(tmp_path)


def test_a_file_whose_name_carries_no_phase_index_is_a_reported_problem(tmp_path):
    collection(tmp_path)
    (tmp_path / "images" / "p1" / "p1_seg.nii.gz").write_bytes(b"")
    found = discover_nifti(tmp_path, LAYOUT)
    (problem,) = found.problems
    assert problem.patient_id == "p1" and "phase_pattern" in problem.reason
    assert len(found.files_by_patient["p1"]) == 3

"""The assembled synthetic cohorts: manifests, boxes, determinism, faults."""

import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from her2pcr.config import ALL_FAULTS
from her2pcr.synth.cohort import BOX_INDEX_BASE, simulate_cohorts
from tests.conftest import profile_simulate_params


def test_manifests_reconcile_with_params_and_images(tiny_cohort):
    params = profile_simulate_params("tiny", tiny_cohort)
    clinical = pd.read_csv(tiny_cohort / "clinical.csv")
    truth = pd.read_csv(tiny_cohort / "truth.csv")
    boxes = pd.read_csv(tiny_cohort / "boxes.csv")
    for site, size in params.cohorts.items():
        rows = clinical[clinical.institution == site]
        assert len(rows) == size.n and rows.pcr.sum() == size.n_pcr
    assert clinical.patient_id.is_unique
    assert set(clinical.patient_id) == set(truth.patient_id) == set(boxes.patient_id)
    exam_dirs = {p.name for p in (tiny_cohort / "dicom").iterdir()}
    assert exam_dirs == set(clinical.patient_id)
    assert (clinical.pcr == truth.set_index("patient_id").loc[clinical.patient_id, "pcr"].to_numpy()).all()


def test_boxes_contain_the_true_tumour_centroid(tiny_cohort):
    boxes = pd.read_csv(tiny_cohort / "boxes.csv").set_index("patient_id")
    truth = pd.read_csv(tiny_cohort / "truth.csv").set_index("patient_id")
    for pid, row in truth.iterrows():
        box = boxes.loc[pid]
        for axis in ("row", "column", "slice"):
            centre = row[f"centroid_{axis}"] + BOX_INDEX_BASE
            assert box[f"{axis}_start"] <= centre <= box[f"{axis}_end"], (pid, axis)
        assert box.row_end <= row.acq_matrix and box.slice_end <= row.acq_slices


def test_box_slices_follow_the_dicom_slice_order(tiny_cohort):
    """Slice k of the box is the k-th image along the slice normal of the first post-contrast phase."""
    truth = pd.read_csv(tiny_cohort / "truth.csv").set_index("patient_id")
    pid = truth.index[0]
    files = sorted((tiny_cohort / "dicom" / pid).rglob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    post1 = [h for h in headers if "1st pass" in str(h.get("SeriesDescription", ""))]
    z = sorted(float(h.ImagePositionPatient[2]) for h in post1)
    assert len(z) == truth.loc[pid, "acq_slices"]
    assert np.all(np.diff(z) > 0)


def test_fake_identity_is_in_the_dicom_and_the_pseudonym_is_the_subject_id(tiny_cohort):
    clinical = pd.read_csv(tiny_cohort / "clinical.csv")
    pid = clinical.patient_id.iloc[0]
    ds = pydicom.dcmread(next((tiny_cohort / "dicom" / pid).rglob("*.dcm")), stop_before_pixels=True)
    assert ds.ClinicalTrialSubjectID == pid
    assert ds.PatientID != pid and ds.PatientID.isdigit()
    assert "^" in str(ds.PatientName) and len(ds.PatientBirthDate) == 8


def test_same_params_and_seed_give_byte_identical_cohorts(tiny_cohort, tmp_path):
    params = profile_simulate_params("tiny", tmp_path, workers=1)
    simulate_cohorts(params, tmp_path, progress=False)
    first = sorted(p.relative_to(tiny_cohort) for p in tiny_cohort.rglob("*") if p.is_file())
    second = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert first == second
    match, mismatch, errors = filecmp.cmpfiles(tiny_cohort, tmp_path, [str(p) for p in first], shallow=False)
    assert not mismatch and not errors


def test_every_fault_is_injected_once_at_least(fault_cohort):
    faults = pd.read_csv(fault_cohort / "faults.csv")
    assert set(faults.fault) == set(ALL_FAULTS)
    clinical = pd.read_csv(fault_cohort / "clinical.csv", dtype={"pcr": "Int64", "age": "Int64"})
    boxes = pd.read_csv(fault_cohort / "boxes.csv")
    by_fault = faults.set_index("fault").patient_id
    exams = {p.name for p in (fault_cohort / "dicom").iterdir()}

    assert by_fault["manifest_without_images"] in set(clinical.patient_id) - exams
    assert by_fault["images_without_manifest"] in exams - set(clinical.patient_id)
    assert clinical.set_index("patient_id").loc[by_fault["missing_label"], "pcr"] is pd.NA
    assert clinical.set_index("patient_id").loc[by_fault["nan_clinical_value"], "age"] is pd.NA
    box = boxes.set_index("patient_id").loc[by_fault["box_outside_volume"]]
    assert box.row_end > 48

    def headers(fault):
        files = sorted((fault_cohort / "dicom" / by_fault[fault]).rglob("*.dcm"))
        return files, [pydicom.dcmread(f, stop_before_pixels=True, force=True) for f in files]

    files, _ = headers("truncated_file")
    truncated = Path(faults.set_index("fault").detail["truncated_file"])
    assert truncated.stat().st_size < min(f.stat().st_size for f in files if f != truncated)
    with open(faults.set_index("fault").detail["non_dicom_file"], "rb") as handle:
        assert handle.read(132)[128:132] != b"DICM"
    assert {h.Modality for h in headers("non_mr_modality")[1]} == {"CT"}
    assert {int(h.get("TemporalPositionIdentifier", 1)) for h in headers("missing_post_contrast")[1]} == {1}
    assert len({h.SeriesInstanceUID for h in headers("missing_post_contrast")[1]}) == 1
    assert len({(h.Rows, h.Columns) for h in headers("mismatched_matrix")[1]}) == 2
    _, dup = headers("duplicated_slices")
    positions = [(h.SeriesInstanceUID, tuple(h.ImagePositionPatient)) for h in dup]
    assert len(positions) == len(set(positions)) + 1
    _, unordered = headers("missing_timing")
    assert len({h.SeriesInstanceUID for h in unordered}) > 1
    assert len({h.SeriesNumber for h in unordered}) == 1 and len({h.SeriesDescription for h in unordered}) == 1
    assert not any(t in h for h in unordered for t in ("AcquisitionTime", "ContentTime", "TriggerTime"))


def test_a_rerun_reuses_unchanged_exams_and_a_new_site_leaves_the_others_as_they_were(tmp_path):
    from her2pcr.config import CohortSize

    out = tmp_path / "synthetic"
    small = {"inst1": CohortSize(n=2, n_pcr=1), "inst2": CohortSize(n=2, n_pcr=1)}
    params = profile_simulate_params("tiny", out, cohorts=small, matrix=32, slices=8, workers=1)
    first = simulate_cohorts(params, out, progress=False)
    assert first["rendered"] == 4 and first["reused"] == 0
    files = {p: p.stat().st_mtime_ns for p in (out / "dicom").rglob("*.dcm")}
    boxes = pd.read_csv(out / "boxes.csv")
    again = simulate_cohorts(params, out, progress=False)
    assert again["rendered"] == 0 and again["reused"] == 4
    assert {p: p.stat().st_mtime_ns for p in (out / "dicom").rglob("*.dcm")} == files  # not even rewritten
    pd.testing.assert_frame_equal(pd.read_csv(out / "boxes.csv"), boxes)

    wider = params.model_copy(update={"cohorts": {**small, "inst3": CohortSize(n=1, n_pcr=0)}})
    added = simulate_cohorts(wider, out, progress=False)
    assert added["rendered"] == 1 and added["reused"] == 4  # seeds follow the site's name, not its rank
    assert all(p.stat().st_mtime_ns == t for p, t in files.items())
    pd.testing.assert_frame_equal(pd.read_csv(out / "boxes.csv").iloc[:4], boxes)

    simulate_cohorts(params, out, progress=False)  # the site removed again: its exam leaves the source
    assert {p.name for p in (out / "dicom").iterdir()} == set(boxes.patient_id)

"""Ingest on the simulator's cohorts: faults quarantined with specific reasons, no identifying value leaks."""

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from her2pcr.ingest.stage import ingest
from tests.conftest import profile_params

pytestmark = pytest.mark.integration

# What each injected fault's quarantine reason must say.
EXPECTED_REASON = {
    "truncated_file": "truncated",
    "non_dicom_file": "not a DICOM file",
    "non_mr_modality": "CT",
    "missing_post_contrast": "missing post-contrast phase",
    "duplicated_slices": "duplicated slice",
    "missing_timing": "cannot order phases",
    "box_outside_volume": "box outside the volume",
    "manifest_without_images": "no DICOM images",
    "images_without_manifest": "no clinical row",
    "missing_label": "pcr label is missing",
    "nan_clinical_value": "age is missing",
    "mismatched_matrix": "resampled",
}


def ingest_params(profile: str, source: Path, out: Path, *more_profiles: str):
    params = profile_params(profile, *more_profiles)
    ingest_section = params.ingest.model_copy(update={
        "source_dir": source, "out_dir": out / "interim", "reports_dir": out / "reports" / "data-quality"})
    return ingest_section, params.cohorts


@pytest.fixture(scope="module")
def fault_ingest(fault_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest-faults")
    params, cohorts = ingest_params("faults", fault_cohort, out)
    report = ingest(params, cohorts, progress=False)
    return report, params


def test_every_fault_lands_in_the_quarantine_with_its_own_reason(fault_cohort, fault_ingest):
    report, params = fault_ingest
    quarantine = pd.read_csv(params.out_dir / "quarantine.csv", keep_default_na=False)
    faults = pd.read_csv(fault_cohort / "faults.csv")
    for row in faults.itertuples():
        rows = quarantine[quarantine.patient_id == row.patient_id]
        if row.fault == "non_dicom_file" or row.fault == "truncated_file":
            rows = pd.concat([rows, quarantine[quarantine.file == row.detail]])
        reasons = " | ".join(rows.reason)
        assert EXPECTED_REASON[row.fault].lower() in reasons.lower(), (row.fault, reasons)


def test_healthy_exams_are_ingested_and_counts_reconcile(fault_cohort, fault_ingest):
    report, params = fault_ingest
    faults = pd.read_csv(fault_cohort / "faults.csv")
    clinical = pd.read_csv(fault_cohort / "clinical.csv")
    broken = set(faults.patient_id) - {faults.set_index("fault").patient_id[f]
                                       for f in ("non_dicom_file", "mismatched_matrix")}
    healthy = set(clinical.patient_id) - broken
    assert healthy <= report.ingested
    assert report.discovered == report.ingested | report.excluded
    assert not report.ingested & report.excluded
    # workers wrote every loaded exam; those of patients excluded afterwards (box, tables) went with the staging
    assert {p.stem for p in (params.out_dir / "exams").glob("*.npz")} == report.ingested
    assert sorted(p.name for p in params.out_dir.iterdir() if p.name.startswith(".")) == []
    assert set(pd.read_parquet(params.out_dir / "clinical.parquet").patient_id) == report.ingested
    assert (params.reports_dir / "docs" / "index.html").exists()
    assert (params.reports_dir / "clinical.json").exists()


def test_layouts_ingest_to_the_true_phase_order(tiny_cohort, tmp_path):
    params, cohorts = ingest_params("tiny", tiny_cohort, tmp_path)
    report = ingest(params, cohorts, progress=False)
    truth = pd.read_csv(tiny_cohort / "truth.csv").set_index("patient_id")
    assert report.ingested == set(truth.index)
    for pid, row in truth.iterrows():
        exam = np.load(params.out_dir / "exams" / f"{pid}.npz")
        assert exam["image"].shape[0] == row.acq_n_post + 1
        true_times = np.array([float(t) for t in row.acq_phase_times_s.split(";")])
        if row.timing_present:
            np.testing.assert_allclose(exam["phase_times_s"], true_times - true_times[0], atol=1.0)
        # the tumour box brightens after contrast: the pre-contrast phase came first
        box = (slice(int(row.centroid_slice), int(row.centroid_slice) + 1),
               slice(int(row.centroid_row) - 2, int(row.centroid_row) + 3),
               slice(int(row.centroid_column) - 2, int(row.centroid_column) + 3))
        assert exam["image"][1][box].mean() > exam["image"][0][box].mean()


def test_no_identifying_value_leaves_ingest(tiny_cohort, tmp_path):
    params, cohorts = ingest_params("tiny", tiny_cohort, tmp_path)
    ingest(params, cohorts, progress=False)
    secrets = set()
    for path in list((tiny_cohort / "dicom").rglob("*.dcm"))[::25]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        secrets |= {str(ds.PatientName), ds.PatientBirthDate, ds.PatientID, ds.AccessionNumber,
                    str(ds.PatientName).split("^")[0]}
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".npz":
                data = b"".join(str(v).encode() for v in np.load(path).values() if v.dtype.kind in "UO")
            for secret in secrets:
                assert secret.encode() not in data, (path, secret)


# What the quarantine must say about each kind of extra series the simulator writes.
EXTRA_REASON = {"3-plane loc": "ImageType LOCALIZER", "ax t2 fse": "exclude_description",
                "ax t1 non fs": "outside the dynamic group", "ax dyn 1st pass sub": "ImageType DERIVED",
                "mip 1st pass sub": "ImageType DERIVED"}


def test_extra_series_are_skipped_with_reasons_and_the_exams_equal_the_clean_ones(tiny_cohort, extra_series_cohort,
                                                                                tmp_path):
    clean, clean_cohorts = ingest_params("tiny", tiny_cohort, tmp_path / "clean")
    extra, _ = ingest_params("tiny", extra_series_cohort, tmp_path / "extra")
    clean_report = ingest(clean, clean_cohorts, progress=False)
    report = ingest(extra, clean_cohorts, progress=False)
    assert report.ingested == clean_report.ingested == report.discovered
    for path in sorted((clean.out_dir / "exams").glob("*.npz")):
        a, b = np.load(path), np.load(extra.out_dir / "exams" / path.name)
        assert a.files == b.files
        for key in a.files:
            assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), (path.name, key)
    for table in ("clinical", "acquisition"):
        pd.testing.assert_frame_equal(pd.read_parquet(clean.out_dir / f"{table}.parquet"),
                                      pd.read_parquet(extra.out_dir / f"{table}.parquet"))
    quarantine = pd.read_csv(extra.out_dir / "quarantine.csv", keep_default_na=False)
    skipped = quarantine[quarantine.action == "series_skipped"]
    for pid in report.ingested:
        reasons = skipped[skipped.patient_id == pid].reason.tolist()
        assert len(reasons) == len(EXTRA_REASON), (pid, reasons)
        for description, reason in EXTRA_REASON.items():
            assert any(f"'{description}'" in r and reason in r for r in reasons), (pid, description, reasons)
        assert all(Path(f).exists() for f in skipped[skipped.patient_id == pid].file)
    # series reconcile: every discovered series is used or skipped
    assert report.series_discovered == clean_report.series_used + len(skipped)
    assert report.series_used == clean_report.series_used == clean_report.series_discovered
    assert f"{report.series_discovered} series = {report.series_used} used + {len(skipped)} skipped" \
        in report.summary()


def test_enhanced_mr_exams_ingest_to_the_interim_exams_of_their_classic_files(tiny_cohort, enhanced_cohort, tmp_path):
    classic, cohorts = ingest_params("tiny", tiny_cohort, tmp_path / "classic")
    enhanced, _ = ingest_params("tiny", enhanced_cohort, tmp_path / "enhanced")
    classic_report = ingest(classic, cohorts, progress=False)
    report = ingest(enhanced, cohorts, progress=False)
    assert report.ingested == classic_report.ingested == report.discovered
    assert report.series_used == classic_report.series_used == report.series_discovered
    assert len(list((enhanced_cohort / "dicom").rglob("*.dcm"))) == report.series_discovered  # a file per series
    for path in sorted((classic.out_dir / "exams").glob("*.npz")):
        a, b = np.load(path), np.load(enhanced.out_dir / "exams" / path.name)
        assert a.files == b.files
        for key in a.files:
            if key == "order_rule":  # an Enhanced frame has one time, FrameAcquisitionDateTime, whatever the tag
                timed = str(a[key]) in ("ContentTime", "TriggerTime", "AcquisitionTime")
                assert str(b[key]) == ("AcquisitionTime" if timed else str(a[key])), path.name
                continue
            assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), (path.name, key)
    for table in ("clinical", "acquisition"):
        pd.testing.assert_frame_equal(pd.read_parquet(classic.out_dir / f"{table}.parquet"),
                                      pd.read_parquet(enhanced.out_dir / f"{table}.parquet"))


def test_a_duke_like_collection_ingests_through_params_to_the_native_exams(duke_cohort, tmp_path):
    native, cohorts = ingest_params("tiny", duke_cohort, tmp_path / "native")
    duke, _ = ingest_params("tiny", duke_cohort, tmp_path / "duke", "duke")
    native_report = ingest(native, cohorts, progress=False)
    report = ingest(duke, cohorts, progress=False)
    truth = pd.read_csv(duke_cohort / "truth.csv")
    ids = dict(zip(truth.simulated_patient_id, truth.patient_id, strict=True))
    assert report.ingested == {ids[pid] for pid in native_report.ingested} == report.discovered
    for path in sorted((native.out_dir / "exams").glob("*.npz")):
        a, b = np.load(path), np.load(duke.out_dir / "exams" / f"{ids[path.stem]}.npz")
        for key in a.files:
            assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), (path.name, key)
    for table in ("clinical", "acquisition"):  # boxes included: the reversed patients' slices flipped back
        expected = pd.read_parquet(native.out_dir / f"{table}.parquet")
        expected["patient_id"] = expected.patient_id.map(ids)
        got = pd.read_parquet(duke.out_dir / f"{table}.parquet")
        pd.testing.assert_frame_equal(expected.sort_values("patient_id").reset_index(drop=True),
                                      got.sort_values("patient_id").reset_index(drop=True))
    quarantine = pd.read_csv(duke.out_dir / "quarantine.csv", keep_default_na=False)
    flipped = set(quarantine[quarantine.reason.str.contains("box slices flipped")].patient_id)
    ordered = sorted(ids.values())
    assert flipped == set(ordered[1::2])  # the collection writer reverses every other patient's z-order
    skipped = quarantine[quarantine.action == "series_skipped"]
    assert set(skipped.patient_id) == set(ordered[3::4])  # the patients with a follow-up study
    assert skipped.reason.str.contains("150 days after the chosen study .* not the earliest study").all()
    assert report.series_discovered == report.series_used + len(skipped)
    assert report.series_used == native_report.series_used


def test_a_duke_like_collection_leaks_no_identifying_value(duke_cohort, tmp_path):
    params, cohorts = ingest_params("tiny", duke_cohort, tmp_path, "duke")
    ingest(params, cohorts, progress=False)
    secrets = set()
    for path in list((duke_cohort / "Duke-Breast-Cancer-MRI").rglob("*.dcm"))[::25]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        secrets |= {str(ds.PatientName), ds.PatientBirthDate, ds.AccessionNumber, ds.StudyDate}
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix != ".npz":
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, (path, secret)


def test_a_nifti_collection_ingests_to_the_exams_of_its_dicom_and_flags_what_it_lacks(nifti_cohort, tmp_path):
    native, cohorts = ingest_params("tiny", nifti_cohort, tmp_path / "native")
    nifti, _ = ingest_params("tiny", nifti_cohort, tmp_path / "nifti", "nifti")
    nifti = nifti.model_copy(update={"source_dir": nifti_cohort / "nifti"})
    native_report = ingest(native, cohorts, progress=False)
    report = ingest(nifti, cohorts, progress=False)
    assert report.ingested == native_report.ingested == report.discovered
    assert report.series_discovered == report.series_used == len(list((nifti_cohort / "nifti").rglob("*.nii.gz")))
    for path in sorted((native.out_dir / "exams").glob("*.npz")):
        a, b = np.load(path), np.load(nifti.out_dir / "exams" / path.name)
        assert np.array_equal(a["image"], b["image"]) and a["image"].dtype == b["image"].dtype, path.name
        for key in ("spacing_mm", "origin_mm", "direction"):  # NIfTI stores the grid in float32
            assert np.allclose(a[key], b[key], rtol=0, atol=1e-4), (path.name, key)
        assert np.array_equal(a["phase_times_s"], b["phase_times_s"], equal_nan=True), path.name
        assert list(a["phase_names"]) == list(b["phase_names"]) and str(b["order_rule"]) == "file index"
    pd.testing.assert_frame_equal(pd.read_parquet(native.out_dir / "clinical.parquet"),
                                  pd.read_parquet(nifti.out_dir / "clinical.parquet"))
    expected = pd.read_parquet(native.out_dir / "acquisition.parquet")
    got = pd.read_parquet(nifti.out_dir / "acquisition.parquet")
    lacking = ["phase_encoding_steps", "percent_sampling"]  # not in the info files: missing, never invented
    assert got[lacking].isna().all().all()
    pd.testing.assert_frame_equal(expected.drop(columns=lacking), got.drop(columns=lacking), check_dtype=False)
    quarantine = pd.read_csv(nifti.out_dir / "quarantine.csv", keep_default_na=False)
    flags = quarantine[quarantine.reason.str.contains("acquisition values not in the patient info")]
    assert set(flags.patient_id) == report.ingested
    assert flags.reason.str.endswith("(left missing): percent_sampling, phase_encoding_steps").all()

"""discover(): walking any layout, file-level problems, and de-identified headers."""

import dataclasses
import re
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from her2pcr.dicom.discover import FileHeader, discover, tm_seconds

IDENTIFYING = ("PatientName", "PatientBirthDate", "PatientID", "AccessionNumber")


def a_file(cohort: Path) -> Path:
    return next(p for p in sorted((cohort / "dicom").rglob("*")) if p.is_file())


def test_every_tiny_exam_is_found_without_problems(tiny_cohort):
    truth = pd.read_csv(tiny_cohort / "truth.csv").set_index("patient_id")
    found = discover(tiny_cohort / "dicom")
    assert found.problems == []
    assert list(found.files_by_patient) == sorted(truth.index)
    for pid, headers in found.files_by_patient.items():
        row = truth.loc[pid]
        assert len(headers) == (row.acq_n_post + 1) * row.acq_slices, pid
        assert {h.modality for h in headers} == {"MR"}


def test_file_headers_hold_no_identifying_field():
    names = {f.name for f in dataclasses.fields(FileHeader)}
    assert not names & {"patient_name", "patient_birth_date", "patient_id", "accession_number",
                        "study_date", "institution_name"}


def test_truncated_and_non_dicom_files_are_reported_by_path(fault_cohort):
    faults = pd.read_csv(fault_cohort / "faults.csv").set_index("fault")
    found = discover(fault_cohort / "dicom")
    problems = {str(p.path): p for p in found.problems}
    truncated = problems[faults.loc["truncated_file", "detail"]]
    assert truncated.reason.startswith("unreadable DICOM (truncated?): ")
    assert truncated.patient_id == faults.loc["truncated_file", "patient_id"]
    assert problems[faults.loc["non_dicom_file", "detail"]].reason == "not a DICOM file"
    assert len(found.problems) == 2
    # The readable files of those patients are still there for the exam loader to judge.
    assert "inst1-901" in found.files_by_patient and "inst1-902" in found.files_by_patient


def test_odd_names_hidden_files_missing_keys_and_short_pixels(tiny_cohort, tmp_path):
    source = a_file(tiny_cohort)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    shutil.copyfile(source, tmp_path / "deep" / "er" / "NOEXTENSION")
    shutil.copyfile(source, tmp_path / ".hidden.dcm")
    (tmp_path / ".git").mkdir()
    shutil.copyfile(source, tmp_path / ".git" / "inside_hidden_folder")
    ds = pydicom.dcmread(source)
    del ds.ClinicalTrialSubjectID
    ds.save_as(tmp_path / "keyless.dcm")
    short = tmp_path / "short.dcm"
    short.write_bytes(source.read_bytes()[:-2])  # two bytes of pixel data missing
    found = discover(tmp_path)
    assert [h.path.name for hs in found.files_by_patient.values() for h in hs] == ["NOEXTENSION"]
    reasons = {p.path.name: p.reason for p in found.problems}
    assert reasons["keyless.dcm"] == "no ClinicalTrialSubjectID value in keyless.dcm"
    assert reasons["short.dcm"].startswith("unreadable DICOM (truncated?): pixel data holds")
    assert set(reasons) == {"keyless.dcm", "short.dcm"}


def test_patient_tag_selects_the_key_and_preamble_less_files_are_read(tiny_cohort, tmp_path):
    ds = pydicom.dcmread(a_file(tiny_cohort))
    ds.PatientID = "PUBLIC-0001"  # a public collection: PatientID already pseudonymous
    ds.preamble = None
    del ds.file_meta
    pydicom.dcmwrite(tmp_path / "raw", ds, enforce_file_format=False, implicit_vr=False, little_endian=True)
    (tmp_path / "notes.txt").write_text("scanner export log\n")
    found = discover(tmp_path, patient_tag="PatientID")
    [header] = found.files_by_patient["PUBLIC-0001"]
    assert header.transfer_syntax_uid == pydicom.uid.ExplicitVRLittleEndian
    assert [(p.path.name, p.reason) for p in found.problems] == [("notes.txt", "not a DICOM file")]


def identifying_values(path: Path) -> list[str]:
    """The fake identifying values of a raw file, name parts included."""
    raw = pydicom.dcmread(path, stop_before_pixels=True)
    values = [str(raw.get(keyword, "")).strip() for keyword in IDENTIFYING]
    assert all(values), "the simulator writes every identifying tag"
    return values + [part for part in values[0].split("^") if len(part) >= 3]


def leaked(text: str, values: list[str]) -> list[str]:
    """Values that appear in ``text`` as whole tokens (a digit run inside a UID is no leak)."""
    return [v for v in values if re.search(rf"(?<![0-9A-Za-z]){re.escape(v)}(?![0-9A-Za-z])", text)]


def test_discovery_repr_holds_no_identifying_value(tiny_cohort):
    found = discover(tiny_cohort / "dicom")
    text = repr(found)
    assert "inst1-001" in text  # sanity: the repr does show the pseudonym
    for headers in found.files_by_patient.values():
        assert leaked(text, identifying_values(headers[0].path)) == []


@pytest.mark.parametrize(("text", "seconds"), [
    ("163557.000000", 59757.0), ("0930", 34200.0), ("23", 82800.0), ("10:15:30.5", 36930.5), ("", None),
    ("garbage", None), ("1234567", None),
])
def test_tm_seconds_parses_dicom_times(text, seconds):
    assert tm_seconds(text) == seconds


def test_series_selection_values_are_read_multi_valued(tmp_path):
    from her2pcr.dicom.discover import header_from_dataset

    ds = pydicom.Dataset()
    ds.ImageType, ds.ScanningSequence, ds.ScanOptions = ["DERIVED", "SECONDARY", "SUBTRACTION"], ["SE", "IR"], "FS"
    header = header_from_dataset(tmp_path / "x.dcm", ds)
    assert header.image_type == ("DERIVED", "SECONDARY", "SUBTRACTION")
    assert header.scanning_sequence == "SE\\IR" and header.scan_options == "FS"
    empty = header_from_dataset(tmp_path / "y.dcm", pydicom.Dataset())
    assert empty.image_type is None and empty.scan_options is None

"""discover(): walking any layout, file-level problems, and de-identified headers."""

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from her2pcr.dicom.discover import FileHeader, discover, discover_in_memory, tm_seconds

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


def in_memory(root: Path) -> tuple[dict[Path, bytes], dict[Path, Path]]:
    """Every file under ``root`` as bytes under a generated name (as the served model gets a zip), and the map back."""
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    files = {Path(f"member{k:06d}"): p.read_bytes() for k, p in enumerate(paths)}
    return files, dict(zip(files, paths, strict=True))


def test_in_memory_discovery_reads_each_file_once_and_finds_what_the_walk_finds(fault_cohort):
    on_disk = discover(fault_cohort / "dicom")
    files, origin = in_memory(fault_cohort / "dicom")
    found = discover_in_memory(files, patient_tag="ClinicalTrialSubjectID")
    assert [(str(origin[p.path]), p.patient_id, p.reason) for p in found.problems] == \
        [(str(p.path), p.patient_id, p.reason) for p in on_disk.problems]  # truncated and non-DICOM alike
    assert {pid: [dataclasses.replace(h, path=origin[h.path]) for h in headers]
            for pid, headers in found.files_by_patient.items()} == on_disk.files_by_patient
    # every image's pixels are decoded while it is read, and only those
    images = {h.path for headers in found.files_by_patient.values() for h in headers}
    assert set(found.pixels) == images and on_disk.pixels == {}
    some = next(h for headers in found.files_by_patient.values() for h in headers)
    assert np.array_equal(found.pixels[some.path], pydicom.dcmread(origin[some.path]).pixel_array)

"""DICOM writer: standard conformance (dciodvfy), geometry (SimpleITK), dcm2niix, determinism."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from her2pcr.synth.dicom_writer import dicom_time, phase_description, write_exam
from her2pcr.synth.exam import Acquisition, ExamImages, Identity

SEED = 11
N_SLICES, MATRIX = 6, 32
ANGLE = math.radians(5.0)  # slightly oblique so geometry errors cannot hide behind identity axes
DIRECTION = (math.cos(ANGLE), math.sin(ANGLE), 0.0, -math.sin(ANGLE), math.cos(ANGLE), 0.0)
TIMING_TAGS = ("AcquisitionTime", "ContentTime", "TriggerTime", "ContrastBolusStartTime", "TemporalResolution")

# (layout, timing_tag, folder_layout): every layout with timing present and missing, both folder layouts.
CASES = [
    ("per_phase_description", "AcquisitionTime", "nested"),
    ("per_phase_description", None, "flat"),
    ("per_phase_trigger", "TriggerTime", "nested"),
    ("per_phase_trigger", None, "flat"),
    ("multiphase", "ContentTime", "flat"),
    ("multiphase", "TriggerTime", "nested"),
    ("multiphase", None, "nested"),
]


def make_exam(layout: str, timing_tag: str | None, folder_layout: str) -> ExamImages:
    identity = Identity(
        patient_id="SIM-D9-0042",
        patient_name="TESTPERSON^JANE",
        birth_date="19710405",
        mrn="MRN0099123",
        accession_number="ACC5551234",
        sex="F",
    )
    acq = Acquisition(
        site="inst9",
        manufacturer="GE MEDICAL SYSTEMS",
        model_name="SIGNA HDxt",
        field_strength_t=1.5,
        pixel_spacing_mm=0.7,
        slice_thickness_mm=1.5,
        repetition_time_ms=5.065,
        echo_time_ms=1.769,
        flip_angle_deg=10.4,
        phase_encoding_steps=312,
        percent_sampling=84.5,
        bolus_volume_ml=16.2,
        contrast_agent="gadoterate",
        n_post=3,
        phase_times_s=(-90.0, 80.5, 167.25, 254.0),
        matrix=MATRIX,
        slices=N_SLICES,
        origin_mm=(-112.35, -97.125, -23.5),
        direction=DIRECTION,
        layout=layout,
        folder_layout=folder_layout,
        timing_tag=timing_tag,
        study_date="20180923",
        study_time_s=9 * 3600 + 14 * 60 + 7.5,
    )
    rng = np.random.default_rng(5)
    phases = [rng.integers(0, 4096, size=(N_SLICES, MATRIX, MATRIX), dtype=np.uint16) for _ in range(4)]
    return ExamImages(identity, acq, phases, ["pre", "post1", "post2", "post3"])


@pytest.fixture(scope="module", params=CASES, ids=lambda c: "-".join(map(str, c)))
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    exam = make_exam(*request.param)
    root = tmp_path_factory.mktemp("dicom")
    paths = write_exam(exam, root, SEED)
    headers = {p: pydicom.dcmread(p, stop_before_pixels=True) for p in paths}
    return exam, root, paths, headers


def phase_of(exam: ExamImages, ds: pydicom.Dataset) -> int:
    """Phase index as a consumer would recover it from the header."""
    if exam.acquisition.layout == "multiphase":
        return int(ds.TemporalPositionIdentifier) - 1
    first = 3  # series numbers start at 3 and increase with phase
    return int(ds.SeriesNumber) - first


def test_file_count_and_layout(written) -> None:
    exam, root, paths, headers = written
    assert len(paths) == len(exam.phases) * N_SLICES
    assert paths == sorted(paths)
    for p in paths:
        rel = p.relative_to(root)
        assert rel.parts[0] == exam.identity.patient_id
        if exam.acquisition.folder_layout == "flat":
            assert len(rel.parts) == 2 and rel.name == f"{headers[p].SOPInstanceUID}.dcm"
        else:
            assert len(rel.parts) == 4 and rel.name == f"IM{int(headers[p].InstanceNumber):05d}.dcm"
            assert rel.parts[2].startswith(f"{headers[p].SeriesNumber}_")
        # No identifying value may leak into a path.
        for value in (
            "TESTPERSON",
            "JANE",
            exam.identity.mrn,
            exam.identity.birth_date,
            exam.identity.accession_number,
        ):
            assert value not in str(rel)


@pytest.mark.integration
def test_dciodvfy_reports_no_errors(written) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    _, _, paths, _ = written
    for p in paths:
        out = subprocess.run(["dciodvfy", str(p)], capture_output=True, text=True, check=False)
        lines = (out.stdout + out.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, f"{p.name}: {errors}"


@pytest.mark.integration
def test_dcentvfy_series_consistent(written) -> None:
    """Study/series-level attributes must agree across all files (dicom3tools' entity check)."""
    if shutil.which("dcentvfy") is None:
        pytest.skip("dcentvfy (Debian package dicom3tools) is not installed")
    _, _, paths, _ = written
    out = subprocess.run(["dcentvfy", *map(str, paths)], capture_output=True, text=True, check=False)
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors


def test_pixels_roundtrip_and_match_pydicom_encoding(written) -> None:
    exam, _, paths, _ = written
    for p in paths:
        raw = p.read_bytes()
        ds = pydicom.dcmread(io.BytesIO(raw))
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        k = int(
            round(
                (np.asarray(ds.ImagePositionPatient, float) - exam.acquisition.origin_mm)
                @ np.cross(DIRECTION[:3], DIRECTION[3:])
                / exam.acquisition.slice_thickness_mm
            )
        )
        np.testing.assert_array_equal(ds.pixel_array, exam.phases[phase_of(exam, ds)][k])
        # The byte-level fast path must write exactly what pydicom itself writes.
        again = io.BytesIO()
        ds.save_as(again, enforce_file_format=True)
        assert again.getvalue() == raw


def _series_groups(exam: ExamImages, root: Path, paths: list[Path], headers) -> dict[int, list[str]]:
    """Phase index -> file names in slice order, found the way a consumer would."""
    groups: dict[int, list[str]] = {}
    if exam.acquisition.layout == "multiphase":
        normal = np.cross(DIRECTION[:3], DIRECTION[3:])
        by_tpi: dict[int, list[Path]] = defaultdict(list)
        for p in paths:
            by_tpi[phase_of(exam, headers[p])].append(p)
        for phase, files in by_tpi.items():
            files.sort(key=lambda f: float(np.asarray(headers[f].ImagePositionPatient, float) @ normal))
            groups[phase] = [str(f) for f in files]
        return groups
    for folder in sorted({p.parent for p in paths}):
        for sid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)
            phase = phase_of(exam, headers[Path(files[0])])
            assert phase not in groups
            groups[phase] = list(files)
    return groups


def test_simpleitk_reads_each_phase_with_exact_geometry(written) -> None:
    exam, root, paths, headers = written
    acq = exam.acquisition
    groups = _series_groups(exam, root, paths, headers)
    assert sorted(groups) == list(range(len(exam.phases)))
    normal = np.cross(DIRECTION[:3], DIRECTION[3:])
    expected_direction = np.column_stack([DIRECTION[:3], DIRECTION[3:], normal]).ravel()
    for phase, files in groups.items():
        assert len(files) == N_SLICES
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        image = reader.Execute()
        np.testing.assert_allclose(image.GetSpacing(), (0.7, 0.7, 1.5), atol=1e-5)
        np.testing.assert_allclose(image.GetOrigin(), acq.origin_mm, atol=1e-5)
        np.testing.assert_allclose(image.GetDirection(), expected_direction, atol=1e-5)
        array = sitk.GetArrayFromImage(image)
        assert array.dtype == np.uint16
        np.testing.assert_array_equal(array, exam.phases[phase])


@pytest.mark.integration
def test_dcm2niix_converts_every_phase(written, tmp_path: Path) -> None:
    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix is not installed")
    exam, root, _, _ = written
    out = subprocess.run(
        ["dcm2niix", "-z", "n", "-f", "%s_%t", "-o", str(tmp_path), str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "error" not in out.stdout.lower() + out.stderr.lower()
    niftis = sorted(tmp_path.glob("*.nii"))
    volumes: dict[int, np.ndarray] = {}
    for nii in niftis:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(nii)))
        series_number = int(nii.name.split("_")[0])
        if exam.acquisition.layout == "multiphase":
            # dcm2niix stacks the temporal positions into one 4-D volume (t, z, y, x).
            assert array.shape == (len(exam.phases), N_SLICES, MATRIX, MATRIX)
            volumes.update(enumerate(array))
        else:
            assert array.shape == (N_SLICES, MATRIX, MATRIX)
            volumes[series_number - 3] = array
    expected_files = 1 if exam.acquisition.layout == "multiphase" else len(exam.phases)
    assert len(niftis) == expected_files
    assert sum(v.size for v in volumes.values()) == len(exam.phases) * N_SLICES * MATRIX * MATRIX
    # dcm2niix may flip axes; sorted voxel values identify each phase (and its temporal order).
    for phase, vol in volumes.items():
        np.testing.assert_array_equal(np.sort(vol, axis=None), np.sort(exam.phases[phase], axis=None))


def test_identity_series_and_timing_headers(written) -> None:
    exam, _, paths, headers = written
    ident, acq = exam.identity, exam.acquisition
    t0 = acq.phase_times_s[0]
    series_uids, sop_uids, descriptions = set(), set(), {}
    for p in paths:
        ds = headers[p]
        phase = phase_of(exam, ds)
        assert str(ds.PatientName) == ident.patient_name
        assert ds.PatientID == ident.mrn
        assert ds.PatientBirthDate == ident.birth_date
        assert ds.AccessionNumber == ident.accession_number
        assert ds.PatientSex == ident.sex
        assert ds.ClinicalTrialSubjectID == ident.patient_id
        assert ds.ClinicalTrialSiteName == acq.site
        assert ds.Manufacturer == acq.manufacturer and ds.ManufacturerModelName == acq.model_name
        assert float(ds.MagneticFieldStrength) == pytest.approx(1.5)
        assert float(ds.ImagingFrequency) == pytest.approx(42.577 * 1.5, rel=1e-4)
        assert ds.MRAcquisitionType == "3D" and ds.ScanningSequence == "GR"
        assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.7]
        assert float(ds.SliceThickness) == 1.5 and float(ds.SpacingBetweenSlices) == 1.5
        assert ds.StudyTime == ds.SeriesTime  # session start only: no phase timing leaks here
        series_uids.add(ds.SeriesInstanceUID)
        sop_uids.add(ds.SOPInstanceUID)
        descriptions[phase] = ds.SeriesDescription
        if phase == 0:
            assert "ContrastBolusAgent" not in ds
        else:
            assert ds.ContrastBolusAgent == acq.contrast_agent
            assert float(ds.ContrastBolusVolume) == pytest.approx(acq.bolus_volume_ml)
        if acq.layout == "multiphase":
            assert int(ds.NumberOfTemporalPositions) == len(exam.phases)
        offset = acq.phase_times_s[phase] - t0
        if acq.timing_tag is None:
            assert not [tag for tag in TIMING_TAGS if tag in ds]
            continue
        present = {tag for tag in TIMING_TAGS[:3] if tag in ds}
        assert present == {acq.timing_tag}
        if acq.timing_tag == "TriggerTime":
            assert float(ds.TriggerTime) == pytest.approx(offset * 1000.0)
        else:
            assert ds[acq.timing_tag].value == dicom_time(acq.study_time_s + offset)
        if phase > 0:
            assert ds.ContrastBolusStartTime == dicom_time(acq.study_time_s - t0)
        if acq.layout == "multiphase":
            post_spacing = np.median(np.diff(acq.phase_times_s[1:]))
            assert float(ds.TemporalResolution) == pytest.approx(post_spacing * 1000)

    n = len(exam.phases)
    assert len(sop_uids) == len(paths)
    if acq.layout == "multiphase":
        assert len(series_uids) == 1
        assert sorted(int(headers[p].InstanceNumber) for p in paths) == list(range(1, len(paths) + 1))
    else:
        assert len(series_uids) == n
    if acq.layout == "per_phase_description":
        assert [descriptions[i] for i in range(n)] == [phase_description(i) for i in range(n)]
    elif acq.layout == "per_phase_trigger":
        assert len(set(descriptions.values())) == 1
    first = headers[paths[0]]
    uids = {first.StudyInstanceUID, first.FrameOfReferenceUID} | series_uids | sop_uids
    assert len(uids) == 2 + len(series_uids) + len(sop_uids)


def test_phase_description() -> None:
    assert [phase_description(i) for i in range(5)] == [
        "ax dyn pre",
        "ax dyn 1st pass",
        "ax dyn 2nd pass",
        "ax dyn 3rd pass",
        "ax dyn 4th pass",
    ]
    assert phase_description(11) == "ax dyn 11th pass"
    assert phase_description(22) == "ax dyn 22nd pass"


def test_dicom_time() -> None:
    assert dicom_time(9 * 3600 + 14 * 60 + 7.5) == "091407.500000"
    assert dicom_time(86400 + 1) == "000001.000000"


def test_same_seed_gives_identical_bytes_and_other_seed_other_uids(tmp_path: Path) -> None:
    exam = make_exam("multiphase", "ContentTime", "flat")
    a = write_exam(exam, tmp_path / "a", SEED)
    b = write_exam(exam, tmp_path / "b", SEED)
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a, b, strict=True))
    c = write_exam(exam, tmp_path / "c", SEED + 1)
    uid_a = pydicom.dcmread(a[0], stop_before_pixels=True).StudyInstanceUID
    uid_c = pydicom.dcmread(c[0], stop_before_pixels=True).StudyInstanceUID
    assert uid_a != uid_c


def test_non_ascii_name_declares_utf8(tmp_path: Path) -> None:
    exam = make_exam("per_phase_trigger", "TriggerTime", "flat")
    exam = replace(exam, identity=replace(exam.identity, patient_name="MÜLLER^JÖRGINE"))
    paths = write_exam(exam, tmp_path, SEED)
    raw = paths[0].read_bytes()
    ds = pydicom.dcmread(io.BytesIO(raw))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "MÜLLER^JÖRGINE"
    again = io.BytesIO()
    ds.save_as(again, enforce_file_format=True)
    assert again.getvalue() == raw
    if shutil.which("dciodvfy"):
        out = subprocess.run(["dciodvfy", str(paths[0])], capture_output=True, text=True, check=False)
        assert not [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_rejects_unknown_layout_and_mismatched_phases(tmp_path: Path) -> None:
    exam = make_exam("per_phase_description", None, "nested")
    with pytest.raises(ValueError, match="layout"):
        write_exam(replace(exam, acquisition=replace(exam.acquisition, layout="mosaic")), tmp_path, SEED)
    bad = replace(exam, phases=[*exam.phases[:-1], exam.phases[-1][:, :16]])
    with pytest.raises(ValueError, match="shape"):
        write_exam(bad, tmp_path / "bad", SEED)
    floats = replace(exam, phases=[v.astype(np.float32) for v in exam.phases])
    with pytest.raises(ValueError, match="uint16"):
        write_exam(floats, tmp_path / "float", SEED)

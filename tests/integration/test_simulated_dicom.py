"""The simulator's DICOM read by reference tools: dciodvfy, SimpleITK, dcm2niix."""

import subprocess
from collections import defaultdict

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from tests.conftest import dciodvfy_errors, require

pytestmark = pytest.mark.integration


def phase_files(exam_dir):
    """Files of each phase, in phase order, whatever the vendor layout."""
    groups = defaultdict(list)
    for path in sorted(exam_dir.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        key = (int(ds.SeriesNumber), int(ds.get("TemporalPositionIdentifier", 1)))
        groups[key].append((float(ds.ImagePositionPatient[2]), str(path)))
    return [[p for _, p in sorted(groups[k])] for k in sorted(groups)]


def test_every_file_passes_dciodvfy_without_errors(tiny_cohort):
    require("dciodvfy")
    files = sorted((tiny_cohort / "dicom").rglob("*.dcm"))
    assert len(files) > 100
    failures = {str(path): errors for path in files if (errors := dciodvfy_errors(path))}
    assert not failures, list(failures.items())[:3]


def test_simpleitk_reads_each_phase_with_the_protocol_geometry(tiny_cohort):
    truth = pd.read_csv(tiny_cohort / "truth.csv").set_index("patient_id")
    for pid, row in truth.iterrows():
        phases = phase_files(tiny_cohort / "dicom" / pid)
        assert len(phases) == row.acq_n_post + 1
        origin = [float(v) for v in row.acq_origin_mm.split(";")]
        for files in phases:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            image = reader.Execute()
            assert image.GetSize() == (row.acq_matrix, row.acq_matrix, row.acq_slices)
            np.testing.assert_allclose(image.GetSpacing(),
                                       (row.acq_pixel_spacing_mm, row.acq_pixel_spacing_mm, row.acq_slice_thickness_mm),
                                       rtol=1e-5)
            np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-3)
            np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6)


def test_dcm2niix_converts_every_exam(tiny_cohort, tmp_path):
    require("dcm2niix")

    truth = pd.read_csv(tiny_cohort / "truth.csv").set_index("patient_id")
    for pid, row in truth.iterrows():
        out = tmp_path / pid
        out.mkdir()
        subprocess.run(["dcm2niix", "-z", "n", "-f", "%s_%t", "-o", str(out), str(tiny_cohort / "dicom" / pid)],
                       capture_output=True, check=True)
        volumes = sorted(out.glob("*.nii"))
        sizes = [sitk.ReadImage(str(v)).GetSize() for v in volumes]
        n_phases = row.acq_n_post + 1
        if row.acq_layout == "multiphase":
            assert sizes == [(row.acq_matrix, row.acq_matrix, row.acq_slices, n_phases)], pid
        else:
            assert sizes == [(row.acq_matrix, row.acq_matrix, row.acq_slices)] * n_phases, pid


def test_the_extra_series_pass_dciodvfy_without_errors(extra_series_cohort):
    """One file of each non-DCE series (localiser, T2, non-fat-sat T1, subtraction, MIP) of every exam."""
    require("dciodvfy")
    chosen = {}
    for path in sorted((extra_series_cohort / "dicom").rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if int(ds.SeriesNumber) in (1, 2, 20, 30, 31):
            chosen.setdefault((path.relative_to(extra_series_cohort).parts[1], int(ds.SeriesNumber)), path)
    assert len(chosen) == 5 * len(pd.read_csv(extra_series_cohort / "clinical.csv"))
    failures = {str(path): errors for path in chosen.values() if (errors := dciodvfy_errors(path))}
    assert not failures, list(failures.items())[:3]


def test_the_enhanced_mr_files_pass_dciodvfy_but_for_the_frame_times_of_untimed_exams(enhanced_cohort):
    """Every Enhanced MR file; an exam the simulator leaves untimed has no frame times, the only errors allowed."""
    require("dciodvfy")
    truth = pd.read_csv(enhanced_cohort / "truth.csv").set_index("patient_id")
    frame_times = ("<FrameAcquisitionDateTime>", "<FrameReferenceDateTime>", "<FrameAcquisitionDuration>")
    failures, untimed_errors = {}, 0
    for path in sorted((enhanced_cohort / "dicom").rglob("*.dcm")):
        errors = dciodvfy_errors(path)
        timed = pd.notna(truth.loc[path.relative_to(enhanced_cohort / "dicom").parts[0], "acq_timing_tag"])
        allowed = [e for e in errors if not timed and any(t in e for t in frame_times)]
        untimed_errors += len(allowed)
        if len(errors) > len(allowed):
            failures[str(path)] = [e for e in errors if e not in allowed]
    assert not failures, list(failures.items())[:3]
    assert untimed_errors > 0 or truth.acq_timing_tag.notna().all()

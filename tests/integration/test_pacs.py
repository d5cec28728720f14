"""A real Orthanc with DICOMweb: `her2pcr push` stores the tiny cohorts, `her2pcr pull` brings them back for ingest."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from her2pcr.ingest.stage import ingest
from her2pcr.pacs.dicomweb import COMPLETE, PARTIAL, client
from tests.conftest import REPO, profile_params, run_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PARAMS = profile_params("tiny")


def study_uids(tiny_cohort: Path) -> dict[str, str]:
    """StudyInstanceUID -> pseudonymous patient id, from the simulated files."""
    uids = {}
    for folder in sorted((tiny_cohort / "dicom").iterdir()):
        ds = pydicom.dcmread(next(folder.rglob("*.dcm")), stop_before_pixels=True)
        uids[ds.StudyInstanceUID] = folder.name
    return uids


def pull(orthanc, out: Path, *args: str, check: bool = True):
    return run_command(["her2pcr", "pull", "--pacs", orthanc["url"], "--out", str(out), "--no-progress", *args],
                       REPO, check)


def test_push_stores_every_file_and_the_pacs_lists_every_study(orthanc, tiny_cohort):
    files = len(list((tiny_cohort / "dicom").rglob("*.dcm")))
    assert f"push: {files} instances stored, 0 files refused" in orthanc["pushed"]
    pacs = client(orthanc["url"])
    found = {r["0020000D"]["Value"][0] for r in pacs.search_for_studies()}
    assert found == set(study_uids(tiny_cohort))
    # MR series only: the serving tests may have filed an SR into one of these studies
    assert sum(r["00201209"]["Value"][0] for uid in found for r in pacs.search_for_series(
        uid, search_filters={"Modality": "MR"}, fields=["NumberOfSeriesRelatedInstances"])) == files


def test_pulled_studies_ingest_to_the_exams_of_the_source_files(orthanc, tiny_cohort, tmp_path):
    uids = study_uids(tiny_cohort)
    manifest = tmp_path / "studies.csv"
    pd.DataFrame({"StudyInstanceUID": sorted(uids)}).to_csv(manifest, index=False)
    source = tmp_path / "pacs"
    result = pull(orthanc, source, "--manifest", str(manifest))
    assert f"pull: {len(uids)} pulled, 0 already pulled, 0 failed, 0 not found" in result.stdout
    report = pd.read_csv(source / "pull-report.csv")
    assert set(report.study_instance_uid) == set(uids) and (report.status == "pulled").all()
    assert report.instances.sum() == len(list((tiny_cohort / "dicom").rglob("*.dcm")))
    assert not (source / "dicom" / PARTIAL).exists() or not any((source / "dicom" / PARTIAL).iterdir())
    for name in ("clinical.csv", "boxes.csv"):  # the manifests come with the collection, not from the PACS
        shutil.copy(tiny_cohort / name, source / name)
    outputs = {}
    for label, folder in (("files", tiny_cohort), ("pacs", source)):
        section = PARAMS.ingest.model_copy(update={"source_dir": folder, "out_dir": tmp_path / label / "interim",
                                                   "reports_dir": tmp_path / label / "reports"})
        outputs[label] = (ingest(section, PARAMS.cohorts, progress=False), section.out_dir)
    (files, files_dir), (pacs, pacs_dir) = outputs["files"], outputs["pacs"]
    assert pacs.ingested == files.ingested and pacs.series_used == files.series_used
    for path in sorted((files_dir / "exams").glob("*.npz")):
        a, b = np.load(path), np.load(pacs_dir / "exams" / path.name)
        for key in a.files:
            assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), (path.name, key)
    for table in ("clinical", "acquisition"):
        pd.testing.assert_frame_equal(pd.read_parquet(files_dir / f"{table}.parquet"),
                                      pd.read_parquet(pacs_dir / f"{table}.parquet"))


def test_pull_resumes_reports_each_study_and_writes_nothing_half(orthanc, tiny_cohort, tmp_path):
    uids = sorted(study_uids(tiny_cohort))
    source = tmp_path / "pacs"
    dicom = source / "dicom"
    pull(orthanc, source, "--study-date", "19000101-21001231")
    # an interrupted pull: one study still in its partial folder with one series finished, one series half there
    interrupted = next(u for u in uids if sum(p.is_dir() for p in (dicom / u).iterdir()) > 1)
    partial = dicom / PARTIAL / interrupted
    shutil.move(dicom / interrupted, partial)
    (partial / COMPLETE).unlink()
    series = sorted(p for p in partial.iterdir() if p.is_dir())
    (series[1] / COMPLETE).unlink()
    next(series[1].glob("*.dcm")).unlink()
    kept = series[0] / COMPLETE
    kept_time = kept.stat().st_mtime_ns
    # a study that cannot be written (a file where its partial folder goes) and an accession the PACS lacks
    blocked = next(u for u in uids if u != interrupted)
    shutil.rmtree(dicom / blocked)
    (dicom / PARTIAL / blocked).write_text("in the way")
    result = pull(orthanc, source, "--study-date", "19000101-21001231", "--accession", "A000", check=False)
    assert result.returncode == 1
    assert f"pull: 1 pulled, {len(uids) - 2} already pulled, 1 failed, 1 not found" in result.stdout
    assert "AccessionNumber A000: not found: no MR study matches" in result.stderr
    report = pd.read_csv(source / "pull-report.csv", keep_default_na=False).set_index("study_instance_uid")
    assert report.loc[interrupted, "status"] == "pulled" and report.loc[blocked, "status"] == "failed"
    assert "FileExistsError" in report.loc[blocked, "reason"] or "NotADirectoryError" in report.loc[blocked, "reason"]
    assert kept.exists() is False and (dicom / interrupted / series[0].name / COMPLETE).stat().st_mtime_ns == kept_time
    expected = len(list((tiny_cohort / "dicom" / study_uids(tiny_cohort)[interrupted]).rglob("*.dcm")))
    assert len(list((dicom / interrupted).rglob("*.dcm"))) == expected
    assert not (dicom / blocked).exists()  # nothing half-written where ingest reads

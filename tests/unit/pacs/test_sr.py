"""The SR of an answer: built from the SR content a server returns and the source study's own headers."""

from pathlib import Path

import pydicom
import pytest

from her2pcr.config import SeriesRules
from her2pcr.dicom.discover import discover
from her2pcr.dicom.phases import order_phases
from her2pcr.dicom.series import select_dce_series
from her2pcr.pacs.sr import PCR_PREDICTED, PCR_PROBABILITY, ModelIdentity, build_sr
from her2pcr.serving.references import source_phases, sr_references
from tests.conftest import dciodvfy_errors, require

BOX = (30, 45, 40, 60, 5, 9)
MODEL = ModelIdentity("her2pcr-dce", "7", "models:/her2pcr-dce/7")


def test_model_inputs_name_the_phases_they_are_computed_from():
    assert source_phases(["sub1", "sub3"]) == ["pre", "post1", "post3"]
    assert source_phases(["pre", "post3"]) == ["pre", "post3"]
    assert source_phases(["sub2", "post10", "sub10"]) == ["pre", "post2", "post10"]


@pytest.fixture(scope="module")
def exam(tiny_cohort):
    """The SR content of the first tiny exam and its headers (the source study as a PACS holds it)."""
    folder = sorted((tiny_cohort / "dicom").iterdir())[0]
    headers = next(iter(discover(folder, patient_tag="StudyInstanceUID").files_by_patient.values()))
    selection = select_dce_series(headers, SeriesRules())
    content = {**sr_references(order_phases(selection.headers), BOX, ["sub1", "sub3"]),
               "probability": 0.6180339887498949, "label": 1, "threshold": 0.5}
    evidence = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.rglob("*.dcm"))]
    return content, evidence


def test_sr_references_the_phases_used_and_the_box_on_its_pre_contrast_slices(exam):
    content, evidence = exam
    assert [p["phase"] for p in content["phases"]] == ["pre", "post1", "post3"]
    by_sop = {ds.SOPInstanceUID: ds for ds in evidence}
    pre = content["phases"][0]["slices"]
    positions = [float(by_sop[sop].ImagePositionPatient[2]) for _, sop, _ in pre]
    assert positions == sorted(positions) or positions == sorted(positions, reverse=True)
    assert len({by_sop[sop].SeriesInstanceUID for _, sop, _ in pre}) == 1


def content_items(item):
    for child in getattr(item, "ContentSequence", []):
        yield child
        yield from content_items(child)


def test_the_sr_holds_the_answer_the_model_and_the_source_patient_and_passes_dciodvfy(exam, tmp_path):
    content, evidence = exam
    used = {p["series_instance_uid"] for p in content["phases"]}
    sr = build_sr(content, [ds for ds in evidence if ds.SeriesInstanceUID in used], MODEL)
    source = evidence[0]
    assert (sr.PatientName, sr.PatientID, sr.StudyInstanceUID) == (source.PatientName, source.PatientID,
                                                                    source.StudyInstanceUID)
    items = list(content_items(sr))
    numbers = {i.ConceptNameCodeSequence[0].CodeValue: float(i.MeasuredValueSequence[0].NumericValue)
               for i in items if i.ValueType == "NUM"}
    assert numbers[PCR_PROBABILITY.value] == pytest.approx(content["probability"], abs=1e-12)
    assert numbers["122411"] == 0.5  # DCM Threshold Value
    label = next(i for i in items if i.ConceptNameCodeSequence[0].CodeValue == PCR_PREDICTED.value)
    assert label.ConceptCodeSequence[0].CodeMeaning == "Yes"
    texts = [i.TextValue for i in items if i.ValueType == "TEXT"]
    assert "registry models:/her2pcr-dce/7" in texts and "7" in texts
    assert any("not for diagnostic use" in t for t in texts) and "NOT FOR DIAGNOSTIC USE" in sr.SeriesDescription
    regions = [i for i in items if i.ValueType == "SCOORD"]
    box_sops = [sop for _, sop, _ in content["phases"][0]["slices"][BOX[4]:BOX[5] + 1]]
    assert [r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in regions] == box_sops
    assert list(regions[0].GraphicData) == [40, 30, 61, 30, 61, 46, 40, 46, 40, 30]  # pixel edges, closed
    referenced = {s.SeriesInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                  for s in study.ReferencedSeriesSequence}
    assert referenced == used
    require("dciodvfy")
    path = Path(tmp_path / "sr.dcm")
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []

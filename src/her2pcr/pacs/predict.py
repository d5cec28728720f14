"""`her2pcr predict --pacs`: a study from the PACS, the served model's answer, its DICOM SR stored back."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from her2pcr.pacs.dicomweb import StudyQuery, client, find_studies, pull_study
from her2pcr.pacs.sr import ModelIdentity, build_sr
from her2pcr.serving.client import exam_record, predict, restore_sr_content
from her2pcr.serving.deid import Pseudonymiser


@dataclass
class StudyPrediction:
    answer: dict  # the server's answer row (pseudonymised UIDs in its sr_content)
    sr: Dataset   # the SR, with the source study's patient and study modules
    stored: bool


def registered_identity(served: dict, tracking_uri: str, default_name: str) -> ModelIdentity:
    """The registry version the server answered with, from the logged model id the answer carries."""
    from mlflow import MlflowClient

    name = served.get("name") or default_name
    run_id, model_id = served.get("run_id"), served.get("model_id")
    if not (run_id and model_id):
        raise ValueError("the served model does not say which logged model it is (registered before SR content "
                         "existed): register it again")
    for version in MlflowClient(tracking_uri).search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        if version.source == f"models:/{model_id}":
            return ModelIdentity(name, str(version.version), f"models:/{name}/{version.version}")
    raise ValueError(f"the served model ({model_id}) is no version of {name!r} in the registry at {tracking_uri}")


def predict_study(pacs_url: str, study_uid: str, box: tuple[int, ...], server_url: str, tracking_uri: str,
                  model_name: str, store: bool = True, timeout_s: float = 300) -> StudyPrediction:
    """Retrieve the study, send it pseudonymised, build the SR from the answer and the study's own headers."""
    dicomweb = client(pacs_url, timeout_s)
    found, _ = find_studies(dicomweb, StudyQuery(study_uids=(study_uid,)))
    if not found:
        raise ValueError(f"no MR study {study_uid} in the PACS at {pacs_url}")
    with tempfile.TemporaryDirectory(prefix="her2pcr-study-") as tmp:
        pull_study(dicomweb, study_uid, Path(tmp))
        folder = Path(tmp) / study_uid
        pseudonymiser = Pseudonymiser()
        answer = predict(server_url, [exam_record(folder, box, 0, pseudonymiser)], timeout_s)[0]
        content = restore_sr_content(answer, pseudonymiser)
        used = {p["series_instance_uid"] for p in content["phases"]}
        evidence = [ds for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.rglob("*.dcm")))
                    if ds.SeriesInstanceUID in used]
    sr = build_sr(content, evidence, registered_identity(content["model"], tracking_uri, model_name))
    if store:
        dicomweb.store_instances([sr])
    return StudyPrediction(answer, sr, store)

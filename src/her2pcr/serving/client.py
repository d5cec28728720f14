"""Client of the served model: build the JSON of an exam or tensors request, post it, read the answer.

An exam leaves the client pseudonymised (``her2pcr.serving.deid``): the server sees neither the patient's identity
nor the exam's UIDs, and the client maps the UIDs of the answer's SR content back with the same pseudonymiser.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import requests
from pydicom.errors import InvalidDicomError

from her2pcr.serving.deid import Pseudonymiser
from her2pcr.serving.model import BOX_FIELDS, EXAM_FIELD, TENSORS_FIELD
from her2pcr.serving.requests import encode_tensors


class ServerError(RuntimeError):
    """The server refused the request or failed; the message is the server's."""


def exam_files(folder: Path) -> list[Path]:
    """Every file under a folder of DICOM files, hidden ones (a pull's markers) excepted, in a stable order."""
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of DICOM files")
    return sorted(p for p in Path(folder).rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def pseudonymised_zip(paths: list[Path], pseudonymiser: Pseudonymiser) -> str:
    """Base64 zip of the pseudonymised files, named ``00001.dcm``... (a path may name the patient).

    A file that is not DICOM is refused here, by its path: it is not sent.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for k, path in enumerate(paths, start=1):
            try:
                ds = pydicom.dcmread(path)
            except (InvalidDicomError, OSError) as error:
                raise ValueError(f"{path}: not a readable DICOM file ({error})") from None
            member = io.BytesIO()
            pseudonymiser(ds).save_as(member, enforce_file_format=True)
            archive.writestr(f"{k:05d}.dcm", member.getvalue())
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def exam_record(exam_dir: Path, box: tuple[int, ...], index_base: int = 0,
                pseudonymiser: Pseudonymiser | None = None) -> dict:
    """One request row from a folder of DICOM files and a box (row_start, row_end, column_start, ...).

    Pass ``pseudonymiser`` to map the answer's UIDs back (``restore_sr_content``); a fresh one is used otherwise.
    """
    if len(box) != len(BOX_FIELDS):
        raise ValueError(f"the box needs {len(BOX_FIELDS)} values ({', '.join(BOX_FIELDS)}), got {len(box)}")
    data = pseudonymised_zip(exam_files(exam_dir), pseudonymiser or Pseudonymiser())
    return {EXAM_FIELD: data, **{k: int(v) - index_base for k, v in zip(BOX_FIELDS, box, strict=True)}}


def restore_sr_content(answer: dict, pseudonymiser: Pseudonymiser) -> dict | None:
    """The answer's SR content with the exam's original UIDs (None for a tensors answer)."""
    if not answer.get("sr_content"):
        return None
    content = json.loads(answer["sr_content"])
    content["study_instance_uid"] = pseudonymiser.restore(content["study_instance_uid"])
    for phase in content["phases"]:
        phase["series_instance_uid"] = pseudonymiser.restore(phase["series_instance_uid"])
        phase["slices"] = [[sop_class, pseudonymiser.restore(sop), frame] for sop_class, sop, frame in phase["slices"]]
    return content


def tensors_record(inputs: dict[str, np.ndarray]) -> dict:
    """One request row from preprocessed phase tensors."""
    return {TENSORS_FIELD: encode_tensors(inputs)}


def predict(url: str, records: list[dict], timeout_s: float = 300) -> list:
    """POST rows to ``<url>/invocations``; the answer rows, or ServerError with the server's message."""
    response = requests.post(url.rstrip("/") + "/invocations", json={"dataframe_records": records}, timeout=timeout_s)
    if response.status_code != 200:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        raise ServerError(f"HTTP {response.status_code}: {message}")
    return response.json()["predictions"]

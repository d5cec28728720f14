"""Client of the served model: build the JSON of an exam or tensors request, post it, read the answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import requests

from her2pcr.serving.model import BOX_FIELDS, EXAM_FIELD, TENSORS_FIELD
from her2pcr.serving.requests import encode_tensors, zip_folder


class ServerError(RuntimeError):
    """The server refused the request or failed; the message is the server's."""


def exam_record(exam_dir: Path, box: tuple[int, ...], index_base: int = 0) -> dict:
    """One request row from a folder of DICOM files and a box (row_start, row_end, column_start, ...)."""
    if len(box) != len(BOX_FIELDS):
        raise ValueError(f"the box needs {len(BOX_FIELDS)} values ({', '.join(BOX_FIELDS)}), got {len(box)}")
    if not Path(exam_dir).is_dir():
        raise FileNotFoundError(f"{exam_dir} is not a folder of DICOM files")
    return {EXAM_FIELD: zip_folder(exam_dir), **{k: int(v) - index_base for k, v in zip(BOX_FIELDS, box, strict=True)}}


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

"""The served model: an ``mlflow.pyfunc`` that runs the training preprocessing on a DICOM exam, then the CNN.

One request row is either

- an exam: ``dicom_zip`` (base64 zip of its DICOM files) and the tumour box
  (``row_start`` ... ``slice_end``, 0-based inclusive on the exam grid), or
- preprocessed inputs: ``tensors`` (base64 ``.npz``, phase name -> (stacks, 156, 156, 3)).

The rows of one request use one mode: the signature's box columns are integers, and a
tensors row in an exam batch would give them missing values.

Each answer row holds the pCR probability (mean over the middle of the box's slice stacks, the training's
``central_stack_fraction``, and, for an ensemble, over its member models), the label at the version's threshold,
the phases used, the number of stacks, each member's probability, quality warnings and, for an exam,
``sr_content``: what a DICOM SR of the answer refers to (``her2pcr.serving.references``), keyed by the request's
UIDs, with the model's name and training run, never a patient or study attribute. Bad input raises an
MlflowException with INVALID_PARAMETER_VALUE, which the scoring server answers with a 400
and the message.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from her2pcr.preprocess.settings import Box
from her2pcr.serving.requests import Limits, RequestError, decode_base64, read_tensors, read_zip

log = logging.getLogger(__name__)

BOX_FIELDS = Box._fields
EXAM_FIELD, TENSORS_FIELD = "dicom_zip", "tensors"
OUTPUT_COLUMNS = ("probability", "label", "phases", "n_stacks", "input", "members", "warnings", "sr_content")
#: Discovery groups files by study: a request must hold one exam.
STUDY_TAG = "StudyInstanceUID"


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def exam_inputs(files: dict[Path, bytes], names: dict[Path, str], box: tuple[int, ...], chain,
                model_inputs: list[str]) -> tuple[dict, list[str], dict]:
    """The chain's inputs for the one exam whose files are ``files`` (read from memory, each once), its loading
    warnings, and what an SR of the answer refers to (the files behind ``model_inputs`` and the box)."""
    from her2pcr.config import SeriesRules
    from her2pcr.dicom.discover import discover_in_memory
    from her2pcr.dicom.exam import ExamError, load_exam
    from her2pcr.dicom.phases import order_phases
    from her2pcr.dicom.series import select_dce_series
    from her2pcr.preprocess.voi import CropToBox
    from her2pcr.serving.references import sr_references

    found = discover_in_memory(files, patient_tag=STUDY_TAG)
    if found.problems:
        shown = "; ".join(f"zip member {names.get(Path(p.path), Path(p.path).name)!r}: {p.reason}"
                          for p in found.problems[:5])
        more = f" (and {len(found.problems) - 5} more)" if len(found.problems) > 5 else ""
        raise RequestError(f"dicom_zip holds {len(found.problems)} file(s) that are not usable DICOM images: "
                           f"{shown}{more}")
    if len(found.files_by_patient) != 1:
        raise RequestError(f"dicom_zip must hold exactly one exam (study), found {len(found.files_by_patient)}")
    headers = next(iter(found.files_by_patient.values()))
    try:
        # the default rules of ingest.series: a whole study (localiser, T2, subtractions...) can be sent as it is
        selection = select_dce_series(headers, SeriesRules())
        exam = load_exam(selection.headers, "request", found.pixels)
        # a box reaching past the volume is refused, as ingest quarantines it: clipping would answer another box
        CropToBox(clip=False).slices(exam.image.shape[1:], box)
        inputs = chain(exam.image, tuple(exam.spacing_mm), box)
        references = sr_references(order_phases(selection.headers), box, model_inputs)
    except (ExamError, ValueError) as error:
        raise RequestError(f"exam cannot be used: {error}") from None
    skipped = [f"{s.label} not used: {s.reason}" for s in selection.skipped]
    return inputs, list(exam.warnings) + skipped, references


class PcrModel(mlflow.pyfunc.PythonModel):
    """pCR probability from a DICOM exam + box, or from preprocessed phase tensors."""

    def load_context(self, context) -> None:
        import keras

        from her2pcr.models.cnn import ensemble_members, model_phases
        from her2pcr.preprocess.chain import PreprocessChain, PreprocessConfig

        config = context.model_config
        self.model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)
        self.members = ensemble_members(self.model)
        self.phases = model_phases(self.model)
        self.threshold = float(config["threshold"])
        self.stack_fraction = float(config.get("central_stack_fraction", 1.0))  # older versions: every stack
        # which registered version answers: the client names it in the SR (older versions lack the config keys)
        self.model_identity = {"name": config.get("model_name"), "run_id": config.get("run_id"),
                               "model_id": _logged_model_id(Path(context.artifacts["keras_model"]))}
        self.limits = Limits(**config["limits"])
        self.chain = PreprocessChain(PreprocessConfig(**config["preprocess"]))
        if self.chain.fingerprint() != config["chain_fingerprint"]:
            # The code of the chain changed since training: inputs would no longer match the training data.
            raise RuntimeError(f"preprocessing chain fingerprint {self.chain.fingerprint()} differs from the "
                               f"one this model was trained with ({config['chain_fingerprint']})")
        # exam requests may estimate the N4 field on a coarser grid (serve.exam_n4_shrink_factor): the training
        # chain's fingerprint is checked above, and this variant differs from it only in that factor
        shrink = config.get("exam_n4_shrink_factor")
        self.exam_chain = self.chain if not shrink else PreprocessChain(
            PreprocessConfig(**{**config["preprocess"], "n4_shrink_factor": shrink}))
        self._lock = threading.Lock()  # the scoring server calls predict from several threads

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame) or model_input.empty:
            raise _bad("send one or more rows (dataframe_records or dataframe_split)")
        sizes = sum(len(v) for c in (EXAM_FIELD, TENSORS_FIELD) if c in model_input
                    for v in model_input[c] if isinstance(v, str))
        if sizes * 3 / 4 > self.limits.max_payload_mb * 1024 * 1024:
            raise _bad(f"request carries {sizes * 3 / 4 / 2**20:.1f} MB of files, over the limit of "
                       f"{self.limits.max_payload_mb:g} MB")
        rows = []
        for position, row in enumerate(model_input.to_dict(orient="records")):
            try:
                rows.append(self._predict_row(row))
            except RequestError as error:
                raise _bad(f"row {position}: {error}") from None
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))

    def _predict_row(self, row: dict) -> dict:
        from her2pcr.models.cnn import predict_probability
        from her2pcr.training.data import central_slice

        has_exam, has_tensors = _present(row.get(EXAM_FIELD)), _present(row.get(TENSORS_FIELD))
        if has_exam == has_tensors:
            raise RequestError(f"give either {EXAM_FIELD} (with the box {', '.join(BOX_FIELDS)}) or {TENSORS_FIELD}, "
                               "not both or neither")
        warnings: list[str] = []
        references = None
        if has_exam:
            inputs, warnings, references = self._exam_row(row)
        else:
            data = decode_base64(row[TENSORS_FIELD], TENSORS_FIELD, self.limits.max_payload_mb)
            cfg = self.chain.config
            inputs = read_tensors(data, self.phases, cfg.input_size, cfg.channels)
        n_stacks = len(next(iter(inputs.values())))
        middle = central_slice(n_stacks, self.stack_fraction)
        inputs = {p: x[middle] for p, x in inputs.items()}
        with self._lock:  # an ensemble is the mean of its members: one pass over them gives both
            members = [float(np.mean(predict_probability(m, inputs))) for m in self.members]
        probability = float(np.mean(members))
        return {"probability": probability, "label": int(probability >= self.threshold),
                "phases": ",".join(self.phases), "n_stacks": int(n_stacks),
                "input": "exam" if has_exam else "tensors", "members": json.dumps(members),
                "warnings": json.dumps(warnings),
                "sr_content": None if references is None else json.dumps(
                    {**references, "probability": probability, "label": int(probability >= self.threshold),
                     "threshold": self.threshold, "model": self.model_identity})}

    def _exam_row(self, row: dict) -> tuple[dict, list[str], dict]:
        missing = [f for f in BOX_FIELDS if not _present(row.get(f))]
        if missing:
            raise RequestError(f"an exam needs its tumour box; missing {missing}")
        box = tuple(row[f] for f in BOX_FIELDS)
        if not all(float(v).is_integer() for v in box):
            raise RequestError(f"box values must be integers, got {dict(zip(BOX_FIELDS, box, strict=True))}")
        data = decode_base64(row[EXAM_FIELD], EXAM_FIELD, self.limits.max_payload_mb)
        files, names = read_zip(data, self.limits)
        inputs, warnings, references = exam_inputs(files, names, tuple(int(v) for v in box), self.exam_chain,
                                                   self.phases)
        missing_phases = [p for p in self.phases if p not in inputs]
        if missing_phases:
            raise RequestError(f"exam has phases {list(inputs)}; the model needs {self.phases} "
                               f"(missing {missing_phases})")
        return {p: inputs[p] for p in self.phases}, warnings, references


def _logged_model_id(artifact: Path) -> str | None:
    """MLflow's id of the logged model an artifact belongs to (its MLmodel file, a few folders up)."""
    import yaml

    for folder in list(artifact.parents)[:3]:
        if (folder / "MLmodel").is_file():
            return yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8")).get("model_id")
    return None


def _bad(message: str):
    from mlflow.exceptions import MlflowException

    log.info("rejected request: %s", message)
    return MlflowException.invalid_parameter_value(message)

"""Patient-level predictions of a trained model on the cohorts, joined with what the analyses need."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from her2pcr.interim import read_table
from her2pcr.registry.tags import RegisteredVersion
from her2pcr.serving.model import TENSORS_FIELD
from her2pcr.serving.requests import encode_tensors
from her2pcr.training.data import load_stacks, patients_of, read_index

log = logging.getLogger(__name__)


def load_registered(registered_file: Path, model_dir: Path):
    """The registered version train recorded, loaded as the served ``mlflow.pyfunc`` (its own preprocessing
    fingerprint check included), after checking that ``model_dir`` holds that version's training outputs."""
    import mlflow

    version = RegisteredVersion.load(registered_file)
    version.check_trained_in(model_dir)
    return version, mlflow.pyfunc.load_model(version.model_uri)


def served_phases(served) -> list[str]:
    """The phase inputs of a loaded her2pcr pyfunc, in the model's order."""
    return list(served.unwrap_python_model().phases)


def predict_cohorts(served, processed_dir: Path, cohorts: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """P(pCR) per patient for the cohorts, scored by the served model (``mlflow.pyfunc``, tensors mode) on the
    stored inputs; also the patients left out and why.

    The answer's members (the fold models of an ensemble) become columns member_1 ... member_K, for the
    fold-standardised score of the CNN + clinical model."""
    index = read_index(processed_dir, cohorts)
    phases = served_phases(served)
    patients = patients_of(index, cohorts, phases)
    left_out = sorted(set(index.index[index.cohort.isin(cohorts)]) - set(patients))
    if left_out:
        log.warning("%d patients lack phase(s) %s and are not evaluated: %s", len(left_out), phases, left_out)
    rows = []
    for pid in patients:  # one patient per request keeps memory flat whatever the cohort size
        stacks = load_stacks(processed_dir, [pid], phases, index.pcr)
        request = pd.DataFrame([{TENSORS_FIELD: encode_tensors(stacks.inputs, compressed=False)}])
        answer = served.predict(request).iloc[0]
        members = json.loads(answer["members"])
        rows.append({"patient_id": pid, "probability": float(answer["probability"]),
                     "n_stacks": int(answer["n_stacks"]),
                     **({f"member_{k + 1}": v for k, v in enumerate(members)} if len(members) > 1 else {})})
    frame = pd.DataFrame(rows).set_index("patient_id") if rows else \
        pd.DataFrame(columns=["probability", "n_stacks"], index=pd.Index([], name="patient_id"))
    frame["cohort"] = index.cohort.loc[frame.index]
    frame["pcr"] = index.pcr.loc[frame.index].astype(int)
    return frame, left_out


def add_covariates(predictions: pd.DataFrame, interim_dir: Path, truth_file: Path | None,
                   cohorts: list[str] | None = None) -> pd.DataFrame:
    """Receptor status, field strength and (synthetic data only) the oracle probability of each patient;
    ``cohorts``: the patients' cohorts, whose own interim tables are read (all when None)."""
    clinical = read_table(interim_dir, "clinical", cohorts)
    acquisition = read_table(interim_dir, "acquisition", cohorts)
    out = predictions.copy()
    hr_negative = (clinical.er == "negative") & (clinical.pr == "negative")
    out["hormone_receptor"] = np.where(hr_negative.loc[out.index], "ER/PR negative", "ER/PR positive")
    out["receptor_score"] = hr_negative.loc[out.index].astype(float)
    out["field_strength"] = acquisition.field_strength_t.loc[out.index].map(lambda t: f"{t:g} T")
    if truth_file is not None and truth_file.exists():
        truth = pd.read_csv(truth_file).set_index("patient_id")
        out["oracle"] = truth.p_true.reindex(out.index)
    return out

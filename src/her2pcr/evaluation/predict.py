"""Patient-level predictions of a trained model on the cohorts, joined with what the analyses need."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from her2pcr.models.cnn import ensemble_members, model_phases, predict_probability
from her2pcr.training.data import load_stacks, patients_of, read_index

log = logging.getLogger(__name__)


def predict_cohorts(model, processed_dir: Path, cohorts: list[str],
                    members: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """P(pCR) per patient (mean over all its stacks) for the cohorts; also the patients left out and why.

    ``members``: an ensemble's members too (columns member_1 ... member_K, the fold models in fold order), for
    the fold-standardised score of the CNN + clinical model."""
    index = read_index(processed_dir)
    phases = model_phases(model)
    patients = patients_of(index, cohorts, phases)
    left_out = sorted(set(index.index[index.cohort.isin(cohorts)]) - set(patients))
    if left_out:
        log.warning("%d patients lack phase(s) %s and are not evaluated: %s", len(left_out), phases, left_out)
    fold_models = ensemble_members(model) if members else []
    fold_models = fold_models if len(fold_models) > 1 else []
    rows = []
    for pid in patients:  # one patient at a time keeps memory flat whatever the cohort size
        stacks = load_stacks(processed_dir, [pid], phases, index.pcr)
        if fold_models:  # the ensemble is the mean of its members: one pass over them gives both
            per_member = [float(predict_probability(m, stacks.inputs).mean()) for m in fold_models]
            row = {"probability": float(np.mean(per_member)),
                   **{f"member_{k + 1}": v for k, v in enumerate(per_member)}}
        else:
            row = {"probability": float(predict_probability(model, stacks.inputs).mean())}
        rows.append({"patient_id": pid, "n_stacks": len(stacks), **row})
    columns = ["patient_id", "probability", "n_stacks", *(f"member_{k + 1}" for k in range(len(fold_models)))]
    frame = pd.DataFrame(rows, columns=columns).set_index("patient_id")
    frame["cohort"] = index.cohort.loc[frame.index]
    frame["pcr"] = index.pcr.loc[frame.index].astype(int)
    return frame, left_out


def add_covariates(predictions: pd.DataFrame, interim_dir: Path, truth_file: Path | None) -> pd.DataFrame:
    """Receptor status, field strength and (synthetic data only) the oracle probability of each patient."""
    clinical = pd.read_parquet(interim_dir / "clinical.parquet").set_index("patient_id")
    acquisition = pd.read_parquet(interim_dir / "acquisition.parquet").set_index("patient_id")
    out = predictions.copy()
    hr_negative = (clinical.er == "negative") & (clinical.pr == "negative")
    out["hormone_receptor"] = np.where(hr_negative.loc[out.index], "ER/PR negative", "ER/PR positive")
    out["receptor_score"] = hr_negative.loc[out.index].astype(float)
    out["field_strength"] = acquisition.field_strength_t.loc[out.index].map(lambda t: f"{t:g} T")
    if truth_file is not None and truth_file.exists():
        truth = pd.read_csv(truth_file).set_index("patient_id")
        out["oracle"] = truth.p_true.reindex(out.index)
    return out

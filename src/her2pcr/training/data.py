"""Model inputs from data/processed: per-phase slice stacks, labels and the patient of every stack."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from her2pcr.preprocess.settings import COHORTS_DIR


@dataclass
class StackSet:
    """Stacks of a set of patients: inputs[phase] is (n, H, W, C) float32; one label per stack."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray  # int, pCR per stack
    patient_ids: np.ndarray  # patient of each stack

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, patient_ids) -> StackSet:
        """The stacks of the given patients (in this set's order)."""
        keep = np.isin(self.patient_ids, list(patient_ids))
        return StackSet({p: x[keep] for p, x in self.inputs.items()}, self.labels[keep], self.patient_ids[keep])

    def central(self, fraction: float) -> StackSet:
        """Each patient's middle ``fraction`` of stacks (``central_slice``), the ones its probability averages."""
        if fraction >= 1:
            return self
        keep = np.zeros(len(self), dtype=bool)
        for rows in pd.Series(self.patient_ids).groupby(self.patient_ids).indices.values():
            keep[rows[central_slice(len(rows), fraction)]] = True
        return StackSet({p: x[keep] for p, x in self.inputs.items()}, self.labels[keep], self.patient_ids[keep])

    def patient_labels(self) -> pd.Series:
        """One label per patient, sorted by patient id."""
        return pd.Series(self.labels, index=self.patient_ids).groupby(level=0).first().sort_index()




def read_index(processed_dir: Path, cohorts: list[str] | None = None) -> pd.DataFrame:
    """The processed exams' index (cohort, pcr, n_stacks, phases, cache key per patient). With ``cohorts``, only
    theirs, read from the per-cohort files: a stage that uses some cohorts depends on those files only, so a new
    external cohort does not re-run training."""
    if cohorts is None:
        return pd.read_parquet(processed_dir / "index.parquet").set_index("patient_id")
    files = [processed_dir / COHORTS_DIR / f"{cohort}.parquet" for cohort in dict.fromkeys(cohorts)]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"no processed exams for cohort file(s) {missing}: run preprocess (or check the "
                                "cohort names)")
    return pd.concat([pd.read_parquet(f) for f in files]).set_index("patient_id")


def spread_slice_indices(n_stacks: int, limit: int | None) -> np.ndarray:
    """``limit`` stacks spread evenly over the VOI, both ends included (all when None).

    Training stacks cover the VOI from pole to pole (more sections of the same tumour); a prediction averages
    the middle ones (``central_slice``).
    """
    if limit is None or n_stacks <= limit:
        return np.arange(n_stacks)
    return np.unique(np.round(np.linspace(0, n_stacks - 1, limit)).astype(int))


def central_slice(n_stacks: int, fraction: float) -> slice:
    """The middle ``fraction`` of a patient's ``n_stacks`` stacks in slice order (at least one).

    A patient's probability is the mean over these: the VOI is sized for the tumour's widest section, so the
    stacks near its poles show a thin cap of tumour in mostly empty context, and their scores add noise
    (bench/learn.py: the mean over the middle half scores higher than over every stack, in-site and externally).
    """
    keep = max(1, int(round(n_stacks * fraction)))
    start = (n_stacks - keep) // 2
    return slice(start, start + keep)


def load_stacks(
    processed_dir: Path, patient_ids: list[str], phases: list[str], labels: pd.Series,
    max_stacks_per_patient: int | None = None,
) -> StackSet:
    """Concatenate the chosen phases' stacks of the given patients (missing phases are an error)."""
    inputs: dict[str, list[np.ndarray]] = {phase: [] for phase in phases}
    stack_labels, owners = [], []
    for pid in patient_ids:
        with np.load(processed_dir / f"{pid}.npz") as data:
            missing = [p for p in phases if p not in data.files]
            if missing:
                raise ValueError(f"{pid}: processed exam lacks phase(s) {missing}; it has {data.files}")
            n = len(data[phases[0]])
            keep = spread_slice_indices(n, max_stacks_per_patient)
            for phase in phases:
                inputs[phase].append(data[phase][keep].astype(np.float32))  # stored as float16
        stack_labels.append(np.full(len(keep), int(labels[pid])))
        owners.append(np.full(len(keep), pid, dtype=object))
    if not owners:
        raise ValueError("no patients to load")
    return StackSet({p: np.concatenate(v) for p, v in inputs.items()}, np.concatenate(stack_labels),
                    np.concatenate(owners))


def patients_of(index: pd.DataFrame, cohorts: list[str], phases: list[str]) -> list[str]:
    """Patients of the cohorts whose processed exam has every requested phase, in a stable order."""
    chosen = index[index.cohort.isin(cohorts)]
    # astype(bool): an empty selection must still index as a mask
    has_phases = chosen.phases.str.split(";").apply(lambda names: set(phases) <= set(names)).astype(bool)
    return sorted(chosen.index[has_phases])


def patient_probabilities(stack_probabilities: np.ndarray, patient_ids: np.ndarray) -> pd.Series:
    """A patient's probability: the mean over the stacks given (``StackSet.central`` chooses them)."""
    frame = pd.DataFrame({"patient_id": patient_ids, "p": stack_probabilities})
    return frame.groupby("patient_id", sort=True).p.mean()

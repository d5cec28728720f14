"""Subgroup evidence of a version on one cohort (or several pooled): the subgroup variable columns of its patients,
and per variable the groups' n, AUC, TPR / FPR and the equalized-odds disparity (``stats.fairness``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from her2pcr.config import GateParams, SubgroupParams
from her2pcr.interim import read_table
from her2pcr.stats.fairness import VariableFairness, age_band, variable_fairness
from her2pcr.validation.gate import SubgroupEvidence

#: Variables with a meaning of their own; any other name is looked up in the clinical, then the acquisition table.
BUILT_IN = ("age", "hormone_receptor", "field_strength", "site", "vendor")
FROM_PREDICTIONS = ("hormone_receptor", "field_strength")  # columns evaluation.predict.add_covariates adds
FROM_TABLES = {"site": ("clinical", "institution"), "vendor": ("acquisition", "manufacturer")}


def subgroup_columns(frame: pd.DataFrame, interim_dir: Path, cohorts: list[str], params: SubgroupParams
                     ) -> pd.DataFrame:
    """One column per subgroup variable for the patients of ``frame`` (index ``patient_id``)."""
    tables = {name: read_table(interim_dir, name, cohorts) for name in ("clinical", "acquisition")}
    out = pd.DataFrame(index=frame.index)
    for variable in params.variables:
        if variable == "age":
            out[variable] = age_band(tables["clinical"].age.reindex(frame.index), params.age_bands)
            continue
        if variable in FROM_PREDICTIONS:
            out[variable] = frame[variable]
            continue
        table, column = FROM_TABLES.get(variable) or next(
            ((name, variable) for name, t in tables.items() if variable in t.columns), (None, None))
        if table is None:
            raise ValueError(f"subgroup variable {variable!r} is neither built in {list(BUILT_IN)} nor a column of "
                             f"the clinical or acquisition table")
        out[variable] = tables[table][column].reindex(frame.index)
    return out


def subgroup_analysis(frame: pd.DataFrame, columns: pd.DataFrame, threshold: float, gate: GateParams,
                      params: SubgroupParams, seed: int) -> list[VariableFairness]:
    """Every variable's subgroups and disparity; ``frame`` holds pcr and probability per patient."""
    data = frame[["pcr", "probability"]].join(columns)
    return [variable_fairness(data, variable, threshold, gate.min_subgroup_n, params.n_bootstrap, seed)
            for variable in columns.columns]


def gate_evidence(results: list[dict]) -> tuple[SubgroupEvidence, ...]:
    """The gate's view of ``VariableFairness.to_dict()`` results."""
    return tuple(SubgroupEvidence(r["variable"], r["disparity"], tuple(r["too_small"])) for r in results)

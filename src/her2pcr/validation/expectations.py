"""Expectations derived from the training cohort, run with Great Expectations on an external cohort.

The same derivation serves both per-patient tables of :mod:`her2pcr.validation.profile`: the model-input table
(what the gate checks) and the protocol table (what only warns). The training cohort defines what was seen:
numeric columns are expected within the training range (widened by a margin), small sets of values within the
training set, and columns never missing in training to be present. Every patient outside an expectation is
named with the column, its value and what was expected.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from her2pcr.quality.expectations import run_suites

SUITE = "data_quality"  # the model-input suite: its outside fraction is what the gate checks
PROTOCOL_SUITE = "protocol"  # acquisition descriptors: shift warnings only


def _plain(value):
    """numpy scalars -> Python, so expectation kwargs and the JSON outputs serialise."""
    return value.item() if hasattr(value, "item") else value


@dataclass(frozen=True)
class ColumnExpectation:
    """One expectation on one column of the per-patient profile table."""

    column: str
    kind: Literal["between", "in_set", "not_null"]
    min_value: float | None = None
    max_value: float | None = None
    value_set: tuple = field(default_factory=tuple)

    @property
    def gx_type(self) -> str:
        return {"between": "expect_column_values_to_be_between", "in_set": "expect_column_values_to_be_in_set",
                "not_null": "expect_column_values_to_not_be_null"}[self.kind]

    def expected(self) -> str:
        """What the column should hold, in words."""
        if self.kind == "between":
            return f"between {self.min_value:.6g} and {self.max_value:.6g}"
        if self.kind == "in_set":
            return f"one of {{{', '.join(map(str, self.value_set))}}}"
        return "not missing"

    def to_gx(self):
        import great_expectations as gx

        e = gx.expectations
        if self.kind == "between":
            return e.ExpectColumnValuesToBeBetween(column=self.column, min_value=self.min_value,
                                                   max_value=self.max_value)
        if self.kind == "in_set":
            return e.ExpectColumnValuesToBeInSet(column=self.column, value_set=list(self.value_set))
        return e.ExpectColumnValuesToNotBeNull(column=self.column)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["value_set"] = list(self.value_set)
        return {k: v for k, v in data.items() if v not in (None, [])}


def _is_set_column(values: pd.Series, column: str, set_columns: tuple[str, ...]) -> bool:
    return column in set_columns or not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def derive_expectations(train: pd.DataFrame, margin: float, set_columns: tuple[str, ...] = ()
                        ) -> list[ColumnExpectation]:
    """Expectations for every column of ``train`` (one row per training patient).

    Numeric: [min - margin * width, max + margin * width] of the training values; a column constant in training
    is widened by margin * |value| instead, so a rounding difference is not a failure. Set columns (named, or
    boolean / text): the training values. Columns never missing in training: not null. Columns without any
    training value get nothing (there is nothing to compare with).
    """
    out = []
    for column in train.columns:
        values = train[column].dropna()
        if values.empty:
            continue
        if not train[column].isna().any():
            out.append(ColumnExpectation(column, "not_null"))
        if _is_set_column(train[column], column, set_columns):
            value_set = sorted({_plain(v) for v in values}, key=lambda v: (isinstance(v, str), v))
            out.append(ColumnExpectation(column, "in_set", value_set=tuple(value_set)))
            continue
        low, high = float(values.min()), float(values.max())
        widen = margin * ((high - low) if high > low else abs(low))
        out.append(ColumnExpectation(column, "between", min_value=low - widen, max_value=high + widen))
    return out


@dataclass(frozen=True)
class DataQualityOutcome:
    """Result of the suite on one cohort: which patients are outside which expectation, and why."""

    n_patients: int
    success: bool
    violations: list[dict]  # patient_id, column, value, expected (one per patient and failed expectation)
    results_file: Path
    docs_dir: Path

    @property
    def outside_patients(self) -> list[str]:
        return sorted({v["patient_id"] for v in self.violations})

    @property
    def outside_fraction(self) -> float:
        return len(self.outside_patients) / self.n_patients if self.n_patients else 0.0

    def to_dict(self) -> dict:
        return {"n_patients": self.n_patients, "success": self.success,
                "n_outside": len(self.outside_patients), "outside_fraction": self.outside_fraction,
                "outside_patients": self.outside_patients, "violations": self.violations,
                "results_file": str(self.results_file), "data_docs": str(self.docs_dir / "index.html")}


def _row_index(entry) -> int | None:
    """GX lists an unexpected row as its index, or as a dict holding it when index columns are named."""
    if isinstance(entry, dict):
        entry = entry.get("index")
    return int(entry) if isinstance(entry, int | float) and not isinstance(entry, bool) else None


def _value(value):
    """A table cell for JSON: NaN -> None (the not-null failures), numpy -> Python."""
    value = _plain(value)
    return None if isinstance(value, float) and math.isnan(value) else value


def violations_from_result(result: dict, frame: pd.DataFrame,
                           expectations: list[ColumnExpectation]) -> list[dict]:
    """Name each patient GX found outside an expectation, from the validation result (``to_json_dict``).

    ``frame`` is the validated table with ``patient_id`` as a column and a 0..n-1 index, as GX saw it.
    """
    by_key = {(e.gx_type, e.column): e for e in expectations}
    out = []
    for item in result["results"]:
        if item["success"]:
            continue
        config = item["expectation_config"]
        column = config["kwargs"]["column"]
        expectation = by_key[(config["type"], column)]
        for entry in item["result"].get("unexpected_index_list") or []:
            row = _row_index(entry)
            if row is None or not 0 <= row < len(frame):
                continue
            out.append({"patient_id": str(frame.at[row, "patient_id"]), "column": column,
                        "value": _value(frame.at[row, column]), "expected": expectation.expected(),
                        "expectation": expectation.gx_type})
    return sorted(out, key=lambda v: (v["patient_id"], v["column"], v["expectation"]))


def check_suites(suites: dict[str, tuple[pd.DataFrame, list[ColumnExpectation]]], out_dir: Path
                 ) -> dict[str, DataQualityOutcome]:
    """Run each table (index ``patient_id``) against its expectations with GX, in one context so one Data Docs
    site (out_dir/docs) lists every suite; results JSON as out_dir/<suite>.json."""
    frames = {name: table.reset_index() for name, (table, _) in suites.items()}
    outcomes = run_suites({name: (frames[name], [e.to_gx() for e in expectations])
                           for name, (_, expectations) in suites.items()}, out_dir)
    out = {}
    for name, (_, expectations) in suites.items():
        results_file = out_dir / f"{name}.json"
        result = json.loads(results_file.read_text(encoding="utf-8"))
        out[name] = DataQualityOutcome(n_patients=len(frames[name]), success=outcomes[name].success,
                                       violations=violations_from_result(result, frames[name], expectations),
                                       results_file=results_file, docs_dir=out_dir / "docs")
    return out


def check_cohort(table: pd.DataFrame, expectations: list[ColumnExpectation], out_dir: Path,
                 suite: str = SUITE) -> DataQualityOutcome:
    """Run the expectations on ``table`` (index ``patient_id``) with GX; results JSON and Data Docs in out_dir."""
    return check_suites({suite: (table, expectations)}, out_dir)[suite]

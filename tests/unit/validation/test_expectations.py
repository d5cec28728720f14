"""Expectations derived from a training table flag exactly the patients outside its range or set (real GX run)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from her2pcr.validation.expectations import ColumnExpectation, check_cohort, derive_expectations


def table(rows: dict[str, dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "patient_id"
    return frame


TRAIN = table({
    "t1": {"tr_ms": 4.0, "field_strength_t": 1.5, "timing_present": True, "gap_s": np.nan, "bolus_ml": 15.0},
    "t2": {"tr_ms": 5.0, "field_strength_t": 1.5, "timing_present": False, "gap_s": 100.0, "bolus_ml": 15.0},
    "t3": {"tr_ms": 6.0, "field_strength_t": 1.5, "timing_present": True, "gap_s": 140.0, "bolus_ml": 15.0},
})


def test_derived_expectations_per_column_kind():
    derived = {(e.column, e.kind): e for e in derive_expectations(TRAIN, 0.1, set_columns=("field_strength_t",))}
    tr = derived["tr_ms", "between"]
    assert (tr.min_value, tr.max_value) == pytest.approx((3.8, 6.2))  # [4, 6] widened by 0.1 x width 2
    assert derived["field_strength_t", "in_set"].value_set == (1.5,)
    assert derived["timing_present", "in_set"].value_set == (False, True)  # boolean: a set, not a range
    assert ("gap_s", "not_null") not in derived and ("gap_s", "between") in derived  # missing in training
    assert ("tr_ms", "not_null") in derived
    bolus = derived["bolus_ml", "between"]  # constant in training: widened by 0.1 x |value|
    assert (bolus.min_value, bolus.max_value) == pytest.approx((13.5, 16.5))


def test_a_column_without_any_training_value_gets_no_expectation():
    train = TRAIN.assign(empty=np.nan)
    assert not [e for e in derive_expectations(train, 0.1) if e.column == "empty"]


def test_expected_text_says_the_range_or_the_set():
    assert ColumnExpectation("x", "between", min_value=1, max_value=2.5).expected() == "between 1 and 2.5"
    assert ColumnExpectation("x", "in_set", value_set=(1.5, 3.0)).expected() == "one of {1.5, 3.0}"
    assert ColumnExpectation("x", "not_null").expected() == "not missing"


def test_gx_flags_exactly_the_patients_outside(tmp_path):
    expectations = derive_expectations(TRAIN, 0.1, set_columns=("field_strength_t",))
    cohort = table({
        "inside": {"tr_ms": 6.2, "field_strength_t": 1.5, "timing_present": True, "gap_s": np.nan, "bolus_ml": 16.5},
        "high_tr": {"tr_ms": 6.3, "field_strength_t": 1.5, "timing_present": True, "gap_s": 120.0, "bolus_ml": 15.0},
        "three_t": {"tr_ms": 5.0, "field_strength_t": 3.0, "timing_present": True, "gap_s": 120.0, "bolus_ml": 15.0},
        "no_tr": {"tr_ms": np.nan, "field_strength_t": 1.5, "timing_present": False, "gap_s": 99.0,
                  "bolus_ml": 15.0},
        "twice": {"tr_ms": 3.0, "field_strength_t": 1.5, "timing_present": True, "gap_s": 120.0, "bolus_ml": 20.0},
    })
    outcome = check_cohort(cohort, expectations, tmp_path)
    found = {(v["patient_id"], v["column"], v["expectation"].removeprefix("expect_column_values_to_"))
             for v in outcome.violations}
    assert found == {
        ("high_tr", "tr_ms", "be_between"), ("three_t", "field_strength_t", "be_in_set"),
        ("no_tr", "tr_ms", "not_be_null"),
        ("twice", "tr_ms", "be_between"), ("twice", "bolus_ml", "be_between"),
    }
    by_key = {(v["patient_id"], v["column"]): v for v in outcome.violations}
    high = by_key["high_tr", "tr_ms"]
    assert high["value"] == 6.3 and high["expected"] == "between 3.8 and 6.2"
    assert by_key["three_t", "field_strength_t"]["expected"] == "one of {1.5}"
    assert by_key["no_tr", "tr_ms"]["value"] is None
    assert outcome.outside_patients == ["high_tr", "no_tr", "three_t", "twice"]
    assert outcome.outside_fraction == pytest.approx(4 / 5) and not outcome.success
    data = outcome.to_dict()
    json.dumps(data, allow_nan=False)
    assert (tmp_path / "docs" / "index.html").exists()
    assert json.loads(outcome.results_file.read_text())["success"] is False


def test_a_cohort_inside_every_expectation_succeeds(tmp_path):
    outcome = check_cohort(TRAIN, derive_expectations(TRAIN, 0.0), tmp_path)
    assert outcome.success and outcome.violations == [] and outcome.outside_fraction == 0.0

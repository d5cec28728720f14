"""Shift warnings: one plain line per protocol descriptor and kind of expectation, unseen values named."""

from __future__ import annotations

from pathlib import Path

from her2pcr.validation.expectations import ColumnExpectation, DataQualityOutcome
from her2pcr.validation.shift import shift_warnings

EXPECTATIONS = [ColumnExpectation("field_strength_t", "in_set", value_set=(1.5,)),
                ColumnExpectation("n_post_phases", "in_set", value_set=(3, 4)),
                ColumnExpectation("echo_time_ms", "between", min_value=1.0, max_value=2.0),
                ColumnExpectation("echo_time_ms", "not_null")]


def violation(pid: str, column: str, value, expectation: ColumnExpectation) -> dict:
    return {"patient_id": pid, "column": column, "value": value, "expected": expectation.expected(),
            "expectation": expectation.gx_type}


def outcome(violations: list[dict], n: int = 5) -> DataQualityOutcome:
    return DataQualityOutcome(n, not violations, violations, Path("protocol.json"), Path("docs"))


def test_one_warning_per_descriptor_and_kind_most_patients_first():
    field, phases, echo, echo_present = EXPECTATIONS
    found = shift_warnings(outcome([
        violation("a", "field_strength_t", 3.0, field), violation("b", "field_strength_t", 3.0, field),
        violation("a", "n_post_phases", 6, phases), violation("c", "n_post_phases", 5, phases),
        violation("d", "n_post_phases", 6, phases),
        violation("a", "echo_time_ms", 2.5, echo), violation("b", "echo_time_ms", 0.5, echo),
        violation("e", "echo_time_ms", None, echo_present),
    ]), EXPECTATIONS)
    assert [w.text for w in found] == [
        "n_post_phases: unseen values 5, 6 in 3 of 5 patients (training: 3, 4)",
        "echo_time_ms: 2 of 5 patients outside the training range (between 1 and 2), observed 0.5 to 2.5",
        "field_strength_t: unseen value 3 in 2 of 5 patients (training: 1.5)",
        "echo_time_ms: missing in 1 of 5 patients (never missing in training)",
    ]
    assert found[0].to_dict()["unseen"] == [5, 6] and found[1].to_dict()["observed"] == [0.5, 2.5]


def test_a_cohort_within_the_training_protocol_has_no_warning():
    assert shift_warnings(outcome([]), EXPECTATIONS) == []

"""The gate on both sides of every threshold, with one reason per check for passes and failures alike; protocol
shift warnings are listed with the decision and never change it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from her2pcr.config import GateParams
from her2pcr.registry.tags import FAIL, PASS
from her2pcr.validation.gate import GateEvidence, SubgroupEvidence, decide

GATE = GateParams(min_patients=10, min_auc=0.6, min_auc_ci_low=0.5, max_significant_correlations=1,
                  max_outside_fraction=0.25, max_equalized_odds_disparity=0.6, min_subgroup_n=10)
# Every measured value exactly at its threshold: thresholds are inclusive, so this passes.
AT_THRESHOLDS = GateEvidence(n=10, n_positive=5, auc=0.6, auc_ci_low=0.5, n_significant=1, n_tested=8, alpha=0.05,
                             n_outside=5, n_profiled=20)
CHECKS = ["patients", "classes", "auc", "auc_ci_low", "acquisition_correlations", "data_quality", "fairness"]


def test_values_at_the_thresholds_pass_with_a_reason_per_check():
    decision = decide(AT_THRESHOLDS, GATE)
    assert decision.decision == PASS and decision.passed
    assert [c.name for c in decision.checks] == CHECKS
    assert all(reason.startswith(f"{name} pass: ") for name, reason in zip(CHECKS, decision.reasons, strict=True))
    assert decision.reasons[0] == "patients pass: 10 >= min_patients 10"
    assert decision.reasons[2] == "auc pass: 0.6 >= min_auc 0.6"
    assert "1 of 8 parameters with BH-adjusted p < 0.05 <= max_significant_correlations 1" in decision.reasons[4]
    assert "5 of 20 patients (25.0%)" in decision.reasons[5]
    assert all("; " not in reason for reason in decision.reasons)  # the version tag joins them with "; "


@pytest.mark.parametrize(("check", "changes", "text"), [
    ("patients", {"n": 9, "n_positive": 4}, "9 < min_patients 10"),
    ("classes", {"n_positive": 0}, "0 pCR and 10 non-pCR"),
    ("classes", {"n_positive": 10}, "10 pCR and 0 non-pCR"),
    ("auc", {"auc": 0.5999}, "0.5999 < min_auc 0.6"),
    ("auc", {"auc": None}, "not computed"),
    ("auc_ci_low", {"auc_ci_low": 0.4999}, "0.4999 < min_auc_ci_low 0.5"),
    ("auc_ci_low", {"auc_ci_low": None}, "not computed"),
    ("acquisition_correlations", {"n_significant": 2}, "2 of 8 parameters with BH-adjusted p < 0.05 > "),
    ("data_quality", {"n_outside": 6},
     "6 of 20 patients (30.0%) outside the training-derived model-input expectations > "),
])
def test_each_threshold_crossed_fails_only_its_check(check, changes, text):
    decision = decide(replace(AT_THRESHOLDS, **changes), GATE)
    assert decision.decision == FAIL
    failed = [c for c in decision.checks if not c.passed]
    assert [c.name for c in failed] == [check]
    assert failed[0].reason.startswith(f"{check} fail: ") and text in failed[0].reason
    assert len(decision.reasons) == len(CHECKS)


def test_a_low_ci_bound_says_how_high_the_auc_must_be_at_the_cohorts_size():
    small = decide(replace(AT_THRESHOLDS, n=28, n_positive=16, auc=0.672, auc_ci_low=0.453), GATE)
    large = decide(replace(AT_THRESHOLDS, n=1000, n_positive=500, auc=0.53, auc_ci_low=0.49), GATE)
    assert "with 16 pCR and 12 other patients, the bound reaches it from an AUC of about 0.70" in small.reasons[3]
    assert "from an AUC of about 0.54" in large.reasons[3]
    assert "Hanley-McNeil" not in decide(AT_THRESHOLDS, GATE).reasons[3]  # said only when the check fails


def test_no_profiled_patient_counts_as_nobody_outside():
    decision = decide(replace(AT_THRESHOLDS, n_outside=0, n_profiled=0), GATE)
    assert decision.passed


def test_to_dict_carries_decision_reasons_and_checks():
    data = decide(replace(AT_THRESHOLDS, auc=0.2), GATE).to_dict()
    assert data["decision"] == FAIL and len(data["reasons"]) == len(CHECKS)
    assert data["checks"]["auc"]["passed"] is False and data["checks"]["patients"]["passed"] is True
    assert data["shift_warnings"] == []


WARNINGS = ("field_strength_t: unseen value 3 in 4 of 20 patients (training: 1.5)",
            "bolus_volume_ml: 20 of 20 patients outside the training range (between 13.5 and 16.5), observed 30")


@pytest.mark.parametrize("evidence", [AT_THRESHOLDS, replace(AT_THRESHOLDS, auc=0.2)])
def test_shift_warnings_are_listed_but_never_change_the_decision(evidence):
    without = decide(evidence, GATE)
    warned = decide(replace(evidence, shift_warnings=WARNINGS), GATE)
    assert warned.passed == without.passed and warned.reasons == without.reasons
    assert warned.shift_warnings == WARNINGS and warned.to_dict()["shift_warnings"] == list(WARNINGS)


def test_fairness_fails_over_the_maximum_disparity_and_names_what_it_could_not_judge():
    at_limit = replace(AT_THRESHOLDS, subgroups=(SubgroupEvidence("hormone_receptor", 0.6),
                                                 SubgroupEvidence("age", 0.2, ("<45",)),
                                                 SubgroupEvidence("site", None, ("inst3", "inst4"))))
    check = decide(at_limit, GATE).to_dict()["checks"]["fairness"]
    assert check["passed"]  # inclusive, like every threshold
    assert "hormone_receptor 0.6, age 0.2 <= max_equalized_odds_disparity 0.6" in check["reason"]
    assert "not judged (fewer than min_subgroup_n 10 patients of a class): age <45, site inst3/inst4" in \
        check["reason"]
    over = replace(at_limit, subgroups=(SubgroupEvidence("hormone_receptor", 0.61), SubgroupEvidence("age", 0.2)))
    decision = decide(over, GATE)
    assert decision.decision == FAIL
    assert decision.reasons[-1].startswith("fairness fail: ") and "(over: hormone_receptor)" in decision.reasons[-1]
    assert "; " not in decision.reasons[-1]


def test_fairness_with_nothing_to_compare_passes_and_says_so():
    only_small = replace(AT_THRESHOLDS, subgroups=(SubgroupEvidence("age", None, ("<45", "45-54", ">=55")),))
    reason = decide(only_small, GATE).reasons[-1]
    assert reason.startswith("fairness pass: no variable has two subgroups to compare")
    assert "age <45/45-54/>=55" in reason

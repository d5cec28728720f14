"""The validation gate: a pure decision from a cohort's measured evidence and the thresholds of params.yaml.

Every check yields one human-readable reason, for a pass as for a failure, so the version tag says why a
version may or may not be promoted without opening the report. The data-quality check counts only patients
outside the expectations on the model's inputs; protocol shift warnings are carried in the decision, listed
next to the checks, and never change whether it passes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from her2pcr.config import GateParams
from her2pcr.registry.tags import FAIL, PASS
from her2pcr.stats.roc import auc_for_ci_low


@dataclass(frozen=True)
class SubgroupEvidence:
    """One subgroup variable: its equalized-odds disparity (None with fewer than two judged subgroups) and the
    subgroups too small, or of one class, to be judged."""

    variable: str
    disparity: float | None
    not_judged: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateEvidence:
    """What validation measured on one external cohort."""

    n: int                          # patients with a prediction
    n_positive: int                 # of which pCR
    auc: float | None               # None when it cannot be computed (fewer than 2 patients in a class)
    auc_ci_low: float | None        # lower DeLong 95 % bound
    n_significant: int              # acquisition parameters with BH-adjusted p < alpha
    n_tested: int                   # acquisition parameters with a correlation test
    alpha: float
    n_outside: int                  # patients outside a training-derived model-input expectation
    n_profiled: int                 # patients the model-input suite ran on
    shift_warnings: tuple[str, ...] = ()  # protocol descriptors outside training (reported, not gated)
    subgroups: tuple[SubgroupEvidence, ...] = ()


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateDecision:
    checks: tuple[Check, ...]
    shift_warnings: tuple[str, ...] = ()  # listed with the decision; they do not change ``passed``

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def decision(self) -> str:
        return PASS if self.passed else FAIL

    @property
    def reasons(self) -> list[str]:
        return [check.reason for check in self.checks]

    def to_dict(self) -> dict:
        return {"decision": self.decision, "reasons": self.reasons,
                "checks": {c.name: {"passed": c.passed, "reason": c.reason} for c in self.checks},
                "shift_warnings": list(self.shift_warnings)}


def _check(name: str, passed: bool, text: str) -> Check:
    return Check(name, passed, f"{name} {PASS if passed else FAIL}: {text}")


def _at_least(name: str, value: float | None, threshold: float, key: str) -> Check:
    if value is None:
        return _check(name, False, f"not computed (needs at least 2 patients in each class), {key} {threshold:.4g}")
    passed = value >= threshold
    return _check(name, passed, f"{value:.4g} {'>=' if passed else '<'} {key} {threshold:.4g}")


def _ci_low(e: GateEvidence, gate: GateParams) -> Check:
    """The CI's lower bound; a failure also says how high the AUC must be for a cohort of this size to pass."""
    check = _at_least("auc_ci_low", e.auc_ci_low, gate.min_auc_ci_low, "min_auc_ci_low")
    n_negative = e.n - e.n_positive
    if check.passed or e.auc_ci_low is None or gate.min_auc_ci_low >= 1:
        return check
    needed = auc_for_ci_low(gate.min_auc_ci_low, e.n_positive, n_negative)
    return replace(check, reason=f"{check.reason} (with {e.n_positive} pCR and {n_negative} other patients, the "
                                 f"bound reaches it from an AUC of about {needed:.2f}, Hanley-McNeil SE)")


def _fairness(subgroups: tuple[SubgroupEvidence, ...], gate: GateParams) -> Check:
    """Every variable with two or more judged subgroups within the maximum disparity; what could not be judged is
    named in the reason (it neither passes nor fails the check)."""
    limit = gate.max_equalized_odds_disparity
    judged = [s for s in subgroups if s.disparity is not None]
    over = [s for s in judged if s.disparity > limit]
    parts = [f"{s.variable} {s.disparity:.3g}" for s in judged]
    text = (f"equalized-odds disparity {', '.join(parts)} {'>' if over else '<='} max_equalized_odds_disparity "
            f"{limit:g}" if judged else "no variable has two subgroups to compare")
    if over:
        text += f" (over: {', '.join(s.variable for s in over)})"
    unjudged = [f"{s.variable} {'/'.join(s.not_judged)}" for s in subgroups if s.not_judged]
    unjudged += [f"{s.variable} (fewer than two judged subgroups)" for s in subgroups
                 if s.disparity is None and not s.not_judged]
    if unjudged:
        text += (f", not judged (fewer than min_subgroup_n {gate.min_subgroup_n} patients of a class): "
                 f"{', '.join(unjudged)}")
    return _check("fairness", not over, text)


def decide(evidence: GateEvidence, gate: GateParams) -> GateDecision:
    """Pass only when every check passes; thresholds are inclusive (a value equal to its threshold passes)."""
    e = evidence
    n_negative = e.n - e.n_positive
    fraction = e.n_outside / e.n_profiled if e.n_profiled else 0.0
    checks = (
        _check("patients", e.n >= gate.min_patients,
               f"{e.n} {'>=' if e.n >= gate.min_patients else '<'} min_patients {gate.min_patients}"),
        _check("classes", e.n_positive > 0 and n_negative > 0,
               f"{e.n_positive} pCR and {n_negative} non-pCR (both classes needed)"),
        _at_least("auc", e.auc, gate.min_auc, "min_auc"),
        _ci_low(e, gate),
        _check("acquisition_correlations", e.n_significant <= gate.max_significant_correlations,
               f"{e.n_significant} of {e.n_tested} parameters with BH-adjusted p < {e.alpha:g} "
               f"{'<=' if e.n_significant <= gate.max_significant_correlations else '>'} "
               f"max_significant_correlations {gate.max_significant_correlations}"),
        _check("data_quality", fraction <= gate.max_outside_fraction,
               f"{e.n_outside} of {e.n_profiled} patients ({fraction:.1%}) outside the training-derived "
               f"model-input expectations {'<=' if fraction <= gate.max_outside_fraction else '>'} "
               f"max_outside_fraction {gate.max_outside_fraction:.1%}"),
        _fairness(e.subgroups, gate),
    )
    return GateDecision(checks, tuple(e.shift_warnings))

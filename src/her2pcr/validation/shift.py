"""Protocol shift warnings: the acquisition descriptors of an external cohort outside what training saw.

They never fail the gate (another site acquires differently by nature, and the preprocessing exists to absorb
it); they say plainly where a cohort differs, so a reader can weigh the metrics and the acquisition correlations.
One warning per descriptor and kind of expectation, e.g. ``field_strength_t: unseen value 3 in 1 of 4 patients
(training: 1.5)``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from her2pcr.validation.expectations import ColumnExpectation, DataQualityOutcome


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass(frozen=True)
class ShiftWarning:
    """Patients of a cohort outside one training-derived expectation on one protocol descriptor."""

    column: str
    kind: str            # between, in_set or not_null (as ColumnExpectation.kind)
    n_patients: int      # patients outside
    n_profiled: int      # patients of the cohort
    expected: str        # the expectation in words
    unseen: tuple = ()   # in_set: the values training never had
    observed: tuple = ()  # between: (lowest, highest) of the values outside

    @property
    def text(self) -> str:
        """One line, without "; " (the registry tag joins the warnings with it)."""
        share = f"{self.n_patients} of {self.n_profiled} patients"
        if self.kind == "in_set":
            values = ", ".join(_text(v) for v in self.unseen)
            word = "value" if len(self.unseen) == 1 else "values"
            training = self.expected.removeprefix("one of {").removesuffix("}")
            return f"{self.column}: unseen {word} {values} in {share} (training: {training})"
        if self.kind == "between":
            low, high = self.observed
            seen = _text(low) if low == high else f"{_text(low)} to {_text(high)}"
            return f"{self.column}: {share} outside the training range ({self.expected}), observed {seen}"
        return f"{self.column}: missing in {share} (never missing in training)"

    def to_dict(self) -> dict:
        return {"column": self.column, "kind": self.kind, "n_patients": self.n_patients,
                "n_profiled": self.n_profiled, "expected": self.expected, "unseen": list(self.unseen),
                "observed": list(self.observed), "text": self.text}


def shift_warnings(outcome: DataQualityOutcome, expectations: list[ColumnExpectation]) -> list[ShiftWarning]:
    """The warnings of a protocol-suite outcome, most patients first (then by descriptor name)."""
    kinds = {e.gx_type: e.kind for e in expectations}
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for violation in outcome.violations:
        grouped[violation["column"], kinds[violation["expectation"]]].append(violation)
    out = []
    for (column, kind), violations in grouped.items():
        values = [v["value"] for v in violations if v["value"] is not None]
        unseen: tuple = ()
        observed: tuple = ()
        if kind == "in_set":
            unseen = tuple(sorted(set(values), key=lambda v: (isinstance(v, str), v)))
        elif kind == "between" and values:
            observed = (min(values), max(values))
        out.append(ShiftWarning(column, kind, len({v["patient_id"] for v in violations}), outcome.n_patients,
                                violations[0]["expected"], unseen, observed))
    return sorted(out, key=lambda w: (-w.n_patients, w.column, w.kind))

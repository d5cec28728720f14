"""The preprocessing chain's settings and the definitions every stage shares (the tumour box's fields, the phase
input names), on their own: the params schema extends the settings, and importing them does not import the chain's
transforms (so a stage that only reads params does not depend on the chain's code)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Box(NamedTuple):
    """Tumour box, 0-based inclusive bounds on the exam grid (the order of ``boxes.csv``)."""

    row_start: int
    row_end: int
    column_start: int
    column_end: int
    slice_start: int
    slice_end: int

    @classmethod
    def of(cls, box: Sequence[int]) -> Box:
        """A ``Box`` from any 6-sequence of integers; ValueError naming the problem otherwise."""
        values = tuple(box)
        if len(values) != len(cls._fields):
            raise ValueError(
                f"box needs {len(cls._fields)} values ({', '.join(cls._fields)}), got {len(values)}: {values}"
            )
        ints = []
        for name, value in zip(cls._fields, values, strict=True):
            if isinstance(value, bool) or not float(value).is_integer():
                raise ValueError(f"box {name} must be an integer, got {value!r}")
            ints.append(int(value))
        return cls(*ints)


def phase_names(n_phases: int) -> list[str]:
    """Input names of an exam's phases: ``pre``, ``post1``, ``post2``, ..."""
    if n_phases < 1:
        raise ValueError("an exam needs at least one phase")
    return ["pre"] + [f"post{k}" for k in range(1, n_phases)]


#: The processed folder's record of the chain that made it (settings and fingerprint).
CHAIN_FILE = "chain.json"
#: The processed folder's per-cohort index files: <cohort>.parquet, each cohort's rows of index.parquet.
COHORTS_DIR = "cohorts"


class PreprocessConfig(BaseModel):
    """Settings of the deterministic chain (the chain's keys of the ``preprocess`` section of params)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n4_mode: Literal["per_exam", "per_phase", "off"] = "per_exam"
    n4_shrink_factor: int = Field(default=4, ge=1)
    margin_mm: float = Field(default=0.0, ge=0, description="in-plane margin added to the box on every side")
    spacing_mm: float | None = Field(default=None, gt=0, description="in-plane resampling; None = native grid")
    fit_voi: bool = Field(default=False, description="resample a VOI wider than the input coarser, never crop it")
    intensity: Literal["exam_enhancement", "exam_reference", "max_per_input"] = "max_per_input"
    intensity_range: float = Field(default=4.0, gt=0, description="exam_*: value / reference mapped to 1")
    subtractions: bool = Field(default=False, description="derived inputs subK = postK - pre")
    input_size: int = Field(default=156, ge=1)
    channels: int = Field(default=3, ge=1)

    @field_validator("channels")
    @classmethod
    def _odd_channels(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"channels must be odd (a centre slice and its neighbours), got {value}")
        return value

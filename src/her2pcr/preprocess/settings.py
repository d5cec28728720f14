"""The preprocessing chain's settings, on their own: the params schema extends them, and importing them does not
import the chain's transforms (so a stage that only reads params does not depend on the chain's code)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The processed folder's record of the chain that made it (settings and fingerprint).
CHAIN_FILE = "chain.json"


class PreprocessConfig(BaseModel):
    """Settings of the deterministic chain (the chain's keys of the ``preprocess`` section of params)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n4_mode: Literal["per_exam", "per_phase", "off"] = "per_exam"
    n4_shrink_factor: int = Field(default=4, ge=1)
    margin_mm: float = Field(default=0.0, ge=0, description="in-plane margin added to the box on every side")
    spacing_mm: float | None = Field(default=None, gt=0, description="in-plane resampling; None = native grid")
    fit_voi: bool = Field(default=False, description="resample a VOI wider than the input coarser, never crop it")
    intensity: Literal["exam_reference", "max_per_input"] = "max_per_input"
    intensity_range: float = Field(default=4.0, gt=0, description="exam_reference: value / reference mapped to 1")
    subtractions: bool = Field(default=False, description="derived inputs subK = postK - pre")
    input_size: int = Field(default=156, ge=1)
    channels: int = Field(default=3, ge=1)

    @field_validator("channels")
    @classmethod
    def _odd_channels(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"channels must be odd (a centre slice and its neighbours), got {value}")
        return value

"""The simulator's site protocols (conf/sites.yaml): one institution's scanner, sequence and population."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from her2pcr.config import Strict, read_yaml

Range = Annotated[tuple[float, float, float], Field(description="median, min, max")]


class SiteProtocol(Strict):
    """One institution's acquisition protocol (conf/sites.yaml)."""

    manufacturer: str
    model_name: str
    layout: Literal["per_phase_description", "per_phase_trigger", "multiphase"]
    folder_layout: Literal["nested", "flat"]
    timing_tag: Literal["AcquisitionTime", "ContentTime", "TriggerTime"]
    timing_present: float = Field(ge=0, le=1)
    field_3t: float = Field(ge=0, le=1)
    pixel_spacing_mm: Range
    slice_thickness_mm: Range
    repetition_time_ms: Range
    echo_time_ms: Range
    phase_encoding_steps: Range
    percent_sampling: Range
    flip_angle_deg: Range
    bolus_volume_ml: Range
    post_phases: dict[int, float]
    phase_spacing_s: Range
    first_post_centre_s: Range
    contrast_agent: Literal["gadobutrol", "gadoterate"]
    snr: Range
    receive_bias_strength: float = Field(ge=0, le=1)
    fat_suppression: bool
    motion_mm: float = Field(ge=0)
    gain: Range
    regimen: dict[str, float]
    pcr_logit_offset: float

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SiteProtocol:
        for name, value in self:
            if isinstance(value, tuple) and len(value) == 3 and not value[1] <= value[0] <= value[2]:
                raise ValueError(f"{name}: median {value[0]} not within [{value[1]}, {value[2]}]")
        if min(self.post_phases) < 1:
            raise ValueError("post_phases: at least one post-contrast phase")
        return self


def load_sites(path: Path) -> dict[str, SiteProtocol]:
    return {name: SiteProtocol.model_validate(spec) for name, spec in read_yaml(path).items()}

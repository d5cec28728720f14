"""Plain data records passed between simulator steps (no behaviour)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Identity:
    """Realistic but fake identifying values written into the DICOM headers.

    They exist only so de-identification downstream can be tested; the
    pseudonymous ``patient_id`` of the manifests is the only key that may
    leave ingest.
    """

    patient_id: str  # pseudonymous study id, written as ClinicalTrialSubjectID
    patient_name: str  # fake "FAMILY^GIVEN"
    birth_date: str  # fake YYYYMMDD
    mrn: str  # fake medical record number, written as PatientID
    accession_number: str
    sex: str = "F"


@dataclass(frozen=True)
class Acquisition:
    """One exam's acquisition protocol, drawn from its site's table."""

    site: str
    manufacturer: str
    model_name: str
    field_strength_t: float
    pixel_spacing_mm: float
    slice_thickness_mm: float
    repetition_time_ms: float
    echo_time_ms: float
    flip_angle_deg: float
    phase_encoding_steps: int
    percent_sampling: float
    bolus_volume_ml: float
    contrast_agent: str
    n_post: int
    phase_times_s: tuple[float, ...]  # acquisition centre of each phase, s after injection
    matrix: int  # rows == columns
    slices: int
    origin_mm: tuple[float, float, float]  # ImagePositionPatient of the first slice
    direction: tuple[float, ...]  # ImageOrientationPatient row then column cosines (6)
    layout: str  # per_phase_description | per_phase_trigger | multiphase
    folder_layout: str  # nested | flat
    timing_tag: str | None  # AcquisitionTime | TriggerTime | ContentTime | None (missing)
    study_date: str  # YYYYMMDD (fake, deterministic)
    study_time_s: float  # seconds after midnight at which the pre-contrast phase starts
    phase_duration_s: float = 0.0  # acquisition time of one phase; the image averages over it


@dataclass
class ExamImages:
    """Rendered exam: one uint16 volume per phase, shape (slices, rows, columns)."""

    identity: Identity
    acquisition: Acquisition
    phases: list[np.ndarray]  # index 0 is pre-contrast
    phase_names: list[str] = field(default_factory=list)  # pre, post1, post2, ...

"""Fake identifying values for the DICOM headers (never real people; de-identification test bait)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from her2pcr.synth.exam import Identity

FAMILY = ("ABERNATHY", "BRIGHTWATER", "CALLOWAY", "DUNMORE", "EVERSHAW", "FAIRCHILD", "GALLOWAY",
          "HOLLINGSWORTH", "IVERSEN", "JESSAMINE", "KINGSLEY", "LOCKHART", "MERRIWEATHER", "NORTHCOTT",
          "OAKHURST", "PENDLETON", "QUINCEY", "ROOKWOOD", "SUMMERFIELD", "THORNBURY", "UPWOOD",
          "VANTERPOOL", "WHITLOCK", "YARBOROUGH")
GIVEN = ("ADELINE", "BEATRIX", "CORDELIA", "DELPHINE", "EULALIA", "FLORENTINE", "GWENDOLYN", "HONORIA",
         "ISOLDE", "JOSEPHINE", "KATHARINA", "LEONORA", "MARGUERITE", "NERISSA", "OTTILIE", "PERPETUA",
         "ROSALIND", "SERAPHINA", "THEODORA", "URSULINE", "VIOLETTA", "WILHELMINA")
STUDY_START = dt.date(2012, 3, 1)
STUDY_END = dt.date(2016, 5, 15)


def study_date(rng: np.random.Generator) -> dt.date:
    return STUDY_START + dt.timedelta(days=int(rng.integers(0, (STUDY_END - STUDY_START).days)))


def fake_identity(rng: np.random.Generator, patient_id: str, age: int, when: dt.date) -> Identity:
    """A name, birth date consistent with the age at the exam, MRN and accession number."""
    birth = when - dt.timedelta(days=int(age * 365.25 + rng.integers(0, 365)))
    return Identity(
        patient_id=patient_id,
        patient_name=f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}",
        birth_date=birth.strftime("%Y%m%d"),
        mrn=f"{int(rng.integers(10_000_000, 99_999_999))}",
        accession_number=f"A{int(rng.integers(100_000_000, 999_999_999))}",
    )

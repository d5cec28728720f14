"""Assign patients to cohorts: a stratified train/validation split inside institution 1, externals by site."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from her2pcr.config import CohortsParams


def assign_cohorts(clinical: pd.DataFrame, params: CohortsParams) -> pd.Series:
    """Cohort name per patient (index: patient_id); patients of unmapped institutions get none."""
    cohort = pd.Series(pd.NA, index=clinical.index, dtype="object", name="cohort")
    for name, institutions in params.external.items():
        cohort[clinical.institution.isin(institutions)] = name
    internal = clinical[clinical.institution.isin(params.internal.institutions)].sort_index()
    if len(internal):
        size = min(params.internal.validation_size, len(internal) - 1)
        stratify = internal.pcr if internal.pcr.value_counts().min() >= 2 and size >= 2 else None
        train, validation = train_test_split(internal.index.to_list(), test_size=size,
                                             random_state=params.split_seed, stratify=stratify)
        cohort[train] = params.internal.train
        cohort[validation] = params.internal.validation
    return cohort

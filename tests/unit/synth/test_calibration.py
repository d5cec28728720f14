"""Calibration of the hidden truth on a large simulated cohort (parameters and curves, no images)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

from her2pcr.synth.kinetics import extended_tofts
from her2pcr.synth.patients import draw_patient
from her2pcr.synth.sites import load_sites
from tests.conftest import REPO, profile_simulate_params

N_PATIENTS = 2500


@pytest.fixture(scope="module")
def population():
    params = profile_simulate_params("default", REPO)
    sites = load_sites(REPO / params.sites_file)
    rng = np.random.default_rng(2024)
    names = sorted(params.cohorts)
    weights = np.array([params.cohorts[n].n for n in names], dtype=float)
    chosen = rng.choice(names, size=N_PATIENTS, p=weights / weights.sum())
    return [draw_patient(rng, params.truth, sites[name].pcr_logit_offset) for name in chosen]


def auc(y, score):
    """Discrimination regardless of direction: the better of the score and its negation."""
    value = roc_auc_score(y, score)
    return max(value, 1 - value)


def test_oracle_auc_in_band(population):
    y = np.array([p.pcr for p in population])
    assert 0.85 <= roc_auc_score(y, [p.p_true for p in population]) <= 0.93


def test_receptor_status_alone_in_band(population):
    y = np.array([p.pcr for p in population])
    assert 0.58 <= roc_auc_score(y, [p.clinical.hr_negative for p in population]) <= 0.70


def test_best_whole_tumour_mean_kinetic_feature_in_band(population):
    y = np.array([p.pcr for p in population])
    ph = [p.phenotype for p in population]
    ktrans, ve, vp = (np.array([getattr(p, f) for p in ph]) for f in ("ktrans", "ve", "vp"))
    times = np.array([-120.0, 90.0, 235.0, 380.0])
    curves = extended_tofts(ktrans, ve, vp, times, window_s=145.0)  # mean tumour curve, inst1 timing
    features = {
        "ktrans": ktrans, "ve": ve, "vp": vp, "kep": ktrans / ve,
        "initial_uptake": curves[:, 1], "peak": curves.max(axis=1),
        "washout": (curves[:, -1] - curves[:, 1]) / curves[:, 1], "auc": curves[:, 1:].sum(axis=1),
    }
    best = max(auc(y, values) for values in features.values())
    assert 0.52 <= best <= 0.65


def test_true_spatial_phenotype_parameters_discriminate(population):
    y = np.array([p.pcr for p in population])
    x = np.array([[p.phenotype.spiculation, p.phenotype.peri_thickness_mm, p.phenotype.peri_ktrans,
                   p.phenotype.heterogeneity] for p in population])
    scores = cross_val_predict(LogisticRegression(), x, y, cv=5, method="predict_proba")[:, 1]
    assert roc_auc_score(y, scores) >= 0.80

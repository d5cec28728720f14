"""Clinical variables, the latent imaging phenotype and the hidden truth of one patient.

Everything here is parameters only (no images), so calibration can be checked
on thousands of patients in seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit, ndtr

from her2pcr.config import TruthModel

# Physical range of each phenotype parameter; a latent N(0,1) maps onto it
# through the normal CDF. Tumour kinetics: simulator.md (Ktrans 0.05-0.40,
# ve 0.10-0.50, vp 0.01-0.10 /min).
SPICULATION_RANGE = (0.0, 0.9)  # spicule length, fraction of the tumour radius
PERI_THICKNESS_MM = (0.5, 7.0)
PERI_KTRANS = (0.005, 0.12)  # peak Ktrans added in the peritumoural shell (/min)
HETEROGENEITY_RANGE = (0.05, 0.55)  # sd of log Ktrans inside the tumour
KTRANS_RANGE = (0.05, 0.40)
VE_RANGE = (0.10, 0.50)
VP_RANGE = (0.01, 0.10)


@dataclass(frozen=True)
class Phenotype:
    z: float
    spiculation: float
    peri_thickness_mm: float
    peri_ktrans: float
    heterogeneity: float
    ktrans: float
    ve: float
    vp: float
    lobulation: float
    necrosis_fraction: float  # radius fraction of a non-enhancing core (0 = none)


@dataclass(frozen=True)
class Clinical:
    age: int
    er: str
    pr: str
    stage: str
    lymph_node: str
    longest_diameter_mm: float
    hr_negative: bool


@dataclass(frozen=True)
class PatientDraw:
    """One draw of the generative model before cohort assembly assigns an id."""

    clinical: Clinical
    phenotype: Phenotype
    logit: float
    p_true: float
    pcr: int

    def truth_row(self) -> dict:
        row = {**asdict(self.phenotype), "logit": self.logit, "p_true": self.p_true,
               "hr_negative": int(self.clinical.hr_negative)}
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}


def _scaled(latent: float, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return float(low + (high - low) * ndtr(latent))


def _correlated(rng: np.random.Generator, z: float, rho: float) -> float:
    return float(rho * z + np.sqrt(1 - rho**2) * rng.standard_normal())


def draw_clinical(rng: np.random.Generator) -> Clinical:
    """Clinical variables of a HER2+ patient (ranges of the reference study's Table 1)."""
    age = int(np.clip(round(rng.normal(50, 10.5)), 23, 77))
    er_pos = rng.random() < 0.55
    pr_pos = rng.random() < (0.70 if er_pos else 0.12)
    diameter = float(np.clip(np.exp(rng.normal(np.log(40), 0.5)), 12, 160))
    nodes_pos = rng.random() < 0.55
    t_stage = 1 if diameter <= 20 else (2 if diameter <= 50 else 3)
    if rng.random() < 0.03:
        stage = "IV"
    elif t_stage == 3 and nodes_pos:
        stage = "III"
    elif t_stage == 1 and not nodes_pos:
        stage = "I"
    else:
        stage = "II"
    return Clinical(
        age=age, er="positive" if er_pos else "negative", pr="positive" if pr_pos else "negative",
        stage=stage, lymph_node="positive" if nodes_pos else "negative",
        longest_diameter_mm=round(diameter, 1), hr_negative=not (er_pos or pr_pos),
    )


def draw_phenotype(rng: np.random.Generator, model: TruthModel, z: float, diameter_mm: float) -> Phenotype:
    """Imaging phenotype: each parameter follows z with its own noise (simulator.md)."""
    peri_latent = _correlated(rng, z, model.rho_peritumoural)
    washout = _correlated(rng, z, model.rho_washout)
    necrosis = 0.0
    # Necrosis is a nuisance tied to size, not response: large tumours outgrow their supply.
    if rng.random() < min(0.6, diameter_mm / 120):
        necrosis = float(rng.uniform(0.25, 0.5))
    return Phenotype(
        z=z,
        spiculation=_scaled(_correlated(rng, z, model.rho_spiculation), SPICULATION_RANGE),
        peri_thickness_mm=_scaled(peri_latent + 0.3 * rng.standard_normal(), PERI_THICKNESS_MM),
        peri_ktrans=_scaled(peri_latent + 0.3 * rng.standard_normal(), PERI_KTRANS),
        heterogeneity=_scaled(_correlated(rng, z, model.rho_heterogeneity), HETEROGENEITY_RANGE),
        ktrans=_scaled(_correlated(rng, z, model.rho_ktrans), KTRANS_RANGE),
        # Faster washout = smaller extravascular space = larger kep.
        ve=_scaled(-washout, VE_RANGE),
        vp=_scaled(rng.standard_normal(), VP_RANGE),
        lobulation=float(rng.uniform(0.0, 0.25)),
        necrosis_fraction=necrosis,
    )


def draw_patient(rng: np.random.Generator, model: TruthModel, site_offset: float) -> PatientDraw:
    """Draw clinical variables, phenotype and outcome from the hidden truth model."""
    clinical = draw_clinical(rng)
    z = float(rng.standard_normal())
    phenotype = draw_phenotype(rng, model, z, clinical.longest_diameter_mm)
    logit = (site_offset + model.b_hr * clinical.hr_negative + model.b_img * z
             + model.b_age * (clinical.age - 50) / 10)
    p_true = float(expit(logit))
    return PatientDraw(clinical, phenotype, float(logit), p_true, int(rng.random() < p_true))


def draw_case_control(
    rng: np.random.Generator, model: TruthModel, site_offset: float, n: int, n_pcr: int,
    max_draws: int = 100_000,
) -> list[PatientDraw]:
    """Draw patients until the pCR and non-pCR quotas are met (reference study counts).

    Keeping each draw's own outcome preserves the phenotype distribution given
    the label, which is what a retrospective cohort of fixed size samples.
    """
    want = {1: n_pcr, 0: n - n_pcr}
    kept: list[PatientDraw] = []
    for _ in range(max_draws):
        if not any(want.values()):
            return kept
        draw = draw_patient(rng, model, site_offset)
        if want[draw.pcr] > 0:
            want[draw.pcr] -= 1
            kept.append(draw)
    raise RuntimeError(f"could not fill quotas n={n}, n_pcr={n_pcr} in {max_draws} draws")

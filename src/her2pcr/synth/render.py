"""Render one exam: tissue parameter maps -> concentration (Tofts) -> SPGR signal -> scanner output."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from her2pcr.synth.anatomy import LABEL, Anatomy
from her2pcr.synth.exam import Acquisition
from her2pcr.synth.kinetics import DEFAULT_ARRIVAL_S, extended_tofts
from her2pcr.synth.patients import Phenotype
from her2pcr.synth.signal import (
    NATIVE_T1_MS,
    PROTON_DENSITY,
    field_key,
    receive_bias,
    relaxation_rates,
    rician,
    smooth_field,
    spgr_signal,
    transmit_flip_scale,
)

# Per-tissue kinetics (Ktrans /min, ve, vp, extra arrival delay s): simulator.md.
# Fibroglandular Ktrans/vp are drawn per exam (background parenchymal enhancement).
TISSUE_KINETICS = {
    "skin": (0.03, 0.20, 0.03, 3.0),
    "fat": (0.0005, 0.10, 0.001, 4.0),
    "muscle": (0.05, 0.10, 0.03, 2.0),
    # A weakly enhancing core (not a black hole): necrosis is unrelated to response, so it must not
    # be the most conspicuous feature of an exam (simulator.md).
    "necrosis": (0.02, 0.30, 0.005, 6.0),
    # Vessels: blood-pool kinetics, plasma fraction of a partly filled voxel, no leakage.
    "vessel": (0.0, 0.10, 0.45, 0.0),
}
BPE_TEXTURE_SD = 0.2  # sd of log Ktrans of background parenchymal enhancement (smooth, patchy)
PSF_SIGMA_VOX = 0.45  # in-plane point-spread blur: partial volume at every tissue edge
STANDARD_BOLUS_ML = 15.0  # 0.1 mmol/kg for a ~75 kg patient at 0.5 M; scales the AIF
STORED_SCALE = 12000.0  # signal units to stored integers at gain 1
MAX_STORED = 4095  # 12-bit scanners; BitsStored 12 in the writer


@dataclass
class RenderedExam:
    phases: list[np.ndarray]  # uint16 (slices, rows, columns), pre-contrast first
    signal: np.ndarray  # float32 (phase, slices, rows, columns) before noise and quantisation
    bias: np.ndarray  # receive bias field used for every phase
    concentration_tumour_mean: np.ndarray  # mean tumour concentration per phase (mM)
    arrival_s: float  # bolus arrival at the breast used for this exam (s after injection)


def parameter_maps(
    rng: np.random.Generator, anatomy: Anatomy, phenotype: Phenotype,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per-tissue (mask, Ktrans, ve, vp) with voxel-wise variation."""
    labels = anatomy.labels
    maps = {}
    bpe_ktrans = float(rng.uniform(0.005, 0.035))
    bpe_vp = float(rng.uniform(0.01, 0.05))
    kinetics = dict(TISSUE_KINETICS, fibroglandular=(bpe_ktrans, 0.30, bpe_vp, 4.0))
    for name, (ktrans, ve, vp, _) in kinetics.items():
        mask = labels == LABEL[name]
        if not mask.any():
            continue
        n = int(mask.sum())
        # +/-10 % voxel-wise variation outside the tumour (simulator.md).
        vary = np.exp(rng.normal(0, 0.1, n)).astype(np.float32)
        if name == "fibroglandular":
            # Background parenchymal enhancement is patchy: a smooth field modulates its Ktrans.
            texture = smooth_field(rng, labels.shape, coarse=20)[mask]
            vary = vary * np.exp(BPE_TEXTURE_SD * texture - BPE_TEXTURE_SD**2 / 2).astype(np.float32)
        maps[name] = (mask, ktrans * vary, np.full(n, ve, np.float32), vp * vary)
    tumour = labels == LABEL["tumour"]
    if tumour.any():
        sd = phenotype.heterogeneity
        # Log-normal spatial field whose spread is the heterogeneity phenotype, mean preserved.
        # ve follows the same factor as Ktrans (kep unchanged), so the pattern persists into the
        # late phases instead of cancelling there: patchy / rim enhancement at every post phase.
        log_field = sd * anatomy.tumour_het[tumour] - sd * sd / 2
        vary = np.exp(log_field).astype(np.float32)
        maps["tumour"] = (tumour, np.clip(phenotype.ktrans * vary, 0.01, 1.5),
                          np.clip(phenotype.ve * vary, 0.05, 0.9), np.clip(phenotype.vp * vary, 0.0, 0.2))
    peri = labels == LABEL["peritumoural"]
    if peri.any():
        weight = anatomy.peri_weight[peri]
        maps["peritumoural"] = (peri, bpe_ktrans + phenotype.peri_ktrans * weight,
                                np.full(weight.shape, 0.3, np.float32), bpe_vp + 0.02 * weight)
    return maps


def tissue_delay(name: str) -> float:
    if name in TISSUE_KINETICS:
        return TISSUE_KINETICS[name][3]
    return {"fibroglandular": 4.0, "peritumoural": 2.0}.get(name, 0.0)


def render_exam(
    rng: np.random.Generator, anatomy: Anatomy, phenotype: Phenotype, acq: Acquisition, *,
    site_bias_strength: float, snr: float, gain: float, fat_suppression: bool, motion_mm: float,
    noise: bool = True,
) -> RenderedExam:
    """Scanner output of every phase; deterministic given the generator state."""
    labels = anatomy.labels
    shape = labels.shape
    times = np.asarray(acq.phase_times_s, dtype=np.float64)
    arrival = DEFAULT_ARRIVAL_S + rng.uniform(-3, 12)
    dose = acq.bolus_volume_ml / STANDARD_BOLUS_ML
    key = field_key(acq.field_strength_t)

    t1 = np.full(shape, 1e9, np.float32)
    m0 = np.zeros(shape, np.float32)
    for name, code in LABEL.items():
        mask = labels == code
        t1[mask] = NATIVE_T1_MS[key][name]
        pd = PROTON_DENSITY[name]
        if name == "fat" and fat_suppression:
            pd *= 0.12  # spectral fat saturation leaves ~10-15 % of the fat signal
        m0[mask] = pd

    conc = np.zeros((len(times),) + shape, np.float32)
    maps = parameter_maps(rng, anatomy, phenotype)
    tumour_mean = np.zeros(len(times), np.float32)
    for name, (mask, ktrans, ve, vp) in maps.items():
        ct = extended_tofts(ktrans, ve, vp, times, arrival_s=arrival + tissue_delay(name), dose_scale=dose,
                            window_s=acq.phase_duration_s)
        conc[:, mask] = ct.T.astype(np.float32)
        if name == "tumour":
            tumour_mean = ct.mean(axis=0).astype(np.float32)

    # B1+ error: 3 T breast coils show up to +/-14 %, 1.5 T +/-5-9 % (simulator.md).
    amplitude = rng.uniform(0.08, 0.14) if key == 3.0 else rng.uniform(0.05, 0.09)
    flip = np.deg2rad(acq.flip_angle_deg) * transmit_flip_scale(shape, amplitude, rng.choice([-1.0, 1.0]))
    bias = receive_bias(rng, shape, site_bias_strength)
    signal = np.empty((len(times),) + shape, np.float32)
    for p in range(len(times)):
        r1, r2s = relaxation_rates(t1, conc[p], acq.field_strength_t, acq.contrast_agent)
        s = spgr_signal(m0, r1, r2s, acq.repetition_time_ms, acq.echo_time_ms, flip)
        # Finite resolution: a light in-plane point-spread blur mixes tissues at every edge
        # (partial volume), so thin strands and the tumour margin are not staircase labels.
        s = ndimage.gaussian_filter(s, sigma=(0.0, PSF_SIGMA_VOX, PSF_SIGMA_VOX), truncate=3.0)
        if p > 0 and motion_mm > 0:
            # Small inter-phase patient motion (sub-voxel to ~1 voxel), anatomy moves under a fixed coil.
            shift_mm = rng.normal(0, motion_mm / 2, 3)
            spacing = np.array([acq.slice_thickness_mm, acq.pixel_spacing_mm, acq.pixel_spacing_mm])
            s = ndimage.shift(s, shift_mm / spacing, order=1, mode="nearest")
        signal[p] = s * bias

    scale = STORED_SCALE * gain
    sigma = float(signal[0][labels == LABEL["fibroglandular"]].mean() / snr) if noise else 0.0
    phases = []
    for p in range(len(times)):
        noisy = rician(rng, signal[p], sigma) if noise else signal[p]
        phases.append(np.clip(np.rint(noisy * scale), 0, MAX_STORED).astype(np.uint16))
    return RenderedExam(phases, signal, bias, tumour_mean, arrival)

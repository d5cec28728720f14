"""MR signal: spoiled gradient echo, field-dependent relaxation, bias fields, noise."""

from __future__ import annotations

import numpy as np

# Native T1 (ms) at 1.5 T / 3 T (simulator.md; fat and fibroglandular values from
# Rakow-Penner et al., JMRI 2006;23:87-91; tumour and muscle from the DCE literature).
NATIVE_T1_MS = {
    1.5: {"air": 1e9, "skin": 1100.0, "fat": 296.0, "fibroglandular": 1266.0, "tumour": 1500.0,
          "peritumoural": 1400.0, "necrosis": 2000.0, "muscle": 1000.0, "vessel": 1441.0},
    3.0: {"air": 1e9, "skin": 1400.0, "fat": 423.0, "fibroglandular": 1680.0, "tumour": 1800.0,
          "peritumoural": 1750.0, "necrosis": 2400.0, "muscle": 1400.0, "vessel": 1932.0},
}
# Native T2* (ms); short enough at 3 T to matter at TE ~2 ms only slightly.
NATIVE_T2STAR_MS = {1.5: 45.0, 3.0: 30.0}
# Relative proton density (arbitrary units) per tissue.
PROTON_DENSITY = {"air": 0.0, "skin": 0.8, "fat": 0.9, "fibroglandular": 0.8, "tumour": 0.85,
                  "peritumoural": 0.85, "necrosis": 0.9, "muscle": 0.75,
                  "vessel": 0.9}
# Longitudinal relaxivity r1 (L/mmol/s) at 1.5 T / 3 T, in plasma at 37 C
# (Rohrer et al., Invest Radiol 2005;40:715-724; Shen et al., Invest Radiol 2015;50:330-338).
R1_RELAXIVITY = {
    "gadobutrol": {1.5: 4.78, 3.0: 4.97},
    "gadoterate": {1.5: 3.32, 3.0: 3.00},
}
# Transverse relaxivity r2* (L/mmol/s); only the TE ~2 ms product matters, so one value.
R2STAR_RELAXIVITY = 10.0


def field_key(field_strength_t: float) -> float:
    """Snap a field strength to the nearest tabulated one (1.5 or 3 T)."""
    return 1.5 if field_strength_t < 2.25 else 3.0


def spgr_signal(
    m0: np.ndarray, r1_per_s: np.ndarray, r2star_per_s: np.ndarray,
    tr_ms: float, te_ms: float, flip_rad: np.ndarray,
) -> np.ndarray:
    """S = M0 sin(a) (1-E1)/(1-cos(a) E1) exp(-TE R2*), E1 = exp(-TR R1)."""
    e1 = np.exp(-tr_ms * 1e-3 * r1_per_s)
    return m0 * np.sin(flip_rad) * (1 - e1) / (1 - np.cos(flip_rad) * e1) * np.exp(-te_ms * 1e-3 * r2star_per_s)


def relaxation_rates(
    t1_ms: np.ndarray, conc_mm: np.ndarray, field_strength_t: float, agent: str,
) -> tuple[np.ndarray, np.ndarray]:
    """R1 = R10 + r1 C and R2* = R2*0 + r2* C (both /s) for concentration C (mM)."""
    key = field_key(field_strength_t)
    r1 = 1000.0 / t1_ms + R1_RELAXIVITY[agent][key] * conc_mm
    r2s = 1000.0 / NATIVE_T2STAR_MS[key] + R2STAR_RELAXIVITY * conc_mm
    return r1, r2s


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 4) -> np.ndarray:
    """Zero-mean, unit-variance smooth random field.

    Random weights on a coarse grid of Gaussian bumps, synthesised separably
    (one small matrix product per axis). Hand-written rather than
    scipy.ndimage.zoom: the spline zoom of a full volume cost ~0.2 s per field,
    which dominated the simulator's run time; this costs a few milliseconds.
    """
    nodes = tuple(min(coarse, s) for s in shape)
    field = rng.standard_normal(nodes)
    for axis, (n, c) in enumerate(zip(shape, nodes, strict=True)):
        position = np.linspace(0.0, c - 1.0, n)[:, None]
        basis = np.exp(-0.5 * (position - np.arange(c)[None, :]) ** 2)  # bump width = node spacing
        field = np.moveaxis(np.tensordot(basis, np.moveaxis(field, axis, 0), axes=(1, 0)), 0, axis)
    field -= field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)


def receive_bias(rng: np.random.Generator, shape: tuple[int, int, int], strength: float) -> np.ndarray:
    """Smooth multiplicative coil sensitivity, exp(strength * field); one per exam."""
    return np.exp(strength * smooth_field(rng, shape, coarse=3)).astype(np.float32)


def transmit_flip_scale(shape: tuple[int, int, int], amplitude: float, sign: float) -> np.ndarray:
    """B1+ error: smooth left-right flip-angle scaling in [1-amplitude, 1+amplitude].

    Breast B1 inhomogeneity is dominated by a left-right gradient (Kuhl et al.,
    Radiology 2007;244:929-930), so a linear ramp across columns, softened by a tanh.
    """
    x = np.linspace(-1.0, 1.0, shape[2], dtype=np.float32)
    profile = 1.0 + sign * amplitude * np.tanh(1.5 * x) / np.tanh(1.5)
    return np.broadcast_to(profile[None, None, :], shape)


def rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of complex signal plus Gaussian noise in both channels."""
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag)

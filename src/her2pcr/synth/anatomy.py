"""Breast anatomy on one exam grid: tissue labels, tumour with lobulation and spicules, peritumoural shell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from her2pcr.synth.patients import Phenotype
from her2pcr.synth.signal import smooth_field

TISSUES = ("air", "skin", "fat", "fibroglandular", "muscle", "tumour", "peritumoural", "necrosis")
LABEL = {name: i for i, name in enumerate(TISSUES)}


@dataclass
class Anatomy:
    labels: np.ndarray  # uint8 (slices, rows, columns), codes in LABEL
    peri_weight: np.ndarray  # float32 in [0, 1]: peritumoural enhancement strength, 0 outside the shell
    tumour_het: np.ndarray  # float32 smooth zero-mean unit-sd field for intratumoural heterogeneity
    centroid_vox: tuple[float, float, float]  # tumour centroid (slice, row, column), 0-based
    tumour_diameter_mm: float  # drawn diameter (clinical diameter capped to fit the field of view)


def _coordinates_mm(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> list[np.ndarray]:
    """Broadcastable (z, y, x) coordinates in mm with the origin at the volume centre."""
    axes = []
    for axis, (n, d) in enumerate(zip(shape, spacing, strict=True)):
        values = (np.arange(n, dtype=np.float32) - (n - 1) / 2) * d
        view = [1, 1, 1]
        view[axis] = n
        axes.append(values.reshape(view))
    return axes


def _breast_geometry(shape, spacing, rng):
    """Half-ellipsoid breast on a chest wall at the posterior (high-row) side.

    Returns the normalised ellipsoidal radius (<1 inside the breast) and the
    chest-wall row position in mm. The unilateral field of view is scaled so
    the breast fills it whatever the pixel spacing.
    """
    z, y, x = _coordinates_mm(shape, spacing)
    fov_y = shape[1] * spacing[1]
    fov_x = shape[2] * spacing[2]
    slab = shape[0] * spacing[0]
    chest_y = fov_y * rng.uniform(0.18, 0.26)  # chest wall sits behind the centre
    depth = fov_y * rng.uniform(0.55, 0.65)  # nipple-to-chest-wall distance
    half_width = fov_x * rng.uniform(0.40, 0.47)
    half_height = max(slab * 0.9, 70.0)  # the slab images part of the breast height
    radius = np.sqrt((x / half_width) ** 2 + ((chest_y - y) / depth) ** 2 + (z / half_height) ** 2)
    radius = np.where(y <= chest_y, radius, np.float32(9.0))
    return radius.astype(np.float32), chest_y, (z, y, x), min(half_width, depth)


def _tumour_radius_factor(ux, uy, uz, rng, phenotype: Phenotype) -> np.ndarray:
    """Boundary radius (relative) along unit direction u: lobulation plus spicules."""
    coeffs = rng.normal(0, phenotype.lobulation, 6).astype(np.float32)
    factor = 1 + coeffs[0] * ux + coeffs[1] * uy + coeffs[2] * uz + coeffs[3] * (ux * ux - uy * uy) \
        + coeffs[4] * ux * uz + coeffs[5] * uy * uz
    n_spicules = int(rng.integers(8, 20))
    directions = rng.standard_normal((n_spicules, 3)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for d in directions:
        cos = ux * d[0] + uy * d[1] + uz * d[2]
        length = phenotype.spiculation * rng.uniform(0.5, 1.5)
        # Narrow angular peaks: width ~8 degrees, so spicules look like thin strands.
        factor = factor + length * np.exp((cos - 1) / 0.01)
    return factor


def build_anatomy(
    rng: np.random.Generator, phenotype: Phenotype, diameter_mm: float,
    shape: tuple[int, int, int], spacing: tuple[float, float, float], fgt_density: float,
) -> Anatomy:
    """Tissue labels for one patient. ``spacing`` is (slice thickness, row, column) in mm."""
    radius, chest_y, (z, y, x), breast_scale = _breast_geometry(shape, spacing, rng)
    labels = np.full(shape, LABEL["air"], dtype=np.uint8)
    labels[np.broadcast_to(y > chest_y, shape)] = LABEL["muscle"]
    breast = radius < 1.0
    labels[breast] = LABEL["fat"]
    skin_mm = rng.uniform(1.5, 2.0)
    labels[breast & (radius > 1.0 - skin_mm / breast_scale)] = LABEL["skin"]
    interior = breast & (radius <= 1.0 - skin_mm / breast_scale)

    # Fibroglandular tissue: a smooth random field, denser centrally, thresholded to the density fraction.
    fgt_field = smooth_field(rng, shape, coarse=28) + 1.5 * (1 - radius)
    threshold = np.quantile(fgt_field[interior], 1 - fgt_density) if interior.any() else np.inf
    labels[interior & (fgt_field > threshold)] = LABEL["fibroglandular"]

    # Tumour: capped so it fits well inside the breast and the slab.
    slab = shape[0] * spacing[0]
    drawn_diameter = float(min(diameter_mm, 1.1 * breast_scale, 2.5 * slab))
    semi = np.array([0.5, 0.42, 0.36]) * drawn_diameter * rng.uniform(0.85, 1.15, 3)
    semi[0] = min(semi[0], 0.42 * slab)  # z semi-axis: keep the tumour inside the slab
    rng.shuffle(semi[1:])
    centre = _tumour_centre(rng, radius, interior, fgt_field, (z, y, x), semi, breast_scale, chest_y)
    dz, dy, dx = z - centre[0], y - centre[1], x - centre[2]
    dist = np.sqrt(dz * dz + dy * dy + dx * dx) + 1e-6
    rho = np.sqrt((dz / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dx / semi[2]) ** 2)
    near = rho < 1 + 2 * max(phenotype.spiculation, 0.3) + 0.8  # bounding region for the boundary test
    factor = np.zeros(shape, dtype=np.float32)
    factor[near] = _tumour_radius_factor(
        (np.broadcast_to(dx, shape) / dist)[near], (np.broadcast_to(dy, shape) / dist)[near],
        (np.broadcast_to(dz, shape) / dist)[near], rng, phenotype,
    )
    tumour = near & (rho <= factor) & (radius < 1.0)
    tumour = ndimage.binary_opening(tumour, iterations=1) | (rho <= 0.6)
    tumour &= radius < 1.0

    # Peritumoural shell: enhancement decaying with distance from the margin, patchy around it.
    distance = ndimage.distance_transform_edt(~tumour, sampling=spacing).astype(np.float32)
    thickness = phenotype.peri_thickness_mm
    patchiness = np.clip(1 + 0.6 * smooth_field(rng, shape, coarse=12), 0, None)
    peri = (~tumour) & (distance <= thickness) & breast
    peri_weight = np.zeros(shape, dtype=np.float32)
    peri_weight[peri] = ((1 - distance[peri] / thickness) * patchiness[peri]).astype(np.float32)
    labels[peri & (labels != LABEL["skin"])] = LABEL["peritumoural"]
    labels[tumour] = LABEL["tumour"]
    if phenotype.necrosis_fraction > 0:
        labels[tumour & (rho <= phenotype.necrosis_fraction)] = LABEL["necrosis"]

    # Heterogeneity field with blobs of ~1/4 of the tumour size.
    coarse = int(np.clip(4 * max(shape[1] * spacing[1], shape[2] * spacing[2]) / drawn_diameter, 6, 64))
    tumour_het = smooth_field(rng, shape, coarse=coarse)
    centroid = ndimage.center_of_mass(tumour)
    return Anatomy(labels, peri_weight, tumour_het, tuple(float(c) for c in centroid), drawn_diameter)


def _tumour_centre(rng, radius, interior, fgt_field, coords, semi, breast_scale, chest_y) -> np.ndarray:
    """Centre (mm) inside fibroglandular tissue, deep enough for the tumour to fit the breast."""
    margin = float(np.max(semi[1:])) / breast_scale + 0.08
    z, y, x = coords
    candidates = interior & (radius < max(1.0 - margin, 0.15)) & (y < chest_y - float(np.max(semi[1:])) - 2.0)
    # keep the centre away from the slab ends by its z semi-axis
    candidates &= np.abs(np.broadcast_to(z, radius.shape)) <= max(float(np.max(np.abs(z))) - semi[0], 0.0)
    if not candidates.any():
        candidates = interior & (radius <= np.min(radius[interior]) + 0.05)
    flat = np.flatnonzero(candidates)
    weights = np.exp(3 * fgt_field.ravel()[flat])
    pick = rng.choice(flat, p=weights / weights.sum())
    k, i, j = np.unravel_index(pick, radius.shape)
    return np.array([z.ravel()[k], y.ravel()[i], x.ravel()[j]], dtype=np.float32)

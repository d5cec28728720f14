"""Breast anatomy on one exam grid: tissue labels, tumour with lobulation and spicules, peritumoural shell,
enhancing vessels.

The phenotype must be visible the way a radiologist sees it (simulator.md, "The images must carry what
the parameters say"): spicules are separate thin tapered strands radiating from the margin, the
heterogeneity field has blobs of a few millimetres plus a rim-versus-core component, the halo decays
linearly from the margin, and nuisances (necrosis, vessels) stay less conspicuous than these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from her2pcr.synth.patients import Phenotype
from her2pcr.synth.signal import smooth_field

TISSUES = ("air", "skin", "fat", "fibroglandular", "muscle", "tumour", "peritumoural", "necrosis", "vessel")
LABEL = {name: i for i, name in enumerate(TISSUES)}

# Spicules: count and length grow with the spiculation phenotype (its range is 0-0.9, patients.py).
SPICULE_COUNT = (2, 22)  # expected count at spiculation 0 and at the top of its range
SPICULE_LENGTH = (0.7, 1.7)  # length / (spiculation x local radius): up to ~1.5 local radii
SPICULE_AXIAL_SHARE = 2 / 3  # share of strands close to the axial plane
NECROSIS_SCALE = 0.7  # drawn core radius / necrosis_fraction: a small core, a nuisance not a signal
HET_FEATURE_MM = (2.0, 8.0)  # blob size of the heterogeneity field: tumour diameter / 10, clipped
HET_RIM_SHARE = 0.45  # variance share of the rim-versus-core component of the heterogeneity field
PERI_PATCHINESS = 0.4


@dataclass
class Anatomy:
    labels: np.ndarray  # uint8 (slices, rows, columns), codes in LABEL
    peri_weight: np.ndarray  # float32 in [0, 1]: peritumoural enhancement strength, 0 outside the shell
    tumour_het: np.ndarray  # float32 field, zero mean and unit sd over the tumour, for heterogeneity
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


def _lobulation(rng, phenotype: Phenotype):
    """Low-order boundary deformation: radius factor along unit direction (ux, uy, uz)."""
    c = rng.normal(0, phenotype.lobulation, 6).astype(np.float32)

    def factor(ux, uy, uz):
        return 1 + c[0] * ux + c[1] * uy + c[2] * uz + c[3] * (ux * ux - uy * uy) + c[4] * ux * uz + c[5] * uy * uz

    return factor


def _local_box(centre_vox, reach_vox, shape):
    """Index box of ``centre +- reach`` clipped to the volume; empty (start == stop) when wholly outside it."""
    out = []
    for c, r, n in zip(centre_vox, reach_vox, shape, strict=True):
        start = min(max(int(np.floor(c - r)), 0), n)
        out.append(slice(start, max(min(int(np.ceil(c + r)) + 1, n), start)))
    return tuple(out)


def _draw_spicules(rng, phenotype: Phenotype, centre, semi, lobulation, shape, spacing, origin) -> np.ndarray:
    """Thin tapered strands (1-3 voxels) radiating from the margin, as a boolean volume.

    Count and length grow with the spiculation phenotype; two thirds lie near the axial plane so
    they show on the slices a reader scrolls through. Each strand starts just inside the boundary
    and may bend slightly.
    """
    spikes = np.zeros(shape, bool)
    s = float(np.clip(phenotype.spiculation / 0.9, 0.0, 1.0))
    n = int(rng.poisson(SPICULE_COUNT[0] + (SPICULE_COUNT[1] - SPICULE_COUNT[0]) * s))
    pixel = float(min(spacing[1], spacing[2]))
    sp = np.asarray(spacing, dtype=np.float64)
    for _ in range(n):
        azimuth = rng.uniform(0, 2 * np.pi)
        if rng.random() < SPICULE_AXIAL_SHARE:
            elevation = rng.normal(0, np.deg2rad(4))
        else:
            elevation = np.arcsin(rng.uniform(-1, 1))
        d = np.array([np.sin(elevation), np.cos(elevation) * np.sin(azimuth), np.cos(elevation) * np.cos(azimuth)])
        local = 1.0 / np.sqrt(np.sum((d / semi) ** 2)) * float(lobulation(d[2], d[1], d[0]))
        length = phenotype.spiculation * rng.uniform(*SPICULE_LENGTH) * local
        if length < 1.5 * pixel:
            continue
        start = centre + d * (local - 1.0 * pixel)
        length += 1.0 * pixel
        perp = np.cross(d, rng.standard_normal(3))
        perp /= max(np.linalg.norm(perp), 1e-9)
        bend = rng.normal(0, 0.12) * length
        base = rng.uniform(1.0, 1.5) * pixel  # radius: a 2-3 voxel wide root tapering to a 1-voxel tip
        tip = 0.5 * pixel
        mid_vox = (start + d * length / 2 - origin) / sp
        reach = (length / 2 + abs(bend) + base + pixel) / sp
        box = _local_box(mid_vox, reach, shape)
        if any(b.stop == b.start for b in box):
            continue  # the strand lies wholly outside the slab
        zz, yy, xx = np.meshgrid(*(origin[a] + np.arange(box[a].start, box[a].stop) * sp[a] for a in range(3)),
                                 indexing="ij")
        rel = np.stack([zz - start[0], yy - start[1], xx - start[2]], axis=-1)
        t = np.clip(rel @ d / length, 0.0, 1.0)
        axis = start + (t[..., None] * length) * d + (t * t * bend)[..., None] * perp
        off = np.stack([zz, yy, xx], axis=-1) - axis
        dist = np.sqrt(np.sum(off * off, axis=-1))
        width = base + (tip - base) * t
        along = rel @ d
        spikes[box] |= (dist <= width) & (along >= 0) & (along <= length)
    return spikes


def _draw_vessels(rng, shape, spacing, origin, chest_y, inside, keep_out_centre, keep_out_mm) -> np.ndarray:
    """A few thin enhancing vessels (0.6-1.2 mm radius) running from the chest wall toward the nipple."""
    vessels = np.zeros(shape, bool)
    sp = np.asarray(spacing, dtype=np.float64)
    extent = origin + (np.asarray(shape) - 1) * sp
    step = 0.4 * float(min(spacing))
    for _ in range(int(rng.integers(2, 6))):
        radius = rng.uniform(0.6, 1.2)
        p0 = np.array([rng.uniform(origin[0] * 0.7, extent[0] * 0.7), chest_y - rng.uniform(2, 10),
                       rng.uniform(origin[2] * 0.8, extent[2] * 0.8)])
        heading = np.array([rng.normal(0, 0.05), -1.0, rng.normal(0, 0.5)])
        heading /= np.linalg.norm(heading)
        length = rng.uniform(0.5, 0.9) * (chest_y - origin[1])
        s = np.arange(0.0, length, step)
        wave = rng.uniform(15, 40)
        amp = rng.uniform(2, 8)
        side = np.array([0.0, -heading[2], heading[1]])
        side /= max(np.linalg.norm(side), 1e-9)
        points = p0[None] + s[:, None] * heading[None] + (amp * np.sin(s / wave + rng.uniform(0, 6.3)))[:, None] * side
        points = points[np.linalg.norm(points - keep_out_centre, axis=1) > keep_out_mm]
        if not len(points):
            continue
        reach = np.ceil(radius / sp).astype(int)
        offsets = np.stack(np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij"), -1).reshape(-1, 3)
        centre_vox = np.rint((points - origin) / sp).astype(int)
        cand = (centre_vox[:, None, :] + offsets[None]).reshape(-1, 3)
        point_of = np.repeat(points, len(offsets), axis=0)
        ok = np.all((cand >= 0) & (cand < np.asarray(shape)), axis=1)
        cand, point_of = cand[ok], point_of[ok]
        near = np.linalg.norm(origin + cand * sp - point_of, axis=1) <= radius
        cand = cand[near]
        vessels[cand[:, 0], cand[:, 1], cand[:, 2]] = True
    return vessels & inside


def _smooth_field_mm(rng, shape, spacing, feature_mm: float) -> np.ndarray:
    """Zero-mean unit-sd smooth field with Gaussian bumps of width ``feature_mm`` on every axis."""
    field = rng.standard_normal(tuple(max(int(np.ceil(n * d / feature_mm)) + 2, 1)
                                      for n, d in zip(shape, spacing, strict=True)))
    for axis, (n, d) in enumerate(zip(shape, spacing, strict=True)):
        nodes = field.shape[axis]
        position = (np.arange(n) * d / feature_mm + 1.0)[:, None]
        basis = np.exp(-0.5 * (position - np.arange(nodes)[None, :]) ** 2)
        field = np.moveaxis(np.tensordot(basis, np.moveaxis(field, axis, 0), axes=(1, 0)), 0, axis)
    field -= field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)


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
    origin = np.array([float(z.ravel()[0]), float(y.ravel()[0]), float(x.ravel()[0])])
    sp = np.asarray(spacing, dtype=np.float64)

    # Work in a box around the tumour and its spicules/halo: cheap whatever the matrix.
    reach_mm = float(np.max(semi)) * (1.8 + 1.7 * phenotype.spiculation) + phenotype.peri_thickness_mm + 3 * sp.max()
    region = _local_box((centre - origin) / sp, reach_mm / sp, shape)
    rz, ry, rx = z[region[0], :, :], y[:, region[1], :], x[:, :, region[2]]
    rshape = tuple(s.stop - s.start for s in region)
    dz, dy, dx = rz - centre[0], ry - centre[1], rx - centre[2]
    dist = np.sqrt(dz * dz + dy * dy + dx * dx) + 1e-6
    rho = np.sqrt((dz / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dx / semi[2]) ** 2)
    lobulation = _lobulation(rng, phenotype)
    factor = lobulation(dx / dist, dy / dist, dz / dist)
    in_breast = radius[region] < 1.0
    body = (rho <= factor) & in_breast
    body |= (rho <= 0.6) & in_breast
    spikes = _draw_spicules(rng, phenotype, centre, semi, lobulation, rshape, spacing,
                            origin + np.array([s.start for s in region]) * sp)
    spikes &= interior[region]
    tumour = body | spikes

    # Peritumoural shell: enhancement decaying linearly with distance from the mass margin, a little
    # patchy. Measured from the body, not the strands: spicules cross the halo as thin lines instead
    # of each carrying its own halo (which blurs them back into lobes on the subtraction image).
    distance = ndimage.distance_transform_edt(~body, sampling=spacing).astype(np.float32)
    thickness = phenotype.peri_thickness_mm
    patchiness = np.clip(1 + PERI_PATCHINESS * smooth_field(rng, shape, coarse=12)[region], 0, None)
    peri = (~tumour) & (distance <= thickness) & in_breast
    peri_local = np.zeros(rshape, dtype=np.float32)
    peri_local[peri] = ((1 - distance[peri] / thickness) * patchiness[peri]).astype(np.float32)
    local_labels = labels[region]
    local_labels[peri & (local_labels != LABEL["skin"])] = LABEL["peritumoural"]
    local_labels[tumour] = LABEL["tumour"]
    # Necrosis: a small weakly enhancing core, deliberately less conspicuous than the phenotype.
    if phenotype.necrosis_fraction > 0:
        core = tumour & (rho <= NECROSIS_SCALE * phenotype.necrosis_fraction)
        local_labels[core] = LABEL["necrosis"]
    labels[region] = local_labels
    peri_weight = np.zeros(shape, dtype=np.float32)
    peri_weight[region] = peri_local

    # Heterogeneity: blobs of diameter/10 (2-8 mm) plus a rim-versus-core gradient, standardised on the tumour.
    feature = float(np.clip(drawn_diameter / 10, *HET_FEATURE_MM))
    blobs = _smooth_field_mm(rng, rshape, spacing, feature)
    rim = np.where(body, np.clip(rho / np.maximum(factor, 0.3), 0, 1.2) ** 2, 1.2)
    het = np.zeros(rshape, np.float32)
    if tumour.any():
        b = blobs[tumour]
        r = rim[tumour]
        b = (b - b.mean()) / max(b.std(), 1e-6)
        r = (r - r.mean()) / max(r.std(), 1e-6)
        mixed = np.sqrt(1 - HET_RIM_SHARE) * b + np.sqrt(HET_RIM_SHARE) * r
        het[tumour] = (mixed - mixed.mean()) / max(mixed.std(), 1e-6)
    tumour_het = np.zeros(shape, np.float32)
    tumour_het[region] = het

    # A few enhancing vessels, kept clear of the tumour and its halo.
    keep_out = reach_mm + 6.0
    vessels = _draw_vessels(rng, shape, spacing, origin, chest_y, interior, centre, keep_out)
    labels[vessels & ((labels == LABEL["fat"]) | (labels == LABEL["fibroglandular"]))] = LABEL["vessel"]

    local_centroid = ndimage.center_of_mass(tumour)
    centroid = tuple(float(c) + s.start for c, s in zip(local_centroid, region, strict=True))
    return Anatomy(labels, peri_weight, tumour_het, centroid, drawn_diameter)


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

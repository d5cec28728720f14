"""Simple image measurements of a rendered exam, for checking that the images carry the phenotype.

Pure numpy/scipy. The tumour is found the way a reader would find it: by thresholding the early
subtraction image inside the annotator's box (never from the true labels). From it:

- peritumoural halo: subtraction enhancement in rings outside the mass (strands left out),
  relative to the tumour's own enhancement and to the background further out;
- margin spiculation: thin strands attached to the mass (white top-hat of the subtraction), their
  reach along rays, and solidity, convexity and radial-profile irregularity of mass + strands;
- intratumoural heterogeneity: coefficient of variation, entropy, local variance and rim/core
  ratio of the late (and early) subtraction inside the mass.

Every feature is a ratio of intensities, so receive gain, scanner gain and fat suppression cancel.
Used by tests/unit/synth/test_image_calibration.py; reusable by a benchmark.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, Delaunay, QhullError

RING_EDGES_MM = (0.0, 1.0, 2.0, 3.0, 4.0, 5.5, 7.0, 9.0)
BACKGROUND_MM = (11.0, 15.0)
MARGIN_MM = 16.0


def crop_around_box(volume: np.ndarray, box0: dict, spacing: tuple[float, float, float],
                    margin_mm: float = MARGIN_MM) -> tuple[slice, slice, slice]:
    """Slices of the box (0-based inclusive) widened by ``margin_mm`` in-plane and 2 slices."""
    out = []
    for axis, name in enumerate(("slice", "row", "column")):
        pad = 2 if axis == 0 else int(np.ceil(margin_mm / spacing[axis]))
        lo = max(int(box0[f"{name}_start"]) - pad, 0)
        hi = min(int(box0[f"{name}_end"]) + pad + 1, volume.shape[axis])
        out.append(slice(lo, hi))
    return tuple(out)


BULK_LEVEL = 0.5  # bulk threshold: half-way from the surrounding tissue to the box's 95th percentile


def _hull_2d(mask2d: np.ndarray) -> np.ndarray:
    """Pixels inside the convex hull of a 2-D mask."""
    points = np.argwhere(mask2d).astype(float)
    try:
        tri = Delaunay(points[ConvexHull(points).vertices])
    except (QhullError, ValueError):
        return mask2d.copy()
    lo, hi = points.min(axis=0).astype(int), points.max(axis=0).astype(int) + 1
    grid = np.stack(np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij"), -1)
    out = np.zeros_like(mask2d)
    out[lo[0]:hi[0], lo[1]:hi[1]] = tri.find_simplex(grid.reshape(-1, 2)).reshape(grid.shape[:2]) >= 0
    return out | mask2d


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius + 0.5


def tumour_masks(sub: np.ndarray, inside_box: np.ndarray, spacing: tuple[float, float, float],
                 strand_mm: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """(bulk, strands) of the enhancing tumour, from the early subtraction and the box only.

    bulk: the lightly smoothed subtraction, opened then closed slice by slice with a disk of
    ``strand_mm`` (removing thin bright strands, then filling small dark patches of a heterogeneous
    tumour), above half of its range between the tissue around the box and the box's 95th
    percentile, kept near the box; the component holding most box voxels; weaker enhancement
    inside its convex hull (a dark core, a rim) added and holes filled, slice by slice.
    strands: thin structures standing 25 % of the bulk's median enhancement above their
    surroundings (white top-hat), outside the bulk and attached to it.
    """
    fine = ndimage.gaussian_filter(sub, sigma=(0.0, 0.5, 0.5))
    disk = _disk(max(int(round(strand_mm / spacing[1])), 2))
    flat = np.stack([ndimage.grey_closing(ndimage.grey_opening(fine[k], footprint=disk), footprint=disk)
                     for k in range(fine.shape[0])])
    high = np.percentile(flat[inside_box], 95)
    # Background: the tissue around the box (the box itself is mostly tumour).
    low = float(np.median(flat[~inside_box])) if (~inside_box).any() else float(np.percentile(flat, 30))
    threshold = low + BULK_LEVEL * (high - low)
    # The annotator's box holds the tumour (up to a few mm of jitter): nothing leaks past it.
    near_box = ndimage.binary_dilation(inside_box, structure=np.ones((1, 3, 3), bool),
                                       iterations=max(int(round(2.0 / spacing[1])), 1))
    bulk = (flat > threshold) & near_box
    labels, n = ndimage.label(bulk)
    if n == 0:
        return bulk, np.zeros_like(bulk)
    counts = np.bincount(labels[inside_box].ravel(), minlength=n + 1)
    counts[0] = 0
    bulk = labels == int(np.argmax(counts))
    # A dark core or patch of a rim-enhancing tumour is still tumour: inside the slice's convex
    # hull, anything enhancing at least a fifth of the way counts, then holes are filled.
    weak = flat > low + 0.2 * (high - low)
    for k in range(bulk.shape[0]):
        if bulk[k].sum() >= 6:
            bulk[k] = ndimage.binary_fill_holes(bulk[k] | (_hull_2d(bulk[k]) & weak[k]))
    level = float(np.median(fine[bulk]))
    grown = ndimage.binary_dilation(bulk, structure=_disk(1)[None])
    # Strands: bright over their local surroundings (white top-hat), so background enhancement
    # and the halo do not count, and connected to the bulk.
    tophat = fine - np.stack([ndimage.grey_opening(fine[k], footprint=disk) for k in range(fine.shape[0])])
    candidates = (tophat > 0.25 * (level - low)) & (fine > low + 0.25 * (level - low)) & ~grown
    candidates &= ndimage.binary_dilation(near_box, structure=np.ones((1, 3, 3), bool), iterations=2)
    # A strand's root sits in the bulk's shadow for the top-hat: pieces within 3 pixels count.
    labels, n = ndimage.label(candidates)
    if n == 0:
        return bulk, candidates
    reach = ndimage.binary_dilation(bulk, structure=_disk(3)[None])
    keep = np.zeros(n + 1, bool)
    keep[np.unique(labels[reach & candidates])] = True
    keep[0] = False
    return bulk, keep[labels]


def _shape_2d(mask2d: np.ndarray, spacing_row: float) -> list[float]:
    """Solidity, convexity-like perimeter ratio, radial irregularity and thin-structure share."""
    area = float(mask2d.sum())
    if area < 8:
        return [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    coords = np.argwhere(mask2d).astype(float)
    try:
        hull = ConvexHull(coords)
        hull_area = float(hull.volume) + 0.5 * hull.area + 1.0  # pixel-centre hull, +half-pixel rim
    except QhullError:
        hull_area = area
    solidity = area / hull_area
    edge = mask2d & ~ndimage.binary_erosion(mask2d)
    perimeter = float(edge.sum())
    compact = perimeter / (2 * np.sqrt(np.pi * area))
    centre = coords.mean(axis=0)
    edge_xy = np.argwhere(edge).astype(float) - centre
    angle = np.arctan2(edge_xy[:, 0], edge_xy[:, 1])
    r = np.hypot(edge_xy[:, 0], edge_xy[:, 1])
    bins = np.linspace(-np.pi, np.pi, 73)
    idx = np.clip(np.digitize(angle, bins) - 1, 0, 71)
    rmax = np.zeros(72)
    np.maximum.at(rmax, idx, r)
    filled = rmax > 0
    if filled.sum() < 8:
        return [solidity, compact, 0.0, 0.0, 0.0, 1.0]
    rmax = np.interp(np.arange(72), np.flatnonzero(filled), rmax[filled], period=72)
    mean_r = float(rmax.mean())
    smooth_r = ndimage.uniform_filter1d(rmax, 9, mode="wrap")
    irregular = float(np.std(rmax - smooth_r) / mean_r)
    peak = float((rmax.max() - np.median(rmax)) / mean_r)
    opened = ndimage.binary_opening(mask2d, structure=np.ones((3, 3), bool), iterations=1)
    thin = float((mask2d & ~opened).sum() / area)
    extent = float(np.percentile(rmax, 90) / max(np.percentile(rmax, 10), 1.0))
    return [solidity, compact, irregular, peak, thin, extent]


def _ray_features(sub: np.ndarray, bulk: np.ndarray, spacing, level: float, eq_radius: float,
                  n_rays: int = 180) -> dict[str, float]:
    """Strands along rays from the bulk's centre: how far past the bulk margin the lightly smoothed
    early subtraction stays above half the tumour's enhancement, ray by ray, on the 3 largest slices.
    Spicules give long, angularly narrow excursions; a halo gives short smooth ones."""
    fine = ndimage.gaussian_filter(sub, sigma=(0.0, 0.5, 0.5))
    area = bulk.sum(axis=(1, 2))
    angles = np.linspace(0, 2 * np.pi, n_rays, endpoint=False)
    step = 0.5  # pixels
    reach_px = 2.0 * eq_radius / spacing[1]
    radii = np.arange(0, reach_px + 8, step)
    out = []
    for k in np.argsort(area)[::-1][:3]:
        if area[k] < 8:
            continue
        cy, cx = np.argwhere(bulk[k]).mean(axis=0)
        ys = cy + np.sin(angles)[:, None] * radii[None]
        xs = cx + np.cos(angles)[:, None] * radii[None]
        inside = ndimage.map_coordinates(bulk[k].astype(np.float32), [ys, xs], order=0, cval=0.0) > 0.5
        values = ndimage.map_coordinates(fine[k], [ys, xs], order=1, cval=0.0)
        edge = np.array([np.flatnonzero(row)[-1] if row.any() else 0 for row in inside])
        extent = np.zeros(n_rays)
        for a in range(n_rays):
            beyond = values[a, edge[a]:] > 0.5 * level
            stop = np.flatnonzero(~beyond)
            extent[a] = (stop[0] if stop.size else beyond.size) * step * spacing[1]
        local = ndimage.median_filter(extent, size=15, mode="wrap")
        excess = np.clip(extent - local, 0, None)
        out.append([extent.mean() / eq_radius, np.percentile(extent, 90) / eq_radius,
                    excess.mean() / eq_radius, np.mean(excess > 2.0), np.percentile(excess, 95) / eq_radius])
    values = np.mean(out, axis=0) if out else np.zeros(5)
    names = ("ray_extent", "ray_extent_p90", "ray_excess", "ray_excess_share", "ray_excess_p95")
    return {n: float(v) for n, v in zip(names, values, strict=True)}


def exam_features(phases: list[np.ndarray], box0: dict, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Image measurements of one exam. ``box0`` holds 0-based inclusive box indices;
    ``spacing`` is (slice thickness, row, column) in mm."""
    crop = crop_around_box(phases[0], box0, spacing)
    pre = phases[0][crop].astype(np.float32)
    post1 = phases[1][crop].astype(np.float32)
    late = phases[-1][crop].astype(np.float32)
    sub1 = post1 - pre
    sub_late = late - pre
    inside = np.zeros(pre.shape, bool)
    inside[tuple(slice(int(box0[f"{n}_start"]) - c.start, int(box0[f"{n}_end"]) - c.start + 1)
                 for n, c in zip(("slice", "row", "column"), crop, strict=True))] = True
    bulk, strands = tumour_masks(sub1, inside, spacing)
    if bulk.sum() < 10:
        bulk, strands = inside.copy(), np.zeros_like(inside)
    mask = bulk | strands
    features: dict[str, float] = {}
    n_mask = int(mask.sum())
    n_bulk = int(bulk.sum())
    # Noise level from the subtraction's high-pass part outside the tumour.
    hp = sub1 - ndimage.uniform_filter(sub1, size=(1, 3, 3))
    noise = float(np.median(np.abs(hp[~mask])) * 1.4826 * 1.5 + 1e-3)
    tumour_enh = float(np.median(sub1[bulk]))
    scale = max(tumour_enh, 1e-3)

    # Peritumoural rings (in-plane and through-plane distance in mm) from the bulk, strands left out.
    dist = np.where(mask, 0.0, ndimage.distance_transform_edt(~bulk, sampling=spacing))
    bg_sel = (dist > BACKGROUND_MM[0]) & (dist <= BACKGROUND_MM[1])
    background = float(np.median(sub1[bg_sel])) if bg_sel.any() else 0.0
    ring_values = []
    for lo, hi in zip(RING_EDGES_MM[:-1], RING_EDGES_MM[1:], strict=True):
        sel = (dist > lo) & (dist <= hi)
        value = float(np.mean(sub1[sel])) if sel.any() else background
        ring_values.append(value)
        features[f"ring_{lo:g}_{hi:g}"] = (value - background) / scale
    rings = np.array(ring_values) - background
    mids = 0.5 * (np.array(RING_EDGES_MM[:-1]) + np.array(RING_EDGES_MM[1:]))
    positive = np.clip(rings, 0, None)
    features["ring_centroid_mm"] = float((positive * mids).sum() / max(positive.sum(), 1e-6))
    features["ring_area"] = float((positive * np.diff(RING_EDGES_MM)).sum() / scale)
    above = np.flatnonzero(rings > 0.5 * max(rings[0], 1e-6))
    features["ring_half_mm"] = float(RING_EDGES_MM[above.max() + 1]) if above.size else 0.0
    near_late = (dist > 0) & (dist <= 2)
    bg_late = float(np.median(sub_late[bg_sel])) if bg_sel.any() else 0.0
    features["ring_late_0_2"] = float((np.mean(sub_late[near_late]) - bg_late) / max(float(np.median(sub_late[bulk])),
                                                                                      1e-3)) if near_late.any() else 0.0
    features["ring_bg"] = background / scale
    features["tumour_cnr"] = tumour_enh / noise

    # Margin: shape of bulk + strands on the largest cross-sections, and the strands themselves.
    area = mask.sum(axis=(1, 2))
    order = np.argsort(area)[::-1][:3]
    shapes = np.array([_shape_2d(mask[k], spacing[1]) for k in order if area[k] > 0] or [[1, 1, 0, 0, 0, 1]])
    for name, value in zip(("solidity", "compact", "radial_irregular", "radial_peak", "thin_share", "extent"),
                           shapes.mean(axis=0), strict=True):
        features[name] = float(value)
    try:
        hull3 = ConvexHull(np.argwhere(mask).astype(float) * np.asarray(spacing))
        features["solidity3d"] = float(n_mask * np.prod(spacing) / max(hull3.volume, 1e-6))
    except (QhullError, ValueError):
        features["solidity3d"] = 1.0
    eq_radius = float((3 * n_bulk * np.prod(spacing) / (4 * np.pi)) ** (1 / 3))
    bulk_surface = float((bulk & ~ndimage.binary_erosion(bulk, structure=_disk(1)[None])).sum())
    strand_px = float(strands.sum())
    features["strand_per_surface"] = strand_px / max(bulk_surface, 1.0)
    features["strand_share"] = strand_px / max(n_bulk, 1)
    d_strand = ndimage.distance_transform_edt(~bulk, sampling=spacing)[strands]
    features["strand_reach"] = float(np.percentile(d_strand, 90) / eq_radius) if strand_px > 3 else 0.0
    features["strand_mass"] = float(d_strand.sum() / max(bulk_surface, 1.0) / eq_radius) if strand_px else 0.0
    _, n_pieces = ndimage.label(strands & (ndimage.distance_transform_edt(~bulk, sampling=spacing) > 1.5))
    features["strand_pieces"] = float(np.log1p(n_pieces))
    # Thin bright structure next to the mass: white top-hat of the early subtraction (what a disk of
    # 2.5 mm cannot hold), within 0.6 tumour radii outside the bulk, relative to the enhancement.
    radius_px = max(int(round(2.5 / spacing[1])), 2)
    sm1 = ndimage.gaussian_filter(sub1, sigma=(0.0, 0.5, 0.5))
    tophat = np.stack([ndimage.white_tophat(sm1[k], footprint=_disk(radius_px)) for k in range(sm1.shape[0])])
    d_bulk = ndimage.distance_transform_edt(~bulk, sampling=spacing)
    near = (d_bulk > 0) & (d_bulk <= 0.8 * eq_radius)
    features["tophat_near"] = float(np.mean(tophat[near]) / scale) if near.any() else 0.0
    features["tophat_near_share"] = float(np.mean(tophat[near] > 3 * noise)) if near.any() else 0.0
    features.update(_ray_features(sub1, bulk, spacing, scale, eq_radius))
    mask = bulk  # texture and core measurements on the bulk
    n_mask = n_bulk
    eroded_core = ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3), bool), iterations=2)
    features["core_share"] = float(eroded_core.sum() / max(n_mask, 1))
    features["log_volume"] = float(np.log(max(n_mask, 1) * np.prod(spacing)))

    # Texture inside the tumour: late and early subtraction, smoothed lightly against noise.
    inner = ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3), bool), iterations=1)
    if inner.sum() < 20:
        inner = mask
    rim = mask & ~ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3), bool), iterations=3)
    core = mask & ~rim
    for tag, sub in (("late", sub_late), ("early", sub1)):
        sm = ndimage.gaussian_filter(sub, sigma=(0.0, 0.8, 0.8))
        vals = sm[inner]
        level = max(float(np.median(vals)), 1e-3)
        features[f"{tag}_cv"] = float(np.std(vals) / level)
        q10, q25, q75, q90 = np.percentile(vals, [10, 25, 75, 90])
        features[f"{tag}_iqr"] = float((q75 - q25) / level)
        features[f"{tag}_spread"] = float((q90 - q10) / level)
        hist, _ = np.histogram(vals / level, bins=24, range=(0.0, 2.4))
        prob = hist[hist > 0] / hist.sum()
        features[f"{tag}_entropy"] = float(-(prob * np.log(prob)).sum())
        local = sm - ndimage.gaussian_filter(sm, sigma=(0.0, 3.0, 3.0))
        features[f"{tag}_local_sd"] = float(np.std(local[inner]) / level)
        if rim.any() and core.any():
            features[f"{tag}_rim_core"] = float(np.mean(sub[rim]) / max(float(np.mean(sub[core])), 1e-3))
        else:
            features[f"{tag}_rim_core"] = 1.0
    washout = sub_late[inner] / np.maximum(sub1[inner], 1e-3 * scale)
    features["washout_median"] = float(np.median(np.clip(washout, -1, 3)))
    features["washout_spread"] = float(np.subtract(*np.percentile(np.clip(washout, -1, 3), [90, 10])))
    features["noise_rel"] = noise / scale
    return features


def box_zero_based(box: dict, base: int) -> dict:
    """A boxes.csv row (indices ``base``-based) as 0-based indices."""
    return {k: int(v) - base for k, v in box.items() if k != "patient_id"}

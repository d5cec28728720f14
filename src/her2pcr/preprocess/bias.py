"""N4 bias-field correction (Tustison et al., IEEE TMI 2010) with SimpleITK.

The receive-coil sensitivity of one exam is one smooth multiplicative field
shared by all its phases. ``per_exam`` therefore estimates the field once, on
the pre-contrast phase, and divides every phase by it: enhancement ratios
(post_k / pre) are untouched. ``per_phase`` estimates a field on each phase
independently, as the reference study did ("a bias-correction was applied to
each volume"); contrast uptake then leaks into each phase's field estimate.

The field is estimated on a shrunk copy of the volume (speed) inside an Otsu
foreground mask (air carries no bias information and its log is undefined),
then the B-spline log field is evaluated on the full-resolution grid.

Reproducibility: every SimpleITK filter here runs on one thread. N4's B-spline
fit sums per-thread partial results, so its output depends on the thread
count in the last bits; with one thread the same input gives the same output
bit for bit on every machine, whatever its core count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import SimpleITK as sitk

N4Mode = Literal["per_exam", "per_phase", "off"]
Spacing = Sequence[float]

#: Threads for every SimpleITK filter here; 1 makes results bit-reproducible across machines.
SITK_THREADS = 1
#: Shrinking never takes an axis below this many voxels (thin slabs keep their slices).
MIN_SHRUNK_VOXELS = 8


def _to_image(volume: np.ndarray, spacing: Spacing) -> sitk.Image:
    """A float32 SimpleITK image from a (slice, row, column) array; spacing in the same order, mm."""
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D (slice, row, column) volume, got shape {volume.shape}")
    if len(spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise ValueError(f"spacing must be three positive (slice, row, col) values in mm, got {tuple(spacing)}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume, dtype=np.float32))
    image.SetSpacing([float(s) for s in reversed(spacing)])  # SimpleITK orders axes (x=col, y=row, z=slice)
    return image


def foreground_mask(image: sitk.Image) -> sitk.Image:
    """Otsu foreground (1) versus air (0), restricted to positive intensities.

    Falls back to every positive voxel if Otsu finds nothing (e.g. a constant volume).
    """
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)  # voxels above the threshold are "outside" the dark class: foreground
    otsu.SetNumberOfHistogramBins(200)
    otsu.SetNumberOfThreads(SITK_THREADS)
    mask = otsu.Execute(image)
    positive = sitk.Cast(image > 0, sitk.sitkUInt8)
    mask = sitk.And(sitk.Cast(mask, sitk.sitkUInt8), positive)
    if not sitk.GetArrayViewFromImage(mask).any():
        mask = positive
    return mask


class N4BiasCorrection:
    """Divide a 4-D (phase, slice, row, column) exam by an N4-estimated bias field.

    Parameters
    ----------
    mode:
        ``per_exam``: one field from phase 0 (pre-contrast) applied to every phase;
        ``per_phase``: one field per phase; ``off``: return the input as float32.
    shrink_factor:
        estimation runs on the volume shrunk by this factor per axis (an axis is
        shrunk less if it would fall below ``MIN_SHRUNK_VOXELS``); the field is
        then evaluated at full resolution.
    iterations:
        maximum iterations per fitting level (SimpleITK derives the number of
        levels from this list's length).
    fitting_levels:
        number of B-spline fitting levels; must equal ``len(iterations)``, or
        ``iterations`` may hold one value repeated at every level.
    control_points:
        B-spline control points per axis at the coarsest level (ITK default 4).
    """

    def __init__(
        self,
        mode: N4Mode = "per_exam",
        shrink_factor: int = 4,
        iterations: tuple[int, ...] = (50, 50, 30, 20),
        fitting_levels: int = 4,
        convergence_threshold: float = 1e-3,
        control_points: int = 4,
    ) -> None:
        if mode not in ("per_exam", "per_phase", "off"):
            raise ValueError(f"mode must be 'per_exam', 'per_phase' or 'off', got {mode!r}")
        if shrink_factor < 1:
            raise ValueError(f"shrink_factor must be >= 1, got {shrink_factor}")
        if fitting_levels < 1:
            raise ValueError(f"fitting_levels must be >= 1, got {fitting_levels}")
        iterations = tuple(int(i) for i in iterations)
        if len(iterations) == 1:
            iterations = iterations * fitting_levels
        if len(iterations) != fitting_levels:
            raise ValueError(
                f"iterations has {len(iterations)} levels but fitting_levels is {fitting_levels}; "
                "give one iteration count per fitting level"
            )
        if any(i < 1 for i in iterations):
            raise ValueError(f"iterations must be positive, got {iterations}")
        if control_points < 4:
            raise ValueError(f"control_points must be >= 4 (spline order 3 + 1), got {control_points}")
        self.mode: N4Mode = mode
        self.shrink_factor = int(shrink_factor)
        self.iterations = iterations
        self.fitting_levels = int(fitting_levels)
        self.convergence_threshold = float(convergence_threshold)
        self.control_points = int(control_points)

    def __repr__(self) -> str:
        return (
            f"N4BiasCorrection(mode={self.mode!r}, shrink_factor={self.shrink_factor}, "
            f"iterations={self.iterations}, fitting_levels={self.fitting_levels}, "
            f"convergence_threshold={self.convergence_threshold}, control_points={self.control_points})"
        )

    def _shrink_factors(self, size_xyz: Sequence[int]) -> list[int]:
        return [max(1, min(self.shrink_factor, n // MIN_SHRUNK_VOXELS)) for n in size_xyz]

    def estimate_log_field(self, volume3d: np.ndarray, spacing: Spacing) -> np.ndarray:
        """The log bias field of a (slice, row, column) volume at full resolution, float32.

        ``volume3d / exp(field)`` is the corrected volume. A volume with no
        positive voxels has no field (zeros).
        """
        image = _to_image(volume3d, spacing)
        mask = foreground_mask(image)
        if not sitk.GetArrayViewFromImage(mask).any():
            return np.zeros(volume3d.shape, dtype=np.float32)
        factors = self._shrink_factors(image.GetSize())
        small_image = sitk.Shrink(image, factors)
        small_mask = sitk.Shrink(mask, factors)
        if not sitk.GetArrayViewFromImage(small_mask).any():  # tiny foreground lost by subsampling
            small_image, small_mask = image, mask

        n4 = sitk.N4BiasFieldCorrectionImageFilter()
        n4.SetMaximumNumberOfIterations(list(self.iterations))
        n4.SetConvergenceThreshold(self.convergence_threshold)
        n4.SetNumberOfControlPoints([self.control_points] * 3)
        n4.SetNumberOfThreads(SITK_THREADS)
        n4.Execute(small_image, small_mask)
        log_field = n4.GetLogBiasFieldAsImage(image)  # B-spline evaluated on the full-resolution grid
        return sitk.GetArrayFromImage(log_field).astype(np.float32, copy=False)

    def __call__(self, image4d: np.ndarray, spacing: Spacing) -> np.ndarray:
        """Corrected float32 copy of a (phase, slice, row, column) exam; spacing (slice, row, col) mm."""
        image4d = np.asarray(image4d)
        if image4d.ndim != 4 or image4d.shape[0] < 1:
            raise ValueError(f"expected a 4-D (phase, slice, row, column) exam, got shape {image4d.shape}")
        out = image4d.astype(np.float32)  # always a copy: callers may keep the input
        if self.mode == "off":
            return out
        if self.mode == "per_exam":
            field = np.exp(-self.estimate_log_field(out[0], spacing))
            out *= field[None]
        else:
            for phase in range(out.shape[0]):
                out[phase] *= np.exp(-self.estimate_log_field(out[phase], spacing))
        return out


def estimate_log_field(volume3d: np.ndarray, spacing: Spacing, shrink_factor: int = 4) -> np.ndarray:
    """Module-level shortcut: the full-resolution N4 log bias field of one volume."""
    return N4BiasCorrection(mode="per_phase", shrink_factor=shrink_factor).estimate_log_field(volume3d, spacing)

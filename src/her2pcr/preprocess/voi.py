"""Volume-of-interest transforms: crop to the tumour box, in-plane pad/crop, slice stacks, max normalisation.

Numpy only. Arrays are (phase, slice, row, column) until ``SliceStacks`` turns
them into (phase, stack, row, column, channel) CNN inputs (paper section 4.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from her2pcr.preprocess.settings import Box


class CropToBox:
    """Crop every phase of a (phase, slice, row, column) exam to an inclusive tumour box.

    With ``clip=True`` a box reaching past the volume is clipped to it (annotations
    drawn on a slightly different grid); with ``clip=False`` that is an error.
    A box that is empty (start > end) or lies wholly outside the volume is always
    a ValueError naming the axis.
    """

    def __init__(self, clip: bool = True) -> None:
        self.clip = bool(clip)

    def __repr__(self) -> str:
        return f"CropToBox(clip={self.clip})"

    def slices(self, shape: Sequence[int], box: Sequence[int]) -> tuple[slice, slice, slice]:
        """The (slice, row, column) index slices of ``box`` on a volume of spatial ``shape``."""
        b = Box.of(box)
        out = []
        for axis, size, start, end in (
            ("slice", shape[0], b.slice_start, b.slice_end),
            ("row", shape[1], b.row_start, b.row_end),
            ("column", shape[2], b.column_start, b.column_end),
        ):
            if start > end:
                raise ValueError(f"box is empty along {axis}: start {start} > end {end}")
            if end < 0 or start > size - 1:
                raise ValueError(f"box lies outside the volume along {axis}: [{start}, {end}] vs [0, {size - 1}]")
            if not self.clip and (start < 0 or end > size - 1):
                raise ValueError(f"box exceeds the volume along {axis}: [{start}, {end}] vs [0, {size - 1}]")
            out.append(slice(max(start, 0), min(end, size - 1) + 1))
        return out[0], out[1], out[2]

    def __call__(self, image4d: np.ndarray, box: Sequence[int]) -> np.ndarray:
        if image4d.ndim != 4:
            raise ValueError(f"expected a 4-D (phase, slice, row, column) exam, got shape {image4d.shape}")
        s, r, c = self.slices(image4d.shape[1:], box)
        return image4d[:, s, r, c]


class PadOrCropInPlane:
    """Bring the last two axes (row, column) to ``size`` x ``size``.

    Smaller axes are zero-padded symmetrically (the odd pixel goes after), larger
    ones are centre-cropped (the odd pixel is dropped after), so the VOI centre
    lands on pixel ``(size - 1) / 2`` within half a pixel. Leading axes are untouched.
    """

    def __init__(self, size: int = 156) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = int(size)

    def __repr__(self) -> str:
        return f"PadOrCropInPlane(size={self.size})"

    def __call__(self, array: np.ndarray) -> np.ndarray:
        if array.ndim < 2:
            raise ValueError(f"expected at least 2 axes (row, column), got shape {array.shape}")
        index: list[slice] = [slice(None)] * array.ndim
        pad = [(0, 0)] * array.ndim
        for axis in (array.ndim - 2, array.ndim - 1):
            n = array.shape[axis]
            if n > self.size:
                start = (n - self.size) // 2
                index[axis] = slice(start, start + self.size)
            else:
                before = (self.size - n) // 2
                pad[axis] = (before, self.size - n - before)
        cropped = array[tuple(index)]
        if any(p != (0, 0) for p in pad):
            return np.pad(cropped, pad, mode="constant", constant_values=0)
        return cropped.copy()


class SliceStacks:
    """One stack per slice: (..., slice, row, column) -> (..., slice, row, column, channel).

    Stack ``i`` holds slices ``i - channels//2 .. i + channels//2`` as channels,
    in slice order, so the centre channel is slice ``i``. At the ends of the VOI
    the missing neighbour index is clamped to the first/last slice (edge slices
    are replicated), so a VOI of S slices always yields S stacks, even S = 1.
    """

    def __init__(self, channels: int = 3) -> None:
        if channels < 1 or channels % 2 == 0:
            raise ValueError(f"channels must be a positive odd number (centre slice + neighbours), got {channels}")
        self.channels = int(channels)

    def __repr__(self) -> str:
        return f"SliceStacks(channels={self.channels})"

    def neighbour_index(self, n_slices: int) -> np.ndarray:
        """(n_slices, channels) slice indices of each stack, clamped to the VOI."""
        half = self.channels // 2
        offsets = np.arange(-half, half + 1)
        return np.clip(np.arange(n_slices)[:, None] + offsets[None, :], 0, n_slices - 1)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        if array.ndim < 3:
            raise ValueError(f"expected (..., slice, row, column), got shape {array.shape}")
        n_slices = array.shape[-3]
        if n_slices < 1:
            raise ValueError("no slices to stack")
        stacked = np.take(array, self.neighbour_index(n_slices), axis=-3)  # (..., S, C, H, W)
        return np.ascontiguousarray(np.moveaxis(stacked, -3, -1))  # (..., S, H, W, C)


class NormaliseMax:
    """Divide each CNN input by its own maximum, so values lie in [0, 1].

    An input is the trailing ``input_ndim`` axes (row, column, channel): one
    slice stack of one phase, as in the paper ("each input was normalized
    relative to its maximum grayscale level"). Negative values (noise after
    background subtraction, interpolation undershoot) are clipped to 0 first;
    an input whose maximum is 0 stays all zeros. Returns float32.
    """

    def __init__(self, input_ndim: int = 3) -> None:
        if input_ndim < 1:
            raise ValueError(f"input_ndim must be >= 1, got {input_ndim}")
        self.input_ndim = int(input_ndim)

    def __repr__(self) -> str:
        return f"NormaliseMax(input_ndim={self.input_ndim})"

    def __call__(self, array: np.ndarray) -> np.ndarray:
        if array.ndim < self.input_ndim:
            raise ValueError(f"expected at least {self.input_ndim} axes, got shape {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError("input contains NaN or infinite values")
        out = np.clip(array, 0, None).astype(np.float32)
        if out.size == 0:
            return out
        axes = tuple(range(out.ndim - self.input_ndim, out.ndim))
        peak = out.max(axis=axes, keepdims=True)
        np.divide(out, peak, out=out, where=peak > 0)  # peak == 0 means out is already all zeros
        return out


class CropWithMargin:
    """Crop a (phase, slice, row, column) exam to the box widened in-plane by ``margin_mm`` on every side.

    The peritumoural region (the enhancing shell reaches ~7 mm) carries signal that a tight box cuts off.
    Slices stay those of the box (one stack per tumour slice). Parts of the widened box outside the volume are
    filled with 0, so the box centre stays at the centre of the crop. ``margin_mm == 0`` is the plain box crop.
    """

    def __init__(self, margin_mm: float = 0.0) -> None:
        if margin_mm < 0:
            raise ValueError(f"margin_mm must be >= 0, got {margin_mm}")
        self.margin_mm = float(margin_mm)
        self.box_crop = CropToBox(clip=True)

    def __repr__(self) -> str:
        return f"CropWithMargin(margin_mm={self.margin_mm})"

    def __call__(self, image4d: np.ndarray, spacing: Sequence[float], box: Sequence[int]) -> np.ndarray:
        s, _, _ = self.box_crop.slices(image4d.shape[1:], box)  # validates the box
        b = Box.of(box)
        out_index, in_index, sizes = [], [], []
        for start, end, n, step in ((b.row_start, b.row_end, image4d.shape[2], spacing[1]),
                                    (b.column_start, b.column_end, image4d.shape[3], spacing[2])):
            extra = int(np.ceil(self.margin_mm / float(step) - 1e-9))
            lo, hi = start - extra, end + extra  # inclusive, may leave the volume
            sizes.append(hi - lo + 1)
            in_index.append(slice(max(lo, 0), min(hi, n - 1) + 1))
            out_index.append(slice(max(lo, 0) - lo, min(hi, n - 1) + 1 - lo))
        out = np.zeros((image4d.shape[0], s.stop - s.start, *sizes), dtype=image4d.dtype)
        out[:, :, out_index[0], out_index[1]] = image4d[:, s, in_index[0], in_index[1]]
        return out


class ResampleInPlane:
    """Resample the last two axes (row, column) from ``spacing`` to ``target_mm`` (linear interpolation).

    One physical scale for every exam, whatever the site's pixel spacing: a 5 mm halo is the same number of
    pixels everywhere. ``target_mm=None`` keeps the native grid (the paper's setting). With ``fit_size`` a VOI
    wider than ``fit_size * target_mm`` is resampled coarser, just enough to fit ``fit_size`` pixels, so the
    margin of a large tumour is never cropped away (the scale then follows the VOI, for those exams only).
    """

    def __init__(self, target_mm: float | None = None, fit_size: int | None = None) -> None:
        if target_mm is not None and target_mm <= 0:
            raise ValueError(f"target_mm must be > 0, got {target_mm}")
        if fit_size is not None and (fit_size < 1 or target_mm is None):
            raise ValueError(f"fit_size must be >= 1 and needs a target_mm, got {fit_size}")
        self.target_mm = None if target_mm is None else float(target_mm)
        self.fit_size = fit_size

    def __repr__(self) -> str:
        return f"ResampleInPlane(target_mm={self.target_mm}, fit_size={self.fit_size})"

    def spacing_for(self, shape: Sequence[int], spacing: Sequence[float]) -> float | None:
        """The in-plane output spacing for an array of ``shape`` on ``spacing`` (None: native grid)."""
        if self.target_mm is None or self.fit_size is None:
            return self.target_mm
        extent = max(shape[-2] * float(spacing[-2]), shape[-1] * float(spacing[-1]))
        return max(self.target_mm, extent / self.fit_size)

    def __call__(self, array: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        target = self.spacing_for(array.shape, spacing)
        if target is None:
            return array
        from scipy import ndimage

        factors = [1.0] * (array.ndim - 2) + [float(spacing[-2]) / target, float(spacing[-1]) / target]
        shape = [max(round(n * f), 1) for n, f in zip(array.shape, factors, strict=True)]
        if self.fit_size is not None:  # rounding must not push a fitted VOI one pixel over
            shape[-2:] = [min(n, self.fit_size) for n in shape[-2:]]
        # grid_mode: pixel areas (not centres) map onto each other, so the VOI keeps its extent and centre.
        return ndimage.zoom(array.astype(np.float32), [new / old for new, old in zip(shape, array.shape, strict=True)],
                            order=1, mode="grid-constant", grid_mode=True, cval=0.0)


class ExamReferenceScale:
    """Divide every phase of one exam by one reference taken from its enhancing tissue.

    The enhancing tissue is the voxels inside the tumour box whose early enhancement (first post-contrast minus
    pre-contrast) is in the top ``top_fraction``: tumour, whatever the fat suppression. The reference is the
    median of those voxels'

    - ``basis="pre"``: pre-contrast signal, which follows the scanner gain and the local receive bias; the
      inputs keep each exam's enhancement ratio (post / pre);
    - ``basis="enhancement"``: early enhancement (post1 - pre), which also absorbs what sets the size of the
      enhancement itself, the contrast agent's relaxivity, dose, field strength, flip angle and fat
      suppression: on the default cohorts the tumour's enhancement ratio differs 2-fold between sites
      (``bench/learn.py --input-shift``) while what predicts response is its pattern, not its scale.

    All phases share the one factor, so the kinetics' shape survives (per-input maxima scramble it, and a
    fat-dominated maximum differs with and without fat suppression). ``__call__`` returns
    ``value / (reference * intensity_range)``, unclipped: the chain derives subtractions first, then clips
    every input to [0, 1].
    """

    def __init__(self, intensity_range: float = 4.0, top_fraction: float = 0.25,
                 basis: Literal["pre", "enhancement"] = "pre") -> None:
        if intensity_range <= 0 or not 0 < top_fraction <= 1:
            raise ValueError("intensity_range must be > 0 and top_fraction in (0, 1]")
        self.intensity_range = float(intensity_range)
        self.top_fraction = float(top_fraction)
        self.basis = basis

    def __repr__(self) -> str:
        return (f"ExamReferenceScale(intensity_range={self.intensity_range}, top_fraction={self.top_fraction}, "
                f"basis={self.basis!r})")

    def reference(self, box_region: np.ndarray) -> float:
        """Reference intensity of a (phase, slice, row, column) box region (phase 0 = pre-contrast)."""
        pre = box_region[0].astype(np.float64).ravel()
        if box_region.shape[0] > 1:
            enhancement = box_region[1].astype(np.float64).ravel() - pre
            chosen = enhancement >= np.quantile(enhancement, 1 - self.top_fraction)
            values = enhancement[chosen] if self.basis == "enhancement" else pre[chosen]
        else:  # a single phase has no enhancement: its pre-contrast signal is the only reference
            values = pre
        positive = values[values > 0]
        if positive.size == 0:
            positive = pre[pre > 0]
        return float(np.median(positive)) if positive.size else 1.0

    def __call__(self, array: np.ndarray, box_region: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float32) / np.float32(self.reference(box_region) * self.intensity_range)


def subtraction_name(phase: str) -> str:
    """Name of the derived input ``phase - pre`` (``post3`` -> ``sub3``)."""
    return "sub" + phase.removeprefix("post")

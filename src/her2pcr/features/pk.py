"""Semi-quantitative pharmacokinetic (PK) features (paper section 4.5, Supplementary Table 5).

Eight PK parameters are computed voxel-wise from each tumour voxel's signal-time curve, summarised by five
statistics over the tumour (40 features), and computed once more on the mean tumour curve (8 features): 48.

Notation of Supplementary Table 5: S0, S1, Sfinal and Speak are the signal on the pre-contrast phase, the
first post-contrast phase, the final post-contrast phase and the post-contrast phase of maximum intensity;
t0, t1, tfinal and tpeak are the times at which those phases were acquired (``phase_times_s``).

Conventions (decisions where the paper is silent):

* The formulae are the table's, verbatim. The three "percent enhancement" rows are printed as ratios
  (Speak/S0, S1/S0, Sfinal/S0), not as (S - S0)/S0 * 100; the ratio is kept. The two differ by a fixed affine
  map, so skewness and kurtosis are identical and the other statistics are affinely related.
* Speak is the maximum over the post-contrast phases only; on ties the earliest phase is the peak.
* Rate of washout is 0 where the peak is the final phase (tfinal - tpeak = 0: no decay was observed), rather
  than 0/0.
* A voxel's value that the formula leaves undefined or infinite (e.g. the final phase enhancement ratio where
  Sfinal = S0) is NaN and left out of that map's statistics; a map with no finite value has NaN statistics.
* Statistics follow MATLAB's defaults, the environment of the reference study: sample standard deviation
  (N - 1), biased skewness, and Pearson kurtosis (3 for a normal distribution, ``fisher=False``). Skewness and
  kurtosis of a constant map are undefined: NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage, stats

from her2pcr.preprocess.voi import CropToBox

DEFAULT_THRESHOLD_PERCENT = 70.0

# Map names, in Supplementary Table 5's order.
PK_MAPS: tuple[str, ...] = (
    "time_to_peak",
    "max_percent_enhancement",
    "early_percent_enhancement",
    "late_percent_enhancement",
    "signal_enhancement_ratio",
    "final_phase_enhancement_ratio",
    "rate_of_uptake",
    "rate_of_washout",
)
STATISTICS: tuple[str, ...] = ("mean", "median", "sd", "skewness", "kurtosis")
MEAN_CURVE = "meancurve"
FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"{name}_{stat}" for name in PK_MAPS for stat in STATISTICS)
    + tuple(f"{name}_{MEAN_CURVE}" for name in PK_MAPS)
)


class PKError(ValueError):
    """An exam from which PK features cannot be computed; the message says why."""


class MissingTimingError(PKError):
    """Phase acquisition times are unknown (the study used only exams with timing)."""


class EmptyMaskError(PKError):
    """No tumour voxel passes the enhancement threshold inside the box."""


def check_times(times_s: Sequence[float] | np.ndarray, n_phases: int) -> np.ndarray:
    """Phase times as float64, or PKError: one finite time per phase, strictly increasing."""
    times = np.asarray(times_s, dtype=np.float64).ravel()
    if times.size != n_phases:
        raise PKError(f"{times.size} phase times for {n_phases} phases")
    missing = np.flatnonzero(~np.isfinite(times))
    if missing.size == times.size:
        raise MissingTimingError("phase timing missing: no acquisition time for any phase")
    if missing.size:
        raise MissingTimingError(f"phase timing missing for phase(s) {missing.tolist()} of {n_phases}")
    if np.any(np.diff(times) <= 0):
        raise PKError(f"phase times are not strictly increasing: {times.tolist()}")
    return times


def _check_image(image4d: np.ndarray) -> None:
    if image4d.ndim != 4:
        raise PKError(f"image must be (phase, slice, row, column); got shape {image4d.shape}")
    if image4d.shape[0] < 2:
        raise PKError(f"{image4d.shape[0]} phase(s): at least a pre- and one post-contrast phase are needed")


def _check_spacing(spacing: Sequence[float]) -> None:
    values = np.asarray(spacing, dtype=np.float64).ravel()
    if values.size != 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise PKError(f"spacing must be three positive (slice, row, column) millimetres; got {list(values)}")


def box_slices(box: Sequence[int], volume_shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """(slice, row, column) index slices of a 0-based inclusive box that must lie inside the volume.

    ``box`` is (row_start, row_end, column_start, column_end, slice_start, slice_end), the column order of
    clinical.parquet (as in the preprocess stage); the checks are those of the preprocessing crop.
    """
    try:
        return CropToBox(clip=False).slices(volume_shape, box)
    except ValueError as error:
        raise PKError(f"tumour box: {error}") from None


def tumour_mask(image4d: np.ndarray, box: Sequence[int], spacing: Sequence[float],
                threshold_percent: float = DEFAULT_THRESHOLD_PERCENT) -> np.ndarray:
    """Boolean (slice, row, column) tumour mask of the whole volume, False outside the box.

    Inside the box, voxels whose percent enhancement at the first post-contrast phase, (S1 - S0) / S0 * 100,
    exceeds ``threshold_percent`` (voxels with S0 <= 0 never do); the largest 3-D connected component (face
    connectivity; the first in scan order on a tie) is kept and its enclosed holes are filled.

    ``spacing`` (mm) is validated only: it is the same for every voxel of an exam, so ranking components by
    voxel count ranks them by volume.
    """
    image4d = np.asarray(image4d)
    _check_image(image4d)
    _check_spacing(spacing)
    region = box_slices(box, image4d.shape[1:])
    pre = image4d[(0, *region)].astype(np.float64)
    first = image4d[(1, *region)].astype(np.float64)
    positive = pre > 0
    percent = np.full(pre.shape, -np.inf)
    percent[positive] = (first[positive] - pre[positive]) / pre[positive] * 100.0
    enhancing = percent > threshold_percent
    if not enhancing.any():
        best = float(percent.max()) if np.isfinite(percent.max()) else float("nan")
        raise EmptyMaskError(f"empty tumour mask: no voxel in the tumour box enhances more than "
                             f"{threshold_percent:g}% at the first post-contrast phase "
                             f"(highest: {best:.1f}%)")
    labels, n_components = ndimage.label(enhancing)
    sizes = np.bincount(labels.ravel(), minlength=n_components + 1)
    sizes[0] = 0
    component = labels == int(np.argmax(sizes))
    mask = np.zeros(image4d.shape[1:], dtype=bool)
    mask[region] = ndimage.binary_fill_holes(component)
    return mask


def pk_maps(curves: np.ndarray, times_s: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
    """The eight parameters of Supplementary Table 5 for signal-time curves ``curves`` (phase, ...).

    Returns one float64 array of shape ``curves.shape[1:]`` per name of ``PK_MAPS``; undefined or infinite
    values are NaN.
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim < 1 or curves.shape[0] < 2:
        raise PKError(f"curves need a pre- and at least one post-contrast phase; got shape {curves.shape}")
    times = check_times(times_s, curves.shape[0])
    s0, s1, s_final = curves[0], curves[1], curves[-1]
    peak = np.argmax(curves[1:], axis=0) + 1          # post-contrast phase of maximum intensity (first on ties)
    s_peak = np.take_along_axis(curves, peak[np.newaxis], axis=0)[0]
    t0, t_peak, t_final = times[0], times[peak], times[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        maps = {
            # Time-to-Peak: time in seconds of the scan exhibiting peak intensity. Formula: tpeak - t0.
            "time_to_peak": t_peak - t0,
            # Maximum Percent Enhancement: increase between max post-contrast and pre-contrast. Formula: Speak/S0.
            "max_percent_enhancement": s_peak / s0,
            # Early Percent Enhancement: increase between first post-contrast and pre-contrast. Formula: S1/S0.
            "early_percent_enhancement": s1 / s0,
            # Late Percent Enhancement: increase between final post-contrast and pre-contrast. Formula: Sfinal/S0.
            "late_percent_enhancement": s_final / s0,
            # Signal Enhancement Ratio: first post-contrast increase over peak increase, relative to
            # pre-contrast. Formula: (S1 - S0) / (Speak - S0).
            "signal_enhancement_ratio": (s1 - s0) / (s_peak - s0),
            # Final Phase Enhancement Ratio: first post-contrast increase over final increase, relative to
            # pre-contrast. Formula: (S1 - S0) / (Sfinal - S0).
            "final_phase_enhancement_ratio": (s1 - s0) / (s_final - s0),
            # Rate of Uptake: rate of enhancement between peak and pre-contrast. Formula: (Speak - S0)/(tpeak - t0).
            "rate_of_uptake": (s_peak - s0) / (t_peak - t0),
            # Rate of Washout: rate of intensity decay between peak and final acquisition.
            # Formula: (Sfinal - Speak) / (tfinal - tpeak); 0 where the peak is the final phase.
            "rate_of_washout": np.where(t_final > t_peak, (s_final - s_peak) / (t_final - t_peak), 0.0),
        }
    return {name: np.where(np.isfinite(value), value, np.nan).astype(np.float64) for name, value in maps.items()}


def summarise(values: np.ndarray) -> dict[str, float]:
    """Mean, median, sample SD, skewness and Pearson kurtosis of the finite values (NaN where undefined)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return dict.fromkeys(STATISTICS, float("nan"))
    constant = bool(np.ptp(values) == 0)
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "sd": float(np.std(values, ddof=1)) if values.size > 1 else float("nan"),
        "skewness": float("nan") if constant else float(stats.skew(values, bias=True)),
        "kurtosis": float("nan") if constant else float(stats.kurtosis(values, fisher=False, bias=True)),
    }


def features_from_curves(curves: np.ndarray, times_s: Sequence[float] | np.ndarray) -> dict[str, float]:
    """The 48 features from the tumour voxels' curves (phase, voxel), in ``FEATURE_NAMES`` order."""
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[1] == 0:
        raise PKError(f"curves must be (phase, voxel) with at least one voxel; got shape {curves.shape}")
    features: dict[str, float] = {}
    for name, values in pk_maps(curves, times_s).items():
        for stat, value in summarise(values).items():
            features[f"{name}_{stat}"] = value
    mean_curve = curves.mean(axis=1)
    for name, value in pk_maps(mean_curve, times_s).items():
        features[f"{name}_{MEAN_CURVE}"] = float(value)
    return {name: features[name] for name in FEATURE_NAMES}


def pk_features(image4d: np.ndarray, times_s: Sequence[float] | np.ndarray, box: Sequence[int],
                spacing: Sequence[float], threshold_percent: float = DEFAULT_THRESHOLD_PERCENT) -> dict[str, float]:
    """The 48 PK features of one exam: ``image4d`` (phase, slice, row, column), phase times in seconds.

    Raises MissingTimingError when any phase time is NaN, EmptyMaskError when no voxel of the box passes the
    threshold, and PKError for other unusable inputs.
    """
    image4d = np.asarray(image4d)
    _check_image(image4d)
    check_times(times_s, image4d.shape[0])
    mask = tumour_mask(image4d, box, spacing, threshold_percent)
    curves = image4d[:, mask].astype(np.float64)
    return features_from_curves(curves, times_s)

"""PK features (Supplementary Table 5) on analytic enhancement curves with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from her2pcr.features.pk import (
    FEATURE_NAMES,
    PK_MAPS,
    STATISTICS,
    EmptyMaskError,
    MissingTimingError,
    PKError,
    check_times,
    pk_features,
    pk_maps,
    summarise,
    tumour_mask,
)

SPACING = (2.0, 0.7, 0.7)
TIMES = np.array([0.0, 90.0, 180.0, 270.0])
# Curve A: washout. S0=100, S1=250, peak at phase 2 = 300 (t=180 s), final = 240 (t=270 s).
CURVE_A = np.array([100.0, 250.0, 300.0, 240.0])
# Curve B: persistent. S0=200, S1=400, peak = final = 600 at phase 3 (t=270 s).
CURVE_B = np.array([200.0, 400.0, 500.0, 600.0])

# Hand-computed with the table's formulae (t0 = 0).
EXPECTED_A = {
    "time_to_peak": 180.0,                              # tpeak - t0
    "max_percent_enhancement": 3.0,                     # Speak/S0 = 300/100
    "early_percent_enhancement": 2.5,                   # S1/S0 = 250/100
    "late_percent_enhancement": 2.4,                    # Sfinal/S0 = 240/100
    "signal_enhancement_ratio": 0.75,                   # (S1-S0)/(Speak-S0) = 150/200
    "final_phase_enhancement_ratio": 150.0 / 140.0,     # (S1-S0)/(Sfinal-S0) = 150/140
    "rate_of_uptake": 200.0 / 180.0,                    # (Speak-S0)/(tpeak-t0)
    "rate_of_washout": -60.0 / 90.0,                    # (Sfinal-Speak)/(tfinal-tpeak) = (240-300)/(270-180)
}
EXPECTED_B = {
    "time_to_peak": 270.0,
    "max_percent_enhancement": 3.0,                     # 600/200
    "early_percent_enhancement": 2.0,                   # 400/200
    "late_percent_enhancement": 3.0,                    # 600/200
    "signal_enhancement_ratio": 0.5,                    # 200/400
    "final_phase_enhancement_ratio": 0.5,               # 200/400
    "rate_of_uptake": 400.0 / 270.0,
    "rate_of_washout": 0.0,                             # peak is the final phase: no decay
}
# Mean of A and B: [150, 325, 400, 420] -> peak at the final phase (t=270 s).
EXPECTED_MEAN_CURVE = {
    "time_to_peak": 270.0,
    "max_percent_enhancement": 420.0 / 150.0,
    "early_percent_enhancement": 325.0 / 150.0,
    "late_percent_enhancement": 420.0 / 150.0,
    "signal_enhancement_ratio": 175.0 / 270.0,
    "final_phase_enhancement_ratio": 175.0 / 270.0,
    "rate_of_uptake": 270.0 / 270.0,
    "rate_of_washout": 0.0,
}
BOX = (1, 4, 1, 4, 1, 2)        # row 1-4, column 1-4, slice 1-2: 32 voxels


def two_curve_image(dtype=np.float64) -> np.ndarray:
    """(4, 4, 6, 6): flat background 100; in the box, slice 1 follows curve A and slice 2 curve B."""
    image = np.full((4, 4, 6, 6), 100.0)
    image[:, 1, 1:5, 1:5] = CURVE_A[:, None, None]
    image[:, 2, 1:5, 1:5] = CURVE_B[:, None, None]
    return image.astype(dtype)


@pytest.mark.parametrize("curve, expected", [(CURVE_A, EXPECTED_A), (CURVE_B, EXPECTED_B)])
def test_each_formula_on_an_analytic_curve(curve, expected):
    maps = pk_maps(curve, TIMES)
    assert set(maps) == set(PK_MAPS)
    for name, value in expected.items():
        assert float(maps[name]) == pytest.approx(value, rel=1e-12), name


def test_maps_are_voxelwise_and_use_phase_times():
    curves = np.stack([CURVE_A, CURVE_B, CURVE_A], axis=1)          # (phase, voxel)
    shifted = TIMES + 30.0                                            # t0 = 30: only differences matter
    maps = pk_maps(curves, shifted)
    np.testing.assert_allclose(maps["time_to_peak"], [180.0, 270.0, 180.0])
    stretched = pk_maps(curves, TIMES * 2)
    np.testing.assert_allclose(stretched["rate_of_uptake"], maps["rate_of_uptake"] / 2)
    np.testing.assert_allclose(stretched["rate_of_washout"], maps["rate_of_washout"] / 2)


def test_peak_is_the_earliest_maximum_of_the_post_contrast_phases():
    # pre-contrast is the maximum of the whole curve but not a post-contrast phase; tie at phases 1 and 3
    maps = pk_maps(np.array([500.0, 300.0, 200.0, 300.0]), TIMES)
    assert float(maps["time_to_peak"]) == 90.0
    assert float(maps["signal_enhancement_ratio"]) == 1.0


def test_undefined_values_are_nan():
    # Sfinal = S0: final phase enhancement ratio divides by zero; S0 = 0: the ratios to S0 are undefined
    maps = pk_maps(np.array([[100.0, 0.0], [200.0, 50.0], [150.0, 60.0], [100.0, 40.0]]), TIMES)
    assert math.isnan(maps["final_phase_enhancement_ratio"][0])
    assert math.isnan(maps["early_percent_enhancement"][1])
    assert maps["signal_enhancement_ratio"][0] == pytest.approx(1.0)


def test_summarise_known_values():
    # deviations from the mean 4: -3 -2 -1 0 6; m2 = 10, m3 = 36, m4 = 278.8
    result = summarise(np.array([1.0, 2.0, 3.0, 4.0, 10.0, np.nan]))
    assert result["mean"] == pytest.approx(4.0)
    assert result["median"] == pytest.approx(3.0)
    assert result["sd"] == pytest.approx(math.sqrt(50.0 / 4))        # sample SD (N - 1)
    assert result["skewness"] == pytest.approx(36.0 / 10.0 ** 1.5)
    assert result["kurtosis"] == pytest.approx(278.8 / 100.0)         # Pearson (normal = 3)


def test_summarise_degenerate():
    constant = summarise(np.full(5, 2.0))
    assert constant["mean"] == 2.0 and constant["sd"] == 0.0
    assert math.isnan(constant["skewness"]) and math.isnan(constant["kurtosis"])
    assert all(math.isnan(v) for v in summarise(np.array([np.nan, np.inf])).values())


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_pk_features_maps_statistics_and_mean_curve(dtype):
    features = pk_features(two_curve_image(dtype), TIMES, BOX, SPACING, threshold_percent=70.0)
    assert list(features) == list(FEATURE_NAMES)
    n = 32
    for name in PK_MAPS:
        a, b = EXPECTED_A[name], EXPECTED_B[name]
        assert features[f"{name}_mean"] == pytest.approx((a + b) / 2, rel=1e-6), name
        assert features[f"{name}_median"] == pytest.approx((a + b) / 2, rel=1e-6), name
        assert features[f"{name}_sd"] == pytest.approx(abs(a - b) / 2 * math.sqrt(n / (n - 1)), abs=1e-9), name
        if a == b:      # max percent enhancement is 3 on both curves: a constant map
            assert math.isnan(features[f"{name}_skewness"]) and math.isnan(features[f"{name}_kurtosis"])
        else:           # two equally weighted values: symmetric, Pearson kurtosis 1
            assert features[f"{name}_skewness"] == pytest.approx(0.0, abs=1e-6), name
            assert features[f"{name}_kurtosis"] == pytest.approx(1.0, rel=1e-6), name
        assert features[f"{name}_meancurve"] == pytest.approx(EXPECTED_MEAN_CURVE[name], rel=1e-6), name


def test_feature_names():
    assert len(FEATURE_NAMES) == 48 == len(set(FEATURE_NAMES))
    assert len(PK_MAPS) == 8 and STATISTICS == ("mean", "median", "sd", "skewness", "kurtosis")
    expected = {f"{m}_{s}" for m in PK_MAPS for s in STATISTICS} | {f"{m}_meancurve" for m in PK_MAPS}
    assert set(FEATURE_NAMES) == expected


@pytest.mark.parametrize("times, match", [
    ([np.nan] * 4, "no acquisition time for any phase"),
    ([0.0, 90.0, np.nan, 270.0], r"phase\(s\) \[2\]"),
])
def test_missing_timing_raises(times, match):
    with pytest.raises(MissingTimingError, match=match):
        pk_features(two_curve_image(), times, BOX, SPACING)
    with pytest.raises(MissingTimingError):
        pk_maps(CURVE_A, times)


def test_bad_timing_raises():
    with pytest.raises(PKError, match="strictly increasing"):
        check_times([0.0, 90.0, 90.0, 270.0], 4)
    with pytest.raises(PKError, match="3 phase times for 4 phases"):
        pk_features(two_curve_image(), TIMES[:3], BOX, SPACING)


# --- tumour mask -------------------------------------------------------------------------------------------

def ball(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius ** 2


def blob_image(*blobs, shape=(12, 24, 24), s0=100.0, enhancement=2.0) -> np.ndarray:
    """(3, *shape) with background S0 = S1 = S2; voxels of each blob enhance by ``enhancement`` x S0."""
    image = np.full((3, *shape), s0)
    for blob in blobs:
        image[1:, blob] = s0 * (1 + enhancement)
    return image


def test_mask_finds_the_enhancing_blob_inside_the_box():
    blob = ball((12, 24, 24), (5, 8, 8), 3)
    mask = tumour_mask(blob_image(blob), (2, 14, 2, 14, 1, 10), SPACING)
    assert mask.shape == (12, 24, 24)
    np.testing.assert_array_equal(mask, blob)


def test_mask_ignores_an_enhancing_blob_outside_the_box():
    inside = ball((12, 24, 24), (5, 6, 6), 2)
    outside = ball((12, 24, 24), (5, 17, 17), 4)                      # larger, but outside the box
    mask = tumour_mask(blob_image(inside, outside), (1, 11, 1, 11, 1, 10), SPACING)
    np.testing.assert_array_equal(mask, inside)


def test_mask_keeps_the_largest_component_and_fills_holes():
    small = ball((12, 24, 24), (5, 4, 4), 1)
    large = ball((12, 24, 24), (5, 14, 14), 4)
    core = ball((12, 24, 24), (5, 14, 14), 1)                       # necrotic core: does not enhance
    image = blob_image(small, large & ~core)
    mask = tumour_mask(image, (0, 23, 0, 23, 0, 11), SPACING)
    np.testing.assert_array_equal(mask, large)


def test_mask_threshold_and_non_positive_baseline():
    blob = ball((12, 24, 24), (5, 8, 8), 3)
    image = blob_image(blob, enhancement=0.5)                        # 50 % enhancement
    assert tumour_mask(image, (2, 14, 2, 14, 1, 10), SPACING, threshold_percent=40.0).sum() == blob.sum()
    with pytest.raises(EmptyMaskError, match=r"more than 70% .*highest: 50\.0%"):
        tumour_mask(image, (2, 14, 2, 14, 1, 10), SPACING, threshold_percent=70.0)
    air = blob_image(s0=0.0)
    air[1:] = 50.0                                                    # S0 = 0: never counted as enhancing
    with pytest.raises(EmptyMaskError):
        tumour_mask(air, (2, 14, 2, 14, 1, 10), SPACING)


def test_pk_features_reports_an_empty_mask():
    image = np.full((4, 4, 6, 6), 100.0)
    with pytest.raises(EmptyMaskError, match="empty tumour mask"):
        pk_features(image, TIMES, BOX, SPACING)


@pytest.mark.parametrize("box", [(1, 4, 1, 4, 1, 9), (4, 1, 1, 4, 1, 2), (1, 4, 1, 4, 1)])
def test_bad_box_raises(box):
    with pytest.raises(PKError):
        tumour_mask(two_curve_image(), box, SPACING)

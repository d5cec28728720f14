"""VOI transforms: crop to box, in-plane pad/crop, slice stacks, max normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from her2pcr.preprocess.voi import Box, CropToBox, NormaliseMax, PadOrCropInPlane, SliceStacks


def coded_exam(phases=2, slices=6, rows=20, cols=30):
    """Every voxel holds its own coordinates: value = 1e6*p + 1e4*s + 1e2*r + c."""
    p, s, r, c = np.meshgrid(*[np.arange(n) for n in (phases, slices, rows, cols)], indexing="ij")
    return (1e6 * p + 1e4 * s + 1e2 * r + c).astype(np.float64)


# --- CropToBox ---------------------------------------------------------------------------------


def test_crop_takes_inclusive_box_on_every_phase():
    exam = coded_exam()
    box = Box(row_start=3, row_end=7, column_start=10, column_end=20, slice_start=1, slice_end=2)
    voi = CropToBox()(exam, box)
    assert voi.shape == (2, 2, 5, 11)
    np.testing.assert_array_equal(voi, exam[:, 1:3, 3:8, 10:21])


def test_crop_accepts_a_plain_sequence():
    exam = coded_exam()
    np.testing.assert_array_equal(CropToBox()(exam, [0, 0, 0, 0, 0, 0]), exam[:, :1, :1, :1])


def test_crop_clips_a_box_reaching_past_the_volume():
    exam = coded_exam()
    voi = CropToBox()(exam, (-2, 4, 25, 40, 4, 9))
    np.testing.assert_array_equal(voi, exam[:, 4:6, 0:5, 25:30])


def test_crop_without_clipping_rejects_a_box_past_the_volume():
    with pytest.raises(ValueError, match="exceeds the volume along column"):
        CropToBox(clip=False)(coded_exam(), (0, 4, 25, 40, 0, 1))


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ((5, 4, 0, 1, 0, 1), "empty along row"),
        ((0, 1, 3, 2, 0, 1), "empty along column"),
        ((0, 1, 0, 1, 3, 2), "empty along slice"),
        ((20, 25, 0, 1, 0, 1), "outside the volume along row"),
        ((0, 1, -5, -1, 0, 1), "outside the volume along column"),
        ((0, 1, 0, 1, 6, 8), "outside the volume along slice"),
        ((0, 1, 0, 1, 0), "6 values"),
        ((0, 1.5, 0, 1, 0, 1), "row_end must be an integer"),
    ],
)
def test_crop_rejects_bad_boxes(box, message):
    with pytest.raises(ValueError, match=message):
        CropToBox()(coded_exam(), box)


def test_crop_rejects_non_4d():
    with pytest.raises(ValueError, match="4-D"):
        CropToBox()(np.zeros((4, 4, 4)), (0, 1, 0, 1, 0, 1))


# --- PadOrCropInPlane ----------------------------------------------------------------------------


def test_pad_centres_the_voi_with_zeros():
    voi = np.ones((2, 3, 21, 40), dtype=np.float32)
    out = PadOrCropInPlane(156)(voi)
    assert out.shape == (2, 3, 156, 156) and out.dtype == np.float32
    rows, cols = np.nonzero(out[0, 0])
    assert (rows.min(), rows.max()) == (67, 87)  # 135 rows of padding: 67 before, 68 after
    assert (cols.min(), cols.max()) == (58, 97)  # 116 columns: 58 before, 58 after
    assert out.sum() == voi.sum()


def test_centre_crop_when_larger():
    voi = coded_exam(phases=1, slices=1, rows=160, cols=200)
    out = PadOrCropInPlane(156)(voi)
    assert out.shape == (1, 1, 156, 156)
    np.testing.assert_array_equal(out, voi[:, :, 2:158, 22:178])


def test_pad_one_axis_crop_the_other():
    voi = np.arange(10 * 300, dtype=np.float32).reshape(10, 300)
    out = PadOrCropInPlane(156)(voi)
    assert out.shape == (156, 156)
    np.testing.assert_array_equal(out[73:83], voi[:, 72:228])
    assert not out[:73].any() and not out[83:].any()


def test_exact_size_is_a_copy():
    voi = np.ones((1, 156, 156))
    out = PadOrCropInPlane(156)(voi)
    np.testing.assert_array_equal(out, voi)
    assert not np.shares_memory(out, voi)


def test_pad_rejects_bad_size():
    with pytest.raises(ValueError, match="size"):
        PadOrCropInPlane(0)


# --- SliceStacks ---------------------------------------------------------------------------------


def test_stacks_hold_each_slice_and_its_neighbours():
    voi = coded_exam(phases=2, slices=5, rows=4, cols=3)
    out = SliceStacks(3)(voi)
    assert out.shape == (2, 5, 4, 3, 3)
    expected_slices = [(0, 0, 1), (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 4)]  # edges clamp (replicate)
    for p in range(2):
        for i, neighbours in enumerate(expected_slices):
            for ch, s in enumerate(neighbours):
                np.testing.assert_array_equal(out[p, i, :, :, ch], voi[p, s])


def test_five_channels_and_single_slice():
    voi = coded_exam(phases=1, slices=1, rows=2, cols=2)
    out = SliceStacks(5)(voi)
    assert out.shape == (1, 1, 2, 2, 5)
    for ch in range(5):
        np.testing.assert_array_equal(out[0, 0, :, :, ch], voi[0, 0])
    expected = [[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2]]
    np.testing.assert_array_equal(SliceStacks(5).neighbour_index(3), expected)


def test_one_channel_is_the_slice_itself():
    voi = coded_exam(phases=1, slices=3, rows=2, cols=2)
    np.testing.assert_array_equal(SliceStacks(1)(voi)[..., 0], voi)


@pytest.mark.parametrize("channels", [0, 2, -3])
def test_stacks_reject_even_or_nonpositive_channels(channels):
    with pytest.raises(ValueError, match="odd"):
        SliceStacks(channels)


# --- NormaliseMax --------------------------------------------------------------------------------


def test_each_input_divided_by_its_own_maximum():
    rng = np.random.default_rng(0)
    stacks = rng.uniform(0, 1, (2, 3, 4, 4, 3)) * np.array([1.0, 50.0, 700.0])[None, :, None, None, None]
    out = NormaliseMax()(stacks)
    assert out.dtype == np.float32 and out.shape == stacks.shape
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out.max(axis=(2, 3, 4)), 1.0)
    np.testing.assert_allclose(out, stacks / stacks.max(axis=(2, 3, 4), keepdims=True), rtol=1e-6)


def test_all_zero_input_stays_zero_and_negatives_clip():
    stacks = np.zeros((2, 4, 4, 3))
    stacks[1, 0, 0, 0] = 4.0
    stacks[1, 1, 1, 1] = -3.0
    out = NormaliseMax()(stacks)
    assert not out[0].any()
    assert out[1, 0, 0, 0] == 1.0 and out[1, 1, 1, 1] == 0.0
    assert np.isfinite(out).all()


def test_normalise_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        NormaliseMax()(np.full((2, 2, 2), np.nan))

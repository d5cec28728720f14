"""The default chain's context, scale and intensity steps on analytic volumes: margin in mm, in-plane
resampling to one spacing, one intensity reference per exam, subtraction inputs."""

from __future__ import annotations

import numpy as np
import pytest

from her2pcr.preprocess.chain import PreprocessChain, PreprocessConfig
from her2pcr.preprocess.voi import CropWithMargin, ExamReferenceScale, ResampleInPlane, subtraction_name

DEFAULT = PreprocessConfig(n4_mode="off", margin_mm=10.0, spacing_mm=1.0, intensity="exam_reference",
                           intensity_range=4.0, subtractions=True, input_size=64, channels=3)


def test_margin_widens_the_box_by_whole_voxels_covering_the_margin_and_zero_fills_outside():
    image = np.arange(2 * 4 * 30 * 40, dtype=np.float32).reshape(2, 4, 30, 40) + 1
    box = (10, 14, 2, 6, 1, 2)  # rows 10..14, columns 2..6 (near the left edge), slices 1..2
    out = CropWithMargin(margin_mm=2.0)(image, (3.0, 0.8, 0.8), box)
    # 2 mm at 0.8 mm pixels needs 3 pixels per side: 5 + 6 = 11 rows and columns; slices stay the box's.
    assert out.shape == (2, 2, 11, 11)
    np.testing.assert_array_equal(out[:, :, :, 1:], image[:, 1:3, 7:18, 0:10])
    assert (out[:, :, :, :1] == 0).all()  # column -1 lies outside the volume
    np.testing.assert_array_equal(out[:, :, 3:-3, 3:-3], image[:, 1:3, 10:15, 2:7])  # the box, centred
    assert CropWithMargin(0.0)(image, (3.0, 0.8, 0.8), box).shape == (2, 2, 5, 5)


def test_margin_rejects_a_box_outside_the_volume():
    with pytest.raises(ValueError, match="outside the volume along row"):
        CropWithMargin(5.0)(np.zeros((1, 2, 10, 10)), (1, 1, 1), (20, 25, 0, 3, 0, 1))


def test_resampling_gives_one_physical_scale():
    # A disc of radius 6 mm drawn on a 0.5 mm grid and on a 1.2 mm grid: after resampling both to 1 mm it
    # covers the same number of pixels (pi * 36 ~ 113) within partial-volume error.
    areas = []
    for spacing in (0.5, 1.2):
        n = int(round(40 / spacing))
        y, x = (np.mgrid[:n, :n] - (n - 1) / 2) * spacing
        disc = (np.hypot(y, x) <= 6.0).astype(np.float32)[None]
        out = ResampleInPlane(1.0)(disc, (2.0, spacing, spacing))
        assert out.shape == (1, 40, 40)
        areas.append(out.sum())
    assert areas == pytest.approx([np.pi * 36] * 2, rel=0.06)
    same = np.ones((1, 5, 5), np.float32)
    assert ResampleInPlane(None)(same, (1, 0.7, 0.7)) is same


def test_fitting_resamples_a_wide_voi_coarser_instead_of_cropping_its_margin():
    # A 60 x 40 mm VOI on 0.5 mm pixels, target 1 mm, input 40: without fitting it becomes 60 x 40 pixels and
    # the pad/crop step would cut 10 mm off each side; fitted, the long axis lands on 40 pixels (1.5 mm).
    voi = np.ones((1, 120, 80), np.float32)
    fit = ResampleInPlane(1.0, fit_size=40)
    assert fit.spacing_for(voi.shape, (2.0, 0.5, 0.5)) == pytest.approx(1.5)
    assert fit(voi, (2.0, 0.5, 0.5)).shape == (1, 40, 27)
    assert ResampleInPlane(1.0)(voi, (2.0, 0.5, 0.5)).shape == (1, 60, 40)
    small = np.ones((1, 40, 40), np.float32)  # 20 mm: already fits, keeps the 1 mm scale
    assert fit(small, (2.0, 0.5, 0.5)).shape == (1, 20, 20)
    with pytest.raises(ValueError, match="needs a target_mm"):
        ResampleInPlane(None, fit_size=40)


def test_fitted_chain_keeps_the_whole_margin_of_a_large_tumour():
    image = np.zeros((2, 3, 100, 100), np.float32)
    image[:, :, 20:80, 20:80] = 100.0  # a 60 mm "tumour" filling its box on 1 mm pixels
    image[1, :, 20:80, 20:80] = 300.0
    box = (20, 79, 20, 79, 0, 2)
    config = DEFAULT.model_copy(update={"margin_mm": 10.0, "input_size": 40, "fit_voi": True})
    sub1 = PreprocessChain(config)(image, (2.0, 1.0, 1.0), box)["sub1"][1, :, :, 1]
    # 80 mm of VOI on 40 pixels (2 mm): the tumour spans the central 30 pixels, 5 pixels (10 mm) of margin
    # stay on each side; cropping would have kept the central 40 mm of the tumour and no margin at all.
    assert (sub1[5:35, 5:35] > 0.4).all() and (sub1[:4] == 0).all() and (sub1[:, -4:] == 0).all()


def exam_with(fat_pre: float, gain: float, uptake: float = 1.0) -> tuple[np.ndarray, tuple[int, ...]]:
    """Pre / post1 / post2 of a 40 x 40 slab: fat (non-enhancing) around an enhancing disc of tumour whose
    enhancement (150 at post1, 100 at post2) is scaled by ``uptake`` (the agent's relaxivity, dose...)."""
    y, x = np.mgrid[:40, :40] - 19.5
    tumour = np.hypot(y, x) <= 6
    pre = np.where(tumour, 100.0, fat_pre)
    phases = [pre, np.where(tumour, 100.0 + 150.0 * uptake, fat_pre), np.where(tumour, 100.0 + 100.0 * uptake, fat_pre)]
    image = gain * np.stack([np.repeat(p[None], 3, axis=0) for p in phases]).astype(np.float32)
    return image, (12, 27, 12, 27, 0, 2)  # the box around the disc


def test_one_reference_per_exam_survives_fat_suppression_and_gain():
    outputs = []
    for fat_pre, gain in ((400.0, 1.0), (40.0, 3.7)):  # no fat suppression, gain 1; fat-suppressed, gain 3.7
        image, box = exam_with(fat_pre, gain)
        scale = ExamReferenceScale(intensity_range=4.0)
        region = image[:, 0:3, 12:28, 12:28]
        assert scale.reference(region) == pytest.approx(100.0 * gain)  # tumour pre-contrast, whatever the fat
        outputs.append(PreprocessChain(DEFAULT.model_copy(update={"spacing_mm": None}))(image, (2, 1, 1), box))
    for a, b in zip(*outputs, strict=True):
        assert a == b
    names = list(outputs[0])
    assert names == ["pre", "post1", "post2", "sub1", "sub2"]
    for inputs in outputs:
        centre = {k: v[1, 32, 32, 1] for k, v in inputs.items()}  # the tumour centre of the middle stack
        # tumour: pre 1 x reference, post1 2.5 x, post2 2 x; / intensity_range 4; enhancement ratios survive
        assert centre == pytest.approx({"pre": 0.25, "post1": 0.625, "post2": 0.5, "sub1": 0.375, "sub2": 0.25},
                                       abs=1e-3)
        np.testing.assert_allclose(inputs["sub1"][1, 20:44, 20:44, 1][:2, :2], 0.0)  # fat never enhances
    fat_sat, fat_bright = outputs[1]["pre"][1, 24, 14, 1], outputs[0]["pre"][1, 24, 14, 1]
    # only the fat differs (values are rounded to float16, resolution ~5e-4 near 0.1)
    assert fat_bright == pytest.approx(1.0) and fat_sat == pytest.approx(0.1, abs=1e-3)


def test_enhancement_reference_removes_the_protocols_enhancement_scale_and_keeps_the_kinetics_shape():
    config = DEFAULT.model_copy(update={"spacing_mm": None, "intensity": "exam_enhancement"})
    outputs = []
    for fat_pre, gain, uptake in ((400.0, 1.0, 1.0), (40.0, 3.7, 2.0), (400.0, 0.6, 0.5)):
        image, box = exam_with(fat_pre, gain, uptake)
        region = image[:, 0:3, 12:28, 12:28]
        assert ExamReferenceScale(basis="enhancement").reference(region) == pytest.approx(150.0 * gain * uptake)
        outputs.append(PreprocessChain(config)(image, (2, 1, 1), box))
    for other in outputs[1:]:
        for name in ("sub1", "sub2"):
            np.testing.assert_array_equal(outputs[0][name], other[name])
    # the tumour's early enhancement is 1 x reference, its late one 2/3 x: / intensity_range 4
    assert outputs[0]["sub1"][1, 32, 32, 1] == pytest.approx(0.25, abs=1e-3)
    assert outputs[0]["sub2"][1, 32, 32, 1] == pytest.approx(1 / 6, abs=1e-3)
    # the pre-contrast reference leaves the uptake's scale in the inputs
    pre_based = PreprocessChain(DEFAULT.model_copy(update={"spacing_mm": None}))
    sub1 = [pre_based(image, (2, 1, 1), box)["sub1"][1, 32, 32, 1]
            for image, box in (exam_with(400.0, 1.0, 1.0), exam_with(400.0, 1.0, 2.0))]
    assert sub1[1] == pytest.approx(2 * sub1[0], rel=1e-2)


def test_default_chain_output_contract():
    image, box = exam_with(400.0, 1.0)
    inputs = PreprocessChain(DEFAULT)(image, (2.0, 0.8, 0.8), box)
    for x in inputs.values():
        assert x.shape == (3, 64, 64, 3) and x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
    assert subtraction_name("post3") == "sub3"
    paper = PreprocessChain()
    assert paper.fingerprint() != PreprocessChain(DEFAULT).fingerprint()

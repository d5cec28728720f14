"""N4 bias-field correction on a synthetic two-tissue phantom with a known smooth field."""

from __future__ import annotations

import numpy as np
import pytest

from her2pcr.preprocess.bias import N4BiasCorrection, estimate_log_field

SPACING = (3.0, 1.0, 1.0)  # slice, row, col (mm)


def phantom(shape=(16, 64, 64), seed=0):
    """Ellipsoidal 'breast' (tissue A) with an off-centre inclusion (tissue B) in air, times a bias field.

    Returns the biased 4-phase exam, the bias field and the two tissue masks.
    Phases 1-3 enhance tissue B (different per phase), like contrast uptake.
    """
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = x**2 / 0.8**2 + y**2 / 0.8**2 + z**2 / 1.2**2 < 1
    inner = ((x - 0.2) ** 2 + (y + 0.1) ** 2) / 0.35**2 + z**2 / 0.9**2 < 1
    tissue_a, tissue_b = body & ~inner, inner
    field = np.exp(0.35 * x + 0.25 * y - 0.15 * z + 0.1 * x * y)
    rng = np.random.default_rng(seed)
    phases = []
    for enhancement in (1.0, 2.0, 2.6, 2.3):
        truth = np.where(body, 100.0, 0.0)
        truth[tissue_b] = 200.0 * enhancement
        noisy = truth * field + rng.normal(0.0, 1.0, shape) * body
        phases.append(np.clip(noisy, 0, None))
    return np.stack(phases).astype(np.float32), field, tissue_a, tissue_b


def cv(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


@pytest.fixture(scope="module")
def exam():
    return phantom()


@pytest.fixture(scope="module")
def per_exam(exam):
    return N4BiasCorrection("per_exam")(exam[0], SPACING)


@pytest.fixture(scope="module")
def per_phase(exam):
    return N4BiasCorrection("per_phase")(exam[0], SPACING)


def test_correction_flattens_each_tissue(exam, per_exam):
    image, _, tissue_a, tissue_b = exam
    for mask in (tissue_a, tissue_b):
        before, after = cv(image[0][mask]), cv(per_exam[0][mask])
        assert before > 0.08
        assert after < 0.25 * before, (before, after)


def test_estimated_field_matches_known_field_up_to_scale(exam):
    image, field, tissue_a, _ = exam
    log_field = estimate_log_field(image[0], SPACING)
    assert log_field.shape == image[0].shape and log_field.dtype == np.float32
    body = tissue_a
    # N4 recovers the field up to a constant factor: compare centred log fields inside the body.
    estimated = log_field[body] - log_field[body].mean()
    known = np.log(field[body]) - np.log(field[body]).mean()
    assert np.corrcoef(estimated, known)[0, 1] > 0.95


def test_per_exam_applies_one_field_to_every_phase(exam, per_exam):
    image, _, _, tissue_b = exam
    assert per_exam.dtype == np.float32 and per_exam.shape == image.shape
    for k in range(1, image.shape[0]):
        np.testing.assert_allclose(
            per_exam[k][tissue_b] / per_exam[0][tissue_b], image[k][tissue_b] / image[0][tissue_b], rtol=1e-5
        )


def test_per_phase_estimates_fields_independently(exam, per_phase):
    image, _, tissue_a, tissue_b = exam
    # Phase 0 gets the same field either way.
    np.testing.assert_array_equal(per_phase[0], N4BiasCorrection("per_exam")(image[:1], SPACING)[0])
    body = tissue_a | tissue_b
    for k in range(1, image.shape[0]):
        # Enhancement ratios change, and not only by a global factor (which max-normalisation would
        # cancel): the ratio distortion varies across the breast.
        log_distortion = np.log((per_phase[k][body] / per_phase[0][body]) / (image[k][body] / image[0][body]))
        assert log_distortion.std() > 0.01, log_distortion.std()
    # Every phase is still corrected.
    for k in range(image.shape[0]):
        assert cv(per_phase[k][tissue_a]) < 0.25 * cv(image[k][tissue_a])


def test_off_is_identity_as_float32(exam):
    image = exam[0].astype(np.uint16)
    out = N4BiasCorrection("off")(image, SPACING)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image.astype(np.float32))
    assert not np.shares_memory(out, image)


def test_deterministic(exam, per_exam):
    again = N4BiasCorrection("per_exam")(exam[0], SPACING)
    np.testing.assert_array_equal(again, per_exam)


def test_input_not_modified(exam):
    image = exam[0][:1].copy()
    N4BiasCorrection("per_exam")(image, SPACING)
    np.testing.assert_array_equal(image, exam[0][:1])


def test_empty_volume_has_no_field():
    zeros = np.zeros((1, 8, 16, 16), dtype=np.float32)
    np.testing.assert_array_equal(N4BiasCorrection("per_phase")(zeros, SPACING), zeros)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "sometimes"}, "mode"),
        ({"shrink_factor": 0}, "shrink_factor"),
        ({"iterations": (50, 50, 30), "fitting_levels": 4}, "fitting_levels"),
        ({"iterations": (0,)}, "positive"),
        ({"control_points": 3}, "control_points"),
    ],
)
def test_invalid_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        N4BiasCorrection(**kwargs)


def test_single_iteration_count_broadcasts_over_levels():
    assert N4BiasCorrection(iterations=(20,), fitting_levels=3).iterations == (20, 20, 20)


@pytest.mark.parametrize(
    ("shape", "spacing", "message"),
    [((8, 16, 16), SPACING, "4-D"), ((1, 8, 16, 16), (1.0, 1.0), "spacing"), ((1, 8, 16, 16), (0, 1, 1), "spacing")],
)
def test_invalid_inputs(shape, spacing, message):
    with pytest.raises(ValueError, match=message):
        N4BiasCorrection("per_exam")(np.ones(shape, dtype=np.float32), spacing)

"""The deterministic preprocessing chain: exam + spacing + box -> per-phase CNN inputs."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from her2pcr.preprocess.bias import N4BiasCorrection
from her2pcr.preprocess.chain import PreprocessChain, PreprocessConfig, phase_names
from her2pcr.preprocess.voi import CropToBox, NormaliseMax, PadOrCropInPlane, SliceStacks

SPACING = (3.0, 0.8, 0.8)
BLOB = (6, 30, 45)  # slice, row, column of the tumour centre
BOX = (22, 38, 37, 53, 4, 8)  # rows 30 +- 8, columns 45 +- 8, slices 6 +- 2: centred on the blob


def synthetic_exam(phases=3, shape=(12, 80, 80), seed=1):
    """A breast-like ellipsoid with a bright, enhancing spherical tumour at ``BLOB`` and a smooth bias."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    body = ((y - 40) / 36) ** 2 + ((x - 40) / 36) ** 2 + ((z - 6) / 10) ** 2 < 1
    distance = np.sqrt(
        ((z - BLOB[0]) * SPACING[0]) ** 2 + ((y - BLOB[1]) * SPACING[1]) ** 2 + ((x - BLOB[2]) * SPACING[2]) ** 2
    )
    tumour = np.exp(-0.5 * (distance / 3.0) ** 2)
    bias = np.exp(0.3 * (x - 40) / 40)
    rng = np.random.default_rng(seed)
    out = []
    for p in range(phases):
        signal = 100.0 * body + (150.0 + 400.0 * p) * tumour * body
        out.append(np.clip(signal * bias + rng.normal(0, 1.0, shape) * body, 0, None))
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def exam():
    return synthetic_exam()


@pytest.fixture(scope="module")
def inputs(exam):
    return PreprocessChain()(exam, SPACING, BOX)


def test_keys_shapes_dtypes_and_range(inputs):
    assert list(inputs) == ["pre", "post1", "post2"]
    for x in inputs.values():
        assert x.shape == (5, 156, 156, 3)  # one stack per box slice
        assert x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
        np.testing.assert_allclose(x.max(axis=(1, 2, 3)), 1.0)  # each input reaches its own maximum


def test_tumour_lands_at_the_centre_of_the_padded_voi(inputs):
    centre_stack = BLOB[0] - BOX[4]
    # The 17 x 17 VOI is padded by 139: 69 before, 70 after, so it spans 69..85 and its centre voxel,
    # where the tumour centre is, lands on 77, within half a pixel of the image centre 77.5.
    for x in inputs.values():
        image = x[centre_stack, :, :, 1]  # centre channel is the stack's own slice
        assert np.unravel_index(np.argmax(image), image.shape) == (77, 77)
        rows, cols = np.nonzero(image)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (69, 85, 69, 85)  # zero padding elsewhere
        # The neighbouring channels are the neighbouring slices: dimmer at the tumour centre.
        assert image[77, 77] > x[centre_stack, 77, 77, 0] and image[77, 77] > x[centre_stack, 77, 77, 2]


def test_chain_is_the_composition_of_its_transforms(exam, inputs):
    corrected = N4BiasCorrection("per_exam", shrink_factor=4)(exam, SPACING)
    expected = NormaliseMax()(SliceStacks(3)(PadOrCropInPlane(156)(CropToBox()(corrected, BOX))))
    expected = expected.astype(np.float16).astype(np.float32)  # the chain rounds to the precision it is stored in
    for i, name in enumerate(inputs):
        np.testing.assert_array_equal(inputs[name], expected[i])


def test_deterministic(exam, inputs):
    again = PreprocessChain(PreprocessConfig())(exam, SPACING, BOX)
    for name in inputs:
        np.testing.assert_array_equal(again[name], inputs[name])


def test_other_settings_and_clipped_box(exam):
    config = PreprocessConfig(n4_mode="off", input_size=12, channels=5)
    out = PreprocessChain(config)(exam[:2], SPACING, (70, 90, 0, 3, 10, 20))  # box past the volume: clipped
    assert list(out) == ["pre", "post1"]
    assert out["pre"].shape == (2, 12, 12, 5)  # slices 10-11, rows 70-79 (10, padded), columns 0-3 (4, padded)


def test_bad_box_fails_before_bias_correction(exam, monkeypatch):
    chain = PreprocessChain()
    monkeypatch.setattr(chain, "bias", lambda *a: pytest.fail("bias correction ran on a bad box"))
    with pytest.raises(ValueError, match="outside the volume along slice"):
        chain(exam, SPACING, (0, 10, 0, 10, 12, 14))


def test_rejects_non_4d(exam):
    with pytest.raises(ValueError, match="4-D"):
        PreprocessChain()(exam[0], SPACING, BOX)


def test_phase_names():
    assert phase_names(1) == ["pre"]
    assert phase_names(4) == ["pre", "post1", "post2", "post3"]
    with pytest.raises(ValueError):
        phase_names(0)


def test_config_is_strict_and_frozen():
    with pytest.raises(ValidationError):
        PreprocessConfig(n4_modes="off")
    with pytest.raises(ValidationError):
        PreprocessConfig(n4_mode="sometimes")
    with pytest.raises(ValidationError, match="odd"):
        PreprocessConfig(channels=4)
    with pytest.raises(ValidationError):
        PreprocessConfig(input_size=0)
    with pytest.raises(ValidationError):
        PreprocessConfig().n4_mode = "off"  # type: ignore[misc]


def test_fingerprint_is_stable_and_tracks_the_config():
    default = PreprocessChain().fingerprint()
    assert default == PreprocessChain(PreprocessConfig()).fingerprint()
    assert len(default) == 16 and int(default, 16) >= 0
    others = {
        PreprocessChain(PreprocessConfig(**change)).fingerprint()
        for change in ({"n4_mode": "per_phase"}, {"n4_shrink_factor": 2}, {"input_size": 128}, {"channels": 1})
    }
    assert default not in others and len(others) == 4


def test_fingerprint_follows_every_transform_setting_even_those_outside_the_config():
    chain = PreprocessChain()
    before = chain.fingerprint()
    chain.bias.iterations = (10, 10, 10, 10)  # an N4 constant the config does not expose
    assert chain.fingerprint() != before
    chain.bias.iterations = PreprocessChain().bias.iterations
    assert chain.fingerprint() == before
    chain.crop.box_crop.clip = False  # a nested transform's setting
    assert chain.fingerprint() != before

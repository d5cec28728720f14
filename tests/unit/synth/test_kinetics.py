import numpy as np
import pytest

from her2pcr.synth import kinetics


def test_parker_aif_first_pass_peak():
    t = np.arange(0, 3, 0.001)  # min
    cb = kinetics.parker_blood(t)
    # Parker 2006: first-pass peak of ~6 mM at ~0.17 min, recirculation at ~0.37 min.
    assert t[np.argmax(cb)] == pytest.approx(0.17, abs=0.01)
    assert 5.0 < cb.max() < 7.5
    assert kinetics.parker_blood(np.array([-0.1]))[0] == 0.0


def test_plasma_peak_reaches_breast_60_to_75_s_after_injection():
    t = np.arange(0, 200, 0.5)
    for arrival in (47.0, 62.0):
        peak = t[np.argmax(kinetics.plasma_aif(t, arrival))]
        assert 55 <= peak <= 75


def test_tofts_interpolated_kernel_matches_direct_integration():
    rng = np.random.default_rng(0)
    ktrans = rng.uniform(0.005, 0.5, 200)
    ve = rng.uniform(0.05, 0.6, 200)
    vp = rng.uniform(0, 0.1, 200)
    times = np.array([-90.0, 70.0, 160.0, 300.0, 610.0])
    fast = kinetics.extended_tofts(ktrans, ve, vp, times)
    direct = kinetics.tofts_kernel(ktrans / ve, times, kinetics.DEFAULT_ARRIVAL_S, 1.0) * ktrans[:, None]
    direct += vp[:, None] * kinetics.plasma_aif(times)[None, :]
    np.testing.assert_allclose(fast, direct, rtol=1e-3, atol=1e-6)
    assert np.all(fast[:, 0] == 0)  # nothing before injection


def test_tofts_with_kep_zero_limit_is_ktrans_times_area_under_cp():
    # kep -> 0: Ct = Ktrans * integral of Cp (no backflux).
    times = np.array([400.0])
    ct = kinetics.extended_tofts(np.array([0.1]), np.array([1e3]), np.array([0.0]), times)
    u = np.arange(0, 400.0 + 1e-9, 0.1)
    area = np.trapezoid(kinetics.plasma_aif(u), dx=0.1 / 60)
    assert ct[0, 0] == pytest.approx(0.1 * area, rel=2e-3)


@pytest.mark.parametrize(("values", "expected"), [
    ([1.0, 1.2, 1.4], "persistent"), ([1.0, 1.02, 0.98], "plateau"), ([1.0, 0.9, 0.8], "washout"),
])
def test_curve_type(values, expected):
    assert kinetics.curve_type(np.array(values), np.arange(3)) == expected

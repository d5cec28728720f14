import numpy as np
import pytest

from her2pcr.synth.protocols import allocate_exactly, draw_acquisition, pert
from her2pcr.synth.sites import load_sites
from tests.conftest import REPO

SITES = load_sites(REPO / "conf" / "sites.yaml")


def test_allocate_exactly_reproduces_study_counts():
    rng = np.random.default_rng(0)
    labels = allocate_exactly(rng, 28, SITES["inst2"].regimen)
    assert labels.count("DCT") == 5 and labels.count("DCTP") == 23
    assert allocate_exactly(rng, 28, {"3T": 0.179, "1.5T": 0.821}).count("3T") == 5


def test_pert_stays_in_range_and_centres_on_mode():
    rng = np.random.default_rng(1)
    draws = np.array([pert(rng, 145, 67, 211) for _ in range(4000)])
    assert draws.min() >= 67 and draws.max() <= 211
    assert np.median(draws) == pytest.approx(145, abs=8)


@pytest.mark.parametrize("site_name", sorted(SITES))
def test_drawn_protocols_stay_within_the_site_table(site_name):
    site = SITES[site_name]
    rng = np.random.default_rng(2)
    for _ in range(200):
        acq = draw_acquisition(rng, site_name, site, matrix=128, slices=40, field_3t=False, timing_present=True,
                               study_date="20140101")
        for name in ("pixel_spacing_mm", "slice_thickness_mm", "repetition_time_ms", "echo_time_ms",
                     "flip_angle_deg", "percent_sampling", "bolus_volume_ml"):
            _, low, high = getattr(site, name)
            assert low - 1e-3 <= getattr(acq, name) <= high + 1e-3, name
        assert acq.n_post in site.post_phases
        assert len(acq.phase_times_s) == acq.n_post + 1
        assert acq.phase_times_s[0] < 0 < acq.phase_times_s[1]
        spacing = np.diff(acq.phase_times_s[1:])
        assert np.all((spacing >= site.phase_spacing_s[1] - 0.1) & (spacing <= site.phase_spacing_s[2] + 0.1))

"""Physics of rendered exams: enhancement by tissue, curve types, bias fields, field strength."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from her2pcr.synth.anatomy import LABEL, build_anatomy
from her2pcr.synth.kinetics import curve_type, extended_tofts
from her2pcr.synth.patients import draw_patient
from her2pcr.synth.protocols import draw_acquisition
from her2pcr.synth.render import TISSUE_KINETICS, render_exam, tissue_delay
from her2pcr.synth.signal import NATIVE_T1_MS, PROTON_DENSITY, relaxation_rates, spgr_signal
from her2pcr.synth.sites import load_sites
from tests.conftest import REPO, profile_simulate_params

SITES = load_sites(REPO / "conf" / "sites.yaml")
TRUTH = profile_simulate_params("default", REPO).truth


def render(seed: int, *, field_3t: bool = False, times=None, site="inst1", matrix=64, slices=16):
    rng = np.random.default_rng(seed)
    draw = draw_patient(rng, TRUTH, 0.0)
    acq = draw_acquisition(rng, site, SITES[site], matrix=matrix, slices=slices, field_3t=field_3t,
                           timing_present=True, study_date="20140101")
    if times is not None:
        acq = dataclasses.replace(acq, phase_times_s=tuple(times), n_post=len(times) - 1, phase_duration_s=60.0)
    spacing = (acq.slice_thickness_mm, acq.pixel_spacing_mm, acq.pixel_spacing_mm)
    anatomy = build_anatomy(np.random.default_rng(seed + 1), draw.phenotype, draw.clinical.longest_diameter_mm,
                            (slices, matrix, matrix), spacing, fgt_density=0.4)
    exam = render_exam(np.random.default_rng(seed + 2), anatomy, draw.phenotype, acq, site_bias_strength=0.4,
                       snr=30, gain=1.0, fat_suppression=False, motion_mm=0.0, noise=False)
    return draw, acq, anatomy, exam


def pure(anatomy, tissue):
    """Voxels of one tissue away from its edges, where the in-plane point-spread blur (partial
    volume) mixes in neighbouring tissue."""
    return ndimage.binary_erosion(anatomy.labels == LABEL[tissue], structure=np.ones((1, 3, 3), bool))


def relative_enhancement(exam, anatomy, tissue):
    mask = anatomy.labels == LABEL[tissue]
    curve = np.array([phase[mask].mean() for phase in exam.signal])
    return curve[1:] / curve[0] - 1


def test_tumour_enhances_earlier_and_more_than_fibroglandular_and_fat_barely():
    """Cohort-level: individual exams vary (slow tumours, marked background enhancement)."""
    earlier = more = 0
    seeds = range(100, 112)
    for seed in seeds:
        _, _, anatomy, exam = render(seed)
        tumour = relative_enhancement(exam, anatomy, "tumour")
        fgt = relative_enhancement(exam, anatomy, "fibroglandular")
        fat = relative_enhancement(exam, anatomy, "fat")
        # earlier: a larger share of the peak enhancement is reached by the first post-contrast phase
        earlier += tumour[0] / tumour.max() > fgt[0] / fgt.max()
        more += tumour.max() > 1.5 * fgt.max()
        assert np.abs(fat).max() < 0.05
    assert earlier >= 0.75 * len(seeds)
    assert more >= 0.8 * len(seeds)


def test_persistent_plateau_and_washout_curves_all_occur_in_a_cohort():
    rng = np.random.default_rng(5)
    types = set()
    for _ in range(300):
        draw = draw_patient(rng, TRUTH, 0.0)
        acq = draw_acquisition(rng, "inst1", SITES["inst1"], matrix=64, slices=16, field_3t=False,
                               timing_present=True, study_date="20140101")
        p = draw.phenotype
        times = np.asarray(acq.phase_times_s)
        conc = extended_tofts(np.array([p.ktrans]), np.array([p.ve]), np.array([p.vp]), times,
                              window_s=acq.phase_duration_s)[0]
        r1, r2s = relaxation_rates(np.full(times.shape, NATIVE_T1_MS[1.5]["tumour"]), conc, 1.5, acq.contrast_agent)
        signal = spgr_signal(1.0, r1, r2s, acq.repetition_time_ms, acq.echo_time_ms, np.deg2rad(acq.flip_angle_deg))
        types.add(curve_type(signal[1:], times[1:]))
    assert types == {"persistent", "plateau", "washout"}


def test_receive_bias_is_identical_across_phases():
    _, _, anatomy, exam = render(7)
    # Fat away from tissue edges: the in-plane point-spread blur (partial volume) mixes enhancing
    # neighbours into edge voxels, which is anatomy, not a per-phase field.
    fat = ndimage.binary_erosion(anatomy.labels == LABEL["fat"], structure=np.ones((1, 3, 3), bool))
    assert exam.bias[fat].std() / exam.bias[fat].mean() > 0.05  # the field is really there
    for phase in exam.signal[1:]:
        ratio = phase[fat] / exam.signal[0][fat]
        # Fat barely enhances, so any spatial change in the ratio would be a per-phase field.
        assert ratio.std() / ratio.mean() < 0.01


@pytest.mark.parametrize("field_3t", [False, True])
def test_signal_follows_field_dependent_t1_and_relaxivity(field_3t):
    draw, acq, anatomy, exam = render(13, field_3t=field_3t)
    field = 3.0 if field_3t else 1.5
    centre = np.zeros(anatomy.labels.shape, bool)
    centre[:, :, anatomy.labels.shape[2] // 2 - 1: anatomy.labels.shape[2] // 2 + 1] = True  # B1 error ~0 here
    unbiased = exam.signal / exam.bias[None]
    flip = np.deg2rad(acq.flip_angle_deg)

    def predicted(tissue, conc=0.0):
        r1, r2s = relaxation_rates(np.array(NATIVE_T1_MS[field][tissue]), np.array(conc), field, acq.contrast_agent)
        return spgr_signal(PROTON_DENSITY[tissue], r1, r2s, acq.repetition_time_ms, acq.echo_time_ms, flip)

    for tissue in ("fat", "fibroglandular", "muscle"):
        mask = centre & pure(anatomy, tissue)
        assert np.median(unbiased[0][mask]) == pytest.approx(predicted(tissue), rel=0.01)
    # Muscle has fixed kinetics: its enhancement must follow r1 at this field.
    ktrans, ve, vp, delay = TISSUE_KINETICS["muscle"]
    mask = centre & pure(anatomy, "muscle")
    conc = extended_tofts(np.array([ktrans]), np.array([ve]), np.array([vp]), np.asarray(acq.phase_times_s),
                          arrival_s=exam.arrival_s + tissue_delay("muscle"),
                          dose_scale=acq.bolus_volume_ml / 15.0, window_s=acq.phase_duration_s)[0]
    for p in range(1, len(acq.phase_times_s)):
        assert np.median(unbiased[p][mask]) == pytest.approx(predicted("muscle", conc[p]), rel=0.03)


def test_same_tissue_differs_between_1_5_and_3_t_as_predicted():
    measured, expected = {}, {}
    for field_3t in (False, True):
        _, acq, anatomy, exam = render(17, field_3t=field_3t)
        unbiased = exam.signal[0] / exam.bias
        centre = np.zeros(anatomy.labels.shape, bool)
        centre[:, :, anatomy.labels.shape[2] // 2 - 1: anatomy.labels.shape[2] // 2 + 1] = True
        field = acq.field_strength_t
        fat, fgt = (np.median(unbiased[centre & pure(anatomy, t)]) for t in ("fat", "fibroglandular"))
        measured[field] = fat / fgt
        flip = np.deg2rad(acq.flip_angle_deg)
        model = {t: spgr_signal(PROTON_DENSITY[t], *relaxation_rates(np.array(NATIVE_T1_MS[field][t]), np.array(0.0),
                                                                      field, acq.contrast_agent),
                                acq.repetition_time_ms, acq.echo_time_ms, flip) for t in ("fat", "fibroglandular")}
        expected[field] = model["fat"] / model["fibroglandular"]
    for field in (1.5, 3.0):
        assert measured[field] == pytest.approx(expected[field], rel=0.02)
    # The same patient and protocol look measurably different at the two fields.
    assert abs(measured[3.0] / measured[1.5] - 1) > 0.02

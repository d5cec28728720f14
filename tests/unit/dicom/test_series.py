"""DCE series selection on hand-made headers: the dynamic group is kept, every other series is skipped with why."""

from dataclasses import replace

import pytest

from her2pcr.dicom.phases import PhaseError
from her2pcr.dicom.series import SeriesRules, select_dce_series
from tests.unit.dicom.test_phases import series

RULES = SeriesRules()
T1 = {"scanning_sequence": "GR", "scan_options": "FS", "repetition_time": 4.5, "echo_time": 2.1, "flip_angle": 10.0,
      "image_type": ("ORIGINAL", "PRIMARY", "OTHER")}
SLICES = 10


def dce(first=3, n=3, **values):
    """Per-phase DCE series: pre, 1st pass, 2nd pass..., timed by ContentTime."""
    names = ["ax dyn pre"] + [f"ax dyn {k} pass" for k in ("1st", "2nd", "3rd", "4th")]
    return [h for k in range(n) for h in series(first + k, names[k], n_slices=SLICES, content_time_s=100.0 + 60 * k,
                                                **{**T1, **values})]


def skipped_reasons(selection):
    return {s.label: s.reason for s in selection.skipped}


def test_a_clean_exam_keeps_every_series():
    headers = dce()
    selection = select_dce_series(headers, RULES)
    assert selection.headers == headers and selection.skipped == [] and len(selection.used) == 3


@pytest.mark.parametrize(("extra", "reason"), [
    (series(1, "3-plane loc", n_slices=3, **{**T1, "image_type": ("ORIGINAL", "PRIMARY", "LOCALIZER")}),
     "ImageType LOCALIZER"),
    (series(2, "ax t2 fse", n_slices=SLICES, **{**T1, "scanning_sequence": "SE", "echo_time": 90.0,
                                                 "repetition_time": 4000.0, "image_type": None}),
     "ax t2 fse"),
    (series(2, "Ax TSE", n_slices=SLICES, **{**T1, "scanning_sequence": "SE", "echo_time": 90.0}),
     "ScanningSequence SE"),
    (series(2, "ax fse", n_slices=SLICES, **{**T1, "echo_time": 85.0}), "EchoTime 85 ms"),
    (series(30, "ax dyn 1st pass", n_slices=SLICES, content_time_s=160.0,
            **{**T1, "image_type": ("DERIVED", "SECONDARY", "SUBTRACTION")}),
     "ImageType DERIVED/SECONDARY/SUBTRACTION"),
    (series(31, "ax projection", n_slices=1, **{**T1, "image_type": ("ORIGINAL", "PRIMARY")}),
     "1 slice position(s), fewer than 8"),
    (series(20, "ax t1", n_slices=SLICES, **{**T1, "scan_options": None}), "ScanOptions () vs ('FS',)"),
    (series(20, "ax t1", n_slices=SLICES, **{**T1, "flip_angle": 25.0}), "FlipAngle 25.0 vs 10.0"),
])
def test_each_extra_series_is_skipped_with_its_reason_and_the_dce_phases_are_unchanged(extra, reason):
    headers = dce()
    selection = select_dce_series(extra + headers, RULES)
    assert selection.headers == headers
    reasons = skipped_reasons(selection)
    assert len(reasons) == 1
    assert reason in next(iter(reasons.values())), reasons


def test_a_non_fat_sat_t1_is_never_taken_as_the_pre_contrast_phase():
    headers = dce()
    t1 = series(2, "ax t1 pre", n_slices=SLICES, content_time_s=40.0, **{**T1, "scan_options": ""})
    selection = select_dce_series(t1 + headers, RULES)
    assert selection.headers == headers
    assert "outside the dynamic group" in skipped_reasons(selection)["series 2 'ax t1 pre'"]


def test_gating_flags_on_some_phases_do_not_split_the_dynamic_group():
    headers = dce(n=2) + series(5, "ax dyn 2nd pass", n_slices=SLICES, content_time_s=220.0,
                                **{**T1, "scan_options": "FS\\PPG"})
    assert select_dce_series(headers, RULES).headers == headers


def test_one_multiphase_series_is_a_dynamic_group():
    multiphase = [h for k in range(3) for h in series(
        3, "Ax Vibrant MultiPhase", n_slices=SLICES, uid="1.2.9", temporal_position_identifier=k + 1, **T1)]
    t1 = series(2, "ax t1", n_slices=SLICES, **{**T1, "flip_angle": 25.0})
    selection = select_dce_series(t1 + multiphase, RULES)
    assert selection.headers == multiphase
    assert "(3 time points)" in skipped_reasons(selection)["series 2 'ax t1'"]


def test_two_dynamic_groups_that_the_rules_cannot_tell_apart_are_an_error_naming_both():
    other = dce(first=10, flip_angle=20.0)
    with pytest.raises(PhaseError, match="two candidate DCE groups cannot be told apart.*series 3.*series 10"):
        select_dce_series(dce() + other, RULES)
    # a description rule tells them apart
    sagittal = [h for k, name in enumerate(["sag dyn pre", "sag dyn 1st pass"])
                for h in series(10 + k, name, n_slices=SLICES, **{**T1, "flip_angle": 20.0})]
    chosen = select_dce_series(dce() + sagittal, RULES.model_copy(update={"include_description": r"^ax dyn"}))
    assert [s.label for s in chosen.skipped] == ["series 10 'sag dyn pre'", "series 11 'sag dyn 1st pass'"]
    assert all("does not match the DCE rule" in s.reason for s in chosen.skipped)


def test_an_exam_with_no_usable_series_names_every_reason():
    t2 = series(2, "ax t2", n_slices=SLICES, **T1)
    ct = [replace(h, modality="CT", sop_class_uid="1.2.840.10008.5.1.4.1.1.2")
          for h in series(3, "ax", n_slices=SLICES, **T1)]
    with pytest.raises(PhaseError, match=r"no DCE series.*series 2 'ax t2'.*exclude_description.*series 3.*CT"):
        select_dce_series(t2 + ct, RULES)


def test_single_time_point_series_of_different_protocols_are_no_dynamic_group():
    with pytest.raises(PhaseError, match="no dynamic series group"):
        select_dce_series(series(3, "ax a", n_slices=SLICES, **T1)
                          + series(4, "ax b", n_slices=SLICES, **{**T1, "flip_angle": 25.0}), RULES)


def test_a_lone_series_goes_on_to_the_phase_reader_which_says_what_is_missing():
    only_pre = series(3, "ax dyn pre", n_slices=SLICES, **T1)
    assert select_dce_series(only_pre, RULES).headers == only_pre


def test_an_unsupported_mr_storage_is_skipped_by_name():
    colour = [replace(h, sop_class_uid="1.2.840.10008.5.1.4.1.1.4.3") for h in series(3, "ax dyn", n_slices=SLICES,
                                                                                     **T1)]
    with pytest.raises(PhaseError, match="Enhanced MR Color Image Storage"):
        select_dce_series(colour, RULES)


def test_the_earliest_study_is_the_exam_and_the_later_one_is_listed_with_its_gap_in_days():
    day = 86400.0
    before = [replace(h, study_instance_uid="1.1", study_description="pre NAC", study_start_s=1000 * day)
              for h in dce()]
    after = [replace(h, study_instance_uid="1.2", study_description="post NAC", study_start_s=1150 * day,
                     series_instance_uid=f"2.{h.series_instance_uid}") for h in dce()]
    selection = select_dce_series(after + before, RULES)
    assert selection.headers == before and len(selection.skipped) == 3
    assert all("in study 'post NAC', 150 days after the chosen study 'pre NAC': not the earliest study"
               in s.reason for s in selection.skipped)
    latest = select_dce_series(after + before, RULES.model_copy(update={"study": "latest"}))
    assert latest.headers == after and "150 days before" in latest.skipped[0].reason
    undated = [replace(h, study_start_s=None) for h in after]
    with pytest.raises(PhaseError, match="StudyDate missing"):
        select_dce_series(undated + before, RULES)

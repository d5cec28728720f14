"""Phase grouping and ordering on hand-made headers (no files: order_phases reads headers only)."""

from pathlib import Path

import pytest

from her2pcr.dicom.discover import FileHeader
from her2pcr.dicom.phases import ExamError, PhaseError, description_rank, order_phases

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
MR = "1.2.840.10008.5.1.4.1.1.4"


def series(number, description="ax dyn", n_slices=3, uid=None, orientation=AXIAL, step=(0.0, 0.0, 2.0),
           **values):
    """Headers of one series: ``n_slices`` slices along ``step``, listed in reverse to test sorting."""
    uid = uid or f"1.2.3.{number}.{description}"
    return [
        FileHeader(path=Path(f"/x/{uid}/{k}"), series_instance_uid=uid, study_instance_uid="1.2.3",
                   series_number=number, series_description=description, modality="MR", sop_class_uid=MR,
                   image_position_patient=tuple(k * s for s in step), image_orientation_patient=orientation,
                   pixel_spacing=(0.8, 0.8), rows=4, columns=4, **values)
        for k in reversed(range(n_slices))
    ]


def numbers(order):
    return [p[0].series_number for p in order.phases]


@pytest.mark.parametrize(("description", "rank"), [
    ("ax dyn pre", 0), ("Pre-contrast T1", 0), ("AX VIBRANT PRE", 0), ("ax dyn 1st pass", 1),
    ("ax dyn 3rd pass", 3), ("post 2", 2), ("T1_POST_4", 4), ("DYN T1 FS", None), (None, None),
    ("ax dyn 12th pass", 12), ("premium", None),
])
def test_description_rank_reads_pre_and_post_numbers(description, rank):
    assert description_rank(description) == rank


def test_content_time_orders_series_whatever_their_numbers():
    headers = (series(7, "a", content_time_s=36000.0 + 90) + series(3, "b", content_time_s=36000.0)
               + series(5, "c", content_time_s=36000.0 + 200))
    order = order_phases(headers)
    assert order.rule == "ContentTime" and order.timing_tag == "ContentTime"
    assert numbers(order) == [3, 7, 5]
    assert order.times_s == [0.0, 90.0, 200.0]


def test_time_tags_fall_back_in_order_content_trigger_acquisition():
    # TriggerTime comes before AcquisitionTime, so the disagreeing AcquisitionTime is ignored.
    headers = series(3, trigger_time_ms=60000.0, acquisition_time_s=100.0) + series(
        4, trigger_time_ms=0.0, acquisition_time_s=200.0)
    order = order_phases(headers)
    assert order.rule == "TriggerTime" and numbers(order) == [4, 3] and order.times_s == [0.0, 60.0]
    # A tag missing in one phase cannot order: the next one does.
    headers = series(3, content_time_s=50.0, acquisition_time_s=100.0) + series(4, acquisition_time_s=300.0)
    assert order_phases(headers).rule == "AcquisitionTime"


def test_clock_times_across_midnight_stay_in_order():
    headers = series(3, "pre", acquisition_time_s=86340.0) + series(4, "post 1", acquisition_time_s=60.0)
    order = order_phases(headers)
    assert numbers(order) == [3, 4] and order.times_s == [0.0, 120.0]


def test_untimed_series_follow_descriptions_over_series_numbers():
    headers = series(9, "ax dyn pre") + series(4, "ax dyn 2nd pass") + series(6, "ax dyn 1st pass")
    order = order_phases(headers)
    assert order.rule == "SeriesNumber+description" and numbers(order) == [9, 6, 4]
    assert order.times_s == [None, None, None]
    assert any("contradict" in w for w in order.warnings)
    assert any("no timing tags" in w for w in order.warnings)


def test_untimed_series_with_one_description_follow_series_numbers():
    order = order_phases(series(5, "DYN T1 FS") + series(3, "DYN T1 FS") + series(4, "DYN T1 FS"))
    assert order.rule == "SeriesNumber+description" and numbers(order) == [3, 4, 5]


def test_identical_untimed_series_cannot_be_ordered():
    headers = series(5, "DYN T1 FS", uid="1.1") + series(5, "DYN T1 FS", uid="1.2")
    with pytest.raises(PhaseError, match="cannot order phases: 2 phase series"):
        order_phases(headers)


def test_multiphase_series_splits_and_orders_by_temporal_position():
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # normal = row x column = (-1, 0, 0)
    headers = []
    for tpi in (3, 1, 2):
        headers += series(3, "Ax Vibrant MultiPhase", uid="1.9", orientation=sagittal, step=(1.5, 0.0, 0.0),
                          temporal_position_identifier=tpi, content_time_s=1000.0 + 100 * tpi)
    order = order_phases(headers)
    assert order.rule == "TemporalPositionIdentifier" and order.timing_tag == "ContentTime"
    assert [p[0].temporal_position_identifier for p in order.phases] == [1, 2, 3]
    assert order.times_s == [0.0, 100.0, 200.0]
    # Sorted along the normal (-x): x decreases through the phase.
    assert [h.image_position_patient[0] for h in order.phases[0]] == [3.0, 1.5, 0.0]


def test_multiphase_series_without_index_splits_by_time():
    headers = []
    for t in (500.0, 100.0, 300.0):
        headers += series(3, "dyn", uid="1.9", acquisition_time_s=t)
    order = order_phases(headers)
    assert order.rule == "AcquisitionTime" and [len(p) for p in order.phases] == [3, 3, 3]
    assert order.times_s == [0.0, 200.0, 400.0]


def test_repeated_positions_without_index_or_time_cannot_be_split():
    with pytest.raises(PhaseError, match="cannot split series 3: each slice position repeats 2 times"):
        order_phases(series(3, uid="1.9") + series(3, uid="1.9"))


def test_a_duplicated_slice_is_reported_with_its_series():
    phase = series(4, "ax dyn 1st pass")
    with pytest.raises(PhaseError, match=r"^duplicated slices: 1 repeated positions in series 4$"):
        order_phases(series(3, "ax dyn pre") + phase + phase[:1])


def test_a_single_phase_lacks_post_contrast():
    with pytest.raises(PhaseError, match=r"^missing post-contrast phase: only 1 phase\(s\)$"):
        order_phases(series(3, "ax dyn pre"))


def test_non_mr_images_are_refused_by_modality():
    ct = [FileHeader(**{**h.__dict__, "modality": "CT", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2"})
          for h in series(3) + series(4)]
    with pytest.raises(PhaseError, match="non-MR modality: CT") as info:
        order_phases(ct)
    assert isinstance(info.value, ExamError) and "CT Image Storage" in info.value.reason


def test_phases_with_different_slice_counts_are_refused():
    with pytest.raises(PhaseError, match=r"inconsistent slice count between phases: \[3, 2\]"):
        order_phases(series(3, "pre") + series(4, "post 1", n_slices=2))


def test_a_first_phase_not_described_as_pre_is_flagged():
    headers = series(3, "ax dyn pre", content_time_s=200.0) + series(4, "ax dyn 1st pass", content_time_s=100.0)
    order = order_phases(headers)
    assert numbers(order) == [4, 3]
    assert any("does not say pre-contrast" in w for w in order.warnings)
    assert any("phase 1 is described as pre-contrast" in w for w in order.warnings)

"""Per-patient exam statistics inside the tumour box, and the profile table of interim data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from her2pcr.validation.profile import EXAM_COLUMNS, exam_statistics, profile_table

BOX = {"slice_start": 1, "slice_end": 2, "row_start": 2, "row_end": 4, "column_start": 0, "column_end": 3}


def exam(n_phases: int = 3) -> np.ndarray:
    image = np.full((n_phases, 4, 8, 8), 10, dtype=np.uint16)
    image[0, 1:3, 2:5, 0:4] = 100           # pre-contrast inside the box
    image[-1, 1:3, 2:5, 0:4] = 250          # last post phase: 150 % enhancement
    return image


def test_a_box_past_the_volume_is_clipped_to_it():
    outside = {**BOX, "row_start": -3, "row_end": 20}
    stats = exam_statistics(exam(), np.array([2.0, 0.5, 0.75]), np.array([0.0, 60.0, 120.0]),
                            ["pre", "post1", "post2"], outside)
    assert stats["voi_voxels"] == 2 * 8 * 4 and stats["voi_row_mm"] == 8 * 0.5


def test_exam_statistics_inside_the_box():
    stats = exam_statistics(exam(), np.array([2.0, 0.5, 0.75]), np.array([0.0, 60.0, 120.0]),
                            ["pre", "post1", "post2"], BOX)
    assert stats["n_phases"] == 3 and stats["timing_present"] is True
    assert stats["voi_voxels"] == 2 * 3 * 4
    assert (stats["voi_slice_mm"], stats["voi_row_mm"], stats["voi_column_mm"]) == (4.0, 1.5, 3.0)
    assert stats["pre_mean"] == 100 and stats["pre_p99"] == 100
    assert stats["relative_enhancement"] == pytest.approx(1.5)
    assert set(stats) == set(EXAM_COLUMNS)


def test_one_missing_phase_time_means_no_timing():
    times = np.array([0.0, np.nan, 120.0])
    assert exam_statistics(exam(), np.ones(3), times, ["pre", "post1", "post2"], BOX)["timing_present"] is False


def test_profile_table_of_the_tiny_interim_data(tiny_processed):
    interim = tiny_processed.parent / "interim"
    clinical = pd.read_parquet(interim / "clinical.parquet")
    ids = sorted(clinical.patient_id[clinical.cohort == "D3"])
    table = profile_table(interim, [*ids, "not-ingested"])
    assert list(table.index) == [*ids, "not-ingested"]
    assert {"field_strength_t", "repetition_time_ms", *EXAM_COLUMNS} <= set(table.columns)
    assert not {"manufacturer", "contrast_agent", "patient_id"} & set(table.columns)
    assert table.loc[ids, "n_phases"].ge(2).all() and table.loc[ids, "relative_enhancement"].gt(0).all()
    assert table.loc["not-ingested"].isna().all()  # named by the not-null expectations, not dropped

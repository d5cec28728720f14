"""Per-patient exam statistics inside the tumour box, statistics of the model inputs, and the model-input and
protocol tables of the tiny data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from her2pcr.validation.profile import (
    EXAM_COLUMNS,
    PROTOCOL_EXAM_COLUMNS,
    VOI_COLUMNS,
    exam_statistics,
    exam_table,
    input_columns,
    input_statistics,
    input_table,
    protocol_table,
)

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


def test_input_statistics_of_the_model_inputs_only():
    arrays = {"pre": np.linspace(0, 1, 101, dtype=np.float32).reshape(1, 101, 1, 1), "post1": np.ones((2, 4, 4, 3))}
    stats = input_statistics(arrays, ["pre", "sub3"])
    assert set(stats) == {"input_pre_mean", "input_pre_std", "input_pre_p01", "input_pre_p99"}  # sub3: absent
    assert stats["input_pre_mean"] == pytest.approx(0.5) and stats["input_pre_p01"] == pytest.approx(0.01)
    assert stats["input_pre_p99"] == pytest.approx(0.99) and stats["input_pre_std"] == pytest.approx(0.2915, abs=1e-4)


def test_protocol_table_of_the_tiny_interim_data(tiny_processed):
    interim = tiny_processed.parent / "interim"
    clinical = pd.read_parquet(interim / "clinical.parquet")
    ids = sorted(clinical.patient_id[clinical.cohort == "D3"])
    table = protocol_table(interim, [*ids, "not-ingested"])
    assert list(table.index) == [*ids, "not-ingested"]
    assert {"field_strength_t", "repetition_time_ms", *PROTOCOL_EXAM_COLUMNS} <= set(table.columns)
    assert not {"manufacturer", "contrast_agent", "patient_id", *VOI_COLUMNS} & set(table.columns)
    assert table.loc[ids, "n_phases"].ge(2).all() and table.loc[ids, "relative_enhancement"].gt(0).all()
    assert table.loc["not-ingested"].isna().all()  # named by the not-null expectations, not dropped


def test_input_table_of_the_tiny_processed_data(tiny_processed):
    interim = tiny_processed.parent / "interim"
    index = pd.read_parquet(tiny_processed / "index.parquet").set_index("patient_id")
    ids = sorted(index.index[index.cohort == "D3"])
    everyone = [*ids, "not-ingested"]
    table = input_table(tiny_processed, everyone, ["pre", "post3"], exam_table(interim, everyone))
    assert list(table.index) == everyone and list(table.columns) == input_columns(["pre", "post3"])
    assert table.loc[ids, ["has_pre", "has_post3"]].all().all() and table.has_pre.dtype == bool
    assert (table.loc[ids, "n_stacks"] == index.n_stacks.loc[ids]).all()
    assert table.loc[ids, list(VOI_COLUMNS)].gt(0).all().all()
    means = table.loc[ids, ["input_pre_mean", "input_post3_mean"]]
    assert means.gt(0).all().all() and means.lt(1).all().all()  # standardised inputs lie in [0, 1]
    assert (table.loc[ids, "input_post3_p01"] <= table.loc[ids, "input_post3_p99"]).all()
    missing = table.loc["not-ingested"]
    assert not missing.has_pre and not missing.has_post3 and missing.drop(["has_pre", "has_post3"]).isna().all()

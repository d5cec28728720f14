"""PK feature table: one row per exam with timing; every other exam listed with its reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from her2pcr.features.pk import FEATURE_NAMES
from her2pcr.features.stage import pk_feature_table

TIMES = np.array([0.0, 90.0, 180.0, 270.0])


def write_exam(path, image, times):
    np.savez_compressed(path, image=image, spacing_mm=np.array([2.0, 0.7, 0.7]), phase_times_s=times,
                        phase_names=np.array(["pre"] + [f"post{k}" for k in range(1, image.shape[0])]))


@pytest.fixture()
def small_interim(tmp_path):
    """Five exams: two usable, one without timing, one that does not enhance, one whose file is missing."""
    exams = tmp_path / "exams"
    exams.mkdir()
    enhancing = np.full((4, 4, 6, 6), 100, dtype=np.uint16)
    enhancing[1:, 1:3, 1:5, 1:5] = np.array([250, 300, 240], dtype=np.uint16)[:, None, None, None]
    write_exam(exams / "p1.npz", enhancing, TIMES)
    write_exam(exams / "p2.npz", enhancing, TIMES * 2)
    write_exam(exams / "p3.npz", enhancing, np.full(4, np.nan))
    write_exam(exams / "p4.npz", np.full((4, 4, 6, 6), 100, dtype=np.uint16), TIMES)
    box = {"row_start": 1, "row_end": 4, "column_start": 1, "column_end": 4, "slice_start": 1, "slice_end": 2}
    clinical = pd.DataFrame([{"patient_id": pid, "cohort": cohort, "pcr": pcr, **box}
                             for pid, cohort, pcr in [("p1", "D1", 1), ("p2", "D2", 0), ("p3", "D1", 0),
                                                      ("p4", "D3", 1), ("p5", "D4", 0)]])
    clinical.to_parquet(tmp_path / "clinical.parquet", index=False)
    return tmp_path


@pytest.mark.parametrize("workers", [1, 2])
def test_small_interim_rows_and_skips(small_interim, workers):
    features, skipped = pk_feature_table(small_interim, threshold_percent=70.0, workers=workers)
    assert list(features.index) == ["p1", "p2"] and features.index.name == "patient_id"
    assert list(features.columns) == ["cohort", "pcr", *FEATURE_NAMES]
    assert list(features.cohort) == ["D1", "D2"] and list(features.pcr) == [1, 0]
    assert features.loc["p1", "time_to_peak_meancurve"] == 180.0
    assert features.loc["p2", "time_to_peak_meancurve"] == 360.0
    assert features.loc["p1", "rate_of_washout_meancurve"] == pytest.approx(-60.0 / 90.0)
    reasons = dict(zip(skipped.patient_id, skipped.reason, strict=True))
    assert list(skipped.columns) == ["patient_id", "reason"]
    assert set(reasons) == {"p3", "p4", "p5"}
    assert "timing missing" in reasons["p3"]
    assert "empty tumour mask" in reasons["p4"]
    assert "not found" in reasons["p5"]


def test_tiny_interim(tiny_processed):
    interim = tiny_processed.parent / "interim"
    clinical = pd.read_parquet(interim / "clinical.parquet").set_index("patient_id")
    timed = {pid for pid in clinical.index
             if np.isfinite(np.load(interim / "exams" / f"{pid}.npz")["phase_times_s"]).all()}
    features, skipped = pk_feature_table(interim, threshold_percent=70.0)

    assert len(features) + len(skipped) == len(clinical)
    assert set(features.index) | set(skipped.patient_id) == set(clinical.index)
    assert not set(features.index) & set(skipped.patient_id)
    assert set(features.index) == timed                      # every timed exam of the tiny cohort enhances
    assert 0 < len(skipped) < len(clinical)
    assert all("timing missing" in reason for reason in skipped.reason)
    assert features.shape[1] == 2 + 48
    pd.testing.assert_series_equal(features.cohort, clinical.loc[features.index, "cohort"])
    values = features[list(FEATURE_NAMES)]
    assert np.isfinite(values.filter(like="_meancurve").to_numpy()).all()
    assert np.isfinite(values.filter(regex="_(mean|median)$").to_numpy()).all()
    assert (values["time_to_peak_meancurve"] > 0).all()

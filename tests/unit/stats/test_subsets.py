"""Subset analyses: accuracy per subgroup (Supplementary Tables 1-2) and Welch t-tests of model outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from her2pcr.stats.subsets import outputs_ttest, subset_accuracy


def cohort() -> pd.DataFrame:
    """D3-like: HR- has 3/3 non-pCR and 6/7 pCR identified, HR+ 8/9 non-pCR and 7/9 pCR (paper Suppl. Table 1)."""
    rows = (
        [("negative", 0, p) for p in (0.1, 0.2, 0.3)]
        + [("negative", 1, p) for p in (0.9, 0.8, 0.7, 0.6, 0.95, 0.5, 0.4)]  # 0.5 counts as pCR; 0.4 missed
        + [("positive", 0, p) for p in (0.1, 0.2, 0.3, 0.05, 0.15, 0.25, 0.35, 0.45, 0.55)]
        + [("positive", 1, p) for p in (0.9, 0.8, 0.7, 0.6, 0.65, 0.75, 0.85, 0.3, 0.2)]
    )
    return pd.DataFrame(rows, columns=["hr_status", "pcr", "probability"])


def test_subset_accuracy_reproduces_the_table_layout():
    table = subset_accuracy(cohort(), "hr_status")
    assert list(table.columns) == ["hr_status", "n", "n_pcr", "n_non_pcr", "pcr_correct", "non_pcr_correct",
                                   "pcr_identified", "non_pcr_identified", "accuracy"]
    negative, positive = table.iloc[0], table.iloc[1]
    assert negative.hr_status == "negative" and positive.hr_status == "positive"
    assert (negative.n, negative.n_pcr, negative.n_non_pcr) == (10, 7, 3)
    assert (negative.non_pcr_identified, negative.pcr_identified) == ("3/3", "6/7")
    assert negative.accuracy == pytest.approx(9 / 10)
    assert (positive.non_pcr_identified, positive.pcr_identified) == ("8/9", "7/9")
    assert positive.accuracy == pytest.approx(15 / 18)


def test_subset_accuracy_threshold_columns_and_empty_class():
    frame = pd.DataFrame({"field": ["1.5T", "1.5T", "3T", "3T"], "label": [1, 0, 0, 0],
                          "p": [0.6, 0.55, 0.2, 0.7]})
    table = subset_accuracy(frame, "field", y_column="label", prob_column="p", threshold=0.58)
    three = table[table.field == "3T"].iloc[0]
    assert (three.pcr_identified, three.non_pcr_identified, three.n_pcr) == ("N/A", "1/2", 0)
    one_five = table[table.field == "1.5T"].iloc[0]
    assert (one_five.pcr_correct, one_five.non_pcr_correct, one_five.accuracy) == (1, 1, 1.0)


def test_missing_group_values_form_their_own_row():
    frame = cohort()
    frame.loc[0, "hr_status"] = None
    table = subset_accuracy(frame, "hr_status")
    assert table.n.sum() == len(frame)
    assert table.hr_status.isna().sum() == 1


def test_outputs_ttest_is_welch_per_group():
    frame = cohort()
    table = outputs_ttest(frame, "hr_status")
    assert list(table.columns) == ["hr_status", "n_pcr", "n_non_pcr", "mean_pcr", "mean_non_pcr", "t", "p_value",
                                   "note"]
    for row in table.itertuples():
        part = frame[frame.hr_status == row.hr_status]
        pcr, non = part.probability[part.pcr == 1], part.probability[part.pcr == 0]
        expected = stats.ttest_ind(pcr, non, equal_var=False)
        assert (row.t, row.p_value) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))
        assert (row.n_pcr, row.n_non_pcr) == (len(pcr), len(non))
        assert (row.mean_pcr, row.mean_non_pcr) == (pytest.approx(pcr.mean()), pytest.approx(non.mean()))
        assert row.t > 0 and row.note == ""
    # Welch differs from the pooled-variance test when group sizes and variances differ.
    negative = frame[frame.hr_status == "negative"]
    pooled = stats.ttest_ind(negative.probability[negative.pcr == 1], negative.probability[negative.pcr == 0])
    assert table.p_value.iloc[0] != pytest.approx(pooled.pvalue)


def test_outputs_ttest_notes_when_a_class_is_too_small():
    frame = pd.DataFrame({"g": ["a", "a", "a", "b", "b", "b", "b", "c", "c", "c", "c"],
                          "pcr": [1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0],
                          "probability": [0.9, 0.1, 0.2, 0.8, 0.7, 0.3, 0.1, 0.6, 0.6, 0.4, 0.4]})
    table = outputs_ttest(frame, "g").set_index("g")
    assert np.isnan(table.loc["a", "t"]) and np.isnan(table.loc["a", "p_value"])
    assert "at least 2 patients per class" in table.loc["a", "note"] and "1 pCR patient" in table.loc["a", "note"]
    assert table.loc["a", "mean_pcr"] == 0.9
    assert np.isfinite(table.loc["b", "p_value"]) and table.loc["b", "note"] == ""
    assert np.isnan(table.loc["c", "p_value"]) and table.loc["c", "note"] == "both classes have zero variance"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda f: f.drop(columns="probability"), "lacks column"),
        (lambda f: f.assign(pcr=f.pcr.where(f.index != 0)), "pcr is missing"),
        (lambda f: f.assign(pcr=f.pcr.replace(0, 2)), "only 0"),
        (lambda f: f.assign(probability=f.probability.where(f.index != 0)), "probability is missing"),
        (lambda f: f.iloc[:0], "no rows"),
    ],
)
def test_bad_frames_are_clear_value_errors(change, match):
    frame = change(cohort())
    for function in (subset_accuracy, outputs_ttest):
        with pytest.raises(ValueError, match=match):
            function(frame, "hr_status")

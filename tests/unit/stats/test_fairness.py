import numpy as np
import pandas as pd
import pytest

from her2pcr.stats.fairness import age_band, balanced_accuracy, variable_fairness


def constructed(tpr: dict[str, float], fpr: dict[str, float], n_per_class: int = 20) -> pd.DataFrame:
    """Patients of each group whose thresholded predictions hit exactly the given TPR and FPR at 0.5."""
    rows = []
    for group in tpr:
        for label, rate in ((1, tpr[group]), (0, fpr[group])):
            hits = int(round(rate * n_per_class))
            for k in range(n_per_class):
                # predicted positive for the first `hits` patients of the class; scores rank pCR above non-pCR
                score = (0.6 if k < hits else 0.4) + (0.05 if label else -0.05) * (k % 3) / 3
                rows.append({"group": group, "pcr": label, "probability": score})
    return pd.DataFrame(rows)


def test_a_known_disparity_is_recovered_with_a_ci_around_it():
    frame = constructed({"a": 0.9, "b": 0.5, "c": 0.7}, {"a": 0.1, "b": 0.4, "c": 0.2})
    result = variable_fairness(frame, "group", 0.5, min_n=10, n_bootstrap=500, seed=0)
    assert result.tpr_range == pytest.approx(0.4) and result.fpr_range == pytest.approx(0.3)
    assert result.disparity == pytest.approx(0.7)
    assert result.disparity_ci_low < 0.7 < result.disparity_ci_high
    assert result.disparity_ci_low > 0.2  # clearly above no disparity
    rates = {g.group: (g.tpr, g.fpr) for g in result.groups}
    assert rates["b"] == pytest.approx((0.5, 0.4))
    assert all(g.judged and g.auc is not None for g in result.groups) and result.too_small == []


def test_no_disparity_gives_zero():
    frame = constructed({"x": 0.8, "y": 0.8}, {"x": 0.25, "y": 0.25})
    result = variable_fairness(frame, "group", 0.5, min_n=10, n_bootstrap=300, seed=1)
    assert result.disparity == pytest.approx(0.0)
    # a range is never negative, so resampled ranges sit above the true 0: the interval starts near it
    assert 0 <= result.disparity_ci_low < 0.15 and result.disparity_ci_high < 0.6


def test_small_or_one_class_groups_are_listed_not_judged():
    frame = constructed({"big": 0.8, "other": 0.6}, {"big": 0.2, "other": 0.3})
    frame = pd.concat([frame, pd.DataFrame([{"group": "tiny", "pcr": 1, "probability": 0.9},
                                            {"group": "tiny", "pcr": 0, "probability": 0.1},
                                            {"group": None, "pcr": 0, "probability": 0.2}])])
    result = variable_fairness(frame, "group", 0.5, min_n=10, n_bootstrap=200, seed=0)
    assert sorted(result.too_small) == ["missing", "tiny"]
    tiny = next(g for g in result.groups if g.group == "tiny")
    assert not tiny.judged and "1 pCR and 1 non-pCR: fewer than 10 in a class" in tiny.note
    assert tiny.auc is None  # fewer than 2 per class: no AUC
    missing = next(g for g in result.groups if g.group == "missing")
    assert np.isnan(missing.tpr) and missing.fpr == 0.0
    assert result.disparity == pytest.approx(0.2 + 0.1)  # the judged groups only
    assert sum(g.n for g in result.groups) == len(frame)  # nobody dropped


def test_a_large_group_with_few_patients_of_one_class_is_not_judged():
    # 40 patients, 3 of them pCR: its TPR moves in steps of 1/3, which alone could exceed the gate's limit
    frame = constructed({"a": 0.8, "b": 0.8}, {"a": 0.2, "b": 0.2})
    few = pd.DataFrame([{"group": "few", "pcr": int(k < 3), "probability": 0.9 if k == 0 else 0.1}
                        for k in range(40)])
    result = variable_fairness(pd.concat([frame, few]), "group", 0.5, min_n=10, n_bootstrap=100, seed=0)
    group = next(g for g in result.groups if g.group == "few")
    assert not group.judged and group.note == "3 pCR and 37 non-pCR: fewer than 10 in a class"
    assert group.tpr == pytest.approx(1 / 3) and result.too_small == ["few"]
    assert result.disparity == pytest.approx(0.0)  # the judged groups a and b only


def test_a_variable_with_fewer_than_two_judged_groups_has_no_disparity():
    frame = constructed({"only": 0.8}, {"only": 0.2})
    result = variable_fairness(frame, "group", 0.5, min_n=10, n_bootstrap=100, seed=0)
    assert result.disparity is None and result.too_small == []


def test_balanced_accuracy_and_age_bands():
    assert balanced_accuracy([1, 1, 0, 0], [0.9, 0.2, 0.1, 0.1]) == pytest.approx(0.75)
    bands = age_band(pd.Series([39, 40, 49.5, 50, 77, None]), [40, 50])
    assert bands.tolist()[:5] == ["<40", "40-49", "40-49", ">=50", ">=50"] and pd.isna(bands.iloc[5])
    frame = pd.DataFrame({"age": bands, "pcr": [1, 0, 1, 0, 1, 0], "probability": [0.9, 0.1, 0.8, 0.4, 0.3, 0.2]})
    result = variable_fairness(frame, "age", 0.5, min_n=1, n_bootstrap=100, seed=0)
    assert [g.group for g in result.groups] == ["<40", "40-49", ">=50", "missing"]  # youngest first

"""Spearman correlation with acquisition parameters, Benjamini-Hochberg adjusted (Table 3 and the gate)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from her2pcr.stats.correlation import spearman_bh


def data(n: int = 30, seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    index = [f"p{i}" for i in range(n)]
    score = pd.Series(rng.uniform(size=n), index=index)
    covariates = pd.DataFrame({
        "linked": score * 10 + rng.normal(0, 0.5, n), "noise": rng.normal(size=n), "noise2": rng.normal(size=n),
        "constant": np.ones(n), "sparse": [1.0, 2.0, 3.0] + [np.nan] * (n - 3),
    }, index=index[::-1])  # another order: rows are matched on the index
    return score, covariates


def test_rho_p_and_bh_adjusted_p_per_parameter():
    score, covariates = data()
    table = spearman_bh(score, covariates, ["linked", "noise", "noise2", "constant", "sparse"]).set_index("parameter")
    rho, p = stats.spearmanr(score, covariates.loc[score.index, "noise"])
    assert table.loc["noise", "rho"] == pytest.approx(rho) and table.loc["noise", "p_value"] == pytest.approx(p)
    assert table.loc["linked", "rho"] > 0.9 and table.loc["linked", "p_adjusted"] < 0.001
    # BH over the three tested parameters: p_(i) * m / rank, made monotone, capped at 1.
    tested = table.loc[["linked", "noise", "noise2"]]
    order = tested.p_value.sort_values()
    expected = np.minimum.accumulate((order * 3 / np.arange(1, 4)).to_numpy()[::-1])[::-1].clip(max=1)
    assert tested.p_adjusted[order.index].to_numpy() == pytest.approx(expected)
    assert (tested.p_adjusted >= tested.p_value).all()
    # Too few values or a single value: no test, and no share of the adjustment.
    assert table.loc[["constant", "sparse"], ["rho", "p_value", "p_adjusted"]].isna().all().all()
    assert table.loc["sparse", "n"] == 3 and table.loc["constant", "n"] == 30


def test_nothing_testable_gives_nan_rows():
    score, covariates = data(n=3)
    table = spearman_bh(score, covariates, ["linked", "noise"])
    assert list(table.parameter) == ["linked", "noise"] and table.p_adjusted.isna().all()

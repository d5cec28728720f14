"""Feature rankings: each criterion finds a planted feature; mRMR skips a redundant copy; formulas check out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import mutual_info_score, roc_auc_score

from her2pcr.baselines.ranking import (
    RANKERS,
    discrete_mutual_information,
    discretise,
    rank_features,
    score_features,
)


def planted(seed: int = 0, n: int = 100, n_noise: int = 30, effect: float = 1.5) -> tuple[pd.DataFrame, np.ndarray]:
    """``n_noise`` standard-normal noise columns with one informative column ("signal") in the middle."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    X = pd.DataFrame(rng.standard_normal((n, n_noise)), columns=[f"noise{i:02d}" for i in range(n_noise)])
    X.insert(n_noise // 2, "signal", rng.standard_normal(n) + effect * y)
    return X, y


def test_registry_holds_the_six_criteria_of_the_paper():
    assert list(RANKERS) == ["ttest", "wilcoxon", "entropy", "bhattacharyya", "roc", "mrmr"]


@pytest.mark.parametrize("method", list(RANKERS))
def test_every_method_ranks_the_planted_feature_first(method):
    X, y = planted()
    ranking = rank_features(X, y, method)
    assert ranking[0] == "signal"
    assert sorted(ranking) == sorted(X.columns)


@pytest.mark.parametrize("method", list(RANKERS))
def test_k_returns_the_head_of_the_full_ranking(method):
    X, y = planted(seed=3, effect=0.8)
    assert rank_features(X, y, method, k=5) == rank_features(X, y, method)[:5]


def test_mrmr_skips_a_redundant_copy_that_univariate_criteria_rank_second():
    X, y = planted(seed=1)
    rng = np.random.default_rng(11)
    X["signal_copy"] = X["signal"] + 0.01 * rng.standard_normal(len(X))
    X["second"] = rng.standard_normal(len(X)) + 1.0 * y
    univariate = rank_features(X, y, "ttest")
    assert set(univariate[:2]) == {"signal", "signal_copy"}
    mrmr = rank_features(X, y, "mrmr", k=3)
    assert mrmr[0] in {"signal", "signal_copy"}
    assert mrmr[1] == "second"


def test_scores_match_their_definitions():
    X, y = planted(seed=2, n=60, n_noise=5, effect=1.0)
    values = X.to_numpy()
    a, b = values[y == 1], values[y == 0]
    t = stats.ttest_ind(a, b, equal_var=True).statistic
    np.testing.assert_allclose(score_features(X, y, "ttest"), np.abs(t))
    np.testing.assert_allclose(score_features(X, y, "wilcoxon"), np.abs(stats.ranksums(a, b).statistic))
    aucs = [roc_auc_score(y, values[:, j]) for j in range(values.shape[1])]
    np.testing.assert_allclose(score_features(X, y, "roc"), np.abs(np.array(aucs) - 0.5))
    m1, m0, v1, v0 = a.mean(0), b.mean(0), a.var(0, ddof=1), b.var(0, ddof=1)
    # Bhattacharyya distance of two normals by numerical integration: B = -ln integral sqrt(p1 p0).
    grid = np.linspace(-12, 12, 200_001)
    for j in (0, 3):
        p1 = stats.norm.pdf(grid, m1[j], np.sqrt(v1[j]))
        p0 = stats.norm.pdf(grid, m0[j], np.sqrt(v0[j]))
        assert score_features(X, y, "bhattacharyya").iloc[j] == pytest.approx(
            -np.log(np.trapezoid(np.sqrt(p1 * p0), grid)), rel=1e-6)
        kl = lambda p, q: np.trapezoid(p * np.log(p / q), grid)  # noqa: E731
        assert score_features(X, y, "entropy").iloc[j] == pytest.approx(kl(p1, p0) + kl(p0, p1), rel=1e-5)


def test_discrete_mutual_information_equals_sklearn():
    X, y = planted(seed=4, n=80, n_noise=6)
    states = discretise(X.to_numpy())
    assert set(np.unique(states)) == {0, 1, 2}
    expected = [mutual_info_score(y, states[:, j]) for j in range(states.shape[1])]
    np.testing.assert_allclose(discrete_mutual_information(states, y), expected, atol=1e-12)
    expected = [mutual_info_score(states[:, 0], states[:, j]) for j in range(states.shape[1])]
    np.testing.assert_allclose(discrete_mutual_information(states, states[:, 0]), expected, atol=1e-12)


@pytest.mark.parametrize("method", list(RANKERS))
def test_constant_features_rank_last(method):
    X, y = planted(seed=5, n=60, n_noise=4)
    X["constant"] = 2.0
    assert rank_features(X, y, method)[-1] == "constant"


def test_bad_inputs_are_named():
    X, y = planted(n=40, n_noise=3)
    with pytest.raises(ValueError, match="unknown ranking method"):
        rank_features(X, y, "lasso")
    broken = X.copy()
    broken.iloc[0, 1] = np.nan
    with pytest.raises(ValueError, match="signal|noise"):
        rank_features(broken, y, "ttest")
    with pytest.raises(ValueError, match="2 patients per class"):
        rank_features(X, np.r_[1, np.zeros(len(X) - 1, int)], "ttest")

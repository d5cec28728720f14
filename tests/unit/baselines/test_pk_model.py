"""PK model search (Supplementary Table 6): shape of the search, no leakage, the choice, DLDA."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.naive_bayes import GaussianNB

from her2pcr.baselines import pk_model
from her2pcr.baselines.pk_model import (
    CLASSIFIERS,
    PKConfig,
    diagonal_lda,
    feature_matrix,
    fit_chosen,
    impute_features,
    make_classifier,
    predict_pk,
    search_pk_models,
)
from her2pcr.baselines.ranking import RANKERS

PLANTED = ("pk07", "pk21", "pk33")


def cohort(n: int, seed: int) -> pd.DataFrame:
    """A PK features table: 48 noise features, three of which (``PLANTED``) shift with pCR."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    y[:5], y[5:10] = 1, 0
    X = rng.standard_normal((n, 48))
    frame = pd.DataFrame(X, columns=[f"pk{i:02d}" for i in range(48)], index=[f"P{seed}_{i}" for i in range(n)])
    for name, effect in zip(PLANTED, (1.6, 1.3, -1.2), strict=True):
        frame[name] += effect * y
    frame.insert(0, "pcr", y)
    frame.insert(0, "cohort", "D1")
    return frame


@pytest.fixture(scope="module")
def searched():
    train, valid = cohort(85, seed=1), cohort(40, seed=2)
    results, chosen = search_pk_models(feature_matrix(train), train.pcr, feature_matrix(valid), valid.pcr,
                                       cv_folds=3, n_trees=10, seed=0)
    return train, valid, results, chosen


def test_search_covers_every_ranking_size_and_classifier(searched):
    _, _, results, _ = searched
    assert len(results) == 6 * 6 * 7
    assert list(results.columns[:6]) == ["ranking", "n_features", "classifier", "cv_auc_mean", "cv_auc_sd",
                                         "validation_auc"]
    assert set(results.ranking) == set(RANKERS)
    assert set(results.n_features) == set(range(3, 9))
    assert set(results.classifier) == set(CLASSIFIERS)
    assert not results.duplicated(["ranking", "n_features", "classifier"]).any()
    assert results[["cv_auc_mean", "validation_auc"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (results.features.str.count(",") + 1 == results.n_features).all()


def test_choice_follows_the_paper_and_uses_the_planted_features(searched):
    _, _, results, chosen = searched
    assert results.chosen.sum() == 1
    winners = results[results.best_for_classifier]
    assert sorted(winners.classifier) == sorted(CLASSIFIERS)
    for classifier, rows in results.groupby("classifier"):
        assert winners.set_index("classifier").loc[classifier, "cv_auc_mean"] == rows.cv_auc_mean.max()
    row = results[results.chosen].iloc[0]
    assert row.best_for_classifier
    assert row.validation_auc == winners.validation_auc.max()
    assert PKConfig(row.ranking, row.n_features, row.classifier) == chosen
    assert set(row.features.split(",")) & set(PLANTED)
    assert row.validation_auc > 0.8


def test_fit_chosen_refits_and_reproduces_the_validation_auc(searched):
    train, valid, results, chosen = searched
    model = fit_chosen(feature_matrix(train), train.pcr, chosen, n_trees=10, seed=0)
    row = results[results.chosen].iloc[0]
    assert model.features == row.features.split(",")
    assert sorted(model.columns, key=list(feature_matrix(train).columns).index) == model.columns
    probabilities = predict_pk(model, feature_matrix(valid))
    assert probabilities.name == "pk"
    assert probabilities.index.equals(valid.index) and probabilities.between(0, 1).all()
    from her2pcr.stats.roc import auc
    assert auc(valid.pcr, probabilities) == pytest.approx(row.validation_auc)


def test_rankings_are_redone_on_the_training_part_of_every_fold(monkeypatch):
    seen = []

    def spy(values, y, k=None):
        seen.append(len(y))
        return np.arange(values.shape[1])[:k]

    monkeypatch.setattr(pk_model, "RANKERS", {"spy": spy})
    train, valid = cohort(60, seed=3), cohort(20, seed=4)
    results, _ = search_pk_models(feature_matrix(train), train.pcr, feature_matrix(valid), valid.pcr,
                                  n_features=[3], cv_folds=4, classifiers=["lda"], rankings=["spy"])
    assert len(results) == 1
    assert sorted(seen) == [45, 45, 45, 45, 60]  # four training parts of 3/4 of D1, then all of D1


def test_selection_on_validation_takes_the_best_validation_row():
    train, valid = cohort(60, seed=5), cohort(30, seed=6)
    results, chosen = search_pk_models(feature_matrix(train), train.pcr, feature_matrix(valid), valid.pcr,
                                       n_features=[3, 4], cv_folds=3, classifiers=["lda", "dqda"],
                                       rankings=["ttest", "roc"], selection="validation")
    assert len(results) == 8
    row = results[results.chosen].iloc[0]
    assert row.validation_auc == results.validation_auc.max()
    assert chosen.classifier == row.classifier


def test_bad_arguments_are_named():
    train, valid = cohort(40, seed=7), cohort(20, seed=8)
    X, Xv = feature_matrix(train), feature_matrix(valid)
    with pytest.raises(ValueError, match="unknown classifier"):
        search_pk_models(X, train.pcr, Xv, valid.pcr, classifiers=["knn"])
    with pytest.raises(ValueError, match="n_features"):
        search_pk_models(X, train.pcr, Xv, valid.pcr, n_features=[60])
    with pytest.raises(ValueError, match="lack training column"):
        search_pk_models(X, train.pcr, Xv.drop(columns="pk00"), valid.pcr)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_gives_probabilities(name):
    train = cohort(50, seed=9)
    X = feature_matrix(train)[list(PLANTED)].to_numpy()
    model = make_classifier(name, seed=0, n_trees=10).fit(X, train.pcr)
    p = model.predict_proba(X)[:, 1]
    assert p.shape == (50,) and np.all((p >= 0) & (p <= 1))


def test_dlda_equals_lda_on_one_feature():
    train = cohort(70, seed=10)
    X, y = train[["pk07"]].to_numpy(), train.pcr.to_numpy()
    np.testing.assert_allclose(diagonal_lda().fit(X, y).predict_proba(X),
                               LinearDiscriminantAnalysis().fit(X, y).predict_proba(X), atol=1e-10)


def test_dlda_is_gaussian_classes_with_a_shared_diagonal_covariance():
    rng = np.random.default_rng(11)
    y = np.r_[np.ones(30, int), np.zeros(45, int)]
    base = rng.standard_normal((75, 3)) * [1.0, 2.0, 0.5] + np.outer(y, [1.0, -0.5, 0.3])
    X = np.c_[base, base[:, 0] + 0.3 * rng.standard_normal(75)]  # a correlated fourth feature
    model = diagonal_lda().fit(X, y)
    # Hand computation: class means, pooled within-class variances (ML), priors, Gaussian posterior.
    means = {k: X[y == k].mean(axis=0) for k in (0, 1)}
    pooled = sum(((X[y == k] - means[k]) ** 2).sum(axis=0) for k in (0, 1)) / len(y)
    log_joint = {k: np.log(np.mean(y == k)) - 0.5 * (((X - means[k]) ** 2) / pooled).sum(axis=1) for k in (0, 1)}
    expected = 1.0 / (1.0 + np.exp(log_joint[0] - log_joint[1]))
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], expected, rtol=1e-8)
    full = LinearDiscriminantAnalysis().fit(X, y).predict_proba(X)[:, 1]
    assert np.max(np.abs(full - expected)) > 1e-3  # ignoring the correlation changes the model
    naive = GaussianNB().fit(X, y).predict_proba(X)[:, 1]  # DQDA: per-class variances
    assert np.max(np.abs(naive - expected)) > 1e-3


def test_sigmoid_svc_scores_are_the_svms_own():
    from scipy.special import expit
    from sklearn.svm import SVC

    from her2pcr.baselines.pk_model import SigmoidSVC

    train = cohort(60, seed=12)
    X, y = feature_matrix(train)[list(PLANTED)].to_numpy(), train.pcr.to_numpy()
    svc, model = SVC(kernel="linear").fit(X, y), SigmoidSVC().fit(X, y)
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], expit(svc.decision_function(X)))
    np.testing.assert_array_equal(model.predict(X), svc.predict(X))
    np.testing.assert_array_equal(model.predict(X), (model.predict_proba(X)[:, 1] > 0.5).astype(int))


def test_impute_features_uses_training_medians_and_drops_empty_columns():
    train, valid = feature_matrix(cohort(20, seed=13)), feature_matrix(cohort(10, seed=14))
    train.iloc[0, 0], valid.iloc[0, 0], valid.iloc[1, 2] = np.nan, np.nan, np.inf
    train["pk_empty"] = np.nan
    valid["pk_empty"] = 1.0
    (train_i, valid_i), dropped = impute_features(train, valid)
    assert dropped == ["pk_empty"] and list(train_i.columns) == list(train.columns[:-1])
    assert train_i.iloc[0, 0] == valid_i.iloc[0, 0] == train.iloc[1:, 0].median()
    assert valid_i.iloc[1, 2] == train.iloc[:, 2].median()
    assert np.isfinite(valid_i.to_numpy()).all() and valid_i.index.equals(valid.index)


def test_a_one_class_validation_cohort_leaves_the_choice_to_the_cross_validated_auc():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(40, 6)), columns=[f"f{i}" for i in range(6)])
    y = (X.f0 + rng.normal(scale=0.5, size=40) > 0).astype(int).to_numpy()
    results, chosen = search_pk_models(X, y, X.iloc[:5], np.ones(5, int), n_features=range(2, 4), cv_folds=3,
                                       rankings=["ttest"], classifiers=["lda", "logistic"])
    assert results.validation_auc.isna().all()
    best = results[results.best_for_classifier].sort_values("cv_auc_mean", ascending=False).iloc[0]
    assert (chosen.classifier, chosen.n_features) == (best.classifier, best.n_features)

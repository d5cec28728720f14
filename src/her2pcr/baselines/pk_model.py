"""The semi-quantitative pharmacokinetic (PK) model search (paper section 4.5, Supplementary Table 6).

Every combination of 6 feature-ranking criteria (``ranking.RANKERS``) x 3-8 top features x 7 classifiers
(LDA, QDA, diagonal LDA, diagonal QDA, logistic regression, SVM, random forest of 100 trees) is scored by
cross-validated AUC within the training cohort (D1), with the ranking redone on the training part of every
fold so that no held-out patient influences which features are used. Each configuration is then refitted
on all of D1 (ranking included) and scored on the validation cohort (D2).

Choice, as the paper describes it ("for each classifier, the best performing number of features and feature
selection scheme was chosen based on performance in cross-validation (D1), then that configuration was applied
to D2 ... the best performing classifier was chosen as the optimal PK model"): per classifier, the
configuration with the highest mean CV AUC (ties: fewer features, then ranking order); among those seven, the
highest D2 AUC (ties: higher CV AUC, then classifier order). ``selection="validation"`` instead takes the
highest D2 AUC over all configurations (ties: CV AUC).

Classifier choices (the study used MATLAB; each is the closest scikit-learn counterpart, inside a Pipeline
with StandardScaler): LDA and QDA as ``fitcdiscr`` ``linear``/``quadratic`` (QDA with ``reg_param`` 0.01
for stability on ~60-70 training patients); diagonal LDA (``diaglinear``) as LDA whose pooled within-class
covariance keeps only its diagonal (``DiagonalCovariance``; scikit-learn has no DLDA); diagonal QDA
(``diagquadratic``) = Gaussian naive Bayes; logistic regression with scikit-learn's default L2 penalty (C=1,
which keeps folds with separable classes finite); a linear-kernel SVM (``fitcsvm``'s default kernel, C=1)
scored by the logistic function of its decision value (``SigmoidSVC``); a random forest of 100 trees with a
fixed ``random_state``.

Speed: rankings are computed once per fold (and once on all of D1) for the largest feature count; within a
fold, fits are cached by (feature set, classifier), so rankings that agree on a feature set share one fit.
Features are always fed to a classifier in the columns' original order, so a cached fit is exactly the fit
any ranking choosing that set would make. The folds (and the D1 -> D2 refit) are independent joblib tasks.
The random forest dominates the run time (~1 ms a tree on these sizes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from her2pcr.baselines.ranking import RANKERS, validate_xy
from her2pcr.stats.roc import auc

log = logging.getLogger(__name__)

CLASSIFIERS: tuple[str, ...] = ("lda", "qda", "dlda", "dqda", "logistic", "svm", "random_forest")
NON_FEATURE_COLUMNS = ("cohort", "pcr")


class DiagonalCovariance(BaseEstimator):
    """Covariance "estimator" that keeps only the variances (maximum-likelihood, ddof 0) of its input.

    Hand-written because scikit-learn has no diagonal LDA: passed as ``covariance_estimator`` to
    ``LinearDiscriminantAnalysis(solver="lsqr")``, LDA pools these per-class diagonals (weighted by the class
    priors) into a shared diagonal covariance, which is exactly diagonal LDA (Dudoit et al. 2002; MATLAB
    ``fitcdiscr(..., "DiscrimType", "diaglinear")``): Gaussian classes with a common diagonal covariance,
    i.e. Gaussian naive Bayes with variances shared between the classes.
    """

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        self.location_ = X.mean(axis=0)
        self.covariance_ = np.diag(X.var(axis=0))
        return self


class SigmoidSVC(ClassifierMixin, BaseEstimator):
    """Binary SVM whose ``predict_proba`` is the logistic function of its decision value.

    Hand-written because SVC's ``probability=True`` is deprecated in scikit-learn 1.9 and its replacement,
    Platt scaling by ``CalibratedClassifierCV``, costs four extra fits per model (it nearly tripled the unit
    test's search) and, fitted on cross-validated decision values, can reverse the order of the scores. The logistic
    of the decision value is monotone, so AUCs are the SVM's own; it is 0.5 on the SVM's boundary, so the
    0.5 threshold gives the SVM's own class predictions. It is a score on 0-1, not a calibrated probability.
    """

    def __init__(self, C: float = 1.0, kernel: str = "linear"):
        self.C = C
        self.kernel = kernel

    def fit(self, X, y):
        self.svc_ = SVC(C=self.C, kernel=self.kernel).fit(X, y)
        self.classes_ = self.svc_.classes_
        return self

    def decision_function(self, X) -> np.ndarray:
        return self.svc_.decision_function(X)

    def predict_proba(self, X) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return self.svc_.predict(X)


def diagonal_lda() -> LinearDiscriminantAnalysis:
    """Diagonal LDA: LDA with the pooled within-class covariance restricted to its diagonal."""
    return LinearDiscriminantAnalysis(solver="lsqr", covariance_estimator=DiagonalCovariance())


def make_classifier(name: str, seed: int = 0, n_trees: int = 100) -> Pipeline:
    """An unfitted StandardScaler + classifier Pipeline for one of ``CLASSIFIERS``."""
    if name == "lda":
        model = LinearDiscriminantAnalysis()
    elif name == "qda":
        model = QuadraticDiscriminantAnalysis(reg_param=0.01)
    elif name == "dlda":
        model = diagonal_lda()
    elif name == "dqda":
        model = GaussianNB()
    elif name == "logistic":
        model = LogisticRegression(C=1.0, solver="newton-cholesky", max_iter=1000)
    elif name == "svm":
        model = SigmoidSVC(C=1.0, kernel="linear")
    elif name == "random_forest":
        model = RandomForestClassifier(n_estimators=n_trees, random_state=seed, n_jobs=1)
    else:
        raise ValueError(f"unknown classifier {name!r}; choose one of {list(CLASSIFIERS)}")
    return Pipeline([("scale", StandardScaler()), ("classifier", model)])


@dataclass(frozen=True)
class PKConfig:
    """One point of the search: ranking criterion, number of top-ranked features, classifier."""

    ranking: str
    n_features: int
    classifier: str


@dataclass
class PKModel:
    """A fitted PK model: ``features`` in rank order; the pipeline sees ``columns`` (original column order)."""

    config: PKConfig
    features: list[str]
    columns: list[str]
    pipeline: Pipeline
    settings: dict = field(default_factory=dict)


def feature_matrix(frame: pd.DataFrame) -> pd.DataFrame:
    """The PK feature columns of a features table (drops ``cohort`` and ``pcr``)."""
    return frame.drop(columns=[c for c in NON_FEATURE_COLUMNS if c in frame.columns])


def impute_features(train_X: pd.DataFrame, *others: pd.DataFrame) -> tuple[list[pd.DataFrame], list[str]]:
    """Fill missing PK features with training medians; drop columns with no value in training.

    The PK table leaves a statistic NaN where it is undefined (e.g. skewness of a constant map). The search
    needs complete data, so missing values are replaced by the median of ``train_X`` (scikit-learn's
    ``SimpleImputer``), and the same medians fill ``others`` (validation, testing cohorts). Returns
    ([train_X, *others] imputed, dropped column names).
    """
    dropped = [c for c in train_X.columns if train_X[c].isna().all()]
    kept = [c for c in train_X.columns if c not in dropped]
    imputer = SimpleImputer(strategy="median").fit(train_X[kept].replace([np.inf, -np.inf], np.nan))
    frames = []
    for frame in (train_X, *others):
        values = imputer.transform(frame[kept].replace([np.inf, -np.inf], np.nan))
        frames.append(pd.DataFrame(values, index=frame.index, columns=kept))
    return frames, dropped


def _in_column_order(indices: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(int(i) for i in indices))


def _probability(pipeline: Pipeline, values: np.ndarray) -> np.ndarray:
    return pipeline.predict_proba(values)[:, list(pipeline.classes_).index(1)]


def _evaluate_split(train_values, train_y, test_values, test_y, rankings, counts, classifiers, seed, n_trees):
    """Rank on the training part, then the test AUC of every (feature set, classifier) the rankings produce.

    Returns ({ranking: top-max(counts) indices}, {(columns in column order, classifier): AUC}); rankings that
    choose the same feature set share one fit.
    """
    k = counts[-1]
    orders = {r: RANKERS[r](train_values, train_y, k) for r in rankings}
    aucs: dict[tuple, float] = {}
    for ranking in rankings:
        for n in counts:
            columns = _in_column_order(orders[ranking][:n])
            for classifier in classifiers:
                if (columns, classifier) not in aucs:
                    cols = list(columns)
                    try:
                        model = make_classifier(classifier, seed=seed, n_trees=n_trees).fit(train_values[:, cols],
                                                                                            train_y)
                        aucs[(columns, classifier)] = auc(test_y, _probability(model, test_values[:, cols]))
                    except (np.linalg.LinAlgError, ValueError):
                        # e.g. QDA with fewer patients per class than features: this configuration
                        # cannot be fitted here, so it scores NaN and is never chosen
                        aucs[(columns, classifier)] = float("nan")
    return orders, aucs


def _validated(train_X, train_y, valid_X, valid_y) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    X, y = validate_xy(train_X, train_y)
    if not isinstance(valid_X, pd.DataFrame):
        valid_X = pd.DataFrame(np.asarray(valid_X, dtype=float), columns=X.columns)
    missing = [c for c in X.columns if c not in valid_X.columns]
    if missing:
        raise ValueError(f"validation features lack training column(s) {missing[:10]}")
    Xv = valid_X[list(X.columns)].astype(float)
    if not np.isfinite(Xv.to_numpy()).all():
        raise ValueError("validation features have missing or infinite values; impute them first "
                         "(pk_model.impute_features)")
    yv = np.asarray(valid_y)
    if yv.ndim != 1 or yv.size != len(Xv) or not np.isin(yv, (0, 1)).all():
        raise ValueError("valid_y must be 1-D 0/1 labels, one per row of valid_X")
    if yv.min() == yv.max():
        # a small validation cohort whose PK-scored patients are one class has no AUC: every validation_auc is
        # NaN and the choice falls to the cross-validated AUC in D1 (said in the log, visible in pk_search.csv)
        log.warning("the validation cohort's %d PK-scored patients are all %s: the PK model is chosen on the "
                    "cross-validated AUC alone", yv.size, "pCR" if yv[0] else "non-pCR")
    return X, y, Xv, yv.astype(int)


def search_pk_models(
    train_X,
    train_y,
    valid_X,
    valid_y,
    n_features: Iterable[int] = range(3, 9),
    cv_folds: int = 5,
    seed: int = 0,
    rankings: Sequence[str] | None = None,
    classifiers: Sequence[str] | None = None,
    n_trees: int = 100,
    selection: Literal["paper", "validation"] = "paper",
    n_jobs: int | None = None,
) -> tuple[pd.DataFrame, PKConfig]:
    """Search ranking x number of features x classifier; return (results, chosen configuration).

    ``results`` has one row per configuration with columns ranking, n_features, classifier, cv_auc_mean,
    cv_auc_sd (over the ``cv_folds`` stratified folds, ddof 1), validation_auc, features (the top features
    ranked on all of D1, comma-joined, best first), best_for_classifier (the per-classifier CV winner) and
    chosen. ``seed`` fixes the fold split and the random forests. The folds and the D1 -> D2 refit run as
    ``cv_folds + 1`` independent joblib tasks (``n_jobs``; results do not depend on it). See the module
    docstring for how the configuration is chosen.
    """
    X, y, Xv, yv = _validated(train_X, train_y, valid_X, valid_y)
    rankings = list(RANKERS) if rankings is None else list(rankings)
    classifiers = list(CLASSIFIERS) if classifiers is None else list(classifiers)
    for name in rankings:
        if name not in RANKERS:
            raise ValueError(f"unknown ranking {name!r}; choose from {list(RANKERS)}")
    for name in classifiers:
        if name not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {name!r}; choose from {list(CLASSIFIERS)}")
    counts = sorted({int(n) for n in n_features})
    if not counts or counts[0] < 1 or counts[-1] > X.shape[1]:
        raise ValueError(f"n_features must lie in 1..{X.shape[1]}, got {counts}")
    if selection not in ("paper", "validation"):
        raise ValueError(f"selection must be 'paper' or 'validation', got {selection!r}")
    minority = int(min(y.sum(), (1 - y).sum()))
    if cv_folds < 2 or minority < cv_folds:
        raise ValueError(f"cv_folds={cv_folds} needs 2 <= cv_folds <= the smaller class ({minority} patients)")

    values, valid_values = X.to_numpy(), Xv.to_numpy()
    folds = list(StratifiedKFold(cv_folds, shuffle=True, random_state=seed).split(values, y))
    splits = [(values[tr], y[tr], values[te], y[te]) for tr, te in folds] + [(values, y, valid_values, yv)]
    evaluated = Parallel(n_jobs=n_jobs)(
        delayed(_evaluate_split)(*split, rankings, counts, classifiers, seed, n_trees) for split in splits
    )
    fold_results, (full_orders, valid_aucs) = evaluated[:-1], evaluated[-1]

    rows = []
    for ranking in rankings:
        for n in counts:
            full_columns = _in_column_order(full_orders[ranking][:n])
            for classifier in classifiers:
                aucs = np.array([fold_aucs[(_in_column_order(orders[ranking][:n]), classifier)]
                                 for orders, fold_aucs in fold_results])
                rows.append({
                    "ranking": ranking, "n_features": n, "classifier": classifier,
                    "cv_auc_mean": float(aucs.mean()), "cv_auc_sd": float(aucs.std(ddof=1)),
                    "validation_auc": valid_aucs[(full_columns, classifier)],
                    "features": ",".join(str(X.columns[i]) for i in full_orders[ranking][:n]),
                })
    results = pd.DataFrame(rows)
    results["best_for_classifier"] = False
    results["chosen"] = False
    keyed = results.assign(_ranking=results.ranking.map({r: i for i, r in enumerate(rankings)}),
                           _classifier=results.classifier.map({c: i for i, c in enumerate(classifiers)}))
    # Per classifier: best mean CV AUC; ties go to fewer features, then to the earlier ranking.
    per_classifier = keyed.sort_values(["_classifier", "cv_auc_mean", "n_features", "_ranking"],
                                       ascending=[True, False, True, True]).groupby("_classifier").head(1)
    results.loc[per_classifier.index, "best_for_classifier"] = True
    pool = per_classifier if selection == "paper" else keyed
    winner = pool.sort_values(["validation_auc", "cv_auc_mean", "n_features", "_ranking", "_classifier"],
                              ascending=[False, False, True, True, True]).index[0]
    results.loc[winner, "chosen"] = True
    chosen = results.loc[winner]
    return results, PKConfig(str(chosen.ranking), int(chosen.n_features), str(chosen.classifier))


def fit_chosen(train_X, train_y, config: PKConfig, seed: int = 0, n_trees: int = 100) -> PKModel:
    """Rank on all of ``train_X``, keep the top ``config.n_features`` and fit ``config.classifier`` on them."""
    X, y = validate_xy(train_X, train_y)
    if config.ranking not in RANKERS:
        raise ValueError(f"unknown ranking {config.ranking!r}; choose from {list(RANKERS)}")
    if not 1 <= config.n_features <= X.shape[1]:
        raise ValueError(f"n_features must lie in 1..{X.shape[1]}, got {config.n_features}")
    ranked = RANKERS[config.ranking](X.to_numpy(), y, config.n_features)[: config.n_features]
    columns = list(_in_column_order(ranked))
    pipeline = make_classifier(config.classifier, seed=seed, n_trees=n_trees).fit(X.to_numpy()[:, columns], y)
    return PKModel(config=config, features=[X.columns[i] for i in ranked], columns=[X.columns[i] for i in columns],
                   pipeline=pipeline, settings={"seed": seed, "n_trees": n_trees, "n_train": int(y.size)})


def predict_pk(model: PKModel, X: pd.DataFrame) -> pd.Series:
    """pCR probability of the fitted PK model for each row of ``X`` (which must hold ``model.columns``)."""
    missing = [c for c in model.columns if c not in X.columns]
    if missing:
        raise ValueError(f"X lacks the model's feature column(s) {missing}")
    values = X[model.columns].to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise ValueError("X has missing or infinite values in the model's feature columns")
    return pd.Series(_probability(model.pipeline, values), index=X.index, name="pk")

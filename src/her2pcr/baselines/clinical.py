"""Multivariable clinical models of the reference study (paper sections 2.2 and 4.6).

In the training cohort (D1) each clinical variable is tested for a difference between pCR and non-pCR:
Wilcoxon rank-sum (Mann-Whitney) for age and longest diameter, chi-squared for ER, PR, stage and lymph-node
status. Variables with p < alpha enter a multivariable logistic regression ("MCM"); a second regression
takes all six variables regardless of significance. If no variable is significant, the significant-variables
model falls back to the single variable with the smallest p-value, and ``ClinicalModels.fallback`` says so.

Encoding (``design_matrix``): ER, PR and lymph node are 1 for "positive" and 0 for "negative"; stage is
ordinal 1-4 (I-IV; sub-stages such as "IIB" count as their main stage). The ordinal form spends one
coefficient instead of three dummies: with ~85 training patients and a few stage-I or stage-IV patients,
dummies would be unstable or perfectly separated. Age and longest diameter stay in their units. The
chi-squared test uses the same categories (main stage), without Yates' continuity correction (as MATLAB's
``crosstab``, the tool the study's other analyses point to; ``yates=True`` gives R's ``chisq.test`` default).

Logistic regressions are unpenalised maximum likelihood (statsmodels ``Logit``), whose coefficients, Wald
z-tests (the "t-test of its coefficient" of section 4.6: for a binomial GLM the Wald statistic is referred to
the normal distribution), odds ratios and confidence intervals are recorded. Where the data separate the
classes (completely or quasi-completely) the maximum-likelihood estimate does not exist; the fit then falls
back to Firth's penalised likelihood (``separation="firth"``, the default; recorded in ``method``) or raises
``SeparationError`` (``separation="raise"``).

Missing values: a model is fitted on the training patients with all its variables present (the number left
out is recorded); at prediction, a missing encoded value is replaced by its training median so that every
patient gets a probability.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from scipy.special import expit
from statsmodels.tools.sm_exceptions import (
    ConvergenceWarning,
    HessianInversionWarning,
    PerfectSeparationError,
    PerfectSeparationWarning,
)

CONTINUOUS: tuple[str, ...] = ("age", "longest_diameter_mm")
CATEGORICAL: tuple[str, ...] = ("er", "pr", "stage", "lymph_node")
VARIABLES: tuple[str, ...] = ("age", "er", "pr", "stage", "longest_diameter_mm", "lymph_node")
BINARY: tuple[str, ...] = ("er", "pr", "lymph_node")
LABEL = "pcr"

_STAGE = re.compile(r"^\s*(?:stage\s*)?(IV|III|II|I)(?:[ABC]\d?)?\s*$", re.IGNORECASE)
_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}


class SeparationError(ValueError):
    """The outcome is (quasi-)completely separated by the predictors: the maximum-likelihood fit does not exist."""


# --- encoding -----------------------------------------------------------------------------------


def _binary(series: pd.Series) -> pd.Series:
    """'positive' -> 1, 'negative' -> 0 (case-insensitive; 0/1 and booleans pass through); missing -> NaN."""
    def code(value):
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return np.nan
        if isinstance(value, (bool, np.bool_)):
            return float(value)
        if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
            return float(value)
        # ingest maps a collection's spellings (ingest.positive_values) to these two; nothing else is read here
        text = str(value).strip().lower()
        if text in ("positive", "negative"):
            return float(text == "positive")
        raise ValueError(f"{series.name}: cannot read {value!r} as positive/negative (ingest writes 'positive' or "
                         "'negative'; a collection's own spellings belong in ingest.positive_values)")

    return series.map(code).astype(float)


def _stage(series: pd.Series) -> pd.Series:
    """Roman stage (optionally 'Stage IIB', 'IIIA', ...) -> its main stage 1-4; missing -> NaN."""
    def code(value):
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return np.nan
        if isinstance(value, (int, float, np.integer, np.floating)) and value in (1, 2, 3, 4):
            return float(value)
        match = _STAGE.match(str(value))
        if match is None:
            raise ValueError(f"stage: cannot read {value!r} as a stage I-IV")
        return float(_ROMAN[match.group(1).upper()])

    return series.map(code).astype(float)


def design_matrix(frame: pd.DataFrame, variables: Sequence[str]) -> pd.DataFrame:
    """Numeric predictors, one column per variable (same names), NaN where missing.

    er, pr, lymph_node: positive = 1, negative = 0; stage: ordinal 1-4; any other column (age,
    longest_diameter_mm, cnn_probability, ...) is read as a number.
    """
    missing = [v for v in variables if v not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}")
    columns = {}
    for variable in variables:
        if variable in BINARY:
            columns[variable] = _binary(frame[variable])
        elif variable == "stage":
            columns[variable] = _stage(frame[variable])
        else:
            numeric = pd.to_numeric(frame[variable], errors="coerce")
            bad = numeric.isna() & frame[variable].notna()
            if bad.any():
                raise ValueError(f"{variable}: non-numeric value(s) {frame[variable][bad].unique()[:5].tolist()}")
            columns[variable] = numeric.astype(float)
    return pd.DataFrame(columns, index=frame.index)


def _labels(frame: pd.DataFrame, label: str = LABEL) -> pd.Series:
    if label not in frame.columns:
        raise ValueError(f"frame lacks the label column {label!r}")
    y = pd.to_numeric(frame[label], errors="coerce")
    if y.isna().any():
        raise ValueError(f"{label} is missing or not numeric for {int(y.isna().sum())} patient(s)")
    if not y.isin([0, 1]).all():
        raise ValueError(f"{label} must hold only 0 (non-pCR) and 1 (pCR)")
    y = y.astype(int)
    if y.nunique() < 2:
        raise ValueError(f"{label} holds only one class ({len(y)} patients); the models need both")
    return y


# --- univariate tests ---------------------------------------------------------------------------


def univariate_tests(
    train: pd.DataFrame, variables: Sequence[str] = VARIABLES, label: str = LABEL, yates: bool = False
) -> pd.DataFrame:
    """One row per variable: variable, test, statistic, p_value, n (patients with the variable), dof.

    Continuous variables (age, longest_diameter_mm and any non-categorical column): two-sided Wilcoxon
    rank-sum test, ``scipy.stats.mannwhitneyu`` (exact for small samples without ties, else normal
    approximation with tie and continuity corrections); ``statistic`` is the Mann-Whitney U of the pCR group.
    Categorical variables (er, pr, stage, lymph_node): Pearson chi-squared test of the category x pCR table
    (``scipy.stats.chi2_contingency``, Yates' correction only if ``yates``); a variable with a single observed
    category has statistic 0 and p = 1.
    """
    y = _labels(train, label)
    encoded = design_matrix(train, variables)
    rows = []
    for variable in variables:
        x = encoded[variable]
        present = x.notna()
        xs, ys = x[present], y[present]
        if variable in CATEGORICAL:
            table = pd.crosstab(xs, ys)
            if table.shape[0] < 2 or table.shape[1] < 2:
                statistic, p_value, dof = 0.0, 1.0, 0
            else:
                result = stats.chi2_contingency(table.to_numpy(), correction=yates)
                statistic, p_value, dof = float(result.statistic), float(result.pvalue), int(result.dof)
            rows.append({"variable": variable, "test": "chi_squared", "statistic": statistic, "p_value": p_value,
                         "n": int(present.sum()), "dof": dof})
        else:
            pcr, non_pcr = xs[ys == 1], xs[ys == 0]
            if pcr.empty or non_pcr.empty:
                statistic = p_value = np.nan
            else:
                result = stats.mannwhitneyu(pcr, non_pcr, alternative="two-sided", method="auto")
                statistic, p_value = float(result.statistic), float(result.pvalue)
            rows.append({"variable": variable, "test": "wilcoxon_rank_sum", "statistic": statistic,
                         "p_value": p_value, "n": int(present.sum()), "dof": np.nan})
    return pd.DataFrame(rows, columns=["variable", "test", "statistic", "p_value", "n", "dof"])


# --- logistic regression ------------------------------------------------------------------------


@dataclass
class LogisticFit:
    """A fitted logistic regression on encoded variables (see ``design_matrix``), intercept first.

    ``method`` is "maximum_likelihood" (statsmodels Logit) or "firth" (penalised fallback on separation);
    ``fill_values`` are the training medians used for missing values at prediction; ``notes`` record fallbacks,
    dropped patients and warnings.
    """

    variables: list[str]
    params: pd.Series
    cov: pd.DataFrame
    method: str
    n: int
    n_events: int
    fill_values: pd.Series
    notes: list[str] = field(default_factory=list)

    def coefficients(self, level: float = 0.95) -> pd.DataFrame:
        """Tidy table: term, coef, se, z, p_value (two-sided Wald), odds_ratio, or_ci_low, or_ci_high."""
        se = np.sqrt(np.clip(np.diag(self.cov.to_numpy()), 0.0, None))
        coef = self.params.to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            z = coef / se
        half = stats.norm.ppf(0.5 + level / 2.0) * se
        with np.errstate(over="ignore"):
            return pd.DataFrame({
                "term": self.params.index, "coef": coef, "se": se, "z": z, "p_value": 2.0 * stats.norm.sf(np.abs(z)),
                "odds_ratio": np.exp(coef), "or_ci_low": np.exp(coef - half), "or_ci_high": np.exp(coef + half),
            })

    def predict(self, frame: pd.DataFrame) -> pd.Series:
        """Probability of pCR for each row of ``frame`` (missing encoded values -> training medians)."""
        X = design_matrix(frame, self.variables).fillna(self.fill_values)
        eta = self.params["const"] + X.to_numpy() @ self.params[self.variables].to_numpy()
        return pd.Series(expit(eta), index=frame.index)


def _firth(X: np.ndarray, y: np.ndarray, max_iter: int = 200, tol: float = 1e-8,
           max_step: float = 5.0, max_halvings: int = 25) -> tuple[np.ndarray, np.ndarray, bool]:
    """Firth (1993) bias-reduced logistic regression: (coefficients, covariance, converged).

    Hand-written because neither statsmodels nor scikit-learn implements it (R's ``logistf`` is the usual
    tool). Newton-Raphson on the modified score U* = X'(y - p + h (1/2 - p)), h the diagonal of the hat matrix
    W^1/2 X (X'WX)^-1 X' W^1/2, maximising l(b) + 1/2 ln|X'WX|; steps capped at ``max_step`` and halved while
    the penalised log-likelihood decreases (as logistf). Covariance (X'WX)^-1 at the solution, for Wald tests
    (logistf's ``pl=FALSE``). Estimates stay finite under separation (Heinze & Schemper 2002).
    """
    beta = np.zeros(X.shape[1])

    def information(b):
        p = expit(X @ b)
        w = p * (1.0 - p)
        return p, w, X.T @ (w[:, None] * X)

    def penalised(b):
        eta = X @ b
        _, _, info = information(b)
        sign, logdet = np.linalg.slogdet(info)
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)) + 0.5 * logdet) if sign > 0 else -np.inf

    converged = False
    current = penalised(beta)
    for _ in range(max_iter):
        p, w, info = information(beta)
        inverse = np.linalg.inv(info)
        hat = w * np.einsum("ij,jk,ik->i", X, inverse, X)
        step = inverse @ (X.T @ (y - p + hat * (0.5 - p)))
        largest = np.max(np.abs(step))
        if largest > max_step:
            step *= max_step / largest
        for _ in range(max_halvings):
            candidate = penalised(beta + step)
            if candidate >= current - 1e-12:
                break
            step /= 2.0
        beta, current = beta + step, penalised(beta + step)
        if np.max(np.abs(step)) < tol:
            converged = True
            break
    _, _, info = information(beta)
    return beta, np.linalg.inv(info), converged


def aliased_variables(X: pd.DataFrame) -> list[str]:
    """Columns that are linear combinations of the intercept and the columns before them (a small training set
    can make, say, stage a copy of lymph-node status): no fit can estimate them."""
    kept: list[np.ndarray] = [np.ones(len(X))]
    aliased = []
    for name in X.columns:
        candidate = np.column_stack([*kept, X[name].to_numpy(dtype=float)])
        if np.linalg.matrix_rank(candidate) == candidate.shape[1]:
            kept.append(X[name].to_numpy(dtype=float))
        else:
            aliased.append(name)
    return aliased


#: A maximum-likelihood fit whose fitted probabilities come this close to 0 or 1 is treated as separated.
FITTED_PROBABILITY_FLOOR = 1e-6


def fit_logistic(
    frame: pd.DataFrame,
    variables: Sequence[str],
    label: str = LABEL,
    separation: Literal["firth", "raise"] = "firth",
) -> LogisticFit:
    """Logistic regression of ``label`` on the encoded ``variables`` (statsmodels Logit; Firth on separation)."""
    if separation not in ("firth", "raise"):
        raise ValueError(f"separation must be 'firth' or 'raise', got {separation!r}")
    variables = list(variables)
    if not variables:
        raise ValueError("a logistic regression needs at least one variable")
    y_all = _labels(frame, label)
    X_all = design_matrix(frame, variables)
    complete = X_all.notna().all(axis=1)
    X, y = X_all[complete], y_all[complete]
    notes = []
    if (~complete).any():
        notes.append(f"{int((~complete).sum())} training patient(s) with a missing variable left out")
    if y.nunique() < 2:
        raise ValueError(f"after leaving out missing values only one class remains ({len(y)} patients)")
    if len(y) <= len(variables) + 1:
        raise ValueError(f"{len(y)} patients cannot support {len(variables)} variables and an intercept")
    constant = [v for v in variables if X[v].nunique() < 2]
    if constant:
        raise ValueError(f"variable(s) {constant} take a single value in the training data")
    aliased = aliased_variables(X)
    if aliased:  # as R's glm aliases them: the others are estimable, these add nothing the design can tell apart
        notes.append(f"left out, collinear with the other variables in the training data: {aliased}")
        variables = [v for v in variables if v not in aliased]
        X = X[variables]
    design = sm.add_constant(X, has_constant="add")
    problem = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = sm.Logit(y.to_numpy(), design).fit(method="newton", maxiter=100, disp=0)
        except (PerfectSeparationError, np.linalg.LinAlgError) as error:
            result, problem = None, f"{type(error).__name__}: {error}"
    if result is not None:
        kinds = {type(w.message) for w in caught}
        if PerfectSeparationWarning in kinds:
            problem = "statsmodels detected perfect separation"
        elif not result.mle_retvals.get("converged", False) or ConvergenceWarning in kinds:
            problem = "maximum likelihood did not converge (quasi-complete separation)"
        elif HessianInversionWarning in kinds or not np.all(np.isfinite(result.bse)):
            problem = "the information matrix is singular"
        elif np.any(np.minimum(result.predict(), 1 - result.predict()) < FITTED_PROBABILITY_FLOOR):
            # Maximum likelihood can converge on a near-separated sample (a confident predictor, few patients)
            # with a huge coefficient (log odds ratio ~100) and fitted probabilities of 0 or 1: no usable estimate.
            problem = (f"quasi-complete separation (largest |coefficient| {np.abs(result.params).max():.3g}, "
                       f"fitted probabilities of 0 or 1)")
    if problem is None:
        params, cov, method = result.params, result.cov_params(), "maximum_likelihood"
    elif separation == "raise":
        raise SeparationError(f"logistic regression of {label} on {variables}: {problem}")
    else:
        notes.append(f"{problem}; fitted by Firth's penalised likelihood instead")
        beta, covariance, converged = _firth(design.to_numpy(dtype=float), y.to_numpy(dtype=float))
        if not converged:
            notes.append("Firth's iterations did not converge")
        params = pd.Series(beta, index=design.columns)
        cov = pd.DataFrame(covariance, index=design.columns, columns=design.columns)
        method = "firth"
    return LogisticFit(
        variables=variables, params=pd.Series(params, index=design.columns, dtype=float),
        cov=pd.DataFrame(cov, index=design.columns, columns=design.columns, dtype=float), method=method,
        n=int(len(y)), n_events=int(y.sum()), fill_values=X.median(), notes=notes,
    )


# --- the two clinical models --------------------------------------------------------------------


@dataclass
class ClinicalModels:
    """The univariate tests and the two clinical logistic regressions fitted on the training cohort."""

    tests: pd.DataFrame
    alpha: float
    significant_variables: list[str]
    fallback: bool
    significant_model: LogisticFit
    all_model: LogisticFit


def fit_clinical_models(
    train: pd.DataFrame,
    alpha: float = 0.05,
    variables: Sequence[str] = VARIABLES,
    separation: Literal["firth", "raise"] = "firth",
    yates: bool = False,
) -> ClinicalModels:
    """Univariate tests on ``train`` (D1 only), then the significant-variables and all-variables models.

    A variable is significant when p < ``alpha``. With none significant, the significant-variables model
    uses the one with the smallest p-value and ``fallback`` is True.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    tests = univariate_tests(train, variables, yates=yates)
    significant = tests.loc[tests.p_value < alpha, "variable"].tolist()
    fallback = not significant
    if fallback:
        if tests.p_value.isna().all():
            raise ValueError("no univariate test could be computed")
        significant = [tests.loc[tests.p_value.idxmin(), "variable"]]
    # A variable with one value in D1 (e.g. every patient stage II in a small cohort) carries no
    # information and makes the design singular: the all-variables model leaves it out, with a note.
    design = design_matrix(train, list(variables))
    constant = [v for v in variables if design[v].nunique(dropna=True) <= 1]
    all_model = fit_logistic(train, [v for v in variables if v not in constant], separation=separation)
    if constant:
        all_model.notes.append(f"left out, single value in the training data: {constant}")
    return ClinicalModels(
        tests=tests, alpha=alpha, significant_variables=significant, fallback=fallback,
        significant_model=fit_logistic(train, significant, separation=separation),
        all_model=all_model,
    )


def predict(models: ClinicalModels, frame: pd.DataFrame) -> pd.DataFrame:
    """pCR probabilities of both clinical models: columns clinical_significant and clinical_all."""
    return pd.DataFrame({
        "clinical_significant": models.significant_model.predict(frame),
        "clinical_all": models.all_model.predict(frame),
    }, index=frame.index)

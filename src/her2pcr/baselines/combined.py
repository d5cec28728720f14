"""CNN + clinical model (paper sections 2.4 and 4.6).

"A multivariable model incorporating both significant clinical variables and prediction from the DL model
was trained in D2 (due to overly confident predictions of the DL model among training data) ... Each variable
was assessed for independent significance when considering the model's other variables by t-test of its
coefficient in the logistic regression model." It is evaluated on D3 and D4.

The paper also reports, per testing cohort, whether the CNN score and each clinical variable are independently
associated with pCR "when evaluated in a multivariable setting" (CNN p = 0.002 in D3 and 0.020 in D4; ER and PR
not significant): those p-values come from the same regression fitted within each testing cohort, which
``independent_association`` does. Predictions (and AUCs) on D3/D4 come from the D2 fit.

With a cross-validated ensemble the D2 detour is unnecessary: every D1 patient has an out-of-fold prediction,
which is not over-confident, so ``evaluate.cnn_clinical_fit: out_of_fold`` (the default) fits the same
regression on D1's 85 patients instead of D2's 15, on the fold-standardised CNN logit (``fold_standardisation``).

The CNN's probability enters as it is (a 0-1 score, as the paper describes the model output), beside the
clinical variables encoded as in ``clinical.design_matrix``. The fit is statsmodels ``Logit`` with Wald
p-values per coefficient; on (quasi-)complete separation, which a small D2 and a confident CNN make
plausible, it falls back to Firth's penalised likelihood (recorded in ``method`` and ``notes``) or raises
``SeparationError`` with ``separation="raise"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from her2pcr.baselines.clinical import LABEL, LogisticFit, fit_logistic

PROBABILITY_COLUMN = "cnn_probability"
SCORE_COLUMN = "cnn_score"  # the fold-standardised CNN logit that the D1 (out-of-fold) fit uses


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype="float64"), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fold_standardisation(out_of_fold: pd.DataFrame) -> pd.DataFrame:
    """Per ensemble member (``fold``): centre and spread of its logits over the patients it held out.

    Fold models differ in offset and spread (the pooled out-of-fold AUC sits below the mean per-fold AUC), so a
    regression on pooled out-of-fold probabilities underweights the CNN; standardising each member by its own
    held-out patients puts every member, and so the training patients and new patients, on one scale.
    """
    logits = pd.Series(_logit(out_of_fold.probability), index=out_of_fold.index)
    table = logits.groupby(out_of_fold.fold).agg(centre="mean", spread="std")
    if (table.spread <= 0).any() or table.spread.isna().any():
        raise ValueError("a fold model gives all its held-out patients the same logit: no scale to standardise by")
    return table.sort_index()


def out_of_fold_score(out_of_fold: pd.DataFrame, standardisation: pd.DataFrame) -> pd.Series:
    """Each training patient's out-of-fold logit, standardised by the member that held it out."""
    row = standardisation.loc[out_of_fold.fold.to_numpy()]
    return pd.Series((_logit(out_of_fold.probability) - row.centre.to_numpy()) / row.spread.to_numpy(),
                     index=out_of_fold.index, name=SCORE_COLUMN)


def member_score(member_probabilities: pd.DataFrame, standardisation: pd.DataFrame) -> pd.Series:
    """A new patient's CNN score: the mean over members (columns, in fold order) of their standardised logits."""
    if member_probabilities.shape[1] != len(standardisation):
        raise ValueError(f"{member_probabilities.shape[1]} member predictions for {len(standardisation)} folds")
    centre, spread = standardisation.centre.to_numpy(), standardisation.spread.to_numpy()
    z = (_logit(member_probabilities.to_numpy()) - centre) / spread
    return pd.Series(z.mean(axis=1), index=member_probabilities.index, name=SCORE_COLUMN)


@dataclass
class CombinedModel:
    """The fitted CNN + clinical logistic regression."""

    fit: LogisticFit
    probability_column: str
    clinical_variables: list[str]

    @property
    def coefficients(self) -> pd.DataFrame:
        """term, coef, se, z, p_value, odds_ratio, or_ci_low, or_ci_high (intercept first, then the CNN)."""
        return self.fit.coefficients()

    @property
    def method(self) -> str:
        return self.fit.method

    @property
    def notes(self) -> list[str]:
        """The fit's notes, and a warning when the CNN gets no positive weight: the model then ranks against it."""
        coefficient = float(self.coefficients.set_index("term").coef[self.probability_column])
        if coefficient > 0:
            return self.fit.notes
        return [*self.fit.notes, f"the CNN term's coefficient is {coefficient:.2f}: where it was fitted, the CNN "
                "score does not rank the patients by pCR, so this model weighs the CNN against its own ranking"]


def fit_cnn_clinical(
    train: pd.DataFrame,
    variables: Sequence[str],
    probability_column: str = PROBABILITY_COLUMN,
    label: str = LABEL,
    separation: Literal["firth", "raise"] = "firth",
) -> CombinedModel:
    """Logistic regression of pCR on the CNN probability and the clinical ``variables`` (fitted on D2).

    ``variables`` are normally ``ClinicalModels.significant_variables`` from D1; an empty list fits the CNN
    score alone.
    """
    clinical = [v for v in variables if v != probability_column]
    fit = fit_logistic(train, [probability_column, *clinical], label=label, separation=separation)
    return CombinedModel(fit=fit, probability_column=probability_column, clinical_variables=clinical)


def independent_association(
    frame: pd.DataFrame,
    variables: Sequence[str],
    cohorts: Sequence[str] = ("D3", "D4"),
    probability_column: str = PROBABILITY_COLUMN,
    label: str = LABEL,
    separation: Literal["firth", "raise"] = "firth",
) -> pd.DataFrame:
    """The combined regression fitted within each of ``cohorts`` (``frame.cohort``): one coefficient table per
    cohort, stacked, with columns cohort, method, n, term, coef, se, z, p_value, odds_ratio, or_ci_low,
    or_ci_high."""
    if "cohort" not in frame.columns:
        raise ValueError("frame lacks the cohort column")
    tables = []
    for cohort in cohorts:
        subset = frame[frame.cohort == cohort]
        if subset.empty:
            raise ValueError(f"no patients in cohort {cohort!r}")
        model = fit_cnn_clinical(subset, variables, probability_column, label, separation)
        table = model.coefficients
        table.insert(0, "n", model.fit.n)
        table.insert(0, "method", model.method)
        table.insert(0, "cohort", cohort)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def predict_combined(model: CombinedModel, frame: pd.DataFrame) -> pd.Series:
    """pCR probability of the combined model for each row of ``frame``."""
    return model.fit.predict(frame).rename("cnn_clinical")

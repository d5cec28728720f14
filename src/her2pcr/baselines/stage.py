"""The baselines stage: clinical models and the PK model fitted in D1 (PK chosen on D2), scored on every cohort."""

from __future__ import annotations

import json

import joblib
import pandas as pd

from her2pcr.baselines.clinical import fit_clinical_models, predict
from her2pcr.baselines.pk_model import feature_matrix, fit_chosen, impute_features, predict_pk, search_pk_models
from her2pcr.config import BaselinesParams
from her2pcr.stats.roc import summarise


def _cohort_metrics(predictions: pd.DataFrame, params: BaselinesParams) -> dict:
    out: dict = {}
    for cohort, group in predictions.groupby("cohort"):
        out[cohort] = {}
        for model in ("clinical_significant", "clinical_all", "pk"):
            scored = group[group[model].notna()]
            y = scored.pcr.to_numpy()
            if min(y.sum(), len(y) - y.sum()) < 2:
                out[cohort][model] = {"n": len(scored), "note": "fewer than 2 patients in a class"}
                continue
            out[cohort][model] = summarise(y, scored[model].to_numpy(), params.n_bootstrap, params.seed)
    return out


def run_baselines(params: BaselinesParams) -> dict:
    clinical = pd.read_parquet(params.interim_dir / "clinical.parquet").set_index("patient_id")
    train = clinical[clinical.cohort == params.train_cohort]
    models = fit_clinical_models(train, alpha=params.alpha)
    predictions = clinical[["cohort", "pcr"]].join(predict(models, clinical))

    pk = pd.read_parquet(params.pk_dir / "pk.parquet").set_index("patient_id")
    pk_train, pk_valid = pk[pk.cohort == params.train_cohort], pk[pk.cohort == params.validation_cohort]
    (train_X, valid_X, all_X), dropped = impute_features(feature_matrix(pk_train), feature_matrix(pk_valid),
                                                         feature_matrix(pk))
    search, chosen = search_pk_models(train_X, pk_train.pcr.to_numpy(), valid_X, pk_valid.pcr.to_numpy(),
                                      n_features=range(params.n_features[0], params.n_features[1] + 1),
                                      cv_folds=params.cv_folds, seed=params.seed, n_trees=params.n_trees)
    pk_model = fit_chosen(train_X, pk_train.pcr.to_numpy(), chosen, seed=params.seed, n_trees=params.n_trees)
    predictions = predictions.join(predict_pk(pk_model, all_X))  # NaN for exams without PK features

    out = params.out_dir
    out.mkdir(parents=True, exist_ok=True)
    predictions.reset_index().to_csv(out / "predictions.csv", index=False)
    search.to_csv(out / "pk_search.csv", index=False)
    joblib.dump({"clinical": models, "pk": pk_model}, out / "models.joblib")
    description = {
        "train_cohort": params.train_cohort, "validation_cohort": params.validation_cohort,
        "univariate_tests": models.tests.to_dict(orient="records"),
        "significant_variables": models.significant_variables, "fallback_to_best_variable": models.fallback,
        "clinical_significant_coefficients": models.significant_model.coefficients().to_dict(orient="records"),
        "clinical_all_coefficients": models.all_model.coefficients().to_dict(orient="records"),
        "clinical_fits": {name: {"method": fit.method, "notes": list(fit.notes)} for name, fit in
                          (("clinical_significant", models.significant_model), ("clinical_all", models.all_model))},
        "pk_chosen": {"ranking": chosen.ranking, "n_features": chosen.n_features, "classifier": chosen.classifier,
                      "features": list(pk_model.features)},
        "pk_features_dropped_as_empty": dropped,
        "pk_patients": {"train": len(pk_train), "validation": len(pk_valid), "scored": len(pk)},
    }
    (out / "baselines.json").write_text(json.dumps(description, indent=1, default=str), encoding="utf-8")
    metrics = {"cohorts": _cohort_metrics(predictions, params), "pk_chosen": description["pk_chosen"],
               "significant_variables": models.significant_variables}
    params.metrics_file.parent.mkdir(parents=True, exist_ok=True)
    params.metrics_file.write_text(json.dumps(metrics, indent=1, default=str), encoding="utf-8")
    return metrics

import json

import numpy as np
import pandas as pd
import pytest

from her2pcr.config import load_params
from her2pcr.evaluation.stage import cohort_statistics
from tests.conftest import REPO

PARAMS = load_params(REPO / "params.yaml").evaluate


def frame(n=30, seed=0):
    rng = np.random.default_rng(seed)
    pcr = np.array([0, 1] * (n // 2))
    return pd.DataFrame({
        "pcr": pcr, "probability": np.clip(0.5 + 0.3 * (pcr - 0.5) + rng.normal(0, 0.2, n), 0, 1),
        "receptor_score": rng.integers(0, 2, n).astype(float), "oracle": np.clip(pcr * 0.6 + 0.2, 0, 1),
        "hormone_receptor": rng.choice(["ER/PR negative", "ER/PR positive"], n),
        "field_strength": rng.choice(["1.5 T", "3 T"], n),
    }, index=[f"p{i}" for i in range(n)])


def test_cohort_statistics_cover_models_paired_tests_and_subsets():
    stats = cohort_statistics(frame(), PARAMS)
    assert set(stats["models"]) == {"cnn", "receptor_status", "oracle"}
    cnn = stats["models"]["cnn"]
    assert cnn["delong_ci_low"] <= cnn["auc"] <= cnn["delong_ci_high"]
    assert cnn["bootstrap_ci_low"] <= cnn["auc"] <= cnn["bootstrap_ci_high"]
    assert set(stats["paired_delong_vs_cnn"]) == {"receptor_status", "oracle"}
    assert set(stats["subsets"]) == {"hormone_receptor", "field_strength", "ttest_by_hormone_receptor"}
    json.dumps(stats, allow_nan=False)  # what metrics/evaluate.json will hold


def test_cohort_too_small_for_roc_statistics_says_so():
    stats = cohort_statistics(frame(n=4).iloc[:3], PARAMS)
    assert "models" not in stats and "fewer than 2" in stats["note"]


def test_cnn_scores_are_out_of_fold_for_training_patients_and_member_based_for_others(tmp_path):
    from her2pcr.evaluation.stage import cnn_scores

    out_of_fold = pd.DataFrame({"patient_id": ["t1", "t2", "t3", "t4"], "probability": [0.2, 0.4, 0.6, 0.9],
                                "fold": [0, 0, 1, 1]})
    out_of_fold.to_csv(tmp_path / "out_of_fold.csv", index=False)
    # in-sample member predictions of training patients are over-confident and must not be used
    predictions = pd.DataFrame({"member_1": [0.01, 0.02, 0.98, 0.99, 0.5], "member_2": [0.01, 0.02, 0.98, 0.99, 0.5]},
                               index=["t1", "t2", "t3", "t4", "new"])
    score = cnn_scores(predictions, tmp_path / "out_of_fold.csv", pd.Index(["t1", "t2", "t3", "t4"]))
    logit = np.log(out_of_fold.probability / (1 - out_of_fold.probability))
    fold_0 = (logit[:2] - logit[:2].mean()) / logit[:2].std()
    np.testing.assert_allclose(score.loc[["t1", "t2"]], fold_0)
    assert np.isfinite(score.loc["new"])
    with pytest.raises(ValueError, match="no out-of-fold prediction"):
        cnn_scores(predictions, tmp_path / "out_of_fold.csv", pd.Index(["t1", "new"]))

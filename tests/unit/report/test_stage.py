"""What the report says about the clinical model and about training-set AUCs."""

from her2pcr.report.stage import clinical_selection_text
from her2pcr.report.tables import auc_table


def summary(auc: float) -> dict:
    return {"n": 20, "auc": auc, "delong_ci_low": auc - 0.1, "delong_ci_high": auc + 0.1, "bootstrap_ci_low": 0.5,
            "bootstrap_ci_high": 0.9, "delong_p_value": 0.01, "accuracy": 0.7, "sensitivity": 0.7,
            "specificity": 0.7}


def test_a_fallback_is_called_a_fallback_and_fit_warnings_are_shown():
    fallback = {"significant_variables": ["lymph_node"], "fallback_to_best_variable": True,
                "clinical_fits": {"clinical_all": {"method": "firth", "notes": ["quasi-complete separation"]}}}
    text = clinical_selection_text(fallback)
    assert "No variable is significant at 0.05" in text and "(lymph_node)" in text
    assert "Significant at 0.05" not in text and "**Warning (clinical_all):** quasi-complete separation." in text
    significant = {"significant_variables": ["er"], "fallback_to_best_variable": False}
    assert clinical_selection_text(significant) == "Significant at 0.05: er."


def test_training_set_aucs_are_marked():
    evaluation = {"fitted_on": {"cnn": ["D1"], "pk": ["D1", "D2"]},
                  "cohorts": {c: {"models": {"cnn": summary(0.9), "pk": summary(0.6)}} for c in ("D1", "D2", "D3")}}
    table = auc_table(evaluation, ["D1", "D2", "D3"]).set_index(["cohort", "model"])["training set"]
    assert table.to_dict() == {("D1", "cnn"): "yes", ("D1", "pk"): "yes", ("D2", "cnn"): "", ("D2", "pk"): "yes",
                               ("D3", "cnn"): "", ("D3", "pk"): ""}

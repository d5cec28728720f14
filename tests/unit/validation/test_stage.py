"""The validate stage end to end on the tiny cohort: real GX, real Keras model, real MLflow registry (SQLite)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from her2pcr.cli import app
from her2pcr.models.cnn import CNNConfig, build_model
from her2pcr.registry.tags import PASS, RegisteredVersion, gate_tag, reasons_tag
from her2pcr.validation.stage import model_metrics, shift_warnings_tag
from tests.conftest import tiny_params

pytestmark = pytest.mark.slow
MODEL_NAME = "her2pcr-dce-test"


def register(tmp, tracking_uri: str, model_dir, params) -> RegisteredVersion:
    """The model registered as train registers it: a pyfunc version carrying the chain it was trained with."""
    import mlflow

    from her2pcr.preprocess.chain import PreprocessChain
    from her2pcr.registry.register import register_model

    chain = params.preprocess.chain_config()
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.create_experiment("validate-test", artifact_location=(tmp / "mlartifacts").as_uri())
    registry = params.registry.model_copy(update={"model_name": MODEL_NAME,
                                                  "registered_file": tmp / "models" / "registered.json"})
    size, channels = chain.input_size, chain.channels
    with mlflow.start_run(experiment_id=experiment) as run:
        training = {"chain_fingerprint": PreprocessChain(chain).fingerprint()}
        version = register_model(model_dir, run.info.run_id, training, ["pre", "post3"], chain.model_dump(),
                                 {p: np.zeros((1, size, size, channels), np.float32) for p in ("pre", "post3")},
                                 registry, params.serve)
    return version


@pytest.fixture(scope="module")
def validated(tiny_processed, tmp_path_factory):
    """validate run through the CLI on D3 and D4 (the tiny profile's permissive gate)."""
    tmp = tmp_path_factory.mktemp("validate")
    model_dir = tmp / "models" / "cnn"
    model_dir.mkdir(parents=True)
    keras.utils.set_random_seed(0)
    with np.load(next(tiny_processed.glob("*.npz"))) as sample:  # the preprocessing's input size, whatever it is
        input_size = sample["pre"].shape[1]
    model = build_model(CNNConfig(phases=["pre", "post3"], input_size=input_size, filters=[2, 2, 4, 4],
                                  dense_units=4))
    model.save(model_dir / "model.keras")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    base = tiny_params()
    version = register(tmp, tracking_uri, model_dir, base)
    (model_dir / "training.json").write_text(json.dumps({"run_id": version.run_id}))
    params = tiny_params(
        validation=base.validation.model_copy(update={
            "processed_dir": tiny_processed, "interim_dir": tiny_processed.parent / "interim", "model_dir": model_dir,
            "metrics_dir": tmp / "metrics" / "validate", "gate_dir": tmp / "metrics" / "gate",
            "reports_dir": tmp / "reports" / "validation"}),
        registry=base.registry.model_copy(update={"model_name": MODEL_NAME,
                                                  "registered_file": tmp / "models" / "registered.json"}),
        tracking=base.tracking.model_copy(update={"uri": tracking_uri, "artifact_root": tmp / "mlartifacts"}),
    )
    params_file = tmp / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    outputs = {}
    for cohort in ("D3", "D4"):
        result = CliRunner().invoke(app, ["validate", "--cohort", cohort, "--params-file", str(params_file)])
        assert result.exit_code == 0, result.output + repr(result.exception)
        outputs[cohort] = result.output
    return params, version, outputs


def three_tesla_patient(params) -> str:
    """The tiny D3's one 3 T patient, while D1 is all 1.5 T (what the protocol-shift checks rely on)."""
    acquisition = pd.read_parquet(params.validation.interim_dir / "acquisition.parquet").set_index("patient_id")
    clinical = pd.read_parquet(params.validation.interim_dir / "clinical.parquet").set_index("patient_id")
    field = acquisition.field_strength_t.loc[clinical.index]
    assert set(field[clinical.cohort == "D1"]) == {1.5}
    (patient,) = field.index[(clinical.cohort == "D3") & (field == 3.0)]
    return patient


def test_metrics_file_holds_metrics_correlations_quality_and_gate(validated):
    params, version, outputs = validated
    text = (params.validation.metrics_dir / "D3.json").read_text()
    results = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-strict JSON constant {name}"))
    assert results["model"]["version"] == version.version and results["model"]["run_id"] == version.run_id
    assert results["n"] == 4 and results["n_pcr"] == 2
    metrics = results["metrics"]
    assert metrics["delong_ci_low"] <= metrics["auc"] <= metrics["delong_ci_high"]
    assert {"bootstrap_ci_low", "accuracy", "sensitivity", "specificity"} <= set(metrics)
    assert {row["parameter"] for row in results["correlations"]["parameters"]} >= {"repetition_time_ms",
                                                                                  "flip_angle_deg"}
    assert set(results["subsets"]) == {"hormone_receptor", "field_strength"}
    quality, protocol = results["data_quality"], results["protocol"]
    assert quality["n_patients"] == protocol["n_patients"] == 4 and quality["expectations"]
    assert quality["inputs"] == ["pre", "post3"]  # the model's inputs, and only these, are profiled
    assert {e["column"] for e in quality["expectations"]} >= {"has_pre", "has_post3", "n_stacks", "voi_row_mm",
                                                             "input_pre_mean", "input_post3_p99"}
    assert not any(e["column"] == "field_strength_t" for e in quality["expectations"])
    # The tiny D1 is all 1.5 T and one D3 patient is 3 T: a protocol shift, named with its value and the training
    # set, and a warning rather than a data-quality failure.
    three_tesla = three_tesla_patient(params)
    assert {"patient_id": three_tesla, "column": "field_strength_t", "value": 3.0, "expected": "one of {1.5}",
            "expectation": "expect_column_values_to_be_in_set"} in protocol["violations"]
    assert not any(v["column"] == "field_strength_t" for v in quality["violations"])
    assert set(quality["outside_patients"]) == {v["patient_id"] for v in quality["violations"]}
    warnings = [w["text"] for w in results["shift_warnings"]]
    assert any(w.startswith("field_strength_t: unseen value 3 in ") for w in warnings)
    assert results["gate"]["shift_warnings"] == warnings
    assert results["gate"]["decision"] == PASS  # the tiny profile's permissive gate
    assert len(results["gate"]["reasons"]) == 7
    assert "model-input expectations" in results["gate"]["checks"]["data_quality"]["reason"]
    assert 0 <= metrics["balanced_accuracy"] <= 1
    fairness = {v["variable"]: v for v in results["fairness"]}
    assert list(fairness) == params.validation.subgroups.variables
    for variable in fairness.values():  # every patient in one subgroup; 4 patients judge nothing (min n 10)
        assert sum(g["n"] for g in variable["groups"]) == 4 and variable["disparity"] is None
    assert {g["group"] for g in fairness["field_strength"]["groups"]} == {"1.5 T", "3 T"}
    assert "fairness pass: no variable has two subgroups to compare" in results["gate"]["checks"]["fairness"]["reason"]
    predictions = pd.read_csv(params.validation.reports_dir / "D3" / "predictions.csv")
    assert {"age", "site", "vendor", "hormone_receptor", "field_strength"} <= set(predictions.columns)
    assert "validate D3: AUC" in outputs["D3"] and "gate pass" in outputs["D3"]


def test_too_few_patients_per_class_give_a_note_instead_of_roc_statistics():
    frame = pd.DataFrame({"pcr": [1, 0, 0], "probability": [0.2, 0.3, 0.4]})
    metrics = model_metrics(frame, tiny_params().validation)
    assert metrics == {"note": "1 pCR and 2 non-pCR: ROC statistics need at least 2 per class"}


def test_every_external_cohort_is_validated_through_the_cli(validated):
    _, _, outputs = validated
    for cohort in ("D3", "D4"):
        assert f"validate {cohort}: AUC" in outputs[cohort] and "gate pass" in outputs[cohort]


def test_report_and_data_docs_are_written(validated):
    params, _, _ = validated
    out = params.validation.reports_dir / "D3"
    html = (out / "report.html").read_text()
    assert html.index("Gate: PASS") < html.index("Protocol shift warnings") < html.index("Model metrics") \
        < html.index("Subgroups and fairness") < html.index("Data quality") \
        < html.index("Acquisition protocol (warnings only)")
    assert three_tesla_patient(params) in html and "field_strength_t: unseen value 3" in html
    assert "data:image/png;base64" in html
    assert (out / "docs" / "index.html").exists()
    assert (out / "data_quality.json").exists() and (out / "protocol.json").exists()


def test_version_tags_and_run_artifacts_are_recorded(validated):
    import mlflow

    params, version, _ = validated
    client = mlflow.MlflowClient(tracking_uri=params.tracking.uri, registry_uri=params.tracking.uri)
    tags = client.get_model_version(version.name, version.version).tags
    assert tags[gate_tag("D3")] == tags[gate_tag("D4")] == PASS
    assert tags[reasons_tag("D3")].count("; ") == 6 and "auc pass" in tags[reasons_tag("D3")]
    assert "fairness pass" in tags[reasons_tag("D3")]
    results = json.loads((params.validation.metrics_dir / "D3.json").read_text())
    assert tags[shift_warnings_tag("D3")] == "; ".join(w["text"] for w in results["shift_warnings"])
    assert "field_strength_t: unseen value 3" in tags[shift_warnings_tag("D3")]
    assert float(tags["validation.D3.auc"]) == pytest.approx(
        json.loads((params.validation.metrics_dir / "D3.json").read_text())["metrics"]["auc"], abs=1e-4)
    logged = {a.path for a in client.list_artifacts(version.run_id, "validation/D3")}
    assert logged == {"validation/D3/report.html", "validation/D3/D3.json", "validation/D3/predictions.csv"}


def test_the_registered_version_is_what_is_scored(validated, tiny_processed):
    """The per-patient predictions behind the gate are the served pyfunc's answers, and reproduce its AUC."""
    import mlflow

    from her2pcr.serving.requests import encode_tensors
    from her2pcr.stats.roc import delong

    params, version, _ = validated
    predictions = pd.read_csv(params.validation.reports_dir / "D3" / "predictions.csv", index_col="patient_id")
    mlflow.set_tracking_uri(params.tracking.uri)
    served = mlflow.pyfunc.load_model(version.model_uri)
    pid = predictions.index[0]
    with np.load(tiny_processed / f"{pid}.npz") as stacks:
        request = pd.DataFrame([{"tensors": encode_tensors({p: stacks[p] for p in ("pre", "post3")})}])
    assert served.predict(request).probability[0] == pytest.approx(predictions.probability[pid], abs=1e-9)
    results = json.loads((params.validation.metrics_dir / "D3.json").read_text())
    assert delong(predictions.pcr.to_numpy(), predictions.probability.to_numpy()).auc == pytest.approx(
        results["metrics"]["auc"], abs=1e-12)


def test_a_stale_registered_version_is_refused(tmp_path):
    (tmp_path / "training.json").write_text(json.dumps({"run_id": "other"}))
    with pytest.raises(ValueError, match="re-run train"):
        RegisteredVersion("m", "1", "mine", "models:/m/1").check_trained_in(tmp_path)

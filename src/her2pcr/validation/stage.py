"""The validate@<cohort> stage: data quality, metrics, correlations and the gate of the registered version on one
external cohort; results as DVC metrics, an HTML report, and tags + artifacts on the version in MLflow.

Data quality is two suites derived from the training cohort: the model's inputs (phases present, VOI size,
stacks, statistics of the standardised inputs), which the gate checks, and the acquisition protocol, whose
shifts are reported as warnings (JSON, report, a version tag) without failing the gate."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from her2pcr.config import CohortsParams, RegistryParams, TrackingParams, ValidateParams
from her2pcr.evaluation.stage import json_safe
from her2pcr.interim import read_table
from her2pcr.registry.tags import RegisteredVersion, gate_tag, reasons_tag
from her2pcr.stats.correlation import TABLE3_PARAMETERS, spearman_bh
from her2pcr.validation.expectations import PROTOCOL_SUITE, SUITE, DataQualityOutcome, check_suites, derive_expectations
from her2pcr.validation.gate import GateDecision, GateEvidence, decide
from her2pcr.validation.profile import SET_COLUMNS, exam_table, input_set_columns, input_table, protocol_table
from her2pcr.validation.report import render_html, roc_png
from her2pcr.validation.shift import ShiftWarning, shift_warnings
from her2pcr.validation.subgroups import gate_evidence, subgroup_analysis, subgroup_columns

log = logging.getLogger(__name__)
MAX_TAG_CHARS = 5000  # MLflow's limit on a model-version tag value
SUBSET_COLUMNS = ("hormone_receptor", "field_strength")


def cohort_patients(interim_dir: Path, cohort: str) -> list[str]:
    return sorted(read_table(interim_dir, "clinical", [cohort]).index.astype(str))


def shift_warnings_tag(cohort: str) -> str:
    """Version tag holding the protocol shift warnings ("; "-separated, ``none`` without any); never gated."""
    return f"validation.{cohort}.shift_warnings"


@dataclass(frozen=True)
class DataQuality:
    """Both suites on one cohort: the gated model-input one and the protocol one with its warnings."""

    inputs: DataQualityOutcome
    input_expectations: list[dict]
    protocol: DataQualityOutcome
    protocol_expectations: list[dict]
    warnings: list[ShiftWarning]


def training_input_patients(processed_dir: Path, train_cohort: str, inputs: list[str]) -> list[str]:
    """Training patients whose processed exam has every model input: the data the model was fitted on."""
    from her2pcr.training.data import patients_of, read_index

    return patients_of(read_index(processed_dir, [train_cohort]), [train_cohort], inputs)


def data_quality(params: ValidateParams, cohort: str, inputs: list[str], out_dir: Path) -> DataQuality:
    """Expectations derived from the training cohort's two tables, run on the cohort's (one GX context)."""
    train_ids = cohort_patients(params.interim_dir, params.train_cohort)
    if not train_ids:
        raise ValueError(f"training cohort {params.train_cohort!r} has no patient in {params.interim_dir}")
    train_input_ids = training_input_patients(params.processed_dir, params.train_cohort, inputs)
    if not train_input_ids:
        raise ValueError(f"no patient of training cohort {params.train_cohort!r} in {params.processed_dir} has "
                         f"every model input {inputs}")
    train = [params.train_cohort]
    train_exams = exam_table(params.interim_dir, train_ids, train)
    input_expectations = derive_expectations(
        input_table(params.processed_dir, train_input_ids, inputs, train_exams, train), params.range_margin,
        input_set_columns(inputs))
    protocol_expectations = derive_expectations(protocol_table(params.interim_dir, train_ids, train_exams, train),
                                                params.range_margin, SET_COLUMNS)
    ids = cohort_patients(params.interim_dir, cohort)
    exams = exam_table(params.interim_dir, ids, [cohort])
    inputs_frame = input_table(params.processed_dir, ids, inputs, exams, [cohort])
    protocol_frame = protocol_table(params.interim_dir, ids, exams, [cohort])
    inputs_frame.to_csv(out_dir / "inputs_profile.csv")
    protocol_frame.to_csv(out_dir / "protocol_profile.csv")
    outcomes = check_suites({SUITE: (inputs_frame, input_expectations),
                             PROTOCOL_SUITE: (protocol_frame, protocol_expectations)}, out_dir)
    return DataQuality(outcomes[SUITE], [e.to_dict() for e in input_expectations], outcomes[PROTOCOL_SUITE],
                       [e.to_dict() for e in protocol_expectations],
                       shift_warnings(outcomes[PROTOCOL_SUITE], protocol_expectations))


def predictions_of(served, params: ValidateParams, cohort: str) -> tuple[pd.DataFrame, list[str]]:
    """Patient P(pCR) of the registered version with receptor status and field strength; patients left out."""
    from her2pcr.evaluation.predict import add_covariates, predict_cohorts

    predictions, left_out = predict_cohorts(served, params.processed_dir, [cohort])
    return add_covariates(predictions, params.interim_dir, None, [cohort]), left_out


def model_metrics(frame: pd.DataFrame, params: ValidateParams) -> dict:
    """AUC with DeLong and bootstrap CIs and the threshold metrics (balanced accuracy among them), or a note saying
    why there are none."""
    from her2pcr.stats.fairness import balanced_accuracy
    from her2pcr.stats.roc import summarise

    n_pos = int(frame.pcr.sum())
    if min(n_pos, len(frame) - n_pos) < 2:
        return {"note": f"{n_pos} pCR and {len(frame) - n_pos} non-pCR: ROC statistics need at least 2 per class"}
    y, p = frame.pcr.to_numpy(), frame.probability.to_numpy()
    return {**summarise(y, p, params.n_bootstrap, params.seed, params.threshold),
            "balanced_accuracy": balanced_accuracy(y, p, params.threshold)}


def fairness(frame: pd.DataFrame, columns: pd.DataFrame, params: ValidateParams) -> list[dict]:
    """Per subgroup variable: n, AUC [DeLong CI], TPR and FPR of each subgroup, and the equalized-odds disparity
    with its bootstrap CI (empty without patients)."""
    if frame.empty:
        return []
    return [v.to_dict() for v in subgroup_analysis(frame, columns, params.threshold, params.gate, params.subgroups,
                                                   params.seed)]


def subsets(frame: pd.DataFrame, threshold: float) -> dict[str, list[dict]]:
    """Accuracy by hormone-receptor status and by field strength (Supplementary Tables 1-2), as evaluate."""
    from her2pcr.stats.subsets import subset_accuracy

    if frame.empty:
        return {column: [] for column in SUBSET_COLUMNS}
    return {column: subset_accuracy(frame, column, threshold=threshold).to_dict(orient="records")
            for column in SUBSET_COLUMNS}


def correlations(frame: pd.DataFrame, interim_dir: Path, alpha: float, cohort: str) -> dict:
    """Table 3: Spearman correlation of predictions with each acquisition parameter, BH-adjusted."""
    acquisition = read_table(interim_dir, "acquisition", [cohort])
    table = spearman_bh(frame.probability.astype(float), acquisition, TABLE3_PARAMETERS)
    table["significant"] = table.p_adjusted < alpha  # NaN (not tested) compares False
    return {"alpha": alpha, "n_tested": int(table.p_value.notna().sum()), "n_significant": int(table.significant.sum()),
            "parameters": table.to_dict(orient="records")}


def evidence_of(results: dict) -> GateEvidence:
    metrics, quality, corr = results["metrics"], results["data_quality"], results["correlations"]
    return GateEvidence(n=results["n"], n_positive=results["n_pcr"], auc=metrics.get("auc"),
                        auc_ci_low=metrics.get("delong_ci_low"), n_significant=corr["n_significant"],
                        n_tested=corr["n_tested"], alpha=corr["alpha"], n_outside=quality["n_outside"],
                        n_profiled=quality["n_patients"],
                        shift_warnings=tuple(w["text"] for w in results["shift_warnings"]),
                        subgroups=gate_evidence(results["fairness"]))


def gate_summary(results: dict) -> dict:
    """The small file `dvc metrics show` prints for a cohort: the version, n, AUC [CI] and the gate."""
    metrics = results["metrics"]
    return {"version": results["model"]["version"], "n": results["n"], "auc": metrics.get("auc"),
            "ci_low": metrics.get("delong_ci_low"), "ci_high": metrics.get("delong_ci_high"),
            "balanced_accuracy": metrics.get("balanced_accuracy"),
            "gate": results["gate"]["decision"], "gate_passed": int(results["gate"]["decision"] == "pass"),
            "shift_warnings": len(results["shift_warnings"])}


def record_in_registry(version: RegisteredVersion, cohort: str, decision: GateDecision, auc: float | None,
                       files: list[Path], tracking: TrackingParams) -> None:
    """Gate, reasons, AUC and shift warnings as version tags (promotion reads the gate); report and metrics on
    the version's run."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking.uri, registry_uri=tracking.uri)
    warnings = "; ".join(decision.shift_warnings) or "none"
    tags = {gate_tag(cohort): decision.decision, reasons_tag(cohort): "; ".join(decision.reasons)[:MAX_TAG_CHARS],
            f"validation.{cohort}.auc": "n/a" if auc is None else f"{auc:.4f}",
            shift_warnings_tag(cohort): warnings[:MAX_TAG_CHARS]}
    for key, value in tags.items():
        client.set_model_version_tag(version.name, version.version, key, value)
    for path in files:
        client.log_artifact(version.run_id, str(path), f"validation/{cohort}")


def validate(cohort: str, params: ValidateParams, registry: RegistryParams, tracking: TrackingParams,
             cohorts: CohortsParams) -> dict:
    """Run the whole stage for one external cohort; return what metrics/validate/<cohort>.json holds."""
    if cohort not in cohorts.external:
        raise ValueError(f"unknown external cohort {cohort!r}; cohorts.external has {sorted(cohorts.external)}")
    import mlflow

    from her2pcr.evaluation.predict import load_registered, served_phases

    mlflow.set_tracking_uri(tracking.uri)
    version, served = load_registered(registry.registered_file, params.model_dir)
    out_dir = params.reports_dir / cohort
    shutil.rmtree(out_dir, ignore_errors=True)  # the stage's own output: no stale Data Docs from an older run
    out_dir.mkdir(parents=True)

    inputs = served_phases(served)
    quality = data_quality(params, cohort, inputs, out_dir)
    frame, left_out = predictions_of(served, params, cohort)
    columns = subgroup_columns(frame, params.interim_dir, [cohort], params.subgroups)
    predictions_file = out_dir / "predictions.csv"  # per patient, what the gate's metrics were computed from
    extra = [c for c in columns.columns if c not in frame.columns]  # the subgroup variables it does not hold yet
    frame[["cohort", "pcr", "probability", "n_stacks", *SUBSET_COLUMNS]].join(columns[extra]).to_csv(predictions_file)
    results: dict = {
        "cohort": cohort, "train_cohort": params.train_cohort,
        "model": {"name": version.name, "version": str(version.version), "run_id": version.run_id,
                  "model_uri": version.model_uri},
        "n": len(frame), "n_pcr": int(frame.pcr.sum()), "not_evaluated": left_out,
        "metrics": model_metrics(frame, params), "subsets": subsets(frame, params.threshold),
        "fairness": fairness(frame, columns, params),
        "correlations": correlations(frame, params.interim_dir, params.alpha, cohort),
        # data_quality: the gated model-input suite (key kept for its readers); protocol: warnings only
        "data_quality": {**quality.inputs.to_dict(), "inputs": inputs, "expectations": quality.input_expectations},
        "protocol": {**quality.protocol.to_dict(), "expectations": quality.protocol_expectations},
        "shift_warnings": [w.to_dict() for w in quality.warnings],
    }
    decision = decide(evidence_of(results), params.gate)
    results["gate"] = {**decision.to_dict(), "thresholds": params.gate.model_dump()}
    results = json_safe(results)

    metrics_file = params.metrics_dir / f"{cohort}.json"
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    metrics_file.write_text(json.dumps(results, indent=1, allow_nan=False), encoding="utf-8")
    gate_file = params.gate_dir / f"{cohort}.json"
    gate_file.parent.mkdir(parents=True, exist_ok=True)
    gate_file.write_text(json.dumps(gate_summary(results), indent=1), encoding="utf-8")
    roc = roc_png(frame.pcr.to_numpy(), frame.probability.to_numpy(), f"{cohort} (n={len(frame)})") \
        if "auc" in results["metrics"] else None
    report = out_dir / "report.html"
    report.write_text(render_html(results, roc), encoding="utf-8")
    record_in_registry(version, cohort, decision, results["metrics"].get("auc"),
                       [report, metrics_file, predictions_file], tracking)
    return results

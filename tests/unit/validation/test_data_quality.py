"""The two suites of validate on constructed cohorts: a protocol shift only warns, a shift of the standardised
model inputs fails the data-quality check (real GX, no model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from her2pcr.config import GateParams
from her2pcr.interim import write_cohort_tables
from her2pcr.preprocess.settings import COHORTS_DIR
from her2pcr.preprocess.stage import write_cohort_indexes
from her2pcr.validation.gate import GateEvidence, decide
from her2pcr.validation.stage import data_quality
from tests.conftest import tiny_params

INPUTS = ["pre", "post1"]
BOX = {"row_start": 2, "row_end": 5, "column_start": 2, "column_end": 5, "slice_start": 1, "slice_end": 2}
TRAIN_PROTOCOL = {"field_strength_t": 1.5, "repetition_time_ms": 4.5, "n_post_phases": 3, "bolus_volume_ml": 15.0,
                  "manufacturer": "A"}
GATE = GateParams(min_patients=2, min_auc=0.0, min_auc_ci_low=0.0, max_significant_correlations=10,
                  max_outside_fraction=0.25, max_equalized_odds_disparity=0.6, min_subgroup_n=10)


def inputs_of(seed: int) -> dict[str, np.ndarray]:
    """Standardised inputs (n_stacks, S, S, C) in [0, 1], a little different per patient."""
    rng = np.random.default_rng(seed)
    level = 0.3 + 0.05 * (seed % 6)
    return {name: np.clip(rng.normal(level * (1 + k), 0.1, size=(2, 8, 8, 3)), 0, 1).astype(np.float32)
            for k, name in enumerate(INPUTS)}


def write_cohorts(root, external: dict[str, dict]) -> tuple:
    """Interim and processed data of six D1 patients (the training protocol) and the ``external`` D3 patients.

    ``external`` maps a patient to {"protocol": acquisition overrides, "scale": factor on its inputs,
    "drop": an input its processed exam lacks, "seed": which training patient's inputs it copies}.
    """
    interim, processed = root / "interim", root / "processed"
    (interim / "exams").mkdir(parents=True)
    processed.mkdir()
    patients = {f"t{i}": {"cohort": "D1", "seed": i, "protocol": {"repetition_time_ms": 4.0 + 0.2 * i}}
                for i in range(6)}
    patients |= {pid: {"cohort": "D3", **spec} for pid, spec in external.items()}
    clinical, acquisition, index = [], [], []
    for pid, spec in patients.items():
        clinical.append({"patient_id": pid, "cohort": spec["cohort"], "pcr": 0, **BOX})
        acquisition.append({"patient_id": pid, **TRAIN_PROTOCOL, **spec.get("protocol", {})})
        image = np.full((3, 4, 8, 8), 100.0, dtype=np.float32)
        image[1:] *= 2
        np.savez_compressed(interim / "exams" / f"{pid}.npz", image=image, spacing_mm=np.array([2.0, 0.7, 0.7]),
                            phase_times_s=np.array([0.0, 60.0, 120.0]),
                            phase_names=np.array(["pre", "post1", "post2"]))
        arrays = {k: v * spec.get("scale", 1.0) for k, v in inputs_of(spec.get("seed", 0)).items()
                  if k != spec.get("drop")}
        np.savez_compressed(processed / f"{pid}.npz", key=np.array("k"), **arrays)
        index.append({"patient_id": pid, "cohort": spec["cohort"], "pcr": 0, "institution": "x", "n_stacks": 2,
                      "phases": ";".join(arrays), "key": "k"})
    tables = {"clinical": pd.DataFrame(clinical), "acquisition": pd.DataFrame(acquisition)}
    for name, table in tables.items():
        table.to_parquet(interim / f"{name}.parquet")
    write_cohort_tables(interim, tables, tables["clinical"].set_index("patient_id").cohort)
    index = pd.DataFrame(index).set_index("patient_id")
    index.reset_index().to_parquet(processed / "index.parquet")
    write_cohort_indexes(index, processed / COHORTS_DIR)  # as ingest and preprocess write them
    params = tiny_params().validation.model_copy(update={"interim_dir": interim, "processed_dir": processed,
                                                         "range_margin": 0.1, "train_cohort": "D1"})
    out = root / "reports"
    out.mkdir()
    return params, out


def gate_of(quality):
    evidence = GateEvidence(n=4, n_positive=2, auc=0.7, auc_ci_low=0.6, n_significant=0, n_tested=8, alpha=0.05,
                            n_outside=quality.inputs.to_dict()["n_outside"], n_profiled=quality.inputs.n_patients,
                            shift_warnings=tuple(w.text for w in quality.warnings))
    return decide(evidence, GATE)


def test_a_cohort_shifted_only_in_protocol_passes_with_warnings_naming_the_descriptors(tmp_path):
    three_t = {"field_strength_t": 3.0, "repetition_time_ms": 9.0, "n_post_phases": 6, "bolus_volume_ml": 30.0,
               "manufacturer": "B"}
    params, out = write_cohorts(tmp_path, {f"e{i}": {"seed": i, "protocol": three_t} for i in range(4)})
    quality = data_quality(params, "D3", INPUTS, out)
    assert quality.inputs.violations == [] and quality.inputs.outside_fraction == 0.0
    assert quality.protocol.outside_fraction == 1.0  # every patient off the training protocol ...
    texts = [w.text for w in quality.warnings]
    assert "field_strength_t: unseen value 3 in 4 of 4 patients (training: 1.5)" in texts
    assert "n_post_phases: unseen value 6 in 4 of 4 patients (training: 3)" in texts
    assert any(t.startswith("repetition_time_ms: 4 of 4 patients outside the training range") and "observed 9" in t
               for t in texts)
    assert any(t.startswith("bolus_volume_ml: 4 of 4 patients outside") for t in texts)
    assert not any("manufacturer" in t for t in texts)  # a vendor name is not a protocol measurement
    decision = gate_of(quality)
    assert decision.passed and decision.to_dict()["checks"]["data_quality"]["passed"]
    assert decision.to_dict()["shift_warnings"] == texts  # ... listed with the decision, not gating it
    assert all("; " not in t for t in texts)
    assert {"data_quality.json", "protocol.json", "inputs_profile.csv", "protocol_profile.csv"} <= {
        p.name for p in out.iterdir()}
    assert (out / "docs" / "index.html").exists()
    docs = " ".join(p.read_text() for p in (out / "docs").rglob("*.html"))
    assert "data_quality" in docs and "protocol" in docs  # one Data Docs site holds both suites


def test_a_cohort_with_scaled_model_inputs_fails_the_data_quality_check(tmp_path):
    params, out = write_cohorts(tmp_path, {f"e{i}": {"seed": i, "scale": 3.0} for i in range(4)})
    quality = data_quality(params, "D3", INPUTS, out)
    assert quality.warnings == []  # same protocol as training
    assert quality.inputs.outside_patients == ["e0", "e1", "e2", "e3"]
    columns = {v["column"] for v in quality.inputs.violations}
    assert {"input_pre_mean", "input_post1_mean", "input_pre_p99", "input_post1_std"} <= columns
    decision = gate_of(quality)
    failed = [c for c in decision.checks if not c.passed]
    assert [c.name for c in failed] == ["data_quality"]
    assert "4 of 4 patients (100.0%) outside the training-derived model-input expectations" in failed[0].reason


def test_a_missing_model_input_and_an_unseen_field_strength_are_named(tmp_path):
    params, out = write_cohorts(tmp_path, {
        "inside": {"seed": 1}, "three_t": {"seed": 2, "protocol": {"field_strength_t": 3.0}},
        "no_post1": {"seed": 3, "drop": "post1"}, "also_inside": {"seed": 4}})
    quality = data_quality(params, "D3", INPUTS, out)
    assert quality.inputs.outside_patients == ["no_post1"]
    missing = {(v["column"], v["expected"]) for v in quality.inputs.violations}
    assert ("has_post1", "one of {True}") in missing and ("input_post1_mean", "not missing") in missing
    assert [w.text for w in quality.warnings] == ["field_strength_t: unseen value 3 in 1 of 4 patients "
                                                  "(training: 1.5)"]
    assert quality.inputs.outside_fraction == pytest.approx(0.25)
    assert gate_of(quality).passed  # 25 % <= max_outside_fraction 25 %


def test_only_the_model_inputs_are_profiled(tmp_path):
    params, out = write_cohorts(tmp_path, {"e0": {"seed": 0}})
    quality = data_quality(params, "D3", ["post1"], out)
    columns = {e["column"] for e in quality.input_expectations}
    assert "input_post1_mean" in columns and not any(c.startswith(("input_pre", "has_pre")) for c in columns)
    assert {"n_stacks", "voi_row_mm", "voi_slice_mm", "has_post1"} <= columns


def test_a_training_cohort_without_the_model_inputs_is_an_error(tmp_path):
    params, out = write_cohorts(tmp_path, {"e0": {"seed": 0}})
    with pytest.raises(ValueError, match="every model input"):
        data_quality(params, "D3", ["sub3"], out)

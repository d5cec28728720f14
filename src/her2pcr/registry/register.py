"""Register a trained CNN as a version of the served model: pyfunc, signature, example, card, lineage, alias."""

from __future__ import annotations

import tempfile
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np

from her2pcr.config import RegistryParams, ServeParams
from her2pcr.registry.tags import RegisteredVersion
from her2pcr.serving.model import BOX_FIELDS, EXAM_FIELD, OUTPUT_COLUMNS, TENSORS_FIELD, PcrModel
from her2pcr.serving.requests import encode_tensors

#: Lineage tags copied from the training run onto the version (design.md "Contracts").
LINEAGE_TAGS = ("git_commit", "data_version", "params_hash", "phases", "chain_fingerprint")
#: The served model's runtime: the distributions its code imports (tests/unit/test_project_files.py checks the
#: list against the imports), pinned so that a non-local `mlflow models serve --env-manager` rebuilds it. The
#: her2pcr code itself travels inside the model (code_paths), so no index needs to have it.
RUNTIME_PACKAGES = ("mlflow", "tensorflow", "keras", "numpy", "pandas", "scipy", "pydantic", "pydicom", "SimpleITK",
                    "tqdm", "PyYAML", "ruamel.yaml")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/her2pcr


def signature():
    """Request columns (all optional: an exam row or a tensors row) and answer columns."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec("string", EXAM_FIELD, required=False), ColSpec("string", TENSORS_FIELD, required=False)]
    inputs += [ColSpec("long", name, required=False) for name in BOX_FIELDS]
    types = {"probability": "double", "label": "long", "n_stacks": "long"}
    outputs = [ColSpec(types.get(name, "string"), name) for name in OUTPUT_COLUMNS]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example(stacks: dict[str, np.ndarray]):
    """One tensors-mode request: the first slice stack of a validation patient (no DICOM value inside)."""
    import pandas as pd

    return pd.DataFrame([{TENSORS_FIELD: encode_tensors({k: v[:1] for k, v in stacks.items()})}])


def model_card(training: dict, phases: list[str], preprocess: dict, serve: ServeParams) -> str:
    """Markdown model card: what goes in, what comes out, what it was trained on, and what it is not for."""
    size, channels = preprocess["input_size"], preprocess["channels"]
    return f"""# her2pcr-dce model card

**Intended use: research only.** Predicts pathological complete response (pCR) to HER2-targeted neoadjuvant
chemotherapy from a pre-treatment breast DCE-MRI exam. It is not a medical device and must not inform the
care of a patient.

## Inputs
- *Exam*: `{EXAM_FIELD}` = base64 zip of one study's DICOM files (MR, every DCE phase), and the tumour box
  `{', '.join(BOX_FIELDS)}`: 0-based, inclusive voxel indices on the pre-contrast grid.
  The version runs the training preprocessing: {chain_text(preprocess)}{_exam_n4_text(serve)}.
- *Tensors*: `{TENSORS_FIELD}` = base64 `.npz` with arrays {phases}, each float32 of shape
  (stacks, {size}, {size}, {channels}) in [0, 1], the same number of stacks in every phase.
- Limits: {serve.max_payload_mb:g} MB per request, zip expanding to at most {serve.max_uncompressed_mb:g} MB
  and {serve.max_compression_ratio:g}-fold, {serve.max_files} files.

## Output
`probability` = P(pCR), the mean over {_stacks_text(training)} (and the ensemble's member models), in [0, 1];
`label` = probability >= {serve.threshold}; `phases` used; `n_stacks`; `members` = each member model's probability
(their spread shows how much the fold models disagree); `warnings` about the exam (phase ordering, resampling);
`sr_content` for an exam: what a DICOM SR of the answer refers to, by the request's UIDs.

## Training
- Phases {phases}; training patients {len(training.get('train_patients', []))}; {_selection_text(training)}
- Lineage: git `{training.get('git_commit')}`, data `{training.get('data_version')}`, params
  `{training.get('params_hash')}`, preprocessing `{training.get('chain_fingerprint')}`.

## Validation and limits
External-cohort gate results are tags `validation.<cohort>.gate` / `.reasons` on this version; the `champion`
alias is set only when every gate passes (or by a recorded override). Cohorts here are simulated; performance on
real collections is unknown until validated on them.
"""


def chain_text(preprocess: dict) -> str:
    """The preprocessing chain's settings in words, for the card (the paper profile and the default differ)."""
    size, channels = preprocess["input_size"], preprocess["channels"]
    margin = preprocess.get("margin_mm", 0.0)
    spacing = preprocess.get("spacing_mm")
    parts = [f"N4 `{preprocess['n4_mode']}` (shrink {preprocess['n4_shrink_factor']})",
             f"the box widened by {margin:g} mm in-plane" if margin else "crop to the box",
             f"resampled in-plane to {spacing:g} mm" if spacing else "native grid",
             f"{'fitted' if preprocess.get('fit_voi') else 'padded'} to {size} x {size}",
             f"{channels}-slice stacks"]
    basis = {"exam_reference": "the pre-contrast signal", "exam_enhancement": "the early enhancement"}
    if preprocess.get("intensity") in basis:
        parts.append(f"every phase over one per-exam reference ({basis[preprocess['intensity']]} of the enhancing "
                     f"tissue), {preprocess.get('intensity_range', 4.0):g} x reference mapped to 1")
    else:
        parts.append("each input divided by its maximum")
    if preprocess.get("subtractions"):
        parts.append("subtractions subK = postK - pre")
    return ", ".join(parts)


def _selection_text(training: dict) -> str:
    """How the registered weights were selected, in words (cross-validated ensemble or holdout epoch)."""
    value = training.get("best_val_patient_auc", float("nan"))
    epoch, averaged = training.get("best_epoch"), training.get("averaged_epochs")
    if training.get("selection") == "cv":
        weights = (f"each with the mean of its weights over epochs {averaged[0]}-{averaged[1]}" if averaged else
                   f"at epoch {epoch}, the epoch of the best mean out-of-fold AUC")
        return (f"an ensemble of the {training.get('cv_folds', 'k')} patient-level fold models {weights}; pooled "
                f"out-of-fold AUC (patients) {value:.3f}.")
    weights = (f"the mean of the weights over epochs {averaged[0]}-{averaged[1]}," if averaged else
               f"the weights of epoch {epoch}, the best")
    return (f"validation patients {len(training.get('validation_patients', []))}; {weights} validation AUC "
            f"(patients) {value:.3f}.")


def _stacks_text(training: dict) -> str:
    fraction = training.get("central_stack_fraction", 1.0)
    return "the box's slice stacks" if fraction >= 1 else f"the middle {fraction:.0%} of the box's slice stacks"


def _exam_n4_text(serve: ServeParams) -> str:
    if not serve.exam_n4_shrink_factor:
        return ""
    return (f", except that N4 estimates the bias field on the exam shrunk {serve.exam_n4_shrink_factor}x "
            "(faster; the answer stays within 0.02 of the training chain's)")


def runtime_requirements() -> list[str]:
    return [f"{name}=={package_version(name)}" for name in RUNTIME_PACKAGES]


def register_model(model_dir: Path, run_id: str, training: dict, phases: list[str], preprocess: dict,
                   example_stacks: dict[str, np.ndarray], registry: RegistryParams,
                   serve: ServeParams) -> RegisteredVersion:
    """Log the pyfunc to the (active) training run, register it, tag lineage, point the challenger alias at it."""
    import mlflow
    from mlflow import MlflowClient

    card = model_card(training, phases, preprocess, serve)
    config = {"threshold": serve.threshold, "preprocess": preprocess,
              "model_name": registry.model_name, "run_id": run_id,  # named in the SR content of an answer
              "chain_fingerprint": training["chain_fingerprint"],
              "exam_n4_shrink_factor": serve.exam_n4_shrink_factor,
              "central_stack_fraction": training.get("central_stack_fraction", 1.0),
              "limits": serve.model_dump(exclude={"threshold", "exam_n4_shrink_factor"})}
    with tempfile.TemporaryDirectory(prefix="her2pcr-card-") as tmp:  # model_dir is train's output: not written
        card_path = Path(tmp) / "model_card.md"
        card_path.write_text(card, encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=PcrModel(), artifacts={"keras_model": str(model_dir / "model.keras"),
                                                              "model_card": str(card_path)},
            model_config=config, signature=signature(), input_example=input_example(example_stacks),
            registered_model_name=registry.model_name, pip_requirements=runtime_requirements(),
            code_paths=[str(PACKAGE_DIR)],
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.update_model_version(registry.model_name, version, description=card)
    for key in LINEAGE_TAGS:
        client.set_model_version_tag(registry.model_name, version, key, str(training.get(key, "")))
    client.set_model_version_tag(registry.model_name, version, "run_id", run_id)
    client.set_registered_model_alias(registry.model_name, registry.challenger_alias, version)
    record = RegisteredVersion(registry.model_name, version, run_id, f"models:/{registry.model_name}/{version}")
    record.save(registry.registered_file)
    return record


def example_stacks(processed_dir: Path, cohorts: list[str], phases: list[str],
                   patients: list[str]) -> dict[str, np.ndarray]:
    """The processed inputs of the first of ``patients`` (of the training ``cohorts``): the input example."""
    from her2pcr.training.data import load_stacks, read_index

    return load_stacks(processed_dir, patients[:1], phases, read_index(processed_dir, cohorts).pcr).inputs


def register_trained(model_dir: Path, processed_dir: Path, cohorts: list[str], registry: RegistryParams,
                     serve: ServeParams, tracking_uri: str) -> RegisteredVersion:
    """The register stage: the model train saved in ``model_dir`` becomes a new version, logged to its run.

    A stage of its own so that the served threshold, the request limits or the alias names re-register the
    trained model without retraining it."""
    import json

    import mlflow

    from her2pcr.preprocess.settings import CHAIN_FILE

    training = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
    chain = json.loads((processed_dir / CHAIN_FILE).read_text(encoding="utf-8"))
    if chain["fingerprint"] != training["chain_fingerprint"]:
        raise ValueError(f"{processed_dir} was made by chain {chain['fingerprint']}, the model in {model_dir} was "
                         f"trained on chain {training['chain_fingerprint']}: re-run train")
    phases = training["phases"].split(",")
    example = example_stacks(processed_dir, cohorts, phases,
                             training.get("validation_patients") or training["train_patients"])
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=training["run_id"]):
        return register_model(model_dir, training["run_id"], training, phases, chain["config"], example, registry,
                              serve)

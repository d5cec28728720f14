"""Typed parameters: one pydantic model per params.yaml section, unknown keys rejected. (The simulator's site
protocols are in ``synth/sites.py``, profile merging in ``profiles.py``.)"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from her2pcr.preprocess.settings import Box, PreprocessConfig

PARAMS_FILE = Path("params.yaml")

FaultName = Literal[
    "truncated_file", "non_dicom_file", "non_mr_modality", "missing_post_contrast",
    "mismatched_matrix", "duplicated_slices", "missing_timing", "box_outside_volume",
    "manifest_without_images", "images_without_manifest", "missing_label", "nan_clinical_value",
]
ALL_FAULTS: tuple[str, ...] = FaultName.__args__  # type: ignore[attr-defined]
# Series a real study holds beside the DCE series (her2pcr.synth.extra_series), for series-selection fixtures.
ExtraSeriesName = Literal["localizer", "t2", "t1_non_fat_sat", "subtraction", "mip"]


class Strict(BaseModel):
    """Base for every params model: unknown keys are an error, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CohortSize(Strict):
    n: int = Field(ge=0)
    n_pcr: int = Field(ge=0)

    @model_validator(mode="after")
    def _pcr_le_n(self) -> CohortSize:
        if self.n_pcr > self.n:
            raise ValueError(f"n_pcr ({self.n_pcr}) > n ({self.n})")
        return self


class TruthModel(Strict):
    """Hidden truth: logit P(pCR) = b_site + b_hr [ER- and PR-] + b_img z + b_age (age-50)/10."""

    b_hr: float
    b_img: float
    b_age: float
    # Correlation of each phenotype's latent with z (simulator.md: spatial
    # patterns carry most of the signal, whole-tumour averages little).
    rho_spiculation: float = Field(ge=-1, le=1)
    rho_peritumoural: float = Field(ge=-1, le=1)
    rho_heterogeneity: float = Field(ge=-1, le=1)
    rho_ktrans: float = Field(ge=-1, le=1)
    rho_washout: float = Field(ge=-1, le=1)


class SimulateParams(Strict):
    seed: int
    out_dir: Path
    sites_file: Path
    matrix: int = Field(ge=32, le=1024)
    slices: int = Field(ge=8, le=512)
    noise: bool = True
    workers: int = Field(ge=1)
    cohorts: dict[str, CohortSize]
    truth: TruthModel
    faults: list[FaultName] = []
    extra_series: list[ExtraSeriesName] = []  # written into every exam (not the fault patients)
    # classic: one MR Image Storage file per slice; enhanced: one Enhanced MR Image Storage file per series
    storage: Literal["classic", "enhanced"] = "classic"
    # native: dicom/ + clinical.csv + boxes.csv; duke / nifti: also a Duke-Breast-Cancer-MRI-like or a
    # MAMA-MIA-like NIfTI copy of them beside (synth.collections)
    collection: Literal["native", "duke", "nifti"] = "native"

    @model_validator(mode="after")
    def _faults_are_native(self) -> SimulateParams:
        if self.collection != "native" and self.faults:
            raise ValueError("simulate.faults are written into the native layout only (collection: native)")
        return self


CLINICAL_FIELDS = ("patient_id", "age", "er", "pr", "stage", "lymph_node", "longest_diameter_mm", "regimen",
                   "pcr", "institution")
BOX_FIELDS = ("patient_id", *Box._fields)  # the box manifest: a patient and their box


class SeriesRules(Strict):
    """What a series must be to be a phase of the dynamic T1 acquisition (``ingest.series`` in params.yaml)."""

    exclude_image_type: list[str] = Field(
        default_factory=lambda: ["DERIVED", "SECONDARY", "SUBTRACTION", "SUB", "MIP", "PROJECTION IMAGE",
                                 "LOCALIZER", "MPR", "REFORMATTED"],
        description="a series whose ImageType holds any of these values is not acquired DCE data")
    exclude_description: str | None = Field(
        r"(?i)\b(loc|locali[sz]er|scout|survey|3[- ]?plane|t2|stir|dwi|diffusion|adc|sub|subtraction|mip|mpr|"
        r"calibration|cal|asset|reformat)\b",
        description="regex on SeriesDescription: a match leaves the series out")
    include_description: str | None = Field(
        None, description="regex on SeriesDescription that every DCE series must match (null: any)")
    scanning_sequences: list[str] = Field(
        default_factory=lambda: ["GR"], description="ScanningSequence values of a T1 gradient-echo acquisition")
    max_echo_time_ms: float = Field(10.0, gt=0)
    max_repetition_time_ms: float = Field(50.0, gt=0)
    min_slices: int = Field(8, ge=1, description="slice positions per time point")
    study: Literal["earliest", "latest"] = Field(
        "earliest", description="which study of a patient holding several is the exam (earliest: pre-treatment)")


class NiftiLayout(Strict):
    """A NIfTI collection (MAMA-MIA-like): ``<images_subdir>/<pid>/<pid>_000K.nii.gz`` per phase (K = 0 is
    pre-contrast), ``<info_subdir>/<pid>.json`` with the acquisition times, protocol values and lesion box."""

    images_subdir: str = "images"
    info_subdir: str = "patient_info_files"
    phase_pattern: str = Field(r"_(\d{4})\.nii(\.gz)?$", description="regex on a file name; group 1: phase index")
    times_key: str = Field("imaging_data.acquisition_times", description="dotted JSON key: seconds, one per phase")
    # dotted JSON key of the lesion box (null: the box manifest ingest.boxes_file), and its fields' names there
    box_key: str | None = "primary_lesion.bounding_box"
    box_fields: dict[str, str] = Field(default_factory=lambda: {
        "row_start": "y_min", "row_end": "y_max", "column_start": "x_min", "column_end": "x_max",
        "slice_start": "z_min", "slice_end": "z_max"})
    # acquisition record column -> dotted JSON key; a key a file lacks is left missing and flagged, never invented
    acquisition_keys: dict[str, str] = Field(default_factory=lambda: {
        "field_strength_t": "imaging_data.field_strength", "repetition_time_ms": "imaging_data.repetition_time",
        "echo_time_ms": "imaging_data.echo_time", "flip_angle_deg": "imaging_data.flip_angle",
        "slice_thickness_mm": "imaging_data.slice_thickness",
        "phase_encoding_steps": "imaging_data.phase_encoding_steps",
        "percent_sampling": "imaging_data.percent_sampling", "bolus_volume_ml": "imaging_data.bolus_volume",
        "contrast_agent": "imaging_data.contrast_agent", "manufacturer": "imaging_data.scanner_manufacturer"})


class IngestParams(Strict):
    """Where the raw source is and how its manifests name things (so public collections load unchanged)."""

    source_dir: Path
    source_type: Literal["dicom", "nifti"] = "dicom"  # nifti: a NIfTI collection laid out as ingest.nifti says
    nifti: NiftiLayout = NiftiLayout()
    dicom_subdir: str
    clinical_file: str
    boxes_file: str
    patient_id_tag: str
    box_index_base: Literal[0, 1]
    # position: box slices count along the slice normal (the interim exam's order); instance_number: in the order
    # of the files' InstanceNumber, as Duke-Breast-Cancer-MRI counts them (flipped where that order is reversed)
    box_slice_order: Literal["position", "instance_number"] = "position"
    # canonical name -> column name in the source spreadsheet
    clinical_columns: dict[str, str]
    box_columns: dict[str, str]
    # A spreadsheet whose header spans several rows (a category row, the names, a coding row): how many rows the
    # header holds and which of them (0-based) holds the column names mapped above.
    clinical_header_rows: int = Field(1, ge=1)
    clinical_names_row: int = Field(0, ge=0)
    # canonical column -> {coded value in the source: value ingest reads}, e.g. er: {"0": negative, "1": positive}
    value_maps: dict[str, dict[str, str]] = {}
    positive_values: list[str]  # spellings of a positive receptor / node status
    age_range: tuple[float, float]
    diameter_range_mm: tuple[float, float]
    out_dir: Path
    reports_dir: Path
    workers: int = Field(ge=1)
    series: SeriesRules = SeriesRules()  # which series of an exam are its DCE phases

    @model_validator(mode="after")
    def _all_columns_mapped(self) -> IngestParams:
        for name, fields, mapping in (("clinical_columns", CLINICAL_FIELDS, self.clinical_columns),
                                      ("box_columns", BOX_FIELDS, self.box_columns)):
            missing = set(fields) - set(mapping)
            extra = set(mapping) - set(fields)
            if missing or extra:
                raise ValueError(f"{name}: missing {sorted(missing)}, unknown {sorted(extra)}")
        if self.clinical_names_row >= self.clinical_header_rows:
            raise ValueError("clinical_names_row must be one of the clinical_header_rows")
        unknown = set(self.value_maps) - set(CLINICAL_FIELDS) - {"patient_id"}
        if unknown:
            raise ValueError(f"value_maps: {sorted(unknown)} are not clinical columns")
        return self


class InternalSplit(Strict):
    institutions: list[str]
    train: str
    validation: str
    validation_size: int = Field(ge=1)


class CohortsParams(Strict):
    """D1/D2: a stratified split of institution 1; external cohorts by institution."""

    split_seed: int
    internal: InternalSplit
    external: dict[str, list[str]]

    @model_validator(mode="after")
    def _institutions_once(self) -> CohortsParams:
        seen = list(self.internal.institutions) + [i for v in self.external.values() for i in v]
        if len(seen) != len(set(seen)):
            raise ValueError("an institution is assigned to two cohorts")
        return self


class PreprocessParams(PreprocessConfig):
    """The chain's settings (one schema: ``PreprocessConfig``) plus where the stage reads and writes."""

    interim_dir: Path
    out_dir: Path
    workers: int = Field(ge=1)

    def chain_config(self) -> PreprocessConfig:
        return PreprocessConfig(**self.model_dump(include=set(PreprocessConfig.model_fields)))


#: A model input: a phase (pre, postN) or a derived subtraction subN = postN - pre.
PhaseName = Annotated[str, StringConstraints(pattern=r"^(pre|post[1-9]|sub[1-9])$")]


class TrainParams(Strict):
    """Training of the multi-input CNN (reference study: section 4.4, Supplementary Table 4)."""

    processed_dir: Path
    model_dir: Path
    best_params_file: Path  # written by `tune`; its values override these when the file exists
    train_cohorts: list[str]
    validation_cohorts: list[str]
    phases: list[PhaseName] = Field(min_length=1, max_length=4)
    filters: list[int] = Field(min_length=1)
    padding: Literal["valid", "same"]
    normalization: Literal["none", "batch"]  # batch: convolution -> batch norm -> activation
    head: Literal["flatten", "global_average"]  # flatten (paper) or global average pooling of each branch
    dense_units: int = Field(ge=1)
    dropout: list[float]  # one rate per dropout layer (after every two blocks)
    dense_dropout: float = Field(ge=0, lt=1)
    activation: Literal["relu", "elu", "selu", "tanh", "sigmoid", "leaky_relu"]
    initializer: Literal["glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "random_normal",
                         "random_uniform"]
    optimizer: Literal["sgd", "rmsprop", "adagrad", "adadelta", "adam"]
    learning_rate: float = Field(gt=0)
    momentum: float = Field(ge=0, lt=1)
    decay: float = Field(ge=0)  # learning-rate decay per epoch (inverse time, as Keras 2's `decay`)
    batch_size: int = Field(ge=1)
    epochs: int = Field(ge=1)
    # cv: one model per patient-level fold of the training cohorts, the epoch of the best mean out-of-fold AUC,
    # the fold models' ensemble; holdout: the validation cohorts' AUC selects the epoch (the paper's D2).
    selection: Literal["cv", "holdout"]
    cv_folds: int = Field(ge=2)
    min_epoch: int = Field(ge=0)  # epochs before this one are never selected (a lucky epoch 0 is noise)
    # the returned weights: the mean of every epoch's weights from min_epoch on (stochastic weight averaging over
    # the plateau, batch-norm statistics included) instead of the weights of the best held-out epoch
    average_weights: bool = False
    augmentation_strength: float = Field(ge=0)
    max_stacks_per_patient: int | None = Field(default=None, ge=1)  # spread over the VOI; None = all
    # a patient's probability: the mean over the middle fraction of its stacks (1 = every stack, the study's)
    central_stack_fraction: float = Field(default=1.0, gt=0, le=1)
    seed: int
    deterministic: bool
    mixed_precision: bool


class TuneParams(Strict):
    """Optuna search of phases, architecture and Supplementary Table 4 hyperparameters."""

    study_name: str
    storage: str  # sqlite:///models/tune/study.db by default; a postgresql:// URL shares the study
    out_dir: Path  # best.yaml and figures
    n_trials: int = Field(ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    sampler_seed: int
    objective: Literal["holdout", "cv"]  # validation on D2 as the paper, or patient-level CV in institution 1
    cv_folds: int = Field(ge=2)
    epochs: int = Field(ge=1)
    max_stacks_per_patient: int | None = Field(default=None, ge=1)
    pruning: bool
    pruner_startup_trials: int = Field(ge=0)
    pruner_warmup_epochs: int = Field(ge=0)
    heartbeat_s: int = Field(ge=1)  # a worker silent this long has its running trial marked failed
    min_improvement_se: float = Field(ge=0)  # a trial replaces the train section only by more than this many SE
    # Search space (Supplementary Table 4 values, plus architecture and augmentation).
    phase_sets: list[list[PhaseName]]
    blocks: list[int]
    base_filters: list[int]
    dense_units: list[int]
    learning_rate: tuple[float, float]  # log-uniform bounds
    batch_size: list[int]
    momentum: list[float]
    initializer: list[str]
    optimizer: list[str]
    decay: list[float]
    activation: list[str]
    dropout: list[float]
    augmentation_strength: tuple[float, float]


class TrackingParams(Strict):
    """One MLflow store for every stage: SQLite + a local artifact folder by default, or a server URL."""

    uri: str
    experiment: str
    artifact_root: Path


class EvaluateParams(Strict):
    processed_dir: Path
    interim_dir: Path
    model_dir: Path  # training outputs of the registered version (training.json, out_of_fold.csv)
    registered_file: Path  # the version train registered: what is scored is what is served
    cohorts: list[str]
    n_bootstrap: int = Field(ge=100)
    seed: int
    threshold: float = Field(gt=0, lt=1)
    metrics_file: Path  # every statistic
    summary_file: Path  # AUCs with CIs per cohort and model: what `dvc metrics show` prints
    plots_dir: Path
    figures_dir: Path
    predictions_file: Path
    gradcam_per_cohort: int = Field(ge=0)
    baselines_dir: Path | None = None  # clinical and PK predictions to compare with; None = CNN only
    # CNN + clinical fitted on the training cohort's out-of-fold CNN scores (needs selection: cv), or on the
    # validation cohort's CNN probabilities (the study's D2 fit)
    cnn_clinical_fit: Literal["out_of_fold", "validation"] = "out_of_fold"
    # Synthetic data only: the simulator's hidden truth, for an oracle column next to the models.
    truth_file: Path | None = None


class PKParams(Strict):
    """Semi-quantitative PK features (Supplementary Table 5) of the tumour mask inside the box."""

    interim_dir: Path
    out_dir: Path  # pk.parquet and skipped.csv
    threshold_percent: float = Field(gt=0)  # early percent enhancement that marks a tumour voxel
    workers: int = Field(ge=1)


class BaselinesParams(Strict):
    """Clinical and PK comparison models (sections 2.2, 4.5; Supplementary Table 6)."""

    interim_dir: Path
    pk_dir: Path
    out_dir: Path
    metrics_file: Path
    train_cohort: str
    validation_cohort: str
    alpha: float = Field(gt=0, lt=1)
    n_features: tuple[int, int]  # smallest and largest number of top-ranked PK features
    cv_folds: int = Field(ge=2)
    n_trees: int = Field(ge=1)
    n_bootstrap: int = Field(ge=100)
    seed: int


class ReportParams(Strict):
    interim_dir: Path
    evaluate_metrics: Path
    predictions_file: Path
    trials_file: Path
    figures_dir: Path
    pk_search_file: Path | None = None
    baselines_file: Path | None = None
    truth_file: Path | None = None
    cohorts: list[str]
    out_dir: Path


class RegistryParams(Strict):
    """MLflow Model Registry: the registered model every trained version joins."""

    model_name: str = "her2pcr-dce"
    challenger_alias: str = "challenger"
    champion_alias: str = "champion"
    registered_file: Path = Path("models/registered.json")  # written by train: name + version


class ServeParams(Strict):
    """Request limits and decision threshold the served model carries (frozen into each version)."""

    threshold: float = Field(gt=0, lt=1)
    max_payload_mb: float = Field(gt=0)       # base64 text of one request field
    max_uncompressed_mb: float = Field(gt=0)  # all members of an exam zip together
    max_compression_ratio: float = Field(gt=1)  # uncompressed / compressed size of the zip
    max_files: int = Field(ge=1)              # members of an exam zip
    # N4 of an exam request estimates the bias field on the volume shrunk by this factor instead of the training
    # chain's preprocess.n4_shrink_factor (null: the training chain exactly). Faster, and within a stated
    # tolerance of the exact answer (README, "Exam latency"); evaluate and validate score stored inputs.
    exam_n4_shrink_factor: int | None = Field(default=None, ge=1)


class PacsParams(Strict):
    """The PACS exams come from and results go back to, over DICOMweb; `her2pcr pacs` runs a local Orthanc."""

    url: str                # DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web
    timeout_s: float = Field(gt=0)
    orthanc: str            # Orthanc executable, for `her2pcr pacs`
    dicomweb_plugin: Path   # Orthanc's DICOMweb plugin
    storage_dir: Path       # where the local Orthanc keeps its database and files
    http_port: int = Field(ge=1, le=65535)
    pull_dir: Path          # raw source folder `her2pcr pull` fills (set ingest.source_dir to read it)


class GateParams(Strict):
    """Thresholds a version must meet on every external cohort before it can become champion."""

    min_patients: int = Field(ge=2)
    min_auc: float = Field(ge=0, le=1)
    min_auc_ci_low: float = Field(ge=0, le=1)       # lower DeLong 95 % bound
    max_significant_correlations: int = Field(ge=0)  # acquisition parameters with BH-adjusted p < alpha
    max_outside_fraction: float = Field(ge=0, le=1)  # patients outside the model-input expectations (protocol: warn)
    # equalized-odds disparity (TPR range + FPR range over a variable's subgroups, 0-2), on subgroups of at least
    # min_subgroup_n patients of each class; the others are listed as not judged
    max_equalized_odds_disparity: float = Field(ge=0, le=2)
    min_subgroup_n: int = Field(ge=1)


class SubgroupParams(Strict):
    """The subgroup variables validation compares: built-in ``age`` (banded at ``age_bands``),
    ``hormone_receptor``, ``field_strength``, ``site``, ``vendor``, or any column of the interim clinical or
    acquisition table."""

    variables: list[str] = Field(min_length=1)
    age_bands: list[float] = Field(min_length=1)  # inner edges in years: [40, 50] -> <40, 40-49, >=50
    n_bootstrap: int = Field(ge=100)              # resamples of the disparity's CI


class ValidateParams(Strict):
    """External validation of the registered version on one cohort (DVC foreach over cohorts.external)."""

    processed_dir: Path
    interim_dir: Path
    model_dir: Path
    train_cohort: str
    metrics_dir: Path   # <cohort>.json: every result
    gate_dir: Path      # <cohort>.json: the gate decision and the AUC, what `dvc metrics show` prints
    reports_dir: Path   # <cohort>/ : Data Docs, report.html, predictions.csv
    n_bootstrap: int = Field(ge=100)
    seed: int
    threshold: float = Field(gt=0, lt=1)
    alpha: float = Field(gt=0, lt=1)     # Benjamini-Hochberg false discovery rate
    range_margin: float = Field(ge=0)    # training range widened by this fraction of its width
    subgroups: SubgroupParams
    gate: GateParams


class ComputeParams(Strict):
    """Where per-exam work runs (her2pcr.compute); outputs never depend on it, so no stage lists it in dvc.yaml."""

    scheduler: str | None = None          # tcp://HOST:PORT of an existing Dask cluster; None: a local one
    memory_limit: str = "auto"            # per local worker (Dask's syntax: "4GiB", "auto" = RAM / workers)
    dashboard: bool = False               # serve the local cluster's dashboard (its address is logged)
    connect_timeout_s: float = Field(default=30, gt=0)


LOCAL_COMPUTE = ComputeParams()  # a local cluster with Dask's defaults: the stages' default


class Params(Strict):
    """The whole params.yaml; each stage reads only its own sections."""

    simulate: SimulateParams
    ingest: IngestParams
    cohorts: CohortsParams
    preprocess: PreprocessParams
    train: TrainParams
    tracking: TrackingParams
    tune: TuneParams
    pk: PKParams
    baselines: BaselinesParams
    report: ReportParams
    evaluate: EvaluateParams
    registry: RegistryParams
    serve: ServeParams
    pacs: PacsParams
    validation: ValidateParams
    compute: ComputeParams = ComputeParams()

    @model_validator(mode="after")
    def _training_reads_the_internal_cohorts(self) -> Params:
        # tune, train and register depend on the internal cohorts' index files (dvc.yaml): nothing else
        internal = {self.cohorts.internal.train, self.cohorts.internal.validation}
        other = sorted(set(self.train.train_cohorts + self.train.validation_cohorts) - internal)
        if other:
            raise ValueError(f"train.train_cohorts / validation_cohorts name {other}, which are not the internal "
                             f"cohorts {sorted(internal)} (cohorts.internal)")
        return self


SectionT = TypeVar("SectionT", bound=Strict)


def read_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def load_params(path: Path = PARAMS_FILE) -> Params:
    """Validate the whole file (so a typo in any section fails every stage loudly)."""
    return Params.model_validate(read_yaml(path))

"""The `her2pcr` command: one sub-command per pipeline stage, each a thin wrapper."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import typer

from her2pcr import config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
log = logging.getLogger("her2pcr")

SCHEDULER_HELP = "tcp://HOST:PORT of an existing Dask cluster for the per-exam work (overrides compute.scheduler)."


def compute_of(params: config.Params, scheduler: str | None) -> config.ComputeParams:
    """params.compute, with the command line's --scheduler if given."""
    return params.compute.model_copy(update={"scheduler": scheduler}) if scheduler else params.compute


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    """her2pcr: pCR prediction from pre-treatment breast DCE-MRI."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO lines are internal noise


@app.command()
def profile(
    name: str = typer.Argument(..., help="Profile name: default, or a file stem in conf/profiles/."),
    params_file: Path = typer.Option(config.PARAMS_FILE, help="params.yaml to rewrite in place."),
) -> None:
    """Merge a profile's overrides into params.yaml (`git checkout params.yaml` restores the default)."""
    from her2pcr.profiles import apply_profile

    apply_profile(name, params_file)
    typer.echo(f"params.yaml now uses profile {name!r}")


@app.command()
def simulate(
    params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    scheduler: str = typer.Option(None, help=SCHEDULER_HELP),
) -> None:
    """Write the synthetic multi-site DICOM cohorts and their manifests to simulate.out_dir."""
    from her2pcr.synth.cohort import simulate_cohorts

    everything = config.load_params(params_file)
    params = everything.simulate
    start = time.perf_counter()
    counts = simulate_cohorts(params, params.out_dir, progress=progress, compute=compute_of(everything, scheduler))
    elapsed = time.perf_counter() - start
    typer.echo(
        f"simulate: {counts['exams']} exams ({counts['rendered']} rendered, {counts['reused']} reused; "
        f"{counts['files']} DICOM files) for {counts['patients']} patients, {counts['faults']} injected faults, "
        f"in {elapsed:.1f} s -> {params.out_dir}"
    )


@app.command()
def ingest(
    params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    scheduler: str = typer.Option(None, help=SCHEDULER_HELP),
) -> None:
    """Discover, order, de-identify and validate exams; write interim exams, tables and the quarantine."""
    from her2pcr.ingest.stage import ingest as run_ingest

    params = config.load_params(params_file)
    report = run_ingest(params.ingest, params.cohorts, progress=progress, compute=compute_of(params, scheduler))
    typer.echo(report.summary())


@app.command()
def preprocess(
    params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    scheduler: str = typer.Option(None, help=SCHEDULER_HELP),
) -> None:
    """N4 bias correction, VOI crop/pad and slice stacks per exam (recomputes only changed exams)."""
    from her2pcr.preprocess.stage import preprocess as run_preprocess

    everything = config.load_params(params_file)
    params = everything.preprocess
    start = time.perf_counter()
    counts = run_preprocess(params, progress=progress, compute=compute_of(everything, scheduler))
    typer.echo(f"preprocess: {counts['exams']} exams ({counts['computed']} computed, {counts['reused']} reused) "
               f"in {time.perf_counter() - start:.1f} s -> {params.out_dir}")


@app.command("pk-features")
def pk_features(
    params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    scheduler: str = typer.Option(None, help=SCHEDULER_HELP),
) -> None:
    """The 48 semi-quantitative PK features of each exam with timing (others listed with the reason)."""
    from her2pcr.features.stage import pk_features_stage

    everything = config.load_params(params_file)
    params = everything.pk
    counts = pk_features_stage(params.interim_dir, params.out_dir, params.threshold_percent, params.workers,
                               compute_of(everything, scheduler), progress)
    typer.echo(f"pk_features: {counts['features']} exams with 48 features, {counts['skipped']} skipped "
               f"(reasons in {counts['skipped_file']})")


@app.command()
def baselines(params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file.")) -> None:
    """Clinical models (univariate tests in D1, logistic regressions) and the PK model search."""
    from her2pcr.baselines.stage import run_baselines

    metrics = run_baselines(config.load_params(params_file).baselines)
    chosen = metrics["pk_chosen"]
    typer.echo(f"baselines: significant clinical variables {metrics['significant_variables']}; PK model "
               f"{chosen['classifier']} on {chosen['n_features']} features by {chosen['ranking']}")


@app.command()
def train(params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file.")) -> None:
    """Train the multi-input CNN (hyperparameters from params.yaml, or the tune result file when present)."""
    from her2pcr.training.stage import train as run_train

    params = config.load_params(params_file)
    start = time.perf_counter()
    summary = run_train(params.train, params.tracking)
    typer.echo(f"train: {summary['epochs']} epochs on {summary['train_stacks']} stacks in "
               f"{time.perf_counter() - start:.0f} s; best validation patient AUC "
               f"{summary['best_val_patient_auc']:.3f} ({summary['weights']}); MLflow run {summary['run_id']}"
               f" -> {params.train.model_dir}")


@app.command()
def register(params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file.")) -> None:
    """Register the trained model as a new version of the served model (pyfunc), alias challenger."""
    from her2pcr.registry.register import register_trained

    params = config.load_params(params_file)
    train = params.train
    version = register_trained(train.model_dir, train.processed_dir, train.train_cohorts + train.validation_cohorts,
                               params.registry, params.serve, params.tracking.uri)
    typer.echo(f"register: {version.name} version {version.version} ({version.model_uri}) from run "
               f"{version.run_id} is @{params.registry.challenger_alias}")


@app.command()
def tune(
    params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file."),
    storage: str = typer.Option(None, help="Override tune.storage, e.g. a postgresql:// URL shared by workers."),
    n_trials: int = typer.Option(None, help="Trials for this worker (default tune.n_trials)."),
    worker: int = typer.Option(0, help="Worker index: offsets the sampler seed so workers explore differently."),
    tracking_uri: str = typer.Option(None, help="Override tracking.uri, e.g. a shared `mlflow server`."),
) -> None:
    """Optuna search of phases, architecture and hyperparameters; resumes the study where it stopped."""
    from her2pcr.tuning.study import tune_study

    params = config.load_params(params_file)
    tune_params = params.tune.model_copy(update={"storage": storage}) if storage else params.tune
    tracking = params.tracking.model_copy(update={"uri": tracking_uri}) if tracking_uri else params.tracking
    summary = tune_study(params.train, tune_params, tracking, n_trials=n_trials, worker=worker)
    best = (f"best trial {summary['best_trial']} AUC {summary['best_value']:.3f}, selected trial "
            f"{summary['selected_trial']} ({summary['selection']['rule']})" if "best_trial" in summary
            else "no complete trial")
    typer.echo(f"tune: {summary['trials']} trials in the study "
               f"({', '.join(f'{k} {v}' for k, v in summary.items() if k in ('complete', 'pruned', 'fail'))}); "
               f"{best} -> {tune_params.out_dir / 'best.yaml'}")


@app.command()
def evaluate(params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file.")) -> None:
    """Patient-level AUC (DeLong and bootstrap CIs), paired tests, subsets, ROC and Grad-CAM figures."""
    from her2pcr.evaluation.stage import evaluate as run_evaluate

    params = config.load_params(params_file)
    metrics = run_evaluate(params.evaluate, params.tracking)
    parts = []
    for cohort, stats in metrics["cohorts"].items():
        if "models" in stats:
            cnn = stats["models"]["cnn"]
            parts.append(f"{cohort} AUC {cnn['auc']:.3f} [{cnn['delong_ci_low']:.3f}-{cnn['delong_ci_high']:.3f}]"
                         f" n={stats['n']}")
    typer.echo("evaluate: " + "; ".join(parts))


@app.command()
def promote(
    version: str = typer.Option(None, help="Version to promote (default: the challenger alias)."),
    force: bool = typer.Option(False, "--force", help="Promote although a gate failed or is missing."),
    reason: str = typer.Option(None, help="Why the gate is overridden (required with --force; kept as a tag)."),
    params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file."),
) -> None:
    """Move the champion alias to a version whose validation gate passed on every external cohort."""
    from mlflow import MlflowClient

    from her2pcr.registry.promote import PromotionRefused
    from her2pcr.registry.promote import promote as run_promote

    params = config.load_params(params_file)
    client = MlflowClient(params.tracking.uri)
    try:
        promoted, status = run_promote(client, params.registry, list(params.cohorts.external), version, force, reason)
    except (PromotionRefused, ValueError) as error:
        typer.echo(f"promote: {error}", err=True)
        raise typer.Exit(1) from None
    note = " (gate overridden: " + "; ".join(status.failures()) + ")" if not status.passed else ""
    typer.echo(f"promote: {params.registry.model_name} version {promoted} is @{params.registry.champion_alias}{note}")


@app.command()
def registry(params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file.")) -> None:
    """List the registered versions with their aliases and validation-gate status."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from her2pcr.registry.promote import registry_table

    params = config.load_params(params_file)
    try:
        table = registry_table(MlflowClient(params.tracking.uri), params.registry, list(params.cohorts.external))
    except MlflowException as error:
        typer.echo(f"registry: {error.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(table.to_string(index=False))


@app.command()
def serve(
    model_uri: str = typer.Option(..., "--model-uri", "-m", help="Version, e.g. models:/her2pcr-dce@champion."),
    host: str = typer.Option("127.0.0.1", "--host", "-h", help="Address to listen on."),
    port: int = typer.Option(5000, "--port", "-p", help="Port to listen on."),
) -> None:
    """Serve a registered version: MLflow's scoring server behind a guard (413 on oversized bodies before they are
    read; error answers name the field and the reason, never echo the request)."""
    from her2pcr.serving.app import serve as run_server

    run_server(model_uri, host, port)


@app.command()
def predict(
    url: str = typer.Option("http://127.0.0.1:5000", help="Base URL of `mlflow models serve`."),
    exam: Path = typer.Option(None, help="Folder of one exam's DICOM files (every phase)."),
    box: tuple[int, int, int, int, int, int] | None = typer.Option(
        None, help="Tumour box: row_start row_end column_start column_end slice_start slice_end (inclusive)."),
    box_base: int = typer.Option(1, help="Index base of --box: 1 as in boxes.csv, or 0."),
    tensors: Path = typer.Option(None, exists=True, dir_okay=False,
                                 help="Instead of --exam (no --box then): an .npz of preprocessed phase tensors."),
    pacs: str = typer.Option(None, help="Instead of --exam: the DICOMweb root of a PACS (with --study and --box); "
                                        "the answer goes back to the study as a DICOM SR."),
    study: str = typer.Option(None, help="StudyInstanceUID of the exam in --pacs."),
    store: bool = typer.Option(True, help="With --pacs: store the SR into the study (STOW-RS)."),
    sr_file: Path = typer.Option(None, help="With --pacs: also write the SR to this file."),
    timeout_s: float = typer.Option(300, help="Request timeout."),
    params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file (registry and tracking, --pacs)."),
) -> None:
    """Ask a served model for the pCR probability of one exam (DICOM folder or PACS study + box) or of tensors.

    An exam is sent pseudonymised: no patient identity and new UIDs, mapped back here.
    """
    import json

    import numpy as np

    from her2pcr.serving.client import ServerError, exam_record, restore_sr_content, tensors_record
    from her2pcr.serving.client import predict as post
    from her2pcr.serving.deid import Pseudonymiser

    if sum(v is not None for v in (exam, tensors, pacs)) != 1:
        raise typer.BadParameter("give one of --exam, --pacs (each with --box) or --tensors")
    if (exam is not None or pacs is not None) and box is None:
        raise typer.BadParameter("an exam needs --box with six integers")
    try:
        if pacs is not None:
            answer = _predict_pacs_study(pacs, study, tuple(v - box_base for v in box), url, store, sr_file,
                                         timeout_s, params_file)
        else:
            pseudonymiser = Pseudonymiser()
            if exam is not None:
                record = exam_record(exam, box, index_base=box_base, pseudonymiser=pseudonymiser)
            else:
                with np.load(tensors, allow_pickle=False) as archive:
                    # only the arrays of numbers: a data/processed file also holds its cache key
                    record = tensors_record({name: archive[name] for name in archive.files
                                             if np.issubdtype(archive[name].dtype, np.number)})
            answer = post(url, [record], timeout_s=timeout_s)[0]
            answer["sr_content"] = restore_sr_content(answer, pseudonymiser)
    except (ServerError, ValueError) as error:
        typer.echo(f"predict: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(answer, indent=1))


def _predict_pacs_study(pacs: str, study: str | None, box: tuple[int, ...], url: str, store: bool,
                        sr_file: Path | None, timeout_s: float, params_file: Path) -> dict:
    from her2pcr.pacs.predict import predict_study

    if study is None:
        raise typer.BadParameter("--pacs needs --study (a StudyInstanceUID)")
    params = config.load_params(params_file)
    result = predict_study(pacs, study, box, url, params.tracking.uri, params.registry.model_name, store,
                           timeout_s)
    if sr_file is not None:
        result.sr.save_as(sr_file, enforce_file_format=True)
    where = f"stored into study {study}" if store else "not stored (--no-store)"
    typer.echo(f"predict: SR {result.sr.SOPInstanceUID} {where}", err=True)
    return {k: v for k, v in result.answer.items() if k != "sr_content"}


@app.command()
def pacs(params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file (pacs section).")) -> None:
    """Run a local Orthanc PACS with DICOMweb on 127.0.0.1 (pacs.http_port) until interrupted."""
    import contextlib
    import signal
    import sys

    from her2pcr.pacs.orthanc import local_orthanc

    settings = config.load_params(params_file).pacs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leaving the with block stops Orthanc
    with local_orthanc(settings.storage_dir, settings.http_port, settings.dicomweb_plugin, settings.orthanc) as url, \
            contextlib.suppress(KeyboardInterrupt):
        typer.echo(f"pacs: Orthanc with DICOMweb at {url} (storage {settings.storage_dir}); Ctrl-C stops it")
        while True:
            time.sleep(3600)


@app.command()
def push(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder of DICOM files (searched deeply)."),
    pacs: str = typer.Option(None, help="DICOMweb root (default: pacs.url)."),
    params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file (pacs section)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Store every DICOM file of a folder into the PACS (STOW-RS)."""
    from her2pcr.pacs.dicomweb import client, store_folder

    settings = config.load_params(params_file).pacs
    result = store_folder(client(pacs or settings.url, settings.timeout_s), folder, progress=progress)
    for path, reason in result.problems:
        typer.echo(f"push: {path}: {reason}", err=True)
    typer.echo(f"push: {result.stored} instances stored, {len(result.problems)} files refused")
    if result.problems:
        raise typer.Exit(1)


@app.command()
def pull(
    manifest: Path = typer.Option(None, exists=True, dir_okay=False,
                                  help="CSV with a StudyInstanceUID or AccessionNumber column."),
    accession: list[str] = typer.Option(None, help="An accession number to pull (repeatable)."),
    study_date: str = typer.Option(None, help="Every MR study in a DICOM date range, e.g. 20150101-20151231."),
    pacs: str = typer.Option(None, help="DICOMweb root (default: pacs.url)."),
    out: Path = typer.Option(None, help="Raw source folder (default: pacs.pull_dir)."),
    params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file (pacs and ingest sections)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Pull studies from the PACS (QIDO-RS, WADO-RS) into a raw source folder that ingest reads as it is.

    Resumable: studies already pulled are kept, an interrupted study resumes at its first unfinished series.
    Every study is reported in <out>/pull-report.csv; the exit status is 1 when any failed or was not found.
    """
    from her2pcr.pacs.dicomweb import REPORT_FILE, StudyQuery, client, read_manifest, write_report
    from her2pcr.pacs.dicomweb import pull as pull_studies

    params = config.load_params(params_file)
    listed = read_manifest(manifest) if manifest else StudyQuery()
    query = StudyQuery(listed.study_uids, listed.accession_numbers + tuple(accession or ()), study_date)
    root = out or params.pacs.pull_dir
    try:
        outcomes = pull_studies(client(pacs or params.pacs.url, params.pacs.timeout_s), query,
                                root / params.ingest.dicom_subdir, progress)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    write_report(outcomes, root / REPORT_FILE)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("pulled", "already pulled", "failed", "not found")}
    for o in outcomes:
        if o.status in ("failed", "not found"):
            typer.echo(f"pull: {o.query}: {o.status}: {o.reason}", err=True)
    typer.echo("pull: " + ", ".join(f"{n} {s}" for s, n in counts.items())
               + f" ({sum(o.instances for o in outcomes)} instances) -> {root / REPORT_FILE}")
    if counts["failed"] or counts["not found"]:
        raise typer.Exit(1)


@app.command()
def report(params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file.")) -> None:
    """Regenerate the study's tables and figures from this run as reports/report.md and report.html."""
    from her2pcr.report.stage import write_report

    params = config.load_params(params_file)
    md_path, html_path = write_report(params.report, params.validation, params.tracking)
    typer.echo(f"report: {md_path} and {html_path}")


@app.command()
def validate(
    cohort: str = typer.Option(..., help="External cohort: a key of cohorts.external (e.g. D3)."),
    params_file: Path = typer.Option(config.PARAMS_FILE, help="Parameters file."),
) -> None:
    """External validation of the registered version on one cohort: data quality, metrics, correlations, gate.

    A failing gate is a result, not an error: it is tagged on the version (exit 0) and promotion reads it.
    """
    from her2pcr.validation.stage import validate as run_validate

    params = config.load_params(params_file)
    results = run_validate(cohort, params.validation, params.registry, params.tracking, params.cohorts)
    metrics = results["metrics"]
    auc = (f"AUC {metrics['auc']:.3f} [{metrics['delong_ci_low']:.3f}-{metrics['delong_ci_high']:.3f}]"
           if "auc" in metrics else "AUC n/a")
    model = results["model"]
    typer.echo(f"validate {cohort}: {auc} n={results['n']}; {results['data_quality']['n_outside']} patients outside "
               f"expectations; gate {results['gate']['decision']} ({model['name']} version {model['version']})")


if __name__ == "__main__":
    app()

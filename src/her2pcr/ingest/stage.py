"""The ingest stage: discover DICOM, load and de-identify exams, validate tables, quarantine what fails."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from her2pcr.compute import map_exams, replace_atomically
from her2pcr.config import LOCAL_COMPUTE, CohortsParams, ComputeParams, IngestParams
from her2pcr.dicom.discover import FileProblem, discover
from her2pcr.dicom.exam import ExamError, LoadedExam, load_exam
from her2pcr.dicom.series import SkippedSeries, select_dce_series
from her2pcr.ingest.cohorts import assign_cohorts
from her2pcr.ingest.manifests import box_in_position_order, box_problem, read_manifests
from her2pcr.ingest.nifti import discover_nifti, info_boxes, info_path, load_nifti_exam
from her2pcr.interim import write_cohort_tables
from her2pcr.quality.expectations import (
    acquisition_expectations,
    box_expectations,
    clinical_expectations,
    cohort_expectations,
    run_suites,
)

log = logging.getLogger(__name__)
STAGING_DIR = ".staging"
QUARANTINE_COLUMNS = ["patient_id", "file", "action", "reason"]


@dataclass
class IngestReport:
    discovered: set[str] = field(default_factory=set)
    ingested: set[str] = field(default_factory=set)
    quarantine: list[dict] = field(default_factory=list)
    series_discovered: int = 0  # series of the discovered image files
    series_used: int = 0  # series that became phases of an ingested exam

    def exclude(self, pid: str, reason: str, file: str = "") -> None:
        self.quarantine.append({"patient_id": pid, "file": file, "action": "excluded", "reason": reason})

    def note(self, pid: str | None, action: str, reason: str, file: str = "") -> None:
        self.quarantine.append({"patient_id": pid or "", "file": file, "action": action, "reason": reason})

    @property
    def excluded(self) -> set[str]:
        return {q["patient_id"] for q in self.quarantine if q["action"] == "excluded"}

    def summary(self) -> str:
        files = sum(q["action"] == "file_skipped" for q in self.quarantine)
        return (f"ingest: discovered {len(self.discovered)} patients = {len(self.ingested)} ingested + "
                f"{len(self.excluded)} quarantined; {files} files skipped; {self.series_discovered} series = "
                f"{self.series_used} used + {self.series_skipped} skipped by series selection + "
                f"{self.series_discovered - self.series_used - self.series_skipped} in quarantined exams")

    @property
    def series_skipped(self) -> int:
        return sum(q["action"] == "series_skipped" for q in self.quarantine)


def save_exam(exam: LoadedExam, path: Path) -> None:
    """Interim exam: no identifying value is stored, only the pseudonymous id in the file name."""
    times = np.array([np.nan if t is None else t for t in exam.phase_times_s], dtype=np.float64)
    np.savez_compressed(
        path, image=exam.image, spacing_mm=np.asarray(exam.spacing_mm, np.float64),
        origin_mm=np.asarray(exam.origin_mm, np.float64), direction=np.asarray(exam.direction, np.float64),
        phase_times_s=times, phase_names=np.array(exam.phase_names),
        order_rule=np.array(exam.order_rule), resampled_phases=np.asarray(exam.resampled_phases, np.int64),
    )


@dataclass(frozen=True)
class StagedExam:
    """What the stage needs of an exam that a worker loaded and wrote to ``path``: the pixels stay on disk, so the
    stage's own process holds no exam however many there are (a clinical-size exam is ~1 GiB)."""

    path: Path
    shape: tuple[int, ...]  # (phase, slice, row, column)
    acquisition: dict
    warnings: list[str]
    instance_order_reversed: bool


def _load_and_stage(args) -> tuple[str, StagedExam | None, str | None, list[SkippedSeries], int]:
    """``load(task)`` on a worker, the exam written whole to ``staging/<pid>.npz`` (a retried task rewrites it)."""
    load, task, staging = args
    pid, exam, error, skipped, n_used = load(task)
    if exam is None:
        return pid, None, error, skipped, n_used
    path = staging / f"{pid}.npz"
    replace_atomically(path, lambda tmp: save_exam(exam, tmp))
    return pid, StagedExam(path, exam.image.shape, exam.acquisition, exam.warnings, exam.instance_order_reversed), \
        None, skipped, n_used


def _load(args) -> tuple[str, LoadedExam | None, str | None, list[SkippedSeries], int]:
    """One patient's exam from its files: the DCE series chosen, then loaded; the series left out and how many
    series were used."""
    pid, headers, rules = args
    skipped: list[SkippedSeries] = []
    try:
        selection = select_dce_series(headers, rules)
        skipped = selection.skipped
        return pid, load_exam(selection.headers, pid), None, skipped, len(selection.used)
    except ExamError as error:
        return pid, None, str(error), skipped, 0


def _load_nifti(args) -> tuple[str, LoadedExam | None, str | None, list[SkippedSeries], int]:
    """One patient's exam from its NIfTI phase files and info JSON (each phase file counts as a series)."""
    pid, phase_files, info_file, layout = args
    try:
        return pid, load_nifti_exam(pid, phase_files, info_file, layout), None, [], len(phase_files)
    except ExamError as error:
        return pid, None, str(error), [], 0


@dataclass
class Source:
    """What ingest found in the raw source, and how to load one patient's exam from it."""

    files_by_patient: dict[str, list]
    problems: list[FileProblem]
    n_series: int
    load: Callable  # picklable: runs on a Dask worker on task(pid)
    task: Callable[[str], tuple]
    boxes: pd.DataFrame | None = None  # boxes the source carries itself (else the box manifest)


def find_source(params: IngestParams, progress: bool) -> Source:
    """The DICOM tree (series selection, then the phase reader) or the NIfTI collection of ``params``."""
    if params.source_type == "nifti":
        found = discover_nifti(params.source_dir, params.nifti)
        boxes = (info_boxes(params.source_dir, params.nifti, sorted(found.files_by_patient))
                 if params.nifti.box_key else None)
        return Source(found.files_by_patient, found.problems,
                      sum(len(files) for files in found.files_by_patient.values()), _load_nifti,
                      lambda pid: (pid, found.files_by_patient[pid], info_path(params.source_dir, params.nifti, pid),
                                   params.nifti), boxes)
    discovery = discover(params.source_dir / params.dicom_subdir, patient_tag=params.patient_id_tag,
                         progress=progress)
    return Source(discovery.files_by_patient, discovery.problems,
                  len({h.series_instance_uid for files in discovery.files_by_patient.values() for h in files}),
                  _load, lambda pid: (pid, discovery.files_by_patient[pid], params.series))


def ingest(params: IngestParams, cohorts: CohortsParams, progress: bool = True,
           compute: ComputeParams = LOCAL_COMPUTE) -> IngestReport:
    report = IngestReport()
    exams_dir = params.out_dir / "exams"
    exams_dir.mkdir(parents=True, exist_ok=True)
    for stale in exams_dir.glob("*.npz"):
        stale.unlink()

    source = find_source(params, progress)
    report.series_discovered = source.n_series
    manifests = read_manifests(params, source.boxes)
    for problem in source.problems:
        report.note(problem.patient_id, "file_skipped", problem.reason, str(problem.path))
    imaged = set(source.files_by_patient)
    listed = set(manifests.clinical.index) | set(manifests.boxes.index)
    report.discovered = imaged | listed
    for pid in sorted(listed - imaged):
        report.exclude(pid, f"no {params.source_type.upper()} images found for this manifest row")
    for pid in sorted(imaged - listed):
        report.exclude(pid, "images but no clinical row and no box for this patient")
    for pid, reasons in sorted(manifests.problems.items()):
        for reason in reasons:
            report.exclude(pid, reason)

    candidates = sorted(imaged - report.excluded)
    loaded: dict[str, StagedExam] = {}
    staging = params.out_dir / STAGING_DIR  # exams wait here until the tables are validated
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    tasks = [(source.load, source.task(pid), staging) for pid in candidates]
    used: dict[str, int] = {}
    for pid, exam, error, skipped, n_used in map_exams(_load_and_stage, tasks, params.workers, compute, "ingest",
                                                       progress):
        for series in skipped:
            report.note(pid, "series_skipped", f"{series.label} ({series.n_files} files): {series.reason}",
                        series.folder)
        if error is not None:
            report.exclude(pid, error)
            continue
        if params.box_slice_order == "instance_number" and exam.instance_order_reversed:
            manifests.boxes.loc[pid] = box_in_position_order(manifests.boxes.loc[pid], exam.shape[1])
            report.note(pid, "flagged", "InstanceNumber runs against the slice normal: box slices flipped "
                                        "(ingest.box_slice_order instance_number)")
        problem = box_problem(manifests.boxes.loc[pid], exam.shape[1:])
        if problem is not None:
            report.exclude(pid, problem)
            continue
        for warning in exam.warnings:
            report.note(pid, "flagged", warning)
        loaded[pid] = exam
        used[pid] = n_used

    clinical = manifests.clinical.loc[sorted(loaded)].copy()
    clinical["cohort"] = assign_cohorts(clinical, cohorts)
    boxes = manifests.boxes.loc[clinical.index].copy()
    for pid in clinical.index:
        boxes.loc[pid, ["slices", "rows", "columns"]] = loaded[pid].shape[1:]
    acquisition = pd.DataFrame([{"patient_id": pid, **loaded[pid].acquisition} for pid in clinical.index])

    institutions = sorted({*cohorts.internal.institutions, *[i for v in cohorts.external.values() for i in v]})
    cohort_names = [cohorts.internal.train, cohorts.internal.validation, *cohorts.external]
    outcomes = run_suites({
        "clinical": (clinical.reset_index(), clinical_expectations(params, institutions)),
        "boxes": (boxes.reset_index(), box_expectations()),
        "acquisition": (acquisition, acquisition_expectations()),
        "cohorts": (clinical.reset_index()[["patient_id", "cohort"]], cohort_expectations(cohort_names)),
    }, params.reports_dir)
    for outcome in outcomes.values():
        for pid, reasons in outcome.patient_failures.items():
            for reason in reasons:
                report.exclude(pid, reason)

    keep = [pid for pid in clinical.index if pid not in report.excluded]
    for pid in keep:
        os.replace(loaded[pid].path, exams_dir / f"{pid}.npz")
    shutil.rmtree(staging)  # with the exams of excluded patients
    report.ingested = set(keep)
    report.series_used = sum(used[pid] for pid in keep)
    boxed = clinical.loc[keep].join(boxes.loc[keep])
    tables = {"clinical": boxed.reset_index(), "acquisition": acquisition[acquisition.patient_id.isin(keep)]}
    for name, table in tables.items():
        table.to_parquet(params.out_dir / f"{name}.parquet", index=False)
    write_cohort_tables(params.out_dir, tables, boxed.cohort)
    pd.DataFrame(report.quarantine, columns=QUARANTINE_COLUMNS).to_csv(params.out_dir / "quarantine.csv",
                                                                       index=False)
    return report

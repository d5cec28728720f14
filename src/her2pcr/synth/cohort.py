"""Assemble the synthetic multi-site cohorts: draw patients, render, write DICOM and manifests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from her2pcr.compute import map_exams
from her2pcr.config import LOCAL_COMPUTE, ComputeParams, SimulateParams
from her2pcr.preprocess.settings import Box, phase_names
from her2pcr.synth.anatomy import LABEL, build_anatomy
from her2pcr.synth.dicom_writer import write_exam
from her2pcr.synth.exam import ExamImages
from her2pcr.synth.identity import fake_identity, study_date
from her2pcr.synth.patients import PatientDraw, draw_case_control
from her2pcr.synth.protocols import allocate_exactly, draw_acquisition, pert
from her2pcr.synth.render import render_exam
from her2pcr.synth.sites import SiteProtocol, load_sites

BOX_INDEX_BASE = 1  # boxes.csv rows/columns/slices are 1-based and inclusive, like public collections
BOX_JITTER_MM = 3.0
CLINICAL_COLUMNS = ["patient_id", "age", "er", "pr", "stage", "lymph_node", "longest_diameter_mm",
                    "regimen", "pcr", "institution"]
BOX_COLUMNS = ["patient_id", *Box._fields]


@dataclass(frozen=True)
class ExamTask:
    """Everything one worker needs to render and write one exam (picklable)."""

    patient_id: str
    site_name: str
    site: SiteProtocol
    draw: PatientDraw
    regimen: str
    field_3t: bool
    timing_present: bool
    seed_words: tuple[int, ...]
    matrix: int
    slices: int
    noise: bool
    dicom_root: Path
    master_seed: int
    fault: str | None = None
    extra_series: tuple[str, ...] = ()  # non-DCE series written beside the dynamic ones (synth.extra_series)
    storage: str = "classic"  # classic (a file per slice) | enhanced (a multi-frame Enhanced MR file per series)


@dataclass(frozen=True)
class ExamResult:
    patient_id: str
    box: dict
    truth: dict
    files: list[Path]


def patient_id(site_name: str, k: int) -> str:
    return f"{site_name}-{k:03d}"


def site_seed(site_name: str) -> int:
    """A site's seed word, from its name (not its rank among the sites): adding or removing a site leaves every
    other site's patients exactly as they were."""
    return int.from_bytes(hashlib.sha256(site_name.encode()).digest()[:4], "big")


def plan_site(params: SimulateParams, site_name: str, site: SiteProtocol, dicom_root: Path) -> list[ExamTask]:
    """Draw a site's patients (case-control quotas) and their exact-count categorical assignments."""
    size = params.cohorts[site_name]
    site_index = site_seed(site_name)
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, site_index, 0]))
    draws = draw_case_control(rng, params.truth, site.pcr_logit_offset, size.n, size.n_pcr)
    regimens = allocate_exactly(rng, size.n, site.regimen)
    fields = allocate_exactly(rng, size.n, {"3T": site.field_3t, "1.5T": 1 - site.field_3t})
    timing = allocate_exactly(rng, size.n, {"yes": site.timing_present, "no": 1 - site.timing_present})
    return [
        ExamTask(patient_id(site_name, k + 1), site_name, site, draw, regimens[k], fields[k] == "3T",
                 timing[k] == "yes", (params.seed, site_index, k + 1), params.matrix, params.slices,
                 params.noise, dicom_root, params.seed, extra_series=tuple(params.extra_series),
                 storage=params.storage)
        for k, draw in enumerate(draws)
    ]


def box_from_labels(labels: np.ndarray, rng: np.random.Generator, spacing: tuple[float, float, float],
                    centroid: tuple[float, float, float]) -> dict:
    """A radiologist-like box: the tumour's rectangle on its largest slice of the subtraction image,
    spanning every slice with enhancing tumour, each edge moved by up to 3 mm of jitter.

    Jitter never moves an edge past the tumour centre: an annotator's box always holds it.
    """
    tumour = labels == LABEL["tumour"]
    area = tumour.sum(axis=(1, 2))
    largest = int(np.argmax(area))
    rows = np.flatnonzero(tumour[largest].any(axis=1))
    cols = np.flatnonzero(tumour[largest].any(axis=0))
    slices = np.flatnonzero(area)
    box = {}
    for name, (lo, hi), step, limit, centre in (
        ("row", (rows[0], rows[-1]), spacing[1], labels.shape[1], centroid[1]),
        ("column", (cols[0], cols[-1]), spacing[2], labels.shape[2], centroid[2]),
        ("slice", (slices[0], slices[-1]), spacing[0], labels.shape[0], centroid[0]),
    ):
        jitter = np.rint(rng.uniform(-BOX_JITTER_MM, BOX_JITTER_MM, 2) / step).astype(int)
        start = int(np.clip(lo - jitter[0], 0, np.floor(centre)))
        end = int(np.clip(hi + jitter[1], np.ceil(centre), limit - 1))
        box[f"{name}_start"], box[f"{name}_end"] = start + BOX_INDEX_BASE, end + BOX_INDEX_BASE
    return box


def render_task(task: ExamTask) -> tuple[ExamImages, dict, dict]:
    """Render one exam (no I/O): images, its box row and its truth row."""
    rng = np.random.default_rng(np.random.SeedSequence(list(task.seed_words)))
    site, draw = task.site, task.draw
    when = study_date(rng)
    acq = draw_acquisition(rng, task.site_name, site, matrix=task.matrix, slices=task.slices,
                           field_3t=task.field_3t, timing_present=task.timing_present,
                           study_date=when.strftime("%Y%m%d"))
    identity = fake_identity(rng, task.patient_id, draw.clinical.age, when)
    spacing = (acq.slice_thickness_mm, acq.pixel_spacing_mm, acq.pixel_spacing_mm)
    anatomy = build_anatomy(rng, draw.phenotype, draw.clinical.longest_diameter_mm,
                            (acq.slices, acq.matrix, acq.matrix), spacing, fgt_density=rng.uniform(0.1, 0.6))
    rendered = render_exam(
        rng, anatomy, draw.phenotype, acq, site_bias_strength=site.receive_bias_strength,
        snr=pert(rng, *site.snr), gain=pert(rng, *site.gain), fat_suppression=site.fat_suppression,
        motion_mm=site.motion_mm, noise=task.noise,
    )
    box = {"patient_id": task.patient_id, **box_from_labels(anatomy.labels, rng, spacing, anatomy.centroid_vox)}
    names = phase_names(acq.n_post + 1)
    exam = ExamImages(identity, acq, rendered.phases, names)
    truth = {
        "patient_id": task.patient_id, "institution": task.site_name, "pcr": draw.pcr, **draw.truth_row(),
        "centroid_slice": round(anatomy.centroid_vox[0], 3), "centroid_row": round(anatomy.centroid_vox[1], 3),
        "centroid_column": round(anatomy.centroid_vox[2], 3), "tumour_diameter_drawn_mm": anatomy.tumour_diameter_mm,
        "tumour_voxels": int((anatomy.labels == LABEL["tumour"]).sum()),
        **{f"acq_{f.name}": _flat(getattr(acq, f.name)) for f in dataclasses.fields(acq)},
        "timing_present": int(acq.timing_tag is not None), "phase_names": ";".join(names),
    }
    return exam, box, truth


def _flat(value):
    return ";".join(str(v) for v in value) if isinstance(value, tuple) else value


def run_task(task: ExamTask) -> ExamResult:
    """Render and write one exam; faults that change the images are applied here."""
    from her2pcr.synth.faults import apply_image_fault  # late import: faults imports this module

    # A retried task (its worker died mid-write) starts from an empty folder.
    shutil.rmtree(task.dicom_root / task.patient_id, ignore_errors=True)
    exam, box, truth = render_task(task)
    if task.fault is not None:
        exam = apply_image_fault(exam, task.fault)
    if task.storage == "enhanced":
        from her2pcr.synth.enhanced_mr import write_enhanced_exam

        files = write_enhanced_exam(exam, task.dicom_root, task.master_seed)
    else:
        files = write_exam(exam, task.dicom_root, task.master_seed)
    if task.extra_series:
        from her2pcr.synth.extra_series import write_extra_series

        files = sorted(files + write_extra_series(exam, task.dicom_root, task.master_seed, task.extra_series))
    return ExamResult(task.patient_id, box, truth, files)


def clinical_row(task: ExamTask) -> dict:
    c = task.draw.clinical
    return {"patient_id": task.patient_id, "age": c.age, "er": c.er, "pr": c.pr, "stage": c.stage,
            "lymph_node": c.lymph_node, "longest_diameter_mm": c.longest_diameter_mm,
            "regimen": task.regimen, "pcr": task.draw.pcr, "institution": task.site_name}


def simulate_cohorts(params: SimulateParams, out_dir: Path, progress: bool = True,
                     compute: ComputeParams = LOCAL_COMPUTE) -> dict[str, int]:
    """Write the whole raw source: DICOM tree, clinical.csv, boxes.csv, truth.csv, faults.csv."""
    from her2pcr.synth.faults import apply_file_faults, apply_manifest_faults, plan_faults

    sites = load_sites(params.sites_file)
    unknown = set(params.cohorts) - set(sites)
    if unknown:
        raise ValueError(f"cohorts name sites missing from {params.sites_file}: {sorted(unknown)}")
    dicom_root = out_dir / "dicom"
    tasks: list[ExamTask] = []
    for name in sorted(params.cohorts):
        tasks += plan_site(params, name, sites[name], dicom_root)
    fault_tasks = plan_faults(params, sites, dicom_root)
    all_tasks = tasks + fault_tasks
    image_tasks = [t for t in all_tasks if t.fault != "manifest_without_images"]

    # An exam rendered before from the same inputs is kept as it is (faulty exams, whose files are altered after
    # writing, are always written again); every other exam is written into an empty folder.
    cache = ExamCache(out_dir / CACHE_DIR, dicom_root)
    cache.remove_all_but({t.patient_id for t in image_tasks if t.fault is None})
    keys = {t.patient_id: exam_key(t) for t in image_tasks}
    results: dict[str, ExamResult] = {}
    for task in image_tasks:
        if task.fault is None and (reused := cache.load(task.patient_id, keys[task.patient_id])) is not None:
            results[task.patient_id] = reused
    todo = [t for t in image_tasks if t.patient_id not in results]
    for task, result in zip(todo, map_exams(run_task, todo, params.workers, compute, "simulate", progress),
                            strict=True):
        results[result.patient_id] = result
        if task.fault is None:
            cache.save(result, keys[result.patient_id])

    clinical = pd.DataFrame([clinical_row(t) for t in all_tasks], columns=CLINICAL_COLUMNS)
    boxes = [results[t.patient_id].box if t.patient_id in results else _placeholder_box(t, params)
             for t in all_tasks]
    boxes = pd.DataFrame(boxes, columns=BOX_COLUMNS)
    truth = pd.DataFrame([results[t.patient_id].truth for t in all_tasks if t.patient_id in results])
    clinical, boxes, fault_rows = apply_manifest_faults(clinical, boxes, fault_tasks, params)
    fault_rows += apply_file_faults(fault_tasks, results)

    out_dir.mkdir(parents=True, exist_ok=True)
    clinical.to_csv(out_dir / "clinical.csv", index=False)
    boxes.to_csv(out_dir / "boxes.csv", index=False)
    truth.to_csv(out_dir / "truth.csv", index=False)
    pd.DataFrame(fault_rows, columns=["patient_id", "fault", "detail"]).to_csv(out_dir / "faults.csv", index=False)
    if params.collection == "duke":
        from her2pcr.synth.collections import write_duke_like

        write_duke_like(out_dir, params.seed)
    elif params.collection == "nifti":
        from her2pcr.synth.collections import write_nifti_like

        write_nifti_like(out_dir)
    n_files = sum(len(r.files) for r in results.values())
    return {"patients": len(all_tasks), "exams": len(results), "files": n_files, "faults": len(fault_tasks),
            "rendered": len(todo), "reused": len(image_tasks) - len(todo)}


CACHE_DIR = ".exams"  # beside dicom/: ingest reads dicom/ only


def code_fingerprint() -> str:
    """Hash of the simulator's code: an exam rendered by other code is rendered again."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def exam_key(task: ExamTask) -> str:
    """Everything an exam's files depend on: the task (patient draw, protocol, seeds, sizes, fault) and the code."""
    fields = {k: v for k, v in dataclasses.asdict(task).items() if k != "dicom_root"}
    return hashlib.sha256(repr((sorted(fields.items()), code_fingerprint())).encode()).hexdigest()[:24]


class ExamCache:
    """Per exam, the key it was rendered from, its box and truth rows and its files (``<cache>/<pid>.json``)."""

    def __init__(self, folder: Path, dicom_root: Path) -> None:
        self.folder, self.dicom_root = folder, dicom_root

    def load(self, pid: str, key: str) -> ExamResult | None:
        record = self.folder / f"{pid}.json"
        if not record.exists():
            return None
        stored = json.loads(record.read_text(encoding="utf-8"))
        files = [self.dicom_root / f for f in stored["files"]]
        if stored["key"] != key or not all(f.exists() for f in files):
            return None
        return ExamResult(pid, stored["box"], stored["truth"], files)

    def save(self, result: ExamResult, key: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"key": key, "box": result.box, "truth": result.truth,
                  "files": [f.relative_to(self.dicom_root).as_posix() for f in result.files]}
        (self.folder / f"{result.patient_id}.json").write_text(json.dumps(record, default=_plain), encoding="utf-8")

    def remove_all_but(self, keep: set[str]) -> None:
        """Only the exams of ``keep`` stay (DICOM folder and record): the others are no longer planned (or are
        faulty exams, written again), and a folder without a record is a leftover of an interrupted run."""
        for folder in (self.dicom_root.iterdir() if self.dicom_root.exists() else []):
            if folder.name not in keep or not (self.folder / f"{folder.name}.json").exists():
                shutil.rmtree(folder)
        for record in (self.folder.glob("*.json") if self.folder.exists() else []):
            if record.stem not in keep:
                record.unlink()


def _plain(value):
    """numpy scalars in box and truth rows as Python numbers."""
    return value.item() if hasattr(value, "item") else str(value)


def _placeholder_box(task: ExamTask, params: SimulateParams) -> dict:
    """Box row for a patient whose images were never written (manifest-only fault)."""
    half = params.matrix // 4
    centre = params.matrix // 2
    return {"patient_id": task.patient_id, "row_start": centre - half, "row_end": centre + half,
            "column_start": centre - half, "column_end": centre + half,
            "slice_start": 1 + params.slices // 4, "slice_end": 1 + 3 * params.slices // 4}

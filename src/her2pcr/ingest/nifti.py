"""A NIfTI collection as a second ingest source: the same interim exams as DICOM, from files that hold less.

The largest public pCR collections (MAMA-MIA, BreastDCEDL) ship NIfTI: one file per phase,
``images/<pid>/<pid>_000K.nii.gz`` (K = 0 pre-contrast), and a per-patient JSON with the acquisition times,
protocol values and the lesion box (``ingest.nifti`` names the keys). A NIfTI file carries the voxel grid
(read by SimpleITK in the same LPS convention as the DICOM loader) and nothing of the acquisition: phase times
and protocol values come from the JSON, and a value the JSON lacks stays missing and is flagged, never
invented. Phases are ordered by their file index K (order rule ``file index``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from her2pcr.config import NiftiLayout
from her2pcr.dicom.discover import FileProblem
from her2pcr.dicom.exam import ExamError, Grid, LoadedExam, resample_to_grid, same_grid

__all__ = ["NiftiDiscovery", "discover_nifti", "info_boxes", "info_path", "load_nifti_exam"]

ORDER_RULE = "file index"


@dataclass
class NiftiDiscovery:
    files_by_patient: dict[str, list[tuple[int, Path]]] = field(default_factory=dict)  # (phase index, file)
    problems: list[FileProblem] = field(default_factory=list)


def discover_nifti(root: Path, layout: NiftiLayout) -> NiftiDiscovery:
    """Each patient folder's phase files, by the index their name carries; any other file is a problem."""
    images = Path(root) / layout.images_subdir
    if not images.is_dir():
        raise FileNotFoundError(f"NIfTI images folder {images} is not a folder")
    pattern = re.compile(layout.phase_pattern)
    found = NiftiDiscovery()
    for folder in sorted(p for p in images.iterdir() if p.is_dir() and not p.name.startswith(".")):
        phases = []
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            match = pattern.search(path.name)
            if match is None:
                found.problems.append(FileProblem(path, folder.name, "file name does not match "
                                                  f"ingest.nifti.phase_pattern {layout.phase_pattern!r}"))
            else:
                phases.append((int(match.group(1)), path))
        if phases:
            found.files_by_patient[folder.name] = phases
    return found


def info_path(root: Path, layout: NiftiLayout, pid: str) -> Path:
    return Path(root) / layout.info_subdir / f"{pid}.json"


def _lookup(info: dict, dotted: str) -> Any:
    node: Any = info
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _read_info(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExamError(f"patient info {path.name} is not valid JSON: {error}") from None
    if not isinstance(info, dict):
        raise ExamError(f"patient info {path.name} is not a JSON object")
    return info


def info_boxes(root: Path, layout: NiftiLayout, patients: list[str]) -> pd.DataFrame:
    """The box of each patient's info file, with the box manifest's canonical columns (missing values: NaN)."""
    rows = []
    for pid in patients:
        try:
            info = _read_info(info_path(root, layout, pid)) or {}
        except ExamError:
            info = {}  # load_nifti_exam reports the broken file
        box = _lookup(info, layout.box_key or "") or {}
        rows.append({"patient_id": pid, **{name: box.get(key) if isinstance(box, dict) else None
                                           for name, key in layout.box_fields.items()}})
    return pd.DataFrame(rows, columns=["patient_id", *layout.box_fields]).astype({"patient_id": str})


def _grid(image: sitk.Image) -> Grid:
    return Grid(size=tuple(int(v) for v in image.GetSize()[::-1]),  # type: ignore[arg-type]
                spacing=tuple(float(v) for v in image.GetSpacing()[::-1]),  # type: ignore[arg-type]
                origin=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
                direction=tuple(float(v) for v in image.GetDirection()))


def _read_phase(path: Path, index: int) -> tuple[np.ndarray, Grid]:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ExamError(f"cannot read phase {index} ({path.name}): {str(error).splitlines()[0][:120]}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ExamError(f"phase {index} ({path.name}) is not a 3-D scalar volume: one file per phase is expected")
    return sitk.GetArrayFromImage(image), _grid(image)


def _times(info: dict | None, layout: NiftiLayout, n: int, warnings: list[str]) -> list[float | None]:
    values = _lookup(info, layout.times_key) if info is not None else None
    if values is None:
        warnings.append(f"no {layout.times_key} in the patient info: phase times unknown (ordered by file index)")
        return [None] * n
    if not isinstance(values, list) or len(values) != n or any(not isinstance(v, int | float) for v in values):
        warnings.append(f"{layout.times_key} does not hold {n} numbers (one per phase file): phase times unknown")
        return [None] * n
    relative = [round(float(v) - float(values[0]), 6) for v in values]
    if any(b <= a for a, b in zip(relative, relative[1:], strict=False)):
        warnings.append(f"{layout.times_key} does not increase in file-index order")
    return relative  # type: ignore[return-value]


def _acquisition(info: dict | None, layout: NiftiLayout, grid: Grid, times: list[float | None], n: int,
                 warnings: list[str]) -> dict[str, Any]:
    values = {name: _lookup(info, key) if info is not None else None for name, key in layout.acquisition_keys.items()}
    missing = sorted(name for name, value in values.items() if value is None)
    if missing:
        warnings.append(f"acquisition values not in the patient info (left missing): {', '.join(missing)}")
    post = [t for t in times[1:] if t is not None]
    steps = np.diff(post) if None not in times and len(post) > 1 else np.array([])
    return {
        "field_strength_t": values.get("field_strength_t"), "repetition_time_ms": values.get("repetition_time_ms"),
        "echo_time_ms": values.get("echo_time_ms"), "flip_angle_deg": values.get("flip_angle_deg"),
        # the voxel grid is what NIfTI does carry: the in-plane spacing is the image's
        # (NIfTI stores it as float32: rounded to the 6 decimals of a DICOM DS)
        "pixel_spacing_mm": round(float(np.mean(grid.spacing[1:])), 6),
        "slice_thickness_mm": values.get("slice_thickness_mm"),
        "phase_encoding_steps": values.get("phase_encoding_steps"),
        "percent_sampling": values.get("percent_sampling"), "bolus_volume_ml": values.get("bolus_volume_ml"),
        "contrast_agent": values.get("contrast_agent"), "n_post_phases": n - 1,
        "mean_time_between_phases_s": round(float(np.mean(steps)), 6) if steps.size else None,
        "manufacturer": values.get("manufacturer"), "timing_present": None not in times,
    }


def load_nifti_exam(pid: str, phase_files: list[tuple[int, Path]], info_file: Path,
                    layout: NiftiLayout) -> LoadedExam:
    """One patient's phase files and info JSON as a :class:`LoadedExam`; :class:`ExamError` says why not."""
    indices = sorted(index for index, _ in phase_files)
    if len(set(indices)) < len(indices):
        raise ExamError(f"two phase files share an index: {indices}")
    if indices != list(range(len(indices))):
        raise ExamError(f"phase file indices {indices} are not 0..{len(indices) - 1}: a phase is missing")
    if len(indices) < 2:
        raise ExamError("missing post-contrast phase: only 1 phase file")
    info = _read_info(info_file)
    warnings = [] if info is not None else [f"no patient info file {info_file.name}: times and protocol unknown"]
    arrays, grids = zip(*(_read_phase(path, index) for index, path in sorted(phase_files)), strict=True)
    reference = grids[0]
    images, resampled = [], []
    for k, (array, grid) in enumerate(zip(arrays, grids, strict=True)):
        if not same_grid(grid, reference):
            array = resample_to_grid(array, grid, reference)
            resampled.append(k)
            warnings.append(f"phase {k} resampled onto the pre-contrast grid: size {grid.size} vs {reference.size}")
        images.append(array)
    if resampled or len({a.dtype for a in images}) > 1:
        images = [a.astype(np.float32, copy=False) for a in images]
    times = _times(info, layout, len(images), warnings)
    return LoadedExam(patient_id=pid, image=np.stack(images), spacing_mm=reference.spacing,
                      origin_mm=reference.origin, direction=reference.direction, phase_times_s=times,
                      order_rule=ORDER_RULE, resampled_phases=resampled, warnings=warnings,
                      acquisition=_acquisition(info, layout, reference, times, len(images), warnings))

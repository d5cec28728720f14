"""Ingest speed with and without DCE series selection, measured side by side in one run.

Run: python bench/ingest.py [--source data/raw/synthetic] [--repeats 3]

On the raw source of params.yaml (run `make run` or `her2pcr simulate` first), one process, interleaved:

- discovery: `discover()` reading every header with the series- and study-selection values (ImageType,
  ScanningSequence, ScanOptions, StudyDescription, StudyDate + StudyTime) and without them (the reader before
  series selection);
- loading: per exam, `select_dce_series` + `load_exam` against `load_exam` on all of the exam's files.

Prints exams/min for each and the time ratios (with selection / without). One worker: the ratio, not the
absolute rate, is the figure (the stage runs `ingest.workers` processes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import her2pcr.dicom.discover as discover_module  # noqa: E402
from her2pcr.config import load_params  # noqa: E402
from her2pcr.dicom.discover import discover  # noqa: E402
from her2pcr.dicom.exam import load_exam  # noqa: E402
from her2pcr.dicom.series import select_dce_series  # noqa: E402

SELECTION_TAGS = ("image_type", "scanning_sequence", "scan_options", "study_description")


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - start, value


def discover_without_selection_tags(root: Path, tag: str):
    fields, study_start = discover_module._FIELDS, discover_module._study_start
    discover_module._FIELDS = {k: v for k, v in fields.items() if k not in SELECTION_TAGS}
    discover_module._study_start = lambda ds: None
    try:
        return discover(root, tag)
    finally:
        discover_module._FIELDS, discover_module._study_start = fields, study_start


def load_all(files_by_patient, rules, select: bool) -> int:
    for pid, headers in files_by_patient.items():
        load_exam(select_dce_series(headers, rules).headers if select else headers, pid)
    return len(files_by_patient)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--source", type=Path, default=None, help="raw source (default: ingest.source_dir)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = load_params(args.params).ingest
    root = (args.source or params.source_dir) / params.dicom_subdir
    found = discover(root, params.patient_id_tag)  # warm the page cache before timing
    n = len(found.files_by_patient)
    times: dict[str, list[float]] = {k: [] for k in ("discover with", "discover without", "load with",
                                                     "load without")}
    for _ in range(args.repeats):
        times["discover with"].append(timed(discover, root, params.patient_id_tag)[0])
        times["discover without"].append(timed(discover_without_selection_tags, root, params.patient_id_tag)[0])
        times["load with"].append(timed(load_all, found.files_by_patient, params.series, True)[0])
        times["load without"].append(timed(load_all, found.files_by_patient, params.series, False)[0])
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"{n} exams, {sum(len(v) for v in found.files_by_patient.values())} files, median of {args.repeats}:")
    for name, seconds in median.items():
        print(f"  {name:18s} {60 * n / seconds:7.0f} exams/min ({seconds:.1f} s)")
    for stage in ("discover", "load"):
        print(f"  {stage}: with series selection / without = "
              f"{median[f'{stage} with'] / median[f'{stage} without']:.3f} (time ratio)")
    total_with = median["discover with"] + median["load with"]
    total_without = median["discover without"] + median["load without"]
    print(f"  ingest (discover + load): {60 * n / total_with:.0f} vs {60 * n / total_without:.0f} exams/min, "
          f"time ratio {total_with / total_without:.3f}")


if __name__ == "__main__":
    main()

"""Ingest speed before and after DCE series selection, measured side by side in one run.

Run: python bench/ingest.py [--source data/raw/synthetic] [--repeats 3] [--before 3a0b0b9]

On the raw source of params.yaml (run `make run` or `her2pcr simulate` first), one process, interleaved:

- discovery: today's `discover()` (series- and study-selection values, Enhanced MR frames) against the
  `discover()` of commit ``--before`` (the reader before series selection, loaded from git);
- loading: per exam, `select_dce_series` + `load_exam` against `load_exam` on all of the exam's files.

Prints exams/min for each and the time ratios (after / before). One worker: the ratio, not the absolute rate, is
the figure (the stage runs `ingest.workers` processes).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from her2pcr.config import load_params  # noqa: E402
from her2pcr.dicom.discover import discover  # noqa: E402
from her2pcr.dicom.exam import load_exam  # noqa: E402
from her2pcr.dicom.series import select_dce_series  # noqa: E402

BEFORE = "3a0b0b9"  # the last commit before series selection (issue 13)


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - start, value


def discover_of(commit: str):
    """``discover`` as it was at ``commit``: its module source from git, loaded beside today's."""
    source = subprocess.run(["git", "show", f"{commit}:src/her2pcr/dicom/discover.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader(f"discover_{commit}", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"discover.py@{commit}", "exec"), module.__dict__)  # noqa: S102 - our own history
    return module.discover


def load_all(files_by_patient, rules, select: bool) -> int:
    for pid, headers in files_by_patient.items():
        load_exam(select_dce_series(headers, rules).headers if select else headers, pid)
    return len(files_by_patient)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--source", type=Path, default=None, help="raw source (default: ingest.source_dir)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default=BEFORE, help="commit whose discover() is the baseline")
    args = parser.parse_args()
    discover_before = discover_of(args.before)
    params = load_params(args.params).ingest
    root = (args.source or params.source_dir) / params.dicom_subdir
    found = discover(root, params.patient_id_tag)  # warm the page cache before timing
    n = len(found.files_by_patient)
    times: dict[str, list[float]] = {k: [] for k in ("discover with", "discover without", "load with",
                                                     "load without")}
    for _ in range(args.repeats):
        times["discover with"].append(timed(discover, root, params.patient_id_tag)[0])
        times["discover without"].append(timed(discover_before, root, params.patient_id_tag)[0])
        times["load with"].append(timed(load_all, found.files_by_patient, params.series, True)[0])
        times["load without"].append(timed(load_all, found.files_by_patient, params.series, False)[0])
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"{n} exams, {sum(len(v) for v in found.files_by_patient.values())} files, median of {args.repeats}:")
    names = {"discover with": "discover now", "discover without": f"discover at {args.before}",
             "load with": "select + load", "load without": "load all files"}
    for name, seconds in median.items():
        print(f"  {names[name]:18s} {60 * n / seconds:7.0f} exams/min ({seconds:.1f} s)")
    for stage in ("discover", "load"):
        print(f"  {stage}: with series selection / before = "
              f"{median[f'{stage} with'] / median[f'{stage} without']:.3f} (time ratio)")
    total_with = median["discover with"] + median["load with"]
    total_without = median["discover without"] + median["load without"]
    print(f"  ingest (discover + load): {60 * n / total_with:.0f} vs {60 * n / total_without:.0f} exams/min, "
          f"time ratio {total_with / total_without:.3f}")


if __name__ == "__main__":
    main()

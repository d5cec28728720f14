"""Simulator throughput on the default profile: exams/s and MB/s, and the parallel speed-up.

Run: python bench/simulate.py [--subset N]. Prints figures measured in this
one run, side by side (this machine is shared, absolute times vary).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from her2pcr.config import load_params  # noqa: E402
from her2pcr.synth.cohort import simulate_cohorts  # noqa: E402


def timed_run(params, out: Path) -> tuple[float, dict, float]:
    start = time.perf_counter()
    counts = simulate_cohorts(params, out, progress=False)
    elapsed = time.perf_counter() - start
    megabytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    return elapsed, counts, megabytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subset", type=int, default=12, help="exams per run of the 1-vs-N worker comparison")
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml").simulate
    params = params.model_copy(update={"sites_file": REPO / params.sites_file})
    with tempfile.TemporaryDirectory() as tmp:
        elapsed, counts, megabytes = timed_run(params, Path(tmp) / "default")
        print(f"default profile: {counts['exams']} exams at {params.matrix}x{params.matrix}x{params.slices}, "
              f"{counts['files']} files, {megabytes:.0f} MB in {elapsed:.1f} s (budget 180 s)")
        print(f"  {counts['exams'] / elapsed:.2f} exams/s, {megabytes / elapsed:.1f} MB/s, workers={params.workers}")

        from her2pcr.config import CohortSize

        subset = params.model_copy(update={"cohorts": {"inst1": CohortSize(n=args.subset, n_pcr=args.subset // 2)}})
        single, _, _ = timed_run(subset.model_copy(update={"workers": 1}), Path(tmp) / "one")
        multi, _, _ = timed_run(subset, Path(tmp) / "many")
        print(f"{args.subset} exams: 1 worker {single:.1f} s, {params.workers} workers {multi:.1f} s, "
              f"speed-up {single / multi:.2f}x")


if __name__ == "__main__":
    main()

"""Capacity plan: per-exam cost of the per-exam stages at the default and at the clinical exam size, and the wall
time they project for a collection on N Dask workers.

For each size (``--sizes``, in-plane matrix x slices) it simulates ``--exams`` exams of one site (institution 2:
most of its exams have 6 phases), then runs ingest, preprocess and pk_features as the pipeline does, each stage on
a fresh local Dask cluster of one single-threaded worker (started before the clock starts). Per stage it prints
seconds per exam and the worker's peak resident memory (its ``ru_maxrss``: worker runtime + one exam). The
projection for ``--collection`` exams on N workers divides the measured single-worker cost by N: per-exam work is
independent, so it scales until the shared filesystem or the scheduler limits it (``bench/preprocess.py``
measures the 2-worker speed-up on this machine).

Run: python bench/capacity.py [--exams 3] [--sizes 128x40 512x160] [--collection 1500] [--workers 1 2 8 32 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from her2pcr.config import ComputeParams, load_params  # noqa: E402

SITE = "inst2"
STAGES = ("simulate", "ingest", "preprocess", "pk_features")
PIPELINE = STAGES[1:]  # what a real collection goes through; simulate stands in for the PACS


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def import_stages() -> None:
    import her2pcr.features.stage
    import her2pcr.ingest.stage
    import her2pcr.preprocess.stage
    import her2pcr.synth.cohort  # noqa: F401


def on_one_worker(stage) -> tuple[float, float]:
    """Wall seconds of ``stage(compute)`` on a fresh one-worker local cluster, and that worker's peak RSS (GiB)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      memory_limit=0) as cluster, Client(cluster) as client:
        client.run(import_stages)  # the worker's first task would otherwise pay for the imports
        start = time.perf_counter()
        stage(ComputeParams(scheduler=cluster.scheduler_address))
        seconds = time.perf_counter() - start
        (peak,) = client.run(peak_rss_gib).values()
    return seconds, peak


def measure(size: str, n_exams: int, root: Path) -> dict:
    from her2pcr.features.stage import pk_features_stage
    from her2pcr.ingest.stage import ingest
    from her2pcr.preprocess.stage import preprocess
    from her2pcr.synth.cohort import simulate_cohorts

    matrix, slices = (int(v) for v in size.split("x"))
    params = load_params(REPO / "params.yaml")
    simulate = type(params.simulate).model_validate(params.simulate.model_dump() | {
        "sites_file": REPO / params.simulate.sites_file, "matrix": matrix, "slices": slices,
        "cohorts": {SITE: {"n": n_exams, "n_pcr": n_exams // 2}}, "faults": [], "extra_series": []})
    cohorts = type(params.cohorts).model_validate(params.cohorts.model_dump() | {"external": {"D3": [SITE]}})
    ingest_params = params.ingest.model_copy(update={"source_dir": root / "raw", "out_dir": root / "interim",
                                                     "reports_dir": root / "reports"})
    preprocess_params = params.preprocess.model_copy(update={"interim_dir": root / "interim",
                                                             "out_dir": root / "processed"})
    runs = {
        "simulate": lambda compute: simulate_cohorts(simulate, root / "raw", False, compute),
        "ingest": lambda compute: ingest(ingest_params, cohorts, False, compute),
        "preprocess": lambda compute: preprocess(preprocess_params, False, compute),
        "pk_features": lambda compute: pk_features_stage(root / "interim", root / "features",
                                                         params.pk.threshold_percent, compute=compute,
                                                         progress=False),
    }
    figures = {}
    for stage in STAGES:
        seconds, peak = on_one_worker(runs[stage])
        figures[stage] = {"s_per_exam": seconds / n_exams, "peak_worker_rss_gib": peak}
        print(f"  {size} {stage:11s}: {seconds / n_exams:7.1f} s/exam, peak worker RSS {peak:.2f} GiB", flush=True)
    import numpy as np

    shapes = []
    for exam in sorted((root / "interim" / "exams").glob("*.npz")):
        with np.load(exam) as data:
            shapes.append(list(data["image"].shape))
    figures["exam_shapes"] = shapes
    print(f"  {size} exams (phase, slice, row, column): {shapes}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exams", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["128x40", "512x160"])
    parser.add_argument("--collection", type=int, default=1500)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 8, 32, 64])
    args = parser.parse_args()
    results = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            results[size] = measure(size, args.exams, Path(tmp))
    print(f"\nprojected wall time for {args.collection} exams (ingest + preprocess + pk_features, "
          f"single-worker cost / N):")
    print("size      s/exam  " + "  ".join(f"{n:>6d} w" for n in args.workers))
    for size, figures in results.items():
        per_exam = sum(figures[stage]["s_per_exam"] for stage in PIPELINE)
        hours = [args.collection * per_exam / n / 3600 for n in args.workers]
        print(f"{size:9s} {per_exam:6.1f}  " + "  ".join(f"{h:6.2f} h" for h in hours))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

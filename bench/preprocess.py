"""Preprocess benchmark on the default cohorts, figures measured side by side in one run.

Prints: exams per minute of a full run; the incremental re-run time after adding one exam over the
full run time; the per_phase / per_exam N4 time ratio and the agreement of their outputs in the VOI;
then, on --scale-exams exams, the stage on Dask: exams/min in this process, on an existing local cluster of 1
and of 2 workers (the speed-up), with the stage's own local cluster (start-up included), and the cluster
overhead against a plain process pool of 2 running the same per-exam function (ratio of wall times).

Run: python bench/preprocess.py [--interim data/interim] [--subset 12] [--scale-exams 60]
Without --interim (or if it does not exist) the default cohorts are simulated and ingested first.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from her2pcr.config import ComputeParams, load_params  # noqa: E402
from her2pcr.preprocess.settings import Box  # noqa: E402
from her2pcr.preprocess.stage import Job, _run, cache_key, chain_from, preprocess  # noqa: E402


def build_interim(tmp: Path) -> Path:
    from her2pcr.ingest.stage import ingest
    from her2pcr.synth.cohort import simulate_cohorts

    params = load_params(REPO / "params.yaml")
    sim = params.simulate.model_copy(update={"sites_file": REPO / params.simulate.sites_file})
    simulate_cohorts(sim, tmp / "raw", progress=False)
    ing = params.ingest.model_copy(update={"source_dir": tmp / "raw", "out_dir": tmp / "interim",
                                           "reports_dir": tmp / "reports"})
    ingest(ing, params.cohorts, progress=False)
    return tmp / "interim"


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def scale_out(params, interim: Path, out: Path, n_exams: int) -> None:
    """The stage's exams/min on Dask (1 and 2 workers) and a process pool of 2, the same exams, outputs checked."""
    from concurrent.futures import ProcessPoolExecutor

    from distributed import LocalCluster

    clinical = pd.read_parquet(interim / "clinical.parquet").head(n_exams)
    clinical.to_parquet(interim / "clinical.parquet", index=False)
    n = len(clinical)

    def stage(name: str, workers: int, compute: ComputeParams) -> float:
        shutil.rmtree(out, ignore_errors=True)
        seconds, counts = timed(preprocess, params.model_copy(update={"out_dir": out, "workers": workers}), False,
                                compute)
        assert counts["computed"] == n
        print(f"  {name}: {n} exams in {seconds:.1f} s = {60 * n / seconds:.1f} exams/min", flush=True)
        return seconds

    print(f"scale-out, {n} exams:")
    figures = {"in this process": stage("in this process (workers 1, no cluster)", 1, ComputeParams())}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as c:
            figures[workers] = stage(f"existing local cluster, {workers} worker(s)", workers,
                                     ComputeParams(scheduler=c.scheduler_address))
    figures["own"] = stage("the stage's own local cluster of 2 (start-up included)", 2, ComputeParams())
    fingerprint = chain_from(params).fingerprint()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    jobs = [(Job(str(r.patient_id), interim / "exams" / f"{r.patient_id}.npz",
                 box := tuple(int(getattr(r, c)) for c in Box._fields), out / f"{r.patient_id}.npz",
                 cache_key(interim / "exams" / f"{r.patient_id}.npz", box, fingerprint)), params)
            for r in clinical.itertuples()]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_run, jobs))
    pool_s = time.perf_counter() - start
    print(f"  process pool of 2 (per-exam work only): {n} exams in {pool_s:.1f} s = {60 * n / pool_s:.1f} exams/min")
    print(f"  speed-up 2 / 1 Dask workers: {figures[1] / figures[2]:.2f}; Dask (existing cluster of 2) / process "
          f"pool wall time: {figures[2] / pool_s:.2f}; stage's own cluster / process pool: "
          f"{figures['own'] / pool_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interim", type=Path, default=REPO / "data" / "interim")
    parser.add_argument("--subset", type=int, default=12, help="exams in the per_exam / per_phase comparison")
    parser.add_argument("--scale-exams", type=int, default=60, help="exams in the Dask / process pool comparison")
    args = parser.parse_args()
    base = load_params(REPO / "params.yaml").preprocess
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        source = args.interim if (args.interim / "clinical.parquet").exists() else build_interim(tmp / "built")
        interim = tmp / "interim"
        shutil.copytree(source, interim)
        clinical = pd.read_parquet(interim / "clinical.parquet")
        params = base.model_copy(update={"interim_dir": interim, "out_dir": tmp / "processed"})

        # Full run on all exams but one, then add that exam and run again.
        clinical.iloc[:-1].to_parquet(interim / "clinical.parquet", index=False)
        full_s, full = timed(preprocess, params, False)  # the stage as configured: a local cluster of `workers`
        clinical.to_parquet(interim / "clinical.parquet", index=False)
        incremental_s, incremental = timed(preprocess, params, False)
        print(f"full run: {full['computed']} exams in {full_s:.1f} s = {60 * full['computed'] / full_s:.1f} exams/min "
              f"(n4_mode={base.n4_mode}, workers={base.workers})")
        print(f"after adding one exam: {incremental['computed']} computed, {incremental['reused']} reused in "
              f"{incremental_s:.1f} s; incremental / full = {incremental_s / full_s:.3f}")

        # per_exam vs per_phase N4 on the same exams, one process, same order.
        per_exam = chain_from(base.model_copy(update={"n4_mode": "per_exam"}))
        per_phase = chain_from(base.model_copy(update={"n4_mode": "per_phase"}))
        times = {"per_exam": 0.0, "per_phase": 0.0}
        differences, correlations = [], []
        for row in clinical.head(args.subset).itertuples():
            with np.load(interim / "exams" / f"{row.patient_id}.npz") as exam:
                image, spacing = exam["image"], tuple(exam["spacing_mm"])
            box = tuple(int(getattr(row, c)) for c in Box._fields)
            outputs = {}
            for name, chain in (("per_exam", per_exam), ("per_phase", per_phase)):
                seconds, outputs[name] = timed(chain, image, spacing, box)
                times[name] += seconds
            for phase in outputs["per_exam"]:
                a, b = outputs["per_exam"][phase], outputs["per_phase"][phase]
                inside = (a > 0) | (b > 0)  # the VOI, not the zero padding
                differences.append(float(np.mean(np.abs(a[inside] - b[inside]))))
                correlations.append(float(np.corrcoef(a[inside], b[inside])[0, 1]))
        n = min(args.subset, len(clinical))
        print(f"N4 on {n} exams: per_exam {times['per_exam']:.1f} s, per_phase {times['per_phase']:.1f} s, "
              f"per_phase / per_exam = {times['per_phase'] / times['per_exam']:.2f}")
        print(f"agreement in the VOI (normalised [0,1] inputs, {len(differences)} phase inputs): "
              f"mean |difference| {np.mean(differences):.4f} (max {np.max(differences):.4f}), "
              f"correlation median {np.median(correlations):.4f} (min {np.min(correlations):.4f})")
        scale_out(params, interim, tmp / "scale", args.scale_exams)


if __name__ == "__main__":
    main()

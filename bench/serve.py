"""Serving throughput and latency: `mlflow models serve` under concurrent clients vs in-process prediction.

Run (in a workspace where `her2pcr train` registered a version, e.g. after `make run`):
    python bench/serve.py [--workspace .] [--requests 500] [--clients 4] [--model models:/her2pcr-dce@champion]

For each input mode (exam = base64 DICOM zip + box; tensors = base64 .npz) it sends ``--requests`` requests
from ``--clients`` threads, each request one external-cohort patient (cycling), and counts errors; then it runs
the same inputs through the same pyfunc model loaded in this process with the same number of threads.
Both are measured side by side in this run (the machine is shared, absolute times vary).

Exam latency: the exam mode also runs against a second server of the same version loaded with
``exam_n4_shrink_factor: null`` (``MLFLOW_PYFUNC_INFERENCE_CONFIG``), the training chain exactly, i.e. the exam
path before serve.exam_n4_shrink_factor existed: p50 with one client and with ``--clients``, the ratio of the
two, and the largest difference between their probabilities on the same exams.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import requests  # noqa: E402

from her2pcr.config import load_params  # noqa: E402
from her2pcr.serving.client import exam_record, tensors_record  # noqa: E402
from her2pcr.serving.model import BOX_FIELDS  # noqa: E402
from her2pcr.serving.server import local_server  # noqa: E402


def records_of(workspace: Path, params, phases: list[str], mode: str, limit: int) -> list[dict]:
    """One request row per external patient that has the model's phases."""
    interim, processed = workspace / params.validation.interim_dir, workspace / params.validation.processed_dir
    clinical = pd.read_parquet(interim / "clinical.parquet").set_index("patient_id")
    index = pd.read_parquet(processed / "index.parquet").set_index("patient_id")
    usable = index[index.cohort.isin(list(params.cohorts.external))
                   & index.phases.str.split(";").map(lambda p: set(phases) <= set(p))].index[:limit]
    out = []
    for pid in usable:
        if mode == "exam":
            dicom = workspace / params.ingest.source_dir / params.ingest.dicom_subdir / pid
            out.append(exam_record(dicom, tuple(int(clinical.loc[pid, c]) for c in BOX_FIELDS)))
        else:
            with np.load(processed / f"{pid}.npz") as stacks:
                out.append(tensors_record({p: stacks[p] for p in phases}))
    return out


def run_clients(call, inputs: list, n_requests: int, clients: int) -> dict:
    """``n_requests`` calls from ``clients`` threads; latency percentiles, throughput and error count."""
    latencies: list[float] = []
    errors: list[str] = []

    def one(k: int) -> None:
        start = time.perf_counter()
        try:
            call(inputs[k % len(inputs)])
        except Exception as error:  # noqa: BLE001 - every failure is counted and reported
            errors.append(f"{type(error).__name__}: {str(error)[:200]}")
            return
        latencies.append(time.perf_counter() - start)

    call(inputs[0])  # warm-up: model graph tracing, first allocations
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"requests": n_requests, "errors": len(errors), "first_errors": errors[:3],
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "throughput_rps": len(latencies) / wall}


def exam_latency(post, url: str, exact_url: str, inputs: list[dict], args, served_many: dict) -> dict:
    """Exam p50 of the served version and of the same version with the training chain's N4: one client, then
    ``--clients`` clients (the served version's figure is the exam mode's, measured just before)."""
    figures = {}
    for label, clients, n in (("one client", 1, args.single_client_requests), (f"{args.clients} clients",
                                                                                args.clients, args.requests)):
        coarse = run_clients(lambda r: post(url, r), inputs, n, clients) if clients == 1 else served_many
        exact = run_clients(lambda r: post(exact_url, r), inputs, n, clients)
        figures[label] = {"coarse_n4": coarse, "exact_n4": exact, "p50_ratio": coarse["p50_ms"] / exact["p50_ms"]}
        print(f"exam p50, {label}: serve.exam_n4_shrink_factor {coarse['p50_ms']:.0f} ms "
              f"({coarse['errors']} errors), training chain {exact['p50_ms']:.0f} ms ({exact['errors']} errors), "
              f"ratio {figures[label]['p50_ratio']:.3f}", flush=True)
    gaps = [abs(post(url, r)["probability"] - post(exact_url, r)["probability"]) for r in inputs]
    figures["max_abs_probability_difference"] = max(gaps)
    print(f"exam answers, coarse vs training-chain N4, {len(inputs)} exams: max |dp| {max(gaps):.4f}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--patients", type=int, default=8, help="Distinct inputs to cycle through.")
    parser.add_argument("--model", default=None, help="Model URI (default: champion, else challenger).")
    parser.add_argument("--single-client-requests", type=int, default=50,
                        help="Exam requests from one client, per server, for the one-client p50.")
    args = parser.parse_args()

    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    workspace = args.workspace.resolve()
    os.chdir(workspace)  # relative tracking and artifact paths of params.yaml
    params = load_params(workspace / "params.yaml")
    mlflow.set_tracking_uri(params.tracking.uri)
    model_uri = args.model
    if model_uri is None:
        try:
            MlflowClient().get_model_version_by_alias(params.registry.model_name, params.registry.champion_alias)
            alias = params.registry.champion_alias
        except MlflowException:
            alias = params.registry.challenger_alias
        model_uri = f"models:/{params.registry.model_name}@{alias}"
    in_process = mlflow.pyfunc.load_model(model_uri)
    results = {"model": model_uri, "clients": args.clients}
    exact_config = {"MLFLOW_PYFUNC_INFERENCE_CONFIG": json.dumps({"exam_n4_shrink_factor": None})}
    with local_server(model_uri, params.tracking.uri, workspace) as url, \
            local_server(model_uri, params.tracking.uri, workspace, extra_env=exact_config) as exact_url:
        sessions: dict[tuple[int, str], requests.Session] = {}

        def post(base: str, record: dict) -> dict:
            session = sessions.setdefault((threading.get_ident(), base), requests.Session())
            response = session.post(f"{base}/invocations", json={"dataframe_records": [record]}, timeout=600)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            return response.json()["predictions"][0]

        def local(record: dict) -> None:
            in_process.predict(pd.DataFrame([record]))

        for mode in ("tensors", "exam"):
            inputs = records_of(workspace, params, in_process.unwrap_python_model().phases, mode, args.patients)
            served = run_clients(lambda r: post(url, r), inputs, args.requests, args.clients)
            direct = run_clients(local, inputs, args.requests, args.clients)
            results[mode] = {"served": served, "in_process": direct, "distinct_inputs": len(inputs),
                             "throughput_ratio_served_over_in_process":
                                 served["throughput_rps"] / direct["throughput_rps"],
                             "p50_ratio_served_over_in_process": served["p50_ms"] / direct["p50_ms"]}
            print(f"{mode:8s} served: {served['requests']} requests, {served['errors']} errors, "
                  f"p50 {served['p50_ms']:.1f} ms, p99 {served['p99_ms']:.1f} ms, "
                  f"{served['throughput_rps']:.1f} req/s | "
                  f"in-process: p50 {direct['p50_ms']:.1f} ms, p99 {direct['p99_ms']:.1f} ms, "
                  f"{direct['throughput_rps']:.1f} req/s | served/in-process throughput "
                  f"{results[mode]['throughput_ratio_served_over_in_process']:.2f}", flush=True)
        results["exam_latency"] = exam_latency(post, url, exact_url, inputs, args, served)
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

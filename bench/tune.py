"""Tuning cost of pruning: the same search with and without the median pruner, wall time and best AUC.

Run: python bench/tune.py [--processed data/processed] [--n-trials N] [--epochs E]
Uses the train and tune sections of params.yaml (defaults for --n-trials and --epochs come from tune.n_trials and
tune.epochs). Each search runs in this process on a fresh temporary SQLite study and MLflow store, with the same
sampler seed and trial budget. The pruned search runs first, so the unpruned one gets any warm-up (TensorFlow
start-up, tracing) and the ratio errs against pruning. The two searches share their first trials' draws only
until a trial is pruned: TPE then sees a different history, so the best AUCs compare two searches, not the same
trials. The machine is shared and absolute times vary; the ratio is what this run measures.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from her2pcr.config import TrackingParams, TrainParams, TuneParams, load_params  # noqa: E402
from her2pcr.training.tracking import setup_mlflow  # noqa: E402
from her2pcr.tuning.study import tune_study  # noqa: E402


def run_search(base: TrainParams, tune: TuneParams, tracking: TrackingParams, pruning: bool) -> dict:
    """One search on throwaway stores; returns tune_study's summary with the wall time added."""
    with tempfile.TemporaryDirectory(prefix=f"bench-tune-{'pruned' if pruning else 'unpruned'}-") as tmp:
        root = Path(tmp)
        tune = tune.model_copy(update={"pruning": pruning, "storage": f"sqlite:///{root / 'study.db'}",
                                       "out_dir": root / "tune", "study_name": "bench-tune", "timeout_s": None})
        tracking = tracking.model_copy(update={"uri": f"sqlite:///{root / 'mlflow.db'}",
                                               "artifact_root": root / "mlartifacts"})
        base = base.model_copy(update={"model_dir": root / "cnn", "best_params_file": root / "tune" / "best.yaml"})
        setup_mlflow(tracking.uri, tracking.experiment, tracking.artifact_root)  # store migrations: not timed
        start = time.perf_counter()
        summary = tune_study(base, tune, tracking, n_trials=tune.n_trials)
        return {**summary, "wall_s": time.perf_counter() - start}


def describe(name: str, summary: dict) -> str:
    counts = ", ".join(f"{key} {summary[key]}" for key in ("complete", "pruned", "fail") if summary.get(key))
    best = f"best AUC {summary['best_value']:.3f} (trial {summary['best_trial']})" if "best_value" in summary \
        else "no complete trial"
    return f"{name:>9}: {summary['wall_s']:7.1f} s, {summary['trials']} trials ({counts}); {best}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processed", type=Path, default=REPO / "data" / "processed")
    parser.add_argument("--params-file", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--n-trials", type=int, default=None, help="Trials per search (default tune.n_trials).")
    parser.add_argument("--epochs", type=int, default=None, help="Epochs per trial (default tune.epochs).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = load_params(args.params_file)
    base = params.train.model_copy(update={"processed_dir": args.processed})
    tune = params.tune.model_copy(update={"n_trials": args.n_trials or params.tune.n_trials,
                                          "epochs": args.epochs or params.tune.epochs})
    tracking = params.tracking.model_copy(update={"experiment": "bench-tune"})

    pruned = run_search(base, tune, tracking, pruning=True)
    unpruned = run_search(base, tune, tracking, pruning=False)
    print(f"{tune.n_trials} trials of {tune.epochs} epochs, sampler seed {tune.sampler_seed}, objective "
          f"{tune.objective}; median pruner after {tune.pruner_startup_trials} trials and "
          f"{tune.pruner_warmup_epochs} warm-up epochs; data {args.processed}")
    print(describe("pruned", pruned))
    print(describe("unpruned", unpruned))
    print(f"wall time pruned / unpruned = {pruned['wall_s'] / unpruned['wall_s']:.3f}")
    if "best_value" in pruned and "best_value" in unpruned:
        print(f"best AUC pruned - unpruned = {pruned['best_value'] - unpruned['best_value']:+.3f}")
    else:
        print("best AUC difference undefined: a search had no complete trial")


if __name__ == "__main__":
    main()

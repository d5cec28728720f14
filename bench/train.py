"""Training throughput: the real input pipeline vs in-memory tensors on the same model, and seconds per epoch.

Run: python bench/train.py [--processed data/processed] [--batches 40]
Uses the train section of params.yaml (and the tune result file when present) on the default cohorts;
both figures are measured side by side in this run (the machine is shared, absolute times vary).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from her2pcr.config import load_params  # noqa: E402
from her2pcr.models.augment import AugmentConfig, Augmenter, with_augmentation  # noqa: E402
from her2pcr.models.cnn import build_model, encode_labels  # noqa: E402
from her2pcr.training.data import load_stacks, patients_of, read_index  # noqa: E402
from her2pcr.training.fit import cnn_config, make_optimizer, resolve_params, training_input  # noqa: E402


def samples_per_second(model, batches, n_batches: int) -> float:
    iterator = iter(batches)
    model.train_on_batch(*next(iterator))  # warm-up: tracing and first allocation
    start = time.perf_counter()
    samples = 0
    for _ in range(n_batches):
        x, y = next(iterator)
        model.train_on_batch(x, y)
        samples += int(y.shape[0])
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processed", type=Path, default=REPO / "data" / "processed")
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    params, source = resolve_params(load_params(REPO / "params.yaml").train)
    params = params.model_copy(update={"processed_dir": args.processed})
    keras.utils.set_random_seed(params.seed)
    index = read_index(params.processed_dir)
    ids = patients_of(index, params.train_cohorts, list(params.phases))
    stacks = load_stacks(params.processed_dir, ids, list(params.phases), index.pcr, params.max_stacks_per_patient)
    first = stacks.inputs[params.phases[0]]
    config = cnn_config(params, first.shape[1], first.shape[3])
    model = with_augmentation(build_model(config),
                              Augmenter(AugmentConfig(strength=params.augmentation_strength, seed=params.seed)))
    steps = -(-len(stacks) // params.batch_size)
    model.compile(optimizer=make_optimizer(params, steps), loss="binary_crossentropy")

    pipeline = training_input(stacks, config.output_units, params.batch_size, params.seed).repeat()
    targets = encode_labels(stacks.labels, config.output_units)
    in_memory = [({p: tf.constant(v[i:i + params.batch_size]) for p, v in stacks.inputs.items()},
                  tf.constant(targets[i:i + params.batch_size]))
                 for i in range(0, len(stacks) - params.batch_size + 1, params.batch_size)]
    repeated = (in_memory[i % len(in_memory)] for i in range(10**9))

    memory_rate = samples_per_second(model, repeated, args.batches)
    pipeline_rate = samples_per_second(model, pipeline, args.batches)
    print(f"{len(ids)} training patients, {len(stacks)} stacks of {first.shape[1:]} x {len(params.phases)} phases, "
          f"batch {params.batch_size} (hyperparameters from {source})")
    ratio = pipeline_rate / memory_rate
    print(f"in-memory tensors: {memory_rate:.1f} samples/s; input pipeline: {pipeline_rate:.1f} samples/s; "
          f"pipeline / in-memory = {ratio:.3f} (pipeline cost {1 - ratio:+.1%})")
    start = time.perf_counter()
    model.fit(training_input(stacks, config.output_units, params.batch_size, params.seed), epochs=1, verbose=0,
              shuffle=False)
    print(f"one epoch of model.fit on the pipeline: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

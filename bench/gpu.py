"""Training throughput of the paper CNN on whatever accelerator the Keras backend finds.

Synthetic inputs of the model's shape (the model's speed does not depend on the data), the same
training step as `her2pcr train`, optional mixed precision. Prints samples/s per configuration.
Needs only keras, numpy, pydantic and a backend (JAX, TensorFlow or PyTorch).
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from her2pcr.models.cnn import build_model, encode_labels, paper_config


def samples_per_second(batch_size: int, steps: int, mixed: bool) -> float:
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(0)
    config = paper_config()
    model = build_model(config)
    model.compile(optimizer=keras.optimizers.SGD(5e-4, momentum=0.99), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = {p: rng.random((batch_size, 156, 156, 3), dtype=np.float32) for p in config.phases}
    y = encode_labels(rng.integers(0, 2, batch_size), config.output_units)
    for _ in range(3):  # compile and warm up
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch(x, y)
    float(np.asarray(loss))  # wait for the device
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 128])
    args = parser.parse_args()
    devices = keras.distribution.list_devices() if hasattr(keras, "distribution") else ["?"]
    print(f"backend {keras.backend.backend()}, devices {devices}")
    for batch in args.batch_sizes:
        fp32 = samples_per_second(batch, args.steps, mixed=False)
        fp16 = samples_per_second(batch, args.steps, mixed=True)
        print(f"batch {batch}: float32 {fp32:.0f} samples/s, mixed float16 {fp16:.0f} samples/s "
              f"(ratio {fp16 / fp32:.2f})")


if __name__ == "__main__":
    main()

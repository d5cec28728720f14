#!/usr/bin/env bash
# Short training of the paper CNN on a GPU, printing samples/s (bench/gpu.py). Runs with the
# JAX backend by default, since GPU machines here carry JAX but not TensorFlow:
#   bash bench/gpu.sh            # KERAS_BACKEND=jax
#   KERAS_BACKEND=tensorflow bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export KERAS_BACKEND="${KERAS_BACKEND:-jax}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
PYTHONPATH=src "$PYTHON" bench/gpu.py "$@"

"""map_exams (in input order, in this process or on a local Dask cluster) and replace_atomically."""

from __future__ import annotations

import sys
import time

import cloudpickle
import pytest

from her2pcr.compute import map_exams, remove_temporaries, replace_atomically
from her2pcr.config import ComputeParams

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import the tests package


def slower_first(k: int) -> tuple[int, int]:
    time.sleep(0.05 * (5 - k))
    return k, k * k


def fails_on_three(k: int) -> int:
    if k == 3:
        raise ValueError("exam 3 is broken")
    return k


def test_one_local_worker_runs_in_this_process_in_order():
    assert list(map_exams(slower_first, range(5), 1, ComputeParams(), "test", progress=False)) == \
        [(k, k * k) for k in range(5)]


def test_a_local_cluster_returns_results_in_input_order_whatever_finishes_first():
    assert list(map_exams(slower_first, range(5), 2, ComputeParams(), "test", progress=False)) == \
        [(k, k * k) for k in range(5)]


def test_nothing_to_do_starts_nothing_and_an_error_propagates():
    assert list(map_exams(slower_first, [], 2, ComputeParams(scheduler="tcp://127.0.0.1:1"), "test")) == []
    with pytest.raises(ValueError, match="exam 3 is broken"):
        list(map_exams(fails_on_three, range(5), 2, ComputeParams(), "test", progress=False))


def test_replace_atomically_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.npz"
    path.write_bytes(b"old")

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(path, broken)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]
    replace_atomically(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]


def test_what_a_killed_writer_leaves_is_removed(tmp_path):
    kept = tmp_path / "P001.npz"
    kept.write_bytes(b"whole")
    (tmp_path / ".P002.4242.tmp.npz").write_bytes(b"half")
    remove_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P001.npz"]

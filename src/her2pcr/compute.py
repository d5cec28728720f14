"""Where per-exam work runs: Dask distributed, a local cluster by default or an existing one (``compute.scheduler``).

simulate, ingest, preprocess and pk_features map one pure function over their exams with :func:`map_exams`; the
results come back in input order, so a stage's outputs do not depend on how many workers computed them. A task
whose worker dies is run again on another worker (Dask's ``distributed.scheduler.allowed-failures``); functions
that write files write them whole (:func:`replace_atomically`), so a killed attempt leaves nothing half-written.
On an existing cluster the workers must see the workspace at the same path (a shared filesystem).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from her2pcr.config import ComputeParams

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


@contextmanager
def dask_client(workers: int, compute: ComputeParams) -> Iterator:
    """A client of ``compute.scheduler``, or of a local cluster of ``workers`` single-threaded worker processes."""
    from distributed import Client, LocalCluster

    if compute.scheduler:
        with Client(compute.scheduler, timeout=compute.connect_timeout_s) as client:
            log.info("Dask cluster %s, dashboard %s", compute.scheduler, client.dashboard_link)
            yield client
        return
    # Single-threaded workers: per-exam work is CPU-bound and releases no GIL worth sharing, and a worker's
    # memory_limit then bounds one exam at a time.
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      memory_limit=compute.memory_limit,
                      dashboard_address="127.0.0.1:0" if compute.dashboard else None) as cluster, \
            Client(cluster) as client:
        if compute.dashboard:
            log.info("local Dask cluster of %d workers, dashboard %s", workers, client.dashboard_link)
        yield client


def map_exams(function: Callable[[Item], Result], items: Iterable[Item], workers: int, compute: ComputeParams,
              desc: str, progress: bool = True) -> Iterator[Result]:
    """``function`` over ``items`` on the cluster, results in input order, one progress bar for the stage.

    With nothing to do, or one local worker, no cluster is started (one worker runs in this process). An
    exception raised by ``function`` propagates (stages catch the per-exam errors they report inside it)."""
    items = list(items)
    if not items:
        return
    if workers == 1 and not compute.scheduler:
        yield from tqdm(map(function, items), total=len(items), desc=desc, unit="exam", disable=not progress)
        return
    with dask_client(workers, compute) as client:
        futures = client.map(function, items, pure=False)
        with tqdm(total=len(futures), desc=desc, unit="exam", disable=not progress) as bar:
            for future in futures:
                yield future.result()
                bar.update()
                future.release()  # the result is the caller's now: free the worker's copy


TEMPORARY_GLOB = ".*.tmp*"


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` next to ``path``, then rename over it: a reader sees the old file or the whole new one.

    A killed process leaves its temporary behind: :func:`remove_temporaries` once the stage has its results."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # suffix kept: numpy adds .npz
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_temporaries(folder: Path) -> None:
    """Delete what killed attempts of :func:`replace_atomically` left in ``folder``."""
    for leftover in folder.glob(TEMPORARY_GLOB):
        leftover.unlink(missing_ok=True)

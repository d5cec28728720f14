"""A clinical-size exam (512 x 512 x 160, 6 phases) is preprocessed and its PK features computed by one Dask worker
whose memory is bounded at the figure the README's capacity plan states."""

from __future__ import annotations

import resource

import numpy as np
import pandas as pd
import pytest

from her2pcr.config import ComputeParams
from her2pcr.dicom.exam import LoadedExam
from her2pcr.features.stage import pk_features_stage
from her2pcr.ingest.stage import save_exam
from her2pcr.preprocess.settings import Box
from her2pcr.preprocess.stage import preprocess
from tests.conftest import tiny_params

pytestmark = pytest.mark.integration

#: The README's per-worker bound for one clinical-size exam (Dask's nanny kills a worker at 95 % of it).
WORKER_MEMORY_GIB = 4
SHAPE = (6, 160, 512, 512)  # (phase, slice, row, column)
SPACING_MM = (1.0, 0.7, 0.7)
BOX = Box(row_start=236, row_end=276, column_start=280, column_end=320, slice_start=70, slice_end=90)


def clinical_size_exam() -> LoadedExam:
    """An enhancing ellipsoid in a breast-shaped body under a smooth coil bias: 0.94 GiB of float32."""
    phases, slices, rows, columns = SHAPE
    z, y, x = np.ogrid[:slices, :rows, :columns]
    body = ((y - rows / 2) / (0.45 * rows)) ** 2 + ((x - columns / 2) / (0.45 * columns)) ** 2 < 1
    bias = 1 + 0.3 * x / columns + 0.2 * z / slices
    centre = [(BOX[2 * k] + BOX[2 * k + 1]) / 2 for k in range(3)]  # row, column, slice
    tumour = (((z - centre[2]) / 10) ** 2 + ((y - centre[0]) / 20) ** 2 + ((x - centre[1]) / 20) ** 2) < 1
    image = np.empty(SHAPE, np.float32)
    for phase in range(phases):
        image[phase] = (100 * body + (80 if phase == 1 else 60) * min(phase, 1) * tumour) * bias
    return LoadedExam(patient_id="CLIN-001", image=image, spacing_mm=SPACING_MM, origin_mm=(0.0, 0.0, 0.0),
                      direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
                      phase_times_s=[60.0 * k for k in range(phases)], order_rule="test", resampled_phases=[],
                      warnings=[], acquisition={})


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def test_a_clinical_size_exam_stays_within_the_worker_memory_bound(tmp_path):
    from distributed import Client, LocalCluster

    interim = tmp_path / "interim"
    (interim / "exams").mkdir(parents=True)
    save_exam(clinical_size_exam(), interim / "exams" / "CLIN-001.npz")
    pd.DataFrame([{"patient_id": "CLIN-001", "cohort": "D3", "pcr": 1, "institution": "inst2", **BOX._asdict()}]) \
        .to_parquet(interim / "clinical.parquet", index=False)
    params = tiny_params().preprocess.model_copy(update={"interim_dir": interim, "out_dir": tmp_path / "processed"})

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      memory_limit=f"{WORKER_MEMORY_GIB}GiB") as cluster, Client(cluster) as client:
        compute = ComputeParams(scheduler=cluster.scheduler_address)
        # A worker past the bound is killed and its task retried elsewhere until Dask gives up: a stage that
        # completes ran within it.
        assert preprocess(params, progress=False, compute=compute) == {"exams": 1, "computed": 1, "reused": 0}
        features = pk_features_stage(interim, tmp_path / "features", 70, compute=compute, progress=False)
        (peak,) = client.run(peak_rss_gib).values()  # exact, where the nanny samples every few hundred ms

    assert peak < 0.95 * WORKER_MEMORY_GIB, f"the worker peaked at {peak:.2f} GiB"
    assert features["features"] == 1 and features["skipped"] == 0
    with np.load(tmp_path / "processed" / "CLIN-001.npz") as stacks:
        assert stacks["sub1"].shape == (BOX.slice_end - BOX.slice_start + 1, params.input_size, params.input_size,
                                        params.channels)
        assert float(stacks["sub1"].max()) > 0  # the enhancing tumour is in the VOI

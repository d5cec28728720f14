"""The preprocess stage on the tiny cohort: outputs, VOI around the tumour, incremental re-runs."""

import shutil

import numpy as np
import pandas as pd
import pytest

from her2pcr.ingest.stage import ingest
from her2pcr.preprocess.stage import preprocess
from tests.conftest import profile_params

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def staged(tiny_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    params = profile_params("tiny")
    ingest_params = params.ingest.model_copy(update={"source_dir": tiny_cohort, "out_dir": out / "interim",
                                                     "reports_dir": out / "reports"})
    ingest(ingest_params, params.cohorts, progress=False)
    pre = params.preprocess.model_copy(update={"interim_dir": out / "interim", "out_dir": out / "processed"})
    return pre, preprocess(pre, progress=False)


def test_every_exam_gives_standardised_stacks_per_phase_and_subtraction(staged, tiny_cohort):
    params, counts = staged
    index = pd.read_parquet(params.out_dir / "index.parquet")
    truth = pd.read_csv(tiny_cohort / "truth.csv").set_index("patient_id")
    assert counts["computed"] == len(index) == len(truth)
    clinical = pd.read_parquet(params.interim_dir / "clinical.parquet").set_index("patient_id")
    for row in index.itertuples():
        with np.load(params.out_dir / f"{row.patient_id}.npz") as data:
            names = [k for k in data.files if k != "key"]
            n_post = int(truth.loc[row.patient_id, "acq_n_post"])
            assert names == ["pre", *(f"post{k}" for k in range(1, n_post + 1)),
                             *(f"sub{k}" for k in range(1, n_post + 1))]
            size = params.input_size
            for name in names:
                stacks = data[name]
                assert stacks.shape == (row.n_stacks, size, size, 3) and stacks.dtype == np.float16
                assert stacks.min() >= 0 and stacks.max() <= 1
        box = clinical.loc[row.patient_id]
        t = truth.loc[row.patient_id]
        assert box.slice_start <= t.centroid_slice <= box.slice_end + 1  # the VOI holds the tumour centroid
        assert box.row_start <= t.centroid_row <= box.row_end + 1
        assert box.column_start <= t.centroid_column <= box.column_end + 1
        assert row.n_stacks == box.slice_end - box.slice_start + 1


def test_rerun_after_changing_one_exam_recomputes_only_it(staged, tmp_path):
    params, _ = staged
    work = params.model_copy(update={"interim_dir": tmp_path / "interim", "out_dir": tmp_path / "processed"})
    shutil.copytree(params.interim_dir, work.interim_dir)
    shutil.copytree(params.out_dir, work.out_dir)
    assert preprocess(work, progress=False) == {"exams": 22, "computed": 0, "reused": 22}
    target = sorted((work.interim_dir / "exams").glob("*.npz"))[0]
    with np.load(target) as exam:
        data = dict(exam)
    data["image"] = (data["image"] * 0.9).astype(data["image"].dtype)
    np.savez_compressed(target, **data)
    assert preprocess(work, progress=False) == {"exams": 22, "computed": 1, "reused": 21}
    clean = work.model_copy(update={"out_dir": tmp_path / "clean"})
    preprocess(clean, progress=False)
    for path in sorted(clean.out_dir.glob("*.npz")):
        with np.load(path) as a, np.load(work.out_dir / path.name) as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)

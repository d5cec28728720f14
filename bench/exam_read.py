"""Reading one exam: the served path against ingest's, side by side in one process.

A served exam request arrives as a zip. It used to be written to a temporary folder and read as ingest reads a
folder: every file's header (pixels deferred), then each used file again for its pixels. It is now read once,
from memory: ``read_zip`` + ``discover_in_memory`` (pixels decoded while each file is read) + ``load_exam``.

For each of ``--patients`` external exams (cycled ``--repeats`` times) this times both paths from the same zip
bytes, checks that they load equal arrays, and prints the median of each step and the ratio memory / disk.

Run (in a workspace where `make run` wrote the cohorts): python bench/exam_read.py [--workspace .]
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

from her2pcr.config import SeriesRules, load_params  # noqa: E402
from her2pcr.dicom.discover import discover, discover_in_memory  # noqa: E402
from her2pcr.dicom.exam import load_exam  # noqa: E402
from her2pcr.dicom.series import select_dce_series  # noqa: E402
from her2pcr.serving.client import exam_record  # noqa: E402
from her2pcr.serving.model import STUDY_TAG  # noqa: E402
from her2pcr.serving.requests import Limits, decode_base64, read_zip  # noqa: E402


def load_selected(found, decoded=None):
    headers = next(iter(found.files_by_patient.values()))
    return load_exam(select_dce_series(headers, SeriesRules()).headers, "request", decoded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=Path("."))
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    workspace = args.workspace.resolve()
    params = load_params(workspace / "params.yaml")
    limits = Limits(max_payload_mb=params.serve.max_payload_mb, max_uncompressed_mb=params.serve.max_uncompressed_mb,
                    max_compression_ratio=params.serve.max_compression_ratio, max_files=params.serve.max_files)
    clinical = pd.read_parquet(workspace / params.ingest.out_dir / "clinical.parquet")
    external = clinical[clinical.cohort.isin(list(params.cohorts.external))].patient_id[:args.patients]
    dicom = workspace / params.ingest.source_dir / params.ingest.dicom_subdir
    zips = [decode_base64(exam_record(dicom / pid, (0, 0, 0, 0, 0, 0))["dicom_zip"], "dicom_zip",
                          params.serve.max_payload_mb) for pid in external]
    steps: dict[str, list[float]] = {k: [] for k in ("memory: unzip", "memory: discover + decode", "memory: load",
                                                      "disk: unzip + write", "disk: discover", "disk: load",
                                                      "disk: remove folder")}
    memory_total, disk_total = [], []
    for data in zips * args.repeats:
        t0 = time.perf_counter()
        files, _ = read_zip(data, limits)
        t1 = time.perf_counter()
        found = discover_in_memory(files, STUDY_TAG)
        t2 = time.perf_counter()
        from_memory = load_selected(found, found.pixels)
        t3 = time.perf_counter()
        folder = Path(tempfile.mkdtemp(prefix="her2pcr-bench-"))
        try:
            t4 = time.perf_counter()
            for name, content in read_zip(data, limits)[0].items():  # as the served path did before: unzip, write
                (folder / name).write_bytes(content)
            t5 = time.perf_counter()
            found_on_disk = discover(folder, STUDY_TAG)
            t6 = time.perf_counter()
            from_disk = load_selected(found_on_disk)
            t7 = time.perf_counter()
            shutil.rmtree(folder)
            t8 = time.perf_counter()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if not np.array_equal(from_memory.image, from_disk.image):
            raise SystemExit("the two paths loaded different arrays")
        for key, seconds in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t6 - t5, t7 - t6, t8 - t7), strict=True):
            steps[key].append(seconds)
        memory_total.append(t3 - t0)
        disk_total.append(t8 - t4)
    print(f"{len(zips)} external exams x {args.repeats}, equal arrays on every read")
    for key, seconds in steps.items():
        print(f"  {key:28s} median {1000 * np.median(seconds):6.0f} ms")
    memory, disk = np.median(memory_total), np.median(disk_total)
    print(f"exam read, median: from memory {1000 * memory:.0f} ms, through disk {1000 * disk:.0f} ms, "
          f"ratio memory / disk {memory / disk:.3f}")


if __name__ == "__main__":
    main()

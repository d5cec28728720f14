"""DICOMweb with a PACS (dicomweb-client): store a folder (STOW-RS), find studies (QIDO-RS), pull them (WADO-RS).

A pulled study is written as ``<dicom_dir>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, the
layout ingest reads as it is. Nothing is half-written: series are retrieved into the hidden folder
``<dicom_dir>/.partial/<study>`` (ingest skips hidden folders), each series is kept there once all of its instances
are written and their number equals what QIDO-RS announced, and the study is moved into place in one rename once
every series is. An interrupted pull therefore resumes at the first series it had not finished. Only MR series are
pulled: a study may also hold results (her2pcr's own SR), which are no input.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

log = logging.getLogger(__name__)

STUDY_UID, SERIES_UID, SERIES_INSTANCES = "0020000D", "0020000E", "00201209"  # DICOM JSON keys (tags)
COMPLETE = ".complete"  # marker of a fully written series or study: hidden, so ingest never reads it
PARTIAL = ".partial"
REPORT_FILE = "pull-report.csv"


def client(url: str, timeout_s: float = 300):
    """A DICOMweb client of the PACS root ``url`` (e.g. ``http://127.0.0.1:8042/dicom-web``)."""
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url.rstrip("/"), timeout=timeout_s)


def search_all(search, key: str, page: int = 500, **kwargs) -> list[dict]:
    """Every record of a QIDO-RS search, page by page, each key once.

    Written here because dicomweb-client's ``get_remaining`` pages until an empty page, and a PACS that ignores
    ``offset`` for some filters (Orthanc 1.10 with ``ModalitiesInStudy``) returns the same page forever.
    """
    records: dict[str, dict] = {}
    offset = 0
    while True:
        batch = search(limit=page, offset=offset, **kwargs)
        new = {_value(r, key): r for r in batch if _value(r, key) not in records}
        records.update(new)
        if len(batch) < page or not new:
            return list(records.values())
        offset += len(batch)


def _value(record: dict, tag: str):
    values = record.get(tag, {}).get("Value") or [None]
    return values[0]


@dataclass(frozen=True)
class StoreResult:
    stored: int
    problems: list[tuple[str, str]]  # (file, reason)


def store_folder(dicomweb, folder: Path, batch_size: int = 64, progress: bool = True) -> StoreResult:
    """STOW-RS every DICOM file under ``folder`` (hidden files skipped), in batches; unreadable files listed."""
    from tqdm import tqdm

    from her2pcr.serving.client import exam_files

    paths = exam_files(folder)
    problems, batch, stored = [], [], 0
    for path in tqdm(paths, desc="push", unit="file", disable=not progress):
        try:
            batch.append(pydicom.dcmread(path))
        except (InvalidDicomError, OSError, ValueError) as error:
            problems.append((str(path), f"not a readable DICOM file: {error}"))
        if len(batch) == batch_size or (path == paths[-1] and batch):
            dicomweb.store_instances(batch)
            stored, batch = stored + len(batch), []
    return StoreResult(stored, problems)


@dataclass(frozen=True)
class StudyQuery:
    """What to pull: study UIDs and/or accession numbers, or every MR study in a date range."""

    study_uids: tuple[str, ...] = ()
    accession_numbers: tuple[str, ...] = ()
    study_date: str | None = None  # YYYYMMDD-YYYYMMDD, a DICOM date range

    def searches(self) -> list[tuple[str, dict]]:
        """(what was asked, QIDO-RS filters) per search; an empty query is refused."""
        found = [(f"StudyInstanceUID {uid}", {"StudyInstanceUID": uid}) for uid in self.study_uids]
        found += [(f"AccessionNumber {a}", {"AccessionNumber": a}) for a in self.accession_numbers]
        if self.study_date:
            found.append((f"StudyDate {self.study_date}", {"StudyDate": self.study_date}))
        if not found:
            raise ValueError("nothing to pull: give a manifest, accession numbers or a study date range")
        return found


def read_manifest(path: Path) -> StudyQuery:
    """A CSV with a ``StudyInstanceUID`` and/or an ``AccessionNumber`` column (DICOM keywords)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0]) if rows else set()
    if not columns & {"StudyInstanceUID", "AccessionNumber"}:
        raise ValueError(f"{path}: needs a StudyInstanceUID or AccessionNumber column, has {sorted(columns)}")
    uids = tuple(r["StudyInstanceUID"].strip() for r in rows if (r.get("StudyInstanceUID") or "").strip())
    accessions = tuple(r["AccessionNumber"].strip() for r in rows
                       if (r.get("AccessionNumber") or "").strip() and not (r.get("StudyInstanceUID") or "").strip())
    return StudyQuery(uids, accessions)


@dataclass(frozen=True)
class StudyOutcome:
    """One line of the pull report: a study (or a search that found none) and what happened."""

    query: str
    study_instance_uid: str
    status: str  # pulled | already pulled | failed | not found
    instances: int
    reason: str = ""


def find_studies(dicomweb, query: StudyQuery) -> tuple[list[tuple[str, str]], list[StudyOutcome]]:
    """QIDO-RS: (query, study UID) per MR study found, and the searches that found none."""
    studies: dict[str, tuple[str, str]] = {}
    not_found = []
    for asked, filters in query.searches():
        records = search_all(dicomweb.search_for_studies, STUDY_UID,
                             search_filters={**filters, "ModalitiesInStudy": "MR"})
        if not records:
            not_found.append(StudyOutcome(asked, "", "not found", 0, "no MR study matches in the PACS"))
        for record in records:
            uid = _value(record, STUDY_UID)
            studies.setdefault(uid, (asked, uid))
    return list(studies.values()), not_found


def _write_series(datasets: Iterable[Dataset], folder: Path, announced: int) -> int:
    """Write a retrieved series; marked complete only when it holds the ``announced`` instances (0: unknown)."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for ds in datasets:
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        count += 1
    if announced and count != announced:
        raise RuntimeError(f"series {folder.name}: the PACS announced {announced} instances and delivered {count}")
    (folder / COMPLETE).write_text(json.dumps({"instances": count}))
    return count


def _series_count(folder: Path) -> int:
    return json.loads((folder / COMPLETE).read_text())["instances"]


def pull_study(dicomweb, study_uid: str, dicom_dir: Path) -> tuple[str, int]:
    """Retrieve one study's MR series one by one into its partial folder, then move it into place.

    Returns (status, instances). Raises RuntimeError when the PACS delivers another number of instances of a series
    than it announced.
    """
    final = dicom_dir / study_uid
    if (final / COMPLETE).exists():
        return "already pulled", _series_count(final)
    partial = dicom_dir / PARTIAL / study_uid
    total = 0
    for series in search_all(dicomweb.search_for_series, SERIES_UID, study_instance_uid=study_uid,
                             search_filters={"Modality": "MR"}, fields=["NumberOfSeriesRelatedInstances"]):
        series_uid = _value(series, SERIES_UID)
        folder = partial / series_uid
        if (folder / COMPLETE).exists():  # finished before an interruption
            total += _series_count(folder)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        announced = int(_value(series, SERIES_INSTANCES) or 0)
        total += _write_series(dicomweb.retrieve_series(study_uid, series_uid), folder, announced)
    (partial / COMPLETE).write_text(json.dumps({"instances": total}))
    shutil.rmtree(final, ignore_errors=True)  # a copy left by hand, never a completed pull (checked above)
    os.replace(partial, final)
    return "pulled", total


def pull(dicomweb, query: StudyQuery, dicom_dir: Path, progress: bool = True) -> list[StudyOutcome]:
    """Every study the query finds, pulled or already there; a study that fails is reported and the rest go on."""
    from tqdm import tqdm

    studies, outcomes = find_studies(dicomweb, query)
    dicom_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(studies, desc="pull", unit="study", disable=not progress)
    for asked, uid in bar:
        try:
            status, count = pull_study(dicomweb, uid, dicom_dir)
            outcomes.append(StudyOutcome(asked, uid, status, count))
        except Exception as error:  # noqa: BLE001 - one study's failure (HTTP, disk, PACS) must not stop the rest
            reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            log.error("study %s could not be pulled: %s", uid, reason)
            outcomes.append(StudyOutcome(asked, uid, "failed", 0, reason))
        bar.set_postfix(instances=sum(o.instances for o in outcomes))
    return outcomes


def write_report(outcomes: Sequence[StudyOutcome], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(StudyOutcome.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(o) for o in outcomes)

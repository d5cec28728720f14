"""The interim tables ingest writes (data/interim/clinical.parquet, acquisition.parquet) and their per-cohort copies.

Beside each whole table, ingest writes ``cohorts/<cohort>/<table>.parquet``. A stage that concerns some cohorts
reads, and DVC-depends on, their folders only, so a new external cohort leaves the other cohorts' stages alone
(the exams' contents are covered by data/processed/cohorts/<cohort>.parquet, which holds each exam's content key).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

COHORTS_DIR = "cohorts"
TABLES = ("clinical", "acquisition")


def write_cohort_tables(interim_dir: Path, tables: dict[str, pd.DataFrame], cohort_of: pd.Series) -> None:
    """Each table's rows (column ``patient_id``) split by ``cohort_of`` (patient -> cohort); a file whose rows are
    unchanged is left as it is, and folders of cohorts that no longer exist are removed."""
    root = interim_dir / COHORTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    cohorts = set(cohort_of.dropna())
    for stale in root.iterdir():
        if stale.name not in cohorts:
            for path in stale.glob("*"):
                path.unlink()
            stale.rmdir()
    for cohort in sorted(cohorts):
        members = set(cohort_of.index[cohort_of == cohort])
        (root / cohort).mkdir(exist_ok=True)
        for name, table in tables.items():
            write_if_changed(table[table.patient_id.isin(members)].sort_values("patient_id").reset_index(drop=True),
                             root / cohort / f"{name}.parquet")


def write_if_changed(rows: pd.DataFrame, path: Path) -> None:
    """Write ``rows`` to ``path`` unless it already holds them: a per-cohort file keeps its bytes, and so its DVC
    hash, while other cohorts change."""
    if not (path.exists() and pd.read_parquet(path).equals(rows)):
        rows.to_parquet(path, index=False)


def read_table(interim_dir: Path, name: str, cohorts: list[str] | None = None) -> pd.DataFrame:
    """An interim table indexed by ``patient_id``: whole, or only the rows of ``cohorts`` (from their own files)."""
    if name not in TABLES:
        raise ValueError(f"unknown interim table {name!r}; there are {list(TABLES)}")
    if cohorts is None:
        return pd.read_parquet(interim_dir / f"{name}.parquet").set_index("patient_id")
    files = [interim_dir / COHORTS_DIR / cohort / f"{name}.parquet" for cohort in dict.fromkeys(cohorts)]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"no ingested patients for cohort file(s) {missing}: run ingest (or check the cohort "
                                "names)")
    return pd.concat([pd.read_parquet(f) for f in files]).set_index("patient_id")

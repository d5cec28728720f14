import pandas as pd
import pytest

from her2pcr.interim import COHORTS_DIR, read_table, write_cohort_tables


def tables():
    clinical = pd.DataFrame({"patient_id": ["b", "a", "c", "d"], "cohort": ["D1", "D1", "D3", None],
                             "age": [50, 60, 70, 80]})
    acquisition = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "field_strength_t": [1.5, 3.0, 1.5, 3.0]})
    return {"clinical": clinical, "acquisition": acquisition}, clinical.set_index("patient_id").cohort


def test_each_cohort_reads_back_its_own_rows_and_only_those(tmp_path):
    frames, cohort_of = tables()
    for name, frame in frames.items():
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    write_cohort_tables(tmp_path, frames, cohort_of)
    assert sorted(p.name for p in (tmp_path / COHORTS_DIR).iterdir()) == ["D1", "D3"]  # no cohort, no folder
    d1 = read_table(tmp_path, "clinical", ["D1"])
    assert list(d1.index) == ["a", "b"] and list(d1.age) == [60, 50]
    both = read_table(tmp_path, "acquisition", ["D3", "D1", "D3"])
    assert list(both.index) == ["c", "a", "b"]
    assert read_table(tmp_path, "clinical").index.tolist() == ["b", "a", "c", "d"]  # the whole table


def test_an_unchanged_cohort_file_is_not_rewritten_and_a_gone_cohort_is_removed(tmp_path):
    frames, cohort_of = tables()
    write_cohort_tables(tmp_path, frames, cohort_of)
    d1 = tmp_path / COHORTS_DIR / "D1" / "clinical.parquet"
    before = d1.stat().st_mtime_ns
    fewer = {name: frame[frame.patient_id != "c"] for name, frame in frames.items()}
    write_cohort_tables(tmp_path, fewer, cohort_of.drop("c"))
    assert d1.stat().st_mtime_ns == before
    assert not (tmp_path / COHORTS_DIR / "D3").exists()


def test_a_missing_cohort_or_table_is_named(tmp_path):
    frames, cohort_of = tables()
    write_cohort_tables(tmp_path, frames, cohort_of)
    with pytest.raises(FileNotFoundError, match="D9"):
        read_table(tmp_path, "clinical", ["D1", "D9"])
    with pytest.raises(ValueError, match="boxes"):
        read_table(tmp_path, "boxes", ["D1"])

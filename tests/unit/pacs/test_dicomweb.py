import pytest

from her2pcr.pacs.dicomweb import STUDY_UID, StudyQuery, read_manifest, search_all


def record(uid: str) -> dict:
    return {STUDY_UID: {"vr": "UI", "Value": [uid]}}


def test_search_all_pages_until_a_short_page():
    uids = [f"1.2.{k}" for k in range(7)]
    calls = []

    def search(limit, offset, **kwargs):
        calls.append((limit, offset))
        return [record(u) for u in uids[offset:offset + limit]]

    assert [r[STUDY_UID]["Value"][0] for r in search_all(search, STUDY_UID, page=3)] == uids
    assert calls == [(3, 0), (3, 3), (3, 6)]


def test_search_all_stops_when_the_pacs_ignores_the_offset():
    def search(limit, offset, **kwargs):  # Orthanc 1.10 with ModalitiesInStudy: the same page whatever the offset
        return [record(f"1.2.{k}") for k in range(limit)]

    assert len(search_all(search, STUDY_UID, page=4)) == 4


def test_a_manifest_names_studies_by_uid_or_accession(tmp_path):
    path = tmp_path / "studies.csv"
    path.write_text("StudyInstanceUID,AccessionNumber\n1.2.3,\n,A17\n 1.2.4 ,A18\n")
    query = read_manifest(path)
    assert query.study_uids == ("1.2.3", "1.2.4") and query.accession_numbers == ("A17",)
    assert [asked for asked, _ in query.searches()] == ["StudyInstanceUID 1.2.3", "StudyInstanceUID 1.2.4",
                                                        "AccessionNumber A17"]
    (tmp_path / "bad.csv").write_text("patient_id\np1\n")
    with pytest.raises(ValueError, match="needs a StudyInstanceUID or AccessionNumber column"):
        read_manifest(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="nothing to pull"):
        StudyQuery().searches()

import json

import pytest

from her2pcr.serving.client import exam_files, pseudonymised_zip, restore_sr_content
from her2pcr.serving.deid import Pseudonymiser


def test_a_file_that_is_not_dicom_is_refused_by_its_path_before_anything_is_sent(tmp_path):
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "notes.txt").write_text("DOE^JANE")
    (tmp_path / ".complete").write_text("{}")  # hidden: a pull's marker, never sent
    assert exam_files(tmp_path) == [tmp_path / "series" / "notes.txt"]
    with pytest.raises(ValueError, match="notes.txt: not a readable DICOM file"):
        pseudonymised_zip(exam_files(tmp_path), Pseudonymiser())


def test_the_answer_uids_are_mapped_back_to_the_exam_s_own():
    p = Pseudonymiser()
    study, series, sop = p.uid("1.2.3"), p.uid("1.2.3.4"), p.uid("1.2.3.4.5")
    content = {"study_instance_uid": study, "phases": [
        {"phase": "pre", "series_instance_uid": series, "slices": [["1.2.840.10008.5.1.4.1.1.4", sop, None]]}]}
    restored = restore_sr_content({"sr_content": json.dumps(content)}, p)
    assert restored["study_instance_uid"] == "1.2.3"
    assert restored["phases"][0]["series_instance_uid"] == "1.2.3.4"
    assert restored["phases"][0]["slices"] == [["1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.5", None]]
    assert restore_sr_content({"sr_content": None}, p) is None

import pandas as pd

from her2pcr.config import CohortsParams, load_params
from her2pcr.ingest.cohorts import assign_cohorts
from her2pcr.ingest.manifests import box_problem, normalise_clinical, read_table, row_problems
from tests.conftest import REPO

PARAMS = load_params(REPO / "params.yaml")


def clinical_frame(**overrides):
    row = {"patient_id": "p1", "age": "50", "er": "pos", "pr": "NEG", "stage": "II", "lymph_node": "1",
           "longest_diameter_mm": "40", "regimen": "DCTP", "pcr": "1", "institution": "inst1"}
    row.update(overrides)
    return normalise_clinical(pd.DataFrame([row]), PARAMS.ingest)


def test_receptor_spellings_are_normalised():
    frame = clinical_frame()
    assert frame.er[0] == "positive" and frame.pr[0] == "negative" and frame.lymph_node[0] == "positive"


def test_an_excel_manifest_with_numeric_codes_reads_like_the_csv(tmp_path):
    """Spreadsheet cells hold numbers (ER 1/0, pCR 1/0); they map through ingest.positive_values as text does."""
    rows = [{"patient_id": "p1", "age": 50, "er": 1, "pr": 0, "stage": "II", "lymph_node": 1,
             "longest_diameter_mm": 40.5, "regimen": "DCTP", "pcr": 1, "institution": "inst1"},
            {"patient_id": "p2", "age": 61, "er": 0, "pr": 1, "stage": "III", "lymph_node": 0,
             "longest_diameter_mm": 22, "regimen": "DCTP", "pcr": 0, "institution": "inst1"}]
    pd.DataFrame(rows).to_excel(tmp_path / "clinical.xlsx", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "clinical.csv", index=False)
    mapping = PARAMS.ingest.clinical_columns
    from_excel, from_csv = (normalise_clinical(read_table(tmp_path / f"clinical.{ext}", mapping, "clinical"),
                                               PARAMS.ingest) for ext in ("xlsx", "csv"))
    assert list(from_excel.er) == ["positive", "negative"] and list(from_excel.pr) == ["negative", "positive"]
    pd.testing.assert_frame_equal(from_excel, from_csv)


def test_each_row_problem_names_its_column():
    boxes = pd.DataFrame({"patient_id": ["p1"]})
    assert row_problems(clinical_frame(pcr=None), boxes) == {"p1": ["clinical manifest: pcr label is missing"]}
    expected = {"p1": ["clinical manifest: age is missing or not a number"]}
    assert row_problems(clinical_frame(age="n/a"), boxes) == expected
    assert row_problems(clinical_frame(), pd.DataFrame({"patient_id": ["p2"]})) == {
        "p1": ["box manifest: no tumour box for this patient"],
        "p2": ["clinical manifest: no clinical row for this patient"]}


def test_box_outside_the_volume_is_named():
    box = pd.Series({"row_start": 10, "row_end": 70, "column_start": 5, "column_end": 20, "slice_start": 0,
                     "slice_end": 3})
    assert "rows 10-70" in box_problem(box, (16, 64, 64))
    assert box_problem(box, (16, 80, 64)) is None


def test_internal_split_is_stratified_and_externals_follow_institutions():
    ids = [f"a{i:02d}" for i in range(20)] + ["b1", "c1"]
    clinical = pd.DataFrame({"institution": ["inst1"] * 20 + ["inst2", "inst4"],
                             "pcr": [0, 1] * 10 + [1, 0]}, index=ids)
    params = CohortsParams(split_seed=1, internal={"institutions": ["inst1"], "train": "D1", "validation": "D2",
                                                   "validation_size": 6},
                           external={"D3": ["inst2"], "D4": ["inst3", "inst4"]})
    cohort = assign_cohorts(clinical, params)
    assert (cohort == "D2").sum() == 6 and clinical.pcr[cohort == "D2"].sum() == 3
    assert cohort["b1"] == "D3" and cohort["c1"] == "D4"
    assert cohort.equals(assign_cohorts(clinical, params))


def test_a_sheet_with_a_three_row_header_and_coded_values_reads_through_value_maps(tmp_path):
    from her2pcr.ingest.manifests import decode_values

    sheet = pd.DataFrame([["", "Tumor Characteristics", ""], ["Patient ID", "ER", "Neoadjuvant Chemotherapy"],
                          ["", "{0 = neg, 1 = pos}", "{1 = DCTP, 2 = DCT}"], ["B1", "1", "2"], ["B2", "0", "7"]])
    sheet.to_excel(tmp_path / "clinical.xlsx", header=False, index=False)
    frame = read_table(tmp_path / "clinical.xlsx", {"patient_id": "Patient ID", "er": "ER",
                                                     "regimen": "Neoadjuvant Chemotherapy"}, "clinical",
                       header_rows=3, names_row=1)
    assert list(frame.patient_id) == ["B1", "B2"]
    decoded, problems = decode_values(frame, {"er": {"0": "negative", "1": "positive"},
                                              "regimen": {"1": "DCTP", "2": "DCT"}})
    assert list(decoded.er) == ["positive", "negative"] and decoded.regimen[0] == "DCT"
    assert pd.isna(decoded.regimen[1])
    assert problems == {"B2": ["clinical manifest: regimen code '7' is not in ingest.value_maps.regimen "
                               "['1', '2']"]}


def test_a_box_counted_from_the_other_end_is_flipped_into_position_order():
    from her2pcr.ingest.manifests import box_in_position_order

    box = pd.Series({"row_start": 1, "row_end": 5, "column_start": 2, "column_end": 6, "slice_start": 0,
                     "slice_end": 3})
    flipped = box_in_position_order(box, n_slices=10)
    assert (flipped.slice_start, flipped.slice_end) == (6, 9) and flipped.row_start == 1
    assert box_in_position_order(flipped, 10).equals(box)

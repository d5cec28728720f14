import numpy as np
import pandas as pd
import pytest

from her2pcr.training.data import (
    StackSet,
    central_slice,
    load_stacks,
    patient_probabilities,
    patients_of,
    spread_slice_indices,
)


def test_training_stacks_spread_over_the_whole_voi():
    assert spread_slice_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert spread_slice_indices(3, 8).tolist() == [0, 1, 2]
    assert spread_slice_indices(5, None).tolist() == [0, 1, 2, 3, 4]


def test_patient_probability_is_the_mean_over_its_stacks():
    result = patient_probabilities(np.array([0.2, 0.4, 0.9]), np.array(["a", "a", "b"]))
    assert result.to_dict() == pytest.approx({"a": 0.3, "b": 0.9})


def test_the_central_stacks_are_the_middle_fraction_in_slice_order():
    assert central_slice(10, 0.5) == slice(2, 7)
    assert central_slice(9, 0.5) == slice(2, 6)  # 4 of 9 (round half to even): one off centre at most
    assert central_slice(1, 0.5) == slice(0, 1) and central_slice(3, 0.1) == slice(1, 2)  # never empty
    assert central_slice(7, 1.0) == slice(0, 7)
    # patients interleaved on purpose: each keeps its own middle stacks, in their order
    ids = np.array(["a", "b", "a", "a", "b", "a", "b", "b"])
    stacks = StackSet({"pre": np.arange(8, dtype=np.float32).reshape(8, 1, 1, 1)}, (ids == "a").astype(int), ids)
    middle = stacks.central(0.5)
    assert middle.inputs["pre"].ravel().tolist() == [2, 3, 4, 6]  # a: rows 0 2 3 5 -> 2 3; b: 1 4 6 7 -> 4 6
    assert middle.patient_ids.tolist() == ["a", "a", "b", "b"] and middle.labels.tolist() == [1, 1, 0, 0]
    assert stacks.central(1.0) is stacks


def test_load_stacks_and_phase_requirements(tmp_path):
    for pid, n in (("a", 4), ("b", 2)):
        np.savez(tmp_path / f"{pid}.npz", pre=np.full((n, 8, 8, 3), 0.1, np.float32),
                 post1=np.full((n, 8, 8, 3), 0.2, np.float32))
    index = pd.DataFrame({"cohort": ["D1", "D1"], "pcr": [1, 0], "phases": ["pre;post1", "pre;post1"]},
                         index=pd.Index(["a", "b"], name="patient_id"))
    stacks = load_stacks(tmp_path, ["a", "b"], ["pre", "post1"], index.pcr, max_stacks_per_patient=3)
    assert len(stacks) == 5 and stacks.inputs["post1"].shape == (5, 8, 8, 3)
    assert stacks.labels.tolist() == [1, 1, 1, 0, 0] and stacks.patient_ids.tolist() == ["a"] * 3 + ["b"] * 2
    assert patients_of(index, ["D1"], ["pre", "post3"]) == []
    with pytest.raises(ValueError, match="lacks phase"):
        load_stacks(tmp_path, ["a"], ["post3"], index.pcr)


def test_a_cohort_without_patients_selects_none(tmp_path):
    index = pd.DataFrame({"patient_id": ["a"], "cohort": ["D1"], "pcr": [1], "phases": ["pre;post1"]})
    index.to_parquet(tmp_path / "index.parquet")  # read back as the stages do (Arrow-backed strings)
    stored = pd.read_parquet(tmp_path / "index.parquet").set_index("patient_id")
    assert patients_of(stored, ["D9"], ["pre"]) == []
    assert patients_of(stored, ["D1"], ["pre"]) == ["a"]

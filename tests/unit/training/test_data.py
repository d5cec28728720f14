import numpy as np
import pandas as pd
import pytest

from her2pcr.training.data import load_stacks, patient_probabilities, patients_of, spread_slice_indices


def test_training_stacks_spread_over_the_whole_voi():
    assert spread_slice_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert spread_slice_indices(3, 8).tolist() == [0, 1, 2]
    assert spread_slice_indices(5, None).tolist() == [0, 1, 2, 3, 4]


def test_patient_probability_is_the_mean_over_its_stacks():
    result = patient_probabilities(np.array([0.2, 0.4, 0.9]), np.array(["a", "a", "b"]))
    assert result.to_dict() == pytest.approx({"a": 0.3, "b": 0.9})


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

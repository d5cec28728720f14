import pytest

from her2pcr.config import RegistryParams
from her2pcr.registry.promote import PromotionRefused, gate_status, promote, registry_table
from her2pcr.registry.tags import FAIL, PASS, gate_tag, reasons_tag

COHORTS = ["D3", "D4"]


def test_gate_status_needs_a_pass_on_every_cohort():
    assert gate_status({gate_tag("D3"): PASS, gate_tag("D4"): PASS}, COHORTS).passed
    status = gate_status({gate_tag("D3"): PASS, gate_tag("D4"): FAIL, reasons_tag("D4"): "auc fail: 0.41"}, COHORTS)
    assert not status.passed and status.failures() == ["D4: gate fail (auc fail: 0.41)"]
    missing = gate_status({gate_tag("D3"): PASS}, COHORTS)
    assert not missing.passed and "D4: not validated" in missing.failures()[0]


@pytest.fixture
def registry(tmp_path):
    """A real SQLite registry with two versions; version 2 is the challenger."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = RegistryParams(model_name="m", registered_file=tmp_path / "registered.json")
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", source=str(tmp_path))
    client.set_registered_model_alias("m", params.challenger_alias, "2")
    return client, params


def tag_gates(client, version, d3, d4):
    client.set_model_version_tag("m", version, gate_tag("D3"), d3)
    client.set_model_version_tag("m", version, gate_tag("D4"), d4)


def test_promote_moves_champion_only_after_every_gate_passed(registry):
    client, params = registry
    tag_gates(client, "2", PASS, FAIL)
    with pytest.raises(PromotionRefused, match="version 2 is not promoted: D4: gate fail"):
        promote(client, params, COHORTS)
    assert "champion" not in client.get_registered_model("m").aliases
    tag_gates(client, "2", PASS, PASS)
    assert promote(client, params, COHORTS)[0] == "2"
    assert client.get_model_version_by_alias("m", "champion").version in ("2", 2)
    assert client.get_model_version("m", "2").tags["promotion.forced"] == "false"


def test_a_forced_promotion_needs_a_reason_and_is_recorded(registry):
    client, params = registry
    with pytest.raises(ValueError, match="needs --reason"):
        promote(client, params, COHORTS, version="1", force=True, reason=" ")
    version, status = promote(client, params, COHORTS, version="1", force=True, reason="reader study")
    tags = client.get_model_version("m", "1").tags
    assert version == "1" and not status.passed
    assert tags["promotion.forced"] == "true" and tags["promotion.reason"] == "reader study"
    assert "D3: not validated" in tags["promotion.overridden_gates"]
    table = registry_table(client, params, COHORTS)
    assert list(table.version) == [2, 1]
    assert table.set_index("version").loc[1, "aliases"] == "champion"
    assert table.set_index("version").loc[2, "aliases"] == "challenger"

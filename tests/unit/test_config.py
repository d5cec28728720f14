from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from her2pcr import config
from her2pcr.profiles import apply_profile
from her2pcr.synth.sites import SiteProtocol, load_sites
from tests.conftest import REPO


def test_committed_params_and_sites_validate():
    params = config.load_params(REPO / "params.yaml")
    sites = load_sites(REPO / params.simulate.sites_file)
    assert set(params.simulate.cohorts) <= set(sites)


def test_unknown_key_is_rejected(tmp_path):
    data = config.read_yaml(REPO / "params.yaml")
    data["simulate"]["matrx"] = 64
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValidationError, match="matrx"):
        config.load_params(path)


def test_site_median_outside_range_is_rejected():
    site = config.read_yaml(REPO / "conf" / "sites.yaml")["inst1"]
    site["flip_angle_deg"] = [20, 8, 15]
    with pytest.raises(ValidationError, match="flip_angle_deg"):
        SiteProtocol.model_validate(site)


def test_profile_merges_overrides_and_keeps_comments(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    apply_profile("tiny", params, REPO / "conf" / "profiles")
    merged = config.load_params(params).simulate
    assert merged.matrix == 64 and merged.cohorts["inst1"].n == 14
    assert merged.truth == config.load_params(REPO / "params.yaml").simulate.truth
    assert "# Single source of truth" in params.read_text()


def test_unknown_profile_names_the_known_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="tiny"):
        apply_profile("huge", REPO / "params.yaml", REPO / "conf" / "profiles")


def test_every_profile_is_valid(tmp_path):
    for override in (REPO / "conf" / "profiles").glob("*.yaml"):
        params = Path(tmp_path / f"{override.stem}.yaml")
        params.write_text((REPO / "params.yaml").read_text())
        apply_profile(override.stem, params, override.parent)
        config.load_params(params)

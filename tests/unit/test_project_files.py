"""MLproject and dvc.yaml stay consistent with the CLI and params."""

import re

import yaml
from typer.main import get_command

from her2pcr.cli import app
from her2pcr.config import load_params
from tests.conftest import REPO


def test_every_mlproject_parameter_reaches_its_command():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    commands = set(get_command(app).commands)
    for name, entry in project["entry_points"].items():
        command = entry["command"]
        assert command.split()[:2] == ["her2pcr", name.replace("_", "-")]
        assert name.replace("_", "-") in commands
        assert set(re.findall(r"{(\w+)}", command)) == set(entry.get("parameters", {}))


def test_every_dvc_stage_is_a_cli_command_reading_a_params_section():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = set(get_command(app).commands)
    sections = set(load_params(REPO / "params.yaml").model_fields_set)
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # a foreach stage (validate@<cohort>) keeps its body under `do`
        assert stage["cmd"].split()[:2] == ["her2pcr", name.replace("_", "-")]
        assert name.replace("_", "-") in commands
        assert set(stage["params"]) <= sections


def test_foreach_stages_iterate_over_a_params_mapping():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = load_params(REPO / "params.yaml")
    for name, stage in stages.items():
        if "foreach" in stage:
            section, key = re.fullmatch(r"\$\{(\w+)\.(\w+)\}", stage["foreach"]).groups()
            assert isinstance(getattr(getattr(params, section), key), dict), name
            assert "${key}" in stage["do"]["cmd"]

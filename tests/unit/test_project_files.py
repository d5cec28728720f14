"""MLproject and dvc.yaml stay consistent with the CLI and params."""

import ast
import re
import sys
from pathlib import Path

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


def test_every_dvc_stage_is_a_cli_command_reading_params_keys_that_exist():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = set(get_command(app).commands)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in stages.items():
        keys = list(params["cohorts"]["external"]) if "foreach" in stage else [None]
        stage = stage.get("do", stage)  # a foreach stage (validate@<cohort>) keeps its body under `do`
        assert stage["cmd"].split()[:2] == ["her2pcr", name.replace("_", "-")]
        assert name.replace("_", "-") in commands
        for entry in stage["params"]:
            for key in keys:
                node = params
                for part in entry.replace("${key}", str(key)).split("."):
                    assert isinstance(node, dict) and part in node, f"{name}: params key {entry} not in params.yaml"
                    node = node[part]


def test_foreach_stages_iterate_over_a_params_mapping():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = load_params(REPO / "params.yaml")
    for name, stage in stages.items():
        if "foreach" in stage:
            section, key = re.fullmatch(r"\$\{(\w+)\.(\w+)\}", stage["foreach"]).groups()
            assert isinstance(getattr(getattr(params, section), key), dict), name
            assert "${key}" in stage["do"]["cmd"]


# --- code deps: derived from the imports, not written by hand -------------------------------------------------

SRC = REPO / "src"


def _module_file(name: str):
    path = SRC / Path(*name.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def _her2pcr_imports(tree: ast.AST) -> set[str]:
    """Every her2pcr module a syntax tree imports, at module level or inside functions (lazy imports count)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("her2pcr")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("her2pcr"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}")}
    return found


def _has_code(path: Path) -> bool:
    """False for a package __init__ holding only its docstring (importing it runs nothing)."""
    body = ast.parse(path.read_text()).body
    return not (path.name == "__init__.py" and all(isinstance(n, ast.Expr) for n in body))


def command_modules(command: str) -> set[Path]:
    """Source files (relative to the repository) a CLI command runs: its function's imports, transitively, plus
    the params schema every command loads. cli.py itself only parses options and prints."""
    cli = ast.parse((SRC / "her2pcr" / "cli.py").read_text())
    function = next(n for n in cli.body if isinstance(n, ast.FunctionDef) and n.name == command.replace("-", "_"))
    return imported_modules([*_her2pcr_imports(function), "her2pcr.config"])


def imported_modules(names: list[str]) -> set[Path]:
    """The source files of these her2pcr modules and of everything they import, transitively."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        todo += _her2pcr_imports(ast.parse(path.read_text()))
        parent = name.rpartition(".")[0]
        if parent.count("."):  # importing her2pcr.a.b runs her2pcr/a/__init__.py too (her2pcr/__init__: version)
            todo.append(parent)
    return {p.relative_to(REPO) for p in map(_module_file, seen) if _has_code(p) and
            p != SRC / "her2pcr" / "__init__.py"}


def _code_files(path: Path) -> set[Path]:
    full = REPO / path
    files = full.rglob("*.py") if full.is_dir() else [full]
    return {f.relative_to(REPO) for f in files if _has_code(f)}


def test_every_stage_depends_on_exactly_the_code_it_imports():
    """A changed module re-runs the stages that import it, and only those: each src dep is a module the stage
    imports, or a package all of whose modules it imports."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        code = command_modules(stage["cmd"].split()[1])
        deps = [Path(d) for d in stage["deps"] if d.startswith("src/")]
        covered = set().union(*(_code_files(d) for d in deps))
        assert code <= covered, f"{name} imports {sorted(map(str, code - covered))} but does not depend on them"
        for dep in deps:
            unused = _code_files(dep) - code
            assert not unused, f"{name} depends on {dep}, whose {sorted(map(str, unused))} it never imports"


def _third_party(files) -> dict[str, set[str]]:
    """Top-level modules the files import (standard library and her2pcr left out) -> the distributions that
    provide each (several for some: mlflow comes from mlflow, mlflow-skinny and mlflow-tracing)."""
    from importlib.metadata import packages_distributions

    distributions = packages_distributions()
    found = {}
    for path in files:
        for node in ast.walk(ast.parse((REPO / path).read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"her2pcr"}:
                found[top] = {_canonical(d) for d in distributions.get(top, [top])}
    return found


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _undeclared(imports: dict[str, set[str]], declared: set[str]) -> set[str]:
    # jax: only the optional Keras backend branch of the seeding code (the GPU machine's image has it)
    return {top for top, candidates in imports.items() if not candidates & declared and top != "jax"}


def test_every_imported_package_is_a_declared_dependency():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_canonical(re.split(r"[=<>\[ ;]", d)[0]) for d in project["dependencies"]}
    assert _undeclared(_third_party(p.relative_to(REPO) for p in (SRC / "her2pcr").rglob("*.py")), declared) == set()


def test_the_served_model_pins_every_package_its_code_imports():
    from her2pcr.registry.register import RUNTIME_PACKAGES

    served = imported_modules(["her2pcr.serving.model", "her2pcr.models.cnn", "her2pcr.preprocess.chain",
                               "her2pcr.dicom.exam"])
    pinned = {_canonical(p) for p in RUNTIME_PACKAGES}
    assert _undeclared(_third_party(served), pinned) == set()
    assert "her2pcr" not in pinned  # the code travels inside the model

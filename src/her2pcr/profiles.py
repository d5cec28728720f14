"""Profiles: conf/profiles/<name>.yaml overrides merged into params.yaml (``her2pcr profile NAME``)."""

from __future__ import annotations

from pathlib import Path

from her2pcr.config import PARAMS_FILE, Params, read_yaml

PROFILES_DIR = Path("conf/profiles")


def deep_merge(base: dict, override: dict) -> dict:
    """Recursively merge ``override`` into a copy of ``base`` (override wins; lists replace)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_profile(profile: str, params_path: Path = PARAMS_FILE, profiles_dir: Path = PROFILES_DIR) -> None:
    """Merge ``conf/profiles/<profile>.yaml`` into params.yaml in place, keeping its comments.

    The committed params.yaml is the ``default`` profile; the merged result is
    validated before anything is written.
    """
    if profile == "default":
        return
    override_path = profiles_dir / f"{profile}.yaml"
    if not override_path.exists():
        known = ["default", *sorted(p.stem for p in profiles_dir.glob("*.yaml"))]
        raise FileNotFoundError(f"unknown profile {profile!r}; known: {', '.join(known)}")
    Params.model_validate(deep_merge(read_yaml(params_path), read_yaml(override_path)))
    # ruamel round-trips comments and layout, so params.yaml stays readable.
    from ruamel.yaml import YAML

    rt = YAML()
    document = rt.load(params_path.read_text(encoding="utf-8"))
    _merge_in_place(document, rt.load(override_path.read_text(encoding="utf-8")))
    with open(params_path, "w", encoding="utf-8") as handle:
        rt.dump(document, handle)


def _merge_in_place(base, override) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge_in_place(base[key], value)
        else:
            base[key] = value

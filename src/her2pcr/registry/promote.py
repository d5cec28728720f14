"""Promotion: the champion alias moves to a version only when every external-cohort gate passed."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from datetime import UTC, datetime

from her2pcr.config import RegistryParams
from her2pcr.registry.tags import PASS, gate_tag, reasons_tag


class PromotionRefused(RuntimeError):
    """The version did not pass every gate; the message lists what failed."""


@dataclass(frozen=True)
class GateStatus:
    """A version's gate results per required cohort (``None`` = not validated yet)."""

    results: dict[str, str | None]
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(result == PASS for result in self.results.values())

    def failures(self) -> list[str]:
        out = []
        for cohort, result in self.results.items():
            if result is None:
                out.append(f"{cohort}: not validated (run `dvc repro validate@{cohort}`)")
            elif result != PASS:
                out.append(f"{cohort}: gate {result} ({self.reasons.get(cohort, 'no reasons recorded')})")
        return out


def gate_status(tags: dict[str, str], cohorts: list[str]) -> GateStatus:
    """Read the gate tags of one version (pure: tags in, status out)."""
    return GateStatus({c: tags.get(gate_tag(c)) for c in cohorts},
                      {c: tags[reasons_tag(c)] for c in cohorts if reasons_tag(c) in tags})


def resolve_version(client, registry: RegistryParams, version: str | None) -> str:
    """An explicit version number, or the one the challenger alias points at."""
    if version:
        return str(client.get_model_version(registry.model_name, version).version)
    return str(client.get_model_version_by_alias(registry.model_name, registry.challenger_alias).version)


def promote(client, registry: RegistryParams, cohorts: list[str], version: str | None = None,
            force: bool = False, reason: str | None = None) -> tuple[str, GateStatus]:
    """Point the champion alias at ``version`` (default: the challenger) if its gates passed.

    ``force`` overrides failed or missing gates; it needs a ``reason``, recorded with the
    user and time as tags on the version so the override stays visible in the registry.
    """
    if force and not (reason and reason.strip()):
        raise ValueError("--force needs --reason: an override must say why")
    version = resolve_version(client, registry, version)
    status = gate_status(dict(client.get_model_version(registry.model_name, version).tags), cohorts)
    if not status.passed and not force:
        raise PromotionRefused(f"{registry.model_name} version {version} is not promoted: "
                               + "; ".join(status.failures()))
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    tags = {"promotion.promoted_at": stamp, "promotion.promoted_by": getpass.getuser(),
            "promotion.forced": str(bool(force and not status.passed)).lower()}
    if force and not status.passed:
        tags["promotion.reason"] = reason.strip()
        tags["promotion.overridden_gates"] = "; ".join(status.failures())[:5000]
    for key, value in tags.items():
        client.set_model_version_tag(registry.model_name, version, key, value)
    client.set_registered_model_alias(registry.model_name, registry.champion_alias, version)
    return version, status


def registry_table(client, registry: RegistryParams, cohorts: list[str]):
    """One row per version: aliases, creation time, run, phases, gate per cohort, promotion override."""
    import pandas as pd

    model = client.get_registered_model(registry.model_name)
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{registry.model_name}'"):
        tags = dict(mv.tags)
        status = gate_status(tags, cohorts)
        rows.append({"version": int(mv.version), "aliases": ",".join(sorted(aliases.get(str(mv.version), []))),
                     "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M"),
                     "phases": tags.get("phases", ""),
                     **{f"gate {c}": status.results[c] or "-" for c in cohorts},
                     "forced": tags.get("promotion.forced", ""), "run_id": mv.run_id})
    return pd.DataFrame(rows).sort_values("version", ascending=False).reset_index(drop=True)

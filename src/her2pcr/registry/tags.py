"""The registry's contract: what train writes about a version, and the gate tags validate sets on it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

PASS, FAIL = "pass", "fail"


def gate_tag(cohort: str) -> str:
    """Version tag holding ``pass`` or ``fail`` for one external cohort."""
    return f"validation.{cohort}.gate"


def reasons_tag(cohort: str) -> str:
    """Version tag holding the gate's reasons ("; "-separated), for a failure and a pass alike."""
    return f"validation.{cohort}.reasons"


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version, as train records it in ``models/registered.json``."""

    name: str
    version: str
    run_id: str
    model_uri: str  # models:/<name>/<version>

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")

    def check_trained_in(self, model_dir: Path) -> None:
        """Refuse to pair this version with another run's training outputs (a stale registered.json)."""
        summary = model_dir / "training.json"
        if summary.exists():
            run_id = json.loads(summary.read_text(encoding="utf-8")).get("run_id")
            if run_id and run_id != self.run_id:
                raise ValueError(f"{model_dir} was trained in run {run_id}, but the registered version "
                                 f"{self.name}/{self.version} comes from run {self.run_id}: re-run train")

    @classmethod
    def load(cls, path: Path) -> RegisteredVersion:
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run `her2pcr train` first (it registers the model)")
        return cls(**json.loads(path.read_text(encoding="utf-8")))

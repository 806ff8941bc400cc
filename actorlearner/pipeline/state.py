"""Which stages of a run are done, kept in runs/<name>/state.json so a rerun resumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from actorlearner.pipeline.report import write_json_atomic


class RunState:
    """Finished stages and their outputs; `resume` says whether caches may be reused.

    Two things live only in memory, for one invocation: `planned`, the stages it runs,
    and `pending`, work one stage started for a later one (evaluation during PPO)."""

    def __init__(self, run_dir: Path, resume: bool = True, planned: list[str] | None = None):
        self.resume = resume
        self.planned = list(planned or [])
        self.pending: dict[str, Any] = {}
        self.path = run_dir / "state.json"
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data.setdefault("done", {})

    def done(self, stage: str) -> bool:
        return stage in self.data["done"]

    def output(self, stage: str) -> dict[str, Any]:
        return self.data["done"].get(stage, {})

    def mark_done(self, stage: str, outputs: dict[str, Any]) -> None:
        self.data["done"][stage] = outputs
        write_json_atomic(self.path, self.data)

    def reset(self, stage: str) -> None:
        self.data["done"].pop(stage, None)
        write_json_atomic(self.path, self.data)

"""Crash-safe storage: an append-only JSONL of finished units plus atomic file writes.

Each finished unit of work (one problem, all its samples and refinements) is one
JSON line, written with a single `write` + flush + fsync; the line *is* the done
marker. A run killed mid-write leaves at most one torn last line, which `load`
drops (and the unit is redone), so a rerun has no duplicate and loses nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path


class UnitStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.units: dict[str, dict] = {}
        self._load()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        good = 0  # byte offset after the last complete, parseable line
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                unit = json.loads(line)
            except json.JSONDecodeError:
                break
            self.units.setdefault(unit["unit_id"], unit)
            good += len(line)
        if good < len(raw):  # cut a torn tail so the next append starts on a fresh line
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
                os.fsync(fh.fileno())

    def __contains__(self, unit_id: str) -> bool:
        return unit_id in self.units

    def append(self, unit: dict) -> None:
        if unit["unit_id"] in self.units:
            return
        self._fh.write(json.dumps(unit, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.units[unit["unit_id"]] = unit

    def close(self) -> None:
        self._fh.close()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def atomic_write_json(path: str | Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")

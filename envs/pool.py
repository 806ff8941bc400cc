"""The RL problem pool: wrong solutions collected earlier, one JSONL record each.

Record: {"task_id", "source" (problem spec, e.g. "mbpp:train"), "wrong_code",
"feedback", "references": [{"explanation", "code"}]} where references are verified
(explanation, fix) pairs for that wrong code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.jsonl import numbered_lines

REQUIRED = ("task_id", "wrong_code")


@dataclass(frozen=True)
class PoolReference:
    explanation: str
    code: str


@dataclass(frozen=True)
class PoolEntry:
    task_id: str
    wrong_code: str
    source: str = ""
    feedback: str = ""
    references: tuple[PoolReference, ...] = ()

    @classmethod
    def from_record(cls, rec: Mapping[str, Any], where: str = "record") -> PoolEntry:
        missing = [k for k in REQUIRED if not isinstance(rec.get(k), str)]
        if missing:
            raise ValueError(
                f"pool {where}: missing or non-string field(s) {missing}; each line needs "
                '{"task_id", "source", "wrong_code", "feedback", "references": '
                '[{"explanation", "code"}]}'
            )
        refs = rec.get("references") or []
        if not isinstance(refs, list) or not all(isinstance(r, Mapping) for r in refs):
            raise ValueError(f"pool {where}: 'references' must be a list of {{explanation, code}}")
        return cls(
            task_id=rec["task_id"],
            wrong_code=rec["wrong_code"],
            source=str(rec.get("source") or ""),
            feedback=str(rec.get("feedback") or ""),
            references=tuple(
                PoolReference(str(r.get("explanation") or ""), str(r.get("code") or ""))
                for r in refs
            ),
        )


def _read_jsonl(path: Path) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for lineno, line in numbered_lines(path):
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"pool {path}:{lineno}: not valid JSON ({exc.msg})") from exc


def load_pool(pool: str | Path | Iterable[Mapping[str, Any] | PoolEntry]) -> list[PoolEntry]:
    """Pool entries from a JSONL(.gz) path or from records already in memory."""
    if isinstance(pool, (str, Path)):
        path = Path(pool)
        if not path.is_file():
            raise FileNotFoundError(
                f"RL problem pool {path} does not exist (run data collection first)"
            )
        items: Iterable[tuple[str, Any]] = _read_jsonl(path)
    else:
        items = ((f"record {i}", r) for i, r in enumerate(pool))
    return [
        r if isinstance(r, PoolEntry) else PoolEntry.from_record(r, where) for where, r in items
    ]

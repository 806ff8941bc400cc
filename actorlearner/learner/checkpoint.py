"""What a checkpoint adds to DeepSpeed's own state: RNG streams and the trainer state,
plus a SIGTERM flag so a preempted job saves before it exits."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest"


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def save_rng(directory: Path, rank: int, generator: torch.Generator | None) -> None:
    torch.save(rng_state(generator), directory / f"rng_rank{rank}.pt")


def load_rng(directory: Path, rank: int, generator: torch.Generator | None) -> None:
    path = directory / f"rng_rank{rank}.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} missing: the checkpoint was written by fewer ranks than are loading it"
        )
    set_rng_state(torch.load(path, weights_only=False), generator)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)  # atomic: a kill mid-write never leaves a torn file


def latest_tag(root: str | Path) -> str | None:
    """The tag of the newest complete checkpoint under `root`, or None."""
    marker = Path(root) / LATEST
    return marker.read_text().strip() if marker.exists() else None


def prune(root: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` step_* checkpoints (never the one `latest` names)."""
    import shutil

    if keep <= 0:
        return []
    current = latest_tag(root)
    tags = sorted(p for p in Path(root).glob("step_*") if p.is_dir())
    doomed = [p for p in tags[:-keep] if p.name != current]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


_STOP_REQUESTED = False


def stop_requested() -> bool:
    """Whether any StopFlag of this process has seen a stop signal (`ray job stop`,
    preemption): the driver then exits after the checkpoint instead of moving on."""
    return _STOP_REQUESTED


class StopFlag:
    """Set on SIGTERM/SIGINT; training loops check it, save, and exit cleanly."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.requested = False
        self._previous: dict[int, Any] = {}
        for sig in signals:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass

    def _handle(self, signum: int, frame: object) -> None:
        global _STOP_REQUESTED
        del frame
        self.requested = _STOP_REQUESTED = True
        print(
            f"received {signal.Signals(signum).name}: saving a checkpoint after the current "
            "iteration, then stopping (run the same command again to resume)",
            flush=True,
        )

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

"""The newest policy weights, where running rollout actors can see them between turns.

The driver publishes each new version here as soon as the learner has it; an actor
with `weights_between_turns` asks before every generate call and loads a newer version
at once, so the next turn of an episode already running uses it (every token keeps the
version that sampled it). Asking costs one small Ray call; the weights themselves stay
in the object store until an actor takes them.
"""

from __future__ import annotations

from typing import Any

import ray

BOARD_NAME = "actorlearner-weight-board"


class WeightBoard:
    """Holds (version, object ref of the weights); a named Ray actor in the run's namespace."""

    def __init__(self) -> None:
        self.version = -1
        self.ref: Any = None

    def publish(self, version: int, holder: list[Any]) -> None:
        """`holder` wraps the ref in a list, so Ray passes the ref and not the weights."""
        if version > self.version:
            self.version, self.ref = int(version), holder[0]

    def newer_than(self, version: int) -> tuple[int, list[Any]] | None:
        return (self.version, [self.ref]) if self.version > version else None


def create_board() -> Any:
    """Start the run's board (the driver owns it; it dies with the driver)."""
    return ray.remote(WeightBoard).options(name=BOARD_NAME, num_cpus=0).remote()


def find_board() -> Any | None:
    """The run's board, or None when the driver did not start one."""
    try:
        return ray.get_actor(BOARD_NAME)
    except ValueError:
        return None

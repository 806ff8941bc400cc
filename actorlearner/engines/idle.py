"""Generation on CPU time that nothing else wants.

Work that may run beside training (evaluating models that are already final while PPO
trains) must not slow the training processes down. Linux's SCHED_IDLE policy gives a
thread the CPU only when no normal thread wants it. Only the engine's thread is
lowered: the caller's thread keeps its priority, and so do the sandbox processes it
starts, whose wall-clock timeouts must not depend on how busy the machine is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from actorlearner.engines.base import Engine, Generation, SamplingParams

log = logging.getLogger("actorlearner")


def lower_this_thread() -> bool:
    """Move the calling thread (and the threads and processes it starts later) to the
    idle scheduling class; False where the OS has none (the thread keeps its priority)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread (Linux)
    except (AttributeError, OSError) as exc:
        log.warning("idle CPU priority unavailable (%s): generating at normal priority", exc)
        return False
    return True


def runs_idle() -> bool:
    """Whether the calling thread is in the idle scheduling class."""
    return hasattr(os, "SCHED_IDLE") and os.sched_getscheduler(0) == os.SCHED_IDLE


class IdlePriority:
    """An engine built by `build` and generating in one thread of the idle class (so
    loading the model is idle work too); everything else (weights, tokenizer, version)
    is the built engine's."""

    def __init__(self, build: Callable[[], Engine]):
        self._thread = ThreadPoolExecutor(1, "idle-generate", initializer=lower_this_thread)
        self.engine = self._thread.submit(build).result()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    @property
    def version(self) -> int:
        return self.engine.version

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        return self._thread.submit(self.engine.generate, prompts, sampling).result()

    def load_weights(self, state_dict: dict[str, Any], version: int) -> None:
        self.engine.load_weights(state_dict, version)

    def close(self) -> None:
        self._thread.shutdown(wait=True)

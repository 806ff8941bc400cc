"""Progress of a refinement-depth evaluation, one line per finished round.

A worker counts its episodes' verdicts by round (`RoundCounter`, fed from the env
threads); a round of a problem set is finished once every episode still failing
before it has played it. The driver adds up the workers' counts of the same model,
problem set and round (`RoundBoard`) and prints one line when all have reported.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RoundCount:
    """Starts of one problem set solved by the end of `round` (round 0: the given code)."""

    group: str
    round: int
    rounds: int
    solved: int
    total: int
    seconds: float


class RoundCounter:
    """Thread-safe per-round verdict counts of one worker's episodes."""

    def __init__(
        self,
        groups: Mapping[str, str],
        initial_passed: Mapping[str, list[bool]],
        rounds: int,
        report: Callable[[RoundCount], None],
    ):
        self.groups = dict(groups)  # task_id -> problem set
        self.rounds = rounds
        self.report = report
        self.start = time.perf_counter()
        self.total: Counter[str] = Counter()
        self.solved: dict[str, Counter[int]] = defaultdict(
            Counter
        )  # group -> round -> newly solved
        self.played: dict[str, Counter[int]] = defaultdict(Counter)  # group -> round -> episodes
        for task_id, flags in initial_passed.items():
            group = self.groups[task_id]
            self.total[group] += len(flags)
            self.solved[group][0] += sum(flags)
        self.done = {g: 0 for g in self.total}  # last round reported per group
        self._lock = threading.Lock()
        with self._lock:
            self._advance()

    def step(self, task_id: str, turn: int, solved: bool, ended: bool = False) -> None:
        """An episode of `task_id` played round `turn` (1-based); `solved`: its tests pass;
        `ended` unsolved (a sandbox failure): it counts as failing in the later rounds."""
        with self._lock:
            group = self.groups[task_id]
            last = self.rounds if ended and not solved else turn
            for rnd in range(turn, last + 1):
                self.played[group][rnd] += 1
            self.solved[group][turn] += int(solved)
            self._advance()

    def finish(self) -> None:
        """Report the rounds still open (episodes cut short by the context limit never
        play their later rounds)."""
        with self._lock:
            self._advance(force=True)

    def _solved_by(self, group: str, rnd: int) -> int:
        return sum(self.solved[group][r] for r in range(rnd + 1))

    def _advance(self, force: bool = False) -> None:
        for group in self.done:
            while self.done[group] < self.rounds:
                rnd = self.done[group] + 1
                failing = self.total[group] - self._solved_by(group, rnd - 1)
                if not force and self.played[group][rnd] < failing:
                    break
                self.done[group] = rnd
                self.report(
                    RoundCount(
                        group,
                        rnd,
                        self.rounds,
                        self._solved_by(group, rnd),
                        self.total[group],
                        round(time.perf_counter() - self.start, 1),
                    )
                )


class RoundBoard:
    """Adds up the counts of the workers that share a (model, problem set); calls `emit`
    with the sum once every one of them has reported that round."""

    def __init__(self, emit: Callable[[str, RoundCount], None]):
        self.emit = emit
        self.expected: Counter[tuple[str, str]] = Counter()  # (model, group) -> workers
        self.parts: dict[tuple[str, str, int], list[RoundCount]] = defaultdict(list)

    def expect(self, model: str, group: str) -> None:
        self.expected[(model, group)] += 1

    def add(self, model: str, count: RoundCount) -> None:
        key = (model, count.group, count.round)
        self.parts[key].append(count)
        parts = self.parts[key]
        if len(parts) == self.expected[(model, count.group)]:
            self.emit(
                model,
                RoundCount(
                    count.group,
                    count.round,
                    count.rounds,
                    sum(p.solved for p in parts),
                    sum(p.total for p in parts),
                    max(p.seconds for p in parts),
                ),
            )


def round_line(model: str, count: RoundCount) -> str:
    """e.g. `sft on synthetic:test, round 2/3: 17/60 solved, 43 still failing, 12.4 s`."""
    return (
        f"{model} on {count.group}, round {count.round}/{count.rounds}: "
        f"{count.solved}/{count.total} solved, {count.total - count.solved} still failing, "
        f"{count.seconds:.1f} s"
    )

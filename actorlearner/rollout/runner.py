"""Run many multi-turn episodes against a set of env copies with one batched engine.

Every turn, the replies of all waiting episodes are generated in one batch. When an
episode ends its env slot starts the next episode right away (continuous refill), so
finished episodes never occupy the batch. With overlap, the slots are split into
two halves: while one half's replies run in the sandbox (env.step in a thread), the
other half generates, hiding sandbox time behind generation. Halving the batch costs
extra decoding steps, so `overlap="auto"` (the default) splits only while env steps
are slow relative to a generate call (measured: with the tiny CPU model and cheap
test rewards one batch is faster; with the ledex rewards' embedding model, halves win).

With `group_size` k > 1, episodes come in groups of k that replay one episode start
(same problem, same wrong code); each trajectory carries its group in
`stats["group"]`, so the learner can use the group as a per-problem baseline.
With `fixed_offset`, a run replays fixed starts instead (a seed-independent order of
all starts, from that offset): the same problems every call, for a low-noise probe.

Rewards that take long to compute (CodeBLEU, embeddings: CodeRefineEnv's
`defer_rewards`, switched on here) do not hold a slot: the env returns once the sandbox
has judged a reply, the slot goes on (next turn or next episode), and the episode's
trajectory is built when its rewards arrive, while the engine generates.

`before_generate` runs at every turn boundary: the rollout actor uses it to take new
weights mid-episode, and each reply's tokens record the engine version that sampled them.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actorlearner.chat import IM_END
from actorlearner.engines.base import Engine, SamplingParams
from actorlearner.models import stop_token_ids
from actorlearner.rollout.episode import EpisodeBuilder, ReplyText
from actorlearner.trajectory import Trajectory


@dataclass
class _EnvResult:
    step: tuple | None = None  # (obs, reward, terminated, truncated, info) of the last reply
    reset: tuple | None = None  # (obs, info) of a new episode started in this slot
    group: str | None = None  # the new episode's group (grouped sampling)
    env_s: float = 0.0


FIXED_ORDER_SEED = 20_240_601  # the order of fixed starts is the same for every runner


@dataclass
class _Ticket:
    """One claimed episode: its reset options and, under grouped sampling, its group."""

    options: dict | None
    group: str | None = None


@dataclass
class _Slot:
    env: Any
    index: int
    episode: EpisodeBuilder | None = None
    reply: tuple[ReplyText, int] | None = None  # the reply awaiting its env step, and its start
    future: Future | None = None
    seeded: bool = False
    group: str | None = None
    env_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)


class EpisodeRunner:
    """Plays episodes with `engine` on `envs` and returns token-level trajectories."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: Any,
        envs: Sequence[Any],
        overlap: bool | str = "auto",
        seed: int | None = None,
        max_context_tokens: int | None = None,
        reset_options: dict | None = None,
        group_size: int = 1,
        defer_rewards: bool = True,
    ):
        if not envs:
            raise ValueError("EpisodeRunner needs at least one env")
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.engine = engine
        self.tokenizer = tokenizer
        self.slots = [_Slot(env=e, index=i) for i, e in enumerate(envs)]
        for env in envs:  # envs that can defer slow reward terms do (see the module docstring)
            base = getattr(env, "unwrapped", env)
            if hasattr(base, "defer_rewards"):
                base.defer_rewards = defer_rewards
        self._unsettled: list[tuple[EpisodeBuilder, dict[str, Any]]] = []
        if overlap not in (True, False, "auto"):
            raise ValueError(f"overlap must be True, False or 'auto', got {overlap!r}")
        self.overlap = overlap if len(envs) > 1 else False
        self._env_avg = 0.0  # running mean seconds of one env step (measured in its thread)
        self._gen_avg = 0.0  # running mean seconds of one generate call
        self.seed = seed
        self.max_context_tokens = max_context_tokens
        self.reset_options = reset_options
        self.group_size = group_size
        self._rng = np.random.default_rng(seed)
        self._runs = 0
        self._tickets: deque[_Ticket] = deque()
        self.stop_ids = stop_token_ids(tokenizer)
        self.im_end_id = int(tokenizer.convert_tokens_to_ids(IM_END))
        self._pool = ThreadPoolExecutor(len(envs), thread_name_prefix="env")
        self._lock = threading.Lock()
        self._todo = 0
        self._limit: int | None = None
        self._skips_left = 0
        self.timings: dict[str, float] = {}
        # called before every generate call, i.e. at the turn boundaries of the episodes
        # about to reply: where an actor loads weights published while it runs
        self.before_generate: Callable[[], None] | None = None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for slot in self.slots:
            slot.env.close()

    # ------------------------------------------------------------------ main loop
    def run(
        self, num_episodes: int, sampling: SamplingParams, fixed_offset: int | None = None
    ) -> list[Trajectory]:
        """Play `num_episodes` complete episodes; trajectories come back in finishing order."""
        if not sampling.stop_token_ids:
            sampling = dataclasses.replace(sampling, stop_token_ids=self.stop_ids)
        self._todo = num_episodes
        if fixed_offset is None:
            self._tickets = self._group_tickets(num_episodes)
        else:
            self._tickets = self._fixed_tickets(num_episodes, fixed_offset)
        self._runs += 1
        self._limit = self._context_limit(sampling.max_new_tokens)
        self._skips_left = num_episodes  # first prompts too long for the model (bounded)
        self.timings = {"generate_s": 0.0, "env_wait_s": 0.0, "env_s": 0.0, "generated_tokens": 0}
        t0 = time.perf_counter()
        done: list[Trajectory] = []
        for slot in self.slots:
            if ticket := self._claim():
                slot.future = self._pool.submit(self._reset, slot, ticket)
        try:
            while any(slot.future is not None for slot in self.slots):
                groups = 2 if self._split() else 1
                for half in (self.slots[g::groups] for g in range(groups)):
                    ready = [s for s in half if s.future is not None and self._collect(s)]
                    if ready:
                        self._generate(ready, sampling)
                    self._settle(done, wait=False)
            self._settle(done, wait=True)
        except BaseException:
            self._abandon()  # leave every slot idle so the next run starts clean
            raise
        self.timings["wall_s"] = time.perf_counter() - t0
        return done

    def _abandon(self) -> None:
        for slot in self.slots:
            if slot.future is not None:
                try:
                    slot.future.result()
                except Exception:  # the error that matters is already propagating
                    pass
            slot.future, slot.episode, slot.reply = None, None, None
        self._unsettled = []

    def _split(self) -> bool:
        """Whether to generate in two halves this round (see the module docstring)."""
        if self.overlap == "auto":
            return self._env_avg > 0.25 * self._gen_avg
        return bool(self.overlap)

    def _claim(self) -> _Ticket | None:
        """Take one episode from the budget (called from env threads too)."""
        with self._lock:
            if self._todo <= 0:
                return None
            self._todo -= 1
            return self._tickets.popleft() if self._tickets else _Ticket(self.reset_options)

    def _num_starts(self, why: str) -> int:
        starts = len(getattr(self.slots[0].env.unwrapped, "starts", ()))
        if not starts:
            raise ValueError(f"{why} needs an env with a list of episode starts (env.starts)")
        return starts

    def _fixed_tickets(self, num_episodes: int, offset: int) -> deque[_Ticket]:
        order = np.random.default_rng(FIXED_ORDER_SEED).permutation(self._num_starts("a probe"))
        picks = (int(order[(offset + i) % len(order)]) for i in range(num_episodes))
        return deque(_Ticket({**(self.reset_options or {}), "start": s}) for s in picks)

    def _group_tickets(self, num_episodes: int) -> deque[_Ticket]:
        """Under grouped sampling, k tickets per drawn episode start, members back to back."""
        if self.group_size == 1:
            return deque()
        starts = self._num_starts("group_size > 1")
        tickets: deque[_Ticket] = deque()
        for g in range(-(-num_episodes // self.group_size)):
            options = {**(self.reset_options or {}), "start": int(self._rng.integers(starts))}
            tag = f"{self.seed}-{self._runs}-{g}"
            tickets.extend(_Ticket(options, tag) for _ in range(self.group_size))
        return tickets

    def _collect(self, slot: _Slot) -> bool:
        """Wait for a slot's env work and fold it into its episode; True if it needs a reply."""
        t = time.perf_counter()
        result: _EnvResult = slot.future.result()  # type: ignore[union-attr]
        self.timings["env_wait_s"] += time.perf_counter() - t
        self.timings["env_s"] += result.env_s
        if result.step is not None:
            avg = self._env_avg
            self._env_avg = 0.8 * avg + 0.2 * result.env_s if avg else result.env_s
        slot.env_s += result.env_s
        slot.future = None
        if result.step is not None:
            obs, reward, terminated, truncated, info = result.step
            reply, start = slot.reply  # type: ignore[misc]
            if (pending := info.get("pending_reward")) is not None:
                slot.episode.defer_rewards(reply, start, pending)  # type: ignore[union-attr]
            else:
                slot.episode.place_rewards(reply, start, reward, info)  # type: ignore[union-attr]
            if terminated or truncated:
                self._finish(slot, terminated, truncated, info)
            else:
                slot.episode.add_user_turn(self.tokenizer, obs)  # type: ignore[union-attr]
                if self._over_context(slot):
                    self._finish(slot, False, True, info, context_limit=True)
                    if ticket := self._claim():
                        slot.future = self._pool.submit(self._reset, slot, ticket)
                    return False
        if result.reset is not None:
            slot.group = result.group
            self._start(slot, *result.reset)
            if self._over_context(slot):  # the first prompt alone leaves no room to reply
                self._skip_long_prompt(slot)
                return False
        return slot.episode is not None

    def _generate(self, slots: list[_Slot], sampling: SamplingParams) -> None:
        """One batched engine call for the waiting episodes; their env steps go to threads."""
        if self.before_generate is not None:
            self.before_generate()
        t = time.perf_counter()
        gens = self.engine.generate([s.episode.ids for s in slots], sampling)  # type: ignore[union-attr]
        elapsed = time.perf_counter() - t
        self.timings["generate_s"] += elapsed
        self.timings["generate_calls"] = self.timings.get("generate_calls", 0) + 1
        self._gen_avg = 0.8 * self._gen_avg + 0.2 * elapsed if self._gen_avg else elapsed
        for slot, gen in zip(slots, gens, strict=True):
            start = slot.episode.add_reply(gen, self.im_end_id, self.engine.version)  # type: ignore[union-attr]
            self.timings["generated_tokens"] += len(gen.token_ids)
            body = gen.token_ids[:-1] if gen.finish_reason == "stop" else gen.token_ids
            slot.reply = (ReplyText(self.tokenizer, body), start)
            slot.future = self._pool.submit(self._step, slot, slot.reply[0].text)

    # ------------------------------------------------------------------ env side (threads)
    def _reset(self, slot: _Slot, ticket: _Ticket) -> _EnvResult:
        t = time.perf_counter()
        seed = None
        if not slot.seeded and self.seed is not None:
            seed = self.seed + slot.index
        slot.seeded = True
        obs, info = slot.env.reset(seed=seed, options=ticket.options)
        return _EnvResult(reset=(obs, info), group=ticket.group, env_s=time.perf_counter() - t)

    def _step(self, slot: _Slot, text: str) -> _EnvResult:
        t = time.perf_counter()
        step = slot.env.step(text)
        result = _EnvResult(step=step)
        if (step[2] or step[3]) and (ticket := self._claim()):  # ended: start the next one here
            result.reset = slot.env.reset(options=ticket.options)
            result.group = ticket.group
        result.env_s = time.perf_counter() - t
        return result

    # ------------------------------------------------------------------ episode bookkeeping
    def _start(self, slot: _Slot, obs: str, info: dict) -> None:
        messages = list(info.get("messages") or [{"role": "user", "content": obs}])
        if info.get("system") and messages[0].get("role") != "system":
            messages.insert(0, {"role": "system", "content": info["system"]})
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        slot.episode = EpisodeBuilder(
            ids, task_id=_task_id(slot.env, info), version=self.engine.version
        )
        slot.env_s = 0.0
        slot.started = time.perf_counter()

    def _context_limit(self, max_new_tokens: int) -> int | None:
        """Longest context that still leaves room for a full reply."""
        limits = [self.max_context_tokens]
        positions = getattr(self.engine, "max_positions", None)
        if positions:
            limits.append(positions - max_new_tokens)
        known = [x for x in limits if x]
        return min(known) if known else None

    def _over_context(self, slot: _Slot) -> bool:
        return self._limit is not None and len(slot.episode.ids) > self._limit  # type: ignore[union-attr]

    def _skip_long_prompt(self, slot: _Slot) -> None:
        """Drop an episode whose first prompt does not fit, and start another instead."""
        self.timings["skipped_long_prompts"] = self.timings.get("skipped_long_prompts", 0) + 1
        self._skips_left -= 1
        if self._skips_left < 0:
            raise ValueError(
                f"too many first prompts are longer than {self._limit} tokens (the model's "
                "positions minus max_new_tokens, or max_context_tokens); use shorter problems "
                "or feedback, a model with more positions, or a smaller max_new_tokens"
            )
        slot.episode = None
        with self._lock:
            self._todo += 1  # a replacement from a fresh random start, outside any group
            self._tickets.appendleft(_Ticket(self.reset_options))
        if ticket := self._claim():
            slot.future = self._pool.submit(self._reset, slot, ticket)

    def _finish(
        self, slot: _Slot, terminated: bool, truncated: bool, info: dict, **extra: Any
    ) -> None:
        """End the slot's episode; its trajectory is built once its rewards are in."""
        verdict = info.get("verdict")
        stats = dict(
            solved=bool(terminated),
            truncated=bool(truncated),
            pass_rate=float(getattr(verdict, "pass_rate", 0.0) or 0.0),
            sandbox_error=bool(info.get("sandbox_error")),
            env_s=slot.env_s,
            wall_s=time.perf_counter() - slot.started,
            slot=slot.index,
            **({"group": slot.group} if slot.group is not None else {}),
            **extra,
        )
        self._unsettled.append((slot.episode, stats))  # type: ignore[arg-type]
        slot.episode = None
        slot.reply = None

    def _settle(self, done: list[Trajectory], wait: bool) -> None:
        """Build the trajectories of ended episodes whose rewards are in (all, if `wait`)."""
        waiting = []
        for episode, stats in self._unsettled:
            if wait or episode.settled():
                episode.settle()
                done.append(episode.build(**stats))
            else:
                waiting.append((episode, stats))
        self._unsettled = waiting


def _task_id(env: Any, info: dict) -> str:
    if info.get("task_id"):
        return str(info["task_id"])
    problem = getattr(getattr(env, "unwrapped", env), "problem", None)
    return str(getattr(problem, "task_id", ""))

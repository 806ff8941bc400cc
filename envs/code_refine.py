"""CodeRefine-v0: explain the wrong code, then fix it, turn after turn, against real tests.

An episode starts from a problem and a wrong program. The observation is the text
of the next user message: at reset, the problem + wrong code + its execution
feedback; after each step, the feedback on the last reply. The action is the
model's reply text ("<explanation>\n```python\n<program>\n```"). The env runs the
reply's program in the sandbox and scores it with a composite reward whose terms
and character spans land in `info`, so a trainer can place each reward on the
token that ends its span.

The contract a replacement env keeps to be trained and evaluated by a run (`env.id`):
- `gymnasium.make(id, problems=..., max_turns=..., rewards=..., pool=..., **env.kwargs)`
  for training and the probe; `gymnasium.make(id, problems=..., max_turns=rounds,
  **env.kwargs)` for evaluation (`pool` only when collection made one).
- Observations and actions are text: the next user message, and the model's reply.
  `terminated` when all tests pass, `truncated` at the turn limit.
- `reset` info the rollout reads: "messages" (the chat so far; default: the observation
  as one user message), "system" (a system prompt), "task_id".
- `step` info the rollout reads: "rewards_by_span" ({"explanation"|"code"|"turn": value};
  what they leave of the step reward goes on the reply's last token), "spans"
  ({"explanation"|"code": (start, end)} character offsets into the reply, to place those
  rewards), "reward_terms" (label -> weighted value, logged as `reward_terms/<label>`),
  "verdict" (an object with `pass_rate`, at the episode's end) and "sandbox_error" (the
  episode is dropped from training).
- `reset(options={"start": i})` over a list attribute `starts` (for `train.group_size` > 1
  and the probe) and `reset(options={"task_id": ..., "initial_code": ...})` (evaluation).
A subclass of `CodeRefineEnv` keeps all of it.
"""

from __future__ import annotations

import string
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from envs.pool import PoolEntry, load_pool
from envs.problem import Problem
from envs.rewards import CompositeReward, References, RewardContext, RewardResult
from envs.rewards.composite import when_all
from envs.templates import (
    ParsedReply,
    Templates,
    first_user_message,
    next_user_message,
    parse_reply,
    render_feedback,
)
from sandbox.types import Limits, TestCase, Verdict

ENV_ID = "CodeRefine-v0"
SANDBOX_ERROR = "SandboxError"  # the sandbox's own failure (not the program's)
DEFAULT_PROBLEMS = "synthetic:train"
REPLACEMENT = "\ufffd"


def _charset() -> str:
    """Characters that Python source and model text really use: printable ASCII with
    all whitespace, Latin-1, Greek, punctuation, arrows and math symbols."""
    ranges = [(0xA0, 0x100), (0x370, 0x400), (0x2010, 0x205F), (0x20A0, 0x20C0), (0x2190, 0x2300)]
    extra = "".join(chr(c) for lo, hi in ranges for c in range(lo, hi))
    return string.printable + extra + REPLACEMENT


CHARSET = _charset()
_CHARSET_SET = frozenset(CHARSET)

Runner = Callable[[str, list[TestCase], Limits], Verdict]


def sandbox_runner(program: str, tests: list[TestCase], limits: Limits) -> Verdict:
    """The default runner: the project's sandbox (imported on first use)."""
    import sandbox

    return sandbox.run(program, tests, limits)


@dataclass
class _Episode:
    problem: Problem
    code: str
    verdict: Verdict
    references: References
    turn: int = 0
    done: bool = False
    messages: list[dict[str, str]] = field(default_factory=list)


class CodeRefineEnv(gym.Env[str, str]):
    """Gymnasium env for multi-turn explain-then-refine episodes.

    Args:
        problems: a source spec ("mbpp:train", "synthetic:test"), a generic-format
            JSONL path, or a list of `Problem`. Default: the pool's sources, else
            "synthetic:train".
        max_turns: replies per episode before truncation.
        rewards: a preset name ("ledex", "tests", "sparse") or a list of term configs.
        pool: an RL problem pool (JSONL path or records) of wrong solutions to start from.
        templates: a `Templates` or a dict of template overrides.
        limits: sandbox limits per run (a `Limits` or a dict of its fields).
        plus_tests: also run the problem's EvalPlus tests.
        problem_options: keyword options for the problem loader (e.g. n, seed).
        runner: `(program, tests, limits) -> Verdict`; default the project's sandbox.

    `reset` info: "system" (system prompt), "messages" (chat so far), "task_id",
    "initial_code", "verdict" (of the initial code), "turn". `step` info: "verdict"
    (None when the reply had no code), "reward_terms" (label -> weighted contribution,
    summing to the reward), "reward_raw" (label -> raw term value), "spans"
    ({"explanation"|"code": (start, end)} character offsets into the reply, empty when
    absent), "rewards_by_span" ({"explanation"|"code"|"turn": value}, rewards of absent
    spans moved to "turn"), "explanation", "code", "feedback", "pass_rate", "turn",
    "task_id", "sandbox_error" (the sandbox itself failed: the episode is truncated and
    its last reward is not the policy's doing; trainers may drop it). A reply with no
    code is not run: the format term penalises it and the next observation says so.

    With `defer_rewards` (a rollout loop that does not wait for CodeBLEU and embeddings),
    `step` returns as soon as the sandbox has judged the reply: its reward is the sum of
    the terms already known, and info["pending_reward"] is a Future of the whole reward's
    {"reward", "reward_terms", "reward_raw", "rewards_by_span"} (these keys are then
    absent from info). The observation and termination never depend on a pending term.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 1}

    def __init__(
        self,
        problems: str | Sequence[Problem] | None = None,
        max_turns: int = 3,
        rewards: str | Sequence[Any] = "tests",
        pool: str | Sequence[Mapping[str, Any]] | None = None,
        templates: Templates | Mapping[str, Any] | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
        plus_tests: bool = False,
        problem_options: Mapping[str, Any] | None = None,
        runner: Runner | None = None,
        max_text_chars: int = 65536,
        render_mode: str | None = None,
        defer_rewards: bool = False,
    ):
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}")
        self.max_turns = int(max_turns)
        self.render_mode = render_mode
        self.templates = Templates.from_overrides(templates)
        self.limits = limits if isinstance(limits, Limits) else Limits(**dict(limits or {}))
        self.plus_tests = plus_tests
        self.reward_fn = CompositeReward(rewards)
        self.runner: Runner = runner or sandbox_runner
        self.pool = load_pool(pool) if pool is not None else []
        self.problems = _index(_load(problems, self.pool, dict(problem_options or {})))
        self.starts = self._starts()
        self.max_text_chars = max_text_chars
        self.defer_rewards = defer_rewards
        self.observation_space = spaces.Text(max_text_chars, min_length=1, charset=CHARSET)
        self.action_space = spaces.Text(max_text_chars, min_length=0, charset=CHARSET)
        self._cache: OrderedDict[tuple[str, str], Verdict] = OrderedDict()
        self._ep: _Episode | None = None

    # ------------------------------------------------------------------ setup

    def _starts(self) -> list[tuple[str, str, PoolEntry | None]]:
        """Episode starts: (task_id, wrong code, pool entry) from the pool, else from
        problems that carry `metadata["initial_code"]`."""
        starts: list[tuple[str, str, PoolEntry | None]]
        if self.pool:
            starts = [(e.task_id, e.wrong_code, e) for e in self.pool if e.task_id in self.problems]
            if not starts:
                raise ValueError(
                    "no pool entry matches a loaded problem: the pool's task_ids "
                    f"(e.g. {self.pool[0].task_id!r}) are not in `problems`"
                )
            if len(starts) < len(self.pool):
                gym.logger.warn(
                    f"{len(self.pool) - len(starts)} of {len(self.pool)} pool entries name "
                    "problems that are not loaded; they are skipped"
                )
            return starts
        return [
            (p.task_id, p.metadata["initial_code"], None)
            for p in self.problems.values()
            if p.metadata.get("initial_code")
        ]

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        task_id, code, entry = self._pick(options or {})
        problem = self.problems[task_id]
        verdict = self._run_cached(problem, code)
        feedback = render_feedback(verdict, self._tests(problem), self.templates)
        obs = self._fit(first_user_message(problem.prompt, code, feedback, self.templates))
        messages = [{"role": "system", "content": self.templates.system}]
        messages.append({"role": "user", "content": obs})
        self._ep = _Episode(problem, code, verdict, _references(problem, entry), messages=messages)
        info = {
            "system": self.templates.system,
            "messages": [dict(m) for m in messages],
            "task_id": task_id,
            "initial_code": code,
            "verdict": verdict,
            "turn": 0,
        }
        return obs, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        ep = self._ep
        if ep is None or ep.done:
            raise RuntimeError("call reset() before step(): no episode is running")
        if not isinstance(action, str):
            raise TypeError(f"the action must be the reply text (str), got {type(action).__name__}")
        reply = parse_reply(action, ep.problem.entry_point)
        verdict = self._run(ep.problem, reply.code or "") if reply.has_code else None
        ctx = RewardContext(ep.problem, reply, verdict, ep.turn, ep.references, ep.verdict)
        known, pending = self.reward_fn.start(ctx)
        ep.turn += 1
        terminated = verdict is not None and verdict.passed
        broken = verdict is not None and verdict.error_type == SANDBOX_ERROR
        if broken:
            gym.logger.warn(f"sandbox failure on {ep.problem.task_id}; episode truncated")
        truncated = not terminated and (ep.turn >= self.max_turns or broken)
        ep.done = terminated or truncated
        if verdict is not None:
            ep.code, ep.verdict = reply.code or "", verdict
        if verdict is None:
            feedback = obs = self.templates.no_code
        else:
            feedback = render_feedback(verdict, self._tests(ep.problem), self.templates)
            obs = feedback if terminated else next_user_message(feedback, self.templates)
        obs = self._fit(obs)
        ep.messages += [{"role": "assistant", "content": action}, {"role": "user", "content": obs}]
        info = self._step_info(reply, verdict, feedback)
        if self.defer_rewards and not pending.done():
            info["pending_reward"] = when_all([pending], lambda: _reward_info(pending, reply))
            return obs, float(known), terminated, truncated, info
        parts = _reward_info(pending, reply)
        return obs, parts.pop("reward"), terminated, truncated, {**info, **parts}

    def render(self) -> str | None:
        if self._ep is None or self.render_mode is None:
            return None
        text = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self._ep.messages)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    # ------------------------------------------------------------------ helpers

    def _step_info(
        self, reply: ParsedReply, verdict: Verdict | None, feedback: str
    ) -> dict[str, Any]:
        assert self._ep is not None
        return {
            "verdict": verdict,
            "spans": {"explanation": reply.explanation_span, "code": reply.code_span},
            "explanation": reply.explanation,
            "code": reply.code,
            "feedback": feedback,
            "pass_rate": verdict.pass_rate if verdict is not None else 0.0,
            "turn": self._ep.turn,
            "task_id": self._ep.problem.task_id,
            "sandbox_error": verdict is not None and verdict.error_type == SANDBOX_ERROR,
        }

    def _pick(self, options: dict[str, Any]) -> tuple[str, str, PoolEntry | None]:
        unknown = sorted(set(options) - {"task_id", "initial_code", "start"})
        if unknown:
            raise ValueError(
                f"unknown reset option(s) {unknown}; known: task_id, initial_code, start"
            )
        if "start" in options:  # an index into self.starts: grouped sampling replays one start
            index = options["start"]
            if not isinstance(index, int) or not 0 <= index < len(self.starts):
                raise ValueError(
                    f"reset option 'start' must be an index in [0, {len(self.starts)}) "
                    f"(len(env.starts)), got {index!r}"
                )
            return self.starts[index]
        task_id, code = options.get("task_id"), options.get("initial_code")
        if task_id is None:
            if code is not None:
                raise ValueError("reset option 'initial_code' needs a 'task_id' too")
            if not self.starts:
                raise ValueError(
                    "no episode start: these problems carry no metadata['initial_code'] and no "
                    "pool was given; pass pool=<RL pool JSONL> or "
                    "reset(options={'task_id': ..., 'initial_code': ...})"
                )
            return self.starts[int(self.np_random.integers(len(self.starts)))]
        if task_id not in self.problems:
            raise KeyError(
                f"unknown task_id {task_id!r} (not among the {len(self.problems)} problems)"
            )
        if code is not None:
            return task_id, code, None
        mine = [s for s in self.starts if s[0] == task_id]
        if not mine:
            raise ValueError(
                f"problem {task_id!r} has no initial code: pass options={{'initial_code': ...}}"
            )
        return mine[int(self.np_random.integers(len(mine)))]

    def _tests(self, problem: Problem) -> list[TestCase]:
        return problem.tests + problem.plus_tests if self.plus_tests else problem.tests

    def _run(self, problem: Problem, code: str) -> Verdict:
        return self.runner(problem.program(code), self._tests(problem), self.limits)

    def _run_cached(self, problem: Problem, code: str, size: int = 4096) -> Verdict:
        """Start programs repeat across episodes: run each one once per env."""
        key = (problem.task_id, code)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        verdict = self._run(problem, code)
        if verdict.error_type == SANDBOX_ERROR:  # not the program's fault: retry next time
            return verdict
        self._cache[key] = verdict
        if len(self._cache) > size:
            self._cache.popitem(last=False)
        return verdict

    def _fit(self, text: str) -> str:
        """Keep an observation inside the observation space (charset, length)."""
        if not _CHARSET_SET.issuperset(text):
            text = "".join(ch if ch in _CHARSET_SET else REPLACEMENT for ch in text)
        if len(text) > self.max_text_chars:
            text = text[: self.max_text_chars - 3] + "..."
        return text or " "


def _load(
    problems: str | Sequence[Problem] | None, pool: list[PoolEntry], options: dict[str, Any]
) -> list[Problem]:
    from envs.sources import load_problems

    if problems is None:
        specs = sorted({e.source for e in pool if e.source}) or [DEFAULT_PROBLEMS]
        return [p for spec in specs for p in load_problems(spec, **options)]
    if isinstance(problems, str):
        return load_problems(problems, **options)
    problems = list(problems)
    if not all(isinstance(p, Problem) for p in problems):
        raise TypeError("problems must be a spec string, a JSONL path or a list of Problem")
    return problems


def _index(problems: list[Problem]) -> dict[str, Problem]:
    if not problems:
        raise ValueError("no problems loaded: check the problems spec or path")
    return {p.task_id: p for p in problems}


def _references(problem: Problem, entry: PoolEntry | None) -> References:
    """Verified fixes and explanations: the pool entry's, the problem's, its reference."""
    codes = [r.code for r in entry.references] if entry else []
    codes += list(problem.metadata.get("reference_fixes") or [])
    codes += [problem.reference] if problem.reference else []
    expls = [r.explanation for r in entry.references] if entry else []
    expls += list(problem.metadata.get("reference_explanations") or [])
    unique = lambda xs: tuple(dict.fromkeys(x for x in xs if x and x.strip()))  # noqa: E731
    return References(codes=unique(codes), explanations=unique(expls))


def _reward_info(pending: Future[RewardResult], reply: ParsedReply) -> dict[str, Any]:
    """The step's reward and its parts, from the (finished) composite reward."""
    result = pending.result()
    return {
        "reward": float(result.total),
        "reward_terms": dict(result.terms),
        "reward_raw": dict(result.raw),
        "rewards_by_span": _place(result.by_span, reply),
    }


def _place(by_span: dict[str, float], reply: ParsedReply) -> dict[str, float]:
    """Rewards of an absent span (no explanation, no code) move to the turn's last token."""
    placed = dict(by_span)
    for span, (start, end) in (("explanation", reply.explanation_span), ("code", reply.code_span)):
        if end <= start and placed.get(span):
            placed["turn"] += placed[span]
            placed[span] = 0.0
    return placed

"""The PPO driver loop: rollout actors and learner ranks, sync or async.

Async mode overlaps the rollout of iteration i+1 with the learner's update on
iteration i's batch. Between rollouts the actors get new weights only when the next
batch would otherwise be more than `train.max_staleness` (k) versions old when the
learner trains on it: with k = 1 after every update, with k = 2 every second one, and so
on (each batch is 1 to k versions stale). With `rollout.weights_between_turns`, the
driver also publishes every new version at once and running episodes take it at their
next turn, so one episode can mix versions; every token keeps its own, and the learner's
staleness bound and off-policy correction work per token.

The batch reward is a noisy view of progress (new problems and new samples every
batch). With `probe_episodes`, the actors also replay a fixed set of training starts
greedily once per policy version (never trained on): the same problems and no
sampling noise, so its curve moves only when the policy does. In async mode the probe
runs beside the learner's update, in the actors' idle time.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from statistics import linear_regression, mean
from typing import Any

import ray

from actorlearner.learner.checkpoint import StopFlag, latest_tag
from actorlearner.metrics import MetricsLogger
from actorlearner.pipeline.paired import paired_rewards
from actorlearner.rollout.weight_board import create_board
from actorlearner.trajectory import Trajectory

log = logging.getLogger("actorlearner")


@dataclass
class LoopStats:
    iterations: int = 0
    reward_history: list[float] = field(default_factory=list)
    solved_history: list[float] = field(default_factory=list)  # share of batch episodes solved
    iter_s: list[float] = field(default_factory=list)
    rollout_s: list[float] = field(default_factory=list)
    learn_s: list[float] = field(default_factory=list)
    probe: dict[int, dict[str, float]] = field(default_factory=dict)  # version -> probe metrics
    # version -> task id -> mean probe reward, for the start-by-start comparison
    probe_tasks: dict[int, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"iterations": self.iterations, "reward_history": self.reward_history}
        if self.reward_history:
            out["reward_first"], out["reward_last"] = (
                self.reward_history[0],
                self.reward_history[-1],
            )
            out.update(reward_trend(self.reward_history))
        if self.solved_history:
            out["solved_history"] = self.solved_history
            out.update(reward_trend(self.solved_history, prefix="solved"))
        if self.probe:
            versions = sorted(self.probe)
            out["probe_versions"] = versions
            for key, name in (("reward_mean", "reward"), ("solved", "solved")):
                history = [self.probe[v][key] for v in versions]
                out[f"probe_{name}_history"] = history
                out.update(reward_trend(history, prefix=f"probe_{name}"))
            first, last = versions[0], versions[-1]
            if len(versions) > 1 and first in self.probe_tasks and last in self.probe_tasks:
                out["probe_paired"] = paired_rewards(
                    self.probe_tasks[first], self.probe_tasks[last]
                )
        if self.iter_s:
            # overlap: iteration time against max(rollout, learn) (async ideal) and their sum (sync)
            out["iter_s_mean"] = mean(self.iter_s)
            out["rollout_s_mean"] = mean(self.rollout_s)
            out["learn_s_mean"] = mean(self.learn_s)
            out["iter_over_max"] = mean(
                i / max(r, lr)
                for i, r, lr in zip(self.iter_s, self.rollout_s, self.learn_s, strict=True)
            )
            out["iter_over_sum"] = mean(
                i / (r + lr)
                for i, r, lr in zip(self.iter_s, self.rollout_s, self.learn_s, strict=True)
            )
        return out


def reward_trend(history: list[float], prefix: str = "reward") -> dict[str, float]:
    """A noise-aware view of a per-iteration curve: least-squares slope per iteration, and the
    mean of the first and the last half of the iterations."""
    half = len(history) // 2
    if half == 0:
        return {}
    slope = linear_regression(range(len(history)), history).slope
    return {
        f"{prefix}_slope": slope,
        f"{prefix}_first_half": mean(history[:half]),
        f"{prefix}_last_half": mean(history[-half:]),
    }


def task_rewards(trajs: list[Trajectory]) -> dict[str, float]:
    """Mean episode reward per task id (a probe replays the same starts every time)."""
    sums: dict[str, list[float]] = {}
    for t in trajs:
        sums.setdefault(t.task_id, []).append(t.total_reward)
    return {k: mean(v) for k, v in sums.items()}


def episode_means(trajs: list[Trajectory]) -> dict[str, float]:
    """Mean reward, solved share and mean of every reward term over some episodes."""
    n = max(1, len(trajs))
    out = {
        "reward_mean": sum(t.total_reward for t in trajs) / n,
        "solved": sum(bool(t.stats.get("solved")) for t in trajs) / n,
    }
    for t in trajs:
        for k, v in t.reward_terms.items():
            out[f"reward_terms/{k}"] = out.get(f"reward_terms/{k}", 0.0) + v / n
    return out


def rollout_metrics(trajs: list[Trajectory], seconds: float) -> dict[str, float]:
    n = max(1, len(trajs))
    generated = sum(sum(t.action_mask) for t in trajs)
    terms = episode_means(trajs)
    return {
        "rollout/reward_mean": terms.pop("reward_mean"),
        "rollout/solved": terms.pop("solved"),
        "rollout/turns": sum(len(t.turn_ends) for t in trajs) / n,
        "rollout/episodes": float(len(trajs)),
        # episodes whose replies came from more than one policy version (weights taken
        # between turns)
        "rollout/mixed_version_episodes": sum(len(t.sampled_versions) > 1 for t in trajs) / n,
        "throughput/rollout_tokens_per_s": generated / max(seconds, 1e-9),
        "throughput/sandbox_s_per_episode": sum(float(t.stats.get("env_s", 0.0)) for t in trajs)
        / n,
        **terms,
    }


def drop_sandbox_errors(batch: list[Trajectory], iteration: int) -> list[Trajectory]:
    """Episodes the sandbox itself failed carry no signal about the policy: leave them out."""
    kept = [t for t in batch if not t.stats.get("sandbox_error")]
    if batch and not kept:
        raise RuntimeError(
            f"every episode of iteration {iteration} hit a sandbox error: check that firejail "
            "is installed (`firejail --version`) and the sandbox limits in the config"
        )
    if len(kept) < len(batch):
        log.warning(
            "iteration %d: dropped %d sandbox-error episodes", iteration, len(batch) - len(kept)
        )
    return kept


def push_due(mode: str, actor_version: int, learner_version: int, max_staleness: int) -> bool:
    """Whether the actors need the learner's weights before the next batch starts.

    In async mode that batch is trained after one more update, at learner_version + 1.
    """
    if mode != "async":
        return True
    return learner_version + 1 - actor_version > max_staleness


def check_staleness(mode: str, max_staleness: int) -> None:
    if mode == "async" and max_staleness < 1:
        raise ValueError(
            "train.mode=async trains on batches at least one version old: set "
            f"train.max_staleness >= 1 (got {max_staleness}), or use train.mode=sync"
        )


def ppo_loop(
    rollouts,
    learner,
    iterations: int,
    episodes: int,
    mode: str,
    checkpoint_dir: Path,
    logger: MetricsLogger,
    checkpoint_every: int = 5,
    probe_episodes: int = 0,
    max_staleness: int | None = None,
) -> LoopStats:
    """Run PPO iterations until `iterations` are done (resuming from the last checkpoint).

    `max_staleness` defaults to the learner's `ppo.max_staleness`.
    """
    if max_staleness is None:
        max_staleness = learner.cfg.ppo.max_staleness
    check_staleness(mode, max_staleness)
    between_turns = mode == "async" and getattr(rollouts.cfg, "weights_between_turns", False)
    board = create_board() if between_turns else None
    stats = LoopStats()
    start_it = 0
    if latest_tag(checkpoint_dir) is not None:
        extra = learner.load_checkpoint(checkpoint_dir)
        start_it = int(extra.get("iteration", 0))
        stats.reward_history = list(extra.get("reward_history", []))
        stats.solved_history = list(extra.get("solved_history", []))
        stats.probe = {int(v): m for v, m in extra.get("probe", {}).items()}
        stats.probe_tasks = {int(v): m for v, m in extra.get("probe_tasks", {}).items()}
        log.info("resumed PPO at iteration %d (policy version %d)", start_it, learner.version)
    t = time.perf_counter()
    rollouts.push_weights(learner)
    logger.log({"time/weight_sync_s": time.perf_counter() - t}, start_it)
    pool = ThreadPoolExecutor(1, thread_name_prefix="rollout")
    stop = StopFlag()
    pending: Future | None = None

    greedy = dataclasses.replace(rollouts.cfg.sampling, temperature=0.0)
    probes: dict[int, float] = {}  # version -> seconds, measured but not yet logged

    def run_probe() -> None:
        """Greedy replies on the fixed starts, once per policy version the actors hold."""
        version = rollouts.version
        if probe_episodes and version not in stats.probe:
            t0 = time.perf_counter()
            trajs = rollouts.rollout(probe_episodes, greedy, fixed=True)
            stats.probe[version] = episode_means(trajs)
            stats.probe_tasks[version] = task_rewards(trajs)
            probes[version] = time.perf_counter() - t0

    def log_probes() -> None:
        for version in sorted(probes):
            means = {f"probe/{k}": v for k, v in stats.probe[version].items()}
            logger.log({**means, "time/probe_s": probes.pop(version)}, version)

    def probe_only() -> tuple[list[Trajectory], float]:
        run_probe()
        return [], 0.0

    def timed_rollout() -> tuple[list[Trajectory], float]:
        t0 = time.perf_counter()
        batch = rollouts.rollout(episodes)
        seconds = time.perf_counter() - t0
        run_probe()  # after the batch: in async mode it runs while the learner updates
        return batch, seconds

    try:
        batch, rollout_s = timed_rollout()
        for it in range(start_it, iterations):
            # One steady-state iteration = update on batch i + produce batch i+1.
            last = it + 1 == iterations
            t_iter = time.perf_counter()
            if mode == "async" and not last:
                pending = pool.submit(timed_rollout)  # made by the current weights, version v
            elif mode == "async" and probe_episodes:  # no next batch: probe version v meanwhile
                pending = pool.submit(probe_only)
            t0 = time.perf_counter()
            dropped = len(batch)
            batch = drop_sandbox_errors(batch, it + 1)
            dropped -= len(batch)
            metrics = learner.ppo_step(batch)  # -> version v + 1
            learn_s = time.perf_counter() - t0
            weights = rollouts.stage_weights(learner)  # None when pushed collectively
            if board is not None:  # running episodes take it at their next turn
                board.publish.remote(learner.version, [weights])
            next_batch, next_rollout_s = [], 0.0
            if pending is not None:
                next_batch, next_rollout_s = pending.result()
                pending = None
            t0 = time.perf_counter()
            if (
                last
                or board is not None
                or push_due(mode, rollouts.version, learner.version, max_staleness)
            ):  # the last one too: the final policy is probed
                rollouts.push_weights(learner, weights)
            sync_s = time.perf_counter() - t0
            if mode == "sync" and not last:
                next_batch, next_rollout_s = timed_rollout()
            if last:
                run_probe()  # the final policy
            iter_s = time.perf_counter() - t_iter
            if not last:
                stats.iter_s.append(iter_s)
                stats.rollout_s.append(next_rollout_s)
                stats.learn_s.append(learn_s)
            stats.iterations = it + 1
            means = episode_means(batch)
            stats.reward_history.append(means["reward_mean"])
            stats.solved_history.append(means["solved"])
            stale = [learner.version - 1 - t.policy_version for t in batch]
            logger.log(
                {
                    **metrics,
                    **rollout_metrics(batch, rollout_s),
                    "time/iteration_s": iter_s,
                    "time/rollout_s": rollout_s,
                    "time/learn_s": learn_s,
                    "time/weight_sync_s": sync_s,
                    "staleness/mean": sum(stale) / max(1, len(stale)),
                    "staleness/max": float(max(stale, default=0)),
                    "rollout/dropped_sandbox_errors": float(dropped),
                },
                it + 1,
            )
            log.info(
                "iter %d/%d reward %.3f solved %.0f%% (rollout %.1fs, learn %.1fs)",
                it + 1, iterations, stats.reward_history[-1], 100 * stats.solved_history[-1],
                rollout_s, learn_s,
            )  # fmt: skip
            log_probes()
            if last or stop.requested or (checkpoint_every and (it + 1) % checkpoint_every == 0):
                extra = {
                    "iteration": it + 1,
                    "reward_history": stats.reward_history,
                    "solved_history": stats.solved_history,
                    "probe": {str(v): m for v, m in stats.probe.items()},
                    "probe_tasks": {str(v): m for v, m in stats.probe_tasks.items()},
                }
                learner.save_checkpoint(checkpoint_dir, extra=extra)
            if stop.requested or last:
                break
            batch, rollout_s = next_batch, next_rollout_s
    finally:
        stop.restore()
        pool.shutdown(wait=True)
        if board is not None:
            ray.kill(board)
    return stats

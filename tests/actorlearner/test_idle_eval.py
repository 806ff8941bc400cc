"""Evaluation beside training: idle CPU priority for generation only, no CPU reserved,
the same results as a normal evaluation."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (read from /proc: no extra dependency)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


def _policies(ids: list[int]) -> set[int]:
    found = set()
    for i in ids:
        try:
            found.add(os.sched_getscheduler(i))
        except OSError:  # ended meanwhile
            pass
    return found


def test_idle_engine_generates_the_same_tokens_in_an_idle_thread(tiny_model_dir):
    from actorlearner.engines import SamplingParams, make_engine
    from actorlearner.engines.idle import IdlePriority, runs_idle

    seen: dict[str, int | bool] = {}

    def build():
        seen["idle"], seen["tid"] = runs_idle(), threading.get_native_id()
        return make_engine("hf", str(tiny_model_dir))

    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    engine = IdlePriority(build)
    try:
        got = engine.generate(prompts, greedy)
        assert seen["idle"] is True  # the model was loaded in the idle thread
        assert os.sched_getscheduler(int(seen["tid"])) == os.SCHED_IDLE
        assert not runs_idle()  # the caller keeps its priority
        assert engine.version == 0 and engine.tokenizer is not None
    finally:
        engine.close()
    want = make_engine("hf", str(tiny_model_dir)).generate(prompts, greedy)
    assert [g.token_ids for g in got] == [g.token_ids for g in want]
    assert all(len(g.token_ids) > 0 for g in got)


def test_idle_shard_keeps_the_sandbox_at_normal_priority(tiny_model_dir):
    """While an idle shard plays, its generating thread is in the idle class, but the
    jailed test processes it starts are not (their wall-clock timeouts must not depend on
    the machine's load), and the episodes are those of a normal shard."""
    from actorlearner.pipeline.cluster_eval import DepthSettings, play_sets
    from envs.sources import load_problems

    sets = [("synthetic:test", load_problems("synthetic:test", n=4, seed=3))]
    settings = DepthSettings(rounds=2, max_new_tokens=10)
    seen: list[tuple[set[int], set[int]]] = []

    def progress(count) -> None:  # called by the episode runner's thread after each round
        tids = [int(t.name) for t in Path("/proc/self/task").iterdir()]
        seen.append((_policies(tids), _policies(_descendants(os.getpid()))))

    model = str(tiny_model_dir)
    idle, _ = play_sets(model, "hf", sets, settings, progress=progress, idle=True)
    normal, _ = play_sets(model, "hf", sets, settings)
    assert seen, "no round finished"
    for threads, processes in seen:
        assert os.SCHED_IDLE in threads and os.SCHED_OTHER in threads
        assert processes and os.SCHED_IDLE not in processes, processes
    assert not any(os.sched_getscheduler(int(t.name)) == os.SCHED_IDLE
                   for t in Path("/proc/self/task").iterdir())  # fmt: skip
    rows = lambda out: sorted((r.task_id, r.solved_at, r.replies) for r in out["synthetic:test"][0])  # noqa: E731
    assert rows(idle) == rows(normal) and all(r[2] for r in rows(idle))
    assert idle["synthetic:test"][1] == normal["synthetic:test"][1]


def test_idle_evaluation_finishes_while_every_cpu_is_reserved(tiny_model_dir):
    """Like PPO's actors and ranks, an actor holds every CPU of the cluster: a normal
    evaluation would wait for them, an idle one reserves none, runs, and returns the
    metrics a normal evaluation gives once the CPUs are free."""
    import ray

    from actorlearner.pipeline.cluster_eval import DepthSettings, EvalJob, evaluate_jobs, launch
    from actorlearner.pipeline.run import worker_env
    from actorlearner.raycluster import RayRun
    from envs.sources import load_problems

    model = str(tiny_model_dir)
    jobs = [EvalJob("synthetic:test", model, load_problems("synthetic:test", n=4, seed=5), "tiny")]
    settings = DepthSettings(rounds=2, max_new_tokens=10)
    with RayRun("local", num_cpus=2, runtime_env=worker_env()):

        @ray.remote(num_cpus=2)
        class Holder:
            def ready(self) -> bool:
                return True

        holder = Holder.remote()  # type: ignore[attr-defined]
        ray.get(holder.ready.remote())
        assert ray.available_resources().get("CPU", 0) == 0
        stored: list[str] = []
        background = launch(jobs, settings, idle=True).in_background(
            on_result=lambda job, m: stored.append(job.benchmark)
        )
        got = background.wait()
        assert stored == ["synthetic:test"] and background.error is None
        ray.kill(holder)
        want = evaluate_jobs(jobs, settings)
    idle_metrics, normal_metrics = got[(model, "synthetic:test")], want[(model, "synthetic:test")]
    assert (
        idle_metrics.pop("idle_priority") is True and normal_metrics.pop("idle_priority") is False
    )
    for m in (idle_metrics, normal_metrics):
        m.pop("eval_s")
    assert idle_metrics == normal_metrics and idle_metrics["num_tasks"] == 4


def test_idle_launch_refuses_gpu_workers():
    from actorlearner.pipeline.cluster_eval import DepthSettings, WorkerShape, launch

    with pytest.raises(ValueError, match="CPU workers only"):
        launch([], DepthSettings(rounds=1), shape=WorkerShape(1, 1), idle=True)


def test_failed_background_evaluation_is_reported_not_raised(tiny_model_dir, tmp_path, caplog):
    """A background shard that fails (here: its model is gone) leaves the job out of
    `wait`'s results, with one warning, so the evaluate stage can redo it itself."""
    import logging

    from actorlearner.pipeline.cluster_eval import DepthSettings, EvalJob, launch
    from actorlearner.pipeline.run import worker_env
    from actorlearner.raycluster import RayRun
    from envs.sources import load_problems

    problems = load_problems("synthetic:test", n=2, seed=5)
    good = EvalJob("synthetic:test", str(tiny_model_dir), problems, "tiny")
    gone = EvalJob("synthetic:test", str(tmp_path / "deleted_model"), problems, "gone")
    caplog.set_level(logging.WARNING, logger="actorlearner")
    with RayRun("local", num_cpus=2, runtime_env=worker_env()):
        run = launch([good, gone], DepthSettings(rounds=1, max_new_tokens=6), idle=True)
        background = run.in_background()
        done = background.wait()
    assert background.error is not None
    assert (gone.model, gone.benchmark) not in done
    assert set(done) <= {(good.model, good.benchmark)}  # whatever finished before the failure
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("background evaluation failed" in w for w in warnings), warnings

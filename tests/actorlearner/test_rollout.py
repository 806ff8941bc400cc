"""Rollouts with the tiny model, the real CodeRefine-v0 env, the real sandbox and real Ray."""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future

import gymnasium
import pytest
import torch

import envs  # noqa: F401  (registers CodeRefine-v0)
from actorlearner.chat import IM_END, render, user_turn_suffix
from actorlearner.engines.base import Generation, SamplingParams
from actorlearner.engines.hf import HFEngine
from actorlearner.rollout.episode import EpisodeBuilder, ReplyText
from actorlearner.rollout.runner import EpisodeRunner
from envs.problem import Problem
from envs.rewards import RewardContext, reward_term
from envs.templates import format_reply
from sandbox.types import TestCase as Case

torch.set_num_threads(1)

REWARDS = [
    {"name": "pass_rate", "weight": 2.0, "span": "code"},
    {"name": "constant", "weight": 0.5, "span": "explanation", "label": "explained"},
    {"name": "format", "weight": 1.0},
]


def problems() -> list[Problem]:
    def make(name, op, wrong, a, b):
        tests = [
            Case(
                f"{name}({x}, {y})",
                eval(f"{x} {op} {y}"),
                display=f"assert {name}({x}, {y}) == {eval(f'{x} {op} {y}')}",
            )
            for x, y in ((a, b), (b, a), (a + 1, b + 2))
        ]
        return Problem(
            task_id=f"toy/{name}",
            prompt=f"Write {name}(a, b) that returns a {op} b.",
            entry_point=name,
            tests=tests,
            reference=f"def {name}(a, b):\n    return a {op} b\n",
            metadata={"initial_code": f"def {name}(a, b):\n    return a {wrong} b\n"},
        )

    return [make("plus", "+", "-", 2, 5), make("times", "*", "+", 3, 4)]


def make_env(max_turns: int = 2):
    return gymnasium.make(
        "CodeRefine-v0", problems=problems(), max_turns=max_turns, rewards=REWARDS
    )


class Recorder(gymnasium.Wrapper):
    """Keeps every reset/step of a real env, to check trajectories against what it saw."""

    def __init__(self, env):
        super().__init__(env)
        self.episodes: list[dict] = []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.episodes.append({"obs": obs, "info": info, "steps": []})
        return obs, info

    def step(self, action):
        out = self.env.step(action)
        self.episodes[-1]["steps"].append((action, out))
        return out


class CrashWhenArmed(gymnasium.Wrapper):
    """Kills its whole process on a step once a marker file exists (taken by one actor)."""

    def __init__(self, env, marker: str):
        super().__init__(env)
        self.marker = marker

    def step(self, action):
        try:
            os.rename(self.marker, self.marker + ".taken")
        except FileNotFoundError:
            return self.env.step(action)
        os._exit(1)


def crashing_env(marker: str):
    return CrashWhenArmed(make_env(), marker)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFEngine(str(tiny_model_dir))


def forward_logprobs(model, ids: list[int], temperature: float) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    lp = torch.log_softmax(logits / temperature, -1).gather(-1, torch.tensor(ids[1:])[:, None])
    return torch.cat([torch.zeros(1), lp.squeeze(-1)])


def runs(mask: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of 1s."""
    out, start = [], None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


def expected_rewards(tok, ids, reply_runs, steps) -> list[float]:
    """Rewards placed independently: each span reward on the first token whose prefix covers
    the span's text, "turn" on the reply's last generated token."""
    want = [0.0] * len(ids)
    for (start, end), (action, (_, reward, _, _, info)) in zip(reply_runs, steps, strict=True):
        for name, value in info["rewards_by_span"].items():
            span = info["spans"].get(name)
            pos = end - 1
            if name != "turn" and span and span[1] > span[0]:
                target = action[: span[1]]
                pos = next(
                    p
                    for p in range(start, end)
                    if tok.decode(ids[start : p + 1]).startswith(target)
                )
            want[pos] += value
        assert sum(info["rewards_by_span"].values()) == pytest.approx(reward)
    return want


def test_runner_trajectories_are_exact(engine):
    """Masks, logprobs, token layout and reward placement against what the real env saw."""
    tok = engine.tokenizer
    recorders = [Recorder(make_env()) for _ in range(3)]
    runner = EpisodeRunner(engine, tok, recorders, overlap=True, seed=0)
    sampling = SamplingParams(max_new_tokens=24, temperature=0.8, seed=0)
    trajs = runner.run(7, sampling)
    runner.close()
    assert len(trajs) == 7
    by_slot = defaultdict(list)
    for t in trajs:
        by_slot[t.stats["slot"]].append(t)
    im_end = tok.convert_tokens_to_ids(IM_END)
    for slot, slot_trajs in by_slot.items():
        for traj, ep in zip(slot_trajs, recorders[slot].episodes, strict=False):
            ids, mask = traj.token_ids, traj.action_mask
            prompt = tok(render(ep["info"]["messages"], True), add_special_tokens=False)[
                "input_ids"
            ]
            assert ids[: len(prompt)] == prompt and not any(mask[: len(prompt)])
            reply_runs = runs(mask)
            assert len(reply_runs) == len(ep["steps"]) == traj.stats["turns"]
            assert traj.turn_ends == [e - 1 for _, e in reply_runs]
            for k, ((s, e), (action, (obs, *_))) in enumerate(
                zip(reply_runs, ep["steps"], strict=True)
            ):
                stopped = ids[e - 1] == im_end
                assert tok.decode(ids[s : e - 1 if stopped else e]) == action  # what the env got
                nxt = e if stopped else e + 1
                if not stopped:  # closing <|im_end|> added as context, not as an action
                    assert ids[e] == im_end and mask[e] == 0 and traj.logprobs[e] == 0
                if k + 1 < len(ep["steps"]):  # the feedback turn, tokenized on its own
                    suffix = tok(user_turn_suffix(obs), add_special_tokens=False)["input_ids"]
                    assert ids[nxt : nxt + len(suffix)] == suffix
                    assert reply_runs[k + 1][0] == nxt + len(suffix)
                else:
                    assert nxt == len(ids)
            assert sum(mask) == traj.stats["generated_tokens"]
            fresh = forward_logprobs(engine.model, ids, 0.8)
            m = torch.tensor(mask, dtype=torch.bool)
            torch.testing.assert_close(torch.tensor(traj.logprobs)[m], fresh[m], atol=1e-5, rtol=0)
            want = expected_rewards(tok, ids, reply_runs, ep["steps"])
            assert traj.rewards == pytest.approx(want)
            assert traj.total_reward == pytest.approx(sum(s[1][1] for s in ep["steps"]))
            assert traj.task_id == ep["info"]["task_id"]


@reward_term("explanation_length_later", span="explanation")
def explanation_length_later(ctx: RewardContext) -> Future:
    """A slow term (its value comes from a timer thread), different for every reply."""
    out: Future = Future()
    value = (len(ctx.reply.explanation) % 7) / 10 + ctx.turn
    threading.Timer(0.02, out.set_result, [value]).start()
    return out


def test_deferred_rewards_land_on_the_tokens_waiting_would_put_them_on(engine):
    """Slow terms do not hold a slot, and each reply's rewards still land on its own tokens."""
    rewards = [*REWARDS, {"name": "explanation_length_later", "weight": 3.0}]
    sampling = SamplingParams(max_new_tokens=24, temperature=0.0)
    out = {}
    for defer in (True, False):
        recorders = [
            Recorder(gymnasium.make("CodeRefine-v0", problems=problems(), rewards=rewards))
            for _ in range(3)
        ]
        runner = EpisodeRunner(engine, engine.tokenizer, recorders, seed=0, defer_rewards=defer)
        trajs = runner.run(6, sampling)
        runner.close()
        infos = [out[-1] for r in recorders for ep in r.episodes for _, out in ep["steps"]]
        assert all(("pending_reward" in info) is defer for info in infos)
        out[defer] = sorted((t.token_ids, t.rewards, t.reward_terms) for t in trajs)
    assert max(len(t.turn_ends) for t in trajs) >= 2  # several replies per episode
    assert len(out[True]) == len(out[False]) == 6
    for (ids, rewards_d, terms_d), (ids_w, rewards_w, terms_w) in zip(
        out[True], out[False], strict=True
    ):
        assert ids == ids_w and rewards_d == pytest.approx(rewards_w)
        assert terms_d == pytest.approx(terms_w) and "explanation_length_later" in terms_d


def test_reward_positions_on_replies_with_explanation_and_code(engine):
    """A well-formed reply (with multi-byte characters) gets each reward on its span's last token."""
    tok = engine.tokenizer
    env = make_env(max_turns=3)
    obs, info = env.reset(seed=0)
    builder = EpisodeBuilder(
        tok(render(info["messages"], True), add_special_tokens=False)["input_ids"]
    )
    problem = next(p for p in problems() if p.task_id == info["task_id"])
    replies = [
        format_reply("Wrong → operator: «é» should be ok… ünïcode", "def nope(:\n  pass"),
        format_reply("The operator is wrong — use the right one ✓", problem.reference),
    ]
    im_end = tok.convert_tokens_to_ids(IM_END)
    for text in replies:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        start = builder.add_reply(
            Generation(ids + [im_end], [-1.0] * (len(ids) + 1), "stop"), im_end, 0
        )
        reply = ReplyText(tok, ids)
        assert reply.text == text
        obs, reward, terminated, _, info = env.step(reply.text)
        positions = builder.place_rewards(reply, start, reward, info)
        for name in ("explanation", "code"):
            s, e = info["spans"][name]
            pos = positions[name] - start
            assert tok.decode(ids[: pos + 1]).startswith(text[:e])  # covers the span ...
            assert not tok.decode(ids[:pos]).startswith(text[:e])  # ... and only just
        assert positions["turn"] == start + len(ids)  # the emitted <|im_end|>
        if not terminated:
            builder.add_user_turn(tok, obs)
    assert terminated  # the reference fix passes the real tests
    traj = builder.build()
    assert traj.total_reward == pytest.approx(sum(traj.rewards))
    assert traj.reward_terms["pass_rate"] == pytest.approx(2.0)


class SlowSteps(gymnasium.Wrapper):
    """The real env with slow steps, like a heavy test suite or reward model."""

    def step(self, action):
        time.sleep(0.3)
        return self.env.step(action)


def test_auto_overlap_splits_the_batch_only_when_env_steps_are_slow(engine):
    sampling = SamplingParams(max_new_tokens=4, temperature=1.0, seed=0)
    slow = EpisodeRunner(engine, engine.tokenizer, [SlowSteps(make_env(1)) for _ in range(4)])
    trajs = slow.run(12, sampling)
    slow.close()
    assert len(trajs) == 12
    # 12 one-turn episodes on 4 slots: 3 full-batch calls; after the first slow steps
    # "auto" switches to halves, which take more (smaller) calls
    assert slow.timings["generate_calls"] > 3
    with pytest.raises(ValueError, match="overlap"):
        EpisodeRunner(engine, engine.tokenizer, [make_env()], overlap="sometimes")


def test_context_limit_ends_episodes_instead_of_overflowing(engine):
    tok = engine.tokenizer
    sampling = SamplingParams(max_new_tokens=8, temperature=1.0, seed=0)
    env = make_env(max_turns=3)
    _, info = env.reset(seed=0)
    prompt_len = len(tok(render(info["messages"], True), add_special_tokens=False)["input_ids"])
    runner = EpisodeRunner(engine, tok, [make_env(max_turns=3)], max_context_tokens=prompt_len + 20)
    trajs = runner.run(2, sampling)
    assert len(trajs) == 2
    for t in trajs:  # the feedback after the first reply pushes the context over the limit
        assert t.stats["context_limit"] and t.stats["turns"] == 1
    tight = EpisodeRunner(engine, tok, [make_env()], max_context_tokens=prompt_len // 2)
    with pytest.raises(ValueError, match="first prompts are longer"):
        tight.run(2, sampling)
    runner.close()
    tight.close()


class FailOnce(gymnasium.Wrapper):
    """The real env, with one step that raises (a bug in a user's reward term, say)."""

    failed = False

    def step(self, action):
        if not FailOnce.failed:
            FailOnce.failed = True
            raise RuntimeError("reward term exploded")
        return self.env.step(action)


def test_env_error_propagates_and_the_runner_recovers(engine):
    runner = EpisodeRunner(engine, engine.tokenizer, [FailOnce(make_env(1)) for _ in range(2)])
    sampling = SamplingParams(max_new_tokens=4, temperature=1.0, seed=0)
    with pytest.raises(RuntimeError, match="reward term exploded"):
        runner.run(4, sampling)
    assert all(s.future is None and s.episode is None for s in runner.slots)
    assert len(runner.run(3, sampling)) == 3  # the next run starts clean
    runner.close()


class ReplyWithReference(gymnasium.Wrapper):
    """Sends the env a well-formed fix in place of the tiny model's text, so it reaches the
    sandbox runner (the trajectory still holds the model's own tokens)."""

    def step(self, action):
        p = self.env.unwrapped._ep.problem
        return self.env.step(format_reply("Fix the operator.", p.reference))


def test_grouped_sampling_replays_one_start_per_group(engine):
    env_copies = [make_env() for _ in range(3)]
    runner = EpisodeRunner(engine, engine.tokenizer, env_copies, seed=3, group_size=4)
    sampling = SamplingParams(max_new_tokens=6, temperature=1.0, seed=0)
    first = runner.run(8, sampling)
    second = runner.run(4, sampling)
    runner.close()
    groups: dict[str, list] = {}
    for traj in first:
        groups.setdefault(traj.stats["group"], []).append(traj)
    assert sorted(len(g) for g in groups.values()) == [4, 4]
    for members in groups.values():  # same problem, same wrong code: identical first prompts
        prompts = {tuple(t.token_ids[: t.action_mask.index(1)]) for t in members}
        assert len(prompts) == 1 and len({t.task_id for t in members}) == 1
    assert not {t.stats["group"] for t in second} & set(groups)  # fresh groups every run
    with pytest.raises(ValueError, match="'start' must be an index"):
        env_copies[0].reset(options={"start": 99})


def test_fixed_starts_replay_the_same_problems_in_every_run(engine):
    runner = EpisodeRunner(engine, engine.tokenizer, [make_env(), make_env()], seed=5)
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)

    def prompts(trajs):
        return sorted(tuple(t.token_ids[: t.action_mask.index(1)]) for t in trajs)

    first = runner.run(4, greedy, fixed_offset=0)
    again = runner.run(4, greedy, fixed_offset=0)
    three = [Counter(prompts(runner.run(3, greedy, fixed_offset=k))) for k in (0, 1)]
    runner.close()
    assert prompts(first) == prompts(again)
    assert [t.total_reward for t in sorted(first, key=lambda t: t.token_ids)] == [
        t.total_reward for t in sorted(again, key=lambda t: t.token_ids)
    ]  # greedy on the same starts: the same episodes
    # two starts in this env: 3 episodes from offset 0 play A B A, from offset 1 B A B
    assert len(set(prompts(first))) == 2
    assert [sorted(c.values()) for c in three] == [[1, 2], [1, 2]]
    assert three[0].most_common(1)[0][0] != three[1].most_common(1)[0][0]


def perturbed_state(model_dir, seed: int = 5) -> dict[str, torch.Tensor]:
    from actorlearner.models import load_model

    model, _ = load_model(model_dir)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.state_dict()


def test_weights_change_between_turns_and_tokens_keep_their_versions(tiny_model_dir):
    engine = HFEngine(str(tiny_model_dir))  # its own engine: the weights change mid-run
    old = {k: v.clone() for k, v in engine.model.state_dict().items()}
    new = perturbed_state(tiny_model_dir)
    runner = EpisodeRunner(engine, engine.tokenizer, [make_env(), make_env()], overlap=False)
    calls = []

    def second_turn_gets_new_weights() -> None:
        calls.append(engine.version)
        if len(calls) == 2:
            engine.load_weights(new, 1)

    runner.before_generate = second_turn_gets_new_weights
    trajs = runner.run(2, SamplingParams(max_new_tokens=12, temperature=1.0, seed=0))
    runner.close()
    assert calls == [0, 0]  # one batched call per turn, both episodes in it
    engine.load_weights(old, 0)
    for t in trajs:
        (s1, e1), (s2, e2) = runs(t.action_mask)  # the random model never solves turn 1
        assert set(t.versions[s1:e1]) == {0} and set(t.versions[s2:e2]) == {1}
        assert t.policy_version == 0 and t.stats["policy_versions"] == [0, 1]
        for (s, e), weights in (((s1, e1), engine.model), ((s2, e2), None)):
            model = weights or HFEngine(str(tiny_model_dir)).model
            if weights is None:
                model.load_state_dict(new)
            want = forward_logprobs(model, t.token_ids, 1.0)[s:e]
            torch.testing.assert_close(torch.tensor(t.logprobs[s:e]), want, atol=1e-5, rtol=0)
    from actorlearner.pipeline.train_loop import rollout_metrics

    assert rollout_metrics(trajs, 1.0)["rollout/mixed_version_episodes"] == 1.0
    one = dataclasses.replace(trajs[0], versions=[])  # every token from policy_version
    assert rollout_metrics([one, trajs[1]], 1.0)["rollout/mixed_version_episodes"] == 0.5


def test_sandbox_errors_are_flagged_and_left_out_of_the_update(engine):
    import sandbox
    from actorlearner.pipeline.train_loop import drop_sandbox_errors
    from sandbox.types import Verdict

    fixes = []

    def flaky(program, tests, limits):  # fault injection: every other fix's run fails inside
        if any(p.reference.strip() in program for p in problems()):
            fixes.append(program)
        if len(fixes) % 2 and fixes[-1] is program:
            return Verdict("error", error_type="SandboxError", message="worker died")
        return sandbox.run(program, tests, limits)

    env = gymnasium.make(
        "CodeRefine-v0", problems=problems(), max_turns=1, rewards=REWARDS, runner=flaky
    )
    runner = EpisodeRunner(engine, engine.tokenizer, [ReplyWithReference(env)], seed=0)
    trajs = runner.run(4, SamplingParams(max_new_tokens=4, temperature=1.0, seed=0))
    runner.close()
    flagged = [t.stats["sandbox_error"] for t in trajs]
    assert flagged == [True, False, True, False]
    assert [t.stats["solved"] for t in trajs] == [False, True, False, True]
    assert drop_sandbox_errors(trajs, 1) == [t for t in trajs if not t.stats["sandbox_error"]]
    with pytest.raises(RuntimeError, match="every episode of iteration 2 hit a sandbox error"):
        drop_sandbox_errors([t for t in trajs if t.stats["sandbox_error"]], 2)


# ---------------------------------------------------------------------- Ray actors


@pytest.fixture(scope="module")
def ray_group(tiny_model_dir, tmp_path_factory):
    ray = pytest.importorskip("ray")
    from actorlearner.rollout.config import RolloutConfig
    from actorlearner.rollout.group import RolloutGroup

    marker = str(tmp_path_factory.mktemp("faults") / "crash")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cfg = RolloutConfig(
        model_path=str(tiny_model_dir),
        num_actors=2,
        envs_per_actor=2,
        num_cpus_per_actor=1,
        env_fn=functools.partial(crashing_env, marker),
        max_new_tokens=16,
        temperature=1.0,
        poll_s=0.2,
    )
    group = RolloutGroup(cfg)
    try:
        group.wait_ready(timeout_s=540)  # actor start-up is slow on a busy 2-core machine
        yield group, marker
    finally:
        group.shutdown()
        ray.shutdown()


def test_group_rollout_and_weight_update(ray_group, tiny_model_dir):
    from actorlearner.models import load_model

    group, _ = ray_group
    trajs = group.rollout(6)
    assert len(trajs) == 6 and {t.policy_version for t in trajs} == {0}
    assert {t.stats["actor"] for t in trajs} == {0, 1}
    old, _ = load_model(tiny_model_dir)
    new, _ = load_model(tiny_model_dir)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.1 * torch.randn_like(p))
    group.update_weights(new.state_dict(), version=1)
    assert [i["version"] for i in group.wait_ready()] == [1, 1]
    trajs = group.rollout(4)
    assert len(trajs) == 4 and {t.policy_version for t in trajs} == {1}
    for t in trajs:
        m = torch.tensor(t.action_mask, dtype=torch.bool)
        got = torch.tensor(t.logprobs)[m]
        torch.testing.assert_close(
            got, forward_logprobs(new, t.token_ids, 1.0)[m], atol=1e-5, rtol=0
        )
        assert not torch.allclose(got, forward_logprobs(old, t.token_ids, 1.0)[m], atol=1e-3)


def test_actor_takes_published_weights_at_its_next_turn(ray_group, tiny_model_dir):
    import ray

    from actorlearner.rollout.actor import RolloutWorker
    from actorlearner.rollout.config import RolloutConfig
    from actorlearner.rollout.weight_board import create_board

    cfg = RolloutConfig(
        model_path=str(tiny_model_dir),
        envs_per_actor=2,
        env_fn=make_env,
        max_new_tokens=8,
        weights_between_turns=True,
    )
    worker = RolloutWorker(cfg)  # in this process, finding the board through Ray
    board = create_board()
    try:
        new = perturbed_state(tiny_model_dir, seed=6)
        ray.get(board.publish.remote(3, [ray.put(new)]))
        trajs = worker.rollout(2, policy_version=0)  # asked for 0, takes 3 before replying
        taken = worker.runner.timings["weights_between_turns"]
        ray.get(board.publish.remote(4, [ray.put(perturbed_state(tiny_model_dir, seed=7))]))
        probe = worker.rollout(1, policy_version=3, fixed_offset=0)  # a probe keeps its version
    finally:
        ray.kill(board)
        worker.runner.close()
    assert taken == 1 and worker.engine.version == 3
    for t in [*trajs, *probe]:
        assert {v for v, a in zip(t.versions, t.action_mask, strict=True) if a} == {3}
    model = HFEngine(str(tiny_model_dir)).model
    model.load_state_dict(new)
    m = torch.tensor(trajs[0].action_mask, dtype=torch.bool)
    want = forward_logprobs(model, trajs[0].token_ids, 1.0)[m]
    torch.testing.assert_close(torch.tensor(trajs[0].logprobs)[m], want, atol=1e-5, rtol=0)


def test_actor_death_mid_rollout_still_yields_full_batch(ray_group):
    group, marker = ray_group
    open(marker, "w").close()  # the first actor to step an env now dies (os._exit)
    before = dict(group.stats)
    trajs = group.rollout(8)
    assert os.path.exists(marker + ".taken")  # an actor really died mid-rollout
    assert len(trajs) == 8
    assert group.stats["chunk_retries"] == before["chunk_retries"] + 1
    assert {t.policy_version for t in trajs} == {group.version}  # restarted actor got the weights
    assert [i["version"] for i in group.wait_ready()] == [group.version] * 2
    assert len(group.rollout(4)) == 4  # and the group keeps working

"""CodeRefine-v0 against the real sandbox: episodes, rewards in info, spaces, seeding,
vectorised use, pools and registration."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import Future

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.code_refine import CHARSET, CodeRefineEnv
from envs.rewards import RewardContext, reward_term
from envs.sources import load_problems
from envs.templates import Templates, format_reply

SYN = {"problems": "synthetic:train", "problem_options": {"n": 12, "seed": 0}}


def make(**kw) -> CodeRefineEnv:
    return gym.make(envs.ENV_ID, **{**SYN, **kw}).unwrapped


def fix_reply(env: CodeRefineEnv, task_id: str) -> str:
    p = env.problems[task_id]
    return format_reply(p.metadata["reference_explanations"][0], p.reference)


@pytest.fixture(scope="module")
def mbpp_problem():
    problems = load_problems("mbpp:train")
    simple = [p for p in problems if p.reference and len(p.tests) >= 2 and not p.setup_code]
    return min(simple, key=lambda p: len(p.reference))


def test_check_env_passes():
    env = gym.make(envs.ENV_ID, **SYN, max_turns=2)
    check_env(env.unwrapped)
    assert env.observation_space.contains("def f(x):\n\treturn x ** 2  # ≥ 0 → ok\n")
    env.close()


def test_wrong_mbpp_solution_gives_feedback_naming_the_failed_test(mbpp_problem):
    p = mbpp_problem
    env = CodeRefineEnv(problems=[p], rewards="tests")
    wrong = f"def {p.entry_point}(*args, **kwargs):\n    return None\n"
    obs, info = env.reset(options={"task_id": p.task_id, "initial_code": wrong})
    failure = info["verdict"].first_failure
    assert failure is not None and failure.status == "failed"
    assert "The code fails the test:" in obs
    assert p.tests[failure.index].display in obs and "Actual: None" in obs
    assert wrong.strip() in obs and p.prompt.strip() in obs
    assert info["system"] == Templates().system
    assert [m["role"] for m in info["messages"]] == ["system", "user"]
    # the benchmark's reference terminates the episode with the preset's maximum
    obs, reward, terminated, truncated, info = env.step(
        format_reply("Return the answer.", p.reference)
    )
    assert (terminated, truncated) == (True, False) and obs == "All tests passed."
    assert info["verdict"].passed and reward == pytest.approx(1.0 + 1.0 + 0.0 - 0.1)


def test_reference_fix_terminates_with_maximal_ledex_reward():
    env = make(rewards="ledex", max_turns=3)
    _, info = env.reset(seed=1)
    _, reward, terminated, truncated, info = env.step(fix_reply(env, info["task_id"]))
    assert (terminated, truncated) == (True, False)
    assert info["reward_raw"]["pass_rate"] == 1.0 and info["reward_raw"][
        "codebleu"
    ] == pytest.approx(1.0)
    # R_code = 5*(1+1)-5 = 5 on the reply's last token; R_expl = (50*1-35)/3 = 5
    assert info["rewards_by_span"]["turn"] == pytest.approx(5.0, abs=1e-6)
    assert info["rewards_by_span"]["explanation"] == pytest.approx(5.0, abs=1e-4)
    assert reward == pytest.approx(10.0, abs=1e-4)


def test_reply_without_code_gets_the_format_penalty():
    env = make(rewards="tests")
    _, info = env.reset(seed=2)
    obs, reward, terminated, truncated, info = env.step("The loop looks wrong to me.")
    assert info["verdict"] is None and info["code"] is None
    assert info["reward_terms"]["format"] == -1.0
    assert reward == pytest.approx(-1.0 - 0.1)
    assert obs == Templates().no_code and not terminated and not truncated
    assert info["rewards_by_span"] == {"explanation": 0.0, "code": 0.0, "turn": pytest.approx(-1.1)}
    # the episode goes on from the same wrong code
    _, _, terminated, _, _ = env.step(fix_reply(env, info["task_id"]))
    assert terminated


def test_three_turn_episode_truncates():
    env = make(max_turns=3)
    _, info = env.reset(seed=3)
    still_wrong = format_reply("I changed nothing.", info["initial_code"])
    flags = [env.step(still_wrong)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(still_wrong)


def test_rewards_and_spans_in_info():
    env = make(rewards="tests")
    _, info = env.reset(seed=4)
    p = env.problems[info["task_id"]]
    expl = "Still wrong, but here is an attempt."
    reply = format_reply(expl, info["initial_code"])
    obs, reward, _, _, info = env.step(reply)
    (es, ee), (cs, ce) = info["spans"]["explanation"], info["spans"]["code"]
    assert reply[es:ee] == expl and reply[cs:ce] == p.metadata["initial_code"].rstrip()
    assert set(info["reward_terms"]) == {"pass_rate", "all_passed", "format", "turn_cost"}
    assert sum(info["reward_terms"].values()) == pytest.approx(reward)
    assert sum(info["rewards_by_span"].values()) == pytest.approx(reward)
    assert info["reward_terms"]["pass_rate"] == pytest.approx(info["verdict"].pass_rate)
    assert info["verdict"].pass_rate < 1.0
    assert obs.startswith("Execution feedback:\n") and info["feedback"] in obs


def test_custom_reward_term_in_the_env():
    @reward_term("explains_before_code", span="explanation")
    def explains_before_code(ctx: RewardContext, bonus: float = 1.0) -> float:
        """A bonus when the reply explains before the code."""
        return bonus if ctx.reply.explanation.strip() else 0.0

    env = gym.make(
        envs.ENV_ID,
        **SYN,
        rewards=[
            "pass_rate",
            {"name": "explains_before_code", "weight": 0.5, "options": {"bonus": 2.0}},
        ],
    )
    _, info = env.reset(seed=5)
    _, reward, _, _, info = env.step(fix_reply(env.unwrapped, info["task_id"]))
    assert info["reward_terms"] == {"pass_rate": 1.0, "explains_before_code": 1.0}
    assert info["rewards_by_span"]["explanation"] == 1.0 and reward == 2.0


GATES: list[Future] = []  # the pending values of the `gated` term, in call order


@reward_term("gated", span="explanation")
def gated(ctx: RewardContext, after_s: float | None = None) -> Future:
    """A term computed elsewhere: its value arrives when the test sets it (or, with
    `after_s`, 0.25 from a timer thread after that many seconds)."""
    GATES.append(Future())
    if after_s is not None:
        threading.Timer(after_s, GATES[-1].set_result, [0.25]).start()
    return GATES[-1]


def test_deferred_rewards_return_before_slow_terms_and_add_up_the_same():
    terms = ["pass_rate", {"name": "gated", "weight": 2.0}, "format"]
    deferred = make(rewards=terms, defer_rewards=True)
    terms[1] = {"name": "gated", "weight": 2.0, "options": {"after_s": 0.05}}
    waiting = make(rewards=terms)
    _, info = deferred.reset(seed=3)
    reply = fix_reply(deferred, info["task_id"])
    obs, known, terminated, _, info = deferred.step(reply)  # returns with `gated` unset
    pending = info["pending_reward"]
    assert not pending.done() and terminated and "reward_terms" not in info
    assert known == pytest.approx(1.0)  # pass_rate 1 + format 0: what is known so far
    GATES[-1].set_result(0.25)
    parts = pending.result(timeout=5)
    assert parts["reward"] == pytest.approx(1.5) and parts["reward_terms"]["gated"] == 0.5
    assert parts["rewards_by_span"]["explanation"] == pytest.approx(0.5)

    _, info = waiting.reset(seed=3)
    _, reward, _, _, info = waiting.step(reply)  # without defer_rewards: waits for `gated`
    assert "pending_reward" not in info and reward == pytest.approx(parts["reward"])
    assert info["reward_terms"] == parts["reward_terms"]


def test_a_failed_deferred_term_fails_its_pending_reward():
    env = make(rewards=["pass_rate", "gated"], defer_rewards=True)
    _, info = env.reset(seed=1)
    _, _, _, _, info = env.step(fix_reply(env, info["task_id"]))
    GATES[-1].set_exception(RuntimeError("reward worker died"))
    with pytest.raises(RuntimeError, match="reward worker died"):
        info["pending_reward"].result(timeout=5)


def test_seeding_reproduces_episodes():
    a, b = make(), make()
    for seed in (7, 8):
        obs_a, info_a = a.reset(seed=seed)
        obs_b, info_b = b.reset(seed=seed)
        assert obs_a == obs_b and info_a["task_id"] == info_b["task_id"]
        reply = format_reply("Try.", info_a["initial_code"].replace("0", "2"))
        step_a, step_b = a.step(reply), b.step(reply)
        assert step_a[:4] == step_b[:4] and step_a[4]["reward_terms"] == step_b[4]["reward_terms"]
    tasks = {a.reset(seed=s)[1]["task_id"] for s in range(8)}
    assert len(tasks) > 1  # seeds pick different problems


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_vector_envs(kind):
    fns = [lambda: gym.make(envs.ENV_ID, **SYN, max_turns=2) for _ in range(2)]
    vec = (
        gym.vector.SyncVectorEnv(fns)
        if kind == "sync"
        else gym.vector.AsyncVectorEnv(fns, shared_memory=False)
    )
    try:
        obs, info = vec.reset(seed=[11, 12])
        single = [make(max_turns=2).reset(seed=s)[0] for s in (11, 12)]
        assert list(obs) == single
        replies = tuple(fix_reply(make(), t) for t in info["task_id"])
        obs, reward, terminated, truncated, info = vec.step(replies)
        assert list(terminated) == [True, True] and list(reward) == pytest.approx([1.9, 1.9])
        assert list(obs) == ["All tests passed."] * 2
    finally:
        vec.close()


def test_pool_gives_wrong_code_and_references(tmp_path):
    problems = load_problems("synthetic:train", n=12, seed=0)
    p = problems[5]
    wrong = p.reference.replace("return", "return 1 + ", 1)
    fix = "# verified fix from the pool\n" + p.reference
    rec = {
        "task_id": p.task_id,
        "source": "synthetic:train",
        "wrong_code": wrong,
        "feedback": "(collected feedback)",
        "references": [{"explanation": "The result is off by one.", "code": fix}],
    }
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    env = CodeRefineEnv(pool=str(path), problem_options={"n": 12, "seed": 0}, rewards=["codebleu"])
    obs, info = env.reset(seed=0)
    assert info["task_id"] == p.task_id and info["initial_code"] == wrong and wrong in obs
    _, reward, terminated, _, _ = env.step(format_reply("Remove the 1 +.", fix))
    assert terminated and reward == pytest.approx(1.0)  # CodeBLEU against the pool's fix


def test_sandbox_failure_truncates_and_is_flagged():
    """Fault injection: the sandbox's own failure must not pass as the program's."""
    import sandbox
    from sandbox.types import Verdict

    calls = []

    def flaky(program, tests, limits):
        calls.append(program)
        if len(calls) == 2:  # the first step's run fails inside the sandbox
            return Verdict("error", error_type="SandboxError", message="worker died", timeout_s=4.0)
        return sandbox.run(program, tests, limits)

    env = make(runner=flaky)
    _, info = env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(fix_reply(env, info["task_id"]))
    assert (terminated, truncated, info["sandbox_error"]) == (False, True, True)
    _, info = env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(fix_reply(env, info["task_id"]))
    assert (terminated, truncated, info["sandbox_error"]) == (True, False, False)


def test_bad_input_gets_clear_errors(mbpp_problem, tmp_path):
    env = make()
    with pytest.raises(RuntimeError, match="reset"):
        env.step("x")
    with pytest.raises(KeyError, match="unknown task_id"):
        env.reset(options={"task_id": "nope"})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"taskid": "x"})
    with pytest.raises(ValueError, match="pool"):
        CodeRefineEnv(problems=[mbpp_problem]).reset()
    bad = tmp_path / "pool.jsonl"
    bad.write_text('{"task_id": "a"}\n')
    with pytest.raises(ValueError, match=r"pool .*pool.jsonl:1.*wrong_code"):
        CodeRefineEnv(pool=str(bad))
    with pytest.raises(ValueError, match="max_turns"):
        make(max_turns=0)


def test_observations_stay_in_the_space():
    env = make(render_mode="ansi")
    task_id = next(iter(env.problems))
    code = env.problems[task_id].metadata["initial_code"] + "# ça marche 🙂\n"
    obs, _ = env.reset(options={"task_id": task_id, "initial_code": code})
    assert env.observation_space.contains(obs)
    assert "# ça marche \ufffd" in obs  # the emoji is outside the charset
    assert all(ch in CHARSET for ch in "\t\n\r ~é→≤λ")
    assert "[assistant]" not in env.render() and "[user]" in env.render()


def test_envs_import_does_not_import_ray_and_ray_registration_works():
    code = "import envs, sys; assert 'ray' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    from ray.tune.registry import ENV_CREATOR, _global_registry

    name = envs.register_ray_env("CodeRefine-test")
    env = _global_registry.get(ENV_CREATOR, name)({**SYN, "max_turns": 2})
    obs, _ = env.reset(seed=0)
    assert obs.startswith("Write a function")
    env.close()

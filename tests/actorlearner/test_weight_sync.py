"""Collective weight pushes: buckets, the mode setting, and learner rank 0 broadcasting to
rollout actors through a gloo weight group (real Ray, logical GPUs, ZeRO-3 with LoRA)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from actorlearner.placement import Member, gpu_layout
from actorlearner.rollout.collective import buckets, unpack
from actorlearner.rollout.config import RolloutConfig
from actorlearner.rollout.weight_sync import resolve_mode


def test_buckets_cut_by_size_and_dtype_and_unpack_exactly():
    named = [
        ("a", torch.arange(10, dtype=torch.float32)),  # 40 bytes
        ("big", torch.randn(4, 25)),  # 400 bytes: more than a bucket, goes alone
        ("h1", torch.ones(2, 2, dtype=torch.float16)),  # a new dtype starts a new bucket
        ("h2", torch.full((3,), 2.0, dtype=torch.float16)),
        ("b", torch.tensor(3.0)),  # 0-dim, float32 again
    ]
    got = list(buckets(iter(named), bucket_bytes=64))
    assert [[m.name for m in metas] for metas, _ in got] == [["a"], ["big"], ["h1", "h2"], ["b"]]
    assert [flat.dtype for _, flat in got] == [torch.float32] * 2 + [torch.float16, torch.float32]
    out = [pair for metas, flat in got for pair in unpack(metas, flat)]
    assert [n for n, _ in out] == [n for n, _ in named]
    for (_, want), (_, have) in zip(named, out, strict=True):
        assert have.dtype == want.dtype and have.shape == want.shape and torch.equal(have, want)


def test_bad_weight_sync_settings_are_one_line_errors(tmp_path):
    from actorlearner.config import ConfigError, load_config

    with pytest.raises(
        ValueError,
        match=r"^rollout.weight_sync='nccl' is not one of auto, object_store, collective$",
    ):
        RolloutConfig(model_path=str(tmp_path), weight_sync="nccl")
    with pytest.raises(ValueError, match="collective cannot feed rollout.weights_between_turns"):
        RolloutConfig(
            model_path=str(tmp_path), weight_sync="collective", weights_between_turns=True
        )
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rollout.weight_sync=broadcast"])
    assert "\n" not in str(err.value) and "rollout.weight_sync" in str(err.value)


def test_auto_mode_is_collective_only_for_actors_on_gpus_of_their_own():
    separate = gpu_layout(2, Member(1, 1), 2, Member(1, 1))
    colocated = gpu_layout(2, Member(0.5, 1), 2, Member(0.4, 1))
    assert resolve_mode("auto", separate, False) == "collective"
    assert resolve_mode("auto", separate, True) == "object_store"  # the board hands out refs
    assert resolve_mode("auto", colocated, False) == "object_store"
    assert resolve_mode("auto", None, False) == "object_store"  # CPU run
    assert resolve_mode("collective", None, False) == "collective"


# --------------------------------------------------------------------- Ray, end to end


@pytest.fixture(scope="module")
def cluster(tiny_model_dir):
    """2 ZeRO-3 learner ranks with LoRA and 2 HF rollout actors, each on a logical GPU."""
    ray = pytest.importorskip("ray")
    from actorlearner.learner import LearnerConfig, LoRAConfig
    from actorlearner.learner.group import LearnerGroup
    from actorlearner.placement import Placement
    from actorlearner.rollout.group import RolloutGroup
    from tests.actorlearner.test_rollout import make_env

    ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False)
    placement = Placement(gpu_layout(2, Member(1, 0.25), 2, Member(1, 0.25)))
    rcfg = RolloutConfig(
        model_path=str(tiny_model_dir),
        num_actors=2,
        envs_per_actor=1,
        num_cpus_per_actor=0.25,
        num_gpus_per_actor=1,
        engine_kwargs={"dtype": "float32", "device": "cpu"},
        env_fn=make_env,
        max_new_tokens=6,
        poll_s=0.2,
        weight_bucket_mb=0.05,  # many buckets, and tensors larger than one
    )
    rollouts = RolloutGroup(rcfg, placement)
    lora = LoRAConfig(enabled=True, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    lcfg = LearnerConfig(
        model=str(tiny_model_dir), lora=lora, zero_stage=3, micro_batch_size=1, lr=0.05
    )
    learner = LearnerGroup(lcfg, 2, 0.25, 1, placement)
    try:
        rollouts.wait_ready(timeout_s=540)
        yield learner, rollouts
    finally:
        rollouts.shutdown()
        learner.shutdown()
        placement.remove()
        ray.shutdown()


def _train_step(learner, tiny_model_dir) -> None:
    from actorlearner.learner.sft import SFTExample, collate_sft
    from actorlearner.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    ids = tok("def f(x):\n    return x + 1\n")["input_ids"]
    learner.sft_step(collate_sft([SFTExample(ids, [1] * len(ids))] * 2, pad_id=tok.pad_token_id))


def _fingerprints(rollouts) -> list[str]:
    import ray

    return ray.get([a.weights_fingerprint.remote() for a in rollouts.actors])


def _check_greedy(learner, rollouts) -> None:
    """Each actor's greedy reply (tokens and logprobs) is the learner policy's own."""
    greedy = dataclasses.replace(rollouts.cfg.sampling, temperature=0.0)
    trajs = rollouts.rollout(2, greedy, fixed=True)
    assert {t.stats["actor"] for t in trajs} == {0, 1}
    for t in trajs:
        start = t.action_mask.index(1)
        end = (
            start + t.action_mask[start:].index(0)
            if 0 in t.action_mask[start:]
            else len(t.action_mask)
        )
        tokens, logps = t.token_ids[start:end], t.logprobs[start:end]
        want, want_lp = learner.greedy(t.token_ids[:start], len(tokens))
        assert tokens == want
        torch.testing.assert_close(torch.tensor(logps), torch.tensor(want_lp), atol=1e-4, rtol=0)


def test_collective_push_matches_policy_and_object_store_bit_for_bit(cluster, tiny_model_dir):
    learner, rollouts = cluster
    assert rollouts.sync_mode == "collective"  # auto: the actors have GPUs of their own
    initial = _fingerprints(rollouts)
    _train_step(learner, tiny_model_dir)

    sent: list = []
    push, state = learner.push_weights, learner.state_dict_for_actors
    learner.push_weights = lambda b: sent.extend(push(b)) or sent  # keep the refs to inspect
    learner.state_dict_for_actors = lambda: pytest.fail("the driver asked for the state")
    try:
        assert rollouts.push_weights(learner) is None
    finally:
        learner.push_weights, learner.state_dict_for_actors = push, state
    import ray

    counts = ray.get(sent)  # what the driver got back from the ranks: counts only
    assert counts[1] == {} and counts[0]["buckets"] > 4
    assert all(isinstance(v, float) for v in counts[0].values())
    version = learner.version
    assert [i["version"] for i in rollouts.info()] == [version, version]
    collective = _fingerprints(rollouts)
    assert collective[0] == collective[1] != initial[0]
    _check_greedy(learner, rollouts)

    rollouts.update_weights(learner.state_dict_for_actors(), version)  # the object-store path
    assert _fingerprints(rollouts) == collective


def test_restarted_actor_rejoins_the_weight_group(cluster, tiny_model_dir):
    import ray

    learner, rollouts = cluster
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(rollouts.actors[1].exit.remote())  # dies; Ray restarts it with initial weights
    _train_step(learner, tiny_model_dir)
    rollouts.push_weights(learner)  # actor 1 answers from a new process: the group is rebuilt
    version = learner.version
    assert [i["version"] for i in rollouts.wait_ready(timeout_s=300)] == [version, version]
    prints = _fingerprints(rollouts)
    assert prints[0] == prints[1]
    _check_greedy(learner, rollouts)
    sync = rollouts._collective
    rollouts.push_weights(learner)  # the recovery push went to actor 1 alone: both again
    generation = sync.spec.generation
    assert sync.members == [0, 1]
    _train_step(learner, tiny_model_dir)
    rollouts.push_weights(learner)  # a healthy group is kept
    assert sync.spec.generation == generation
    assert [i["version"] for i in rollouts.info()] == [learner.version] * 2


# ------------------------------------------------- vLLM receivers (contract, no vLLM here)
# (the engine's own calls into vLLM 0.33.0: test_vllm_contract.py)


def test_actor_with_vllm_engine_gets_metadata_per_bucket_in_one_session():
    """The actor's side of a push to vLLM engines, over a real gloo weight group: the
    bucket bytes go another way (vLLM's NCCL group), each bucket's metadata through ours."""
    from concurrent.futures import ThreadPoolExecutor

    from actorlearner.learner.distributed import free_port
    from actorlearner.rollout.actor import RolloutWorker
    from actorlearner.rollout.collective import GroupSpec, WeightGroup, send_weights

    class Engine:
        version = 0

        def __init__(self):
            self.calls: list = []

        def init_weight_transfer(self, spec, rank):
            self.calls.append(("init", rank))

        def begin_update(self):
            self.calls.append("begin")

        def receive_bucket(self, metas):
            self.calls.append([m.name for m in metas])

        def finish_update(self, version):
            self.calls.append(("finish", version))

    worker = RolloutWorker.__new__(RolloutWorker)  # no env, no model: the weight methods only
    worker.index, worker.engine, worker._weight_group = 0, Engine(), None
    spec = GroupSpec("127.0.0.1", free_port(), 2, "gloo", 1, 60, vllm_port=1)
    named = [("x", torch.ones(8)), ("y", torch.ones(8)), ("z", torch.ones(2, dtype=torch.float16))]
    sent: list = []
    with ThreadPoolExecutor(1) as pool:
        joined = pool.submit(worker.join_weight_group, spec, 1)
        rank0 = WeightGroup(spec, 0)
        joined.result()
        received = pool.submit(worker.receive_weights)
        send_weights(rank0, iter(named), 40, 9, lambda metas, flat: sent.append(flat.numel()))
        assert received.result() == 9
    assert sent == [8, 8, 2]  # x, y (64 bytes > 40), z (a new dtype)
    assert worker.engine.calls == [("init", 1), "begin", ["x"], ["y"], ["z"], ("finish", 9)]

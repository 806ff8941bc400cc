"""Engine-facing weights: names, LoRA merge, and ZeRO-3 gathering one module at a time."""

from __future__ import annotations

import pytest
import torch

from actorlearner.learner import LearnerConfig, LoRAConfig


def _cfg(model_dir, **kw) -> LearnerConfig:
    lora = LoRAConfig(enabled=True, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    return LearnerConfig(model=str(model_dir), lora=lora, **kw)


def _perturb_adapters(policy) -> None:
    """LoRA B starts at zero (no delta); give it values so the merge is visible."""
    gen = torch.Generator().manual_seed(1)
    for name, p in policy.named_parameters():
        if "lora_B" in name:
            p.data.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def test_export_names_are_plain_transformers_with_lora_merged(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from actorlearner.learner.export import gather_state
    from actorlearner.learner.policy import build_policy

    policy, _ = build_policy(_cfg(tiny_model_dir))
    _perturb_adapters(policy)
    state = gather_state(policy, zero3=False, keep=True)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert set(state) == set(plain.state_dict())  # no lm./base_model./base_layer/lora_/value head
    layer = policy.lm.base_model.model.model.layers[0].self_attn.q_proj
    expected = layer.base_layer.weight + layer.get_delta_weight("default")
    torch.testing.assert_close(state["model.layers.0.self_attn.q_proj.weight"], expected)
    plain.load_state_dict(state)  # loads as is


class _Rank:
    """A ZeRO-3 learner rank that reports how much of the model export holds gathered."""

    def __init__(self, cfg: LearnerConfig, rank: int, world: int, port: int):
        from actorlearner.learner.deepspeed_backend import DeepSpeedLearner

        torch.set_num_threads(1)
        self.learner = DeepSpeedLearner(cfg, rank, world, "127.0.0.1", port)

    def perturb(self) -> None:
        import deepspeed

        policy = self.learner.backend.policy
        lora = [p for n, p in policy.named_parameters() if "lora_B" in n]
        with deepspeed.zero.GatheredParameters(lora, modifier_rank=0):
            _perturb_adapters(policy)

    def export(self) -> tuple[dict | None, int, int]:
        from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

        from actorlearner.learner.export import iter_weights

        policy = self.learner.backend.policy
        params = list(policy.parameters())
        peak, out = 0, {}
        for name, tensor in iter_weights(policy, zero3=True):
            live = sum(p.ds_numel for p in params if p.ds_status == ZeroParamStatus.AVAILABLE)
            peak = max(peak, live)
            out[name] = tensor.clone()
        state = self.learner.state_dict_for_actors()
        assert state is None or set(state) == set(out)
        return (
            (out if self.learner.backend.rank == 0 else None),
            peak,
            sum(p.ds_numel for p in params),
        )


def test_zero3_export_gathers_one_module_at_a_time(tiny_model_dir):
    import ray

    from actorlearner.learner.distributed import free_port
    from actorlearner.learner.export import gather_state
    from actorlearner.learner.policy import build_policy

    cfg = _cfg(tiny_model_dir, zero_stage=3, micro_batch_size=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        rank = ray.remote(num_cpus=1)(_Rank)
        ranks = [rank.remote(cfg, r, 2, port) for r in range(2)]
        ray.get([r.perturb.remote() for r in ranks])
        (state, peak, total), (none, peak1, _) = ray.get([r.export.remote() for r in ranks])
    finally:
        ray.shutdown()
    assert none is None and state is not None
    embed = 512 * 64  # the largest module (tied embedding / lm_head) of the tiny model
    assert 0 < peak <= embed and peak1 <= embed and peak < total / 2
    reference, _ = build_policy(_cfg(tiny_model_dir))
    _perturb_adapters(reference)
    expected = gather_state(reference, zero3=False, keep=True)
    assert set(state) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(state[name], tensor, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [["q_proj", "c_attn"]])
def test_lora_targets_are_checked_against_the_model(tiny_model_dir, bad):
    from actorlearner.learner.policy import build_policy

    cfg = _cfg(tiny_model_dir)
    cfg.lora.target_modules = bad
    with pytest.raises(
        ValueError, match=r"\['c_attn'\] match no layer of LlamaForCausalLM.*q_proj"
    ):
        build_policy(cfg)

"""Map the user-facing run config onto the components' own typed configs."""

from __future__ import annotations

from pathlib import Path

from actorlearner.config import RunConfig
from actorlearner.engines.base import SamplingParams
from actorlearner.learner.config import LearnerConfig, LoRAConfig, PPOConfig, SFTConfig
from actorlearner.rollout.config import RolloutConfig


def learner_config(
    cfg: RunConfig, model_path: str, checkpoint_dir: Path, lr: float
) -> LearnerConfig:
    m, t, s = cfg.model, cfg.train, cfg.sft
    return LearnerConfig(
        model=model_path,
        deepspeed_config=cfg.learner.deepspeed_config,
        lr=lr,
        dtype=m.dtype,
        use_lora=m.lora.enabled,
        lora=LoRAConfig(
            r=m.lora.r,
            alpha=m.lora.alpha,
            dropout=m.lora.dropout,
            target_modules=list(m.lora.target_modules),
        ),
        seed=cfg.seed,
        checkpoint_dir=str(checkpoint_dir),
        warmup_steps=s.warmup_steps if checkpoint_dir.name == "sft" else t.warmup_steps,
        max_grad_norm=t.max_grad_norm,
        ppo=PPOConfig(
            gamma=t.gamma,
            lam=t.lam,
            clip_ratio=t.clip_range,
            value_clip=t.value_clip,
            vf_coef=t.vf_coef,
            kl_coef=t.kl_coef,
            kl_target=0.05 if t.adaptive_kl else None,
            epochs=t.epochs,
            num_minibatches=max(1, t.episodes_per_iteration // max(1, t.minibatch_size)),
            temperature=cfg.rollout.temperature,
            max_staleness=t.max_staleness,
            advantage=t.advantage,
        ),
        sft=SFTConfig(
            refine_only=s.refine_only,
            batch_tokens=s.batch_tokens,
            max_length=s.max_len,
            epochs=max(1, round(s.epochs)),
        ),
    )


def rollout_config(
    cfg: RunConfig, model_path: str, problems: list, pool: str | None
) -> RolloutConfig:
    r, t = cfg.rollout, cfg.train
    env_kwargs: dict = {"problems": problems, "max_turns": t.max_turns, "rewards": t.rewards}
    if pool:
        env_kwargs["pool"] = pool
    return RolloutConfig(
        model_path=model_path,
        engine=r.engine,
        engine_kwargs={"dtype": cfg.model.dtype},
        num_actors=r.num_actors,
        envs_per_actor=r.envs_per_actor,
        num_cpus_per_actor=r.num_cpus_per_actor,
        num_gpus_per_actor=r.num_gpus_per_actor,
        env_kwargs=env_kwargs,
        sampling=SamplingParams(
            max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p
        ),
        seed=cfg.seed,
        torch_threads=max(1, int(r.num_cpus_per_actor)),
        group_size=t.group_size,
    )

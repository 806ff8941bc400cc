"""The components' runtime configs of one run: each section of the run config passed on
whole, plus only what the run itself decides (model path, stage, data, seed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, TypeVar

from actorlearner.config import RunConfig, reward_terms
from actorlearner.learner.config import LearnerConfig, LearnerSettings, PPOConfig
from actorlearner.rollout.config import RolloutConfig, RolloutSettings

T = TypeVar("T")


def fields_of(obj: Any, cls: type[T]) -> dict[str, Any]:
    """The values of `cls`'s fields on `obj` (a section that is, or extends, `cls`)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


def ppo_config(cfg: RunConfig) -> PPOConfig:
    """`train`'s PPO part; the learner scores tokens at the actors' sampling temperature."""
    ppo = PPOConfig(**fields_of(cfg.train, PPOConfig))
    return dataclasses.replace(ppo, temperature=cfg.rollout.temperature)


def learner_config(
    cfg: RunConfig, model_path: str, checkpoint_dir: Path, stage: Literal["sft", "ppo"]
) -> LearnerConfig:
    """The learner of one stage: its optimizer rate and warm-up are that stage's own."""
    objective = cfg.sft if stage == "sft" else cfg.train
    return LearnerConfig(
        **fields_of(cfg.learner, LearnerSettings),
        model=model_path,
        dtype=cfg.model.dtype,
        lora=cfg.model.lora,
        lr=objective.lr,
        warmup_steps=objective.warmup_steps,
        seed=cfg.seed,
        checkpoint_dir=str(checkpoint_dir),
        ppo=ppo_config(cfg),
        sft=cfg.sft,
    )


def env_kwargs(cfg: RunConfig, problems: list, pool: str | None) -> dict[str, Any]:
    """What a training env gets: the run's problems, turns and reward terms, then
    `env.kwargs` (which may add to or override them)."""
    kwargs: dict[str, Any] = {
        "problems": problems,
        "max_turns": cfg.train.max_turns,
        "rewards": reward_terms(cfg),
    }
    if pool:
        kwargs["pool"] = pool
    return {**kwargs, **cfg.env.kwargs}


def rollout_config(
    cfg: RunConfig, model_path: str, problems: list, pool: str | None
) -> RolloutConfig:
    return RolloutConfig(
        **fields_of(cfg.rollout, RolloutSettings),
        model_path=model_path,
        engine_kwargs={"dtype": cfg.model.dtype},
        env_id=cfg.env.id,
        env_kwargs=env_kwargs(cfg, problems, pool),
        group_size=cfg.train.group_size,
        seed=cfg.seed,
    )

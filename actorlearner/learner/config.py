"""Typed learner configs; the run config composes them (OmegaConf structured configs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEEPSPEED_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "deepspeed"


@dataclass
class LoRAConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


@dataclass
class PPOConfig:
    gamma: float = 0.99  # per action token (paper value)
    lam: float = 0.95
    clip_ratio: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.5
    entropy_coef: float = 0.0  # entropy is always logged; this adds it as a bonus
    kl_coef: float = 0.05  # initial beta of the per-token -beta*KL(policy||ref) reward
    kl_target: float | None = None  # set -> adaptive controller on the mean per-token KL
    kl_horizon: int = 10_000
    epochs: int = 2
    num_minibatches: int = 2
    whiten_advantages: bool = True
    # "gae": the paper's value-head critic; "group": returns-to-go minus a leave-one-out
    # baseline of the episodes from the same start (trajectories' stats["group"]); the
    # value loss is then skipped, since nothing uses the value head
    advantage: str = "gae"
    temperature: float = 1.0  # logprobs under log_softmax(logits / temperature), as sampled
    max_staleness: int = 1  # accept trajectories from versions >= current - max_staleness
    # False: ratio against the behaviour logprobs stored in the trajectory (correct off-policy);
    # True: recompute them with the learner's current weights (when engine numerics differ).
    recompute_old_logprobs: bool = False
    # off-policy correction between the behaviour policy (the actors' logprobs) and the
    # learner: none | decoupled (PPO around recomputed proximal logprobs, times the
    # behaviour weight pi_prox/pi_behav clipped at is_clip) | tis (truncated importance
    # sampling, weight min(pi/pi_behav, is_clip), no clip range); see learner/ppo.py
    off_policy: str = "none"
    is_clip: float = 2.0

    def __post_init__(self) -> None:
        if self.off_policy not in ("none", "decoupled", "tis"):
            raise ValueError(
                "PPOConfig.off_policy must be 'none', 'decoupled' or 'tis', "
                f"got {self.off_policy!r}"
            )
        if self.is_clip < 1.0:
            raise ValueError(f"PPOConfig.is_clip must be >= 1 (got {self.is_clip})")
        if self.advantage not in ("gae", "group"):
            raise ValueError(
                f"PPOConfig.advantage must be 'gae' or 'group', got {self.advantage!r}"
            )


@dataclass
class SFTConfig:
    data: str = ""  # SFT JSONL (see actorlearner.learner.sft)
    eval_data: str = ""  # held-out JSONL; empty -> hold out eval_fraction of `data`
    eval_fraction: float = 0.1
    refine_only: bool = False  # the paper's variant: loss only on the code part of the reply
    batch_tokens: int = 4096  # padded-token budget of one optimizer step (length bucketing)
    max_length: int = 2048
    epochs: int = 1
    max_steps: int = 0  # 0 -> run all epochs
    eval_interval: int = 50
    log_interval: int = 1


@dataclass
class LearnerConfig:
    model: str = ""  # HF model directory or hub name
    deepspeed_config: str = "zero2"  # name in configs/deepspeed/ or a path to a JSON
    zero_stage: int | None = None  # overrides the JSON's stage when set
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    micro_batch_size: int = 4  # sequences per forward/backward on one rank
    dtype: str = "float32"  # "bfloat16" on GPU
    use_lora: bool = False
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_dir: str = ""
    checkpoint_interval: int = 0  # learner steps between checkpoints; 0 -> only on demand/SIGTERM
    keep_checkpoints: int = 3  # newest checkpoints kept on disk; 0 -> keep all
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)


def resolve_deepspeed_config(name_or_path: str) -> Path:
    """Accept a bare name ("zero2") from configs/deepspeed/ or a path to a JSON file."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        return path
    candidate = DEEPSPEED_CONFIG_DIR / f"{path.stem}.json"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in DEEPSPEED_CONFIG_DIR.glob("*.json"))
    raise FileNotFoundError(
        f"DeepSpeed config {name_or_path!r} not found; pass a JSON path or one of {known}"
    )

"""Typed learner configs. The run config (`actorlearner.config.RunConfig`) composes them:
`model.lora` is a `LoRAConfig`, `sft` an `SFTConfig`, `learner` the `LearnerSettings`,
and `train` extends `PPOConfig`, so every default below is the run's default too."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEEPSPEED_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "deepspeed"
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LoRAConfig:
    enabled: bool = False
    # r=16, alpha=32, dropout=0.05: the 7B/15B recipes' adapters (LeDex trains LoRA there)
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


@dataclass
class PPOConfig:
    gamma: float = 0.99  # per action token (paper value)
    lam: float = 0.95
    clip_ratio: float = 0.2
    value_clip: float = 0.2
    # The value head shares the policy's trunk: a large value loss early on (returns of
    # +-10 against a fresh head) can drown the policy gradient and blur the LM.
    vf_coef: float = 0.1
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
    # logprobs under log_softmax(logits / temperature), as sampled; a run sets it from
    # rollout.temperature
    temperature: float = 1.0
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
    data: str = ""  # SFT JSONL (see actorlearner.learner.sft); a run sets its collected data
    eval_data: str = ""  # held-out JSONL; empty -> hold out eval_fraction of `data`
    eval_fraction: float = 0.1
    refine_only: bool = False  # the paper's variant: loss only on the code part of the reply
    batch_tokens: int = 4096  # padded-token budget of one optimizer step (length bucketing)
    # longest example kept, in tokens: real models' explain+fix replies fit in 2048; the
    # tiny recipe sets 768 (its base model's context)
    max_length: int = 2048
    epochs: int = 1
    max_steps: int = 0  # 0 -> run all epochs
    eval_interval: int = 50
    log_interval: int = 1
    lr: float = 5e-4  # SFT's own optimizer (the shipped small base model's rate)
    warmup_steps: int = 10
    # CPU threads per learner rank; 0 = share every CPU of the plan (no actors run during
    # SFT). Set it on a shared machine: torch threads that outnumber free cores stall.
    cpu_threads: int = 0


@dataclass
class LearnerSettings:
    """How the learner runs, whatever it trains: the run config's `learner:` section."""

    num_ranks: int = 1
    num_cpus_per_rank: float = 1.0
    num_gpus_per_rank: float = 0.0
    # ZeRO-0: one CPU rank gains nothing from partitioning; multi-GPU recipes name their stage
    deepspeed_config: str = "zero0"  # name in configs/deepspeed/ or a path to a JSON
    zero_stage: int | None = None  # overrides the JSON's stage when set
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    micro_batch_size: int = 4  # sequences per forward/backward on one rank
    gradient_checkpointing: bool = False
    checkpoint_interval: int = 0  # learner steps between checkpoints; 0 -> only on demand/SIGTERM
    keep_checkpoints: int = 3  # newest checkpoints kept on disk; 0 -> keep all


@dataclass
class LearnerConfig(LearnerSettings):
    """One learner: the settings plus what it trains (model, objective, optimizer rate)."""

    model: str = ""  # HF model directory or hub name
    dtype: str = "float32"  # "bfloat16" on GPU
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    lr: float = 1e-5  # this learner's optimizer: a run sets sft.lr or train.lr
    warmup_steps: int = 0  # linear lr warm-up: a run sets sft.warmup_steps or train.warmup_steps
    seed: int = 0
    checkpoint_dir: str = ""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)

    @property
    def use_lora(self) -> bool:
        return self.lora.enabled


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

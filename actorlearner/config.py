"""The run config: typed dataclasses, loaded from YAML plus `key.sub=value` overrides.

Validation happens before any work starts: unknown keys name the closest valid key,
wrong types name the field and the expected type (OmegaConf structured configs).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config problem, with a message that says how to fix it."""


@dataclass
class LoraSettings:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


@dataclass
class ModelSettings:
    path: str = "base"  # "base" = the shipped small base model; else a local path or hub name
    dtype: str = "float32"  # float32 | bfloat16 | float16
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass
class DataSettings:
    train: list[str] = field(default_factory=lambda: ["synthetic:train"])
    num_synthetic_train: int = 600  # problems drawn from the synthetic train split
    num_synthetic_test: int = 60  # held-out names, training bug kinds
    num_synthetic_novel: int = 20  # held-out names and unseen (template, bug kind) pairs
    max_problems_per_source: int = 0  # 0 = all (benchmark sources)


@dataclass
class TeacherSettings:
    url: str = ""  # OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never stored


@dataclass
class CollectSettings:
    refiner: str = (
        "reference"  # reference (verified references of synthetic problems) | policy | teacher
    )
    samples_per_problem: int = 4  # initial solutions per benchmark problem
    refinements_per_wrong: int = 2  # K explanation+refinement replies per wrong solution
    sample_temperature: float = 1.0
    refine_temperature: float = 0.8
    max_new_tokens: int = 256
    teacher: TeacherSettings = field(default_factory=TeacherSettings)


@dataclass
class SFTSettings:
    epochs: float = 2.0
    lr: float = 5e-4
    batch_tokens: int = 4096  # tokens per optimizer step (packed)
    max_len: int = 768
    refine_only: bool = False  # the paper's refine-only variant: loss on the code only
    warmup_steps: int = 10
    # CPU threads per learner rank; 0 = share every CPU of the plan (no actors run during
    # SFT). Set it on a shared machine: torch threads that outnumber free cores stall.
    cpu_threads: int = 0


@dataclass
class RolloutSettings:
    num_actors: int = 1
    envs_per_actor: int = 8
    engine: str = "hf"  # hf | vllm
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0  # fractional = colocated with the learner on one GPU
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 192


@dataclass
class LearnerSettings:
    num_ranks: int = 1
    num_cpus_per_rank: float = 1.0
    num_gpus_per_rank: float = 0.0
    deepspeed_config: str = "configs/deepspeed/zero0.json"


@dataclass
class TrainSettings:
    iterations: int = 10
    episodes_per_iteration: int = 16
    max_turns: int = 2
    rewards: str = "ledex"  # a reward preset name
    mode: str = "sync"  # sync | async (bounded staleness)
    max_staleness: int = 1
    lr: float = 1e-5
    kl_coef: float = 0.05
    adaptive_kl: bool = False
    gamma: float = 0.99
    lam: float = 0.95
    epochs: int = 2
    minibatch_size: int = 8
    clip_range: float = 0.2
    value_clip: float = 0.2
    # The value head shares the policy's trunk: a large value loss early on (returns of
    # +-10 against a fresh head) can drown the policy gradient and blur the LM.
    vf_coef: float = 0.1
    # gae = the paper's critic; group = a per-problem baseline from group_size samples of
    # each episode start (critic-free, no value loss)
    advantage: str = "gae"
    group_size: int = 1  # episodes per drawn start
    # greedy episodes on fixed training starts per policy version (0 = off): a low-noise
    # training curve, never trained on (see actorlearner.pipeline.train_loop)
    probe_episodes: int = 0
    max_grad_norm: float = 1.0
    # linear lr warm-up over the first PPO optimizer steps (epochs x minibatches per
    # iteration): Adam's first steps move every weight by about lr, whatever its gradient
    warmup_steps: int = 0
    checkpoint_every: int = 5


@dataclass
class EvalSettings:
    benchmarks: list[str] = field(default_factory=lambda: ["synthetic:test"])
    rounds: int = 3
    samples_per_task: int = 1
    temperature: float = 0.0  # 0 = greedy (pass@1); > 0 with samples_per_task >= 10 for pass@10
    max_problems: int = 0  # 0 = all
    max_new_tokens: int = 256
    judge: TeacherSettings = field(default_factory=TeacherSettings)  # optional explanation judge


@dataclass
class RaySettings:
    address: str = ""  # "" = join $RAY_ADDRESS / a running cluster, else start a local one
    num_cpus: int = 0  # for a local cluster; 0 = all cores


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    stages: list[str] = field(default_factory=lambda: ["collect", "sft", "train", "evaluate"])
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    collect: CollectSettings = field(default_factory=CollectSettings)
    sft: SFTSettings = field(default_factory=SFTSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    learner: LearnerSettings = field(default_factory=LearnerSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    evaluate: EvalSettings = field(default_factory=EvalSettings)
    ray: RaySettings = field(default_factory=RaySettings)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


STAGES = ("collect", "sft", "train", "evaluate")
_CHOICES = {
    "rollout.engine": ("hf", "vllm"),
    "train.mode": ("sync", "async"),
    "train.advantage": ("gae", "group"),
    "collect.refiner": ("reference", "policy", "teacher"),
    "model.dtype": ("float32", "bfloat16", "float16"),
}


def _check_keys(raw: Any, schema: type, prefix: str = "") -> None:
    """Reject unknown keys, naming the closest valid one."""
    if not isinstance(raw, dict):
        return
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{path}'{hint} (valid: {', '.join(fields)})")
        sub = fields[key].type
        sub_type = globals().get(sub) if isinstance(sub, str) else sub
        if isinstance(sub_type, type) and dataclasses.is_dataclass(sub_type):
            _check_keys(value, sub_type, path + ".")


def _check_values(cfg: RunConfig) -> None:
    for key, allowed in _CHOICES.items():
        value = OmegaConf.select(OmegaConf.structured(cfg), key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    bad = [s for s in cfg.stages if s not in STAGES]
    if bad:
        raise ConfigError(f"unknown stage(s) {bad}; stages are {', '.join(STAGES)}")
    positive = {
        "rollout.num_actors": cfg.rollout.num_actors,
        "rollout.envs_per_actor": cfg.rollout.envs_per_actor,
        "learner.num_ranks": cfg.learner.num_ranks,
        "train.max_turns": cfg.train.max_turns,
        "evaluate.samples_per_task": cfg.evaluate.samples_per_task,
        "train.group_size": cfg.train.group_size,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    _check_groups(cfg.train)


def _check_groups(t: TrainSettings) -> None:
    if t.probe_episodes < 0:
        raise ConfigError(
            f"train.probe_episodes must be >= 0 (0 = no probe), got {t.probe_episodes}"
        )
    if t.episodes_per_iteration % t.group_size:
        raise ConfigError(
            f"train.episodes_per_iteration={t.episodes_per_iteration} is not a multiple of "
            f"train.group_size={t.group_size}; make it one so every group is whole"
        )
    if t.advantage == "group" and t.group_size < 2:
        raise ConfigError(
            "train.advantage=group needs train.group_size >= 2 (samples per start to form "
            "the baseline); set e.g. train.group_size=4"
        )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML run config, apply `a.b=value` overrides, validate, return a RunConfig."""
    base = OmegaConf.structured(RunConfig)
    layers = []
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p} (see configs/ for the shipped ones)")
        raw = OmegaConf.to_container(OmegaConf.load(p))
        _check_keys(raw, RunConfig)
        layers.append(OmegaConf.create(raw))
    if overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key.sub=value")
        dot = OmegaConf.from_dotlist(list(overrides))
        _check_keys(OmegaConf.to_container(dot), RunConfig)
        layers.append(dot)
    try:
        merged = OmegaConf.merge(base, *layers)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid config value: {exc}".split("\n    full_key")[0]) from exc
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, RunConfig)
    _check_values(cfg)
    return cfg


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))

"""The run config: one typed system for every command.

`RunConfig` composes the components' own configs, so each default lives in one place:
`model.lora` is the learner's `LoRAConfig`, `sft` its `SFTConfig`, `learner` its
`LearnerSettings`, `train` extends its `PPOConfig`, `rollout` is the actors'
`RolloutSettings` and `collect` the collector's `CollectSettings`. Every command loads
YAML plus `key.sub=value` overrides through `load_structured`, and validation happens
before any work starts: unknown keys name the closest valid key, wrong values name the
field, the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from actorlearner.collect.config import CollectSettings
from actorlearner.learner.config import (
    DTYPES,
    LearnerConfig,
    LearnerSettings,
    LoRAConfig,
    PPOConfig,
    SFTConfig,
)
from actorlearner.rollout.config import ENGINES, WEIGHT_SYNC, RolloutSettings
from actorlearner.teacher import TeacherConfig

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem, with a message that says how to fix it."""


@dataclass
class ModelSettings:
    path: str = "base"  # "base" = the shipped small base model; else a local path or hub name
    dtype: str = LearnerConfig.dtype  # float32 | bfloat16 | float16
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class DataSettings:
    train: list[str] = field(default_factory=lambda: ["synthetic:train"])
    num_synthetic_train: int = 600  # problems drawn from the synthetic train split
    num_synthetic_test: int = 60  # held-out names, training bug kinds
    num_synthetic_novel: int = 20  # held-out names and unseen (template, bug kind) pairs
    max_problems_per_source: int = 0  # 0 = all (benchmark sources)


@dataclass
class EnvSettings:
    """The Gymnasium env of training, the probe and evaluation (see envs/code_refine.py
    for the step/info contract a replacement must keep)."""

    id: str = "CodeRefine-v0"
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to gymnasium.make


@dataclass
class TrainConfig(PPOConfig):
    """The PPO stage: the learner's `PPOConfig` plus the loop around it."""

    iterations: int = 10
    episodes_per_iteration: int = 16
    max_turns: int = 2
    # a preset name (envs.rewards.PRESETS) or a list of {name, weight, options, span, label};
    # a preset is expanded to its list when the config loads
    rewards: Any = "ledex"
    mode: str = "sync"  # sync | async (bounded staleness)
    group_size: int = 1  # episodes per drawn start (train.advantage=group needs >= 2)
    # greedy episodes on fixed training starts per policy version (0 = off): a low-noise
    # training curve, never trained on (see actorlearner.pipeline.train_loop)
    probe_episodes: int = 0
    lr: float = LearnerConfig.lr
    # linear lr warm-up over the first PPO optimizer steps (epochs x minibatches per
    # iteration): Adam's first steps move every weight by about lr, whatever its gradient
    warmup_steps: int = LearnerConfig.warmup_steps
    checkpoint_every: int = 5


@dataclass
class EvalSettings:
    benchmarks: list[str] = field(default_factory=lambda: ["synthetic:test"])
    rounds: int = 3
    samples_per_task: int = 1
    temperature: float = 0.0  # 0 = greedy (pass@1); > 0 with samples_per_task >= 10 for pass@10
    max_problems: int = 0  # 0 = all
    max_new_tokens: int = 256
    judge: TeacherConfig | None = None  # optional explanation judge (an OpenAI-compatible endpoint)
    # evaluate the base and SFT models while PPO trains, on CPU time PPO leaves idle (CPU
    # evaluation workers only: a GPU run's GPUs are PPO's until it ends)
    during_training: bool = True


@dataclass
class RaySettings:
    # "" = $RAY_ADDRESS when set (a Ray job's driver), else a private local cluster;
    # "auto" = the cluster `ray start` registered here; "HOST:PORT"; "local" = always private
    address: str = ""
    num_cpus: int = 0  # for a private local cluster; 0 = all cores


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    stages: list[str] = field(default_factory=lambda: ["collect", "sft", "train", "evaluate"])
    # modules imported in the driver and every Ray worker before anything else, so that
    # reward terms, problem sources and envs registered by their decorators exist everywhere
    imports: list[str] = field(default_factory=list)
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    env: EnvSettings = field(default_factory=EnvSettings)
    collect: CollectSettings = field(default_factory=CollectSettings)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    learner: LearnerSettings = field(default_factory=LearnerSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalSettings = field(default_factory=EvalSettings)
    ray: RaySettings = field(default_factory=RaySettings)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


STAGES = ("collect", "sft", "train", "evaluate")
_CHOICES = {
    "rollout.engine": ENGINES,
    "rollout.weight_sync": WEIGHT_SYNC,
    "train.mode": ("sync", "async"),
    "train.advantage": ("gae", "group"),
    "train.off_policy": ("none", "decoupled", "tis"),
    "collect.sampler": ("policy", "teacher"),
    "collect.refiner": ("reference", "policy", "teacher"),
    "model.dtype": DTYPES,
}
# set by the run from another section, so a value here would be silently replaced
_DERIVED = {
    "train.temperature": "the learner scores tokens at the sampling temperature: set "
    "rollout.temperature",
}


# ----------------------------------------------------------------------------- loading
def _check_keys(raw: Any, schema: type, prefix: str = "", derived: dict | None = None) -> None:
    """Reject unknown keys, naming the closest valid one, and keys a run sets itself."""
    if not isinstance(raw, dict):
        return
    fields = [f.name for f in dataclasses.fields(schema)]
    hints = typing.get_type_hints(schema)
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{path}'{hint} (valid: {', '.join(fields)})")
        if derived and path in derived:
            raise ConfigError(f"'{path}' is not set by hand: {derived[path]}")
        sub = _dataclass_of(hints[key])
        if sub is not None:
            _check_keys(value, sub, path + ".", derived)


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds (also through `X | None`), else None."""
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _omegaconf_error(exc: OmegaConfBaseException) -> ConfigError:
    """One line that names the field, the value and the expected type."""
    key = getattr(exc, "full_key", "") or ""
    msg = str(getattr(exc, "msg", "") or exc).split("\n")[0]
    return ConfigError(f"{key}: {msg}" if key else msg)


def _parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`a.b=value` pairs, values parsed as YAML (`[x, y]`, `{k: v}`, numbers, null)."""
    pairs = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        try:
            parsed = OmegaConf.from_dotlist([f"v={value}"])["v"]
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {item!r}: value not understood ({exc})") from exc
        pairs.append((key.strip(), parsed))
    return pairs


def _nested(pairs: list[tuple[str, Any]]) -> dict:
    """Overrides as a nested dict (list indices as keys), for the unknown-key check."""
    out: dict = {}
    for key, value in pairs:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return out


def _file_layer(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (see configs/ for the shipped ones)")
    try:
        return OmegaConf.load(p)
    except Exception as exc:  # YAML syntax errors of every kind
        raise ConfigError(f"{p}: not valid YAML: {exc}".split("\n")[0]) from exc


def load_structured(
    schema: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    prepare: Any = None,
    check: Any = None,
) -> T:
    """Load `schema` from YAML plus `a.b=value` overrides: the one loader of every command.

    `prepare(merged)`, if given, runs on the merged config before and after the
    overrides (a run imports its modules and expands a reward preset there, so that an
    override can address a preset's terms, e.g. `train.rewards.1.weight=2`); `check(merged)`
    runs last, before the component configs' own checks, so its errors name the key."""
    derived = _DERIVED if schema is RunConfig else None
    layer = _file_layer(path) if path is not None else None
    pairs = _parse_overrides(overrides or [])
    if layer is not None:
        _check_keys(OmegaConf.to_container(layer), schema, derived=derived)
    _check_keys(_nested(pairs), schema, derived=derived)
    try:
        merged = OmegaConf.structured(schema)
        if layer is not None:
            merged = OmegaConf.merge(merged, layer)
        if prepare is not None:
            prepare(merged)
        for key, value in pairs:
            OmegaConf.update(merged, key, value, merge=not OmegaConf.is_list(value))
        if prepare is not None:
            prepare(merged)
        if check is not None:
            check(merged)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(exc) from exc
    except ValueError as exc:  # a component config's own __post_init__ check
        raise ConfigError(str(exc)) from exc
    assert isinstance(obj, schema)
    return obj


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML run config, apply `a.b=value` overrides, validate, return a RunConfig.

    The config's `imports` are imported first, so the reward terms and env ids they
    register can be named (and checked) in the same config."""
    from actorlearner.userimports import import_modules

    def prepare(merged: Any) -> None:
        import_modules(list(merged.imports))
        _expand_reward_preset(merged)

    cfg = load_structured(RunConfig, path, overrides, prepare, _check_choices)
    validate(cfg)
    return cfg


def _check_choices(root: Any) -> None:
    for key, allowed in _CHOICES.items():
        value = OmegaConf.select(root, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def _expand_reward_preset(merged: Any) -> None:
    rewards = merged.train.rewards
    if isinstance(rewards, str):
        from envs.rewards import PRESETS

        if rewards not in PRESETS:
            raise ConfigError(
                f"train.rewards={rewards!r} is not a preset ({', '.join(sorted(PRESETS))}); "
                "give a preset name or a list of {name, weight, options}"
            )
        merged.train.rewards = [dict(t) for t in PRESETS[rewards]]


# ----------------------------------------------------------------------------- validation
def validate(cfg: RunConfig) -> None:
    """Cross-field and registry checks (types were checked while loading)."""
    _check_choices(OmegaConf.structured(cfg))
    bad = [s for s in cfg.stages if s not in STAGES]
    if bad:
        raise ConfigError(f"unknown stage(s) {bad}; stages are {', '.join(STAGES)}")
    positive = {
        "rollout.num_actors": cfg.rollout.num_actors,
        "rollout.envs_per_actor": cfg.rollout.envs_per_actor,
        "learner.num_ranks": cfg.learner.num_ranks,
        "train.max_turns": cfg.train.max_turns,
        "train.num_minibatches": cfg.train.num_minibatches,
        "evaluate.samples_per_task": cfg.evaluate.samples_per_task,
        "train.group_size": cfg.train.group_size,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    _check_groups(cfg.train)
    _check_rewards(cfg.train.rewards)
    _check_env(cfg.env)


def _check_groups(t: TrainConfig) -> None:
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


def _check_rewards(rewards: Any) -> None:
    from envs.rewards import CompositeReward

    try:
        CompositeReward(rewards)
    except (KeyError, ValueError, TypeError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise ConfigError(f"train.rewards: {message}") from exc


def _check_env(env: EnvSettings) -> None:
    import gymnasium

    import envs  # noqa: F401  (registers CodeRefine-v0)

    if env.id not in gymnasium.registry:
        raise ConfigError(
            f"env.id={env.id!r} is not a registered Gymnasium id; register it with "
            "gymnasium.register(...) in a module named in `imports`"
        )


def reward_terms(cfg: RunConfig) -> list[dict[str, Any]]:
    """The run's reward terms as plain dicts (presets are expanded while loading)."""
    return [dict(t) for t in cfg.train.rewards]


def to_yaml(cfg: Any) -> str:
    """The config as YAML that loads again: keys a run derives itself are left out."""
    node = OmegaConf.structured(cfg)
    if isinstance(cfg, RunConfig):
        for path in _DERIVED:
            parent, _, leaf = path.rpartition(".")
            section = OmegaConf.select(node, parent)
            if section is not None and leaf in section:
                with open_dict(section):
                    del section[leaf]
    return OmegaConf.to_yaml(node)

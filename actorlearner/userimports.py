"""A run's `imports`: user modules imported in the driver and in every Ray worker.

Decorators in those modules (`@reward_term`, `@register_source`, `gymnasium.register`)
fill registries that live in each process, so a term or env id named in the config
exists only where its module has been imported. The driver imports them while the
config loads; Ray workers import them through the runtime env's
`worker_process_setup_hook` before they run any task or actor.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

ENV_VAR = "ACTORLEARNER_IMPORTS"  # comma-separated module names, read by the worker hook


def import_modules(names: list[str]) -> None:
    """Import each module once; a missing one is a config error that says what to fix."""
    from actorlearner.config import ConfigError

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(
                f"imports: cannot import {name!r} ({exc}); put its directory on PYTHONPATH "
                "or in the job's --working-dir"
            ) from exc


def worker_setup() -> None:
    """Ray's `worker_process_setup_hook`: import the run's modules in this worker."""
    for name in filter(None, os.environ.get(ENV_VAR, "").split(",")):
        importlib.import_module(name)


def runtime_env(imports: list[str], env_vars: dict[str, str] | None = None) -> dict[str, Any]:
    """The Ray runtime env of a run: its environment variables, plus the hook when the
    run names modules to import."""
    env: dict[str, Any] = {"env_vars": dict(env_vars or {})}
    if imports:
        env["env_vars"][ENV_VAR] = ",".join(imports)
        env["worker_process_setup_hook"] = "actorlearner.userimports.worker_setup"
    return env

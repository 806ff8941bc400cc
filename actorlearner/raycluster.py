"""Join a Ray cluster or start a local one, robustly."""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("actorlearner")


def start_or_join(
    address: str = "",
    num_cpus: int = 0,
    runtime_env: dict[str, Any] | None = None,
    attempts: int = 3,
    log_to_driver: bool = True,
) -> None:
    """`ray.init` for a run: an explicit address or $RAY_ADDRESS (e.g. under `ray job
    submit`), else a cluster started on this machine with `ray start`, else a new local
    one ("local" skips looking for a running cluster). Starting is retried: on a loaded machine a raylet can miss Ray's fixed 30 s
    start-up window ("The current node timed out during startup")."""
    import ray

    if ray.is_initialized():
        return
    force_local = address == "local"  # a fresh cluster even if one runs on this machine
    address = "" if force_local else (address or os.environ.get("RAY_ADDRESS", ""))
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=log_to_driver)
        return
    if not force_local:
        try:
            ray.init(address="auto", runtime_env=runtime_env, log_to_driver=log_to_driver)
            return
        except (ConnectionError, RuntimeError):
            pass  # no cluster on this machine: start one
    for attempt in range(1, attempts + 1):
        try:
            ray.init(
                num_cpus=num_cpus or None,
                include_dashboard=False,
                runtime_env=runtime_env,
                log_to_driver=log_to_driver,
            )
            return
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            log.warning("Ray did not start in time (attempt %d of %d); retrying", attempt, attempts)
            ray.shutdown()

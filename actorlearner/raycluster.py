"""Join the Ray cluster a run is told to join, or start a private one for it.

A run joins only when told: `ray.address` (`auto` or `HOST:PORT`), else `$RAY_ADDRESS`
(set by `ray job submit` for the job's driver). Otherwise it starts a private local
cluster in its own temp dir, registered nowhere, so no other program finds it by
accident and it never finds theirs; it stops at exit. Joining checks first that the
address answers, so a stale `ray_current_cluster` fails in seconds with one line
instead of a long wait on a dead address.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("actorlearner")

CONNECT_TIMEOUT_S = 10.0
AUTH_MODE_ENV = "RAY_AUTH_MODE"


class ClusterError(RuntimeError):
    """The cluster a run was told to join cannot be reached (the message says why and what to do)."""


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """A cluster that cannot be reached ends the command with its one-line message (exit 2)."""
    try:
        yield
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def token_available() -> bool:
    """Whether a Ray token is where Ray's own loader looks: $RAY_AUTH_TOKEN,
    $RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    return (Path.home() / ".ray" / "auth_token").is_file()


def use_token_if_available() -> None:
    """Ray's clients send the token only in token mode, which Ray turns on by itself only
    when it finds a cluster through `ray_current_cluster`; an explicit address never
    does. Follow the token, as `ray start` does; an explicit $RAY_AUTH_MODE wins."""
    if AUTH_MODE_ENV in os.environ or not token_available():
        return
    os.environ[AUTH_MODE_ENV] = "token"
    from ray._raylet import Config  # type: ignore[attr-defined]

    Config.initialize("")  # re-read the mode in this process (Ray caches its config)


def target_address(address: str) -> str | None:
    """The cluster to join, or None for a private local one. `local` always starts one."""
    if address == "local":
        return None
    if address:
        return address
    env = os.environ.get("RAY_ADDRESS", "")
    return env if env and env != "local" else None


def resolve(address: str) -> str:
    """`auto` means the last cluster `ray start` registered on this machine."""
    if address != "auto":
        return address
    from ray._private.services import find_bootstrap_address

    found = find_bootstrap_address(None)
    if not found:
        raise ClusterError(
            "ray.address=auto but no `ray start` cluster is registered on this machine: "
            "start one with `ray start --head`, or drop ray.address to run on a private cluster"
        )
    return str(found)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast, naming the address and the fix, when nothing listens there."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise ClusterError(
            f"no Ray cluster answers at {address} ({exc.__class__.__name__}): start it "
            "(`ray start --head`), or fix ray.address / $RAY_ADDRESS (a head killed without "
            "`ray stop` leaves a stale address behind), or drop both to run on a private cluster"
        ) from None


def start_or_join(
    address: str = "",
    num_cpus: int = 0,
    runtime_env: dict[str, Any] | None = None,
    attempts: int = 3,
    log_to_driver: bool = True,
) -> bool:
    """`ray.init` for a run; returns True when it joined an existing cluster."""
    import ray

    if ray.is_initialized():
        return True
    target = target_address(address)
    if target is None:
        start_private(num_cpus, runtime_env, attempts, log_to_driver)
        return False
    target = resolve(target)
    check_reachable(target)
    use_token_if_available()
    ray.init(address=target, runtime_env=runtime_env, log_to_driver=log_to_driver)
    return True


def start_private(
    num_cpus: int, runtime_env: dict[str, Any] | None, attempts: int, log_to_driver: bool
) -> None:
    """A local cluster in its own temp dir, stopped and removed at exit. Starting is
    retried: on a loaded machine a raylet can miss Ray's fixed 30 s start-up window."""
    import ray

    temp_dir = tempfile.mkdtemp(
        prefix=f"alray-{os.getpid()}-", dir="/tmp"
    )  # short: Unix socket paths
    atexit.register(_stop_private, temp_dir)  # runs before Ray's own atexit hook
    for attempt in range(1, attempts + 1):
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus or None,
                include_dashboard=False,
                runtime_env=runtime_env,
                log_to_driver=log_to_driver,
                _temp_dir=temp_dir,
            )
            return
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            log.warning("Ray did not start in time (attempt %d of %d); retrying", attempt, attempts)
            ray.shutdown()


def _stop_private(temp_dir: str) -> None:
    import ray

    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


class RayRun:
    """`with RayRun(address, num_cpus):` joins or starts a cluster, and stops it at the
    end when this block started it (so a command can run several times in one process)."""

    def __init__(self, address: str = "", num_cpus: int = 0, **kwargs: Any):
        self.args = (address, num_cpus)
        self.kwargs = kwargs
        self.started = False

    def __enter__(self) -> RayRun:
        import ray

        was_up = ray.is_initialized()
        joined = start_or_join(*self.args, **self.kwargs)
        self.started = not was_up and not joined
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            ray.shutdown()

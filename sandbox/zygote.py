"""The warm, trusted zygote that runs inside the jail (stdlib only, sent as source).

Started once per worker, it forks one child per job; the child drops to a fresh
unprivileged uid with rlimits in a fresh scratch dir, then runs `harness.run_tests`,
so a job cannot reach the zygote or other jobs, and every process it leaves behind is
killed before the reply goes out. For the unshare backend it also draws the jail's
filesystem in its own mount namespace.

In the jail this file is appended to harness.py's source (see `jail.harness_source`),
which is where `Channel`, `run_tests` and `traceback` come from there.
"""

import json
import os
import sys
import traceback

try:  # imported as a module (tests, tools); in the jail the harness source precedes us
    from sandbox.harness import Channel, run_tests
except ImportError:
    pass


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(fd):
    head = _read_exact(fd, 4)
    if head is None:
        return None
    return json.loads(_read_exact(fd, int.from_bytes(head, "big")))


def _send(fd, obj):
    data = json.dumps(obj).encode("utf-8", "surrogatepass")
    Channel(fd).send_raw(len(data).to_bytes(4, "big") + data)


def _child(job, scratch, out_fd, chan_w):
    """In the forked child: isolate, drop to the job's uid, run the tests, exit."""
    import resource

    os.setsid()
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    chan = os.dup2(chan_w, 3)
    os.closerange(4, 1 << 16)
    os.chdir(scratch)
    for name, value in job["rlimits"].items():
        soft, hard = value if isinstance(value, list) else (value, value)
        resource.setrlimit(getattr(resource, name), (soft, hard))
    _libc().prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: exec can never gain privileges
    uid = job["uid"]
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.umask(0o077)
    os.environ.clear()
    os.environ.update(
        {"HOME": scratch, "TMPDIR": scratch, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    )
    sys.argv = ["candidate"]
    try:
        run_tests(job["program"], job["exprs"], Channel(chan))
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass


def _kill_uid(uid):
    """SIGKILL every process of `uid` (a forked helper becomes uid, then kill(-1))."""
    import signal

    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
            os.kill(-1, signal.SIGKILL)
        except BaseException:
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)


def _children():
    """Live and zombie children of the zygote (orphans of jobs end up here too)."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return None  # unknown: assume the worst


def _no_children():
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def _kill_children():
    """Without a job uid: SIGKILL our children until none are left (best effort)."""
    import signal

    for pid in _children() or []:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _reap_all(uid, patience_s=2.0):
    """Wait until every child has been reaped, killing again while any remain."""
    import time

    deadline = time.monotonic() + patience_s
    next_kill = time.monotonic() + 0.05
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid:
            continue
        if time.monotonic() >= next_kill:
            _kill_uid(uid) if uid is not None else _kill_children()
            next_kill = time.monotonic() + 0.05
        time.sleep(0.002)
    return False


def _end_job(pid, uid, exited):
    """Kill and reap everything the job started; return the job child's wait status."""
    status = os.waitpid(pid, 0)[1] if exited else None
    if status is not None and _no_children():
        return status, True  # the usual case: one process, already gone
    _kill_uid(uid) if uid is not None else _kill_children()
    if status is None:
        status = os.waitpid(pid, 0)[1]
    clean = _reap_all(uid)
    return status, clean


def _describe_exit(status):
    import signal

    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return None if code == 0 else f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name}"


def _wait_and_collect(pid, chan_r, deadline, max_bytes):
    """Read the channel until the child exits or the deadline passes."""
    import select
    import time

    pidfd = os.pidfd_open(pid)
    data = bytearray()
    exited = timed_out = False
    try:
        while not exited:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([chan_r, pidfd], [], [], left)
            if chan_r in ready:
                chunk = os.read(chan_r, 1 << 16)
                if chunk and len(data) < max_bytes:
                    data += chunk[: max_bytes - len(data)]
                elif not chunk:
                    # EOF: every writer is gone; only the exit remains.
                    select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
                    exited = True
                    timed_out = not _exited(pidfd)
            if pidfd in ready:
                exited = True
        exited = exited and not timed_out
    finally:
        os.close(pidfd)
    return data, timed_out, exited


def _exited(pidfd):
    import select

    return bool(select.select([pidfd], [], [], 0)[0])


def _drain(fd, data, max_bytes):
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            return
        if len(data) < max_bytes:
            data += chunk[: max_bytes - len(data)]


def _run_job(job, scratch_root):
    import shutil
    import time

    scratch = os.path.join(scratch_root, os.urandom(12).hex())
    os.mkdir(scratch, 0o700)
    uid = job["uid"]
    if uid is not None:
        os.chown(scratch, uid, uid)
    out_path = os.path.join(scratch, ".output")
    out_fd = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    chan_r, chan_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(chan_r)
            _child(job, scratch, out_fd, chan_w)
        except BaseException:
            code = 70  # setup failed before the candidate ran; the traceback is in the output
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(chan_w)
    data, timed_out, exited = _wait_and_collect(
        pid, chan_r, start + job["timeout_s"], job["max_result_bytes"]
    )
    duration = time.monotonic() - start
    status, clean = _end_job(pid, uid, exited)
    _drain(chan_r, data, job["max_result_bytes"])
    os.close(chan_r)
    output = os.pread(out_fd, job["output_bytes"], 0).decode("utf-8", "replace")
    os.close(out_fd)
    try:  # the usual case: only our output file is left
        os.unlink(out_path)
        os.rmdir(scratch)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "channel": data.decode("utf-8", "replace"),
        "output": output,
        "timed_out": timed_out,
        "exit": None if timed_out else _describe_exit(status),
        "duration_s": duration,
        "clean": clean,
        "truncated": len(data) >= job["max_result_bytes"],
    }


_LIBC: list = []


def _libc():
    if not _LIBC:
        import ctypes

        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _become_subreaper():
    """Orphans of a job are re-parented to us, so we can reap them."""
    _libc().prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


# Imported once by the zygote so that jobs find them loaded. Chosen from what
# HumanEval/MBPP(+) programs import; each extra module makes every fork dearer
# (fork and exit cost grow with the zygote's memory), so the list stays short.
PRELOAD = (
    "typing math re collections random heapq itertools functools string copy cmath "
    "bisect operator "
    "resource signal select"  # the harness's own
).split()


def _preload():
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _tmpfs_mounts():
    with open("/proc/self/mountinfo") as f:
        rows = [line.split() for line in f]
    return {r[4] for r in rows if r[r.index("-") + 1] == "tmpfs"}


def _open_interpreter_path():
    """Let job uids traverse to the stdlib through jail-private tmpfs directories.

    firejail whitelists the interpreter inside a tmpfs that copies the mode of, e.g.,
    /root (0700); widening that private copy changes nothing on the host. Directories
    that are not on such a tmpfs are never touched.
    """
    import stat

    tmpfs = _tmpfs_mounts()
    for target in {sys.prefix, os.path.dirname(sys.executable)}:
        path = os.path.dirname(os.path.abspath(target))
        while path != "/":
            mount = max(
                (m for m in tmpfs if path == m or path.startswith(m.rstrip("/") + "/")),
                key=len,
                default=None,
            )
            mode = os.stat(path).st_mode
            if mount is not None and not mode & stat.S_IXOTH:
                os.chmod(path, stat.S_IMODE(mode) | 0o111)
            path = os.path.dirname(path)


def _make_scratch_root(scratch_root):
    """Job dirs go under `scratch_root` (0711: enter your own dir, list nothing).

    Its parent is the jail's private /tmp, closed to job uids too.
    """
    os.chmod(os.path.dirname(scratch_root), 0o711)
    os.makedirs(scratch_root, mode=0o711, exist_ok=True)
    os.chmod(scratch_root, 0o711)


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1,
    2,
    4,
    32,
    4096,
    16384,
    1 << 18,
)


def _mount(source, target, fstype, flags, data=None):
    import ctypes

    libc = _libc()
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _hide(path, mode="0755", writable=False):
    """Cover `path` with an empty tmpfs (or /dev/null for a file), in our namespace only."""
    if os.path.isdir(path) and not os.path.islink(path):
        flags = MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY)
        _mount("tmpfs", path, "tmpfs", flags, f"mode={mode},size={'512m' if writable else '64k'}")
    elif os.path.exists(path) and not os.path.islink(path):
        _mount("/dev/null", path, None, MS_BIND)


def _private_filesystem(plan):
    """For the unshare backend: draw the jail's filesystem in our own mount namespace."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    keep = {p: os.open(p, os.O_PATH) for p in plan["keep"]}
    writable_parents = set()
    for path in plan["hide"]:
        # a tmpfs that holds a kept path must take the mkdirs below, then goes read-only
        holds = any(k.startswith(path + "/") for k in keep)
        _hide(path, mode="0711", writable=holds)
        if holds:
            writable_parents.add(path)
    for path, fd in keep.items():
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.close(fd)
    for path in writable_parents:
        _mount(None, path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0711")
    for path in plan["hide_inner"]:
        _hide(path)
    _hide("/tmp", mode="0711", writable=True)
    for path in ("/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue"):
        _hide(path)


def serve(scratch_root, plan):
    """Zygote loop: read a job, run it in a forked child, reply; until stdin closes."""
    import gc

    _become_subreaper()
    if plan != "firejail":
        _private_filesystem(json.loads(plan))
    _open_interpreter_path()
    _make_scratch_root(scratch_root)
    _preload()
    gc.collect()
    gc.freeze()  # children then leave these objects' pages shared (fewer copy-on-writes)
    inp, out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    _send(out, {"ready": True, "uid": os.getuid()})
    os.dup2(devnull, 2)  # nobody reads our stderr from now on; it must not fill up
    while True:
        job = _recv(inp)
        if job is None:
            return
        try:
            reply = _run_job(job, scratch_root)
        except Exception as exc:  # a harness bug: report it, keep serving
            reply = {"harness_error": "".join(traceback.format_exception(exc))}
        _send(out, reply)


if __name__ == "__main__":
    serve(sys.argv[2], sys.argv[3])  # argv: -c, <source length>, <scratch root>, <fs plan>

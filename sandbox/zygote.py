"""The warm, trusted zygote that runs inside the jail (stdlib only, sent as source).

Started once per worker, it splits in two before any job arrives: a *template* that
has only imported the preloads and forks one child per job, and a *controller* that
holds the jobs' data, collects their reports and cleans up. Job data reaches a child
through a pipe only the child reads, and its reports and output go straight back to
the controller, so no job descends from a process that ever held another job's
program, values or output (nothing to replay). The child drops to a fresh
unprivileged uid with rlimits and a seccomp filter in a fresh scratch dir, then runs
`harness.run_tests`; every process it leaves behind is killed before the reply goes
out. For the unshare backend the zygote also draws the jail's filesystem in its own
mount namespace.

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


def _frame(obj):
    data = json.dumps(obj).encode("utf-8", "surrogatepass")
    return len(data).to_bytes(4, "big") + data


def _send(fd, obj):
    Channel(fd).send_raw(_frame(obj))


def _job_child(job_r, out_fd, chan_w):
    """In the forked child (under the template's seccomp filter): read the job, isolate,
    drop to its uid, run the tests."""
    import resource

    job = _recv(job_r)
    os.close(job_r)
    os.setsid()
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    chan = os.dup2(chan_w, 3)
    os.closerange(4, 1 << 16)
    os.chdir(job["scratch"])
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
        {
            "HOME": job["scratch"],
            "TMPDIR": job["scratch"],
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }
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


def _load_seccomp(bpf):
    """Install the job's seccomp filter (raw BPF built outside the jail; see sandbox.seccomp)."""
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = SockFprog(len(bpf) // 8, bpf)
    if _libc().prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, MODE_FILTER
        raise OSError(ctypes.get_errno(), "cannot load the job's seccomp filter")


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


def _end_job(uid, status):
    """Kill and reap whatever the job left running; (its wait status, all gone)."""
    if _no_children():
        return status, True  # the usual case: one process, already gone
    _kill_uid(uid) if uid is not None else _kill_children()
    return status, _reap_all(uid)


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


QUOTA_POLL_S = 0.01  # how often the scratch dir's size is checked while a job runs


def _wait_and_collect(tpl, chan_r, deadline, max_bytes, over_quota):
    """Read the channel until the job's end is reported, the deadline passes or its
    scratch dir outgrows its bound, killing the job then; (data, end, timed_out, over)."""
    import select
    import time

    data = bytearray()
    watch = [chan_r, tpl]
    pid = end = None
    timed_out = over = False
    while end is None:
        left = deadline - time.monotonic()
        timed_out = timed_out or left <= 0
        over = over or (not timed_out and over_quota())
        stopping = timed_out or over
        if stopping and pid is not None:
            _kill_job(pid)
        wait = QUOTA_POLL_S if stopping else min(left, QUOTA_POLL_S)
        ready = select.select(watch, [], [], wait)[0]
        if chan_r in ready:
            chunk = os.read(chan_r, 1 << 16)
            if not chunk:
                watch.remove(chan_r)  # every writer is gone; only the exit remains
            elif len(data) < max_bytes:
                data += chunk[: max_bytes - len(data)]
        if tpl in ready:
            message = json.loads(_expect(tpl))
            pid, end = (message, None) if pid is None else (pid, message)
    return data, end, timed_out, over


def _kill_job(pid):
    """SIGKILL the job's first process (and its group); the template then kills the rest."""
    import signal

    for kill in (os.kill, os.killpg):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass


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


def _used_bytes(path):
    """Bytes in use on `path`'s filesystem, each file or dir counted as at least a page
    (so a million empty files count too)."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize + (st.f_files - st.f_ffree) * 4096


def _new_scratch(scratch_root, uid):
    scratch = os.path.join(scratch_root, os.urandom(12).hex())
    os.mkdir(scratch, 0o700)
    if uid is not None:
        os.chown(scratch, uid, uid)
    return scratch


def _remove_tree(top):
    """Delete `top` without recursion or long paths: each subdirectory is first moved up
    to `top`'s own level, so 1,500 nested dirs cost a loop, not a stack."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    root = os.open(top, flags)
    try:
        todo = ["."]
        while todo:
            name = todo.pop()
            fd = os.open(name, flags, dir_fd=root)
            try:
                for entry in list(os.scandir(fd)):
                    if not entry.is_dir(follow_symlinks=False):
                        os.unlink(entry.name, dir_fd=fd)
                    elif name == ".":
                        todo.append(entry.name)
                    else:
                        flat = "." + os.urandom(16).hex()
                        os.rename(entry.name, flat, src_dir_fd=fd, dst_dir_fd=root)
                        todo.append(flat)
            finally:
                os.close(fd)
        for entry in list(os.scandir(root)):  # only empty dirs are left
            os.rmdir(entry.name, dir_fd=root)
    finally:
        os.close(root)
    os.rmdir(top)


def _remove_scratch(scratch):
    """Remove the job's dir; the error text if it could not be (the program's doing)."""
    try:  # the usual case: only our output file is left
        os.unlink(os.path.join(scratch, ".output"))
        os.rmdir(scratch)
        return None
    except OSError:
        pass
    try:
        _remove_tree(scratch)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _run_job(job, scratch_root, tpl):
    """Run one job in a child of the template; the raw reply (decoded by the parent)."""
    import socket
    import time

    scratch = _new_scratch(scratch_root, job["uid"])
    out_fd = os.open(os.path.join(scratch, ".output"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    chan_r, chan_w = os.pipe()
    job_r, job_w = os.pipe()
    baseline = _used_bytes(scratch_root)
    start = time.monotonic()
    socket.send_fds(tpl, [json.dumps({"uid": job["uid"]}).encode()], [job_r, out_fd, chan_w])
    for fd in (job_r, chan_w):
        os.close(fd)
    _hand_over(job_w, dict(job, scratch=scratch))
    data, (status, clean), timed_out, over = _wait_and_collect(
        tpl,
        chan_r,
        start + job["timeout_s"],
        job["max_result_bytes"],
        lambda: _used_bytes(scratch_root) - baseline > job["scratch_bytes"],
    )
    duration = time.monotonic() - start
    _drain(chan_r, data, job["max_result_bytes"])
    os.close(chan_r)
    output = os.pread(out_fd, job["output_bytes"], 0).decode("utf-8", "replace")
    os.close(out_fd)
    return {
        "channel": data.decode("utf-8", "replace"),
        "output": output,
        "timed_out": timed_out,
        "scratch_exceeded": over,
        "exit": None if timed_out or over else _describe_exit(status),
        "duration_s": duration,
        "clean": clean,
        "cleanup_error": _remove_scratch(scratch),
        "truncated": len(data) >= job["max_result_bytes"],
    }


def _hand_over(fd, job):
    """Write the job to the child's pipe (a child that died first just never reads it)."""
    try:
        Channel(fd).send_raw(_frame(job))
    except OSError:
        pass
    finally:
        os.close(fd)


# -- the template: forks job children, never sees job data ------------------------------


def _start_template(seccomp):
    """Fork the template now, while this process holds nothing but the preloads."""
    import socket

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.fork() == 0:
        ours.close()
        code = 0
        try:
            os.closerange(3, theirs.fileno())
            os.closerange(theirs.fileno() + 1, 1 << 16)
            _template(theirs, seccomp)
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    theirs.close()
    return ours


def _template(sock, seccomp):
    """Loop: receive a job's pipes, fork its child (reporting its pid), wait for it, kill
    and reap whatever it left running, report its exit status."""
    import socket

    _become_subreaper()
    _libc().prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS, which a seccomp filter needs
    _load_seccomp(seccomp)  # every job child inherits it
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 256, 3)
        if not msg:
            return
        uid = json.loads(msg)["uid"]
        pid = os.fork()
        if pid == 0:
            sock.close()
            _child_main(*fds)
        for fd in fds:
            os.close(fd)
        sock.send(str(pid).encode())
        status = os.waitpid(pid, 0)[1]
        sock.send(json.dumps(_end_job(uid, status)).encode())


def _child_main(job_r, out_fd, chan_w):
    code = 0
    try:
        _job_child(job_r, out_fd, chan_w)
    except BaseException:
        code = 70  # setup failed before the candidate ran; the traceback is in the output
        traceback.print_exc()
    finally:
        os._exit(code)


def _expect(tpl):
    reply = tpl.recv(256)
    if not reply:
        raise RuntimeError("the job template exited")
    return reply


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
    """Zygote loop: read a job, run it in a child of the template, reply; until stdin closes."""
    import gc

    config = _recv(0)  # sent right after this source: what every job child loads
    if plan != "firejail":
        _private_filesystem(json.loads(plan))
    _open_interpreter_path()
    _make_scratch_root(scratch_root)
    _preload()
    inp, out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    gc.collect()
    gc.freeze()  # children then leave these objects' pages shared (fewer copy-on-writes)
    os.dup2(devnull, 2)  # nobody reads our stderr from now on; it must not fill up
    tpl = _start_template(bytes.fromhex(config["seccomp"]))
    _send(out, {"ready": True, "uid": os.getuid()})
    while True:
        job = _recv(inp)
        if job is None:
            return
        try:
            reply = _run_job(job, scratch_root, tpl)
        except Exception as exc:  # a fault of the sandbox itself: report it, keep serving
            reply = {"harness_error": "".join(traceback.format_exception(exc))}
        _send(out, reply)
        del job, reply


if __name__ == "__main__":
    serve(sys.argv[2], sys.argv[3])  # argv: -c, <source length>, <scratch root>, <fs plan>

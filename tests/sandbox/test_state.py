"""Hostile programs that try to leave state behind or reach the host's services."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from sandbox import Limits, TestCase

ADD = "def add(a, b):\n    return a + b\n"
CHECK = [TestCase("add(1, 2)", 3), TestCase("add(40, 2)", 42)]

REFUSED_CALLS = """
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def refused(call, *args):
    ctypes.set_errno(0)
    ok = call(*args) >= 0
    return 'allowed' if ok else errno.errorcode[ctypes.get_errno()]
IPC_CREAT, IPC_PRIVATE, O_CREAT_RDWR = 0o1000, 0, 0o102
results = {
    'shmget': refused(libc.shmget, IPC_PRIVATE, 64 << 20, IPC_CREAT | 0o666),
    'msgget': refused(libc.msgget, IPC_PRIVATE, IPC_CREAT | 0o666),
    'semget': refused(libc.semget, IPC_PRIVATE, 1, IPC_CREAT | 0o666),
    'mq_open': refused(libc.mq_open, b'/leak', O_CREAT_RDWR, 0o666, None),
    'unshare': refused(libc.unshare, 0x10000000),  # CLONE_NEWUSER
    'io_uring_setup': refused(libc.syscall, 425, 8, ctypes.create_string_buffer(120)),
    'unix_socket': refused(libc.socket, 1, 1, 0),
}
"""


def test_ipc_namespaces_io_uring_and_unix_sockets_are_refused(pool):
    v = pool.run(REFUSED_CALLS, [TestCase("results")])
    assert v.outcomes[0].value == dict.fromkeys(
        ["shmget", "msgget", "semget", "mq_open", "unshare", "io_uring_setup", "unix_socket"],
        "EPERM",
    ), v
    later = pool.run("ids = open('/proc/sysvipc/shm').read().splitlines()[1:]", [TestCase("ids")])
    assert later.outcomes[0].value == []


def test_a_jobs_own_socketpair_still_works(pool):
    prog = "import socket\na, b = socket.socketpair()\na.send(b'hi')\ngot = b.recv(2)\n"
    assert pool.run(prog, [TestCase("got", b"hi")]).passed


@pytest.mark.parametrize("where", ["/run", "/var/run", "/var/lib"])
def test_host_unix_sockets_are_out_of_reach(pool, where):
    path = Path(where) / f"sandbox-test-{uuid.uuid4().hex[:8]}.sock"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
    except OSError:
        pytest.skip(f"cannot create a socket in {where} here")
    os.chmod(path, 0o777)
    server.listen(1)
    server.setblocking(False)
    prog = (
        "import socket\ndef reach(path):\n    s = socket.socket(socket.AF_UNIX)\n"
        "    try:\n        s.connect(path); s.send(b'x'); return 'connected'\n"
        "    except OSError as e:\n        return type(e).__name__\n"
    )
    try:
        v = pool.run(prog, [TestCase(f"reach({str(path)!r})")])
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
        path.unlink()
    assert v.outcomes[0].value != "connected"


def test_deeply_nested_dirs_are_cleaned_up_as_the_programs_own(pool):
    prog = (
        "import os\nfor _ in range(1500):\n    os.mkdir('d' * 60)\n    os.chdir('d' * 60)\n" + ADD
    )
    v = pool.run(prog, CHECK)
    assert v.passed, v  # no SandboxError: removing the tree is routine


def test_the_scratch_dir_has_a_size_bound(pool):
    prog = (
        "for i in range(64):\n    with open(f'f{i}', 'wb') as f:\n        f.write(b'x' * (1 << 20))\n"
        + ADD
    )
    v = pool.run(prog, CHECK, Limits(scratch_bytes=8 << 20, file_bytes=2 << 20, timeout_s=10.0))
    assert (v.status, v.error_type) == ("error", "ScratchLimit"), v
    assert pool.run(prog, CHECK, Limits(scratch_bytes=128 << 20, timeout_s=10.0)).passed


def test_empty_files_count_against_the_scratch_bound(pool):
    prog = "for i in range(20_000):\n    open(f'f{i}', 'w').close()\n" + ADD
    v = pool.run(prog, CHECK, Limits(scratch_bytes=8 << 20, timeout_s=10.0))
    assert (v.status, v.error_type) == ("error", "ScratchLimit"), v

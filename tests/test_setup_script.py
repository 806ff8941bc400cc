"""scripts/setup.sh installs CPU torch from PyTorch's CPU index when it answers, else
from the default index, without waiting long on an unreachable one."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(index: str) -> tuple[str, float]:
    env = {**os.environ, "SETUP_DRY_RUN": "1", "TORCH_CPU_INDEX": index}
    start = time.perf_counter()
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout, time.perf_counter() - start


def test_cpu_index_when_reachable(tmp_path):
    (tmp_path / "whl" / "cpu" / "torch").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        index = f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
        out, _ = _dry_run(index)
    finally:
        server.shutdown()
    assert f"install -q --disable-pip-version-check --index-url {index} torch==2.13.0" in out


def test_default_index_when_the_cpu_index_is_unreachable():
    out, seconds = _dry_run(f"http://127.0.0.1:{_unused_port()}/whl/cpu")
    lines = out.splitlines()
    assert "python3 -m pip install -q --disable-pip-version-check torch==2.13.0" in lines
    assert "--index-url" not in out and seconds < 30


def _unused_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

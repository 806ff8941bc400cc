"""Backend choice: firejail by default, the fallback only when it is missing or asked for,
loudly; never an unsandboxed run."""

from __future__ import annotations

import logging
import os
import shutil

import pytest

from sandbox import SandboxPool, TestCase
from sandbox.jail import SandboxUnavailable, choose_backend


def path_with(tmp_path, *tools: str) -> str:
    """A PATH holding only links to `tools` (so `which` really finds or misses them)."""
    for tool in tools:
        os.symlink(shutil.which(tool), tmp_path / tool)
    return str(tmp_path)


def test_firejail_is_the_default(monkeypatch):
    monkeypatch.delenv("SANDBOX_BACKEND", raising=False)
    assert choose_backend() == "firejail"


def test_fallback_when_firejail_is_missing_warns(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("SANDBOX_BACKEND", raising=False)
    monkeypatch.setenv("PATH", path_with(tmp_path, "unshare"))
    with caplog.at_level(logging.WARNING, logger="sandbox.jail"):
        assert choose_backend() == "unshare"
    assert "weaker 'unshare' backend because firejail is not installed" in caplog.text


def test_no_backend_means_no_run(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable, match="refusing to run untrusted code"):
        choose_backend()
    monkeypatch.setenv("SANDBOX_BACKEND", "firejail")
    with pytest.raises(SandboxUnavailable, match="apt-get install firejail"):
        choose_backend()


def test_env_var_and_argument_select(monkeypatch, caplog):
    monkeypatch.setenv("SANDBOX_BACKEND", "unshare")
    with caplog.at_level(logging.WARNING, logger="sandbox.jail"):
        assert choose_backend() == "unshare"
    assert "as requested" in caplog.text
    assert choose_backend("firejail") == "firejail"
    with pytest.raises(ValueError, match="unknown sandbox backend 'docker'"):
        choose_backend("docker")


def test_fallback_pool_reports_its_backend(monkeypatch):
    monkeypatch.setenv("SANDBOX_BACKEND", "unshare")
    with SandboxPool(workers=1) as pool:
        v = pool.run("def f():\n    return 1\n", [TestCase("f()", 1)])
    assert v.passed and v.backend == "unshare"

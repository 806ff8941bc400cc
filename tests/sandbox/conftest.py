"""One jailed pool shared by the sandbox tests (starting a jail costs ~0.2 s)."""

from __future__ import annotations

import pytest

from sandbox import Limits, SandboxPool


@pytest.fixture(scope="session", params=["firejail", "unshare"])
def pool(request):
    """Every sandbox test runs on both backends (unshare is the weaker fallback)."""
    with SandboxPool(workers=2, limits=Limits(timeout_s=3.0, cpu_s=3), backend=request.param) as p:
        yield p

"""No job can replay an earlier one: values, channel text and output stay out of reach.

Each test runs a job that reports and prints a value computed at run time, then, on
the same worker, a job that searches everything it can reach for that value.
"""

from __future__ import annotations

import pytest

from sandbox import Limits, SandboxPool, TestCase

# The markers exist only as run-time values of the first job: the second job's source
# holds their prefixes and a pattern, never a whole marker.
FIRST = (
    "value = 'REPLAY' + ':' + str(123457 * 8)\n"
    "print('OUTPUT' + ':' + str(234568 * 4))\n"
    "def add(a, b):\n    return a + b\n"
)
FRAMES_AND_OBJECTS = """
import gc, re, sys
def found():
    pattern = re.compile('(REPLAY|OUTPUT):[0-9]{6}')
    seen, f = [], sys._getframe()
    while f is not None:
        seen += list(f.f_locals.values()) + list(f.f_globals.values())
        f = f.f_back
    for o in gc.get_objects() + seen:
        items = o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else [o]
        for x in items:
            if isinstance(x, str) and pattern.search(x):
                return sorted(set(m.group(1) for m in pattern.finditer(x)))
    return []
"""
HEAP = """
import ctypes, re
def found():
    pattern = re.compile(rb'(REPLAY|OUTPUT):[0-9]{6}')
    hits = set()
    for line in open('/proc/self/maps'):
        fields = line.split()
        if not fields[1].startswith('rw') or (len(fields) > 5 and fields[5] != '[heap]'):
            continue  # anonymous and heap mappings: where Python keeps its objects
        lo, hi = (int(x, 16) for x in fields[0].split('-'))
        hits |= {m.group(1).decode() for m in pattern.finditer(ctypes.string_at(lo, hi - lo))}
    return sorted(hits)
"""


@pytest.fixture(scope="module", params=["firejail", "unshare"])
def solo(request):
    """One worker, so that every job runs after the previous one in the same jail."""
    with SandboxPool(workers=1, limits=Limits(timeout_s=10.0), backend=request.param) as p:
        yield p


@pytest.mark.parametrize("search", [FRAMES_AND_OBJECTS, HEAP], ids=["frames", "heap"])
def test_a_later_job_finds_nothing_of_an_earlier_one(solo, search):
    first = solo.run(FIRST, [TestCase("value", "REPLAY:987656"), TestCase("add(1, 2)", 3)])
    assert first.passed and "OUTPUT:938272" in first.stdout
    right_after = solo.run(search, [TestCase("found()", [])])
    for _ in range(3):
        solo.run("x = 1", [TestCase("x", 1)])
    later = solo.run(search, [TestCase("found()", [])])
    assert right_after.outcomes[0].value == [] and later.outcomes[0].value == [], right_after


def test_the_search_finds_its_own_job_s_values(solo):
    """Control: the same searches see values of the job they run in."""
    for search in (FRAMES_AND_OBJECTS, HEAP):
        v = solo.run(FIRST + search, [TestCase("found()", ["OUTPUT", "REPLAY"])])
        assert v.outcomes[0].value in (["OUTPUT", "REPLAY"], ["REPLAY"]), v

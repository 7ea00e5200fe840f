"""The worker's memory set-up (streams.heap), each part in a process of its own.

What each part promises is measured in that process: glibc's counters for the freed memory kept,
the page faults of the allocating thread for the arenas kept faulted in.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from events.fast import compiled
from streams import heap
from tests.conftest import in_ci

GLIBC = platform.libc_ver()[0] == "glibc"


def run(code: str) -> str:
    """Run ``code`` in a fresh interpreter; its stdout (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


MALLINFO = """
import ctypes
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
"""


@pytest.mark.skipif(not GLIBC and not in_ci(), reason="mallopt is glibc's (CI runs it)")
def test_kept_freed_memory_serves_large_blocks_from_the_heap_and_keeps_them() -> None:
    found = run(
        MALLINFO
        + """
from streams.heap import keep_freed_memory
MiB = 1 << 20
def large():
    before = mallinfo2()
    block = bytearray(4 * MiB)
    during = mallinfo2()
    del block
    after = mallinfo2()
    return during.hblks - before.hblks, after.arena - during.arena, after.fordblks
print(*large())
print(keep_freed_memory(64))
print(*large())
"""
    ).split("\n")
    mapped, _, _ = map(int, found[0].split())
    assert mapped == 1  # glibc's default: a block of its own, unmapped when freed
    assert found[1] == "True"
    mapped, shrunk, free = map(int, found[2].split())
    assert mapped == 0  # from the heap
    assert shrunk == 0 and free >= 4 << 20  # and still there, free, once freed


def test_nothing_is_set_up_for_zero_and_out_of_range_is_refused() -> None:
    assert heap.keep_freed_memory(0) is False
    assert heap.prefault_arenas(0) is False
    assert heap.prepare(0, 0) == heap.Prepared(0, 0)
    with pytest.raises(ValueError, match="freed memory to keep must be 0 to 2047 MiB, got 2048"):
        heap.keep_freed_memory(2048)
    with pytest.raises(ValueError, match="arena memory to keep faulted in must be 0 to 2047"):
        heap.prefault_arenas(-1)


def test_a_pool_whose_thread_cannot_start_is_left_out_and_said(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def cannot(mib: int) -> bool:
        raise RuntimeError("cannot start the arena thread: out of threads")

    monkeypatch.setattr(heap, "compiled", lambda name: cannot)
    assert heap.prefault_arenas(16) is False
    assert heap.prepare(0, 16) == heap.Prepared(0, 0)
    assert "object arenas are not kept faulted in: cannot start the arena thread" in caplog.text


FAULTS = """
import os, sys, time
def faults(tid):
    return int(open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()[7])
def names():
    return {open(f"/proc/self/task/{t}/comm").read().strip(): int(t)
            for t in os.listdir("/proc/self/task")}
"""


def allocate_with(prefault_mib: int) -> tuple[int, bool]:
    """Page faults of the main thread while it makes 48 MiB of small objects, and whether the
    values came out right; with arenas kept faulted in (``prefault_mib``) or not."""
    found = run(
        FAULTS
        + f"""
from streams.heap import prefault_arenas
print(prefault_arenas({prefault_mib}))
def deep(n):  # CPython 3.11 takes its frame stack's 16 KiB chunks from the arena allocator too
    return 0 if n == 0 else deep(n - 1)
deep(900)
pool, deadline = None, time.monotonic() + 5
while pool is None and time.monotonic() < deadline:  # the thread names itself once it runs
    pool = names().get("trackerflow-are")  # the pool's thread (names are cut to 15 bytes)
    if {prefault_mib} == 0:
        break
print(pool is not None)
if pool is not None:
    x = [float(i) for i in range(100_000)]  # new arenas: the first tells the pool their size
    deadline = time.monotonic() + 20
    while faults(pool) < {prefault_mib} * 256 * 0.9 and time.monotonic() < deadline:
        time.sleep(0.01)
    print(faults(pool) >= {prefault_mib} * 256 * 0.9)  # the pool is full
else:
    print(False)
before = faults(os.getpid())
values = [float(i) for i in range(2_000_000)]  # 48 MiB of floats, 16 MiB of list
print(faults(os.getpid()) - before)
print(sum(values) == sum(range(2_000_000)))
"""
    ).split("\n")
    assert found[0] == found[1] == found[2] == str(prefault_mib > 0)
    return int(found[3]), found[4] == "True"


@pytest.mark.skipif(
    compiled("prefault_arenas") is None and not in_ci(),
    reason="needs the compiled extension (CI builds it, and runs this)",
)
def test_prefaulted_arenas_spare_the_allocating_thread_its_page_faults() -> None:
    plain, right = allocate_with(0)
    assert right
    assert plain >= (48 + 16) * 256 * 0.9  # every new page faulted in by the main thread
    pooled, right = allocate_with(64)
    assert right
    assert pooled < plain * 0.5  # the arenas came faulted in; the list's memory did not


@pytest.mark.skipif(
    compiled("prefault_arenas") is None and not in_ci(),
    reason="needs the compiled extension (CI builds it, and runs this)",
)
def test_arenas_from_the_pool_are_freed_and_the_pool_is_installed_once() -> None:
    found = run(
        """
import gc, os, sys
from events._native import prefault_arenas
print(prefault_arenas(8), prefault_arenas(8))
try:
    prefault_arenas(0)
except ValueError as error:
    print(error)
for round in range(3):
    values = [(i, str(i)) for i in range(300_000)]
    assert values[123_456] == (123_456, "123456")
    del values
    gc.collect()
sys.stdout.flush()
os.dup2(1, 2)  # CPython writes its allocator's statistics to the C stderr
sys._debugmallocstats()
"""
    ).split("\n")
    assert found[:2] == ["True False", "prefault_arenas needs at least 1 megabyte"]
    stats = {
        line.split("=")[0].strip("# "): int(line.split("=")[1].replace(",", ""))
        for line in found
        if line.startswith("# arenas")
    }
    # empty arenas were given back (munmap) and new ones made: three rounds, never three peaks
    assert stats["arenas reclaimed"] > 0
    assert stats["arenas highwater mark"] < stats["arenas allocated total"]

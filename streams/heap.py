"""Fresh memory for the worker process without stopping the fold for it.

A worker's memory grows while it folds (its trackers keep their events), and its buffers come
and go (fetch responses, produce requests, record batches). Each page of memory new to the
process is faulted in and zeroed by the kernel, in the thread that first writes to it: in the
pipeline benchmark that was 250,000 page faults for 500,000 events, and on a busy machine the
kernel's time for them was a sixth of the worker's CPU. Two remedies, both set up once by the
worker command before it starts (:func:`prepare`):

* :func:`keep_freed_memory` (glibc's ``mallopt``): by default glibc maps each block of 128 KiB or
  more (a threshold it raises up to 32 MiB as it sees such blocks freed) and unmaps it when it
  is freed, and it gives back free memory over 128 KiB at the top of its heap. With it, blocks up
  to 32 MiB come from the heap and up to the given amount of free memory stays there, so the
  buffers reuse memory the process already has (a third fewer page faults in the benchmark).
  The process never holds more than at its peak; it only gives memory back later.
* :func:`prefault_arenas` (the compiled ``events._native.prefault_arenas``): CPython's object
  arenas come from a pool that a background thread keeps faulted in, so the fold does not wait
  for the kernel; the waiting moves to another core (see ``events/native-decoder/src/arenas.rs``).

Neither changes what the process computes, and each is off with 0 (``TRACKERFLOW_HEAP_KEEP_MIB``,
``TRACKERFLOW_HEAP_PREFAULT_MIB``). They are a process's choice, made by the worker command,
never by importing a module.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from typing import Final, NamedTuple

from events.fast import compiled

log = logging.getLogger("trackerflow.worker")

MiB: Final = 1 << 20
M_TRIM_THRESHOLD: Final = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD: Final = -3
LARGEST_HEAP_BLOCK: Final = 32 * MiB  # the largest M_MMAP_THRESHOLD glibc takes (64-bit)
MOST_MIB: Final = 2047  # M_TRIM_THRESHOLD is a C int


class Prepared(NamedTuple):
    """What :func:`prepare` set up: MiB of freed memory kept, MiB of arenas kept faulted in
    (0: not set up, because asked for 0 or not possible here)."""

    kept_mib: int
    prefault_mib: int


def keep_freed_memory(mib: int) -> bool:
    """Serve blocks up to 32 MiB from the heap and keep up to ``mib`` MiB of free memory at its
    top; whether it did (False for 0, or where the C library is not glibc)."""
    _check(mib, "freed memory to keep")
    if mib == 0 or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, LARGEST_HEAP_BLOCK)) and bool(
        mallopt(M_TRIM_THRESHOLD, mib * MiB)
    )


def prefault_arenas(mib: int) -> bool:
    """Serve CPython's object arenas from a pool of ``mib`` MiB that a background thread keeps
    faulted in; whether it is in place (False for 0, a build without the compiled extension,
    or a thread that cannot start: logged, and the process goes on without the pool). Once per
    process: a second call changes nothing."""
    _check(mib, "arena memory to keep faulted in")
    install = compiled("prefault_arenas")
    if mib == 0 or install is None:
        return False
    try:
        install(mib)
    except RuntimeError as error:
        log.warning("object arenas are not kept faulted in: %s", error)
        return False
    return True


def prepare(keep_mib: int, prefault_mib: int) -> Prepared:
    """Both remedies, as the worker command sets them up."""
    return Prepared(
        keep_mib if keep_freed_memory(keep_mib) else 0,
        prefault_mib if prefault_arenas(prefault_mib) else 0,
    )


def _check(mib: int, what: str) -> None:
    if not 0 <= mib <= MOST_MIB:
        raise ValueError(f"{what} must be 0 to {MOST_MIB} MiB, got {mib}")

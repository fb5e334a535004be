"""Keep freed tensor memory in the process instead of returning it to the kernel.

PyTorch allocates every CPU tensor with ``malloc``. glibc serves a block of at
least its *mmap threshold* (128 KiB to start, adjusted up to 32 MiB as blocks
are freed) with a fresh ``mmap`` and unmaps it on ``free``, and it trims the
top of the heap back to the kernel once more than twice that is free there.
A training step makes and frees the same large temporaries again and again (a
catalogue's activations for a batch of users are MB to tens of MB), so each of
them arrives as untouched pages and page-faults on every 4 KiB as it is first
written. On a 2-core VM a ReLU over a 27 MB tensor took 11.5 ms with glibc's
defaults and 4.7 ms with freed memory kept. In training
(``benchmarks/results/training-paths.md``) it matters where tensors are large:
an epoch of P2's softmax meta-training made 194,000 minor page faults with the
defaults and 20 kept (4 % less time) on the hand-written path, 961,000 against
34,000 (16 % less time) on the ``torch.func`` path; the rating objective's
smaller tensors saw no difference.

:func:`keep_freed_memory` raises both thresholds with ``mallopt`` (the mmap
threshold to the 32 MiB glibc's own adjustment stops at), once per process, so
freed blocks are reused from the heap. The cost is that the process keeps its
peak memory until it exits rather than shrinking between steps; a long-running
server that keeps small objects from each request gives pages back with
:class:`HeapTrimmer`. The ``metarec``
command calls it at start (``METAREC_KEEP_FREED_MEMORY=0`` turns that off); code
using the Python API may call it too, or preload jemalloc or tcmalloc, which
PyTorch's CPU tuning guide recommends for the same reason. It does nothing, and
says so by returning False, where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
import threading
from typing import Any

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# the most glibc's own dynamic threshold reaches on 64-bit builds. Past it (1 GiB was
# asked for, which newer releases accept) blocks of every size came from the heap, and
# training whose tensors change size batch to batch (bce's sampled negatives over a
# 150,000-item catalogue) fragmented it: 34 MB more a batch, 8 GB within one epoch,
# where 32 MiB stays near glibc's defaults. Larger blocks are mapped afresh each time,
# which costs page faults only where a single tensor passes 32 MiB
_MMAP_THRESHOLD = 1 << 25
_TRIM_THRESHOLD = 1 << 30

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's ``malloc`` to keep freed memory; True when it took effect.

    Idempotent: later calls return the first call's answer without touching
    the allocator again.
    """
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


@functools.cache  # find_library runs ldconfig in a subprocess
def _glibc() -> Any | None:
    """The C library where it is glibc, else None."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # glibc only: musl's mallopt is a stub that ignores its arguments
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def _apply() -> bool:
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) != 1:
        return False
    return mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1


def resident_bytes() -> int | None:
    """This process's resident memory, or None where ``/proc`` does not tell it."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_freed_memory() -> bool:
    """Give the pages of freed heap blocks back to the kernel (glibc's ``malloc_trim``);
    False where the C library is not glibc."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim(0)
    return True


class HeapTrimmer:
    """Trims the heap once the process has grown by ``growth`` bytes since the last trim.

    Why a long-running server needs it: a request makes catalogue-sized temporaries
    (MBs on 20,000 items) and frees them, and the small tensors of the adapted user it
    keeps in its cache are then carved out of that freed space. Each kept user pins a
    hole the next request's temporaries no longer fit in, so the heap grows by about a
    request's temporaries for every user cached: 1.1 MB a user at 20,000 items, 2.7 GB
    after 2,000 users, none of it live. ``malloc_trim`` returns the holes' pages (RSS
    back to 0.5 GB there); it walks every free block, 2 to 3 ms on that heap, so it is
    run when growth calls for it, not on every request. Fixing glibc's mmap threshold
    low instead (so temporaries are mapped afresh) held memory flat too, at 50 % more
    time a request in page faults.
    """

    def __init__(self, growth: int = 256 << 20, every: int = 16) -> None:
        self.growth = growth
        self.every = every
        self._calls = 0
        self._base = resident_bytes()
        self._busy = threading.Lock()
        self.trims = 0

    def note(self) -> bool:
        """Count one kept allocation; every ``every``-th looks at the resident memory and
        trims where it has grown past ``growth``. True when it trimmed."""
        self._calls += 1  # a lost count among threads only delays a look
        if self._calls % self.every or not self._busy.acquire(blocking=False):
            return False
        try:
            now = resident_bytes()
            if now is None or self._base is None or now - self._base <= self.growth:
                if now is not None and (self._base is None or now < self._base):
                    self._base = now
                return False
            if not release_freed_memory():
                return False
            self.trims += 1
            self._base = resident_bytes()
            return True
        finally:
            self._busy.release()

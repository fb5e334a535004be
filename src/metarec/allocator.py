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
peak memory until it exits rather than shrinking between steps. The ``metarec``
command calls it at start (``METAREC_KEEP_FREED_MEMORY=0`` turns that off); code
using the Python API may call it too, or preload jemalloc or tcmalloc, which
PyTorch's CPU tuning guide recommends for the same reason. It does nothing, and
says so by returning False, where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

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


def _apply() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return False
    # glibc only: musl's mallopt is a stub that ignores its arguments
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) != 1:
        return False
    return mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1

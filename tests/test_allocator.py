"""glibc keeps freed tensor memory after keep_freed_memory: large blocks come from the heap."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys

import pytest

from metarec.allocator import keep_freed_memory

# Run in a fresh interpreter, so no earlier allocation in this process has moved
# glibc's thresholds: allocate 24 MiB then 28 MiB (glibc raises its mmap threshold to
# a freed mapping's size, so each must be larger than the last to be mapped under the
# defaults) and print how many bytes were mapped while the last one was live
# (mallinfo2's hblkhd).
_PROBE = """
import ctypes, ctypes.util
{setup}
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in "arena ordblks smblks hblks hblkhd "
                "usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = Mallinfo2
for size in (24 << 20, 28 << 20):
    block = libc.malloc(size)
    mapped = libc.mallinfo2().hblkhd
    libc.free(block)
print(mapped)
"""


def _glibc() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2) to observe the allocator")


def _mapped_bytes(setup: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(setup=setup)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout.split()[-1])


def test_large_blocks_come_from_the_heap_once_tuned() -> None:
    _glibc()
    assert _mapped_bytes("") >= 28 << 20  # glibc's default: a fresh mapping, page faults
    tuned = _mapped_bytes(
        "from metarec.allocator import keep_freed_memory\nassert keep_freed_memory()"
    )
    assert tuned < 28 << 20  # from the heap, where a freed block is reused


def test_idempotent_and_effective_on_glibc() -> None:
    first = keep_freed_memory()
    assert keep_freed_memory() is first
    if sys.platform.startswith("linux"):
        _glibc()
        assert first is True


@pytest.mark.parametrize(("env", "calls"), [(None, 1), ("0", 0)])
def test_the_cli_tunes_the_allocator_unless_told_not_to(env, calls, monkeypatch, tmp_path) -> None:
    import metarec
    import metarec.cli as cli

    assert metarec.keep_freed_memory is keep_freed_memory
    seen = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: seen.append(1) or True)
    if env is None:
        monkeypatch.delenv("METAREC_KEEP_FREED_MEMORY", raising=False)
    else:
        monkeypatch.setenv("METAREC_KEEP_FREED_MEMORY", env)
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert len(seen) == calls


# A server's pattern in a fresh interpreter: blocks of 100 KiB (a request's temporaries)
# each followed by a small one that stays (a cached user's tensors), then the large ones
# freed. The small ones pin every hole, so the freed memory stays resident until
# HeapTrimmer trims; prints the resident MiB before and after, and whether it trimmed.
_PINNED = """
import ctypes, ctypes.util
from metarec.allocator import HeapTrimmer, keep_freed_memory, resident_bytes
keep_freed_memory()  # as `metarec serve` runs: glibc's own thresholds gave freed blocks
trimmer = HeapTrimmer(growth={growth}, every=1)  # back itself in some runs, not others
base = resident_bytes()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
large, kept = [], []
for _ in range(2000):
    block = libc.malloc(100 << 10)
    ctypes.memset(block, 1, 100 << 10)  # written, so resident
    large.append(block)
    kept.append(libc.malloc(64))
for block in large:
    libc.free(block)
before = resident_bytes()
trimmed = trimmer.note()
print(base >> 20, before >> 20, resident_bytes() >> 20, trimmed, trimmer.trims)
"""


def _pinned(growth: int) -> tuple[int, int, bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PINNED.format(growth=growth)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    base, before, after, trimmed, trims = out.stdout.split()
    if int(before) - int(base) < 150:
        # glibc gave the freed blocks back by itself: nothing pinned is left to trim
        pytest.skip(f"the freed blocks were not kept resident ({before} MiB from {base})")
    return int(before), int(after), trimmed == "True", int(trims)


def test_a_heap_grown_past_its_allowance_gives_pinned_holes_back() -> None:
    _glibc()
    before, after, trimmed, trims = _pinned(growth=64 << 20)
    # 2,000 freed blocks of 100 KiB, 195 MiB, held resident by the small blocks between
    assert trimmed and trims == 1
    assert before - after > 150, (before, after)


def test_a_heap_within_its_allowance_is_left_alone() -> None:
    _glibc()
    before, after, trimmed, trims = _pinned(growth=1 << 30)
    assert not trimmed and trims == 0
    assert abs(before - after) < 20, (before, after)

"""Whether a dense item-by-item fit fits in memory, checked before it starts.

The episodic ridge and the stacked ranker solve dense linear systems over the
whole catalogue, so the memory they need grows with the square of the number of
items. Peaks measured over a fit in a fresh process
(``benchmarks/results/ranker-memory.md``; ml-100k with 1,682 items and ml-1m
with 3,883): 168 and 181 bytes per item pair for the episodic ridge with its
ratings block, 76 and 65 without it; 246 for the stacked ranker on ml-100k,
which includes its training rows (they grow with users, not items). So 10,000
items want about 18 GB for the episodic ridge alone. A catalogue too large for the memory
available (the machine's, or a container's cgroup limit where that is less) is
refused with a message that says so before any work, instead of the process
being killed half-way through a fit. The check reads the host's memory; on a GPU with less room the
episodic ridge's solve runs on the CPU instead (``EpisodicLinear._solve``). The meta-learned network
(:class:`metarec.models.meta_model.MetaModel`) and the peers grow linearly with
the catalogue and are not limited this way.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from metarec.errors import DataError

EPISODIC_BYTES_PER_PAIR = 180.0  # with the ratings block (the default grid has it)
EPISODIC_BINARY_BYTES_PER_PAIR = 80.0
STACKED_BYTES_PER_PAIR = 200.0  # the item-pair part: its ridge and signal matrices

_MEMINFO = Path("/proc/meminfo")
_SELF_CGROUP = Path("/proc/self/cgroup")
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_NO_LIMIT = 2**60  # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1


def available_bytes() -> int | None:
    """Memory a new allocation can take without swapping or the OOM killer: Linux's
    ``MemAvailable``, or less where this process's cgroup (a container's limit) has
    less room; None where neither is known (other systems)."""
    known = [b for b in (_meminfo_available(), _cgroup_room()) if b is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":  # v2's "no limit"
        return _NO_LIMIT
    return int(text) if text.isdigit() else None


def _inactive_file(path: Path, key: str) -> int:
    """Page cache the kernel would drop before it killed anything."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_room() -> int | None:
    """Room under this process's memory cgroup (v2 or v1): the least, over the
    cgroup and each parent up to the mount's root, of its limit less its usage
    (less reclaimable page cache); None where no folder on the way has a limit.
    A container with its own cgroup namespace sees its cgroup at the root."""
    try:
        lines = _SELF_CGROUP.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, where = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # v2
            base, files = _CGROUP_ROOT, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # v1
            base = _CGROUP_ROOT / "memory"
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        parts = PurePosixPath(where.strip()).parts[1:]  # without the leading "/"
        rooms = []
        for depth in range(len(parts), -1, -1):
            d = base.joinpath(*parts[:depth])
            limit, usage = _read_int(d / files[0]), _read_int(d / files[1])
            if limit is None or usage is None or limit >= _NO_LIMIT:
                continue
            used = usage - _inactive_file(d / "memory.stat", files[2])
            rooms.append(max(limit - max(used, 0), 0))
        if rooms:
            return min(rooms)
    return None


def require_memory(name: str, n_items: int, bytes_per_pair: float) -> None:
    """Raise :class:`DataError` when ``n_items`` need more memory than is available."""
    need = bytes_per_pair * float(n_items) ** 2
    have = available_bytes()
    if have is None or need <= have:
        return
    gib = 2.0**30
    fits = int((have / bytes_per_pair) ** 0.5)
    raise DataError(
        f"{name}: {n_items:,} items need about {need / gib:.1f} GiB for its dense "
        f"item-by-item fit (it grows with the square of the catalogue), and this "
        f"machine has {have / gib:.1f} GiB available, enough for about {fits:,} items. "
        # written as a value can be pasted (10730, not 10,730); at that many the fit
        # takes all the memory there is, so the rest of the process wants fewer
        f"Fit it on the most rated items only (the option max_items={fits} or fewer, as "
        "that many take all of it; "
        "the rest of the catalogue is then ranked by popularity below them), on a "
        "machine with more memory, or use the meta-learned network (MetaModel), "
        "whose memory grows linearly with the catalogue."
    )

"""Whether a dense item-by-item fit fits in memory, checked before it starts.

The episodic ridge and the stacked ranker solve dense linear systems over the
whole catalogue, so the memory they need grows with the square of the number of
items. Measured peaks over a fresh process (``ru_maxrss``; ml-100k with 1,682
items and ml-1m with 3,883): about 180 bytes per item pair for the episodic
ridge with its ratings block, 65 without it; the stacked ranker, which fits
such a ridge for each cross-fitting part, 285 on ml-100k, of which about 80 were
its training rows (which grow with users, not items). So 10,000 items want
about 18 GB for the episodic ridge alone. A catalogue too large for the machine is refused
with a message that says so before any work, instead of the process being
killed by the kernel half-way through a fit. The meta-learned network
(:class:`metarec.models.meta_model.MetaModel`) and the peers grow linearly with
the catalogue and are not limited this way.
"""

from __future__ import annotations

from pathlib import Path

from metarec.errors import DataError

EPISODIC_BYTES_PER_PAIR = 180.0  # with the ratings block (the default grid has it)
EPISODIC_BINARY_BYTES_PER_PAIR = 65.0
STACKED_BYTES_PER_PAIR = 200.0  # the item-pair part: its ridge and signal matrices

_MEMINFO = Path("/proc/meminfo")


def available_bytes() -> int | None:
    """Memory the kernel can give a new allocation without swapping (Linux's
    ``MemAvailable``); None where that is not known (other systems)."""
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def require_memory(name: str, n_items: int, bytes_per_pair: float) -> None:
    """Raise :class:`DataError` when ``n_items`` need more memory than is available."""
    need = bytes_per_pair * float(n_items) ** 2
    have = available_bytes()
    if have is None or need <= have:
        return
    gib = 2.0**30
    raise DataError(
        f"{name}: {n_items:,} items need about {need / gib:.1f} GiB for its dense "
        f"item-by-item fit (it grows with the square of the catalogue), and this "
        f"machine has {have / gib:.1f} GiB available. Fit it on fewer items (the most "
        "rated ones), on a machine with more memory, or use the meta-learned network "
        "(MetaModel), whose memory grows linearly with the catalogue."
    )

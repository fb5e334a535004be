"""How long the service's catalogue search holds its read lock, against the loop it replaced.

``GET /v1/items?q=...`` finds titles containing ``q``, most rated first. It was a
Python loop over every title in popularity order; ``Served.search`` now runs one
``str.find`` per hit over a single string of all case-folded titles. This script
times both on synthetic catalogues (random lowercase titles of 10 to 40 letters and
spaces, seeded; popularity random), for a word no title holds (the whole catalogue
is scanned), a rare one and a common one, the median of ``--repeats`` calls each,
and checks that both give the same items. No data set is read (``--data`` is taken
and ignored, as every script here takes it).

    python benchmarks/title_search.py
"""

from __future__ import annotations

import argparse
import random
import string
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _cli import add_common, positive_int, results_folder, run

from metarec.evaluation.machine import machine_info
from metarec.io import save_json, write_lines_atomic
from metarec.service.serving import Served

SIZES = (100_000, 500_000)
QUERIES = {"no title holds it": "zqxjv", "rare": "qzx", "common": "ab"}
LIMIT = 20


class Catalogue:
    """What :meth:`Served.refresh` reads of a model: titles, ids, popularity."""

    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        letters = string.ascii_lowercase + "  "
        self.titles = [
            "".join(rng.choice(letters) for _ in range(rng.randint(10, 40))) for _ in range(n)
        ]
        self.items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n)]})
        self.popularity = np.random.default_rng(seed).integers(0, 1000, n).astype(np.float64)

    def _displays(self) -> list[str]:
        return self.titles


def loop_search(served: Served, folded: list[str], q: str, limit: int) -> list[str]:
    """The search before: every case-folded title (``folded``, kept beside the titles),
    in popularity order, until ``limit`` hits."""
    needle = q.casefold().strip()
    out: list[str] = []
    for i in served.by_popularity:
        if needle in folded[i]:
            out.append(served.item_ids[i])
            if len(out) >= limit:
                break
    return out


def median_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def measure(n: int, repeats: int) -> dict[str, dict[str, Any]]:
    where = Path("synthetic")
    served = Served(Catalogue(n, seed=0), where, "synthetic", 1, where)  # type: ignore[arg-type]
    with served.lock.write():
        served.refresh()
    folded = [t.casefold() for t in served.titles]
    out: dict[str, dict[str, Any]] = {}
    for label, q in QUERIES.items():
        new = [h["item_id"] for h in served.search(q, LIMIT)]
        if new != loop_search(served, folded, q, LIMIT):
            raise AssertionError(f"{n} titles, {q!r}: the two searches disagree")
        out[label] = {
            "query": q,
            "hits": len(new),
            "loop_ms": median_ms(partial(loop_search, served, folded, q, LIMIT), repeats),
            "find_ms": median_ms(partial(served.search, q, LIMIT), repeats),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common(parser)
    parser.add_argument("--repeats", type=positive_int, default=15, help="calls timed (15)")
    args = parser.parse_args()
    out = results_folder(args.out)
    runs = {str(n): measure(n, args.repeats) for n in SIZES}
    record = {
        "benchmark": "catalogue title search (GET /v1/items?q=)",
        "limit": LIMIT,
        "repeats": args.repeats,
        "runs": runs,
        "machine": machine_info(),
        "command": "python benchmarks/title_search.py"
        + (f" --repeats {args.repeats}" if args.repeats != 15 else ""),
    }
    save_json(out / "title-search.json", record)
    lines = [
        "# Catalogue title search: one str.find per hit against the loop over every title",
        "",
        f"Reproduce: `{record['command']}`. Median of {args.repeats} calls, ms, "
        f"limit {LIMIT}; synthetic titles (seed 0); both searches give the same items.",
        "",
        "| titles | query | hits | loop ms | str.find ms | × |",
        "|---|---|---|---|---|---|",
    ]
    for n, per in runs.items():
        for label, r in per.items():
            lines.append(
                f"| {int(n):,} | {label} (`{r['query']}`) | {r['hits']} | {r['loop_ms']:.2f} | "
                f"{r['find_ms']:.2f} | {r['loop_ms'] / max(r['find_ms'], 1e-9):.1f} |"
            )
    write_lines_atomic(out / "title-search.md", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    run(main)

"""Run a benchmark with each significance comparison made under a former Wilcoxon rule
and the current one.

Until 2026-12-06 ``paired_wilcoxon`` passed tied users to scipy, whose "auto" method
then chose between the exact test and the normal approximation by the count with the
ties, and it counted differences of rounding as real (``--former 2026-12-06``, the
default). Until 2026-12-07 it dropped those ties but ranked differences equal but for
rounding (0.6 − 0.4 against 0.6 − 0.8) apart (``--former 2026-12-07``). Later that day
it still took scipy's normal approximation for 14 to 200 tied differences, where it now
takes their exact distribution (``--former tied-normal``). This runs
``metarec ARGS`` with every ``compare_to_peers`` computed twice, under that rule and the
current one, on the same per-user values, writes one JSON line a comparison to
``--log`` (the counts of users and of non-zero differences, both p-values and both
significance marks), and returns the current rule's results, so the record written
is the current code's.

    python benchmarks/maintenance/wilcoxon_rules_side_by_side.py --log p1-comparisons.jsonl \\
        [--former 2026-12-07] benchmark --protocol p1 --dataset ml-1m --data ../shared/data \\
        --out /tmp/p1

Its output at 3267297 (the default rule) is ``benchmarks/results/wilcoxon-rules-3267297/``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

import metarec.evaluation.benchmark as benchmark
import metarec.evaluation.stats as stats
from metarec.cli import main

CURRENT = stats.paired_wilcoxon
COMPARE = stats.compare_to_peers


def former_wilcoxon(a: Sequence[float], b: Sequence[float]) -> stats.WilcoxonResult:
    """The rule before 2026-12-06: every pair handed to scipy, ties included."""
    diff = stats._paired(a, b, "paired_wilcoxon")
    if len(diff) == 0:
        return stats.WilcoxonResult(float("nan"), float("nan"), 0)
    if not np.any(diff != 0):
        return stats.WilcoxonResult(0.0, 1.0, len(diff))
    res = wilcoxon(diff, alternative="two-sided")
    return stats.WilcoxonResult(float(res.statistic), float(res.pvalue), len(diff))


def unsnapped_wilcoxon(a: Sequence[float], b: Sequence[float]) -> stats.WilcoxonResult:
    """The rule before 2026-12-07: ties of rounding dropped, the rest ranked as they are."""
    x, y = stats._finite_pairs(a, b, "paired_wilcoxon")
    diff = x - y
    if len(diff) == 0:
        return stats.WilcoxonResult(float("nan"), float("nan"), 0)
    scale = np.maximum(np.maximum(np.abs(x), np.abs(y)), 1.0)
    nonzero = diff[np.abs(diff) > stats.TIE_TOLERANCE * scale]
    if len(nonzero) == 0:
        return stats.WilcoxonResult(0.0, 1.0, len(diff))
    res = wilcoxon(nonzero, alternative="two-sided")
    return stats.WilcoxonResult(float(res.statistic), float(res.pvalue), len(diff))


def normal_tied_wilcoxon(a: Sequence[float], b: Sequence[float]) -> stats.WilcoxonResult:
    """The rule until the exact tied distribution came (committed 2026-12-07): ties of
    rounding snapped, and 14 to 200 tied differences left to scipy's normal
    approximation."""
    saved = stats.EXACT_TIED_MAX
    stats.EXACT_TIED_MAX = 13  # up to 13, scipy's permutation test: the same p
    try:
        return CURRENT(a, b)
    finally:
        stats.EXACT_TIED_MAX = saved


FORMER = {
    "2026-12-06": former_wilcoxon,
    "2026-12-07": unsnapped_wilcoxon,
    "tied-normal": normal_tied_wilcoxon,
}


def side_by_side(log: Path, former: Any = former_wilcoxon) -> Any:
    def compare(
        per_user: Mapping[str, Sequence[float]], model: str, peers: Sequence[str], *args: Any,
        **kwargs: Any,
    ) -> dict[str, dict[str, Any]]:  # fmt: skip
        stats.paired_wilcoxon = former
        try:
            old = COMPARE(per_user, model, peers, *args, **kwargs)
        finally:
            stats.paired_wilcoxon = CURRENT
        new = COMPARE(per_user, model, peers, *args, **kwargs)
        with log.open("a", encoding="utf-8") as fh:
            for peer in new:
                d = np.asarray(per_user[model], float) - np.asarray(per_user[peer], float)
                d = d[np.isfinite(d)]
                row = {
                    "model": model, "peer": peer, "n": len(d), "nonzero": int((d != 0).sum()),
                    "p_old": old[peer]["p"], "p_new": new[peer]["p"],
                    "sig_old": old[peer]["significant"], "sig_new": new[peer]["significant"],
                    "better": new[peer]["better"],
                }  # fmt: skip
                fh.write(json.dumps(row) + "\n")
        return new

    return compare


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 3 or args[0] != "--log":
        print(
            "usage: wilcoxon_rules_side_by_side.py --log FILE [--former DATE] METAREC_ARGS...",
            file=sys.stderr,
        )
        sys.exit(2)
    log, args = Path(args[1]), args[2:]
    rule = former_wilcoxon
    if args[:1] == ["--former"]:
        if len(args) < 2 or args[1] not in FORMER:
            print(f"--former: expected one of {sorted(FORMER)}", file=sys.stderr)
            sys.exit(2)
        rule, args = FORMER[args[1]], args[2:]
    benchmark.compare_to_peers = side_by_side(log, rule)
    sys.exit(main(args))

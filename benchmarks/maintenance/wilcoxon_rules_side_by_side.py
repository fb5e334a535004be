"""Run a benchmark with each significance comparison made under both Wilcoxon rules.

Until 2026-12-06 ``paired_wilcoxon`` passed tied users to scipy, whose "auto" method
then chose between the exact test and the normal approximation by the count with the
ties, and it counted differences of rounding as real. This runs ``metarec ARGS`` with
every ``compare_to_peers`` computed twice, under that rule and the current one, on
the same per-user values, writes one JSON line a comparison to ``--log`` (the users,
the non-zero differences, both p-values and both significance marks), and returns the
current rule's results, so the record written is the current code's.

    python benchmarks/maintenance/wilcoxon_rules_side_by_side.py --log p1-comparisons.jsonl \\
        benchmark --protocol p1 --dataset ml-1m --data ../shared/data --out /tmp/p1

Its output at 3267297 is ``benchmarks/results/wilcoxon-rules-3267297/``.
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


def side_by_side(log: Path) -> Any:
    def compare(
        per_user: Mapping[str, Sequence[float]], model: str, peers: Sequence[str], *args: Any,
        **kwargs: Any,
    ) -> dict[str, dict[str, Any]]:  # fmt: skip
        stats.paired_wilcoxon = former_wilcoxon
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
        print("usage: wilcoxon_rules_side_by_side.py --log FILE METAREC_ARGS...", file=sys.stderr)
        sys.exit(2)
    benchmark.compare_to_peers = side_by_side(Path(args[1]))
    sys.exit(main(args[2:]))

"""Re-judge the significance marks of committed P1/P2 records by the current rule.

A benchmark's reference model is the best metarec model on the test users, picked
from several; since 2026-12-04 its Holm p-values are also multiplied by their number
before they are judged (``compare_to_peers(chosen_from=...)``), and P1's warm state,
scored on the users that tuned the models, gets no tests. Records written before
that carry only ``p_holm``; this script adds ``reference_chosen_from`` and each
comparison's ``p_choice``, sets ``significant`` from it, empties the warm state's
tests, and renders each record's Markdown again. The p-values, means and intervals
are not touched; running it twice changes nothing.

    python benchmarks/maintenance/rejudge_significance.py [benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from metarec.evaluation.benchmark import (
    P1_HEADLINE,
    P2_HEADLINE,
    is_tested,
    metarec_candidates,
)
from metarec.evaluation.report import render_markdown
from metarec.evaluation.stats import choice_p
from metarec.io import json_bytes, jsonable, write_bytes_atomic

ALPHA = 0.05


def rejudge(record: dict[str, Any]) -> dict[str, Any]:
    """The record with the current rule's marks (a new dict; ``record`` is kept)."""
    metric = (P1_HEADLINE if record["protocol"] == "p1" else P2_HEADLINE)[0][0]
    # not counting what the run left out of the choice (an ensemble that was a peer
    # alone for the group's users: reference_excluded, from 2026-12-07)
    left = record.get("reference_excluded") or {}
    chosen_from = {
        group: len(
            metarec_candidates(
                {m: v for m, v in by_model.items() if m not in left.get(group, [])}, metric
            )
        )
        for group, by_model in record["summary"].items()
    }
    significance: dict[str, Any] = {}
    for group, by_metric in record["significance"].items():
        if not is_tested(record["protocol"], group):
            significance[group] = {}
            continue
        significance[group] = {
            m: {
                peer: {
                    **comp,
                    "p_choice": (p := choice_p(comp["p_holm"], chosen_from[group])),
                    "significant": bool(p < ALPHA),
                }
                for peer, comp in by_peer.items()
            }
            for m, by_peer in by_metric.items()
        }
    out: dict[str, Any] = {}
    for key, value in record.items():  # the new field beside the reference it qualifies
        if key == "reference_chosen_from":
            continue
        out[key] = significance if key == "significance" else value
        if key == "reference":
            out["reference_chosen_from"] = chosen_from
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    results = Path(__file__).resolve().parents[1] / "results"
    ap.add_argument("folder", nargs="?", type=Path, default=results)
    args = ap.parse_args()
    for path in sorted(args.folder.rglob("*.json")):
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or record.get("protocol") not in ("p1", "p2"):
            continue
        if "significance" not in record or "reference" not in record:
            continue
        new = rejudge(record)
        md = path.with_suffix(".md")
        write_bytes_atomic(path, json_bytes(jsonable(new), strict=True))
        if md.is_file():
            write_bytes_atomic(md, render_markdown(new).encode())
        flipped = [
            f"{g} {m} {peer}"
            for g, by_metric in new["significance"].items()
            for m, by_peer in by_metric.items()
            for peer, comp in by_peer.items()
            if comp["significant"]
            != record["significance"].get(g, {}).get(m, {}).get(peer, {}).get("significant")
        ]
        print(f"{path}: {len(flipped)} mark(s) changed" + (f": {flipped}" if flipped else ""))


if __name__ == "__main__":
    main()

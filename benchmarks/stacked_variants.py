"""Stacked-ranker variants on protocol P2's *validation* users, never its test users.

For each of the 5 P2 folds of ml-100k (seed 0) a :class:`StackedRanker` with the
given options is fitted on the fold's training users, and it and popularity rank
the catalogue for the fold's validation users at K = 1, 3, 5, 10 and 20. The
figure of merit is the mean nDCG@10 over folds divided by popularity's. This is
how the README's "variants tried" were compared; one tree bag (``{"bags": 1}``)
makes a comparison take about 9 minutes on 2 cores instead of about 25.

The folds are drawn as the code now draws them; ``--splits benchmarks/results``
uses the committed split files instead (the validation users as drawn before
2026-11-30, which overlapped across folds; see the README). Each run is added to
``benchmarks/results/stacked-variants.json`` under its name, and the table in
``stacked-variants.md`` is rewritten from all of them.

    python benchmarks/stacked_variants.py base-1bag '{"bags": 1}' --data ../shared/data
    python benchmarks/stacked_variants.py logloss-1bag '{"bags": 1, "objective": "logloss"}'
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _cli import add_common, data_folder, results_folder
from _cli import run as cli_run

from metarec.data import load_dataset
from metarec.evaluation.machine import machine_info
from metarec.evaluation.p2 import evaluate_p2, make_p2_split
from metarec.evaluation.splits import load_split
from metarec.io import load_json, save_json, write_lines_atomic
from metarec.models.base import TrainingData
from metarec.models.stacked import StackedRanker
from metarec.peers.popularity import Popularity
from metarec.pipeline import encode_catalogue

SHOTS = (1, 3, 5, 10, 20)
FOLDS = 5


def run(options: dict[str, Any], data_root: str | None, splits: str | None) -> dict[str, Any]:
    ds = load_dataset("ml-100k", root=data_root)
    catalogue = encode_catalogue(ds.items, "minilm", progress=False)
    folds: dict[str, Any] = {}
    for fold in range(FOLDS):
        split = (
            load_split("p2", ds, splits, fold=fold, n_folds=FOLDS)
            if splits
            else make_p2_split(ds, seed=0, n_folds=FOLDS, fold=fold)
        )
        data = TrainingData.from_split(split.frames, catalogue, ds, 0)
        t0 = time.perf_counter()
        model = StackedRanker(seed=0, **options).fit(data)
        fit_s = time.perf_counter() - t0
        models = {"stacked": model, "popularity": Popularity(seed=0).fit(data)}
        res = evaluate_p2(
            models, split.frames["validation"], catalogue.index, ds.users, shots=SHOTS
        )
        folds[str(fold)] = {
            "fit_s": fit_s,
            "ndcg@10": {
                str(k): {m: res["summary"][str(k)][m]["ndcg@10"] for m in models} for k in SHOTS
            },
        }
        print(f"fold {fold}: fitted in {fit_s:.0f} s", flush=True)
    ratio = {}
    for k in map(str, SHOTS):
        ours = np.mean([f["ndcg@10"][k]["stacked"] for f in folds.values()])
        pop = np.mean([f["ndcg@10"][k]["popularity"] for f in folds.values()])
        ratio[k] = float(ours / pop)
    return {
        "options": options,
        "splits": splits or "drawn",
        "folds": folds,
        "ratio": ratio,
        "git_commit": machine_info().get("git_commit"),
    }


def write_table(runs: dict[str, Any], path: Path) -> None:
    head = "| variant | options | validation users | " + " | ".join(f"K={k}" for k in SHOTS)
    lines = [
        "# Stacked-ranker variants on P2's validation users (ml-100k, 5 folds)",
        "",
        "Mean nDCG@10 over folds divided by popularity's, on each fold's validation users",
        "(never its test users). `benchmarks/stacked_variants.py` writes this table.",
        "",
        head + " |",
        "|---|---|---|" + "---|" * len(SHOTS),
    ]
    for name, r in runs.items():
        cells = " | ".join(f"{r['ratio'][str(k)]:.3f}" for k in SHOTS)
        users = "as now drawn" if r["splits"] == "drawn" else f"split files in {r['splits']}"
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"| {name}{note} | `{json.dumps(r['options'])}` | {users} | {cells} |")
    write_lines_atomic(path, lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("options", nargs="?", default="{}", help="StackedRanker options as JSON")
    add_common(p)
    p.add_argument("--splits", type=data_folder, help="read the fold splits from this folder")
    args = p.parse_args()
    out = results_folder(args.out)
    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as exc:
        p.error(f"options: not JSON ({exc.msg}): {args.options!r}")
    if not isinstance(options, dict):
        p.error(f"options: expected a JSON object of StackedRanker options, got {args.options!r}")
    known = set(inspect.signature(StackedRanker).parameters) - {"seed", "name", "progress"}
    unknown = sorted(set(options) - known)
    if unknown:
        p.error(f"options: {unknown} are not StackedRanker options; known: {sorted(known)}")
    record = run(options, args.data, args.splits)
    path = out / "stacked-variants.json"
    runs = load_json(path) if path.exists() else {}
    runs[args.name] = record
    save_json(path, runs)
    write_table(runs, out / "stacked-variants.md")
    print(json.dumps(record["ratio"]))


if __name__ == "__main__":
    cli_run(main)

"""How far a new user's first ratings move their list, by training objective.

P1 and P2 score a model; this asks what a user sees. Three runs are trained through
the Python API (seed 0) on MovieLens 100K's users outside P2's test users (P2's split,
seed 0): the rating objective on P1's users alone (13 to 100 ratings), the rating
objective on them all, and the softmax objective as P2 trains it; the fourth is
``metarec quickstart``'s own run (P1's split of ml-100k, which also holds out P1's new
users and new items, so some test users here are among its training users).
Each test user is then adapted to their first ``--support`` ratings by time, and the
whole catalogue is scored, beside the same run's zero-shot scores (no ratings at
all). Per user:

* the Spearman correlation of the two score vectors over the catalogue (1: the
  ratings changed no item's place);
* how many of the zero-shot top 10 stay in the user's top 10, both lists without
  the items the user rated (10: the same list as for everyone).

    python benchmarks/personalisation.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _cli import add_common, positive_int, results_folder, run
from scipy.stats import spearmanr

import metarec as mr
from metarec.data import load_dataset
from metarec.evaluation.benchmark import P2_OVERRIDES
from metarec.evaluation.machine import machine_info
from metarec.evaluation.p2 import make_p2_split
from metarec.io import save_json, write_lines_atomic

DATASET = "ml-100k"
# (name, overrides, whether the run trains on P1's users alone: 13 to 100 ratings, as
# `metarec train` and quickstart's run do, where the others take every training user)
RUNS: tuple[tuple[str, list[str], bool], ...] = (
    ("rating, P1's users (13 to 100 ratings)", [], True),
    ("rating, every training user", [], False),
    ("softmax, P2's configuration", list(P2_OVERRIDES), False),
)


def top10(scores: np.ndarray, seen: np.ndarray) -> set[int]:
    masked = scores.astype(np.float64).copy()
    masked[seen] = -np.inf
    return set(np.argsort(-masked, kind="stable")[:10].tolist())


def measure(rec: mr.Recommender, test: Any, support: int) -> dict[str, Any]:
    zero = np.asarray(rec.score(rec.adapt([])))
    rhos, kept = [], []
    for _, rows in test.sort_values(["user_id", "timestamp"]).groupby("user_id", sort=True):
        first = rows.head(support)
        state = rec.adapt(list(zip(first["item_id"], first["rating"], strict=True)))
        scores = np.asarray(rec.score(state))
        seen = np.array([rec.resolve(i) for i in first["item_id"]])
        rhos.append(float(spearmanr(zero, scores).statistic))
        kept.append(len(top10(zero, seen) & top10(scores, seen)))
    return {
        "users": len(rhos),
        "spearman_mean": float(np.mean(rhos)),
        "spearman_min": float(np.min(rhos)),
        "top10_kept_mean": float(np.mean(kept)),
        "same_top10_share": float(np.mean(np.array(kept) == 10)),
    }


def write(rows: dict[str, dict[str, Any]], support: int, out: Path) -> None:
    machine = machine_info()
    save_json(
        out / "personalisation.json",
        {"dataset": DATASET, "support": support, "objectives": rows, "machine": machine},
    )
    lines = [
        f"# How far a new user's first {support} ratings move their list ({DATASET})",
        "",
        f"Machine: {machine.get('cpu', '?')}; commit {machine.get('git_commit', '?')}. "
        "First-order MAML, seed 0, MiniLM, trained on the users outside P2's test users "
        "(seed 0); those test users adapted to their first "
        f"{support} ratings by time, against the run's zero-shot scores. The last run is "
        "`metarec quickstart`'s own: P1's split of ml-100k, whose training users include "
        "some of these test users.",
        "Reproduce: `python benchmarks/personalisation.py --data ../shared/data`.",
        "",
        "| run | users | Spearman, mean | Spearman, lowest | zero-shot top 10 kept, "
        "mean | lists the same as zero-shot | s, training and measuring |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['users']} | {r['spearman_mean']:.5f} | {r['spearman_min']:.5f} "
            f"| {r['top10_kept_mean']:.1f} | {r['same_top10_share']:.0%} | {r['seconds']:.0f} |"
        )
    write_lines_atomic(out / "personalisation.md", lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(p)
    p.add_argument("--support", type=positive_int, default=10, help="ratings a user gives")
    args = p.parse_args()
    out = results_folder(args.out)
    ds = load_dataset(DATASET, root=args.data)
    split = make_p2_split(ds, seed=0)
    test = split.frames["test"]
    inter = ds.interactions[~ds.interactions["user_id"].isin(test["user_id"])]
    counts = inter["user_id"].map(inter["user_id"].value_counts())
    rows: dict[str, dict[str, Any]] = {}
    for name, overrides, p1_users in RUNS:
        kept = inter[counts.between(13, 100)] if p1_users else inter
        trained = replace(ds, interactions=kept.reset_index(drop=True))
        cfg = mr.TrainConfig(seed=0).with_overrides(overrides)
        t0 = time.perf_counter()
        rec = mr.train(trained, cfg)
        rows[name] = {**measure(rec, test, args.support), "seconds": time.perf_counter() - t0}
        print(name, rows[name], flush=True)
        write(rows, args.support, out)
    # the run a new user meets first: quickstart's own (P1's split, its new items out)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        data = str(Path(args.data or ".").resolve())  # the command runs in another folder
        cmd = [sys.executable, "-m", "metarec", "quickstart", "--data", data]
        subprocess.run(cmd, cwd=tmp, check=True, capture_output=True, text=True)
        rec = mr.Recommender.load(Path(tmp) / "runs" / "quickstart")
        name = "quickstart's run (`metarec quickstart`)"
        rows[name] = {**measure(rec, test, args.support), "seconds": time.perf_counter() - t0}
    print(name, rows[name], flush=True)
    write(rows, args.support, out)


if __name__ == "__main__":
    run(main)

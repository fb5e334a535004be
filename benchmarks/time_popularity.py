"""Would popularity *at the time the user arrived* beat global popularity on P2?

A hypothesis for P2's K = 1, where every metarec model ties popularity: the
support's timestamp says when a new user arrived, and ml-100k's seven months
of ratings follow the releases of late 1997, so the items popular among
training users *up to that moment* might be a better prior than the items
popular over the whole log. This script scores that prior on P2's test users
(the committed single split and its five folds), with popularity counted
causally — only training users' likes (rating >= 4) made at or before the
user's last support rating:

* ``global``: every training like (P2's popularity peer);
* ``trailing 30 / 90 days``: likes in the window before the support's time;
* ``decay 60 days``: every earlier like, weighted exp(-age / 60 days).

Ties are broken by global popularity (and it by how often an item was rated,
as the peer does). nDCG@10 (binary gain), support items
excluded, mean over test users with a liked query item, as P2 scores models.
The answer (``benchmarks/results/time-popularity.md``): no. Each time-aware
prior is below global popularity on the split and on every fold at every K,
so no such signal was added to the models.

    python benchmarks/time_popularity.py --data ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _cli import add_common, results_folder, run

from metarec.data import load_dataset
from metarec.data.tasks import liked_query_items
from metarec.evaluation.machine import machine_info
from metarec.evaluation.metrics import ranking_table
from metarec.evaluation.p2 import P2Split, shot_tasks
from metarec.io import save_json, write_lines_atomic

RESULTS = Path(__file__).parent / "results"
SHOTS = (1, 3, 5, 10)
DAY = 86_400.0
LIKE = 4.0
VARIANTS = ("global", "trailing 30 days", "trailing 90 days", "decay 60 days")


def _variant_scores(
    name: str, t: float, like_t: np.ndarray, like_row: np.ndarray, n_items: int, glob: np.ndarray
) -> np.ndarray:
    if name == "global":
        return glob
    if name.startswith("trailing"):
        days = float(name.split()[1])
        weight = ((like_t <= t) & (like_t > t - days * DAY)).astype(np.float64)
    else:
        age = (t - like_t) / DAY
        weight = np.where(like_t <= t, np.exp(-np.clip(age, 0, None) / 60.0), 0.0)
    return np.bincount(like_row, weights=weight, minlength=n_items) + 1e-4 * glob


def split_ndcg(split: P2Split, index: dict[str, int]) -> dict[str, dict[str, float]]:
    """Mean nDCG@10 of each prior at each K on ``split``'s test users."""
    n_items = len(index)
    train, test = split.frames["train"], split.frames["test"]
    likes = train[train["rating"] >= LIKE]
    like_row = likes["item_id"].astype(str).map(index).to_numpy()
    like_t = likes["timestamp"].to_numpy(dtype=np.float64)
    rated = train["item_id"].astype(str).map(index).to_numpy()
    # the popularity peer's order: likes, ties broken by how often the item was rated
    glob = np.bincount(like_row, minlength=n_items) + 1e-6 * np.bincount(rated, minlength=n_items)
    times = test.sort_values("timestamp", kind="stable").groupby("user_id")["timestamp"]
    out: dict[str, dict[str, float]] = {}
    for k in SHOTS:
        tasks, users = shot_tasks(test, index, k)
        relevant = liked_query_items(tasks, LIKE)
        # when the user's K-th rating was made (the same whatever order ties take)
        arrived = [float(times.get_group(u).iloc[k - 1]) for u in users]
        row = {}
        for name in VARIANTS:
            top = []
            for task, t in zip(tasks, arrived, strict=True):
                scores = _variant_scores(name, t, like_t, like_row, n_items, glob).copy()
                scores[task.support_items] = -np.inf
                top.append(np.argsort(-scores, kind="stable")[:10])
            ndcg = ranking_table(np.stack(top), relevant, 10)["ndcg@10"]
            row[name] = float(np.nanmean(ndcg))
        out[str(k)] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common(parser)
    args = parser.parse_args()
    out = results_folder(args.out)
    ds = load_dataset("ml-100k", root=args.data)
    ids = sorted(ds.items["item_id"].astype(str))
    index = {item: i for i, item in enumerate(ids)}
    files = {"split": "p2-ml-100k-split.json"} | {
        f"fold{f}": f"p2-ml-100k-fold{f}-split.json" for f in range(5)
    }
    runs = {
        label: split_ndcg(P2Split.load(RESULTS / name, ds), index) for label, name in files.items()
    }
    record = {
        "benchmark": "time-aware popularity (P2 ml-100k)",
        "like_threshold": LIKE,
        "runs": runs,
        "machine": machine_info(),
        "command": "python benchmarks/time_popularity.py"
        + (f" --data {args.data}" if args.data else ""),
    }
    save_json(out / "time-popularity.json", record)
    lines = [
        "# P2 ml-100k: popularity up to the user's arrival against global popularity",
        "",
        f"Reproduce: `{record['command']}`. nDCG@10 on each split's test users "
        "(`split`: the committed single split; `foldN`: the 5-fold splits).",
        "",
        "| prior | K | " + " | ".join(runs) + " |",
        "|---|---" + "|---" * len(runs) + "|",
    ]
    for name in VARIANTS:
        for k in SHOTS:
            cells = " | ".join(f"{r[str(k)][name]:.4f}" for r in runs.values())
            lines.append(f"| {name} | {k} | {cells} |")
    write_lines_atomic(out / "time-popularity.md", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    run(main)

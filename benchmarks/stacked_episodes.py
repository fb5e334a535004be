"""What ``max_episodes`` costs: the stacked ranker's trees on a sample of training episodes.

The trees' training rows grow with the training users (about 300 rows an
episode, up to five episodes a user): ml-100k's P2 split gives 3,290
episodes, ml-1m's 22,500 (6.7 million rows; one bag fits in 20 minutes on 2
cores, 15 of them its trees). This fits the stacked ranker (one bag) on
ml-1m's P2 split (seed 0) with each bag's trees on a seeded sample of
``max_episodes`` episodes, and on all of them, and scores P2's held-out
users beside popularity and the episodic ridge. Rows are written as they
finish (smallest sample first), so an interrupted run keeps what it measured.

    python benchmarks/stacked_episodes.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _cli import add_common, results_folder, run

from metarec.data import load_dataset
from metarec.evaluation.machine import machine_info
from metarec.evaluation.p2 import SHOTS, evaluate_p2, make_p2_split
from metarec.io import save_json, write_lines_atomic
from metarec.models.base import ScoringModel, TrainingData
from metarec.models.episodic import EpisodicLinear
from metarec.models.stacked import StackedRanker
from metarec.peers import make_peer
from metarec.pipeline import encode_catalogue

DATASET = "ml-1m"
CAPS: tuple[int | None, ...] = (2500, 5000, 10000, None)


def write(
    rows: list[dict[str, Any]], baselines: dict[str, dict[str, float]], n_users: int, out: Path
) -> None:
    machine = machine_info()
    record = {"dataset": DATASET, "n_test_users": n_users, "runs": rows, "baselines": baselines}
    save_json(out / "stacked-episodes.json", {**record, "machine": machine})
    shots = [str(k) for k in SHOTS]
    lines = [
        f"# What `max_episodes` costs (P2 on {DATASET}, held-out users, nDCG@10)",
        "",
        f"Machine: {machine.get('cpu', '?')}; commit {machine.get('git_commit', '?')}. "
        f"P2's split (seed 0, {n_users:,} test users); the stacked ranker with one bag, "
        "its trees trained on a seeded sample of `max_episodes` training episodes "
        "(all: every episode).",
        "Reproduce: `python benchmarks/stacked_episodes.py --data ../shared/data`.",
        "",
        "| model | episodes | tree rows | fit s | "
        + " | ".join(f"K={k}" for k in shots)
        + " | × popularity at K=10 |",
        "|---|---|---|---|" + "---|" * len(shots) + "---|",
    ]
    pop10 = baselines["popularity"]["10"]
    for r in rows:
        cells = " | ".join(f"{r['ndcg@10'][k]:.4f}" for k in shots)
        cap = "all" if r["max_episodes"] is None else f"{r['max_episodes']:,}"
        lines.append(
            f"| stacked, 1 bag | {cap} | {r['training_rows']:,} | {r['fit_s']:.0f} | "
            f"{cells} | {r['ndcg@10']['10'] / pop10:.3f} |"
        )
    for name, res in baselines.items():
        cells = " | ".join(f"{res[k]:.4f}" for k in shots)
        lines.append(f"| {name} | | | | {cells} | {res['10'] / pop10:.3f} |")
    write_lines_atomic(out / "stacked-episodes.md", lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(p)
    args = p.parse_args()
    out = results_folder(args.out)
    ds = load_dataset(DATASET, root=args.data)
    catalogue = encode_catalogue(ds.items, "minilm", progress=False)
    split = make_p2_split(ds, seed=0)
    data = TrainingData.from_split(split.frames, catalogue, ds, 0)
    test = split.frames["test"]

    def ndcg(model: ScoringModel) -> dict[str, float]:
        res = evaluate_p2({"m": model}, test, catalogue.index, ds.users)["summary"]
        return {k: res[k]["m"]["ndcg@10"] for k in res}

    baselines = {
        "popularity": ndcg(make_peer("popularity", seed=0).fit(data)),
        "episodic": ndcg(EpisodicLinear(seed=0).fit(data)),
    }
    rows: list[dict[str, Any]] = []
    for cap in CAPS:
        model = StackedRanker(seed=0, bags=1, max_episodes=cap, progress=True)
        t0 = time.perf_counter()
        model.fit(data)
        fit_s = time.perf_counter() - t0
        rows.append(
            {
                "max_episodes": cap,
                "training_rows": model.n_rows,
                "fit_s": fit_s,
                "ndcg@10": ndcg(model),
            }
        )
        print(rows[-1], flush=True)
        write(rows, baselines, test["user_id"].nunique(), out)


if __name__ == "__main__":
    run(main)

"""What ``max_items`` costs: the dense item-by-item rankers fitted on the most rated items only.

The episodic ridge and the stacked ranker need memory that grows with the
square of the items they are fitted on (``ranker-memory.md``), so a large
catalogue is fitted on its ``max_items`` most rated items and the rest is
ranked by popularity below them (:mod:`metarec.models.universe`). This runs
P2 (seed 0: the README's split; the held-out users, every K) with the whole
catalogue and with smaller universes, beside popularity, on ml-100k
(episodic ridge and stacked ranker, the latter with one bag of trees to keep
the run short) and on ml-1m (episodic ridge). One process, one split, so
the rows differ only by ``max_items``.

    python benchmarks/capped_rankers.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _cli import add_common, results_folder, run

from metarec.data import load_dataset
from metarec.evaluation.machine import machine_info
from metarec.evaluation.p2 import SHOTS, evaluate_p2, make_p2_split
from metarec.io import save_json, write_lines_atomic
from metarec.models.base import ScoringModel, TrainingData
from metarec.models.episodic import EpisodicLinear
from metarec.models.memory import EPISODIC_BYTES_PER_PAIR, STACKED_BYTES_PER_PAIR
from metarec.models.stacked import StackedRanker
from metarec.peers import make_peer
from metarec.pipeline import encode_catalogue

# (dataset, model, caps); None is the whole catalogue
RUNS: tuple[tuple[str, str, tuple[int | None, ...]], ...] = (
    ("ml-100k", "episodic", (None, 1000, 500, 250)),
    ("ml-100k", "stacked-1bag", (None, 1000, 500, 250)),
    ("ml-1m", "episodic", (None, 2000, 1000, 500)),
)
ALLOWANCE = {"episodic": EPISODIC_BYTES_PER_PAIR, "stacked-1bag": STACKED_BYTES_PER_PAIR}


def build(model: str, cap: int | None) -> ScoringModel:
    if model == "episodic":
        return EpisodicLinear(seed=0, max_items=cap)
    return StackedRanker(seed=0, bags=1, max_items=cap, progress=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(p)
    args = p.parse_args()
    out = results_folder(args.out)
    rows: list[dict[str, Any]] = []
    for dataset in dict.fromkeys(d for d, _, _ in RUNS):
        ds = load_dataset(dataset, root=args.data)
        catalogue = encode_catalogue(ds.items, "minilm", progress=False)
        split = make_p2_split(ds, seed=0)
        data = TrainingData.from_split(split.frames, catalogue, ds, 0)
        test = split.frames["test"]
        pop = make_peer("popularity", seed=0).fit(data)
        baseline = evaluate_p2({"popularity": pop}, test, catalogue.index, ds.users)["summary"]
        for d, model, caps in RUNS:
            if d != dataset:
                continue
            for cap in caps:
                fitted = build(model, cap)
                t0 = time.perf_counter()
                fitted.fit(data)
                fit_s = time.perf_counter() - t0
                scored = evaluate_p2({"m": fitted}, test, catalogue.index, ds.users)
                res = scored["summary"]
                items = cap if cap is not None and cap < data.n_items else data.n_items
                row = {
                    "dataset": dataset,
                    "model": model,
                    "max_items": cap,
                    "items_fitted": items,
                    "catalogue": data.n_items,
                    "fit_s": fit_s,
                    "memory_allowance_gb": ALLOWANCE[model] * items**2 / 1e9,
                    "ndcg@10": {k: res[k]["m"]["ndcg@10"] for k in res},
                    "popularity_ndcg@10": {k: baseline[k]["popularity"]["ndcg@10"] for k in res},
                    "users": {k: scored["n_users"][k] for k in res},
                }
                print(row, flush=True)
                rows.append(row)
    machine = machine_info()
    # every fit, split and draw above is seeded 0
    record = {"runs": rows, "seed": 0, "machine": machine}
    save_json(out / "capped-rankers.json", record)
    shots = [str(k) for k in SHOTS]
    lines = [
        "# What `max_items` costs (P2, held-out users, nDCG@10)",
        "",
        f"Machine: {machine.get('cpu', '?')}; commit {machine.get('git_commit', '?')}. "
        "P2's split (seed 0); each model fitted on the `max_items` most rated training "
        "items, the rest ranked by popularity below them. Memory: the allowance the "
        "memory check uses (bytes per item pair × items fitted²).",
        "Reproduce: `python benchmarks/capped_rankers.py --data ../shared/data`.",
        "",
        "| data | model | items fitted | fit s | memory GB | "
        + " | ".join(f"K={k}" for k in shots)
        + " | × popularity at K=10 |",
        "|---|---|---|---|---|" + "---|" * len(shots) + "---|",
    ]
    for r in rows:
        cells = " | ".join(f"{r['ndcg@10'].get(k, float('nan')):.4f}" for k in shots)
        ratio = r["ndcg@10"]["10"] / r["popularity_ndcg@10"]["10"]
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['items_fitted']:,} of {r['catalogue']:,} | "
            f"{r['fit_s']:.0f} | {r['memory_allowance_gb']:.2f} | {cells} | {ratio:.3f} |"
        )
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        first = next(r for r in rows if r["dataset"] == dataset)
        cells = " | ".join(f"{first['popularity_ndcg@10'].get(k, float('nan')):.4f}" for k in shots)
        lines.append(f"| {dataset} | popularity | | | | {cells} | 1.000 |")
    write_lines_atomic(out / "capped-rankers.md", lines)


if __name__ == "__main__":
    run(main)

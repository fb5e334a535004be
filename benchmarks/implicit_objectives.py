"""Which implicit objective personalises, and what the implicit fold-in changes.

Two measurements, first-order MAML each time, one run per setting:

* **Synthetic clicks** — 300 items in 8 categories (an item in one or two, its text
  naming them), users who each like two categories and click 20 of their items. A
  model meta-trained on 70 % of the users (10 % validate) sees a test user's first
  5 clicks and ranks the rest of the catalogue; the figure is the share of its top
  10 in the user's categories (the catalogue's own share, about 0.36, is what a
  list blind to the user gets). 300 users is the size a reviewer's runs used;
  1,500 give meta-training five times the steps.
* **P2 on MovieLens 100K, 5 folds** (the committed split files): nDCG@10 per
  support size, beside popularity.

Settings: ``softmax`` (P2's objective), ``bce`` and ``bpr``, the last two with and
without ``model.implicit_fold_in`` (one Newton step of the support's logistic loss
before the gradient steps). Everything else is P2's configuration.

    python benchmarks/implicit_objectives.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _cli import RESULTS, add_common, positive_int, results_folder, run

from metarec.data import load_dataset
from metarec.data.generic import load_table
from metarec.evaluation.benchmark import P2_OVERRIDES, run_benchmark
from metarec.evaluation.machine import machine_info
from metarec.evaluation.p2 import shot_tasks
from metarec.io import save_json, write_lines_atomic
from metarec.models.base import TrainingData
from metarec.models.meta_model import MetaModel
from metarec.pipeline import encode_catalogue

CATEGORIES = (
    "comedy", "horror", "romance", "science fiction",
    "documentary", "western", "animation", "war",
)  # fmt: skip
SETTINGS: dict[str, tuple[str, ...]] = {
    "softmax": ("objective=softmax",),
    "bce": ("objective=bce",),
    "bce + implicit fold-in": ("objective=bce", "model.implicit_fold_in=true"),
    "bpr": ("objective=bpr",),
    "bpr + implicit fold-in": ("objective=bpr", "model.implicit_fold_in=true"),
}
CLICKS_PER_USER = 20
SHOTS = 5
TOP = 10


def write_clicks(folder: Path, seed: int, n_users: int, n_items: int = 300) -> dict[str, Any]:
    """The synthetic clicks as files (ratings of 5 on 1-5 stars: every click liked)
    and each item's and user's categories."""
    rng = np.random.default_rng(seed)
    item_cats = [
        set(rng.choice(8, rng.integers(1, 3), replace=False).tolist()) for _ in range(n_items)
    ]
    user_cats, rows = {}, []
    for u in range(n_users):
        likes = set(rng.choice(8, 2, replace=False).tolist())
        user_cats[str(u)] = likes
        pool = [i for i in range(n_items) if item_cats[i] & likes]
        for t, i in enumerate(rng.choice(pool, CLICKS_PER_USER, replace=False)):
            rows.append((u, int(i), 5, t))
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv(
        folder / "clicks.csv", index=False
    )
    text = [" and ".join(CATEGORIES[c] for c in sorted(cats)) for cats in item_cats]
    pd.DataFrame(
        {"item_id": range(n_items), "title": [f"Item {i}" for i in range(n_items)], "genres": text}
    ).to_csv(folder / "items.csv", index=False)
    return {"items": {str(i): c for i, c in enumerate(item_cats)}, "users": user_cats}


def clicks_share(setting: tuple[str, ...], seed: int, n_users: int, work: Path) -> dict[str, Any]:
    import metarec as mr

    cats = write_clicks(work / f"clicks-{seed}-{n_users}", seed, n_users)
    folder = work / f"clicks-{seed}-{n_users}"
    ds = load_table(folder / "clicks.csv", folder / "items.csv", title_col="title",
                    text_cols=["genres"], rating_range=(1, 5))  # fmt: skip
    catalogue = encode_catalogue(ds.items, "minilm", progress=False)
    users = np.random.default_rng(seed).permutation(sorted(cats["users"], key=int))
    train, val, test = np.split(users, [int(0.7 * len(users)), int(0.8 * len(users))])
    frame = ds.interactions
    data = TrainingData(
        frame[frame.user_id.isin(train)], catalogue,
        validation=frame[frame.user_id.isin(val)], rating_range=(1, 5), seed=seed,
    )  # fmt: skip
    cfg = mr.TrainConfig().with_overrides([*P2_OVERRIDES, *setting, f"seed={seed}", "device=cpu"])
    start = time.perf_counter()
    model = MetaModel(cfg).fit(data)
    fit_s = time.perf_counter() - start
    tasks, ids = shot_tasks(frame[frame.user_id.isin(test)], catalogue.index, SHOTS)
    top = model.recommend(tasks, k=TOP)
    item_ids = catalogue.items["item_id"].astype(str).to_numpy()
    shares = [
        np.mean([bool(cats["items"][item_ids[j]] & cats["users"][uid]) for j in row if j >= 0])
        for row, uid in zip(top, ids, strict=True)
    ]
    blind = np.mean(
        [np.mean([bool(c & cats["users"][uid]) for c in cats["items"].values()]) for uid in ids]
    )
    return {"share": float(np.mean(shares)), "catalogue_share": float(blind),
            "test_users": len(ids), "fit_s": round(fit_s, 1)}  # fmt: skip


def p2_ndcg(setting: tuple[str, ...], data: str | None, work: Path) -> dict[str, Any]:
    ds = load_dataset("ml-100k", root=data)
    record = run_benchmark(
        "p2", ds, out=work, folds=5, algorithms=["fomaml"], peers=["popularity"],
        overrides=setting, splits=RESULTS, progress=False, plots=False, resume=False,
    )  # fmt: skip
    summary, std = record["summary"], record["std"]
    return {
        model: {k: [summary[k][model]["ndcg@10"], std[k][model]["ndcg@10"]] for k in summary}
        for model in ("metarec-fomaml", "popularity")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common(parser)
    parser.add_argument("--seeds", type=positive_int, default=3, help="synthetic seeds")
    args = parser.parse_args()
    out = results_folder(args.out)
    clicks: dict[str, dict[str, list[dict[str, Any]]]] = {}
    p2: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, setting in SETTINGS.items():
            for n_users in (300, 1500):
                runs = [clicks_share(setting, s, n_users, work) for s in range(args.seeds)]
                clicks.setdefault(name, {})[str(n_users)] = runs
                print(name, n_users, [round(r["share"], 3) for r in runs], flush=True)
            p2[name] = p2_ndcg(setting, args.data, work / name.replace(" ", "_"))
            print(name, "P2 K=10", round(p2[name]["metarec-fomaml"]["10"][0], 4), flush=True)
    record = {
        "benchmark": "implicit objectives and the implicit fold-in",
        "settings": {k: list(v) for k, v in SETTINGS.items()},
        "base": list(P2_OVERRIDES),
        "synthetic_clicks": clicks,
        "p2_ml_100k_5fold_ndcg10": p2,
        "machine": machine_info(),
        "command": "python benchmarks/implicit_objectives.py"
        + (f" --data {args.data}" if args.data else "")
        + (f" --seeds {args.seeds}" if args.seeds != 3 else ""),
    }
    save_json(out / "implicit-objectives.json", record)
    write_lines_atomic(out / "implicit-objectives.md", _markdown(record))
    print("\n".join(_markdown(record)))


def _markdown(record: dict[str, Any]) -> list[str]:
    clicks, p2 = record["synthetic_clicks"], record["p2_ml_100k_5fold_ndcg10"]
    first = next(iter(clicks.values()))
    lines = [
        "# Implicit objectives and the implicit fold-in (first-order MAML)",
        "",
        f"Reproduce: `{record['command']}`. P2's configuration (`{' '.join(record['base'])}`),",
        "then each setting's own options. One run per setting and seed.",
        "",
        f"## Synthetic clicks: share of a top {TOP} in the user's categories after {SHOTS} clicks",
        "",
        "Mean over seeds (each seed's value in brackets); a list blind to the user gets "
        + ", ".join(
            f"{np.mean([r['catalogue_share'] for r in runs]):.3f} ({n} users)"
            for n, runs in first.items()
        )
        + ".",
        "",
        "| setting | " + " | ".join(f"{n} users" for n in first) + " |",
        "|---" * (len(first) + 1) + "|",
    ]
    for name, sizes in clicks.items():
        cells = [
            f"{np.mean([r['share'] for r in runs]):.3f} ("
            + ", ".join(f"{r['share']:.2f}" for r in runs)
            + ")"
            for runs in sizes.values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    shots = list(next(iter(p2.values()))["metarec-fomaml"])
    lines += [
        "",
        "## P2 on MovieLens 100K, 5 folds: nDCG@10 (mean ± std over folds)",
        "",
        "| setting | " + " | ".join(f"K={k}" for k in shots) + " |",
        "|---" * (len(shots) + 1) + "|",
    ]
    pop = next(iter(p2.values()))["popularity"]
    cells = [f"{m:.4f} ± {s:.4f}" for m, s in pop.values()]
    lines.append("| popularity | " + " | ".join(cells) + " |")
    for name, models in p2.items():
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in models["metarec-fomaml"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    run(main)

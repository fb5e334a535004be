"""The P1 benchmark: every meta-learning algorithm, transfer and the bias model.

All models train and are scored on the same seeded split in one process, so
ratios between them hold on a noisy machine. Results go to
``<out>/p1-<dataset>.json`` (raw figures, per-user values omitted for size,
machine, seed, resolved configs, timings) and ``<out>/p1-<dataset>.md``.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from metarec.config import TrainConfig
from metarec.data.tasks import UserRatings
from metarec.evaluation.p1 import evaluate_p1, make_p1_split
from metarec.io import save_json, write_bytes_atomic
from metarec.models.bias import BiasModel

STATES = ("user_cold", "item_cold", "both_cold")


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def run_p1_benchmark(
    *,
    datasets: list[str],
    root: str | None,
    out: Path,
    algorithms: list[str],
    seed: int = 0,
    progress: bool = True,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    from metarec.data import load_dataset
    from metarec.pipeline import encode_catalogue, fit_recommender

    results: dict[str, Any] = {}
    for name in datasets:
        t0 = time.perf_counter()
        ds = load_dataset(name, root=root)
        base = TrainConfig(seed=seed).with_overrides(list(overrides or []))
        catalogue = encode_catalogue(ds.items, base.encoder, progress=progress)
        encode_s = time.perf_counter() - t0
        split = make_p1_split(ds, seed=seed)
        split.save(out / f"p1-{name}-split.json")
        index = catalogue.index
        bias = BiasModel().fit(UserRatings.from_frame(split.frames["train"], index), len(index))
        models: dict[str, Any] = {"bias": bias}
        configs: dict[str, Any] = {}
        timings: dict[str, float] = {"load_and_encode_s": encode_s}
        for algo in algorithms:
            cfg = base.with_overrides([f"algorithm={algo}"])
            t1 = time.perf_counter()
            rec, history = fit_recommender(
                catalogue,
                split.frames["train"],
                cfg,
                users=ds.users,
                validation=split.frames["validation"],
                rating_range=ds.rating_range,
                progress=progress,
            )
            timings[f"train_{algo}_s"] = time.perf_counter() - t1
            configs[algo] = {
                "config": cfg.to_dict(),
                "best_epoch": history.best_epoch,
                "epochs_run": len(history.epochs),
            }
            models[algo] = rec
        evaluation = evaluate_p1(models, split, index, ds.users, states=STATES)
        record = {
            "protocol": "p1",
            "dataset": name,
            "seed": seed,
            "split_rule": split.rule,
            "n_users": evaluation["n_users"],
            "summary": evaluation["summary"],
            "configs": configs,
            "timings": timings,
            "machine": machine_info(),
            "command": f"metarec benchmark --dataset {name} --seed {seed}"
            + (" --data DIR" if root else ""),
        }
        save_json(out / f"p1-{name}.json", record)
        write_bytes_atomic(out / f"p1-{name}.md", markdown(record).encode())
        print(markdown(record))
        results[name] = record
    return results


def markdown(record: dict[str, Any]) -> str:
    metrics = ("mae", "rmse", "ndcg@1", "ndcg@3", "ndcg@5", "precision@5", "mrr@5")
    lines = [
        f"# P1 on {record['dataset']} (seed {record['seed']}; new items: {record['split_rule']})",
        "",
        f"Reproduce: `{record['command']}`. Machine: {record['machine']['cpu_count']} CPUs, "
        f"torch {record['machine']['torch']}.",
        "",
    ]
    for state, models in record["summary"].items():
        best = min(models, key=lambda m: models[m]["mae"])
        lines += [
            f"## {state} ({record['n_users'][state]} users)",
            "",
            "| model | " + " | ".join(metrics) + " |",
            "|---" * (len(metrics) + 1) + "|",
        ]
        for name, vals in models.items():
            label = f"**{name}**" if name == best else name
            lines.append(f"| {label} | " + " | ".join(f"{vals[m]:.4f}" for m in metrics) + " |")
        lines.append("")
    lines.append(
        "Training time (s): "
        + ", ".join(
            f"{k.removeprefix('train_').removesuffix('_s')} {v:.0f}"
            for k, v in record["timings"].items()
        )
    )
    return "\n".join(lines) + "\n"

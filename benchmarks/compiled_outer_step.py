"""Does compiling the outer step reach 2,000 first-order tasks/s on a CPU?

The speed benchmark's first-order row (default episodes, 64 tasks a batch) timed
three ways in one process on the same training users: the learner as shipped,
the same with 256 tasks a batch, and with ``outer_loss`` wrapped in
``torch.compile(..., dynamic=True)`` (the first compiled epoch, which compiles,
is reported apart). Each figure is the median of ``--epochs`` epochs, run
back to back, so they share the machine's load. A profile of one uncompiled
epoch says what share of the CPU time matrix products take.

    python benchmarks/compiled_outer_step.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from _cli import add_common, positive_int, results_folder, run
from torch.profiler import ProfilerActivity, profile

from metarec.config import TrainConfig
from metarec.data import load_dataset
from metarec.evaluation.machine import machine_info
from metarec.io import save_json, write_lines_atomic
from metarec.meta.trainer import TaskSource, Trainer
from metarec.models.base import TrainingData
from metarec.pipeline import encode_catalogue, fit_recommender, split_users


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common(parser)
    parser.add_argument("--epochs", type=positive_int, default=7)
    args = parser.parse_args()
    out = results_folder(args.out)
    ds = load_dataset("ml-100k", root=args.data)
    catalogue = encode_catalogue(ds.items, "minilm", progress=False)
    train_rows, val_rows = split_users(ds.interactions, 0.1, 0)
    # the speed benchmark's setup: user features from a fitted recommender, a learner
    # with the right shapes fitted on a few rows, epochs over every training user
    rec, _ = fit_recommender(
        catalogue, train_rows, TrainConfig(seed=0, epochs=1), users=ds.users,
        validation=val_rows, progress=False,
    )  # fmt: skip
    ratings = TrainingData(train_rows, catalogue, ds.users, val_rows, ds.rating_range, 0).ratings
    source = TaskSource(ratings, rec.features.transform(ds.users, ratings.user_ids))
    n = len(ratings)

    def trainer(batch: int, compiled: bool) -> Trainer:
        cfg = TrainConfig(seed=0, epochs=1, algorithm="fomaml", meta_batch_size=batch)
        fitted, _ = fit_recommender(
            catalogue, train_rows.iloc[:2000], cfg, users=ds.users, progress=False
        )
        if compiled:
            fitted.learner.outer_loss = torch.compile(fitted.learner.outer_loss, dynamic=True)
        return Trainer(fitted.learner, cfg, progress=False)

    def epochs(t: Trainer, count: int) -> list[float]:
        out = []
        for e in range(count):
            t0 = time.perf_counter()
            t.train_epoch(source, e)
            out.append(time.perf_counter() - t0)
        return out

    runs: dict[str, Any] = {}
    for label, batch, compiled in (
        ("as shipped, 64 a batch", 64, False),
        ("as shipped, 256 a batch", 256, False),
        ("torch.compile(outer_loss), 64 a batch", 64, True),
    ):
        t = trainer(batch, compiled)
        times = epochs(t, args.epochs + (1 if compiled else 0))
        first = times.pop(0) if compiled else None
        runs[label] = {
            "epoch_s": times,
            "median_epoch_s": float(np.median(times)),
            "tasks_per_s": n / float(np.median(times)),
            "first_epoch_s": first,
        }
        print(label, runs[label], flush=True)
    t = trainer(64, False)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t.train_epoch(source, 0)
    ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(ops.values())
    matmul = {k: ops.get(k, 0.0) / total for k in ("aten::mm", "aten::addmm", "aten::bmm")}
    record = {
        "benchmark": "compiled outer step (first-order meta-training, ml-100k)",
        "tasks": n,
        "runs": runs,
        "profile_self_cpu_share": matmul,
        "machine": machine_info(),
        "command": "python benchmarks/compiled_outer_step.py"
        + (f" --data {args.data}" if args.data else "")
        + (f" --epochs {args.epochs}" if args.epochs != 7 else ""),
    }
    save_json(out / "compiled-outer-step.json", record)
    lines = [
        "# First-order meta-training: as shipped, bigger batches, a compiled outer step",
        "",
        f"Reproduce: `{record['command']}`. Machine: {record['machine']['cpu']} "
        f"({record['machine']['cpu_capability']}), {record['machine']['torch_threads']} torch "
        f"threads, commit {str(record['machine']['git_commit'])[:7]}. {n} tasks an epoch; "
        "median of the epochs, run back to back.",
        "",
        "| variant | median epoch s | tasks/s | epochs s | first (compiling) epoch s |",
        "|---|---|---|---|---|",
    ]
    for label, r in runs.items():
        first = f"{r['first_epoch_s']:.1f}" if r["first_epoch_s"] is not None else "—"
        epochs_s = ", ".join(f"{x:.2f}" for x in r["epoch_s"])
        lines.append(
            f"| {label} | {r['median_epoch_s']:.3f} | {r['tasks_per_s']:,.0f} | {epochs_s} "
            f"| {first} |"
        )
    lines += [
        "",
        "Self CPU time of one uncompiled epoch (64 a batch) in matrix products: "
        + ", ".join(f"`{k}` {v:.0%}" for k, v in matmul.items())
        + f", {sum(matmul.values()):.0%} in all.",
    ]
    write_lines_atomic(out / "compiled-outer-step.md", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    run(main)

"""Two training-speed changes, each measured against its own "off" on the same machine.

1. **The softmax objective's hand-written path** (catalogue layout, chunks of
   users) against the generic ``torch.func`` path: epochs of first-order MAML
   in P2's configuration (softmax over ml-100k's catalogue, time-ordered
   episodes, the support encoder), alternating between the two paths in one
   process (freed memory kept, as the ``metarec`` command runs) so that both
   share the machine's load round by round.
2. **Keeping freed memory** (:mod:`metarec.allocator`, what the ``metarec``
   command does) against glibc's defaults, in fresh processes alternating with
   and without it (the setting cannot be undone in a process): the same P2
   epochs on each path, and first-order epochs with the rating objective (the
   speed benchmark's default episodes, 64 tasks a batch).
   Minor page faults per epoch show the mechanism: a fault wherever a freed
   block went back to the kernel and a new one is first written.

Each round's figures are the median of its epochs after the first; the report
gives every round and the medians over rounds. On a virtual machine whose
speed drifts, compare the two arms of a round, not figures across runs.

    python benchmarks/training_paths.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _cli import add_common, positive_int, results_folder, run

from metarec.config import TrainConfig
from metarec.evaluation.machine import machine_info
from metarec.io import save_json, write_bytes_atomic

RESULTS = Path(__file__).resolve().parent / "results"
P2_RUN = RESULTS / "p2-repeat-aee2f5d" / "p2-ml-100k.json"  # P2's resolved config


def _setup(data: str | None, cfg: TrainConfig) -> tuple[Any, Any, Any]:
    """The speed benchmark's setup: a learner with the right shapes (fitted on a few
    rows) and every training user of ml-100k as a task source."""
    from metarec.data import load_dataset
    from metarec.meta.trainer import TaskSource, Trainer
    from metarec.models.base import TrainingData
    from metarec.pipeline import encode_catalogue, fit_recommender, split_users

    ds = load_dataset("ml-100k", root=data)
    catalogue = encode_catalogue(ds.items, "minilm", progress=False)
    train_rows, val_rows = split_users(ds.interactions, 0.1, 0)
    fitted, _ = fit_recommender(
        catalogue, train_rows.iloc[:3000], cfg, users=ds.users, progress=False
    )
    ratings = TrainingData(train_rows, catalogue, ds.users, val_rows, ds.rating_range, 0).ratings
    source = TaskSource(ratings, fitted.features.transform(ds.users, ratings.user_ids))
    pool = np.arange(len(catalogue)) if cfg.objective != "rating" else None
    return fitted.learner, Trainer(fitted.learner, cfg, progress=False, negative_pool=pool), source


def _epoch(trainer: Any, source: Any, epoch: int) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train_epoch(source, epoch)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "minor_faults": float(after.ru_minflt - before.ru_minflt),
        "tasks": float(len(source.ratings)),
    }


def _median(epochs: list[dict[str, float]]) -> dict[str, float]:
    rest = epochs[1:] or epochs  # the first epoch warms caches and the allocator
    out = {k: float(np.median([e[k] for e in rest])) for k in rest[0]}
    out["tasks_per_s"] = out["tasks"] / out["wall_s"]
    return out


def _config(objective: str) -> TrainConfig:
    if objective == "softmax":  # P2's resolved config for first-order MAML
        run = json.loads(P2_RUN.read_text(encoding="utf-8"))
        return TrainConfig.from_dict({**run["configs"]["metarec-fomaml"]["config"], "epochs": 1})
    return TrainConfig(seed=0, epochs=1, algorithm="fomaml", meta_batch_size=64)


def softmax_paths(data: str | None, rounds: int, epochs: int) -> dict[str, Any]:
    from metarec.allocator import keep_freed_memory

    keep_freed_memory()  # as the `metarec` command runs
    learner, trainer, source = _setup(data, _config("softmax"))
    out: dict[str, Any] = {"rounds": []}
    for r in range(rounds):
        row = {}
        for path in ("direct", "torch.func"):
            learner.scorer.direct_path = path == "direct"
            row[path] = _median([_epoch(trainer, source, r * epochs + e) for e in range(epochs)])
        out["rounds"].append(row)
        print(f"[softmax] round {r + 1}: " + ", ".join(
            f"{k} {v['wall_s']:.2f} s" for k, v in row.items()
        ), flush=True)  # fmt: skip
    return out


def _child(data: str | None, epochs: int, objective: str) -> dict[str, float]:
    """One arm of the allocator comparison (run in a fresh process); ``objective``
    "softmax-torch.func": P2's softmax epochs on the generic path."""
    learner, trainer, source = _setup(data, _config(objective.removesuffix("-torch.func")))
    learner.scorer.direct_path = not objective.endswith("-torch.func")
    return _median([_epoch(trainer, source, e) for e in range(epochs)])


def allocator_arms(data: str | None, rounds: int, epochs: int, objective: str) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": []}
    for r in range(rounds):
        row = {}
        for arm in ("kept", "glibc defaults"):
            code = (
                ("from metarec.allocator import keep_freed_memory\n"
                 "assert keep_freed_memory(), 'glibc needed'\n" if arm == "kept" else "")
                + "import json, sys\nsys.path.insert(0, sys.argv[4])\n"
                "from training_paths import _child\n"
                "print(json.dumps(_child(sys.argv[1] or None, int(sys.argv[2]), sys.argv[3])))"
            )  # fmt: skip
            done = subprocess.run(
                [sys.executable, "-c", code, data or "", str(epochs), objective,
                 str(Path(__file__).parent)],
                capture_output=True, text=True, check=True, env=os.environ.copy(),
            )  # fmt: skip
            row[arm] = json.loads(done.stdout.strip().splitlines()[-1])
        out["rounds"].append(row)
        print(f"[allocator, {objective}] round {r + 1}: " + ", ".join(
            f"{k} {v['wall_s']:.2f} s, {v['minor_faults']:.0f} faults" for k, v in row.items()
        ), flush=True)  # fmt: skip
    return out


def _summary(part: dict[str, Any]) -> dict[str, dict[str, float]]:
    rounds = part["rounds"]
    return {
        arm: {k: float(np.median([r[arm][k] for r in rounds])) for k in rounds[0][arm]}
        for arm in rounds[0]
    }


def _markdown(record: dict[str, Any]) -> str:
    lines = [
        "# Training paths: the softmax objective's hand-written path, and kept freed memory",
        "",
        f"Machine: {record['machine']['cpu']} ({record['machine']['cpu_capability']}), "
        f"{record['machine']['cpu_count']} CPUs, torch {record['machine']['torch']}. "
        f"Reproduce: `{record['command']}`. "
        "Per round: the median of its epochs after the first; last row: the median over rounds.",
        "",
        "## Softmax objective (P2's first-order MAML, ml-100k): seconds an epoch",
        "",
        "| round | hand-written path | torch.func path | ratio |",
        "|---|---|---|---|",
    ]
    soft = record["softmax"]
    for i, r in enumerate(soft["rounds"], 1):
        d, g = r["direct"]["wall_s"], r["torch.func"]["wall_s"]
        lines.append(f"| {i} | {d:.2f} | {g:.2f} | {g / d:.2f} |")
    s = soft["summary"]
    d, g = s["direct"]["wall_s"], s["torch.func"]["wall_s"]
    lines += [f"| median | {d:.2f} | {g:.2f} | {g / d:.2f} |", ""]
    for key, title in (
        ("allocator_softmax", "P2's first-order MAML on the hand-written path"),
        ("allocator_softmax-torch.func", "P2's first-order MAML on the torch.func path"),
        ("allocator_rating", "rating objective, first-order, 64 tasks a batch"),
    ):
        lines += [
            f"## Kept freed memory against glibc's defaults: {title}",
            "",
            "| round | kept: s an epoch | defaults: s an epoch | kept: minor faults an epoch |"
            " defaults: minor faults an epoch |",
            "|---|---|---|---|---|",
        ]
        part = record[key]
        for i, r in enumerate([*part["rounds"], part["summary"]], 1):
            k, g = r["kept"], r["glibc defaults"]
            label = str(i) if i <= len(part["rounds"]) else "median"
            lines.append(
                f"| {label} | {k['wall_s']:.2f} | {g['wall_s']:.2f} | "
                f"{k['minor_faults']:,.0f} | {g['minor_faults']:,.0f} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common(parser)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--epochs", type=positive_int, default=3, help="epochs per arm and round")
    args = parser.parse_args()
    out = results_folder(args.out)
    soft = softmax_paths(args.data, args.rounds, args.epochs)
    soft["summary"] = _summary(soft)
    record: dict[str, Any] = {"benchmark": "training paths", "softmax": soft}
    for objective in ("softmax", "softmax-torch.func", "rating"):
        part = allocator_arms(args.data, args.rounds, args.epochs + 1, objective)
        part["summary"] = _summary(part)
        record[f"allocator_{objective}"] = part
    record |= {
        "machine": machine_info(),
        "command": "python benchmarks/training_paths.py"
        + (f" --data {args.data}" if args.data else ""),
    }
    save_json(out / "training-paths.json", record)
    text = _markdown(record)
    write_bytes_atomic(out / "training-paths.md", text.encode())
    print(text)


if __name__ == "__main__":
    run(main)

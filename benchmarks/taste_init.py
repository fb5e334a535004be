"""What a larger start of the taste projection does to P1 (ml-1m, the committed split).

The rating network's taste path (a user's factor vector, solved from the support
set through a projection of the item vectors) starts near zero, std 0.01, so that
the untrained network is the bias model. Its effect is quadratic in the projection,
so meta-training moves it slowly from there, and a run stopped early keeps little
taste (see ``personalisation.py``). This runs P1's first-order MAML with the
projection redrawn at a larger std after the network is built (one more draw from
the seeded generator, so std 0.01 here is not the default run to the bit) beside the
bias model, on the split the README's P1 table used.

    python benchmarks/taste_init.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _cli import RESULTS, add_common, results_folder, run
from torch import nn

from metarec.data import load_dataset
from metarec.evaluation.benchmark import run_benchmark
from metarec.evaluation.machine import machine_info
from metarec.io import save_json, write_lines_atomic
from metarec.models import preference

STDS = (0.01, 0.1, 0.3)
STATES = ("user_cold", "item_cold", "both_cold")


@contextmanager
def taste_projection_std(std: float) -> Iterator[None]:
    built = preference.UserHead.__init__

    def init(self: preference.UserHead, *args: Any, **kwargs: Any) -> None:
        built(self, *args, **kwargs)
        if self.factor is not None:
            nn.init.normal_(self.factor.weight, std=std)

    preference.UserHead.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        preference.UserHead.__init__ = built  # type: ignore[method-assign]


def write(rows: dict[str, dict[str, Any]], out: Path) -> None:
    machine = machine_info()
    save_json(out / "taste-init.json", {"dataset": "ml-1m", "runs": rows, "machine": machine})
    head = " | ".join(f"{s} MAE | {s} nDCG@3" for s in STATES)
    lines = [
        "# A larger start of the taste projection (P1 on ml-1m, the committed split)",
        "",
        f"Machine: {machine.get('cpu', '?')}; commit {machine.get('git_commit', '?')}. "
        "First-order MAML, seed 0, its taste projection redrawn at each std after the "
        "network is built; the bias model beside it.",
        "Reproduce: `python benchmarks/taste_init.py --data ../shared/data`.",
        "",
        f"| model | best epoch | {head} |",
        "|---|---|" + "---|" * (2 * len(STATES)),
    ]
    for name, r in rows.items():
        cells = " | ".join(f"{r[s]['mae']:.4f} | {r[s]['ndcg@3']:.4f}" for s in STATES)
        lines.append(f"| {name} | {r.get('best_epoch', '')} | {cells} |")
    write_lines_atomic(out / "taste-init.md", lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(p)
    args = p.parse_args()
    out = results_folder(args.out)
    ds = load_dataset("ml-1m", root=args.data)
    rows: dict[str, dict[str, Any]] = {}
    for std in STDS:
        with taste_projection_std(std), tempfile.TemporaryDirectory() as tmp:
            record = run_benchmark(
                "p1", ds, out=tmp, algorithms=["fomaml"], peers=["bias"], splits=RESULTS,
                plots=False, resume=False, progress=False,
            )  # fmt: skip
        summary = record["summary"]
        rows[f"first-order MAML, std {std:g}"] = {
            "best_epoch": record["configs"]["metarec-fomaml"].get("best_epoch"),
            **{s: summary[s]["metarec-fomaml"] for s in STATES},
        }
        rows["bias model"] = {s: summary[s]["bias"] for s in STATES}
        print(std, {s: round(summary[s]["metarec-fomaml"]["mae"], 4) for s in STATES})
        write(rows, out)


if __name__ == "__main__":
    run(main)

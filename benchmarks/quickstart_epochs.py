"""Quickstart's run after each number of epochs: what its new users and its list get.

``metarec quickstart`` keeps the epoch whose MAE is lowest on P1's validation users, and
on ml-100k that is epoch 3, where a user's ratings do not yet move their list (see
``personalisation.py``). This trains quickstart's configuration (P1's split of ml-100k,
seed 0, MiniLM, first-order MAML) for a fixed number of epochs and keeps the last one,
for several numbers, and reports per run:

* the validation users' loss early stopping watched at that epoch;
* MAE (with the run's median ratings, as quickstart's table) and nDCG@3 of P1's new
  users, which no run chose an epoch on;
* how far the new users' first 10 ratings move their list: the Spearman correlation of
  the adapted and the zero-shot scores over the catalogue, and how many of the zero-shot
  top 10 stay (10: the list every new user gets).

Keeping the last epoch is done by giving the trainer, in place of each validation loss,
one lower than the last (the true loss is recorded): the same weights, epoch by epoch,
as quickstart's training, since validating draws nothing from the training's generator.

    python benchmarks/quickstart_epochs.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from _cli import add_common, results_folder, run
from personalisation import measure

import metarec as mr
from metarec.data import load_dataset
from metarec.evaluation.machine import machine_info
from metarec.evaluation.p1 import evaluate_p1, make_p1_split
from metarec.io import save_json, write_lines_atomic
from metarec.meta import trainer as trainer_module
from metarec.pipeline import encode_catalogue, fit_recommender

EPOCHS = (1, 2, 3, 4, 6, 8, 10, 12, 15, 20)


@contextmanager
def last_epoch_kept(losses: list[float]) -> Iterator[None]:
    """Every epoch looks better than the one before to the trainer, so it keeps the last;
    ``losses`` receives the true validation losses (the untrained model's first)."""
    true_loss = trainer_module.Trainer.validation_loss

    def falling(self: Any, tasks: Any, source: Any) -> float:
        losses.append(true_loss(self, tasks, source))
        return -float(len(losses))

    trainer_module.Trainer.validation_loss = falling  # type: ignore[method-assign]
    try:
        yield
    finally:
        trainer_module.Trainer.validation_loss = true_loss  # type: ignore[method-assign]


def write(rows: list[dict[str, Any]], out: Path) -> None:
    machine = machine_info()
    record = {"dataset": "ml-100k", "runs": rows, "machine": machine}
    save_json(out / "quickstart-epochs.json", record)
    lines = [
        "# Quickstart's run after each number of epochs (ml-100k, P1's split, seed 0)",
        "",
        f"Machine: {machine.get('cpu', '?')}; commit {machine.get('git_commit', '?')}. "
        "First-order MAML, MiniLM, quickstart's configuration, trained for a fixed number "
        "of epochs and the last kept. Validation: P1's 45 validation users, whose loss "
        "picks quickstart's epoch. New users: P1's 115 new users (median ratings for MAE); "
        "their first 10 ratings by time against the zero-shot scores for the list.",
        "Reproduce: `python benchmarks/quickstart_epochs.py --data ../shared/data`.",
        "",
        "| epochs | validation loss | new users' MAE | new users' nDCG@3 | Spearman, mean "
        "| zero-shot top 10 kept | lists the same as zero-shot |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['epochs']} | {r['val_loss']:.4f} | {r['mae']:.4f} | {r['ndcg@3']:.4f} "
            f"| {r['spearman_mean']:.4f} | {r['top10_kept_mean']:.1f} "
            f"| {r['same_top10_share']:.0%} |"
        )
    write_lines_atomic(out / "quickstart-epochs.md", lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(p)
    args = p.parse_args()
    out = results_folder(args.out)
    ds = load_dataset("ml-100k", root=args.data)
    split = make_p1_split(ds, seed=0)
    catalogue = encode_catalogue(ds.items, "minilm", progress=False)
    new_users = split.frames["user_cold"].sort_values(["user_id", "timestamp"])
    rows: list[dict[str, Any]] = []
    for epochs in EPOCHS:
        losses: list[float] = []
        cfg = mr.TrainConfig(seed=0, epochs=epochs, patience=epochs + 1)
        t0 = time.perf_counter()
        with last_epoch_kept(losses):
            rec, history = fit_recommender(
                catalogue, split.frames["train"], cfg, users=ds.users,
                validation=split.frames["validation"], rating_range=ds.rating_range,
                progress=False,
            )  # fmt: skip
        assert history.best_epoch == epochs, history.best_epoch
        result = evaluate_p1(
            {"run": rec}, split, rec.item_index, ds.users, states=("user_cold",),
            rating_range=ds.rating_range,
        )  # fmt: skip
        scores = result["summary"]["user_cold"]["run"]
        rows.append(
            {
                "epochs": epochs,
                "val_loss": float(np.asarray(losses)[-1]),
                "mae": scores["mae"],
                "ndcg@3": scores["ndcg@3"],
                **measure(rec, new_users, 10),
                "seconds": time.perf_counter() - t0,
            }
        )
        print(rows[-1], flush=True)
        write(rows, out)


if __name__ == "__main__":
    run(main)

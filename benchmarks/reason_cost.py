"""What checking each named rating costs an explained list (``metarec.explain``).

A reason names a liked item only where that rating raised the item: the user is
adapted again without each candidate (one batch) and the catalogue scored again.
That costs nothing where the ratings raise no item (a run whose ratings move every
score by one amount) and an adaptation batch where they do. This trains two runs on
ml-100k and times ``explain_indices`` on a 10-item list for a made-up user with 10
ratings (20 repeats after 3 warm-up calls; the user's catalogue scores given, as the
service gives them), beside one adaptation of that user:

- quickstart's configuration: first-order MAML, rating objective, MiniLM, trained on
  P1's split drawn with seed 0 (its training users, early stopping on its validation
  users), as ``metarec quickstart`` trains it;
- a softmax run whose head adapts (TF-IDF, 2 epochs, seed 0, a seeded tenth of users
  for early stopping), the run the tests of named reasons use.

    python benchmarks/reason_cost.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from _cli import add_common, results_folder, run

import metarec as mr
from metarec.data import load_dataset
from metarec.evaluation.machine import machine_info
from metarec.evaluation.p1 import make_p1_split
from metarec.explain import explain_indices
from metarec.io import save_json, write_lines_atomic
from metarec.pipeline import encode_catalogue, fit_recommender, split_users

HISTORY = [("220", 5), ("1040", 4), ("510", 2), ("50", 4), ("731", 5), ("417", 4),
           ("623", 4), ("1", 5), ("95", 4), ("71", 5)]  # fmt: skip
REPEATS = 20


def _ms(call: Any, repeats: int = REPEATS) -> float:
    """The median wall time of ``call`` in ms, after three calls to warm it."""
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def measure(name: str, rec: Any) -> dict[str, Any]:
    user = rec.adapt(HISTORY)
    top, _ = rec.top(user, 10)
    scores = rec.score(user)
    reasons = explain_indices(rec, user, top, scores=scores)
    return {
        "run": name,
        "explain_ms_p50": _ms(lambda: explain_indices(rec, user, top, scores=scores)),
        "adapt_one_user_ms_p50": _ms(lambda: rec.adapt(HISTORY)),
        "reasons_naming_a_rating": sum(bool(r.because) for r in reasons),
    }


def write(rows: list[dict[str, Any]], out: Path) -> None:
    save_json(out / "reason-cost.json", {"machine": machine_info(), "rows": rows})
    lines = [
        "# What checking each named rating costs an explained list (ml-100k)",
        "",
        "| run | explain a 10-item list, p50 ms | adapt one user, p50 ms "
        "| of the 10 reasons, naming a rating |",
        "|---|---|---|---|",
        *(
            f"| {r['run']} | {r['explain_ms_p50']:.2f} | {r['adapt_one_user_ms_p50']:.2f} "
            f"| {r['reasons_naming_a_rating']} |"
            for r in rows
        ),
        "",
        "Reproduce: `python benchmarks/reason_cost.py --data ../shared/data`",
    ]
    write_lines_atomic(out / "reason-cost.md", lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(p)
    args = p.parse_args()
    out = results_folder(args.out)
    ds = load_dataset("ml-100k", root=args.data)
    rows = []
    split = make_p1_split(ds, seed=0)
    minilm = encode_catalogue(ds.items, "minilm", progress=False)
    quick, _ = fit_recommender(
        minilm, split.frames["train"], mr.TrainConfig(seed=0), users=ds.users,
        validation=split.frames["validation"], rating_range=ds.rating_range, progress=False,
    )  # fmt: skip
    rows.append(measure("quickstart's configuration (rating, fomaml, MiniLM)", quick))
    tfidf = encode_catalogue(ds.items, "tfidf", progress=False)
    train, val = split_users(ds.interactions, 0.1, seed=0)
    cfg = mr.TrainConfig(objective="softmax", adapt="head", epochs=2, seed=0)
    softmax, _ = fit_recommender(
        tfidf, train, cfg, users=ds.users, validation=val, rating_range=ds.rating_range,
        progress=False,
    )  # fmt: skip
    rows.append(measure("softmax, head adapted (TF-IDF, 2 epochs)", softmax))
    for row in rows:
        print(row, flush=True)
    write(rows, out)


if __name__ == "__main__":
    run(main)

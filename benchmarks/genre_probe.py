"""Whether a new user's ratings pull their list toward what they rated: a genre probe.

``personalisation.py`` measures how far a user's first ratings move their list; this
asks in which direction. A made-up new user rates the twelve most-rated films of one
MovieLens 100K genre 5 (a horror fan), and each model scores the whole catalogue for
them and for a user with no ratings. The measure is the mean percentile of the
genre's *other* films in that ranking (0.5: where a film drawn at random sits; 1:
the top), before and after the ratings, and how many of the user's top 20 (the
rated films left out) are of the genre. Twelve dislikes (1s for the twelve most-rated
films of a genre) are probed too: their genre should sink.

Models, all fitted on every ml-100k user (seed 0, MiniLM; each run holds out its own
validation users): first-order MAML with P2's softmax configuration, the same with
the rating objective (the defaults), and the peers an ensemble blends them with
(popularity, content kNN over the LM vectors, the stacked ranker), each scored
alone, then the ranking ensemble of all five, weights learned on the softmax run's
validation users. Beside them, how much taste for each liked genre the data holds
(:func:`persistence`): whether users whose first ten ratings lean to a genre keep to
it afterwards.

    python benchmarks/genre_probe.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _cli import add_common, results_folder, run

import metarec as mr
from metarec.data import load_dataset
from metarec.data.tasks import Task
from metarec.ensemble_run import fit_from_runs
from metarec.evaluation.benchmark import P2_OVERRIDES
from metarec.evaluation.machine import machine_info
from metarec.io import json_bytes, write_bytes_atomic, write_lines_atomic

DATASET = "ml-100k"
RATED = 12  # films a probe user rates
# (genre rated, value given): the likes, then dislikes of two genres
PROBES: tuple[tuple[str, float], ...] = (
    ("Horror", 5.0),
    ("Children's", 5.0),
    ("Sci-Fi", 5.0),
    ("Documentary", 5.0),
    ("Romance", 5.0),
    ("Romance", 1.0),
    ("Action", 1.0),
)
RUNS = (("metarec, softmax (P2's configuration)", list(P2_OVERRIDES)), ("metarec, rating", []))
PEERS = ("popularity", "knn", "stacked")


def probe_tasks(ds: Any, ids: list[str]) -> list[tuple[str, float, Task, list[int]]]:
    """(genre, value, the probe user's task, the genre's other films' positions)."""
    pos = {item: n for n, item in enumerate(ids)}
    counts = ds.interactions["item_id"].value_counts()
    genres = ds.items.set_index("item_id")["genres"].astype(str).str.split("|")
    out = []
    for genre, value in PROBES:
        films = [i for i in ids if genre in genres.get(i, [])]
        films.sort(key=lambda i: (-int(counts.get(i, 0)), i))
        rated = [pos[i] for i in films[:RATED]]
        task = Task.support_only(np.array(rated, dtype=np.int64), np.full(RATED, value))
        out.append((genre, value, task, [pos[i] for i in films[RATED:]]))
    return out


def persistence(ds: Any) -> dict[str, dict[str, float | None]]:
    """How much taste for a genre the data holds: among users with at least 25 ratings,
    by time, the genre's share of the ratings after the first ten, for all of them and
    for those whose first ten are at least 30 % the genre."""
    inter = ds.interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    genres = ds.items.set_index("item_id")["genres"].astype(str).str.split("|")
    counts = inter["user_id"].map(inter["user_id"].value_counts())
    inter = inter[counts >= 25]
    place = inter.groupby("user_id").cumcount()
    out = {}
    for genre in dict.fromkeys(g for g, v in PROBES if v >= 4):
        of = inter["item_id"].map(lambda i, genre=genre: genre in genres.get(i, []))
        first = of[place < 10].groupby(inter["user_id"]).mean()
        rest = of[place >= 10].groupby(inter["user_id"]).mean()
        keen = first[first >= 0.3].index
        out[genre] = {
            "users": len(first),
            "rest_share": float(rest.mean()),
            "keen_users": len(keen),
            "keen_rest_share": float(rest[keen].mean()) if len(keen) else None,  # none keen
        }
    return out


def measure(
    scores: np.ndarray, rated: np.ndarray, others: list[int], is_genre: np.ndarray
) -> dict[str, float]:
    pct = pd.Series(scores.astype(np.float64)).rank(pct=True).to_numpy()
    masked = scores.astype(np.float64).copy()
    masked[rated] = -np.inf
    top = np.argsort(-masked, kind="stable")[:20]
    return {"percentile": float(pct[others].mean()), "top20": int(is_genre[top].sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(p)
    args = p.parse_args()
    out = results_folder(args.out)
    ds = mr.clean(load_dataset(DATASET, root=args.data))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folders = []
        for n, (_, overrides) in enumerate(RUNS):
            cfg = mr.TrainConfig(seed=0).with_overrides(overrides)
            mr.train(ds, cfg, run_dir=Path(tmp) / str(n), progress=False)
            folders.append(Path(tmp) / str(n))
        ens = fit_from_runs(folders, ds, peers=PEERS, seed=0, log=None)
    names = [name for name, _ in RUNS] + list(PEERS)
    models = dict(zip(names, ens.members.values(), strict=True))
    models["ensemble of all five (ranking)"] = ens
    ids = ds.items["item_id"].astype(str).tolist()
    genres = ds.items["genres"].astype(str).str.split("|")
    rows: dict[str, list[dict[str, Any]]] = {}
    nobody = Task.support_only(np.zeros(0, dtype=np.int64), np.zeros(0))
    for name, model in models.items():
        zero = np.asarray(model.score_catalogue([nobody], None)[0])
        rows[name] = []
        for genre, value, task, others in probe_tasks(ds, ids):
            is_genre = genres.map(lambda g, genre=genre: genre in g).to_numpy()
            after = np.asarray(model.score_catalogue([task], None)[0])
            rows[name].append(
                {
                    "genre": genre,
                    "value": value,
                    "before": measure(zero, task.support_items, others, is_genre),
                    "after": measure(after, task.support_items, others, is_genre),
                }
            )
        print(name, rows[name], flush=True)
    write(rows, persistence(ds), time.perf_counter() - t0, out)


def write(
    rows: dict[str, list[dict[str, Any]]],
    taste: dict[str, dict[str, float | None]],
    seconds: float,
    out: Path,
) -> None:
    machine = machine_info()
    record = {"dataset": DATASET, "rated": RATED, "models": rows, "data_taste": taste,
              "seconds": seconds, "machine": machine}  # fmt: skip
    write_bytes_atomic(out / "genre-probe.json", json_bytes(record, strict=True))
    probes = next(iter(rows.values()))
    head = [f"{r['genre']} {'liked' if r['value'] >= 4 else 'disliked'}" for r in probes]
    lines = [
        f"# Does a new user's list follow what they rated? ({DATASET})",
        "",
        f"Machine: {machine.get('cpu', '?')}; commit {machine.get('git_commit', '?')}; "
        f"{seconds / 60:.1f} min. A made-up new user rates the {RATED} most-rated films of "
        "one genre (5: liked, 1: disliked). Each cell: the mean percentile of the genre's "
        "other films in the catalogue's ranking with no ratings → after them (0.5: "
        "a random film's place; 1: the top), and how many of the top 20 (rated films "
        "left out) are of the genre, before → after.",
        "Reproduce: `python benchmarks/genre_probe.py --data ../shared/data`.",
        "",
        "| model | " + " | ".join(head) + " |",
        "|---|" + "---|" * len(head),
    ]
    for name, probe in rows.items():
        cells = [
            f"{r['before']['percentile']:.2f} → {r['after']['percentile']:.2f} "
            f"({r['before']['top20']} → {r['after']['top20']})"
            for r in probe
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The taste the data holds",
        "",
        "Users with at least 25 ratings, by time: a genre's share of the ratings after "
        "their first ten, for all of them and for those whose first ten are at least 30 % "
        "that genre.",
        "",
        "| genre | users | share after the first ten | users whose first ten are ≥ 30 % "
        "the genre | their share after |",
        "|---|---|---|---|---|",
    ]
    for genre, t in taste.items():
        keen = t["keen_rest_share"]
        lines.append(
            f"| {genre} | {t['users']} | {t['rest_share']:.3f} | {t['keen_users']} "
            f"| {'—' if keen is None else f'{keen:.3f}'} |"
        )
    write_lines_atomic(out / "genre-probe.md", lines)


if __name__ == "__main__":
    run(main)

"""The benchmark's A/B test picks its arm B on the validation users, never the test users."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from metarec.data import load_dataset
from metarec.data.tasks import liked_query_items
from metarec.evaluation.benchmark import AB_SUPPORT, ab_challenger
from metarec.evaluation.p2 import evaluate_p2, make_p2_split, shot_tasks
from metarec.evaluation.report import render_markdown
from metarec.models.base import TrainingData
from metarec.models.ensemble import Ensemble
from metarec.peers import make_peer
from metarec.pipeline import encode_catalogue


@pytest.fixture(scope="module")
def world(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ds = load_dataset("ml-100k", root=shared_data)
    split = make_p2_split(ds, seed=0)
    catalogue = encode_catalogue(
        ds.items, "tfidf", cache_dir=tmp_path_factory.mktemp("emb"), progress=False
    )
    data = TrainingData.from_split(split.frames, catalogue, ds, seed=0)
    # two stand-ins under metarec names, so that the choice has something to choose
    models = {
        "popularity": make_peer("popularity", 0).fit(data),
        "metarec-pop": make_peer("popularity", 0).fit(data),
        "metarec-knn": make_peer("knn", 0).fit(data),
    }
    return {"ds": ds, "split": split, "index": catalogue.index, "models": models, "data": data}


def _validation_figures(world: dict[str, Any], names: list[str]) -> dict[str, float]:
    chosen = {m: world["models"][m] for m in names}
    summary = evaluate_p2(
        chosen, world["split"].frames["validation"], world["index"], world["ds"].users,
        shots=[AB_SUPPORT],
    )["summary"][str(AB_SUPPORT)]  # fmt: skip
    return {m: v["ndcg@10"] for m, v in summary.items()}


def test_b_is_the_best_on_the_validation_users_whatever_the_test_users_say(world) -> None:
    truth = _validation_figures(world, ["metarec-pop", "metarec-knn"])
    best = max(truth, key=lambda m: truth[m])
    worst = min(truth, key=lambda m: truth[m])
    assert truth[best] > truth[worst]
    # test figures that favour the other model must not move the choice
    rigged = {best: {"ndcg@10": 0.0}, worst: {"ndcg@10": 1.0}}
    chosen, record = ab_challenger(
        world["models"], world["split"], world["ds"], world["index"], rigged
    )
    assert chosen == best
    assert record["chosen_on"] == "validation users"
    assert record["choice"] == pytest.approx(truth)
    # the users with a liked item after their first 5 ratings: what the choice rests on
    tasks, _ = shot_tasks(world["split"].frames["validation"], world["index"], AB_SUPPORT)
    liked = sum(len(x) > 0 for x in liked_query_items(tasks, 4.0))
    assert record["choice_users"] == liked and 0 < liked <= len(tasks)


def test_the_ensemble_is_no_candidate_and_one_model_needs_no_choice(world) -> None:
    models = dict(world["models"])
    # learned on the validation users, its figure there would be in-sample
    models["metarec-ensemble"] = Ensemble(
        {"metarec-pop": models["metarec-pop"], "popularity": models["popularity"]},
        mode="ranking",
        fit_members=False,
    )
    rigged = {"metarec-ensemble": {"ndcg@10": 1.0}, "metarec-pop": {"ndcg@10": 0.0}}
    chosen, record = ab_challenger(models, world["split"], world["ds"], world["index"], rigged)
    assert chosen != "metarec-ensemble"
    assert set(record["choice"]) == {"metarec-pop", "metarec-knn"}

    # a seed bag is an Ensemble of equal weights that read no user: a candidate
    bag = Ensemble(
        {"a": models["metarec-knn"], "b": models["metarec-knn"]},
        mode="ranking",
        fit_members=False,
        learn_weights=False,
    )
    bag.fit(world["data"])
    models["metarec-knn"] = bag
    chosen, record = ab_challenger(models, world["split"], world["ds"], world["index"], rigged)
    assert set(record["choice"]) == {"metarec-pop", "metarec-knn"}

    del models["metarec-knn"]
    chosen, record = ab_challenger(models, world["split"], world["ds"], world["index"], rigged)
    assert (chosen, record) == ("metarec-pop", {"chosen_on": "the only candidate"})


def test_without_validation_figures_b_falls_back_to_the_test_users_and_says_so(world) -> None:
    split = world["split"]
    frames = dict(split.frames)
    split.frames = {**frames, "validation": frames["validation"].iloc[:0]}
    try:
        # the learned ensemble is no candidate here either, however it scored
        rigged = {"metarec-pop": {"ndcg@10": 0.2}, "metarec-knn": {"ndcg@10": 0.3},
                  "metarec-ensemble": {"ndcg@10": 0.9}}  # fmt: skip
        chosen, record = ab_challenger(world["models"], split, world["ds"], world["index"], rigged)
    finally:
        split.frames = frames
    assert (chosen, record) == ("metarec-knn", {"chosen_on": "test users"})


@pytest.mark.parametrize(
    ("choice", "said"),
    [
        (
            {"chosen_on": "validation users", "choice": {"metarec-a": 0.41, "metarec-b": 0.4}},
            "on the validation users (metarec-a 0.4100, metarec-b 0.4000), not on these",
        ),
        (
            {"chosen_on": "validation users", "choice": {"metarec-a": 0.4}, "choice_users": 1200},
            "on the 1,200 validation users (metarec-a 0.4000)",
        ),
        ({"chosen_on": "the only candidate"}, "only single metarec model, fixed before"),
        ({"chosen_on": "test users"}, "same test users, chosen after seeing them"),
        ({}, "same test users, chosen after seeing them"),  # runs before the choice moved
    ],
)
def test_the_report_says_how_b_was_chosen(choice: dict[str, Any], said: str) -> None:
    committed = Path(__file__).parents[2] / "benchmarks/results/p2-ml-100k.json"
    record = json.loads(committed.read_text())
    how = ("chosen_on", "choice", "choice_users")
    ab = {k: v for k, v in record["abtest"].items() if k not in how}
    record["abtest"] = {**ab, **choice}
    text = render_markdown(record)
    assert said in text


def test_the_report_gives_fishers_exact_p_where_the_record_has_it() -> None:
    committed = Path(__file__).parents[2] / "benchmarks/results/p2-ml-100k.json"
    record = json.loads(committed.read_text())
    assert record["abtest"]["replay"]["p_exact"] == pytest.approx(0.1549, abs=1e-4)
    assert "two-sided; Fisher's exact p = 0.155); users per arm" in render_markdown(record)
    del record["abtest"]["replay"]["p_exact"]  # as a record from before it was computed
    assert "Fisher" not in render_markdown(record)

"""Protocol P2 splits and tasks on real ml-100k data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from metarec import load_dataset
from metarec.data.tasks import Task
from metarec.errors import ConfigError, DataError, InputError
from metarec.evaluation.p1 import make_p1_split
from metarec.evaluation.p2 import (
    P2Split,
    eligible_users,
    evaluate_p2,
    make_p2_split,
    shot_tasks,
)
from metarec.models.base import ScoringModel, TrainingData, top_k


@pytest.fixture(scope="module")
def ds(shared_data: Path):
    return load_dataset("ml-100k", root=shared_data)


def test_split_partitions_eligible_users_80_10_10(ds) -> None:
    split = make_p2_split(ds, seed=1)
    train, val, test = map(set, (split.train_users, split.validation_users, split.test_users))
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(eligible_users(ds, 25))
    n = len(train | val | test)
    assert len(test) == round(0.1 * n) and len(val) == round(0.1 * n)


def test_folds_cover_every_user_once(ds) -> None:
    tests = [set(make_p2_split(ds, seed=0, n_folds=5, fold=f).test_users) for f in range(5)]
    assert sum(len(t) for t in tests) == len(set().union(*tests)) == len(eligible_users(ds, 25))
    with pytest.raises(DataError, match="fold"):
        make_p2_split(ds, seed=0, n_folds=5, fold=5)


def test_p1_folds_make_every_kept_user_new_once(ds) -> None:
    news = [set(make_p1_split(ds, seed=0, n_folds=5, fold=f).new_users) for f in range(5)]
    assert sum(len(n) for n in news) == len(set().union(*news))


def test_split_round_trips_through_json(ds, tmp_path: Path) -> None:
    split = make_p2_split(ds, seed=2)
    split.save(tmp_path / "s.json")
    again = P2Split.load(tmp_path / "s.json", ds)
    assert again.test_users == split.test_users
    assert len(again.frames["test"]) == len(split.frames["test"])
    (tmp_path / "bad.json").write_text('{"protocol": "p1"}')
    with pytest.raises(DataError, match="not a P2 split"):
        P2Split.load(tmp_path / "bad.json", ds)


def test_without_timestamps_the_runs_seed_draws_the_support(ds) -> None:
    # every seed drew seed 0's supports
    split = make_p2_split(ds, seed=0)
    index = {item: i for i, item in enumerate(ds.items["item_id"].astype(str))}
    frame = split.frames["test"].drop(columns="timestamp")

    def supports(seed: int) -> list[list[int]]:
        return [t.support_items.tolist() for t in shot_tasks(frame, index, 5, seed=seed)[0]]

    assert supports(3) == supports(3) != supports(0)
    timed = split.frames["test"]  # by time, the seed plays no part
    assert [t.support_items.tolist() for t in shot_tasks(timed, index, 5, seed=3)[0]] == [
        t.support_items.tolist() for t in shot_tasks(timed, index, 5)[0]
    ]
    with pytest.raises(ConfigError, match="shot_tasks: seed: must be a whole number >= 0"):
        shot_tasks(frame, index, 5, seed=-1)


def test_shot_tasks_refuses_what_is_not_a_support_size(ds) -> None:
    split = make_p2_split(ds, seed=0)
    index = {item: i for i, item in enumerate(ds.items["item_id"].astype(str))}
    frame = split.frames["test"]
    # -1 once sliced off every user's last rating as a one-item query, silently
    for k in (-1, True, 1.5, "5", None):
        with pytest.raises(ConfigError, match=r"k must be a whole number >= 0"):
            shot_tasks(frame, index, k)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"shot_tasks: missing column\(s\) \['rating'\]"):
        shot_tasks(frame.drop(columns="rating"), index, 1)
    assert all(len(t.support_items) == 0 for t in shot_tasks(frame, index, 0)[0])
    for seed in (-1, "x", 1.5):
        with pytest.raises(ConfigError, match="seed: must be a whole number >= 0"):
            make_p2_split(ds, seed=seed)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="seed: must be a whole number >= 0"):
            make_p1_split(ds, seed=seed)  # type: ignore[arg-type]


def test_support_is_the_first_k_ratings_by_time(ds) -> None:
    split = make_p2_split(ds, seed=0)
    index = {item: i for i, item in enumerate(ds.items["item_id"].astype(str))}
    frame = split.frames["test"]
    tasks, ids = shot_tasks(frame, index, 5)
    t, uid = tasks[0], ids[0]
    rows = frame[frame["user_id"].astype(str) == uid].sort_values("timestamp", kind="stable")
    first = rows["item_id"].astype(str).map(index).to_numpy()
    assert len(t.support_items) == 5
    assert set(t.support_items) == set(first[:5])
    assert len(t.query_items) == len(rows) - 5
    assert np.all(np.isin(t.query_items, first[5:]))


@pytest.mark.parametrize(
    "rating, shown",
    [(np.nan, "nan"), (np.inf, "inf"), ("x", "'x'"), (None, "nan")],
)
def test_shot_tasks_refuses_a_rating_that_is_not_a_number(rating: Any, shown: str) -> None:
    # a NaN rating was kept in the support set, where every model reads it as a rating
    frame = pd.DataFrame(
        {"user_id": ["a", "a", "b"], "item_id": ["1", "2", "1"], "rating": [4, rating, 3],
         "timestamp": [1, 2, 3]},
        index=[10, 11, 12],
    )  # fmt: skip
    with pytest.raises(InputError, match=f"the rating in row 11 is {shown}; ratings must be"):
        shot_tasks(frame, {"1": 0, "2": 1}, 1)


def test_shot_tasks_refuses_an_item_a_user_rated_twice() -> None:
    # its later rating was a query item in the support set: never ranked, always missed
    frame = pd.DataFrame(
        {"user_id": ["a", "a", "a"], "item_id": ["1", "2", "1"], "rating": [4, 3, 5],
         "timestamp": [0, 1, 2]},
        index=[10, 11, 12],
    )  # fmt: skip
    with pytest.raises(
        InputError, match=r"user 'a' rated item '1' more than once \(rows 10 and 12\)"
    ):
        shot_tasks(frame, {"1": 0, "2": 1}, 1)


def test_shot_tasks_refuses_an_index_for_the_item_mapping() -> None:
    # once "TypeError: 'Index' object is not callable"
    frame = pd.DataFrame(
        {"user_id": ["a", "a"], "item_id": ["1", "2"], "rating": [4, 3], "timestamp": [1, 2]}
    )
    with pytest.raises(InputError, match="index must be a mapping of item id to catalogue"):
        shot_tasks(frame, pd.Index(["1", "2"]), 1)  # type: ignore[arg-type]
    tasks, ids = shot_tasks(frame, {"1": 0, "2": 1}, 1)
    assert ids == ["a"] and tasks[0].support_items.tolist() == [0]


@pytest.mark.parametrize("make", [make_p2_split, eligible_users])
@pytest.mark.parametrize("min_ratings", ["25", -1, 0, 2.5, True, None])
def test_p2_min_ratings_must_be_a_count(ds, make: Callable[..., Any], min_ratings: Any) -> None:
    # "25" was a raw TypeError; -1 and 2.5 were taken, and recorded in the split file
    with pytest.raises(ConfigError, match=r"min_ratings: must be a whole number >= 1, got "):
        make(ds, min_ratings=min_ratings)


@pytest.mark.parametrize("make", [make_p1_split, make_p2_split, eligible_users])
@pytest.mark.parametrize("dataset", [None, pd.DataFrame({"user_id": ["a"]})])
def test_splits_refuse_what_is_not_a_dataset(make: Callable[..., Any], dataset: Any) -> None:
    # an AttributeError on .interactions before
    with pytest.raises(DataError, match="dataset: expected a metarec Dataset"):
        make(dataset)


def test_tied_scores_gain_nothing_from_the_catalogue_order(ds) -> None:
    """MovieLens numbers its best-known films first: ties broken by index handed a model
    whose scores tie (faithful MeLU, which knows a film by its year and genres) hits
    for free. On the committed split's test users at K = 0, equal scores ranked by
    index score nDCG@10 0.18, in random orders 0.04 on average: the fixed order lists
    break ties by is one such random order."""
    from metarec.data.tasks import liked_query_items
    from metarec.evaluation.metrics import ranking_table
    from metarec.models.base import top_k

    results = Path(__file__).parents[2] / "benchmarks" / "results"
    split = P2Split.load(results / "p2-ml-100k-split.json", ds)
    index = {str(i): n for n, i in enumerate(ds.items["item_id"])}
    tasks, _ = shot_tasks(split.frames["test"], index, 0)
    relevant = liked_query_items(tasks, 4.0)
    tied = np.zeros((len(tasks), len(index)))

    def ndcg(top: np.ndarray) -> float:
        return float(np.nanmean(ranking_table(top, relevant, 10)["ndcg@10"]))

    def one_list(order: np.ndarray) -> float:  # every user shown the same ten
        return ndcg(np.tile(order[:10], (len(tasks), 1)))

    by_index = one_list(np.arange(len(index)))
    shuffled = [one_list(np.random.default_rng(s).permutation(len(index))) for s in range(20)]
    assert round(by_index, 2) == 0.18 and round(float(np.mean(shuffled)), 2) == 0.04
    assert ndcg(top_k(tied, 10, tasks)) < 0.1 < by_index


def test_top_k_pads_with_minus_one_where_exclusion_leaves_fewer_than_k() -> None:
    # with the padding dropped, the excluded item 0 would come back last, shown again.
    # Scores 3, 2, 1 with item 0 excluded leave items 1, 2, then nothing: [1, 2, -1]
    task = Task(0, np.array([0]), np.array([5.0], np.float32), np.array([1]),
                np.array([4.0], np.float32))  # fmt: skip
    assert top_k(np.array([[3.0, 2.0, 1.0]]), 3, [task]).tolist() == [[1, 2, -1]]


def test_top_k_selects_what_a_stable_full_sort_would() -> None:
    """top_k partitions each row rather than sorting it whole; its lists must be the
    full sort's to the item, ties (in tie order), NaN (excluded) and infinities too."""
    from metarec.models.base import _first_k, tie_order

    rng = np.random.default_rng(0)
    for _ in range(500):
        rows, n = int(rng.integers(1, 5)), int(rng.integers(1, 30))
        keys = rng.integers(0, 4, size=(rows, n)).astype(np.float64)
        at = rng.random((rows, n))
        keys[at < 0.2], keys[at > 0.9], keys[(at > 0.8) & (at <= 0.9)] = np.nan, np.inf, -np.inf
        for k in {1, int(rng.integers(1, n + 1)), n}:
            full = np.argsort(keys, axis=1, kind="stable")[:, :k]
            assert _first_k(keys, k).tolist() == full.tolist(), (keys, k)
    scores = np.round(rng.normal(size=(3, 50)), 1)  # many ties
    ties = tie_order(50)
    full = ties[np.argsort(-scores[:, ties], axis=1, kind="stable")[:, :10]]
    assert top_k(scores, 10).tolist() == full.tolist()


class SupportFirst(ScoringModel):
    """Scores each user's support items highest of all, their liked query items next."""

    name = "support-first"

    def fit(self, data: TrainingData) -> SupportFirst:
        return self

    @property
    def n_items(self) -> int:
        return 30

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = np.zeros((len(tasks), self.n_items))
        for i, t in enumerate(tasks):
            out[i, t.query_items[t.query_ratings >= 4]] = 1.0
            out[i, t.support_items] = 2.0
        return out


def test_p2_never_lists_a_users_own_support_items() -> None:
    # without exclude_seen the support items, rated before the test, would fill the top 3
    # of 5. Each user rates 8 items in turn, the first 3 with 2 stars, the last 5 with 5:
    # at K = 3 the five liked items are the query, and listed alone they score nDCG@5 1
    rows = [(f"u{u}", f"i{(u + j) % 30}", 5.0 if j >= 3 else 2.0, j)
            for u in range(5) for j in range(8)]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    index = {f"i{i}": i for i in range(30)}
    res = evaluate_p2({"support-first": SupportFirst()}, frame, index, shots=(3,), k=5)
    assert res["summary"]["3"]["support-first"]["ndcg@5"] == pytest.approx(1.0)


def test_a_user_with_no_rating_left_for_the_query_has_no_task() -> None:
    # a user with exactly K ratings: an empty query judges nothing, and counted in
    # n_users it would say more users were scored than were
    frame = pd.DataFrame(
        {
            "user_id": ["a"] * 3 + ["b"] * 4,
            "item_id": ["x", "y", "z", "x", "y", "z", "w"],
            "rating": [5.0, 4.0, 3.0, 5.0, 4.0, 3.0, 2.0],
            "timestamp": [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0],
        }
    )
    index = {"x": 0, "y": 1, "z": 2, "w": 3}
    tasks, ids = shot_tasks(frame, index, 3)
    assert ids == ["b"]
    assert tasks[0].support_items.tolist() == [0, 1, 2] and tasks[0].query_items.tolist() == [3]
    assert shot_tasks(frame, index, 2)[1] == ["a", "b"]


def test_one_time_for_every_rating_orders_nothing(ds) -> None:
    # "time" order was then the ids' order as text: each user's alphabetically first
    # items as the support, without a word; drawn at random as without times instead
    from metarec.data.schema import has_timestamps

    split = make_p2_split(ds, seed=0)
    index = {item: i for i, item in enumerate(ds.items["item_id"].astype(str))}
    untimed = split.frames["test"].drop(columns="timestamp")
    one_time = untimed.assign(timestamp=1e9)
    assert not has_timestamps(one_time) and has_timestamps(split.frames["test"])

    def supports(frame: pd.DataFrame, seed: int) -> list[list[int]]:
        return [t.support_items.tolist() for t in shot_tasks(frame, index, 5, seed=seed)[0]]

    assert supports(one_time, 3) == supports(untimed, 3) != supports(one_time, 4)


class _ByIndex(SupportFirst):
    """The catalogue in index order, whoever the user is."""

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        return np.tile(-np.arange(self.n_items, dtype=np.float64), (len(tasks), 1))


def test_liked_is_the_top_quarter_of_the_scale_unless_given() -> None:
    """evaluate_p2 (and evaluate_p1) counted a rating of 4 or more as liked on any
    scale: on 2-10 stars, 4 of 10 was a hit. Now the top quarter, as run_benchmark's."""
    rows = [(f"u{u}", f"i{j}", float(2 + 2 * ((j + u) % 5)), j)
            for u in range(6) for j in range(12)]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    index = {f"i{i}": i for i in range(30)}

    def precision(**given: Any) -> float:
        res = evaluate_p2({"m": _ByIndex()}, frame, index, shots=(2,), k=5, **given)
        return float(res["summary"]["2"]["m"]["precision@5"])

    assert precision() == precision(like_threshold=8.0) == precision(rating_range=(2.0, 10.0))
    assert precision() == pytest.approx(0.4) and precision(like_threshold=4.0) == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="like_threshold must be a number"):
        precision(like_threshold="4")

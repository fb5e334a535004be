"""Users as tasks: CSR grouping, support/query splits, padded batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.data.tasks import Order, Task, UserRatings, collate, fixed_tasks, sample_episodes
from metarec.errors import ConfigError


@pytest.fixture()
def ratings() -> UserRatings:
    rows = [("a", str(i), float(1 + i % 5), 100.0 - i) for i in range(20)]
    rows += [("b", str(i), 4.0, float(i)) for i in range(5, 17)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return UserRatings.from_frame(frame, {str(i): i for i in range(30)})


def test_grouping(ratings: UserRatings) -> None:
    assert list(ratings.user_ids) == ["a", "b"]
    assert list(ratings.counts()) == [20, 12]
    items, r, _ = ratings.history(1)
    assert set(items) == set(range(5, 17)) and (r == 4.0).all()


def test_fixed_tasks_by_time_put_latest_in_query(ratings: UserRatings) -> None:
    tasks = fixed_tasks(ratings, query_size=10, order="time")
    a, b = tasks
    # user a's timestamps fall with the item index: the latest ratings are items 0..9
    assert sorted(a.query_items) == list(range(10)) and sorted(a.support_items) == list(
        range(10, 20)
    )
    assert list(b.support_items) == [5, 6] and len(b.query_items) == 10


def test_a_rating_without_a_time_is_the_oldest_in_time_order() -> None:
    """Last, it was held out as the user's latest rating: in P2's and P4's queries."""
    from metarec.data.tasks import ordered

    items = np.array([0, 1, 2, 3])
    ts = np.array([30.0, np.nan, 10.0, 20.0])
    got, _ = ordered(items, items.astype(np.float32), ts, "time", np.random.default_rng(0))
    assert got.tolist() == [1, 2, 3, 0]
    # one known time and a blank are an order too (the guard counted known times only)
    for seed in range(10):
        got, _ = ordered(items[:2], items[:2], ts[:2], "time", np.random.default_rng(seed))
        assert got.tolist() == [1, 0]
    # blanks alone are no order: shuffled, as a user without times
    blank = np.full(4, np.nan)
    drawn = {
        tuple(ordered(items, items, blank, "time", np.random.default_rng(s))[0].tolist())
        for s in range(10)
    }
    assert len(drawn) > 1


def test_fixed_tasks_shuffle_is_seeded_and_disjoint(ratings: UserRatings) -> None:
    one = fixed_tasks(ratings, query_size=10, seed=1)
    two = fixed_tasks(ratings, query_size=10, seed=1)
    other = fixed_tasks(ratings, query_size=10, seed=2)
    assert all(np.array_equal(x.query_items, y.query_items) for x, y in zip(one, two, strict=True))
    assert not np.array_equal(one[0].query_items, other[0].query_items)
    for t in one:
        assert not set(t.support_items) & set(t.query_items)
    assert len(fixed_tasks(ratings, query_size=10, min_support=3)) == 1  # b has only 2 left


def test_episodes_cover_support_range(ratings: UserRatings) -> None:
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(30):
        for t in sample_episodes(ratings, rng, min_support=1, max_support=5, query_size=None):
            sizes.add(len(t.support_items))
            assert 1 <= len(t.support_items) <= 5
            n = ratings.counts()[t.user]
            assert len(t.support_items) + len(t.query_items) == n  # query = all the rest
    assert sizes == {1, 2, 3, 4, 5}
    fixed_q = sample_episodes(ratings, rng, min_support=1, max_support=5, query_size=4)
    assert all(len(t.query_items) == 4 for t in fixed_q)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"query_size": 0}, "query_size"),
        ({"query_size": -3}, "query_size"),
        ({"query_size": 2.5}, "query_size"),
        ({"query_size": 4, "seed": -1}, "seed"),
        ({"query_size": 4, "min_support": -1}, "min_support"),
        ({"query_size": 4, "min_support": 3, "max_support": 2}, "max_support"),
    ],
)
def test_fixed_tasks_name_a_bad_count(
    ratings: UserRatings, kwargs: dict[str, object], named: str
) -> None:
    # an empty query set was made without a word, a negative seed was numpy's bare error
    with pytest.raises(ConfigError, match=named):
        fixed_tasks(ratings, **kwargs)  # type: ignore[arg-type]


def test_episodes_name_a_support_range_upside_down(ratings: UserRatings) -> None:
    # supports of 3 were drawn for min_support=5
    with pytest.raises(ConfigError, match="max_support"):
        sample_episodes(
            ratings, np.random.default_rng(0), min_support=5, max_support=3, query_size=None
        )
    with pytest.raises(ConfigError, match="query_size"):
        sample_episodes(
            ratings, np.random.default_rng(0), min_support=1, max_support=3, query_size=0
        )


def test_collate_pads_and_masks() -> None:
    tasks = [
        Task(0, np.array([1, 2, 3]), np.array([5.0, 4.0, 3.0]), np.array([7]), np.array([2.0])),
        Task(1, np.array([4]), np.array([1.0]), np.array([8, 9]), np.array([3.0, 4.0])),
    ]
    b = collate(tasks, user_features=np.array([[1, 2], [3, 4]]))
    assert b.support_items.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert b.support_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b.query_y.tolist() == [[2.0, 0.0], [3.0, 4.0]]
    assert b.user_features.tolist() == [[1, 2], [3, 4]]


def test_collate_implicit_objectives() -> None:
    rng = np.random.default_rng(0)
    task = Task(0, np.array([1, 2, 3]), np.array([5.0, 2.0, 4.0]), np.array([4]), np.array([5.0]))
    pool = np.arange(50)
    bce = collate([task], objective="bce", negatives=2, negative_pool=pool, rng=rng)
    labels = bce.support_y[0][bce.support_mask[0] > 0]
    assert labels.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # items 1 and 3 liked, 4 negatives
    negatives = bce.support_items[0, 2:6]
    assert not set(negatives.tolist()) & {1, 2, 3}  # never an item of the support
    query_negatives = bce.query_items[0][(bce.query_mask[0] > 0) & (bce.query_y[0] == 0)]
    assert not set(query_negatives.tolist()) & {1, 2, 3, 4}  # nor of the query, for the query
    bpr = collate([task], objective="bpr", negative_pool=pool, rng=rng)
    half = bpr.support_items.shape[1] // 2
    assert bpr.support_items[0, :half].tolist() == [1, 3]
    assert torch.equal(bpr.support_mask[0, :half], bpr.support_mask[0, half:])


def test_the_support_side_does_not_depend_on_the_query() -> None:
    # a user adapted in service has no query: its items shaped the support's negatives
    # in training and early stopping, so the adapted user depended on what it predicts
    pool = np.arange(12)
    support = (np.array([0, 1, 2]), np.array([5.0, 5.0, 5.0]))
    for objective in ("bce", "bpr"):
        batches = [
            collate(
                [Task(0, *support, np.array(query), np.array([5.0, 5.0, 5.0]))],
                objective=objective,
                negatives=4,
                negative_pool=pool,
                rng=lambda t: np.random.default_rng([t.user, 7]),
            )
            for query in ([3, 4, 5], [9, 10, 11])
        ]
        assert torch.equal(batches[0].support_items, batches[1].support_items), objective
        assert torch.equal(batches[0].support_y, batches[1].support_y), objective


def test_a_side_of_one_low_rating_is_not_liked() -> None:
    # explicit stars: a support of a single 1-star rating (or a query of 1s) was taken for
    # implicit data and every rating labelled a like
    pool = np.arange(50)
    task = Task(0, np.array([3]), np.array([1.0]), np.array([5, 6]), np.array([1.0, 1.0]))
    b = collate(
        [task],
        objective="bce",
        like_threshold=4.0,
        negative_pool=pool,
        rng=np.random.default_rng(0),
    )
    assert float(b.support_y.sum()) == 0.0 and float(b.query_y.sum()) == 0.0
    # implicit data has the one value as its scale, so its threshold makes it a like
    clicks = Task(0, np.array([3]), np.array([1.0]), np.array([5, 6]), np.array([1.0, 1.0]))
    c = collate(
        [clicks],
        objective="bce",
        like_threshold=1.0,
        negative_pool=pool,
        rng=np.random.default_rng(0),
    )
    assert float(c.support_y.sum()) == 1.0 and float(c.query_y.sum()) == 2.0


def test_time_ordered_episodes_support_is_first_ratings(ratings: UserRatings) -> None:
    rng = np.random.default_rng(0)
    for _ in range(10):
        for t in sample_episodes(
            ratings, rng, min_support=1, max_support=5, query_size=None, order="time"
        ):
            items, _, stamps = ratings.history(t.user)
            by_time = items[np.argsort(stamps, kind="stable")]
            k = len(t.support_items)
            assert list(t.support_items) == list(by_time[:k])  # the first k ratings
            assert list(t.query_items) == list(by_time[k:])  # everything after
    nxt = sample_episodes(
        ratings, np.random.default_rng(1), min_support=2, max_support=2, query_size=3, order="time"
    )
    a = nxt[0]  # user a's timestamps fall with the index: first ratings are items 19, 18
    assert list(a.support_items) == [19, 18] and list(a.query_items) == [17, 16, 15]


def test_support_only_takes_catalogue_indices_and_numbers() -> None:
    # cast to int64, the id "1" became index 1 (the item with id "2") and 0.7 became 0
    from metarec.errors import DataError

    for items in (["1"], [0.7], [-1], [True]):
        with pytest.raises(DataError, match=r"items: expected catalogue indices .*resolve"):
            Task.support_only(items, [4.0])
    with pytest.raises(DataError, match="ratings: expected numbers"):
        Task.support_only([0], ["4"])
    task = Task.support_only([0, 2.0], [4, 3])
    assert task.support_items.tolist() == [0, 2] and task.support_items.dtype == np.int64
    assert task.support_ratings.dtype == np.float32
    assert len(Task.support_only([], []).support_items) == 0


def test_ids_and_timestamps_of_the_wrong_kind_are_named() -> None:
    from metarec.errors import DataError, UnknownItemError

    index = {"18": 0, "19": 1}
    frame = pd.DataFrame({"user_id": ["a", "a"], "item_id": ["18", "19"], "rating": [4.0, 2.0]})
    # numbers for text ids: "unknown item '18'" of a catalogue that holds "18"
    with pytest.raises(DataError, match=r"item_id 18 is a number .*ids are text"):
        UserRatings.from_frame(frame.assign(item_id=[18, 19]), index)
    with pytest.raises(UnknownItemError, match="'20'"):  # truly unknown: as before
        UserRatings.from_frame(frame.assign(item_id=["18", "20"]), index)
    # dates where seconds are read: a ValueError from inside pandas
    dated = frame.assign(timestamp=["2020-01-01", "2020-01-02"])
    with pytest.raises(DataError, match=r"timestamp: row 0: '2020-01-01' is not a number"):
        UserRatings.from_frame(dated, index)
    with pytest.raises(DataError, match="timestamp: row 0"):
        UserRatings.from_frame(frame.assign(timestamp=pd.to_datetime(["2020-01-01"] * 2)), index)
    seconds = UserRatings.from_frame(frame.assign(timestamp=[5, None]), index)
    assert seconds.timestamps[0] == 5 and np.isnan(seconds.timestamps[1])


def test_tasks_do_not_depend_on_row_order() -> None:
    """The same ratings in another row order, or beside another user, give each user
    the same task: shuffled (P1) and in time order with ties in time (P2's first K)."""
    rng = np.random.default_rng(0)
    rows = [(u, str(i), float(rng.integers(1, 6)), float(rng.integers(0, 5)))
            for u in "abcd" for i in rng.choice(30, 12, replace=False)]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    index = {str(i): i for i in range(30)}

    def query_sets(data: pd.DataFrame, order: Order = "shuffle") -> dict[str, list[int]]:
        ratings = UserRatings.from_frame(data, index)
        tasks = fixed_tasks(ratings, query_size=4, seed=1, order=order)
        return {str(ratings.user_ids[t.user]): t.query_items.tolist() for t in tasks}

    assert frame.duplicated(["user_id", "timestamp"]).sum() > 10  # ties in time to break
    for order in ("shuffle", "time"):
        whole = query_sets(frame, order)
        assert query_sets(frame.sample(frac=1, random_state=3), order) == whole
        assert query_sets(frame[frame["user_id"] != "a"], order)["b"] == whole["b"]

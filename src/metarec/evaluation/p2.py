"""Protocol P2: few-shot full-catalogue ranking — what a product shows a new user.

* Users with at least ``min_ratings`` (25) ratings; a seeded 80/10/10 split
  of them into meta-train / validation / test users. With ``n_folds`` the
  test users are fold ``fold`` of a seeded partition (protocol P3) and
  validation is a seeded 1/8 of the rest (≈ 10 % of all users), drawn afresh
  for each fold.
* Per test user, ratings sorted by time (ties by item id, compared as text:
  the order of the rows does not matter); support = the
  first K ratings for K in {0, 1, 3, 5, 10, 20}; test = the rest.
* Every catalogue item outside the support set is ranked. Relevant = test
  items rated >= ``like_threshold``.
* Metrics @10 (see :mod:`metarec.evaluation.metrics`): ndcg, recall,
  precision, f1, hit, mrr per user, and catalogue coverage of all top-10 lists.

Meta-training sees the training users' full histories. A split is saved as
user ids only, so it can be re-applied to the same data anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from metarec.data.cleaning import require_dataset
from metarec.data.columns import check_frame, plain, repeated_rating
from metarec.data.features import user_rows
from metarec.data.schema import Dataset, threshold_or_scale
from metarec.data.tasks import (
    Task,
    UserRatings,
    liked_query_items,
    ordered,
    read_only,
    user_stream,
)
from metarec.errors import ConfigError, DataError, InputError
from metarec.evaluation.metrics import coverage, ranking_table, summarise
from metarec.evaluation.splits import SplitFile, check_folds, data_digest
from metarec.models.base import ScoringModel, check_seed, check_whole
from metarec.values import is_whole

SHOTS = (0, 1, 3, 5, 10, 20)
TOP_K = 10


@dataclass
class P2Split(SplitFile):
    """P2's users drawn for one data set and seed: training, validation and test users
    (each test user's support is their first K ratings in time, the rest the query),
    written to and read from a file (:meth:`save`, :meth:`load`) so a run is repeatable
    elsewhere; ``frames`` holds each part's ratings."""

    protocol: ClassVar[str] = "p2"
    held_out: ClassVar[str] = "test_users"
    rule_before_recorded: ClassVar[dict[str, int]] = {"min_ratings": 25}

    dataset: str
    seed: int
    train_users: list[str]
    validation_users: list[str]
    test_users: list[str]
    fold: int | None = None
    n_folds: int | None = None
    min_ratings: int = 25  # every user has at least this many ratings
    data_digest: str | None = None  # the ratings it was drawn from (splits.data_digest)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def rebuild_frames(self, interactions: pd.DataFrame) -> dict[str, pd.DataFrame]:
        return _frames(interactions, self)

    def rating_bounds(self) -> tuple[int, int | None]:
        return self.min_ratings, None


def eligible_users(dataset: Dataset, min_ratings: int = 25) -> np.ndarray:
    require_dataset(dataset)
    check_whole(min_ratings, "min_ratings", 1)  # "25" was a raw TypeError, -1 and 2.5 taken
    counts = dataset.interactions.groupby("user_id").size()
    return np.sort(counts[counts >= min_ratings].index.astype(str).to_numpy())


def make_p2_split(
    dataset: Dataset,
    seed: int = 0,
    *,
    min_ratings: int = 25,
    n_folds: int | None = None,
    fold: int | None = None,
) -> P2Split:
    """80/10/10 users, or fold ``fold`` of ``n_folds`` as the test users (P3)."""
    require_dataset(dataset)  # a bare frame was an AttributeError on .interactions
    check_folds(n_folds, fold)
    check_seed(seed)
    min_ratings = check_whole(min_ratings, "min_ratings", 1)  # recorded in the split file
    users = np.random.default_rng(seed).permutation(eligible_users(dataset, min_ratings))
    if len(users) < 10:
        raise DataError(
            f"P2 needs at least 10 users with >= {min_ratings} ratings; {dataset.name} has "
            f"{len(users)}"
        )
    if n_folds is None:
        n_test = n_val = round(0.1 * len(users))
        test, val, train = users[:n_test], users[n_test : n_test + n_val], users[n_test + n_val :]
    else:
        assert fold is not None  # checked on entry
        parts = np.array_split(users, n_folds)
        test = parts[fold]
        rest = np.concatenate([p for i, p in enumerate(parts) if i != fold])
        n_val = round(len(rest) / 8)
        # A fresh seeded draw per fold. Taking the head of ``rest`` (as runs before
        # 2026-11-30 did) gave folds 1 to k-1 the same validation users, all of them
        # fold 0's test users; so anything tuned on "every fold's validation users"
        # was tuned mostly on fold 0's test set.
        order = np.random.default_rng([seed, fold]).permutation(len(rest))
        val, train = rest[order[:n_val]], rest[order[n_val:]]
    split = P2Split(
        dataset.name,
        seed,
        sorted(train.tolist()),
        sorted(val.tolist()),
        sorted(test.tolist()),
        fold,
        n_folds,
        min_ratings,
        data_digest(dataset.interactions),
    )
    split.frames = _frames(dataset.interactions, split)
    return split


def _frames(inter: pd.DataFrame, split: P2Split) -> dict[str, pd.DataFrame]:
    uid = inter["user_id"].astype(str)
    return {
        name: inter[uid.isin(set(ids))]
        for name, ids in (
            ("train", split.train_users),
            ("validation", split.validation_users),
            ("test", split.test_users),
        )
    }


def shot_tasks(
    frame: pd.DataFrame, index: Mapping[str, int], k: int, *, seed: int = 0
) -> tuple[list[Task], list[str]]:
    """One task per user: support = first ``k`` ratings by time, query = the rest. A user
    without timestamps has them in an order drawn by ``seed`` and the user's id (the
    run's seed: every seed drew seed 0's)."""
    check_seed(seed, "shot_tasks: seed")
    # k = -1 would slice off the last rating as the query, silently: not a support size
    if not is_whole(k) or k < 0:
        raise ConfigError(f"shot_tasks: k must be a whole number >= 0 (0: zero-shot), got {k!r}")
    check_frame(frame, "shot_tasks", ("user_id", "item_id", "rating"))
    if not isinstance(index, Mapping):
        # refused, not converted: an Index (or a Series of ids) runs position -> id, the
        # other way round from the id -> position every reader of an item index takes
        raise InputError(
            f"shot_tasks: index must be a mapping of item id to catalogue position (as "
            f"Catalogue.index gives), got {type(index).__name__}"
        )
    rating = pd.to_numeric(frame["rating"], errors="coerce")
    bad = ~np.isfinite(rating.to_numpy(dtype=np.float64))
    if bad.any():
        # a NaN rating was kept in the support set, where a model reads it as a rating
        i = int(np.flatnonzero(bad)[0])
        row, value = plain(frame.index[i]), plain(frame["rating"].iloc[i])
        raise InputError(
            f"shot_tasks: the rating in row {row!r} is {value!r:.40}; ratings must "
            f"be finite numbers ({int(bad.sum())} of {len(frame)} are not)"
        )
    repeated = repeated_rating(frame)
    if repeated is not None:
        # its later rating became a query item the ranking could never show (it is in
        # the support), so recall and nDCG could not reach 1
        user, item, rows = repeated
        raise InputError(
            f"shot_tasks: user {user!r} rated item {item!r} more than once (rows "
            f"{rows[0]!r} and {rows[1]!r}); keep one rating per user and item "
            "(metarec.clean keeps the latest)"
        )
    ur = UserRatings.from_frame(frame, index)
    tasks, ids = [], []
    for row in range(len(ur)):
        # the stream shuffles only a user with no timestamps
        items, ratings = ordered(*ur.history(row), "time", user_stream(seed, ur.user_ids[row]))
        if len(items) <= k:
            continue
        tasks.append(Task(row, items[:k], ratings[:k], items[k:], ratings[k:]))
        ids.append(str(ur.user_ids[row]))
    return read_only(tasks), ids  # no model judged on them can write into them


def evaluate_p2(
    models: Mapping[str, ScoringModel],
    frame: pd.DataFrame,
    index: Mapping[str, int],
    users: pd.DataFrame | None = None,
    *,
    shots: Sequence[int] = SHOTS,
    k: int = TOP_K,
    like_threshold: float | None = None,
    seed: int = 0,
    rating_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """``{"summary": {K: {model: {metric: mean}}}, "per_user": {K: {model: {metric: [..]}}},
    "n_users": {K: n}}`` — K as a string key (JSON). ``seed``: the order of a user
    without timestamps (:func:`shot_tasks`). ``like_threshold``: the rating at or above
    which a later item is relevant; by default the top quarter of ``rating_range``, or
    of ``frame``'s lowest and highest rating without one (4 on MovieLens' 1-5 stars;
    give the data set's ``rating_range`` where ``frame`` may not reach both ends)."""
    like_threshold = threshold_or_scale(
        like_threshold, rating_range, [frame["rating"]], "evaluate_p2"
    )
    summary: dict[str, dict[str, dict[str, float]]] = {}
    per_user: dict[str, dict[str, dict[str, list[float]]]] = {}
    n_users: dict[str, int] = {}
    n_items = len(index)
    for shot in shots:
        tasks, ids = shot_tasks(frame, index, shot, seed=seed)
        key = str(shot)
        n_users[key] = len(tasks)
        if not tasks:
            continue
        rows = user_rows(users, ids)
        relevant = liked_query_items(tasks, like_threshold)
        summary[key], per_user[key] = {}, {}
        for name, model in models.items():
            top = model.recommend(tasks, k, rows, exclude_seen=True)
            table = ranking_table(top, relevant, k)
            means = summarise(table)
            means[f"itemcoverage@{k}"] = coverage(top, n_items)
            summary[key][name] = means
            per_user[key][name] = {m: v.tolist() for m, v in table.items()}
    return {"summary": summary, "per_user": per_user, "n_users": n_users}

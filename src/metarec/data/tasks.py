"""Users as tasks: support/query episodes and padded batches with masks.

A *task* is one user's ratings split into a support set (what the model may
adapt on) and a query set (what it is judged on). Batches pad every task to
the longest one and carry masks, so a whole batch of users goes through
``vmap`` in one call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from metarec.data.columns import not_index, plain
from metarec.errors import DataError, UnknownItemError
from metarec.values import check_whole, rated_at_least

Order = Literal["time", "shuffle"]


def _timestamps(column: pd.Series) -> np.ndarray:
    """A timestamp column as float seconds (NaN where missing), or a DataError naming the
    first value that is none: a column of dates was a ValueError from deep in pandas."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(values) & column.notna().to_numpy()
    if bad.any() or isinstance(column.dtype, pd.DatetimeTZDtype) or column.dtype.kind in "mMb":
        at = int(np.flatnonzero(bad)[0]) if bad.any() else 0
        raise DataError(
            f"timestamp: row {plain(column.index[at])!r}: {plain(column.iloc[at])!r:.40} is "
            "not a number of "
            "seconds since 1970; metarec.clean reads dates and other units"
        )
    return values


@dataclass(frozen=True)
class UserRatings:
    """Ratings grouped by user in CSR form (one contiguous slice per user).

    Users are in id order and each user's ratings in time order, ties (and unknown
    times, last) broken by item id: the same ratings in any row order are the same
    ``UserRatings``, so every task drawn from them is the same too."""

    user_ids: np.ndarray  # object array of user keys, one per row slice
    offsets: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int64 catalogue indices
    ratings: np.ndarray  # float32
    timestamps: np.ndarray  # float64, NaN where unknown

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, item_index: Mapping[str, int]) -> UserRatings:
        """Group ``frame`` (user_id, item_id, rating[, timestamp]) by user.

        Rows whose item is not in ``item_index`` are an error upstream (cleaning
        drops them), so a KeyError here means a bug, not bad input.
        """
        ts = (
            _timestamps(frame["timestamp"]) if "timestamp" in frame else np.full(len(frame), np.nan)
        )
        # A canonical order within each user (time, then item id, then rating), not the
        # file's: ties in time were broken by row position, so the same ratings in another
        # row order gave other support sets and other benchmark figures.
        # (sorted codes, not the strings: half the time on ml-1m; NaN times sort last)
        user_codes, uniques = pd.factorize(frame["user_id"], sort=True)
        item_codes = pd.factorize(frame["item_id"].astype(str), sort=True)[0]
        ratings = pd.to_numeric(frame["rating"], errors="coerce").to_numpy(np.float64)
        order = np.lexsort((ratings, item_codes, ts, user_codes))
        frame, ts = frame.iloc[order], ts[order]
        counts = np.bincount(user_codes, minlength=len(uniques))
        offsets = np.zeros(len(uniques) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        items = frame["item_id"].map(item_index).to_numpy()
        if pd.isna(items).any():
            missing = frame.loc[pd.isna(items), "item_id"].iloc[0]
            if not isinstance(missing, str) and str(missing) in item_index:
                # "unknown item '18'" of a catalogue that holds "18" named no cause
                raise DataError(
                    f"item_id {plain(missing)!r} is a number ({type(missing).__name__}), and "
                    f"the catalogue's ids are text ({plain(missing)!r} and {str(missing)!r} "
                    "differ): write the ids as text, as metarec.clean and the loaders do"
                )
            raise UnknownItemError(str(missing))  # a KeyError too, for callers that catch it
        return cls(
            user_ids=np.asarray(uniques, dtype=object),
            offsets=offsets,
            items=items.astype(np.int64),
            ratings=frame["rating"].to_numpy(dtype=np.float32),
            timestamps=ts,
        )

    def __len__(self) -> int:
        return len(self.user_ids)

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def history(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = self.offsets[row], self.offsets[row + 1]
        return self.items[lo:hi], self.ratings[lo:hi], self.timestamps[lo:hi]


@dataclass(frozen=True)
class Task:
    """One user's episode; ``user`` is the row in :class:`UserRatings`."""

    user: int
    support_items: np.ndarray
    support_ratings: np.ndarray
    query_items: np.ndarray
    query_ratings: np.ndarray

    @classmethod
    def support_only(cls, items: Any, ratings: Any, user: int = 0) -> Task:
        """A user known only by a support set, with an empty query: what adaptation
        and scoring take. Float ratings keep their dtype; anything else is float32."""
        given = np.asarray(items)
        # cast, "1" (an id) became index 1, another item, and 0.7 became 0
        if given.size and (
            given.dtype.kind not in "iuf" or bool(not_index(given.astype(np.float64)).any())
        ):
            raise DataError(
                f"Task.support_only: items: expected catalogue indices (whole numbers >= 0; "
                f"rec.resolve(item_id) gives an item's), got {given.tolist()[:5]!r:.80}"
            )
        ratings = np.asarray(ratings)
        if ratings.size and ratings.dtype.kind not in "iuf":
            raise DataError(
                f"Task.support_only: ratings: expected numbers, got {ratings.tolist()[:5]!r:.80}"
            )
        items = given.astype(np.int64)
        if not np.issubdtype(ratings.dtype, np.floating):
            ratings = ratings.astype(np.float32)
        return cls(user, items, ratings, items[:0], ratings[:0])


def read_only(tasks: Sequence[Task]) -> list[Task]:
    """``tasks`` with arrays no model can write into (read-only views of the same data).

    What a benchmark and the conformance checks hand the models they judge: a model
    that centred the support ratings in place changed every later model's input, and
    one that wrote its predictions into ``query_ratings`` scored MAE 0, as the answers
    it was judged against were its own. Writing raises ``ValueError: assignment
    destination is read-only`` at the line that does it instead."""

    def frozen(values: np.ndarray) -> np.ndarray:
        view = values.view()
        view.flags.writeable = False
        return view

    return [
        Task(
            t.user,
            frozen(t.support_items),
            frozen(t.support_ratings),
            frozen(t.query_items),
            frozen(t.query_ratings),
        )
        for t in tasks
    ]


def wrote_into_read_only(exc: BaseException) -> bool:
    """Whether ``exc`` is numpy's refusal to write into a :func:`read_only` array
    ("assignment destination is read-only", "output array is read-only")."""
    return isinstance(exc, ValueError) and "read-only" in str(exc)


def liked_query_items(tasks: Sequence[Task], threshold: float) -> list[np.ndarray]:
    """Per task, the query items rated >= ``threshold``: what a ranking should find
    (P2's relevant items, the A/B test's successes, the ensemble's ranking weights)."""
    return [t.query_items[rated_at_least(t.query_ratings, threshold)] for t in tasks]


def user_stream(seed: int, user_id: object) -> np.random.Generator:
    """A generator for one user's draw, seeded by ``seed`` and the user's id alone.

    One stream drawn through the users in turn gave a user another task when a user
    before them came or went (a fold with a user more, a file with one dropped)."""
    key = hashlib.blake2b(str(user_id).encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(key, "little")])


def ordered(
    items: np.ndarray,
    ratings: np.ndarray,
    timestamps: np.ndarray,
    order: Order,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Items and ratings in time order or shuffled by ``rng``.

    Ties in time keep the order they come in, which :class:`UserRatings` makes
    canonical: by item id. A rating without a time comes first, as the oldest (as
    cleaning's rule for duplicates has it): last, it was held out as the latest. A
    user whose ratings all carry one time (or none) has no order in time, and is
    shuffled as well: "time" order was then the item ids' order as text, a support
    of one's alphabetically first items, without a word."""
    known = ~np.isnan(timestamps)
    # a blank time is a time of its own, before every other: one known time and a
    # blank are an order; blanks alone are none
    times = len(np.unique(timestamps[known])) + int(not known.all())
    if order == "time" and known.any() and times > 1:
        idx = np.argsort(np.nan_to_num(timestamps, nan=-np.inf), kind="stable")
    else:
        idx = rng.permutation(len(items))
    return items[idx], ratings[idx]


def fixed_tasks(
    ur: UserRatings,
    *,
    query_size: int,
    order: Order = "shuffle",
    seed: int = 0,
    min_support: int = 1,
    max_support: int | None = None,
) -> list[Task]:
    """One task per user: the last ``query_size`` ratings are the query set.

    This is the MeLU/P1 split when ``order="shuffle"``. Users left with fewer
    than ``min_support`` support ratings are skipped. Each user's shuffle is drawn by
    :func:`user_stream`, so a user's task is the same whichever other users the
    data holds.
    """
    check_whole(query_size, "fixed_tasks: query_size", 1)
    check_whole(seed, "fixed_tasks: seed", 0)
    check_whole(min_support, "fixed_tasks: min_support", 0)
    if max_support is not None:
        check_whole(max_support, "fixed_tasks: max_support", max(min_support, 1))
    tasks = []
    for row in range(len(ur)):
        rng = user_stream(seed, ur.user_ids[row])
        items, ratings = ordered(*ur.history(row), order, rng)
        n_support = len(items) - query_size
        if n_support < min_support:
            continue
        s_end = n_support if max_support is None else min(n_support, max_support)
        tasks.append(
            Task(row, items[:s_end], ratings[:s_end], items[n_support:], ratings[n_support:])
        )
    return tasks


def sample_episodes(
    ur: UserRatings,
    rng: np.random.Generator,
    *,
    min_support: int,
    max_support: int,
    query_size: int | None,
    rows: Sequence[int] | None = None,
    order: Order = "shuffle",
) -> list[Task]:
    """Fresh meta-training episodes: per user, a random support size and split.

    Varying the support size during meta-training is what lets one model
    serve users with 1 rating and users with 40. ``query_size=None`` makes
    every rating outside the support a query rating, so each epoch uses all
    the training data for the outer update instead of 10 ratings a user.

    ``order="shuffle"`` draws support and query at random (the P1/MeLU
    setting). ``order="time"`` trains as a product is used: the support is
    the user's *first* k ratings and the query what they rated afterwards
    (the next ``query_size``, or all of it). On time-ordered ml-100k a model
    trained on shuffled episodes ranks below popularity and the same model
    trained on time-ordered ones above it: a user's first ratings predict
    their later ones differently from how a random subset predicts the rest.
    """
    check_whole(min_support, "sample_episodes: min_support", 0)
    check_whole(max_support, "sample_episodes: max_support", max(min_support, 1))
    if query_size is not None:
        check_whole(query_size, "sample_episodes: query_size", 1)
    tasks = []
    lo = max(min_support, 1)
    for row in range(len(ur)) if rows is None else rows:
        items, ratings, stamps = ur.history(row)
        n = len(items)
        if n - lo < 1:
            continue
        if query_size is None:
            hi = min(max_support, n - 1)
            k = int(rng.integers(lo, hi + 1)) if hi > lo else hi
            q = n - k
        else:
            q = min(query_size, n - lo)
            hi = min(max_support, n - q)
            k = int(rng.integers(lo, hi + 1)) if hi > lo else hi
        if order == "time":
            items, ratings = ordered(items, ratings, stamps, "time", rng)
            s, qi = np.arange(k), np.arange(k, k + q)
        else:
            perm = rng.permutation(n)
            s, qi = perm[:k], perm[n - q :]
        tasks.append(Task(row, items[s], ratings[s], items[qi], ratings[qi]))
    return tasks


@dataclass
class TaskBatch:
    """Padded tensors for a batch of tasks.

    ``*_mask`` is 1.0 for real entries, 0.0 for padding. For the ``bpr``
    objective each side is laid out as ``[positives | negatives]`` of equal
    width, paired position by position.

    ``seen_items`` are every item of the support set, whatever its rating: the items
    the user already has, which the softmax objective leaves out of what comes next.
    They are the support side's items where that side holds them all (ratings, or
    every rated item a positive), and are given apart where it holds only the liked
    ones (``support_positives = "liked"``).
    """

    users: torch.Tensor  # [B] rows in UserRatings
    user_features: torch.Tensor  # [B, F] int64 codes, 0 = unknown
    support_items: torch.Tensor  # [B, S]
    support_y: torch.Tensor  # [B, S]
    support_mask: torch.Tensor  # [B, S]
    query_items: torch.Tensor  # [B, Q]
    query_y: torch.Tensor  # [B, Q]
    query_mask: torch.Tensor  # [B, Q]
    seen_items: torch.Tensor = None  # type: ignore[assignment]  # [B, N]; default: support
    seen_mask: torch.Tensor = None  # type: ignore[assignment]  # [B, N]

    def __post_init__(self) -> None:
        if (self.seen_items is None) != (self.seen_mask is None):
            raise ValueError("seen_items and seen_mask are given together")
        if self.seen_items is None:
            self.seen_items, self.seen_mask = self.support_items, self.support_mask

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(**{k: v.to(device) for k, v in vars(self).items()})

    def __len__(self) -> int:
        return int(self.users.shape[0])


def pad(rows: Sequence[np.ndarray], dtype: torch.dtype, width: int | None = None) -> torch.Tensor:
    width = max([len(r) for r in rows] + [1]) if width is None else width
    out = np.zeros((len(rows), width), dtype=np.float64 if dtype.is_floating_point else np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r[:width]
    return torch.as_tensor(out, dtype=dtype)


def _mask(rows: Sequence[np.ndarray], width: int) -> torch.Tensor:
    lengths = torch.as_tensor([min(len(r), width) for r in rows])
    return (torch.arange(width)[None, :] < lengths[:, None]).float()


def _implicit_side(
    items: np.ndarray,
    ratings: np.ndarray,
    seen: np.ndarray,
    *,
    like_threshold: float,
    negatives: int,
    pool: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, int]:
    # implicit data has its one value as its scale, so the scale's threshold likes every
    # interaction; a side of one low star rating (or of 1s) is no like (it was taken for
    # implicit data here, and a 1-star support adapted a user towards the film)
    liked = items[ratings >= like_threshold]
    n_neg = len(liked) * negatives
    cand = pool[rng.integers(0, len(pool), size=n_neg * 2 + 8)]
    cand = cand[~np.isin(cand, seen)][:n_neg]
    return (
        np.concatenate([liked, cand]),
        np.concatenate([np.ones(len(liked)), np.zeros(len(cand))]),
        len(liked),
    )


def collate(
    tasks: Sequence[Task],
    *,
    user_features: np.ndarray | None = None,
    objective: str = "rating",
    negatives: int = 4,
    like_threshold: float | None = 4.0,
    negative_pool: np.ndarray | None = None,
    rng: np.random.Generator | Callable[[Task], np.random.Generator] | None = None,
    support_positives: str = "liked",
) -> TaskBatch:
    """Pad ``tasks`` into a :class:`TaskBatch`.

    For ``rating`` the targets are the ratings. For ``bce`` the targets are 1
    for liked items and 0 for ``negatives`` sampled unseen items per liked
    item (from ``negative_pool``). For ``bpr``, one sampled negative is paired
    with each liked item. ``support_positives="rated"`` makes every support
    interaction a positive (what the user chose to rate says more about what
    they will rate next than the rating does); the query side always uses likes.
    """
    users = torch.as_tensor([t.user for t in tasks], dtype=torch.int64)
    feats = (
        torch.as_tensor(user_features[[t.user for t in tasks]], dtype=torch.int64)
        if user_features is not None and user_features.shape[1] > 0
        else torch.zeros((len(tasks), 0), dtype=torch.int64)
    )
    if objective == "rating":
        s_items = [t.support_items for t in tasks]
        s_y = [t.support_ratings for t in tasks]
        q_items = [t.query_items for t in tasks]
        q_y = [t.query_ratings for t in tasks]
        s_w = max([len(r) for r in s_items] + [1])
        q_w = max([len(r) for r in q_items] + [1])
        return TaskBatch(
            users,
            feats,
            pad(s_items, torch.int64, s_w),
            pad(s_y, torch.float32, s_w),
            _mask(s_items, s_w),
            pad(q_items, torch.int64, q_w),
            pad(q_y, torch.float32, q_w),
            _mask(q_items, q_w),
        )
    if negative_pool is None or rng is None or like_threshold is None:
        raise ValueError("implicit objectives need like_threshold, negative_pool and rng")
    # softmax scores positives against the whole catalogue: no sampled negatives
    n_neg = {"bpr": 1, "softmax": 0}.get(objective, negatives)
    sides: list[list[tuple[np.ndarray, np.ndarray, int]]] = [[], []]
    for t in tasks:
        # the support's negatives avoid the support alone, as a user adapted in service
        # has no query to avoid: they avoided the query too, so which items the query held
        # changed the adapted user in training and early stopping, and nowhere else. With
        # a generator of its own a task (rng(t)), its support is drawn first and its query
        # cannot move those draws; one generator shared by a batch (training) is noise
        # across tasks, not a bias.
        seen = (t.support_items, np.concatenate([t.support_items, t.query_items]))
        for side, (it, r) in enumerate(
            [(t.support_items, t.support_ratings), (t.query_items, t.query_ratings)]
        ):
            sides[side].append(
                _implicit_side(
                    it,
                    r,
                    seen[side],
                    like_threshold=(
                        -np.inf if side == 0 and support_positives == "rated" else like_threshold
                    ),
                    negatives=n_neg,
                    pool=negative_pool,
                    rng=rng(t) if callable(rng) else rng,
                )
            )
    out = []
    for rows in sides:
        if objective == "bpr":
            # [positives | negatives], each half padded to the widest positive count
            half = max([n for _, _, n in rows] + [1])
            items_rows, mask_rows = [], []
            for it, _, n_pos in rows:
                n_pair = min(n_pos, len(it) - n_pos)
                row = np.zeros(2 * half, dtype=np.int64)
                m = np.zeros(2 * half, dtype=np.float32)
                row[:n_pair], row[half : half + n_pair] = it[:n_pair], it[n_pos : n_pos + n_pair]
                m[:n_pair], m[half : half + n_pair] = 1.0, 1.0
                items_rows.append(row)
                mask_rows.append(m)
            items_t = torch.as_tensor(np.stack(items_rows))
            mask_t = torch.as_tensor(np.stack(mask_rows))
            y_t = torch.zeros_like(mask_t)
            y_t[:, :half] = 1.0
            out.append((items_t, y_t * mask_t, mask_t))
        else:
            w = max([len(it) for it, _, _ in rows] + [1])
            out.append(
                (
                    pad([it for it, _, _ in rows], torch.int64, w),
                    pad([y for _, y, _ in rows], torch.float32, w),
                    _mask([it for it, _, _ in rows], w),
                )
            )
    (si, sy, sm), (qi, qy, qm) = out
    if support_positives == "rated" and n_neg == 0:
        return TaskBatch(users, feats, si, sy, sm, qi, qy, qm)  # the support side holds all
    rated = [t.support_items for t in tasks]
    width = max([len(r) for r in rated] + [1])
    return TaskBatch(
        users, feats, si, sy, sm, qi, qy, qm, pad(rated, torch.int64, width), _mask(rated, width)
    )

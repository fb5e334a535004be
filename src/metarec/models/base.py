"""One small base class for every model metarec trains, evaluates, combines or serves.

A model is fitted on :class:`TrainingData` (the same object for every model in
a benchmark, so peers see exactly the same ratings, text vectors and user
features) and then answers one question: given a user's support set, what
score does every catalogue item get? Everything else — query-set
predictions for rating metrics, top-k lists, ensembles, A/B replays — is
built on :meth:`ScoringModel.score_catalogue`.

Items are catalogue indices (row ``i`` of :class:`~metarec.catalogue.Catalogue`);
users are :class:`~metarec.data.tasks.Task` objects whose support set is what
the model may adapt on and whose query set it must never look at.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from metarec.catalogue import Catalogue
from metarec.config import MAX_STEPS
from metarec.data.columns import not_index
from metarec.data.generic import check_rating_range
from metarec.data.schema import Dataset, check_like_threshold, like_threshold_for
from metarec.data.tasks import Task, UserRatings
from metarec.errors import ConfigError, DataError, ModelError, UnsupportedError
from metarec.inputs import check_rating_frame
from metarec.models.cutpoints import RatingCutpoints
from metarec.values import check_whole, is_number, is_whole, off_scale


class TaskPredictor(Protocol):
    """Anything that predicts each task's query ratings after adapting to its support
    set: every :class:`ScoringModel`, a :class:`~metarec.recommender.Recommender`. It
    says whether those predictions are ratings (P1's MAE and pooled corrections read
    them as such) or ranking scores."""

    @property
    def predicts_ratings(self) -> bool: ...

    def predict_tasks(self, tasks: list[Task], users: Any = None) -> list[np.ndarray]: ...


@dataclass
class TrainingData:
    """What a model is fitted on.

    ``interactions``: training users' rows (user_id, item_id, rating[, timestamp]);
    ``validation``: other users' rows for early stopping and weight tuning;
    ``users``: side features (user_id + columns) or None. Items never rated in
    ``interactions`` are *new*: a model scores them from text or not at all.
    ``seed``: the run's seed, for what a model derives from the data (a benchmark
    sets it); a model's own randomness comes from the ``seed`` it is built with,
    which the conformance checks vary.
    """

    interactions: pd.DataFrame
    catalogue: Catalogue
    users: pd.DataFrame | None = None
    validation: pd.DataFrame | None = None
    rating_range: tuple[float, float] = (1.0, 5.0)
    seed: int = 0

    def __post_init__(self) -> None:
        # checked once here, for every model: a peer fitted on a NaN rating (or a 99 on
        # 1-5 stars) scored NaN (or 11) without a word, where training a metarec network
        # on the same frame was refused by its row
        if not isinstance(self.catalogue, Catalogue):
            raise DataError(
                f"TrainingData: catalogue: expected a Catalogue (metarec.encode_catalogue "
                f"gives one), got {type(self.catalogue).__name__}"
            )
        self.rating_range = check_rating_range(self.rating_range, "TrainingData: rating_range")
        check_rating_frame(self.interactions, self.rating_range, "TrainingData: interactions")
        if self.validation is not None:
            check_rating_frame(self.validation, self.rating_range, "TrainingData: validation")
        if self.users is not None and (
            not isinstance(self.users, pd.DataFrame) or "user_id" not in self.users.columns
        ):
            raise DataError(
                "TrainingData: users: expected None or a DataFrame with a user_id column, got "
                + (f"columns {list(self.users.columns)[:8]}"
                   if isinstance(self.users, pd.DataFrame) else type(self.users).__name__)
            )  # fmt: skip

    def copied(self) -> TrainingData:
        """This data with its frames and vectors copied (the encoder shared: a MiniLM is
        no copy to make): what a benchmark and the conformance checks give each model of
        one's own, so that one that changes its data in place (centres the ratings,
        drops users) changes only its own, not what the models after it fit on."""

        def copied(frame: pd.DataFrame | None) -> pd.DataFrame | None:
            return None if frame is None else frame.copy()

        catalogue = replace(
            self.catalogue, items=self.catalogue.items.copy(), vectors=self.catalogue.vectors.copy()
        )
        return replace(
            self,
            interactions=self.interactions.copy(),
            validation=copied(self.validation),
            users=copied(self.users),
            catalogue=catalogue,
        )

    @classmethod
    def from_split(
        cls, frames: Mapping[str, pd.DataFrame], catalogue: Catalogue, dataset: Dataset, seed: int
    ) -> TrainingData:
        """A split's ``train`` users to fit on and ``validation`` users to tune on, with
        ``dataset``'s user features and rating scale."""
        return cls(
            frames["train"],
            catalogue,
            dataset.users,
            frames["validation"],
            dataset.rating_range,
            seed,
        )

    @cached_property
    def ratings(self) -> UserRatings:
        return UserRatings.from_frame(self.interactions, self.catalogue.index)

    @cached_property
    def validation_ratings(self) -> UserRatings | None:
        if self.validation is None or len(self.validation) == 0:
            return None
        return UserRatings.from_frame(self.validation, self.catalogue.index)

    @property
    def n_items(self) -> int:
        return len(self.catalogue)

    def like_threshold(self, given: float | None = None) -> float:
        """What counts as liked: ``given``, or when None the top quarter of the rating
        scale (:func:`metarec.data.like_threshold_for`; 4 on 1-5 stars)."""
        return like_threshold_for(self.rating_range) if given is None else float(given)


class ScoringModel(ABC):
    """Base class: fit once, then score the catalogue for users given their support sets.

    Subclasses implement :meth:`fit` and :meth:`score_catalogue`. A model that
    predicts on the rating scale sets ``predicts_ratings = True`` and its scores
    are then read as ratings (MAE, RMSE); a ranking-only model (popularity,
    ALS) leaves it False and is judged on ranking metrics only. A rating model
    with ``cutpoints`` reports the median rating they give for MAE (see
    :mod:`metarec.models.cutpoints`); its scores stay the mean for RMSE and ranking.
    """

    name: str = "model"
    predicts_ratings: bool = False
    cutpoints: RatingCutpoints | None = None
    chunk_size: ClassVar[int] = 256
    # the scale of the data it was fitted on (None before fit, or loaded): support
    # ratings off it are refused, as a metarec network refuses them
    rating_range: tuple[float, float] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every subclass's :meth:`fit`, one's own model's too, checks what it is given
        and keeps its rating scale: a frame passed for the TrainingData was an
        AttributeError from inside the model, a support rating of 99 on 1-5 stars
        predicted 27."""
        super().__init_subclass__(**kwargs)
        cls._check_score_catalogue()
        # the fit this class has, its own or a mixin's; one a parent wrapped is wrapped
        fit = getattr(cls, "fit", None)
        if (
            fit is None
            or getattr(fit, "_checks_data", False)
            or getattr(fit, "__isabstractmethod__", False)
        ):
            return

        @functools.wraps(fit)
        def checked_fit(self: ScoringModel, data: TrainingData, *args: Any, **kw: Any) -> Any:
            if not isinstance(data, TrainingData):
                raise DataError(
                    f"{getattr(self, 'name', type(self).__name__)}: fit: expected TrainingData "
                    f"(metarec.models.base.TrainingData(interactions, catalogue, ...)), got "
                    f"{type(data).__name__}"
                )
            out = fit(self, data, *args, **kw)
            self.rating_range = data.rating_range
            return out

        checked_fit._checks_data = True  # type: ignore[attr-defined]
        cls.fit = checked_fit  # type: ignore[method-assign]

    @classmethod
    def _check_score_catalogue(cls) -> None:
        """:meth:`score_catalogue` checks its tasks as :meth:`recommend` does: called
        directly, the peers read an item index of -1 as the last item, 5,000 as an
        IndexError, and a support rating of 99 on 1-5 stars as a rating."""
        # its own or a mixin's (a mixin before the model class was never checked)
        score = getattr(cls, "score_catalogue", None)
        if (
            score is None
            or getattr(score, "_checks_tasks", False)
            or getattr(score, "__isabstractmethod__", False)
        ):
            return

        @functools.wraps(score)
        def checked_score(
            self: ScoringModel, tasks: Sequence[Task], users: pd.DataFrame | None = None
        ) -> np.ndarray:
            check_tasks(tasks, self.n_items, users, self.name, rating_range=self.rating_range)
            return score(self, tasks, users)

        checked_score._checks_tasks = True  # type: ignore[attr-defined]
        cls.score_catalogue = checked_score  # type: ignore[method-assign]

    def _like_option(self, given: float | None) -> None:
        """Keep a ``like_threshold`` option (what counts as liked); None: the training
        data's rating scale, set by :meth:`_fit_like` (until then 1-5 stars' 4)."""
        # checked here, where every model takes it: "x" (an edited ensemble.json member's
        # options) was float()'s ValueError at load, True a threshold of 1
        if given is not None and (
            isinstance(given, bool | np.bool_)
            or not isinstance(given, int | float | np.integer | np.floating)
            or not np.isfinite(given)
        ):
            raise ConfigError(
                f"{getattr(self, 'name', type(self).__name__)}: option like_threshold must be "
                f"a finite number (or None: the data's scale), got {given!r:.60}"
            )
        self.like_given = given
        self.like_threshold = like_threshold_for((1.0, 5.0)) if given is None else float(given)

    def _fit_like(self, data: TrainingData) -> None:
        # above the scale (or NaN) nothing is liked, and a model learns from no positives
        self.like_threshold = check_like_threshold(
            data.like_threshold(self.like_given), data.rating_range, f"{self.name}: like_threshold"
        )

    @abstractmethod
    def fit(self, data: TrainingData) -> ScoringModel:
        """Fit on ``data``; return ``self``."""

    @abstractmethod
    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        """Scores [len(tasks), n_items] after adapting to each task's support set.

        ``users``: one row per task (user_id + side-feature columns) or None.
        Query sets are never read. Higher is better.
        """

    @property
    @abstractmethod
    def n_items(self) -> int:
        """Catalogue size this model scores."""

    def predict_tasks(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> list[np.ndarray]:
        """Scores of each task's query items (ratings when ``predicts_ratings``)."""
        check_tasks(tasks, self.n_items, users, self.name, rating_range=self.rating_range)
        out: list[np.ndarray] = []
        for lo in range(0, len(tasks), self.chunk_size):
            chunk = tasks[lo : lo + self.chunk_size]
            rows = users.iloc[lo : lo + len(chunk)] if users is not None else None
            scores = self._checked_scores(chunk, rows)
            out.extend(scores[i, t.query_items] for i, t in enumerate(chunk))
        return out

    def recommend(
        self,
        tasks: Sequence[Task],
        k: int = 10,
        users: pd.DataFrame | None = None,
        *,
        exclude_seen: bool = True,
    ) -> np.ndarray:
        """Top-``k`` catalogue indices per task [len(tasks), k], best first.

        ``exclude_seen`` removes each task's support items (a row with fewer than
        ``k`` others is padded with -1). Ties break by a fixed pseudo-random order of
        the catalogue (:func:`top_k`), so lists are deterministic and no model gains
        from the catalogue's own order. A ``k`` beyond the catalogue gives every item.
        """
        check_k(k, f"{self.name}: ")
        check_tasks(tasks, self.n_items, users, self.name, rating_range=self.rating_range)
        parts = []
        for lo in range(0, len(tasks), self.chunk_size):
            chunk = tasks[lo : lo + self.chunk_size]
            rows = users.iloc[lo : lo + len(chunk)] if users is not None else None
            scores = self._checked_scores(chunk, rows).astype(np.float64)
            bad = np.isnan(scores).any(axis=1)
            if bad.any():
                # NaN sorts unpredictably (first in torch.topk, last in argsort)
                raise ModelError(
                    f"{self.name}: scored NaN for task {lo + int(np.argmax(bad))} of "
                    f"{len(tasks)} (diverged training or non-finite input vectors?)"
                )
            parts.append(top_k(scores, k, chunk if exclude_seen else None))
        return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)

    def _checked_scores(self, tasks: Sequence[Task], users: pd.DataFrame | None) -> np.ndarray:
        # a model of one's own returning a list, a tensor or its transpose failed
        # further on, as an IndexError or a missing .astype that named nothing.
        # Its callers (recommend, predict_tasks) have checked every task already: the
        # model's own scoring, not score_catalogue's check of each chunk again
        score = type(self).score_catalogue
        scores = getattr(score, "__wrapped__", score)(self, tasks, users)
        want = (len(tasks), self.n_items)
        if not isinstance(scores, np.ndarray):
            raise ModelError(
                f"{self.name}: score_catalogue returned a {type(scores).__name__}; expected "
                f"a numpy array of shape {want} (a row per task, a column per item)"
            )
        if scores.shape != want:
            raise ModelError(
                f"{self.name}: score_catalogue returned shape {scores.shape}; expected "
                f"{want} (a row per task, a column per catalogue item)"
            )
        return scores

    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        """Append new items (rows in catalogue order and their LM vectors).

        Models that score from text support it; others refuse clearly. An override
        checks its arguments first with :func:`metarec.inputs.check_new_items`, which
        the conformance suite's ``new_items`` check expects (None as the items, text or
        NaN vectors refused by name).
        """
        del items, vectors
        raise UnsupportedError(
            f"{self.name} cannot score items it never saw in training; "
            "use a text-aware model (metarec, content kNN) for new items"
        )


def check_k(k: object, where: str = "") -> None:
    """ConfigError unless ``k`` (a list length) is a whole number > 0; ``where`` prefixes
    the message (a model's name)."""
    if not is_whole(k) or k <= 0:
        raise ConfigError(f"{where}k: must be a whole number > 0, got {k!r}")


def check_seed(seed: object, where: str = "seed") -> None:
    """ConfigError unless ``seed`` is a whole number >= 0, which numpy's generators take
    (a negative or text seed was a raw numpy error), and below 2**64, which torch's
    take (2**64 was torch.manual_seed's bare ValueError)."""
    if check_whole(seed, where, 0) >= 2**64:
        raise ConfigError(f"{where}: must be below 2**64, got {seed!r:.40}")


def check_shots(shots: object, where: str) -> tuple[int, ...]:
    """Support sizes as whole numbers >= 1 (1.7 is not a support size; "5" would be read
    as the characters of a string), or a ConfigError naming ``where``."""
    if isinstance(shots, (str, bytes)) or not isinstance(shots, Sequence | np.ndarray):
        raise ConfigError(f"{where}: expected a list of support sizes, got {shots!r}")
    if not len(shots) or any(not is_whole(k) or k < 1 for k in shots):
        raise ConfigError(f"{where}: must be whole support sizes >= 1, got {tuple(shots)}")
    return tuple(int(k) for k in shots)


def check_positive(where: str, **values: object) -> None:
    """ConfigError unless every value is a finite number > 0 (NaN slips past ``<= 0``)."""
    for what, value in values.items():
        ok = is_number(value)
        if not ok or not np.isfinite(float(value)) or float(value) <= 0:  # type: ignore[arg-type]
            raise ConfigError(f"{where}: {what} must be a finite number > 0, got {value!r}")


def check_tasks(
    tasks: Sequence[Task],
    n_items: int,
    users: pd.DataFrame | None,
    where: str,
    rating_range: tuple[float, float] | None = None,
) -> None:
    """DataError for tasks no model can read: not a Task, item or rating arrays of other
    lengths (a rating without its item was padded, an item without a rating read as
    rated 0), an item index that is not a whole number (0.7 was cut to 0) or outside the
    catalogue (-1 would wrap to the last item), a support rating that is not a finite
    number (NaN turned a whole row of scores into NaN) or, given ``rating_range``, off
    the scale (100 on 1-5 stars moved the user's model as no real rating can), or
    ``users`` rows that do not match the tasks one for one. A query item may also be in
    its task's support: fitting residuals (the fold-in) predicts the ratings adapted to,
    so it is no error here; the protocols' splits keep the two apart."""
    if isinstance(tasks, str | bytes | Mapping) or not isinstance(tasks, Sequence | np.ndarray):
        raise DataError(f"{where}: tasks: expected a list of Task, got {tasks!r:.60}")
    if users is not None and not isinstance(users, pd.DataFrame):
        # an array of feature codes, or a list of dicts: AttributeError ('iloc') inside
        raise DataError(
            f"{where}: users: expected a DataFrame with a user_id column (one row per "
            f"task), got {type(users).__name__}"
        )
    if users is not None and len(users) != len(tasks):
        raise DataError(f"{where}: {len(users)} user rows for {len(tasks)} tasks")
    if not len(tasks):
        return
    for n, t in enumerate(tasks):
        if not isinstance(t, Task):
            raise DataError(f"{where}: task {n}: expected a Task, got {t!r:.60}")
    # every task at once: an evaluation passes thousands
    fields = ("support_items", "support_ratings", "query_items", "query_ratings")
    arrays = {f: [np.asarray(getattr(t, f)) for t in tasks] for f in fields}
    for f, values in arrays.items():
        for n, a in enumerate(values):
            if a.ndim != 1 or a.dtype.kind not in "iuf":
                raise DataError(
                    f"{where}: task {n}: {f}: expected a 1-D array of numbers, got "
                    f"{a.dtype} of shape {a.shape}"
                )
    for n, (si, sr, qi, qr) in enumerate(zip(*arrays.values(), strict=True)):
        # query ratings are only read by evaluation: a prediction task may leave them out
        if len(si) != len(sr) or (len(qr) and len(qi) != len(qr)):
            side, a, b = ("support", si, sr) if len(si) != len(sr) else ("query", qi, qr)
            raise DataError(
                f"{where}: task {n}: {len(a)} {side} items and {len(b)} {side} ratings; "
                "each item needs its rating"
            )
    for side in ("support", "query"):
        owner = np.repeat(np.arange(len(tasks)), [len(a) for a in arrays[f"{side}_items"]])
        items = np.concatenate(arrays[f"{side}_items"]).astype(np.float64)
        bad = not_index(items, n_items)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            why = f"not in [0, {n_items})" if items[i] == np.round(items[i]) else "not whole"
            raise DataError(
                f"{where}: task {owner[i]}: {side} item {items[i]:g} is {why} (an item is "
                "its catalogue index)"
            )
    owner = np.repeat(np.arange(len(tasks)), [len(a) for a in arrays["support_ratings"]])
    _refuse_repeats(owner, np.concatenate(arrays["support_items"]), n_items, where)
    ratings = np.concatenate(arrays["support_ratings"]).astype(np.float64)
    unreadable = ~np.isfinite(ratings)
    if unreadable.any():
        i = int(np.flatnonzero(unreadable)[0])
        raise DataError(f"{where}: task {owner[i]}: a support rating is not a finite number")
    if rating_range is not None:
        # compared in float32, the precision tasks hold ratings in: a rating at the top
        # of a continuous scale (4.3) stored as float32 reads a hair above it
        lo, hi = rating_range
        off = off_scale(ratings, lo, hi)
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise DataError(
                f"{where}: task {owner[i]}: support rating {ratings[i]:g} is off the "
                f"model's scale [{np.float32(lo):g}, {np.float32(hi):g}]"
            )


def _refuse_repeats(owner: np.ndarray, items: np.ndarray, n_items: int, where: str) -> None:
    """DataError for an item twice in one support set: models read it differently (the
    meta models and the episodic ridge count it twice, the stacked ranker's signals
    once here and twice there), and no protocol or data file makes one (cleaning keeps
    a user's latest rating of an item, as ``adapt`` does)."""
    key = owner.astype(np.int64) * max(n_items, 1) + items.astype(np.int64)
    order = np.argsort(key, kind="stable")
    again = order[1:][key[order][1:] == key[order][:-1]]
    if len(again):
        i = int(again.min())
        raise DataError(
            f"{where}: task {owner[i]}: support item {int(items[i])} is given twice; one "
            "rating per item (Recommender.adapt keeps the last of an item's ratings)"
        )


def check_steps(steps: object) -> None:
    """ConfigError unless ``steps`` (adaptation steps) is None or a whole number in
    [0, :data:`MAX_STEPS`]."""
    if steps is None:
        return
    if not is_whole(steps) or not 0 <= steps <= MAX_STEPS:
        raise ConfigError(
            f"steps: must be a whole number in [0, {MAX_STEPS}] (or None), got {steps!r:.40}"
        )


# the seed of the catalogue-wide order that breaks tied scores (see top_k)
TIE_SEED = 20_240_531


@functools.lru_cache(maxsize=8)
def tie_order(n_items: int) -> np.ndarray:
    """A fixed pseudo-random order of a catalogue of ``n_items`` (item indices): the same
    on every run and machine, and unrelated to the catalogue's own order."""
    order = np.random.default_rng(TIE_SEED).permutation(n_items)
    order.flags.writeable = False
    return order


@functools.lru_cache(maxsize=8)
def tie_ranks(n_items: int) -> np.ndarray:
    """Each item's place in :func:`tie_order`: ``tie_ranks(n)[tie_order(n)] == arange(n)``."""
    ranks = np.empty(n_items, dtype=np.int64)
    ranks[tie_order(n_items)] = np.arange(n_items)
    ranks.flags.writeable = False
    return ranks


def _first_k(keys: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of the ``k`` smallest ``keys``, smallest first, NaN last, of
    equal keys the leftmost first: what a stable argsort's first ``k`` columns are,
    from a partition (a full sort of each row of thousands of items cost 48 ms for
    256 users of ml-1m, the partition a tenth of it)."""
    rows, n = keys.shape
    if k >= n or rows == 0:
        return np.argsort(keys, axis=1, kind="stable")[:, :k]
    if k <= 0:
        return np.zeros((rows, 0), dtype=np.int64)
    kth = np.partition(keys, k - 1, axis=1)[:, k - 1 : k]  # NaN sorts last here too
    nan_kth = np.isnan(kth)
    better = keys < kth
    if nan_kth.any():  # every number is better than a NaN
        better |= nan_kth & ~np.isnan(keys)
    at_kth = (keys == kth) | (nan_kth & np.isnan(keys))
    # of the keys equal to the k-th, the leftmost fill what the better ones leave
    need = k - better.sum(axis=1, keepdims=True)
    chosen = better | (at_kth & (np.cumsum(at_kth, axis=1) <= need))
    cols = np.nonzero(chosen)[1].reshape(rows, k)  # left to right in each row
    picked = np.take_along_axis(keys, cols, axis=1)
    return np.take_along_axis(cols, np.argsort(picked, axis=1, kind="stable"), axis=1)


def top_k(scores: np.ndarray, k: int, exclude: Sequence[Task] | None = None) -> np.ndarray:
    """Indices of the ``k`` best scores per row, best first.

    Ties break by a fixed pseudo-random order of the catalogue (:func:`tie_order`), so
    lists are deterministic. Not by index: a catalogue's order often follows
    popularity (MovieLens numbers its best-known films first), and a model whose scores
    tie (a few genres and a year, or a constant) was handed hits for free; on ml-100k's
    P2 test users equal scores gave nDCG@10 0.18 in index order, 0.04 in random orders.

    ``exclude``: tasks whose support items are masked out, row by row. An excluded
    item is never returned, not even after items the model scored -inf: where fewer
    than ``k`` items are left the list is padded with -1.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    excluded = np.zeros(scores.shape, dtype=bool)
    if exclude is not None:
        for i, t in enumerate(exclude):
            excluded[i, t.support_items] = True
        scores[excluded] = np.nan  # sorted after every score, -inf too
    # the columns laid out in the tie order, so that of equal scores the first in that
    # order wins; then back to item indices
    ties = tie_order(scores.shape[1])
    order = ties[_first_k(-scores[:, ties], min(k, scores.shape[1]))]
    if exclude is not None:
        order = np.where(np.take_along_axis(excluded, order, axis=1), -1, order)
    return order

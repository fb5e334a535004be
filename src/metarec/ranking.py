"""Top-k lists from a scorer: the part :class:`~metarec.recommender.Recommender` and
:class:`~metarec.ensemble_run.EnsembleRecommender` share, written once.

A class using :class:`TopK` provides ``score(user)`` (one float per catalogue
item), ``resolve(key)`` (id or title → catalogue index), ``n_items``, ``items``
(the catalogue frame) and ``_display(index)`` (a title for people).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from metarec.data.columns import not_index, plain
from metarec.errors import DataError, ModelError, UnsupportedError
from metarec.models.base import check_k, tie_order, tie_ranks
from metarec.models.cutpoints import RatingCutpoints

if TYPE_CHECKING:
    from metarec.inputs import ItemKeys
    from metarec.recommender import UserState


def item_keys(keys: Any, what: str) -> Sequence[str | int] | None:
    """``keys`` (item ids or titles) as a list; a bare string would be read as its
    letters, so it is refused."""
    if keys is None:
        return None
    if isinstance(keys, (str, bytes)):
        raise DataError(f"{what}: expected a list of item ids or titles, got the string {keys!r}")
    if isinstance(keys, pd.DataFrame):  # iterated, it gave its column names as ids
        raise DataError(
            f"{what}: expected a list of item ids or titles, got a DataFrame; give one of its "
            "columns (frame['item_id'])"
        )
    try:
        return list(keys)
    except TypeError:  # a number: one id, not a list of them
        raise DataError(
            f"{what}: expected a list of item ids or titles, got {keys!r:.60}"
        ) from None


def seen_indices(seen: object, n_items: int | None = None) -> np.ndarray:
    """A user state's ``seen`` (the items it rated) as int64 catalogue indices, or a
    DataError: -1 wrapped to the last item, which was then excluded without a word, and
    0.5 was numpy's IndexError. ``n_items``: the catalogue's size, when the caller has
    no message of its own for an index past its end."""
    values = np.asarray(seen)
    if values.ndim != 1 or (values.size and values.dtype.kind not in "iuf"):
        raise DataError(
            f"user: seen: expected a 1-d array of catalogue indices, got {values.dtype} "
            f"of shape {values.shape}"
        )
    numbers = values.astype(np.float64)
    bad = not_index(numbers, np.inf if n_items is None else n_items)
    if bad.any():
        value = plain(values[int(np.flatnonzero(bad)[0])])
        top = "" if n_items is None else f" below {n_items}"
        raise DataError(
            f"user: seen: item {value!r} is not a catalogue index (a whole number >= 0{top})"
        )
    return numbers.astype(np.int64)


def _refuse_nan(scores: np.ndarray) -> None:
    nan = np.isnan(scores)
    if nan.any():
        # NaN sorts unpredictably: a seen item came first, scored -inf (as
        # ScoringModel.recommend refuses it)
        raise ModelError(
            f"recommend: scored NaN for {int(nan.sum())} of {len(scores)} items (the "
            "user's adapted parameters hold NaN: diverged training or non-finite input?)"
        )


class TopK:
    items: pd.DataFrame
    # median-rating thresholds when the scores are mean ratings (see
    # metarec.models.cutpoints); None for ranking scores
    cutpoints: RatingCutpoints | None = None
    rating_range: tuple[float, float]  # the data's (lowest, highest) rating

    # what the host class provides
    def score(self, user: UserState, items: ItemKeys | None = None) -> np.ndarray:
        raise NotImplementedError

    def resolve(self, key: str | int) -> int:
        raise NotImplementedError

    @property
    def n_items(self) -> int:
        raise NotImplementedError

    @property
    def scores_are_ratings(self) -> bool:
        """Whether scores are predicted ratings (the rating objective), not ranking scores."""
        raise NotImplementedError

    @property
    def predicts_ratings(self) -> bool:
        """:attr:`scores_are_ratings` under the name a :class:`ScoringModel` gives it, so
        a run judged beside the peers (``metarec evaluate``) is read as they are: a
        softmax run's logits were scored as ratings, MAE 2.2 and "pooled" rating
        corrections added to them."""
        return self.scores_are_ratings

    def _display(self, idx: int) -> str:
        raise NotImplementedError

    # what it gets
    def median_ratings(self, scores: ArrayLike) -> np.ndarray:
        """The scale level a user most plausibly gives for each mean ``score``
        (the median, which minimises absolute error). Without cutpoints (a
        continuous scale, or no validation users to fit them on) a score is only
        clipped to the rating scale: a mean rating cannot pass its ends, though a
        score can. Ranking scores (implicit objectives, ranking ensembles) are no
        ratings: an :class:`~metarec.errors.UnsupportedError`."""
        if not self.scores_are_ratings:
            raise UnsupportedError(
                "median_ratings: this model's scores rank items (an implicit objective or "
                "a ranking ensemble); they are not ratings on the scale"
            )
        # numpy reads "3" and True as 3.0 and 1.0: a slip, not a score
        if isinstance(scores, (list, tuple)):
            odd = any(isinstance(v, (bool, np.bool_, str, bytes)) for v in scores)
        else:
            odd = np.asarray(scores).dtype.kind in "bUSO"
        try:
            values = np.asarray(scores, dtype=np.float64)
        except (TypeError, ValueError):
            odd = True
        if odd:
            raise DataError(
                f"scores: expected numbers (what score() returns), got {scores!r:.60}"
            ) from None
        if values.ndim != 1 or not np.isfinite(values).all():
            raise DataError(
                "scores: expected a 1-d array of finite numbers (what score() returns), got "
                + (f"shape {values.shape}" if values.ndim != 1 else "NaN or infinity")
            )
        if self.cutpoints is None:
            return np.clip(values, *self.rating_range)
        return self.cutpoints.apply(values)

    def top(
        self,
        user: UserState,
        k: int | np.integer[Any] = 10,
        *,
        exclude_seen: bool = True,
        candidates: ItemKeys | None = None,
        scores: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Catalogue indices of the top ``k`` items, best first, and their scores
        (what :meth:`recommend` shows, without building a frame: the serving path).
        ``scores``: the user's catalogue scores where the caller has them already (not
        scored again)."""
        check_k(k)
        k = int(k)  # a numpy integer is a whole k too
        if not isinstance(exclude_seen, (bool, np.bool_)):  # "no" is truthy
            raise DataError(f"exclude_seen: expected True or False, got {exclude_seen!r}")
        candidates = item_keys(candidates, "candidates")
        if candidates is not None:
            return self._top_of(user, k, exclude_seen, candidates)
        scores = np.array(self.score(user) if scores is None else scores, dtype=np.float64)
        _refuse_nan(scores)
        allowed = np.ones(self.n_items, dtype=bool)
        if exclude_seen:
            allowed[seen_indices(user.seen, self.n_items)] = False
        k = min(k, int(allowed.sum()))
        if not k:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        # laid out in the catalogue's tie order (as every ranked list is: top_k), what
        # is not allowed after every score (-inf too, which a model may give)
        ties = tie_order(self.n_items)
        key = np.where(allowed, -scores, np.nan)[ties]
        # a partition, then a sort of the winners and of what ties with the last of
        # them: no full sort of the catalogue
        kth = np.partition(key, k - 1)[k - 1]
        near = np.flatnonzero(key <= kth)
        at = near[np.lexsort((near, key[near]))][:k]
        top = ties[at]
        return top, scores[top]

    def _top_of(
        self, user: Any, k: int, exclude_seen: bool, candidates: Sequence[str | int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`top` among ``candidates``, scoring those alone (a host's score() of a
        few items need not score the catalogue), in the same order: best score first,
        ties in the catalogue's tie order."""
        scores = np.array(self.score(user, candidates), dtype=np.float64, copy=True)
        _refuse_nan(scores)
        rows = np.array([self.resolve(c) for c in candidates], dtype=np.int64)
        rows, first = np.unique(rows, return_index=True)  # a candidate named twice
        scores = scores[first]
        if exclude_seen:
            fresh = ~np.isin(rows, seen_indices(user.seen, self.n_items))
            rows, scores = rows[fresh], scores[fresh]
        ranks = tie_ranks(self.n_items)[rows]
        best = np.lexsort((ranks, -scores))[: min(k, len(rows))]
        return rows[best], scores[best]

    def recommend(
        self,
        user: UserState,
        k: int | np.integer[Any] = 10,
        *,
        exclude_seen: bool = True,
        candidates: ItemKeys | None = None,
    ) -> pd.DataFrame:
        """Top-``k`` items as a frame: rank, item_id, title, score. Empty, with a
        warning, where the user has rated every item (or every candidate)."""
        # none asked for (candidates=[]) is no list emptied by what the user rated
        some = (
            self.n_items > 0
            if candidates is None
            else not hasattr(candidates, "__len__") or len(candidates) > 0
        )
        top, scores = self.top(user, k, exclude_seen=exclude_seen, candidates=candidates)
        if not len(top) and exclude_seen and k and some:
            # an empty frame alone read as a fault of the model
            among = "candidate" if candidates is not None else "item"
            warnings.warn(
                f"recommend: the user has rated every {among}, so none is left to "
                "recommend (exclude_seen=False ranks them all)",
                UserWarning,
                stacklevel=2,
            )
        return pd.DataFrame(
            {
                "rank": np.arange(1, len(top) + 1),
                "item_id": self.items["item_id"].to_numpy()[top],
                "title": [self._display(i) for i in top],
                "score": scores,
            }
        )

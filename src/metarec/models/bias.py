"""The bias model: global mean + damped item mean + support-based user offset.

The strongest simple baseline for cold-start rating prediction, and the one
metarec must beat. ``item_damping`` and ``user_damping`` shrink item and user
offsets toward zero when they rest on few ratings (Koren's damped means).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metarec.data.tasks import Task, UserRatings
from metarec.errors import DataError


def item_baseline(
    ratings: UserRatings, n_items: int, mean: float, damping: float = 10.0
) -> np.ndarray:
    """Damped mean offset per item: sum(r - mean) / (count + damping); 0 for unrated items."""
    resid = np.bincount(ratings.items, weights=ratings.ratings - mean, minlength=n_items)
    den = np.bincount(ratings.items, minlength=n_items) + damping
    # 0 only for an unrated item with damping 0: no offset (0/0 scored it NaN)
    return np.divide(resid, den, out=np.zeros(n_items), where=den > 0).astype(np.float32)


class BiasModel:
    """Global mean + damped item bias + damped user bias (from the support set): the
    baseline every P1 model is judged against."""

    name = "bias"
    predicts_ratings = True

    def __init__(self, item_damping: float = 10.0, user_damping: float = 3.0) -> None:
        self.item_damping = item_damping
        self.user_damping = user_damping
        self.mu = 0.0
        self.item_bias = np.zeros(0, dtype=np.float64)

    def fit(self, ratings: UserRatings, n_items: int) -> BiasModel:
        if not len(ratings.ratings):  # the mean of nothing scored every item NaN
            raise DataError(f"{self.name}: no ratings to fit on")
        self.mu = float(ratings.ratings.mean())
        self.item_bias = item_baseline(ratings, n_items, self.mu, self.item_damping).astype(
            np.float64
        )
        self.popularity = np.bincount(ratings.items, minlength=n_items)
        return self

    def user_offset(self, items: np.ndarray, ratings: np.ndarray) -> float:
        """One user's damped mean residual (:meth:`user_offsets` for one support)."""
        return float(self.user_offsets([Task.support_only(items, ratings)])[0])

    def user_offsets(self, tasks: Sequence[Task]) -> np.ndarray:
        """Damped mean residual of each task's support ratings, all tasks at once (0 for
        an empty support): the bias model's and the bias peer's, written once."""
        sizes = np.array([len(t.support_items) for t in tasks], dtype=np.int64)
        if not sizes.sum():
            return np.zeros(len(tasks))
        items = np.concatenate([t.support_items for t in tasks]).astype(np.int64)
        ratings = np.concatenate([t.support_ratings for t in tasks]).astype(np.float64)
        resid = ratings - self.mu - self._bias(items)
        owner = np.repeat(np.arange(len(tasks)), sizes)
        sums = np.bincount(owner, weights=resid, minlength=len(tasks))
        den = sizes + self.user_damping
        # den is 0 only for an empty support with user_damping = 0: no offset then
        return np.divide(sums, den, out=np.zeros(len(tasks)), where=den > 0)

    def _bias(self, items: np.ndarray) -> np.ndarray:
        inside = items < len(self.item_bias)
        out = np.zeros(len(items))
        out[inside] = self.item_bias[items[inside]]
        return out

    def predict_tasks(
        self, tasks: Sequence[Task], user_features: object = None
    ) -> list[np.ndarray]:
        del user_features  # the bias model ignores side information
        offsets = self.user_offsets(tasks)
        return [
            self.mu + self._bias(t.query_items) + bu for t, bu in zip(tasks, offsets, strict=True)
        ]

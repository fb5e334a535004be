"""Content kNN: a user profile in the items' LM-vector space, cosine similarity to score.

Profile = sum over the support set of ``w_i * v_i`` (``v_i`` the item's
L2-normalised text vector), with ``w_i = r_i - c_u`` and ``c_u`` the user's
support mean damped toward the training mean:
``c_u = (sum r_i + damping * mu) / (n + damping)``.

Why this weight: subtracting the user's own mean removes rating-scale habits
(a harsh rater's 3 is a like), so items rated above the user's norm pull the
profile toward them and items rated below push it away. The damping keeps a
single rating meaningful: with one rating the plain user mean would equal
that rating and every weight would be 0, whereas the damped centre sits near
the global mean, so a lone 5 is a like and a lone 1 a dislike.

Where every support rating sits at the centre (data with one rating value,
implicit feedback read as all 1s, whose mean is that value; or ``damping=0``
and ratings all alike), the weights are all 0; each support item the user
liked (rated at or above the like threshold, every click on one-value data)
then weighs 1, since that is all the data says.

Scores are the cosine between the profile and each item vector. A user with no
usable profile (an empty support set at K = 0, weights that cancel to a zero
vector, or no like where centring left nothing) gets the popularity order
instead (rescaled into [0, 1)), since there is nothing to measure similarity
against. New items are scored from their vectors like any other item; with no
ratings they rank last in the popularity fallback.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from metarec.data.tasks import Task
from metarec.errors import DataError
from metarec.models.base import ScoringModel, TrainingData, check_seed
from metarec.peers._common import (
    check_new_items,
    check_positive,
    padded_support,
    popularity_fallback,
    popularity_scores,
    require,
)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


class ContentKNN(ScoringModel):
    name = "knn"
    predicts_ratings = False

    def __init__(
        self, *, damping: float = 3.0, like_threshold: float | None = None, seed: int = 0
    ) -> None:
        check_positive(self.name, "damping", damping, allow_zero=True)
        self.damping = damping
        self._like_option(like_threshold)  # None: the data's scale, at fit
        check_seed(seed, f"{self.name}: seed")
        self.seed = seed  # unused: the model is deterministic by construction
        self.vectors: np.ndarray | None = None
        self.popularity = np.zeros(0)
        self.mu = 0.0

    def fit(self, data: TrainingData) -> ContentKNN:
        self._fit_like(data)
        self.vectors = _unit_rows(np.asarray(data.catalogue.vectors, dtype=np.float64))
        self.popularity = popularity_scores(data.ratings, data.n_items, self.like_threshold)
        self.mu = float(data.ratings.ratings.mean()) if len(data.ratings.ratings) else 0.0
        return self

    def _vectors(self) -> np.ndarray:
        require(self.vectors, self.name)
        assert self.vectors is not None
        return self.vectors

    @property
    def n_items(self) -> int:
        return len(self._vectors())

    def profiles(self, tasks: Sequence[Task]) -> np.ndarray:
        """Unit profile vectors [B, dim]; all-zero rows for users without a profile."""
        vectors = self._vectors()
        items, ratings, mask = padded_support(tasks)
        n = mask.sum(axis=1)
        den = n + self.damping
        total = np.where(mask, ratings, 0.0).sum(axis=1) + self.damping * self.mu
        centre = np.divide(total, den, out=np.full(len(tasks), self.mu), where=den > 0)
        weights = np.where(mask, ratings - centre[:, None], 0.0)
        # one-value feedback (clicks read as all 1s): the centre is that value and every
        # weight 0, which left each user popularity's list. Where centring leaves nothing,
        # the likes are the signal: each click on such data (its like threshold is that
        # one value); with damping 0, a lone 5 (but not a lone 1, which stays no profile)
        flat = n.astype(bool) & ~(weights != 0).any(axis=1)
        weights[flat] = mask[flat] & (ratings[flat] >= self.like_threshold)
        return _unit_rows(np.einsum("bs,bsd->bd", weights, vectors[items]))

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        vectors = self._vectors()
        profiles = self.profiles(tasks)
        scores = profiles @ vectors.T
        empty = ~profiles.any(axis=1)
        scores[empty] = popularity_fallback(self.popularity)
        return scores

    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        current = self._vectors()
        if vectors is None:
            raise DataError(f"{self.name}.add_items: needs the new items' LM vectors")
        checked = check_new_items(self.name, items, vectors)
        assert checked is not None
        new = _unit_rows(checked)
        if new.shape[1] != current.shape[1]:
            raise DataError(
                f"{self.name}.add_items: vectors have dimension {new.shape[1]}, "
                f"the catalogue's have {current.shape[1]} (use the same encoder)"
            )
        self.vectors = np.concatenate([current, new])
        self.popularity = np.concatenate([self.popularity, np.zeros(len(items))])

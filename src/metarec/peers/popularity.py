"""Popularity: the same list for everyone, the floor every personalised model must clear.

Score = number of training ratings at or above the like threshold, ties
broken by the total number of ratings (then in the catalogue's fixed pseudo-random
order, :func:`~metarec.models.base.tie_order`, as :func:`~metarec.models.base.top_k`
breaks every tie). Items added after fitting have no
ratings, so they score 0 and rank last: popularity has nothing to say about
an item nobody rated, and refusing would stop mixed catalogues from being
scored at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from metarec.data.tasks import Task
from metarec.models.base import ScoringModel, TrainingData, check_seed
from metarec.peers._common import check_new_items, popularity_scores, require


class Popularity(ScoringModel):
    """The same list for everyone, by training likes (the module notes); ``like_threshold``
    None takes the top quarter of the data's scale at fit."""

    name = "popularity"
    predicts_ratings = False

    def __init__(self, *, like_threshold: float | None = None, seed: int = 0) -> None:
        self._like_option(like_threshold)  # None: the data's scale, at fit
        check_seed(seed, f"{self.name}: seed")
        self.seed = seed  # unused: popularity has no randomness; kept for a uniform factory
        self.scores: np.ndarray | None = None

    def fit(self, data: TrainingData) -> Popularity:
        self._fit_like(data)
        self.scores = popularity_scores(data.ratings, data.n_items, self.like_threshold)
        return self

    @property
    def n_items(self) -> int:
        require(self.scores, self.name)
        assert self.scores is not None
        return len(self.scores)

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        require(self.scores, self.name)
        assert self.scores is not None
        return np.broadcast_to(self.scores, (len(tasks), len(self.scores))).copy()

    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        require(self.scores, self.name)
        assert self.scores is not None
        check_new_items(self.name, items, vectors)
        self.scores = np.concatenate([self.scores, np.zeros(len(items))])

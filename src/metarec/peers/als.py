"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) via the ``implicit`` library, with fold-in.

Training: every rating is a positive interaction (p = 1: the user chose to
watch and rate the movie), with confidence ``c = 1 + alpha * w`` where
``w = like_weight`` for ratings at or above ``like_threshold`` and 1 below.
Liked items thus count more without low ratings being read as "never seen";
ALS treats every unrated item as p = 0 with confidence 1. Fitted with
``implicit.cpu.als.AlternatingLeastSquares`` on one thread with a fixed
``random_state`` (and BLAS held to one thread), so a seed gives the same
factors on every run. It stays on the CPU where a GPU is present, the one model
here that does: ``implicit``'s CUDA solver is a separate build whose
conjugate-gradient steps do not repeat bit for bit, and a peer that moves
between runs would move every significance test against it. ALS on MovieLens
fits in seconds on a CPU.

Users: test users are never in the training matrix, so each task's user
vector is *folded in* from its support set by solving ALS's user step
exactly, for the whole batch at once::

    x_u = (Y^T Y + lambda I + sum_{i in S_u} (c_ui - 1) y_i y_i^T)^{-1} sum_{i in S_u} c_ui y_i

(the same system ``implicit``'s ``recalculate_user`` solves). Scores are
``x_u . y_i``. A user with no support item that ALS trained on (K = 0
included) has no vector; they get the popularity order. Catalogue items
without training interactions have no factors: they rank below every
trained item. New items cannot be added: ALS knows items only through
interactions, so ``add_items`` raises :class:`UnsupportedError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from metarec.data.tasks import Task, UserRatings
from metarec.errors import UnsupportedError
from metarec.models.base import ScoringModel, TrainingData, check_seed
from metarec.peers._common import (
    check_positive,
    padded_support,
    popularity_fallback,
    popularity_scores,
    require,
)


class ALS(ScoringModel):
    """Implicit ALS (the module notes: confidences, fold-in of a new user from their
    support, popularity for a user with none); refuses new items."""

    name = "als"
    predicts_ratings = False

    def __init__(
        self,
        *,
        factors: int = 64,
        regularization: float = 0.1,
        alpha: float = 10.0,
        like_weight: float = 3.0,
        like_threshold: float | None = None,
        iterations: int = 15,
        seed: int = 0,
    ) -> None:
        check_positive(self.name, "factors", factors, whole=True)
        check_positive(self.name, "regularization", regularization)
        check_positive(self.name, "alpha", alpha, allow_zero=True)
        check_positive(self.name, "like_weight", like_weight, allow_zero=True)
        check_positive(self.name, "iterations", iterations, whole=True)
        self.factors = int(factors)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        self.like_weight = float(like_weight)
        self._like_option(like_threshold)  # None: the data's scale, at fit
        self.iterations = int(iterations)
        check_seed(seed, f"{self.name}: seed")
        self.seed = seed
        self.item_factors: np.ndarray | None = None  # float64 [n_items, factors]
        self.trained = np.zeros(0, dtype=bool)  # items with training interactions
        self.popularity = np.zeros(0)

    def confidence(self, ratings: np.ndarray) -> np.ndarray:
        weight = np.where(ratings >= self.like_threshold, self.like_weight, 1.0)
        return 1.0 + self.alpha * weight

    def fit(self, data: TrainingData) -> ALS:
        self._fit_like(data)
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        ur: UserRatings = data.ratings
        matrix = sp.csr_matrix(
            (self.confidence(ur.ratings).astype(np.float32), ur.items, ur.offsets),
            shape=(len(ur), data.n_items),
        )
        matrix.sum_duplicates()
        # one BLAS thread: implicit's own advice, and what keeps the result reproducible
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=1.0,  # confidences are already in the matrix
                iterations=self.iterations,
                num_threads=1,
                random_state=self.seed,
            )
            model.fit(matrix, show_progress=False)
        self.trained = np.bincount(ur.items, minlength=data.n_items) > 0
        self.item_factors = np.asarray(model.item_factors, dtype=np.float64)
        self.item_factors[~self.trained] = 0.0  # never fitted: ALS leaves them at ~0 anyway
        self.popularity = popularity_scores(ur, data.n_items, self.like_threshold)
        return self

    def _factors(self) -> np.ndarray:
        require(self.item_factors, self.name)
        assert self.item_factors is not None
        return self.item_factors

    @property
    def n_items(self) -> int:
        return len(self._factors())

    def fold_in(self, tasks: Sequence[Task]) -> tuple[np.ndarray, np.ndarray]:
        """User vectors [B, factors] solved from the support sets, and which rows have one."""
        y = self._factors()
        items, ratings, mask = padded_support(tasks)
        usable = mask & self.trained[items]
        conf = np.where(usable, self.confidence(ratings), 0.0)
        ys = y[items]  # [B, S, f]
        eye = np.eye(y.shape[1])
        gram = y.T @ y + self.regularization * eye
        weighted = ys * np.where(usable, conf - 1.0, 0.0)[..., None]
        # a batched matmul, not einsum("bs,bsf,bsg->bfg"), which numpy ran as a plain C
        # loop: 35 ms against 3 for 256 users of 20 ratings, 210 against 17 at 200
        a = gram[None] + weighted.transpose(0, 2, 1) @ ys
        b = np.einsum("bs,bsf->bf", conf, ys)
        x = np.linalg.solve(a, b[..., None])[..., 0]
        return x, usable.any(axis=1)

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        y = self._factors()
        x, has_vector = self.fold_in(tasks)
        scores = x @ y.T
        if (~self.trained).any() and self.trained.any():
            # items ALS never saw rank below every item it did
            floor = scores[:, self.trained].min(axis=1, keepdims=True) - 1.0
            scores[:, ~self.trained] = floor
        scores[~has_vector] = popularity_fallback(self.popularity)
        return scores

    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        del items, vectors
        raise UnsupportedError(
            f"{self.name}: ALS learns item factors from interactions only, so it cannot "
            "score items added after fitting; use a text-aware model (metarec, knn, melu)"
        )

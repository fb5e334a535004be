"""A new item's first ratings as evidence: a shrunk mean residual per item.

Text tells a model what a new item is, not how well it was made: on ml-1m the
spread of new items' mean ratings is what keeps item-cold MAE high for every
model, MeLU's included. A live system does not wait for retraining to learn
that a film disappoints. Once a few users have rated it, the mean of their
ratings *minus what the model predicted for them* is the item's offset::

    offset_i = sum_{u rated i} (r_ui - p_ui) / (n_i + shrinkage)

The model's own residuals are used, not raw ratings, so the offset corrects
the model rather than repeating what it already knows (the user's leniency,
the item's genre). ``shrinkage`` pulls items with few ratings toward 0 (no
correction); it is chosen by leave-one-rating-out on the evidence itself,
which needs no held-out data: each rating's residual is predicted from the
item's other ratings, and the shrinkage with the least squared error wins.
Each user rates an item once, so leaving a rating out leaves its user out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from metarec.data.tasks import Task
from metarec.models.base import TaskPredictor

SHRINKAGES: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1e9)


def fitted_residuals(
    model: TaskPredictor, tasks: list[Task], users: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """The evidence :meth:`ItemEvidence.fit` takes: every task's query items, and
    their ratings minus the model's predictions after adapting to the support set."""
    preds = model.predict_tasks(tasks, users) if tasks else []
    items = [np.zeros(0, dtype=np.int64), *(t.query_items for t in tasks)]
    residuals = [np.zeros(0)]
    residuals += [
        t.query_ratings - np.asarray(p, dtype=np.float64) for t, p in zip(tasks, preds, strict=True)
    ]
    return np.concatenate(items), np.concatenate(residuals)


@dataclass(frozen=True)
class ItemEvidence:
    """Per-item residual sums and counts, and the shrinkage chosen for them."""

    sums: np.ndarray  # [n_items] sum of residuals
    counts: np.ndarray  # [n_items] ratings seen
    shrinkage: float
    loo_error: dict[float, float]  # leave-one-out mean squared error per shrinkage tried

    @classmethod
    def fit(
        cls,
        items: np.ndarray,
        residuals: np.ndarray,
        n_items: int,
        shrinkages: Sequence[float] = SHRINKAGES,
    ) -> ItemEvidence:
        """``items[j]`` was rated with residual ``residuals[j]`` (rating minus prediction)."""
        items = np.asarray(items, dtype=np.int64)
        residuals = np.asarray(residuals, dtype=np.float64)
        if items.shape != residuals.shape or items.ndim != 1:
            raise ValueError(
                f"items and residuals must be 1-d and equal in length; got {items.shape} "
                f"and {residuals.shape}"
            )
        if len(items) and (items.min() < 0 or items.max() >= n_items):
            raise ValueError(
                f"item indices must be in [0, {n_items}); got {items.min()}..{items.max()}"
            )
        if not np.isfinite(residuals).all():
            raise ValueError("residuals must be finite")
        if not shrinkages or min(shrinkages) < 0:
            raise ValueError(f"shrinkages must be non-empty and >= 0; got {list(shrinkages)}")
        sums = np.bincount(items, weights=residuals, minlength=n_items)
        counts = np.bincount(items, minlength=n_items).astype(np.float64)
        errors: dict[float, float] = {}
        if len(items):
            others_sum = sums[items] - residuals
            others_n = counts[items] - 1.0
            for s in shrinkages:
                denom = others_n + s
                guess = np.divide(others_sum, denom, out=np.zeros_like(others_sum), where=denom > 0)
                errors[float(s)] = float(np.mean((residuals - guess) ** 2))
            best = min(errors, key=lambda s: (errors[s], -s))  # ties: the more cautious one
        else:
            best = float(max(shrinkages))
        return cls(sums, counts, best, errors)

    def offsets(self, items: np.ndarray) -> np.ndarray:
        """What to add to a model's prediction for ``items`` (0 for items never rated)."""
        items = np.asarray(items, dtype=np.int64)
        denom = self.counts[items] + self.shrinkage
        return np.divide(
            self.sums[items], denom, out=np.zeros(len(items), dtype=np.float64), where=denom > 0
        )

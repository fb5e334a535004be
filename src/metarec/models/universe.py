"""The items a dense item-by-item model is fitted on, and how the rest of the catalogue is ranked.

The episodic ridge and the stacked ranker solve dense systems over the items
they know, so their memory grows with the square of that number (about
18 GB at 10,000 items: :mod:`metarec.models.memory`). A product or book
catalogue has ten times that. With ``max_items`` such a model is fitted on a
*universe*: the ``max_items`` items with the most training ratings (ties:
lower catalogue index first). Every other item

* is ignored in a support set, as an item the model never saw would be
  (its ratings are dropped from the training histories too, so training and
  scoring see the same thing), and
* scores below every universe item, in order of its like rate in the whole
  training data: outside the universe the model falls back on popularity.

Why the most rated: a support item helps only if the model has seen it in
many histories, and a recommendation outside the most rated items is
rarely a later like (on ml-100k the 300 most-liked items hold most later
likes: :mod:`metarec.models.stacked`). Items added after training
(``add_items``) are outside the universe with like rate 0, so they rank last
until the model is retrained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from metarec.catalogue import Catalogue
from metarec.data.tasks import Task
from metarec.errors import ModelError
from metarec.models.base import TrainingData
from metarec.values import check_whole


def check_max_items(name: str, max_items: int | None) -> int | None:
    """``max_items`` as an int, or None (the whole catalogue); a bad value is refused."""
    if max_items is None:
        return None
    # "abc" or NaN was int()'s bare ValueError
    return check_whole(max_items, f"{name}: max_items", 1)


@dataclass(frozen=True)
class Universe:
    """Catalogue indices a model was fitted on, and the like rate ranking the others.

    ``items``: int64, ascending; the model's own item ``j`` is catalogue item
    ``items[j]``. ``like_rate``: float64 over the whole (current) catalogue.
    """

    items: np.ndarray
    like_rate: np.ndarray

    @classmethod
    def whole(cls, n_items: int) -> Universe:
        """Every item (what a model without ``max_items`` is fitted on)."""
        return cls(np.arange(n_items, dtype=np.int64), np.zeros(n_items))

    @classmethod
    def most_rated(
        cls, data: TrainingData, max_items: int | None, like_threshold: float
    ) -> Universe:
        """The ``max_items`` most-rated training items (all of them when None or when the
        catalogue is no larger), with every item's like rate in ``data``."""
        n = data.n_items
        ur = data.ratings
        liked = ur.ratings >= like_threshold
        like_rate = np.bincount(ur.items[liked], minlength=n) / max(len(ur), 1)
        if max_items is None or n <= max_items:
            return cls(np.arange(n, dtype=np.int64), like_rate)
        counts = np.bincount(ur.items, minlength=n)
        top = np.argsort(-counts, kind="stable")[:max_items]  # stable: ties by index
        return cls(np.sort(top).astype(np.int64), like_rate)

    @property
    def n_catalogue(self) -> int:
        return len(self.like_rate)

    @property
    def is_whole(self) -> bool:
        return len(self.items) == self.n_catalogue

    @property
    def position(self) -> np.ndarray:
        """int64 [n_catalogue]: each item's index inside the universe, -1 outside it."""
        pos = np.full(self.n_catalogue, -1, dtype=np.int64)
        pos[self.items] = np.arange(len(self.items))
        return pos

    def restrict(self, data: TrainingData) -> TrainingData:
        """``data`` with only the universe's items: a smaller catalogue (in the same
        order) and the training and validation ratings of those items."""
        if len(self.items) == data.n_items:
            return data
        cat = data.catalogue
        items = cat.items.iloc[self.items].reset_index(drop=True)
        keep = set(items["item_id"].astype(str))
        validation = data.validation
        if validation is not None:
            validation = validation[validation["item_id"].astype(str).isin(keep)]
        inter = data.interactions
        return replace(
            data,
            interactions=inter[inter["item_id"].astype(str).isin(keep)],
            catalogue=Catalogue(items, cat.vectors[self.items], cat.encoder),
            validation=validation,
        )

    def tasks(self, tasks: Sequence[Task]) -> list[Task]:
        """Each task's support set in the universe's indices, items outside it dropped
        (with their ratings). The query is left empty: scoring never reads it."""
        pos = self.position
        out = []
        for t in tasks:
            items = np.asarray(t.support_items, dtype=np.int64)
            ratings = np.asarray(t.support_ratings)
            inside = items < len(pos)  # added after training: outside
            inside[inside] = pos[items[inside]] >= 0
            out.append(Task.support_only(pos[items[inside]], ratings[inside], t.user))
        return out

    def expand(self, scores: np.ndarray, gap: np.ndarray | float) -> np.ndarray:
        """Scores [B, n_catalogue] from the universe's [B, len(items)]: an outside item
        gets ``lowest - gap + gap / 2 * rate / max rate`` (``lowest``: the row's lowest
        universe score, ``rate`` its like rate), so it sits below every universe item
        and in like-rate order among the other outside items."""
        if scores.shape[1] != len(self.items):
            raise ModelError(
                f"universe of {len(self.items)} items, but scores for {scores.shape[1]}"
            )
        if self.is_whole:
            return scores
        if scores.shape[1]:
            lowest = scores.min(axis=1, keepdims=True)
        else:  # an empty universe: nothing to sit below
            lowest = np.zeros((len(scores), 1))
        gap = np.asarray(gap, dtype=np.float64).reshape(-1, 1) if np.ndim(gap) else float(gap)
        outside = np.flatnonzero(self.position < 0)
        rate = self.like_rate[outside]
        out = np.empty((len(scores), self.n_catalogue))
        out[:, self.items] = scores
        out[:, outside] = lowest - gap + 0.5 * gap * rate[None, :] / max(rate.max(initial=0), 1e-12)
        return out

    def grown(self, m: int) -> Universe:
        """The same universe in a catalogue with ``m`` more items (like rate 0)."""
        return Universe(self.items, np.concatenate([self.like_rate, np.zeros(m)]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"universe.items": self.items, "universe.like_rate": self.like_rate}

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], n_known: int, n_catalogue: int, name: str
    ) -> Universe:
        """The saved universe, or for a state saved before universes existed the first
        ``n_known`` items (what such a model was fitted on) of ``n_catalogue``."""
        if "universe.items" not in arrays:
            return cls(np.arange(n_known, dtype=np.int64), np.zeros(n_catalogue))
        items = np.asarray(arrays["universe.items"], dtype=np.int64)
        rate = np.asarray(arrays.get("universe.like_rate", np.zeros(0)), dtype=np.float64)
        if len(items) != n_known:
            raise ModelError(f"{name}: universe.items has {len(items)} items, not {n_known}")
        if rate.shape != (n_catalogue,):
            raise ModelError(
                f"{name}: universe.like_rate has shape {rate.shape}, not ({n_catalogue},)"
            )
        if len(items) and (np.any(np.diff(items) <= 0) or items[0] < 0 or items[-1] >= n_catalogue):
            raise ModelError(
                f"{name}: universe.items must be ascending catalogue indices below {n_catalogue}"
            )
        return cls(items, rate)

"""The bias model as a peer: global mean + damped item mean + damped user offset.

Wraps :class:`metarec.models.bias.BiasModel` (the baseline metarec's network
starts from) and vectorises its user offset over a batch of support sets.
Items added after fitting have no item offset: they get the global mean plus
the user's offset, which is the bias model's best guess for an unknown item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from metarec.data.tasks import Task
from metarec.models.base import ScoringModel, TrainingData, check_seed
from metarec.models.bias import BiasModel
from metarec.peers._common import check_new_items, check_positive, require


class Bias(ScoringModel):
    name = "bias"
    predicts_ratings = True

    def __init__(
        self, *, item_damping: float = 10.0, user_damping: float = 3.0, seed: int = 0
    ) -> None:
        check_positive(self.name, "item_damping", item_damping, allow_zero=True)
        check_positive(self.name, "user_damping", user_damping, allow_zero=True)
        self.item_damping = item_damping
        self.user_damping = user_damping
        check_seed(seed, f"{self.name}: seed")
        self.seed = seed  # unused: the bias model is closed-form
        self.model: BiasModel | None = None

    def fit(self, data: TrainingData) -> Bias:
        self.model = BiasModel(self.item_damping, self.user_damping).fit(data.ratings, data.n_items)
        return self

    def _model(self) -> BiasModel:
        require(self.model, self.name)
        assert self.model is not None
        return self.model

    @property
    def n_items(self) -> int:
        return len(self._model().item_bias)

    def user_offsets(self, tasks: Sequence[Task]) -> np.ndarray:
        """Damped mean residual of each task's support ratings (0 for an empty support)."""
        return self._model().user_offsets(tasks)

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        m = self._model()
        return m.mu + m.item_bias[None, :] + self.user_offsets(tasks)[:, None]

    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        m = self._model()
        check_new_items(self.name, items, vectors)
        m.item_bias = np.concatenate([m.item_bias, np.zeros(len(items))])
        # its rating counts grow with it: they are saved beside the biases, and a
        # saved model whose two arrays differ in length cannot be loaded
        m.popularity = np.concatenate([m.popularity, np.zeros(len(items), m.popularity.dtype)])

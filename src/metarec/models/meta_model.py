"""metarec's own network as a :class:`~metarec.models.base.ScoringModel`.

A thin adapter: ``fit`` meta-trains a :class:`~metarec.recommender.Recommender`
with the given config; scoring delegates to it. This is how every metarec
algorithm (and the transfer control) takes part in benchmarks and ensembles
beside the peers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec.config import TrainConfig
from metarec.data.tasks import Task
from metarec.errors import ModelError
from metarec.models.base import ScoringModel, TrainingData
from metarec.models.cutpoints import RatingCutpoints
from metarec.recommender import Recommender


class MetaModel(ScoringModel):
    """metarec's meta-trained model as a :class:`~metarec.models.base.ScoringModel`, so
    it is benchmarked, ensembled and conformance-checked beside the peers: ``fit``
    meta-trains a :class:`~metarec.recommender.Recommender` with ``cfg`` (a
    :class:`~metarec.config.TrainConfig` or a dict of its fields), and every method
    scores through it, adapting each task's user from their support ratings.
    ``name`` (default the algorithm's) is what reports call it; ``checkpoint_dir``
    makes the training resumable; ``metadata`` is saved with the run."""

    def __init__(
        self,
        cfg: TrainConfig | dict[str, Any] | None = None,
        *,
        name: str | None = None,
        progress: bool = False,
        checkpoint_dir: str | Path | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = TrainConfig.given(cfg, "MetaModel: cfg")  # a dict too, as train() takes
        self.name = name or self.cfg.algorithm
        self.progress = progress
        self.checkpoint_dir = checkpoint_dir
        self.metadata = metadata  # what the fitted run records (its data, how it trained)
        self.recommender: Recommender | None = None
        self.history: object = None
        self.predicts_ratings = self.cfg.objective == "rating"

    @classmethod
    def from_recommender(cls, rec: Recommender, name: str | None = None) -> MetaModel:
        """A fitted MetaModel around ``rec`` (one trained by :func:`metarec.train` or read
        with :meth:`Recommender.load`), for evaluating or ensembling a run as it is."""
        model = cls(rec.cfg, name=name)
        model.recommender = rec
        return model

    def fit(self, data: TrainingData) -> MetaModel:
        from metarec.pipeline import fit_recommender

        self.recommender, self.history = fit_recommender(
            data.catalogue,
            data.interactions,
            self.cfg,
            users=data.users,
            validation=data.validation,
            rating_range=data.rating_range,
            checkpoint_dir=self.checkpoint_dir,
            progress=self.progress,
            metadata=self.metadata,
        )
        return self

    def _rec(self) -> Recommender:
        if self.recommender is None:
            raise ModelError(f"{self.name}: not fitted; call fit() first")
        return self.recommender

    @property
    def n_items(self) -> int:
        return self._rec().n_items

    @property
    def cutpoints(self) -> RatingCutpoints | None:  # type: ignore[override]
        return None if self.recommender is None else self.recommender.cutpoints

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        return self._rec().score_catalogue(tasks, users)

    def predict_tasks(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> list[np.ndarray]:
        # query items only: cheaper than scoring the whole catalogue
        return self._rec().predict_tasks(tasks, users)

    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        self._rec().add_items(items, vectors=vectors)

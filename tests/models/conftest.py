"""Fixtures shared by the model tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from metarec.data import load_dataset
from metarec.data.tasks import Task
from metarec.evaluation.p2 import make_p2_split
from metarec.models.base import TrainingData
from metarec.pipeline import encode_catalogue


def support_task(items: list[int], ratings: list[float]) -> Task:
    """A user known only by a support set (no query): what scoring takes."""
    return Task.support_only(items, np.array(ratings, dtype=np.float32))


@dataclass(frozen=True)
class P2Fold:
    """Fold 0 of P2's 5 folds on ml-100k: what models fit on, and the held-out users."""

    data: TrainingData
    test: pd.DataFrame


@pytest.fixture(scope="session")
def p2_fold0(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> P2Fold:
    ds = load_dataset("ml-100k", root=shared_data)
    # TF-IDF text vectors keep the tests fast; the benchmark uses MiniLM
    cat = encode_catalogue(
        ds.items, "tfidf", cache_dir=tmp_path_factory.mktemp("emb"), progress=False
    )
    split = make_p2_split(ds, 0, n_folds=5, fold=0)
    data = TrainingData(
        split.frames["train"], cat, ds.users, split.frames["validation"], ds.rating_range, 0
    )
    return P2Fold(data, split.frames["test"])


@dataclass
class P2World:
    """A model fitted on :class:`P2Fold`'s training users, beside that fold."""

    data: TrainingData
    test: pd.DataFrame
    model: Any

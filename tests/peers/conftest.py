"""Real ml-100k data for the peer unit tests: a small training set and held-out tasks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec.data import load_dataset
from metarec.data.tasks import Task, UserRatings, fixed_tasks
from metarec.models.base import TrainingData
from metarec.pipeline import encode_catalogue


@dataclass
class Small:
    data: TrainingData
    tasks: list[Task]  # held-out users: 10 query ratings, the rest support
    users: pd.DataFrame  # one row per task


@pytest.fixture(scope="session")
def small(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Small:
    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(
        ds.items, "tfidf", cache_dir=tmp_path_factory.mktemp("emb"), progress=False
    )
    users = np.random.default_rng(1).permutation(np.sort(ds.interactions["user_id"].unique()))
    rows = ds.interactions["user_id"]
    data = TrainingData(ds.interactions[rows.isin(set(users[:300]))], catalogue, users=ds.users)
    held = UserRatings.from_frame(ds.interactions[rows.isin(set(users[300:340]))], catalogue.index)
    tasks = fixed_tasks(held, query_size=10, seed=1)
    frame = ds.users.set_index("user_id").reindex(held.user_ids[[t.user for t in tasks]])
    return Small(data, tasks, frame.reset_index())

"""User features: the per-request path gives the same codes as the batch path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metarec import load_dataset
from metarec.data.features import UserFeatureEncoder


def test_encode_one_matches_transform_on_real_users(shared_data: Path) -> None:
    users = load_dataset("ml-100k", root=shared_data).users
    enc = UserFeatureEncoder.fit(users)
    assert "age" in enc.bins  # exact ages are binned
    for row in users.sample(200, random_state=0).to_dict("records"):
        batch = enc.transform(pd.DataFrame([row]), np.array([row["user_id"]], dtype=object))[0]
        np.testing.assert_array_equal(enc.encode_one(row), batch)
    # unknown values and missing keys map to 0, never raise
    assert enc.encode_one({"age": "n/a", "gender": "X"}).tolist() == [0, 0, 0]
    assert enc.encode_one({"age": 10**400}).tolist() == [0, 0, 0]  # past a float: unknown
    assert enc.encode_one({}).tolist() == [0] * len(enc.columns)

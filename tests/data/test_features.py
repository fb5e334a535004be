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
    # not age 1, not the top bin (adapt and the users-table check refuse both first)
    for odd in (True, float("inf"), "-inf"):
        assert enc.encode_one({"age": odd}).tolist() == [0, 0, 0]
        assert enc.problem({"age": odd}, json_types=False) is not None
    assert enc.encode_one({}).tolist() == [0] * len(enc.columns)


def test_a_saved_encoder_is_read_back_or_refused_by_field() -> None:
    import pytest

    from metarec.errors import ModelError

    saved = {"columns": ["age", "gender"], "vocab": {"age": {"bin1": 1}, "gender": {"F": 1}},
             "bins": {"age": [18.0, 25.5]}}  # fmt: skip
    enc = UserFeatureEncoder.from_dict(saved, source="run/recommender.json")
    assert enc.encode_one({"age": 20, "gender": "F"}).tolist() == [1, 1]
    assert UserFeatureEncoder.from_dict({"columns": [], "vocab": {}}).columns == []
    for damaged, needle in [
        ({**saved, "bins": {"age": ["x"]}}, "features.bins: expected"),
        ({**saved, "vocab": {"age": {"bin1": 1}}}, "features.vocab.gender: expected"),
        (
            {**saved, "vocab": {**saved["vocab"], "gender": {"F": -1}}},
            "features.vocab.gender: .*code >= 0",
        ),
        ([], "features: expected an object"),
    ]:
        with pytest.raises(ModelError, match=r"run/recommender\.json: " + needle):
            UserFeatureEncoder.from_dict(damaged, source="run/recommender.json")

"""The bias model against hand-computed damped means."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec.data.tasks import Task, UserRatings
from metarec.models.bias import BiasModel


def test_damped_item_and_user_offsets() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "b"],
            "item_id": ["0", "1", "0", "1"],
            "rating": [5.0, 3.0, 4.0, 4.0],
        }
    )
    model = BiasModel(item_damping=2.0, user_damping=1.0).fit(
        UserRatings.from_frame(frame, {"0": 0, "1": 1, "2": 2}), 3
    )
    assert model.mu == pytest.approx(4.0)
    # item 0: residuals +1, 0 → 1 / (2 + 2); item 1: -1, 0 → -1/4; item 2 unrated → 0
    np.testing.assert_allclose(model.item_bias, [0.25, -0.25, 0.0])
    task = Task(0, np.array([0]), np.array([5.0], dtype=np.float32), np.array([1, 2]), np.zeros(2))
    # user offset: (5 - 4 - 0.25) / (1 + 1) = 0.375
    (pred,) = model.predict_tasks([task])
    np.testing.assert_allclose(pred, [4.0 - 0.25 + 0.375, 4.0 + 0.375])


def test_user_offsets_of_many_tasks_are_each_tasks_own() -> None:
    # one vectorised computation serves the bias model and the bias peer; an empty
    # support has no offset, and an item past the fitted catalogue (added later) has
    # no bias of its own
    model = BiasModel(item_damping=2.0, user_damping=1.0)
    model.mu, model.item_bias = 4.0, np.array([0.25, -0.25, 0.0])
    tasks = [
        Task.support_only([0], [5.0]),
        Task.support_only([], []),
        Task.support_only([1, 7], [2.0, 4.0]),  # 7: a new item, bias 0
    ]
    # (5 - 4 - 0.25) / 2;  nothing;  ((2 - 4 + 0.25) + (4 - 4)) / 3
    np.testing.assert_allclose(model.user_offsets(tasks), [0.375, 0.0, -1.75 / 3])
    assert model.user_offset(np.array([1, 7]), np.array([2.0, 4.0])) == pytest.approx(-1.75 / 3)
    model.user_damping = 0.0
    assert model.user_offsets([Task.support_only([], [])]).tolist() == [0.0]

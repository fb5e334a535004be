"""ALS: exact fold-in (checked against implicit's own solver), fallbacks, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from metarec.data.tasks import Task
from metarec.errors import ModelError, UnsupportedError
from metarec.peers import ALS, Popularity

from .conftest import Small


@pytest.fixture(scope="module")
def als(small: Small) -> ALS:
    return ALS(factors=16, iterations=5, seed=3).fit(small.data)


def test_fold_in_solves_the_users_als_step_exactly(als: ALS, small: Small) -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    reference = AlternatingLeastSquares(factors=als.factors, regularization=als.regularization)
    assert als.item_factors is not None
    reference.item_factors = als.item_factors.astype(np.float32)
    tasks = small.tasks[:5]
    folded, has_vector = als.fold_in(tasks)
    assert has_vector.all()
    for x, t in zip(folded, tasks, strict=True):
        keep = als.trained[t.support_items]
        conf = als.confidence(t.support_ratings[keep]).astype(np.float32)
        row = sp.csr_matrix(
            (conf, t.support_items[keep], [0, int(keep.sum())]), shape=(1, als.n_items)
        )
        want = reference.recalculate_user(0, row)
        np.testing.assert_allclose(x, np.ravel(want), rtol=1e-3, atol=1e-4)
    scores = als.score_catalogue(tasks)
    expected = folded @ als.item_factors.T
    np.testing.assert_allclose(scores[:, als.trained], expected[:, als.trained])


def test_users_without_usable_support_get_popularity(als: ALS, small: Small) -> None:
    untrained = np.flatnonzero(~als.trained)[:3]
    assert len(untrained) == 3  # 300 users leave some ml-100k items unrated
    empty = Task(0, np.zeros(0, np.int64), np.zeros(0, np.float32), untrained, np.ones(3))
    only_new = Task(0, untrained, np.full(3, 5.0, np.float32), untrained, np.ones(3))
    scores = als.score_catalogue([empty, only_new])
    popular = Popularity().fit(small.data).score_catalogue([empty])[0]
    for row in scores:
        np.testing.assert_array_equal(
            np.argsort(-row, kind="stable"), np.argsort(-popular, kind="stable")
        )


def test_items_without_interactions_rank_last(als: ALS, small: Small) -> None:
    scores = als.score_catalogue(small.tasks[:4])
    n_trained = int(als.trained.sum())
    for row in scores:
        assert not als.trained[np.argsort(-row, kind="stable")[n_trained:]].any()


def test_confidence_weights_likes_higher() -> None:
    model = ALS(alpha=10.0, like_weight=3.0)
    np.testing.assert_allclose(model.confidence(np.array([1.0, 3.0, 4.0, 5.0])), [11, 11, 31, 31])


def test_new_items_are_refused_and_unfitted_use_is_an_error(als: ALS) -> None:
    with pytest.raises(UnsupportedError, match="als: ALS learns item factors"):
        als.add_items(pd.DataFrame({"item_id": ["x"]}), np.zeros((1, 4)))
    with pytest.raises(ModelError, match="als: not fitted"):
        ALS().score_catalogue([])

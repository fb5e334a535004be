"""Popularity, bias and content kNN against hand-computed values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from metarec.catalogue import Catalogue
from metarec.data.tasks import Task
from metarec.errors import DataError, ModelError
from metarec.models.base import ScoringModel, TrainingData
from metarec.models.bias import BiasModel
from metarec.peers import Bias, ContentKNN, Popularity

from .conftest import Small


def _task(items: list[int], ratings: list[float]) -> Task:
    return Task.support_only(items, np.array(ratings, dtype=np.float32))


def _frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])


@pytest.mark.parametrize("model", [Popularity(), Bias(), ContentKNN()], ids=lambda m: m.name)
def test_unfitted_use_is_a_model_error(model: object) -> None:
    with pytest.raises(ModelError, match="not fitted; call fit"):
        model.score_catalogue([_task([], [])])  # type: ignore[attr-defined]


def test_popularity_counts_likes_then_ratings(small: Small) -> None:
    # ml-100k item ids "1".."4" are catalogue indices 0..3
    frame = _frame(
        [("a", "1", 5), ("b", "1", 4), ("a", "2", 5), ("b", "2", 2), ("c", "2", 1),
         ("c", "3", 4), ("a", "4", 3)]
    )  # fmt: skip
    model = Popularity().fit(TrainingData(frame, small.data.catalogue))
    scores = model.score_catalogue([_task([0], [5.0]), _task([], [])])
    np.testing.assert_array_equal(scores[0], scores[1])  # not personalised
    # likes: item0 2, item1 1 (3 ratings), item2 1 (1 rating), item3 0 (1 rating)
    assert list(np.argsort(-scores[0], kind="stable")[:4]) == [0, 1, 2, 3]
    assert scores[0, 3] > 0 and (scores[0, 4:] == 0).all()
    top = model.recommend([_task([0], [5.0])], k=3)
    assert list(top[0]) == [1, 2, 3]  # item 0 is in the support
    model.add_items(pd.DataFrame({"item_id": ["x"]}), np.zeros((1, 4)))
    assert model.n_items == small.data.n_items + 1
    assert model.score_catalogue([_task([], [])])[0, -1] == 0.0


def test_bias_matches_the_bias_model_per_task(small: Small) -> None:
    peer = Bias(item_damping=5.0, user_damping=2.0).fit(small.data)
    reference = BiasModel(item_damping=5.0, user_damping=2.0).fit(
        small.data.ratings, small.data.n_items
    )
    preds = peer.predict_tasks(small.tasks)
    for got, want in zip(preds, reference.predict_tasks(small.tasks), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    empty = peer.score_catalogue([_task([], [])])[0]
    np.testing.assert_allclose(empty, reference.mu + reference.item_bias)
    # a new item has no offset of its own: global mean + the user's offset
    peer.add_items(pd.DataFrame({"item_id": ["x"]}), np.zeros((1, 1)))
    task = small.tasks[0]
    offset = reference.user_offset(task.support_items, task.support_ratings)
    assert peer.score_catalogue([task])[0, -1] == pytest.approx(reference.mu + offset)


@pytest.fixture
def toy_knn(small: Small) -> ContentKNN:
    """Four items with hand-made vectors; training mean rating 3."""
    items = small.data.catalogue.items.iloc[:4].reset_index(drop=True)
    vectors = np.array(
        [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32
    )
    catalogue = Catalogue(items, vectors, small.data.catalogue.encoder)
    frame = _frame([("a", "3", 5), ("b", "3", 4), ("a", "4", 1), ("c", "2", 2)])
    return ContentKNN(damping=3.0).fit(TrainingData(frame, catalogue))


def test_knn_profile_pulls_toward_likes_and_away_from_dislikes(toy_knn: ContentKNN) -> None:
    like, dislike, both, empty = toy_knn.score_catalogue(
        [_task([0], [5.0]), _task([0], [1.0]), _task([0, 2], [5.0, 1.0]), _task([], [])]
    )
    cos01 = 0.9 / np.sqrt(0.82)
    # one 5 (above the damped centre (5 + 3*3)/4 = 3.5): profile = v0
    np.testing.assert_allclose(like, [1.0, cos01, 0.0, 0.0])
    np.testing.assert_allclose(dislike, -like)  # one 1: the opposite direction
    # centre (5 + 1 + 9) / 5 = 3: weights +2, -2, profile (v0 - v2)/sqrt(2)
    half = 1 / np.sqrt(2)
    np.testing.assert_allclose(both, [half, (0.9 - 0.1) / np.sqrt(0.82) * half, -half, 0])
    # K = 0: popularity order (item 2 has two likes, item 1 one rating, item 3 one rating)
    assert list(np.argsort(-empty, kind="stable")) == [2, 1, 3, 0]
    assert (empty >= 0).all() and (empty < 1).all()


def test_knn_on_one_value_feedback_follows_what_the_user_chose(small: Small) -> None:
    """Clicks read as all 1s: ratings minus the centre are all 0, and the profile
    was empty, so every user got popularity's list. Each interaction is a like."""
    items = small.data.catalogue.items.iloc[:4].reset_index(drop=True)
    vectors = np.array(
        [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32
    )
    catalogue = Catalogue(items, vectors, small.data.catalogue.encoder)
    frame = _frame([("a", "3", 1), ("b", "3", 1), ("a", "4", 1), ("c", "2", 1)])
    knn = ContentKNN(damping=3.0).fit(TrainingData(frame, catalogue, rating_range=(1.0, 1.0)))
    one, two, empty = knn.score_catalogue(
        [_task([0], [1.0]), _task([0, 3], [1.0, 1.0]), _task([], [])]
    )
    np.testing.assert_allclose(one, [1.0, 0.9 / np.sqrt(0.82), 0.0, 0.0])
    half = 1 / np.sqrt(2)
    np.testing.assert_allclose(two, [half, 0.9 / np.sqrt(0.82) * half, 0.0, half])
    assert list(np.argsort(-empty, kind="stable")) == [2, 1, 3, 0]  # K = 0: popularity
    # explicit ratings with no damping: a lone rating is its own centre; a 5 is still
    # a like, and a 1 no like (popularity's list, as before), not read as one
    stars = _frame([("a", "3", 5), ("b", "3", 4), ("a", "4", 1), ("c", "2", 2)])
    undamped = ContentKNN(damping=0.0).fit(TrainingData(stars, catalogue))
    five, one_star = undamped.score_catalogue([_task([0], [5.0]), _task([0], [1.0])])
    np.testing.assert_allclose(five, [1.0, 0.9 / np.sqrt(0.82), 0.0, 0.0])
    assert list(np.argsort(-one_star, kind="stable")) == [2, 1, 3, 0]


def test_knn_scores_new_items_from_vectors(toy_knn: ContentKNN) -> None:
    toy_knn.add_items(pd.DataFrame({"item_id": ["x", "y"]}), np.array([[2.0, 0, 0], [0, 0, 1]]))
    assert toy_knn.n_items == 6
    scores = toy_knn.score_catalogue([_task([0], [5.0])])[0]
    np.testing.assert_allclose(scores[4:], [1.0, 0.0])  # new vectors are normalised too
    with pytest.raises(DataError, match=r"dimension 2.*have 3"):
        toy_knn.add_items(pd.DataFrame({"item_id": ["z"]}), np.ones((1, 2)))
    with pytest.raises(DataError, match=r"vectors of shape \(2, 3\); expected \(1, d\)"):
        toy_knn.add_items(pd.DataFrame({"item_id": ["z"]}), np.ones((2, 3)))
    # a bare TypeError, a bare ValueError, a NaN vector zeroed, a 3-D array reshaped
    for items, vectors, needle in (
        (None, np.ones((1, 3)), "items: expected a DataFrame of the new items, got NoneType"),
        (pd.DataFrame({"item_id": ["z"]}), [["a", "b", "c"]], "vectors: expected numbers"),
        (pd.DataFrame({"item_id": ["z"]}), [[1.0, np.nan, 0.0]], "item 'z' holds NaN"),
        (pd.DataFrame({"item_id": ["z"]}), np.ones((1, 1, 3)), r"shape \(1, 1, 3\); expected"),
    ):
        with pytest.raises(DataError, match=needle):
            toy_knn.add_items(items, vectors)  # type: ignore[arg-type]
    assert toy_knn.n_items == 6  # none was taken


def test_a_model_that_scores_nan_is_refused_not_ranked(small: Small) -> None:
    """A diverged model's NaN scores would sort first in torch.topk and last in
    argsort: recommend says which task, instead of a silently arbitrary list."""
    frame = _frame([("a", "1", 5), ("b", "2", 4), ("c", "3", 4)])
    model = Popularity().fit(TrainingData(frame, small.data.catalogue))
    model.scores = model.scores.copy()
    model.scores[2] = np.nan  # as a diverged fit would leave it
    with pytest.raises(ModelError, match=r"popularity: scored NaN for task 0 of 2"):
        model.recommend([_task([0], [5.0]), _task([], [])], k=3)


def test_training_data_refuses_what_no_model_can_fit(small: Small) -> None:
    # a peer fitted on a NaN rating scored NaN without a word, on 99 of 1-5 stars up to
    # 11, where a metarec network refused the same frame by its row
    from metarec.errors import ConfigError

    frame, catalogue = small.data.interactions.reset_index(drop=True), small.data.catalogue
    cases = [
        (frame.assign(rating=frame["rating"].where(frame.index != 3)),
         r"interactions: row 3 \(user_id .*rating nan\): rating outside \[1, 5\]"),
        (frame.assign(rating=frame["rating"].where(frame.index != 4, 99)),
         r"row 4 .*rating 99\.0\): rating outside"),
        (frame.assign(rating=frame["rating"].astype(str)), r"row 0 .*text, not a number"),
        (frame.drop(columns="rating"), "rating"),
    ]  # fmt: skip
    for bad, pattern in cases:
        with pytest.raises(DataError, match=pattern):
            TrainingData(bad, catalogue)
    with pytest.raises(DataError, match=r"validation: row 0"):
        TrainingData(frame, catalogue, validation=frame.iloc[:2].assign(rating=[7, 1]))
    with pytest.raises(ConfigError, match=r"rating_range: expected finite low <= high"):
        TrainingData(frame, catalogue, rating_range=(5, 1))
    with pytest.raises(DataError, match="catalogue: expected a Catalogue"):
        TrainingData(frame, catalogue.vectors)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="users: expected None or a DataFrame with a user_id"):
        TrainingData(frame, catalogue, users=small.users.drop(columns="user_id"))


class _OwnMean(ScoringModel):
    """One's own model, with a fit of its own that checks nothing itself."""

    name = "own-mean"
    predicts_ratings = True

    def fit(self, data: TrainingData) -> _OwnMean:
        self.mean = float(data.interactions["rating"].mean())  # a frame has no .interactions
        self._n = data.n_items
        return self

    @property
    def n_items(self) -> int:
        return self._n

    def score_catalogue(self, tasks: Sequence[Task], users: object = None) -> np.ndarray:
        return np.full((len(tasks), self._n), self.mean)


class _Fits:
    def fit(self, data: TrainingData) -> _Fits:  # a mixin's fit, found by inheritance
        return _OwnMean.fit(self, data)  # type: ignore[arg-type, return-value]


class _Mixed(_Fits, _OwnMean):
    name = "mixed"


@pytest.mark.parametrize("make", [Popularity, Bias, ContentKNN, _OwnMean, _Mixed])
def test_fit_takes_training_data_and_keeps_its_scale(make: type, small: Small) -> None:
    model = make()
    with pytest.raises(DataError, match=r"fit: expected TrainingData .*got DataFrame"):
        model.fit(small.data.interactions)  # an AttributeError from inside the model
    model.fit(small.data)
    assert model.rating_range == (1.0, 5.0)
    # a support rating of 99 on 1-5 stars: bias predicted 27 from it
    off = Task(0, np.array([0]), np.array([99.0]), np.array([1, 2]), np.array([3.0, 3.0]))
    for call in (lambda: model.predict_tasks([off]), lambda: model.recommend([off], k=2)):
        with pytest.raises(DataError, match="support rating 99 is off the model's scale"):
            call()
    assert len(model.predict_tasks([replace(off, support_ratings=np.array([5.0]))])[0]) == 2
    # an item twice in one support set: models read it each their own way
    twice = replace(off, support_items=np.array([4, 0, 4]), support_ratings=np.ones(3) * 5)
    with pytest.raises(DataError, match="task 1: support item 4 is given twice"):
        model.recommend([replace(off, support_ratings=np.array([5.0])), twice], k=2)


def test_the_bias_peer_without_item_damping_scores_unrated_items_by_the_mean(
    small: Small,
) -> None:
    # 0/0 scored every item nobody rated NaN (all of P1's item-cold query items)
    frame = _frame([("a", "1", 5), ("b", "1", 4), ("c", "2", 2)])
    data = TrainingData(frame, small.data.catalogue)
    scores = Bias(item_damping=0.0).fit(data).score_catalogue([_task([], [])])[0]
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores[2:5], [11 / 3] * 3, rtol=1e-6)  # the global mean
    with pytest.raises(DataError, match="bias: no ratings to fit on"):
        Bias().fit(TrainingData(frame.iloc[:0], small.data.catalogue))


def test_a_seed_torch_cannot_take_is_refused_by_name() -> None:
    # MeLU's torch.manual_seed(2**64) was a bare ValueError after check_seed took it
    from metarec.errors import ConfigError
    from metarec.peers import MeLU

    for make in (Popularity, ContentKNN, MeLU):
        with pytest.raises(ConfigError, match=r"seed: must be below 2\*\*64"):
            make(seed=2**64)

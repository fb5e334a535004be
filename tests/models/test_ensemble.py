"""The ensemble learns support-size-dependent weights that pick the better member."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from metarec.catalogue import Catalogue
from metarec.data.tasks import Task
from metarec.errors import ConfigError, DataError, ModelError, UnsupportedError
from metarec.models.base import ScoringModel, TrainingData
from metarec.models.ensemble import Ensemble

N_ITEMS = 40


class Oracle(ScoringModel):
    """Scores the truth (each user likes items u, u+1, ...) once it has >= ``needs`` ratings,
    noise before that; a stand-in for a collaborative model that needs data."""

    predicts_ratings = True

    def __init__(self, needs: int, name: str) -> None:
        self.needs, self.name = needs, name

    def fit(self, data: TrainingData) -> Oracle:
        self.truth = data.validation.pivot_table(
            index="user_id", columns="item_id", values="rating", fill_value=1.0
        )
        return self

    @property
    def n_items(self) -> int:
        return N_ITEMS

    def score_catalogue(self, tasks: Sequence[Task], users: pd.DataFrame | None = None):
        rng = np.random.default_rng(len(tasks))
        out = rng.uniform(1, 5, size=(len(tasks), N_ITEMS))
        for i, t in enumerate(tasks):
            if len(t.support_items) >= self.needs:
                out[i] = _truth_row(t.user)
        return out


class Constant(ScoringModel):
    """Popularity-like: the same, fairly good ranking for everyone."""

    predicts_ratings = True
    name = "constant"

    def fit(self, data: TrainingData) -> Constant:
        return self

    @property
    def n_items(self) -> int:
        return N_ITEMS

    def score_catalogue(self, tasks: Sequence[Task], users: pd.DataFrame | None = None):
        return np.tile(np.linspace(5, 1, N_ITEMS), (len(tasks), 1))


def _truth_row(user: int) -> np.ndarray:
    row = np.full(N_ITEMS, 1.0)
    row[:4] = 5.0  # liked by everyone: what the constant model knows
    row[4 + (np.arange(4) + user * 3) % (N_ITEMS - 4)] = 5.0  # this user's own taste
    return row


def _data() -> TrainingData:
    rows = []
    for u in range(30):
        truth = _truth_row(u)
        for t, item in enumerate(np.random.default_rng(u).permutation(N_ITEMS)[:30]):
            rows.append((f"u{u:02d}", f"i{item}", truth[item], t))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)], "title": "", "text": "x"})
    cat = Catalogue(items, np.zeros((N_ITEMS, 2), dtype=np.float32), encoder=None)  # type: ignore[arg-type]
    return TrainingData(frame, cat, None, frame, (1.0, 5.0), 0)


@pytest.mark.parametrize("mode", ["ranking", "rating"])
def test_weights_follow_the_member_that_wins_at_each_support_size(mode: str) -> None:
    data = _data()
    ens = Ensemble(
        {"oracle": Oracle(needs=5, name="oracle"), "constant": Constant()},
        mode=mode,  # type: ignore[arg-type]
        buckets=(0, 5),
    )
    with pytest.raises(ModelError, match="not fitted; call fit"):  # the equal start, as learned
        ens.weight_table()
    ens.fit(data)
    table = ens.weight_table()
    # with >= 5 ratings the oracle is perfect: it must carry the blend (in rating
    # mode exactly, in ranking mode any weight that keeps its order is optimal)
    if mode == "rating":
        assert table["K>=5"]["oracle"] == pytest.approx(1.0)
    assert table["K>=5"]["oracle"] > table["K>=5"]["constant"]
    assert table["K>=0"]["constant"] > 0.5
    # and scoring uses the bucket of each task's support size
    zero, six = _zero_and_six_ratings()
    s0, s6 = ens.score_catalogue([zero, six])
    assert np.argsort(-s6)[:8].tolist() == np.argsort(-_truth_row(0), kind="stable")[:8].tolist()
    assert s0.argmax() == 0


def _zero_and_six_ratings() -> tuple[Task, Task]:
    """A user with no ratings and one with six (the K >= 5 bucket), both asked about
    items 0, 1 and 2."""
    zero = Task(0, np.zeros(0, dtype=np.int64), np.zeros(0, np.float32), np.arange(3), np.ones(3))
    six = Task(0, np.arange(6), np.ones(6, np.float32), np.arange(3), np.ones(3))
    return zero, six


def test_rating_predictions_blend_with_the_weights_of_each_tasks_support_size() -> None:
    # predict_tasks taking K >= 0's weights for every task would give a user with 6 ratings
    # the constant model's guesses where score_catalogue gives the oracle's
    ens = Ensemble(
        {"oracle": Oracle(needs=5, name="oracle"), "constant": Constant()},
        mode="rating",
        buckets=(0, 5),
    ).fit(_data())
    assert not np.allclose(ens.weights[0], ens.weights[1])  # else the buckets look alike
    zero, six = _zero_and_six_ratings()
    scores = ens.score_catalogue([zero, six])
    for pred, row in zip(ens.predict_tasks([zero, six]), scores, strict=True):
        np.testing.assert_allclose(pred, row[:3], rtol=1e-5)  # query items 0, 1, 2


class SupportFirst(Oracle):
    """The oracle's truth, with each user's support items scored above everything."""

    def score_catalogue(self, tasks: Sequence[Task], users: pd.DataFrame | None = None):
        out = np.array(super().score_catalogue(tasks, users), dtype=np.float64)
        for i, t in enumerate(tasks):
            out[i, t.support_items] = 100.0
        return out


def test_ranking_weights_are_chosen_on_the_items_a_user_has_not_rated() -> None:
    # a weight search that ranked the support items too, which are never listed, would find
    # a member that puts them first worthless, though past them it ranks perfectly
    ens = Ensemble(
        {"support-first": SupportFirst(needs=5, name="support-first"), "constant": Constant()},
        mode="ranking",
        buckets=(0, 5),
    ).fit(_data())
    table = ens.weight_table()
    assert table["K>=5"]["support-first"] > table["K>=5"]["constant"]


@pytest.mark.parametrize("mode", ["ranking", "rating"])
def test_a_seed_bag_keeps_equal_weights_and_averages_its_members(mode: str) -> None:
    data = _data()
    oracle, constant = Oracle(needs=5, name="oracle"), Constant()
    bag = Ensemble(
        {"oracle": oracle, "constant": constant},
        mode=mode,  # type: ignore[arg-type]
        buckets=(0, 5),
        learn_weights=False,
    )
    bag.fit(data)
    # the learned ensemble gives the oracle everything at K >= 5 (test above); a bag does not
    assert bag.weights.tolist() == [[0.5, 0.5], [0.5, 0.5]]
    six = Task(0, np.arange(6), np.ones(6, np.float32), np.arange(3), np.ones(3))
    if mode == "rating":
        mean = (oracle.score_catalogue([six]) + constant.score_catalogue([six])) / 2
        np.testing.assert_allclose(bag.score_catalogue([six]), mean, rtol=1e-6)
        np.testing.assert_allclose(bag.predict_tasks([six])[0], mean[0, :3], rtol=1e-6)
    # called directly: ints were read as tasks (an AttributeError), and a NaN support
    # rating scored as a row of NaN
    with pytest.raises(DataError, match="task 0: expected a Task, got 1"):
        bag.score_catalogue([1, 2, 3])  # type: ignore[list-item]
    nan = Task(0, np.arange(2), np.array([4.0, np.nan], np.float32), np.arange(3), np.ones(3))
    with pytest.raises(DataError, match="support rating"):
        bag.score_catalogue([nan])


def test_rating_mode_rejects_ranking_members_and_bad_buckets() -> None:
    class Ranker(Constant):
        predicts_ratings = False

    with pytest.raises(ConfigError, match="rating predictors"):
        Ensemble({"a": Ranker(), "b": Constant()}, mode="rating")
    with pytest.raises(ConfigError, match="buckets"):
        Ensemble({"a": Constant()}, buckets=(1, 3))


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"grid_step": 2.0}, "grid_step: must be in"),  # once: NaN weights, NaN scores
        ({"grid_step": 0}, "grid_step: must be in"),
        ({"grid_step": True}, "grid_step: must be in"),  # a step of 1
        ({"fit_members": "no"}, "fit_members: expected True or False"),  # truthy: refit
        ({"learn_weights": 0}, "learn_weights: expected True or False"),
        ({"samples": -1}, "samples: must be a whole number"),
        ({"k": 0}, "k: must be a whole number"),
        ({"query_size": 0}, "query_size: must be a whole number"),
        ({"buckets": []}, "buckets: whole numbers that start at 0"),
        ({"buckets": [0, 1.5, 2.7]}, r"buckets: whole numbers .* got \[0, 1.5, 2.7\]"),  # cut
        ({"buckets": 5}, "buckets: expected a list such as"),
        ({"seed": -1}, "seed"),
    ],
)
def test_options_that_make_no_blend_are_refused(options: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Ensemble({"a": Constant(), "b": Oracle(3, "o")}, **options)
    with pytest.raises(ConfigError, match=r"members \['p'\] are not models"):
        Ensemble({"p": "popularity"})  # type: ignore[dict-item]
    # asked whether it predicts ratings before whether it is a model: an AttributeError
    with pytest.raises(ConfigError, match=r"members \['p'\] are not models"):
        Ensemble({"p": "popularity"}, mode="rating")  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="members must be a mapping of name to model"):
        Ensemble([Constant()])  # type: ignore[arg-type]


def test_members_of_other_catalogues_are_refused() -> None:
    from metarec.errors import ModelError

    small = Growing()
    small.n = N_ITEMS - 5
    with pytest.raises(ModelError, match="catalogues of different sizes"):
        Ensemble({"a": Constant(), "b": small}).fit(_data())


class Growing(Constant):
    """A member that can take new items."""

    def __init__(self) -> None:
        self.n = N_ITEMS

    @property
    def n_items(self) -> int:
        return self.n

    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        self.n += len(items)


def test_new_items_are_refused_when_a_member_cannot_score_them() -> None:
    grows = Growing()
    ens = Ensemble({"grows": grows, "b": Constant()})
    with pytest.raises(UnsupportedError, match="cannot score new items"):
        ens.add_items(pd.DataFrame({"item_id": ["new"]}), np.zeros((1, 2), np.float32))
    assert ens.members["grows"].n_items == N_ITEMS  # nothing half-added
    # the caller's member too (it kept the item, while the ensemble held a copy)
    assert ens.members["grows"] is grows and grows.n_items == N_ITEMS
    both = Ensemble({"a": Growing(), "b": Growing()})
    both.add_items(pd.DataFrame({"item_id": ["new"]}), np.zeros((1, 2), np.float32))
    assert both.n_items == N_ITEMS + 1


class Loud(Growing):
    """Scores an added item far above the catalogue it was fitted on."""

    def __init__(self, slope: float) -> None:
        super().__init__()
        self.slope = slope

    def score_catalogue(self, tasks: Sequence[Task], users: pd.DataFrame | None = None):
        fitted = np.tile(self.slope * np.linspace(5, 1, N_ITEMS), (len(tasks), 1))
        return np.hstack([fitted, np.full((len(tasks), self.n - N_ITEMS), 100.0)])


@pytest.mark.parametrize("mode", ["ranking", "rating"])
def test_adding_items_leaves_the_blended_scores_of_the_others_unchanged(mode: str) -> None:
    # each member's scores are standardised by the catalogue it was fitted on: over the
    # grown one, an added item scored 100 moved every other item's blended score
    ens = Ensemble({"a": Loud(1.0), "b": Loud(-0.5)}, mode=mode)  # type: ignore[arg-type]
    ens.fit(_data())
    tasks = list(_zero_and_six_ratings())
    before = ens.score_catalogue(tasks)
    ens.add_items(pd.DataFrame({"item_id": ["new", "newer"]}), np.zeros((2, 2), np.float32))
    after = ens.score_catalogue(tasks)
    assert after.shape == (2, N_ITEMS + 2)
    np.testing.assert_allclose(after[:, :N_ITEMS], before, rtol=1e-12)


def test_a_support_size_no_validation_user_reaches_keeps_the_last_learned_weights() -> None:
    ens = Ensemble({"a": Constant(), "b": Oracle(3, "o")}, buckets=(0, 3, 1000)).fit(_data())
    # before: an even split nothing chose, while K >= 3 had learned to trust the oracle
    np.testing.assert_array_equal(ens.weights[2], ens.weights[1])
    assert ens.weights[1][1] > 0.5


def test_a_support_size_few_validation_users_reach_takes_the_weights_below() -> None:
    # three users with 30 ratings, 27 with 12: K >= 15 (15 + 10 ratings) was judged on
    # three users alone, whose weights then served every user with 15 ratings or more
    data = _data()
    keep = data.validation.sort_values("timestamp").groupby("user_id").head(12)
    rich = data.validation["user_id"].isin(["u00", "u01", "u02"])
    frame = pd.concat([keep, data.validation[rich]]).drop_duplicates()
    few = TrainingData(frame, data.catalogue, None, frame, (1.0, 5.0), 0)
    members = {"a": Constant(), "b": Oracle(1, "o")}
    with pytest.warns(UserWarning, match=r"K >= 15 had 3 \(takes K >= 1's\).*min_bucket_users=20"):
        ens = Ensemble(members, mode="rating", buckets=(0, 1, 15)).fit(few)
    np.testing.assert_array_equal(ens.weights[2], ens.weights[1])
    assert ens.bucket_users == [30, 30, 0]
    from metarec.ensemble_run import format_weights

    table = format_weights(ens).splitlines()
    assert table[0].endswith("users") and table[1].endswith("30") and table[3].endswith("-")
    # allowed three users, it learns from them
    ens = Ensemble(members, mode="rating", buckets=(0, 1, 15), min_bucket_users=3).fit(few)
    assert ens.bucket_users == [30, 30, 3]
    with pytest.raises(ConfigError, match="min_bucket_users"):
        Ensemble(members, min_bucket_users=0)


def test_a_rating_blend_whose_validation_users_cannot_place_cutpoints_says_so() -> None:
    # served, its rating is then the score clipped to the scale, not a scale level
    data = _data()
    one = data.validation[data.validation["user_id"] == "u00"]  # 10 query ratings, < 50
    few = TrainingData(data.interactions, data.catalogue, None, one, (1.0, 5.0), 0)
    members = {"a": Constant(), "b": Oracle(1, "o")}
    with pytest.warns(UserWarning, match=r"ensemble .*: rating cutpoints not fitted: .* fewer"):
        ens = Ensemble(members, mode="rating", buckets=(0,)).fit(few)
    assert ens.cutpoints is None
    with warnings.catch_warnings():  # enough of them: no word
        warnings.simplefilter("error", UserWarning)
        assert Ensemble(members, mode="rating", buckets=(0,)).fit(data).cutpoints is not None


def test_a_first_bucket_no_user_could_judge_says_so() -> None:
    # ranking weights are judged by liked items: with none, K >= 0 kept an even split
    # without a word, and the weights table marked it "-", "the row above's"
    data = _data()
    frame = data.validation.assign(rating=data.validation["rating"].clip(upper=3.0))
    flat = TrainingData(frame, data.catalogue, None, frame, (1.0, 5.0), 0)
    with pytest.warns(UserWarning, match="no validation user liked an item after their first 0"):
        ens = Ensemble({"a": Constant(), "b": Oracle(3, "o")}, buckets=(0, 3)).fit(flat)
    from metarec.ensemble_run import format_weights

    assert ens.bucket_users == [0, 0]
    rows = format_weights(ens).splitlines()
    assert rows[1].endswith(" 0") and rows[2].endswith("-")


class NaNRating(Constant):
    def score_catalogue(self, tasks: Sequence[Task], users: pd.DataFrame | None = None):
        out = super().score_catalogue(tasks, users)
        out[:, 5] = np.nan
        return out


def test_a_member_predicting_nan_ratings_is_named() -> None:
    # found only as "rating cutpoints: need 1 finite non-decreasing cuts; got (nan,)"
    from metarec.errors import ModelError

    with pytest.raises(ModelError, match=r"member 'nan' predicted NaN or infinity"):
        Ensemble({"a": Constant(), "nan": NaNRating()}, mode="rating").fit(_data())


def test_a_support_size_with_nothing_liked_after_it_keeps_the_last_learned_weights() -> None:
    # ranking weights are chosen by the liked items after the support: where no
    # validation user has one, K >= 20 took K >= 0's weights (the constant model)
    data = _data()
    late = data.validation["timestamp"] >= 20
    frame = data.validation.assign(rating=data.validation["rating"].where(~late, 1.0))
    data = TrainingData(frame, data.catalogue, None, frame, (1.0, 5.0), 0)
    ens = Ensemble({"a": Constant(), "b": Oracle(3, "o")}, buckets=(0, 3, 20)).fit(data)
    assert ens.weights[0][0] > 0.5 and ens.weights[1][1] > 0.5
    np.testing.assert_array_equal(ens.weights[2], ens.weights[1])


def test_names_a_saved_ensemble_could_not_load_are_refused_at_once() -> None:
    # save wrote them, load refused the folder, and the good one at that path was gone
    for members, name in (
        ({1: Constant()}, "e"),
        ({"": Constant()}, "e"),
        ({"a": Constant()}, None),
    ):
        with pytest.raises(ConfigError, match="expected a non-empty string"):
            Ensemble(members, name=name)  # type: ignore[arg-type]


def test_a_refit_learns_afresh_and_says_when_nothing_can_be_learned() -> None:
    data = _data()
    fresh = Ensemble({"a": Constant(), "b": Oracle(3, "o")}, buckets=(0, 3)).fit(data)
    # refit on validation users with 2 ratings each: no bucket is reached, so each must
    # fall back to an even split, not keep the first fit's weights
    short = data.validation.groupby("user_id").head(2)
    few = TrainingData(data.interactions, data.catalogue, None, short, (1.0, 5.0), 0)
    assert not np.allclose(fresh.weights, 0.5)
    with pytest.warns(UserWarning, match="no validation user has 0 \\+ 10 ratings"):
        fresh.mode = "rating"  # rating mode judges on 10 query ratings
        fresh.fit(few)
    np.testing.assert_array_equal(fresh.weights, np.full((2, 2), 0.5))


def test_members_fitted_on_another_scale_are_named() -> None:
    other = Constant()
    other.rating_range = (1.0, 10.0)
    with pytest.raises(ConfigError, match=r"members \{'b': \(1\.0, 10\.0\)\} were fitted on"):
        Ensemble({"a": Constant(), "b": other}, fit_members=False).fit(_data())


class MinusInfinity(Constant):
    """Scores one item -inf: its own lists leave it out, a blend cannot z-score it."""

    def score_catalogue(self, tasks: Sequence[Task], users: pd.DataFrame | None = None):
        out = super().score_catalogue(tasks, users)
        out[:, 0] = -np.inf
        return out


def test_a_member_scoring_infinity_is_named() -> None:
    from metarec.errors import ModelError

    with pytest.raises(ModelError, match=r"member 'minus' scored NaN or infinity"):
        Ensemble({"a": Constant(), "minus": MinusInfinity()}).fit(_data())


def test_score_catalogue_checks_its_tasks_for_every_model() -> None:
    # called directly, a model of one's own (as the peers) read item -1 as the last item
    model = Constant()
    model.rating_range = (1.0, 5.0)
    bad = Task(0, np.array([-1]), np.array([4.0]), np.array([1]), np.array([3.0]))
    with pytest.raises(DataError, match=r"support item -1 is not in \[0, 40\)"):
        model.score_catalogue([bad])
    high = Task(0, np.array([1]), np.array([99.0]), np.array([2]), np.array([3.0]))
    with pytest.raises(DataError, match="support rating 99 is off"):
        model.score_catalogue([high])
    with pytest.raises(DataError, match="users: expected a DataFrame with a user_id column"):
        model.recommend([high.__class__(0, np.array([1]), np.array([4.0]), np.array([2]),
                                        np.array([3.0]))], users=np.zeros((1, 3)))  # type: ignore[arg-type]  # fmt: skip


def test_an_ensemble_recommender_of_something_else_says_how_to_load_one() -> None:
    from metarec.ensemble_run import EnsembleRecommender

    with pytest.raises(ConfigError, match=r"expected an Ensemble, got str; .*load_run\(path\)"):
        EnsembleRecommender("runs/ens")  # type: ignore[arg-type]


def test_rating_weights_are_judged_on_each_users_latest_ratings() -> None:
    """Support: the first ratings by time; query: the last ``query_size``, as the
    docstring says (the ratings right after the support passed as well)."""
    from metarec.data.tasks import UserRatings

    data = _data()
    index = {f"i{i}": i for i in range(N_ITEMS)}
    val = UserRatings.from_frame(data.validation, index)
    ens = Ensemble({"a": Constant(), "b": Oracle(3, "o")}, mode="rating", query_size=5)
    tasks = ens._validation_tasks(val, shot=3)
    assert len(tasks) == len(val)
    for task in tasks:
        items, _, times = val.history(task.user)
        by_time = items[np.argsort(times, kind="stable")]
        assert task.support_items.tolist() == by_time[:3].tolist()
        assert task.query_items.tolist() == by_time[-5:].tolist()

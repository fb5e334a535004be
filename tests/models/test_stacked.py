"""The stacked ranker: its exported trees, its signals, its contract, and P2 on ml-100k."""

from __future__ import annotations

import copy
import json
import re
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.ensemble import HistGradientBoostingClassifier

from metarec.catalogue import Catalogue
from metarec.errors import ConfigError, DataError, ModelError
from metarec.evaluation.benchmark import build_models
from metarec.evaluation.p2 import evaluate_p2, shot_tasks
from metarec.models import memory
from metarec.models import stacked as stacked_mod
from metarec.models.base import TrainingData
from metarec.models.stacked import StackedRanker
from metarec.models.support_signals import (
    FEATURES,
    UserGroups,
    cosine_cooccurrence,
    ease,
    ridge_to_likes,
    top_liked,
    walk_to_likes,
)
from metarec.models.trees import TreeEnsemble
from metarec.peers import make_peer

from .conftest import P2Fold, P2World
from .conftest import support_task as _task

N_ITEMS = 16


# -- the tree walk against scikit-learn ----------------------------------------------
def test_exported_trees_give_sklearns_decision_function_with_missing_values() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 5))
    y = (x[:, 0] + np.sin(3 * x[:, 1]) + 0.5 * rng.normal(size=3000) > 0).astype(int)
    x[rng.random(x.shape) < 0.1] = np.nan  # both directions of missing values get learned
    gb = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15, random_state=0).fit(x, y)
    trees = TreeEnsemble.from_sklearn(gb)
    assert trees.n_trees == gb.n_iter_
    probe = rng.normal(size=(500, 5))
    probe[rng.random(probe.shape) < 0.2] = np.nan
    probe[:5] = np.nan  # all missing
    # small chunks: the walk must not depend on how rows are batched
    ours = trees.decision(probe, chunk=37)
    np.testing.assert_allclose(ours, gb.decision_function(probe), rtol=1e-12, atol=1e-12)


def test_exported_lightgbm_trees_give_its_predictions_with_missing_values() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 5))
    y = (x[:, 0] + np.sin(3 * x[:, 1]) + 0.5 * rng.normal(size=4000) > 0).astype(int)
    probe = rng.normal(size=(500, 5))
    probe[rng.random(probe.shape) < 0.2] = np.nan
    probe[:5] = np.nan
    probe[5:10] = 0.0  # where a "None" missing type sends a missing value
    for missing in (0.0, 0.1):  # without missing values in training LightGBM says "None"
        xm = x.copy()
        xm[rng.random(x.shape) < missing] = np.nan
        ranker = lightgbm.LGBMRanker(
            n_estimators=30, num_leaves=15, min_child_samples=20, verbose=-1, deterministic=True
        ).fit(xm, y, group=np.full(40, 100))
        trees = TreeEnsemble.from_lightgbm(ranker.booster_)
        assert trees.n_trees == 30
        np.testing.assert_allclose(
            trees.decision(probe, chunk=37), ranker.predict(probe), rtol=1e-12, atol=1e-12
        )
    # scaling and averaging keep it one ensemble whose decision is the mean
    both = TreeEnsemble.average([trees, trees.scaled(3.0)])
    np.testing.assert_allclose(both.decision(probe), 2.0 * trees.decision(probe), atol=1e-12)


def test_tree_arrays_are_checked() -> None:
    arrays = {
        "feature": np.array([0, 0, 0]),
        "threshold": np.array([0.5, 0.0, 0.0]),
        "missing_left": np.array([True, False, False]),
        "left": np.array([1, 1, 2]),
        "right": np.array([2, 1, 2]),
        "is_leaf": np.array([False, True, True]),
        "value": np.array([0.0, -1.0, 2.0]),
        "roots": np.array([0]),
    }
    stump = TreeEnsemble(arrays, baseline=0.25)
    assert stump.depth == 1
    # hand-computed: x <= 0.5 goes left (-1), else right (+2), NaN left; plus the baseline
    np.testing.assert_allclose(
        stump.decision(np.array([[0.2], [0.5], [0.7], [np.nan]])), [-0.75, -0.75, 2.25, -0.75]
    )
    with pytest.raises(ModelError, match="right points outside"):
        TreeEnsemble({**arrays, "right": np.array([7, 1, 2])}, 0.0)
    with pytest.raises(ModelError, match="missing arrays"):
        TreeEnsemble({k: v for k, v in arrays.items() if k != "value"}, 0.0)
    with pytest.raises(ModelError, match="cycle"):
        TreeEnsemble({**arrays, "left": np.array([0, 1, 2])}, 0.0)
    # a state saved when the depth was stored still loads; the depth comes from the trees
    legacy = TreeEnsemble({**arrays, "depth": np.array([5])}, baseline=0.25)
    assert legacy.depth == 1 and "depth" not in legacy.arrays


# -- the like-based signals, by hand ------------------------------------------------
# three users: u0 rated items 0 and 1 and liked 1; u1 rated 0 and 2 and liked both;
# u2 rated 1 and 2 and liked neither
_RATED = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=np.float32))
_LIKED = np.array([[0, 1, 0], [1, 0, 1], [0, 0, 0]], dtype=np.float32)
_ALL = np.arange(3)


def test_walk_to_likes_by_hand() -> None:
    """Item 0's raters are u0 and u1 (each reached with 1/2); u0 liked only item 1
    (1), u1 items 0 and 2 (1/2 each): (1/4, 1/2, 1/4); every item has one like,
    so each is divided by sqrt(1 + 1)."""
    walk = walk_to_likes(_RATED, _LIKED, beta=0.5, columns=_ALL)
    s2 = np.sqrt(2.0)
    np.testing.assert_allclose(walk[0], np.array([0.25, 0.5, 0.25]) / s2, rtol=1e-6)
    np.testing.assert_allclose(walk[1], np.array([0.0, 0.5, 0.0]) / s2, rtol=1e-6)  # u0, u2
    np.testing.assert_allclose(walk[2], np.array([0.25, 0.0, 0.25]) / s2, rtol=1e-6)  # u1, u2
    # beta = 0 is the plain walk: each row a distribution over u's likes, averaged
    plain = walk_to_likes(_RATED, _LIKED, beta=0.0, columns=_ALL)
    np.testing.assert_allclose(plain[0], [0.25, 0.5, 0.25])


def test_ridge_to_likes_is_one_ridge_regression_per_liked_item() -> None:
    from sklearn.linear_model import Ridge

    b = ridge_to_likes(_RATED, _LIKED, lam=0.7, columns=_ALL)
    x = _RATED.toarray()
    for j in range(3):
        ridge = Ridge(alpha=0.7, fit_intercept=False).fit(x, _LIKED[:, j])
        np.testing.assert_allclose(b[:, j], ridge.coef_, rtol=1e-5, atol=1e-6)


def test_item_matrices_for_some_columns_are_those_columns_of_the_whole() -> None:
    """The fitted signals keep only the candidates' columns; each is computed without
    the others, and must equal the same column of the textbook item x item matrix,
    to the bit: the trees' thresholds were learned on these numbers."""
    rng = np.random.default_rng(3)
    rated = rng.random((60, 25)) < 0.3
    x = sp.csr_matrix(rated.astype(np.float32))
    likes = (rated & (rng.random(rated.shape) < 0.5)).astype(np.float32)
    cols = np.array([2, 3, 11, 24])
    g = rated.T.astype(np.float64) @ rated
    norm = np.sqrt(np.diag(g)) + 1e-9
    cosine = g / norm[:, None] / norm[None, :]
    np.fill_diagonal(cosine, 0.0)
    np.testing.assert_array_equal(cosine_cooccurrence(x, cols), cosine[:, cols].astype(np.float32))
    p = np.linalg.inv(g + 5.0 * np.eye(25))
    steck = np.eye(25) - p / np.diag(p)[None, :]  # B = I - P diagMat(1 / diag(P))
    np.fill_diagonal(steck, 0.0)
    np.testing.assert_allclose(ease(x, 5.0, cols), steck[:, cols], rtol=1e-5, atol=1e-7)
    for part in (
        lambda c: ridge_to_likes(x, likes, 5.0, c),
        lambda c: walk_to_likes(x, likes, 0.5, c),
        lambda c: cosine_cooccurrence(x, c),
        lambda c: ease(x, 5.0, c),
    ):
        np.testing.assert_array_equal(part(cols), part(np.arange(25))[:, cols])
    # ties in the like rate go to the lower index, and the result is in index order
    np.testing.assert_array_equal(top_liked(np.array([0.1, 0.5, 0.5, 0.2, 0.5]), 3), [1, 2, 4])


# -- a synthetic world with a planted sequence -------------------------------------
def _synthetic(seed: int = 0, n_users: int = 80) -> TrainingData:
    """Users who start with item 0 go on to like items 1..3; others like 8..10.
    Every user also rates a few random items; item vectors are random."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        fan = u % 2 == 0
        first = [0] if fan else [4]
        later = [1, 2, 3] if fan else [8, 9, 10]
        noise = [int(i) for i in rng.permutation(range(11, N_ITEMS))[:3]]
        seq = first + noise[:1] + later + noise[1:]
        for t, item in enumerate(seq):
            rating = 5.0 if item in later else float(rng.integers(1, 4))
            rows.append((f"u{u}", f"i{item}", rating, 1000 * u + t))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)], "title": "", "text": "x"})
    vectors = np.random.default_rng(1).normal(size=(N_ITEMS, 4)).astype(np.float32)
    cat = Catalogue(items, vectors, encoder=None)  # type: ignore[arg-type]
    return TrainingData(frame, cat, None, None, (1.0, 5.0), seed)


def _small(seed: int = 0, n_candidates: int = N_ITEMS) -> StackedRanker:
    return StackedRanker(
        shots=(1, 2), n_candidates=n_candidates, folds=2, max_iter=30, min_samples_leaf=5, seed=seed
    )


@pytest.fixture(scope="module")
def synthetic() -> tuple[TrainingData, StackedRanker]:
    data = _synthetic()
    return data, _small().fit(data)


def test_it_learns_the_planted_sequence(synthetic: tuple[TrainingData, StackedRanker]) -> None:
    _, model = synthetic
    assert model.objective == "blend"
    fan, other = model.recommend([_task([0], [2.0]), _task([4], [2.0])], k=3)
    assert set(fan) == {1, 2, 3}
    assert set(other) == {8, 9, 10}


@pytest.mark.parametrize("objective", ["logloss", "lambdarank"])
def test_each_objective_alone_learns_it_and_the_blend_sits_between(
    synthetic: tuple[TrainingData, StackedRanker], objective: str
) -> None:
    data, blend = synthetic
    one = StackedRanker(
        shots=(1, 2),
        n_candidates=N_ITEMS,
        folds=2,
        max_iter=30,
        min_samples_leaf=5,
        objective=objective,
    ).fit(data)
    assert one.trees is not None and blend.trees is not None
    assert blend.trees.n_trees == 2 * one.trees.n_trees  # the blend holds both ensembles
    fan, other = one.recommend([_task([0], [2.0]), _task([4], [2.0])], k=3)
    assert set(fan) == {1, 2, 3}
    assert set(other) == {8, 9, 10}
    assert one.describe()["objective"] == objective


def test_k0_is_the_popularity_prior(synthetic: tuple[TrainingData, StackedRanker]) -> None:
    data, model = synthetic
    scores = model.score_catalogue([_task([], [])])[0]
    frame = data.interactions
    liked = frame[frame["rating"] >= 4].groupby("item_id")["user_id"].nunique()
    share = liked.reindex([f"i{i}" for i in range(N_ITEMS)], fill_value=0).to_numpy()
    np.testing.assert_allclose(scores, share / frame["user_id"].nunique())


def test_features_have_one_column_each_and_are_finite(
    synthetic: tuple[TrainingData, StackedRanker],
) -> None:
    _, model = synthetic
    assert model.signals is not None
    f = model.signals.features([_task([0, 5], [4.0, 2.0]), _task([7], [3.0])])
    assert f.shape == (2, len(model.candidates), len(FEATURES))
    assert np.isfinite(f).all()
    k = f[:, :, FEATURES.index("shots")]
    np.testing.assert_array_equal(k[:, 0], [2, 1])
    # the support's own mean rating and like rate
    np.testing.assert_allclose(f[0, 0, FEATURES.index("support_mean_rating")], 3.0)
    np.testing.assert_allclose(f[0, 0, FEATURES.index("support_like_rate")], 0.5)
    # like-matrix cosine to the *liked* support items only: none liked, all zero
    cooc_like = f[:, :, FEATURES.index("cooc_like")]
    np.testing.assert_array_equal(cooc_like[1], 0.0)
    c = model.signals.cooc_like
    assert c.shape == (N_ITEMS, len(model.candidates))
    np.testing.assert_allclose(cooc_like[0], c[0], rtol=1e-6)  # item 0 only


def test_fit_is_deterministic_and_new_items_rank_last(
    synthetic: tuple[TrainingData, StackedRanker],
) -> None:
    data, model = synthetic
    tasks = [_task([0, 12], [3.0, 5.0]), _task([4], [1.0])]
    again = _small().fit(data)
    np.testing.assert_array_equal(again.score_catalogue(tasks), model.score_catalogue(tasks))
    grown = copy.deepcopy(model)
    grown.add_items(pd.DataFrame({"item_id": ["new"]}), np.zeros((1, 4)))
    after = grown.score_catalogue([*tasks, _task([N_ITEMS], [5.0])])
    assert after.shape == (3, N_ITEMS + 1)
    np.testing.assert_array_equal(after[:2, :N_ITEMS], model.score_catalogue(tasks))
    assert (after[:, N_ITEMS] < after[:, :N_ITEMS].min(axis=1)).all()
    # a support of only new items is a user with no known ratings: the prior
    np.testing.assert_array_equal(after[2, :N_ITEMS], model.score_catalogue([_task([], [])])[0])


def test_a_catalogue_too_large_for_memory_is_refused_before_fitting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 1000)
    with pytest.raises(DataError, match=rf"metarec-stacked: {N_ITEMS} items need about"):
        _small().fit(_synthetic())


def test_progress_counts_the_fit_stages(capsys: pytest.CaptureFixture[str]) -> None:
    data = _synthetic()

    def two_bags(progress: bool) -> StackedRanker:
        return StackedRanker(
            shots=(1, 2), n_candidates=N_ITEMS, folds=2, bags=2, max_iter=30,
            min_samples_leaf=5, seed=0, progress=progress,
        ).fit(data)  # fmt: skip

    quiet = two_bags(False)
    assert capsys.readouterr().err == ""
    shown = two_bags(True)
    err = capsys.readouterr().err
    # 2 bags x (2 parts' signals + trees) + the signals scoring uses
    assert "metarec-stacked" in err and "7/7" in err
    for what in ("bag 1/2: signals for part 2/2", "bag 2/2: trees on", "from all training users"):
        assert what in err
    tasks = [_task([0], [4.0]), _task([4, 9], [2.0, 5.0])]
    np.testing.assert_array_equal(shown.score_catalogue(tasks), quiet.score_catalogue(tasks))


def test_user_groups_from_categories_and_numbers() -> None:
    users = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(10)],
            "age": [float(a) for a in range(10, 110, 10)],  # a number: quintiles
            "plan": ["free", "paid"] * 5,  # a category: its value
        }
    )
    groups = UserGroups.fit(users)
    assert groups.columns == ["age", "plan"] and list(groups.edges) == ["age"]
    asked = pd.DataFrame({"age": [5.0, 55.0, 200.0, np.nan], "plan": ["paid", None, "x", "free"]})
    ages, plans = groups.keys(asked, 4)
    assert ages == ["q0", "q2", "q4", None]  # edges at 28, 46, 64, 82
    assert plans == ["paid", None, "x", "free"]
    assert groups.keys(None, 2) == [[None, None], [None, None]]


def test_numeric_user_features_are_signals(synthetic: tuple[TrainingData, StackedRanker]) -> None:
    data, _ = synthetic
    ids = data.interactions["user_id"].unique()
    users = pd.DataFrame({"user_id": ids, "age": np.arange(len(ids), dtype=np.float64)})
    model = _small().fit(replace(data, users=users))
    assert model.describe()["features"][-1] == "group:age"
    scores = model.score_catalogue(
        [_task([0], [2.0])] * 2, users=pd.DataFrame({"age": [1.0, np.nan]})
    )
    assert scores.shape == (2, N_ITEMS) and np.isfinite(scores).all()


def test_options_are_checked_and_unfitted_use_is_refused() -> None:
    with pytest.raises(ConfigError, match="shots"):
        StackedRanker(shots=(0, 3))
    with pytest.raises(ConfigError, match="folds"):
        StackedRanker(folds=1)
    for folds in (2.7, "x", None):  # 2.7 was cut to 2; "x" and None raw errors
        with pytest.raises(ConfigError, match="folds: must be a whole number >= 2"):
            StackedRanker(folds=folds)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="learning_rate"):
        StackedRanker(learning_rate=0.0)
    with pytest.raises(ConfigError, match="objective must be one of"):
        StackedRanker(objective="pairwise")
    with pytest.raises(ConfigError, match="truncation"):
        StackedRanker(truncation=0)
    # cut by int() (2.5 to 2, True to 1), or raw errors at fit, after the signals' work
    for kwargs, needle in [
        ({"truncation": 2.5}, "truncation: must be a whole number >= 1"),
        ({"max_episodes": 2.5}, "max_episodes: must be a whole number >= 1"),
        ({"max_episodes": True}, "max_episodes: must be a whole number >= 1"),
        ({"max_episodes": "x"}, "max_episodes: must be a whole number >= 1"),
        ({"max_items": float("nan")}, "max_items: must be a whole number >= 1"),
        ({"seed": -1}, "seed: must be a whole number >= 0"),
        ({"seed": 1.5}, "seed: must be a whole number >= 0"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            StackedRanker(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="not fitted"):
        StackedRanker().score_catalogue([_task([], [])])
    # through recommend: it said "support item 3 is not in [0, 0)"
    with pytest.raises(ModelError, match="not fitted"):
        StackedRanker().recommend([_task([3], [5.0])], k=5)
    with pytest.raises(ConfigError, match="learning_rate must be a finite number > 0"):
        StackedRanker(learning_rate=float("nan"))
    with pytest.raises(DataError, match="training users"):
        StackedRanker(folds=4).fit(_synthetic(n_users=6))


def test_benchmark_builds_it_for_p2_only() -> None:
    models = build_models("p2", algorithms=["stacked"], peers=["popularity"], seed=3)
    assert isinstance(models["metarec-stacked"], StackedRanker)
    assert models["metarec-stacked"].seed == 3
    with pytest.raises(ConfigError, match="protocol p2"):
        build_models("p1", algorithms=["stacked"], peers=[], seed=3)


# -- real ml-100k, protocol P2 (fold 0 of 5) ------------------------------------------
@pytest.fixture(scope="module")
def p2(p2_fold0: P2Fold) -> P2World:
    # the default blend objective, made cheap enough for the suite (30 s here against the
    # default's 2.5 min): one bag instead of three, 100 trees at a 0.15 rate instead of
    # 300 at 0.05, and 150 candidates a user instead of 300
    model = StackedRanker(seed=0, bags=1, max_iter=100, learning_rate=0.15, n_candidates=150).fit(
        p2_fold0.data
    )
    return P2World(p2_fold0.data, p2_fold0.test, model)


@pytest.mark.slow
def test_beats_popularity_on_held_out_users(p2: P2World) -> None:
    """Fold 0's test users, never seen in fitting: above popularity at K = 1, 10 and 20
    (0.449 / 0.453 / 0.416 against 0.440 / 0.390 / 0.336 when written)."""
    models = {"popularity": make_peer("popularity").fit(p2.data), "stacked": p2.model}
    res = evaluate_p2(models, p2.test, p2.data.catalogue.index, shots=(1, 10, 20))
    for k in ("1", "10", "20"):
        row = res["summary"][k]
        assert row["stacked"]["ndcg@10"] > row["popularity"]["ndcg@10"], k
    row = res["summary"]["10"]
    assert row["stacked"]["ndcg@10"] > 1.08 * row["popularity"]["ndcg@10"]


@pytest.mark.slow
def test_recommend_excludes_the_support(p2: P2World) -> None:
    tasks, _ = shot_tasks(p2.test, p2.data.catalogue.index, 20)
    top = p2.model.recommend(tasks[:40], k=10)
    for row, task in zip(top, tasks[:40], strict=True):
        assert not set(row) & set(task.support_items)


def test_state_round_trip_scores_the_same(synthetic: tuple[TrainingData, StackedRanker]) -> None:
    _, model = synthetic
    options, fitted, arrays = model.to_state()
    json.dumps([options, fitted])  # plain JSON
    loaded = StackedRanker.from_state(options, fitted, arrays, seed=0)
    tasks = [_task([0, 12], [3.0, 5.0]), _task([4], [1.0]), _task([], [])]
    np.testing.assert_array_equal(loaded.score_catalogue(tasks), model.score_catalogue(tasks))
    assert loaded.objective == "blend"
    # a run saved before the objective was an option was fitted with log-loss
    old = {k: v for k, v in options.items() if k not in ("objective", "truncation")}
    assert StackedRanker.from_state(old, fitted, arrays).objective == "logloss"
    bad = {**arrays, "candidates": np.array([0, N_ITEMS + 5])}
    with pytest.raises(ModelError, match="candidates"):
        StackedRanker.from_state(options, fitted, bad)
    with pytest.raises(ModelError, match="lacks"):
        StackedRanker.from_state(
            options, {k: v for k, v in fitted.items() if k != "signals"}, arrays
        )
    # a state saved before the like-based signals: its trees read other columns
    legacy = {k: v for k, v in fitted.items() if k != "features"}
    with pytest.raises(ModelError, match=r"20 signals.*'ease_like'.*retrain"):
        StackedRanker.from_state(options, legacy, arrays)


def test_a_state_with_whole_item_matrices_keeps_the_candidate_columns() -> None:
    """States saved before 2026-12-01 hold item x item matrices; loading keeps the
    candidates' columns and scores as the model did."""
    data = _synthetic()
    model = _small(n_candidates=6).fit(data)
    assert len(model.candidates) == 6 and model.signals is not None
    assert model.signals.ease.shape == (N_ITEMS, 6)
    options, fitted, arrays = model.to_state()
    whole = dict(arrays)
    rng = np.random.default_rng(0)
    for name in ("cooc", "ease", "after", "ease_like", "walk_like", "cooc_like"):
        square = rng.normal(size=(N_ITEMS, N_ITEMS)).astype(np.float32)  # other columns: noise
        square[:, model.candidates] = arrays[f"signals.{name}"]
        whole[f"signals.{name}"] = square
    loaded = StackedRanker.from_state(options, fitted, whole)
    tasks = [_task([0, 12], [3.0, 5.0]), _task([4], [1.0]), _task([], [])]
    np.testing.assert_array_equal(loaded.score_catalogue(tasks), model.score_catalogue(tasks))
    whole["signals.ease"] = whole["signals.ease"][:, :5]
    with pytest.raises(ModelError, match=r"ease has shape \(16, 5\), not \(16, 6\)"):
        StackedRanker.from_state(options, fitted, whole)


def test_max_items_fits_the_most_rated_and_ranks_the_rest_by_popularity_below(
    synthetic: tuple[TrainingData, StackedRanker],
) -> None:
    data, whole = synthetic
    # items 11..15 are rated most (noise), then 0..4 and 8..10 (40 ratings each);
    # 5..7 never: with 13 items the universe is every rated item, so the trees see
    # what the whole-catalogue model saw and score the same
    capped = StackedRanker(
        shots=(1, 2), n_candidates=N_ITEMS, folds=2, max_iter=30, min_samples_leaf=5,
        seed=0, max_items=13,
    ).fit(data)  # fmt: skip
    np.testing.assert_array_equal(
        capped.universe.items, [0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15]
    )
    assert capped.n_items == N_ITEMS and capped.describe()["items_fitted"] == 13
    tasks = [_task([0, 12], [3.0, 5.0]), _task([4, 6], [1.0, 5.0]), _task([], [])]
    scores = capped.score_catalogue(tasks)
    inside = capped.universe.items
    alone = _small(n_candidates=13).fit(capped.universe.restrict(data))
    np.testing.assert_array_equal(
        scores[:, inside], alone.score_catalogue(capped.universe.tasks(tasks))
    )
    fan, other = capped.recommend([_task([0], [2.0]), _task([4], [2.0])], k=3)
    assert set(fan) == {1, 2, 3} and set(other) == {8, 9, 10}
    assert (scores[:, [5, 6, 7]].max(axis=1) < scores[:, inside].min(axis=1)).all()
    # with 10 items, 8..10 fall outside: a "4" user's later likes then rank below the
    # universe, in like-rate order (they are liked by half the users, 5..7 by none)
    small = StackedRanker(
        shots=(1, 2), n_candidates=N_ITEMS, folds=2, max_iter=30, min_samples_leaf=5,
        seed=0, max_items=10,
    ).fit(data)  # fmt: skip
    s = small.score_catalogue([_task([4], [2.0])])[0]
    np.testing.assert_array_equal(small.universe.items, [0, 1, 2, 3, 4, 11, 12, 13, 14, 15])
    assert (
        s[[8, 9, 10]].min() > s[[5, 6, 7]].max()
        and s[[8, 9, 10]].max() < s[small.universe.items].min()
    )
    # saved and loaded with its universe, after the catalogue grew
    small.add_items(pd.DataFrame({"item_id": ["new"]}), np.zeros((1, 4)))
    options, fitted, arrays = small.to_state()
    assert options["max_items"] == 10 and fitted["n_items"] == N_ITEMS + 1
    loaded = StackedRanker.from_state(options, fitted, arrays)
    np.testing.assert_array_equal(loaded.score_catalogue(tasks), small.score_catalogue(tasks))
    # a state saved before universes (n_added, no universe arrays) scores as before
    options, fitted, arrays = whole.to_state()
    old_fitted = {**{k: v for k, v in fitted.items() if k != "n_items"}, "n_added": 1}
    old = {k: v for k, v in arrays.items() if not k.startswith("universe.")}
    old_options = {k: v for k, v in options.items() if k != "max_items"}
    loaded = StackedRanker.from_state(old_options, old_fitted, old)
    assert loaded.n_items == N_ITEMS + 1
    got = loaded.score_catalogue(tasks)
    np.testing.assert_array_equal(got[:, :N_ITEMS], whole.score_catalogue(tasks))
    np.testing.assert_array_equal(got[:, N_ITEMS], got[:, :N_ITEMS].min(axis=1) - 1.0)


def test_max_episodes_samples_each_bags_training_episodes(
    synthetic: tuple[TrainingData, StackedRanker], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _ = synthetic

    def fit(max_episodes: int | None, bags: int = 1) -> StackedRanker:
        return StackedRanker(
            shots=(1, 2), n_candidates=N_ITEMS, folds=2, max_iter=30, min_samples_leaf=5,
            seed=0, bags=bags, max_episodes=max_episodes,
        ).fit(data)  # fmt: skip

    # 80 users, 2 support sizes: 160 episodes; a cap above that changes nothing
    tasks = [_task([0, 12], [3.0, 5.0]), _task([4], [1.0]), _task([], [])]
    one = fit(None)
    np.testing.assert_array_equal(fit(160).score_catalogue(tasks), one.score_catalogue(tasks))
    half = fit(80)
    assert one.n_rows / half.n_rows == pytest.approx(2.0, rel=0.05)
    np.testing.assert_array_equal(fit(80).score_catalogue(tasks), half.score_catalogue(tasks))
    fan, other = half.recommend([_task([0], [2.0]), _task([4], [2.0])], k=3)
    assert set(fan) == {1, 2, 3} and set(other) == {8, 9, 10}
    # two bags draw two samples of 80 episodes each
    seen: list[set[tuple[int, int]]] = []
    rows = StackedRanker._training_rows

    def record(self: StackedRanker, data: TrainingData, hist: Any, eps: Any, *rest: Any) -> Any:
        seen.append(set(zip(eps.owners.tolist(), eps.shots.tolist(), strict=True)))
        return rows(self, data, hist, eps, *rest)

    monkeypatch.setattr(StackedRanker, "_training_rows", record)
    two = fit(80, bags=2)
    assert [len(s) for s in seen] == [80, 80] and seen[0] != seen[1]
    assert two.to_state()[0]["max_episodes"] == 80
    with pytest.raises(ConfigError, match="max_episodes: must be a whole number >= 1, got 0"):
        StackedRanker(max_episodes=0)


def test_a_fit_on_many_episodes_without_a_cap_says_what_it_costs(
    synthetic: tuple[TrainingData, StackedRanker], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _ = synthetic
    monkeypatch.setattr(stacked_mod, "MANY_EPISODES", 100)  # the synthetic data has 160

    def fit(max_episodes: int | None) -> None:
        StackedRanker(
            shots=(1, 2), n_candidates=N_ITEMS, folds=2, max_iter=5, min_samples_leaf=5,
            seed=0, bags=1, max_episodes=max_episodes,
        ).fit(data)  # fmt: skip

    with pytest.warns(RuntimeWarning, match=r"all 160 training episodes.*max_episodes=10000"):
        fit(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a user who chose a cap hears nothing
        fit(150)

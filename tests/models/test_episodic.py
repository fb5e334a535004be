"""The episodic linear model: its closed form, its K = 0 prior, new items, and P2 on ml-100k."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.catalogue import Catalogue
from metarec.errors import ConfigError, DataError, ModelError
from metarec.evaluation.benchmark import build_models
from metarec.evaluation.p2 import evaluate_p2, shot_tasks
from metarec.models import memory
from metarec.models.base import TrainingData
from metarec.models.episodic import EpisodicLinear
from metarec.peers import make_peer

from .conftest import P2Fold, P2World
from .conftest import support_task as _task

N_ITEMS = 12


def _synthetic(seed: int = 0, n_users: int = 40) -> TrainingData:
    """Users rate 6..11 distinct items at distinct times; item i is liked more often
    the larger i is, so targets are not all alike."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.permutation(N_ITEMS)[: rng.integers(6, 12)]
        for t, item in enumerate(items):
            rating = float(np.clip(round(1 + 4 * item / N_ITEMS + rng.normal()), 1, 5))
            rows.append((f"u{u}", f"i{item}", rating, 1000 * u + 10 * t))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)], "title": "", "text": "x"})
    cat = Catalogue(items, np.zeros((N_ITEMS, 2), dtype=np.float32), encoder=None)  # type: ignore[arg-type]
    return TrainingData(frame, cat, None, None, (1.0, 5.0), 0)


def _dense_reference(
    data: TrainingData, shots: tuple[int, ...], lam: float, scale: float, with_ratings: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X, Y as dense numpy rows, one per (user, K); ridge with an intercept by brute force."""
    frame = data.interactions.sort_values(["user_id", "timestamp"], kind="stable")
    mu = float(frame["rating"].mean())
    xs, ys = [], []
    for _, g in frame.groupby("user_id", sort=True):
        items = g["item_id"].map(data.catalogue.index).to_numpy()
        ratings = g["rating"].to_numpy(dtype=np.float64)
        for k in shots:
            if len(items) <= k:
                continue
            x = np.zeros(2 * N_ITEMS)
            x[items[:k]] = 1.0
            x[N_ITEMS + items[:k]] = ratings[:k] - mu
            y = np.zeros(N_ITEMS)
            y[items[k:][ratings[k:] >= 4]] = 1.0
            xs.append(x / k**scale)
            ys.append(y)
    x, y = np.array(xs), np.array(ys)
    if not with_ratings:
        x = x[:, :N_ITEMS]
    xm, ym = x.mean(axis=0), y.mean(axis=0)
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ (y - ym))
    return w, xm, ym


@pytest.mark.parametrize("scale", [0.5, 0.0])
def test_closed_form_matches_a_dense_ridge(scale: float) -> None:
    data = _synthetic()
    shots = (1, 3, 5)
    model = EpisodicLinear(
        shots=shots, lams=(2.0,), feature_sets=("binary+ratings",), support_scale=scale
    ).fit(data)
    w, xm, ym = _dense_reference(data, shots, 2.0, scale)
    assert model.features == "binary+ratings" and model.lam == 2.0
    assert model.w_binary is not None and model.w_ratings is not None
    np.testing.assert_allclose(model.w_binary, w[:N_ITEMS], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.w_ratings, w[N_ITEMS:], rtol=1e-5, atol=1e-6)
    # a user's scores are ymean + (x - xmean) W
    task = _task([3, 7, 1], [5.0, 2.0, 4.0])
    x = np.zeros(2 * N_ITEMS)
    x[[3, 7, 1]] = 1.0
    x[N_ITEMS + np.array([3, 7, 1])] = np.array([5.0, 2.0, 4.0]) - model.mu
    expected = ym + (x / 3**scale - xm) @ w
    np.testing.assert_allclose(model.score_catalogue([task])[0], expected, rtol=1e-5, atol=1e-6)


def test_binary_features_ignore_the_ratings() -> None:
    data = _synthetic()
    model = EpisodicLinear(shots=(1, 3), lams=(1.0,), feature_sets=("binary",)).fit(data)
    assert model.w_ratings is None
    w, _, _ = _dense_reference(data, (1, 3), 1.0, 0.0, with_ratings=False)
    np.testing.assert_allclose(model.w_binary, w, rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]
    a, b = model.score_catalogue([_task([2, 5], [5.0, 5.0]), _task([2, 5], [1.0, 1.0])])
    np.testing.assert_array_equal(a, b)


def test_k0_gives_the_mean_target_of_a_k0_episode() -> None:
    data = _synthetic()
    model = EpisodicLinear(shots=(1, 3), lams=(1.0,)).fit(data)
    scores = model.score_catalogue([_task([], []), _task([4], [5.0]), _task([], [])])
    frame = data.interactions
    liked = frame[frame["rating"] >= 4].groupby("item_id")["user_id"].nunique()
    share = liked.reindex([f"i{i}" for i in range(N_ITEMS)], fill_value=0).to_numpy()
    expected = share / frame["user_id"].nunique()
    np.testing.assert_allclose(scores[0], expected)
    np.testing.assert_array_equal(scores[2], scores[0])
    assert not np.allclose(scores[1], scores[0])  # one rating moves the list


def test_options_are_checked_and_unfitted_use_is_refused() -> None:
    with pytest.raises(ConfigError, match="shots"):
        EpisodicLinear(shots=(0, 3))
    with pytest.raises(ConfigError, match="lams"):
        EpisodicLinear(lams=(0.0,))
    with pytest.raises(ConfigError, match="feature_sets"):
        EpisodicLinear(feature_sets=("text",))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="not fitted"):
        EpisodicLinear().score_catalogue([_task([], [])])
    # values that were once taken silently: 1.7 read as 1, NaN past "<= 0", "5" as chars
    for kwargs, needle in [
        ({"shots": (1.7,)}, "shots: must be whole support sizes >= 1"),
        ({"shots": "5"}, "shots: expected a list of support sizes"),
        ({"lams": (float("nan"),)}, "lams[0] must be a finite number > 0"),
        ({"support_scale": "x"}, "support_scale must be a finite number"),
        # NaN fitted, then every score was NaN; the rest were raw errors at fit
        ({"support_scale": float("nan")}, "support_scale must be a finite number"),
        ({"target_scale": float("inf")}, "target_scale must be a finite number"),
        ({"chunk_episodes": 2.5}, "chunk_episodes: must be a whole number >= 1"),
        ({"seed": -1}, "seed: must be a whole number >= 0"),
        ({"seed": "x"}, "seed: must be a whole number >= 0"),
        ({"max_items": float("nan")}, "max_items: must be a whole number >= 1"),
        ({"max_items": "abc"}, "max_items: must be a whole number >= 1"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            EpisodicLinear(**kwargs)  # type: ignore[arg-type]


def test_a_catalogue_too_large_for_memory_is_refused_before_fitting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 1000)
    model = EpisodicLinear(seed=0)
    with pytest.raises(DataError, match=r"metarec-episodic: \d+ items need about"):
        model.fit(_synthetic())
    assert model.w_binary is None  # nothing half-fitted
    # the binary-only ridge needs about a third as much
    monkeypatch.setattr(memory, "available_bytes", lambda: int(100 * N_ITEMS**2))
    with pytest.raises(DataError, match="items need about"):
        EpisodicLinear(seed=0).fit(_synthetic())
    EpisodicLinear(seed=0, feature_sets=("binary",)).fit(_synthetic())


def test_progress_counts_the_ridge_solves(capsys: pytest.CaptureFixture[str]) -> None:
    EpisodicLinear(seed=0).fit(_synthetic())
    assert capsys.readouterr().err == ""
    model = EpisodicLinear(seed=0, lams=(10.0, 100.0), progress=True).fit(_synthetic())
    err = capsys.readouterr().err
    # no validation users: one solve, the first feature set at the grid's middle
    assert "metarec-episodic" in err and "1/1" in err
    assert model.lam == 100.0


def test_benchmark_builds_it_for_p2_only() -> None:
    models = build_models("p2", algorithms=["episodic"], peers=["popularity"], seed=3)
    assert isinstance(models["metarec-episodic"], EpisodicLinear)
    assert models["metarec-episodic"].name == "metarec-episodic"
    with pytest.raises(ConfigError, match="protocol p2"):
        build_models("p1", algorithms=["episodic"], peers=[], seed=3)
    with pytest.raises(ConfigError, match="episodic"):
        build_models("p2", algorithms=["nope"], peers=[], seed=3)


# -- real ml-100k, protocol P2 (fold 0 of 5) ------------------------------------------
@pytest.fixture(scope="module")
def p2(p2_fold0: P2Fold) -> P2World:
    return P2World(p2_fold0.data, p2_fold0.test, EpisodicLinear(seed=0).fit(p2_fold0.data))


def test_fit_is_deterministic(p2: P2World) -> None:
    again = EpisodicLinear(seed=0).fit(p2.data)
    tasks, _ = shot_tasks(p2.test, p2.data.catalogue.index, 5)
    np.testing.assert_array_equal(
        again.score_catalogue(tasks[:50]), p2.model.score_catalogue(tasks[:50])
    )
    assert again.describe() == p2.model.describe()
    # validation picked the best of what it tried
    chosen = p2.model.validation[f"{p2.model.features} {p2.model.lam:g}"]
    assert chosen == max(p2.model.validation.values())


def test_recommend_excludes_the_support(p2: P2World) -> None:
    tasks, _ = shot_tasks(p2.test, p2.data.catalogue.index, 20)
    top = p2.model.recommend(tasks, k=10)
    for row, task in zip(top, tasks, strict=True):
        assert not set(row) & set(task.support_items)
    scores = p2.model.score_catalogue(tasks)
    # the support items themselves would often make the list: exclusion is doing work
    raw = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert any(set(r) & set(t.support_items) for r, t in zip(raw, tasks, strict=True))


def test_new_items_rank_last_and_leave_old_scores_alone(p2: P2World) -> None:
    import copy

    model = copy.deepcopy(p2.model)
    n = model.n_items
    tasks, _ = shot_tasks(p2.test, p2.data.catalogue.index, 5)
    tasks = tasks[:8]
    before = model.score_catalogue(tasks)
    model.add_items(pd.DataFrame({"item_id": ["new-a", "new-b"]}), np.zeros((2, 3)))
    assert model.n_items == n + 2
    after = model.score_catalogue([*tasks, _task([], [])])
    np.testing.assert_array_equal(after[:-1, :n], before)
    assert (after[:, n:].max(axis=1) < after[:, :n].min(axis=1)).all()
    # a new item in a support set is accepted (it carries no weight)
    with_new = model.score_catalogue([_task([0, n + 1], [5.0, 4.0])])
    assert with_new.shape == (1, n + 2) and np.isfinite(with_new).all()


def test_beats_popularity_at_k10_on_held_out_users(p2: P2World) -> None:
    """Fold 0's test users (never seen in fitting nor in choosing lam): the episodic
    model ranks above popularity at K = 10 (0.405 against 0.389 when written)."""
    models = {"popularity": make_peer("popularity").fit(p2.data), "episodic": p2.model}
    res = evaluate_p2(models, p2.test, p2.data.catalogue.index, shots=(10,))
    row = res["summary"]["10"]
    assert row["episodic"]["ndcg@10"] > 1.02 * row["popularity"]["ndcg@10"]


def test_state_round_trip_scores_the_same() -> None:
    model = EpisodicLinear(shots=(1, 3), lams=(1.0,), feature_sets=("binary+ratings",))
    model.fit(_synthetic())
    options, fitted, arrays = model.to_state()
    loaded = EpisodicLinear.from_state(options, fitted, arrays)
    tasks = [_task([3, 7], [5.0, 1.0]), _task([], [])]
    np.testing.assert_array_equal(loaded.score_catalogue(tasks), model.score_catalogue(tasks))
    with pytest.raises(ModelError, match="do not match"):
        EpisodicLinear.from_state(options, {**fitted, "features": "binary"}, arrays)
    with pytest.raises(ModelError, match="intercept"):
        EpisodicLinear.from_state(options, fitted, {**arrays, "intercept": np.zeros(3)})


def test_max_items_fits_the_most_rated_and_ranks_the_rest_by_popularity_below() -> None:
    data = _synthetic()
    capped = EpisodicLinear(shots=(1, 3), lams=(1.0,), max_items=8).fit(data)
    universe = capped.universe
    counts = data.interactions["item_id"].value_counts()
    assert len(universe.items) == 8 and capped.n_items == N_ITEMS
    rated = counts.reindex([f"i{i}" for i in range(N_ITEMS)], fill_value=0).to_numpy()
    assert rated[universe.items].min() >= np.delete(rated, universe.items).max()
    # inside the universe: exactly the model fitted on the universe's items alone
    alone = EpisodicLinear(shots=(1, 3), lams=(1.0,)).fit(universe.restrict(data))
    tasks = [_task([int(universe.items[0]), 5, 9], [5.0, 2.0, 4.0]), _task([], [])]
    scores = capped.score_catalogue(tasks)
    np.testing.assert_array_equal(
        scores[:, universe.items], alone.score_catalogue(universe.tasks(tasks))
    )
    # outside it: below every universe item, more liked first
    outside = np.flatnonzero(universe.position < 0)
    assert (scores[:, outside].max(axis=1) < scores[:, universe.items].min(axis=1)).all()
    order = outside[np.argsort(-universe.like_rate[outside], kind="stable")]
    assert (np.diff(scores[:, order], axis=1) <= 0).all()
    # an outside item in a support set counts for nothing
    a, b = capped.score_catalogue(
        [
            _task([int(universe.items[0])], [5.0]),
            _task([int(universe.items[0]), int(outside[0])], [5.0, 5.0]),
        ]
    )
    np.testing.assert_array_equal(a, b)
    assert capped.describe()["items_fitted"] == 8


def test_max_items_lets_a_catalogue_fit_in_the_memory_there_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 180 * 9**2)
    with pytest.raises(DataError, match=r"max_items=9 or fewer"):
        EpisodicLinear(seed=0).fit(_synthetic())
    EpisodicLinear(seed=0, max_items=9).fit(_synthetic())


def test_a_capped_state_round_trips_and_an_old_state_loads_the_same() -> None:
    model = EpisodicLinear(
        shots=(1, 3), lams=(1.0,), feature_sets=("binary+ratings",), max_items=9
    ).fit(_synthetic())
    model.add_items(pd.DataFrame({"item_id": ["new"]}), np.zeros((1, 2)))
    tasks = [_task([3, 7, N_ITEMS], [5.0, 1.0, 4.0]), _task([], [])]
    options, fitted, arrays = model.to_state()
    assert options["max_items"] == 9 and fitted["n_items"] == N_ITEMS + 1
    loaded = EpisodicLinear.from_state(options, fitted, arrays)
    np.testing.assert_array_equal(loaded.score_catalogue(tasks), model.score_catalogue(tasks))

    # saved before universes: W over the grown catalogue, zero rows and columns for
    # the added item, no universe arrays, no n_items
    whole = EpisodicLinear(shots=(1, 3), lams=(1.0,), feature_sets=("binary+ratings",))
    whole.fit(_synthetic())
    # before the item is added, with it in the support: what the old state scored. The
    # input check every score_catalogue makes now refuses an item past the catalogue,
    # so the model's own scoring is called past it
    expected = EpisodicLinear.score_catalogue.__wrapped__(whole, tasks[:1])  # type: ignore[attr-defined]
    whole.add_items(pd.DataFrame({"item_id": ["new"]}), np.zeros((1, 2)))
    options, fitted, arrays = whole.to_state()
    grow = ((0, 1), (0, 1))
    old = {
        "w_binary": np.pad(arrays["w_binary"], grow),
        "w_ratings": np.pad(arrays["w_ratings"], grow),
        "intercept": np.pad(arrays["intercept"], (0, 1)),
        "prior": np.pad(arrays["prior"], (0, 1)),
    }
    old_fitted = {k: v for k, v in fitted.items() if k != "n_items"}
    old_options = {k: v for k, v in options.items() if k != "max_items"}
    loaded = EpisodicLinear.from_state(old_options, old_fitted, old)
    assert loaded.n_items == N_ITEMS + 1 and loaded.n_fit_items == N_ITEMS
    got = loaded.score_catalogue(tasks)
    np.testing.assert_array_equal(got, whole.score_catalogue(tasks))
    np.testing.assert_allclose(got[0, :N_ITEMS], expected[0, :N_ITEMS])
    spread = np.ptp(expected[0])
    assert got[0, N_ITEMS] == pytest.approx(expected[0].min() - 0.01 * spread - 1e-6)
    with pytest.raises(ModelError, match="n_fit_items 13"):
        EpisodicLinear.from_state(options, {**fitted, "n_fit_items": 13}, arrays)


def test_a_solve_too_large_for_the_gpu_runs_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory check reads the host's memory: a GPU with less room raised CUDA's
    out-of-memory error mid-fit. The solve falls back to the CPU, with a warning, and
    gives the CPU's answer. (torch's "meta" device stands in for a full GPU here.)"""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    gram, xty = x.T @ x, x.T @ rng.normal(size=(40, 3))
    expected = EpisodicLinear._solve(gram, xty, 0.5, torch.device("cpu"))
    cholesky = torch.linalg.cholesky

    def full_gpu(a: torch.Tensor) -> torch.Tensor:
        if a.device.type != "cpu":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 21.6 GiB")
        return cholesky(a)

    monkeypatch.setattr(torch.linalg, "cholesky", full_gpu)
    with pytest.warns(RuntimeWarning, match="does not fit in meta's memory; it runs on the CPU"):
        solved = EpisodicLinear._solve(gram, xty, 0.5, torch.device("meta"))
    np.testing.assert_allclose(solved, expected)

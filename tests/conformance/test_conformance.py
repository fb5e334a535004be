"""One contract, every model: the properties benchmarks and ensembles rely on.

Each test runs once per :class:`ModelSpec` in ``conftest.SPECS`` (peers and
metarec's own network), on real ml-100k ratings and TF-IDF item vectors. A
model is fitted once per module (``fitted``); tests that change a model work
on a copy.
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec.data.tasks import Task
from metarec.errors import ConfigError, UnsupportedError
from metarec.models.base import ScoringModel
from metarec.models.ensemble import Ensemble
from metarec.models.meta_model import MetaModel

from .conftest import SEED, SPECS, ModelSpec, World


@pytest.fixture(scope="module", params=SPECS, ids=[s.name for s in SPECS])
def spec(request: pytest.FixtureRequest) -> ModelSpec:
    return request.param


@pytest.fixture(scope="module")
def fitted(spec: ModelSpec, world: World) -> ScoringModel:
    return spec.factory(SEED).fit(world.data)


def _flipped(task: Task) -> Task:
    """The same items with opposite opinions (1 <-> 5, 2 <-> 4)."""
    return replace(task, support_ratings=(6.0 - task.support_ratings).astype(np.float32))


def _empty(task: Task) -> Task:
    no_items, no_ratings = task.support_items[:0], task.support_ratings[:0]
    return replace(task, support_items=no_items, support_ratings=no_ratings)


def test_unknown_user_is_scored_from_support(
    spec: ModelSpec, fitted: ScoringModel, world: World
) -> None:
    task, user = world.tasks[0], world.users.iloc[:1]
    scores = fitted.score_catalogue([task], user)
    assert scores.shape == (1, fitted.n_items) and fitted.n_items == world.data.n_items
    assert np.isfinite(scores).all()
    pair = fitted.score_catalogue([task, _flipped(task)], pd.concat([user, user]))
    # batching changes nothing but float32 rounding (which an ensemble's per-user
    # standardisation can scale up to ~1e-6)
    np.testing.assert_allclose(pair[0], scores[0], rtol=1e-5, atol=1e-5)
    if spec.personalised:
        # more than a last bit of the scores (the bias model moves all of them alike)
        gap = float(np.abs(pair[0] - pair[1]).max())
        assert gap > 1e-4, f"opposite ratings moved no score by more than {gap:.1e}"
    else:
        np.testing.assert_array_equal(pair[0], pair[1])
    # side features are optional
    assert np.isfinite(fitted.score_catalogue([task], None)).all()


def test_empty_support_gives_finite_scores(fitted: ScoringModel, world: World) -> None:
    tasks = [_empty(world.tasks[0]), world.tasks[1], _empty(world.tasks[2])]
    scores = fitted.score_catalogue(tasks, world.users.iloc[:3])
    assert scores.shape == (3, fitted.n_items) and np.isfinite(scores).all()
    alone = fitted.score_catalogue(tasks[:1], world.users.iloc[:1])
    assert alone.shape == (1, fitted.n_items) and np.isfinite(alone).all()
    # the same user scored alone or in a batch; and a new user still gets a ranking
    np.testing.assert_allclose(alone[0], scores[0], rtol=1e-5, atol=1e-5)
    assert np.ptp(scores[0]) > 0, "an empty support gave every item one score"


def test_new_item_is_scorable_or_refused_clearly(
    spec: ModelSpec, fitted: ScoringModel, world: World
) -> None:
    model = copy.deepcopy(fitted)
    before = model.n_items
    rows = pd.DataFrame(
        {
            "item_id": ["conformance-new-1", "conformance-new-2"],
            "title": ["Toy Story 4", "A War Film"],
            "year": [2019, 2019],
            "genres": ["Animation|Children's|Comedy", "Drama|War"],
        }
    )
    vectors = world.catalogue.encoder.encode(
        [
            "Toy Story 4 (2019). Genres: Animation, Children's.",
            "Schindler's List (1993). Genres: Drama, War.",
        ]
    )
    try:
        model.add_items(rows, vectors)
    except UnsupportedError as err:
        assert model.name in str(err) and len(str(err)) > 40
        assert model.n_items == before
        return
    assert model.n_items == before + 2
    scores = model.score_catalogue(world.tasks[:2], world.users.iloc[:2])
    assert scores.shape == (2, before + 2) and np.isfinite(scores).all()
    if spec.reads_text:
        # scored from its text: two new items with different texts score differently
        assert not np.allclose(scores[:, before], scores[:, before + 1]), "text ignored"
    # the old items' scores are untouched by the addition
    np.testing.assert_allclose(
        scores[:, :before],
        fitted.score_catalogue(world.tasks[:2], world.users.iloc[:2]),
        rtol=1e-5,
        atol=1e-5,
    )


def test_recommend_excludes_support_items_when_asked(fitted: ScoringModel, world: World) -> None:
    tasks, users = world.tasks, world.users
    top = fitted.recommend(tasks, k=20, users=users)
    assert top.shape == (len(tasks), 20)
    scores = fitted.score_catalogue(tasks, users).astype(np.float64)
    for row, task, s in zip(top, tasks, scores, strict=True):
        assert not set(row) & set(task.support_items)
        # the 20 best of the rest, in score order (ties by catalogue index)
        unseen = s.copy()
        unseen[task.support_items] = -np.inf
        np.testing.assert_array_equal(row, np.argsort(-unseen, kind="stable")[:20])
    # without exclusion the list is the score order itself, support items included
    full = fitted.recommend(tasks, k=fitted.n_items, users=users, exclude_seen=False)
    for row, s in zip(full, scores, strict=True):
        np.testing.assert_array_equal(row, np.argsort(-s, kind="stable"))


def test_recommend_takes_any_k_and_refuses_a_bad_one(fitted: ScoringModel, world: World) -> None:
    tasks, users = world.tasks, world.users
    # past the catalogue: every item once, in score order (it used to fail to broadcast)
    everything = fitted.recommend(tasks, k=fitted.n_items + 5, users=users, exclude_seen=False)
    assert everything.shape == (len(tasks), fitted.n_items)
    assert fitted.recommend([], k=3).shape == (0, 3)
    for bad in (0, -2, 2.5, "10", True):
        with pytest.raises(ConfigError, match=re.escape(f"{fitted.name}: k: must be a whole")):
            fitted.recommend(tasks, k=bad, users=users)  # type: ignore[arg-type]


@pytest.mark.slow  # refits every model twice (seconds each for the network-based ones)
def test_same_seed_same_scores(spec: ModelSpec, fitted: ScoringModel, world: World) -> None:
    again = spec.factory(SEED).fit(world.data)
    # identical up to float32 rounding: torch's multi-threaded CPU reductions may
    # sum in a different order from run to run (last-bit differences, ~1e-7, which
    # an ensemble's per-user standardisation can scale up ten-fold)
    np.testing.assert_allclose(
        again.score_catalogue(world.tasks, world.users),
        fitted.score_catalogue(world.tasks, world.users),
        rtol=1e-5,
        atol=1e-5,
    )
    other = spec.factory(SEED + 1).fit(world.data)
    if spec.seeded:
        assert not np.allclose(
            other.score_catalogue(world.tasks, world.users),
            fitted.score_catalogue(world.tasks, world.users),
        ), "a different seed gave the same model: is the seed used?"


def test_query_sets_are_never_read(fitted: ScoringModel, world: World) -> None:
    rng = np.random.default_rng(0)
    changed = [
        replace(
            t,
            query_items=rng.choice(fitted.n_items, size=7, replace=False),
            query_ratings=rng.integers(1, 6, size=7).astype(np.float32),
        )
        for t in world.tasks
    ]
    np.testing.assert_array_equal(
        fitted.score_catalogue(changed, world.users),
        fitted.score_catalogue(world.tasks, world.users),
    )


def test_predict_tasks_matches_catalogue_scores(fitted: ScoringModel, world: World) -> None:
    preds = fitted.predict_tasks(world.tasks, world.users)
    scores = fitted.score_catalogue(world.tasks, world.users)
    assert len(preds) == len(world.tasks)
    for p, s, task in zip(preds, scores, world.tasks, strict=True):
        np.testing.assert_allclose(p, s[task.query_items], rtol=1e-4, atol=1e-5)
    if fitted.predicts_ratings:
        lo, hi = world.data.rating_range
        values = np.concatenate(preds)
        # on the rating scale: within a rating of the range, centred near the data's mean
        assert values.min() >= lo - 1.0 and values.max() <= hi + 1.0
        assert lo + 1.0 <= values.mean() <= hi - 0.5


def test_saved_ensemble_scores_the_same_or_is_refused_clearly(
    spec: ModelSpec, world: World, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Ensembles (and metarec models, as a one-member ensemble) survive save and load
    bit for bit; models that cannot be saved say so, naming the member."""
    model = spec.factory(SEED)
    if not isinstance(model, Ensemble | MetaModel):
        if spec.name not in ("als", "melu-1", "melu-5"):
            # saveable on their own, but a folder needs a metarec member for the catalogue;
            # their round trip is covered as members of the ensemble specs
            peer = request.getfixturevalue("fitted")
            with pytest.raises(UnsupportedError, match="at least one metarec member"):
                Ensemble({spec.name: peer}, fit_members=False).save(tmp_path / "ens")
            assert not (tmp_path / "ens").exists()
            return
        with pytest.raises(UnsupportedError, match=repr(spec.name)):
            Ensemble({spec.name: model}, fit_members=False).save(tmp_path / "ens")
        assert not (tmp_path / "ens").exists()
        return
    fitted = request.getfixturevalue("fitted")
    ens = fitted if isinstance(fitted, Ensemble) else Ensemble({spec.name: fitted})
    loaded = Ensemble.load(ens.save(tmp_path / "ens"))
    np.testing.assert_array_equal(
        loaded.score_catalogue(world.tasks, world.users),
        ens.score_catalogue(world.tasks, world.users),
    )


def test_support_sets_no_model_can_read_are_refused(fitted: ScoringModel, world: World) -> None:
    from metarec.errors import DataError

    task = world.tasks[0]
    wrapped = replace(task, support_items=np.array([-1], dtype=np.int64),
                      support_ratings=np.array([5.0], dtype=np.float32))  # fmt: skip
    with pytest.raises(DataError, match=r"support item -1 is not in \[0, "):
        fitted.recommend([wrapped], k=3)
    unrated = replace(task, support_ratings=np.full(len(task.support_items), np.nan, np.float32))
    with pytest.raises(DataError, match="not a finite number"):
        fitted.recommend([unrated], k=3)
    with pytest.raises(DataError, match="2 user rows for 1 tasks"):
        fitted.recommend([task], k=3, users=world.users.iloc[:2])
    # each of these was read as something else: 0.7 cut to item 0, a rating without its
    # item padded, a query item past the catalogue indexed as the last one
    n = fitted.n_items
    cases = [
        (replace(task, support_items=np.array([0.7]), support_ratings=np.array([5.0])),
         "support item 0.7 is not whole"),
        (replace(task, support_items=np.array([0, 1]), support_ratings=np.array([5.0])),
         "2 support items and 1 support ratings"),
        (replace(task, query_items=np.array([n]), query_ratings=np.array([4.0])),
         rf"query item {n} is not in \[0, {n}\)"),
        ("not a task", "task 0: expected a Task"),
    ]  # fmt: skip
    for bad, needle in cases:
        with pytest.raises(DataError, match=needle):
            fitted.recommend([bad], k=3)  # type: ignore[list-item]
        with pytest.raises(DataError, match=needle):
            fitted.predict_tasks([bad])  # type: ignore[list-item]

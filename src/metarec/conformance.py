"""The contract every model keeps, as checks anyone can run on a model of their own.

Benchmarks, ensembles, A/B tests and the service rely on a few properties of a
:class:`~metarec.models.base.ScoringModel`: an unknown user is scored from their
support set alone; an empty support still gives a ranking; a new item is scored
from its text or refused clearly; ``recommend`` leaves out what the user rated
and takes any list length; the same seed gives the same scores; a task's query
set (its held-out answers) is never read. metarec's own suite
(``tests/conformance``) runs every model through these functions; a researcher
runs a model of their own through the same ones before benchmarking it (in the
manner of scikit-learn's ``check_estimator``)::

    from metarec.conformance import check_model, make_world
    world = make_world(load_dataset("ml-100k", root="../shared/data"))
    check_model(lambda seed: MyModel(seed=seed), world)  # ConformanceError lists failures

Each check raises :class:`ConformanceError` saying what broke; :func:`check_model`
runs them all and reports every failure at once.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec.catalogue import Catalogue
from metarec.data.schema import Dataset
from metarec.data.tasks import Task, UserRatings
from metarec.errors import ConfigError, DataError, MetarecError, UnsupportedError
from metarec.evaluation.own_models import OwnModel, build, takes_seed
from metarec.models.base import ScoringModel, TrainingData
from metarec.values import check_whole

Factory = Callable[[int], ScoringModel]

# float32 rounding of batched against single scoring, which an ensemble's per-user
# standardisation can scale up ten-fold
TOLERANCE = 1e-5


class ConformanceError(MetarecError, AssertionError):
    """A model broke the contract; the message says which part and how. A
    :class:`MetarecError`, as every error a user's input can cause (here a model of
    one's own), and an ``AssertionError``, as a test suite reads it."""


@dataclass
class World:
    """Training data for a model, and held-out users' tasks (support 10, query 10)."""

    data: TrainingData
    catalogue: Catalogue
    tasks: list[Task]
    users: pd.DataFrame  # one row per task: user_id and side features


def check_world(world: object) -> None:
    """ConfigError unless ``world`` is a :class:`World` the checks can judge by: three
    held-out tasks or more, each with support and query ratings, and a users row each.
    On a world of empty supports, a model that never excluded seen items passed."""
    if not isinstance(world, World):
        raise ConfigError(f"world: expected a World (make_world), got {type(world).__name__}")
    if len(world.tasks) < 3 or len(world.users) != len(world.tasks):
        raise ConfigError(
            f"world: needs 3 or more tasks and one users row each, got {len(world.tasks)} "
            f"tasks and {len(world.users)} rows"
        )
    thin = [
        n for n, t in enumerate(world.tasks) if not len(t.support_items) or not len(t.query_items)
    ]
    if thin:
        raise ConfigError(
            f"world: task {thin[0]} has no support or no query ratings; every check needs both"
        )


def make_world(
    ds: Dataset,
    *,
    encoder: str = "tfidf",
    seed: int = 5,
    n_train: int = 200,
    n_validation: int = 30,
    n_test: int = 12,
    cache_dir: str | Path | None = None,
) -> World:
    """A small world from ``ds``: ``n_train`` seeded users to fit on, ``n_validation``
    to tune on and ``n_test`` held-out users, each a task of 10 random support and 10
    query ratings (so every test user needs 20). TF-IDF vectors by default: seconds,
    not the minute MiniLM takes on a CPU; any encoder name works."""
    from metarec.pipeline import encode_catalogue

    if not isinstance(ds, Dataset):
        raise ConfigError(f"make_world: ds: expected a Dataset (load_dataset), got {ds!r:.60}")
    # a negative n_train sliced from the end: the held-out users were fitted on
    seed = check_whole(seed, "make_world: seed", 0)
    n_train = check_whole(n_train, "make_world: n_train", 1)
    n_validation = check_whole(n_validation, "make_world: n_validation", 0)
    # the checks batch three users (an empty support among others)
    n_test = check_whole(n_test, "make_world: n_test", 3)
    catalogue = encode_catalogue(ds.items, encoder, cache_dir=cache_dir, progress=False)
    counts = ds.interactions.groupby("user_id").size()
    users = np.random.default_rng(seed).permutation(np.sort(ds.interactions["user_id"].unique()))
    held_out = [u for u in users[n_train + n_validation :] if counts[u] >= 20][:n_test]
    if len(held_out) < 3:
        others = len(users) - n_train - n_validation
        has = (
            f"{len(held_out)} of the other {others:,} with 20 ratings"
            if others > 0
            else "none beyond those"
        )
        raise DataError(
            f"{ds.name}: a conformance world needs {n_train + n_validation} users to fit on "
            f"and at least 3 more with 20 ratings each; it has {len(users):,} users, {has}"
        )
    rows = ds.interactions["user_id"]
    data = TrainingData(
        interactions=ds.interactions[rows.isin(set(users[:n_train]))],
        catalogue=catalogue,
        users=ds.users,
        validation=ds.interactions[rows.isin(set(users[n_train : n_train + n_validation]))],
        rating_range=ds.rating_range,
        seed=seed,
    )
    held = UserRatings.from_frame(ds.interactions[rows.isin(set(held_out))], catalogue.index)
    rng = np.random.default_rng(seed)
    tasks = []
    for row in range(len(held)):
        items, ratings, _ = held.history(row)
        order = rng.permutation(len(items))[:20]
        s, q = order[:10], order[10:]
        tasks.append(Task(row, items[s], ratings[s], items[q], ratings[q]))
    if ds.users is not None:
        frame = ds.users.set_index("user_id").reindex(held.user_ids).reset_index()
    else:
        frame = pd.DataFrame({"user_id": held.user_ids})
    return World(data, catalogue, tasks, frame)


def _close(
    actual: np.ndarray, expected: np.ndarray, what: str, tol: float = TOLERANCE, why: str = ""
) -> None:
    """ConformanceError unless equal within ``tol``; ``why``: the likely cause, said after."""
    if np.shape(actual) != np.shape(expected):
        raise ConformanceError(f"{what}: shape {np.shape(actual)}, expected {np.shape(expected)}")
    # NaN equals nothing, itself included: a model that scores an item NaN was told
    # "scores differ by up to 0" and "not deterministic"
    for scores in (actual, expected):
        if not np.isfinite(np.asarray(scores, dtype=np.float64)).all():
            raise ConformanceError(f"{what}: scores hold NaN or infinity")
    if not np.allclose(actual, expected, rtol=tol, atol=tol):
        gap = float(np.nanmax(np.abs(np.asarray(actual, float) - np.asarray(expected, float))))
        raise ConformanceError(f"{what}: scores differ by up to {gap:.3g}{why}")


def _finite(scores: np.ndarray, shape: tuple[int, int], what: str) -> None:
    if not isinstance(scores, np.ndarray):  # a list met arithmetic as a raw TypeError
        raise ConformanceError(
            f"{what}: score_catalogue returned {type(scores).__name__}, expected a numpy "
            f"array of shape {shape}"
        )
    if np.shape(scores) != shape:
        raise ConformanceError(f"{what}: scores of shape {np.shape(scores)}, expected {shape}")
    if not np.isfinite(scores).all():
        raise ConformanceError(f"{what}: scores hold NaN or infinity")


def _refuses(call: Callable[[], Any], error: type[Exception], pattern: str, what: str) -> None:
    try:
        call()
    except error as exc:
        if not re.search(pattern, str(exc)):
            raise ConformanceError(
                f"{what}: refused, but the message {str(exc)!r} does not say {pattern!r}"
            ) from None
        return
    except Exception as exc:  # the wrong kind of refusal: a traceback at the shell
        raise ConformanceError(
            f"{what}: raised {type(exc).__name__} ({exc}), expected {error.__name__}"
        ) from None
    raise ConformanceError(f"{what}: accepted; expected {error.__name__} saying {pattern!r}")


def flipped(task: Task, rating_range: tuple[float, float] = (1.0, 5.0)) -> Task:
    """The same items with opposite opinions (1 <-> 5, 2 <-> 4 on 1-5 stars)."""
    lo, hi = rating_range
    return replace(task, support_ratings=(lo + hi - task.support_ratings).astype(np.float32))


def contrasting(task: Task, other: Task, rating_range: tuple[float, float]) -> Task:
    """A support that should move a personalised model: opposite opinions of the same
    items, or, where every rating is one value (clicks), another user's items."""
    lo, hi = rating_range
    if hi > lo:
        return flipped(task, rating_range)
    return replace(task, support_items=other.support_items, support_ratings=other.support_ratings)


def emptied(task: Task) -> Task:
    no_items, no_ratings = task.support_items[:0], task.support_ratings[:0]
    return replace(task, support_items=no_items, support_ratings=no_ratings)


def check_scored_from_support(model: ScoringModel, world: World, *, personalised: bool) -> None:
    """An unknown user is scored from their support set, alone or in a batch; opposite
    opinions move a personalised model's scores, and no other model's."""
    task, user = world.tasks[0], world.users.iloc[:1]
    scores = model.score_catalogue([task], user)
    if model.n_items != world.data.n_items:
        raise ConformanceError(
            f"n_items is {model.n_items}, the catalogue has {world.data.n_items}"
        )
    _finite(scores, (1, model.n_items), "one user")
    # noise at scoring time would read as the lookups below: told apart first
    _close(
        model.score_catalogue([task], user)[0],
        scores[0],
        "the same user scored twice",
        why=": score_catalogue is not deterministic (unseeded noise when scoring?)",
    )
    # the task's user index is no key to anyone's history: an unknown user has none
    other = replace(task, user=world.tasks[1].user)
    _close(
        model.score_catalogue([other], user)[0],
        scores[0],
        "the same support under another user index (an unknown user is scored from the "
        "support set, not from a history looked up by Task.user)",
    )
    opposite = contrasting(task, world.tasks[1], world.data.rating_range)
    pair = model.score_catalogue([task, opposite], pd.concat([user, user]))
    _close(pair[0], scores[0], "the same user scored alone and in a batch")
    _close(pair[1], model.score_catalogue([opposite], user)[0], "the second of a batch alone")
    # each row of a batch of different users as that user alone: a batch read one
    # user's features for all, or scored a row against the rest, passed on row 0
    three = model.score_catalogue(world.tasks[:3], world.users.iloc[:3])
    for n in range(3):
        alone = model.score_catalogue(world.tasks[n : n + 1], world.users.iloc[n : n + 1])
        _close(three[n], alone[0], f"task {n} scored alone and in a batch of three users")
    gap = float(np.abs(pair[0] - pair[1]).max())
    lo, hi = world.data.rating_range
    what = "opposite ratings" if hi > lo else "another user's items"
    if hi > lo:
        # which items were rated, not how, is what a content profile or an implicit
        # model reads: such a model personalises, and was told it did not
        items = replace(task, support_items=world.tasks[1].support_items,
                        support_ratings=world.tasks[1].support_ratings)  # fmt: skip
        moved = float(np.abs(model.score_catalogue([items], user)[0] - scores[0]).max())
        what, gap = "opposite ratings or another user's items", max(gap, moved)
    if gap <= 1e-4:
        _refuse_kept_state(model, world, user, what)
    if personalised and gap <= 1e-4:  # more than a last bit: the bias model moves all alike
        raise ConformanceError(
            f"{what} moved no score by more than {gap:.1e} (a model not meant to "
            "personalise: personalised=False, --not-personalised)"
        )
    if not personalised and gap != 0:
        raise ConformanceError(
            f"a model said not to personalise moved scores by {gap:.3g} on {what}"
        )
    _finite(model.score_catalogue([task], None), (1, model.n_items), "no side features")


def _refuse_kept_state(model: ScoringModel, world: World, user: pd.DataFrame, what: str) -> None:
    """Different supports under one ``Task.user`` scored alike: a ConformanceError where
    the model does read supports (different users' supports move scores, each with
    ``user``'s features, which the contrast had), so what hid the change is state kept
    from an earlier call (scores cached by ``Task.user``, which P2 asks again at each
    K). It was told it did not personalise, and with ``personalised=False`` it passed.
    Not with no features: a model that reads the support only without them was blamed."""
    rows = model.score_catalogue(world.tasks[:3], pd.concat([user] * 3))
    spread = float(np.abs(rows - rows[0]).max())
    if spread > 1e-4:
        raise ConformanceError(
            f"{what} under the same Task.user moved no score, yet different users' "
            f"supports move scores by {spread:.3g}: the model keeps something of an "
            "earlier call (scores cached by Task.user?); score each task from its own "
            "support, as P2 asks one user again with more ratings"
        )


def check_empty_support(model: ScoringModel, world: World) -> None:
    """A user with no ratings yet gets finite scores that still rank the catalogue, in a
    batch with others and in a batch of such users alone (P2 at K = 0); so does one
    with a single rating (P2 at K = 1), or with every rating one value (a spread of
    0: a model that z-scores the support passed, then scored NaN in a benchmark)."""
    first = world.tasks[0]
    one = replace(first, support_items=first.support_items[:1],
                  support_ratings=first.support_ratings[:1])  # fmt: skip
    same = np.full_like(first.support_ratings, first.support_ratings[0])
    level = replace(first, support_ratings=same)
    for few, what in ((one, "a support of one rating"), (level, "a support of one rating value")):
        _finite(model.score_catalogue([few], world.users.iloc[:1]), (1, model.n_items), what)
    tasks = [emptied(world.tasks[0]), world.tasks[1], emptied(world.tasks[2])]
    scores = model.score_catalogue(tasks, world.users.iloc[:3])
    _finite(scores, (3, model.n_items), "empty supports in a batch")
    none = model.score_catalogue([emptied(t) for t in world.tasks[:3]], world.users.iloc[:3])
    _finite(none, (3, model.n_items), "a batch of empty supports only")
    alone = model.score_catalogue(tasks[:1], world.users.iloc[:1])
    _finite(alone, (1, model.n_items), "an empty support alone")
    _close(alone[0], scores[0], "an empty support scored alone and in a batch")
    if np.ptp(scores[0]) <= 0:
        raise ConformanceError("an empty support gave every item one score")


def check_new_items(model: ScoringModel, world: World, *, reads_text: bool) -> None:
    """Items added after fitting are scored (from their text, when the model reads
    text) without moving the old items' scores, or refused with UnsupportedError
    naming the model."""
    added = copy.deepcopy(model)
    before = added.n_items
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
    _refuses_bad_new_items(model, rows, vectors)
    try:
        added.add_items(rows, vectors)
    except UnsupportedError as err:
        if reads_text:  # the text a new item is scored from is the claim checked here
            raise ConformanceError(
                f"said to score new items from their text (reads_text, --reads-text), but "
                f"refuses new items: {err}"
            ) from None
        if model.name not in str(err) or len(str(err)) <= 40:
            raise ConformanceError(
                f"new items refused without naming the model and the reason: {err}"
            ) from None
        if added.n_items != before:
            raise ConformanceError("refusing new items changed the catalogue size") from None
        return
    if added.n_items != before + 2:
        raise ConformanceError(f"2 items added: n_items {before} -> {added.n_items}")
    scores = added.score_catalogue(world.tasks[:2], world.users.iloc[:2])
    _finite(scores, (2, before + 2), "after adding 2 items")
    if reads_text and np.allclose(scores[:, before], scores[:, before + 1]):
        raise ConformanceError("two new items with different texts scored alike: text ignored")
    if reads_text:
        # the same two items added the other way round: their scores follow them, not
        # their places (a model scoring new items by position passed)
        swapped = copy.deepcopy(model)
        swapped.add_items(rows.iloc[::-1].reset_index(drop=True), vectors[::-1].copy())
        again = swapped.score_catalogue(world.tasks[:2], world.users.iloc[:2])
        _close(
            again[:, [before + 1, before]],
            scores[:, before:],
            "two new items added in the other order (their scores follow their place, "
            "not their text)",
        )
    old = model.score_catalogue(world.tasks[:2], world.users.iloc[:2])
    _close(scores[:, :before], old, "the old items' scores after adding items")


def _refuses_bad_new_items(model: ScoringModel, rows: pd.DataFrame, vectors: np.ndarray) -> None:
    """New items that are no items (None: a bare TypeError) or a NaN vector (zeroed, or
    NaN scores later) are refused with a DataError, or new items are not taken at all
    (UnsupportedError), and the catalogue keeps its size."""
    nan = vectors.copy()
    nan[0, 0] = np.nan
    for items, vecs, what in ((None, vectors, "None as the items"), (rows, nan, "a NaN vector")):
        tried = copy.deepcopy(model)
        try:
            tried.add_items(items, vecs)  # type: ignore[arg-type]
        except (DataError, UnsupportedError):
            pass
        except Exception as err:
            raise ConformanceError(
                f"add_items with {what}: {type(err).__name__}: {err} (expected a DataError "
                "naming what is wrong)"
            ) from None
        else:
            raise ConformanceError(f"add_items took {what} without a word")
        if tried.n_items != model.n_items:
            raise ConformanceError(f"refusing {what} changed the catalogue size")


def _score_order(scores: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
    """Item indices by score, best first, ties in the catalogue's fixed tie order, the
    ``excluded`` ones after all others (-inf scores too): what ``recommend`` must give
    (a slow reference, one row at a time)."""
    from metarec.models.base import tie_order

    ties = tie_order(len(scores))
    rank = np.empty(len(scores), dtype=np.int64)
    rank[ties] = np.arange(len(scores))
    last = np.zeros(len(scores), dtype=bool) if excluded is None else excluded
    return np.lexsort((rank, -scores, last))


def check_recommend_excludes_seen(model: ScoringModel, world: World) -> None:
    """``recommend`` gives the best unseen items in score order (ties in the fixed order
    :func:`~metarec.models.base.top_k` breaks them by) and, with ``exclude_seen=False``,
    the score order itself."""
    tasks, users = world.tasks, world.users
    top = model.recommend(tasks, k=20, users=users)
    if top.shape != (len(tasks), 20):
        raise ConformanceError(f"recommend(k=20): shape {top.shape}")
    scores = model.score_catalogue(tasks, users).astype(np.float64)
    for n, (row, task, s) in enumerate(zip(top, tasks, scores, strict=True)):
        if set(row) & set(task.support_items):
            raise ConformanceError(f"task {n}: recommended an item of its support set")
        support = np.zeros(len(s), dtype=bool)
        support[task.support_items] = True
        if not np.array_equal(row, _score_order(s, support)[:20]):
            raise ConformanceError(f"task {n}: the top 20 are not the best unseen by score")
    full = model.recommend(tasks, k=model.n_items, users=users, exclude_seen=False)
    for n, (row, s) in enumerate(zip(full, scores, strict=True)):
        if not np.array_equal(row, _score_order(s)):
            raise ConformanceError(f"task {n}: exclude_seen=False is not the score order")


def check_any_k(model: ScoringModel, world: World) -> None:
    """Any whole k works (past the catalogue: every item once); any other is refused."""
    tasks, users = world.tasks, world.users
    everything = model.recommend(tasks, k=model.n_items + 5, users=users, exclude_seen=False)
    if everything.shape != (len(tasks), model.n_items):
        raise ConformanceError(f"k past the catalogue: shape {everything.shape}")
    if model.recommend([], k=3).shape != (0, 3):
        raise ConformanceError("no tasks: expected an empty (0, 3) list")
    bad_ks: tuple[Any, ...] = (0, -2, 2.5, "10", True)  # a float, a string, a bool: not k
    for bad in bad_ks:
        _refuses(
            partial(model.recommend, tasks, k=bad, users=users),
            ConfigError,
            re.escape(f"{model.name}: k: must be a whole"),
            f"k={bad!r}",
        )


def check_same_seed(factory: Factory, model: ScoringModel, world: World, seed: int, *,
                    seeded: bool) -> None:  # fmt: skip
    """The same seed gives the same scores; another seed, when the model has randomness,
    other ones. ``model``: ``factory(seed)`` already fitted on ``world``."""
    again = factory(seed).fit(world.data.copied())
    ours = model.score_catalogue(world.tasks, world.users)
    _close(
        again.score_catalogue(world.tasks, world.users),
        ours,
        "refitted with the same seed",
        why=" (randomness not drawn from the seed: numpy's global np.random, or an "
        "unseeded torch? draw from np.random.default_rng(seed))",
    )
    if seeded:
        other = factory(seed + 1).fit(world.data.copied())
        if np.allclose(other.score_catalogue(world.tasks, world.users), ours):
            raise ConformanceError(
                "a different seed gave the same model: is the seed used? (a model without "
                "randomness: seeded=False, --unseeded)"
            )


def check_query_never_read(model: ScoringModel, world: World) -> None:
    """Scores do not change when the tasks' query sets (the held-out answers) do."""
    rng = np.random.default_rng(0)
    lo, hi = world.data.rating_range
    changed = [
        replace(
            t,
            query_items=rng.choice(model.n_items, size=7, replace=False),
            query_ratings=rng.uniform(lo, hi, size=7).round().astype(np.float32),
        )
        for t in world.tasks
    ]
    # within TOLERANCE, as same_seed: a GPU's or threads' reductions vary in the last
    # bits from call to call; an answer read moves scores far more
    first = model.score_catalogue(world.tasks, world.users)
    # noise at scoring time would read as the answers read: told apart first
    _close(
        model.score_catalogue(world.tasks, world.users),
        first,
        "the same tasks scored twice",
        why=": score_catalogue is not deterministic (unseeded noise when scoring?), so "
        "whether the query sets are read cannot be told",
    )
    _close(
        model.score_catalogue(changed, world.users),
        first,
        "changing the query sets",
        why=": the query sets (the answers) were read",
    )


def check_predict_tasks(model: ScoringModel, world: World) -> None:
    """``predict_tasks`` gives each query item's catalogue score; a rating model's are
    on the rating scale."""
    preds = model.predict_tasks(world.tasks, world.users)
    scores = model.score_catalogue(world.tasks, world.users)
    if len(preds) != len(world.tasks):
        raise ConformanceError(f"predict_tasks: {len(preds)} answers for {len(world.tasks)} tasks")
    for n, (p, s, task) in enumerate(zip(preds, scores, world.tasks, strict=True)):
        _close(p, s[task.query_items], f"task {n}: predict_tasks against score_catalogue", 1e-4)
    # users known by their support alone (what adapt scores): nothing to predict, and
    # the meta-learned model crashed on it (a reshape of 0 elements)
    bare = [Task.support_only(t.support_items, t.support_ratings, t.user) for t in world.tasks]
    empty = model.predict_tasks(bare[:3], world.users.iloc[:3])
    if len(empty) != 3 or any(len(np.asarray(p)) for p in empty):
        raise ConformanceError(
            "predict_tasks of tasks with empty query sets: expected 3 empty arrays, got "
            f"{[np.shape(p) for p in empty]}"
        )
    lo, hi = world.data.rating_range
    if model.predicts_ratings and hi > lo:
        # in fractions of the scale, so that 0-1 or 1-10 is held as 1-5 is: at most a
        # quarter of it outside, the mean from a quarter above the bottom to an eighth
        # below the top (2 to 4.5 on 1-5 stars)
        span = hi - lo
        values = np.concatenate(preds)
        if values.min() < lo - span / 4 or values.max() > hi + span / 4:
            raise ConformanceError(
                f"predicts_ratings, but predictions run {values.min():.3g}..{values.max():.3g} "
                f"on a {lo:g}-{hi:g} scale"
            )
        if not lo + span / 4 <= values.mean() <= hi - span / 8:
            raise ConformanceError(f"predictions centred at {values.mean():.3g}, off the scale")


def check_bad_support_refused(model: ScoringModel, world: World) -> None:
    """Tasks no model can read are refused with DataError naming what is wrong."""
    task, n = world.tasks[0], model.n_items
    cases: list[tuple[Any, str, pd.DataFrame | None]] = [
        (replace(task, support_items=np.array([-1]), support_ratings=np.array([5.0])),
         r"support item -1 is not in \[0, ", None),
        (replace(task, support_ratings=np.full(len(task.support_items), np.nan, np.float32)),
         "not a finite number", None),
        (task, "2 user rows for 1 tasks", world.users.iloc[:2]),
        (replace(task, support_items=np.array([0.7]), support_ratings=np.array([5.0])),
         "support item 0.7 is not whole", None),
        (replace(task, support_items=np.array([0, 1]), support_ratings=np.array([5.0])),
         "2 support items and 1 support ratings", None),
        (replace(task, query_items=np.array([n]), query_ratings=np.array([4.0])),
         rf"query item {n} is not in \[0, {n}\)", None),
        ("not a task", "task 0: expected a Task", None),
        # 99 on 1-5 stars: a peer predicted 27 from it
        (replace(task, support_items=np.array([0]),
                 support_ratings=np.array([world.data.rating_range[1] + 94.0])),
         "off the model's scale", None),
    ]  # fmt: skip
    for bad, pattern, users in cases:
        _refuses(
            partial(model.recommend, [bad], k=3, users=users),
            DataError,
            pattern,
            f"recommend({pattern!r} case)",
        )
        if users is None:
            _refuses(
                partial(model.predict_tasks, [bad]),
                DataError,
                pattern,
                f"predict_tasks({pattern!r} case)",
            )


@dataclass
class Outcome:
    """What :func:`run_checks` found: per check, None if it passed, else what failed."""

    model: str
    results: dict[str, str | None]

    @property
    def failed(self) -> dict[str, str]:
        return {name: why for name, why in self.results.items() if why is not None}


CHECKS = (
    "scored_from_support",
    "empty_support",
    "new_items",
    "recommend_excludes_seen",
    "any_k",
    "same_seed",
    "query_never_read",
    "predict_tasks",
    "bad_support_refused",
    "inputs_unchanged",
)


def fingerprint_data(data: TrainingData) -> str:
    """A digest of everything ``fit`` is given: the frames' values, columns and order,
    and the item vectors. Equal before and after: the model changed none of it."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for frame in (data.interactions, data.validation, data.users, data.catalogue.items):
        if frame is None:
            digest.update(b"none")
            continue
        digest.update(repr((list(map(str, frame.columns)), frame.shape)).encode())
        try:
            rows = pd.util.hash_pandas_object(frame, index=True).to_numpy()
        except TypeError:  # unhashable cells (lists) in a catalogue of one's own
            rows = pd.util.hash_pandas_object(frame.astype(str), index=True).to_numpy()
        digest.update(np.ascontiguousarray(rows).tobytes())
    digest.update(np.ascontiguousarray(data.catalogue.vectors).tobytes())
    return digest.hexdigest()


def _guarded(world: World) -> World:
    """``world`` with tasks no model can write into (read-only arrays) and its users
    table copied: a model that centred the support ratings in place corrupted the
    world for every later check and call, and failed five checks none of which named
    the cause."""
    from metarec.data.tasks import read_only

    return replace(world, tasks=read_only(world.tasks), users=world.users.copy())


def _wrote_into(exc: Exception) -> str | None:
    from metarec.data.tasks import wrote_into_read_only

    if wrote_into_read_only(exc):
        return (
            f"wrote into a task's arrays, which are the caller's ({exc}): copy them before "
            "changing them (inputs_unchanged)"
        )
    return None


def run_checks(
    factory: OwnModel,
    world: World,
    *,
    seed: int = 5,
    personalised: bool = True,
    seeded: bool = True,
    reads_text: bool = False,
    skip: Sequence[str] = (),
) -> Outcome:
    """Fit a model from ``factory`` -- anything a benchmark's ``models=`` takes: an
    unfitted model (copied), a class or a function returning one (given ``seed=`` when
    it takes one) -- on ``world`` and run every check of :data:`CHECKS` but
    ``skip``, in order; a failure is recorded and the next check still runs. A fit
    that raises or does not return the model is the one result, ``"fit"``.

    ``personalised``: the scores depend on the support set (False for popularity);
    ``seeded``: another seed gives another model (False for closed-form ones);
    ``reads_text``: a new item is scored from its text vector; ``skip``: checks not
    to run (``"same_seed"`` fits the model twice more).
    """
    # the harness's own options, checked as its own: a seed of -1 came back as the
    # model's "fit" failing, and personalised="no" was taken as True
    seed = check_whole(seed, "run_checks: seed", 0)
    if seed >= 2**64 - 1:  # torch takes seeds below 2**64, and same_seed fits seed + 1
        raise ConfigError(f"run_checks: seed: must be below 2**64 - 1, got {seed}")
    for flag, value in (
        ("personalised", personalised),
        ("seeded", seeded),
        ("reads_text", reads_text),
    ):
        if not isinstance(value, bool | np.bool_):
            raise ConfigError(f"run_checks: {flag}: expected True or False, got {value!r:.40}")
    if isinstance(skip, str):  # one name, not its letters: "unknown check(s) ['_', 'a', ...]"
        skip = [skip]
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise ConfigError(f"skip: unknown check(s) {unknown}; expected some of {list(CHECKS)}")
    if set(skip) >= set(CHECKS):  # "0 of 0 checks passed", exit 0
        raise ConfigError("skip: every check skipped; nothing would be checked")
    check_world(world)
    label = getattr(factory, "__qualname__", type(factory).__name__)
    world = _guarded(world)  # the caller's world stays as it was, whatever the model does

    def make(s: int) -> ScoringModel:  # what a benchmark's models= takes, built alike
        return build(label, factory, s, field="factory")

    model = make(seed)
    if seeded and isinstance(factory, ScoringModel):
        seedless = (
            f"{label} was given built, so every seed is that one model: give its class or "
            f"a function of the seed (lambda seed: {label}(seed=seed)), or say it has no "
            "randomness (seeded=False, --unseeded)"
        )
    elif seeded and not takes_seed(factory):
        seedless = (
            f"{label} takes no seed, so every seed builds the same model: give it a seed "
            "parameter, or say it has no randomness (seeded=False, --unseeded)"
        )
    else:
        seedless = None
    given = world.data.copied()
    before = fingerprint_data(given)
    try:
        fitted = model.fit(given)
    except Exception as exc:  # the commonest first failure: reported as one, not a crash
        return Outcome(model.name, {"fit": f"raised {type(exc).__name__}: {exc}"})
    # fit's data, changed in place, was every later model's in a benchmark before each
    # fit had its own copy: metarec's own rows moved with no word. Said as the breach
    changed_by_fit = fingerprint_data(given) != before
    if fitted is not model:
        why = f"returned {type(fitted).__name__}; fit() must return the model itself (self)"
        return Outcome(model.name, {"fit": why})

    def run(name: str) -> None:
        if name == "scored_from_support":
            check_scored_from_support(fitted, world, personalised=personalised)
        elif name == "empty_support":
            check_empty_support(fitted, world)
        elif name == "new_items":
            check_new_items(fitted, world, reads_text=reads_text)
        elif name == "recommend_excludes_seen":
            check_recommend_excludes_seen(fitted, world)
        elif name == "any_k":
            check_any_k(fitted, world)
        elif name == "same_seed":
            if seedless is not None:
                raise ConformanceError(seedless)
            check_same_seed(make, fitted, world, seed, seeded=seeded)
        elif name == "query_never_read":
            check_query_never_read(fitted, world)
        elif name == "predict_tasks":
            check_predict_tasks(fitted, world)
        elif name == "bad_support_refused":
            check_bad_support_refused(fitted, world)
        else:
            check_inputs_unchanged(changed_by_fit)

    results: dict[str, str | None] = {}
    wrote_tasks: list[str] = []
    for name in CHECKS:
        if name in skip:
            continue
        try:
            run(name)
            results[name] = None
        except ConformanceError as exc:
            results[name] = str(exc)
        except Exception as exc:  # a crash is a failure of that check, not of the run
            wrote = _wrote_into(exc)
            results[name] = wrote or f"raised {type(exc).__name__}: {exc}"
            if wrote is not None:
                wrote_tasks.append(name)
    if wrote_tasks and "inputs_unchanged" in results and results["inputs_unchanged"] is None:
        results["inputs_unchanged"] = (
            f"wrote into a task's arrays (in {', '.join(wrote_tasks)}); a model must read "
            "the tasks it is given, not change them: copy an array before changing it"
        )
    return Outcome(fitted.name, results)


def check_inputs_unchanged(changed_by_fit: bool) -> None:
    """``fit`` left the data it was given as it was (the tasks' arrays are read-only,
    so writing into them fails the check that did it, and this one)."""
    if changed_by_fit:
        raise ConformanceError(
            "fit changed the TrainingData it was given (its interactions, validation, "
            "users, items or vectors): the caller's data is not the model's to change "
            "(a benchmark gives each model its own copy; a caller fitting several models "
            "on one data set may not); copy before changing (data.interactions.copy())"
        )


def check_model(
    factory: OwnModel,
    world: World,
    *,
    seed: int = 5,
    personalised: bool = True,
    seeded: bool = True,
    reads_text: bool = False,
    skip: Sequence[str] = (),
) -> list[str]:
    """:func:`run_checks` (same options), raising :class:`ConformanceError` that lists
    every failed check; the names of the checks run when all passed."""
    # the options spelt out, not **options: a type checker then catches personalized=
    outcome = run_checks(
        factory,
        world,
        seed=seed,
        personalised=personalised,
        seeded=seeded,
        reads_text=reads_text,
        skip=skip,
    )
    if outcome.failed:
        raise ConformanceError(
            f"{outcome.model}: {len(outcome.failed)} of {len(outcome.results)} checks failed:"
            + "".join(f"\n  {name}: {why}" for name, why in outcome.failed.items())
        )
    return list(outcome.results)

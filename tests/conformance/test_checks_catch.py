"""The conformance checks fail the models that break the contract, and say how.

Each broken model below breaks one property on purpose; :func:`check_model` must
name that check, and pass the same model without the fault.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from metarec.conformance import (
    CHECKS,
    ConformanceError,
    World,
    check_model,
    check_scored_from_support,
    make_world,
    run_checks,
)
from metarec.data import load_dataset
from metarec.data.tasks import Task
from metarec.errors import ConfigError, DataError, MetarecError
from metarec.inputs import check_new_items
from metarec.models.base import ScoringModel, TrainingData


class LikedCounts(ScoringModel):
    """Liked-item counts plus a small seeded jitter and each support item's rating
    spread to its neighbours by index: personalised, seeded, keeps the contract."""

    name = "liked-counts"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, data: TrainingData) -> LikedCounts:
        liked = data.interactions[data.interactions["rating"] >= 4]
        rows = liked["item_id"].map(data.catalogue.index).to_numpy(dtype=np.int64)
        counts = np.bincount(rows, minlength=data.n_items).astype(np.float64)
        jitter = np.random.default_rng(self.seed).random(data.n_items) * 1e-3
        self.scores = counts + jitter
        return self

    @property
    def n_items(self) -> int:
        return len(self.scores)

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = np.tile(self.scores, (len(tasks), 1))
        for row, task in enumerate(tasks):
            for item, rating in zip(task.support_items, task.support_ratings, strict=True):
                near = slice(max(int(item) - 5, 0), int(item) + 6)
                out[row, near] += float(rating) - 3.0
        return out


class ReadsQuery(LikedCounts):
    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = super().score_catalogue(tasks, users)
        for row, task in enumerate(tasks):
            out[row, task.query_items] += 100.0  # the answers, peeked at
        return out


class IgnoresSeed(LikedCounts):
    def fit(self, data: TrainingData) -> IgnoresSeed:
        self.seed = 0
        super().fit(data)
        return self


class RecommendsSeen(LikedCounts):
    def recommend(
        self,
        tasks: Sequence[Task],
        k: int = 10,
        users: pd.DataFrame | None = None,
        *,
        exclude_seen: bool = True,
    ) -> np.ndarray:
        return super().recommend(tasks, k, users, exclude_seen=False)  # the flag dropped


class IgnoresSupport(LikedCounts):
    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        return np.tile(self.scores, (len(tasks), 1))  # everyone alike, said personalised


class FirstUserFeatures(LikedCounts):
    """The first row's side features read for every row of a batch (users misaligned)."""

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = super().score_catalogue(tasks, users)
        if users is not None and len(users):
            out += float(users.iloc[0]["age"]) * np.linspace(0, 1, out.shape[1])[None, :]
        return out


class ReadsTaskUser(LikedCounts):
    """An unknown user scored partly from the training history at their task's index."""

    def fit(self, data: TrainingData) -> ReadsTaskUser:
        super().fit(data)
        self.train = data.ratings
        return self

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = super().score_catalogue(tasks, users)
        for row, task in enumerate(tasks):
            items, ratings, _ = self.train.history(task.user % len(self.train))
            out[row, items] += ratings - 3.0
        return out


class CentresByBatch(LikedCounts):
    """Rows after the first depend on the rest of the batch."""

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = super().score_catalogue(tasks, users)
        out[1:] -= out.mean(axis=0)
        return out


class FailsOnEmptyBatches(LikedCounts):
    """Fails where every user of a batch has no ratings yet (P2 at K = 0)."""

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        if len(tasks) > 1 and not any(len(t.support_items) for t in tasks):
            raise ValueError("zero-size array to reduction operation maximum")
        return super().score_catalogue(tasks, users)


class PositionalNewItems(LikedCounts):
    """Said to read text, but scores new items by their place, not their vectors."""

    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        check_new_items(self.name, items, vectors)
        self.scores = np.concatenate([self.scores, 1.0 + 0.5 * np.arange(len(items))])


class MovesOldItems(LikedCounts):
    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        check_new_items(self.name, items, vectors)
        # the new items in, and every old item's score shifted on the way
        self.scores = np.concatenate([self.scores * 2.0, np.zeros(len(items))])


class TakesAnyNewItems(LikedCounts):
    def add_items(self, items: pd.DataFrame, vectors: np.ndarray) -> None:
        # no look at what it is given: None a bare TypeError, a NaN vector taken
        self.scores = np.concatenate([self.scores, np.zeros(len(items))])


class TakesAnyK(LikedCounts):
    def recommend(
        self,
        tasks: Sequence[Task],
        k: int = 10,
        users: pd.DataFrame | None = None,
        *,
        exclude_seen: bool = True,
    ) -> np.ndarray:
        k = int(k) if isinstance(k, float) else k  # 2.5 read as 2, where it is refused
        return super().recommend(tasks, k, users, exclude_seen=exclude_seen)


class PredictsOff(LikedCounts):
    def predict_tasks(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> list[np.ndarray]:
        return [p + 0.5 for p in super().predict_tasks(tasks, users)]


class ReadsAnyTask(LikedCounts):
    def predict_tasks(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> list[np.ndarray]:
        # the base class's answer without its input checks (score_catalogue's own too,
        # which every ScoringModel gets): a bad task gives numbers
        scores = LikedCounts.score_catalogue.__wrapped__(self, tasks, users)  # type: ignore[attr-defined]
        return [
            row[np.clip(np.asarray(t.query_items, dtype=np.int64), 0, len(row) - 1)]
            for row, t in zip(scores, tasks, strict=True)
        ]


class NoisyScores(LikedCounts):
    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = super().score_catalogue(tasks, users)
        return out + np.random.default_rng().random(out.shape) * 1e-3  # unseeded


class Seedless(LikedCounts):
    def __init__(self) -> None:  # no seed reaches it: every fold's model is the same
        super().__init__(seed=0)


class ForgetsSelf(LikedCounts):
    def fit(self, data: TrainingData) -> ForgetsSelf:
        super().fit(data)
        return None  # type: ignore[return-value]  # the mistake on purpose


class NaNWhenNew(LikedCounts):
    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = super().score_catalogue(tasks, users)
        out[[len(t.support_items) == 0 for t in tasks]] = np.nan
        return out


class CentresInPlace(LikedCounts):
    """Centres the support ratings in the tasks it is given, as `w -= mean` does."""

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        for task in tasks:
            ratings = task.support_ratings
            ratings -= 3.0  # the caller's array, changed
        return super().score_catalogue(tasks, users)


class DropsUsersInPlace(LikedCounts):
    """Keeps only active users, in the data it was given."""

    def fit(self, data: TrainingData) -> DropsUsersInPlace:
        rows = data.interactions
        few = rows.groupby("user_id")["item_id"].transform("size") < 50
        rows.drop(index=rows.index[few.to_numpy()], inplace=True)
        return super().fit(data)


class ConstantWhenEmpty(LikedCounts):
    """No ranking at all for a user with no ratings (P2 at K = 0)."""

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = super().score_catalogue(tasks, users)
        out[[len(t.support_items) == 0 for t in tasks]] = 1.0
        return out


class ReversedTop(LikedCounts):
    """The best unseen items, worst of them first."""

    def recommend(
        self,
        tasks: Sequence[Task],
        k: int = 10,
        users: pd.DataFrame | None = None,
        *,
        exclude_seen: bool = True,
    ) -> np.ndarray:
        top = super().recommend(tasks, k, users, exclude_seen=exclude_seen)
        return np.ascontiguousarray(top[:, ::-1]) if exclude_seen else top


class ReversedWithSeen(ReversedTop):
    """Only the list with the seen items in it out of order."""

    def recommend(
        self,
        tasks: Sequence[Task],
        k: int = 10,
        users: pd.DataFrame | None = None,
        *,
        exclude_seen: bool = True,
    ) -> np.ndarray:
        top = LikedCounts.recommend(self, tasks, k, users, exclude_seen=exclude_seen)
        return top if exclude_seen else np.ascontiguousarray(top[:, ::-1])


class RatingsOffTheScale(LikedCounts):
    """Said to predict ratings, centred on the scale but spread far past its ends."""

    predicts_ratings = True

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = super().score_catalogue(tasks, users)
        centred = out - out.mean(axis=1, keepdims=True)
        return 3.0 + 20.0 * centred / centred.std(axis=1, keepdims=True)


class RefitsAlmostAlike(LikedCounts):
    """Refitted with the same seed, a thousandth apart: noise from an unseeded draw."""

    def fit(self, data: TrainingData) -> RefitsAlmostAlike:
        super().fit(data)
        self.scores = self.scores + np.random.default_rng().random(self.n_items) * 1e-3
        return self


class NaNWithoutFeatures(LikedCounts):
    """Scores nothing for a user whose side features are not given."""

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = super().score_catalogue(tasks, users)
        return out if users is not None else out * np.nan


def test_a_model_that_changes_what_it_is_given_is_named_for_it(world: World) -> None:
    # centring the support in place failed five checks, none of which named the cause,
    # and corrupted the world for every later call; dropping rows of fit's data passed
    # all nine, and in a benchmark changed the rows metarec's models fitted on
    tasks_before = [t.support_ratings.copy() for t in world.tasks]
    rows_before = len(world.data.interactions)
    with pytest.raises(ConformanceError) as caught:
        check_model(CentresInPlace, world)
    message = str(caught.value)
    # every error a user can cause is a MetarecError (the README's promise); a test
    # suite reads it as a failed assertion
    assert isinstance(caught.value, MetarecError) and isinstance(caught.value, AssertionError)
    assert "\n  inputs_unchanged: wrote into a task's arrays (in " in message
    assert "read-only" in message  # numpy's words, at the line that wrote
    for task, before in zip(world.tasks, tasks_before, strict=True):
        np.testing.assert_array_equal(task.support_ratings, before)
    with pytest.raises(ConformanceError) as caught:
        check_model(DropsUsersInPlace, world)
    message = str(caught.value)
    assert "1 of 10 checks failed" in message
    assert "inputs_unchanged: fit changed the TrainingData it was given" in message
    assert len(world.data.interactions) == rows_before
    # one check named alone is one check, not its letters
    assert check_model(LikedCounts, world, skip="same_seed") == [
        c for c in CHECKS if c != "same_seed"
    ]


def test_a_model_that_keeps_the_contract_passes_every_check(world: World) -> None:
    assert check_model(LikedCounts, world) == list(CHECKS)


@pytest.mark.parametrize(
    "broken, check, needle",
    [
        (ReadsQuery, "query_never_read", "the query sets (the answers) were read"),
        (IgnoresSeed, "same_seed", "a different seed gave the same model"),
        (RecommendsSeen, "recommend_excludes_seen", "recommended an item of its support set"),
        (NaNWhenNew, "empty_support", "scores hold NaN"),
        (
            IgnoresSupport,
            "scored_from_support",
            "opposite ratings or another user's items moved no score",
        ),
        (MovesOldItems, "new_items", "the old items' scores after adding items"),
        (TakesAnyNewItems, "new_items", "add_items with None as the items: TypeError"),
        (TakesAnyK, "any_k", "k=2.5"),
        (PredictsOff, "predict_tasks", "predict_tasks against score_catalogue"),
        (ReadsAnyTask, "bad_support_refused", "predict_tasks("),
        # each passed every check: the batch checks compared row 0 alone, and no check
        # varied the task's user index
        (FirstUserFeatures, "scored_from_support", "batch of three users"),
        (ReadsTaskUser, "scored_from_support", "under another user index"),
        (CentresByBatch, "scored_from_support", "the second of a batch alone"),
        (FailsOnEmptyBatches, "empty_support", "raised ValueError"),
        # each passed every check while that check's own test was switched off
        (ConstantWhenEmpty, "empty_support", "an empty support gave every item one score"),
        (ReversedTop, "recommend_excludes_seen", "the top 20 are not the best unseen"),
        (ReversedWithSeen, "recommend_excludes_seen", "exclude_seen=False is not the score"),
        (RatingsOffTheScale, "predict_tasks", "predicts_ratings, but predictions run"),
        (RefitsAlmostAlike, "same_seed", "refitted with the same seed"),
        (NaNWithoutFeatures, "scored_from_support", "no side features"),
    ],
)
def test_each_broken_model_fails_the_check_it_breaks(
    broken: type[LikedCounts], check: str, needle: str, world: World
) -> None:
    with pytest.raises(ConformanceError) as caught:
        check_model(broken, world)
    message = str(caught.value)
    assert message.startswith("liked-counts: ")
    assert f"\n  {check}: " in message and needle in message
    # and only that check: the message lists each failure on a line of its own
    assert check_model(broken, world, skip=[check]) == [c for c in CHECKS if c != check]


class CachesByUser(LikedCounts):
    """Keeps each row's scores by Task.user and support size: P2 asks one user again
    with more ratings, and a cache keyed on the user alone answers K = 3 with K = 1's."""

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        cache = self.__dict__.setdefault("cache", {})
        rows = []
        for task in tasks:
            key = (task.user, len(task.support_items))
            if key not in cache:
                cache[key] = super().score_catalogue([task], None)[0]
            rows.append(cache[key])
        return np.stack(rows)


def test_scores_kept_from_an_earlier_call_are_named_not_taken_for_no_personalisation(
    world: World,
) -> None:
    """Its stale rows were read as a model that does not personalise, and with that
    said (--not-personalised) and same_seed skipped it passed every check."""
    said = "keeps something of an earlier call (scores cached by Task.user?)"
    for personalised in (True, False):
        with pytest.raises(ConformanceError) as caught:
            check_model(CachesByUser, world, personalised=personalised, skip=["same_seed"])
        assert "\n  scored_from_support: " in str(caught.value) and said in str(caught.value)
        assert "personalised=False" not in str(caught.value)


class FeaturesElseSupport(LikedCounts):
    """Scores from the user's age where side features are given, else from the support:
    no state kept, so not to be blamed for any."""

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        if users is None or "age" not in users.columns:
            return super().score_catalogue(tasks, None)
        ages = pd.to_numeric(users["age"], errors="coerce").fillna(30).to_numpy(float)
        out = np.tile(self.scores, (len(tasks), 1))
        return out + np.outer(ages, np.linspace(0, 1, out.shape[1]))


def test_a_model_without_kept_state_is_not_blamed_for_it(world: World) -> None:
    assert "age" in world.users.columns  # else this would test nothing
    with pytest.raises(ConformanceError) as caught:
        check_model(FeaturesElseSupport, world, skip=["same_seed"])
    assert "personalised=False" in str(caught.value) and "earlier call" not in str(caught.value)
    passed = check_model(FeaturesElseSupport, world, personalised=False, skip=["same_seed"])
    assert "scored_from_support" in passed


def test_a_model_said_not_to_personalise_must_not(world: World) -> None:
    with pytest.raises(ConformanceError, match="said not to personalise moved scores"):
        check_model(LikedCounts, world, personalised=False, skip=["same_seed"])


def test_what_is_not_a_model_is_refused(world: World) -> None:
    with pytest.raises(ConfigError, match="gave an object of type str; expected a Scoring"):
        check_model(lambda seed: "a model", world)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match=r"skip: unknown check\(s\) \['same-seed'\]"):
        check_model(LikedCounts, world, skip=["same-seed"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seed": -1}, "run_checks: seed: must be a whole number >= 0, got -1"),
        ({"seed": 1.5}, "run_checks: seed: must be a whole number >= 0, got 1.5"),
        ({"seed": "5"}, "run_checks: seed: must be a whole number >= 0, got '5'"),
        ({"seed": 2**64 - 1}, f"run_checks: seed: must be below 2**64 - 1, got {2**64 - 1}"),
        ({"personalised": "no"}, "run_checks: personalised: expected True or False, got 'no'"),
        ({"seeded": 0}, "run_checks: seeded: expected True or False, got 0"),
        ({"reads_text": None}, "run_checks: reads_text: expected True or False, got None"),
    ],
)
def test_the_harness_options_are_checked_as_its_own(
    world: World, options: dict[str, Any], message: str
) -> None:
    # a seed of -1 was reported as the model's fit failing, and "no" was taken as True
    with pytest.raises(ConfigError) as caught:
        run_checks(LikedCounts, world, **options)
    assert str(caught.value) == message


def test_check_model_at_the_shell(
    shared_data: Path,
    tmp_path: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``metarec check-model``: each check's outcome, exit 1 when one fails, 0 when all
    pass, 2 for a factory it cannot import."""
    source = Path(__file__).read_text()
    # this file's models, importable from the folder the command runs in
    (tmp_path / "mine.py").write_text(source.split("def test_")[0])
    env = {**os.environ, "METAREC_CACHE": str(tmp_path / "cache")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "metarec.cli", "check-model", *args,
             "--data", str(shared_data), "--skip", "same_seed"],
            cwd=tmp_path, env=env, capture_output=True, text=True,
        )  # fmt: skip

    good = run("mine:LikedCounts")
    assert good.returncode == 0, good.stderr[-2000:]
    assert "liked-counts: 9 of 9 checks passed on ml-100k" in good.stdout
    # the other outcomes in this process, from the same folder: a process each paid
    # the seconds importing torch takes
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "mine", None)  # restored after: the test's alone
    del sys.modules["mine"]

    def here(*args: str) -> Any:
        return cli("check-model", *args, "--data", str(shared_data), "--skip", "same_seed")

    bad = here("mine:ReadsQuery")
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert "FAIL query_never_read" in bad.stdout and "8 of 9 checks passed" in bad.stdout
    assert "ok   scored_from_support" in bad.stdout
    # the commonest first mistake: one line and exit 1, not a traceback
    forgot = here("mine:ForgetsSelf")
    assert forgot.returncode == 1, forgot.stderr[-2000:]
    assert "FAIL fit" in forgot.stdout and "must return the model itself" in forgot.stdout
    assert "Traceback" not in forgot.stderr
    missing = here("mine:Missing")
    assert missing.returncode == 2 and "mine has no 'Missing'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_the_shells_check_names_are_the_librarys() -> None:
    from metarec.cli.conformance import _checks

    assert _checks().split(", ") == list(CHECKS)


def test_a_world_needs_three_held_out_users(shared_data: Path, tmp_path: Path) -> None:
    # the checks batch three users (an empty support among them): fewer crashed them
    ds = load_dataset("ml-100k", root=shared_data)
    with pytest.raises(ConfigError, match="make_world: n_test: must be a whole number >= 3, got 2"):
        make_world(ds, n_test=2)
    with pytest.raises(DataError, match=r"at least 3 more with 20 ratings each; .* 2 of the"):
        make_world(ds, n_train=911, n_validation=30, cache_dir=tmp_path)  # 943 users
    # a small catalogue's users are all taken to fit and tune on: "0 of the others" named
    # others there were none of
    with pytest.raises(DataError, match=r"it has 943 users, none beyond those$"):
        make_world(ds, n_train=930, n_validation=30, cache_dir=tmp_path)
    # a negative count sliced from the end: every held-out user was fitted on
    for arg, value in (("n_train", -5), ("n_validation", -1), ("seed", -1), ("n_train", "10")):
        with pytest.raises(ConfigError, match=f"make_world: {arg}: must be a whole number"):
            make_world(ds, **{arg: value})
    with pytest.raises(ConfigError, match="make_world: ds: expected a Dataset"):
        make_world(None)  # type: ignore[arg-type]


def test_on_clicks_a_personalised_model_is_told_by_another_users_items(
    shared_data: Path, tmp_path: Path
) -> None:
    """Where every rating is one value, "opposite opinions" are the same ratings: the
    check contrasts two users' items instead, and still catches a model that ignores
    the support."""
    ds = load_dataset("ml-100k", root=shared_data)
    clicks = dataclasses.replace(
        ds, interactions=ds.interactions.assign(rating=1.0), rating_range=(1.0, 1.0)
    )
    world = make_world(clicks, cache_dir=tmp_path)
    check_scored_from_support(LikedCounts().fit(world.data), world, personalised=True)
    with pytest.raises(ConformanceError, match="another user's items moved no score"):
        check_scored_from_support(IgnoresSupport().fit(world.data), world, personalised=True)


def test_what_a_benchmark_takes_the_checks_take(world: World) -> None:
    """A model given built, a class, a factory with or without ``seed``: as
    ``run_benchmark(models=...)`` takes them."""
    assert check_model(LikedCounts(seed=3), world, seeded=False) == list(CHECKS)
    assert check_model(LikedCounts, world) == list(CHECKS)
    with pytest.raises(ConformanceError, match="Seedless takes no seed, so every seed"):
        check_model(Seedless, world)
    # one given built does take a seed: the advice is to give its class or a function
    with pytest.raises(ConformanceError, match=r"LikedCounts was given built, .*lambda seed"):
        check_model(LikedCounts(seed=3), world)
    assert check_model(Seedless, world, seeded=False) == list(CHECKS)


def test_noise_at_scoring_time_is_not_called_reading_the_answers(world: World) -> None:
    with pytest.raises(ConformanceError) as caught:
        check_model(NoisyScores, world, skip=["same_seed"])
    message = str(caught.value)
    assert "query_never_read: the same tasks scored twice" in message
    assert "not deterministic" in message and "were read" not in message
    # nor a history looked up by the task's user index, which the first check said
    assert "scored_from_support: the same user scored twice" in message
    assert "under another user index" not in message


class ZScored(LikedCounts):
    """Z-scores the support's ratings, as many do: NaN for one rating, or one value."""

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = np.tile(self.scores, (len(tasks), 1))
        for row, task in enumerate(tasks):
            if len(task.support_ratings):
                r = task.support_ratings.astype(np.float64)
                z = (r - r.mean()) / r.std()
                for item, w in zip(task.support_items, z, strict=True):
                    out[row, max(int(item) - 5, 0) : int(item) + 6] += w
        return out


class ItemsNotRatings(LikedCounts):
    """Personalised by which items were rated, not how: a content profile's way."""

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = np.tile(self.scores, (len(tasks), 1))
        for row, task in enumerate(tasks):
            for item in task.support_items:
                out[row, max(int(item) - 5, 0) : int(item) + 6] += 1.0
        return out


def test_a_support_of_one_rating_or_one_value_is_scored(world: World) -> None:
    # passed every check (ten ratings each time), then scored NaN in a P2 benchmark at
    # K = 1; a support of one rating value does the same
    with pytest.raises(ConformanceError) as caught:
        check_model(ZScored, world, skip=["same_seed"])
    assert "empty_support: a support of one rating: scores hold NaN" in str(caught.value)


def test_a_model_personalised_by_the_items_rated_is_personalised(world: World) -> None:
    # told "opposite ratings moved no score (a model not meant to personalise)"
    assert check_model(ItemsNotRatings, world, skip=["same_seed"]) == [
        c for c in CHECKS if c != "same_seed"
    ]
    with pytest.raises(ConformanceError, match="said not to personalise moved scores"):
        check_model(ItemsNotRatings, world, personalised=False, skip=["same_seed"])


class CheckedNowhere:
    """A mixin's score_catalogue: the model class after it in the bases never wrapped
    it in the input checks a model's own gets."""

    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        return LikedCounts.score_catalogue.__wrapped__(self, tasks, users)  # type: ignore[attr-defined]


class MixedIn(CheckedNowhere, LikedCounts):
    pass


def test_a_mixins_score_catalogue_checks_its_tasks(world: World) -> None:
    model = MixedIn(seed=0).fit(world.data.copied())
    with pytest.raises(DataError, match=r"support item -1 is not in \[0, "):
        model.score_catalogue([Task(0, np.array([-1]), np.array([4.0], dtype=np.float32),
                                    np.array([], dtype=np.int64), np.array([]))])  # fmt: skip


class NaNItem(LikedCounts):
    def score_catalogue(
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> np.ndarray:
        out = super().score_catalogue(tasks, users)
        out[:, 3] = np.nan  # deterministic: the same NaN at every call
        return out


class ListScores(LikedCounts):
    def score_catalogue(  # type: ignore[override]  # the mistake on purpose
        self, tasks: Sequence[Task], users: pd.DataFrame | None = None
    ) -> list[list[float]]:
        return super().score_catalogue(tasks, users).tolist()


def test_nan_scores_and_a_list_are_named_as_what_they_are(world: World) -> None:
    # NaN != NaN read as "scores differ by up to 0 ... not deterministic", and a list
    # met the checks' arithmetic as a raw TypeError
    with pytest.raises(ConformanceError) as caught:
        check_model(NaNItem, world)
    message = str(caught.value)
    assert "differ by up to" not in message and "not deterministic" not in message
    assert "\n  same_seed: refitted with the same seed: scores hold NaN or infinity" in message
    with pytest.raises(ConformanceError) as caught:
        check_model(ListScores, world)
    assert "scored_from_support: one user: score_catalogue returned list, expected a numpy " in (
        str(caught.value)
    )
    assert "TypeError" not in str(caught.value)


def test_a_model_said_to_read_text_must_take_new_items(world: World) -> None:
    # --reads-text passed a model that refuses new items: no text was ever read
    with pytest.raises(ConformanceError, match=r"new_items: said to score new items from their "
                       r"text \(reads_text, --reads-text\), but refuses new items"):  # fmt: skip
        check_model(LikedCounts, world, reads_text=True)


def test_a_model_said_to_read_text_must_score_new_items_by_it(world: World) -> None:
    # scored by their place, two new items differed, and that passed for reading text
    with pytest.raises(ConformanceError, match=r"new_items: two new items added in the "
                       r"other order"):  # fmt: skip
        check_model(PositionalNewItems, world, reads_text=True)


def test_nothing_to_check_is_refused(world: World) -> None:
    # "0 of 0 checks passed", and on a world of empty supports a model that recommended
    # the items it was given passed recommend_excludes_seen
    with pytest.raises(ConfigError, match="skip: every check skipped"):
        check_model(LikedCounts, world, skip=list(CHECKS))
    bare = replace(world, tasks=[replace(t, support_items=t.support_items[:0],
                                         support_ratings=t.support_ratings[:0])
                                 for t in world.tasks])  # fmt: skip
    with pytest.raises(ConfigError, match="world: task 0 has no support or no query ratings"):
        check_model(RecommendsSeen, bare)

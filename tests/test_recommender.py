"""The fitted recommender on real MovieLens data: adapt, recommend, grow, save, load."""

from __future__ import annotations

import json
import os
import re
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.config import TrainConfig
from metarec.data import load_dataset
from metarec.data.tasks import Task
from metarec.errors import ConfigError, DataError, ModelError, UnknownItemError, UnsupportedError
from metarec.pipeline import encode_catalogue, fit_recommender, split_users
from metarec.recommender import Recommender


@pytest.fixture(scope="module")
def fitted(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    ds = load_dataset("ml-100k", root=shared_data)
    cache = tmp_path_factory.mktemp("emb")
    catalogue = encode_catalogue(ds.items, "tfidf", cache_dir=cache, progress=False)
    cfg = TrainConfig(epochs=2, max_train_users=150, inner_steps=2, seed=3, device="cpu")
    train, val = split_users(ds.interactions, 0.1, seed=3)
    rec, _ = fit_recommender(catalogue, train, cfg, users=ds.users, validation=val, progress=False)
    return rec


def test_training_leaves_the_callers_random_state_as_it_was(
    shared_data: Path, tmp_path: Path
) -> None:
    # it was left at the last epoch's seed: a caller's torch.manual_seed(11) and (22)
    # drew the same numbers after a training
    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(ds.items, "tfidf", cache_dir=tmp_path, progress=False)
    cfg = TrainConfig(epochs=1, max_train_users=20, inner_steps=1, seed=3, device="cpu")
    train = ds.interactions[ds.interactions["user_id"].isin(ds.interactions["user_id"][:400])]
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    fit_recommender(catalogue, train, cfg, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_adapt_by_title_and_id_recommends_unseen(fitted: Recommender) -> None:
    user = fitted.adapt([("Toy Story (1995)", 5), ("2", 1.0), ("heat (1995)", 4)])
    assert user.n_ratings == 3
    top = fitted.recommend(user, k=10)
    assert list(top.columns) == ["rank", "item_id", "title", "score"]
    assert len(top) == 10 and top["score"].is_monotonic_decreasing
    assert not set(top["item_id"]) & {"1", "2", fitted.items.item_id[user.seen[2]]}
    with_seen = fitted.recommend(user, k=fitted.n_items, exclude_seen=False)
    assert len(with_seen) == fitted.n_items
    # the whole unseen catalogue: the rated items rarely reach a top 10, so the check
    # above passed with exclude_seen switched off
    rated = set(fitted.items.item_id.iloc[list(user.seen)])
    unseen = fitted.recommend(user, k=fitted.n_items)
    assert len(unseen) == fitted.n_items - 3 and not set(unseen["item_id"]) & rated
    # printed in a notebook: what it is, not every parameter tensor (1,136 characters)
    shown = repr(user)
    assert shown.startswith("UserState(n_ratings=3, seen=3 items, params=") and len(shown) < 120


def test_ratings_change_the_list(fitted: Recommender) -> None:
    a = fitted.recommend(fitted.adapt([("Toy Story (1995)", 5), ("Aladdin (1992)", 5)]), k=20)
    b = fitted.recommend(fitted.adapt([("Toy Story (1995)", 1), ("Aladdin (1992)", 1)]), k=20)
    assert list(a["item_id"]) != list(b["item_id"])


def test_zero_shot_is_the_prior(fitted: Recommender) -> None:
    user = fitted.adapt([])
    assert user.n_ratings == 0 and len(fitted.recommend(user, k=5)) == 5
    init = fitted.learner.fast_init()
    for name, value in user.params.items():
        assert torch.equal(value[0], init[name].detach())
    # the user's own copy: changing it in place leaves the model (and a copy) as they were
    import copy

    kept = copy.deepcopy(user)  # refused while the state was the model's own tensors
    scores = np.array(fitted.score(user), copy=True)
    before = {k: v.detach().clone() for k, v in fitted.learner.fast_init().items()}
    for value in user.params.values():
        assert not value.requires_grad
        value.add_(1.0)
    after = fitted.learner.fast_init()
    assert all(torch.equal(after[k].detach(), v) for k, v in before.items())
    np.testing.assert_array_equal(fitted.score(kept), scores)
    np.testing.assert_array_equal(fitted.score(fitted.adapt([])), scores)


def test_unknown_title_lists_close_matches(fitted: Recommender) -> None:
    with pytest.raises(UnknownItemError) as err:
        fitted.adapt([("Toy Stori (1995)", 5)])
    assert "Toy Story (1995)" in str(err.value)


@pytest.mark.parametrize(
    "history, needle",
    [
        ([("Toy Story (1995)", 7)], "outside [1, 5]"),
        ([("Toy Story (1995)", "x")], "not a number"),
        # the service refuses "5" as a rating; so does Python, for the same reason
        ([("Toy Story (1995)", "5")], "history entry 0 ('Toy Story (1995)'): rating '5' (text)"),
        ([("Toy Story (1995)",)], "expected (item, rating)"),
        ([("Toy Story (1995)", float("nan"))], "rating nan is not a number"),
        ("Toy Story (1995)", "expected (item, rating) pairs"),  # not read letter by letter
        # items without ratings: a two-letter id was read as item "5" rated "0", text
        (["50"], "history entry 0: '50' is an item without a rating; give ('50', RATING)"),
        ([50, ("1", 4)], "history entry 0: 50 is an item without a rating"),
        # shown as a user would write them, not as numpy's reprs
        ([np.int64(50)], "history entry 0: 50 is an item without a rating; give (50, RATING)"),
        ([np.str_("50")], "history entry 0: '50' is an item without a rating"),
        ([True], "history entry 0: expected (item, rating), got True"),
        # looked up as the titles 'None', 'True', 'nan': "unknown item 'None'; close
        # matches: 'Nixon (1995)'"
        ([(None, 5)], "item None: an item is named by its id or title (text or a number)"),
        ([(True, 5)], "item True: an item is named by its id or title"),
        ([(float("nan"), 5)], "item nan: an item is named by its id or title"),
        ([(b"1", 5)], "not bytes"),
    ],
)
def test_bad_history_is_rejected(fitted: Recommender, history: list, needle: str) -> None:
    with pytest.raises(DataError, match=re.escape(needle)):
        fitted.adapt(history)


def test_a_bad_history_in_a_batch_is_named_by_its_place(fitted: Recommender) -> None:
    with pytest.raises(DataError, match=re.escape("histories[1] entry 0 ('50'): rating 44 is")):
        fitted.adapt_many([[("1", 5)], [("50", 44)]])
    # adapt checks its one history before adapting: a generator is read once for both
    pairs = [("Toy Story (1995)", 5), ("Heat (1995)", 2)]
    np.testing.assert_array_equal(
        fitted.score(fitted.adapt(p for p in pairs)), fitted.score(fitted.adapt(pairs))
    )
    # a Series of numbers is ratings by item, or a rating column given by mistake (its
    # labels then row numbers): said, not guessed; a Series of pairs is pairs
    for values in (pd.Series(dict(pairs)), pd.Series(dict(pairs), dtype=object),
                   pd.Series([5, 4], dtype="category"), pd.Series([5, None], dtype=object),
                   pd.Series(["1", "2"])):  # fmt: skip
        with pytest.raises(DataError, match=r"history: a Series is read as \(item, rating\) "):
            fitted.adapt(values)
    np.testing.assert_array_equal(
        fitted.score(fitted.adapt(pd.Series(pairs))), fitted.score(fitted.adapt(pairs))
    )


@pytest.mark.parametrize("k", [0, -1, "5", 2.5, True])
def test_bad_k_is_rejected(fitted: Recommender, k: object) -> None:
    user = fitted.adapt([("Toy Story (1995)", 5)])
    with pytest.raises(ConfigError, match="k: must be a whole number > 0"):
        fitted.recommend(user, k=k)  # type: ignore[arg-type]


@pytest.mark.parametrize("steps", [-1, 2.5, "3", True, 1001, 10**6])
def test_bad_steps_are_rejected(fitted: Recommender, steps: object) -> None:
    # 10**6 steps used to run on for minutes without a word
    with pytest.raises(ConfigError, match=r"steps: must be a whole number in \[0, 1000\]"):
        fitted.adapt([("Toy Story (1995)", 5)], steps=steps)  # type: ignore[arg-type]


def test_what_is_not_this_recommenders_user_is_named(fitted: Recommender) -> None:
    with pytest.raises(DataError, match=r"expected the UserState .* got list"):
        fitted.recommend([("Toy Story (1995)", 5)])  # a history where a state belongs
    other = fitted.adapt([("Toy Story (1995)", 5)])
    other.params = {k: v[..., :-1] for k, v in other.params.items()}  # another model's width
    with pytest.raises(DataError, match="adapted by another model"):
        fitted.score(other)
    # feature codes that fit no embedding row were a raw IndexError from torch
    from metarec.recommender import UserState

    good = fitted.adapt([("Toy Story (1995)", 5)], user_features={"age": 25})
    fitted.score(good)
    n = len(fitted.features.columns)
    assert n, "the fixture's run uses user features"
    for codes in (torch.full((n,), 99), torch.tensor([1]), torch.zeros(n)):
        with pytest.raises(DataError, match="adapted by another model"):
            fitted.score(UserState(good.params, good.seen, codes))


def test_a_feature_the_model_has_no_column_for_is_warned_about(fitted: Recommender) -> None:
    # "agee" was read as no feature at all without a word (the HTTP API refuses it)
    with pytest.warns(
        UserWarning, match=r"user_features: 'agee' not a feature of this model, ignored \(it reads "
    ):
        typo = fitted.adapt([("1", 5)], user_features={"agee": 34})
    plain = fitted.adapt([("1", 5)])
    np.testing.assert_allclose(fitted.score(typo), fitted.score(plain))
    # a key of 100,000 characters is named by its start, not echoed whole
    with pytest.warns(UserWarning) as said:
        fitted.adapt([("1", 5)], user_features={"x" * 100_000: 1})
    assert len(str(said[0].message)) < 300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.adapt([("1", 5)], user_features={"user_id": "u1", "age": 34})  # a row's own id
        # stored profiles may hold more than one model reads: adapt_many takes them as is
        fitted.adapt_many([[("1", 5)], [("2", 4)]], [{}, {"zip_code": "10001", "age": 30}])
    # a model trained without user features reads none: a profile was ignored in silence
    from metarec.data.features import UserFeatureEncoder
    from metarec.inputs import warn_unused_features

    with pytest.warns(UserWarning, match=r"'age' not a .*trained without user features"):
        warn_unused_features(UserFeatureEncoder(), {"age": 34}, "user_features")


def test_user_features_the_model_cannot_read_are_named(
    fitted: Recommender, shared_data: Path
) -> None:
    # each was read as "unknown" without a word: text that is no number where the model
    # bins numbers, a list where one value belongs
    from metarec.data.tasks import Task

    task = Task.support_only([0], np.array([5.0], np.float32))
    for features, needle in [
        ({"age": "twenty"}, "age: must be a number or left empty (None) (got 'twenty')"),
        ({"gender": ["F"]}, "gender: must be a number, a string or left empty (None)"),
        # True was read as age 1, infinity as the top age bin
        ({"age": True}, "age: must be a number or left empty (None) (got True)"),
        ({"age": float("inf")}, "age: must be a finite number or left empty (None) (got inf)"),
        ({"age": "-inf"}, "age: must be a finite number or left empty (None) (got '-inf')"),
    ]:
        with pytest.raises(DataError, match=re.escape(f"user_features: {needle}")):
            fitted.adapt([("1", 5)], user_features=features)
        # the other paths coded each "unknown" without a word: the same check refuses
        # it, naming the row
        with pytest.raises(DataError, match=re.escape(f"user_features[1]: {needle}")):
            fitted.adapt_many([[("1", 5)], [("2", 4)]], [{}, features])
        frame = pd.DataFrame({"user_id": ["u"], **{k: [v] for k, v in features.items()}})
        for score, where in [
            (fitted.predict_tasks, "users"),
            (fitted.score_catalogue, "users"),
        ]:
            row_needle = f"{where}: row 0 (user_id 'u'): {needle}"
            with pytest.raises(DataError, match=re.escape(row_needle)):
                score([task], frame)
    # what stays readable: a row of the users table as it is (its id, ages as text, as
    # ml-100k stores them), an unseen category, missing values of every kind, numpy types
    row = load_dataset("ml-100k", root=shared_data).users.iloc[0].to_dict()
    assert isinstance(row["age"], str) and "user_id" in row
    readable = [
        row,
        {"gender": "X"},
        {"age": None},
        {"age": float("nan")},
        {"age": pd.NA},
        {"occupation": pd.NA},
        {"gender": np.True_},
        {"age": np.int64(30)},
        {},
    ]
    for features in readable:  # fmt: skip
        state = fitted.adapt([("1", 5)], user_features=features)
        alone = fitted.adapt_many([[("1", 5)]], [features])[0]
        assert torch.equal(state.user_features, alone.user_features)
    # the users table itself (ages as text, an unseen category, a user without a row)
    # reads as it did, and a task's codes follow its row, whatever the user_id
    users = load_dataset("ml-100k", root=shared_data).users.head(3).copy()
    users.loc[users.index[1], "occupation"] = "astronaut"
    users.loc[users.index[2], ["age", "gender", "occupation"]] = pd.NA
    users["user_id"] = "same"
    rows = [users.iloc[i].to_dict() for i in range(3)]
    codes = fitted._codes(users, 3, "users").cpu().numpy()
    expected = np.stack([fitted.features.encode_one(r) for r in rows])
    np.testing.assert_array_equal(codes, expected)
    assert codes[0].all() and codes[1, 2] == 0 and not codes[2].any()
    twice = pd.DataFrame([["1", 5, 3]], columns=["item_id", "rating", "rating"])
    with pytest.raises(DataError, match="history has two columns named 'rating'; keep one"):
        fitted.adapt(twice)


def test_a_string_of_items_is_not_read_letter_by_letter(fitted: Recommender) -> None:
    user = fitted.adapt([("Toy Story (1995)", 5)])
    with pytest.raises(DataError, match=r"candidates: expected a list .* got the string"):
        fitted.recommend(user, candidates="Heat (1995)")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="items: expected a list"):
        fitted.score(user, "Heat (1995)")  # type: ignore[arg-type]
    # any iterable of histories adapts, a generator included
    states = fitted.adapt_many(h for h in [[("Heat (1995)", 4)], []])
    assert [s.n_ratings for s in states] == [1, 0]


def test_a_run_saved_with_values_a_later_rule_refuses_still_loads(
    fitted: Recommender, tmp_path: Path
) -> None:
    # patience 0 and Reptile with 0 inner steps trained before they were refused
    run = fitted.save(tmp_path / "run")
    manifest = json.loads((run / "recommender.json").read_text())
    steps_before = fitted.cfg.steps_at_eval
    for legacy in ({"patience": 0}, {"algorithm": "reptile", "inner_steps": 0}):
        config = manifest["config"] | legacy
        (run / "recommender.json").write_text(json.dumps(manifest | {"config": config}))
        loaded = Recommender.load(run)
        assert loaded.cfg.patience >= 1
        if "inner_steps" in legacy:  # what it trained with (1) and served with (0)
            assert (loaded.cfg.inner_steps, loaded.cfg.steps_at_eval) == (1, 0)
        else:
            assert loaded.cfg.steps_at_eval == steps_before
    with pytest.raises(ConfigError, match="patience: must be > 0"):
        TrainConfig.from_dict({"patience": 0})  # a config to train with is still refused


def test_save_refuses_before_writing_anything(fitted: Recommender, tmp_path: Path) -> None:
    run = fitted.save(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    fitted.metadata["tags"] = {"a set"}  # not JSON
    try:
        with pytest.raises(ModelError, match="not saved: metadata must be JSON"):
            fitted.save(run)
    finally:
        del fitted.metadata["tags"]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    fitted.metadata["np"] = np.float32(0.5)  # numpy numbers are numbers
    try:
        fitted.save(tmp_path / "np-run")
    finally:
        del fitted.metadata["np"]
    fitted.metadata["score"] = float("nan")  # json writes NaN, which is not JSON
    try:
        with pytest.raises(ModelError, match="not saved: metadata must be JSON"):
            fitted.save(run)
    finally:
        del fitted.metadata["score"]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    (tmp_path / "afile").write_text("")
    with pytest.raises(ModelError, match="is a file; save needs a run folder"):
        fitted.save(tmp_path / "afile")
    with pytest.raises(ModelError, match=r"afile is a file; save needs a run folder"):
        fitted.save(tmp_path / "afile" / "run")  # a raw NotADirectoryError before
    with pytest.raises(DataError, match="save: expected a folder path, got ''"):
        fitted.save("")  # the working folder, silently, before
    # where its lock cannot be made (a read-only place, here a folder in its way): a
    # bare OSError named the hidden lock file
    (tmp_path / ".locked.lock").mkdir()
    with pytest.raises(ModelError, match=r"locked: not saved: Is a directory"):
        fitted.save(tmp_path / "locked")


def test_save_leaves_no_other_models_records_and_no_run_where_it_is_not_read(
    fitted: Recommender, tmp_path: Path
) -> None:
    from metarec.errors import BusyError
    from metarec.locks import exclusive

    run = fitted.save(tmp_path / "run")
    records = {"split.json": "{}", "trained-users.json": '{"users": []}', "metrics.json": "{}"}
    for name, text in records.items():
        (run / name).write_text(text)
    # the same model saved back (loaded, changed, saved): its records stay
    Recommender.load(run).save(run)
    assert all((run / name).exists() for name in records)
    # another model: evaluate judged it on a split it had trained on
    other = Recommender.load(run)
    other.metadata["dataset"] = "another"
    with pytest.warns(UserWarning, match=r"removed metrics\.json, split\.json, trained-users\."):
        other.save(run)
    assert not any((run / name).exists() for name in records)
    # an ensemble's folder, which every load opens as the ensemble
    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / "ensemble.json").write_text("{}")
    with pytest.raises(ModelError, match="holds an ensemble; not writing a run into it"):
        fitted.save(tmp_path / "ens")
    assert sorted(p.name for p in (tmp_path / "ens").iterdir()) == ["ensemble.json"]
    # a training run writing there holds the folder
    with exclusive(tmp_path / "busy", "wait"), pytest.raises(BusyError):
        fitted.save(tmp_path / "busy")
    assert not (tmp_path / "busy" / "recommender.json").exists()


def test_wrong_kinds_of_arguments_are_named(fitted: Recommender, tmp_path: Path) -> None:
    user = fitted.adapt([("Toy Story (1995)", 5)])
    for call, needle in [
        (lambda: fitted.score(user, 5), "items: expected a list of item ids or titles, got 5"),
        (lambda: fitted.recommend(user, candidates=5), "candidates: expected a list"),
        # its column names were read as item ids ("unknown item 'item_id'")
        (
            lambda: fitted.recommend(user, candidates=pd.DataFrame({"item_id": ["1"]})),
            r"candidates: .* got a DataFrame; give one of its columns",
        ),
        (lambda: fitted.adapt_many(5), "adapt_many: expected a list of histories"),
        (lambda: fitted.adapt_many([[]], {"age": 25}), "expected one mapping .* a user"),
        (lambda: fitted.adapt([], user_features="x"), "user_features: expected a mapping"),
    ]:
        with pytest.raises(DataError, match=needle):
            call()  # type: ignore[arg-type]
    rec = Recommender.load(fitted.save(tmp_path / "run"))  # items are added to a copy
    width = rec.model.tower.item_vectors.shape[1]
    new = pd.DataFrame({"item_id": ["v1"], "title": ["V"]})
    for vectors, needle in [
        ([["a"] * width], "vectors: expected numbers"),
        (np.full((1, width), 1e30), r"the vector of item 'v1' has length \S+, beyond 100"),
        (np.full((1, width), np.nan), "the vector of item 'v1' holds NaN"),
    ]:
        with pytest.raises(DataError, match=needle):
            rec.add_items(new, vectors=vectors)
    assert "v1" not in rec.item_index
    # a text column of numbers is text
    assert rec.add_items(pd.DataFrame({"item_id": ["q9"], "title": ["G5"], "text": [5]})) == 1


def test_predict_tasks_names_its_users_as_every_model_does(
    fitted: Recommender, shared_data: Path
) -> None:
    # users= in score_catalogue and every peer, user_features= here: a TypeError either way
    users = load_dataset("ml-100k", root=shared_data).users.head(2)
    task = Task(0, np.array([0, 5]), np.array([4.0, 2.0]), np.array([9]), np.array([3.0]))
    tasks = [task, task]
    named = fitted.predict_tasks(tasks, users=users)
    np.testing.assert_array_equal(named[1], fitted.predict_tasks(tasks, users)[1])
    with pytest.warns(DeprecationWarning, match="user_features= is now users="):
        old = fitted.predict_tasks(tasks, user_features=users)
    np.testing.assert_array_equal(old[0], named[0])
    with pytest.raises(DataError, match="give users= alone"):
        fitted.predict_tasks(tasks, users, user_features=users)


def test_candidates_filter(fitted: Recommender) -> None:
    user = fitted.adapt([("Toy Story (1995)", 5)])
    top = fitted.recommend(user, k=5, candidates=["10", "11", "12"])
    assert set(top["item_id"]) == {"10", "11", "12"}


def test_a_list_left_empty_by_what_the_user_rated_is_said(fitted: Recommender) -> None:
    user = fitted.adapt([("1", 5), ("2", 3)])
    with pytest.warns(UserWarning, match="the user has rated every candidate, so none is left"):
        assert fitted.recommend(user, 5, candidates=["1", "2"]).empty
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(fitted.recommend(user, 5, candidates=["1", "2"], exclude_seen=False)) == 2
        assert len(fitted.recommend(user, 5, candidates=["1", "2", "3"])) == 1
        assert fitted.recommend(user, 5, candidates=[]).empty  # none asked for: no warning


def test_chosen_items_are_scored_without_the_rest_of_the_catalogue(
    fitted: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    # score(user, items) and recommend(candidates=) scored all 500,000 items of a large
    # catalogue to read three of them (200 ms)
    scorer = fitted.learner.scorer
    scored: list[int] = []
    direct = scorer._catalogue_direct

    def counting(fast: Any, user_features: Any, side: Any) -> Any:
        scored.append(int(side.h.shape[0]))
        return direct(fast, user_features, side)

    monkeypatch.setattr(scorer, "_catalogue_direct", counting)
    user = fitted.adapt([("Toy Story (1995)", 5), ("Heat (1995)", 2)])
    whole = fitted.score(user)
    chosen = ["10", "Fargo (1996)", "12"]
    rows = [fitted.resolve(c) for c in chosen]
    np.testing.assert_allclose(fitted.score(user, chosen), whole[rows], rtol=1e-5, atol=1e-6)
    top = fitted.recommend(user, k=2, candidates=chosen)
    assert scored == [fitted.n_items, 3, 3]
    best = sorted(rows, key=lambda r: -whole[r])[:2]
    assert top["item_id"].tolist() == fitted.items["item_id"].to_numpy()[best].tolist()


def test_top_among_candidates_is_the_catalogue_ranking_cut_to_them(
    fitted: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ties, -inf, repeated and seen candidates, k past their number: the same order as
    # the catalogue-wide ranking (best score, then the catalogue's tie order)
    from metarec.models.base import tie_order

    rng = np.random.default_rng(0)
    crafted = rng.integers(0, 4, fitted.n_items).astype(np.float64)
    crafted[rng.choice(fitted.n_items, 50, replace=False)] = -np.inf
    monkeypatch.setattr(
        fitted,
        "score",
        lambda _, items=None: (
            crafted[[fitted.resolve(i) for i in items]] if items is not None else crafted.copy()
        ),
    )
    place = {int(item): n for n, item in enumerate(tie_order(fitted.n_items))}
    user = fitted.adapt([("1", 5), ("2", 1)])
    ids = fitted.items["item_id"].to_numpy()
    for trial in range(20):
        rows = rng.choice(fitted.n_items, int(rng.integers(1, 300)), replace=True).tolist()
        rows += [0, 1]  # seen
        k = int(rng.integers(1, 400))
        for exclude_seen in (True, False):
            allowed = sorted({r for r in rows if not (exclude_seen and r in (0, 1))})
            expected = sorted(allowed, key=lambda r: (-crafted[r], place[r]))[:k]
            top, scores = fitted.top(user, k, exclude_seen=exclude_seen, candidates=ids[rows])
            assert top.tolist() == expected, (trial, exclude_seen)
            np.testing.assert_array_equal(scores, crafted[expected])


def test_predict_tasks_matches_single_user_scores(fitted: Recommender) -> None:
    from metarec.data.tasks import Task

    items = np.array([0, 5, 9]), np.array([4.0, 2.0, 5.0], dtype=np.float32)
    query = np.array([20, 30, 40])
    batch = fitted.predict_tasks([Task(0, *items, query, np.zeros(3, np.float32))] * 3)
    single = fitted.score(fitted.adapt(list(zip(["1", "6", "10"], items[1], strict=True))))
    np.testing.assert_allclose(batch[1], single[query], rtol=1e-4, atol=1e-5)


def test_save_load_round_trip_and_add_items(fitted: Recommender, tmp_path: Path) -> None:
    run = fitted.save(tmp_path / "run")
    assert {p.name for p in run.iterdir()} >= {
        "model.safetensors",
        "recommender.json",
        "items.json",
    }
    assert not list(run.glob("*.tmp")) and not list(run.glob("*.pkl"))
    loaded = Recommender.load(run)
    history = [("Toy Story (1995)", 5), ("Fargo (1996)", 4)]
    np.testing.assert_allclose(
        loaded.score(loaded.adapt(history)),
        fitted.score(fitted.adapt(history)),
        rtol=1e-5,
        atol=1e-6,
    )
    new = pd.DataFrame(
        {
            "item_id": ["new-1"],
            "title": ["Toy Story 4"],
            "year": [2019],
            "genres": ["Animation|Children's|Comedy"],
        }
    )
    user = loaded.adapt([("Toy Story (1995)", 5)])
    loaded.recommend(user, k=3)  # display titles are made, then the catalogue grows
    assert loaded.add_items(new) == 1
    assert np.isfinite(loaded.score(user, ["new-1"])).all()
    listed = loaded.recommend(user, k=loaded.n_items).set_index("item_id")["title"]
    assert listed["new-1"] == "Toy Story 4 (2019)"
    with pytest.raises(DataError, match="already in the catalogue"):
        loaded.add_items(new)
    loaded.save(tmp_path / "run2")
    again = Recommender.load(tmp_path / "run2")
    assert again.n_items == fitted.n_items + 1 and again.resolve("Toy Story 4") == fitted.n_items


def test_an_added_items_text_is_encoded_once_across_loads(
    fitted: Recommender, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service adds its stored items again at every start; each text went
    through the encoder every time (minutes for a few thousand items)."""
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    run = fitted.save(tmp_path / "run")
    new = pd.DataFrame({"item_id": ["n1", "n2"], "title": ["Night Train", "Garden Ghosts"]})
    first = Recommender.load(run)
    first.add_items(new)
    again = Recommender.load(run)
    encoded: list[str] = []
    real = type(again.encoder()).encode

    def counting(self: Any, texts: Any, **kw: Any) -> Any:
        encoded.extend(texts)
        return real(self, texts, **kw)

    monkeypatch.setattr(type(again.encoder()), "encode", counting)
    again.add_items(new)
    assert encoded == []
    np.testing.assert_array_equal(
        again.model.tower.item_vectors[-2:].numpy(), first.model.tower.item_vectors[-2:].numpy()
    )


def test_median_ratings_are_scale_levels_and_survive_save(
    fitted: Recommender, tmp_path: Path
) -> None:
    # a rating run with validation users gets median cuts on the training scale
    assert fitted.cutpoints is not None and fitted.cutpoints.levels == (1.0, 2.0, 3.0, 4.0, 5.0)
    scores = fitted.score(fitted.adapt([("Toy Story (1995)", 5), ("Fargo (1996)", 2)]))
    medians = fitted.median_ratings(scores)
    assert set(np.unique(medians)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    # monotone in the score: a higher mean never gets a lower median
    order = np.argsort(scores, kind="stable")
    assert np.all(np.diff(medians[order]) >= 0)
    loaded = Recommender.load(fitted.save(tmp_path / "run"))
    assert loaded.cutpoints == fitted.cutpoints


@pytest.mark.parametrize(
    ("scores", "needle"),
    [(["3"], r"got \['3'\]"), ([True, 2.5], r"got \[True, 2\.5\]"),
     (np.array([True]), r"got array\(\[ True\]\)"), (None, "got None"), ("3", "got '3'"),
     (np.array([[3.0]]), r"a 1-d array .* got shape \(1, 1\)"), ([np.nan], "NaN")],
)  # fmt: skip
def test_median_ratings_refuses_what_is_no_score(
    fitted: Recommender, scores: Any, needle: str
) -> None:
    # text and booleans were read as numbers ("3" a 3, True a 1), and None was "shape ()"
    with pytest.raises(DataError, match=rf"^scores: expected .*{needle}"):
        fitted.median_ratings(scores)
    assert (
        fitted.median_ratings([3, 4.5]).tolist()
        == fitted.median_ratings(np.array([3.0, 4.5])).tolist()
    )


def test_median_ratings_without_cutpoints_stay_on_the_scale(
    fitted: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no validation users to fit cuts on: a score past the scale's top came back as
    # a "rating" of 5.9 on a 1-5 scale
    monkeypatch.setattr(fitted, "cutpoints", None)
    assert fitted.scores_are_ratings
    np.testing.assert_array_equal(fitted.median_ratings(np.array([5.9, 0.2, 3.3])), [5, 1, 3.3])
    # ranking scores are no ratings at all
    monkeypatch.setattr(type(fitted), "scores_are_ratings", property(lambda self: False))
    with pytest.raises(UnsupportedError, match="median_ratings: this model's scores rank"):
        fitted.median_ratings(np.array([0.5]))


def test_too_few_validation_ratings_for_cutpoints_is_said_at_training(
    shared_data: Path,
) -> None:
    """Cutpoints need MIN_RATINGS validation query ratings; with fewer, a run's ratings
    are its scores clipped to the scale, and training says so (it used to leave the
    service's rating null without a word)."""
    from metarec.models.cutpoints import MIN_RATINGS

    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(ds.items, "tfidf", progress=False)
    cfg = TrainConfig(epochs=1, max_train_users=10, inner_steps=1, seed=0, device="cpu")
    train, val = split_users(ds.interactions, 0.1, seed=3)
    few = val[val["user_id"] == val["user_id"].iloc[0]]  # one user: 10 query ratings
    with pytest.warns(UserWarning, match=f"cutpoints not fitted: .* fewer than {MIN_RATINGS}"):
        rec, _ = fit_recommender(catalogue, train, cfg, validation=few, progress=False)
    assert rec.cutpoints is None
    scores = rec.score(rec.adapt([("Toy Story (1995)", 5)]))
    ratings = rec.median_ratings(scores)
    assert ratings.min() >= 1.0 and ratings.max() <= 5.0


def test_paths_no_folder_can_have_are_refused_by_name(fitted: Recommender, tmp_path: Path) -> None:
    # bare OSError (name too long) and ValueError (embedded null byte) before
    long = tmp_path / ("x" * 300)
    with pytest.raises(ModelError, match=r"xxx: cannot be read \(File name too long\)"):
        Recommender.load(long)
    with pytest.raises(DataError, match=r"no usable folder path \(File name too long\)"):
        fitted.save(long / "run")
    with pytest.raises(DataError, match="holds a NUL character"):
        fitted.save(tmp_path / "a\x00b")
    assert list(tmp_path.iterdir()) == []


def test_load_rejects_incomplete_runs(fitted: Recommender, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no recommender\.json"):
        Recommender.load(tmp_path)
    run = fitted.save(tmp_path / "run")
    meta = json.loads((run / "recommender.json").read_text())
    assert meta["format_version"] == 2 and meta["written_by"].startswith("metarec ")
    for version, said in [
        (99, r"format_version 99 is newer than this metarec \(.+\) reads \(up to 2\): upgrade"),
        (0, r"format_version 0 is older than this metarec \(.+\) reads \(1 to 2\): train it"),
        (True, r"format_version True is not a whole number"),  # True == 1 let it through
        (1.0, r"format_version 1\.0 is not a whole number"),
        (None, r"no format_version \(not written by metarec"),
    ]:
        meta["format_version"] = version
        (run / "recommender.json").write_text(json.dumps(meta))
        with pytest.raises(ModelError, match=r"recommender\.json: " + said):
            Recommender.load(run)
    meta["format_version"] = 1  # a run written before version 2 still loads
    (run / "recommender.json").write_text(json.dumps(meta))
    assert Recommender.load(run).n_items == fitted.n_items
    meta["rating_cutpoints"] = {"levels": [1, 2, 3], "cuts": [2.0, 1.0]}
    (run / "recommender.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"recommender\.json.*non-decreasing"):
        Recommender.load(run)
    items = json.loads((run / "items.json").read_text())
    items["item_id"][1] = items["item_id"][0]
    (run / "items.json").write_text(json.dumps(items))
    with pytest.raises(ModelError, match=r"items\.json: item_id '1' is repeated"):
        Recommender.load(run)
    items["item_id"][1] = "2"
    # a column cut short, or an entry of another type: named, not pandas' "All arrays
    # must be of the same length", nor an id 5.5 that no request could name
    for edit, needle in [
        (items | {"title": items["title"][:-5]}, r"items\.json: title has \d+ entries, item_id"),
        (items | {"item_id": [5.5, *items["item_id"][1:]]}, r"items\.json: item_id\[0\] is 5\.5"),
        (items | {"title": [None, *items["title"][1:]]}, r"items\.json: title\[0\] is None"),
        # an id no request can name: it loaded, to surface later as "unknown item '1'"
        (items | {"item_id": ["", *items["item_id"][1:]]}, r"item_id\[0\] is '', an empty id"),
        (
            items | {"item_id": [*items["item_id"][:2], " \t", *items["item_id"][3:]]},
            r"items\.json: item_id\[2\] is ' \\t', an empty id",
        ),
        ({k: v for k, v in items.items() if k != "text"}, r"items\.json: text must be a list"),
    ]:
        (run / "items.json").write_text(json.dumps(edit))
        with pytest.raises(ModelError, match=needle):
            Recommender.load(run)
    # a column beside the three a run writes is not read: one of another length was
    # pandas' "All arrays must be of the same length", one of this length a fourth
    # column of the served catalogue
    (run / "recommender.json").write_text(json.dumps(meta | {"rating_cutpoints": None}))
    for extra in (["x"], ["x"] * len(items["item_id"])):
        (run / "items.json").write_text(json.dumps(items | {"extra": extra}))
        assert list(Recommender.load(run).items.columns) == ["item_id", "title", "text"]
    (run / "items.json").write_text(json.dumps(items))
    # hand-edited or foreign: one ModelError naming the folder, never a traceback
    good = json.loads(json.dumps(meta | {"rating_cutpoints": None}))
    for damaged, needle in [
        ([], "not a JSON object"),
        ({"format_version": 1}, r"recommender\.json: config: expected an object, got None"),
        (good | {"config": []}, r"recommender\.json: config: expected an object, got \[\]"),
        (good | {"metadata": [1]}, r"recommender\.json: metadata: expected an object"),
        (
            good | {"config": good["config"] | {"inner_lr": -1}},
            r"recommender\.json: inner_lr: must be > 0",
        ),
        (
            good | {"features": good["features"] | {"columns": 5}},
            r"recommender\.json: features\.columns: expected a list of column names, got 5",
        ),
        (
            good | {"features": {"columns": ["age"], "vocab": {"age": {"x": "1"}}}},
            r"recommender\.json: features\.vocab\.age: expected an object of value: code",
        ),
        (good | {"rating_range": "x"}, "rating_range must be"),
        (good | {"rating_range": [5, 1]}, "rating_range must be"),
        (good | {"rating_range": ["a", "b"]}, r"rating_range must be .* got \['a', 'b'\]"),
        (good | {"rating_range": [None, 5]}, r"rating_range must be .* got \[None, 5\]"),
        # torch's many-line size mismatch, naming no tensor, before
        (
            good | {"config": good["config"] | {"model": {"hidden": 7}}},
            r"model\.safetensors: tensor learner\..* of shape \(1, 64\), expected torch\.float32 "
            r"of shape \(1, 7\) for the model recommender\.json describes",
        ),
        (good | {"n_items": -1}, r"recommender\.json: n_items: expected a positive whole"),
        (good | {"n_items": "x"}, r"n_items: expected a positive whole number, got 'x'"),
        (good | {"n_items": good["n_items"] + 1}, r"n_items says \d+; the run's files hold"),
        (good | {"item_vector_dim": 3}, r"item_vector_dim says 3; the run's files hold"),
        (
            good | {"encoder": good["encoder"] | {"dim": "abc"}},
            r"encoder\.dim: expected a positive whole number, got 'abc'",
        ),
        # loaded and served, then met at the first added item as the client's 422
        (
            good | {"encoder": good["encoder"] | {"dim": 32}},
            r"encoder\.dim says 32; the item vectors have \d+",
        ),
        (
            good | {"encoder": {k: v for k, v in good["encoder"].items() if k != "vocabulary"}},
            r"encoder: saved TF-IDF config lacks 'vocabulary' \(mapping\) or 'idf' \(list\)",
        ),
        # met only at the first added item, in a message that named no file
        (
            good | {"encoder": good["encoder"] | {"format": 2}},
            r"run: encoder: unsupported TF-IDF encoder format 2 \(this metarec reads format 1\)",
        ),
    ]:
        (run / "recommender.json").write_text(json.dumps(damaged))
        with pytest.raises(ModelError, match=needle):
            Recommender.load(run)


def test_a_config_key_taken_out_of_a_run_is_warned_of(fitted: Recommender, tmp_path: Path) -> None:
    # read at today's default without a word: an objective or inner_lr the run was not
    # trained with would have served it
    run = fitted.save(tmp_path / "run")
    meta = json.loads((run / "recommender.json").read_text())
    del meta["config"]["inner_lr"], meta["config"]["model"]["hidden"]
    (run / "recommender.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"config\.inner_lr, config\.model\.hidden missing"):
        Recommender.load(run)
    meta["format_version"] = 1  # may predate a key: read at its default, which keeps
    (run / "recommender.json").write_text(json.dumps(meta))  # the behaviour before it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Recommender.load(run)


# the config keys a run of format 2 holds: one added without a format bump would have
# every format 2 run warned of as edited by hand (run_folder.FORMAT_VERSION's note)
FORMAT_2_CONFIG_KEYS = {
    "algorithm", "adapt", "objective", "rating_loss", "inner_steps", "inner_lr",
    "eval_inner_steps", "outer_lr", "weight_decay", "meta_batch_size", "epochs", "patience",
    "min_support", "max_support", "query_size", "train_query_size", "negatives",
    "like_threshold", "support_positives", "episode_order", "seed", "device", "encoder",
    "max_train_users", "model", "model.hidden", "model.tower_hidden", "model.head_layers",
    "model.user_embedding_dim", "model.factors", "model.fold_in", "model.implicit_fold_in",
    "model.support_encoder", "model.use_item_ids", "model.item_id_dropout",
    "model.use_user_features", "model.dropout",
}  # fmt: skip


def test_a_new_config_key_comes_with_a_format_version() -> None:
    from metarec.run_folder import FORMAT_VERSION

    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, f"{prefix}{k}.")
        return out

    now = keys(TrainConfig().to_dict())
    assert FORMAT_VERSION > 2 or now == FORMAT_2_CONFIG_KEYS, (
        f"config keys {sorted(now ^ FORMAT_2_CONFIG_KEYS)} changed under format 2: bump "
        "run_folder.FORMAT_VERSION and list this version's keys here"
    )


def test_load_refuses_non_finite_weights(fitted: Recommender, tmp_path: Path) -> None:
    # an intact header over NaN weights would otherwise rank by garbage with exit 0
    from safetensors.torch import load_file, save_file

    run = fitted.save(tmp_path / "run")
    tensors = load_file(str(run / "model.safetensors"))
    name = next(k for k in tensors if k.startswith("learner.") and tensors[k].is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(run / "model.safetensors"))
    with pytest.raises(
        ModelError, match=rf"model\.safetensors: tensor '{re.escape(name)}' holds 1 NaN"
    ):
        Recommender.load(run)


def test_load_refuses_weights_changed_on_disk(fitted: Recommender, tmp_path: Path) -> None:
    # one bit of a weight flipped: readable, finite, of the right shapes, and it ranked
    # by another model with exit 0; the digest save_tensors writes catches it
    run = fitted.save(tmp_path / "run")
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-3] ^= 0x01
    (run / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model\.safetensors: its tensors do not match"):
        Recommender.load(run)


def test_load_refuses_weights_of_another_dtype_or_missing_by_name(
    fitted: Recommender, tmp_path: Path
) -> None:
    # int32 weights were cast without a word (scores moved, exit 0), and a missing or
    # reshaped tensor was a bare KeyError or ValueError that named no file
    from safetensors.torch import load_file, save_file

    run = fitted.save(tmp_path / "run")
    kept = load_file(str(run / "model.safetensors"))
    weight = next(k for k in kept if k.startswith("learner.model.user.") and k.endswith("weight"))
    for change, needle in (
        ({weight: kept[weight].to(torch.int32)}, rf"tensor {re.escape(weight)} is torch\.int32 "
         r"of shape \(\d+, \d+\), expected torch\.float32"),
        # torch's own many-line "size mismatch" message named neither file nor tensor
        ({weight: kept[weight][:1]}, rf"tensor {re.escape(weight)} is torch\.float32 of shape "
         r"\(1, \d+\), expected torch\.float32 of shape \(\d+, \d+\)"),
        ({"learner.model.user.offset": torch.zeros(2)},
         r"tensor learner\.model\.user\.offset is of shape \(2,\)"),
        ({"learner.model.tower.item_vectors": None}, r"tensor .*item_vectors is missing"),
    ):  # fmt: skip
        tensors = {k: v for k, v in (kept | change).items() if v is not None}
        save_file(tensors, str(run / "model.safetensors"))
        with pytest.raises(ModelError, match=rf"model\.safetensors: {needle}.*damaged or edited"):
            Recommender.load(run)
    # the encoder's state, named by what the TF-IDF's own rebuild would find missing
    save_file({k: v for k, v in kept.items() if k != "encoder.components"},
              str(run / "model.safetensors"))  # fmt: skip
    with pytest.raises(
        ModelError,
        match=rf"{re.escape(str(run))}: encoder: saved TF-IDF state lacks the 'components' "
        r"tensor \(damaged or edited\?\)",
    ):
        Recommender.load(run)


def test_load_refuses_popularity_of_another_length_or_sign(
    fitted: Recommender, tmp_path: Path
) -> None:
    # a popularity cut short crashed the explanations (IndexError) or, with
    # --no-reasons, served without a word; a negative count loaded as it was
    from safetensors.torch import load_file, save_file

    run = fitted.save(tmp_path / "run")
    intact = load_file(str(run / "model.safetensors"))
    pop = intact["popularity"]
    for name, value, needle in [
        ("popularity", pop[:10].clone(), r"popularity: expected one value per item .*\(10,\)"),
        ("popularity", -pop - 1, r"popularity\[0\] is -\d+; expected a count of ratings"),
        ("popularity", pop.clone().fill_(float("inf")), r"tensor 'popularity' holds \d+ NaN"),
        ("item_offsets", intact["item_offsets"][:10].clone(), r"item_offsets: expected one"),
        # a bool popularity read every count as 0 or 1 without a word
        ("popularity", pop > 0, r"popularity: expected float64 values .*got bool"),
        ("item_offsets", intact["item_offsets"].long(), r"item_offsets: expected .*got int64"),
    ]:
        save_file(intact | {name: value}, str(run / "model.safetensors"))
        with pytest.raises(ModelError, match=r"model\.safetensors: .*" + needle):
            Recommender.load(run)
    save_file(
        {k: v for k, v in intact.items() if k != "popularity"}, str(run / "model.safetensors")
    )
    with pytest.raises(ModelError, match=r"model\.safetensors: no tensor 'popularity'"):
        Recommender.load(run)


def test_load_refuses_recorded_metadata_of_another_type(
    fitted: Recommender, tmp_path: Path
) -> None:
    # evaluate, ensemble and retrain read these back; a data_spec of "ml-100k" was an
    # AttributeError in loading the data, a split_seed of "3" a ValueError
    run = fitted.save(tmp_path / "run")
    meta = json.loads((run / "recommender.json").read_text())
    spec = {"dataset": "ml-100k", "data": None, "strict": False}
    for metadata, needle in [
        ({"data_spec": "ml-100k"}, r"metadata\.data_spec: expected an object, got 'ml-100k'"),
        ({"data_spec": spec | {"dataset": 5}}, r"metadata\.data_spec\.dataset: expected text"),
        (
            {"data_spec": spec | {"strict": "yes"}},
            r"metadata\.data_spec\.strict: expected true or false",
        ),
        ({"data_spec": spec | {"datset": "x"}}, r"metadata\.data_spec: unknown key 'datset'"),
        ({"holdout": ["p1"]}, r"metadata\.holdout: expected text"),
        ({"split_seed": "3"}, r"metadata\.split_seed: expected a whole number >= 0, got '3'"),
        ({"split_digest": 5}, r"metadata\.split_digest: expected text"),
    ]:
        (run / "recommender.json").write_text(json.dumps(meta | {"metadata": metadata}))
        with pytest.raises(ModelError, match=r"recommender\.json: " + needle):
            Recommender.load(run)
    # what `metarec train` records loads
    (run / "recommender.json").write_text(
        json.dumps(meta | {"metadata": {"data_spec": spec, "holdout": "p1", "split_seed": 0}})
    )
    assert Recommender.load(run).metadata["data_spec"] == spec


def test_load_refuses_a_like_threshold_off_the_runs_scale(
    fitted: Recommender, tmp_path: Path
) -> None:
    # training refuses it; edited in afterwards, nothing was liked and evaluate gave
    # precision 0 and NaN recall without a word
    run = fitted.save(tmp_path / "run")
    meta = json.loads((run / "recommender.json").read_text())
    assert meta["rating_range"] == [1, 5] and meta["config"]["like_threshold"] == 4
    for like in (99, 0.5):
        edited = meta | {"config": meta["config"] | {"like_threshold": like}}
        (run / "recommender.json").write_text(json.dumps(edited))
        with pytest.raises(
            ModelError,
            match=rf"recommender\.json: config\.like_threshold: {like:g} is not a rating on "
            r"the data's scale \[1, 5\]",
        ):
            Recommender.load(run)


def test_grouplens_title_form_resolves(fitted: Recommender) -> None:
    assert fitted.resolve("Lion King, The (1994)") == fitted.resolve("The Lion King (1994)")
    # an id read as a float (pandas reads a column with a gap so) is the id, as in add_items
    assert fitted.resolve(1.0) == fitted.resolve(np.float64(1)) == fitted.resolve("1")


def test_a_title_without_its_year_and_an_id_as_typed_resolve_where_unambiguous(
    fitted: Recommender, tmp_path: Path
) -> None:
    # recommend shows "The Shawshank Redemption (1994)"; without the year it was unknown
    assert fitted.resolve("the shawshank redemption") == fitted.resolve(
        "Shawshank Redemption, The (1994)"
    )
    # two items are shown as "The Ice Storm (1997)": the title alone names neither
    with pytest.raises(UnknownItemError):
        fitted.resolve("The Ice Storm")
    # ids with stray spaces or decomposed letters (as a file held them): a command
    # line strips the spaces, and a keyboard composes the letters
    rec = Recommender.load(fitted.save(tmp_path / "run"))
    cafe = unicodedata.normalize("NFD", "café-9")
    rec.add_items(pd.DataFrame({"item_id": [cafe, "x1"], "title": ["Café Noir", "X"]}))
    with pytest.raises(DataError, match="starts or ends with a space"):
        rec.add_items(pd.DataFrame({"item_id": [" spaced "], "title": ["Spaced"]}))
    assert rec.resolve("café-9") == rec.resolve(cafe) == rec.item_index[cafe]
    # a title alike: "Café Noir" typed decomposed was unknown, offered itself as close
    assert rec.resolve(unicodedata.normalize("NFD", "Café Noir")) == rec.item_index[cafe]
    assert rec.resolve(" x1 ") == rec.item_index["x1"]
    # an id with stray spaces is the id, before any title: a film is titled "187"
    assert rec.resolve(" 187") == rec.resolve("187 ") == rec.item_index["187"]
    # ids are matched in their own letter case (two may differ only in it), and one
    # typed in another case is offered: an ISBN's check digit typed "x" for "X"
    rec.add_items(pd.DataFrame({"item_id": ["080442957X"], "title": ["A Book"]}))
    with pytest.raises(UnknownItemError, match=r"'080442957x': .*; close matches: '080442957X'"):
        rec.resolve("080442957x")


def test_the_catalogue_is_computed_in_one_input_shape_whatever_its_size(
    fitted: Recommender, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """oneDNN keeps compiled code per input shape: computed whole at each size, a
    service adding an item per request grew by ~3 MB per item. The chunks, the last
    padded, give what one pass over the catalogue gives."""
    import metarec.recommender as module

    rec = Recommender.load(fitted.save(tmp_path / "run"))
    scorer = rec.learner.scorer
    whole = scorer.tower_out(torch.arange(rec.n_items))
    monkeypatch.setattr(module, "CATALOGUE_CHUNK", 500)  # 1682 items: 4 chunks, 1 padded
    chunked = module.catalogue_tower(scorer, rec.n_items, torch.device("cpu"))
    for got, want in zip(chunked, whole, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    shapes: list[int] = []
    real = scorer.tower_out
    monkeypatch.setattr(scorer, "tower_out", lambda rows: shapes.append(len(rows)) or real(rows))
    for n in (1, 3):
        ids = [f"new-{n}-{i}" for i in range(n)]
        rec.add_items(pd.DataFrame({"item_id": ids, "title": ["A Film"] * n}))
    assert shapes and set(shapes) == {500}, shapes
    # a catalogue smaller than a chunk takes the power of two it fits in: 1,686 in 2,048
    monkeypatch.setattr(module, "CATALOGUE_CHUNK", 4096)
    shapes.clear()
    rec.add_items(pd.DataFrame({"item_id": ["one-more"], "title": ["A Film"]}))
    assert shapes == [2048], shapes
    # and items updated in place (PUT /v1/items, 1 to 500 a request): 3 rows in 4
    shapes.clear()
    rec._retitle([0, 1, 2], ["A", "B", "C"], ["A.", "B.", "C."])
    assert shapes == [4], shapes
    for n in (1, 2, 3, 5):  # and pads none of them wrong
        for got, want in zip(
            module.catalogue_tower(scorer, n, torch.device("cpu")),
            real(torch.arange(n)),
            strict=True,
        ):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_fold_in_items_learns_new_items_from_first_ratings(
    fitted: Recommender, tmp_path: Path
) -> None:
    from metarec.data.tasks import Task

    rec = Recommender.load(fitted.save(tmp_path / "run"))
    # two new films with the same text: only their ratings can tell them apart
    new = pd.DataFrame(
        {"item_id": ["loved", "hated"], "title": ["Night Train", "Night Train"], "year": [2001] * 2}
    )
    rec.add_items(new)
    history = [("Toy Story (1995)", 4), ("Fargo (1996)", 4)]
    before = rec.score(rec.adapt(history), ["loved", "hated"])
    assert before[0] == pytest.approx(before[1], abs=1e-5)
    known = [rec.items.item_id[i] for i in range(40)]
    rows = []
    for u in range(30):
        rows += [(f"u{u}", known[(u + j) % 40], 3 + (u + j) % 3) for j in range(4)]
        rows += [(f"u{u}", "loved", 5), (f"u{u}", "hated", 1)]
    summary = rec.fold_in_items(pd.DataFrame(rows, columns=["user_id", "item_id", "rating"]))
    assert summary["items_updated"] == 2 and summary["ratings_used"] == 60
    loved, hated = rec.item_index["loved"], rec.item_index["hated"]
    assert rec.item_offsets[loved] > 0.5 and rec.item_offsets[hated] < -0.5
    # items the network trained on keep the offsets training gave them: none
    assert not rec.item_offsets[: fitted.n_items].any()
    after = rec.score(rec.adapt(history), ["loved", "hated"])
    assert after[0] - after[1] > 1.0
    # the batched task path and the single-user path agree on the corrected items
    support = np.array([rec.resolve(t) for t, _ in history]), np.array([4.0, 4.0], np.float32)
    query = np.array([loved, hated])
    batch = rec.predict_tasks([Task(0, *support, query, np.zeros(2, np.float32))])[0]
    np.testing.assert_allclose(batch, after, rtol=1e-4, atol=1e-5)
    # offsets are part of the saved run
    again = Recommender.load(rec.save(tmp_path / "run2"))
    np.testing.assert_array_equal(again.item_offsets, rec.item_offsets)
    np.testing.assert_allclose(again.score(again.adapt(history), ["loved", "hated"]), after)
    # a second call recomputes from what it is given rather than stacking offsets
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing dropped: no warning
        rec.fold_in_items(pd.DataFrame(rows, columns=["user_id", "item_id", "rating"]))
    np.testing.assert_allclose(rec.item_offsets, again.item_offsets, atol=1e-12)
    # from scratch: items no row rates get 0, and the loss is never silent
    only_loved = pd.DataFrame([r for r in rows if r[1] != "hated"],
                              columns=["user_id", "item_id", "rating"])  # fmt: skip
    with pytest.warns(RuntimeWarning, match=r"1 item\(s\) with an offset .*\['hated'\]"):
        rec.fold_in_items(only_loved)
    assert rec.item_offsets[hated] == 0 and rec.item_offsets[loved] > 0.5
    with pytest.warns(RuntimeWarning, match=r"\['loved'\]; offsets are recomputed"):
        rec.fold_in_items(only_loved.iloc[:0])
    assert not rec.item_offsets.any()
    # keep_unrated (the service's fold-in): an item no row rates keeps its offset
    rec.fold_in_items(pd.DataFrame(rows, columns=["user_id", "item_id", "rating"]))
    hated_offset = rec.item_offsets[hated]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec.fold_in_items(only_loved, keep_unrated=True)
    assert rec.item_offsets[hated] == hated_offset and rec.item_offsets[loved] > 0.5
    # a user's rating of an item twice: row order chose one, and an offset's sign
    twice = pd.DataFrame(
        [*rows, ("u3", "loved", 1), ("u5", "hated", 5)], columns=["user_id", "item_id", "rating"]
    )  # two pairs repeated: the message names the first pair's own rows
    offsets = rec.item_offsets.copy()
    needle = r"user 'u3' rated item 'loved' more than once \(rows 22 and 180\)"
    with pytest.raises(DataError, match=needle):
        rec.fold_in_items(twice)
    np.testing.assert_array_equal(rec.item_offsets, offsets)  # nothing changed


def test_fold_in_offsets_move_every_adaptation_scopes_scores(shared_data: Path) -> None:
    # adapt="all" adapts the item tower, whose recomputed outputs left the offsets out:
    # score and recommend ignored fold-in, while predict_tasks added them
    from metarec.config import ModelConfig

    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(ds.items, "tfidf", progress=False)
    model = ModelConfig(hidden=8, tower_hidden=16, factors=4, user_embedding_dim=2)
    history = [("Toy Story (1995)", 5), ("Heat (1995)", 2)]
    for adapt in ("context", "all"):
        cfg = TrainConfig(adapt=adapt, epochs=1, inner_steps=2, max_train_users=60, seed=0,
                          device="cpu", model=model)  # fmt: skip
        rec, _ = fit_recommender(catalogue, ds.interactions, cfg, progress=False)
        new = int(np.flatnonzero(rec.model.tower.id_known.numpy() == 0)[0])
        before = rec.score(rec.adapt(history))
        raters = pd.DataFrame({"user_id": [f"x{i}" for i in range(30)], "rating": [5] * 30,
                               "item_id": [rec.items.item_id[new]] * 30})  # fmt: skip
        rec.fold_in_items(raters)
        offset = rec.item_offsets[new]
        assert offset > 0.1, adapt
        after = rec.score(rec.adapt(history))
        assert after[new] - before[new] == pytest.approx(offset, rel=0.2), adapt
        support = np.array([rec.resolve(t) for t, _ in history]), np.array([5, 2], np.float32)
        task = Task(0, *support, np.array([new]), np.zeros(1, np.float32))
        np.testing.assert_allclose(rec.predict_tasks([task])[0], after[[new]], rtol=1e-4)
        # chosen items are scored alone (on this scope's own path: direct for context,
        # the recomputed tower for all), with the offsets, as the catalogue scores them
        chosen = [rec.items.item_id[new], "1", rec.items.item_id[new]]
        rows = [new, rec.resolve("1"), new]
        got = rec.score(rec.adapt(history), chosen)
        np.testing.assert_allclose(got, after[rows], rtol=1e-5, atol=1e-6, err_msg=adapt)
        assert rec.score(rec.adapt(history), []).shape == (0,)


def test_fold_in_items_without_new_item_ratings_changes_nothing(fitted: Recommender) -> None:
    # users who rated only items the network trained on carry no evidence (a served
    # model folds in at every load, feedback or not)
    known = pd.DataFrame(
        {"user_id": ["a", "a", "b"], "item_id": ["1", "2", "3"], "rating": [5, 3, 4]}
    )
    before = fitted.item_offsets.copy()
    assert fitted.fold_in_items(known)["items_updated"] == 0
    nothing = fitted.fold_in_items(known.iloc[:0])
    assert nothing["ratings_used"] == 0
    assert nothing["shrinkage"] is None  # was 1e9, the largest tried, read as a finding
    np.testing.assert_array_equal(fitted.item_offsets, before)


@pytest.mark.parametrize(
    "frame, error, needle",
    [
        (pd.DataFrame({"user_id": ["u"], "item_id": ["1"]}), DataError, "rating"),
        (pd.DataFrame({"user_id": ["u"], "item_id": ["x9"], "rating": [3]}), UnknownItemError, "x"),
        (pd.DataFrame({"user_id": ["u"], "item_id": ["1"], "rating": [9]}), DataError, "outside"),
        # grouped by user, the message still names the frame's row and its user
        (pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["1", "2", "1"],
                       "rating": [5, 3, np.nan]}), DataError, r"row 2 \(user_id 'b', rating nan\)"),
        (pd.DataFrame({"user_id": ["a", None], "item_id": ["1", "2"], "rating": [5, 3]}),
         DataError, "row 1 .*no user_id"),
        # named by the frame's row, not its place in user b's history ("entry 1")
        (pd.DataFrame({"user_id": ["a", "a", "b", "b"], "item_id": ["1", "2", "3", "1"],
                       "rating": [5, 3, 4, "4"]}), DataError,
         r"row 3 \(user_id 'b', rating '4'\): text, not a number"),
        (pd.DataFrame({"user_id": ["a", "b"], "item_id": ["1", "2"],
                       "rating": pd.Series(["4", "3"], dtype="string")}), DataError,
         r"row 0 \(user_id 'a', rating '4'\): text, not a number"),
        ([("u", "1", 5)], DataError, "expected a DataFrame"),
        (pd.DataFrame([["u", "1", 5, 4]], columns=["user_id", "item_id", "rating", "rating"]),
         DataError, r"column\(s\) \['rating'\] appear more than once"),
        # by position, as the other messages: two frames joined gave "rows 0 and 0"
        (pd.concat([pd.DataFrame({"user_id": ["a", "b"], "item_id": ["1", "2"],
                                  "rating": [5, 3]})] * 2), DataError,
         r"user 'a' rated item '1' more than once \(rows 0 and 2\)"),
        # one item by its id and by its title: compared as text they differed, and row
        # order chose which rating counted (an offset's sign with it)
        (pd.DataFrame({"user_id": ["a", "b", "a"], "item_id": ["1", "2", "Toy Story (1995)"],
                       "rating": [5, 3, 1]}), DataError,
         r"user 'a' rated item '1' more than once \(rows 0 and 2, as '1' and 'Toy Story"),
    ],
)  # fmt: skip
def test_fold_in_items_rejects_bad_rows_and_keeps_offsets(
    fitted: Recommender, frame: pd.DataFrame, error: type[Exception], needle: str
) -> None:
    before = fitted.item_offsets.copy()
    with pytest.raises(error, match=needle):
        fitted.fold_in_items(frame)
    np.testing.assert_array_equal(fitted.item_offsets, before)


def test_like_threshold_comes_from_the_rating_scale_unless_set(shared_data: Path) -> None:
    """Ratings doubled to 2-10: the implicit objective's "liked" is >= 8 there, as >= 4
    is on 1-5 stars; a threshold the user sets wins. The fitted config holds the number."""
    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(ds.items, "tfidf", progress=False)
    doubled = ds.interactions.assign(rating=ds.interactions["rating"] * 2)
    cfg = TrainConfig(objective="bce", epochs=1, max_train_users=40, seed=0, device="cpu")
    assert cfg.like_threshold is None
    rec, _ = fit_recommender(catalogue, doubled, cfg, rating_range=(2.0, 10.0), progress=False)
    assert rec.cfg.like_threshold == 8.0
    rec, _ = fit_recommender(catalogue, ds.interactions, cfg, progress=False)
    assert rec.cfg.like_threshold == 4.0  # 1-5 stars: the threshold every P2 figure used
    assert rec.cfg.support_positives == "rated"  # five levels: a film rated was watched
    mine = cfg.with_overrides(["like_threshold=9"])
    rec, _ = fit_recommender(catalogue, doubled, mine, rating_range=(2.0, 10.0), progress=False)
    assert rec.cfg.like_threshold == 9.0


def test_a_run_saved_for_a_missing_device_loads_on_this_one(
    fitted: Recommender, tmp_path: Path
) -> None:
    # trained with --set device=cuda:N on a GPU server, then served elsewhere
    fitted.save(tmp_path / "run")
    meta_path = tmp_path / "run" / "recommender.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["device"] = "cuda:63"
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(RuntimeWarning, match="trained for device 'cuda:63'.*device 'auto'"):
        loaded = Recommender.load(tmp_path / "run")
    user = [("Toy Story (1995)", 5)]
    np.testing.assert_allclose(
        loaded.score(loaded.adapt(user)), fitted.score(fitted.adapt(user)), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ConfigError, match="'cuda:63' asked for"):  # asked for by the caller
        Recommender.load(tmp_path / "run", device="cuda:63")


def test_train_checks_a_dataset_it_did_not_clean(shared_data: Path) -> None:
    from dataclasses import replace

    from metarec.pipeline import train

    ds = load_dataset("ml-100k", root=shared_data)
    scaled = ds.interactions.assign(rating=ds.interactions["rating"] * 20)
    # refused before the encoder or training start, naming the problem and the way out
    with pytest.raises(DataError, match=r"ml-100k: 1 problem\(s\).*outside \[1, 5\].*clean"):
        train(replace(ds, interactions=scaled), TrainConfig(encoder="tfidf"))
    with pytest.raises(ConfigError, match="validation_fraction"):
        train(ds, TrainConfig(encoder="tfidf"), validation_fraction=1.5)


def test_items_without_titles_train_with_their_ids_as_titles(tmp_path: Path) -> None:
    # validation and cleaning read a frame without titles so; encoding did not, and
    # training ended in a KeyError after its last epoch, the run lost
    from metarec.data.schema import Dataset
    from metarec.pipeline import train

    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(10)],
                          "text": [f"a film about {w}" for w in "abcdefghij"]})  # fmt: skip
    rows = [(f"u{u}", f"i{i}", float(1 + (u * i) % 5)) for u in range(30) for i in range(10)]
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    rec = train(Dataset("untitled", ratings, items), {"epochs": 1}, encoder="tfidf",
                progress=False, cache_dir=tmp_path)  # fmt: skip
    assert rec.items["title"].tolist() == items["item_id"].tolist()
    assert rec.items["text"].tolist() == items["text"].tolist()


def test_train_encodes_on_the_configured_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI passed the config's device to the encoder, train() did not: "cpu" held
    for the meta-learner while the catalogue was encoded on the GPU ("auto")."""
    import metarec.pipeline as pipeline
    from metarec.data.schema import Dataset

    seen: list[object] = []
    encode = pipeline.encode_catalogue

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("device"))
        return encode(*args, **kwargs)

    monkeypatch.setattr(pipeline, "encode_catalogue", spy)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(10)],
                          "title": [f"a film about {w}" for w in "abcdefghij"]})  # fmt: skip
    rows = [(f"u{u}", f"i{i}", float(1 + (u * i) % 5)) for u in range(30) for i in range(10)]
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    pipeline.train(Dataset("tiny", ratings, items), {"epochs": 1, "device": "cpu"},
                   encoder="tfidf", progress=False, cache_dir=tmp_path)  # fmt: skip
    assert seen == ["cpu"]


def test_encoding_refuses_items_it_could_not_look_up(tmp_path: Path) -> None:
    twice = pd.DataFrame({"item_id": ["a", "b", "a"], "title": ["Heat", "Ran", "Up"]})
    with pytest.raises(DataError, match="item id 'a' appears more than once"):
        encode_catalogue(twice, "tfidf", cache_dir=tmp_path, progress=False)
    with pytest.raises(DataError, match="no item_id column"):
        encode_catalogue(twice.drop(columns="item_id"), "tfidf", cache_dir=tmp_path)


def test_add_items_refuses_bad_ids_and_vectors(fitted: Recommender) -> None:
    n, width = fitted.n_items, int(fitted.model.tower.item_vectors.shape[1])
    one = pd.DataFrame({"item_id": ["new-1"], "title": ["A new film"]})
    for items, vectors, needle in [
        (pd.DataFrame({"item_id": [np.nan], "title": ["Foo"]}), None, "row 0: item_id nan"),
        (pd.DataFrame({"item_id": [" "], "title": ["Foo"]}), None, "is not an id"),
        # stored as "True" and "['b']", which no request names; a NUL the service refuses
        (pd.DataFrame({"item_id": [True], "title": ["A"]}), None, "row 0: item_id True is not one"),
        (
            pd.DataFrame({"item_id": ["n", ["b"]], "title": ["A", "B"]}),
            None,
            r"row 1: item_id \['b'\]",
        ),
        (pd.DataFrame({"item_id": ["z\x00"], "title": ["A"]}), None, "holds a control character"),
        # a MultiIndex: added with NaN ids and titles, and the run saved then did not load
        (pd.DataFrame({("item_id", ""): ["z2"], ("title", ""): ["Z"]}), None, "MultiIndex"),
        (one, np.zeros((1, width + 1)), rf"shape \(1, {width + 1}\); expected \(1, {width}\)"),
        (one, np.full((1, width), np.nan), "'new-1' holds NaN"),
    ]:
        with pytest.raises(DataError, match=needle):
            fitted.add_items(items, vectors=vectors)
    assert fitted.n_items == n


def test_add_items_refuses_bytes_and_truth_values_and_joins_lists(fitted: Recommender) -> None:
    """Bytes failed in pandas with a UnicodeDecodeError and True was encoded as "True";
    a list or an object as a title or text was encoded as its repr ("['a', 'b']"),
    where the loaders join them. A number is a title ("1984"), and genres may be a list."""
    n = fitted.n_items
    for column, value, needle in [
        ("title", b"caf\xe9", r"row 1: title b'caf\\xe9' is bytes: decode them"),
        ("text", bytearray(b"x"), r"row 1: text bytearray\(b'x'\) is bytes"),
        ("genres", True, r"row 1: genres True is a truth value \(bool\), not text"),
        ("genres", b"Drama", "row 1: genres b'Drama' is bytes"),
    ]:
        items = pd.DataFrame({"item_id": ["ok", "bad"], "title": ["Fine", "Also fine"]})
        items[column] = pd.Series(["Fine", value], dtype=object)
        with pytest.raises(DataError, match=needle):
            fitted.add_items(items)
    flags = pd.DataFrame({"item_id": ["f"], "title": [True]})  # a column of truth values
    with pytest.raises(DataError, match=r"row 0: title True is a truth value"):
        fitted.add_items(flags)
    assert fitted.n_items == n
    added = pd.DataFrame(
        {
            "item_id": ["t1984", "tg", "tl"],
            "title": [1984, "Listed", ["A", "B"]],
            "genres": [np.nan, ["Drama", "Comedy"], np.nan],
            "text": [np.nan, np.nan, {"Publisher": "Acme", "Pages": 300}],
        }
    )
    texts = fitted.prepare_items(added)["text"].tolist()
    assert texts[0].startswith("1984") and "Drama" in texts[1] and "Comedy" in texts[1]
    assert texts[2] == "Publisher: Acme, Pages: 300"  # its own text, joined
    assert fitted.prepare_items(added)["title"].tolist()[2] == "A, B"


def test_an_added_id_that_is_another_items_title_is_warned_of(fitted: Recommender) -> None:
    """Ids are looked up before titles: the new id took the title over as typed but not
    in other letter cases, so "Heat (1995)" and "heat (1995)" named two items."""
    title = str(fitted.items["title"].iat[5])
    with pytest.warns(UserWarning, match=re.escape(f"item id {title!r} is the title of item")):
        fitted.prepare_items(pd.DataFrame({"item_id": [title], "title": ["Another film"]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.prepare_items(pd.DataFrame({"item_id": ["no-such-title"], "title": ["Film"]}))


def test_only_new_items_without_text_get_it_built(fitted: Recommender) -> None:
    from metarec.pipeline import ensure_text

    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["X", "Y", "Z"],
                          "text": ["full text", np.nan, "  "]})  # fmt: skip
    # one missing text rebuilt every row's: item a was encoded as "X."
    assert fitted.prepare_items(items)["text"].tolist() == ["full text", "Y.", "Z."]
    assert ensure_text(items)["text"].tolist() == ["full text", "Y.", "Z."]
    twice = pd.DataFrame([["a", "X", "Y"]], columns=["item_id", "title", "title"])
    with pytest.raises(DataError, match=re.escape("add_items: column(s) ['title'] appear")):
        fitted.add_items(twice)  # pandas' AttributeError: no attribute 'dtype'


def test_new_items_text_is_built_with_the_runs_text_columns(fitted: Recommender) -> None:
    # what `metarec train --text-cols ...` records; `text`, an items file's own text
    # column, is no column of a new item's: its `text` is the whole text, built if absent
    spec = {"text_cols": "author,description,text"}
    fitted.metadata["data_spec"] = spec
    try:
        books = pd.DataFrame({"item_id": ["b1", "b2"], "title": ["Murder", "Quiet"],
                              "author": ["Agatha Christie", "Anon"]})  # fmt: skip
        # both were silent, and such items were encoded from less than the run's own
        lacking = r"text has column\(s\) \['description'\] too, which the new items lack"
        with pytest.warns(UserWarning, match=lacking):
            text = fitted.prepare_items(books)["text"].tolist()
        unread = r"column\(s\) \['blurb'\] not read: .* title, year, genres, author, descr"
        with pytest.warns(UserWarning, match=unread):
            fitted.prepare_items(books.assign(description="x", blurb=["a", "b"]))
        with warnings.catch_warnings():  # a whole text of its own needs no description
            warnings.simplefilter("error")
            fitted.prepare_items(books.assign(text=["a whole text", "another"]))
    finally:
        del fitted.metadata["data_spec"]
    assert "Agatha Christie" in text[0] and "Anon" in text[1]  # no description: left out


def test_a_new_items_text_is_built_as_the_loader_built_its_files(
    fitted: Recommender, tmp_path: Path
) -> None:
    # a column that is the genres (--genre-col) and one of --text-cols too was renamed
    # to genres, and that part of a new item's text left empty: the same row from the
    # items file was encoded unlike the item trained on
    from metarec import load_table

    items = pd.DataFrame({"book_id": ["b1", "b2"], "name": ["Roses", "Soil"],
                          "category": ["gardening", "science; nature"],
                          "description": ["A book about roses.", "About soil."],
                          "pub_year": [2001, 2003]})  # fmt: skip
    items.to_csv(tmp_path / "items.csv", index=False)
    pd.DataFrame({"reader": ["u1", "u1"], "book_id": ["b1", "b2"], "stars": [4, 5]}).to_csv(
        tmp_path / "r.csv", index=False
    )
    cols = {"item_col": "book_id", "title_col": "name", "genre_col": "category",
            "year_col": "pub_year"}  # fmt: skip
    ds = load_table(tmp_path / "r.csv", tmp_path / "items.csv", user_col="reader",
                    rating_col="stars", text_cols=["description", "category"], **cols)  # fmt: skip
    fitted.metadata["data_spec"] = cols | {"text_cols": "description,category"}
    try:
        with warnings.catch_warnings():  # every column of the file's rows is read
            warnings.simplefilter("error")
            new = fitted.prepare_items(items.assign(book_id=["n1", "n2"]))
    finally:
        del fitted.metadata["data_spec"]
    assert new["text"].tolist() == ds.items["text"].tolist()
    assert new["genres"].tolist() == ["gardening", "science|nature"]


def test_a_title_two_items_share_names_both(fitted: Recommender) -> None:
    # ml-100k holds Cape Fear of 1962 and of 1991: the bare title is either
    with pytest.raises(DataError, match=r"title 'Cape Fear' is shared by items \['\d+', '\d+'\]"):
        fitted.adapt([("Cape Fear", 5)])
    a, b = (fitted.resolve(f"Cape Fear ({y})") for y in (1962, 1991))
    assert a != b


def test_implicit_scores_do_not_depend_on_who_shares_the_batch(shared_data: Path) -> None:
    # sampled support negatives came from one stream for the whole batch, so adding a
    # user to the call moved another's scores (by up to 0.26, reordering items)
    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(ds.items, "tfidf", progress=False)
    cfg = TrainConfig(objective="bce", epochs=1, max_train_users=60, seed=1, device="cpu")
    rec, _ = fit_recommender(catalogue, ds.interactions, cfg, users=ds.users, progress=False)
    history = [("1", 5), ("50", 1), ("181", 4)]
    alone = rec.score(rec.adapt(history))
    with_others = rec.score(rec.adapt_many([[("300", 4), ("7", 2)], history])[-1])
    np.testing.assert_allclose(alone, with_others, rtol=1e-5, atol=1e-6)
    # nor on the order the ratings are given in: the negatives were seeded by the list,
    # so the same ratings reversed moved scores by up to 0.026
    reversed_ = rec.score(rec.adapt(history[::-1]))
    np.testing.assert_allclose(alone, reversed_, rtol=1e-5, atol=1e-6)


def _task() -> Task:
    return Task(0, np.array([0, 1]), np.array([5.0, 3.0], np.float32), np.array([2, 3]),
                np.array([4.0, 4.0], np.float32))  # fmt: skip


def _codes(rec: Recommender, shift: float = 0) -> np.ndarray:
    return np.zeros((1, len(rec.features.columns))) + shift


@pytest.mark.parametrize(
    "call, error, needle",
    [
        # 100 and -50 stars moved the user's model as no rating can (17.1 on 1-5 stars)
        (lambda r: r.predict_tasks([replace(_task(), support_ratings=np.array([100.0, -50.0]))]),
         DataError, "predict_tasks: task 0: support rating 100 is off the model's scale [1, 5]"),
        (lambda r: r.score_catalogue([replace(_task(), support_ratings=np.array([5.0, 0.0]))]),
         DataError, "score_catalogue: task 0: support rating 0 is off the model's scale"),
        (lambda r: r.score_catalogue([replace(_task(), support_items=np.array([1, 1]))]),
         DataError, "score_catalogue: task 0: support item 1 is given twice"),
        # -1 returned [] without a word, 0 and 1.5 were range()'s errors
        (lambda r: r.predict_tasks([_task()], batch_size=-1), ConfigError,
         "predict_tasks: batch_size: must be a whole number >= 1, got -1"),
        (lambda r: r.predict_tasks([_task()], batch_size=0), ConfigError, "got 0"),
        (lambda r: r.predict_tasks([_task()], batch_size=1.5), ConfigError, "got 1.5"),
        # codes past an embedding's rows were torch's IndexError; 1.9 was cut to 1
        (lambda r: r.predict_tasks([_task()], _codes(r, 999)), DataError,
         "users: row 0: age code 999.0 is not a whole number in [0, "),
        (lambda r: r.score_catalogue([_task()], _codes(r, -1)), DataError,
         "users: row 0: age code -1.0 is not"),
        (lambda r: r.score_catalogue([_task()], _codes(r, 1.9)), DataError, "code 1.9 is not"),
        (lambda r: r.score_catalogue([_task()], _codes(r).astype(bool)), DataError,
         "feature codes must be whole numbers, got bool"),
        # a users table without its user_id column was pandas' KeyError
        (lambda r: r.predict_tasks([_task()], pd.DataFrame({"age": [20]})), DataError,
         "users: a users table needs a user_id column"),
        (lambda r: r.score_catalogue(
            [_task()], pd.DataFrame([["u", 20, 30]], columns=["user_id", "age", "age"])),
         DataError, "users: column(s) ['age'] appear more than once"),
    ],
)  # fmt: skip
def test_tasks_and_feature_codes_the_model_cannot_read_are_refused(
    fitted: Recommender, call: Callable[[Recommender], object], error: type, needle: str
) -> None:
    assert fitted.features.columns[0] == "age"
    with pytest.raises(error, match=re.escape(needle)):
        call(fitted)


def test_whole_feature_codes_and_batches_of_one_read(fitted: Recommender) -> None:
    codes = np.ones((2, len(fitted.features.columns)))  # floats, but whole
    one = fitted.predict_tasks([_task(), _task()], codes, batch_size=1)
    np.testing.assert_allclose(one[1], fitted.predict_tasks([_task()], codes[:1])[0], rtol=1e-5)


def test_a_task_rating_at_the_top_of_a_continuous_scale_stored_as_float32_is_on_it() -> None:
    from metarec.data.tasks import Task
    from metarec.models.base import check_tasks

    # retrain's feedback, clipped to the top (4.3) and held as float32, a hair above it
    top = Task.support_only([0], np.array([4.3], np.float32))
    check_tasks([top], 5, None, "predict_tasks", rating_range=(0.5, 4.3))
    with pytest.raises(DataError, match=r"support rating 4\.4 is off"):
        check_tasks([Task.support_only([0], np.array([4.4], np.float32))], 5, None, "x",
                    rating_range=(0.5, 4.3))  # fmt: skip


@pytest.mark.parametrize(
    "seen, needle",
    [
        # -1 excluded the catalogue's last item without a word; 0.5 was numpy's IndexError
        ([-1], "user: seen: item -1 is not a catalogue index"),
        ([0.5], "user: seen: item 0.5 is not a catalogue index"),
        (["1"], "user: seen: expected a 1-d array of catalogue indices"),
    ],
)
def test_hand_built_seen_items_that_are_no_indices_are_refused(
    fitted: Recommender, seen: list, needle: str
) -> None:
    from metarec.recommender import UserState

    user = fitted.adapt([("Toy Story (1995)", 5)])
    with pytest.raises(DataError, match=re.escape(needle)):
        fitted.recommend(UserState(user.params, np.asarray(seen), user.user_features))


def test_nan_parameters_are_refused_not_ranked(fitted: Recommender) -> None:
    from metarec.recommender import UserState

    user = fitted.adapt([("Toy Story (1995)", 5)])
    # they put a seen item first, scored -inf
    nan = {k: v * float("nan") for k, v in user.params.items()}
    with pytest.raises(ModelError, match="recommend: scored NaN for"):
        fitted.recommend(UserState(nan, user.seen, user.user_features), k=3)


def test_no_tasks_score_as_an_empty_table(fitted: Recommender) -> None:
    assert fitted.score_catalogue([]).shape == (0, fitted.n_items)
    assert fitted.predict_tasks([]) == []


def test_wrong_kinds_of_input_are_refused_by_name(fitted: Recommender, tmp_path: Path) -> None:
    from metarec.data.tasks import Task

    empty = np.zeros(0, np.int64), np.zeros(0, np.float32)

    user = fitted.adapt([("Toy Story (1995)", 5)])
    for call, needle in [
        (lambda: fitted.adapt(5), "history: expected (item, rating) pairs"),  # type: ignore[arg-type]
        (lambda: fitted.adapt_many(None), "adapt_many: expected a list of histories"),  # type: ignore[arg-type]
        (lambda: fitted.adapt([("1", 5)], user_features="M"), "user_features: expected a mapping"),  # type: ignore[arg-type]
        (lambda: fitted.adapt_many([[("1", 5)]], {"age": 20}), "one mapping (or None) a user"),  # type: ignore[arg-type]
        # True is 1.0 to float(): a flag taken for the lowest star
        (lambda: fitted.adapt([("Toy Story (1995)", True)]), "rating True is not a number"),
        (lambda: fitted.median_ratings([float("nan"), 3.0]), "scores: expected a 1-d array"),
        (
            lambda: fitted.median_ratings(None),
            "scores: expected numbers (what score() returns), got None",
        ),  # type: ignore[arg-type]
        (lambda: fitted.recommend(user, exclude_seen="no"), "exclude_seen: expected True"),  # type: ignore[arg-type]
        (
            # built as a Task: support_only refuses -1 itself
            lambda: fitted.score_catalogue([Task(0, np.array([-1]), np.array([5.0]), *empty)]),
            "score_catalogue: task 0: support item -1 is not in",
        ),
        (
            lambda: fitted.score_catalogue(
                [Task.support_only([3], np.array([5.0], np.float32))] * 2,
                users=np.zeros((5, len(fitted.features.columns)), dtype=np.int64),
            ),
            "users: expected 2 rows",
        ),
        (
            lambda: fitted.add_items(pd.DataFrame({"item_id": [" n1 "], "title": ["A"]})),
            "starts or ends with a space",
        ),
        (lambda: fitted.save(None), "save: expected a folder path, got None"),  # type: ignore[arg-type]
        (
            lambda: fitted.fold_in_items(
                pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["1", None], "rating": [4, 5]})
            ),
            "fold_in_items: row 1 (user_id 'u1', rating 5): no item_id",
        ),
        (
            lambda: fitted.fold_in_items(
                pd.DataFrame({"user_id": ["u1"], "item_id": ["1"], "rating": [True]})
            ),
            "row 0 (user_id 'u1', rating True): a boolean, not a rating",
        ),
    ]:
        with pytest.raises(DataError, match=re.escape(needle)):
            call()
    # a generator of feature rows is taken as histories are
    assert fitted.adapt_many([[("1", 5)]], (f for f in [{"age": 20}]))[0].n_ratings == 1


def test_an_unknown_id_names_the_id_that_writes_its_number_otherwise(
    fitted: Recommender, tmp_path: Path
) -> None:
    # ids are text: --rate 99999=1 met only "unknown item '99999'" beside "0099999"
    from metarec.errors import UnknownItemError

    rec = Recommender.load(fitted.save(tmp_path / "run"))
    rec.add_items(pd.DataFrame({"item_id": ["0099999"], "title": ["A Padded Id"]}))
    with pytest.raises(UnknownItemError, match=r"'99999': .*; close matches: '0099999'"):
        rec.resolve("99999")
    with pytest.raises(UnknownItemError) as caught:
        rec.resolve("99998")
    assert "0099999" not in caught.value.suggestions
    # with nothing close, the message still says that both ids and titles were tried
    assert str(caught.value) == "unknown item '99998': no item has this id or title"
    # exactly: read through a float, 18 digits named another item's id
    rec.add_items(pd.DataFrame({"item_id": ["123456789012345678"], "title": ["Long Id"]}))
    with pytest.raises(UnknownItemError) as caught:
        rec.resolve("123456789012345679")
    assert "123456789012345678" not in caught.value.suggestions


def test_added_items_are_keyed_and_worded_as_the_loaders_would(
    fitted: Recommender, tmp_path: Path
) -> None:
    rec = Recommender.load(fitted.save(tmp_path / "run"))
    rec.add_items(
        pd.DataFrame(
            {"item_id": [6000.0, 6001.0], "title": ["Float Id", "Listed"],
             "genres": ["Drama", ["Comedy", "Drama"]]}
        )
    )  # fmt: skip
    assert rec.items["item_id"].tolist()[-2:] == ["6000", "6001"]
    assert rec.resolve(6000) == rec.n_items - 2
    assert rec.items["text"].iloc[-1] == "Listed. Genres: Comedy, Drama."


def test_added_items_may_come_in_the_shape_of_the_runs_item_file(
    fitted: Recommender, tmp_path: Path
) -> None:
    """A run trained from files with columns of its own (``--items-id-col book_id
    --title-col name --genre-col category --year-col pub_year --text-cols blurb``) takes
    new rows under those names, with their text built as the file's was."""
    rec = Recommender.load(fitted.save(tmp_path / "run"))
    rec.metadata["data_spec"] = {
        "item_col": "book", "item_id_col": "book_id", "title_col": "name",
        "genre_col": "category", "year_col": "pub_year", "text_cols": "blurb",
    }  # fmt: skip
    theirs = pd.DataFrame({"book_id": ["b1"], "name": ["The Alibi"], "pub_year": [2024],
                           "category": ["Mystery"], "blurb": ["A quiet village."]})  # fmt: skip
    ours = theirs.rename(columns={"book_id": "item_id", "name": "title", "pub_year": "year",
                                  "category": "genres"})  # fmt: skip
    expected = rec.prepare_items(ours)["text"].iloc[0]
    assert "The Alibi (2024)" in expected and "Mystery" in expected and "village" in expected
    assert rec.add_items(theirs) == 1
    assert rec.items["item_id"].iloc[-1] == "b1" and rec.items["text"].iloc[-1] == expected
    assert "book_id" in theirs.columns and "item_id" not in theirs.columns  # left as given
    # metarec's own names win where a frame has both
    both = ours.assign(item_id=["b2"], book_id=["b3"])
    with pytest.warns(UserWarning, match=r"column\(s\) \['book_id'\] not read"):
        rec.add_items(both)
    assert rec.items["item_id"].iloc[-1] == "b2"


def test_added_rows_of_the_runs_item_file_get_the_text_the_file_gave_them(
    fitted: Recommender, tmp_path: Path
) -> None:
    """Dates in the year column lost the year, and "science; interview" stayed one
    genre, where the loader had read 2024 and two genres; Unix times (a news feed's
    publication times) were taken as years past 9999 and dropped from the text."""
    from metarec.data import load_table

    (tmp_path / "plays.csv").write_text("listener,episode,played\nu1,e1,1\nu1,e2,1\n")
    (tmp_path / "episodes.csv").write_text(
        "id,headline,published,tags\n"
        "e1,Space physics,2024-03-01,science; interview\n"
        "e2,Late news,1709251200000,news\n"
    )
    options = {"user_col": "listener", "item_col": "episode", "rating_col": "played",
               "item_id_col": "id", "title_col": "headline", "year_col": "published",
               "genre_col": "tags"}  # fmt: skip
    with pytest.warns(UserWarning, match=r"1 year\(s\) are Unix times, read as their year "
                      r"\(e\.g\. line 3: '?1709251200000'? as 2024\)"):  # fmt: skip
        ds = load_table(tmp_path / "plays.csv", tmp_path / "episodes.csv", **options)
    loaded = ds.items.set_index("item_id")["text"]
    assert loaded["e1"].startswith("Space physics (2024)") and "science, interview" in loaded["e1"]
    assert loaded["e2"].startswith("Late news (2024)")
    rec = Recommender.load(fitted.save(tmp_path / "run"))
    rec.metadata["data_spec"] = options
    rows = pd.read_csv(tmp_path / "episodes.csv", dtype=str).assign(id=["n1", "n2"])
    with pytest.warns(UserWarning, match="Unix times"):
        added = rec.prepare_items(rows)
    assert added["text"].tolist() == [loaded["e1"], loaded["e2"]]


def test_pipeline_arguments_of_the_wrong_kind_are_named() -> None:
    users = pd.DataFrame({"user_id": ["1", "2", "3"]})
    for call, error, needle in [
        (
            lambda: split_users(users, 1.5, 0),
            ConfigError,
            r"fraction: must be a number in \[0, 1\)",
        ),
        (lambda: split_users(users, "x", 0), ConfigError, "fraction: must be a number"),
        (lambda: split_users(users, 0.5, -1), ConfigError, "seed: must be a whole number >= 0"),
        (lambda: encode_catalogue(None, "tfidf"), DataError, "items: expected a DataFrame"),
        (
            lambda: encode_catalogue(pd.DataFrame({"item_id": ["1"], "title": ["x"]}), 5),
            ConfigError,
            "encoder: expected an encoder or its name, got 5",
        ),
    ]:
        with pytest.raises(error, match=needle):
            call()  # type: ignore[arg-type]


def test_fit_recommender_refuses_bad_arguments_before_training(
    shared_data: Path, tmp_path: Path
) -> None:
    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(ds.items, "tfidf", cache_dir=tmp_path / "emb", progress=False)
    cfg = TrainConfig(epochs=1, max_train_users=20, inner_steps=1, seed=0, device="cpu")
    train = ds.interactions.head(500)
    nine, nan = train.copy(), train.copy()
    nine.iloc[3, nine.columns.get_loc("rating")] = 9  # trained on a 1-5 scale silently
    nan.iloc[0, nan.columns.get_loc("rating")] = np.nan  # ended as "training diverged"
    (tmp_path / "afile").write_text("")
    fit = fit_recommender
    for call, needle in [
        (lambda: fit(catalogue, nine, cfg, progress=False),
         "train: row 3 (user_id '244', rating 9.0): rating outside [1, 5] or not a number"),
        (lambda: fit(catalogue, nan, cfg, progress=False), "train: row 0"),
        (lambda: fit(catalogue, train, cfg, rating_range=(2, 4), progress=False),
         "rating outside [2, 4]"),
        (lambda: fit(catalogue, train.drop(columns="rating"), cfg, progress=False),
         "train: missing column(s) ['rating']"),
        (lambda: fit(catalogue, [1, 2], cfg, progress=False), "train: expected a DataFrame"),
        (lambda: fit(catalogue, train, cfg, validation=train[["user_id"]], progress=False),
         "validation: missing column(s)"),
        (lambda: fit(catalogue, train, cfg, rating_range=(5, 1), progress=False),
         "rating_range: expected finite low <= high, got (5, 1)"),
        (lambda: fit(catalogue, train, cfg, rating_range="1-5", progress=False),
         "rating_range: expected (low, high)"),
        (lambda: fit(ds.items, train, cfg, progress=False), "catalogue: expected the Catalogue"),
        (lambda: fit(catalogue, train, {"epochs": 1}, progress=False),
         "cfg: expected a TrainConfig, got dict"),
        (lambda: fit(catalogue, train, cfg, users=[1, 2], progress=False),
         "users: expected a DataFrame with a user_id column"),
        # these two were refused only after the whole training
        (lambda: fit(catalogue, train, cfg, metadata=[1], progress=False),
         "metadata: expected a dict, got list"),
        (lambda: fit(catalogue, train, cfg, checkpoint_dir=tmp_path / "afile", progress=False),
         "is a file; a folder is needed"),
    ]:  # fmt: skip
        with pytest.raises((DataError, ConfigError), match=re.escape(needle)):
            call()  # type: ignore[no-untyped-call]


def test_encoding_and_loading_check_their_arguments(shared_data: Path, tmp_path: Path) -> None:
    import metarec
    from metarec.data import load_atomic
    from metarec.ensemble_run import load_run

    items = pd.DataFrame({"item_id": [61.0, 62.0], "title": ["Heat", "Ran"]})
    # ids read as floats: "61.0" in the catalogue, which no rating's "61" found
    catalogue = encode_catalogue(items, "tfidf", cache_dir=tmp_path / "emb", progress=False)
    assert catalogue.index == {"61": 0, "62": 1}
    twice = pd.DataFrame([[1, "A", 1]], columns=["item_id", "title", "item_id"])
    (tmp_path / "afile").write_text("")
    ds = load_dataset("ml-100k", root=shared_data)
    for call, error, needle in [
        # a class passed the encoder check, then failed on an unbound property
        (lambda: encode_catalogue(items, metarec.TfidfSvdEncoder, progress=False),
         ConfigError, "encoder: expected an encoder or its name, got <class"),
        (lambda: encode_catalogue(items, "tfidf", cache_dir=5, progress=False),
         ConfigError, "cache_dir: expected a folder path, got int"),
        (lambda: encode_catalogue(twice, "tfidf", progress=False),
         DataError, "items: two columns named 'item_id'; keep one"),
        # refused after the catalogue's encoding, before
        (lambda: metarec.train(ds, encoder="tfidf", run_dir=tmp_path / "afile"),
         ConfigError, "run_dir: " + str(tmp_path / "afile") + " is a file"),
        (lambda: metarec.train(ds, encoder="tfidf", run_dir=7), ConfigError,
         "run_dir: expected a folder path, got int"),
        (lambda: load_run(5), ConfigError, "run: expected a run folder's path, got int"),
        (lambda: load_atomic(5), DataError, "directory_or_prefix: expected a folder"),
    ]:  # fmt: skip
        with pytest.raises(error, match=re.escape(needle)):
            call()  # type: ignore[no-untyped-call]


def test_a_rating_at_the_top_of_a_continuous_scale_stored_as_float32_is_on_it() -> None:
    from metarec.recommender import check_rating_frame

    # retrain clips feedback to the scale's top (4.3) and stores float32, a hair above
    frame = pd.DataFrame({"user_id": ["u"], "item_id": ["1"], "rating": [4.3]})
    frame["rating"] = frame["rating"].astype(np.float32)
    assert float(frame["rating"].iloc[0]) > 4.3
    check_rating_frame(frame, (0.5, 4.3), "train")
    with pytest.raises(DataError, match="rating outside"):
        check_rating_frame(frame.assign(rating=4.4), (0.5, 4.3), "train")


def test_train_records_its_users_and_drops_an_earlier_runs_split(
    shared_data: Path, tmp_path: Path
) -> None:
    import metarec
    from metarec.config import TrainConfig
    from metarec.trained_users import recorded_training_users

    ds = load_dataset("ml-100k", root=shared_data)
    run = tmp_path / "run"
    run.mkdir()
    # an earlier P1 run's files: evaluate would have judged the new model, trained on
    # every user, on "new" users it learned from
    (run / "split.json").write_text('{"new_users": ["1"], "train_users": []}')
    (run / "metrics.json").write_text('{"summary": "an earlier model"}')
    # a CLI run's settings: they stood beside the model trained with others
    (run / "config.json").write_text('{"algorithm": "maml", "inner_lr": 0.1}')
    # a retrain's records: the next retrain judged on users this model trained on
    (run / "heldout.json").write_text('{"rule": "old", "users": ["1"]}')
    (run / "retrain.json").write_text('{"verdict": "an earlier retrain"}')
    cfg = TrainConfig(epochs=1, max_train_users=50, inner_steps=1, device="cpu")
    rec = metarec.train(ds, cfg, encoder="tfidf", cache_dir=tmp_path / "emb", run_dir=run,
                        progress=False, validation_fraction=0.2)  # fmt: skip
    assert not (run / "split.json").exists() and not (run / "metrics.json").exists()
    assert not (run / "heldout.json").exists() and not (run / "retrain.json").exists()
    # what retrain reads to hold out the users this run early-stopped on
    assert rec.metadata["validation_fraction"] == 0.2
    # with the encoder it used (it said "minilm", the config's, beside a TF-IDF run)
    assert json.loads((run / "config.json").read_text()) == {**cfg.to_dict(), "encoder": "tfidf"}
    recorded = recorded_training_users(run)
    assert recorded is not None
    assert recorded == (set(ds.interactions["user_id"]), str(run / "trained-users.json"))


def test_a_failed_train_save_leaves_no_old_run_beside_the_new_users(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import metarec
    from metarec.config import TrainConfig
    from metarec.errors import ModelError

    ds = load_dataset("ml-100k", root=shared_data)
    run = tmp_path / "run"
    cfg = TrainConfig(epochs=1, max_train_users=50, inner_steps=1, device="cpu")
    metarec.train(ds, cfg, encoder="tfidf", cache_dir=tmp_path / "emb", run_dir=run,
                  progress=False)  # fmt: skip

    def full_disk(rec: Recommender, directory: object) -> None:
        raise ModelError(f"{directory}: not saved: No space left on device")

    import metarec.run_folder

    monkeypatch.setattr(metarec.run_folder, "write_run", full_disk)  # what train writes with
    with pytest.raises(ModelError, match="No space left"):
        metarec.train(ds, cfg, encoder="tfidf", cache_dir=tmp_path / "emb", run_dir=run,
                      progress=False)  # fmt: skip
    # the old model is no run any more: it would have been loaded beside the new
    # run's record of its users
    assert not (run / "recommender.json").exists()


def _books(folder: Path) -> tuple[Path, Path]:
    """A small books catalogue in files with columns of their own."""
    rng = np.random.default_rng(0)
    genres = ["Mystery", "Fantasy", "Romance", "History"]
    books = pd.DataFrame(
        {
            "book_id": [f"isbn{i:03d}" for i in range(60)],
            "name": [f"Book number {i}" for i in range(60)],
            "category": [genres[i % 4] for i in range(60)],
            "author": [f"Writer {i % 7}" for i in range(60)],
            "description": [f"a {genres[i % 4].lower()} tale of place {i}" for i in range(60)],
        }
    )
    rows = [
        (f"r{u}", f"isbn{i:03d}", int(rng.integers(1, 6)))
        for u in range(40)
        for i in rng.choice(60, 15, replace=False)
    ]
    ratings = pd.DataFrame(rows, columns=["reader", "book", "stars"])
    books.to_csv(folder / "books.csv", index=False)
    ratings.to_csv(folder / "ratings.csv", index=False)
    return folder / "ratings.csv", folder / "books.csv"


def test_a_run_trained_in_python_builds_new_items_text_as_its_files_did(
    tmp_path: Path,
) -> None:
    """A run trained from Python on load_table's files built a new item's text from
    title, year and genres alone (the catalogue's held author and description), and
    refused rows named as the file names its columns; `metarec train` recorded both."""
    from metarec import clean, load_table, train
    from metarec.data.spec import load_from_spec
    from metarec.data.text import ItemTextConfig

    ratings, books = _books(tmp_path)
    options: dict[str, Any] = {
        "user_col": "reader", "item_col": "book", "rating_col": "stars",
        "item_id_col": "book_id", "title_col": "name", "genre_col": "category",
        "text_cols": ["author", "description"],
    }  # fmt: skip
    ds = clean(load_table(ratings, books, **options))
    assert ds.spec is not None and ds.spec["text_cols"] == "author,description"
    again = load_from_spec(ds.spec)  # the recorded options read the same data
    pd.testing.assert_frame_equal(again.items, ds.items)
    pd.testing.assert_frame_equal(again.interactions, ds.interactions)
    cfg = TrainConfig(epochs=1, inner_steps=1, seed=0, device="cpu", encoder="tfidf")
    rec = train(ds, cfg, run_dir=tmp_path / "run", progress=False)
    rec = Recommender.load(tmp_path / "run")
    new = pd.DataFrame({"book_id": ["n1"], "name": ["A Dragon Saga"], "category": ["Fantasy"],
                        "author": ["Someone"], "description": ["dragons and wizards"]})  # fmt: skip
    text = rec.prepare_items(new)["text"].iloc[0]
    assert "Someone" in text and "dragons and wizards" in text, text
    # its column options, not its files: a data set filtered since would be read whole
    recorded = rec.metadata["data_spec"]
    assert recorded["text_cols"] == "author,description" and recorded["interactions"] is None
    assert text.startswith("A Dragon Saga") and "Fantasy" in text
    # options a spec cannot say leave the data set, and so its runs, without one
    assert load_table(ratings, books, sep=",", **options).spec is None
    custom = ItemTextConfig(extra=("author",), template="{title}")
    assert load_table(ratings, books, **{**options, "text": custom}).spec is None


def test_a_text_template_lays_out_the_catalogue_and_every_new_item_alike(
    tmp_path: Path,
) -> None:
    """A books catalogue's text laid out its own way ("by", "Shelves:") is recorded with
    the run, so a new item from Python, the HTTP API or retrain's stored additions reads
    to the encoder as the catalogue's items do; the default's "Genres:" otherwise."""
    from metarec import clean, load_table, train
    from metarec.data.spec import load_from_spec, recorded_item_text
    from metarec.data.text import ItemTextConfig
    from metarec.retrain import combined_items
    from metarec.service.items import item_frame, layout_of

    ratings, books = _books(tmp_path)
    # a missing part goes with its brackets and its "Label:", not with other words
    template = "{title}. Author: {author}. Shelves: {genres}."
    options: dict[str, Any] = {
        "user_col": "reader", "item_col": "book", "rating_col": "stars",
        "item_id_col": "book_id", "title_col": "name", "genre_col": "category",
        "text_cols": ["author"],
    }  # fmt: skip
    ds = clean(load_table(ratings, books, **options, text=ItemTextConfig(
        template=template, extra=["author"])))  # fmt: skip
    first = ds.items.set_index("item_id").loc["isbn001", "text"]
    assert first == "Book number 1. Author: Writer 1. Shelves: Fantasy.", first
    assert ds.spec is not None and ds.spec["text_template"] == template
    pd.testing.assert_frame_equal(load_from_spec(ds.spec).items, ds.items)
    cfg = TrainConfig(epochs=1, inner_steps=1, seed=0, device="cpu", encoder="tfidf")
    train(ds, cfg, run_dir=tmp_path / "run", progress=False)
    rec = Recommender.load(tmp_path / "run")
    assert rec.metadata["data_spec"]["text_template"] == template
    new = pd.DataFrame({"book_id": ["n1"], "name": ["A Dragon Saga"], "category": ["Fantasy"],
                        "author": ["Someone"]})  # fmt: skip
    made = rec.prepare_items(new)["text"].iloc[0]
    assert made == "A Dragon Saga. Author: Someone. Shelves: Fantasy.", made
    # the API takes no author: that part is left out with its label, the client's text after
    row = {"item_id": "n2", "title": "Sea Song", "genres": ["Romance"], "text": "A love story."}
    served = item_frame([row], rec.items["text"], layout_of(rec))["text"].iloc[0]
    assert served == "Sea Song. Shelves: Romance. A love story.", served
    kept = combined_items(rec.items, [row], layout=recorded_item_text(rec.metadata["data_spec"]))
    assert kept["text"].iloc[-1] == served
    # the default layout where none was recorded
    assert item_frame([row])["text"].iloc[0] == "Sea Song. Genres: Romance. A love story."
    # a layout that places the file's own text is no spec's (a new item's text is whole)
    described = pd.read_csv(books).assign(text="a tale")
    described.to_csv(tmp_path / "described.csv", index=False)
    placed = ItemTextConfig(template="{title}: {text}", extra=["author", "text"])
    options["text_cols"] = ["author", "text"]
    assert load_table(ratings, tmp_path / "described.csv", **options, text=placed).spec is None


def test_a_text_template_is_checked_before_the_data_is_read(tmp_path: Path) -> None:
    from metarec.data.spec import load_from_spec

    ratings, books = _books(tmp_path)
    spec = {"interactions": str(ratings), "items": str(books), "user_col": "reader",
            "item_col": "book", "rating_col": "stars", "item_id_col": "book_id",
            "title_col": "name", "text_cols": "author"}  # fmt: skip
    for template, said in [
        ("{title} by {writer}", r"\{writer\} is no item field; it may use \{title\}, "
         r"\{year\}, \{genres\}, \{author\} \(name other columns"),
        ("{title", "--text-template: item text template '{title' is malformed"),
        ("{title}. {text}", r"\{text\}, the items file's own text column, follows the"),
        ("{year:04d}", "use plain named fields"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match=said):
            load_from_spec({**spec, "text_template": template})


def test_time_ordered_episodes_without_timestamps_are_warned_about(shared_data: Path) -> None:
    # the episodes fell back to random order without a word
    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(ds.items, "tfidf", progress=False)
    untimed = ds.interactions.drop(columns="timestamp")
    cfg = TrainConfig(epochs=1, max_train_users=20, inner_steps=1, seed=0, device="cpu",
                      episode_order="time")  # fmt: skip
    with pytest.warns(UserWarning, match="episode_order=time: the training data has no timest"):
        fit_recommender(catalogue, untimed, cfg, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_recommender(catalogue, ds.interactions, cfg, progress=False)
    assert not [w for w in caught if "episode_order" in str(w.message)]


def test_served_lists_break_ties_as_every_ranked_list_does(
    fitted: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the serving path took ties as argpartition left them, and a seen item could come
    # back among items the model scored -inf
    from metarec.models.base import tie_order

    user = fitted.adapt([("1", 5), ("2", 1)])  # items 0 and 1 seen
    crafted = np.full(fitted.n_items, -np.inf)
    crafted[10:20] = 1.0  # ten tied items
    monkeypatch.setattr(
        fitted,
        "score",
        lambda _, items=None: (
            crafted[[fitted.resolve(i) for i in items]] if items is not None else crafted.copy()
        ),
    )
    top, scores = fitted.top(user, 12)
    tied = [i for i in tie_order(fitted.n_items) if 10 <= i < 20]
    assert top[:10].tolist() == tied and scores[:10].tolist() == [1.0] * 10
    assert not {0, 1} & set(top.tolist()) and np.isneginf(scores[10:]).all()
    top, _ = fitted.top(user, 5, candidates=["1", "2", "3"], exclude_seen=True)
    assert top.tolist() == [2]  # the only candidate not seen, though scored -inf


def test_a_run_rewritten_while_it_is_read_is_read_again(
    fitted: Recommender, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a train into the folder between the manifest and the weights gave one run's
    # cutpoints with another's weights, served without a word
    import metarec.run_folder as run_folder

    first = fitted.save(tmp_path / "run")
    other = Recommender.load(first)
    real, calls = run_folder.load_tensors, []

    def rewritten_meanwhile(path: Path) -> dict[str, torch.Tensor]:
        calls.append(path)
        if len(calls) == 1:  # another process saves the folder anew, mid-read
            other.metadata = {**other.metadata, "note": "the second writer"}
            other.save(first)
        return real(path)

    monkeypatch.setattr(run_folder, "load_tensors", rewritten_meanwhile)
    loaded = Recommender.load(first)
    assert len(calls) == 2 and loaded.metadata["note"] == "the second writer"

    def always_rewritten(path: Path) -> dict[str, torch.Tensor]:
        other.save(first)
        return real(path)

    monkeypatch.setattr(run_folder, "load_tensors", always_rewritten)
    with pytest.raises(ModelError, match="changed while it was read, 5 times"):
        Recommender.load(first)


def test_a_read_that_meets_half_of_a_write_waits_and_reads_again(
    fitted: Recommender, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer's loop of loads beside a loop of saves met "items.json has 1682 items,
    the model 1684", a weights file shorter than its header, and "not a metarec run":
    halves of a write, said as a damaged run, where a wait and a second read load it."""
    import threading

    import metarec.run_folder as run_folder
    from metarec.locks import exclusive, lock_path

    first = fitted.save(tmp_path / "run")
    other = Recommender.load(first)
    real, calls = run_folder.load_tensors, []

    def half_written(path: Path) -> dict[str, torch.Tensor]:
        calls.append(path)
        if len(calls) == 1:  # the other save lands, and this read saw its half
            other.metadata = {**other.metadata, "note": "the second writer"}
            other.save(first)
            raise ModelError(f"{first}: items.json has 1682 items, the model 1684")
        return real(path)

    monkeypatch.setattr(run_folder, "load_tensors", half_written)
    assert Recommender.load(first).metadata["note"] == "the second writer"
    monkeypatch.setattr(run_folder, "load_tensors", real)

    # the manifest gone while a writer holds the lock: it comes back, and is read
    manifest = first / "recommender.json"
    text = manifest.read_bytes()
    with exclusive(first, "test"):
        manifest.unlink()
        threading.Timer(0.1, manifest.write_bytes, [text]).start()
        assert Recommender.load(first).metadata["note"] == "the second writer"
        manifest.unlink()  # and one that does not come back is named with its writer
        with pytest.raises(ModelError, match=rf"no recommender\.json while process {os.getpid()}"):
            Recommender.load(first)
    # a lock a killed process left (a dead pid): no writer to wait for
    waits: list[float] = []
    monkeypatch.setattr(run_folder.time, "sleep", waits.append)
    lock_path(first).write_text("999999999\n")  # the manifest is still gone
    with pytest.raises(ModelError, match=r"not a metarec run \(no recommender\.json\)"):
        Recommender.load(first)
    assert waits == []
    lock_path(first).unlink()
    # damage that is not a write in progress is said at once, with no wait
    manifest.write_bytes(text)
    (first / "items.json").write_text("[]")
    with pytest.raises(ModelError, match=r"items\.json: expected an object of columns"):
        Recommender.load(first)
    assert waits == []


def test_a_run_read_again_warns_of_its_missing_device_once(
    fitted: Recommender, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each read of a run rewritten meanwhile said the device warning again
    import metarec.run_folder as run_folder

    run = fitted.save(tmp_path / "run")
    meta = json.loads((run / "recommender.json").read_text())
    meta["config"]["device"] = "cuda:63"
    (run / "recommender.json").write_text(json.dumps(meta))
    real, calls = run_folder.load_tensors, []

    def rewritten_once(path: Path) -> dict[str, torch.Tensor]:
        calls.append(path)
        if len(calls) == 1:  # the manifest is written anew between the two stamps
            (run / "recommender.json").write_text(json.dumps(meta, indent=1))
        return real(path)

    monkeypatch.setattr(run_folder, "load_tensors", rewritten_once)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Recommender.load(run)
    said = [w for w in caught if "trained for device" in str(w.message)]
    assert len(calls) == 2 and len(said) == 1
    assert said[0].filename == __file__  # pointed at the caller of load


def _index_of(rec: Recommender) -> tuple[Any, ...]:
    return (
        rec.item_index,
        {k: sorted(v) for k, v in rec.shared_titles.items()},
        # a shared key's entry is any one of its items; an unshared one's is the item
        {k: v for k, v in rec.title_index.items() if k not in rec.shared_titles},
        rec.loose_titles,
        rec.loose_ids,
        [rec._display(i) for i in range(rec.n_items)],
    )


def test_items_added_are_indexed_as_a_whole_reindex_would_index_them(
    fitted: Recommender, tmp_path: Path
) -> None:
    # add_items indexes the new rows alone (a whole catalogue's titles cost seconds at
    # 100,000 items, every time); what it builds must be what indexing them all builds
    rec = Recommender.load(fitted.save(tmp_path / "run"))
    new = pd.DataFrame(
        {
            "item_id": ["n1", "n2", "n3", "n4", "n5"],
            # a title the catalogue has, one two new items share, a GroupLens form
            "title": ["Toy Story", "Gift Card", "Gift Card", "Lion King, The", "Heat"],
            "year": [1995, 2026, 2026, 2026, 1995],
        }
    )
    rec.add_items(new)
    added = _index_of(rec)
    rec._reindex()
    assert added == _index_of(rec)
    assert sorted(rec.shared_titles["gift card (2026)"]) == [rec.n_items - 4, rec.n_items - 3]
    with pytest.raises(DataError, match="shared by items"):
        rec.resolve("Gift Card (2026)")


def test_items_retitled_are_indexed_and_scored_as_a_whole_reindex_would(
    fitted: Recommender, tmp_path: Path
) -> None:
    # an update re-indexed the whole catalogue (2.9 s for one item of 150,000, under
    # the service's write lock); _retitle remakes its items' keys and (h, b) alone, and
    # must leave what a whole re-index builds. Titles drawn from a few words collide:
    # keys shared, unshared again, first owners replaced, one item updated twice
    from metarec.explain import display_titles

    rec = Recommender.load(fitted.save(tmp_path / "run"))
    rec.add_items(pd.DataFrame({"item_id": ["n1", "n2"], "title": ["Alpha", "Beta"]}))
    rng = np.random.default_rng(3)
    words = ["Alpha", "Beta", "Toy Story", "Lion King, The", "Heat"]
    for _ in range(12):
        idx = [int(i) for i in rng.choice(rec.n_items, size=int(rng.integers(1, 6)))]
        idx += [rec.n_items - 1, 0][: int(rng.integers(0, 3))]  # the last, the first again
        titles = [str(rng.choice(words)) for _ in idx]
        years = [int(rng.choice([1994, 1995, 2026])) for _ in idx]
        texts = [
            f"{t} ({y}). Drama." if rng.random() < 0.8 else f"{t}. Drama."
            for t, y in zip(titles, years, strict=True)
        ]
        with torch.no_grad():  # the caller's part: the new LM vectors
            tower = rec.model.tower
            tower.item_vectors[idx] = torch.randn(len(idx), tower.item_vectors.shape[1])
        rec._retitle(idx, titles, texts)
        retitled = _index_of(rec)
        h, b = rec._h.clone(), rec._b.clone()
        side = rec.learner.scorer.catalogue_side().hw.clone()
        assert rec.items.loc[idx[-1], "title"] == titles[-1]
        rec._reindex()
        assert retitled == _index_of(rec)
        assert retitled[-1] == display_titles(rec)
        torch.testing.assert_close(h, rec._h)
        torch.testing.assert_close(b, rec._b)
        torch.testing.assert_close(side, rec.learner.scorer.catalogue_side().hw)


def test_a_title_changed_in_place_is_displayed_after_reindexing(
    fitted: Recommender, tmp_path: Path
) -> None:
    # the display titles were cached by the frame they came from, and an update changes
    # that frame in place: the old title went on naming the item in explanations
    rec = Recommender.load(fitted.save(tmp_path / "run"))
    first = rec._display(0)
    rec.items.loc[[0], "title"] = "Renamed"
    rec.items.loc[[0], "text"] = "Renamed (1995). Animation."
    rec._reindex()
    assert first != "Renamed (1995)" and rec._display(0) == "Renamed (1995)"
    assert rec.resolve("renamed (1995)") == 0


def test_close_matches_in_a_large_catalogue_come_from_titles_sharing_a_word() -> None:
    from metarec.recommender import _close_matches

    # a catalogue past the full scan: difflib over every title cost 0.7 s at 100,000
    titles = {f"product {n:06d}": n for n in range(30_000)}
    titles |= {"toy story (1995)": 30_000, "story of us (1999)": 30_001}
    assert _close_matches("tpy story (1995)", titles)[0] == "toy story (1995)"
    assert _close_matches("qqqq", titles) == []  # nothing shares a word: no scan of all
    small = {"toy story (1995)": 0, "heat (1995)": 1}
    assert _close_matches("tpy stroy (1995)", small) == ["toy story (1995)"]  # every title


def test_a_run_with_an_encoder_of_ones_own_loads_and_serves(
    shared_data: Path, tmp_path: Path
) -> None:
    # refused at load once encoders were checked there; only adding items, which
    # rebuilds the encoder, cannot be done with it
    import hashlib

    class Hashed:
        dim, id = 16, "hashed:d16"

        def encode(self, texts: Any, *, progress: bool = False) -> np.ndarray:
            seeds = [
                int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts
            ]
            rows = [np.random.default_rng(s).standard_normal(self.dim) for s in seeds]
            return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)

        def to_config(self) -> dict[str, Any]:
            return {"type": "hashed", "dim": self.dim}

    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(ds.items, Hashed(), cache_dir=tmp_path / "emb", progress=False)
    cfg = TrainConfig(epochs=1, max_train_users=40, inner_steps=1, seed=0, device="cpu")
    rec, _ = fit_recommender(catalogue, ds.interactions, cfg, progress=False)
    loaded = Recommender.load(rec.save(tmp_path / "run"))
    user = loaded.adapt([("Toy Story (1995)", 5)])
    np.testing.assert_allclose(loaded.score(user), rec.score(rec.adapt([("Toy Story (1995)", 5)])))
    with pytest.raises(ModelError, match="unknown encoder type 'hashed'"):
        loaded.add_items(pd.DataFrame({"item_id": ["n1"], "title": ["New"]}))


def test_a_run_says_whether_it_predicts_ratings_as_the_models_do(
    fitted: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    # evaluate judges a run beside the peers by this: a softmax run's logits were MAE'd
    from dataclasses import replace as changed

    assert fitted.predicts_ratings is True
    monkeypatch.setattr(fitted, "cfg", changed(fitted.cfg, objective="softmax"))
    assert fitted.predicts_ratings is False


def test_a_reindex_never_shows_readers_a_half_filled_index(
    fitted: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the service checks an event's item against item_index without its lock while an
    # item update re-indexes the catalogue: at every point of the rebuild each id is there
    ids = set(fitted.items["item_id"])
    seen_mid_rebuild: list[bool] = []
    rebuild = fitted._display_titles_from

    def titles_then_look(start: int) -> list[str]:
        seen_mid_rebuild.append(set(fitted.item_index) == ids)
        return rebuild(start)

    monkeypatch.setattr(fitted, "_display_titles_from", titles_then_look)
    fitted._reindex()
    assert seen_mid_rebuild == [True]
    assert set(fitted.item_index) == ids
    assert fitted.resolve("Toy Story (1995)") == fitted.item_index["1"]


def test_softmax_over_a_large_catalogue_warns_of_its_cost() -> None:
    # 18,000 users of 150,000 items trained on silently and did not end an epoch in ten
    # minutes: softmax scores the whole catalogue at every inner step
    from metarec.config import TrainConfig
    from metarec.pipeline import _warn_of_softmax_cost

    cfg = TrainConfig(objective="softmax", inner_steps=5)
    with pytest.warns(UserWarning, match=r"about 16 billion item scores an epoch.*bce or bpr"):
        _warn_of_softmax_cost(cfg, 18_000, 150_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_of_softmax_cost(cfg, 658, 1_682)  # P2 on ml-100k
        _warn_of_softmax_cost(TrainConfig(objective="bce"), 18_000, 150_000)


def test_title_keys_are_the_normalised_title_head_and_dated_title() -> None:
    # _title_keys derives the dated key from the title's and skips normalising a head
    # that is just "title (year)"; fix_title_articles skips its patterns without ", ".
    # Both must give what the plain definitions give, for spaces of every kind, letters
    # that fold or compose, and stray parentheses
    import random

    from metarec.data import text
    from metarec.recommender import _TRAILING_YEAR, _norm, _title_keys

    def plain_fix(title: str) -> str:
        m = text._TAIL_GROUPS_RE.match(title)
        assert m is not None
        tail = text._GROUP_RE.sub(
            lambda g: f"{g.group(1)}({text._move_article(g.group(2))})", m.group("tail")
        )
        return text._move_article(m.group("main")) + tail

    def plain_keys(title: str, head: str) -> tuple[set[str], str | None]:
        keys = {_norm(title), _norm(head)}
        year = _TRAILING_YEAR.search(head)
        if not year:
            return keys, None
        return keys | {_norm(f"{title} ({year.group(1)})")}, _norm(head[: year.start()])

    parts = ["a", "B", " ", "\t", "\u00a0", "\u2003", ",", ", The", "(", ")", "(1995)",
             "e\u0301", "\u00e9", "ß", "İ", "\n", "\x1c", "Ǆ", "ﬁ"]  # fmt: skip
    rng = random.Random(0)
    for _ in range(20_000):
        title = "".join(rng.choice(parts) for _ in range(rng.randint(0, 8)))
        assert text.fix_title_articles(title) == plain_fix(title), repr(title)
        for head in (f"{title} (1995)", title, f"{title.strip()} (2001)", f"{title}(1995)"):
            keys, loose = _title_keys(title, head)
            assert (set(keys), loose) == plain_keys(title, head), (repr(title), repr(head))


def test_quickstart_says_how_much_of_its_list_a_user_with_no_ratings_gets_too(
    fitted: Recommender,
) -> None:
    # quickstart's own run shows the list every new user gets, as if chosen by the ratings
    from metarec.cli.training import shared_with_zero_shot

    demo = [("Toy Story (1995)", 5.0), ("Scream (1996)", 1.0)]
    prior = fitted.recommend(fitted.adapt([]), k=12)
    rated = {"1", fitted.items["item_id"].iloc[fitted.resolve("Scream (1996)")]}
    unrated = prior[~prior["item_id"].isin(rated)].head(10)
    assert shared_with_zero_shot(fitted, demo, unrated).startswith(
        "(all 10 are what a new user with no ratings gets: this list does not follow these ratings"
    )
    # three of them swapped for items far down the prior's list
    tail = fitted.recommend(fitted.adapt([]), k=fitted.n_items).tail(3)
    mixed = pd.concat([unrated.head(7), tail])
    assert shared_with_zero_shot(fitted, demo, mixed) == (
        "(7 of these 10 are also what a new user with no ratings gets)"
    )


def test_a_catalogue_that_changed_while_saving_is_not_saved(
    fitted: Recommender, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """save reads the items and the model's vectors at different moments: items added
    meanwhile by another thread were written as a folder no load accepts ("items.json
    has 1682 items, the model 1683"). Here the addition lands right after the items
    are serialised, as a thread's would."""
    import copy

    from metarec import run_folder

    rec = copy.deepcopy(fitted)
    real = run_folder.json_bytes
    added: list[int] = []

    def then_add(value: Any, **kwargs: Any) -> bytes:
        out = real(value, **kwargs)
        if isinstance(value, dict) and "item_id" in value and not added:
            added.append(rec.add_items(pd.DataFrame({"item_id": ["mid"], "title": ["Mid-save"]})))
        return out

    monkeypatch.setattr(run_folder, "json_bytes", then_add)
    with pytest.raises(ModelError, match="the catalogue changed while it was being saved"):
        rec.save(tmp_path / "run")
    assert added and not (tmp_path / "run" / "recommender.json").exists()


def test_a_contrast_objective_with_nothing_unrated_to_contrast_is_refused(
    shared_data: Path,
) -> None:
    """bpr on users who rated every training item stopped in a reshape's RuntimeError
    (no negative to pair), or, where only some batches had none, the first such batch
    did; bce saved a model scoring every item alike."""
    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(ds.items, "tfidf", progress=False)
    items = ds.items["item_id"].tolist()[:3]
    full = pd.DataFrame(
        [(f"u{u}", i, float(1 + (u + n) % 5)) for u in range(20) for n, i in enumerate(items)],
        columns=["user_id", "item_id", "rating"],
    )
    cfg = TrainConfig(epochs=1, inner_steps=1, seed=0, device="cpu", objective="bpr")
    every = "every training user rated all 3 items"
    with pytest.raises(ConfigError, match=f"objective bpr: {every}"):
        fit_recommender(catalogue, full, cfg, progress=False)
    # bce where every rating is a like too; beside unliked ratings it learns from likes
    liked = full.assign(rating=5.0)
    with pytest.raises(ConfigError, match=f"objective bce: {every}"):
        fit_recommender(catalogue, liked, replace(cfg, objective="bce"), progress=False)
    fit_recommender(catalogue, full, replace(cfg, objective="bce"), progress=False)
    # one user short of one item: bpr trains, batches of users with nothing unrated too
    partly = full.iloc[1:]
    fit_recommender(catalogue, partly, replace(cfg, meta_batch_size=1), progress=False)


def test_a_validation_share_that_rounds_to_no_user_says_so() -> None:
    """Four users and a 10 % validation share: none held out, and training chose its
    epoch by training loss, with no cutpoints, without a word."""
    frame = pd.DataFrame({"user_id": list("abcd"), "item_id": list("wxyz"), "rating": 4.0})
    with pytest.warns(UserWarning, match=r"10% of 4 user\(s\) rounds to none held out"):
        rest, held = split_users(frame, 0.1, seed=0, for_training=True)
    assert len(rest) == 4 and held.empty
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_users(frame, 0.0, seed=0, for_training=True)  # none asked for: nothing to say
        split_users(frame, 0.1, seed=0)  # an existing run's split drawn again: no training
        assert len(split_users(frame, 0.25, seed=0)[1]) == 1


def test_another_runs_state_of_the_same_shapes_is_refused(
    fitted: Recommender, shared_data: Path, tmp_path: Path
) -> None:
    """A user adapted by one run was scored by another of the same shapes (two seeds of
    one config in a notebook) without a word: a list from neither model. The same run
    loaded again takes it (a state kept across a restart of the notebook)."""
    user = fitted.adapt([("Toy Story (1995)", 5), ("Heat (1995)", 2)])
    again = Recommender.load(fitted.save(tmp_path / "again"))
    assert again.recommend(user, k=3)["item_id"].tolist() == (
        fitted.recommend(user, k=3)["item_id"].tolist()
    )
    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(ds.items, "tfidf", progress=False)
    cfg = replace(fitted.cfg, epochs=1, max_train_users=20, seed=4)
    other, _ = fit_recommender(catalogue, ds.interactions, cfg, users=ds.users, progress=False)
    assert other._fast_shapes == fitted._fast_shapes
    with pytest.raises(DataError, match=r"adapted by another model \(another run, or this "):
        other.recommend(user, k=3)
    other.recommend(other.adapt([("Toy Story (1995)", 5)]), k=3)


def test_a_diverged_training_leaves_no_checkpoint_in_python_either(
    shared_data: Path, tmp_path: Path
) -> None:
    """Only `metarec train` removed a diverged run's checkpoint: `metarec.train`'s
    run_dir and retrain's checkpoint folder kept it, to resume into the same end."""
    from metarec.errors import DivergedError

    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(ds.items, "tfidf", progress=False)
    cfg = TrainConfig(epochs=2, max_train_users=40, inner_lr=10.0, seed=0, device="cpu")
    train, val = split_users(ds.interactions, 0.1, seed=3)
    checkpoint = tmp_path / "checkpoint"
    with pytest.raises(DivergedError, match="meta-training diverged"):
        fit_recommender(
            catalogue, train, cfg, validation=val, checkpoint_dir=checkpoint, progress=False
        )
    assert not checkpoint.exists()

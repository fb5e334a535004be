"""Re-using split files (``metarec benchmark --splits``) and the per-fold validation draw,
on real ml-100k users."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from metarec import load_dataset
from metarec.data.schema import Dataset
from metarec.errors import ConfigError, DataError
from metarec.evaluation.p1 import make_p1_split
from metarec.evaluation.p2 import make_p2_split
from metarec.evaluation.splits import load_split, split_file_name


@pytest.fixture(scope="module")
def ds(shared_data: Path):
    return load_dataset("ml-100k", root=shared_data)


def test_each_fold_draws_its_own_validation_users(ds) -> None:
    splits = [make_p2_split(ds, seed=0, n_folds=5, fold=f) for f in range(5)]
    tests = [set(s.test_users) for s in splits]
    for s, test in zip(splits, tests, strict=True):
        train, val = set(s.train_users), set(s.validation_users)
        assert not (train & val) and not (val & test) and not (train & test)
        assert len(val) == round(len(train | val) / 8)
    vals = [set(s.validation_users) for s in splits]
    # the head of the remaining users would give folds 1 to 4 one and the same
    # validation set, all of it fold 0's test users
    for a in range(5):
        for b in range(a + 1, 5):
            assert len(vals[a] & vals[b]) < len(vals[a]) / 2, (a, b)
    # so validation users come from every other fold's part, not from one
    for f, val in enumerate(vals):
        parts_hit = {g for g, test in enumerate(tests) if val & test}
        assert parts_hit == set(range(5)) - {f}
    again = make_p2_split(ds, seed=0, n_folds=5, fold=2)
    assert again.validation_users == splits[2].validation_users  # seeded


def test_p1_folds_draw_their_own_validation_users_too(ds) -> None:
    splits = [make_p1_split(ds, seed=0, n_folds=5, fold=f) for f in (1, 2)]
    a, b = (set(s.validation_users) for s in splits)
    assert a and b and len(a & b) < len(a) / 2
    assert splits[0].fold == 1 and splits[0].n_folds == 5


def test_a_saved_split_loads_back_as_it_was(ds, tmp_path: Path) -> None:
    split = make_p2_split(ds, seed=0, n_folds=5, fold=3)
    split.save(tmp_path / split_file_name("p2", ds.name, 3))
    again = load_split("p2", ds, tmp_path, fold=3, n_folds=5)
    assert again.train_users == split.train_users
    assert again.validation_users == split.validation_users
    assert again.test_users == split.test_users
    assert len(again.frames["test"]) == len(split.frames["test"])
    p1 = make_p1_split(ds, seed=0)
    p1.save(tmp_path / split_file_name("p1", ds.name, None))
    assert load_split("p1", ds, tmp_path, fold=None, n_folds=None).new_items == p1.new_items


def _write(tmp_path: Path, ds: Dataset, edit: Callable[[dict[str, Any]], object]) -> None:
    split = make_p2_split(ds, seed=0, n_folds=5, fold=0)
    path = tmp_path / split_file_name("p2", ds.name, 0)
    split.save(path)
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda r: r.update(fold=1), "fold 1 of 5, but this run wants fold 0 of 5"),
        (lambda r: r.update(dataset="ml-1m"), "a split of 'ml-1m', not of 'ml-100k'"),
        (lambda r: r["test_users"].append("no-such-user"), "1 of its test_users are not users"),
        (
            lambda r: r["train_users"].append(r["test_users"][0]),
            "train_users and test_users share 1 users",
        ),
        (lambda r: r.pop("train_users"), "not a P2 split file: missing field 'train_users'"),
    ],
)
def test_a_split_file_that_does_not_fit_is_refused_by_name(
    ds: Dataset, tmp_path: Path, edit: Callable[[dict[str, Any]], object], needle: str
) -> None:
    _write(tmp_path, ds, edit)
    with pytest.raises(DataError, match=r"p2-ml-100k-fold0-split\.json") as err:
        load_split("p2", ds, tmp_path, fold=0, n_folds=5)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda r: r["new_items"].append("no-such-item"), "1 of its new_items are not items"),
        (lambda r: r.update(new_items=[]), "new_items must not be empty"),
        # the report prints the rule as the new items' definition: random new items
        # (ml-100k's) under "released in 1990 or later" were printed as if it held
        (lambda r: r.update(rule="released in 1990 or later"),
         "its rule says the new items are those released in 1990 or later, but"),
    ],
)  # fmt: skip
def test_a_p1_split_file_whose_new_items_do_not_fit_is_refused(
    ds: Dataset, tmp_path: Path, edit: Callable[[dict[str, Any]], object], needle: str
) -> None:
    """Unknown new items would leave the item-cold states silently empty."""
    split = make_p1_split(ds, seed=0)
    path = tmp_path / split_file_name("p1", ds.name, None)
    split.save(path)
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"p1-ml-100k-split\.json") as err:
        load_split("p1", ds, tmp_path, fold=None, n_folds=None)
    assert needle in str(err.value)
    # and where a run's split.json is read directly (`metarec evaluate`, `ensemble`)
    from metarec.evaluation.p1 import P1Split

    with pytest.raises(DataError, match=needle):
        P1Split.load(path, ds)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"n_folds": 1, "fold": 0}, "n_folds must be an integer >= 2; got 1"),
        ({"n_folds": 5, "fold": 5}, "fold must be an integer in [0, 5); got 5"),
        ({"n_folds": 5}, "fold must be an integer in [0, 5); got None"),
        ({"fold": 2}, "fold 2 given without n_folds"),
    ],
)
@pytest.mark.parametrize("protocol", ["p1", "p2"])
def test_a_fold_plan_that_leaves_no_one_to_train_on_is_refused(
    ds: Dataset, protocol: str, kwargs: dict[str, Any], needle: str
) -> None:
    make = make_p1_split if protocol == "p1" else make_p2_split
    with pytest.raises(DataError) as err:
        make(ds, seed=0, **kwargs)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "kwargs, error, needle",
    [
        ({"new_item_fraction": 0.0}, ConfigError, "new_item_fraction must be in (0, 1); got 0.0"),
        ({"new_user_fraction": 1.5}, ConfigError, "new_user_fraction must be in (0, 1); got 1.5"),
        ({"validation_fraction": 1.0}, ConfigError,
         "validation_fraction must be in [0, 1); got 1.0"),
        ({"min_ratings": 5}, ConfigError, "min_ratings must be at least 13"),
        ({"min_ratings": 50, "max_ratings": 40}, ConfigError, "at most max_ratings; got 50 and 40"),
        # raw TypeErrors before ("<" between float and str)
        ({"new_item_fraction": "0.2"}, ConfigError,
         "new_item_fraction must be a number in (0, 1); got '0.2'"),
        ({"new_user_fraction": None}, ConfigError,
         "new_user_fraction must be a number in (0, 1); got None"),
        ({"validation_fraction": True}, ConfigError,
         "validation_fraction must be a number in [0, 1); got True"),
        ({"validation_fraction": float("nan")}, ConfigError,
         "validation_fraction must be in [0, 1); got nan"),
        ({"new_item_year": "1998"}, ConfigError,
         "new_item_year must be a whole year, 'auto' or None; got '1998'"),
        ({"new_item_year": 1998.5}, ConfigError, "new_item_year must be a whole year"),
        ({"new_item_year": float("nan")}, ConfigError, "new_item_year must be a whole year"),
        # 13.5 was taken and written to the split file
        ({"min_ratings": 13.5}, ConfigError, "min_ratings: must be a whole number >= 1, got 13.5"),
        ({"max_ratings": "100"}, ConfigError,
         "max_ratings: must be a whole number >= 1, got '100'"),
    ],
)  # fmt: skip
def test_p1_split_options_outside_their_range_are_refused(
    ds: Dataset, kwargs: dict[str, Any], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error) as err:
        make_p1_split(ds, seed=0, **kwargs)
    assert needle in str(err.value)


def test_p1_split_takes_a_year_as_any_whole_number(ds: Dataset) -> None:
    by_int = make_p1_split(ds, seed=0, new_item_year=np.int64(1997))
    by_float = make_p1_split(ds, seed=0, new_item_year=1997.0)
    assert by_int.rule == by_float.rule == "released in 1997 or later"
    assert by_int.new_items == by_float.new_items


def test_a_missing_split_file_names_the_file(ds, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no p2-ml-100k-fold4-split\.json in"):
        load_split("p2", ds, tmp_path, fold=4, n_folds=5)
    # the file itself given for the folder: "no p2-ml-100k-split.json in p2-ml-100k-split.json"
    from metarec.evaluation.splits import read_stem

    path = tmp_path / split_file_name("p2", ds.name, None)
    make_p2_split(ds, seed=0).save(path)
    with pytest.raises(ConfigError, match=rf"--splits: {path} is a file; give the folder"):
        read_stem("p2", ds.name, 0, path, 1)


@pytest.mark.parametrize(
    "raw, needle",
    [
        ([], "not a P1 split file"),
        ({"protocol": "p1"}, "missing field 'dataset'"),
        (
            {
                "protocol": "p2",
                "dataset": "d",
                "seed": "x",
                "train_users": [],
                "validation_users": [],
                "test_users": [],
            },
            "damaged or edited",
        ),
        (
            # a string is not read as its letters
            {
                "protocol": "p2",
                "dataset": "d",
                "seed": 0,
                "train_users": "abc",
                "validation_users": [],
                "test_users": [],
            },
            "train_users must be a list of ids, got str",
        ),
        (
            {
                "protocol": "p1",
                "dataset": "d",
                "seed": 0,
                "new_items": [],
                "train_users": [],
                "validation_users": [],
                "new_users": [],
                "fold": "1",
            },
            "fold must be a whole number or null, got '1'",
        ),
        ({"protocol": "p4", "users": ["a"], "arms": ["A"], "seed": 0, "support": -3}, ">= 0"),
        ({"protocol": "p4", "users": 5, "arms": [], "seed": 0, "support": 1}, "damaged"),
        # abtest read it back as --users, and its message named a flag never given
        ({"protocol": "p4", "users": ["a"], "arms": ["A"], "seed": 0, "support": 1,
          "users_from": "heldout:abc"}, r"users_from must be heldout:FRACTION .*'heldout:abc'"),
        ({"protocol": "p4", "users": ["a"], "arms": ["A"], "seed": 0, "support": 1,
          "users_from": "heldout:1.5"}, "users_from must be heldout:FRACTION"),
    ],
)  # fmt: skip
def test_a_damaged_split_file_is_one_error_naming_it(raw: Any, needle: str, tmp_path: Path) -> None:
    """Hand-edited or foreign split files: a DataError naming the file, not a
    KeyError or AttributeError from the line that used the field."""
    from metarec.evaluation.p1 import P1Split
    from metarec.evaluation.p2 import P2Split
    from metarec.evaluation.p4_split import P4Split

    path = tmp_path / "split.json"
    path.write_text(json.dumps(raw))
    protocol = raw.get("protocol", "p1") if isinstance(raw, dict) else "p1"
    with pytest.raises(DataError, match=needle) as info:
        if protocol == "p4":
            P4Split.load(path)
        else:
            (P1Split if protocol == "p1" else P2Split).load(path, None)  # type: ignore[arg-type]
    assert str(path) in str(info.value)


def test_new_items_of_another_catalogue_are_its_newest_fifth(ds) -> None:
    from dataclasses import replace

    import numpy as np

    # books published 1950-2024: MovieLens' 1998 would make most of them "new"
    years = np.random.default_rng(0).integers(1950, 2025, size=len(ds.items))
    books = replace(ds, name="books", items=ds.items.assign(year=years))
    split = make_p1_split(books, seed=0)
    cut = float(np.quantile(years, 0.8, method="higher"))
    assert split.rule in (f"released in {cut:g} or later", f"released in {cut + 1:g} or later")
    assert 0.18 < len(split.new_items) / len(years) < 0.22
    # a MovieLens data set keeps MeLU's rule: on ml-100k too few items are that late
    assert make_p1_split(ds, seed=0).rule == "random 20% of items"
    assert make_p1_split(replace(ds, items=books.items), seed=0).rule == "released in 1998 or later"
    # a file of one's own that happens to be named ml-100k.csv (read with column options)
    # is another catalogue: its newest fifth, not MeLU's 1998
    own = replace(books, name=ds.name, spec={"interactions": "ml-100k.csv"})
    assert make_p1_split(own, seed=0).rule == split.rule


def test_fold_files_that_are_no_cross_validation_together_are_refused(ds, tmp_path: Path) -> None:
    from metarec.evaluation.splits import check_fold_partition

    for f in range(5):
        make_p2_split(ds, seed=0, n_folds=5, fold=f).save(
            tmp_path / split_file_name("p2", ds.name, f)
        )
    check_fold_partition("p2", ds, tmp_path, 5)  # as written: one user, one held-out fold
    one = json.loads((tmp_path / split_file_name("p2", ds.name, 0)).read_text())
    two = json.loads((tmp_path / split_file_name("p2", ds.name, 1)).read_text())
    first, *rest = two["test_users"]
    counts = ds.interactions["user_id"].astype(str).value_counts()
    looser = sorted(counts[(counts >= 20) & (counts < 25)].index)  # drawn at 20, not 25
    for edited, needle in [
        # each file sound alone; together fold 0's users tested twice, fold 1's never
        (one | {"fold": 1}, "test_users of fold 1 and of fold 0 share user"),
        # most of fold 1's test users taken out: every file holds all its rule draws
        (
            two | {"test_users": two["test_users"][:3]},
            "users of ml-100k that its rule draws are in none",
        ),
        # the same users drawn by a looser rule in one fold: the report states one rule
        (
            two | {"min_ratings": 20, "train_users": [*two["train_users"], *looser]},
            "fold 1 draws users with at least 20 ratings",
        ),
        # one test user moved to training: the same users, none tested twice, but no fold
        # tests that user, whom cross-validation would then never score
        (
            two | {"test_users": rest, "train_users": [*two["train_users"], first]},
            "1 users are held out in no fold",
        ),
    ]:
        path = tmp_path / split_file_name("p2", ds.name, 1)
        path.write_text(json.dumps(edited))
        with pytest.raises(DataError, match=needle):
            check_fold_partition("p2", ds, tmp_path, 5)
    path.write_text(json.dumps(two))
    check_fold_partition("p2", ds, tmp_path, 5)


def test_tied_or_missing_years_do_not_make_most_items_new(ds) -> None:
    from dataclasses import replace

    import numpy as np

    n = len(ds.items)
    # the latest year's items are 34 % of the catalogue: the quantile's year took them all
    years = np.where(np.arange(n) < 0.34 * n, 2020, 2000 + np.arange(n) % 20)
    tied = replace(ds, name="books", items=ds.items.assign(year=years))
    with pytest.warns(UserWarning, match=r"34% of items date from 2020 or later.* a random 20%"):
        assert make_p1_split(tied, seed=0).rule == "random 20% of items"
    # 15 % from the latest year, 4 % from the one before: that one, not the quantile's
    years = np.where(np.arange(n) < 0.15 * n, 2020, 2000 + np.arange(n) % 20)
    split = make_p1_split(replace(ds, name="books", items=ds.items.assign(year=years)), seed=0)
    share = len(split.new_items) / n
    assert split.rule == "released in 2019 or later" and 0.18 < share < 0.21, (split.rule, share)
    # one year for every item: all new, nothing left to train on, and a message about users
    same = replace(ds, name="books", items=ds.items.assign(year=2020))
    with pytest.warns(UserWarning, match=r"100% of items date from 2020 or later.* a random 20%"):
        split = make_p1_split(same, seed=0)
    assert split.rule == "random 20% of items" and len(split.new_items) == round(0.2 * n)
    # blank years count as existing items, which is said
    half = ds.items.assign(year=np.where(np.arange(n) % 2, np.nan, 1950 + np.arange(n) % 70))
    with pytest.warns(UserWarning, match=rf"{n // 2:,} of {n:,} items have no year"):
        make_p1_split(replace(ds, name="books", items=half), seed=0)


def test_a_p1_split_whose_every_item_is_new_is_refused(ds: Dataset, tmp_path: Path) -> None:
    # nothing would be left to train on ("predictions must be finite; got nan" before)
    split = make_p1_split(ds, seed=0)
    path = tmp_path / split_file_name("p1", ds.name, None)
    split.save(path)
    raw = json.loads(path.read_text())
    raw["new_items"] = sorted(ds.items["item_id"].astype(str))
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="new_items holds every rated item of ml-100k"):
        load_split("p1", ds, tmp_path, fold=None, n_folds=None)


def _user_with(ds: Dataset, outside: Callable[[int], bool], taken: set[str]) -> str:
    counts = ds.interactions["user_id"].astype(str).value_counts()
    return next(u for u, n in counts.items() if outside(int(n)) and u not in taken)


@pytest.mark.parametrize(
    "protocol, group, outside, needle",
    [
        # P1's cap keeps cold-start users cold; MeLU's rule draws 13 to 100 ratings
        ("p1", "new_users", lambda n: n > 100, "it draws users with 13 to 100 ratings"),
        ("p1", "train_users", lambda n: n > 100, "1 of its train_users have"),
        # P2 at K = 20 silently drops a test user with 20 ratings
        ("p2", "test_users", lambda n: n < 25, "it draws users with at least 25 ratings"),
    ],
)
def test_a_split_with_a_user_its_rule_would_not_draw_is_refused(
    ds: Dataset,
    tmp_path: Path,
    protocol: str,
    group: str,
    outside: Callable[[int], bool],
    needle: str,
) -> None:
    split = (make_p1_split if protocol == "p1" else make_p2_split)(ds, seed=0)
    path = tmp_path / split_file_name(protocol, ds.name, None)
    split.save(path)
    raw = json.loads(path.read_text())
    taken = {*raw["train_users"], *raw["validation_users"], *raw[split.held_out]}
    user = _user_with(ds, outside, taken)
    raw[group] = sorted([*raw[group], user])
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=rf"{protocol}-ml-100k-split\.json") as err:
        load_split(protocol, ds, tmp_path, fold=None, n_folds=None)
    assert needle in str(err.value)
    assert f"(first: {user!r} with " in str(err.value)


def test_a_split_records_its_rule_and_hashes_as_before_at_the_defaults(
    ds: Dataset, tmp_path: Path
) -> None:
    from metarec.evaluation.p1 import P1Split

    custom = make_p1_split(ds, seed=0, min_ratings=30, max_ratings=200)
    path = tmp_path / split_file_name("p1", ds.name, None)
    custom.save(path)
    again = load_split("p1", ds, tmp_path, fold=None, n_folds=None)
    assert (again.min_ratings, again.max_ratings) == (30, 200)
    assert again.digest() == custom.digest()
    # a user with 25 ratings is outside the rule this split was drawn with
    raw = json.loads(path.read_text())
    raw["new_users"].append(_user_with(ds, lambda n: n == 25, set()))
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="it draws users with 30 to 200 ratings"):
        P1Split.load(path, ds)

    # files written before the rule was recorded: drawn with the defaults, and a run's
    # recorded digest of them must still match
    default = make_p1_split(ds, seed=0)
    default.save(path)
    raw = json.loads(path.read_text())
    assert (raw.pop("min_ratings"), raw.pop("max_ratings")) == (13, 100)
    path.write_text(json.dumps(raw))
    old = P1Split.load(path, ds)
    assert (old.min_ratings, old.max_ratings) == (13, 100)
    assert old.digest() == default.digest() != custom.digest()
    fields = {k: v for k, v in raw.items() if k != "protocol"}
    before = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    assert old.digest() == before.hexdigest()


@pytest.mark.parametrize(
    "rule, needle",
    [
        ({"min_ratings": 5}, "min_ratings 5: a P1 task needs at least 13 ratings"),
        ({"min_ratings": 60, "max_ratings": 50}, "min_ratings 60 is above max_ratings 50"),
        ({"min_ratings": -1}, "min_ratings must be a whole number >= 0"),
    ],
)
def test_a_split_rule_that_cannot_draw_is_refused(
    ds: Dataset, tmp_path: Path, rule: dict[str, int], needle: str
) -> None:
    make_p1_split(ds, seed=0).save(tmp_path / split_file_name("p1", ds.name, None))
    path = tmp_path / split_file_name("p1", ds.name, None)
    path.write_text(json.dumps(json.loads(path.read_text()) | rule))
    with pytest.raises(DataError, match=r"p1-ml-100k-split\.json") as err:
        load_split("p1", ds, tmp_path, fold=None, n_folds=None)
    assert needle in str(err.value)


def test_readers_of_the_held_out_users_only_take_a_split_on_grown_data(
    ds: Dataset, tmp_path: Path
) -> None:
    """retrain and abtest read a run's new users, on data that may have grown since the
    split (a user past P1's 100 ratings); evaluate and benchmarks refuse it, asking."""
    from types import SimpleNamespace

    from metarec.evaluation.p1 import P1Split
    from metarec.evaluation.users_spec import users_from_spec
    from metarec.retrain import _held_out_users

    split = make_p1_split(ds, seed=0)
    run = tmp_path / "run"
    run.mkdir()
    split.save(run / "split.json")
    raw = json.loads((run / "split.json").read_text())
    taken = {*raw["train_users"], *raw["validation_users"], *raw["new_users"]}
    raw["train_users"] = sorted([*raw["train_users"], _user_with(ds, lambda n: n > 100, taken)])
    (run / "split.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"Is this the data the split was drawn from\?"):
        P1Split.load(run / "split.json", ds)
    old = SimpleNamespace(metadata={"holdout": "p1"}, cfg=SimpleNamespace(seed=0))
    assert _held_out_users(run, ds, old) == (set(split.new_users), "the P1 split's new users")
    assert users_from_spec(str(run / "split.json"), ds) == split.new_users


@pytest.mark.parametrize("protocol", ["p1", "p2", "p4"])
def test_a_split_files_unknown_keys_are_warned_about_and_it_still_loads(
    ds: Dataset, tmp_path: Path, protocol: str
) -> None:
    """A key no reader knows was dropped without a word: misspelt ("test_user"), its
    users were not read. Still loaded, as a later version's file with fields added."""
    from metarec.evaluation.p4_split import P4Split, make_p4_split

    path = tmp_path / split_file_name(protocol, ds.name, None)
    if protocol == "p4":
        users = sorted(ds.interactions["user_id"].astype(str).unique())[:20]
        make_p4_split(ds.interactions, users, dataset=ds.name).save(path)
    else:
        (make_p1_split if protocol == "p1" else make_p2_split)(ds, seed=0).save(path)

    def load() -> Any:
        if protocol == "p4":
            return P4Split.load(path)
        return load_split(protocol, ds, tmp_path, fold=None, n_folds=None)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file as saved holds no key its reader skips
        split = load()
    raw = json.loads(path.read_text())
    path.write_text(json.dumps(raw | {"test_user": ["1"], "later_field": 1}))
    with pytest.warns(UserWarning) as caught:
        again = load()
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and said[0].startswith(
        f"{path}: key(s) 'later_field', 'test_user' not read: not a field of a "
        f"{protocol.upper()} split file, which has "
    )
    assert "'protocol'" in said[0] and "'seed'" in said[0]
    assert (again.seed, again.dataset) == (split.seed, split.dataset)


def test_split_files_of_another_fold_plan_are_refused_before_being_mixed(
    tmp_path: Path,
) -> None:
    from metarec.evaluation.splits import check_fold_plan

    def write(fold: int, **fields: Any) -> None:
        raw = {"protocol": "p2", "dataset": "d", "seed": 0, "fold": fold, **fields}
        (tmp_path / split_file_name("p2", "d", fold)).write_text(json.dumps(raw))

    check_fold_plan("p2", "d", tmp_path, 5)  # nothing there
    for f in range(3):
        write(f, n_folds=3)
    check_fold_plan("p2", "d", tmp_path, 3)  # the same plan: replaced as before
    check_fold_plan("p1", "d", tmp_path, 2)  # another protocol's names
    check_fold_plan("p2", "d-2", tmp_path, 2)  # another data set's
    # a 2-fold run would replace folds 0 and 1 and leave the 3-fold plan's fold 2
    with pytest.raises(ConfigError) as refused:
        check_fold_plan("p2", "d", tmp_path, 2)
    message = str(refused.value)
    assert message.startswith(f"out: {tmp_path / 'p2-d-fold0-split.json'} holds fold 0 of a ")
    assert "3-fold split, and this 2-fold run" in message
    assert (
        f"give another out folder, or move that run's p2-d-fold*-split.json out of {tmp_path}"
        in message
    )
    assert "\n" not in message

    # files from before the fold count was recorded (P1's committed ones): the plan is
    # as many folds as there are files
    for f in range(3):
        write(f)
    check_fold_plan("p2", "d", tmp_path, 3)
    with pytest.raises(ConfigError, match=r"p2-d-fold2-split.json holds fold 2 of a split of at"):
        check_fold_plan("p2", "d", tmp_path, 2)
    with pytest.raises(ConfigError, match=r"holds fold 2 of a 3-fold split \(no fold count"):
        check_fold_plan("p2", "d", tmp_path, 5)


def test_new_items_that_are_not_the_ones_the_year_rule_names_are_refused(
    shared_data: Path, tmp_path: Path
) -> None:
    # ml-1m's new items are those released in 1998 or later: three left out of the file
    # were tested as existing items under a header that said otherwise
    from metarec.evaluation.p1 import P1Split

    ml1m = load_dataset("ml-1m", root=shared_data)
    split = make_p1_split(ml1m, seed=0)
    assert split.rule == "released in 1998 or later"
    split.new_items = split.new_items[:-3]
    split.save(tmp_path / "s.json")
    with pytest.raises(DataError, match=r"1998 or later, but 3 rated items are on one side"):
        P1Split.load(tmp_path / "s.json", ml1m)
    # a reader of its new users alone, on data that may have grown, does not ask it
    assert P1Split.load(tmp_path / "s.json", ml1m, check_rule=False).new_users


def test_a_p1_split_holds_on_data_grown_since_and_says_what_changed(
    shared_data: Path, tmp_path: Path
) -> None:
    """An item added since that nobody rated changes no figure, and was refused as "1
    items on one side only", blamed on the split; data without years was told the same."""
    from dataclasses import replace

    import pandas as pd

    from metarec.evaluation.p1 import P1Split

    ml1m = load_dataset("ml-1m", root=shared_data)
    split = make_p1_split(ml1m, seed=0)
    path = tmp_path / "split.json"
    split.save(path)
    added = pd.DataFrame([{**ml1m.items.iloc[0].to_dict(), "item_id": "new", "year": 2001.0}])
    grown = replace(ml1m, items=pd.concat([ml1m.items, added], ignore_index=True))
    assert P1Split.load(path, grown).new_items == split.new_items
    # a rated item's year changed: named
    first = split.new_items[0]
    aged = ml1m.items.copy()
    aged.loc[aged["item_id"].astype(str) == first, "year"] = 1950.0
    with pytest.raises(DataError, match=r"first: .*, in new_items, not so in ml-1m"):
        P1Split.load(path, replace(ml1m, items=aged))
    yearless = replace(ml1m, items=ml1m.items.assign(year=np.nan))
    with pytest.raises(DataError, match="no item of ml-1m has a release year"):
        P1Split.load(path, yearless)


def test_splits_are_read_under_the_runs_seed_else_seed_0s(tmp_path: Path) -> None:
    # a seed but 0 names its files (p2-ml-100k-seed1-split.json); --splits reads that
    # seed's where the folder has them, else seed 0's, so one split serves any seed
    from metarec.errors import ConfigError
    from metarec.evaluation.splits import read_stem

    with pytest.raises(ConfigError, match=r"no p2-x-seed1-fold0-split\.json .* nor p2-x-fold0"):
        read_stem("p2", "x", 1, tmp_path, 2)
    (tmp_path / "p2-x-fold0-split.json").write_text("{}")
    assert read_stem("p2", "x", 1, tmp_path, 2) == "x"
    (tmp_path / "p2-x-seed1-fold1-split.json").write_text("{}")  # one of the seed's: its set
    assert read_stem("p2", "x", 1, tmp_path, 2) == "x-seed1"
    assert read_stem("p2", "x", 0, tmp_path, 2) == "x"


@pytest.mark.parametrize("protocol", ["p1", "p2"])
def test_a_split_without_users_its_rule_draws_is_refused(
    ds: Dataset, tmp_path: Path, protocol: str
) -> None:
    """A split that left out users its rule draws (the hard ones, say) passed every
    check, and its run was reported as the protocol's; a fold file so edited passed as
    one of a cross-validation."""
    from metarec.evaluation.p1 import P1Split
    from metarec.evaluation.p2 import P2Split

    make = make_p1_split if protocol == "p1" else make_p2_split
    cls = P1Split if protocol == "p1" else P2Split
    held = "new_users" if protocol == "p1" else "test_users"
    for fold, n_folds in ((None, None), (2, 3)):
        path = tmp_path / split_file_name(protocol, ds.name, fold)
        make(ds, seed=0, fold=fold, n_folds=n_folds).save(path)
        raw = json.loads(path.read_text())
        gone = raw[held].pop()
        path.write_text(json.dumps(raw))
        with pytest.raises(
            DataError,
            match=rf"1 users of ml-100k that its rule draws are in none .*first: {gone!r}",
        ):
            cls.load(path, ds)


def test_a_split_read_on_other_ratings_says_so_and_shuffled_rows_do_not(
    ds: Dataset, tmp_path: Path
) -> None:
    """One rating deleted or an item renamed keeps every user's place in the split, and
    the run gave other figures without a word; the same rows in another order give the
    same split and figures, so they are the same data."""
    from dataclasses import replace

    from metarec.evaluation.p2 import P2Split

    path = tmp_path / "split.json"
    make_p2_split(ds, seed=0).save(path)
    split = P2Split.load(path, ds)
    inter = ds.interactions
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P2Split.load(path, replace(ds, interactions=inter.sample(frac=1.0, random_state=3)))
    user = split.test_users[0]
    first = inter.index[inter["user_id"].astype(str) == user][0]
    for edited, needle in [
        (inter.drop(index=first), "100,000 ratings then, 99,999 now"),
        (inter.assign(rating=inter["rating"].where(inter.index != first, 0.5)),
         r"as many ratings \(100,000\), not the same ones or times"),
    ]:  # fmt: skip
        with pytest.warns(UserWarning, match=needle) as caught:
            P2Split.load(path, replace(ds, interactions=edited))
        assert str(path) in str(caught[0].message)
    # the same ratings as a frame of one's own (float64, no time column) are the same
    from metarec.evaluation.splits import data_digest

    own = inter.drop(columns="timestamp").astype({"rating": "float64"})
    assert data_digest(own) == data_digest(inter.assign(timestamp=np.nan))
    # files written before the digest was recorded load as they did, and hash as before
    raw = json.loads(path.read_text())
    del raw["data_digest"]
    path.write_text(json.dumps(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = P2Split.load(path, replace(ds, interactions=inter.drop(index=first)))
    fields = {k: v for k, v in raw.items() if k != "protocol" and k != "min_ratings"}
    assert old.digest() == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize(
    "rule, keep, needle",
    [
        ("hello world", 1.0, "rule 'hello world': expected 'released in YEAR or later'"),
        ("random 20% of items", 0.5, r"lists 168 of ml-100k's 1,682 \(10.0%\)"),
    ],
)
def test_a_p1_rule_the_new_items_do_not_follow_is_refused(
    ds: Dataset, tmp_path: Path, rule: str, keep: float, needle: str
) -> None:
    # printed as the new items' definition in the report ("new items: hello world")
    from metarec.evaluation.p1 import P1Split

    path = tmp_path / "split.json"
    make_p1_split(ds, seed=0).save(path)
    raw = json.loads(path.read_text())
    assert raw["rule"] == "random 20% of items"
    raw["rule"] = rule
    raw["new_items"] = raw["new_items"][: round(len(raw["new_items"]) * keep)]
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=needle):
        P1Split.load(path, ds)


def test_json_nested_past_the_parsers_depth_is_refused_by_name(tmp_path: Path) -> None:
    # a RecursionError's traceback, exit 1, for a split file (or any of metarec's JSON)
    from metarec.errors import MetarecError
    from metarec.evaluation.p2 import P2Split

    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(MetarecError, match="nested too deeply") as info:
        P2Split.load(path, None)  # type: ignore[arg-type]
    assert str(path) in str(info.value)


def test_p1_states_keep_a_user_with_exactly_the_ratings_a_task_needs() -> None:
    """Each state's frame, by hand: a user with 13 ratings in a state (3 support + 10
    query) is in it, one with 12 is not; item-cold holds the new items' ratings of
    training and validation users alike, and training sees no new item."""
    import pandas as pd

    from metarec.evaluation.p1 import MIN_STATE_RATINGS, P1Split

    assert MIN_STATE_RATINGS == 13
    old = [f"o{i}" for i in range(20)]
    new = [f"n{i}" for i in range(13)]
    rated = {
        "t": old + new,  # training user: 20 old, 13 new
        "v": old[:13] + new,  # validation user: 13 old, 13 new
        "u": old[:13] + new[:12],  # new user: 13 old (user-cold), 12 new (too few)
    }
    inter = pd.DataFrame(
        [(u, i, 4.0, 0.0) for u, items in rated.items() for i in items],
        columns=["user_id", "item_id", "rating", "timestamp"],
    )
    split = P1Split(
        dataset="d", seed=0, new_items=new, train_users=["t"], validation_users=["v"],
        new_users=["u"],
    )  # fmt: skip
    frames = split.rebuild_frames(inter)

    def users(state: str) -> dict[str, int]:
        return frames[state].groupby("user_id").size().to_dict()

    assert users("train") == {"t": 20}
    assert users("warm") == users("validation") == {"v": 13}
    assert users("user_cold") == {"u": 13}
    assert users("item_cold") == {"t": 13, "v": 13}
    assert users("both_cold") == {}

"""Data specs: the data options a run records so later commands reload the same data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from metarec.data.spec import (
    SPEC_KEYS,
    load_from_spec,
    make_spec,
    names_data,
    spec_rating_range,
    with_recorded_columns,
)
from metarec.errors import ConfigError, DataError


@pytest.fixture
def own_files(tmp_path: Path) -> Path:
    (tmp_path / "r.csv").write_text("u,i,stars\na,x,8\na,y,2\nb,x,11\nb,y,6\n")
    (tmp_path / "i.csv").write_text("i,name,about\nx,First,a quiet film\ny,Second,a loud one\n")
    return tmp_path


def test_make_spec_has_every_key_and_absolute_paths(
    own_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(own_files)
    cols = {"user_col": "u", "item_col": "i", "rating_col": "stars", "title_col": "name"}
    spec = make_spec({"interactions": "r.csv", "items": "i.csv", **cols, "ignored": 1})
    assert list(spec) == list(SPEC_KEYS)
    assert spec["interactions"] == str(own_files / "r.csv")
    assert spec["items"] == str(own_files / "i.csv")
    assert spec["users"] is None and spec["dataset"] is None
    # a run recorded from one folder reloads its data from any other
    monkeypatch.chdir(os.sep)
    assert load_from_spec(spec).n_users == 2


def test_names_data() -> None:
    assert not names_data(None) and not names_data({}) and not names_data(make_spec({}))
    assert names_data({"dataset": "ml-100k"}) and names_data({"interactions": "r.csv"})
    assert not names_data({"items": "i.csv"})  # items alone do not say where ratings are


def test_files_given_again_are_read_with_the_runs_recorded_columns(own_files: Path) -> None:
    # a run's own files given again (grown since) were read as if their columns had
    # metarec's default names: "user column 'user_id' not found"
    cols = {"user_col": "u", "item_col": "i", "rating_col": "stars", "title_col": "name",
            "rating_range": "0,12"}  # fmt: skip
    recorded = make_spec(cols)  # as metarec.train records load_table's options: no files
    given = make_spec({"interactions": own_files / "r.csv", "items": own_files / "i.csv"})
    with pytest.raises(DataError, match="user column 'user_id' not found"):
        load_from_spec(given)
    spec = with_recorded_columns(given, recorded)
    assert {k: spec[k] for k in cols} == cols and spec["interactions"] == given["interactions"]
    assert load_from_spec(spec).rating_range == (0.0, 12.0)
    # an option given wins; a run of a named data set, or data named by data set, is left
    assert with_recorded_columns({**given, "rating_col": "x"}, recorded)["rating_col"] == "x"
    assert with_recorded_columns(given, {**recorded, "dataset": "ml-100k"}) == given
    named = make_spec({"dataset": "ml-100k"})
    assert with_recorded_columns(named, recorded) == named
    assert with_recorded_columns(given, None) == given
    # an items or users file's options only beside that file: the run's --text-cols
    # with interactions alone was refused as if the user had typed it
    alone = make_spec({"interactions": own_files / "r.csv"})
    texts = {**recorded, "text_cols": "about", "user_feature_cols": "age"}
    spec = with_recorded_columns(alone, texts)
    assert spec["text_cols"] is None and spec["user_feature_cols"] is None
    assert spec["user_col"] == "u" and with_recorded_columns(given, texts)["text_cols"] == "about"


def test_own_files_with_a_rating_range_and_text_columns(own_files: Path) -> None:
    spec = make_spec(
        {
            "interactions": str(own_files / "r.csv"),
            "items": str(own_files / "i.csv"),
            "user_col": "u",
            "item_col": "i",
            "rating_col": "stars",
            "title_col": "name",
            "text_cols": "about, ",
            "rating_range": "1,10",
        }
    )
    assert spec_rating_range(spec) == (1.0, 10.0)
    raw = load_from_spec(spec, cleaned=False)
    assert len(raw.interactions) == 4  # the 11 is still there before cleaning
    ds = load_from_spec(spec)
    assert ds.rating_range == (1.0, 10.0)
    assert sorted(ds.interactions["rating"]) == [2.0, 6.0, 8.0]  # 11 is out of range
    assert "a quiet film" in ds.items.set_index("item_id").loc["x", "text"]
    spec["strict"] = True  # the same value is now an error naming the file
    with pytest.raises(DataError, match=r"r\.csv"):
        load_from_spec(spec)


@pytest.mark.parametrize("value", ["1", "1,x", "1,2,3"])
def test_a_bad_rating_range_is_named(value: str) -> None:
    with pytest.raises(ConfigError, match=f"--rating-range: expected min,max, got '{value}'"):
        spec_rating_range({"rating_range": value})
    assert spec_rating_range({"rating_range": None}) is None


def test_a_spec_without_data_says_what_to_give() -> None:
    with pytest.raises(ConfigError, match="no data given: use --dataset NAME"):
        load_from_spec(make_spec({}))


def test_a_command_on_a_run_reads_its_recorded_data_with_the_strictness_given(
    own_files: Path,
) -> None:
    # `metarec evaluate RUN --strict` read the run's data unstrict: the flag was dropped
    # with every other data option when no data was named
    from metarec.data.spec import spec_for_run

    recorded = make_spec({"interactions": str(own_files / "r.csv"), "user_col": "who"})
    given = make_spec({"strict": True, "rating_range": "1,5"})
    spec = spec_for_run(given, recorded, "runs/a")
    assert spec["interactions"] == recorded["interactions"] and spec["user_col"] == "who"
    assert spec["strict"] is True and spec["rating_range"] == "1,5"
    assert spec_for_run(make_spec({}), recorded, "runs/a") == recorded
    # a column option names columns of data given here; without any it named nothing
    with pytest.raises(ConfigError, match=r"^--user-col: applies to data given with"):
        spec_for_run(make_spec({"user_col": "u"}), recorded, "runs/a")
    with pytest.raises(ConfigError, match=r"^runs/a: the run does not record its data"):
        spec_for_run(make_spec({}), None, "runs/a")
    named = make_spec({"interactions": str(own_files / "r.csv")})
    assert spec_for_run(named, recorded, "runs/a")["user_col"] == "who"  # filled in


def test_spec_flags_read_the_same_files_again(own_files: Path) -> None:
    # a benchmark run from Python on load_table's data wrote "--dataset NAME" as its
    # command, which no CLI could read; every key of a spec must come back as given
    import shlex

    from metarec.cli import build_parser
    from metarec.cli.options import data_spec
    from metarec.data.spec import spec_flags

    spec = make_spec(
        {"interactions": str(own_files / "r.csv"), "items": str(own_files / "i.csv"),
         "user_col": "u", "item_col": "i", "rating_col": "stars", "title_col": "name",
         "text_cols": "about", "item_id_col": "i", "strict": True}
    )  # fmt: skip
    flags = spec_flags(spec, (2.0, 11.0))
    assert flags is not None and "--items-id-col i" in flags and flags.endswith("--strict")
    args = build_parser().parse_args(["benchmark", *shlex.split(flags)])
    read = {k: None if v == "" else v for k, v in data_spec(args).items()}  # CLI defaults
    assert read == spec | {"rating_range": "2,11"}
    assert load_from_spec(data_spec(args)).rating_range == (2.0, 11.0)
    # a folder of atomic files is a --dataset; a known data set's spec, or none, no flags
    assert spec_flags(make_spec({"data": str(own_files)}), (1, 5)) == f"--dataset {own_files}"
    assert spec_flags(None, (1, 5)) is None
    assert spec_flags({"dataset": "ml-100k", "data": "/d"}, (1, 5)) is None


def test_strict_cleaning_is_kept_in_the_spec(own_files: Path) -> None:
    # cleaned strictly in Python, a benchmark's recorded command lacked --strict: the
    # figures matched, but the command read the files as the CLI does without it
    from metarec.data import clean, load_table
    from metarec.data.spec import spec_flags

    raw = load_table(own_files / "r.csv", own_files / "i.csv", user_col="u", item_col="i",
                     rating_col="stars", title_col="name", rating_range=(2, 11))  # fmt: skip
    strict, lax = clean(raw, strict=True), clean(raw)
    assert strict.spec is not None and strict.spec["strict"] is True
    assert lax.spec == raw.spec and not (lax.spec or {}).get("strict")
    assert (spec_flags(strict.spec, strict.rating_range) or "").endswith("--strict")
    assert "--strict" not in (spec_flags(lax.spec, lax.rating_range) or "")
    assert raw.spec is not None and not raw.spec.get("strict")  # the input is left as it was

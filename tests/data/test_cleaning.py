from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec.data import Dataset, clean, load_atomic, load_table, validate
from metarec.data.text import ItemTextConfig
from metarec.errors import ConfigError, DataError

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t10\t4\t100\n"  # line 2: fine
    "1\t11\tabc\t101\n"  # line 3: not a number
    "2\t10\t9\t102\n"  # line 4: out of range
    "\t10\t3\t103\n"  # line 5: missing user
    "2\t99\t3\t104\n"  # line 6: unknown item
    "3\t10\t2\t300\n"  # line 7: later rating of (3, 10)...
    "3\t10\t5\t200\n"  # line 8: ...so this earlier one goes
    "3\t12\t4\t105\n"  # line 9: item 12 has no text, falls back to its title
    "3\t13\t4\t106\n"  # line 10: item 13 has neither text nor title
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\tplot:token_seq\n"
    "10\tHeat\tCops and robbers.\n"
    "11\tAlien\tIn space.\n"
    "12\tSolaris\t\n"
    "13\t\t\n"
)


@pytest.fixture
def messy(tmp_path: Path) -> Dataset:
    (tmp_path / "m.inter").write_text(INTER)
    (tmp_path / "m.item").write_text(ITEM)
    # Only the plot makes up the text, so empty plots mean empty text.
    text = ItemTextConfig(extra=["plot"], template="{plot}")
    ds = load_atomic(tmp_path / "m", text=text)
    ds.rating_range = (1.0, 5.0)
    return ds


def test_clean_drops_each_problem_and_reports_it(messy: Dataset) -> None:
    out = clean(messy)
    report = out.report
    assert report is not None
    assert report.rows_in == 9 and report.rows_out == 3
    assert str(report) == report.summary()  # print(ds.report), as the README has it
    assert report.dropped == {
        "missing user or item id": 1,
        "missing or non-numeric rating": 1,
        "rating outside [1, 5]": 1,
        "items table: item has neither text nor title": 1,
        "item has no text or title": 1,
        "item id not in the items table": 1,
        "duplicate (user, item) rating (kept the latest)": 1,
    }
    ex = report.examples
    assert ex["missing or non-numeric rating"] == ["m.inter line 3: rating 'abc' is not a number"]
    assert ex["rating outside [1, 5]"] == ["m.inter line 4: rating 9 is outside [1, 5]"]
    assert ex["missing user or item id"] == ["m.inter line 5: no user_id"]
    assert ex["item id not in the items table"] == [
        "m.inter line 6: item '99' is not in the items table"
    ]
    assert ex["duplicate (user, item) rating (kept the latest)"] == [
        "m.inter line 8: user '3' rated item '10' at line 7 too, later in time, which is kept "
        "(this rating dropped)"
    ]
    assert ex["items table: item has neither text nor title"] == [
        "m.item line 5: item '13' has neither text nor title"
    ]
    assert any("use their title" in n and "'12'" in n for n in report.notes)
    assert "dropped 1: missing or non-numeric rating" in report.summary()
    # the items table's drop counts items: the rating reasons alone make rows in - out
    assert "dropped 1 item: items table: item has neither text nor title" in report.summary()
    ratings = {r: n for r, n in report.dropped.items() if not r.startswith("items table: ")}
    assert sum(ratings.values()) == report.rows_in - report.rows_out

    inter = out.interactions
    assert inter.columns.tolist() == ["user_id", "item_id", "rating", "timestamp"]
    assert inter["rating"].dtype == np.float32
    assert inter[["user_id", "item_id", "rating"]].values.tolist() == [
        ["1", "10", 4.0],
        ["3", "10", 2.0],  # the latest by timestamp, though earlier in the file
        ["3", "12", 4.0],
    ]
    items = out.items.set_index("item_id")
    assert "13" not in items.index and "_line" not in out.items.columns
    assert items.loc["12", "text"] == "Solaris"
    # The input is untouched.
    assert len(messy.interactions) == 9 and "_line" in messy.interactions.columns


def test_clean_is_idempotent(messy: Dataset) -> None:
    once = clean(messy)
    twice = clean(once)
    assert twice.report is not None and twice.report.dropped == {}
    pd.testing.assert_frame_equal(once.interactions, twice.interactions)


def test_strict_raises_at_the_first_problem_with_file_and_line(messy: Dataset) -> None:
    with pytest.raises(DataError) as info:
        clean(messy, strict=True)
    err = info.value
    assert err.path is not None and err.path.endswith("m.inter")
    assert (err.row, err.field) == (5, "user_id")
    assert "m.inter, line 5" in str(err)


def test_strict_on_items_names_the_item_file(tmp_path: Path) -> None:
    (tmp_path / "m.inter").write_text(INTER.split("\n", 2)[0] + "\n1\t10\t4\t100\n")
    (tmp_path / "m.item").write_text(ITEM)
    ds = load_atomic(tmp_path / "m", text=ItemTextConfig(extra=["plot"], template="{plot}"))
    with pytest.raises(DataError, match=r"m\.item, line 4, field 'text': item '12' has no text"):
        clean(ds, strict=True)


def test_validate_reports_without_changing(messy: Dataset) -> None:
    before = messy.interactions.copy()
    problems = validate(messy)
    pd.testing.assert_frame_equal(messy.interactions, before)
    joined = "\n".join(problems)
    assert "interactions: 1 row: missing or non-numeric rating (e.g. m.inter line 3" in joined
    assert "rating outside [1, 5]" in joined
    assert "item id not in the items table" in joined
    assert "duplicate (user, item)" in joined
    assert "items: 2 rows: item text shorter than 1 character(s)" in joined
    assert validate(clean(messy)) == []


def test_validate_checks_each_row_as_cleaning_does(tmp_path: Path) -> None:
    """validate ran every check on the rows as given: a rating without a value was "the
    later one, which cleaning keeps" though cleaning drops it first, and a row without
    an item id was also "item '' not in the items table"."""
    (tmp_path / "r.csv").write_text(
        "user_id,item_id,rating,timestamp\nu1,7,4,1600000000\nu1,7,,1700000000\n"
        "u2,,3,1600000000\nu2,7,5,1600000000\n"
    )
    (tmp_path / "i.csv").write_text("item_id,title\n7,Seven\n")
    ds = load_table(tmp_path / "r.csv", items_path=tmp_path / "i.csv", title_col="title")
    problems = validate(ds, rating_range=(1.0, 5.0))
    assert problems == [
        "interactions: 1 row: missing user or item id (e.g. r.csv line 4: no item_id)",
        "interactions: 1 row: missing or non-numeric rating (e.g. r.csv line 3: no rating)",
    ]
    cleaned = clean(ds, rating_range=(1.0, 5.0))
    assert cleaned.interactions["rating"].tolist() == [4.0, 5.0]


def test_rows_built_in_memory_are_named_as_given_after_earlier_drops() -> None:
    # each check ran on the rows the ones before left, and counted its "row N" from them;
    # N is the position (iloc), from 0, as in every message on a frame built in memory
    inter = pd.DataFrame({"user_id": ["u1", None, "u2", "u2"], "item_id": ["i1"] * 4,
                          "rating": [4, 3, 2, 5], "timestamp": [1, 2, 3, 4]})  # fmt: skip
    ds = Dataset("x", inter, pd.DataFrame({"item_id": ["i1"], "title": ["A"]}), None, (1, 5))
    problems = validate(ds)
    assert "row 1: no user_id" in problems[0]
    assert "row 2: user 'u2' rated item 'i1' at row 3 too, later in time" in problems[1]
    report = clean(ds).report
    assert report is not None
    [dup] = report.examples["duplicate (user, item) rating (kept the latest)"]
    assert dup.startswith("row 2: user 'u2' rated item 'i1' at row 3 too")
    assert "_row" not in clean(ds).interactions.columns


def test_a_loaded_files_timestamp_warning_is_said_once(tmp_path: Path) -> None:
    # cleaning read the loader's seconds again and said its warning again: three times
    # for one `metarec data validate`
    import warnings

    (tmp_path / "r.csv").write_text("user_id,item_id,rating,timestamp\nu1,1,4,2015\nu2,1,3,2019\n")
    with pytest.warns(UserWarning, match="not as years"):
        ds = load_table(tmp_path / "r.csv", rating_range=(1, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert validate(clean(ds)) == []


def test_rating_range_override_and_check(messy: Dataset) -> None:
    out = clean(messy, rating_range=(0, 10))
    assert out.report is not None and "rating outside [0, 10]" not in out.report.dropped
    assert out.rating_range == (0.0, 10.0)
    with pytest.raises(ConfigError, match="low <= high"):
        clean(messy, rating_range=(5, 1))


def test_a_rating_no_float32_holds_is_named_as_written(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    # 1e308 became "rating inf" after an overflow warning from the cast to float32
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating\n1,10,1e308\n1,11,3\n2,10,-inf\n2,11,x\n")
    out = clean(load_table(p, rating_range=(1, 5)))
    assert out.interactions["rating"].tolist() == [3.0]
    assert out.report is not None
    why = "is not a usable number (infinite, or beyond float32's range)"
    assert out.report.examples["missing or non-numeric rating"] == [
        f"r.csv line 2: rating '1e308' {why}",
        f"r.csv line 4: rating '-inf' {why}",
        "r.csv line 5: rating 'x' is not a number",
    ]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_duplicates_without_timestamps_keep_the_last_row(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating\n1,10,1\n1,10,2\n1,10,3\n")
    out = clean(load_table(p, rating_range=(1, 5)))
    assert out.interactions["rating"].tolist() == [3.0]
    assert out.interactions["timestamp"].isna().all()
    assert out.report is not None
    assert out.report.examples["duplicate (user, item) rating (kept the latest)"] == [
        "r.csv line 2: user '1' rated item '10' at line 4 too, the later line, which is kept "
        "(this rating dropped)",
        "r.csv line 3: user '1' rated item '10' at line 4 too, the later line, which is kept "
        "(this rating dropped)",
    ]
    # --strict stops and validate only reports: neither keeps or drops anything
    said = "r.csv line 2: user '1' rated item '10' at line 4 too, the later line, which "
    said += "cleaning keeps (dropping this rating)"
    reported = validate(load_table(p, rating_range=(1, 5)))[0]
    assert said in reported and "rating (cleaning keeps the latest)" in reported
    with pytest.raises(DataError, match=re.escape(said.removeprefix("r.csv line 2: "))):
        clean(load_table(p, rating_range=(1, 5)), strict=True)


def test_findings_name_columns_as_the_file_does_and_where_a_copy_is_kept(
    tmp_path: Path,
) -> None:
    p = tmp_path / "r.csv"
    p.write_text("reader,book,stars,t\n1,10,4,\n,11,3,\n2,12,5,3\n1,10,4,\n2,12,4,\n")
    out = clean(load_table(p, user_col="reader", item_col="book", rating_col="stars",
                           timestamp_col="t", rating_range=(1, 5)))  # fmt: skip
    assert out.report is not None
    assert out.report.examples["missing user or item id"] == ["r.csv line 3: no reader"]
    assert out.report.examples["duplicate (user, item) rating (kept the latest)"] == [
        "r.csv line 2: user '1' rated item '10' at line 5 too, the later line, which is kept "
        "(this rating dropped)",
        # the dated copy wins over an undated one further down
        "r.csv line 6: user '2' rated item '12' at line 4 too, dated, where this rating is "
        "not, which is kept (this rating dropped)",
    ]


def test_bad_timestamps_are_noted_not_dropped(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating,ts\n1,10,4,100\n1,11,4,soon\n")
    ds = load_table(p, timestamp_col="ts")
    out = clean(ds)
    assert len(out.interactions) == 2 and np.isnan(out.interactions["timestamp"].iloc[1])
    assert out.report is not None
    assert any("r.csv line 3: timestamp 'soon'" in n for n in out.report.notes)
    with pytest.raises(DataError, match=r"r\.csv, line 3, field 'ts'"):
        clean(ds, strict=True)


def test_blank_timestamps_among_times_are_counted_as_the_oldest(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating,ts\n1,10,4,100\n1,11,4,\n1,12,3,soon\n2,10,5,7\n")
    out = clean(load_table(p, timestamp_col="ts"))
    assert out.report is not None
    # the blank one, not the unreadable one, which has its own note
    assert "1 ratings have no timestamp and count as the oldest" in " ".join(out.report.notes)
    # no note where no rating has a time, or every one has; nor for rows cleaning drops
    # (a duplicate the timed row replaces), nor for a user with no readable time, who
    # is shuffled rather than ordered
    for body in ("1,10,4,\n1,11,4,\n", "1,10,4,100\n1,10,3,\n1,11,5,200\n",
                 "1,10,4,soon\n1,11,4,\n2,10,5,7\n2,11,4,8\n"):  # fmt: skip
        q = tmp_path / "q.csv"
        q.write_text("user_id,item_id,rating,ts\n" + body)
        quiet = clean(load_table(q, timestamp_col="ts")).report
        assert quiet is not None and not any("no timestamp" in n for n in quiet.notes), body


def test_in_memory_dataset_without_line_numbers() -> None:
    ds = Dataset(
        name="mem",
        interactions=pd.DataFrame(
            {"user_id": ["a", "b"], "item_id": ["x", "y"], "rating": [3.0, 7.0]}
        ),
        items=pd.DataFrame({"item_id": ["x", "y"], "title": ["X", "Y"]}),
        users=pd.DataFrame({"user_id": ["a", "a"], "age": ["1", "2"]}),
    )
    out = clean(ds)
    assert out.report is not None
    assert out.report.examples["rating outside [1, 5]"] == ["row 1: rating 7 is outside [1, 5]"]
    assert out.report.dropped["users table: duplicate user_id (kept the first)"] == 1
    assert out.interactions["timestamp"].isna().all()
    assert out.items["text"].tolist() == ["X.", "Y."]
    with pytest.raises(DataError, match="rating 7 is outside") as info:
        clean(ds, strict=True)
    assert info.value.path is None and info.value.row is None


def test_a_repeated_item_or_user_row_keeps_the_first() -> None:
    # the report says "kept the first" for both tables; keeping the last, an item repeated
    # in its table would take its second title and a user their second row of features
    ds = Dataset(
        name="mem",
        interactions=pd.DataFrame(
            {"user_id": ["a", "a"], "item_id": ["x", "y"], "rating": [3.0, 4.0]}
        ),
        items=pd.DataFrame({"item_id": ["x", "x", "y"], "title": ["First", "Second", "Y"]}),
        users=pd.DataFrame({"user_id": ["a", "a"], "age": ["1", "2"]}),
    )
    out = clean(ds)
    assert out.items["title"].tolist() == ["First", "Y"]
    assert out.users is not None and out.users["age"].tolist() == ["1"]


def test_missing_required_column_is_a_data_error() -> None:
    ds = Dataset(
        name="mem",
        interactions=pd.DataFrame({"user_id": ["a"], "item_id": ["x"]}),
        items=pd.DataFrame({"item_id": ["x"]}),
    )
    with pytest.raises(DataError, match="lacks column"):
        clean(ds)
    assert validate(ds) == ["interactions table lacks column(s) rating (has: user_id, item_id)"]


def test_a_data_set_built_in_memory_is_checked_and_cleaned_like_a_loaded_one() -> None:
    import metarec as mr

    items = pd.DataFrame({"item_id": [10, 11], "title": ["A", "B"]})
    inter = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10.0, 10.0, 11.0],
                          "rating": ["5", "4", "x"]})  # fmt: skip
    ds = Dataset("mem", inter, items)
    problems = validate(ds)
    # ids as numbers would never match the loaders' text ids: said, and cleaned to text
    assert any("item_id holds floating values, not text" in p for p in problems)
    assert any("row 2: rating 'x' is not a number" in p for p in problems)
    # no timestamp column: the later row of a repeated (user, item) is kept
    assert any("duplicate (user, item)" in p for p in problems)
    cleaned = clean(ds)
    assert cleaned.interactions[["user_id", "item_id", "rating"]].values.tolist() == [
        ["1", "10", 4.0]
    ]
    assert cleaned.items["item_id"].tolist() == ["10", "11"] and validate(cleaned) == []
    for call in (lambda: clean(inter), lambda: mr.train(inter)):  # type: ignore[arg-type]
        with pytest.raises(DataError, match="dataset: expected a metarec Dataset"):
            call()
    assert validate(inter) == [  # type: ignore[arg-type]
        "dataset: expected a metarec Dataset (load_dataset, load_table, load_path or "
        "Dataset(name, interactions, items)), got DataFrame"
    ]
    with pytest.raises(ConfigError, match=r"cfg: epochs: must be > 0"):
        mr.train(cleaned, {"epochs": 0})
    with pytest.raises(ConfigError, match=r"cfg: expected a TrainConfig or a dict"):
        mr.train(cleaned, [1])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("inter_cols", "item_cols", "needle"),
    [
        (["user_id", "item_id", "rating", "rating"], ["item_id", "title"],
         "interactions table has column 'rating' more than once"),
        (["user_id", "item_id", "rating"], ["item_id", "title", "title"],
         "items table has column 'title' more than once"),
    ],
)  # fmt: skip
def test_a_column_named_twice_in_memory_is_refused(
    inter_cols: list[str], item_cols: list[str], needle: str
) -> None:
    inter = pd.DataFrame([["u", "a", 4, 4][: len(inter_cols)]], columns=inter_cols)
    items = pd.DataFrame([["a", "A", "A"][: len(item_cols)]], columns=item_cols)
    ds = Dataset("mem", inter, items)
    (problem,) = validate(ds)
    assert needle in problem and "each column needs its own name" in problem
    with pytest.raises(DataError, match=needle):
        clean(ds)


def test_an_all_missing_text_column_built_in_memory_takes_the_titles() -> None:
    inter = pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "rating": [4]})
    items = pd.DataFrame({"item_id": ["a"], "title": ["A"], "text": [np.nan]})  # float64
    out = clean(Dataset("mem", inter, items))
    assert out.items["text"].tolist() == ["A"]


def test_timestamps_built_in_memory_are_read_as_seconds_or_named() -> None:
    # as a file's column is read: a date as text is a time, a word is named
    stamps = [1, "yesterday", "2020-01-01"]
    inter = pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["a", "a", "a"],
                          "rating": [4, 5, 3], "timestamp": stamps})  # fmt: skip
    ds = Dataset("mem", inter, pd.DataFrame({"item_id": ["a"], "title": ["A"]}))
    assert any(
        "row 1: timestamp 'yesterday' names the clock at loading, not a date" in p
        for p in validate(ds)
    )
    # as a file's bad timestamp: unknown, and the dated rating of the pair is kept
    out = clean(ds)
    assert out.interactions[["rating", "timestamp"]].values.tolist() == [
        [4.0, 1.0],
        [3.0, 1577836800.0],
    ]
    assert out.report is not None and any("'yesterday'" in n for n in out.report.notes)
    with pytest.raises(DataError, match=r"field 'timestamp': timestamp 'yesterday'"):
        clean(ds, strict=True)
    # datetimes are seconds since 1970, not the nanoseconds to_numeric would give
    dated = inter.assign(timestamp=pd.to_datetime(["1970-01-02"] * 3))
    out = clean(Dataset("mem", dated, ds.items))
    assert out.interactions["timestamp"].tolist() == [86400.0, 86400.0]


def test_a_list_valued_id_built_in_memory_is_refused() -> None:
    inter = pd.DataFrame({"user_id": [["u"]], "item_id": ["a"], "rating": [4]})
    ds = Dataset("mem", inter, pd.DataFrame({"item_id": ["a"], "title": ["A"]}))
    with pytest.raises(DataError, match=r"row 0: user_id \['u'\] holds several values"):
        clean(ds)


@pytest.mark.parametrize(
    "users, shown",
    [([True, False], "row 0: user_id True"),  # a flag column taken for ids: users "True"
     (["u1", np.False_], "row 1: user_id False"),
     (pd.array([None, True], dtype="boolean"), "row 1: user_id True")],
)  # fmt: skip
def test_a_boolean_id_is_refused(users: object, shown: str) -> None:
    inter = pd.DataFrame({"user_id": users, "item_id": ["a", "a"], "rating": [4, 5]})
    ds = Dataset("mem", inter, pd.DataFrame({"item_id": ["a"], "title": ["A"]}))
    with pytest.raises(DataError, match=rf"{shown} is a boolean; an id is one number or text"):
        clean(ds)


@pytest.mark.parametrize(
    "ratings, shown",
    [([True, False, True], "row 0: True"),  # bool dtype
     ([4.0, np.True_, 5.0], "row 1: True"),  # a stray one among numbers (object dtype)
     (pd.array([True, None, False], dtype="boolean"), "row 0: True")],
)  # fmt: skip
def test_a_boolean_rating_column_is_refused_not_read_as_one_and_zero(
    ratings: object, shown: str
) -> None:
    # a True was kept as a rating of 1 and a False dropped as outside [1, 5]
    inter = pd.DataFrame(
        {"user_id": ["u", "v", "w"], "item_id": ["a", "a", "b"], "rating": ratings}
    )
    ds = Dataset("mem", inter, pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]}))
    needle = rf"column 'rating' holds booleans \({shown}\), not ratings"
    with pytest.raises(DataError, match=needle):
        clean(ds)
    (problem,) = validate(ds)
    assert "column 'rating' holds booleans" in problem


@pytest.mark.parametrize(
    "ratings",
    [pd.to_datetime(["2020-01-01"] * 3), pd.to_datetime(["2020-01-01"] * 3, utc=True),
     pd.to_timedelta([1, 2, 3], unit="s")],
)  # fmt: skip
def test_a_date_column_taken_for_ratings_is_refused(ratings: object) -> None:
    # read as nanoseconds: "every rating is 1.57784e+15 (implicit feedback)", no problem
    inter = pd.DataFrame(
        {"user_id": ["u", "v", "w"], "item_id": ["a", "a", "b"], "rating": ratings}
    )
    ds = Dataset("mem", inter, pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]}))
    with pytest.raises(DataError, match=r"column 'rating' holds dates or times .*--rating-col"):
        clean(ds)
    (problem,) = validate(ds)
    assert "holds dates or times" in problem


@pytest.mark.parametrize(
    "options, needle",
    [({"min_text_chars": "1"}, "min_text_chars: must be a whole number >= 0, got '1'"),
     ({"min_text_chars": -1}, "min_text_chars: must be a whole number >= 0, got -1"),
     ({"min_text_chars": 1.5}, "min_text_chars: must be a whole number >= 0, got 1.5"),
     ({"strict": "yes"}, "strict: expected True or False, got 'yes'"),
     ({"strict": 1}, "strict: expected True or False, got 1")],
)  # fmt: skip
def test_clean_options_it_cannot_take_are_config_errors(
    messy: Dataset, options: dict[str, object], needle: str
) -> None:
    # "1" was a raw TypeError, -1 was taken, and "yes" (like "no") read as strict=True
    with pytest.raises(ConfigError, match=needle):
        clean(messy, **options)  # type: ignore[arg-type]
    if "min_text_chars" in options:
        assert validate(messy, **options) == [needle]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args, needle",
    [(("mem", [1, 2], "items"), "interactions: expected a pandas DataFrame, got list"),
     (("mem", "inter", None), "items: expected a pandas DataFrame, got NoneType"),
     (("mem", "inter", "items", {"user_id": ["u"]}), "users: expected a pandas DataFrame"),
     ((None, "inter", "items"), "name: expected a data set name")],
)  # fmt: skip
def test_a_dataset_refuses_tables_that_are_not_frames(args: tuple, needle: str) -> None:
    # taken before, and met as an AttributeError wherever the list was first read
    frames = {"inter": pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "rating": [4.0]}),
              "items": pd.DataFrame({"item_id": ["a"]})}  # fmt: skip
    with pytest.raises(DataError, match=needle):
        Dataset(*(frames.get(a, a) if isinstance(a, str) else a for a in args))


def test_an_unknown_item_that_nearly_matches_says_how(tmp_path: Path) -> None:
    """'café 1' decomposed (NFD) in one file and composed in the other prints the same:
    "not in the items table" alone sent the user looking for a typo that is not there."""
    nfd, nfc = "cafe\u0301 1", "caf\u00e9 1"
    (tmp_path / "r.csv").write_text(
        f"user_id,item_id,rating\nu,{nfd},4\nu,BOOK,3\nu,other,2\nu,book,5\n", encoding="utf-8"
    )
    (tmp_path / "i.csv").write_text(f"item_id,title\n{nfc},C\nbook,B\n", encoding="utf-8")
    ds = load_table(tmp_path / "r.csv", items_path=tmp_path / "i.csv", title_col="title")
    report = clean(ds, rating_range=(1.0, 5.0)).report
    assert report is not None
    ex = report.examples["item id not in the items table"]
    assert f"(it has {nfc!r}: they differ in Unicode form (NFC/NFD" in ex[0]
    assert ex[0].startswith(f"r.csv line 2: item {nfd!r} is not in the items table")
    assert "'BOOK' is not in the items table (it has 'book': they differ in letter case)" in ex[1]
    assert ex[2].endswith("item 'other' is not in the items table")
    from metarec.data.cleaning import _how_ids_differ

    # every difference, so that fixing one does not meet the next as the same refusal
    assert _how_ids_differ(" BOOK", "book") == "they differ in spaces at an end and letter case"
    assert _how_ids_differ("\u212b", "\u00c5") == (  # the Ångström sign and Å
        "they differ in Unicode form (NFC/NFD: normalise the files alike)"
    )
    both = _how_ids_differ("CAFE\u0301", "caf\u00e9")
    assert both == (
        "they differ in Unicode form (NFC/NFD: normalise the files alike) and letter case"
    )


def test_user_ids_that_differ_only_in_spaces_or_unicode_form_are_named(tmp_path: Path) -> None:
    """'u1 ' beside 'u1' (a spreadsheet's stray space) was two users to every model and
    "ok: no problems found" to validate; item ids had the items table to be caught by."""
    nfd, nfc = "cafe\u0301", "caf\u00e9"
    (tmp_path / "r.csv").write_text(
        f"user_id,item_id,rating\nu1,1,4\nu1 ,2,3\n{nfd},1,2\n{nfc},2,5\nU1,1,1\n",
        encoding="utf-8",
    )
    (tmp_path / "i.csv").write_text("item_id,title\n1,A\n2,B\n")
    ds = load_table(tmp_path / "r.csv", items_path=tmp_path / "i.csv", title_col="title")
    # a note, not a problem: the data trains as it is, and the ids may be meant
    assert validate(ds, rating_range=(1.0, 5.0)) == []
    # named, not merged: ids differing in case ('U1') may be different users
    cleaned = clean(ds, rating_range=(1.0, 5.0))
    assert cleaned.interactions["user_id"].nunique() == 5
    assert cleaned.report is not None
    [note] = [n for n in cleaned.report.notes if "differ from another only" in n]
    assert note.startswith("2 user ids differ from another only in spaces at an end or Unicode")
    assert "r.csv line 3: user 'u1 ' is also 'u1' (they differ in spaces at an end)" in note
    assert f"line 4: user {nfd!r} is also {nfc!r} (they differ in Unicode form" in note
    assert clean(ds, rating_range=(1.0, 5.0), strict=True).report is not None  # no drop


def test_text_without_a_letter_is_noted(tmp_path: Path) -> None:
    """A book with no title or author but a year had the text "1909." without a
    word; it is kept (a film may be called "1917"), and the report says so."""
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu,a,4\nu,b,3\n")
    (tmp_path / "i.csv").write_text("item_id,title,year\na,,1909\nb,Heat,1995\n")
    ds = load_table(tmp_path / "r.csv", items_path=tmp_path / "i.csv", title_col="title")
    report = clean(ds, rating_range=(1.0, 5.0)).report
    assert report is not None
    notes = [n for n in report.notes if "has no letter" in n]
    assert notes and "'a': '1909.'" in notes[0] and "'b'" not in notes[0]


def test_multiindex_columns_are_refused_by_name() -> None:
    # its "user_id" is ("user_id", ""): validate raised a raw KeyError
    inter = pd.DataFrame({("user_id", ""): ["u1"], ("item_id", ""): ["1"], ("rating", ""): [4.0]})
    items = pd.DataFrame({"item_id": ["1"], "title": ["A"]})
    with pytest.raises(DataError, match=r"interactions: its columns are a MultiIndex"):
        Dataset("x", inter, items)


def test_an_unknown_item_written_as_another_number_says_how(tmp_path: Path) -> None:
    # a spreadsheet wrote one file's ids as 1.0 or 01: "not in the items table" alone
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu,1,4\nu,2,3\nu,3,5\n")
    (tmp_path / "i.csv").write_text("item_id,title\n1.0,A\n02,B\nx,C\n")
    problems = validate(load_table(tmp_path / "r.csv", tmp_path / "i.csv"))
    assert problems[0].startswith("interactions: 3 rows: item id not in the items table")
    assert (
        "item '1' is not in the items table (it has '1.0': they differ in how a number is "
        "written; ids are text, so 1, 01 and 1.0 are three)" in problems[0]
    )
    assert "item '2' is not in the items table (it has '02'" in problems[0]
    # ids that are all whole numbers, some written as floats, are read as JSON's are
    (tmp_path / "j.csv").write_text("item_id,title\n1.0,A\n02,B\n3,C\n")
    with pytest.warns(UserWarning, match=r"'1\.0'\); read as '1'"):
        problems = validate(load_table(tmp_path / "r.csv", tmp_path / "j.csv"))
    assert problems[0].startswith("interactions: 1 row: item id not in the items table")


def test_epoch_milliseconds_built_in_memory_are_scaled_as_a_files_are() -> None:
    # kept as 1.5e12 "seconds" (the year 49,502), where a file's column was scaled
    stamps = [1.5e12, 1.5e12 + 500, 1.5e9]
    inter = pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["a", "b", "a"],
                          "rating": [4, 5, 3], "timestamp": stamps})  # fmt: skip
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]})
    with pytest.warns(UserWarning, match="timestamps read as milliseconds"):
        out = clean(Dataset("mem", inter, items))
    assert out.interactions["timestamp"].tolist()[:2] == [1.5e9, 1.5e9 + 0.5]
    assert np.isnan(out.interactions["timestamp"].iloc[2])  # seconds among milliseconds


def test_ids_that_are_digits_to_isdigit_but_no_number_do_not_break_the_hints(
    tmp_path: Path,
) -> None:
    # "²" and "①" are digits to str.isdigit and no number to float: validate raised
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu1,²,4\nu1,x9,3\nu2,+-1,5\n")
    (tmp_path / "i.csv").write_text("item_id,title\n²,Squared\n①,Circled\n+-1,Signs\n")
    problems = validate(load_table(tmp_path / "r.csv", tmp_path / "i.csv"))
    assert problems == [
        "interactions: 1 row: item id not in the items table (e.g. r.csv line 3: item 'x9' "
        "is not in the items table)"
    ]


@pytest.mark.parametrize(
    "column, values, needle",
    [
        # kept as their real part, with numpy's ComplexWarning alone
        ("rating", [4 + 0j, 3 + 0j], r"column 'rating' holds complex numbers \(complex128\)"),
        # True read as one second after 1970, as boolean ratings are refused already
        ("timestamp", [True, False], r"column 'timestamp' holds booleans \(bool\), not times"),
        # a day read as 86,400,000 "milliseconds since 1970", with a warning about the unit
        ("timestamp", pd.to_timedelta([1, 2], unit="D"), r"holds durations \(timedelta64"),
    ],
)
def test_ratings_and_times_of_no_such_kind_are_refused(
    column: str, values: object, needle: str
) -> None:
    items = pd.DataFrame({"item_id": ["1", "2"], "title": ["A", "B"]})
    inter = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["1", "2"], "rating": [4.0, 3.0]})
    inter[column] = values
    with pytest.raises(DataError, match=needle):
        clean(Dataset("t", inter, items))


def test_a_dataset_built_by_hand_says_what_is_wrong_with_its_scale() -> None:
    # None was "'NoneType' object is not iterable" from describe(), and a rating of "4"
    # in a data set not cleaned yet was a TypeError from inside pandas' mean
    inter = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["1", "2"], "rating": ["4", "x"]})
    items = pd.DataFrame({"item_id": ["1", "2"], "title": ["A", "B"]})
    assert Dataset("t", inter, items).describe()["rating_mean"] == 4.0
    for scale in (None, (5, 1), ("a", "b"), (1, float("nan")), (True, 5)):
        with pytest.raises(ConfigError, match=r"rating_range: expected \(low, high\)"):
            Dataset("t", inter, items, None, scale)  # type: ignore[arg-type]
    assert Dataset("t", inter, items, None, [1, 10]).rating_range == (1.0, 10.0)  # type: ignore[arg-type]


def test_a_decimal_scales_own_ends_are_on_it(tmp_path: Path) -> None:
    # ratings are held in float32, where 0.3 is 0.30000001: "above" a scale of 0-0.3,
    # and 13 % of such data was dropped; a scale read from 0.01-0.7 refused its 0.7
    from metarec.data.generic import infer_rating_range
    from metarec.inputs import history_pairs

    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu,a,0.3\nu,b,0.01\nv,a,0.3\n")
    (tmp_path / "i.csv").write_text("item_id,title\na,Alpha\nb,Beta\n")
    ds = load_table(tmp_path / "r.csv", items_path=tmp_path / "i.csv", rating_range=(0.0, 0.3))
    assert len(clean(ds).interactions) == 3
    assert infer_rating_range(ds.interactions, ds.items) == (0.01, 0.3)  # not 0.30000001
    # a run saved before, its range read from float32 ratings, takes its own ends
    ends = (float(np.float32(0.1)), 1.0)
    index = {"a": 0, "b": 1}
    pairs = history_pairs([("a", 0.1), ("b", 1.0)], ends, index.__getitem__, "adapt")
    assert pairs == [(0, 0.1), (1, 1.0)]


def test_text_of_only_spaces_is_no_text() -> None:
    # "   " passed as text (a frame built in memory; the file readers strip it): the
    # encoder then read blanks for the item, not its title
    ds = Dataset(
        name="w",
        interactions=pd.DataFrame(
            {"user_id": ["1", "1"], "item_id": ["10", "11"], "rating": [4.0, 5.0]}
        ),
        items=pd.DataFrame(
            {"item_id": ["10", "11"], "title": ["Foo", "Bar"], "text": ["   ", "real text"]}
        ),
    )
    out = clean(ds)
    assert out.items["text"].tolist() == ["Foo", "real text"]
    assert out.report is not None
    assert any(n.startswith("1 items had no text and use their title") for n in out.report.notes)


def test_an_item_without_a_rating_is_told_the_value_a_click_run_takes() -> None:
    from metarec.inputs import history_pairs

    index = {"n1": 0, "n250": 1}
    # a run of clicks (every rating 1): the one value to give is known
    with pytest.raises(DataError, match=re.escape(
        "history entry 0: 'n1' is an item without a rating; give ('n1', 1): every rating "
        "of this run is 1"
    )):  # fmt: skip
        history_pairs(["n1", "n250"], (1.0, 1.0), index.__getitem__)
    with pytest.raises(
        DataError,
        match=re.escape("entry 1: 'n250' is an item without a rating; give ('n250', RATING)") + "$",
    ):
        history_pairs([("n1", 4), "n250"], (1.0, 5.0), index.__getitem__, first=0)
    assert history_pairs([("n1", 1)], (1.0, 1.0), index.__getitem__) == [(0, 1.0)]


def test_a_click_logs_repeats_are_merged_with_a_note_not_a_problem() -> None:
    """A user who clicked an item twice failed `data validate` (exit 1) and --strict,
    as two ratings that disagree would: on one value, nothing differs between them."""
    inter = pd.DataFrame({"user_id": ["u", "u", "u", "v"], "item_id": ["a", "a", "b", "a"],
                          "rating": [1.0] * 4, "timestamp": [1, 5, 2, 3]})  # fmt: skip
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]})
    ds = Dataset("clicks", inter, items, None, (1.0, 1.0))
    assert validate(ds) == []
    for strict in (False, True):
        out = clean(ds, strict=strict)
        assert sorted(map(tuple, out.interactions[["user_id", "item_id", "timestamp"]].values)) == [
            ("u", "a", 5.0), ("u", "b", 2.0), ("v", "a", 3.0)
        ]  # fmt: skip
        assert out.report is not None and out.report.notes == [
            "1 repeated interaction of a user with an item merged into one (every rating is "
            "1; the latest time is kept)"
        ]
    # a Dataset not cleaned is refused before training, as clean would change it
    from metarec.data.cleaning import require_clean

    with pytest.raises(DataError, match=r"1 repeated \(user, item\) row\(s\), which clean merges"):
        require_clean(ds)
    require_clean(clean(ds))
    # ratings on a scale still disagree: a problem, as before
    rated = Dataset("stars", inter.assign(rating=[5.0, 1.0, 3.0, 4.0]), items, None, (1.0, 5.0))
    assert any("duplicate (user, item) rating" in p for p in validate(rated))


def test_a_users_table_of_another_id_scheme_is_said_to_match_no_one() -> None:
    """A users file writing '001' where the ratings write 1 matched no rating user, and
    the note said only "2 rating users have no row": every user was trained without
    features. It now says none matched, and why, as for item ids."""
    ratings = pd.DataFrame({"user_id": ["1", "2"], "item_id": ["x", "y"], "rating": [3.0, 4.0]})
    items = pd.DataFrame({"item_id": ["x", "y"], "title": ["X", "Y"]})

    def note(users: list[str]) -> str:
        ds = Dataset("mem", ratings, items, users=pd.DataFrame({"user_id": users, "age": "1"}))
        report = clean(ds).report
        assert report is not None
        return next(n for n in report.notes if "users table" in n)

    assert note(["001", "002"]) == (
        "none of the 2 rating users has a row in the users table (e.g. '1', '2'): every "
        "user is read without features (it has '001' for '1': they differ in how a number "
        "is written; ids are text, so 1, 01 and 1.0 are three)"
    )
    assert note(["1", "b"]) == "1 rating users have no row in the users table (e.g. '2')"


def test_a_dataset_prints_as_a_summary_not_its_frames() -> None:
    # print(ds) in a notebook printed three whole frames
    ratings = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "x"], "rating": [3.0, 4.0]})
    items = pd.DataFrame({"item_id": ["x"], "title": ["X"]})
    users = pd.DataFrame({"user_id": ["a"], "age": ["1"]})
    ds = Dataset("mem", ratings, items, users=users, rating_range=(1, 10))
    assert repr(ds) == (
        "Dataset('mem': 2 ratings, 1 item, 2 users, scale [1, 10], user features ['age'])"
    )
    bare = Dataset("bare", ratings.drop(columns="user_id"), items)
    assert repr(bare) == "Dataset('bare': 2 ratings, 1 item, users unknown, scale [1, 5])"

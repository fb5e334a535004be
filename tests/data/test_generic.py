from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec.data import clean, load_table, validate
from metarec.data.delimited import read_table
from metarec.data.text import ItemTextConfig
from metarec.errors import ConfigError, DataError


@pytest.fixture
def ratings_csv(tmp_path: Path) -> Path:
    p = tmp_path / "ratings.csv"
    p.write_text("user,movie,stars,when\nu1,m1,4,100\nu1,m2,3.5,101\nu2,m1,5,102\n")
    return p


# pandas 2 holds a date in nanoseconds, 1677 to 2262: a date outside is read as no date
# there (the project takes pandas >= 2.0; Python 3.10 has no pandas 3)
PANDAS_3 = pytest.mark.skipif(
    int(pd.__version__.split(".")[0]) < 3, reason="pandas 2 reads no date outside 1677-2262"
)


def test_csv_with_mapped_columns_and_no_items(ratings_csv: Path) -> None:
    ds = load_table(
        ratings_csv, user_col="user", item_col="movie", rating_col="stars", timestamp_col="when"
    )
    assert ds.name == "ratings"
    inter = ds.interactions
    assert inter[["user_id", "item_id"]].values.tolist() == [
        ["u1", "m1"],
        ["u1", "m2"],
        ["u2", "m1"],
    ]
    assert inter["rating"].dtype == np.float32 and inter["timestamp"].tolist() == [100, 101, 102]
    assert inter["_line"].tolist() == [2, 3, 4]
    # Without an items file the items are the rated ids, titled by id.
    assert ds.items[["item_id", "title", "text"]].values.tolist() == [
        ["m1", "m1", "m1."],
        ["m2", "m2", "m2."],
    ]
    assert ds.rating_range == (3.5, 5.0)  # inferred when not given


def test_missing_column_lists_what_is_there(ratings_csv: Path) -> None:
    with pytest.raises(DataError) as info:
        load_table(ratings_csv, user_col="user", item_col="item", rating_col="stars")
    msg = str(info.value)
    assert "ratings.csv" in msg and "'item'" in msg
    assert "columns are: 'user', 'movie', 'stars', 'when'" in msg
    assert info.value.field == "item"


def test_tsv_items_users_text_and_genres(tmp_path: Path) -> None:
    (tmp_path / "r.tsv").write_text("user_id\titem_id\trating\n1\t10\t4\n2\t11\t2\n")
    (tmp_path / "items.tsv").write_text(
        "id\tname\tyr\tcats\tplot\n"
        "10\tHeat\t1995\tAction, Crime\tCops and robbers.\n"
        "11\tAlien\t\tHorror|Sci-Fi\t\n"
    )
    (tmp_path / "users.tsv").write_text("user_id\tage\tcity\n1\t30\tParis\n2\t40\tRome\n")
    ds = load_table(
        tmp_path / "r.tsv",
        tmp_path / "items.tsv",
        tmp_path / "users.tsv",
        item_id_col="id",
        title_col="name",
        year_col="yr",
        genre_col="cats",
        text_cols=["plot"],
        user_feature_cols=["age"],
        rating_range=(1, 5),
    )
    items = ds.items.set_index("item_id")
    assert items.loc["10", "genres"] == "Action|Crime"
    assert items.loc["10", "plot"] == "Cops and robbers."
    assert items.loc["10", "text"] == "Heat (1995). Genres: Action, Crime. Cops and robbers."
    assert np.isnan(items.loc["11", "year"])
    assert items.loc["11", "text"] == "Alien. Genres: Horror, Sci-Fi."
    assert ds.users is not None and ds.users.columns.tolist() == ["user_id", "age", "_line"]
    assert ds.rating_range == (1.0, 5.0)


def test_delimiter_sniffed_from_first_line(tmp_path: Path) -> None:
    p = tmp_path / "ratings.txt"
    p.write_text("user_id;item_id;rating\n1;10;4\n")
    assert load_table(p).interactions["item_id"].tolist() == ["10"]
    p.write_text("user_id|item_id|rating\n1|10|4\n")
    assert load_table(p).interactions["item_id"].tolist() == ["10"]


def test_items_files_conventional_columns_are_read_unnamed(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,10,4\n1,11,2\n")
    (tmp_path / "i.csv").write_text(
        "item_id,title,year,genres\n10,Heat,1995,Crime|Thriller\n11,Fargo,1996,Crime\n"
    )
    items = load_table(tmp_path / "r.csv", tmp_path / "i.csv").items
    assert items["title"].tolist() == ["Heat", "Fargo"]
    assert items["year"].tolist() == [1995, 1996]
    assert "Thriller" in items["text"].iloc[0] and "Fargo" in items["text"].iloc[1]
    # a title column the user names wins over the conventional one
    (tmp_path / "j.csv").write_text("item_id,title,name\n10,x,Heat\n11,y,Fargo\n")
    named = load_table(tmp_path / "r.csv", tmp_path / "j.csv", title_col="name").items
    assert named["title"].tolist() == ["Heat", "Fargo"]


def test_an_items_file_without_text_is_warned_about(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,10,4\n")
    (tmp_path / "i.csv").write_text("item_id,price\n10,3\n")
    with pytest.warns(UserWarning, match=r"i\.csv: no 'title' or 'text' column .* ids alone"):
        ds = load_table(tmp_path / "r.csv", tmp_path / "i.csv")
    assert ds.items["title"].tolist() == ["10"]


def test_quoted_fields_keep_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,10,4\n1,11,4\n")
    (tmp_path / "i.csv").write_text(
        'item_id,title\n10,"Heat, the movie"\n11,"A title\nover two lines"\n12,Alien\n'
    )
    ds = load_table(tmp_path / "r.csv", tmp_path / "i.csv", title_col="title")
    assert ds.items["title"].tolist() == ["Heat, the movie", "A title\nover two lines", "Alien"]
    assert ds.items["_line"].tolist() == [2, 3, 5]


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("1,10,4\n1,11\n", 3, "expected 3 comma-separated fields, found 2"),
        ("1,10,4\n1,11,4,9\n", 3, "expected 3 comma-separated fields, found 4"),
        ("1,10,4\n1\t11\t4\n", 3, "found 1 — is the file comma-separated?"),
        ('1,10,4\n"1,11",4\n', 3, "expected 3 comma-separated fields, found 2"),
    ],
)
def test_field_count_errors(tmp_path: Path, body: str, line: int, message: str) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating\n" + body)
    with pytest.raises(DataError) as info:
        load_table(p)
    assert info.value.row == line and message in str(info.value)
    assert f"r.csv, line {line}" in str(info.value)


def test_a_comma_file_named_tsv_is_said_to_look_comma_separated(tmp_path: Path) -> None:
    (tmp_path / "r.tsv").write_text("user_id,item_id,rating\nu1,1,4\n")
    with pytest.raises(DataError, match=r"the file looks comma-separated but its name says tab"):
        load_table(tmp_path / "r.tsv")
    # a separator given, not read from the name: nothing is said of the name
    (tmp_path / "r.txt").write_text("user_id,item_id,rating\nu1,1,4\n")
    with pytest.raises(DataError) as info:
        load_table(tmp_path / "r.txt", sep="|")
    assert "user column 'user_id' not found" in str(info.value)
    assert "its name says" not in str(info.value)


@pytest.mark.parametrize(
    "header", ["user_id,item_id,rating,rating", '"user_id",item_id,rating,"rating"']
)
@pytest.mark.parametrize(("blank", "line"), [("", 1), ("\n", 2), ("\r\n \n", 3)])
def test_a_column_named_twice_is_refused(
    tmp_path: Path, header: str, blank: str, line: int
) -> None:
    # pandas would read the second as "rating.1" and the first as the ratings, silently;
    # after a blank first line (which the readers skip to the header) it did, and with a
    # quoted value the reader failed with an AttributeError
    p = tmp_path / "r.csv"
    p.write_text(blank + header + '\n1,"10",4,2\n')
    with pytest.raises(
        DataError, match=rf"r\.csv, line {line}: column 'rating' appears more than once"
    ):
        load_table(p)


@pytest.mark.parametrize("quote", ["", '"'])
def test_excels_trailing_empty_columns_are_left_out(tmp_path: Path, quote: str) -> None:
    # cleared cells that kept a format: "user_id,item_id,rating,," was "column ''
    # appears more than once", and in a users file "a row index" no flag could name
    (tmp_path / "r.csv").write_text(f"user_id,item_id,rating,,\nu1,{quote}1{quote},4,,\n")
    (tmp_path / "i.csv").write_text("item_id,title,,,\n1,A,,,\n")
    (tmp_path / "u.csv").write_text(",user_id,age,,\n0,u1,20,,\n")
    with pytest.warns(UserWarning, match=r"'Unnamed: 0' not used as user features") as caught:
        ds = load_table(tmp_path / "r.csv", tmp_path / "i.csv", users_path=tmp_path / "u.csv")
    assert len(caught) == 1, [str(w.message) for w in caught]  # the index column, not ''
    assert ds.interactions["rating"].tolist() == [4.0]
    assert ds.users is not None and list(ds.users.columns) == ["user_id", "age", "_line"]
    assert ds.items["text"].tolist() == ["A."]


def test_tab_separated_text_that_quotes_nothing_reads_its_quotes_as_written(
    tmp_path: Path,
) -> None:
    # PostgreSQL's COPY and mysql -B quote no field: a title starting with a quote was
    # "malformed quoting", and no flag read the file
    (tmp_path / "r.tsv").write_text("user_id\titem_id\trating\nu1\t1\t4\nu1\t2\t3\n")
    (tmp_path / "i.tsv").write_text('item_id\ttitle\n1\t"Weird Al" Yankovic Live\n2\t12" Single\n')
    with pytest.warns(UserWarning, match=r"i\.tsv, line 2: malformed quoting .* plain character"):
        ds = load_table(tmp_path / "r.tsv", tmp_path / "i.tsv")
    assert ds.items["title"].tolist() == ['"Weird Al" Yankovic Live', '12" Single']
    # a quote that opens a field never closed still is an error where reading the
    # quotes as written leaves a line short of fields
    (tmp_path / "i.tsv").write_text('item_id\ttitle\tyear\n1\t"Weird Al\n2\tHeat\t1995\n')
    with pytest.raises(DataError, match=r"i\.tsv, line 2: a quoted field opened here is never"):
        load_table(tmp_path / "r.tsv", tmp_path / "i.tsv")
    # a field quoted whole is CSV quoting (R's write.table): read literally, the ids
    # kept their quotes and matched no rating, so the quoting error stands
    (tmp_path / "i.tsv").write_text('"item_id"\t"title"\n"1"\t"Heat"\n"2"\t"say \\"hi\\""\n')
    with pytest.raises(DataError, match=r"i\.tsv, line 3: malformed quoting"):
        load_table(tmp_path / "r.tsv", tmp_path / "i.tsv")
    # in a comma-separated file quotes are CSV's: the error stands
    (tmp_path / "i.csv").write_text('item_id,title\n1,"Weird Al" Yankovic Live\n')
    with pytest.raises(DataError, match=r"i\.csv, line 2: malformed quoting"):
        load_table(tmp_path / "r.tsv", tmp_path / "i.csv")


def test_a_header_without_rows_is_a_problem(tmp_path: Path) -> None:
    from metarec.data import validate

    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating\n")
    assert validate(load_table(p, rating_range=(1, 5)))[0].startswith("interactions: no rows")


def test_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    p = tmp_path / "r.parquet"
    when = pd.to_datetime(["1970-01-02", "1970-01-03"])
    frame = pd.DataFrame({"u": [1, 2], "i": [10.0, 11.0], "r": [4.0, np.nan], "t": when})
    frame.to_parquet(p)
    ds = load_table(
        p, user_col="u", item_col="i", rating_col="r", timestamp_col="t", rating_range=(1, 5)
    )
    assert ds.interactions["timestamp"].tolist() == [86400.0, 172800.0]
    # Integral float ids read as "10", not "10.0".
    assert ds.interactions["item_id"].tolist() == ["10", "11"]
    assert ds.interactions["user_id"].tolist() == ["1", "2"]
    report = clean(ds).report
    assert report is not None
    assert report.examples["missing or non-numeric rating"] == ["r.parquet line 3: no rating"]


def _write_own_line_column(path: Path) -> None:
    rows = {"_line": [7, 9], "user_id": ["u1", "u2"], "item_id": ["i1", "i1"], "rating": [4, 5]}
    if path.suffix == ".parquet":
        pytest.importorskip("pyarrow")
        pd.DataFrame(rows).to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    else:
        # a quoted field takes the csv module's reader, an unquoted file pandas'
        quote = '"' if "quoted" in path.name else ""
        sep = "\t" if path.suffix == ".tsv" else ","
        lines = [sep.join(rows), f"7{sep}{quote}u1{quote}{sep}i1{sep}4", f"9{sep}u2{sep}i1{sep}5"]
        path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "name, lines",
    [
        ("r.csv", [2, 3]),
        ("r-quoted.csv", [2, 3]),
        ("r.tsv", [2, 3]),
        ("r.parquet", [2, 3]),  # numbered as if under a header
        ("r.jsonl", [1, 2]),  # no header
    ],
)
def test_a_files_own_line_column_is_warned_about_and_the_lines_stay_right(
    tmp_path: Path, name: str, lines: list[int]
) -> None:
    """Its values were replaced by metarec's line numbers without a word (a JSON
    Lines file was refused): the user is told, as of any other '_' column."""
    path = tmp_path / name
    _write_own_line_column(path)
    with pytest.warns(UserWarning) as caught:
        ds = load_table(path)
    said = [str(w.message) for w in caught]
    assert any(
        m.startswith(f"{path}: column '_line' not used: metarec numbers each row's line")
        and "rename the file's column" in m
        for m in said
    ), said
    assert ds.interactions["_line"].tolist() == lines
    assert ds.interactions["user_id"].tolist() == ["u1", "u2"]


def test_a_parquet_files_named_index_is_read_as_a_column(tmp_path: Path) -> None:
    """pandas saves a frame's index in the Parquet file and restores it as the index,
    where the users' ids (df.set_index("user_id").to_parquet) were "missing"."""
    pytest.importorskip("pyarrow")
    r, u, i = tmp_path / "r.csv", tmp_path / "u.parquet", tmp_path / "i.parquet"
    r.write_text("user,item_id,rating\nu1,10,5\nu2,11,4\n")
    users = pd.DataFrame({"user_id": ["u1", "u2"], "age": [20, 30]})
    users.set_index("user_id").to_parquet(u)
    items = pd.DataFrame({"item_id": [10, 11], "title": ["Heat", "Alien"]})
    items.set_index("item_id").to_parquet(i)
    with pytest.warns(UserWarning, match=r"\(saved with it\) is read as a column") as said:
        ds = load_table(r, i, u, user_col="user", users_id_col="user_id")
    assert sorted(str(w.message).split(": ")[1] for w in said) == [
        "the frame's index 'item_id' (saved with it) is read as a column",
        "the frame's index 'user_id' (saved with it) is read as a column",
    ]
    assert ds.users is not None and ds.users.columns.tolist() == ["user_id", "age", "_line"]
    assert ds.users["user_id"].tolist() == ["u1", "u2"] and ds.users["_line"].tolist() == [2, 3]
    assert ds.items["title"].tolist() == ["Heat", "Alien"]
    # pandas' default RangeIndex, and the row labels a filtered frame keeps, are no field
    users.to_parquet(u)
    plain = load_table(r, users_path=u, user_col="user", users_id_col="user_id").users
    assert plain is not None and plain.columns.tolist() == ["user_id", "age", "_line"]
    users[users["age"] > 20].to_parquet(u)
    kept = load_table(r, users_path=u, user_col="user", users_id_col="user_id").users
    assert kept is not None and kept.columns.tolist() == ["user_id", "age", "_line"]
    # row numbers given a name cannot be told from ids 0, 1, ... (pandas keeps both as a
    # RangeIndex): read as a column, and said
    users.rename_axis("row").to_parquet(u)
    with pytest.warns(UserWarning, match="index 'row'"):
        named = load_table(r, users_path=u, user_col="user", users_id_col="user_id").users
    assert named is not None and "row" in named.columns
    # of a two-level index, the named level is data and the unnamed one row labels
    two = users.assign(n=[7, 8]).set_index(["user_id", "n"]).rename_axis(["user_id", None])
    two.to_parquet(u)
    with pytest.warns(UserWarning, match="index 'user_id'"):
        levels = load_table(r, users_path=u, user_col="user", users_id_col="user_id").users
    assert levels is not None and levels.columns.tolist() == ["user_id", "age", "_line"]
    # an index and a column of one name: which holds the ids cannot be told
    both = users.set_index("user_id").assign(user_id=["u3", "u4"])
    both.to_parquet(u)
    with pytest.raises(DataError, match=r"u\.parquet: the frame's index 'user_id' \(saved"):
        load_table(r, users_path=u, user_col="user", users_id_col="user_id")


def test_dates_as_timestamps(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating,ts\n1,10,4,1970-01-02\n1,11,4,86400\n")
    ds = load_table(p, timestamp_col="ts")
    assert ds.interactions["timestamp"].tolist() == [86400.0, 86400.0]


def test_day_first_dates_are_read_day_first_throughout(tmp_path: Path) -> None:
    """13/04 can only be day first, so 03/04 is April 3 too, not March 4 as pandas
    would read it on its own (which put the later rating first)."""
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating,ts\n1,10,4,03/04/2020\n1,11,4,13/04/2020\n")
    stamps = load_table(p, timestamp_col="ts").interactions["timestamp"].tolist()
    april_3 = (pd.Timestamp("2020-04-03", tz="UTC") - pd.Timestamp(0, tz="UTC")).total_seconds()
    assert stamps == [april_3, april_3 + 10 * 86400]


def test_iso_dates_beside_day_first_ones_keep_their_month(tmp_path: Path) -> None:
    """Day first applies to the numeric dates only: with it, 2020-01-05 was read as the
    1st of May."""
    p = tmp_path / "r.csv"
    p.write_text(
        "user_id,item_id,rating,ts\n1,10,4,2020-01-05\n1,11,4,13/04/2020\n1,12,4,13/13/2020\n"
    )
    stamps = load_table(p, timestamp_col="ts").interactions["timestamp"]
    epoch = pd.Timestamp(0, tz="UTC")
    assert stamps.tolist()[:2] == [
        (pd.Timestamp("2020-01-05", tz="UTC") - epoch).total_seconds(),
        (pd.Timestamp("2020-04-13", tz="UTC") - epoch).total_seconds(),
    ]


def test_dates_written_both_ways_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating,ts\n1,10,4,13/04/2020\n1,11,4,04/13/2020\n")
    with pytest.raises(
        DataError,
        match=r"r\.csv: timestamp dates are written both day first "
        r"\('13/04/2020'\) and month first \('04/13/2020'\)",
    ):
        load_table(p, timestamp_col="ts")


def test_dates_that_never_say_which_comes_first_are_read_month_first_with_a_warning(
    tmp_path: Path,
) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating,ts\n1,10,4,03/04/2020\n")
    with pytest.warns(UserWarning, match=r"dates such as '03/04/2020' are read month first"):
        stamps = load_table(p, timestamp_col="ts").interactions["timestamp"].tolist()
    assert stamps == [
        (pd.Timestamp("2020-03-04", tz="UTC") - pd.Timestamp(0, tz="UTC")).total_seconds()
    ]


def test_a_file_mixing_utf8_and_another_encoding_is_refused_naming_the_line(
    tmp_path: Path,
) -> None:
    """Read whole as Latin-1, its UTF-8 ids became mojibake and their ratings were
    dropped as unknown items, with exit 0."""
    p = tmp_path / "r.csv"
    p.write_bytes("user_id,item_id,rating\nu1,Amélie,5\nu2,Café,4\n".encode() + b"u\xe94,x,3\n")
    with pytest.raises(DataError, match=r"r\.csv: line 4: byte 0xe9 is not UTF-8, but the file's"):
        load_table(p)


@pytest.mark.parametrize(
    "raw, title, name",
    [
        ("It’s Here".encode("cp1252"), "It’s Here", "Windows-1252"),  # Excel's curly quote
        ("Misérables\x81".encode("latin-1"), "Misérables\x81", "Latin-1"),  # 0x81: not cp1252
        # byte pairs that happen to be valid UTF-8 inside legacy text ("ß“", "é" +
        # no-break space + "»") are no sign of a UTF-8 file
        ("„Fuß“ und mehr".encode("cp1252"), "„Fuß“ und mehr", "Windows-1252"),
        ("Le café\u00a0» Amélie".encode("cp1252"), "Le café\u00a0» Amélie", "Windows-1252"),
    ],
)
def test_a_file_in_one_legacy_encoding_is_read_in_it_with_a_warning(
    tmp_path: Path, raw: bytes, title: str, name: str
) -> None:
    p = tmp_path / "items.csv"
    p.write_bytes(b"item_id,title\n1," + raw + b"\n")
    with pytest.warns(UserWarning, match=rf"not UTF-8 \(line 2: byte 0x..\); read as {name}"):
        items = read_table(p)
    assert items["title"].tolist() == [title]


def test_a_semicolon_csv_from_a_european_excel_is_read(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user_id;item_id;rating\nu1;i1;4\nu2;i1;5\n")
    assert load_table(p).interactions["rating"].tolist() == [4.0, 5.0]


def test_a_tab_separated_csv_is_read_by_its_tabs(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"  # exports name tab-separated files .csv too
    p.write_text("user_id\titem_id\trating\nu1\ti1\t4\nu2\ti1\t5\n")
    assert load_table(p).interactions["rating"].tolist() == [4.0, 5.0]


@pytest.mark.parametrize(
    "stamp, needle",
    [
        # dateutil read these as the clock at loading: a time that moved every run
        ("now", "timestamp 'now' names the clock at loading, not a date"),
        ("Today", "timestamp 'Today' names the clock at loading, not a date"),
        # the same from what a value lacks: "10:30" became today at 10:30, "June 5"
        # the year 1
        ("10:30", "timestamp '10:30' is not a number or a date with its year"),
        ("June 5", "timestamp 'June 5' is not a number or a date with its year"),
        # databases' "no date"; 9999-12-31 was a raw OutOfBoundsDatetime traceback
        pytest.param(
            "9999-12-31",
            "timestamp '9999-12-31' is a placeholder date (year 1 or 9999",
            marks=PANDAS_3,
        ),
        pytest.param(
            "0001-01-01",
            "timestamp '0001-01-01' is a placeholder date (year 1 or 9999",
            marks=PANDAS_3,
        ),
        ("2021-13-45", "timestamp '2021-13-45' is not a number or a date"),
        # no time in any epoch unit (and it swayed the guess of the column's unit)
        ("99999999999999999999999", "timestamp '99999999999999999999999' is past the year 9999"),
    ],
)
def test_a_timestamp_that_is_no_time_is_reported(tmp_path: Path, stamp: str, needle: str) -> None:
    p = tmp_path / "r.csv"
    p.write_text(f"user_id,item_id,rating,ts\nu1,i1,4,100\nu1,i2,3,{stamp}\nu2,i1,5,200\n")
    data = load_table(p, timestamp_col="ts")
    assert data.interactions["timestamp"].isna().tolist() == [False, True, False]
    with pytest.raises(DataError, match=re.escape(needle)):
        clean(data, strict=True)


@pytest.mark.parametrize("text", ["NaN", "1_0", "\uff14"])
def test_a_rating_pandas_cannot_read_is_not_called_out_of_range(tmp_path: Path, text: str) -> None:
    # float() reads these three, pandas does not: they were named "not a usable
    # number (infinite, or beyond float32's range)"
    p = tmp_path / "r.csv"
    p.write_text(f"user_id,item_id,rating\nu1,i1,4\nu1,i2,{text}\n", encoding="utf-8")
    needle = f"line 3, field 'rating': rating {text!r} is not a number"
    with pytest.raises(DataError, match=re.escape(needle)):
        clean(load_table(p), strict=True)


@PANDAS_3
def test_dates_far_from_1970_are_read_without_overflow(tmp_path: Path) -> None:
    # pandas 3 parses dates as microseconds; the nanosecond epoch overflowed past 2262
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating,ts\nu1,i1,4,2400-01-01\nu1,i2,3,1500-06-01\n")
    stamps = load_table(p, timestamp_col="ts").interactions["timestamp"].tolist()
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    assert stamps == [
        (pd.Timestamp("2400-01-01", tz="UTC") - epoch).total_seconds(),
        (pd.Timestamp("1500-06-01", tz="UTC") - epoch).total_seconds(),
    ]


def test_a_quote_left_open_is_named_not_swallowing_the_file(tmp_path: Path) -> None:
    # the open quote took every later row into one field: the catalogue shrank to its
    # first item, and the ratings of the rest were blamed as unknown items
    p = tmp_path / "items.csv"
    p.write_text('item_id,title,description\ni1,Red Shoe,"A great shoe\ni2,Blue Hat,warm\n')
    with pytest.raises(DataError, match=r"items.csv, line 2: a quoted field opened here is never"):
        read_table(p)


def test_a_long_quoted_field_is_read(tmp_path: Path) -> None:
    # csv's default cap of 131,072 characters refused it as "malformed quoting"
    p = tmp_path / "items.csv"
    body = "x" * 200_000
    p.write_text(f'item_id,title,description\ni1,"Red, Shoe",{body}\ni2,Hat,"{body}"\n')
    frame = read_table(p)
    assert frame["description"].tolist() == [body, body]
    assert frame["title"].tolist() == ["Red, Shoe", "Hat"]


def test_a_broken_link_is_named_as_a_link(tmp_path: Path) -> None:
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    gone = tmp_path / "gone.csv"
    gone.symlink_to(tmp_path / "nowhere.csv")
    for p in (loop, gone):
        with pytest.raises(DataError, match="is a symbolic link to a missing file, or a loop"):
            read_table(p)


def test_a_tie_of_utf8_letters_and_stray_bytes_is_mixed(tmp_path: Path) -> None:
    # one Latin-1 "Café" beside one UTF-8 "Amélie": read as Windows-1252, the UTF-8 id
    # became "AmÃ©lie" and its ratings unknown items
    p = tmp_path / "r.csv"
    p.write_bytes(
        b"user_id,item_id,rating\n" + "u2,Café,5\n".encode("latin-1") + "u1,Amélie,4\n".encode()
    )
    with pytest.raises(DataError, match=r"line 2: byte 0xe9 is not UTF-8, .*\(1 character\)"):
        read_table(p)


def test_float_ids_are_written_value_by_value() -> None:
    """A Parquet float id column: whole numbers as integers, 1e20 (no int64) as its
    float text, where the cast to int64 raised a TypeError traceback."""
    from metarec.data.columns import str_ids

    ids = str_ids(pd.Series([1.0, 2.0, 1e20, np.nan]))
    assert ids.tolist()[:3] == ["1", "2", "1e+20"] and pd.isna(ids.iloc[3])


@pytest.mark.parametrize(
    "raw, needle",
    [
        ("user_id,item_id,rating\nu1,i1,4\n".encode("utf-16"), "UTF-16 text"),
        # without the byte-order mark: "line 3: expected 3 fields, found 1" before
        ("user_id,item_id,rating\nu1,i1,4\n".encode("utf-16-le"), "UTF-16 text"),
        ("user_id,item_id,rating\nu1,i1,4\n".encode("utf-16-be"), "UTF-16 text"),
        (b"user_id,item_id,rating\ru1,i1,4\r", "bare carriage return"),
    ],
)
def test_files_in_a_form_we_cannot_read_say_which(tmp_path: Path, raw: bytes, needle: str) -> None:
    p = tmp_path / "r.csv"
    p.write_bytes(raw)
    with pytest.raises(DataError, match=needle):
        load_table(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_table(tmp_path / "nope.csv")


def test_arguments_of_the_wrong_kind_are_named(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating\n1,10,5\n")
    for kwargs, needle in [
        ({"interactions_path": None}, "interactions_path: expected a file path, got None"),
        ({"items_path": 5}, "items_path: expected a file path, got 5"),
        ({"sep": ""}, "sep: expected a delimiter"),
        ({"user_col": None}, "user_col: expected a column name, got None"),
        ({"title_col": ""}, "title_col: expected a column name, got ''"),
        ({"text_cols": [1]}, r"text_cols: expected a list of column names, got \[1\]"),
        ({"text": 5}, "text: expected an ItemTextConfig, got 5"),
        ({"name": 5}, "name: expected the data set's name, got 5"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            load_table(**({"interactions_path": p} | kwargs))  # type: ignore[arg-type]


def test_a_folder_or_a_device_is_not_called_missing(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").mkdir()  # a folder named like a file
    with pytest.raises(DataError, match=r"ratings\.csv: is a folder; a data file is needed"):
        load_table(tmp_path / "ratings.csv")
    if Path("/dev/null").exists():
        with pytest.raises(DataError, match="not a regular file"):
            load_table("/dev/null")


def test_epoch_milliseconds_are_read_as_such(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating,ts\n1,10,4,1680214800000\n1,11,3,1680214801500\n")
    with pytest.warns(UserWarning, match="read as milliseconds since 1970 .* year 55,213"):
        ds = load_table(p, timestamp_col="ts")
    assert ds.interactions["timestamp"].tolist() == [1680214800.0, 1680214801.5]
    p.write_text("user_id,item_id,rating,ts\n1,10,4,1680214800\n")  # seconds: left alone
    assert load_table(p, timestamp_col="ts").interactions["timestamp"].tolist() == [1680214800.0]
    # before 1970: the year said was as far ahead (the median's size, not its sign)
    p.write_text("user_id,item_id,rating,ts\n1,10,4,-1680214800000\n")
    with pytest.warns(UserWarning, match=r"year -51,273\)"):
        load_table(p, timestamp_col="ts")


def test_a_column_of_years_is_not_read_as_times_without_a_word(tmp_path: Path) -> None:
    # "2019" read as 2019 seconds: every rating in the first hour of 1970, and "ok"
    p = tmp_path / "r.csv"
    p.write_text('user_id,item_id,rating,date\n1,10,4,"2019"\n1,11,3,2021\n')
    with pytest.warns(UserWarning, match=r"every timestamp is a whole number from 1800 to 2100 "
                      r"\(2019, ...\): read as seconds since 1970, not as years"):  # fmt: skip
        load_table(p, timestamp_col="date")
    p.write_text("user_id,item_id,rating,ts\n1,10,4,1\n1,11,3,2\n1,12,3,2019\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_table(p, timestamp_col="ts")
    # ordinals (1, 2, ...) that reach 2019 are no years
    assert not [w for w in caught if "not as years" in str(w.message)]


def test_the_separator_is_sniffed_from_the_header_after_blank_lines(tmp_path: Path) -> None:
    # a tab-separated ".csv" was sniffed from its blank first line
    p = tmp_path / "r.csv"
    p.write_text("\n \nuser_id\titem_id\trating\nu1\t10\t4\n")
    assert load_table(p).interactions[["user_id", "item_id"]].values.tolist() == [["u1", "10"]]


def test_lists_written_out_in_a_csv_are_read_as_their_values(tmp_path: Path) -> None:
    # pandas' to_csv writes a list column as "['a', 'b']": the brackets, quotes and JSON
    # escapes reached the genres and the encoder text
    items = pd.DataFrame(
        {
            "book_id": ["b1", "b2", "b3"],
            "name": ["Sea", "Crown", "[REC]"],
            "tags": [["Horror", "Drama"], ["Self-Help"], ["Drama"]],
            "authors": [["Ana García", "Bo Li"], ["Cy"], "Di"],
        }
    )
    items.to_csv(tmp_path / "items.csv", index=False)
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu1,b1,5\nu2,b2,4\nu1,b3,3\n")
    as_json = tmp_path / "items_json.csv"
    as_json.write_text(
        'book_id,name,tags,authors\nb1,Sea,"[""Horror"", ""Drama""]","[""Ana Garc\\u00eda"", '
        '""Bo Li""]"\nb2,Crown,"[""Self-Help""]",Cy\nb3,[REC],Drama,Di\n'
    )
    for path in (tmp_path / "items.csv", as_json):
        ds = load_table(tmp_path / "r.csv", path, item_id_col="book_id", title_col="name",
                        genre_col="tags", text_cols=["authors"])  # fmt: skip
        got = ds.items.set_index("item_id")
        assert got.loc["b1", "genres"] == "Horror|Drama", path
        assert "Ana García, Bo Li" in got.loc["b1", "text"], got.loc["b1", "text"]
        assert "[" not in got.loc["b1", "text"] and "'" not in got.loc["b1", "text"]
        assert got.loc["b3", "title"] == "[REC]"  # a bracketed title is no list


def test_compact_dates_are_not_read_as_times_without_a_word(tmp_path: Path) -> None:
    # 20200105 read as seconds is 1970-08-22, and validate said "ok"
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating,day\n1,10,4,20200105\n1,11,3,20191231\n")
    with pytest.warns(UserWarning, match=r"whole number of eight digits that reads as a date "
                      r"\(20200105, ...\): read as seconds since 1970"):  # fmt: skip
        load_table(p, timestamp_col="day")
    # seconds of 1970's summer that are no dates (month 13) stay quiet
    p.write_text("user_id,item_id,rating,ts\n1,10,4,20201305\n1,11,3,20200105\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_table(p, timestamp_col="ts")
    assert not [w for w in caught if "eight digits" in str(w.message)]


def test_the_scale_read_from_the_data_leaves_out_items_cleaning_drops(tmp_path: Path) -> None:
    # a 10 for an item with neither text nor title made the scale 1-10 (like threshold
    # 7.75) for data rated 1-5 once cleaning had dropped that item
    (tmp_path / "i.csv").write_text("item_id,title\ni1,A\ni2,B\ni3,\n")
    (tmp_path / "r.csv").write_text(
        "user_id,item_id,rating\nu1,i1,5\nu1,i2,3\nu2,i1,4\nu2,i2,1\nu3,i3,10\n"
    )
    ds = load_table(tmp_path / "r.csv", tmp_path / "i.csv")
    assert ds.rating_range == (1.0, 5.0)


def test_timestamps_in_another_unit_than_the_column_are_named(tmp_path: Path) -> None:
    # seconds among milliseconds were scaled with them into January 1970, and sorted
    # before every other rating; milliseconds among seconds were "past the year 9999"
    p = tmp_path / "r.csv"
    ms = [f"u{n},{n},4,{1600000000000 + n}" for n in range(4)]
    p.write_text("user_id,item_id,rating,ts\n" + "\n".join([*ms, "u9,9,4,1600000400"]) + "\n")
    with pytest.warns(UserWarning, match="read as milliseconds"):
        ds = load_table(p, timestamp_col="ts")
    assert ds.interactions["timestamp"].isna().tolist() == [False] * 4 + [True]
    assert validate(ds) == [
        "interactions: 1 row: timestamp is not a time (treated as unknown) (e.g. r.csv line 6: "
        "timestamp '1600000400' is in another unit than the column's other timestamps)"
    ]
    secs = [f"u{n},{n},4,{1600000000 + n}" for n in range(4)]
    p.write_text("user_id,item_id,rating,ts\n" + "\n".join([*secs, "u9,9,4,1600000400000"]))
    assert "is in another unit" in validate(load_table(p, timestamp_col="ts"))[0]
    # ordinals and offsets from the data's own start span every scale (only a column
    # read in a finer unit is checked), and a 0 is often "no time": all left alone
    offsets = ["1000000", "150000000", "300000000"]
    for stamps in (
        ["1", "2", "500", "9000"],
        offsets,
        ["0", *(str(1600000000 + n) for n in range(3))],
    ):
        rows = [f"u{n},{n},4,{t}" for n, t in enumerate(stamps)]
        p.write_text("user_id,item_id,rating,ts\n" + "\n".join(rows) + "\n")
        assert load_table(p, timestamp_col="ts").interactions["timestamp"].notna().all()


def test_strict_errors_name_the_files_own_column(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("reader,isbn,score\nu1,1,8\nu1,2,x\n")
    ds = load_table(p, user_col="reader", item_col="isbn", rating_col="score")
    with pytest.raises(DataError, match=r"r\.csv, line 3, field 'score': rating 'x'"):
        clean(ds, strict=True)


def test_a_stray_rating_read_as_the_scales_end_is_warned_about(tmp_path: Path) -> None:
    # one 99 among 1-5 stars: the scale read from the data would be [1, 99]
    rows = [f"{u},{i},{1 + (u + i) % 5}" for u in range(40) for i in range(10)]
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n" + "\n".join([*rows, "1,3,99"]))
    with pytest.warns(UserWarning, match=r"\[1, 99\], but 1 rating\(s\) of 99 .* \(1 to 5\)"):
        ds = load_table(tmp_path / "r.csv")
    assert ds.rating_range == (1.0, 99.0)
    # a typo nearer the scale: past its step, though within three of its spans
    for typo in (10, 7, -1):
        (tmp_path / "r.csv").write_text(
            "user_id,item_id,rating\n" + "\n".join([*rows, f"1,3,{typo}"])
        )
        with pytest.warns(UserWarning, match=rf"1 rating\(s\) of {typo} .* \(1 to 5\)"):
            load_table(tmp_path / "r.csv")
    # the span rule holds where too few common values are left to judge a scale by: a
    # stray 2 among 2,000 1s left one, and the 100 went unsaid
    from metarec.data.generic import stray_extremes

    said = stray_extremes(np.array([1.0] * 2000 + [2.0, 100.0]))
    assert len(said) == 1 and "1 rating(s) of 100 stand far from the others (1 to 2)" in said[0]
    # a scale whose end is merely rare, or a small file, is not warned about
    rare_ten = [f"{u},{i},{1 + (u + i) % 9}" for u in range(40) for i in range(10)]
    rare_ten[-1] = "39,9,10"
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n" + "\n".join(rare_ten))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "[^:]*: no items file")  # said of every such call
        assert load_table(tmp_path / "r.csv").rating_range == (1.0, 10.0)
        (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,1,5\n1,2,7\n2,1,10\n")
        assert load_table(tmp_path / "r.csv").rating_range == (5.0, 10.0)


def test_a_stray_top_rating_that_leaves_nothing_liked_is_refused_before_any_fit(
    tmp_path: Path,
) -> None:
    """One 7 among 1-5 stars put the like threshold at 5.5: train succeeded with no
    rating liked, and a P2 benchmark fitted every model before failing with "no
    metarec model in the run"."""
    import metarec as mr
    from metarec.errors import ConfigError
    from metarec.evaluation.benchmark import run_benchmark

    rows = [f"{u},{i},{1 + (u + i) % 5}" for u in range(40) for i in range(10)]
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n" + "\n".join([*rows, "40,0,7"]))
    titles = ["Heat", "Fargo", "Alien", "Brazil", "Ran", "Jaws", "Big", "Rocky", "Psycho", "Up"]
    (tmp_path / "i.csv").write_text(
        "item_id,title\n" + "".join(f"{i},{t}\n" for i, t in enumerate(titles))
    )
    with pytest.warns(UserWarning, match="stand far from the others"):
        ds = load_table(tmp_path / "r.csv", tmp_path / "i.csv")
    needle = r"like threshold 5\.5, the top quarter of the rating scale \[1, 7\], is "
    needle += r"reached by 1 of \d+ ratings"
    with pytest.raises(ConfigError, match=needle.replace(r"\d+", "401")):
        run_benchmark("p2", ds, out=tmp_path / "out", peers=["popularity"], plots=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(ConfigError, match=needle):
        mr.train(ds, {"epochs": 1}, encoder="tfidf", progress=False)
    # a threshold given is the user's word; so is the scale, which drops the typo
    given = mr.train(ds, {"epochs": 1, "like_threshold": 5}, encoder="tfidf", progress=False)
    assert given.cfg.like_threshold == 5
    # impressions (0 shown, 1 clicked) with 0.5 % clicks: the rare 1s are what is liked
    shown = [f"{u},{i},{int(u == 0 and i < 2)}" for u in range(40) for i in range(10)]
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n" + "\n".join(shown))
    clicks = load_table(tmp_path / "r.csv", tmp_path / "i.csv")
    fitted = mr.train(clicks, {"epochs": 1, "objective": "bce"}, encoder="tfidf", progress=False)
    assert fitted.cfg.like_threshold == 0.75
    # and an impression left unclicked is a "no", not a click: read as one (every rated
    # item a positive), four 0s made a user's top 8 all of their kind
    assert fitted.cfg.support_positives == "liked"
    unclicked = fitted.adapt([(str(i), 0) for i in range(4)])
    np.testing.assert_array_equal(fitted.score(unclicked), fitted.score(fitted.adapt([])))
    clicked = fitted.adapt([(str(i), 1) for i in range(4)])
    assert not np.array_equal(fitted.score(clicked), fitted.score(fitted.adapt([])))
    # the prior's list, explained as the prior's, not as "Fits the pattern of your ratings"
    from metarec.explain import FROM_TEXT, LESS_LIKED, NEW_ITEM, POPULAR, recommend_with_reasons

    mine = recommend_with_reasons(fitted, unclicked, k=4)
    assert set(mine["reason"]) <= {POPULAR, LESS_LIKED, NEW_ITEM, FROM_TEXT}, mine["reason"]
    shown = recommend_with_reasons(fitted, unclicked, k=10, exclude_seen=False)
    assert set(shown.set_index("item_id").reindex(["0", "1"])["reason"]) == {"You rated it 0"}
    told = mr.train(clicks, {"epochs": 1, "objective": "bce", "support_positives": "rated"},
                    encoder="tfidf", progress=False)  # fmt: skip
    assert told.cfg.support_positives == "rated"  # the user's word wins
    # a benchmark's record says the rule that ran, not the null its config held
    from metarec.evaluation.benchmark import _config_run
    from metarec.models.meta_model import MetaModel

    model = MetaModel({"objective": "bce"})
    model.recommender = fitted
    assert _config_run(model)["support_positives"] == "liked"
    # a rating model builds no positives: left open, so its checkpoints' fingerprint
    # stays what it was before the rule could follow the data
    rating = mr.train(clicks, {"epochs": 1}, encoder="tfidf", progress=False)
    assert rating.cfg.support_positives is None


def test_only_two_values_either_side_of_the_like_threshold_are_binary_feedback() -> None:
    from metarec.data.schema import support_rule_for, two_sided

    assert two_sided([0, 1, 1, np.nan], 0.75, (0, 1)) == (0.0, 1.0)
    assert support_rule_for([0, 1, 1], 0.75, (0, 1)) == "liked"
    assert support_rule_for([1, 2, 2], 1.75, (1, 2)) == "liked"  # thumbs down and up
    assert support_rule_for([1, 5, 5], 4.0, (1, 5)) == "liked"  # the scale's two ends
    # both liked (4s and 5s of 1-5 stars), or two values inside a wider scale (3s and
    # 5s): a 4 or a 3 is no "no", so every rated item stays a positive
    assert two_sided([4, 5, 5], 4.0, (1, 5)) is None
    assert support_rule_for([3, 5], 4.0, (1, 5)) == "rated"
    assert support_rule_for([1, 2], 1.75, (1, 5)) == "rated"
    assert support_rule_for([1, 2, 3, 4, 5], 4.0, (1, 5)) == "rated"
    assert support_rule_for([1, 1], 1.0, (1, 1)) == "rated"  # one value: clicks as all 1s


def test_ratings_without_an_items_file_are_said_to_leave_items_without_text(
    ratings_csv: Path,
) -> None:
    # ids became the items' text without a word, where an items file without a text
    # column was warned about
    with pytest.warns(UserWarning, match=r"ratings\.csv: no items file \(--items FILE, or "
                      r"items_path=\): items are known by their ids alone"):  # fmt: skip
        load_table(ratings_csv, user_col="user", item_col="movie", rating_col="stars")


def test_item_file_columns_without_an_item_file_are_refused_or_said(ratings_csv: Path) -> None:
    from metarec.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--text-cols description,author: names columns "
                       r"of the items file, and none was given \(--items FILE"):  # fmt: skip
        load_table(ratings_csv, text_cols=["description", "author"])
    # read from nowhere, said but not refused (a saved run's spec may name them)
    with pytest.warns(UserWarning, match=r"--title-col name, --items-id-col book_id: name"):
        ds = load_table(ratings_csv, user_col="user", item_col="movie", rating_col="stars",
                        title_col="name", item_id_col="book_id")  # fmt: skip
    assert len(ds.items) > 0


def test_user_file_columns_without_a_users_file_are_refused_or_said(ratings_csv: Path) -> None:
    # both were ignored without a word, and validate said "ok"
    with pytest.raises(ConfigError, match=r"--user-feature-cols age: names columns of the "
                       r"users file, and none was given \(--users FILE"):  # fmt: skip
        load_table(ratings_csv, user_col="user", item_col="movie", rating_col="stars",
                   user_feature_cols=["age"])  # fmt: skip
    with pytest.warns(UserWarning, match=r"--users-id-col uid: names a column of the users"):
        load_table(ratings_csv, user_col="user", item_col="movie", rating_col="stars",
                   users_id_col="uid")  # fmt: skip


def test_list_arguments_given_as_one_string_and_bad_scales_are_refused(
    ratings_csv: Path,
) -> None:
    from metarec.errors import ConfigError
    from metarec.evaluation.benchmark import run_benchmark

    for kwargs, needle in [
        ({"text_cols": "title"}, "text_cols: expected a list of column names"),
        ({"rating_range": (5, 1)}, "rating_range: expected finite low <= high"),
        ({"rating_range": 5}, "rating_range: expected (low, high)"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_table(ratings_csv, user_col="user", item_col="movie", rating_col="stars",
                       **kwargs)  # fmt: skip
    # checked before a data set is loaded: "ml-100k" is never read here
    for kwargs, needle in [
        ({"peers": "popularity"}, "peers: expected a list, got the string 'popularity'"),
        ({"folds": "2"}, "folds: expected a whole number, got '2'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            run_benchmark("p2", "ml-100k", **kwargs)  # type: ignore[arg-type]


def test_a_column_named_timestamp_is_read_without_being_named(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating,timestamp\nu1,i1,4,200\nu1,i2,3,100\n")
    assert load_table(p).interactions["timestamp"].tolist() == [200.0, 100.0]
    # a rating column named timestamp (odd, but named) is not read twice
    q = tmp_path / "q.csv"
    q.write_text("user_id,item_id,timestamp\nu1,i1,4\n")
    assert load_table(q, rating_col="timestamp").interactions["rating"].tolist() == [4.0]


@pytest.mark.parametrize("sep", ["é", '"', "\n"])
def test_a_delimiter_pandas_cannot_split_on_is_refused(tmp_path: Path, sep: str) -> None:
    # "é" is two bytes in UTF-8: pandas' raw ValueError said "> 1 char long"
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating\nu1,i1,5\n")
    with pytest.raises(ConfigError, match="sep: expected a delimiter of ASCII characters"):
        load_table(p, sep=sep)


def test_a_carriage_return_inside_a_line_is_named(tmp_path: Path) -> None:
    # pandas split the line there: "found 3 rows but 2 non-blank lines", no line named
    p = tmp_path / "items.csv"
    p.write_bytes(b"item_id,title,description\r\ni1,Red Shoe,first\rsecond\r\ni2,Hat,x\r\n")
    with pytest.raises(DataError, match=r"items.csv, line 2: a carriage return \(\\r\) inside"):
        read_table(p)
    # CRLF line ends, and a file's last line ended by a lone \r, are still read
    p.write_bytes(b"item_id,title\r\ni1,Red Shoe\r\ni2,Hat\r")
    assert read_table(p)["title"].tolist() == ["Red Shoe", "Hat"]


def test_a_users_id_column_is_never_a_feature_too(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu1,i1,5\nu2,i1,4\n")
    (tmp_path / "u.csv").write_text("uid,user_id,age\nu1,x,20\nu2,y,30\n")
    r, u = tmp_path / "r.csv", tmp_path / "u.csv"
    for kwargs, needle in [
        ({"user_feature_cols": ["user_id"]}, "'user_id': is the users file's id column"),
        ({"users_id_col": "uid", "user_feature_cols": ["user_id"]},
         "'user_id': the users' id is 'uid', which takes the name user_id"),
        ({"users_id_col": "uid", "user_feature_cols": ["age", "age"]}, "'age': named twice"),
        ({"user_col": "_line"}, "--user-col '_line': metarec numbers each file's lines"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_table(r, users_path=u, **kwargs)  # type: ignore[arg-type]
    # the file's own user_id, beside the id chosen, is left out of the features, and said
    with pytest.warns(UserWarning, match="'user_id' column is not used as a user feature"):
        users = load_table(r, users_path=u, users_id_col="uid").users
    assert users is not None and users.columns.tolist() == ["user_id", "age", "_line"]
    assert users["user_id"].tolist() == ["u1", "u2"]


def test_an_items_files_text_column_is_item_text(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu1,i1,5\nu1,i2,3\n")
    (tmp_path / "i.csv").write_text("item_id,title,text\ni1,Red Shoe,a lovely red shoe\ni2,Hat,\n")
    r, i = tmp_path / "r.csv", tmp_path / "i.csv"
    # read unnamed, as the title is, and named alike (it was "not in the items table")
    for kwargs in ({}, {"text_cols": ["text"]}):
        items = load_table(r, i, **kwargs).items  # type: ignore[arg-type]
        assert items["text"].tolist() == ["Red Shoe. a lovely red shoe", "Hat."]
    # a template may place it, as any text column
    text = ItemTextConfig(extra=["text"], template="{text} ({title})")
    assert load_table(r, i, text=text).items["text"].tolist()[0] == "a lovely red shoe (Red Shoe)"
    (tmp_path / "j.csv").write_text("item_id,_note\ni1,red\n")
    for kwargs, needle in [
        ({"text_cols": ["_note"]}, "--text-cols '_note': names starting with '_' are metarec's"),
        ({"text_cols": ["text", "text"]}, "--text-cols 'text': named twice"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_table(r, tmp_path / "j.csv", **kwargs)  # type: ignore[arg-type]


def test_parquet_list_columns_are_joined_and_a_list_id_refused(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    r, i = tmp_path / "r.parquet", tmp_path / "i.parquet"
    pd.DataFrame({"user_id": ["u1"], "item_id": [10], "rating": [4]}).to_parquet(r)
    pd.DataFrame({"item_id": [10], "title": ["Heat"], "genres": [["Crime", "Drama"]],
                  "text": [["cops", "robbers"]]}).to_parquet(i)  # fmt: skip
    items = load_table(r, i).items
    # read as a '|'-separated genres string is, not as numpy's "['Crime' 'Drama']"
    assert items["genres"].tolist() == ["Crime|Drama"]
    assert items["text"].tolist() == ["Heat. Genres: Crime, Drama. cops, robbers"]
    pd.DataFrame({"user_id": [[1]], "item_id": [10], "rating": [4]}).to_parquet(r)
    with pytest.raises(DataError, match=r"r\.parquet, line 2, field 'user_id': user_id \[1\]"):
        load_table(r, i)


def test_a_users_files_index_and_underscore_columns_are_left_out_with_a_warning(
    tmp_path: Path,
) -> None:
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu1,i1,5\nu2,i1,4\n")
    # pandas' to_csv writes its index under an empty name (read back as 'Unnamed: 0'):
    # a row number describes no user; a '_' column would vanish at cleaning
    u = tmp_path / "u.csv"
    u.write_text(",user_id,age,_segment\n0,u1,20,a\n1,u2,30,b\n")
    with pytest.warns(UserWarning) as caught:
        ds = load_table(tmp_path / "r.csv", users_path=u)
    said = [str(w.message) for w in caught if "no items file" not in str(w.message)]
    assert f"{u}: column(s) 'Unnamed: 0' not used as user features: a column without" in said[0]
    assert f"{u}: column(s) '_segment' not used as user features: names starting with" in said[1]
    assert ds.users is not None and ds.users.columns.tolist() == ["user_id", "age", "_line"]
    # an index column named is used, as any feature named is
    users = load_table(tmp_path / "r.csv", users_path=u, user_feature_cols=["Unnamed: 0"]).users
    assert users is not None and users["Unnamed: 0"].tolist() == ["0", "1"]


def test_a_users_files_list_values_are_refused_by_column_and_row(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    r, u = tmp_path / "r.csv", tmp_path / "u.parquet"
    r.write_text("user_id,item_id,rating\nu1,i1,5\nu2,i1,4\n")
    # one category per user, as a served user's features are: joined, ["en", "fr"] was
    # the category "en, fr" (numpy's "['en' 'fr']" before) that no request could match
    langs = pd.Series([None, np.array(["en", "fr"])], dtype=object)
    pd.DataFrame({"user_id": ["u1", "u2"], "age": [20, 30], "langs": langs}).to_parquet(u)
    with pytest.raises(
        DataError,
        match=re.escape(
            f"{u}, line 3, field 'langs': langs ['en', 'fr'] holds several values; a user "
            "feature is one value per user (a number or text)"
        ),
    ):
        load_table(r, users_path=u)
    users = load_table(r, users_path=u, user_feature_cols=["age"]).users
    assert users is not None and users["age"].tolist() == ["20", "30"]


def test_long_integer_ids_in_parquet_beside_a_null_stay_exact(tmp_path: Path) -> None:
    # as in JSON Lines: pandas gives an int64 column with a null as floats, which round
    # 19-digit ids into one another
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    users = [1234567890123456789, 1234567890123456788, None, 1234567890123456787]
    ids = pa.array(users, pa.int64())
    table = pa.table({"user_id": ids, "item_id": ["1", "2", "3", "1"], "rating": [5, 1, 4, 2]})
    pq.write_table(table, tmp_path / "r.parquet")
    got = load_table(tmp_path / "r.parquet").interactions["user_id"]
    assert got.dropna().tolist() == [str(u) for u in users if u is not None]


def test_the_scale_is_read_from_the_rows_cleaning_keeps(tmp_path: Path) -> None:
    # 30 ratings of 6 for an item the items file lacks are dropped by cleaning; read
    # into the scale, they made 1-5 data a 1-6 scale and the like threshold 4.75
    rows = [f"u{u},{i},{1 + (u + i) % 5}" for u in range(40) for i in range(1, 6)]
    rows += [f"u{u},77,6" for u in range(30)] + [",1,9"]  # and one without a user
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n" + "\n".join(rows) + "\n")
    (tmp_path / "i.csv").write_text("item_id,title\n1,A\n2,B\n3,C\n4,D\n5,E\n")
    ds = load_table(tmp_path / "r.csv", tmp_path / "i.csv")
    assert ds.rating_range == (1.0, 5.0)
    assert clean(ds).report.rows_out == 200


def test_years_no_calendar_has_are_said_and_left_unknown(tmp_path: Path) -> None:
    # 1995.5 was kept (its text said 1996), -5 and 0 reached the text, and 99999 was
    # the newest year of all, the first item P1 took for a new one
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu1,1,4\n")
    (tmp_path / "i.csv").write_text(
        "item_id,title,year\n1,A,1995.5\n2,B,-5\n3,C,0\n4,D,99999\n5,E,1995.0\n"
    )
    with pytest.warns(UserWarning, match=r"i\.csv: 4 year\(s\) are no year, .*line 2: 1995\.5"):
        items = load_table(tmp_path / "r.csv", tmp_path / "i.csv").items
    assert items["year"].isna().tolist() == [True, True, True, True, False]
    assert items["text"].tolist() == ["A.", "B.", "C.", "D.", "E (1995)."]


def test_an_items_files_years_are_read_from_dates_and_titles(tmp_path: Path) -> None:
    # a year in the title beside the same in the year column was written twice into the
    # text; a date or a title's year was no year at all, and "'95" dropped without a word
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu1,1,4\n")
    (tmp_path / "i.csv").write_text(
        "item_id,title,year\n1,Toy Story (1995),1995\n2,Heat,1995-12-25\n"
        '3,"Matrix, The (1999)",\n4,Ran,\'95\n5,Seven (1995),1996\n'
    )
    with pytest.warns(UserWarning) as caught:
        items = load_table(tmp_path / "r.csv", tmp_path / "i.csv").items
    said = [str(w.message) for w in caught]
    assert any(re.search(r"i\.csv: 1 year\(s\) hold no year, .* line 5: \"'95\"", m) for m in said)
    # two years for one film: both reach the text, so the file is told
    assert any("1 title(s) end in a year other than the year column's (e.g. 'Seven (1995)' "
               "with 1996)" in m for m in said), said  # fmt: skip
    assert items["title"].tolist() == ["Toy Story", "Heat", "Matrix, The", "Ran", "Seven (1995)"]
    assert items["year"].fillna(0).tolist() == [1995, 1995, 1999, 0, 1996]
    assert items["text"].iloc[0] == "Toy Story (1995)."


def test_a_bracketed_number_in_undated_titles_is_no_year_to_differ(tmp_path: Path) -> None:
    # a books or products catalogue's "Tea Bags (1000)" beside its year column was
    # warned of as a title whose year differs, on every command that read the files
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu1,1,4\n")
    (tmp_path / "i.csv").write_text(
        "item_id,title,year\n1,Tea Bags (1000),1957\n2,Emma,1815\n3,Copy Paper,2001\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        items = load_table(tmp_path / "r.csv", tmp_path / "i.csv").items
    assert items["title"].tolist() == ["Tea Bags (1000)", "Emma", "Copy Paper"]
    assert items["text"].iloc[0] == "Tea Bags (1000) (1957)."


def test_decimal_commas_in_ratings_are_read_and_said(tmp_path: Path) -> None:
    # Excel's CSV in the semicolon locales writes 4,5: every half star was "not a
    # number" and dropped, leaving a 3-4 scale
    (tmp_path / "r.csv").write_text("user_id;item_id;rating\nu1;1;4,5\nu1;2;3\nu2;3;1,5\n")
    with pytest.warns(UserWarning, match=r"2 rating\(s\) read with a decimal comma \('4,5' as 4.5"):
        ds = load_table(tmp_path / "r.csv")
    assert ds.interactions["rating"].tolist() == [4.5, 3.0, 1.5]
    # beside a decimal point, which is meant is anyone's guess: named by cleaning
    (tmp_path / "r.csv").write_text("user_id;item_id;rating\nu1;1;4,5\nu1;2;3.5\n")
    assert "rating '4,5'" in validate(load_table(tmp_path / "r.csv"))[0]
    # a placeholder with a point ("k.A.", keine Angabe) is no decimal point: it turned
    # the comma reading off, and every half star was "not a number"
    (tmp_path / "r.csv").write_text("user_id;item_id;rating\nu1;1;4,5\nu1;2;k.A.\nu2;3;2,5\n")
    with pytest.warns(UserWarning, match=r"2 rating\(s\) read with a decimal comma"):
        ds = load_table(tmp_path / "r.csv")
    assert ds.interactions["rating"].iloc[[0, 2]].tolist() == [4.5, 2.5]
    assert validate(ds) == [
        "interactions: 1 row: missing or non-numeric rating (e.g. r.csv line 3: rating 'k.A.' "
        "is not a number)"
    ]


def test_unix_times_in_a_year_column_are_read_as_their_years() -> None:
    # a news feed's publication times were kept as years past 9999 and left out of the
    # item text without a word; in any unit, and what no unit fits is no year
    from metarec.data.generic import read_years

    values = [1709251200, 1709251200000, 1709251200000000, 1709251200000000000, 1995,
              "2024-03-01", 1e22]  # fmt: skip
    frame = pd.DataFrame({"year": pd.Series(values, dtype=object)})
    with pytest.warns(UserWarning) as caught:
        years = read_years(frame, "items.csv")
    assert years.iloc[:6].tolist() == [2024.0] * 4 + [1995.0, 2024.0]
    assert np.isnan(years.iloc[6])
    said = [str(w.message) for w in caught]
    assert any("4 year(s) are Unix times, read as their year" in m for m in said), said
    assert any("1 year(s) hold no year" in m for m in said), said


def test_ids_written_as_floats_read_alike_from_csv_and_json_lines(tmp_path: Path) -> None:
    """pandas writes an id column as 10.0 once it held a missing value: read from JSON
    Lines it was "10", from CSV "10.0", which matched no item of a "10" items file."""
    (tmp_path / "i.csv").write_text("item_id,title\n10,Ten\n20,Twenty\n")
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,10.0,4\n1,20.0,5\n2.0,10.0,3\n")
    (tmp_path / "r.jsonl").write_text(
        '{"user_id": 1, "item_id": 10.0, "rating": 4}\n'
        '{"user_id": 1, "item_id": 20.0, "rating": 5}\n'
        '{"user_id": 2.0, "item_id": 10.0, "rating": 3}\n'
    )
    from_json = load_table(tmp_path / "r.jsonl", tmp_path / "i.csv").interactions
    with pytest.warns(UserWarning, match=r"r\.csv: column 'item_id' holds whole numbers"):
        from_csv = load_table(tmp_path / "r.csv", tmp_path / "i.csv").interactions
    for column in ("user_id", "item_id"):
        assert from_csv[column].tolist() == from_json[column].tolist(), column
    assert from_csv["item_id"].tolist() == ["10", "20", "10"]
    # a column of text ids that only begins so is left as written
    (tmp_path / "s.csv").write_text("user_id,item_id,rating\n1,10.0,4\n1,v2.5,5\n")
    (tmp_path / "j.csv").write_text("item_id,title\n10.0,Ten\nv2.5,Twenty\n")
    kept = load_table(tmp_path / "s.csv", tmp_path / "j.csv").interactions
    assert kept["item_id"].tolist() == ["10.0", "v2.5"]


def test_quoted_files_read_by_pandas_as_the_csv_module_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quoted file is read by pandas' C parser (the csv module's rows took 22 times
    the file's size) where it can vouch for the same rows and lines: random files of
    quoted separators, newlines and quotes, blank and CRLF lines, read both ways."""
    from metarec.data import delimited

    rng = np.random.default_rng(0)
    pieces = ["a", "b c", ",", "\n", '""', "é", " ", "\r\n", "1.5", ""]

    def field() -> str:
        text = "".join(rng.choice(pieces, size=int(rng.integers(0, 4))))
        needs = any(c in text for c in ',"\n\r') or text.startswith(" ")
        return f'"{text}"' if needs or rng.random() < 0.3 else text

    used_fast = 0
    for n in range(60):
        end = "\r\n" if n % 3 == 0 else "\n"
        rows = ["id,title,rating"] + [
            ",".join(field() for _ in range(3)) for _ in range(int(rng.integers(1, 8)))
        ]
        if n % 4 == 0:
            rows.insert(2, "")  # a blank line
        if n % 5 == 0:
            rows.append('7,5" floppy,3')  # a quote inside a field: the csv module's call
        path = tmp_path / f"q{n}.csv"
        path.write_bytes((end.join(rows) + end).encode())
        data = delimited.read_bytes(path)
        fast = delimited._read_quoted_fast(data, "utf-8", ",", None, True, path)
        with monkeypatch.context() as m:
            m.setattr(delimited, "_read_quoted_fast", lambda *a: None)
            slow = delimited.read_delimited(path, sep=",")
        if fast is not None:
            used_fast += 1
            pd.testing.assert_frame_equal(fast, slow, check_dtype=False, obj=path.name)
        assert delimited.read_delimited(path, sep=",").equals(slow)
    assert used_fast > 30  # the usual file goes the fast way
    # files the two readers take otherwise: a doubled quote opening a field (refused by
    # the csv module, read as the text after it by pandas), a quote ending an unquoted
    # field (the quote count's parity then misplaced the lines), one column with a blank
    # looking row, a line of tabs
    for n, body in enumerate([
        'item_id,title\n1,Heat\n2,""Big"" Night\n',
        'user_id,item_id,rating\n1,""10,4\n',
        'a,b\nx",1\n"p,\n,q",2\n',
        'a\n1\n""\n3\n',
        'a\n1\n"  "\n3\n',
        't\nab"\ncd"\n\t\n',
        'a,b\n1,"x"\n\t\n2,"y"\n',
        'a,b\n"1","open\n',
        'a,"b"\n1,2\r\r\n3,4\n',  # a lone \r ends a line to both readers
        'a,"b"\n \t\r1,2\n',
        'a,b\n"x\ry",1\n2,3\n',  # inside quotes it counts as a line to the csv module
        '" ",b\n1,2\n',  # a blank name: "Unnamed: 0" the csv module's way
        'a,,"Unnamed: 1"\n1,2,3\n',
    ]):  # fmt: skip
        path = tmp_path / f"odd{n}.csv"
        path.write_bytes(body.encode())
        outcomes = []
        for fast_path in (True, False):
            with monkeypatch.context() as m:
                if not fast_path:
                    m.setattr(delimited, "_read_quoted_fast", lambda *a: None)
                try:
                    outcomes.append(delimited.read_delimited(path, sep=","))
                except DataError as e:
                    outcomes.append(str(e))
        if isinstance(outcomes[1], str):
            assert isinstance(outcomes[0], str) and outcomes[0] == outcomes[1], body
        else:
            pd.testing.assert_frame_equal(outcomes[0], outcomes[1], obj=repr(body))


def test_a_loaders_warning_names_the_callers_line(tmp_path: Path) -> None:
    # a fixed stacklevel fits one call path: through load_table, the year warnings named
    # a line of metarec's own loader (generic.py), where others named the user's
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu1,i1,4\nu1,i2,5\n")
    (tmp_path / "i.csv").write_text("item_id,title,year\ni1,A,978307200\ni2,B,1999/2000\n")
    with pytest.warns(UserWarning) as caught:
        load_table(tmp_path / "r.csv", tmp_path / "i.csv")
    years = [w for w in caught if "year(s)" in str(w.message)]
    assert len(years) == 2
    assert {w.filename for w in years} == {__file__}


@pytest.mark.parametrize(
    "header, needle",
    [("user_id::item_id::rating", "separated by '::', as in MovieLens 1M's .dat files"),
     ("user_id:token\titem_id:token\trating:float", "a RecBole atomic file"),
     ("196\t242\t3\t881250949", "the first line looks like data, not column names"),
     ("user_id, item_id, rating", "' item_id' has spaces around its name"),
     ("User_ID,item_id,rating", "did you mean 'User_ID'?"),
     ("1|Toy Story (1995)|0|0", "the first line looks like data")],
)  # fmt: skip
def test_a_header_that_shows_why_a_column_is_missing_says_so(
    tmp_path: Path, header: str, needle: str
) -> None:
    """Each was "column 'user_id' not found; columns are: ..." (or a repeated '0'),
    with nothing to say that the layout, not the name, was the trouble."""
    p = tmp_path / "r.txt"
    sep = next((s for s in ("::", "\t", "|", ",") if s in header), ",")
    p.write_text(header + "\n" + sep.join(["1"] * len(header.split(sep))) + "\n")
    with pytest.raises(DataError, match=re.escape(needle)):
        load_table(p)
    # a plain header gets no such guess
    ok = tmp_path / "ok.csv"
    ok.write_text("user,item_id,rating\n1,2,3\n")
    with pytest.raises(DataError) as info:
        load_table(ok)
    assert "—" not in str(info.value)
    # a Parquet file's columns are named by the file itself: no header line to miss
    pq = tmp_path / "r.parquet"
    pd.DataFrame({"0": [1], "1": [2], "2": [3]}).to_parquet(pq)
    with pytest.raises(DataError) as info:
        load_table(pq)
    assert "first line" not in str(info.value)


def test_a_title_ending_in_a_number_is_split_only_where_titles_carry_years(
    tmp_path: Path,
) -> None:
    """ "Tea Bags (1000)" became "Tea Bags" of the year 1000, and "Copy Paper (5000)"
    of 5000, in a catalogue whose titles carry no years."""
    r = tmp_path / "r.csv"
    r.write_text("user_id,item_id,rating\n" + "".join(f"u,p{i},4\n" for i in range(6)))
    products = ["Copy Paper A4 (5000)", "Tea Bags (1000)", "Kettle", "Mug", "Spoon", "Tray"]
    i = tmp_path / "i.csv"
    i.write_text("item_id,title\n" + "".join(f"p{n},{t}\n" for n, t in enumerate(products)))
    items = load_table(r, i).items
    assert items["title"].tolist() == products and items["year"].isna().all()
    # titles written "Title (Year)", most of them: read so, a quantity past 2100 not
    films = ["Heat (1995)", "Fargo (1996)", "Casino (1995)", "Alien (1979)", "Big", "X (5000)"]
    i.write_text("item_id,title\n" + "".join(f"p{n},{t}\n" for n, t in enumerate(films)))
    items = load_table(r, i).items
    assert items["title"].tolist() == ["Heat", "Fargo", "Casino", "Alien", "Big", "X (5000)"]
    assert items["year"].tolist()[:4] == [1995.0, 1996.0, 1995.0, 1979.0]
    assert items["year"].iloc[4:].isna().all()


def test_items_added_to_a_run_take_its_title_convention_not_their_batchs() -> None:
    """Judged on the batch, one "Tea Bags (1000)" added to a products run was a year
    1000, and "Heat 2 (2026)" added with two undated items to a MovieLens run lost its
    year; a year of 2100 or later that the year column confirms was written twice."""
    from metarec.service.items import item_frame

    films = pd.Series(["Heat (1995). Action.", "Fargo (1996). Crime.", "Big (1988)."])
    shop = pd.Series(["Mug. A mug.", "Pen. A pen.", "Tray."])
    tea = item_frame([{"item_id": "t", "title": "Tea Bags (1000)"}], shop)
    assert tea[["title", "year"]].values.tolist()[0][0] == "Tea Bags (1000)"
    assert tea["year"].isna().all()
    batch = [{"item_id": "h", "title": "Heat 2 (2026)"}, {"item_id": "a", "title": "Doc A"},
             {"item_id": "b", "title": "Doc B"}]  # fmt: skip
    added = item_frame(batch, films)
    assert added["title"].tolist() == ["Heat 2", "Doc A", "Doc B"]
    assert added["year"].iloc[0] == 2026.0
    future = item_frame([{"item_id": "f", "title": "Future (2150)", "year": 2150}], films)
    assert future["text"].iloc[0].count("2150") == 1


@pytest.mark.parametrize(
    "ratings_header, items_header, needle",
    [("user_id,item_id,rating", "item_id,Title,genres", "column 'Title' is not read as 'title'"),
     ("user_id,item_id,rating", "item_id,title,Genres", "give --genre-col 'Genres'"),
     ("user_id,item_id,rating", "item_id,title,YEAR", "column 'YEAR' is not read as 'year'"),
     ("user_id,item_id,rating", "item_id,Text", "column 'Text' is not read as 'text'"),
     ("user_id,item_id,rating,Timestamp", "item_id,title", "give --timestamp-col 'Timestamp'"),
     ("user_id,item_id,rating", "item_id, title", "separate them by the comma alone")],
)  # fmt: skip
def test_a_conventional_column_named_nearly_so_is_warned_of(
    tmp_path: Path, ratings_header: str, items_header: str, needle: str
) -> None:
    """An items file's `Title` was read as no title at all: the catalogue was encoded
    from its ids, with a clean `data validate`. `Genres` dropped the genres and
    `Timestamp` the times (every time-ordered step fell back to random order), without
    a word. Warned, not refused: the column may be another (a review's `Text`), and
    runs recorded such files as they were."""
    r, i = tmp_path / "r.csv", tmp_path / "i.csv"
    extra = ",100" if "imestamp" in ratings_header else ""
    r.write_text(f"{ratings_header}\nu1,a,4{extra}\nu1,b,5{extra}\n")
    fields = len(items_header.split(","))
    i.write_text(
        items_header + "\n" + "".join(f"{x}" + ",Words" * (fields - 1) + "\n" for x in "ab")
    )
    with pytest.warns(UserWarning, match=re.escape(needle)):
        load_table(r, i)
    # an option naming the column reads it: the name is the user's to choose
    if "Title" in items_header:
        ds = load_table(r, i, title_col="Title")
        assert ds.items["title"].tolist() == ["Words", "Words"]
        # and a column an option names is no near miss, read as text here
        ds = load_table(r, i, text_cols=["Title"])
        assert "Words" in ds.items["text"].iloc[0]


def test_zero_timestamps_among_clock_times_are_warned_of(tmp_path: Path) -> None:
    """A 0 (what many exports write for "no time") beside times of 2000 was read as
    1970-01-01 without a word: the rating came first in its user's time order. A
    column of offsets from the data's own start holds a real 0 and is not warned of."""
    items = tmp_path / "i.csv"
    items.write_text("item_id,title\na,Alpha\nb,Beta\n")
    clock = tmp_path / "clock.csv"
    clock.write_text("user_id,item_id,rating,timestamp\nu,a,4,0\nu,b,3,978300760\n")
    with pytest.warns(UserWarning, match=r"1 timestamp\(s\) are 0 \(1970-01-01\) beside times "
                      r"around 2000") as caught:  # fmt: skip
        load_table(clock, items)
    assert {w.filename for w in caught if "are 0" in str(w.message)} == {__file__}
    offsets = tmp_path / "offsets.csv"
    offsets.write_text("user_id,item_id,rating,timestamp\nu,a,4,0\nu,b,3,3600\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_table(offsets, items)

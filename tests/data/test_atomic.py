from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from metarec.data import clean
from metarec.data.atomic import load_atomic
from metarec.errors import DataError

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
USER_HEADER = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"


def write(directory: Path, name: str, inter: str, item: str | None, user: str | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.inter").write_text(inter, encoding="utf-8")
    if item is not None:
        (directory / f"{name}.item").write_text(item, encoding="utf-8")
    if user is not None:
        (directory / f"{name}.user").write_text(user, encoding="utf-8")
    return directory


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return write(
        tmp_path / "toy",
        "toy",
        INTER_HEADER + "1\t10\t4\t100\n1\t11\t2\t101\n2\t10\t5\t102\n",
        ITEM_HEADER
        + "10\tMatrix, The\t1999\tAction Sci-Fi\n"
        + "11\tLand Before Time III (1995)\tV\tAnimation Children's\n",
        USER_HEADER + "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n",
    )


def test_loads_and_normalises_columns(small: Path) -> None:
    ds = load_atomic(small)
    assert ds.name == "toy"
    inter = ds.interactions
    assert list(inter.columns[:4]) == ["user_id", "item_id", "rating", "timestamp"]
    assert inter["rating"].dtype == np.float32
    assert inter["timestamp"].dtype == np.float64
    assert inter["user_id"].tolist() == ["1", "1", "2"]
    assert inter["_line"].tolist() == [2, 3, 4]  # header is line 1

    items = ds.items.set_index("item_id")
    assert items.loc["10", "title"] == "Matrix, The"
    assert items.loc["10", "year"] == 1999.0
    assert items.loc["10", "genres"] == "Action|Sci-Fi"
    assert items.loc["10", "text"] == "The Matrix (1999). Genres: Action, Sci-Fi."
    # A year field that does not parse falls back to the year in the title.
    assert items.loc["11", "title"] == "Land Before Time III"
    assert items.loc["11", "year"] == 1995.0

    assert ds.users is not None
    assert list(ds.users.columns[:4]) == ["user_id", "age", "gender", "occupation"]
    assert "zip_code" not in ds.users.columns  # near-unique: dropped by default
    assert ds.user_feature_columns[:3] == ["age", "gender", "occupation"]
    assert ds.rating_range == (2.0, 5.0)


def test_keeps_zip_code_when_asked_and_extra_item_columns_as_text(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        "x",
        INTER_HEADER + "1\t10\t4\t100\n",
        "item_id:token\ttitle:token\tyear:float\tgenres:token_seq\tbudget:float\n"
        + "10\tHeat\t1995\tAction Crime\t60000000\n",
        USER_HEADER + "1\t24\tM\ttechnician\t85711\n",
    )
    ds = load_atomic(d / "x", drop_user_columns=())
    assert ds.users is not None and ds.users["zip_code"].tolist() == ["85711"]
    assert ds.items["budget"].tolist() == ["60000000"]
    assert ds.items["genres"].tolist() == ["Action|Crime"]


def test_accepts_prefix_inter_path_and_crlf(tmp_path: Path) -> None:
    d = write(
        tmp_path, "crlf", (INTER_HEADER + "1\t10\t4\t100\n").replace("\n", "\r\n"), None, None
    )
    for where in (d / "crlf", d / "crlf.inter", d):
        ds = load_atomic(where)
        assert ds.interactions["timestamp"].tolist() == [100.0]
        # Without an item file the rated ids are the items, titled by id.
        assert ds.items["item_id"].tolist() == ["10"]
        assert ds.users is None


def test_bad_rating_is_kept_for_cleaning_with_its_line(tmp_path: Path) -> None:
    d = write(tmp_path, "x", INTER_HEADER + "1\t10\t4\t100\n1\t11\tfour\t101\n", None, None)
    ds = load_atomic(d)
    assert np.isnan(ds.interactions["rating"].iloc[1])
    cleaned = clean(ds)
    assert cleaned.report is not None
    assert cleaned.report.dropped == {"missing or non-numeric rating": 1}
    assert cleaned.report.examples["missing or non-numeric rating"] == [
        "x.inter line 3: rating 'four' is not a number"
    ]
    with pytest.raises(DataError, match=r"x\.inter, line 3, field 'rating'"):
        clean(ds, strict=True)


@pytest.mark.parametrize(
    ("inter", "line", "message"),
    [
        ("", 1, "missing header"),
        ("\n1\t2\t3\t4\n", 1, "missing header"),
        ("user_id\titem_id\trating\n", 1, "not of the form name:type"),
        ("user_id:token\titem_id:int\trating:float\n", 1, "unknown type 'int'"),
        (
            "user_id:token,item_id:token,rating:float\n",
            1,
            "is the file tab-separated",
        ),
        (
            INTER_HEADER + "1\t10\t4\t100\n1,11,4,101\n",
            3,
            "expected 4 tab-separated fields, found 1 — is the file tab-separated?",
        ),
        (
            INTER_HEADER + "1\t10\t4\t100\n\n1\t11\t4\n",
            4,
            "expected 4 tab-separated fields, found 3",
        ),
        # a click log's, with the hint the plain-file readers give
        (
            "user_id:token\titem_id:token\ttimestamp:float\n",
            1,
            "required field(s) rating missing from the header (found: user_id, item_id, "
            "timestamp) (implicit feedback, clicks or purchases, needs a column of 1s)",
        ),
        # a name in other letter case: named, and no click-log hint beside a Rating
        (
            "User_ID:token\titem_id:token\tRating:float\n",
            1,
            "required field(s) user_id, rating missing from the header (found: User_ID, "
            "item_id, Rating) — names are matched exactly: did you mean 'User_ID', 'Rating'?",
        ),
    ],
)
def test_structural_errors_name_file_and_line(
    tmp_path: Path, inter: str, line: int, message: str
) -> None:
    d = write(tmp_path, "bad", inter, None, None)
    with pytest.raises(DataError) as info:
        load_atomic(d)
    err = info.value
    assert err.path is not None and err.path.endswith("bad.inter")
    assert err.row == line
    assert message in str(err)
    assert f"bad.inter, line {line}" in str(err)


def test_item_file_errors_name_the_item_file(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        "bad",
        INTER_HEADER + "1\t10\t4\t100\n",
        "movie_title:token_seq\tclass:token_seq\nHeat\tAction\n",
        None,
    )
    with pytest.raises(DataError, match=r"bad\.item, line 1, field 'item_id'"):
        load_atomic(d)


def test_missing_directory_or_ambiguous_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_atomic(tmp_path / "nothing")
    write(tmp_path / "two", "a", INTER_HEADER, None, None)
    write(tmp_path / "two", "b", INTER_HEADER, None, None)
    # the command line has no name=: the prefix is what it can give
    with pytest.raises(DataError, match=r"2 \.inter files in the directory \(a, b\); choose one "
                       r"by its prefix \(.*two/a\), or name= in Python"):  # fmt: skip
        load_atomic(tmp_path / "two")
    assert load_atomic(tmp_path / "two", "b").name == "b"


# --------------------------------------------------------------------------- real data


def test_real_ml100k(shared_data: Path) -> None:
    if not (shared_data / "ml-100k").is_dir():
        pytest.skip("ml-100k not in the shared data folder")
    t0 = time.perf_counter()
    ds = load_atomic(shared_data / "ml-100k")
    elapsed = time.perf_counter() - t0
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (943, 1682, 100_000)
    assert ds.users is not None and len(ds.users) == 943
    assert ds.rating_range == (1.0, 5.0)
    toy = ds.items.set_index("item_id").loc["1"]
    assert (toy["title"], toy["year"]) == ("Toy Story", 1995.0)
    assert toy["genres"] == "Animation|Children's|Comedy"
    # Item 1412's year field reads "V" (a conversion slip); the title has it.
    assert ds.items.set_index("item_id").loc["1412", "year"] == 1995.0
    assert elapsed < 5, f"ml-100k took {elapsed:.2f}s"

    cleaned = clean(ds)
    assert len(cleaned.interactions) == 100_000 and cleaned.n_items == 1682
    assert cleaned.report is not None and not cleaned.report.dropped
    assert any("placeholder title" in n for n in cleaned.report.notes)  # item 267


def test_real_ml1m(shared_data: Path) -> None:
    if not (shared_data / "ml-1m").is_dir():
        pytest.skip("ml-1m not in the shared data folder")
    t0 = time.perf_counter()
    ds = load_atomic(shared_data / "ml-1m")
    elapsed = time.perf_counter() - t0
    assert ds.n_items == 3883
    assert len(ds.interactions) == 1_000_209
    assert ds.n_users == 6040
    toy = ds.items.set_index("item_id").loc["Toy Story (1995)"]
    assert (toy["title"], toy["year"]) == ("Toy Story", 1995.0)
    assert ds.interactions["user_id"].iloc[0].startswith("1m_")
    # Vectorised reading: about a second here; generous for slow machines.
    assert elapsed < 10, f"ml-1m took {elapsed:.2f}s"


def test_a_scale_given_is_taken_and_a_stray_rating_not_warned_about(tmp_path: Path) -> None:
    import warnings

    from metarec.data.spec import load_from_spec, make_spec

    rows = "".join(f"{u}\t{10 + i}\t{1 + (u + i) % 5}\t{u}\n" for u in range(40) for i in range(5))
    folder = write(tmp_path / "toy", "toy", INTER_HEADER + rows + "1\t11\t99\t5\n", None, None)
    with pytest.warns(UserWarning, match=r"\[1, 99\]"):
        assert load_atomic(folder).rating_range == (1.0, 99.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # --rating-range given: no advice to give it
        warnings.filterwarnings("ignore", r"[^:]*: no toy\.item beside it")
        assert load_atomic(folder, rating_range=(1.0, 5.0)).rating_range == (1.0, 5.0)
        spec = make_spec({"data": str(folder), "rating_range": "1,5"})
        ds = load_from_spec(spec)
    assert ds.rating_range == (1.0, 5.0) and ds.interactions["rating"].max() == 5.0


def test_a_file_cut_mid_row_is_warned_about(tmp_path: Path) -> None:
    # the last row still parses (its timestamp cut from 883452000 to 883452) but is wrong
    cut = write(
        tmp_path / "cut", "cut", INTER_HEADER + "1\t10\t4\t100\n1\t11\t2\t883452", None, None
    )
    with pytest.warns(UserWarning, match=r"cut\.inter: the last line \(3\) has no line end"):
        assert len(load_atomic(cut).interactions) == 2
    whole = write(tmp_path / "whole", "whole", INTER_HEADER + "1\t10\t4\t100\n", None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", r"[^:]*: no whole\.item beside it")
        load_atomic(whole)


def test_other_layouts_item_text_is_read_from_their_fields(tmp_path: Path) -> None:
    # RecBole's book-crossing layout: a *_title, a *_year and token_seq words, no
    # MovieLens names (its publication_year went unread: no book had a year, and P1's
    # new items were a random fifth instead of the newest)
    d = write(
        tmp_path,
        "bx",
        "user_id:token\titem_id:token\trating:float\n1\t0195153448\t5\n",
        "item_id:token\tbook_title:token_seq\tbook_author:token_seq\tpublication_year:float\t"
        "publisher:token_seq\n0195153448\tClassical Mythology\tMark P. O. Morford\t2002\t"
        "Oxford University Press\n",
        None,
    )
    items = load_atomic(d).items
    assert items["title"].tolist() == ["Classical Mythology"]
    assert items["year"].tolist() == [2002]
    assert items["text"].tolist() == [
        "Classical Mythology (2002). Mark P. O. Morford. Oxford University Press"
    ]
    # a number in brackets is no year in titles not written "Title (Year)": it was
    # taken from the title once a year field was read (the load_table rule, and the
    # one for items added later)
    (d / "bx.item").write_text(
        "item_id:token\tbook_title:token_seq\tpublication_year:float\n"
        "1\tTea Bags (1000)\t2002\n2\tChronicle (1066)\t\n3\tEmma\t1815\n"
        "4\tPersuasion\t1817\n5\tLa Peste\t1947\n6\tCopy Paper (5000)\tn/a\n"
        "7\tTea Bags (1000)\tunknown\n8\tDune (1965)\tV\n9\tUlysses\t1922\n"
        "10\tMiddlemarch\t1871\n11\tBeloved\t1987\n"
    )
    books = load_atomic(d).items
    assert books["title"].tolist() == [
        "Tea Bags (1000)", "Chronicle (1066)", "Emma", "Persuasion", "La Peste",
        "Copy Paper (5000)", "Tea Bags (1000)", "Dune", "Ulysses", "Middlemarch", "Beloved",
    ]  # fmt: skip
    # a field's slip ("V", as ml-100k's item 1412 has) takes a plausible title year
    assert books["year"].fillna(0).tolist()[:8] == [2002, 0, 1815, 1817, 1947, 0, 0, 1965]
    # nor without a year field: "Tea Bags (1000)" was the year 1000 of a "Tea Bags"
    (d / "bx.item").write_text(
        "item_id:token\tbook_title:token_seq\n1\tTea Bags (1000)\n2\tSoap\n3\tPen\n"
        "4\tCopy Paper (5000)\n"
    )
    shop = load_atomic(d).items
    assert shop["title"].tolist() == ["Tea Bags (1000)", "Soap", "Pen", "Copy Paper (5000)"]
    assert shop["year"].isna().all()
    # with no word of text at all, said as load_table says it
    (d / "bx.item").write_text("item_id:token\tprice:float\n0195153448\t3\n")
    with pytest.warns(UserWarning, match=r"bx\.item: no title field .* ids alone"):
        assert load_atomic(d).items["text"].tolist() == ["0195153448."]


def test_an_item_or_user_file_that_cannot_be_read_is_not_taken_for_none(tmp_path: Path) -> None:
    d = write(tmp_path, "x", INTER_HEADER + "1\t10\t4\t100\n", None, None)
    (d / "x.item").mkdir()
    with pytest.raises(DataError, match=r"x\.item: is a folder"):
        load_atomic(d)
    (d / "x.item").rmdir()
    (d / "x.user").symlink_to(d / "gone.user")  # a dangling link
    with pytest.raises(DataError, match=r"x\.user: "):
        load_atomic(d)
    (d / "x.user").unlink()
    (d / "x.item").symlink_to(d / "x.item")  # a loop
    with pytest.raises(DataError, match=r"x\.item: "):
        load_atomic(d)


def test_underscore_fields_are_left_out_with_a_warning(tmp_path: Path) -> None:
    # '_' names metarec's internal columns, which cleaning removes: dropped unsaid, a
    # user's segment or an item's brand was no feature and nobody knew
    d = write(
        tmp_path,
        "x",
        INTER_HEADER + "1\t10\t4\t100\n",
        "item_id:token\ttitle:token_seq\t_brand:token\n10\tHeat\tAcme\n",
        "user_id:token\tage:token\t_segment:token\n1\t24\tgold\n",
    )
    with pytest.warns(UserWarning) as caught:
        ds = load_atomic(d / "x")
    said = sorted(str(w.message) for w in caught)
    assert said == [
        f"{d / 'x.item'}: column(s) '_brand' not used as item columns: names starting "
        "with '_' are metarec's internal columns; rename them to use them",
        f"{d / 'x.user'}: column(s) '_segment' not used as user features: names starting "
        "with '_' are metarec's internal columns; rename them to use them",
    ]
    assert ds.users is not None and ds.users.columns.tolist() == ["user_id", "age", "_line"]
    assert "_brand" not in ds.items.columns


def test_a_folder_without_its_item_file_is_warned_about(tmp_path: Path) -> None:
    # a copy that lost its .item trained on ids as text without a word
    d = write(tmp_path / "toy", "toy", INTER_HEADER + "1\t10\t4\t100\n", None, None)
    with pytest.warns(UserWarning, match=r"toy\.inter: no toy\.item beside it: items are known"):
        ds = load_atomic(d)
    assert ds.items["title"].tolist() == ["10"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_utf16_file_is_said_to_be_one(tmp_path: Path, encoding: str) -> None:
    # read as UTF-8, its header's "unknown type" message printed NUL bytes to the terminal
    d = write(tmp_path, "wide", "", None, None)
    (d / "wide.inter").write_bytes((INTER_HEADER + "1\t10\t4\t100\n").encode(encoding))
    with pytest.raises(DataError, match="UTF-16 text") as info:
        load_atomic(d)
    assert "\x00" not in str(info.value) and str(info.value).count("wide.inter") == 1

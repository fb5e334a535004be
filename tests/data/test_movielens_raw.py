"""GroupLens layouts, written here in their exact published formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metarec.data import clean
from metarec.data.movielens import detect_layout, load_movielens_raw
from metarec.errors import DataError


def flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(19))


URL = "http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)"
U_ITEM = (
    f"1|Toy Story (1995)|01-Jan-1995||{URL}|{flags(3, 4, 5)}\n"
    f"2|Misérables, Les (1995)|01-Jan-1995||http://x|{flags(8, 12)}\n"
    f"3|Good Morning|4-Feb-1971||http://y|{flags(0)}\n"
    f"267|unknown||||{flags(0)}\n"
)


def write_ml100k(d: Path, data: str | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "u.data").write_text(
        data or "196\t1\t3\t881250949\n186\t2\t3\t891717742\n196\t3\t1\t878887116\n"
    )
    (d / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    (d / "u.user").write_text("196|49|M|writer|55105\n186|39|F|executive|00000\n")
    return d


def write_ml1m(d: Path, ratings: str | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.dat").write_text(
        ratings or "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
    )
    movies = (
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "2731::400 Blows, The (Quatre cents coups, Les) (1959)::Drama\n"
        "3::Café au Lait (1993)::Comedy\n"
    )
    (d / "movies.dat").write_bytes(movies.encode("latin-1"))
    (d / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return d


def write_ml_latest(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,11,0.5,964981247\n"
    )
    (d / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        "193609,Andrew Dice Clay: Dice Rules (1991),(no genres listed)\n"
        "1000,Stranger Things (2016-),Drama\n"
    )
    return d


def test_ml100k(tmp_path: Path) -> None:
    d = write_ml100k(tmp_path / "ml-100k")
    assert detect_layout(d) == "ml-100k"
    ds = load_movielens_raw(d)
    assert ds.name == "ml-100k" and ds.rating_range == (1.0, 5.0)
    assert ds.interactions["item_id"].tolist() == ["1", "2", "3"]
    assert ds.interactions["_line"].tolist() == [1, 2, 3]  # no header in u.data
    items = ds.items.set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story"
    assert items.loc["1", "year"] == 1995.0
    assert items.loc["1", "genres"] == "Animation|Children's|Comedy"
    assert items.loc["1", "imdb_url"] == URL
    assert items.loc["2", "title"] == "Misérables, Les"  # Latin-1 decoded
    assert items.loc["2", "text"] == "Les Misérables (1995). Genres: Drama, Musical."
    # No year in the title: the release date gives it; "unknown" is no genre.
    assert items.loc["3", "year"] == 1971.0 and items.loc["3", "genres"] == ""
    assert np.isnan(items.loc["267", "year"])
    assert ds.users is not None
    assert ds.users.columns.tolist() == ["user_id", "age", "gender", "occupation", "_line"]


def test_ml1m(tmp_path: Path) -> None:
    ds = load_movielens_raw(write_ml1m(tmp_path / "ml-1m"))
    assert len(ds.interactions) == 3 and ds.n_items == 4
    items = ds.items.set_index("item_id")
    assert items.loc["2731", "title"] == "400 Blows, The (Quatre cents coups, Les)"
    assert items.loc["2731", "year"] == 1959.0
    assert items.loc["2731", "text"] == (
        "The 400 Blows (Les Quatre cents coups) (1959). Genres: Drama."
    )
    assert items.loc["3", "title"] == "Café au Lait"
    assert items.loc["661", "genres"] == "Animation|Children's|Musical"
    assert ds.users is not None
    assert ds.users.set_index("user_id").loc["2", "age"] == "56"
    assert "zip_code" not in ds.users.columns


def test_ml_latest(tmp_path: Path) -> None:
    ds = load_movielens_raw(write_ml_latest(tmp_path / "ml-latest-small"))
    assert ds.rating_range == (0.5, 5.0)
    assert ds.users is None
    assert ds.interactions["_line"].tolist() == [2, 3]
    items = ds.items.set_index("item_id")
    assert items.loc["11", "title"] == "American President, The"
    assert items.loc["11", "text"] == (
        "The American President (1995). Genres: Comedy, Drama, Romance."
    )
    assert items.loc["193609", "genres"] == ""
    assert items.loc["1000", "year"] == 2016.0
    assert items["_line"].tolist() == [2, 3, 4, 5]
    report = clean(ds).report
    assert report is not None and report.dropped == {}


def test_wrong_delimiter_names_file_and_line(tmp_path: Path) -> None:
    d = write_ml100k(tmp_path / "ml-100k", "196\t1\t3\t881250949\n186,2,3,891717742\n")
    with pytest.raises(DataError) as info:
        load_movielens_raw(d)
    assert info.value.row == 2
    assert str(info.value).endswith(
        "u.data, line 2: expected 4 tab-separated fields, found 1 — is the file tab-separated?"
    )


def test_short_row_in_dat_file(tmp_path: Path) -> None:
    d = write_ml1m(tmp_path / "ml-1m", "1::1193::5::978300760\n1::661::3\n")
    with pytest.raises(DataError, match=r"ratings\.dat, line 2: expected 4 .*found 3"):
        load_movielens_raw(d)


def test_bad_rating_reaches_the_cleaning_report(tmp_path: Path) -> None:
    d = write_ml100k(tmp_path / "ml-100k", "196\t1\t3\t881250949\n186\t2\tx\t891717742\n")
    report = clean(load_movielens_raw(d)).report
    assert report is not None
    assert report.examples["missing or non-numeric rating"] == [
        "u.data line 2: rating 'x' is not a number"
    ]


def test_missing_csv_column(tmp_path: Path) -> None:
    d = write_ml_latest(tmp_path / "ml-latest-small")
    (d / "ratings.csv").write_text("user,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 1, field 'userId'.*found: user,"):
        load_movielens_raw(d)


def test_no_layout(tmp_path: Path) -> None:
    assert detect_layout(tmp_path) is None
    with pytest.raises(DataError, match="no MovieLens files found"):
        load_movielens_raw(tmp_path)


def test_a_copy_saved_as_utf8_reads_as_utf8(tmp_path: Path) -> None:
    """GroupLens publishes Latin-1, but a copy saved again (an editor, a redistribution)
    is UTF-8: forced to Latin-1 it read "Les MisÃ©rables", and validate said nothing."""
    import warnings

    for layout, write, file, item, title, latin in [
        ("ml-100k", write_ml100k, "u.item", "2", "Misérables, Les",
         f"4|Amélie (2001)|01-Jan-2001||http://z|{flags(5)}\n"),
        ("ml-1m", write_ml1m, "movies.dat", "3", "Café au Lait", "4::Amélie (2001)::Comedy\n"),
    ]:  # fmt: skip
        d = write(tmp_path / layout)
        published = load_movielens_raw(d).items.set_index("item_id")
        path = d / file
        path.write_bytes(path.read_bytes().decode("latin-1").encode("utf-8"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # either encoding is this file's own: no warning
            saved = load_movielens_raw(d).items.set_index("item_id")
        assert published.loc[item, "title"] == saved.loc[item, "title"] == title, layout
        # one that mixes the two is refused, not read half as mojibake
        path.write_bytes(path.read_bytes() + latin.encode("latin-1"))
        with pytest.raises(DataError, match="mixes encodings"):
            load_movielens_raw(d)

"""JSON Lines tables (review and catalogue dumps): read by key, refused by line."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from metarec.data import load_table, validate
from metarec.data.delimited import read_table
from metarec.errors import DataError

REVIEWS = (
    '{"reviewerID": "A1", "asin": "B001", "overall": 5.0, "unixReviewTime": 1388534400}\n'
    '{"reviewerID": "A1", "asin": "B002", "overall": 3, "unixReviewTime": 1388620800}\n'
    "\n"
    '{"reviewerID": "A2", "asin": "B001", "overall": 4.0, "unixReviewTime": 1388707200,'
    ' "reviewText": "fits"}\n'
)
META = (
    '{"asin": "B001", "title": "Red running shoe", "brand": "Acme",'
    ' "category": ["Shoes", "Running"]}\n'
    '{"asin": "B002", "title": "Blue wool hat", "category": []}\n'
)


def test_reviews_and_a_catalogue_load_by_their_keys(tmp_path: Path) -> None:
    (tmp_path / "reviews.jsonl").write_text(REVIEWS)
    (tmp_path / "meta.json").write_text(META)
    ds = load_table(
        tmp_path / "reviews.jsonl",
        tmp_path / "meta.json",
        user_col="reviewerID",
        item_col="asin",
        rating_col="overall",
        timestamp_col="unixReviewTime",
        genre_col="category",
        text_cols=["brand"],
    )
    inter = ds.interactions
    assert inter["user_id"].tolist() == ["A1", "A1", "A2"]
    assert inter["rating"].tolist() == [5.0, 3.0, 4.0]
    assert inter["timestamp"].tolist() == [1388534400, 1388620800, 1388707200]
    assert inter["_line"].tolist() == [1, 2, 4]  # no header: the first object is line 1
    # a JSON list of categories is read as genres, as "Shoes|Running" would be
    assert ds.items["genres"].tolist() == ["Shoes|Running", ""]
    assert ds.items.set_index("item_id")["text"].to_dict() == {
        "B001": "Red running shoe. Genres: Shoes, Running. Acme",
        "B002": "Blue wool hat.",
    }
    assert validate(ds) == []


def test_nested_lists_and_objects_are_read_as_their_values(tmp_path: Path) -> None:
    # Amazon's category paths and a rank per category reached the genres and the text
    # as Python reprs: "['Books'|'Fiction']", "{'Books': 1234}"
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu1,b1,4\nu1,b2,3\n")
    (tmp_path / "meta.jsonl").write_text(
        '{"item_id": "b1", "title": "Book 1", "category": [["Books", "Fiction"], ["Kindle"]], '
        '"rank": {"Books": 1234, "Kindle": null}}\n'
        '{"item_id": "b2", "title": "Book 2", "category": ["Books", []], "rank": {}}\n'
    )
    ds = load_table(
        tmp_path / "r.csv", tmp_path / "meta.jsonl", genre_col="category", text_cols=["rank"]
    )
    assert ds.items["genres"].tolist() == ["Books|Fiction|Kindle", "Books"]
    assert ds.items["text"].tolist() == [
        "Book 1. Genres: Books, Fiction, Kindle. Books: 1234",
        "Book 2. Genres: Books.",
    ]


def test_a_gzipped_dump_loads(tmp_path: Path) -> None:
    (tmp_path / "reviews.jsonl.gz").write_bytes(gzip.compress(REVIEWS.encode()))
    frame = read_table(tmp_path / "reviews.jsonl.gz")
    assert frame["asin"].tolist() == ["B001", "B002", "B001"]


@pytest.mark.parametrize(
    "body, needle",
    [
        ('{"a": 1}\n{"a": 2,}\n', r"line 2: not JSON \(Expecting property name"),
        ('{"a": 1}\n[1, 2]\n', "line 2: expected one JSON object a line, got list"),
        ('{"a": 1, "a": 2}\n', "line 1: key 'a' appears twice in one object"),
        ('[{"a": 1}, {"a": 2}]\n', "is a JSON array; write one object a line"),
        ("\n  \n", "the file is empty: expected one JSON object a line"),
    ],
    ids=["bad-json", "not-an-object", "repeated-key", "array", "empty"],
)
def test_what_is_not_json_lines_is_named_by_line(tmp_path: Path, body: str, needle: str) -> None:
    (tmp_path / "r.jsonl").write_text(body)
    with pytest.raises(DataError, match=needle):
        read_table(tmp_path / "r.jsonl")


def test_json_that_is_not_utf8_is_refused_by_line(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_bytes(b'{"a": "x"}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"line 2: byte 0xe9 is not UTF-8; JSON text is UTF-8"):
        read_table(tmp_path / "r.jsonl")


def test_a_users_files_arrays_and_objects_are_refused_by_line(tmp_path: Path) -> None:
    (tmp_path / "reviews.jsonl").write_text(REVIEWS)
    users = tmp_path / "users.jsonl"
    for value in ('["en", "fr"]', '{"city": "Paris"}'):
        users.write_text(
            f'{{"reviewerID": "A1", "lang": "de"}}\n{{"reviewerID": "A2", "lang": {value}}}\n'
        )
        with pytest.raises(
            DataError, match=r"users\.jsonl, line 2, field 'lang': lang .* holds several values"
        ):
            load_table(tmp_path / "reviews.jsonl", users_path=users, user_col="reviewerID",
                       item_col="asin", rating_col="overall")  # fmt: skip


def test_long_integer_ids_beside_a_null_stay_exact(tmp_path: Path) -> None:
    """pandas reads integers with a null as floats, where 19-digit ids round: three
    users became one, under an id that was in no file, and a rating was dropped as
    that one user's duplicate."""
    ids = [1234567890123456789, 1234567890123456788, None, 1234567890123456787, 2**64 - 1]
    lines = [
        f'{{"user_id": {"null" if u is None else u}, "item_id": "1", "rating": 4}}' for u in ids
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    ds = load_table(tmp_path / "r.jsonl")
    got = ds.interactions["user_id"].tolist()
    assert got[:2] + got[3:] == [str(u) for u in ids if u is not None]
    assert got[2] != got[2]  # still missing (NaN), for cleaning to name


def test_long_integer_ids_beside_a_float_stay_exact(tmp_path: Path) -> None:
    # one float among them (2.0, 1.5) left the column rounded: users ...993 and ...992
    # became one, with no warning
    ids = ["9007199254740993", "9007199254740992", "2.0", "1.5", "12345678901234567891"]
    lines = [f'{{"user_id": {u}, "item_id": "1", "rating": 4}}' for u in ids]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    got = load_table(tmp_path / "r.jsonl").interactions["user_id"].tolist()
    assert got == ["9007199254740993", "9007199254740992", "2", "1.5", "12345678901234567891"]


def test_a_whole_float_id_is_the_same_id_beside_text(tmp_path: Path) -> None:
    # 1 and 1.0 are one JSON number; beside a text id the column was read as objects and
    # 1.0 written "1.0": one user became two
    ids = ["1", "1.0", '"1"', '"u2"', "2.5"]
    lines = [f'{{"user_id": {u}, "item_id": "{n}", "rating": 4}}' for n, u in enumerate(ids)]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    got = load_table(tmp_path / "r.jsonl").interactions["user_id"].tolist()
    assert got == ["1", "1", "1", "u2", "2.5"]


def test_boolean_ratings_are_refused_at_their_line(tmp_path: Path) -> None:
    # read as 1 and 0 they made a 0-1 scale, where a frame with them is refused
    (tmp_path / "r.jsonl").write_text(
        '{"user_id": "u1", "item_id": "1", "rating": 5}\n'
        '{"user_id": "u1", "item_id": "2", "rating": false}\n'
    )
    with pytest.raises(DataError, match=r"r\.jsonl, line 2: column 'rating' holds booleans"):
        load_table(tmp_path / "r.jsonl")

"""Compressed data files: read by their first bytes, refused by name when archived."""

from __future__ import annotations

import bz2
import gzip
import lzma
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from metarec.data import load_table
from metarec.data.compressed import data_stem, data_suffix
from metarec.errors import DataError

RATINGS = b"user_id,item_id,rating,timestamp\nu1,i1,5,100\nu1,i2,3,200\nu2,i1,4,300\n"


@pytest.mark.parametrize(
    "name, compress",
    [
        ("r.csv.gz", gzip.compress),
        ("r.csv.bz2", bz2.compress),
        ("r.csv.xz", lzma.compress),
        ("misnamed.csv", gzip.compress),  # told by its bytes, not its name
    ],
)
def test_compressed_files_load_as_the_plain_file_does(
    tmp_path: Path, name: str, compress: Callable[[bytes], bytes]
) -> None:
    (tmp_path / "plain.csv").write_bytes(RATINGS)
    (tmp_path / name).write_bytes(compress(RATINGS))
    plain = load_table(tmp_path / "plain.csv").interactions
    packed = load_table(tmp_path / name).interactions
    assert packed.equals(plain) and len(packed) == 3


def test_a_compressed_file_names_its_dataset_by_the_plain_name(tmp_path: Path) -> None:
    # reports are named after the dataset: p2-r.json, not p2-r.csv.json
    (tmp_path / "r.csv.gz").write_bytes(gzip.compress(RATINGS))
    assert load_table(tmp_path / "r.csv.gz").name == "r"
    assert data_stem(Path("a/ratings.TSV.XZ")) == "ratings"
    assert data_stem(Path("ratings.v2.csv")) == "ratings.v2"
    assert data_stem(Path("ratings.v2.gz")) == "ratings.v2"  # .v2 names no format
    assert data_stem(Path("2024.06.gz")) == "2024.06"
    assert data_stem(Path("u.data")) == "u"  # ml-100k's ratings: read by sniffing


def test_a_compressed_tsv_is_read_by_its_inner_suffix(tmp_path: Path) -> None:
    # ".gz" says nothing of the delimiter; the tab-separated header has no comma
    (tmp_path / "r.tsv.gz").write_bytes(gzip.compress(RATINGS.replace(b",", b"\t")))
    assert len(load_table(tmp_path / "r.tsv.gz").interactions) == 3
    assert data_suffix(Path("a/ratings.csv.gz")) == ".csv"
    assert data_suffix(Path("ratings.TSV")) == ".tsv"


def test_a_cut_download_and_an_archive_are_named(tmp_path: Path) -> None:
    # read as text they were field-count errors on a line of binary
    (tmp_path / "cut.csv.gz").write_bytes(gzip.compress(RATINGS)[:-8])
    with pytest.raises(DataError, match=r"cut.csv.gz: gzip data that does not decompress"):
        load_table(tmp_path / "cut.csv.gz")
    with zipfile.ZipFile(tmp_path / "r.zip", "w") as z:
        z.writestr("ratings.csv", RATINGS)
    with pytest.raises(DataError, match=r"r.zip: is a zip archive; extract the data file"):
        load_table(tmp_path / "r.zip")


def test_a_header_that_starts_like_bzip2_is_text(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_bytes(b"BZh,item_id,rating\nu1,i1,5\n")
    assert load_table(tmp_path / "r.csv", user_col="BZh").interactions["user_id"].tolist() == ["u1"]


def test_files_of_other_programs_are_named(tmp_path: Path) -> None:
    # read as text, an SQLite file was "lines end in a bare carriage return (old Mac
    # format)" and a workbook "a zip archive; extract the data file"
    import sqlite3

    db = tmp_path / "db.csv"
    with sqlite3.connect(db) as conn:
        conn.execute("create table ratings (user_id text)")
    conn.close()
    with pytest.raises(DataError, match=r"db\.csv: is an SQLite database; export the table"):
        load_table(db)
    book = tmp_path / "book.csv"
    with zipfile.ZipFile(book, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(DataError, match=r"book\.csv: is an Excel workbook; save the sheet as CSV"):
        load_table(book)
    old = tmp_path / "old.csv"
    old.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100))
    with pytest.raises(DataError, match=r"old\.csv: is an Excel 97-2003 workbook"):
        load_table(old)

"""Data files compressed with gzip, bzip2 or xz, read as if they were plain.

Public catalogues often ship as ``ratings.csv.gz``. The format is told from the
file's first bytes, not its name, so a misnamed file is read too, and a plain file
never pays for a decompressor. A zip archive or zstd is refused by name: read as
text it was a field-count error on a line of binary.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zipfile
from collections.abc import Callable
from io import BufferedIOBase
from pathlib import Path
from typing import BinaryIO

from metarec.errors import DataError

# magic bytes -> (name, opener of a decompressing binary stream)
_READABLE: dict[bytes, tuple[str, Callable[[Path], BufferedIOBase]]] = {
    b"\x1f\x8b": ("gzip", gzip.GzipFile),
    b"\xfd7zXZ\x00": ("xz", lzma.LZMAFile),
}
_REFUSED = {b"PK\x03\x04": "a zip archive", b"(\xb5/\xfd": "zstd-compressed"}
_SUFFIXES = (".gz", ".bz2", ".xz")
# errors a truncated or damaged stream raises, by decompressor
_BROKEN = (OSError, EOFError, lzma.LZMAError, ValueError)


def _kind(head: bytes) -> tuple[str, Callable[[Path], BufferedIOBase]] | None:
    for magic, kind in _READABLE.items():
        if head.startswith(magic):
            return kind
    # "BZh" + a block size digit + the block magic: a CSV header may start "BZh"
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] == b"1AY&SY":
        return "bzip2", bz2.BZ2File
    return None


# files of other programs, named .csv: read as text they gave messages about line
# ends or delimiters ("old Mac format") that sent the user the wrong way
_OTHER_PROGRAMS = {
    b"SQLite format 3\x00": "an SQLite database; export the table as CSV "
    "(sqlite3 -header -csv FILE 'select * from ratings' > ratings.csv)",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": "an Excel 97-2003 workbook (or another old "
    "Office file); save the sheet as CSV",
}


def _head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(16)


def _refuse_archives(path: Path, head: bytes) -> None:
    for magic, program in _OTHER_PROGRAMS.items():
        if head.startswith(magic):
            raise DataError(f"is {program}", path=path)
    if head.startswith(b"PK\x03\x04") and _is_workbook(path):
        raise DataError("is an Excel workbook; save the sheet as CSV", path=path)
    for magic, what in _REFUSED.items():
        if head.startswith(magic):
            raise DataError(
                f"is {what}; extract the data file and give that (gzip, bzip2 and xz are read)",
                path=path,
            )


def _is_workbook(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(name.startswith("xl/") for name in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _read(path: Path, read: Callable[[BinaryIO | BufferedIOBase], bytes]) -> bytes:
    head = _head(path)
    _refuse_archives(path, head)
    kind = _kind(head)
    if kind is None:
        with path.open("rb") as fh:
            return read(fh)
    name, opener = kind
    try:
        with opener(path) as fh:
            return read(fh)
    except _BROKEN as exc:  # truncated in a download, or not really this format
        raise DataError(f"{name} data that does not decompress ({exc})", path=path) from None


def read_data_bytes(path: Path) -> bytes:
    """The whole file, decompressed when it is gzip, bzip2 or xz."""
    return _read(path, lambda fh: fh.read())


def first_data_line(path: Path, limit: int = 65536) -> bytes:
    """The first line that is not blank (up to ``limit`` bytes), decompressed as
    :func:`read_data_bytes` would be, without reading the rest: the readers skip blank
    lines to the header, and a separator sniffed from a blank line was a guess."""

    def first(fh: BinaryIO | BufferedIOBase) -> bytes:
        while True:
            line = fh.readline(limit)
            if not line or line.strip(b" \r\n"):
                return line

    return _read(path, first)


# what names a table's format (``metarec.data.delimited``, ``jsonlines``, RecBole's
# atomic files): the part of a name a dataset is not named by
FORMAT_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".dat", ".jsonl", ".ndjson", ".json",
                   ".parquet", ".pq", ".inter", ".item", ".user")  # fmt: skip


def data_stem(path: Path) -> str:
    """The name without its format: ``ratings`` for ``ratings.csv.gz`` (a dataset named
    ``ratings.csv`` would name its reports ``p2-ratings.csv.json``); inside a compressed
    name, a part that names no format stays (``ratings.v2.gz`` is ``ratings.v2``)."""
    if path.suffix.lower() not in _SUFFIXES:
        return path.stem  # any suffix of a plain file: its format, read by sniffing (u.data)
    inner = Path(path.stem)
    return inner.stem if inner.suffix.lower() in FORMAT_SUFFIXES else inner.name


def data_suffix(path: Path) -> str:
    """The suffix that says the format: ``.csv`` for ``ratings.csv.gz``."""
    suffix = path.suffix.lower()
    if suffix in _SUFFIXES:
        return Path(path.stem).suffix.lower()
    return suffix

"""Reading a table file strictly: CSV/TSV (quoted or not, any legacy encoding named),
Parquet and JSON Lines, any of them compressed.

Loaders are strict about structure (missing columns, wrong field counts) and
raise :class:`DataError` naming the file and line; every row keeps its line in
``_line`` and the frame its path in ``attrs["source"]``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from metarec.data.columns import (
    LINE_COL,
    SOURCE_ATTR,
    exact_integers,
    missing_ids,
    number_lines,
)
from metarec.data.compressed import data_suffix, first_data_line, read_data_bytes
from metarec.data.jsonlines import JSON_LINES_SUFFIXES, read_json_lines
from metarec.errors import DataError

_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}


def require_file(path: Path) -> None:
    """Refuse, with the reason, a path that is not a regular file: a folder or a device
    said "file not found" before, which sends the user looking for a typo."""
    if path.is_file():
        return
    if path.is_dir():
        raise DataError("is a folder; a data file is needed", path=path)
    if path.is_symlink():
        # is_file() and exists() are False for a link whose target is gone, and for a
        # loop: "file not found" named a path that is there to see in a listing
        raise DataError(
            "is a symbolic link to a missing file, or a loop of links; give the file itself",
            path=path,
        )
    if path.exists():
        # a pipe or a device (/dev/null): it could be read only once, and a file is read
        # twice (its header for the delimiter, then the whole)
        raise DataError("not a regular file (a device or a pipe); give a saved file", path=path)
    raise DataError("file not found", path=path)


def read_bytes(path: str | Path) -> bytes:
    """File contents, without a UTF-8 byte-order mark."""
    path = Path(path)
    require_file(path)
    data = read_data_bytes(path)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or _utf16_without_mark(data):
        # Excel's "Unicode text": read as bytes it is a field count error on a line
        # the file does not have
        raise DataError("UTF-16 text (Excel's 'Unicode text'); save it as UTF-8", path=path)
    if b"\r" in data[:65536] and b"\n" not in data[:65536]:
        # classic Mac line ends: one line to the reader, no line to name in an error
        raise DataError(
            "lines end in a bare carriage return (old Mac format); save it with \\n line ends",
            path=path,
        )
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def _utf16_without_mark(data: bytes) -> bool:
    """UTF-16 saved without its byte-order mark (Python's "utf-16-le", some exports):
    one byte of every two is NUL (the high byte of each Latin character), the other
    almost never. UTF-8 text holds no NUL, so a few hundred NULs at every other
    position are no accident."""
    head = data[:4096]
    half = len(head) // 2
    if half < 16:
        return False
    even, odd = head[0 : 2 * half : 2].count(0), head[1 : 2 * half : 2].count(0)
    return max(even, odd) >= half // 2 and min(even, odd) <= half // 20


def delimiter_name(sep: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}.get(sep, repr(sep))


def field_count_error(
    path: str | Path, line: int, text: str, sep: str, expected: int, found: int
) -> DataError:
    """The error for a row with the wrong number of fields, guessing a wrong delimiter."""
    msg = f"expected {expected} {delimiter_name(sep)}-separated fields, found {found}"
    if found == 1 and any(d in text for d in ("\t", ",", ";", "|") if d != sep):
        msg += f" — is the file {delimiter_name(sep)}-separated?"
    return DataError(msg, path=path, row=line)


def scan_fields(data: bytes, sep: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per non-blank line of unquoted ``data``: line number, field count, start offset.

    Vectorised over bytes so it stays well under a second on million-line files.
    Blank means empty or only spaces, as pandas' parser treats them. CRLF line
    ends need no special care: a trailing ``\r`` changes no separator count.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(arr)]))
    seps = np.flatnonzero(arr == ord(sep))
    counts = np.diff(np.concatenate(([0], np.searchsorted(seps, ends))))
    blank = ends == starts
    # Lines without a separator are few in a well-formed file; check those by hand.
    for i in np.flatnonzero((counts == 0) & ~blank):
        blank[i] = not data[starts[i] : ends[i]].strip(b" \r")
    keep = ~blank
    return np.flatnonzero(keep) + 1, counts[keep] + 1, starts[keep]


def line_text(data: bytes, start: int) -> str:
    end = data.find(b"\n", start)
    line = data[start : end if end >= 0 else len(data)].rstrip(b"\r")
    return line.decode("utf-8", errors="replace")


def read_delimited(
    path: str | Path,
    *,
    sep: str,
    names: Sequence[str] | None = None,
    header: bool = True,
    float_cols: Sequence[str] = (),
    encoding: str | None = None,
    quoted: bool = True,
) -> pd.DataFrame:
    """Read a delimited text file strictly: every row must have the header's field count.

    ``names`` replaces the header's names (the header line, if any, is still
    skipped). Columns are ``str`` except ``float_cols``, parsed as float64 where
    every value parses (otherwise left as text for the caller to coerce). A
    multi-character ``sep`` (GroupLens' ``::``) is handled by substitution.
    ``encoding`` defaults to UTF-8, falling back to Latin-1 (older exports,
    GroupLens' among them, are Latin-1) with a warning; :data:`UTF8_ELSE_LATIN1`
    takes a file that is not UTF-8 as Latin-1 without one. Adds ``_line`` and
    ``attrs["source"]``.
    """
    data = read_bytes(path)
    if encoding == UTF8_ELSE_LATIN1:
        encoding = _utf8_else_latin1(data, path)
    if len(sep) > 1:
        free = next(c for c in ("\t", "\x1f", "\x1e", "\x1d") if c.encode() not in data)
        data, sep = data.replace(sep.encode(), free.encode()), free
    header_names: list[str] = []
    if header and names is None:
        # before reading: a repeated name made the quoted reader's column a frame
        header_line, header_names = _header_names(data, sep)
        _check_header_names(header_names, path, header_line)
    if quoted and b'"' in data:
        frame = _read_quoted_or_literal(data, path, sep, names, header, float_cols, encoding)
    else:
        frame = _read_unquoted(data, path, sep, names, header, float_cols, encoding)
    if header and names is None:
        frame = _without_empty_unnamed(frame, header_names)
    frame.attrs = {SOURCE_ATTR: str(path)}
    return frame


def _read_quoted_or_literal(
    data: bytes,
    path: str | Path,
    sep: str,
    names: Sequence[str] | None,
    header: bool,
    float_cols: Sequence[str],
    encoding: str | None,
) -> pd.DataFrame:
    """A file with quotes, read as CSV quotes it; a tab-separated one whose quotes are
    no CSV quoting is read with them as plain characters, with a warning.

    PostgreSQL's ``COPY`` and ``mysql -B`` write tab-separated text that quotes
    nothing, so a title ``"Weird Al" Yankovic Live`` starts with a quote that ends
    no field: such files were refused as "malformed quoting", with no flag to read
    them. A tab-separated file read so must still give every line the header's field
    count; otherwise the quoting error stands."""
    try:
        return _read_quoted(data, path, sep, names, header, encoding)
    except DataError as quoted_error:
        if sep != "\t" or _QUOTED_FIELD.search(data):
            # a field quoted whole ("Heat", R's write.table) is CSV quoting: read
            # literally, its ids would keep their quotes and match no rating
            raise
        try:
            frame = _read_unquoted(data, path, sep, names, header, float_cols, encoding)
        except DataError:
            raise quoted_error from None
        warnings.warn(
            f"{quoted_error}: read with '\"' as a plain character, as PostgreSQL's COPY "
            "and mysql -B write tab-separated text (no field is quoted)",
            UserWarning,
            stacklevel=4,
        )
        return frame


# a tab-separated field that opens and closes with a quote (a tab inside it or not):
# the file quotes as CSV does
_QUOTED_FIELD = re.compile(rb'(?:^|\t)"[^\n]*?"\r?(?:\t|$)', re.MULTILINE)


def _header_names(data: bytes, sep: str) -> tuple[int, list[str]]:
    """The header's line number and its names as written (empty ones included). The
    header is the first line that is not blank, as both readers take it: the first line
    alone let a blank one before the header hide a repeated name."""
    start, number = 0, 1
    while True:
        end = data.find(b"\n", start)
        line = data[start : len(data) if end < 0 else end]
        if line.strip(b" \r") or end < 0:
            break
        start, number = end + 1, number + 1
    text = line.rstrip(b"\r").decode("utf-8", errors="replace")
    return number, next(csv.reader([text], delimiter=sep), [])


def _without_empty_unnamed(frame: pd.DataFrame, header: list[str]) -> pd.DataFrame:
    """``frame`` less the columns with neither a name nor a value: what Excel leaves
    after cleared cells. A users file warned that they were "a row index", and no flag
    could name them; an unnamed column that holds values is kept (a row index is, and
    said to be one where it matters)."""
    # by position: the quoted reader keeps the empty names, all alike
    unnamed = [i for i, n in enumerate(header[: frame.shape[1]]) if not n.strip()]
    empty = {i for i in unnamed if missing_ids(frame.iloc[:, i]).all()}
    if not empty:
        return frame
    return frame.iloc[:, [i for i in range(frame.shape[1]) if i not in empty]]


def _check_header_names(header: list[str], path: str | Path, line: int) -> None:
    """pandas renames a repeated column to ``rating.1`` and the first copy is read
    as if it were the only one: a repeated name is refused instead. Empty names are
    not repeats: pandas numbers them (``Unnamed: 4``), and Excel writes a run of them
    (``user_id,item_id,rating,,``) after cells that were cleared but kept a format."""
    names = [n for n in header if n.strip()]
    repeated = [n for i, n in enumerate(names) if n in names[:i]]
    if repeated:
        raise DataError(
            f"column {repeated[0]!r} appears more than once in the header; each column "
            "needs its own name" + (no_header_hint(header) or ""),
            path=path,
            row=line,
        )


def no_header_hint(header: Sequence[object]) -> str | None:
    """What to say where a file's first line looks like data rather than column names
    (GroupLens' u.data and u.item have none): half or more of its fields numbers, or
    empty. None where it looks like names."""
    fields = [str(f).strip() for f in header]
    numeric = sum(1 for f in fields if not f or _NUMBER.fullmatch(f))
    if len(fields) < 2 or 2 * numeric < len(fields):
        return None
    return (
        " — the first line looks like data, not column names: a file needs a header line "
        "naming its columns (MovieLens' own files are read with --dataset and --data, "
        "load_dataset in Python)"
    )


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _expected_fields(path: str | Path, names: Sequence[str] | None, header: bool, got: int) -> int:
    if not header and names is None:
        raise ValueError("names are needed when the file has no header")
    if got == 0 and header:
        raise DataError("the file is empty: expected a header line", path=path, row=1)
    return len(names) if names is not None else got


def _read_unquoted(
    data: bytes,
    path: str | Path,
    sep: str,
    names: Sequence[str] | None,
    header: bool,
    float_cols: Sequence[str],
    encoding: str | None,
) -> pd.DataFrame:
    if b"\r" in data:
        # pandas ends a line at a lone carriage return, the line count here does not:
        # the mismatch was an error with no line to look at
        stray = re.search(rb"\r(?!\n)", data)
        if stray is not None and stray.end() < len(data):
            raise DataError(
                "a carriage return (\\r) inside the line splits it in two; remove it",
                path=path,
                row=data.count(b"\n", 0, stray.start()) + 1,
            )
    lines, fields, starts = scan_fields(data, sep)
    expected = _expected_fields(path, names, header, int(fields[0]) if len(fields) else 0)
    bad = np.flatnonzero(fields != expected)
    if len(bad):
        i = int(bad[0])
        text = line_text(data, int(starts[i]))
        raise field_count_error(path, int(lines[i]), text, sep, expected, int(fields[i]))
    col_names = list(names) if names is not None else None
    data_lines = lines[1:] if header else lines
    head = 0 if header else None
    try:
        frame = _read_csv_fast(data, float_cols, encoding or "utf-8", sep, head, col_names)
    except UnicodeDecodeError:
        if encoding:
            raise DataError(f"the file is not valid {encoding} text", path=path) from None
        fallback = legacy_encoding(data, path)
        frame = _read_csv_fast(data, float_cols, fallback, sep, head, col_names)
    if len(frame) != len(data_lines):  # pragma: no cover - guards parser disagreements
        raise DataError(
            f"found {len(frame)} rows but {len(data_lines)} non-blank lines; "
            "the file may contain stray quote or carriage-return characters",
            path=path,
        )
    number_lines(frame, data_lines, path)
    return frame


def _read_csv_fast(
    data: bytes,
    float_cols: Sequence[str],
    encoding: str,
    sep: str,
    header: int | None,
    names: list[str] | None,
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_NONE,
) -> pd.DataFrame:
    def read(dtype: Any, na_values: dict[str, list[str]] | None) -> pd.DataFrame:
        return pd.read_csv(
            io.BytesIO(data),
            sep=sep,
            header=header,
            names=names,
            quoting=quoting,
            keep_default_na=False,
            engine="c",
            encoding=encoding,
            dtype=dtype,
            na_values=na_values,
        )

    # Reading numbers as float64 directly is ~3x faster than text then to_numeric;
    # a value that does not parse makes pandas raise, and then they are read as text.
    if float_cols:
        # every other column as text: a defaultdict, which pandas accepts and its stubs do not
        dtype: defaultdict[str, Any] = defaultdict(lambda: str)
        dtype.update({c: "float64" for c in float_cols})
        try:
            return read(dtype, {c: [""] for c in float_cols})
        except ValueError:
            pass
    return read(str, None)


_MULTIBYTE = re.compile("[^\x00-\x7f\ufffd]")
# GroupLens' encoding, for its files: Latin-1 as published, UTF-8 as many a copy is saved
# again (an editor, a re-distribution), which read as Latin-1 was "Les MisÃ©rables"
UTF8_ELSE_LATIN1 = "utf-8, else latin-1"


def _utf8_else_latin1(data: bytes, path: str | Path) -> str:
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Latin-1 is what the file is meant to be
        legacy_encoding(data, path)  # refuses a file that mixes encodings
    return "latin-1"


def legacy_encoding(data: bytes, path: str | Path) -> str:
    """The encoding of a file that is not UTF-8: Windows-1252 (Excel's exports: its
    curly quotes and dashes), else Latin-1, which reads any byte; said in a warning.

    A file that is UTF-8 in places and not in others is refused: read whole as
    Latin-1, its UTF-8 ids and titles would become mojibake ("AmÃ©lie"), and the
    ratings of those ids would be dropped as unknown items without a word."""
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start]
    # UTF-8 with a stray byte, or a legacy file? In legacy text a valid UTF-8 sequence
    # is a coincidence ("é" + no-break space + "»" is one), so it is mixed only where
    # the valid multibyte characters outnumber the bytes that are not UTF-8
    as_utf8 = data.decode("utf-8", errors="replace")
    invalid = as_utf8.count("\ufffd")
    found = _MULTIBYTE.findall(as_utf8)
    valid = len(found)
    # A tie (one "Café" in Latin-1 beside one "Amélie" in UTF-8) is mixed when the UTF-8
    # characters are accented Latin letters: a legacy coincidence lands there only as
    # "Ã" or "Â" before a symbol, while "ß“" in Windows-1252 decodes to U+07D3
    if valid > invalid or (valid == invalid and all("\xa0" <= c <= "\u017f" for c in found)):
        raise DataError(
            f"line {line}: byte 0x{byte:02x} is not UTF-8, but the file's other non-ASCII "
            f"text is ({valid:,} character{'s' if valid > 1 else ''}): it mixes encodings; "
            "save it as UTF-8",
            path=path,
        )
    try:
        data.decode("cp1252")
        chosen = "cp1252"
    except UnicodeDecodeError:
        chosen = "latin-1"
    warnings.warn(
        f"{path}: not UTF-8 (line {line}: byte 0x{byte:02x}); read as "
        f"{'Windows-1252' if chosen == 'cp1252' else 'Latin-1'}",
        stacklevel=4,
    )
    return chosen


def _read_quoted(
    data: bytes,
    path: str | Path,
    sep: str,
    names: Sequence[str] | None,
    header: bool,
    encoding: str | None,
) -> pd.DataFrame:
    # Quoted fields may hold separators and newlines, so count with the csv module,
    # which also knows on which line each record starts.
    try:
        data.decode(encoding or "utf-8")  # checked, not kept: pandas decodes as it reads
        encoding = encoding or "utf-8"
    except UnicodeDecodeError:
        if encoding:
            raise DataError(f"the file is not valid {encoding} text", path=path) from None
        encoding = legacy_encoding(data, path)
    fast = _read_quoted_fast(data, encoding, sep, names, header, path)
    if fast is not None:
        return fast
    text = data.decode(encoding)
    # strict: a quote left open used to take the rest of the file into one field (the
    # catalogue after it vanished, and its ratings were blamed as unknown items)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    prev = 0
    expected = -1
    head: list[str] | None = None
    # no field can be longer than the text; csv's default cap (131,072 characters)
    # refused a long quoted description that the same file unquoted loads
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        for row in reader:
            start, prev = prev + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip(" ")):
                continue
            if expected < 0:
                expected = _expected_fields(path, names, header, len(row))
                if header:
                    head = row
                    continue
            if len(row) != expected:
                raise field_count_error(path, start, sep.join(row), sep, expected, len(row))
            rows.append(row)
            lines.append(start)
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise DataError(
                "a quoted field opened here is never closed (a '\"' is missing)",
                path=path,
                row=prev + 1,
            ) from None
        raise DataError(f"malformed quoting ({exc})", path=path, row=reader.line_num) from exc
    finally:
        csv.field_size_limit(limit)
    if expected < 0:
        _expected_fields(path, names, header, 0)
    # an empty name as pandas' reader (the unquoted path) names it: a file's columns
    # are named alike whether or not it holds a quote, and two empty names stay two
    cols = (
        list(names)
        if names is not None
        else [n if n.strip() else f"Unnamed: {i}" for i, n in enumerate(head or [])]
    )
    frame = pd.DataFrame(rows, columns=cols, dtype=str) if rows else pd.DataFrame(columns=cols)
    number_lines(frame, np.asarray(lines), path)
    return frame


def _read_quoted_fast(
    data: bytes,
    encoding: str,
    sep: str,
    names: Sequence[str] | None,
    header: bool,
    path: str | Path,
) -> pd.DataFrame | None:
    """A quoted file as pandas' C parser reads it, where that is what the csv module
    reads (below), else None. The csv module's rows of Python strings took 22 times the
    file's size (a 76 MB file, 1.7 GB) and three times as long; it still reads any file
    this cannot vouch for, and names the line of whatever is wrong there.

    Vouched for: every record's first line and field count are known from the quotes
    (a newline or separator ends a record or field where an even number of quotes
    precede it), every record has the header's fields (pandas pads a short row with
    empty fields, which the csv module's rule refuses, so only the count tells), and
    pandas finds as many records as that count."""
    lines = _record_first_lines(data, sep, None if names is None else len(names))
    if lines is None:
        return None
    try:
        frame = _read_csv_fast(
            data,
            (),  # every column as text, as the csv module's way reads it
            encoding,
            sep,
            0 if header else None,
            list(names) if names is not None else None,
            quoting=csv.QUOTE_MINIMAL,
        )
    except (ValueError, UnicodeDecodeError):  # pandas' ParserError is a ValueError
        return None
    rows = lines[1:] if header else lines
    if len(frame) != len(rows):
        return None
    if header and names is None and list(frame.columns) != _csv_header(data, encoding, sep):
        return None  # a blank name (" "), or a name pandas renames where the csv way does not
    number_lines(frame, rows, path)
    return frame


def _csv_header(data: bytes, encoding: str, sep: str) -> list[str]:
    """The column names the csv module's way gives the header (an empty or blank name as
    "Unnamed: i"), read from the file's first 64 KiB: a longer header comes out cut,
    and so unlike pandas' names, which sends the file the csv module's way."""
    text = data[:65536].decode(encoding, errors="ignore")
    try:
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=sep):
            if row and not (len(row) == 1 and not row[0].strip(" ")):
                return [n if n.strip() else f"Unnamed: {i}" for i, n in enumerate(row)]
    except csv.Error:  # the csv module's way names what is wrong
        pass
    return []


def _record_first_lines(data: bytes, sep: str, fields: int | None) -> np.ndarray | None:
    """The line on which each record that is not blank starts, from the quotes; None
    where the two readers may take the file otherwise: a record of other than
    ``fields`` fields (None: the first record's; one field alone is never vouched for,
    as a blank-looking row is read differently), a quote that neither opens a field,
    closes one or doubles another inside one (``""x`` is refused by the csv module and
    read as ``x`` by pandas; ``12"`` is a plain character to both but flips the count),
    or a line of nothing but spaces and tabs. numpy over the bytes, no Python loop."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if not len(raw):
        return None
    newlines = np.flatnonzero(raw == 10)
    quotes = np.flatnonzero(raw == 34)
    if len(quotes):
        # the n-th quote opens a field (n even) at the field's start, or is the second of
        # a doubled quote inside one; it closes one (n odd) before the field's end, or is
        # the first of a doubled quote
        n = np.arange(len(quotes))
        before = np.where(quotes > 0, raw[np.maximum(quotes - 1, 0)], 10)
        after = np.where(quotes < len(raw) - 1, raw[np.minimum(quotes + 1, len(raw) - 1)], 10)
        edge = np.array([ord(sep), 10, 13])
        doubled_second = np.concatenate([[False], quotes[1:] == quotes[:-1] + 1]) & (n % 2 == 0)
        doubled_first = np.concatenate([quotes[1:] == quotes[:-1] + 1, [False]]) & (n % 2 == 1)
        opens = (n % 2 == 0) & (np.isin(before, edge) | doubled_second)
        closes = (n % 2 == 1) & (np.isin(after, edge) | doubled_first)
        if not (opens | closes).all() or len(quotes) % 2:
            return None
    # a carriage return alone ends a line to both readers (and, inside quotes, counts as
    # one in the csv module's line numbers), where the counts here go by \n: such a file
    # is left to the csv module's way
    returns = np.flatnonzero(raw == 13)
    if (raw[np.minimum(returns + 1, len(raw) - 1)] != 10).any():  # one last in the file too
        return None
    ends = newlines[np.searchsorted(quotes, newlines) % 2 == 0]  # outside any quotes
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [len(raw)]])
    # blank where a record holds nothing but spaces, tabs and a \r: skipped where empty,
    # refused where not (blank to one reader, a row of empty fields to the other)
    # comparisons, not np.isin, which widened the file's bytes to int64 (8 times its size)
    solid = raw > 32
    solid |= (raw < 32) & (raw != 9) & (raw != 10) & (raw != 13)
    has_solid = np.logical_or.reduceat(solid, np.minimum(starts, len(raw) - 1))
    has_solid &= stops > starts
    last = raw[np.maximum(stops - 1, 0)]
    lengths = stops - starts - ((stops > starts) & (last == 13))
    if (~has_solid & (lengths > 0)).any():
        return None
    kept = has_solid
    outside = np.flatnonzero(raw == ord(sep))
    outside = outside[np.searchsorted(quotes, outside) % 2 == 0]
    counts = np.diff(np.searchsorted(outside, np.concatenate([starts, [len(raw) + 1]])))
    counts = counts[kept] + 1
    expected = counts[0] if fields is None and len(counts) else fields
    if not len(counts) or expected == 1 or (counts != expected).any():
        return None
    return np.searchsorted(newlines, starts[kept]) + 1


def read_table(path: str | Path, sep: str | None = None) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet/JSON Lines table with ``_line``; delimited text is
    read as text columns, JSON keeps its values' types.

    The delimiter comes from ``sep``, else the extension (.csv/.tsv/.tab), else
    the first line.
    """
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(path)
    if data_suffix(path) in JSON_LINES_SUFFIXES:
        frame = read_json_lines(read_bytes(path), path)
        frame.attrs = {SOURCE_ATTR: str(path)}
        return frame
    if sep is None:
        sep = _DELIMITERS.get(data_suffix(path))
        if sep == ",":
            # Excel in many European locales saves ".csv" with semicolons (the comma is
            # their decimal mark), and tab-separated exports are often named .csv: a
            # header without a comma is read by the separator it does hold
            first = _first_line(path)
            if "," not in first:
                sep = _sniff(first)
        elif sep is None:
            sep = _sniff(_first_line(path))
    return read_delimited(path, sep=sep)


def _first_line(path: Path) -> str:
    """The header line, for the delimiter: read alone, not the whole file twice."""
    require_file(path)
    return first_data_line(path).decode("utf-8", errors="replace")


def warn_if_cut_short(path: Path, frame: pd.DataFrame) -> None:
    """Warn when ``path``'s last line has no line end: every writer of these files ends
    each line, and a copy or download that stopped mid-row leaves a row that still
    parses (a timestamp cut from 883452000 to 883452) but is wrong."""
    if not len(frame):
        return
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) in (b"\n", b"\r"):
            return
    warnings.warn(
        f"{path.name}: the last line ({int(frame[LINE_COL].iloc[-1])}) has no line end; "
        "if the file was cut short, that row is cut too",
        stacklevel=4,  # past the layout's reader and the loader, at their caller
    )


def _parquet_values(path: Path, column: Any) -> list[Any]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]  # pandas read with it

    return list(pq.read_table(path, columns=[column]).column(column).to_pylist())


def _read_parquet(path: Path) -> pd.DataFrame:
    require_file(path)
    try:
        frame = pd.read_parquet(path)
    except ImportError as exc:
        raise DataError(
            "reading Parquet needs pyarrow: pip install 'metarec[parquet]'", path=path
        ) from exc
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise DataError(f"not a readable Parquet file ({exc})", path=path) from exc
    for col in frame.columns:
        # integers made float by a null may be rounded: read again exactly if so
        frame[col] = exact_integers(frame[col], partial(_parquet_values, path, col))
    # a frame saved with its ids as the index (df.set_index("user_id").to_parquet) comes
    # back with them there, and the id column was "missing". An unnamed level (row
    # labels left by filtering) holds no field of the data; a named one may be row
    # numbers given a name, but pandas makes ids 10, 11, ... a RangeIndex too, so a
    # named index is read as a column and the user told which
    named = [n for n in frame.index.names if n is not None]
    if named:
        clash = [name for name in named if name in frame.columns]
        if clash:
            # two columns of one name: which one holds the ids is anyone's guess
            raise DataError(
                f"the frame's index {clash[0]!r} (saved with it) has a column's name; "
                "expected one column of each name: save it with index=False, or rename one",
                path=path,
            )
        warnings.warn(
            f"{path}: the frame's index {', '.join(map(repr, named))} (saved with it) is "
            "read as a column",
            stacklevel=4,
        )
        frame = frame.reset_index(level=named).reset_index(drop=True)
    # Parquet has no lines; numbering rows as if under a header (first row = 2)
    # still lets a user find a bad value.
    number_lines(frame, np.arange(2, len(frame) + 2), path)
    frame.attrs = {SOURCE_ATTR: str(path)}
    return frame


def _sniff(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in ("\t", ",", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","

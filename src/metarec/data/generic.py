"""Generic CSV/TSV/Parquet tables, and the frame normalisation every loader shares.

Loaders are strict about structure (missing columns, wrong field counts) and
raise :class:`DataError`; bad values are kept (as NaN or empty strings) for
:func:`metarec.data.cleaning.clean` to count and drop. Every frame carries an
internal ``_line`` column (1-based source line, header = line 1) and
``frame.attrs["source"]`` (the file path) so cleaning can name where a bad value
came from; cleaning removes the internal ``_``-prefixed columns.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec.data.compressed import data_suffix, first_data_line, read_data_bytes
from metarec.data.jsonlines import JSON_LINES_SUFFIXES, read_json_lines
from metarec.data.schema import Dataset
from metarec.data.text import (
    LIST_TYPES,
    ItemTextConfig,
    build_item_text,
    is_mixed,
    join_lists,
    normalise_genres,
)
from metarec.errors import ConfigError, DataError

SOURCE_ATTR = "source"
# frame.attrs[COLUMNS_ATTR]: internal column name -> the file's, for messages that
# name a field ("score", not "rating")
COLUMNS_ATTR = "columns"
LINE_COL = "_line"
RAW_PREFIX = "_raw_"  # _raw_<col>: source text of values that did not parse

_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds, which messages show plainly (its
    repr would say np.int64(1))."""
    return value.item() if isinstance(value, np.generic) else value


def str_ids(values: pd.Series) -> pd.Series:
    """Ids as strings, missing stays missing; ``1.0`` read as float becomes ``"1"``."""
    if pd.api.types.is_float_dtype(values.dtype):
        # value by value: a whole number within int64 as an integer ("2", not "2.0"),
        # any other (1e20, 2.5) as its float text; an id past 2^53 was never exact in a
        # float column, so nothing truer can be written for it
        known = values.notna()
        whole = known & (values == np.floor(values)) & (values.abs() < 2.0**63)
        text = pd.Series(np.nan, index=values.index, dtype=object)
        text[whole] = values[whole].astype("int64").astype(str)
        text[known & ~whole] = values[known & ~whole].astype(str)
        return text
    mask = values.notna()
    out = values.astype(str)
    return out if bool(mask.all()) else out.where(mask)


def check_single_ids(frame: pd.DataFrame, cols: Sequence[str], source: str | Path | None) -> None:
    """Refuse, by column and row, an id that holds several values (a Parquet list
    column): as the text "[1]" it was an id no rating or request would match."""
    for col in cols:
        values = frame[col]
        if values.dtype != object or not is_mixed(values):
            continue
        listed = values.map(lambda v: isinstance(v, (*LIST_TYPES, dict))).to_numpy()
        if not listed.any():
            continue
        i = int(np.flatnonzero(listed)[0])
        value = values.iloc[i]
        shown = value.tolist() if isinstance(value, np.ndarray) else value
        line = int(frame[LINE_COL].iloc[i]) if LINE_COL in frame.columns else None
        raise DataError(
            ("" if line is not None else f"row {i + 1}: ")
            + f"{col} {shown!r} holds several values; an id is one number or text",
            path=source,
            row=line,
            field=col,
        )


def text_values(values: pd.Series) -> pd.Series:
    """Free text as ``str``, missing as empty string."""
    return values.astype(object).where(values.notna(), "").astype(str)


def numeric_with_raw(values: pd.Series, name: str) -> tuple[pd.Series, pd.Series | None]:
    """Parse numbers; return them and, if any failed, the raw text of the failures."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64"), None
    num = pd.to_numeric(values, errors="coerce").astype("float64")
    raw = text_values(values)
    bad = num.isna() & raw.str.strip().ne("")
    if not bad.any():
        return num, None
    return num, raw.where(bad, None).rename(f"{RAW_PREFIX}{name}")


def finish_interactions(frame: pd.DataFrame, source: str | Path | None) -> pd.DataFrame:
    """Normalise to ``user_id, item_id, rating, timestamp`` (+ internal columns)."""
    out = pd.DataFrame(index=frame.index)
    out["user_id"] = str_ids(frame["user_id"])
    out["item_id"] = str_ids(frame["item_id"])
    rating, raw_rating = numeric_with_raw(frame["rating"], "rating")
    # ratings are float32 from here on: "inf", or 1e308 that would become inf in the
    # cast, is kept with its text as an unreadable rating, so cleaning names the value
    # as written rather than "rating inf" after an overflow warning
    unusable = rating.notna() & ~(rating.abs() <= np.finfo(np.float32).max)
    if unusable.any():
        text = text_values(frame["rating"]).where(unusable, None)
        raw_rating = text if raw_rating is None else raw_rating.fillna(text)
        raw_rating = raw_rating.rename(f"{RAW_PREFIX}rating")
        rating = rating.where(~unusable)
    out["rating"] = rating.astype("float32")
    raw_ts = None
    if "timestamp" not in frame.columns:
        out["timestamp"] = np.nan
    elif is_datetimes(frame["timestamp"]):
        out["timestamp"] = datetime_seconds(frame["timestamp"])
    else:
        ts, raw_ts = numeric_with_raw(frame["timestamp"], "timestamp")
        # past year 9999 even as nanoseconds: no time in any unit, and it would sway the
        # guess of the column's unit; then past it in the unit guessed. Kept with its
        # text so cleaning names it, as an unusable rating is
        ts, raw_ts = _beyond(ts, raw_ts, frame["timestamp"], MAX_EPOCH_S * 1e9)
        ts = _epoch_seconds(ts, source)
        ts, raw_ts = _beyond(ts, raw_ts, frame["timestamp"], MAX_EPOCH_S)
        if raw_ts is not None:
            ts, raw_ts = _datetimes_as_seconds(frame["timestamp"], ts, raw_ts, source)
        out["timestamp"] = ts
    for raw in (raw_rating, raw_ts):
        if raw is not None:
            out[raw.name] = raw
    _carry_internal(frame, out, source)
    return out.reset_index(drop=True)


def is_datetimes(values: pd.Series) -> bool:
    """Whether ``values`` are datetimes (Parquet's, or pandas' in a frame built in memory)."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return True
    return values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) == "datetime"


def datetime_seconds(values: pd.Series) -> pd.Series:
    """Datetimes as seconds since 1970 (UTC): to_numeric would give nanoseconds."""
    return epoch_seconds(pd.to_datetime(values, utc=True))


MAX_EPOCH_S = 253_402_300_799  # 9999-12-31T23:59:59 UTC, the last time a date holds
# words dateutil reads as the clock at loading: a time that moves with every run
_CLOCK_WORDS = {"now", "today", "tomorrow", "yesterday"}
_YEAR = r"[0-9]{4}"  # a written date names its year in full (31/01/20 is a _NUMERIC_DATE)
# what databases export for "no date" (0001-01-01, 9999-12-31): as times they would
# sort a rating before or after every other
_PLACEHOLDER_YEARS = (1, 9999)


def epoch_seconds(stamps: pd.Series) -> pd.Series:
    """UTC datetimes as float seconds since 1970. Subtracted at the column's own
    resolution: pandas 3 reads dates as microseconds, and the nanosecond epoch
    overflowed for a date past 2262 (a raw OutOfBoundsDatetime on 9999-12-31)."""
    epoch = pd.Timestamp(0, tz="UTC").as_unit(stamps.dt.unit)
    return (stamps - epoch) / pd.Timedelta(seconds=1)


def timestamp_problem(text: str) -> str:
    """Why a timestamp's text was not read as a time, for cleaning's messages."""
    if not np.isnan(pd.to_numeric(pd.Series([text]), errors="coerce").iloc[0]):
        return "is past the year 9999"
    if text.strip().lower() in _CLOCK_WORDS:
        return "names the clock at loading, not a date"
    if not re.search(_YEAR, text) and not re.match(_NUMERIC_DATE, text):
        return "is not a number or a date with its year"
    parsed = pd.to_datetime(pd.Series([text]), errors="coerce", utc=True, format="mixed")
    if parsed.notna().all() and parsed.dt.year.isin(_PLACEHOLDER_YEARS).all():
        return "is a placeholder date (year 1 or 9999 stands for no date)"
    return "is not a number or a date"


# numbers of an epoch unit finer than seconds: seconds since 1970 pass 1e11 in year 5138
_EPOCH_UNITS = (
    (1e17, 1e9, "nanoseconds"),
    (1e14, 1e6, "microseconds"),
    (1e11, 1e3, "milliseconds"),
)


def _beyond(
    ts: pd.Series, raw: pd.Series | None, values: pd.Series, limit: float
) -> tuple[pd.Series, pd.Series | None]:
    """``ts`` without the numbers past ``limit``, which join ``raw`` as their text."""
    far = ts.notna() & ~(ts.abs() <= limit)
    if not far.any():
        return ts, raw
    text = text_values(values).where(far, None)
    raw = (text if raw is None else raw.fillna(text)).rename(f"{RAW_PREFIX}timestamp")
    return ts.where(~far), raw


def _epoch_seconds(ts: pd.Series, source: str | Path | None) -> pd.Series:
    """Numeric timestamps in seconds: a column of epoch milliseconds (JavaScript's,
    Kafka's), micro- or nanoseconds is scaled, and the loader says so."""
    if not ts.notna().any():
        return ts
    typical = float(np.nanmedian(np.abs(ts.to_numpy(dtype=np.float64))))
    for above, per_second, unit in _EPOCH_UNITS:
        if typical >= above:
            warnings.warn(
                f"{source or 'interactions'}: timestamps read as {unit} since 1970 (as seconds "
                f"they would reach the year {1970 + typical / 31_557_600:,.0f})",
                stacklevel=4,
            )
            return ts / per_second
    return ts


# a date written with the day or month first: 31/01/2020, 01.31.2020, 1-31-20
_NUMERIC_DATE = r"^\s*(\d{1,2})[/.\-](\d{1,2})[/.\-]\d{2,4}(?:\D|$)"


def _day_first(text: pd.Series, source: str | Path | None) -> bool:
    """Whether a column's numeric dates are written day first.

    pandas reads each value on its own, month first when it can, so a day-first
    file becomes a mix (13/04/2020 as April 13, 03/04/2020 as March 4) and its
    time order, which P2's supports and the feedback loop rely on, is scrambled.
    The column is read one way: day first when some value can only be read so."""
    parts = text.dropna().astype(str).str.extract(_NUMERIC_DATE).dropna().astype(int)
    if parts.empty:
        return False
    # 13/13/2020 is no date either way: pandas leaves it unparsed, and it says nothing
    # about which comes first
    possible = ~((parts[0] > 12) & (parts[1] > 12))
    parts = parts[possible]
    days_first, months_first = parts[0] > 12, parts[1] > 12
    where = source or "interactions"
    if days_first.any() and months_first.any():
        a, b = text[days_first.idxmax()], text[months_first.idxmax()]
        raise DataError(
            f"{where}: timestamp dates are written both day first ({a!r}) and month first "
            f"({b!r}); write them one way (ISO 8601, 2020-01-31, is unambiguous)"
        )
    if len(parts) and not days_first.any() and not months_first.any():
        warnings.warn(
            f"{where}: timestamp dates such as {text[parts.index[0]]!r} are read month first; "
            "no value shows which comes first (ISO 8601, 2020-01-31, is unambiguous)",
            stacklevel=5,
        )
    return bool(days_first.any())


def _datetimes_as_seconds(
    values: pd.Series, num: pd.Series, raw: pd.Series, source: str | Path | None
) -> tuple[pd.Series, pd.Series | None]:
    # Timestamps given as dates ("2020-01-31 12:00") are common in exported tables.
    text = values.where(num.isna())
    as_text = text.astype(str)
    # day first applies to the numeric dates only: with it, dateutil reads an ISO
    # 2020-01-05 as the 1st of May
    numeric = as_text.str.match(_NUMERIC_DATE) & text.notna()
    # dateutil fills what a value lacks from the clock at loading ("10:30" is today,
    # "now" is now) or from year 1 ("June 5"): a time that moves with every run, or
    # that sorts before all others. A date must name its year.
    text = text.where(numeric | as_text.str.contains(_YEAR))
    text = text.where(~as_text.str.strip().str.lower().isin(_CLOCK_WORDS))
    parsed = pd.to_datetime(text.where(~numeric), errors="coerce", utc=True, format="mixed")
    if numeric.any():
        day_first = _day_first(text, source)
        parsed[numeric] = pd.to_datetime(
            text[numeric], errors="coerce", utc=True, format="mixed", dayfirst=day_first
        )
    parsed = parsed.where(~parsed.dt.year.isin(_PLACEHOLDER_YEARS))
    ok = parsed.notna()
    if not ok.any():
        return num, raw
    seconds = epoch_seconds(parsed[ok])
    num = num.copy()
    num[ok] = seconds.astype("float64")
    raw = raw.where(~ok, None)
    return num, (raw if raw.notna().any() else None)


def finish_items(
    frame: pd.DataFrame,
    source: str | Path | None,
    text: ItemTextConfig | None = None,
) -> pd.DataFrame:
    """Normalise to ``item_id, title, year, genres, text`` plus extra str columns.

    ``genres`` must already be ``|``-joined; ``year`` may be text or numbers.
    """
    out = pd.DataFrame(index=frame.index)
    out["item_id"] = str_ids(frame["item_id"])
    if "title" in frame.columns:
        out["title"] = text_values(join_lists(frame["title"], ", "))
    else:
        out["title"] = out["item_id"]
    if "year" in frame.columns:
        out["year"] = pd.to_numeric(frame["year"], errors="coerce").astype("float64")
    else:
        out["year"] = np.nan
    out["genres"] = text_values(frame["genres"]) if "genres" in frame.columns else ""
    skip = {"item_id", "title", "year", "genres", "text"}
    for col in frame.columns:
        if col not in skip and not str(col).startswith("_"):
            out[col] = text_values(join_lists(frame[col], ", "))
    if "text" in frame.columns:
        # a file's own text (a description) was dropped without a word: it is item
        # text by its usual name, as a title is, after the title, year and genres (as
        # the HTTP API's `text`); the items table's `text` is then the whole text
        out["text"] = text_values(join_lists(frame["text"], ", ")).str.strip()
        text = text or ItemTextConfig()
        if "text" not in text.extra:
            text = replace(text, extra=(*text.extra, "text"))
    out["text"] = build_item_text(out, text)
    cols = ["item_id", "title", "year", "genres", "text"]
    out = out[cols + [c for c in out.columns if c not in cols]]
    _carry_internal(frame, out, source)
    return out.reset_index(drop=True)


def finish_users(
    frame: pd.DataFrame,
    source: str | Path | None,
    drop: Sequence[str] = ("zip_code",),
) -> pd.DataFrame:
    """Normalise to ``user_id`` plus categorical feature columns as ``str``."""
    out = pd.DataFrame(index=frame.index)
    out["user_id"] = str_ids(frame["user_id"])
    for col in frame.columns:
        if col != "user_id" and col not in drop and not str(col).startswith("_"):
            out[col] = text_values(frame[col]).str.strip()
    _carry_internal(frame, out, source)
    return out.reset_index(drop=True)


def _carry_internal(src: pd.DataFrame, out: pd.DataFrame, source: str | Path | None) -> None:
    if LINE_COL in src.columns:
        out[LINE_COL] = src[LINE_COL].to_numpy()
    out.attrs = {}
    if source is not None:
        out.attrs[SOURCE_ATTR] = str(source)


def check_rating_range(value: Any, where: str) -> tuple[float, float]:
    """``(low, high)`` as two finite numbers with low <= high, or a ConfigError."""
    try:
        lo, hi = (float(x) for x in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected (low, high), got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ConfigError(f"{where}: expected finite low <= high, got {value!r}")
    return lo, hi


def infer_rating_range(ratings: pd.Series) -> tuple[float, float]:
    """The observed (min, max) rating, or ``(1, 5)`` when nothing parses."""
    r = pd.to_numeric(ratings, errors="coerce")
    r = r[np.isfinite(r.to_numpy(dtype="float64", na_value=np.nan))]
    if r.empty:
        return (1.0, 5.0)
    _warn_stray_extreme(r.to_numpy(dtype=np.float64))
    return (float(r.min()), float(r.max()))


def _warn_stray_extreme(values: np.ndarray) -> None:
    """A scale read from the data takes a typo for its end: one 99 among 1-5 ratings
    makes the scale 1-99, so nothing is refused and every metric is scaled wrong. Warn
    when an end value is rare (under 1 % of ratings) and farther from the next value
    than three times the span of the rest (levels with gaps, such as implicit weights
    1, 2 and 5, stay quiet)."""
    levels, counts = np.unique(values, return_counts=True)
    if len(levels) < 3:
        return
    for end, nxt, far, count in (
        (levels[-1], levels[-2], levels[0], counts[-1]),
        (levels[0], levels[1], levels[-1], counts[0]),
    ):
        if count < 0.01 * len(values) and abs(end - nxt) > 3 * abs(nxt - far):
            warnings.warn(
                f"rating scale read from the data as [{levels[0]:g}, {levels[-1]:g}], but "
                f"{count:,} rating(s) of {end:g} stand far from the others "
                f"({min(far, nxt):g} to {max(far, nxt):g}); if that is a typo, give the scale "
                "(--rating-range LOW,HIGH, or rating_range=) and those rows are dropped",
                UserWarning,
                stacklevel=3,
            )


# --------------------------------------------------------------------------- reading


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
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
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
    GroupLens' among them, are Latin-1). Adds ``_line`` and ``attrs["source"]``.
    """
    data = read_bytes(path)
    if len(sep) > 1:
        free = next(c for c in ("\t", "\x1f", "\x1e", "\x1d") if c.encode() not in data)
        data, sep = data.replace(sep.encode(), free.encode()), free
    if quoted and b'"' in data:
        frame = _read_quoted(data, path, sep, names, header, encoding)
    else:
        frame = _read_unquoted(data, path, sep, names, header, float_cols, encoding)
    if header and names is None:
        _check_header_names(data, sep, path)
    frame.attrs = {SOURCE_ATTR: str(path)}
    return frame


def _check_header_names(data: bytes, sep: str, path: str | Path) -> None:
    """pandas renames a repeated column to ``rating.1`` and the first copy is read
    as if it were the only one: a repeated name is refused instead."""
    first = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")
    names = next(csv.reader([first], delimiter=sep), [])
    repeated = [n for i, n in enumerate(names) if n in names[:i]]
    if repeated:
        raise DataError(
            f"column {repeated[0]!r} appears more than once in the header; each column "
            "needs its own name",
            path=path,
            row=1,
        )


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
    frame[LINE_COL] = data_lines.astype(np.int64)
    return frame


def _read_csv_fast(
    data: bytes,
    float_cols: Sequence[str],
    encoding: str,
    sep: str,
    header: int | None,
    names: list[str] | None,
) -> pd.DataFrame:
    def read(dtype: Any, na_values: dict[str, list[str]] | None) -> pd.DataFrame:
        return pd.read_csv(
            io.BytesIO(data),
            sep=sep,
            header=header,
            names=names,
            quoting=csv.QUOTE_NONE,
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
        text = data.decode(encoding or "utf-8")
    except UnicodeDecodeError:
        if encoding:
            raise DataError(f"the file is not valid {encoding} text", path=path) from None
        text = data.decode(legacy_encoding(data, path))
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
    cols = list(names) if names is not None else list(head or [])
    frame = pd.DataFrame(rows, columns=cols, dtype=str) if rows else pd.DataFrame(columns=cols)
    frame[LINE_COL] = np.asarray(lines, dtype=np.int64)
    return frame


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
        frame = read_json_lines(read_bytes(path), path, LINE_COL)
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
    # Parquet has no lines; numbering rows as if under a header (first row = 2)
    # still lets a user find a bad value.
    frame[LINE_COL] = np.arange(2, len(frame) + 2, dtype=np.int64)
    frame.attrs = {SOURCE_ATTR: str(path)}
    return frame


def _sniff(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in ("\t", ",", ";", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _require(frame: pd.DataFrame, path: str | Path, wanted: dict[str, str | None]) -> None:
    have = [c for c in frame.columns if c != LINE_COL]
    for role, col in wanted.items():
        if col is not None and col not in frame.columns:
            hint = (
                " (implicit feedback, clicks or purchases, needs a column of 1s)"
                if role == "rating"
                else ""
            )
            raise DataError(
                f"{role} column {col!r} not found; columns are: {', '.join(map(str, have))}" + hint,
                path=path,
                field=col,
            )


def _check_paths(**paths: object) -> None:
    """Each a file path (the first required): None or a number is refused by name, not
    met as os.fspath's TypeError."""
    for n, (what, value) in enumerate(paths.items()):
        if value is None and n:
            continue
        if not isinstance(value, str | os.PathLike) or not str(value).strip():
            raise ConfigError(f"{what}: expected a file path, got {value!r:.60}")


def load_table(
    interactions_path: str | Path,
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: str = "rating",
    timestamp_col: str | None = None,
    item_id_col: str | None = None,
    users_id_col: str | None = None,
    title_col: str | None = None,
    text_cols: Sequence[str] = (),
    genre_col: str | None = None,
    year_col: str | None = None,
    user_feature_cols: Sequence[str] = (),
    sep: str | None = None,
    rating_range: tuple[float, float] | None = None,
    name: str | None = None,
    text: ItemTextConfig | None = None,
) -> Dataset:
    """Load ratings (and optional item/user tables) from CSV, TSV, Parquet or JSON
    Lines files (any of them gzip, bzip2 or xz compressed).

    ``timestamp_col`` defaults to a column named ``timestamp`` where the file has one.
    ``item_id_col`` names the id column of the items file (default: ``item_col``),
    ``users_id_col`` that of the users file (default: ``user_col``).
    Its ``title``, ``year`` and ``genres`` (or ``genre``) columns are used without
    being named, and its ``text`` column is appended to the item text (as the HTTP
    API's ``text``); an items file with neither a title nor text columns is warned about.
    Without an items file the items are the distinct rated ids, titled by id.
    ``text_cols`` are copied to the items table and, unless ``text`` says
    otherwise, appended to the encoder text. ``user_feature_cols`` (default:
    every column but the id) are kept from the users file.
    """
    _check_paths(interactions_path=interactions_path, items_path=items_path, users_path=users_path)
    required = {"user_col": user_col, "item_col": item_col, "rating_col": rating_col}
    optional = {
        "timestamp_col": timestamp_col, "item_id_col": item_id_col,
        "users_id_col": users_id_col, "title_col": title_col, "genre_col": genre_col,
        "year_col": year_col,
    }  # fmt: skip
    for what, col in [*required.items(), *optional.items()]:
        if (col is not None or what in required) and not (isinstance(col, str) and col.strip()):
            raise ConfigError(f"{what}: expected a column name, got {col!r:.40}")
    if name is not None and not (isinstance(name, str) and name.strip()):
        raise ConfigError(f"name: expected the data set's name, got {name!r:.40}")
    for what, value in (("text_cols", text_cols), ("user_feature_cols", user_feature_cols)):
        if isinstance(value, (str, bytes)):  # read letter by letter it names no column
            raise ConfigError(f"{what}: expected a list of column names, got {value!r}; "
                              f"write [{value!r}]")  # fmt: skip
        # any collection of names (a tuple, a frame's columns), not a number or None
        if not isinstance(value, Collection) or not all(isinstance(c, str) for c in value):
            raise ConfigError(f"{what}: expected a list of column names, got {value!r:.60}")
    text_cols, user_feature_cols = tuple(text_cols), tuple(user_feature_cols)
    # ASCII only: pandas splits bytes, and an "é" is two of them in UTF-8 (its
    # ValueError said "> 1 char long"); a quote or a line end can separate nothing
    if sep is not None and not (
        isinstance(sep, str) and sep and sep.isascii() and not set(sep) & set('"\r\n')
    ):
        raise ConfigError(
            f"sep: expected a delimiter of ASCII characters such as ',' or '\\t' (no quote "
            f"or line end), got {sep!r:.20}"
        )
    if text is not None and not isinstance(text, ItemTextConfig):
        raise ConfigError(f"text: expected an ItemTextConfig, got {text!r:.60}")
    if rating_range is not None:
        rating_range = check_rating_range(rating_range, "rating_range")
    named = {
        "--user-col": user_col, "--item-col": item_col, "--rating-col": rating_col,
        "--timestamp-col": timestamp_col, "--items-id-col": item_id_col,
        "--users-id-col": users_id_col, "--title-col": title_col, "--genre-col": genre_col,
        "--year-col": year_col,
    }  # fmt: skip
    for flag, col in named.items():
        if col == LINE_COL:
            # read_table numbers the lines in this column, over the file's own: the
            # column named would be line numbers, or clash with them as two `_line`s
            raise ConfigError(
                f"{flag} {col!r}: metarec numbers each file's lines in a column of that "
                "name; rename the file's column"
            )
    for flag, cols in (("--text-cols", text_cols), ("--user-feature-cols", user_feature_cols)):
        for col in cols:
            if col.startswith("_"):
                # the tables leave such columns out as internal (_line): the column
                # named was then "not in the items table", or no feature without a word
                raise ConfigError(
                    f"{flag} {col!r}: names starting with '_' are metarec's internal "
                    "columns; rename the file's column"
                )
    users_id = users_id_col or user_col
    # the id column is renamed user_id: a feature of either name would be a second
    # user_id column in the users table
    for col in user_feature_cols:
        if col in (users_id, "user_id"):
            what = (
                "is the users file's id column"
                if col == users_id
                else f"the users' id is {users_id!r}, which takes the name user_id"
            )
            raise ConfigError(
                f"--user-feature-cols {col!r}: {what}; an id identifies a user, it does "
                "not describe one"
            )
    for flag, cols in (("--text-cols", text_cols), ("--user-feature-cols", user_feature_cols)):
        if len(set(cols)) < len(cols):
            twice = next(c for i, c in enumerate(cols) if c in cols[:i])
            raise ConfigError(f"{flag} {twice!r}: named twice")
    roles = {"--user-col": user_col, "--item-col": item_col, "--rating-col": rating_col}
    if timestamp_col:
        roles["--timestamp-col"] = timestamp_col
    seen: dict[str, str] = {}
    for flag, col in roles.items():
        if col in seen:  # one column cannot be two fields
            raise ConfigError(f"{flag} {col!r}: is also {seen[col]}; each names its own column")
        seen[col] = flag
    inter_raw = read_table(interactions_path, sep)
    if timestamp_col is None and "timestamp" in inter_raw.columns and "timestamp" not in seen:
        # read as the ids and the rating are, by its usual name: ignored, it let a
        # column of times go unread (and unchecked) without a word
        timestamp_col = "timestamp"
    _require(
        inter_raw,
        interactions_path,
        {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": timestamp_col},
    )
    check_single_ids(inter_raw, [user_col, item_col], interactions_path)
    renamed = {user_col: "user_id", item_col: "item_id", rating_col: "rating"}
    if timestamp_col:
        renamed[timestamp_col] = "timestamp"
    inter = inter_raw[[*renamed, LINE_COL]].rename(columns=renamed)
    interactions = finish_interactions(inter, interactions_path)
    interactions.attrs[COLUMNS_ATTR] = {new: old for old, new in renamed.items()}

    text = text or ItemTextConfig(extra=tuple(text_cols))
    if items_path is not None:
        items = _load_items(
            items_path,
            sep,
            item_id_col or item_col,
            title_col,
            year_col,
            genre_col,
            text_cols,
            text,
        )
    else:
        ids = pd.unique(interactions["item_id"].dropna())
        items = finish_items(pd.DataFrame({"item_id": ids, "title": ids}), None, text)

    users = None
    if users_path is not None:
        users_raw = read_table(users_path, sep)
        id_col = users_id
        _require(users_raw, users_path, {"user id": id_col})
        check_single_ids(users_raw, [id_col], users_path)
        feats = list(user_feature_cols) or [
            c for c in users_raw.columns if c not in (id_col, LINE_COL)
        ]
        if not user_feature_cols and "user_id" in feats:
            # the id is another column (--users-id-col): the file's own user_id is a
            # second id, near unique per user as zip_code is, that describes no one,
            # and its name is the chosen id's in the users table
            feats.remove("user_id")
            warnings.warn(
                f"{users_path}: its 'user_id' column is not used as a user feature: the "
                f"users' id is {id_col!r}",
                stacklevel=2,
            )
        for col in feats:
            _require(users_raw, users_path, {"user feature": col})
        frame = users_raw[[id_col, *feats, LINE_COL]].rename(columns={id_col: "user_id"})
        users = finish_users(frame, users_path, drop=())

    rr = rating_range or infer_rating_range(interactions["rating"])
    return Dataset(
        name=name or Path(interactions_path).stem,
        interactions=interactions,
        items=items,
        users=users,
        rating_range=(float(rr[0]), float(rr[1])),
    )


def _present(raw: pd.DataFrame, *names: str) -> str | None:
    """The first of ``names`` that ``raw`` has as a column (exactly as written)."""
    return next((n for n in names if n in raw.columns), None)


def _load_items(
    path: str | Path,
    sep: str | None,
    id_col: str,
    title_col: str | None,
    year_col: str | None,
    genre_col: str | None,
    text_cols: Sequence[str],
    text: ItemTextConfig,
) -> pd.DataFrame:
    raw = read_table(path, sep)
    # the conventional names are read without options, as user_id/item_id/rating are:
    # an items file with a `title` column whose titles went unused would leave every
    # new item to be scored from its id
    title_col = title_col or _present(raw, "title")
    year_col = year_col or _present(raw, "year")
    genre_col = genre_col or _present(raw, "genres", "genre")
    if title_col is None and not text_cols and "text" not in raw.columns:
        warnings.warn(
            f"{path}: no 'title' or 'text' column and no --title-col or --text-cols: items "
            "are known by their ids alone, so a new item has no text to be scored from",
            stacklevel=3,
        )
    wanted = {"item id": id_col, "title": title_col, "year": year_col, "genre": genre_col}
    _require(raw, path, wanted)
    check_single_ids(raw, [id_col], path)
    for col in text_cols:
        _require(raw, path, {"text": col})
    frame = pd.DataFrame({"item_id": raw[id_col], LINE_COL: raw[LINE_COL]})
    frame["title"] = raw[title_col] if title_col else raw[id_col]
    if year_col:
        frame["year"] = raw[year_col]
    if genre_col:
        frame["genres"] = normalise_genres(raw[genre_col])
    for col in text_cols:
        if col not in frame.columns:
            frame[col] = raw[col]
    if "text" in raw.columns and "text" not in frame.columns and "text" not in wanted.values():
        frame["text"] = raw["text"]  # item text unnamed, as the title is: see finish_items
    return finish_items(frame, path, text)

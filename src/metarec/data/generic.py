"""Tables of one's own (``load_table``), and the frame normalisation every loader
shares (``finish_interactions``, ``finish_items``, ``finish_users``).

Bad values are kept (as NaN or empty strings, their text in ``_raw_<column>``) for
:func:`metarec.data.cleaning.clean` to count and drop; reading the files is
:mod:`metarec.data.delimited`'s, timestamps :mod:`metarec.data.timestamps`'.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec.data.columns import (
    COLUMNS_ATTR,
    LINE_COL,
    RAW_PREFIX,
    SOURCE_ATTR,
    check_single_ids,
    check_single_values,
    missing_ids,
    numeric_with_raw,
    own_columns,
    reads_as_numbers,
    refuse_boolean_ratings,
    str_ids,
    text_values,
)
from metarec.data.compressed import data_stem, data_suffix
from metarec.data.delimited import no_header_hint, read_table
from metarec.data.jsonlines import JSON_LINES_SUFFIXES
from metarec.data.schema import Dataset
from metarec.data.text import (
    DEFAULT_TEMPLATE,
    ItemTextConfig,
    build_item_text,
    join_lists,
    lists_in_text,
    normalise_genres,
    template_fields,
    title_and_year,
)
from metarec.data.timestamps import read_timestamps
from metarec.data.users import ONE_FEATURE_VALUE, default_feature_columns
from metarec.errors import ConfigError, DataError, outside_metarec
from metarec.values import common_values, float32_decimal


def finish_interactions(frame: pd.DataFrame, source: str | Path | None) -> pd.DataFrame:
    """Normalise to ``user_id, item_id, rating, timestamp`` (+ internal columns)."""
    out = pd.DataFrame(index=frame.index)
    out["user_id"] = file_ids(frame["user_id"], source)
    out["item_id"] = file_ids(frame["item_id"], source)
    refuse_boolean_ratings(frame, source)
    rating, raw_rating = numeric_with_raw(_decimal_commas(frame["rating"], source), "rating")
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
    else:
        out["timestamp"], raw_ts = read_timestamps(frame["timestamp"], source)
    for raw in (raw_rating, raw_ts):
        if raw is not None:
            out[raw.name] = raw
    _carry_internal(frame, out, source)
    return out.reset_index(drop=True)


_WHOLE_NUMBER = r"[+-]?\d+(?:\.0+)?"


def file_ids(values: pd.Series, source: str | Path | None) -> pd.Series:
    """A file's id column as text ids (:func:`str_ids`). A text column whose ids are
    whole numbers, some written as floats ("10.0": pandas writes an id column so once it
    held a missing value), is read as those numbers, said in a warning, as a JSON or
    Parquet file's float ids are: the same catalogue as CSV kept "10.0" and as JSON
    Lines gave "10", so one of them matched no item of the other's items file."""
    ids = str_ids(values)
    known = ids.dropna()
    floated = known.str.endswith(".0")
    if not floated.any() or not known.str.fullmatch(_WHOLE_NUMBER).all():
        return ids
    first = str(known[floated].iloc[0])
    warnings.warn(
        f"{source or 'table'}: column {values.name!r} holds whole numbers written as floats "
        f"({first!r}); read as {first.split('.')[0].lstrip('+')!r} and so on, as the JSON "
        "Lines and Parquet readers read them",
        UserWarning,
        stacklevel=outside_metarec(),
    )
    return ids.str.replace(r"\.0+$", "", regex=True).str.lstrip("+")


_DECIMAL_COMMA = r"^\s*[+-]?\d+,\d+\s*$"


def _decimal_commas(values: pd.Series, source: str | Path | None) -> pd.Series:
    """Ratings written with a decimal comma ("4,5", as Excel writes them in the locales
    whose CSV is semicolon-separated) as numbers, said in a warning; a column that
    also holds a number with a decimal point is left as it is, for cleaning to name the
    values (a placeholder such as "k.A." has a point and says nothing of the column's
    decimals: it turned the comma reading off for every value)."""
    if values.dtype != object and not pd.api.types.is_string_dtype(values.dtype):
        return values
    text = text_values(values)
    comma = text.str.match(_DECIMAL_COMMA, na=False)
    pointed = text.str.contains(".", regex=False, na=False) & reads_as_numbers(text)
    if not comma.any() or pointed.any():
        return values
    warnings.warn(
        f"{source or 'interactions'}: {int(comma.sum()):,} rating(s) read with a decimal "
        f"comma ({text[comma].iloc[0].strip()!r} as "
        f"{text[comma].iloc[0].strip().replace(',', '.')})",
        UserWarning,
        stacklevel=outside_metarec(),
    )
    return text.where(~comma, text.str.replace(",", ".", regex=False))


def finish_items(
    frame: pd.DataFrame,
    source: str | Path | None,
    text: ItemTextConfig | None = None,
) -> pd.DataFrame:
    """Normalise to ``item_id, title, year, genres, text`` plus extra str columns.

    ``genres`` must already be ``|``-joined; ``year`` may be text or numbers.
    """
    out = pd.DataFrame(index=frame.index)
    out["item_id"] = file_ids(frame["item_id"], source)
    if "title" in frame.columns:
        out["title"] = text_values(join_lists(frame["title"], ", "))
    else:
        out["title"] = out["item_id"]
    year = read_years(frame, source) if "year" in frame.columns else pd.Series(np.nan, out.index)
    # "Toy Story (1995)" as MovieLens' own files are read: the year is the item's (a
    # P1 split's new items are found by it), and a year column beside it was written
    # twice into the text ("Toy Story (1995) (1995)"); a title whose year differs
    # from the column's is left whole
    out["title"], out["year"] = title_and_year(out["title"], year, str(source or "items"))
    out["genres"] = text_values(frame["genres"]) if "genres" in frame.columns else ""
    skip = {"item_id", "title", "year", "genres", "text"}
    for col in own_columns([c for c in frame.columns if c not in skip], source, "item columns"):
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


_YEAR_IN_TEXT = re.compile(r"(?<!\d)([12]\d{3})(?!\d)")


# a number this large in a year column is a Unix time (a news item's publication time),
# in seconds from 1973 on, or in milli-, micro- or nanoseconds (each 1,000 times more)
_EPOCH_SECONDS = 1e8
_EPOCH_SCALES = (1.0, 1e3, 1e6, 1e9)  # to seconds from s, ms, µs and ns


def read_years(frame: pd.DataFrame, source: str | Path | None) -> pd.Series:
    """The year column as numbers: a date's year where it holds dates ("1995-12-25",
    "Dec 1995") or Unix times (1704067200, in seconds or milliseconds, with a warning),
    NaN with a warning naming the first where it holds no year ("'95")."""
    values = frame["year"]
    years = pd.to_numeric(values, errors="coerce").astype("float64")
    years = _years_of_unix_times(frame, years, source)
    # 1995.5 was kept (its text said 1996), and 99999 was the newest year there is: the
    # item P1 took first for a new one, with no year in its text
    odd = years.notna() & ((years != np.floor(years)) | (years < 1) | (years > 9999))
    if odd.any():
        first = odd[odd].index[0]
        warnings.warn(
            f"{source or 'items'}: {int(odd.sum()):,} year(s) are no year, and those items "
            f"have none (e.g.{_line_of(frame, first)}: {years[first]:g}); write years as "
            "whole numbers from 1 to 9999",
            UserWarning,
            stacklevel=outside_metarec(),
        )
        years = years.where(~odd)
    text = text_values(values).str.strip()
    unread = years.isna() & text.ne("") & values.notna() & ~odd
    if not unread.any():
        return years
    found = text[unread].str.findall(_YEAR_IN_TEXT)
    one = found.map(len).eq(1)
    years[one[one].index] = found[one].str[0].astype("float64")
    left = one[~one].index
    if len(left):
        first = left[0]
        line = _line_of(frame, first)
        warnings.warn(
            f"{source or 'items'}: {len(left):,} year(s) hold no year, and those items "
            f"have none (e.g.{line}: {text[first]!r:.40}); write years as 1995",
            UserWarning,
            stacklevel=outside_metarec(),
        )
    return years


def _line_of(frame: pd.DataFrame, row: Any) -> str:
    """ " line N" for a warning about ``row``, where the frame knows its file lines."""
    return f" line {int(frame[LINE_COL][row])}" if LINE_COL in frame.columns else ""


def _years_of_unix_times(
    frame: pd.DataFrame, years: pd.Series, source: str | Path | None
) -> pd.Series:
    """``years`` with Unix times read as their (UTC) year, said in a warning: they were
    kept as years past 9999, which the item text leaves out without a word."""
    big = years >= _EPOCH_SECONDS
    if not big.any():
        return years
    seconds = pd.Series(np.nan, index=years.index)
    for scale in _EPOCH_SCALES:  # each unit's range: from 1973 to 5138 in that unit
        fits = big & (years >= _EPOCH_SECONDS * scale) & (years < _EPOCH_SECONDS * scale * 1e3)
        seconds[fits] = years[fits] / scale
    as_dates = pd.to_datetime(seconds[big], unit="s", errors="coerce", utc=True)
    years = years.copy()
    # past every unit (1e20): no year, which the caller then says of it
    years[big] = as_dates.dt.year.astype("float64")
    big &= years.notna()
    if not big.any():
        return years
    first = big[big].index[0]
    line = _line_of(frame, first)
    warnings.warn(
        f"{source or 'items'}: {int(big.sum()):,} year(s) are Unix times, read as their "
        f"year (e.g.{line}: {frame['year'][first]!r:.40} as {years[first]:.0f})",
        UserWarning,
        stacklevel=outside_metarec(),
    )
    return years


def finish_users(
    frame: pd.DataFrame,
    source: str | Path | None,
    drop: Sequence[str] = ("zip_code",),
) -> pd.DataFrame:
    """Normalise to ``user_id`` plus categorical feature columns as ``str``; a
    ``_`` column is left out with a warning, a list value refused (see
    :mod:`metarec.data.users`)."""
    out = pd.DataFrame(index=frame.index)
    out["user_id"] = file_ids(frame["user_id"], source)
    cols = [c for c in frame.columns if c != "user_id" and c not in drop]
    feats = own_columns(cols, source, "user features")
    check_single_values(frame, feats, source, ONE_FEATURE_VALUE)
    for col in feats:
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


def infer_rating_range(interactions: pd.DataFrame, items: pd.DataFrame) -> tuple[float, float]:
    """The (min, max) rating of the rows with both ids and an item of ``items``, or
    ``(1, 5)`` when nothing parses. The rows cleaning drops for a missing id or an
    unknown item are left out: 30 ratings of 6 for an unknown item made the scale 1-6
    for data rated 1-5 after cleaning, and the like threshold 4.75. So are the ratings of
    items with neither text nor title, which cleaning drops with their item. (A
    superseded duplicate still counts: which one cleaning keeps depends on the
    timestamps.)"""
    r = _kept_ratings(interactions, items)
    if not len(r):
        return (1.0, 5.0)
    for message in stray_extremes(r):
        warnings.warn(message, UserWarning, stacklevel=outside_metarec())
    return (float32_decimal(r.min()), float32_decimal(r.max()))


def scale_typos(interactions: pd.DataFrame, items: pd.DataFrame) -> list[str]:
    """What :func:`infer_rating_range` warns of, for ``data validate`` to list as
    problems: it said "ok" beside a scale of 1-99 read from one typo."""
    return stray_extremes(_kept_ratings(interactions, items))


def _kept_ratings(interactions: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
    """The finite ratings of the rows cleaning keeps (:func:`infer_rating_range`)."""
    kept = (
        ~missing_ids(interactions["user_id"])
        & ~missing_ids(interactions["item_id"])
        & interactions["item_id"].isin(items["item_id"][_has_words(items)].dropna())
    )
    r = pd.to_numeric(interactions["rating"][kept], errors="coerce")
    values = r.to_numpy(dtype="float64", na_value=np.nan)
    return values[np.isfinite(values)]


def _has_words(items: pd.DataFrame) -> pd.Series:
    """Items with a text or a title: those cleaning keeps at its default of one
    character (``metarec.data.cleaning``'s ``min_text_chars``)."""

    def filled(col: str) -> pd.Series:
        if col not in items.columns:
            return pd.Series(False, index=items.index)
        values = items[col]
        return values.notna() & values.astype(str).str.strip().ne("")

    return filled("text") | filled("title")


def stray_extremes(values: np.ndarray) -> list[str]:
    """A scale read from the data takes a typo for its end: one 99 among 1-5 ratings
    makes the scale 1-99, so nothing is refused and every metric is scaled wrong. Said
    (one message an end) when an end value is rare (under 1 % of ratings) and farther
    from the next value than three times the span of the rest, or, where the rest is a
    scale of 4 to 11 evenly spaced levels, farther than its step (a 10 or a 7 among 1-5
    stars; levels with gaps, such as implicit weights 1, 2 and 5, stay quiet). Whether
    the rest is such a scale is judged on its common values (each over 0.1 % of the
    ratings): a lone 4.5 among whole stars hid a 7 from ``data validate``, which then
    said "ok" to data that ``train`` refused."""
    levels, counts = np.unique(values, return_counts=True)
    if len(levels) < 3:
        return []
    common = common_values(counts)
    said = []
    for end, nxt, far, count, rest in (
        (levels[-1], levels[-2], levels[0], counts[-1], levels[:-1][common[:-1]]),
        (levels[0], levels[1], levels[-1], counts[0], levels[1:][common[1:]]),
    ):
        gap, steps = abs(end - nxt), np.diff(rest)
        # a scale: a few evenly spaced levels (1-5 stars, 0.5 to 5 in halves); counts and
        # weights, whose top values spread out, are not one
        scale = 4 <= len(rest) <= 11 and float(np.ptp(steps)) <= 1e-9 * float(steps.max())
        past_scale = scale and gap > 1.001 * float(steps.max())
        if count < 0.01 * len(values) and (gap > 3 * abs(nxt - far) or past_scale):
            said.append(
                f"rating scale read from the data as [{levels[0]:g}, {levels[-1]:g}], but "
                f"{count:,} rating(s) of {end:g} stand far from the others "
                f"({min(far, nxt):g} to {max(far, nxt):g}); if that is a typo, give the scale "
                "(--rating-range LOW,HIGH, or rating_range=) and those rows are dropped"
            )
    return said


# --------------------------------------------------------------------------- reading


_SEPARATORS = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}


def _require(frame: pd.DataFrame, path: str | Path, wanted: dict[str, str | None]) -> None:
    have = [c for c in frame.columns if c != LINE_COL]
    for role, col in wanted.items():
        if col is not None and col not in frame.columns:
            hint = (
                " (implicit feedback, clicks or purchases, needs a column of 1s)"
                if role == "rating"
                else ""
            )
            by_name = data_suffix(Path(path)) in (".tsv", ".tab")  # else the separator was found
            seps = [n for c, n in _SEPARATORS.items() if len(have) == 1 and c in str(have[0])]
            if by_name and seps:  # a comma file named .tsv: its header read as one column
                hint += (
                    f" (the header was read as one column: the file looks {seps[0]}-separated "
                    "but its name says tab-separated; named .csv, or with no known ending, "
                    "its separator is found from its header)"
                )
            # a Parquet or JSON file's names are its columns' own: no header line to miss
            texts = data_suffix(Path(path)) not in (".parquet", ".pq", *JSON_LINES_SUFFIXES)
            hint += _layout_hint([str(c) for c in have], col, header_line=texts)
            raise DataError(
                # repr: "user_id,  item_id" hid the space that made ' item_id' no match
                f"{role} column {col!r} not found; columns are: {', '.join(map(repr, have))}"
                + hint,
                path=path,
                field=col,
            )


def _layout_hint(have: list[str], col: str, *, header_line: bool = True) -> str:
    """Why ``col`` is not among the header's names ``have``, where the header shows a
    cause: a layout metarec's readers do not take, a file without a header, or a name
    that differs only in letter case or spaces. Empty where none shows."""
    if len(have) == 1 and "::" in have[0]:
        return (
            " — its fields are separated by '::', as in MovieLens 1M's .dat files: read "
            "MovieLens' own files with --dataset ml-1m --data FOLDER (load_dataset in "
            "Python); metarec's files are tab-, comma-, semicolon- or pipe-separated"
        )
    if any(c.split(":", 1)[0] == col and ":" in c for c in have):
        return (
            " — a RecBole atomic file ('user_id:token'): give the folder holding its .inter "
            "and .item files with --data and the data set's name with --dataset "
            "(load_dataset in Python)"
        )
    headless = no_header_hint(have) if header_line else None
    if headless:
        return headless
    spaced = [c for c in have if c.strip() == col]
    if spaced:
        return (
            f" — {spaced[0]!r} has spaces around its name: are the fields separated by "
            "', '? Separate them by the comma alone"
        )
    cased = [c for c in have if c.strip().lower() == col.lower()]
    if cased:
        return f" — names are matched exactly: did you mean {cased[0]!r}?"
    return ""


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
    if items_path is None:
        # without it the items are the rated ids, titled by id: the text columns were then
        # "not in the items table", a table the user never gave. The other item columns
        # are read from nowhere: said, not refused, as a saved run's spec or a config
        # shared between data sets may name them and loaded before
        if text_cols:
            raise ConfigError(
                f"--text-cols {','.join(text_cols)}: names columns of the items file, and "
                "none was given (--items FILE, or items_path=)"
            )
        unread = [f"{flag} {col}" for flag, col in (
            ("--title-col", title_col), ("--genre-col", genre_col), ("--year-col", year_col),
            ("--items-id-col", item_id_col)) if col]  # fmt: skip
    if users_path is None:
        # read from nowhere, as the items file's flags are: features are refused as
        # --text-cols are (they name what the model is to read), the id column said
        if user_feature_cols:
            raise ConfigError(
                f"--user-feature-cols {','.join(user_feature_cols)}: names columns of the "
                "users file, and none was given (--users FILE, or users_path=)"
            )
        if users_id_col:
            warnings.warn(
                f"--users-id-col {users_id_col}: names a column of the users file, and none "
                "was given (--users FILE, or users_path=)",
                UserWarning,
                stacklevel=outside_metarec(),
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
    if timestamp_col is None and "timestamp" not in seen:
        # read as the ids and the rating are, by its usual name: ignored, it let a
        # column of times go unread (and unchecked) without a word, and so does a
        # name that differs from it in case or spaces (refused: every time-ordered
        # step fell back to random order)
        timestamp_col = _present(
            inter_raw, interactions_path, "--timestamp-col", "timestamp", named=seen
        )
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

    # a layout the data options cannot say is not recorded with the runs trained on it
    own_text = None if text is None or _said_by_options(text, text_cols) else text
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
        # as an items file without a text column is, in one warning with the item-file
        # flags given that it leaves unread
        unread_flags = f"; {', '.join(unread)}: name(s) columns of such a file" if unread else ""
        warnings.warn(
            f"{interactions_path}: no items file (--items FILE, or items_path=): items are "
            "known by their ids alone, so the encoder reads ids as text and a new item "
            f"has no text to be scored from{unread_flags}",
            UserWarning,
            stacklevel=outside_metarec(),
        )
        ids = pd.unique(interactions["item_id"].dropna())
        items = finish_items(pd.DataFrame({"item_id": ids, "title": ids}), None, text)

    users = None
    if users_path is not None:
        users_raw = read_table(users_path, sep)
        id_col = users_id
        _require(users_raw, users_path, {"user id": id_col})
        check_single_ids(users_raw, [id_col], users_path)
        feats = list(user_feature_cols) or default_feature_columns(
            users_raw.columns, id_col, users_path
        )
        if not user_feature_cols and "user_id" in feats:
            # the id is another column (--users-id-col): the file's own user_id is a
            # second id, near unique per user as zip_code is, that describes no one,
            # and its name is the chosen id's in the users table
            feats.remove("user_id")
            warnings.warn(
                f"{users_path}: its 'user_id' column is not used as a user feature: the "
                f"users' id is {id_col!r}",
                stacklevel=outside_metarec(),
            )
        for col in feats:
            _require(users_raw, users_path, {"user feature": col})
        frame = users_raw[[id_col, *feats, LINE_COL]].rename(columns={id_col: "user_id"})
        users = finish_users(frame, users_path, drop=())

    rr = rating_range or infer_rating_range(interactions, items)
    options = {
        "interactions": interactions_path, "items": items_path, "users": users_path,
        "user_col": user_col, "item_col": item_col, "rating_col": rating_col,
        "timestamp_col": timestamp_col, "item_id_col": item_id_col,
        "users_id_col": users_id_col, "title_col": title_col, "genre_col": genre_col,
        "year_col": year_col, "text_cols": text_cols, "user_feature_cols": user_feature_cols,
        "rating_range": rating_range,
        "text_template": None if text.template == DEFAULT_TEMPLATE else text.template,
    }  # fmt: skip
    return Dataset(
        name=name or data_stem(Path(interactions_path)),
        interactions=interactions,
        items=items,
        users=users,
        rating_range=(float(rr[0]), float(rr[1])),
        spec=None if own_text is not None or sep is not None else _spec_of(options),
    )


def _said_by_options(text: ItemTextConfig, text_cols: Sequence[str]) -> bool:
    """Whether ``text`` is a layout the data options say (``--text-template`` over
    ``--text-cols``): not one with fields switched off or other extra columns, nor one
    that places ``{text}`` (a new item's ``text`` is its whole text)."""
    said = ItemTextConfig(template=text.template, extra=tuple(text_cols))
    return replace(text, extra=tuple(text.extra)) == said and (
        "text" not in template_fields(text.template)
    )


def _spec_of(options: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`load_table`'s options as the spec `metarec train` records for the same
    files (None if a column name holds the comma that separates names there)."""
    from metarec.data.spec import make_spec

    lists = ("text_cols", "user_feature_cols")
    if any("," in c for key in lists for c in options[key]):
        return None
    rr = options["rating_range"]
    return make_spec(
        {
            **options,
            **{key: ",".join(options[key]) or None for key in lists},
            "rating_range": None if rr is None else f"{float(rr[0])!r},{float(rr[1])!r}",
        }
    )


def _present(
    raw: pd.DataFrame, path: str | Path, flag: str, *names: str, named: Iterable[object] = ()
) -> str | None:
    """The first of ``names`` that ``raw`` has as a column (exactly as written), or None.
    A column that differs from one only in letter case or spaces (``Title``, `` title``)
    is warned of: left unread without a word, the titles went unused and every item was
    encoded from its id. Warned, not refused: it may be another column (a review's
    ``Text``), and runs recorded such files' options as they were. Columns the
    caller's options name (``named``) are theirs, not near misses."""
    exact = next((n for n in names if n in raw.columns), None)
    if exact is not None:
        return exact
    taken = set(named)
    have = [str(c) for c in raw.columns if c != LINE_COL and c not in taken]
    for name in names:
        near = next((c for c in have if c.strip().lower() == name), None)
        if near is None:
            continue
        spaced = " (are the fields separated by ', '? separate them by the comma alone)"
        warnings.warn(
            f"{path}: column {near!r} is not read as {name!r}, as names are matched "
            f"exactly: to read it so, rename it {name!r} or give {flag} {near.strip()!r}"
            + (spaced if near != near.strip() else ""),
            stacklevel=outside_metarec(),
        )
    return None


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
    named = {id_col, title_col, year_col, genre_col, *text_cols}
    title_col = title_col or _present(raw, path, "--title-col", "title", named=named)
    year_col = year_col or _present(raw, path, "--year-col", "year", named=named)
    genre_col = genre_col or _present(raw, path, "--genre-col", "genres", "genre", named=named)
    has_text = _present(raw, path, "--text-cols", "text", named=named) is not None
    if title_col is None and not text_cols and not has_text:
        warnings.warn(
            f"{path}: no 'title' or 'text' column and no --title-col or --text-cols: items "
            "are known by their ids alone, so a new item has no text to be scored from",
            stacklevel=outside_metarec(),
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
        frame["genres"] = normalise_genres(lists_in_text(raw[genre_col]))
    for col in text_cols:
        if col not in frame.columns:
            frame[col] = lists_in_text(raw[col])
    if "text" in raw.columns and "text" not in frame.columns and "text" not in wanted.values():
        # item text unnamed, as the title is: see finish_items
        frame["text"] = lists_in_text(raw["text"])
    return finish_items(frame, path, text)

"""Timestamps as seconds since 1970, from whatever a table holds: epoch seconds or a
finer unit, datetimes, or dates written as text (day or month first, never a mix).

A value that is no time (a bare clock time, a date without its year, a placeholder
such as 9999-12-31, a number past the year 9999) is kept with its text, for
cleaning to name; :func:`timestamp_problem` says why.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

try:  # public since pandas 2.2; the project takes pandas >= 2.0
    from pandas.tseries.api import guess_datetime_format
except ImportError:  # pragma: no cover - older pandas
    from pandas._libs.tslibs.parsing import guess_datetime_format

from metarec.data.columns import (
    RAW_PREFIX,
    boolean_values,
    numeric_with_raw,
    reads_as_number,
    reads_as_numbers,
    text_values,
)
from metarec.errors import DataError, outside_metarec


def read_timestamps(
    values: pd.Series, source: str | Path | None
) -> tuple[pd.Series, pd.Series | None]:
    """Seconds since 1970 for a column of timestamps, and the text of those that are
    no time (None when every value is one)."""
    # read as numbers, True was 1970-01-01T00:00:01 and a duration its nanoseconds
    # (a day, 86,400,000 s "since 1970" after a warning about milliseconds)
    flags = boolean_values(values)
    if pd.api.types.is_timedelta64_dtype(values.dtype) or flags.any():
        what = "durations" if not flags.any() else "booleans"
        raise DataError(
            f"column 'timestamp' holds {what} ({values.dtype}), not times; give dates, "
            "or seconds since 1970, or leave the column out",
            path=source,
        )
    if is_datetimes(values):
        return datetime_seconds(values), None
    ts, raw_ts = numeric_with_raw(values, "timestamp")
    # past year 9999 even as nanoseconds: no time in any unit, and it would sway the
    # guess of the column's unit; then past it in the unit guessed. Kept with its
    # text so cleaning names it, as an unusable rating is
    ts, raw_ts = _beyond(ts, raw_ts, values, MAX_EPOCH_S * 1e9)
    read = ts
    ts = _epoch_seconds(ts, source)
    ts, raw_ts = _beyond(ts, raw_ts, values, MAX_EPOCH_S)
    if ts is not read:  # scaled from a finer unit: values of a coarser one stand out
        ts, raw_ts = _off_unit(ts, raw_ts, values)
    if raw_ts is not None:
        ts, raw_ts = _datetimes_as_seconds(values, ts, raw_ts, source)
    _warn_of_zeros(ts, source)
    return ts, raw_ts


# a column whose middle time is past this (1973) is a clock's, not offsets from the
# data's own start, which begin at 0
_CLOCK_TIMES_FROM = 1e8


def _warn_of_zeros(ts: pd.Series, source: str | Path | None) -> None:
    """Warn of 0s among times of a clock: what many exports write for "no time", read
    as 1970-01-01, they sort before every other rating of their user. Kept, not set
    aside: a column of offsets from the data's start holds a real 0."""
    zero = ts == 0
    if not zero.any():
        return
    others = ts[ts.notna() & ~zero].to_numpy(dtype=np.float64)
    if not len(others) or float(np.median(others)) < _CLOCK_TIMES_FROM:
        return
    year = pd.Timestamp(float(np.median(others)), unit="s").year
    warnings.warn(
        f"{source or 'interactions'}: {int(zero.sum()):,} timestamp(s) are 0 (1970-01-01) "
        f"beside times around {year}: read as that time, they come before every other "
        "rating of their user; if 0 stands for no time, leave those cells empty",
        stacklevel=outside_metarec(),
    )


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
    if reads_as_number(text):
        if abs(float(text)) > MAX_EPOCH_S * 1e9:
            return "is past the year 9999"
        # past 9999 in the column's unit, or a unit below it (see _off_unit)
        return "is in another unit than the column's other timestamps"
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
    return _set_aside(ts, raw, values, ts.notna() & ~(ts.abs() <= limit))


def _set_aside(
    ts: pd.Series, raw: pd.Series | None, values: pd.Series, unusable: pd.Series
) -> tuple[pd.Series, pd.Series | None]:
    """``ts`` unknown where ``unusable``, those values' text joining ``raw`` (for cleaning
    to name)."""
    if not unusable.any():
        return ts, raw
    text = text_values(values).where(unusable, None)
    raw = (text if raw is None else raw.fillna(text)).rename(f"{RAW_PREFIX}timestamp")
    return ts.where(~unusable), raw


def _off_unit(
    ts: pd.Series, raw: pd.Series | None, values: pd.Series
) -> tuple[pd.Series, pd.Series | None]:
    """``ts`` (seconds, scaled from a finer unit) without the positive values a hundred
    times or more below the column's median, which join ``raw`` as their text: seconds
    among milliseconds, scaled with the rest, fell in January 1970 and sorted before
    every other rating. Ratings of one catalogue span decades, not a factor of a
    hundred in time since 1970 (1.6e7 s is July 1970 beside a median in 2020). Only a
    column read in a finer unit is checked (see read_timestamps): a column of seconds
    may hold ordinals (1, 2, 3, ...) or offsets from the data's own start, which span
    every scale; a 0 (often "no time") is left alone."""
    positive = ts.notna() & (ts > 0)
    if not positive.any():
        return ts, raw
    typical = float(np.median(ts[positive].to_numpy(dtype=np.float64)))
    return _set_aside(ts, raw, values, positive & (ts * 100 <= typical))


def _epoch_seconds(ts: pd.Series, source: str | Path | None) -> pd.Series:
    """Numeric timestamps in seconds: a column of epoch milliseconds (JavaScript's,
    Kafka's), micro- or nanoseconds is scaled, and the loader says so."""
    if not ts.notna().any():
        return ts
    values = ts.to_numpy(dtype=np.float64)
    typical = float(np.nanmedian(np.abs(values)))
    for above, per_second, unit in _EPOCH_UNITS:
        if typical >= above:
            # the year of the signed median: a column before 1970 said a year far ahead
            year = 1970 + float(np.nanmedian(values)) / 31_557_600
            warnings.warn(
                f"{source or 'interactions'}: timestamps read as {unit} since 1970 (as seconds "
                f"they would fall in the year {year:,.0f})",
                stacklevel=5,
            )
            return ts / per_second
    known = ts.dropna().to_numpy(dtype=np.float64)
    if len(known) and ((known >= 1800) & (known <= 2100) & (known == np.round(known))).all():
        # read as seconds, every one falls in the first 35 minutes of 1970: the order
        # holds (what P2's supports and the feedback loop read) but ties within a year,
        # and beside the service's real times every rating predates all feedback
        warnings.warn(
            f"{source or 'interactions'}: every timestamp is a whole number from 1800 to "
            f"2100 ({int(known[0])}, ...): read as seconds since 1970, not as years; if "
            "they are years, give dates (2019-01-01) or times in seconds",
            stacklevel=5,
        )
    elif len(known) and _compact_dates(known).all():
        # as seconds they fall within 1970's first year, in order only within a month
        warnings.warn(
            f"{source or 'interactions'}: every timestamp is a whole number of eight digits "
            f"that reads as a date ({int(known[0])}, ...): read as seconds since 1970, not "
            "as dates written YYYYMMDD; if they are dates, write them as 2019-01-31",
            stacklevel=5,
        )
    return ts


def _compact_dates(values: np.ndarray) -> np.ndarray:
    """Which of ``values`` read as dates written YYYYMMDD from 1800 to 2100."""
    whole = (values == np.round(values)) & (values >= 18000101) & (values <= 21001231)
    month, day = (values // 100) % 100, values % 100
    return whole & (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)


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
            stacklevel=6,
        )
    return bool(days_first.any())


def _datetimes_as_seconds(
    values: pd.Series, num: pd.Series, raw: pd.Series, source: str | Path | None
) -> tuple[pd.Series, pd.Series | None]:
    # Timestamps given as dates ("2020-01-31 12:00") are common in exported tables.
    # A number set aside (past 9999, or in another unit) is no date: to_datetime read
    # 1.5e9 as nanoseconds, 1.5 s after 1970
    if pd.api.types.is_numeric_dtype(values.dtype):
        return num, raw
    unread = num.isna() & values.notna()
    unread[unread] = ~reads_as_numbers(text_values(values[unread]))
    text = values.where(unread)
    as_text = text.astype(str)
    # day first applies to the numeric dates only: with it, dateutil reads an ISO
    # 2020-01-05 as the 1st of May
    numeric = as_text.str.match(_NUMERIC_DATE) & text.notna()
    # dateutil fills what a value lacks from the clock at loading ("10:30" is today,
    # "now" is now) or from year 1 ("June 5"): a time that moves with every run, or
    # that sorts before all others. A date must name its year.
    text = text.where(numeric | as_text.str.contains(_YEAR))
    text = text.where(~as_text.str.strip().str.lower().isin(_CLOCK_WORDS))
    parsed = _parse_dates(text.where(~numeric), day_first=False)
    if numeric.any():
        parsed[numeric] = _parse_dates(text[numeric], day_first=_day_first(text, source))
    parsed = parsed.where(~parsed.dt.year.isin(_PLACEHOLDER_YEARS))
    ok = parsed.notna()
    if not ok.any():
        return num, raw
    seconds = epoch_seconds(parsed[ok])
    num = num.copy()
    num[ok] = seconds.astype("float64")
    raw = raw.where(~ok, None)
    return num, (raw if raw.notna().any() else None)


def _parse_dates(text: pd.Series, day_first: bool) -> pd.Series:
    """``text`` as UTC datetimes, NaT where it is no date.

    An exported column is written in one format, which pandas reads in C once it is
    named; ``format="mixed"`` hands every value to dateutil, 13 s for ml-100k's
    100,000 dates. The format is guessed from the first date, and the values it
    does not fit (a column of several formats) are read one by one as before.
    """
    known = text.dropna()
    guessed = guess_datetime_format(str(known.iloc[0]), dayfirst=day_first) if len(known) else None
    if guessed is None:
        return pd.to_datetime(text, errors="coerce", utc=True, format="mixed", dayfirst=day_first)
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format=guessed)
    rest = parsed.isna() & text.notna()
    if rest.any():
        parsed[rest] = pd.to_datetime(
            text[rest], errors="coerce", utc=True, format="mixed", dayfirst=day_first
        )
    return parsed

"""The internal columns every loaded frame carries, and reading a column's values.

Every frame carries an internal ``_line`` column (1-based source line, header =
line 1) and ``frame.attrs["source"]`` (the file path) so cleaning can name where a
bad value came from; a value that does not parse keeps its text in
``_raw_<column>``. Cleaning removes the internal ``_``-prefixed columns.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec.data.text import (
    LIST_TYPES,
    blank,
    is_mixed,
)
from metarec.errors import DataError

SOURCE_ATTR = "source"
# frame.attrs[COLUMNS_ATTR]: internal column name -> the file's, for messages that
# name a field ("score", not "rating")
COLUMNS_ATTR = "columns"
LINE_COL = "_line"
RAW_PREFIX = "_raw_"  # _raw_<col>: source text of values that did not parse


def check_frame(frame: object, where: str, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` if it is a DataFrame holding ``columns``, else a DataError naming
    ``where``."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(
            f"{where}: expected a DataFrame of {', '.join(columns)}; got {type(frame).__name__}"
        )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}")
    return frame


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds, which messages show plainly (its
    repr would say np.int64(1))."""
    return value.item() if isinstance(value, np.generic) else value


def not_index(numbers: np.ndarray, stop: float | np.ndarray = np.inf) -> np.ndarray:
    """Where ``numbers`` (floats) hold no index in [0, ``stop``): NaN, infinity, a
    fraction (int() cut 1.9 to 1), a negative (-1 wrapped to the last row) or one at or
    past ``stop`` (torch's IndexError)."""
    whole = np.isfinite(numbers) & (numbers == np.round(numbers))
    return ~whole | (numbers < 0) | (numbers >= stop)


def boolean_values(values: pd.Series) -> np.ndarray:
    """Where ``values`` holds True or False (a bool column, or a stray one in a column of
    mixed values): 1.0 and 0.0 to pandas' number readers, a flag where a rating belongs."""
    if values.dtype == object:
        return values.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
    return np.full(len(values), pd.api.types.is_bool_dtype(values.dtype))


def exact_integers(column: pd.Series, values: Callable[[], Sequence[Any]]) -> pd.Series:
    """``column`` as read, unless it is a column of integers made float by a missing
    value (pandas' way) and one of them is past 2^53, where a float holds no exact
    integer: then ``values()`` (the column's own Python values, read only then) as
    nullable integers, or as objects past int64. Ids of 19 digits were rounded there,
    and users 788 and 789 became one user whose id was in no file."""
    # as float64: float16's 2^53 is inf, and the cast said "overflow" to the user
    if (
        not pd.api.types.is_float_dtype(column.dtype)
        or not (column.astype("float64").abs() >= 2.0**53).any()
    ):
        return column
    exact = list(values())
    known = [v for v in exact if v is not None]
    ints = [v for v in known if isinstance(v, int) and not isinstance(v, bool)]
    if not any(abs(v) >= 2**53 for v in ints):
        return column  # floats of their own (1e20), not integers made float
    if len(ints) == len(known) and all(-(2**63) <= v < 2**63 for v in ints):
        return pd.Series(pd.array(exact, dtype="Int64"), index=column.index)
    # big integers beside floats (a 2.0 among them) were left rounded: users
    # 9007199254740993 and ...992 became one without a word. Each value is kept as
    # given, a whole float as the integer it is (2.0 is id "2", as str_ids writes it)
    kept = [int(v) if isinstance(v, float) and v.is_integer() else v for v in exact]
    return pd.Series(kept, index=column.index, dtype=object)


def refuse_boolean_ratings(frame: pd.DataFrame, source: str | Path | None) -> None:
    """A DataError for True or False in ``frame``'s rating column, at the first one's
    line (a file's) or row (a frame built in memory): read as the numbers 1 and 0, a
    True was kept as a rating of 1 and a False dropped as outside the scale, where
    every other reader of ratings (Recommender, training) refuses a boolean."""
    column = frame["rating"]
    kind = pd.api.types
    if kind.is_datetime64_any_dtype(column) or kind.is_timedelta64_dtype(column):
        # read as nanoseconds, a date column taken for ratings was "implicit feedback,
        # every rating 1.58e+15" and no problem found
        raise DataError(
            f"column 'rating' holds dates or times ({column.dtype}), not ratings; "
            "is another column the rating (--rating-col)?",
            path=source,
        )
    if kind.is_complex_dtype(column):  # kept as their real part, with numpy's warning
        raise DataError(
            f"column 'rating' holds complex numbers ({column.dtype}), not ratings", path=source
        )
    flags = boolean_values(column)
    if not flags.any():
        return
    row = int(np.flatnonzero(flags)[0])
    value = plain(column.iloc[row])
    fix = "not ratings; give them as numbers (1 for a click or a like, for implicit feedback)"
    if LINE_COL in frame.columns:
        line = int(frame[LINE_COL].iloc[row])
        raise DataError(f"column 'rating' holds booleans ({value!r}), {fix}", path=source, row=line)
    raise DataError(
        f"interactions table: column 'rating' holds booleans (row {row}: {value!r}), {fix}",
        path=source,
    )


def missing_ids(values: pd.Series) -> pd.Series:
    """Where an id column holds no id: missing, or only spaces (a CSV's empty field)."""
    return blank(values)


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
    # JSON's 1.0 beside a text id ("u2") left the column objects, where 1.0 became "1.0"
    # and 1 "1": one user became two. A column of text alone (every file's ids) is told
    # by pandas' C-level inference, not a Python pass over a million rows
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) != "string":
        floats = values.map(lambda v: isinstance(v, (float, np.floating)))
        if floats.any():
            values = values.copy()
            values[floats] = str_ids(values[floats].astype(np.float64))
    out = values.astype(str)
    return out if bool(mask.all()) else out.where(mask)


def number_lines(frame: pd.DataFrame, lines: np.ndarray, source: str | Path) -> None:
    """Put each row's source line in ``frame[LINE_COL]``. A file's own column of that
    name is replaced, with a warning naming the file: it could hold anything, and
    cleaning's messages must point at the lines the rows are on."""
    if LINE_COL in frame.columns:
        warnings.warn(
            f"{source}: column {LINE_COL!r} not used: metarec numbers each row's line in a "
            "column of that name (names starting with '_' are its internal columns); "
            "rename the file's column to use it",
            stacklevel=4,
        )
    frame[LINE_COL] = np.asarray(lines, dtype=np.int64)


def own_columns(cols: Sequence[Any], source: str | Path | None, used_as: str) -> list[Any]:
    """``cols`` less the internal ones: ``_line`` without a word (a file's own was
    warned about where it was read, see :func:`number_lines`), any other name that
    starts with ``_`` (a file's own column) with a warning naming the file and the
    columns. The prefix is the internal columns' (cleaning removes them by it), so such
    a column would be dropped there anyway; left out here, the user is told, and
    renaming the column keeps it."""
    internal = [c for c in cols if str(c).startswith("_")]
    own = [c for c in internal if c != LINE_COL]
    if own:
        warnings.warn(
            f"{source or 'table'}: column(s) {', '.join(repr(str(c)) for c in own)} not "
            f"used as {used_as}: names starting with '_' are metarec's internal columns; "
            "rename them to use them",
            stacklevel=4,
        )
    return [c for c in cols if c not in internal]


def check_single_ids(frame: pd.DataFrame, cols: Sequence[str], source: str | Path | None) -> None:
    """Refuse, by column and row, an id that holds several values (a Parquet list
    column): as the text "[1]" it was an id no rating or request would match."""
    check_single_values(frame, cols, source, "an id is one number or text")
    for col in cols:
        values = frame[col]
        kind = pd.api.types.infer_dtype(values, skipna=True) if values.dtype == object else ""
        if not (pd.api.types.is_bool_dtype(values.dtype) or kind == "boolean" or "mixed" in kind):
            continue
        # a flag column taken for ids: users "True" and "False" (a missing id stays
        # cleaning's to name)
        flags = boolean_values(values) & values.notna().to_numpy()
        if flags.any():
            i = int(np.flatnonzero(flags)[0])
            line = int(frame[LINE_COL].iloc[i]) if LINE_COL in frame.columns else None
            raise DataError(
                ("" if line is not None else f"row {i}: ")
                + f"{col} {plain(values.iloc[i])!r} is a boolean; an id is one number or text "
                "(is another column the id?)",
                path=source,
                row=line,
                field=col,
            )


def check_single_values(
    frame: pd.DataFrame, cols: Sequence[str], source: str | Path | None, expected: str
) -> None:
    """Refuse, by column and row, the first value of ``cols`` that holds several (a
    list, a Parquet list column's array, a JSON array or object); ``expected`` says
    what one value is there."""
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
            ("" if line is not None else f"row {i}: ")
            + f"{col} {shown!r:.80} holds several values; {expected}",
            path=source,
            row=line,
            field=col,
        )


def text_values(values: pd.Series) -> pd.Series:
    """Free text as ``str``, missing as empty string."""
    return values.astype(object).where(values.notna(), "").astype(str)


def reads_as_number(text: str) -> bool:
    """Whether :func:`numeric_with_raw` reads ``text`` as a number (inf included):
    float() also takes "NaN", "1_0" and full-width digits, which pandas does not."""
    return bool(reads_as_numbers(pd.Series([text])).iloc[0])


def reads_as_numbers(texts: pd.Series) -> pd.Series:
    """:func:`reads_as_number` for a whole column at once: a million dated ratings
    took a minute and a half one value at a time."""
    return pd.to_numeric(texts, errors="coerce").notna()


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


def repeated_rating(
    frame: pd.DataFrame, *, positions: bool = False
) -> tuple[str, str, list[Any]] | None:
    """The first user and item ``frame`` rates more than once (ids compared as text, as
    they resolve) and the labels of its first two rows (their positions, counting from
    0, with ``positions``: a frame joined without ``ignore_index`` has labels "0 and
    0"), or None: which of them counts is a matter of row order, which says nothing."""
    pair = frame[["user_id", "item_id"]].astype(str)
    twice = pair.duplicated(keep=False).to_numpy()
    if not twice.any():
        return None
    user, item = pair[twice].iloc[0]
    same = ((pair["user_id"] == user) & (pair["item_id"] == item)).to_numpy()
    if positions:
        return user, item, [int(r) for r in np.flatnonzero(same)[:2]]
    return user, item, [plain(r) for r in frame.index[same][:2]]

"""Dropping bad values, with a report of what went and why.

Loaders raise on broken *structure*; bad *values* reach this module, which
drops them and counts each reason in a :class:`CleaningReport` — or, with
``strict=True``, raises :class:`DataError` naming the file and line of the first
one. :func:`validate` runs the same checks and only describes what it finds.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    missing_ids,
    numeric_with_raw,
    plain,
    reads_as_number,
    refuse_boolean_ratings,
    str_ids,
)
from metarec.data.generic import check_rating_range
from metarec.data.schema import ITEMS_TABLE, CleaningReport, Dataset, check_table
from metarec.data.text import build_item_text, ids_for_titles
from metarec.data.timestamps import read_timestamps, timestamp_problem
from metarec.errors import ConfigError, DataError
from metarec.values import is_whole, off_scale

# Titles GroupLens uses for a movie it knows nothing about (ml-100k item 267).
PLACEHOLDER_TITLES = frozenset({"unknown", "unkonwn"})
_EXAMPLES = 5


@dataclass
class _Finding:
    """Rows (positions in the checked frame) sharing one problem."""

    reason: str
    rows: np.ndarray
    examples: list[str]
    error: DataError  # what strict mode raises: the first offending row


def clean(
    dataset: Dataset,
    *,
    rating_range: tuple[float, float] | None = None,
    min_text_chars: int = 1,
    strict: bool = False,
) -> Dataset:
    """A cleaned copy of ``dataset`` with ``report`` saying what was dropped.

    Interactions go when their rating is missing or not a number, when an id is
    missing, when their item is not in the items table, when their rating is
    outside ``rating_range`` (default: the dataset's), or when they repeat a (user, item)
    pair (the latest by timestamp is kept, else the last row). Items whose
    text is shorter than ``min_text_chars`` take their title as text, or are
    dropped with their interactions when the title is empty too.
    ``strict=True`` raises :class:`DataError` at the first such problem instead.
    """
    inter, items, users = _tables(dataset)
    lo, hi = check_rating_range(rating_range or dataset.rating_range, "rating range")
    _check_options(min_text_chars, strict)
    report = CleaningReport(rows_in=len(inter))

    def apply(frame: pd.DataFrame, found: _Finding | None, prefix: str = "") -> pd.DataFrame:
        if found is None:
            return frame
        if strict:
            raise found.error
        report.add(prefix + found.reason, len(found.rows), found.examples)
        return _without(frame, found)

    items, inter = _with_text(_numbered(items)), _numbered(inter)
    inter = apply(inter, _missing_ids(inter, "user_id", "item_id"))
    inter = apply(inter, _bad_ratings(inter))
    _note_bad_timestamps(inter, report, strict)

    items = apply(items, _missing_ids(items, "item_id"), ITEMS_TABLE)
    items = apply(items, _duplicates(items, ["item_id"], keep="first"), ITEMS_TABLE)
    items, no_text = _fill_text(items, min_text_chars, report, strict)
    if no_text is not None:
        lost = set(items["item_id"].iloc[no_text.rows])
        items = apply(items, no_text, ITEMS_TABLE)
        inter = apply(inter, _in_items(inter, lost, "item has no text or title"))
    _note_placeholder_titles(items, report)
    _note_letterless_text(items, report)

    _note_alike_users(inter, report)
    inter = apply(inter, _unknown_items(inter, items))
    # after the unknown items, as the scale read from the data leaves their rows out
    inter = apply(inter, _out_of_range(inter, lo, hi))
    if lo == hi:
        inter = _merge_repeats(inter, report, lo)
    else:
        inter = apply(inter, _latest_duplicates(inter, acting=not strict))
    _note_missing_timestamps(inter, report)  # of the rows kept

    if users is not None:
        users = apply(users, _missing_ids(users, "user_id"), "users table: ")
        users = apply(users, _duplicates(users, ["user_id"], keep="first"), "users table: ")
        _note_users_without_features(inter, users, report)
        users = _public(users)

    inter = _public(inter)
    inter["rating"] = inter["rating"].astype("float32")
    if "timestamp" not in inter.columns:
        inter["timestamp"] = np.nan
    report.rows_out = len(inter)
    # the spec is what a run records to read these files again; cleaned strictly, it
    # says so, as `--strict` does on the CLI (a Python benchmark's command lacked it)
    spec = dataset.spec if not (strict and dataset.spec) else {**dataset.spec, "strict": True}
    return replace(
        dataset,
        interactions=inter,
        items=_public(items),
        users=users,
        rating_range=(lo, hi),
        report=report,
        spec=spec,
    )


def _merge_repeats(inter: pd.DataFrame, report: CleaningReport, value: float) -> pd.DataFrame:
    """A one-value log's repeats (a user who clicked an item twice) as one interaction,
    the latest, with a note: every rating is ``value``, so no repeat says anything its
    kept row does not; counted as a problem, a click log failed `data validate` (and
    ``strict``) for what click logs are."""
    found = _latest_duplicates(inter, acting=True)
    if found is None:
        return inter
    n = len(found.rows)
    timed = "timestamp" in inter.columns and bool(inter["timestamp"].notna().any())
    report.notes.append(
        f"{n:,} repeated interaction{'s' if n != 1 else ''} of a user with an item merged "
        f"into one (every rating is {value:g}; "
        + ("the latest time is kept)" if timed else "the last row is kept)")
    )
    return _without(inter, found)


def require_clean(dataset: Dataset) -> None:
    """A DataError naming the first of :func:`validate`'s problems, if any: what a
    command that trains on a Dataset it did not clean (a hand-built one, or one loaded
    with ``clean=False``) says before it starts, where a bad row otherwise failed inside
    the first fit, at a row number of neither the file nor the frame."""
    problems = validate(dataset)
    lo, hi = dataset.rating_range
    if not problems and lo == hi:
        # a click log's repeats are no problem to report, but clean merges them, and
        # one left in could put an item in a user's support and query set alike
        inter = _tables(dataset)[0]
        repeated = _latest_duplicates(_numbered(inter))
        if repeated is not None:
            problems = [
                f"interactions: {len(repeated.rows):,} repeated (user, item) row(s), which "
                f"clean merges (e.g. {'; '.join(repeated.examples)})"
            ]
    if problems:
        raise DataError(
            f"{dataset.name}: {len(problems)} problem(s) in the data, the first: "
            f"{problems[0]}; clean it first (metarec.clean; load_dataset cleans by default)"
        )


def validate(
    dataset: Dataset,
    *,
    rating_range: tuple[float, float] | None = None,
    min_text_chars: int = 1,
) -> list[str]:
    """Problems :func:`clean` would act on, one line each; ``[]`` when there are none.

    The rating checks run one after the other as in cleaning, each on the rows the
    ones before leave: a row without an item id is not also "not in the items
    table", and of two ratings of one item the one cleaning keeps is named as kept
    (the latest was picked among rows cleaning drops anyway).
    """
    try:
        inter, items, users = _tables(dataset)
        lo, hi = check_rating_range(rating_range or dataset.rating_range, "rating range")
        _check_options(min_text_chars)
    except (DataError, ConfigError) as exc:
        return [str(exc)]
    items, inter = _with_text(_numbered(items)), _numbered(inter)
    found: list[tuple[str, _Finding | None]] = []
    checks: list[Callable[[pd.DataFrame], _Finding | None]] = [
        lambda f: _missing_ids(f, "user_id", "item_id"),
        _bad_ratings,
        _bad_timestamps,  # noted, not dropped
        lambda f: _unknown_items(f, items),
        lambda f: _out_of_range(f, lo, hi),
        # one value (a click log): a repeat is the same interaction again, merged by
        # cleaning with a note, not two ratings that disagree
        _latest_duplicates if lo != hi else lambda f: None,
    ]
    rest = inter
    for check in checks:
        finding = check(rest)
        found.append(("interactions", finding))
        if finding is not None and check is not _bad_timestamps:
            rest = _without(rest, finding)
    found += [
        ("items", _missing_ids(items, "item_id")),
        ("items", _duplicates(items, ["item_id"], keep="first")),
        ("items", _short_text(items, min_text_chars)),
    ]
    if users is not None:
        found += [
            ("users", _missing_ids(users, "user_id")),
            ("users", _duplicates(users, ["user_id"], keep="first")),
        ]
    problems = []
    if inter.empty:  # what every command would refuse later, said by the check for it
        problems.append("interactions: no rows: nothing to train or evaluate on")
    for table, f in found:
        if f is not None:
            n = len(f.rows)
            problems.append(
                f"{table}: {n:,} row{'s' if n != 1 else ''}: {f.reason} "
                f"(e.g. {'; '.join(f.examples)})"
            )
    problems += _id_types(dataset)
    return problems


# the row's position in the table as given (iloc, from 0, as every other message about
# a frame built in memory counts), for frames without file lines: a check after rows
# were dropped counted from the rows left, and named other rows
_ROW_COL = "_row"


def _numbered(frame: pd.DataFrame) -> pd.DataFrame:
    if LINE_COL in frame.columns or _ROW_COL in frame.columns:
        return frame
    numbered = frame.assign(**{_ROW_COL: np.arange(len(frame))})
    numbered.attrs = dict(frame.attrs)
    return numbered


def _row_numbers(frame: pd.DataFrame) -> np.ndarray:
    if _ROW_COL in frame.columns:
        return frame[_ROW_COL].to_numpy()
    return np.arange(len(frame))


def _without(frame: pd.DataFrame, found: _Finding) -> pd.DataFrame:
    keep = np.ones(len(frame), dtype=bool)
    keep[found.rows] = False
    return frame[keep].reset_index(drop=True)


def _id_types(dataset: Dataset) -> list[str]:
    """Id columns holding numbers (a frame built in memory): the loaders' ids are text,
    so 61 would never match "61"; :func:`clean` writes them as text."""
    out = []
    tables = [("interactions", dataset.interactions, ("user_id", "item_id")),
              ("items", dataset.items, ("item_id",))]  # fmt: skip
    if dataset.users is not None:
        tables.append(("users", dataset.users, ("user_id",)))
    for table, frame, cols in tables:
        for col in cols:
            kind = pd.api.types.infer_dtype(frame[col], skipna=True)
            if kind not in ("string", "empty"):
                out.append(
                    f"{table}: {col} holds {kind} values, not text; ids are text "
                    "(clean() writes them so: 61 and 61.0 as '61')"
                )
    return out


# --------------------------------------------------------------------------- checks


def _missing_ids(frame: pd.DataFrame, *cols: str) -> _Finding | None:
    masks = {}
    for col in cols:
        values = frame[col]
        masks[col] = missing_ids(values).to_numpy()
    missing = np.logical_or.reduce(list(masks.values()))

    def which(i: int) -> str:
        return next(c for c in cols if masks[c][i])

    # the file's own name for the column (reader_id for user_id), as the field is given
    named = frame.attrs.get(COLUMNS_ATTR, {})
    rows = np.flatnonzero(missing)
    names = " or ".join(c.removesuffix("_id") for c in cols)
    field = which(int(rows[0])) if len(rows) else cols[0]
    return _finding(
        frame, rows, f"missing {names} id", lambda i: f"no {named.get(which(i), which(i))}", field
    )


def _bad_ratings(inter: pd.DataFrame) -> _Finding | None:
    rows = np.flatnonzero(inter["rating"].isna().to_numpy())
    raw = inter.get(f"{RAW_PREFIX}rating")

    def why(i: int) -> str:
        text = raw.iloc[i] if raw is not None else None
        if not isinstance(text, str):
            return "no rating"
        # as the loader read it: float() called "NaN" and "1_0" numbers beyond range
        if not reads_as_number(text):
            return f"rating {text!r} is not a number"
        return f"rating {text!r} is not a usable number (infinite, or beyond float32's range)"

    return _finding(inter, rows, "missing or non-numeric rating", why, "rating")


def _out_of_range(inter: pd.DataFrame, lo: float, hi: float) -> _Finding | None:
    """Ratings outside [lo, hi]. Checked after the unknown items are dropped: a scale
    read from the data is read from the rows cleaning keeps, so a rating of an unknown
    item past it was "outside" a scale nobody gave, beside the reason it is dropped."""
    r = inter["rating"].to_numpy(dtype="float64", na_value=np.nan)
    rows = np.flatnonzero(off_scale(r, lo, hi))
    return _finding(
        inter,
        rows,
        f"rating outside [{lo:g}, {hi:g}]",
        lambda i: f"rating {r[i]:g} is outside [{lo:g}, {hi:g}]",
        "rating",
    )


def _bad_timestamps(inter: pd.DataFrame) -> _Finding | None:
    raw = inter.get(f"{RAW_PREFIX}timestamp")
    if raw is None:
        return None
    rows = np.flatnonzero(raw.notna().to_numpy())

    def why(i: int) -> str:
        return f"timestamp {raw.iloc[i]!r} {timestamp_problem(str(raw.iloc[i]))}"

    return _finding(inter, rows, "timestamp is not a time (treated as unknown)", why, "timestamp")


def _note_bad_timestamps(inter: pd.DataFrame, report: CleaningReport, strict: bool) -> None:
    found = _bad_timestamps(inter)
    if found is None:
        return
    if strict:
        raise found.error
    report.notes.append(
        f"{len(found.rows):,} timestamps could not be read as times and are treated as unknown "
        f"(e.g. {'; '.join(found.examples)})"
    )


def _note_missing_timestamps(inter: pd.DataFrame, report: CleaningReport) -> None:
    """Blank times of users who have a time: such a rating counts as the user's oldest
    (in time-ordered supports, and as the one a duplicate's later row replaces), which
    a reader of the data should know rather than find in a split. A user without any
    time is shuffled instead, and not counted."""
    if "timestamp" not in inter.columns:
        return
    missing = inter["timestamp"].isna()
    if not missing.any():  # every rating timed (MovieLens): no grouping to pay for
        return
    blank = missing.to_numpy()
    raw = inter.get(f"{RAW_PREFIX}timestamp")
    if raw is not None:  # unreadable ones are noted on their own
        blank = blank & raw.isna().to_numpy()
    timed = (~missing).groupby(inter["user_id"], sort=False).transform("any").to_numpy()
    blank = blank & timed
    if blank.any():
        report.notes.append(
            f"{int(blank.sum()):,} ratings have no timestamp and count as the oldest of "
            "their user's in time order"
        )


def _duplicates(frame: pd.DataFrame, cols: list[str], keep: str) -> _Finding | None:
    dup = frame.duplicated(cols, keep=keep)  # type: ignore[arg-type]
    rows = np.flatnonzero(dup.to_numpy())
    what = " and ".join(cols)
    return _finding(
        frame,
        rows,
        f"duplicate {what} (kept the first)",
        lambda i: f"repeats {what} {plain(frame[cols[0]].iloc[i])!r}",
        cols[0],
    )


def _latest_duplicates(inter: pd.DataFrame, acting: bool = False) -> _Finding | None:
    """Repeated (user, item) pairs but the latest; ``acting``: cleaning drops them now
    (else validation, or --strict, reports what cleaning would do)."""
    key = ["user_id", "item_id"]
    if not inter.duplicated(key).any():  # the common case needs no sort
        return None
    # Rows without a timestamp count as oldest here: a rating whose time is known is
    # the surer one to keep. (In task order, metarec.data.tasks.ordered, they go
    # last instead, so a user's dated first ratings stay the support set.) Ties keep
    # file order, so the last row wins when there are no timestamps at all.
    ordered = (
        inter[[*key, "timestamp"]].sort_values("timestamp", kind="stable", na_position="first")
        if "timestamp" in inter.columns
        else inter[key]  # a frame built in memory may have none: file order
    )
    dropped = ordered.index[ordered.duplicated(key, keep="last").to_numpy()]
    rows = np.sort(dropped.to_numpy())
    repeated = ordered.duplicated(key, keep=False).to_numpy()
    kept_rows = ordered[repeated].drop_duplicates(key, keep="last")
    pairs = zip(kept_rows["user_id"], kept_rows["item_id"], strict=True)
    kept = dict(zip(pairs, kept_rows.index, strict=True))
    lines = inter[LINE_COL].to_numpy() if LINE_COL in inter.columns else None
    rows_at = _row_numbers(inter)
    stamps = inter["timestamp"] if "timestamp" in inter.columns else None

    def why(i: int) -> str:
        user, item = inter["user_id"].iloc[i], inter["item_id"].iloc[i]
        other = int(kept[(user, item)])
        # where the rating that stays is, and why it wins: the dropped row is the older
        # one (undated or dated alike: the earlier line); "again later" misread a copy
        at = f"line {int(lines[other])}" if lines is not None else f"row {int(rows_at[other])}"
        if stamps is not None and pd.isna(stamps.iloc[i]) and pd.notna(stamps.iloc[other]):
            wins = "dated, where this rating is not"
        elif stamps is not None and bool(stamps.iloc[other] > stamps.iloc[i]):
            wins = "later in time"
        else:
            wins = "the later line"
        if acting:
            kept_at = f"at {at} too, {wins}, which is kept (this rating dropped)"
        else:  # nothing is kept or dropped by a report, nor by --strict, which stops
            kept_at = f"at {at} too, {wins}, which cleaning keeps (dropping this rating)"
        return f"user {user!r} rated item {item!r} {kept_at}"

    reason = "duplicate (user, item) rating " + (
        "(kept the latest)" if acting else "(cleaning keeps the latest)"
    )
    return _finding(inter, rows, reason, why, "item_id")


def _unknown_items(inter: pd.DataFrame, items: pd.DataFrame) -> _Finding | None:
    rows = np.flatnonzero(~inter["item_id"].isin(items["item_id"]).to_numpy())
    if not len(rows):
        return None
    alike = {_loose_id(i): i for i in items["item_id"].astype(str)}

    def message(i: int) -> str:
        item = str(inter["item_id"].iloc[i])
        text = f"item {item!r} is not in the items table"
        near = alike.get(_loose_id(item))
        # "café" composed in one file and decomposed in the other, or a stray space,
        # print alike: say which id it nearly is, and how they differ
        return text + (f" (it has {near!r}: {_how_ids_differ(item, near)})" if near else "")

    return _finding(inter, rows, "item id not in the items table", message, "item_id")


def _alike_users(inter: pd.DataFrame) -> _Finding | None:
    """Ratings whose user id differs from another user's only in spaces at an end or in
    Unicode form ('u1 ' beside 'u1'): two users to every model, one person to whoever
    exported the file. Item ids have the items table to be checked against (see
    :func:`_unknown_items`); user ids only each other. Named, not merged: an id is the
    file's to fix, and ids that differ in case or in how a number is written may well
    be different users."""
    known = pd.Series(inter["user_id"].dropna().unique(), dtype=object).astype(str)
    loose = known.str.strip().str.normalize("NFC")
    twins = loose.duplicated(keep=False)
    if not twins.any():
        return None
    # each group's id as written most plainly (stripped and composed), else its first
    plain_form: dict[str, str] = {}
    for raw, key in zip(known[twins], loose[twins], strict=True):
        if raw == key or key not in plain_form:
            plain_form[key] = raw
    odd = {raw: plain_form[key] for raw, key in zip(known[twins], loose[twins], strict=True)
           if raw != plain_form[key]}  # fmt: skip
    rows = np.flatnonzero(inter["user_id"].isin(list(odd)).to_numpy())

    def message(i: int) -> str:
        user = str(inter["user_id"].iloc[i])
        return f"user {user!r} is also {odd[user]!r} ({_how_ids_differ(user, odd[user])})"

    reason = "user id differs from another only in spaces or Unicode form (read as two users)"
    return _finding(inter, rows, reason, message, "user_id")


def _note_alike_users(inter: pd.DataFrame, report: CleaningReport) -> None:
    """A note, not a problem (``strict`` passes them, and ``data validate`` lists the
    note and exits 0): the data cleans and trains as it is, and the ids may be meant."""
    found = _alike_users(inter)
    if found is None:
        return
    users = inter["user_id"].iloc[found.rows].nunique()
    report.notes.append(
        f"{users:,} user id{'s differ' if users != 1 else ' differs'} from another only in "
        "spaces at an end or Unicode form, read as different users "
        f"(e.g. {'; '.join(found.examples)})"
    )


def _loose_id(value: str) -> str:
    loose = unicodedata.normalize("NFC", value).strip().casefold()
    return _as_number(loose) or loose


def _as_number(text: str) -> str | None:
    """A whole number's plain digits ("1.0" and "01" are "1"), else None: one file's
    spreadsheet wrote the ids as numbers, the other as text."""
    # ASCII digits only: "²" and "①" are digits to isdigit and no number to float
    if not re.fullmatch(r"[+-]?[0-9]+(?:\.[0-9]*)?", text):
        return None
    number = float(text)
    return str(int(number)) if number.is_integer() and abs(number) < 2**53 else None


def _how_ids_differ(a: str, b: str) -> str:
    """Every way two ids :func:`_loose_id` takes for one differ: the user fixing one
    would otherwise meet the next as the same refusal."""
    ways = []
    if a != a.strip() or b != b.strip():
        ways.append("spaces at an end")
    a, b = a.strip(), b.strip()
    na, nb = unicodedata.normalize("NFC", a), unicodedata.normalize("NFC", b)
    if a != na or b != nb:  # Å as A + ring, or the Ångström sign
        ways.append("Unicode form (NFC/NFD: normalise the files alike)")
    if na != nb and na.casefold() == nb.casefold():
        ways.append("letter case")
    elif na != nb:
        ways.append("how a number is written; ids are text, so 1, 01 and 1.0 are three")
    return "they differ in " + " and ".join(ways or ["Unicode form"])


def _in_items(inter: pd.DataFrame, ids: set[str], reason: str) -> _Finding | None:
    rows = np.flatnonzero(inter["item_id"].isin(list(ids)).to_numpy())
    return _finding(
        inter, rows, reason, lambda i: f"item {inter['item_id'].iloc[i]!r}: {reason}", "item_id"
    )


def _short_text(items: pd.DataFrame, min_chars: int) -> _Finding | None:
    short = items["text"].astype(str).str.strip().str.len() < min_chars
    rows = np.flatnonzero((short | items["text"].isna()).to_numpy())
    return _finding(
        items,
        rows,
        f"item text shorter than {min_chars} character(s)",
        lambda i: f"item {items['item_id'].iloc[i]!r} has no text",
        "text",
    )


def _fill_text(
    items: pd.DataFrame, min_chars: int, report: CleaningReport, strict: bool
) -> tuple[pd.DataFrame, _Finding | None]:
    """Give text-less items their title; return the items that have neither."""
    found = _short_text(items, min_chars)
    if found is None:
        return items, None
    if strict:
        raise found.error
    titles = items["title"].iloc[found.rows].astype(str).str.strip()
    usable = titles.str.len().to_numpy() >= min_chars
    if usable.any():
        # as text: a text column built in memory may be all NaN, a float column that
        # refuses a title written into it
        items = items.assign(text=items["text"].astype(object))
        fill = found.rows[usable]
        items.loc[fill, "text"] = titles[usable].to_numpy()
        ids = ", ".join(repr(v) for v in items["item_id"].iloc[fill[:_EXAMPLES]])
        report.notes.append(f"{len(fill):,} items had no text and use their title (e.g. {ids})")
    rest = found.rows[~usable]
    if not len(rest):
        return items, None
    return items, _finding(
        items,
        rest,
        "item has neither text nor title",
        lambda i: f"item {items['item_id'].iloc[i]!r} has neither text nor title",
        "title",
    )


def _note_letterless_text(items: pd.DataFrame, report: CleaningReport) -> None:
    """An item with neither title nor text but a year reads "(1909).": long enough to
    pass as text, and all the encoder learns of it is a number. Noted, not dropped: a
    film may be called "1917"."""
    mask = ~items["text"].astype(str).str.contains(r"[^\W\d_]", regex=True)
    if mask.any():
        shown = items.loc[mask, ["item_id", "text"]].head(_EXAMPLES)
        pairs = zip(shown["item_id"], shown["text"], strict=True)
        examples = ", ".join(f"{i!r}: {t!r}" for i, t in pairs)
        report.notes.append(
            f"{int(mask.sum())} items' text has no letter (e.g. {examples}): "
            "check their title and text columns"
        )


def _note_placeholder_titles(items: pd.DataFrame, report: CleaningReport) -> None:
    mask = items["title"].astype(str).str.strip().str.lower().isin(PLACEHOLDER_TITLES)
    if mask.any():
        ids = ", ".join(repr(v) for v in items.loc[mask, "item_id"].head(_EXAMPLES))
        report.notes.append(
            f"{int(mask.sum())} items have a placeholder title such as 'unknown' (e.g. {ids})"
        )


def _note_users_without_features(
    inter: pd.DataFrame, users: pd.DataFrame, report: CleaningReport
) -> None:
    seen = pd.Index(inter["user_id"].unique())
    missing = seen.difference(pd.Index(users["user_id"]))
    if not len(missing):
        return
    ids = ", ".join(repr(v) for v in missing[:_EXAMPLES])
    if len(missing) == len(seen):  # a users file of another id scheme: features unused
        note = (
            f"none of the {len(seen):,} rating users has a row in the users table (e.g. "
            f"{ids}): every user is read without features"
        )
    else:
        note = f"{len(missing):,} rating users have no row in the users table (e.g. {ids})"
    # '001' in the users file, 1 in the ratings: the note says why, as for items
    loose = {_loose_id(str(u)): str(u) for u in users["user_id"].dropna()}
    twin = next(
        ((str(m), loose[_loose_id(str(m))]) for m in missing[:1000] if _loose_id(str(m)) in loose),
        None,
    )
    if twin is not None:
        note += f" (it has {twin[1]!r} for {twin[0]!r}: {_how_ids_differ(*twin)})"
    report.notes.append(note)


# --------------------------------------------------------------------------- helpers


def _finding(
    frame: pd.DataFrame, rows: np.ndarray, reason: str, why: Callable[[int], str], field: str
) -> _Finding | None:
    if not len(rows):
        return None
    source = frame.attrs.get(SOURCE_ATTR)
    lines = frame[LINE_COL].to_numpy() if LINE_COL in frame.columns else None
    rows_at = _row_numbers(frame)

    def where(i: int) -> str:
        place = f"line {int(lines[i])}" if lines is not None else f"row {int(rows_at[i])}"
        return f"{Path(source).name} {place}" if source else place

    examples = []
    for i in rows[:_EXAMPLES]:
        text = why(int(i))
        examples.append(f"{where(int(i))}: {text}" if text else where(int(i)))
    first = int(rows[0])
    error = DataError(
        why(first) or reason,
        path=source,
        row=int(lines[first]) if lines is not None else None,
        field=frame.attrs.get(COLUMNS_ATTR, {}).get(field, field),  # as the file names it
    )
    return _Finding(reason, rows, examples, error)


def _check_options(min_text_chars: object, strict: object = False) -> None:
    """ConfigError for options cleaning cannot take: ``min_text_chars`` a whole number
    >= 0 ("1" was a raw TypeError, -1 taken), ``strict`` True or False ("no" is truthy).
    As :func:`metarec.models.base.check_whole` words it; that module imports torch,
    which loading data does not need."""
    if not is_whole(min_text_chars) or min_text_chars < 0:
        raise ConfigError(
            f"min_text_chars: must be a whole number >= 0, got {min_text_chars!r:.40}"
        )
    if not isinstance(strict, bool | np.bool_):
        raise ConfigError(f"strict: expected True or False, got {strict!r:.40}")


def require_dataset(dataset: Any) -> None:
    """A DataError unless ``dataset`` is a :class:`Dataset` (a bare frame is the usual slip)."""
    if not isinstance(dataset, Dataset):
        raise DataError(
            f"dataset: expected a metarec Dataset (load_dataset, load_table, load_path or "
            f"Dataset(name, interactions, items)), got {type(dataset).__name__}"
        )


def _tables(dataset: Dataset) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """The data set's three tables as cleaning reads them: checked for their columns,
    ids as strings (a frame built in memory has int ids, which the loaders' string
    ids would never match), ratings as numbers with the text of those that are not."""
    require_dataset(dataset)
    _require_columns(dataset)
    refuse_boolean_ratings(dataset.interactions, dataset.interactions.attrs.get(SOURCE_ATTR))
    inter = dataset.interactions.reset_index(drop=True)
    items = dataset.items.reset_index(drop=True)
    users = dataset.users.reset_index(drop=True) if dataset.users is not None else None
    check_single_ids(inter, ["user_id", "item_id"], dataset.interactions.attrs.get(SOURCE_ATTR))
    check_single_ids(items, ["item_id"], dataset.items.attrs.get(SOURCE_ATTR))
    if users is not None and dataset.users is not None:
        check_single_ids(users, ["user_id"], dataset.users.attrs.get(SOURCE_ATTR))
    inter = inter.assign(user_id=str_ids(inter["user_id"]), item_id=str_ids(inter["item_id"]))
    items = items.assign(item_id=str_ids(items["item_id"]))
    if users is not None:
        users = users.assign(user_id=str_ids(users["user_id"]))
    rating, raw = numeric_with_raw(inter["rating"], "rating")
    if raw is not None and raw.name not in inter.columns:
        inter[raw.name] = raw
    loaded = dataset.interactions.attrs.get(SOURCE_ATTR) is not None
    if "timestamp" in inter.columns and not (
        loaded and pd.api.types.is_float_dtype(inter["timestamp"].dtype)
    ):
        # the loaders' are seconds already, and read again their warnings were said
        # once more for every cleaning and validation; a frame
        # built in memory is read as a file's column is: datetimes, dates as text, epoch
        # milliseconds scaled, a time past 9999 or in another unit named. Its text met
        # training as "could not convert string to float" after validate passed it
        ts, raw = read_timestamps(inter["timestamp"], dataset.interactions.attrs.get(SOURCE_ATTR))
        if raw is not None:
            kept = inter.get(raw.name)
            inter[raw.name] = raw if kept is None else kept.fillna(raw)
        inter["timestamp"] = ts
    pairs = [(inter, dataset.interactions), (items, dataset.items)]
    if users is not None and dataset.users is not None:
        pairs.append((users, dataset.users))
    for frame, original in pairs:
        frame.attrs = dict(original.attrs)  # the file and column names errors point at
    return inter.assign(rating=rating), items, users


def _require_columns(dataset: Dataset) -> None:
    checks = [
        ("interactions", dataset.interactions, ("user_id", "item_id", "rating")),
        ("items", dataset.items, ("item_id",)),
    ]
    if dataset.users is not None:
        checks.append(("users", dataset.users, ("user_id",)))
    for table, frame, cols in checks:
        check_table(frame, table)  # a Dataset checks its tables when built, not when changed
        repeated = frame.columns[frame.columns.duplicated()]
        if len(repeated):
            # frame[name] would be a frame, not a column, and every check after this
            # met that as an AttributeError; the file loaders refuse such a header too
            raise DataError(
                f"{table} table has column {plain(repeated[0])!r} more than once; each "
                "column needs its own name",
                path=frame.attrs.get(SOURCE_ATTR),
                field=str(repeated[0]),
            )
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise DataError(
                f"{table} table lacks column(s) {', '.join(missing)} "
                f"(has: {', '.join(map(str, frame.columns))})",
                path=frame.attrs.get(SOURCE_ATTR),
            )


def _with_text(items: pd.DataFrame) -> pd.DataFrame:
    # Frames built in memory may lack title or text; derive them as loaders do.
    if "title" not in items.columns:
        items = ids_for_titles(items, items["item_id"].astype(str))
    if "text" not in items.columns:
        items = items.assign(text=build_item_text(items))
    return items


def _public(frame: pd.DataFrame) -> pd.DataFrame:
    internal = [c for c in frame.columns if str(c).startswith("_")]
    return frame.drop(columns=internal).reset_index(drop=True)

"""RecBole atomic files: ``<name>.inter``, ``<name>.item`` and optional ``<name>.user``.

Each is tab-separated with a header of ``field:type`` names, type one of
``token``, ``token_seq`` (space-separated tokens), ``float``, ``float_seq``.
See https://recbole.io/docs/user_guide/data/atomic_files.html.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from metarec.data.columns import LINE_COL
from metarec.data.delimited import (
    field_count_error,
    read_delimited,
    require_file,
    warn_if_cut_short,
)
from metarec.data.generic import (
    check_rating_range,
    finish_interactions,
    finish_items,
    finish_users,
    infer_rating_range,
)
from metarec.data.schema import Dataset
from metarec.data.text import (
    LAST_TITLE_YEAR,
    ItemTextConfig,
    dated_titles,
    normalise_genres,
    split_title_year,
)
from metarec.errors import DataError

TYPES = ("token", "token_seq", "float", "float_seq")
_HEADER_FIELD = re.compile(r"^(?P<name>[^:\s]+):(?P<type>\S+)$")

TITLE_FIELDS = ("movie_title", "title", "name")
# the earliest title year read where a year field holds a slip (ml-100k's "V")
FIRST_SLIP_YEAR = 1800
YEAR_FIELDS = ("release_year", "year")
GENRE_FIELDS = ("class", "genre", "genres")


def load_atomic(
    directory_or_prefix: str | Path,
    name: str | None = None,
    *,
    text: ItemTextConfig | None = None,
    drop_user_columns: Sequence[str] = ("zip_code",),
    rating_range: tuple[float, float] | None = None,
) -> Dataset:
    """Load a RecBole atomic data set.

    ``directory_or_prefix`` is a directory holding ``<name>.inter`` (``name``
    defaults to the directory's name, or to the only ``.inter`` file in it), or
    a path prefix such as ``data/ml-100k`` (``.inter`` may be included).
    ``zip_code`` is dropped from the users by default: it is nearly unique per
    user, so it identifies rather than describes.
    ``rating_range``: the scale, when known; else it is read from the data.
    An item's text is its title field (``movie_title``, ``title``, ``name`` or any
    ``*_title``), year (``release_year``, ``year`` or any ``*_year``) and genres
    (``class``, ``genre`` or ``genres``), then, unless ``text`` says otherwise, its other
    ``token_seq`` fields (words: an author, a publisher). A ``.item`` or ``.user``
    path that is there but cannot be read (a folder, a broken link) is an error.
    """
    if not isinstance(directory_or_prefix, str | os.PathLike):
        raise DataError(
            f"directory_or_prefix: expected a folder or a path prefix such as data/ml-100k, "
            f"got {type(directory_or_prefix).__name__}"
        )
    prefix = _resolve_prefix(Path(directory_or_prefix), name)
    inter_path = prefix.with_name(prefix.name + ".inter")
    item_path = prefix.with_name(prefix.name + ".item")
    user_path = prefix.with_name(prefix.name + ".user")

    interactions = _load_inter(inter_path)
    # lexists, not is_file: a folder, a dangling link or a link loop by the item file's
    # name is an error (require_file says which), not a data set without items
    if os.path.lexists(item_path):
        items = _load_items(item_path, text)
    else:
        # No item file: the rated ids are the catalogue, each titled by its id; said, as
        # load_table says it, since a copy that lost its .item trains on ids as text
        warnings.warn(
            f"{inter_path}: no {item_path.name} beside it: items are known by their ids "
            "alone, so the encoder reads ids as text and a new item has no text to be "
            "scored from",
            UserWarning,
            stacklevel=2,
        )
        ids = pd.unique(interactions["item_id"].dropna())
        items = finish_items(pd.DataFrame({"item_id": ids, "title": ids}), None, text)
    users = _load_users(user_path, drop_user_columns) if os.path.lexists(user_path) else None
    return Dataset(
        name=prefix.name,
        interactions=interactions,
        items=items,
        users=users,
        rating_range=(
            check_rating_range(rating_range, "rating_range")
            if rating_range is not None
            else infer_rating_range(interactions, items)
        ),
    )


def _resolve_prefix(path: Path, name: str | None) -> Path:
    if path.suffix in (".inter", ".item", ".user") and not path.is_dir():
        path = path.with_suffix("")
    if path.is_dir():
        if name is not None:
            return path / name
        if (path / f"{path.name}.inter").is_file():
            return path / path.name
        found = sorted(path.glob("*.inter"))
        if len(found) == 1:
            return found[0].with_suffix("")
        if not found:
            raise DataError("no .inter file in the directory", path=path)
        raise DataError(
            f"{len(found)} .inter files in the directory ({', '.join(p.stem for p in found[:5])}"
            f"{', ...' if len(found) > 5 else ''}); choose one by its prefix "
            f"({found[0].with_suffix('')}), or name= in Python",
            path=path,
        )
    prefix = path if name is None else path / name
    if not prefix.with_name(prefix.name + ".inter").is_file():
        raise DataError("RecBole interaction file not found", path=f"{prefix}.inter")
    return prefix


def read_header(path: Path) -> list[tuple[str, str]]:
    """Parse and check the ``name:type`` header; raise DataError naming the problem."""
    require_file(path)
    with path.open("rb") as fh:
        raw = fh.readline()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        # read as UTF-8 every other byte is a NUL: the header's "unknown type" message
        # printed them to the terminal
        raise DataError(
            "UTF-16 text, or NUL bytes in the header: RecBole's atomic files are UTF-8; "
            "save it as UTF-8",
            path=path,
        )
    first = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
    first = first.rstrip("\r\n")
    if not first.strip():
        raise DataError(
            "missing header: the first line must list the fields as name:type, "
            "e.g. 'user_id:token<TAB>item_id:token<TAB>rating:float'",
            path=path,
            row=1,
        )
    parts = first.split("\t")
    if len(parts) == 1 and any(d in first for d in (",", ";", "|")):
        raise field_count_error(path, 1, first, "\t", 2, 1)
    fields: list[tuple[str, str]] = []
    for part in parts:
        m = _HEADER_FIELD.match(part.strip())
        if m is None:
            raise DataError(
                f"header field {part!r} is not of the form name:type (e.g. 'user_id:token')",
                path=path,
                row=1,
                field=part,
            )
        if m.group("type") not in TYPES:
            raise DataError(
                f"unknown type {m.group('type')!r} in header field {part!r}; "
                f"expected one of {', '.join(TYPES)}",
                path=path,
                row=1,
                field=m.group("name"),
            )
        if any(m.group("name") == n for n, _ in fields):
            raise DataError("field appears twice in the header", path=path, row=1, field=part)
        fields.append((m.group("name"), m.group("type")))
    return fields


def _read(path: Path, required: Sequence[str], floats: Sequence[str]) -> pd.DataFrame:
    fields = read_header(path)
    names = [n for n, _ in fields]
    missing = [c for c in required if c not in names]
    if missing:
        # a name that differs in case or spaces alone ('User_ID:token') is named
        cased = {c: n for c in missing for n in names if n.strip().lower() == c}
        hint = (
            f" — names are matched exactly: did you mean {', '.join(map(repr, cased.values()))}?"
            if cased
            else ""
        )
        if "rating" in missing and "rating" not in cased:
            # as the plain-file readers say it: a click log has no rating to leave out
            hint += " (implicit feedback, clicks or purchases, needs a column of 1s)"
        raise DataError(
            f"required field(s) {', '.join(missing)} missing from the header "
            f"(found: {', '.join(names)})" + hint,
            path=path,
            row=1,
            field=missing[0],
        )
    float_cols = [n for n, t in fields if t == "float" and n in floats]
    return read_delimited(path, sep="\t", names=names, float_cols=float_cols, quoted=False)


def _load_inter(path: Path) -> pd.DataFrame:
    raw = _read(path, ("user_id", "item_id", "rating"), ("rating", "timestamp"))
    warn_if_cut_short(path, raw)
    cols = [c for c in ("user_id", "item_id", "rating", "timestamp") if c in raw.columns]
    return finish_interactions(raw[[*cols, LINE_COL]], path)


def _first(frame: pd.DataFrame, candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in frame.columns), None)


def _load_items(path: Path, text: ItemTextConfig | None) -> pd.DataFrame:
    raw = _read(path, ("item_id",), ())
    types = dict(read_header(path))
    # other layouts than MovieLens's name their title otherwise (book-crossing's
    # book_title): unread, every item was titled by its id and had no other text
    title_col = _first(raw, TITLE_FIELDS) or next(
        (c for c in raw.columns if str(c).endswith("_title")), None
    )
    # Book-Crossing's publication_year: unread, a book had no year and P1's new items
    # were a random fifth, not the newest, with nothing said
    year_col = _first(raw, YEAR_FIELDS) or next(
        (c for c in raw.columns if str(c).endswith("_year")), None
    )
    genre_col = _first(raw, GENRE_FIELDS)
    # ml-1m names items "Title (Year)"; without a title field that id is the title.
    named = raw[title_col] if title_col else raw["item_id"]
    titles, title_years = split_title_year(named)
    years = pd.to_numeric(raw[year_col], errors="coerce") if year_col else title_years
    if not dated_titles(named):
        # "Tea Bags (1000)" names no year: in titles not written "Title (Year)" a
        # title's year is read only where it is the year field's, or where that field
        # holds a slip ("V", ml-100k's item 1412) rather than nothing. With Book-
        # Crossing's publication_year read, every bracketed number was split off, and
        # an empty year took one for the book's
        if year_col is None:  # the title alone: no field to agree with
            read = pd.Series(False, index=raw.index)
            years = pd.Series(float("nan"), index=raw.index, dtype="float64")
        else:
            field = raw[year_col]
            # a slip's title year is a plausible release year: "Tea Bags (1000)" beside
            # "unknown" is no book of the year 1000, nor "Copy Paper (5000)" one of 5000
            plausible = (title_years >= FIRST_SLIP_YEAR) & (title_years < LAST_TITLE_YEAR)
            written = field.notna() & field.astype(str).str.strip().ne("")
            read = title_years.notna() & (
                (title_years == years) | (plausible & years.isna() & written)
            )
        whole = named.astype(object).where(named.notna(), "").astype(str)
        titles = titles.where(read, whole)
        title_years = title_years.where(read)
    frame = pd.DataFrame({"item_id": raw["item_id"], "title": titles}, index=raw.index)
    # A year field that does not parse ("unkonwn", "V" in ml-100k) falls back to
    # the year in the title, where there is one.
    frame["year"] = years.fillna(title_years)
    frame["genres"] = normalise_genres(raw[genre_col], r"\s+") if genre_col else ""
    used = {"item_id", title_col, year_col, genre_col, LINE_COL}
    words = []
    for col in raw.columns:
        if col not in used:
            name = col if col not in frame.columns else f"{col}_"
            frame[name] = raw[col]
            if types.get(col) == "token_seq":
                words.append(name)
    if text is None and words:
        # token_seq fields are words (book-crossing's book_author and publisher, Yelp's
        # categories): item text unless the caller's text config says otherwise;
        # token fields are single codes (a state, a brand id), float fields numbers
        text = ItemTextConfig(extra=tuple(words))
    if title_col is None and not (text.extra if text else ()) and "text" not in raw.columns:
        warnings.warn(
            f"{path}: no title field ({', '.join(TITLE_FIELDS)} or *_title) and no text "
            "field (token_seq): items are known by their ids alone, so a new item has no "
            "text to be scored from",
            stacklevel=3,
        )
    frame[LINE_COL] = raw[LINE_COL]
    return finish_items(frame, path, text)


def _load_users(path: Path, drop: Sequence[str]) -> pd.DataFrame:
    raw = _read(path, ("user_id",), ())
    return finish_users(raw, path, drop=drop)

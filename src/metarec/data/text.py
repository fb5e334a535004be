"""The text an encoder sees for each item, and title helpers shared by loaders.

A template such as ``"{title} ({year}). Genres: {genres}."`` is filled per item;
parts that are missing (unknown year, no genres) are dropped together with the
punctuation around them, so no ``"()"`` or ``"Genres: ."`` is left behind.
The clean-up works on the template skeleton, never on the values, so titles
with their own brackets or ellipses are left untouched.
"""

from __future__ import annotations

import re
import string
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from metarec.errors import ConfigError, outside_metarec

DEFAULT_TEMPLATE = "{title} ({year}). Genres: {genres}."

# Articles GroupLens moves to the end ("Matrix, The"). Case-sensitive on purpose:
# a lowercase "a" after a comma is ordinary text, not a displaced article.
_ARTICLES = (
    "The",
    "A",
    "An",
    "Les",
    "Le",
    "La",
    "L'",
    "Il",
    "Lo",
    "Gli",
    "Das",
    "Der",
    "Die",
    "El",
    "Los",
    "Las",
    "Un",
    "Une",
)
_ARTICLE_RE = re.compile(r"^(?P<name>.+), (?P<art>" + "|".join(map(re.escape, _ARTICLES)) + r")$")
# Trailing parenthetical groups: "Name, The (Alt, La) (1995)".
_TAIL_GROUPS_RE = re.compile(r"^(?P<main>.*?)(?P<tail>(?:\s*\([^()]*\))*)\s*$", re.DOTALL)
_GROUP_RE = re.compile(r"(\s*)\(([^()]*)\)")
# "Title (1995)", also "Show (2005-2007)" and "Show (2016-)" as in ml-latest.
# (?s): a quoted title may hold a line break, and its year was lost
_TITLE_YEAR_RE = r"(?s)^(?P<title>.*?)\s*\((?P<year>\d{4})(?:[-–]\d{0,4})?\)\s*$"
# Genre values that mean "no genre" in MovieLens releases.
GENRE_PLACEHOLDERS = frozenset({"unknown", "(no genres listed)", "(no genre listed)"})

_MARK = "\x00{}\x00"
_MARK_RE = re.compile("\x00(\\d+)\x00")


@dataclass
class ItemTextConfig:
    """Which item fields make up the encoder text, and how they are laid out.

    ``extra`` names further item columns (e.g. a plot summary). Those the
    template does not mention are appended after it, each a sentence of its own.
    ``template`` may use ``{title}``, ``{year}``, ``{genres}`` and any
    ``extra`` column; a part switched off or empty for an item is dropped with
    its surrounding punctuation.
    """

    title: bool = True
    year: bool = True
    genres: bool = True
    extra: Sequence[str] = field(default_factory=tuple)
    template: str = DEFAULT_TEMPLATE
    fix_articles: bool = True

    def __post_init__(self) -> None:
        # a template of 5 was string.Formatter's TypeError, and extra="plot" was read as
        # the columns p, l, o and t (empty ones added without a word by add_items)
        for name in ("title", "year", "genres", "fix_articles"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"item text {name}: expected True or False, got {getattr(self, name)!r:.40}"
                )
        if isinstance(self.extra, (str, bytes)) or not all(
            isinstance(c, str) and c for c in _iterable(self.extra)
        ):
            raise ConfigError(
                f"item text extra: expected a list of column names, got {self.extra!r:.60}; "
                "write ['plot'] for one"
            )
        if not isinstance(self.template, str):
            raise ConfigError(f"item text template: expected text, got {self.template!r:.40}")
        template_fields(self.template)  # malformed or formatted fields are named now


def ids_for_titles(items: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """``items`` with ``ids`` as their titles, where a frame built in memory has no
    title column, as loaders read one; said in a warning where it has no ``text``
    either, as the item's vector then reads little more than its id ("1.")."""
    if "text" not in items.columns and len(items):  # no items, nothing stood in for
        example = str(ids.iloc[0])
        has = [str(c) for c in items.columns if not str(c).startswith("_")]  # not metarec's
        warnings.warn(
            f"items have neither a title nor a text column (has: {', '.join(has)}): each "
            f"item's id stands in for its title ({example!r}), so its text says little of "
            "it; give the items a 'title' or 'text' column",
            stacklevel=outside_metarec(),
        )
    return items.assign(title=ids)


def fix_title_articles(title: str) -> str:
    """Turn GroupLens' ``"Matrix, The (1999)"`` into ``"The Matrix (1999)"``.

    The article fix is also applied inside trailing parentheses, so
    ``"Umbrellas of Cherbourg, The (Parapluies de Cherbourg, Les)"`` becomes
    ``"The Umbrellas of Cherbourg (Les Parapluies de Cherbourg)"``.
    """
    if ", " not in title:  # no article to move: the patterns only drop the end's spaces
        return title.rstrip()  # (a third of indexing a 150,000-item catalogue's titles)
    m = _TAIL_GROUPS_RE.match(title)
    if m is None:  # pragma: no cover - the pattern matches every string
        return title
    main, tail = m.group("main"), m.group("tail")
    tail = _GROUP_RE.sub(lambda g: f"{g.group(1)}({_move_article(g.group(2))})", tail)
    return _move_article(main) + tail


def _move_article(text: str) -> str:
    m = _ARTICLE_RE.match(text.strip())
    if m is None:
        return text
    art, name = m.group("art"), m.group("name")
    # "L'" binds to the next word: "Enfer, L'" -> "L'Enfer".
    return f"{art}{name}" if art.endswith("'") else f"{art} {name}"


def split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Split ``"Toy Story (1995)"`` into ``("Toy Story", 1995.0)``.

    Titles without a trailing year are returned unchanged with a NaN year.
    """
    titles = titles.astype(object).where(titles.notna(), "")
    parts = titles.str.extract(_TITLE_YEAR_RE)
    has_year = parts["year"].notna()
    out_titles = titles.where(~has_year, parts["title"]).astype(str)
    years = pd.to_numeric(parts["year"], errors="coerce").astype("float64")
    return out_titles, years


# a title's bracketed number from here on is no release year
LAST_TITLE_YEAR = 2100


def dated_catalogue(texts: pd.Series) -> bool | None:
    """Whether a run's catalogue gave its items years, read from their encoder texts
    (the default template writes "Title (1995)."), for items added to it: a batch of
    one judged alone made "Tea Bags (1000)" a year on a products run, and a mixed batch
    lost a film's year on a MovieLens run. None for an empty catalogue."""
    if not len(texts):
        return None
    # the first items stand for the catalogue: this runs on every PUT of items, where a
    # whole 100,000-item catalogue's regex costs more than the items being added
    head = texts.iloc[:DATED_SAMPLE].astype(str)
    return bool(head.str.contains(r"\(\d{4}\)", regex=True).mean() >= 0.5)


DATED_SAMPLE = 5000


def dated_titles(titles: pd.Series) -> bool:
    """Whether a catalogue's titles are written "Title (Year)": at least half of those
    not empty end in a year before :data:`LAST_TITLE_YEAR`."""
    _, in_title = split_title_year(titles)
    named = int((titles.fillna("").astype(str).str.strip() != "").sum())
    return 2 * int((in_title < LAST_TITLE_YEAR).sum()) >= max(named, 1)


def title_and_year(
    titles: pd.Series, years: pd.Series, where: str | None, *, dated: bool | None = None
) -> tuple[pd.Series, pd.Series]:
    """Titles and years as the item text takes them: "Toy Story (1995)" beside a year
    1995 (or none) is "Toy Story" of 1995, as MovieLens' own files are read; the year
    was written twice into the text, "Toy Story (1995) (1995)". A title whose year
    differs from the column's is left whole, with a warning naming ``where`` (the
    file, or add_items): both years reach the text, and one of them is likely wrong.
    Without a year column's word, a title's year is read only in a catalogue written
    "Title (Year)" (:func:`dated_titles`; ``dated``: the caller's catalogue's, where
    ``titles`` are only items added to it) and before :data:`LAST_TITLE_YEAR`.
    ``where`` None: no warning (the caller's data is warned about elsewhere)."""
    bare, in_title = split_title_year(titles)
    if dated is None:
        dated = dated_titles(titles)
    # without the year column's word, a title's "(1000)" is its year only where the
    # titles are written "Title (Year)", as MovieLens writes them. Two products of 668
    # ending "(1000)" ("Tea Bags (1000)") lost it to a year 1000; a number in brackets
    # past any release year is a quantity ("Copy Paper (5000)")
    guessed = years.isna() & dated & (in_title < LAST_TITLE_YEAR)
    split = in_title.notna() & ((years == in_title) | guessed)
    # only a catalogue written "Title (Year)" has a year in its titles to differ: on a
    # books run every "Tea Bags (1000)" was warned of on every command
    differ = dated & in_title.notna() & years.notna() & (years != in_title)
    if where is not None and differ.any():
        i = int(np.flatnonzero(differ.to_numpy())[0])
        warnings.warn(
            f"{where}: {int(differ.sum()):,} title(s) end in a year other than the year "
            f"column's (e.g. {titles.iloc[i]!r} with {years.iloc[i]:g}); both are in the "
            "item text",
            UserWarning,
            stacklevel=outside_metarec(),
        )
    return titles.where(~split, bare), years.where(~split, in_title).astype("float64")


LIST_TYPES = (list, tuple, set, np.ndarray)


def is_mixed(values: pd.Series) -> bool:
    """Whether ``values`` may hold lists: pandas infers every other column (text,
    numbers) without a Python loop, so a column of text is not looped over."""
    return pd.api.types.infer_dtype(values, skipna=True).startswith("mixed")


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and np.isnan(x))


def join_lists(values: pd.Series, sep: str) -> pd.Series:
    """Values that are lists (a Parquet list column, arrays built in memory) as their
    items joined by ``sep``: as text they read as a repr, ``"['Comedy' 'Drama']"``.

    Nested values are read through: lists of lists (Amazon's category paths,
    ``[["Books", "Fiction"], ["Kindle Store"]]``) as all their items, objects
    (``{"Books": 1234}``, a JSON Lines field) as ``key: value`` pairs; their repr
    reached the titles, genres and encoder text."""
    if values.dtype != object or not is_mixed(values):
        return values
    listed = values.map(lambda v: isinstance(v, (*LIST_TYPES, Mapping)))
    if not listed.any():
        return values
    joined = [_joined(v, sep) for v in values[listed]]
    return values.where(~listed, pd.Series(joined, index=values.index[listed], dtype=object))


def lists_in_text(values: pd.Series) -> pd.Series:
    """Cells of a text file that hold a list written out (``"['Horror', 'Drama']"``, as
    pandas' ``to_csv`` writes a list column, or a JSON array) as that list, for
    :func:`join_lists` to read as its items: as text the brackets, quotes and escapes
    (``Garc\\u00eda``) reached the genres and the encoder text. A cell that does not
    parse as a list of values (``"[REC]"``) stays as written."""
    if values.dtype != object and not pd.api.types.is_string_dtype(values):
        return values
    text = values.astype(object).where(values.map(lambda v: isinstance(v, str)), None)
    bracketed = text.str.strip().str.match(r"^\[.*\]$", na=False).to_numpy(dtype=bool)
    if not bracketed.any():
        return values
    parsed: dict[str, object] = {}
    for cell in pd.unique(text[bracketed]):
        parsed[cell] = _listed(cell)
    out = values.astype(object).copy()
    rows = np.flatnonzero(bracketed)
    out.iloc[rows] = [parsed[c] for c in text.iloc[rows]]
    return out


def _listed(cell: str) -> object:
    """``cell`` as the list it writes out, or ``cell`` itself."""
    import ast
    import json

    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(cell.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, (str, int, float, list, tuple)) for v in value
        ):
            return list(value)
    return cell


def _joined(value: object, sep: str) -> str:
    if isinstance(value, Mapping):
        parts = (f"{k}: {_joined(v, sep)}" for k, v in value.items() if not _missing(v))
    elif isinstance(value, LIST_TYPES):
        parts = (_joined(v, sep) for v in value if not _missing(v))
    else:
        return str(value)
    return sep.join(p for p in parts if p)


def normalise_genres(values: pd.Series, sep: str = r"\s*[|,;]\s*") -> pd.Series:
    """Return ``|``-joined genres; placeholders like ``"unknown"`` become empty.

    ``sep`` is a regular expression for the source separator; a list of genres (a
    Parquet list column) is read as the genres it holds.
    """
    values = join_lists(values, "|")
    values = values.astype(object).where(values.notna(), "").astype(str)
    pattern = re.compile(sep)
    cache: dict[str, str] = {}

    # Few distinct genre combinations, so the per-value work is memoised.
    def one(raw: str) -> str:
        got = cache.get(raw)
        if got is None:
            # whole first: split on spaces (RecBole's token_seq), "(no genres listed)" was
            # three genres, "(no", "genres" and "listed)"
            whole = raw.strip().lower() in GENRE_PLACEHOLDERS
            parts = [] if whole else [p.strip() for p in pattern.split(raw)]
            got = "|".join(p for p in parts if p and p.lower() not in GENRE_PLACEHOLDERS)
            cache[raw] = got
        return got

    return pd.Series([one(v) for v in values], index=values.index, dtype=object).astype(str)


def format_year(year: pd.Series) -> pd.Series:
    """Years as text (``"1995"``), empty where unknown."""
    y = pd.to_numeric(year, errors="coerce")
    text = pd.Series("", index=y.index, dtype=object)
    # past four digits a year is no year (1e20 overflowed int64 into "-9223372036854775808")
    ok = y.notna() & (np.abs(y.to_numpy(dtype="float64", na_value=np.nan)) < 10_000)
    text[ok] = y[ok].round().astype("int64").astype(str)
    return text


def build_item_text(items: pd.DataFrame, config: ItemTextConfig | None = None) -> pd.Series:
    """The encoder text of each item, as a ``str`` series aligned with ``items``."""
    config = config or ItemTextConfig()
    fields = template_fields(config.template)
    extra = list(config.extra)
    allowed = {"title", "year", "genres", *extra}
    unknown = [f for f in fields if f not in allowed]
    if unknown:
        raise ConfigError(
            f"item text template {config.template!r} uses {unknown}; it may use "
            f"title, year, genres and the extra columns {extra}"
        )
    missing_cols = [c for c in extra if c not in items.columns]
    if missing_cols:
        raise ConfigError(
            f"item text extra columns {missing_cols} are not in the items table "
            f"(columns: {list(items.columns)})"
        )
    values = _part_values(items, config, [*fields, *[c for c in extra if c not in fields]])
    appended = [c for c in extra if c not in fields]
    for name in appended[:-1]:
        # each appended part a sentence of its own: "Horror. David Smith, Elena García A
        # historical novel" ran an author list into the description after it
        values[name] = [_closed(v) for v in values[name]]
    skeletons: dict[tuple[bool, ...], str] = {}
    names = list(values)
    columns = [values[n] for n in names]
    out: list[str] = []
    for row in zip(*columns, strict=True):
        present = tuple(bool(v) for v in row)
        skel = skeletons.get(present)
        if skel is None:
            skel = _skeleton(config.template, names, present, appended)
            skeletons[present] = skel
        out.append(_MARK_RE.sub(_filler(row), skel))
    return pd.Series(out, index=items.index, dtype=object).astype(str)


def blank(values: pd.Series) -> pd.Series:
    """Where ``values`` hold nothing: missing, or only spaces (a CSV's empty field)."""
    return values.isna() | values.astype(str).str.strip().eq("")


def fill_item_text(items: pd.DataFrame, config: ItemTextConfig | None = None) -> pd.Series:
    """Each item's ``text`` where it has one, and where it has none (no ``text`` column,
    a missing or blank value) the text :func:`build_item_text` makes of its columns, as
    a ``str`` series aligned with ``items``: one missing text rebuilt every row's, so an
    item with a whole text of its own was encoded as its bare title."""
    if "text" not in items.columns:
        return build_item_text(items, config)
    given = items["text"]
    missing = blank(given)
    out = given.astype(object).where(~missing, "").astype(str)
    if missing.any():
        out[missing] = build_item_text(items[missing], config)
    return out


def _iterable(value: object) -> list[object]:
    """``value``'s items, or one item (a number) that no list of names is."""
    try:
        return list(value)  # type: ignore[call-overload]
    except TypeError:
        return [value]


def _closed(text: str) -> str:
    """``text`` ending as a sentence does (a full stop added where it has no end mark)."""
    return text if not text or text[-1] in ".!?…\"')]" else f"{text}."


def _filler(row: Sequence[str]) -> Callable[[re.Match[str]], str]:
    """A ``re.sub`` replacement that fills a skeleton's numbered marks from ``row``."""
    return lambda m: row[int(m.group(1))]


def template_fields(template: str) -> list[str]:
    """The fields a text template names, each once, in order; a ConfigError where it is
    malformed or formats a field (``{year:04d}``), which the clean-up cannot take apart."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"item text template {template!r} is malformed: {exc}") from exc
    fields: list[str] = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not name or spec or conv:
            raise ConfigError(
                f"item text template {template!r}: use plain named fields like {{title}}"
            )
        if name not in fields:
            fields.append(name)
    return fields


def _part_values(
    items: pd.DataFrame, config: ItemTextConfig, names: list[str]
) -> dict[str, list[str]]:
    n = len(items)
    empty = [""] * n

    def text_col(col: str) -> pd.Series:
        if col not in items.columns:
            return pd.Series(empty, index=items.index, dtype=object)
        s = join_lists(items[col], "|" if col == "genres" else ", ")
        return s.astype(object).where(s.notna(), "").astype(str).str.strip()

    values: dict[str, list[str]] = {}
    for name in names:
        if name == "title":
            if not config.title:
                values[name] = empty
                continue
            titles = text_col("title")
            if config.fix_articles:
                titles = titles.map(fix_title_articles)
            values[name] = titles.tolist()
        elif name == "year":
            ok = config.year and "year" in items.columns
            values[name] = format_year(items["year"]).tolist() if ok else empty
        elif name == "genres":
            if not config.genres:
                values[name] = empty
                continue
            genres = text_col("genres").str.split("|")
            values[name] = [", ".join(g for g in gs if g.strip()) for gs in genres]
        else:
            values[name] = text_col(name).tolist()
    return values


def _skeleton(
    template: str, names: list[str], present: tuple[bool, ...], appended: list[str]
) -> str:
    """The template with markers for present parts and missing parts removed."""
    marks = {
        n: (_MARK.format(i) if ok else "")
        for i, (n, ok) in enumerate(zip(names, present, strict=True))
    }
    skel = template.format(**{n: marks[n] for n in names if n not in appended})
    for name in appended:
        if marks[name]:
            skel = f"{skel} {marks[name]}"
    return _tidy(skel)


def _tidy(skel: str) -> str:
    # Empty brackets left by a missing part: "Toy Story ()." -> "Toy Story."
    skel = re.sub(r"\s*(\(\s*\)|\[\s*\])", "", skel)
    # A label with nothing after it: "Toy Story. Genres: ." -> "Toy Story.."
    skel = re.sub(r"(?:^|(?<=[.!?;]))[^.!?;:\x00]*:\s*(?=[.!?;,]|$)", "", skel)
    # A separator with nothing after it: "{title}: {plot}" without a plot.
    skel = re.sub(r"\s*[:,;]\s*(?=[.!?]|$)", "", skel)
    skel = re.sub(r"\s+", " ", skel)
    skel = re.sub(r"\s+([.,;:!?)\]])", r"\1", skel)
    skel = re.sub(r"([.,;:!?])(?:\s*\1)+", r"\1", skel)
    skel = re.sub(r"^[\s.,;:!?]+", "", skel).strip()
    # A bracketed part left first by a missing title: "(2011). Genres: Drama." reads as
    # an aside to nothing; "2011. Genres: Drama." says the same
    skel = re.sub(r"^[(\[](\x00\d+\x00)[)\]]", r"\1", skel)
    return skel if _MARK_RE.search(skel) else ""

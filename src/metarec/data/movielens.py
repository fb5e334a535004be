"""MovieLens as GroupLens distributes it: ml-100k, ml-1m and ml-latest(-small).

Layouts (see each archive's README):

* ml-100k: ``u.data`` (tab: user, item, rating, timestamp), ``u.item`` (pipe,
  Latin-1, or UTF-8 where a copy was saved so: id, "Title (Year)", release date,
  video release date, IMDb URL, 19 genre flags), ``u.user`` (pipe: user, age,
  gender, occupation, zip code).
* ml-1m: ``ratings.dat``, ``movies.dat`` (Latin-1 or UTF-8, ``|``-joined genres),
  ``users.dat`` (user, gender, age, occupation, zip code), all ``::``-separated.
* ml-latest / ml-latest-small: ``ratings.csv`` and ``movies.csv`` with headers,
  titles quoted where they contain commas; no user table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from metarec.data.columns import LINE_COL
from metarec.data.delimited import UTF8_ELSE_LATIN1, read_delimited, warn_if_cut_short
from metarec.data.generic import finish_interactions, finish_items, finish_users
from metarec.data.schema import Dataset
from metarec.data.text import ItemTextConfig, normalise_genres, split_title_year
from metarec.errors import DataError

ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

# The files whose presence identifies each layout.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "ml-100k": ("u.data", "u.item"),
    "ml-1m": ("ratings.dat", "movies.dat"),
    "ml-latest": ("ratings.csv", "movies.csv"),
}
RATING_RANGES = {"ml-100k": (1.0, 5.0), "ml-1m": (1.0, 5.0), "ml-latest": (0.5, 5.0)}

_INTER = ("user_id", "item_id", "rating", "timestamp")
_RATINGS = ("rating", "timestamp")


def detect_layout(directory: str | Path) -> str | None:
    """``"ml-100k"``, ``"ml-1m"``, ``"ml-latest"`` or None for ``directory``."""
    d = Path(directory)
    for layout, files in LAYOUTS.items():
        if all((d / f).is_file() for f in files):
            return layout
    return None


def load_movielens_raw(
    directory: str | Path,
    *,
    name: str | None = None,
    text: ItemTextConfig | None = None,
    drop_user_columns: Sequence[str] = ("zip_code",),
) -> Dataset:
    """Load whichever GroupLens MovieLens layout ``directory`` holds."""
    d = Path(directory)
    layout = detect_layout(d)
    if layout is None:
        wanted = "; ".join(f"{k}: {', '.join(v)}" for k, v in LAYOUTS.items())
        raise DataError(f"no MovieLens files found (expected one of — {wanted})", path=d)
    loader = {"ml-100k": _ml100k, "ml-1m": _ml1m, "ml-latest": _ml_latest}[layout]
    interactions, items, users = loader(d, text, drop_user_columns)
    return Dataset(
        name=name or d.name,
        interactions=interactions,
        items=items,
        users=users,
        rating_range=RATING_RANGES[layout],
    )


_Frames = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]


def _ml100k(d: Path, text: ItemTextConfig | None, drop: Sequence[str]) -> _Frames:
    path = d / "u.data"
    raw = read_delimited(path, sep="\t", names=_INTER, header=False, float_cols=_RATINGS)
    warn_if_cut_short(path, raw)
    interactions = finish_interactions(raw, path)

    path = d / "u.item"
    flags = [f"g{i}" for i in range(len(ML100K_GENRES))]
    names = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *flags]
    raw = read_delimited(
        path, sep="|", names=names, header=False, encoding=UTF8_ELSE_LATIN1, quoted=False
    )
    titles, years = split_title_year(raw["title"])
    # Some titles lack "(Year)"; the release date ("01-Jan-1995") still has it.
    date_years = pd.to_numeric(raw["release_date"].str[-4:], errors="coerce")
    on = raw[flags].to_numpy() == "1"
    genres = ["|".join(g for g, f in zip(ML100K_GENRES, row, strict=True) if f) for row in on]
    frame = pd.DataFrame(
        {
            "item_id": raw["item_id"],
            "title": titles,
            "year": years.fillna(date_years),
            "genres": normalise_genres(pd.Series(genres, index=raw.index)),
            "release_date": raw["release_date"],
            "imdb_url": raw["imdb_url"],
            LINE_COL: raw[LINE_COL],
        }
    )
    items = finish_items(frame, path, text)

    users = None
    path = d / "u.user"
    if path.is_file():
        names = ["user_id", "age", "gender", "occupation", "zip_code"]
        raw = read_delimited(path, sep="|", names=names, header=False, quoted=False)
        users = finish_users(raw, path, drop=drop)
    return interactions, items, users


def _ml1m(d: Path, text: ItemTextConfig | None, drop: Sequence[str]) -> _Frames:
    path = d / "ratings.dat"
    raw = read_delimited(
        path, sep="::", names=_INTER, header=False, float_cols=_RATINGS, quoted=False
    )
    warn_if_cut_short(path, raw)
    interactions = finish_interactions(raw, path)

    path = d / "movies.dat"
    raw = read_delimited(
        path,
        sep="::",
        names=["item_id", "title", "genres"],
        header=False,
        encoding=UTF8_ELSE_LATIN1,
        quoted=False,
    )
    items = _items_from_titles(raw, path, text)

    users = None
    path = d / "users.dat"
    if path.is_file():
        names = ["user_id", "gender", "age", "occupation", "zip_code"]
        raw = read_delimited(path, sep="::", names=names, header=False, quoted=False)
        users = finish_users(raw, path, drop=drop)
    return interactions, items, users


def _ml_latest(d: Path, text: ItemTextConfig | None, drop: Sequence[str]) -> _Frames:
    path = d / "ratings.csv"
    raw = read_delimited(path, sep=",", float_cols=_RATINGS)
    warn_if_cut_short(path, raw)
    _check_header(raw, path, ("userId", "movieId", "rating", "timestamp"))
    raw = raw.rename(columns={"userId": "user_id", "movieId": "item_id"})
    interactions = finish_interactions(raw[[*_INTER, LINE_COL]], path)

    path = d / "movies.csv"
    raw = read_delimited(path, sep=",")
    _check_header(raw, path, ("movieId", "title", "genres"))
    items = _items_from_titles(raw.rename(columns={"movieId": "item_id"}), path, text)
    return interactions, items, None


def _items_from_titles(raw: pd.DataFrame, path: Path, text: ItemTextConfig | None) -> pd.DataFrame:
    titles, years = split_title_year(raw["title"])
    frame = pd.DataFrame(
        {
            "item_id": raw["item_id"],
            "title": titles,
            "year": years,
            "genres": normalise_genres(raw["genres"]),
            LINE_COL: raw[LINE_COL],
        }
    )
    return finish_items(frame, path, text)


def _check_header(frame: pd.DataFrame, path: Path, wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        have = [str(c) for c in frame.columns if c != LINE_COL]
        raise DataError(
            f"column(s) {', '.join(missing)} missing from the header (found: {', '.join(have)})",
            path=path,
            row=1,
            field=missing[0],
        )

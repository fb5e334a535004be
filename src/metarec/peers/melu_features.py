"""MeLU's categorical inputs built from what MovieLens offers here.

MeLU (Lee et al., KDD 2019) embeds four item features — MPAA rate, genres,
director, actors — and four user features — gender, age, occupation, zip
code. The RecBole copies of MovieLens used here have title, year and genres
for items (no rating certificate, director or cast), so the item side is
*year as a category* (in the MPAA rate's place) plus genres as a multi-hot
vector whose embedding is averaged, exactly as MeLU averages genres. The
user side uses whichever of gender, age, occupation and zip code the users
table has (metarec's loaders drop zip codes by default).

Code 0 is "unknown" in every vocabulary, so a new item from an unseen year
or a user without a features row still gets an input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from metarec.data.features import UserFeatureEncoder

USER_COLUMNS = ("gender", "age", "occupation", "zip_code")


def _year_token(value: object) -> str:
    year = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return "" if pd.isna(year) else str(int(year))


def _genre_tokens(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [g.strip() for g in str(value).split("|") if g.strip()]


@dataclass
class ItemFeatures:
    """Year and genre vocabularies fitted on the catalogue (1-based; 0 = unknown)."""

    years: dict[str, int] = field(default_factory=dict)
    genres: dict[str, int] = field(default_factory=dict)

    @classmethod
    def fit(cls, items: pd.DataFrame) -> ItemFeatures:
        year_col = items.get("year", pd.Series(dtype=float))
        genre_col = items.get("genres", pd.Series(dtype=str))
        years = sorted({_year_token(v) for v in year_col} - {""})
        genres = sorted({g for v in genre_col for g in _genre_tokens(v)})
        return cls({y: i + 1 for i, y in enumerate(years)}, {g: i for i, g in enumerate(genres)})

    @property
    def n_years(self) -> int:
        return len(self.years)

    @property
    def n_genres(self) -> int:
        return len(self.genres)

    def encode(self, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Year codes int64 [n], genre multi-hot float32 [n, n_genres]; unknown genres dropped."""
        n = len(items)
        year_col = items["year"] if "year" in items.columns else pd.Series([None] * n)
        years = np.array([self.years.get(_year_token(v), 0) for v in year_col], dtype=np.int64)
        multi_hot = np.zeros((n, self.n_genres), dtype=np.float32)
        if "genres" in items.columns:
            for row, value in enumerate(items["genres"]):
                cols = [self.genres[g] for g in _genre_tokens(value) if g in self.genres]
                multi_hot[row, cols] = 1.0
        return years, multi_hot


def user_encoder(users: pd.DataFrame | None) -> UserFeatureEncoder:
    """Categorical codes for MeLU's user features present in ``users``.

    Zip codes stay categories even when they look numeric (the shared encoder
    would cut a many-valued numeric column into quantile bins, which suits
    ages, not postcodes).
    """
    if users is None:
        return UserFeatureEncoder()
    columns = [c for c in USER_COLUMNS if c in users.columns]
    enc = UserFeatureEncoder.fit(users, columns)
    if "zip_code" in enc.bins:
        del enc.bins["zip_code"]
        # read as the fit reads categories (blank is unknown, code 0; 10000.0 from a
        # column with gaps is "10000"): str() coded a blank zip 1 in training, unknown
        # when served, and no zip pandas read as a float matched a served one
        levels = sorted(set(enc._raw("zip_code", users["zip_code"])) - {""})
        enc.vocab["zip_code"] = {v: i + 1 for i, v in enumerate(levels)}
    return enc

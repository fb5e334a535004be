"""Data specs: where a data set comes from, as a plain dict a run can record.

A spec has the keys of :data:`SPEC_KEYS` (the CLI's data options, one for
one). ``metarec train`` saves the spec it was given in the run's metadata, so
``evaluate``, ``ensemble``, ``abtest`` and ``retrain`` reload the same data
without being told again. Paths in a spec are absolute, so a run folder can be
used from any working directory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from metarec.data.schema import Dataset
from metarec.errors import ConfigError, DataError

SPEC_KEYS = (
    "dataset",
    "data",
    "interactions",
    "items",
    "users",
    "user_col",
    "item_col",
    "rating_col",
    "timestamp_col",
    "title_col",
    "genre_col",
    "year_col",
    "text_cols",
    "user_feature_cols",
    "rating_range",
    "strict",
    "item_id_col",
    "users_id_col",
)
_PATH_KEYS = ("data", "interactions", "items", "users")


def make_spec(values: dict[str, Any]) -> dict[str, Any]:
    """A spec from ``values`` (missing keys become None), with its paths made absolute."""
    spec: dict[str, Any] = {k: values.get(k) for k in SPEC_KEYS}
    for k in _PATH_KEYS:
        if spec[k]:
            try:
                spec[k] = str(Path(spec[k]).resolve())
            except (OSError, RuntimeError):  # RuntimeError: a symlink loop before 3.13
                raise DataError(
                    "is a symbolic link that points back to itself (a loop)", path=spec[k]
                ) from None
    return spec


def names_data(spec: dict[str, Any] | None) -> bool:
    """Whether ``spec`` says where data is (otherwise a caller falls back to a run's)."""
    return bool(spec and any(spec.get(k) for k in ("dataset", "data", "interactions")))


def load_from_spec(spec: dict[str, Any], *, cleaned: bool = True) -> Dataset:
    """Load (and unless ``cleaned=False``, clean) the data set a spec describes.

    ``spec["strict"]`` turns every value problem cleaning would fix (a bad
    rating, an unknown item, empty text, ...) into an error naming file and line.
    """
    from metarec.data import clean

    raw = _load_raw(spec)
    if not cleaned:
        return raw
    return clean(raw, rating_range=spec_rating_range(spec), strict=bool(spec.get("strict")))


def spec_rating_range(spec: dict[str, Any]) -> tuple[float, float] | None:
    """The spec's ``rating_range`` ("min,max") as numbers; None leaves it to the data."""
    if not spec.get("rating_range"):
        return None
    try:
        lo, hi = (float(x) for x in str(spec["rating_range"]).split(","))
    except ValueError:
        raise ConfigError(
            f"--rating-range: expected min,max, got {spec['rating_range']!r}"
        ) from None
    # checked here, as the flag: 5,1 was a "problem" of the data in `data validate`
    # (exit 1), or named the Python argument rating_range
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ConfigError(
            f"--rating-range: expected finite min <= max, got {spec['rating_range']!r}"
        )
    return lo, hi


def _columns(value: str | None) -> list[str]:
    return [c.strip() for c in (value or "").split(",") if c.strip()]


def _load_raw(spec: dict[str, Any]) -> Dataset:
    from metarec.data import load_dataset, load_path, load_table

    if spec.get("interactions"):
        return load_table(
            spec["interactions"],
            spec.get("items"),
            spec.get("users"),
            user_col=spec.get("user_col") or "user_id",
            item_col=spec.get("item_col") or "item_id",
            rating_col=spec.get("rating_col") or "rating",
            timestamp_col=spec.get("timestamp_col"),
            item_id_col=spec.get("item_id_col"),
            users_id_col=spec.get("users_id_col"),
            title_col=spec.get("title_col"),
            genre_col=spec.get("genre_col"),
            year_col=spec.get("year_col"),
            text_cols=_columns(spec.get("text_cols")),
            user_feature_cols=_columns(spec.get("user_feature_cols")),
            rating_range=spec_rating_range(spec),
        )
    if spec.get("dataset"):
        return load_dataset(spec["dataset"], root=spec.get("data"), clean=False)
    if spec.get("data"):
        return load_path(spec["data"], rating_range=spec_rating_range(spec))
    raise ConfigError(
        "no data given: use --dataset NAME [--data DIR], --data DIR, or --interactions FILE"
    )

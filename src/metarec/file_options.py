"""The data options for one's own files, one table for both their spellings: the
CLI's flags (``--user-col``) and a data spec's keys (``user_col``,
:mod:`metarec.data.spec`). Read by the CLI's parser and by the command a benchmark
records, whether run at the shell or from Python. Imports nothing heavy: the CLI
reads it before it knows whether it needs pandas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# your own files: (flag, attribute, default) in the order a reproduction command lists them
FILE_ARGS: tuple[tuple[str, str, str | None], ...] = (
    ("--interactions", "interactions", None),
    ("--items", "items", None),
    ("--users", "users", None),
    ("--user-col", "user_col", None),
    ("--item-col", "item_col", None),
    ("--rating-col", "rating_col", None),
    ("--timestamp-col", "timestamp_col", None),
    ("--title-col", "title_col", None),
    ("--genre-col", "genre_col", None),
    ("--year-col", "year_col", None),
    ("--text-cols", "text_cols", ""),
    ("--text-template", "text_template", None),
    ("--user-feature-cols", "user_feature_cols", ""),
    ("--rating-range", "rating_range", None),
    ("--items-id-col", "item_id_col", None),
    ("--users-id-col", "users_id_col", None),
)


def file_flags(values: Mapping[str, Any]) -> list[str]:
    """The flags that give ``values`` (a spec, or the CLI's parsed options) again: the
    ones not at their defaults, in the table's order, ``--strict`` last."""
    parts: list[str] = []
    for flag, key, default in FILE_ARGS:
        value = values.get(key)
        if value is not None and value != default:
            parts += [flag, str(value)]
    return parts + (["--strict"] if values.get("strict") else [])

"""JSON Lines tables: one JSON object a line, as review and catalogue dumps ship
(Amazon reviews, Yelp, Goodreads).

Each key becomes a column; a key missing from a line is a missing value there.
Values keep their JSON types, so a list of categories stays a list for the item
text to join, and numbers need no parsing. A JSON array of objects is refused
with the fix: its records have no lines for an error to name.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec.data.columns import exact_integers, number_lines
from metarec.errors import DataError

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson", ".json")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are each given once: json keeps the last of a repeated
    key without a word, so one of two ratings would be read."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _values(records: list[dict[str, Any]], key: str) -> list[Any]:
    return [r.get(key) for r in records]


def read_json_lines(data: bytes, path: str | Path) -> pd.DataFrame:
    """The objects of ``data`` as a frame, with each one's line in ``_line``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # JSON is UTF-8 (RFC 8259), so no guessing
        raise DataError(
            f"byte 0x{data[exc.start]:02x} is not UTF-8; JSON text is UTF-8",
            path=path,
            row=data.count(b"\n", 0, exc.start) + 1,
        ) from None
    if text.lstrip().startswith("["):
        raise DataError(
            "is a JSON array; write one object a line (JSON Lines), e.g. with "
            "`jq -c '.[]' in.json > out.jsonl`",
            path=path,
        )
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=_object)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"not JSON ({exc.msg} at column {exc.colno})", path=path, row=n
            ) from None
        except ValueError as exc:  # a repeated key
            raise DataError(str(exc), path=path, row=n) from None
        except RecursionError:  # [[[[...]]]] past the parser's depth
            raise DataError("not JSON this reads (nested too deeply)", path=path, row=n) from None
        if not isinstance(value, dict):
            raise DataError(
                f"expected one JSON object a line, got {type(value).__name__} {line.strip()!r:.40}",
                path=path,
                row=n,
            )
        records.append(value)
        lines.append(n)
    if not records:
        raise DataError("the file is empty: expected one JSON object a line", path=path)
    frame = pd.DataFrame.from_records(records)
    for col in frame.columns:
        frame[col] = exact_integers(frame[col], partial(_values, records, col))
    number_lines(frame, np.asarray(lines), path)
    return frame

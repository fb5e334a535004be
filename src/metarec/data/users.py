"""Which columns of a users file become user features, and that each holds one value.

Two kinds of column are left out, each with a warning naming the file and the
columns, since a feature ignored without a word gives a worse model without a clue:

* a column without a name in the header (``Unnamed: 0``, or an empty name): the row
  index pandas' ``to_csv`` writes unless ``index=False``. Numbering the rows, it is
  unique per user, as ``zip_code`` nearly is, and describes no one; named in
  ``user_feature_cols`` it is used all the same.
* a column whose name starts with ``_`` (:func:`metarec.data.columns.own_columns`):
  that prefix is metarec's internal columns' (``_line``, ``_raw_<column>``), which
  cleaning removes by it; ``user_feature_cols`` refuses the name, and renaming the
  column keeps it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path

from metarec.data.columns import LINE_COL

# what pandas' read_csv names an empty header field (and a MultiIndex's levels)
_UNNAMED = re.compile(r"Unnamed: \d+(_level_\d+)?")

# every user feature is one categorical token (metarec.data.features encodes str(value),
# one vocabulary entry each) and a served user's feature must be a number, text or
# null (UserFeatureEncoder.problem): a list joined as the items file joins its text
# would be one category per combination ("en, fr" apart from "fr, en") that no
# served user could match, so a list is refused rather than joined
ONE_FEATURE_VALUE = (
    "a user feature is one value per user (a number or text), as a served user's "
    "features are; write one value, or leave the column out (--user-feature-cols "
    "names the columns to use)"
)


def default_feature_columns(
    columns: Iterable[object], id_col: str, source: str | Path
) -> list[str]:
    """A users file's columns but its id and ``_line``, less unnamed index columns
    (with a warning): the user features when none are named."""
    cols = [c for c in columns if c not in (id_col, LINE_COL)]
    unnamed = [c for c in cols if not str(c).strip() or _UNNAMED.fullmatch(str(c))]
    if unnamed:
        names = ", ".join(repr(str(c)) for c in unnamed)
        warnings.warn(
            f"{source}: column(s) {names} not used as user features: a column "
            "without a name in the header is a row index (pandas' to_csv writes one "
            "unless index=False), which describes no user; name it with "
            "--user-feature-cols to use it",
            stacklevel=3,
        )
    return [str(c) for c in cols if c not in unnamed]

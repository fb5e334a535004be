"""User side features as integer codes (0 = unknown), persisted as JSON.

Every feature is treated as categorical. A numeric column with many distinct
values (ml-100k's exact ages) is cut into quantile bins first, so that a
new user's age of 37 lands in a learned bin instead of an unseen token. One with
few values is read as given: ml-1m's ages are GroupLens' bracket codes (1, 18, 25,
35, 45, 50, 56), where 37 is a category no user had (unknown), and 35 its bracket.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from metarec.data.columns import plain, str_ids
from metarec.errors import DataError, ModelError
from metarec.values import is_number, is_whole

MAX_LEVELS = 24


def user_rows(
    users: pd.DataFrame | None, ids: Sequence[object] | np.ndarray
) -> pd.DataFrame | None:
    """One row of side features per id in ``ids`` (ids compared as text, as the loaders
    write them: 61.0 is "61"; unknown ids get an all-missing row): the ``users`` frame
    every model's scoring takes."""
    if users is None:
        return None
    if not isinstance(users, pd.DataFrame) or "user_id" not in users.columns:
        raise DataError(
            "user_rows: users: expected a DataFrame with a user_id column, got "
            + (f"columns {list(users.columns)[:8]}" if isinstance(users, pd.DataFrame) else
               type(users).__name__)
        )  # fmt: skip
    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        # "196" was users "1", "9" and "6": other people's features, without a word.
        # Any other iterable is a list of ids: pandas' unique() of a text column is an
        # ArrowStringArray, no Sequence
        raise DataError(f"user_rows: ids: expected a list of user ids, got {ids!r:.60}")
    # str() wrote 1.0 as "1.0", which no id "1" matched: every user went unknown
    table = users.assign(user_id=str_ids(users["user_id"])).drop_duplicates("user_id")
    keys = [_id_text(i) for i in ids]
    return table.set_index("user_id").reindex(keys).reset_index()


def short_name(key: object, width: int = 60) -> str:
    """A feature name as a message names it: a request's key may be 100,000
    characters, all of which a 422 echoed back."""
    text = str(key)
    return text if len(text) <= width else f"{text[: width - 1]}…"


def _id_text(value: object) -> str:
    """One id as :func:`~metarec.data.columns.str_ids` writes a column of them."""
    value = plain(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2.0**63:
        return str(int(value))
    return str(value)


def feature_columns(users: pd.DataFrame) -> list[str]:
    """The columns of a users table that describe users: all but ``user_id`` and
    metarec's own ``_`` columns (a file's line numbers, ``_line``, which load_table keeps
    for messages, were binned as a feature, every served user unknown in them)."""
    return [c for c in users.columns if c != "user_id" and not str(c).startswith("_")]


@dataclass
class UserFeatureEncoder:
    columns: list[str] = field(default_factory=list)
    vocab: dict[str, dict[str, int]] = field(default_factory=dict)
    bins: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, users: pd.DataFrame | None, columns: list[str] | None = None
    ) -> UserFeatureEncoder:
        if users is None:
            return cls()
        cols = columns if columns is not None else feature_columns(users)
        enc = cls(columns=list(cols))
        for col in cols:
            values = users[col]
            numeric = many_numbers(values)
            if numeric is not None:
                qs = np.unique(np.quantile(numeric, np.linspace(0, 1, 8)[1:-1]))
                enc.bins[col] = [float(q) for q in qs]
            # missing is code 0, "unknown", as for a served user who does not say:
            # training users without a value teach the model what unknown means
            levels = sorted(set(enc._raw(col, values)) - {""})
            enc.vocab[col] = {v: i + 1 for i, v in enumerate(levels)}
        return enc

    def _raw(self, col: str, values: pd.Series) -> list[str]:
        if col in self.bins:
            # blanks first: pandas reads NaT as int64's minimum, the youngest bin, where
            # a served user's NaT is unknown
            missing = values.map(blank).to_numpy(dtype=bool)
            given = values.astype(object).where(~missing, None)
            numeric = pd.to_numeric(given, errors="coerce").to_numpy(dtype=float)
            codes = np.searchsorted(np.asarray(self.bins[col]), numeric, side="right")
            return [
                f"bin{c}" if not np.isnan(x) else "" for c, x in zip(codes, numeric, strict=True)
            ]
        return ["" if blank(v) else category(v) for v in values]

    @property
    def cardinalities(self) -> list[int]:
        return [len(self.vocab[c]) for c in self.columns]

    def transform(self, users: pd.DataFrame | None, user_ids: np.ndarray) -> np.ndarray:
        """Codes [len(user_ids), F] in the order of ``user_ids``; unknown → 0."""
        out = np.zeros((len(user_ids), len(self.columns)), dtype=np.int64)
        if users is None or not self.columns:
            return out
        table = users.drop_duplicates("user_id").set_index("user_id").reindex(pd.Index(user_ids))
        for j, col in enumerate(self.columns):
            if col not in table.columns:
                continue
            vocab = self.vocab[col]
            out[:, j] = [code_of(vocab, v) for v in self._raw(col, table[col])]
        return out

    def encode_one(self, features: dict[str, Any] | None) -> np.ndarray:
        """Codes for one user given as ``{"age": 25, "gender": "F"}``; missing → 0."""
        features = features or {}
        out = np.zeros(len(self.columns), dtype=np.int64)
        # a plain-Python path: this runs once per served request, where pandas costs ms
        for j, col in enumerate(self.columns):
            value = features.get(col)
            if _missing(value):
                continue
            if col in self.bins:
                # unreadable (entry points refuse it first: problem()): unknown, not the
                # bin of True's 1.0 or infinity's top bin
                if not _reads_as_number(value) or not _finite(value):
                    continue
                x = float(value)  # type: ignore[arg-type]
                token = f"bin{int(np.searchsorted(np.asarray(self.bins[col]), x, side='right'))}"
            else:
                token = category(value)
            out[j] = code_of(self.vocab[col], token)
        return out

    def problem(
        self, features: Mapping[str, Any], *, json_types: bool = True, unset: str | None = None
    ) -> str | None:
        """What this encoder cannot read in one user's ``features`` (None: nothing).

        ``json_types`` (the HTTP API, whose clients send JSON): a key it has no column
        for (a typo, ``Age`` for ``age``, was read as "unknown" without a word), or a
        value that is not a JSON number where it bins numbers. Otherwise (Python, where a
        users-table row holds its id and ages as text): only values :meth:`encode_one`
        cannot read, a list or a mapping, or text that is no number where it bins.
        Either way a boolean (True is no age 1) or infinity (no bin) where it bins.
        A category it has not seen is readable: it counts as unknown, as a new one should.
        ``unset``: how the caller's user says "no value" in a message (the CLI: leave
        the option out), where JSON's is null and Python's None.
        An encoder without columns (a model that uses no user features) reads none: it
        refuses any over JSON, and Python's reading (which warns of them) none."""
        if not self.columns:
            if json_types and features:
                first = short_name(next(iter(features)))
                return (
                    f"{first}: this model reads no user features (it was trained without "
                    "them); send none"
                )
            return None
        for key, value in features.items():
            if key not in self.vocab:
                if not json_types:
                    continue
                read = ", ".join(self.columns)
                return f"{short_name(key)}: not a feature of this model (it reads {read})"
            if _missing(value) or (not json_types and blank(value)):
                continue  # None, NaN, pd.NA; and a file's empty field, read from a table
            if not json_types and key in self.bins and gap_word(value):
                continue  # a file's "NA" where it bins numbers: a gap, as fitting read it
            unreadable = self._value_problem(key, value, json_types=json_types, unset=unset)
            if unreadable is not None:
                return unreadable
        return None

    def readable(self, features: Mapping[str, Any]) -> dict[str, Any]:
        """``features`` less the keys this model has no column for and the values
        :meth:`problem` (Python's reading) refuses: what a stored profile still says to a
        model loaded after it was stored."""
        return {
            key: value
            for key, value in features.items()
            if key in self.vocab
            and (blank(value) or self._value_problem(key, value, json_types=False) is None)
        }

    def frame_problem(self, users: pd.DataFrame) -> str | None:
        """:meth:`problem` (Python's reading) for each row of a users table, naming the
        first row it finds one in by position and ``user_id``: the table a model's
        ``predict_tasks`` takes, whose unreadable values :meth:`transform` would code
        as "unknown" without a word. Missing values and unseen categories are readable.
        """
        for col in self.columns:
            if col not in users.columns:
                continue
            values = users[col]
            kind = values.dtype.kind
            text = isinstance(values.dtype, pd.StringDtype)
            if kind in "iu" or (col not in self.bins and (kind == "f" or text)):
                continue  # each value readable: no loop over an evaluation's rows
            if kind == "f":
                numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
                bad = values.notna().to_numpy() & ~np.isfinite(numbers)
                rows = np.flatnonzero(bad)
            else:
                rows = np.flatnonzero(
                    [
                        not blank(v)
                        and not gap_word(v)  # a gap in a binned column, as fitting read it
                        and self._value_problem(col, v, json_types=False) is not None
                        for v in values
                    ]
                )
            if len(rows):
                row = int(rows[0])
                value = plain(values.iloc[row])  # 5, not np.int64(5), in the message
                who = ""
                if "user_id" in users.columns:
                    who = f" (user_id {plain(users['user_id'].iloc[row])!r})"
                return f"row {row}{who}: {self._value_problem(col, value, json_types=False)}"
        return None

    def _value_problem(
        self, key: str, value: Any, *, json_types: bool, unset: str | None = None
    ) -> str | None:
        """What is wrong with one present value of column ``key`` (None: nothing)."""
        # null is JSON's word; a table's field is left empty, Python's value None
        nothing = unset or ("null" if json_types else "left empty (None)")
        if isinstance(value, list | tuple | dict | set | np.ndarray):
            # read as the text of its repr: an unknown category without a word
            return f"{key}: must be a number, a string or {nothing} (got {value!r:.40})"
        if key not in self.bins:
            return None  # any one value is a category, an unseen one "unknown"
        # True is 1.0 to float(): a flag, not an age
        numeric = isinstance(value, int | float | np.number) and not isinstance(
            value, bool | np.bool_
        )
        if not numeric and (json_types or not _reads_as_number(value)):
            return f"{key}: must be a number or {nothing} (got {value!r:.40})"
        if not _finite(value):  # inf landed in the top bin, "nan" text there too
            return f"{key}: must be a finite number or {nothing} (got {value!r:.40})"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "vocab": self.vocab, "bins": self.bins}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "features") -> UserFeatureEncoder:
        """Read :meth:`to_dict`'s form back; a saved run's hand-edited or damaged
        ``features`` is a ModelError naming ``source`` and the field."""

        def bad(field: str, expected: str, got: Any) -> ModelError:
            return ModelError(f"{source}: {field}: expected {expected}, got {got!r:.60}")

        if not isinstance(data, dict):
            raise bad("features", "an object with columns and vocab", data)
        columns, vocab, bins = data.get("columns"), data.get("vocab"), data.get("bins", {})
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise bad("features.columns", "a list of column names", columns)
        if not isinstance(vocab, dict):
            raise bad("features.vocab", "an object of column: {value: code}", vocab)
        for col in columns:
            codes = vocab.get(col)
            if not isinstance(codes, dict) or not all(
                is_whole(v) and v >= 0 for v in codes.values()
            ):
                raise bad(f"features.vocab.{col}", "an object of value: code >= 0", codes)
        if not isinstance(bins, dict) or not all(
            isinstance(edges, list) and all(is_number(x) for x in edges) for edges in bins.values()
        ):
            raise bad("features.bins", "an object of column: [edges]", bins)
        canonical = {col: rekeyed(vocab[col]) for col in columns}
        return cls(list(columns), canonical, dict(bins))


@dataclass(frozen=True)
class FeatureReaders:
    """The user-feature encoders of several models read as one: an ensemble's metarec
    members, which may read different features (one trained without any beside one with
    age). A key is a feature if any of them reads it; a value must suit every one that
    reads its key. Checked against the primary member alone, an ensemble refused age
    that its other member reads, and served every member but the primary without the
    features it was weighted with."""

    encoders: tuple[UserFeatureEncoder, ...]

    @functools.cached_property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(c for e in self.encoders for c in e.columns))

    @functools.cached_property
    def vocab(self) -> dict[str, dict[str, int]]:
        """The keys read, for :func:`~metarec.inputs.warn_unused_features` (each key's
        codes are its first reader's: codes are per model, so nothing encodes by them)."""
        merged: dict[str, dict[str, int]] = {}
        for enc in self.encoders:
            for key, codes in enc.vocab.items():
                merged.setdefault(key, codes)
        return merged

    def problem(
        self, features: Mapping[str, Any], *, json_types: bool = True, unset: str | None = None
    ) -> str | None:
        """:meth:`UserFeatureEncoder.problem` for them all: a key none reads (over JSON),
        or a value one that reads its key cannot."""
        reading = [e for e in self.encoders if e.columns]
        if not reading:
            return UserFeatureEncoder().problem(features, json_types=json_types, unset=unset)
        if json_types:
            read = self.columns
            unknown = next((k for k in features if k not in read), None)
            if unknown is not None:
                names = ", ".join(read)
                return f"{short_name(unknown)}: not a feature of this model (it reads {names})"
        for enc in reading:
            mine = {k: v for k, v in features.items() if k in enc.vocab}
            unreadable = enc.problem(mine, json_types=json_types, unset=unset)
            if unreadable is not None:
                return unreadable
        return None

    def readable(self, features: Mapping[str, Any]) -> dict[str, Any]:
        """``features`` less the keys none reads and the values one that reads their key
        refuses (:meth:`UserFeatureEncoder.readable`, for them all)."""
        read = self.vocab
        kept = {k: v for k, v in features.items() if k in read}
        for enc in self.encoders:
            own = enc.readable(kept)
            kept = {k: v for k, v in kept.items() if k not in enc.vocab or k in own}
        return kept


def feature_readers(model: Any) -> FeatureReaders:
    """The user-feature encoders of a run, or of each of an ensemble's metarec members."""
    runs = model.metarec_members() if hasattr(model, "metarec_members") else [model]
    encoders = [getattr(r, "features", None) for r in runs]
    found = tuple(e for e in encoders if isinstance(e, UserFeatureEncoder))
    return FeatureReaders(found or (UserFeatureEncoder(),))


def many_numbers(values: pd.Series) -> pd.Series | None:
    """A column's present values as numbers, where it is read as numbers to bin rather
    than as categories: every non-blank value a number, more distinct ones than a
    category has (exact ages). A blank is a missing value, not a category nor a number
    that is not one: one blank age made the column categories, 34 unknown beside the
    file's "34.0". None for a column of categories."""
    present = values[~values.map(blank).to_numpy(dtype=bool)]
    numbers = pd.to_numeric(present, errors="coerce")
    # a gap written out (R's write.csv: "NA") made exact ages categories, "NA" one of
    # them and every age training did not see unknown: here it is a gap, as a blank
    # is, where every other value is a number (a column of text keeps "NA", Namibia)
    numbers = numbers[~present.map(gap_word).to_numpy(dtype=bool)]
    if len(numbers) and numbers.notna().all() and numbers.nunique() > MAX_LEVELS:
        return numbers
    return None


# how files write a missing number: R and pandas ("NA", "NaN"), SQL dumps ("NULL"),
# spreadsheets ("N/A"), Python's str(None)
_GAP_WORDS = frozenset({"na", "n/a", "nan", "null", "none"})


def gap_word(value: Any) -> bool:
    """Text a file writes for a missing number ("NA", "NaN", "NULL", "N/A", "None")."""
    return isinstance(value, str) and value.strip().lower() in _GAP_WORDS


V = TypeVar("V")


def rekeyed(table: Mapping[str, V]) -> dict[str, V]:
    """A saved table keyed by category values, keyed as :func:`category` reads them
    now: runs fitted before it hold "34.0" where a request's 34 reads "34". Kept as
    saved where two keys would become one (which of them a request meant is unknown)."""
    renamed = {category(k): v for k, v in table.items()}
    return renamed if len(renamed) == len(table) else dict(table)


_WHOLE_DECIMAL = re.compile(r"([+-]?)([0-9]+)\.0*")  # ASCII digits: "١٢.0" is no 12


_TRUTH = ("true", "false")


def code_of(vocab: Mapping[str, int], token: str) -> int:
    """``token``'s code in a column's ``vocab`` (0: unknown). A truth value matches in
    any of its usual spellings: JSON's true (Python's "True") was unknown in a column a
    users file wrote as "true", and a file pandas read as booleans ("True") refused
    nothing a request spelled "true" and knew it not."""
    code = vocab.get(token)
    if code is not None:
        return code
    if token.lower() in _TRUTH:
        for spelling in (token.lower(), token.capitalize(), token.upper()):
            if spelling in vocab:
                return vocab[spelling]
    return 0


def category(value: Any) -> str:
    """A category value as the text it is known by: a whole number written as a float
    (34.0, or "34.0" in a CSV pandas wrote from a column with gaps) as the integer,
    so that a request's 34 finds it; other text as it is ("007" stays "007")."""
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    whole = _WHOLE_DECIMAL.fullmatch(value.strip()) if isinstance(value, str) else None
    if whole is not None:
        # the digits as written, not through a float, which rounds 20-digit codes
        sign, digits = whole.groups()
        return ("-" if sign == "-" and digits.strip("0") else "") + digits
    return str(value)


def blank(value: Any) -> bool:
    """Missing (:func:`_missing`) or text of nothing but spaces, as a CSV's empty field
    reads."""
    return _missing(value) or (isinstance(value, str) and not value.strip())


def _missing(value: Any) -> bool:
    """None, NaN, pd.NA, NaT: what a users-table row holds for an unknown value."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # an array-like: not one missing value
        return False


def _finite(value: Any) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except (OverflowError, TypeError, ValueError):  # an int past float's range
        return False


def _reads_as_number(value: Any) -> bool:
    """Whether ``value`` is a number as training read the column (pandas' to_numeric):
    Python's float also reads "25_0" (250) and b"25", which training never took."""
    if isinstance(value, bool | np.bool_ | bytes | bytearray):
        return False
    if isinstance(value, str) and "_" in value:
        return False
    try:
        float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True

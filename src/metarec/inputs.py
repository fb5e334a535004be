"""Checks on what callers hand a recommender: histories, user features, ratings, vectors.

Shared by a single run (:class:`~metarec.recommender.Recommender`), an ensemble
(:mod:`metarec.ensemble_run`) and training (:mod:`metarec.pipeline`), so all of them
refuse a bad argument with the same DataError.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import torch

from metarec.data.columns import boolean_values, check_frame, not_index, plain
from metarec.data.features import FeatureReaders, UserFeatureEncoder, short_name
from metarec.errors import DataError
from metarec.values import off_scale

# item ids are text or whole numbers (ml-100k's "50" is also 50), numpy's included, as
# a frame's values come; ratings are numbers, numpy's too (np.float32 is no float to a
# type checker, though the checks take it)
ItemKey: TypeAlias = str | int | np.integer[Any]
RatingValue: TypeAlias = float | np.floating[Any] | np.integer[Any]
# a mapping's key type is invariant, so each kind of key is its own member
History: TypeAlias = (
    Iterable[tuple[ItemKey, RatingValue]]
    | Mapping[str, RatingValue]
    | Mapping[int, RatingValue]
    | Mapping[str | int, RatingValue]
    | pd.DataFrame
)
# items to score or rank: a list, or a frame's column or its values as they come
ItemKeys: TypeAlias = Sequence[ItemKey] | pd.Series | pd.Index | np.ndarray


def history_pairs(
    history: History | None,
    rating_range: tuple[float, float],
    resolve: Callable[[str | int], int],
    where: str = "history",
    first: int = 0,
) -> list[tuple[int, float]]:
    """A user's history as (catalogue index, rating) pairs, or a DataError naming the
    entry that is no (item, rating) on the scale. ``resolve`` maps an id or title to
    its catalogue index; ``where`` names the history in messages (``histories[3]``
    in a batch), and ``first`` is the number of its first entry there (0 in Python, 1
    for a command line's flags, which a person counts from one)."""
    if history is None:
        return []
    if isinstance(history, pd.DataFrame):
        repeated = history.columns[history.columns.duplicated()]
        twice = repeated.intersection(["item_id", "rating"])
        if len(twice):  # history["rating"] would be a frame: "rating 'rating' not a number"
            raise DataError(f"{where} has two columns named {twice[0]!r}; keep one")
        missing = {"item_id", "rating"} - set(history.columns)
        if missing:
            raise DataError(f"{where} needs columns item_id and rating; missing {sorted(missing)}")
        rows: Iterable[tuple[Any, Any]] = zip(history["item_id"], history["rating"], strict=True)
    elif isinstance(history, Mapping):
        rows = history.items()
    elif isinstance(history, pd.Series) and not all(isinstance(v, tuple | list) for v in history):
        # its values read one by one said "expected (item, rating), got 5"; read by
        # their labels, a frame's rating column given by mistake was a history of the
        # row numbers: which one is meant is the caller's to say
        raise DataError(
            f"{where}: a Series is read as (item, rating) pairs, and this one holds "
            f"{plain(history.iloc[0])!r:.40}: give dict(series) for ratings by the item ids in "
            "its index, or a frame with item_id and rating columns"
        )
    elif isinstance(history, (str, bytes)) or not isinstance(history, Iterable):
        # iterating a string would read its characters as entries
        raise DataError(
            f"{where}: expected (item, rating) pairs, a mapping or a frame, got {history!r:.60}"
        )
    else:
        rows = history
    lo, hi = rating_range
    # the scale's ends as float32 holds them: a rating between them is on the scale in
    # float32 too (rounding keeps order), so off_scale's numpy call, 2.6 µs a rating
    # and most of a long history's check, is left for the ratings outside them
    lo32, hi32 = float(np.float32(lo)), float(np.float32(hi))
    pairs: dict[int, float] = {}
    for n, row in enumerate(rows, start=first):
        if isinstance(row, (str, bytes, int, np.integer)) and not isinstance(row, (bool, np.bool_)):
            # an item without its rating: "n1" unpacked as item "n" rated "1", text
            item = plain(row)
            one = f"({item!r}, {lo:g})" if lo == hi else f"({item!r}, RATING)"
            raise DataError(
                f"{where} entry {n}: {item!r} is an item without a rating; give {one}"
                + (f": every rating of this run is {lo:g}" if lo == hi else "")
            )
        try:
            key, value = row
        except (TypeError, ValueError):
            raise DataError(f"{where} entry {n}: expected (item, rating), got {row!r}") from None
        try:
            # True is 1.0 to float(), and "5" 5.0: a client's boolean or text is a bug
            # to report, not a rating (the service refuses both alike)
            if isinstance(value, (bool, np.bool_, str, bytes)):
                raise TypeError
            rating = float(value)
        except (TypeError, ValueError):
            text = " (text)" if isinstance(value, (str, bytes)) else ""
            raise DataError(
                f"{where} entry {n} ({key!r}): rating {value!r}{text} is not a number"
            ) from None
        if not lo32 <= rating <= hi32 and (rating != rating or off_scale(rating, lo, hi)):
            raise DataError(
                f"{where} entry {n} ({key!r}): rating {rating:g} is "
                + ("not a number" if rating != rating else f"outside [{lo:g}, {hi:g}]")
            )
        pairs[resolve(key)] = rating  # a repeated item keeps its latest rating
    return list(pairs.items())


def vector_rows(
    vectors: object, ids: pd.Series, where: str, width: int | None = None
) -> np.ndarray:
    """``vectors`` as float64 [len(ids), width] (any width where None), one finite row
    per item of ``ids``, or a DataError naming what is wrong (the item, for a NaN row)."""
    try:
        arr = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: vectors: expected numbers, got {vectors!r:.60}") from None
    if arr.ndim != 2 or len(arr) != len(ids) or (width is not None and arr.shape[1] != width):
        want = f"({len(ids)}, {'d' if width is None else width})"
        raise DataError(
            f"{where}: vectors of shape {arr.shape}; expected {want} "
            "(one row per new item, the encoder's width)"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        item = ids.iloc[int(np.flatnonzero(bad)[0])]
        raise DataError(f"{where}: the vector of item {item!r} holds NaN or infinite values")
    return arr


def check_new_vectors(
    vectors: object, ids: pd.Series, catalogue: torch.Tensor, where: str = "add_items"
) -> np.ndarray:
    """New items' LM vectors as float32 [len(ids), width], or a DataError naming the item
    whose vector cannot be one: of another width, not numbers, NaN, or of a length no
    vector of this encoder has (1e30 everywhere scored 1e28 on a 1-5 scale and topped
    every list)."""
    arr = vector_rows(vectors, ids, where, int(catalogue.shape[1]))
    norms = np.linalg.norm(arr, axis=1)
    # a sentence encoder's vectors have length 1; an encoder's own outputs never stray
    # 100 times past the longest in the catalogue
    limit = 100.0 * max(float(catalogue.detach().norm(dim=1).max()), 1.0)
    if (norms > limit).any():
        row = int(np.flatnonzero(norms > limit)[0])
        raise DataError(
            f"{where}: the vector of item {ids.iloc[row]!r} has length {norms[row]:.3g}, "
            f"beyond {limit:.3g}: not a vector of this run's encoder"
        )
    return arr.astype(np.float32)


def check_features(user_features: object, where: str = "user_features") -> None:
    if user_features is not None and not isinstance(user_features, Mapping):
        raise DataError(
            f"{where}: expected a mapping such as {{'age': 25}}, got {user_features!r:.60}"
        )


def check_rating_frame(ratings: object, rating_range: tuple[float, float], where: str) -> None:
    """``ratings`` a DataFrame of user_id, item_id, rating (each column once) whose every
    row has a user, an item and a rating on the scale, or a DataError naming the first
    row that does not, by position, user and rating: training on a 9 of a 1-5 scale,
    or a NaN, went on without a word (a NaN only to end as "training diverged")."""
    ratings = check_frame(ratings, where, ("user_id", "item_id", "rating"))
    twice = sorted({str(c) for c in ratings.columns[ratings.columns.duplicated()]})
    if twice:  # which of the two is the rating? pandas would hand over both
        raise DataError(f"{where}: column(s) {twice} appear more than once")
    # compared as float32, the precision ratings are trained in: a rating clipped to the
    # top of a continuous scale (4.7) and then stored as float32 reads a hair above it
    lo, hi = rating_range
    values = pd.to_numeric(ratings["rating"], errors="coerce").to_numpy(dtype=np.float64)
    flags = boolean_values(ratings["rating"])  # True is 1.0 to to_numeric
    # "4" is 4.0 to to_numeric: taken here, and named later by its position in one
    # user's history (adapt refuses text); refused here by the frame's own row
    column = ratings["rating"]
    text = (
        column.astype(object).map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if column.dtype == object or pd.api.types.is_string_dtype(column.dtype)
        else np.zeros(len(ratings), dtype=bool)
    )
    problems = (
        (ratings["user_id"].isna().to_numpy(), "no user_id"),
        (ratings["item_id"].isna().to_numpy(), "no item_id"),
        (flags, "a boolean, not a rating"),
        (text, "text, not a number"),
        (
            np.isnan(values) | off_scale(values, lo, hi),
            f"rating outside [{np.float32(lo):g}, {np.float32(hi):g}] or not a number",
        ),
    )
    for bad, what in problems:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            user, rating = (plain(ratings[c].iloc[row]) for c in ("user_id", "rating"))
            raise DataError(f"{where}: row {row} (user_id {user!r}, rating {rating!r}): {what}")


def check_readable_features(
    encoder: UserFeatureEncoder | FeatureReaders,
    user_features: object,
    where: str = "user_features",
) -> None:
    """:func:`check_features`, and every value of a key the model uses one it can read
    (:meth:`UserFeatureEncoder.problem`: a list, text or a boolean where it bins numbers,
    infinity), or a DataError naming ``where``."""
    check_features(user_features, where)
    if not user_features:
        return
    features: Mapping[str, Any] = user_features  # type: ignore[assignment]
    unreadable = encoder.problem(features, json_types=False)
    if unreadable is not None:
        raise DataError(f"{where}: {unreadable}")


def warn_unused_features(
    encoder: UserFeatureEncoder | FeatureReaders, user_features: object, where: str
) -> None:
    """A UserWarning naming the keys of one user's ``user_features`` the model has no
    column for (but ``user_id``, a users-table row's own): :meth:`adapt`'s check, where a
    misspelt key ("agee") was read as no feature at all without a word. Not an error, as
    the HTTP API's is, and not in ``adapt_many``, which takes stored profiles that may
    hold more than one model uses."""
    if not isinstance(user_features, Mapping):
        return
    unused = [
        repr(short_name(k)) for k in user_features if k not in encoder.vocab and k != "user_id"
    ]
    if unused:
        # A model trained without user features reads none: saying so, rather than
        # nothing, tells a caller their profile made no difference.
        reads = (
            f"it reads {', '.join(encoder.columns)}"
            if encoder.columns
            else "it was trained without user features"
        )
        warnings.warn(
            f"{where}: {', '.join(unused[:5])} not a feature of this model, ignored ({reads})",
            UserWarning,
            stacklevel=3,
        )


def check_feature_codes(
    encoder: UserFeatureEncoder, codes: object, n: int, where: str
) -> np.ndarray:
    """Feature codes given as numbers ([n, F], one row a task) as int64, or a DataError
    naming ``where`` and the first code no embedding row holds: a code is a whole
    number in [0, the column's vocabulary size] (0: unknown), which a float (1.9 was
    cut to 1), a negative or a larger code (torch's IndexError) is not."""
    try:
        values = np.asarray(codes)
    except (TypeError, ValueError):  # a ragged list
        values = np.asarray(None)
    shape = (n, len(encoder.columns))
    if values.shape != shape:
        raise DataError(
            f"{where}: expected {n} rows of {shape[1]} feature codes (one a task), got "
            f"shape {values.shape}"
        )
    if values.size and values.dtype.kind not in "iuf":
        raise DataError(f"{where}: feature codes must be whole numbers, got {values.dtype}")
    limits = np.asarray(encoder.cardinalities, dtype=np.float64)
    numbers = values.astype(np.float64)
    bad = not_index(numbers, limits + 1)  # codes 1..size, 0 for unknown
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{where}: row {row}: {encoder.columns[col]} code {plain(values[row, col])!r} is "
            f"not a whole number in [0, {int(limits[col])}] (0: unknown)"
        )
    return numbers.astype(np.int64)


def check_users_frame(encoder: UserFeatureEncoder, users: pd.DataFrame, n: int, where: str) -> None:
    """A users table of one row a task, with ``user_id``, whose every value the model
    can read (:meth:`UserFeatureEncoder.frame_problem`), or a DataError naming ``where``:
    text where it bins ages was coded "unknown" without a word."""
    if "user_id" not in users.columns:
        raise DataError(
            f"{where}: a users table needs a user_id column (and one row a task); got "
            f"{[str(c) for c in users.columns][:8]}"
        )
    used = users.columns[users.columns.isin(["user_id", *encoder.columns])]
    twice = sorted({str(c) for c in used[used.duplicated()]})
    if twice:  # users[col] would be a frame of both
        raise DataError(f"{where}: column(s) {twice} appear more than once; keep one")
    if len(users) != n:
        raise DataError(f"{where}: expected {n} rows (one a task), got {len(users)}")
    unreadable = encoder.frame_problem(users)
    if unreadable is not None:
        raise DataError(f"{where}: {unreadable}")


def adapt_many_args(
    histories: object,
    user_features: object,
    encoder: UserFeatureEncoder | FeatureReaders | None = None,
) -> tuple[list[Any], list[Mapping[str, Any] | None]]:
    """``adapt_many``'s arguments as lists of one entry a user, or a DataError saying
    which is wrong: shared by a run and an ensemble, so both refuse alike. Given the
    model's ``encoder``, each feature row is also checked as ``adapt`` checks its one
    (:func:`check_readable_features`), the message naming the row."""
    if (
        histories is None
        or isinstance(histories, (str, bytes, Mapping, pd.DataFrame))
        or not isinstance(histories, Iterable)
    ):
        raise DataError(
            f"adapt_many: expected a list of histories (one a user), got {histories!r:.60}"
        )
    histories = list(histories)  # a generator too
    if user_features is None:
        return histories, [None] * len(histories)
    if isinstance(user_features, (str, bytes, Mapping)) or not isinstance(user_features, Iterable):
        raise DataError(
            f"user_features: expected one mapping (or None) a user, got {user_features!r:.60}"
        )
    rows = list(user_features)
    for n, f in enumerate(rows):
        if encoder is None:
            check_features(f, f"user_features[{n}]")
        else:
            check_readable_features(encoder, f, f"user_features[{n}]")
    if len(rows) != len(histories):
        raise DataError(f"adapt_many: {len(histories)} histories but {len(rows)} feature rows")
    return histories, rows


def renamed_users(users: Any, user_features: Any, where: str) -> Any:
    """``predict_tasks``'s users table under its name, ``users`` (what every model's
    ``predict_tasks`` and ``score_catalogue`` call it), or under the name a run's and an
    ensemble's once had, ``user_features``, with a DeprecationWarning."""
    if user_features is None:
        return users
    if users is not None:
        raise DataError(f"{where}: give users= alone (user_features= is its former name)")
    warnings.warn(
        f"{where}: user_features= is now users=, as every model's predict_tasks and "
        "score_catalogue name it; the old name will be removed",
        DeprecationWarning,
        stacklevel=3,
    )
    return user_features


def check_new_items(name: str, items: object, vectors: object) -> np.ndarray | None:
    """What an ``add_items`` override checks first: ``items`` a DataFrame, and ``vectors``
    (None stays None) one finite row of numbers per item, returned as a float64
    [len(items), d] array; else a DataError naming the model ``name``. (Unchecked, None
    as the items was a bare TypeError, text vectors a bare ValueError, and a NaN vector
    was zeroed, scoring 0 mid-list, without a word.)"""
    if not isinstance(items, pd.DataFrame):
        raise DataError(
            f"{name}.add_items: items: expected a DataFrame of the new items, got "
            f"{type(items).__name__}"
        )
    if vectors is None:
        return None
    ids = items["item_id"] if "item_id" in items.columns else pd.Series(range(len(items)))
    return vector_rows(vectors, ids.reset_index(drop=True), f"{name}.add_items")

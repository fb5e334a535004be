"""Whether a value a caller passed is a whole number or a real number.

``isinstance(x, int)`` holds for ``True``, and a bool is no count, rating or
probability; numpy's scalars (a seed from ``np.arange``, a rating from an array)
are numbers as much as Python's. Every check of an argument, a setting or a
field read from JSON asks these two, so all of them draw the line in one place.
:func:`safe_name` is the one shape a name takes in a result file's name, kept here
(no torch) so the command line checks report names before anything loads.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, TypeGuard

import numpy as np

from metarec.errors import ConfigError


def is_whole(value: object) -> TypeGuard[int | np.integer[Any]]:
    """True for an int or numpy integer, not a bool (nor 2.0: a float is no count)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float | np.integer[Any] | np.floating[Any]]:
    """True for an int, float or numpy integer or float, not a bool, text or complex
    number; NaN and infinity are numbers here (callers that need finite say so)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def check_whole(value: object, where: str, low: int) -> int:
    """``value`` as an int if it is a whole number >= ``low``, else a ConfigError naming
    ``where``: int() cut 2.5 to 2, a bool is not a count, and "5" compared with a number
    was a raw TypeError."""
    if not is_whole(value) or value < low:
        raise ConfigError(f"{where}: must be a whole number >= {low}, got {value!r:.40}")
    return int(value)


def is_finite_number(
    value: object,
) -> TypeGuard[int | float | np.integer[Any] | np.floating[Any]]:
    """:func:`is_number` and finite as a float: not NaN nor an infinity, nor an integer
    past what a float holds (a JSON 10**400, on which ``math.isfinite`` raises)."""
    if not is_number(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


# a result's name adds at most ~40 bytes to its data set's (p2-NAME-5fold-seeds3-abtest.png,
# then ".NAME.<12 hex>.tmp" while it is written): 100 leaves room under 255 bytes
MAX_NAME_BYTES = 100


def safe_name(name: str) -> str:
    """A dataset name fit for result file names: anything but letters, digits, ``.``,
    ``_`` and ``-`` becomes ``-`` (a file stem such as ``my ratings`` included). Letters
    and digits of any script stay: ``日本`` and ``中国`` both became ``data``, so the
    second benchmark replaced the first's results, and ``données`` lost its ``é``. A name
    past :data:`MAX_NAME_BYTES` is cut there and ends in a hash of the whole name."""
    cleaned = re.sub(r"[^\w.-]+", "-", name).strip("-.") or "data"
    if len(cleaned.encode()) <= MAX_NAME_BYTES:
        return cleaned
    # a 225-byte file name made result names past a file system's 255 bytes, which
    # failed only when the report was written, after every model was fitted; the hash
    # keeps two long names that share their start apart
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    head = cleaned.encode()[: MAX_NAME_BYTES - 9].decode(errors="ignore").rstrip("-.")
    return f"{head}-{digest}"


def as_scale(value: object) -> tuple[float, float] | None:
    """``value`` as a rating scale ``(low, high)``: a list or tuple of two finite numbers
    (not booleans, nor text) with low <= high; None when it is no such pair. What a run's
    manifest, a saved model's and a Dataset built by hand are each checked with."""
    if not (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(is_finite_number(v) for v in value)
    ):
        return None
    low, high = float(value[0]), float(value[1])
    return (low, high) if low <= high else None


def rated_at_least(ratings: object, threshold: float) -> np.ndarray:
    """``ratings >= threshold`` compared in float32, the precision tasks hold ratings in
    and the models compare them in: a float32 0.7 is 0.69999999, below a float64 0.7, so
    a rating at the threshold was liked for training and P2 but not for P1's metrics."""
    return np.asarray(ratings, dtype=np.float32) >= np.float32(threshold)


# a rating value held by no more than this share of the ratings is a stray, not a level
# of the scale: said by data validate's scale check and left out of the rating levels
RARE_VALUE_SHARE = 0.001


def common_values(counts: np.ndarray) -> np.ndarray:
    """Which of the distinct rating values, counted ``counts`` times, are more than a
    stray (:data:`RARE_VALUE_SHARE` of all the ratings)."""
    counts = np.asarray(counts)
    return counts > RARE_VALUE_SHARE * counts.sum()


def float32_decimal(value: float | np.floating[Any]) -> float:
    """The shortest decimal a float32 ``value`` reads back as: ratings are held in
    float32, where 0.7 is 0.699999988 as a float64; a scale's end or level read from
    them is kept as the 0.7 the data wrote (a top rating of 0.7 was refused as outside
    [0.01, 0.7], and reports showed 0.699999988079071)."""
    return float(str(np.float32(value)))


def off_scale(ratings: object, low: float, high: float) -> np.ndarray:
    """Where ``ratings`` fall below ``low`` or above ``high``, compared in float32 as
    ratings are held (NaN is not off the scale here: callers name it apart): a float32
    0.3 is 0.30000001, "above" a float64 0.3, and 13 % of a 0-0.3 scale's ratings were
    dropped as outside it."""
    with np.errstate(invalid="ignore", over="ignore"):  # 1e300: inf in float32, off it
        r = np.asarray(ratings, dtype=np.float32)
        return (r < np.float32(low)) | (r > np.float32(high))


def counted(n: int, noun: str) -> str:
    """``1 user``, ``1,200 users``: "3 ratings from 1 users" was printed."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"

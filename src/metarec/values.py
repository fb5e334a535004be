"""Whether a value a caller passed is a whole number or a real number.

``isinstance(x, int)`` holds for ``True``, and a bool is no count, rating or
probability; numpy's scalars (a seed from ``np.arange``, a rating from an array)
are numbers as much as Python's. Every check of an argument, a setting or a
field read from JSON asks these two, so all of them draw the line in one place.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import numpy as np


def is_whole(value: object) -> TypeGuard[int | np.integer[Any]]:
    """True for an int or numpy integer, not a bool (nor 2.0: a float is no count)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float | np.integer[Any] | np.floating[Any]]:
    """True for an int, float or numpy integer or float, not a bool, text or complex
    number; NaN and infinity are numbers here (callers that need finite say so)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)

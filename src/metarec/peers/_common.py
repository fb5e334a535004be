"""Helpers shared by the peer models: padded support sets, popularity, option checks.

Every peer scores a whole batch of tasks at once. The support sets differ in
length, so they are padded into ``[B, S]`` arrays with a mask (the only Python
loop is over tasks, never over catalogue items).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metarec.data.tasks import Task, UserRatings
from metarec.errors import ConfigError, ModelError
from metarec.inputs import check_new_items as check_new_items
from metarec.values import is_whole


def padded_support(tasks: Sequence[Task]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Support sets as ``items`` int64 [B, S], ``ratings`` float64 [B, S], ``mask`` bool [B, S].

    Padding has item 0, rating 0 and mask False; ``S`` is at least 1 so that
    an all-empty batch (K = 0 everywhere) still has a well-formed shape.
    """
    width = max([len(t.support_items) for t in tasks] + [1])
    items = np.zeros((len(tasks), width), dtype=np.int64)
    ratings = np.zeros((len(tasks), width), dtype=np.float64)
    mask = np.zeros((len(tasks), width), dtype=bool)
    for row, t in enumerate(tasks):
        n = len(t.support_items)
        items[row, :n] = t.support_items
        ratings[row, :n] = t.support_ratings
        mask[row, :n] = True
    return items, ratings, mask


def popularity_scores(ratings: UserRatings, n_items: int, like_threshold: float) -> np.ndarray:
    """Number of likes (rating >= ``like_threshold``) per item, ties broken by rating count.

    The rating count enters as a fraction below 1, so it only orders items with
    equal like counts. Items never rated score 0 (last).
    """
    liked = ratings.ratings >= like_threshold
    likes = np.bincount(ratings.items[liked], minlength=n_items).astype(np.float64)
    counts = np.bincount(ratings.items, minlength=n_items).astype(np.float64)
    return likes + counts / (counts.max(initial=0.0) + 1.0)


def popularity_fallback(popularity: np.ndarray) -> np.ndarray:
    """Popularity rescaled into [0, 1): the score row for a user with nothing to go on."""
    return popularity / (popularity.max(initial=0.0) + 1.0)


def require(value: object, name: str) -> None:
    """Raise :class:`ModelError` when a model is used before ``fit``."""
    if value is None:
        raise ModelError(f"{name}: not fitted; call fit() first")


def check_positive(
    name: str, option: str, value: float, *, allow_zero: bool = False, whole: bool = False
) -> None:
    """ConfigError unless ``value`` is a finite number > 0 (>= 0 with ``allow_zero``);
    ``whole``: a count, which int() would have cut (0.5 iterations trained nothing and
    0.5 a batch divided by zero)."""
    bound = ">= 0" if allow_zero else "> 0"
    kind = "whole number" if whole else "number"
    # a number first: "x" (an edited ensemble.json member's options) was a TypeError
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise ConfigError(f"{name}: option {option} must be a {kind} {bound}, got {value!r:.60}")
    ok = value >= 0 if allow_zero else value > 0
    # infinity: a damping of inf gave everyone the popularity order without a word
    if not ok or not np.isfinite(value) or (whole and not is_whole(value)):
        raise ConfigError(f"{name}: option {option} must be a finite {kind} {bound}, got {value!r}")


def check_flag(name: str, option: str, value: object) -> None:
    """ConfigError unless ``value`` is True or False ("no" is truthy)."""
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(f"{name}: option {option} must be True or False, got {value!r:.40}")

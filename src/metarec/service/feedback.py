"""Feedback events → the ratings the model adapts on.

The model learns from ratings, so every kind of feedback is mapped onto the
model's rating range ``[lo, hi]`` (1–5 for MovieLens):

=========  ====================================  ==========
event      rating used for adaptation             on 1–5
=========  ====================================  ==========
rating     its ``value`` (must lie in [lo, hi])   value
like       top of the range                       5
dislike    bottom of the range                    1
click      a weak positive: lo + 0.75 (hi − lo)   4
skip       a weak negative: lo + 0.25 (hi − lo)   2
=========  ====================================  ==========

When a user has several events for one item, the latest wins (by the event's
timestamp, then by arrival order): a like after a rating of 2 means the user
changed their mind.

A run trained on implicit feedback read as all 1s has a one-value range: there a
dislike or a skip has no rating below the others to stand for, and taking it as
the one value would read it as a positive. It stands for no rating (None): the
item is left out of the user's adaptation and of their recommendations, and out
of retraining's data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

EventType = Literal["rating", "click", "skip", "like", "dislike"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

# position of each implicit event type within the rating range (0 = bottom, 1 = top)
_IMPLICIT_LEVEL = {"like": 1.0, "dislike": 0.0, "click": 0.75, "skip": 0.25}


@dataclass(frozen=True)
class StoredEvent:
    """One event as the store returns it, in the order it should be applied."""

    event_id: str
    item_id: str
    type: str
    value: float | None
    timestamp: float  # seconds since the epoch: the client's timestamp or the arrival time


def event_rating(kind: str, value: float | None, rating_range: tuple[float, float]) -> float | None:
    """The rating an event stands for; ``value`` is used for ``rating`` events only.
    None: a negative event on a one-value range, which no rating can express."""
    lo, hi = rating_range
    if kind == "rating":
        if value is None:
            raise ValueError("a rating event needs a value")
        return float(value)
    try:
        level = _IMPLICIT_LEVEL[kind]
    except KeyError:
        raise ValueError(f"unknown event type {kind!r}; expected one of {EVENT_TYPES}") from None
    if lo == hi and level < 0.5:
        return None
    return lo + level * (hi - lo)


def history_from_events(
    events: Iterable[StoredEvent], rating_range: tuple[float, float]
) -> dict[str, float | None]:
    """item_id → rating, the latest event per item winning (``events`` in store order);
    None where the latest is a negative event on a one-value range."""
    latest: dict[str, tuple[float, int, float | None]] = {}
    for n, ev in enumerate(events):
        key = (ev.timestamp, n)
        prev = latest.get(ev.item_id)
        if prev is None or key >= prev[:2]:
            latest[ev.item_id] = (ev.timestamp, n, event_rating(ev.type, ev.value, rating_range))
    return {item: r for item, (_, _, r) in latest.items()}

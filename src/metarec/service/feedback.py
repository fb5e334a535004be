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

Some runs cannot read a low rating as "not this": a run trained on implicit
feedback read as all 1s (a one-value range, no rating below the others), and a
run of an implicit objective (bce, bpr, softmax) whose support positives are every
rated item (``support_positives = "rated"``, what training picks on a scale of more
than two values), for which a rating of 1
is an interaction like any other. There a dislike or a skip stands for no rating
(None): the item is left out of the user's adaptation and of their
recommendations, and out of retraining's data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

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


def event_rating(
    kind: str,
    value: float | None,
    rating_range: tuple[float, float],
    *,
    negatives: bool = True,
) -> float | None:
    """The rating an event stands for; ``value`` is used for ``rating`` events only.
    None: a negative event where no rating can express one (a one-value range, or
    ``negatives=False``: a model that reads every rated item as a positive)."""
    lo, hi = rating_range
    if kind == "rating":
        if value is None:
            raise ValueError("a rating event needs a value")
        return float(value)
    try:
        level = _IMPLICIT_LEVEL[kind]
    except KeyError:
        raise ValueError(f"unknown event type {kind!r}; expected one of {EVENT_TYPES}") from None
    if level < 0.5 and (lo == hi or not negatives):
        return None
    return lo + level * (hi - lo)


def reads_negatives(model: object) -> bool:
    """Whether ``model`` (a run, or an ensemble through its primary run) reads a low
    rating as a dislike: a rating objective, or an implicit one whose positives are
    the liked items only."""
    cfg = _run_config(model)
    if cfg is None:
        return True
    return bool(cfg.objective == "rating" or cfg.support_rule() == "liked")


def _run_config(model: object) -> Any:
    """The training config of ``model`` (a run's, or an ensemble's primary run's), or
    None where it has none."""
    return getattr(model, "cfg", None) or getattr(getattr(model, "primary", None), "cfg", None)


def star_values(model: object) -> list[float]:
    """The ratings a client's stars post, one per star, lowest first: five spread over
    the scale for a model that reads a rating's value; where it reads less, only the
    values it tells apart, as five stars on a 0/1 run of bce posted 0, 0.25 and 0.5 as
    three ways to say "no". A one-value run, or an implicit objective whose support
    positives are every rated item: one star (I chose this). An implicit objective that
    takes the liked items only: two, the scale's ends (no, yes)."""
    lo, hi = model.rating_range  # type: ignore[attr-defined]
    if hi == lo:
        return [lo]
    cfg = _run_config(model)
    if cfg is not None and cfg.objective != "rating":
        return [lo, hi] if cfg.support_rule() == "liked" else [hi]
    spread = [lo + k * (hi - lo) / 4 for k in range(5)]
    levels = getattr(getattr(model, "cutpoints", None), "levels", None)
    if not levels:
        return spread
    # each star the scale's level nearest it: on 1-10 in whole stars the second star
    # posted 3.25, a rating no one gives, and retraining learnt from it
    return sorted({min(map(float, levels), key=lambda v: (abs(v - x), v)) for x in spread})


def latest_events(events: Iterable[StoredEvent]) -> dict[str, StoredEvent]:
    """item_id → the event that stands for the user's view of it: the latest by
    timestamp, then by arrival (``events`` in store order)."""
    latest: dict[str, tuple[float, int, StoredEvent]] = {}
    for n, ev in enumerate(events):
        prev = latest.get(ev.item_id)
        if prev is None or (ev.timestamp, n) >= prev[:2]:
            latest[ev.item_id] = (ev.timestamp, n, ev)
    return {item: ev for item, (_, _, ev) in latest.items()}


def history_from_events(
    events: Iterable[StoredEvent],
    rating_range: tuple[float, float],
    *,
    negatives: bool = True,
) -> dict[str, float | None]:
    """item_id → rating, the latest event per item winning (``events`` in store order);
    None where the latest is a negative event no rating expresses (see the module)."""
    return ratings_of(latest_events(events), rating_range, negatives=negatives)


def ratings_of(
    latest: dict[str, StoredEvent], rating_range: tuple[float, float], *, negatives: bool = True
) -> dict[str, float | None]:
    """item_id → the rating each item's latest event stands for (:func:`event_rating`)."""
    return {
        item: event_rating(ev.type, ev.value, rating_range, negatives=negatives)
        for item, ev in latest.items()
    }


def what_you_did(event: StoredEvent, rating_range: tuple[float, float]) -> str:
    """An item's reason in a user's list when the user already has it in their history:
    what they did, in their words (a click is not "You rated it 4", the rating it
    stands for in adaptation). On a one-value run (clicks read as 1s) a rating quotes
    no number, as the library's explanations do: "You rated it 1" named a scale the
    page never shows (its one star is "I chose this")."""
    if event.type == "rating":
        from metarec.explain import ALREADY_CHOSEN  # here: explain loads torch, a store not

        lo, hi = rating_range
        return f"You rated it {event.value:g}" if hi > lo else ALREADY_CHOSEN
    return {"click": "You clicked it", "skip": "You skipped it"}.get(
        event.type, f"You {event.type}d it"
    )

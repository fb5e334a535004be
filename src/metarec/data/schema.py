"""The in-memory dataset every loader produces and every model consumes.

Column conventions (all loaders normalise to these):

interactions
    ``user_id`` (str), ``item_id`` (str), ``rating`` (float32),
    ``timestamp`` (float64, NaN where the source has none).
items
    ``item_id`` (str, unique), ``title`` (str), ``year`` (float64, NaN if
    unknown), ``genres`` (str, ``|``-separated, may be empty), ``text`` (str,
    the text the encoder sees, built by :func:`metarec.data.text.build_item_text`),
    plus any extra source columns (kept as str).
users (optional)
    ``user_id`` (str, unique) plus categorical feature columns (str).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from metarec.errors import ConfigError, DataError, outside_metarec
from metarec.values import as_scale, counted, is_number

ITEMS_TABLE = "items table: "  # the prefix of reasons that count items, not ratings


@dataclass
class CleaningReport:
    """What cleaning removed, and why, counted per reason.

    ``dropped`` maps a reason (e.g. ``"duplicate (user, item)"``) to a row
    count; ``examples`` keeps up to a few offending values per reason so the
    report can show them.
    """

    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, reason: str, count: int, examples: list[str] | None = None) -> None:
        if count <= 0:
            return
        self.dropped[reason] = self.dropped.get(reason, 0) + int(count)
        if examples:
            kept = self.examples.setdefault(reason, [])
            kept.extend(examples[: max(0, 5 - len(kept))])

    def summary(self) -> str:
        lines = [f"rows in: {self.rows_in:,}  rows kept: {self.rows_out:,}"]
        for reason, n in self.dropped.items():
            ex = self.examples.get(reason)
            tail = f" (e.g. {', '.join(ex)})" if ex else ""
            # the items table's reasons count items, not the rating rows above, so the
            # rating reasons alone add up to rows in - rows kept
            what = (" item" if n == 1 else " items") if reason.startswith(ITEMS_TABLE) else ""
            lines.append(f"  dropped {n:,}{what}: {reason}{tail}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:  # print(ds.report): a Dataset's report may be None
        return self.summary()

    def to_dict(self) -> dict[str, object]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(self.dropped),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "notes": list(self.notes),
        }


def like_threshold_for(rating_range: tuple[float, float]) -> float:
    """The rating at or above which an interaction counts as "liked" on a scale.

    The top quarter of the scale, ``lo + 0.75 (hi - lo)``: 4 on MovieLens' 1-5
    stars (the convention P2, P4 and the ranking models were defined with), 3.875
    on half stars from 0.5 (so 4 and up), 7.75 on 1-10 (8 and up), 0.75 on 0/1
    feedback (the 1s); when every rating is the same (implicit data read as
    all 1s) every interaction.
    """
    lo, hi = (float(x) for x in rating_range)
    return lo + 0.75 * (hi - lo)


def threshold_or_scale(
    like_threshold: float | None,
    rating_range: tuple[float, float] | None,
    ratings: Sequence[pd.Series],
    where: str,
) -> float:
    """``like_threshold`` where given; else the top quarter (:func:`like_threshold_for`)
    of ``rating_range``, or of the lowest and highest of ``ratings`` without one. A
    fixed default of 4 counted 4 of 10 as liked on a 1-10 scale, without a word."""
    if like_threshold is not None:
        if not is_number(like_threshold) or not math.isfinite(like_threshold):
            raise ConfigError(f"{where}: like_threshold must be a number, got {like_threshold!r}")
        return float(like_threshold)
    if rating_range is None:
        known = [r for r in ratings if len(r)]
        if not known:
            return 0.0  # nothing to score: no rating is liked or not
        rating_range = (min(float(r.min()) for r in known), max(float(r.max()) for r in known))
    return like_threshold_for(rating_range)


def liked_words(threshold: float, scale: Sequence[float] | None) -> str:
    """How reports word "liked": a rating at or above ``threshold``, or, on a ``scale``
    of one value (implicit feedback: every click or play is one value), any
    interaction: "rated >= 1 on a 1-1 scale" told a click log nothing. A threshold at
    the bottom of a scale of ratings stays a threshold."""
    if scale is not None and len(scale) == 2 and scale[0] == scale[1]:
        return "interacted with"
    said = f"rated >= {threshold:g}"
    if scale is None or len(scale) != 2 or threshold != like_threshold_for((scale[0], scale[1])):
        return said  # a threshold given: the user's own words, no reading added
    # the default, the top quarter, is 7.75 on 1-10: "rated >= 7.75" made a reader work
    # out that whole stars mean 8 and up (and half stars on 0.5-5, 4 and up). Said of
    # ratings in such steps, which is true whatever steps the data's ratings take
    for step, unit in ((1.0, "whole numbers"), (0.5, "halves")):
        if all(float(v / step).is_integer() for v in scale):
            if not float(threshold / step).is_integer():
                said += f" (of ratings in {unit}: {math.ceil(threshold / step) * step:g} and up)"
            break
    return said


def check_like_threshold(value: float, rating_range: tuple[float, float], what: str) -> float:
    """``value`` if it is a rating on the scale, else ConfigError naming ``what``: above
    the top rating nothing is ever liked, and every ranking model and metric would
    learn or count from no positives."""
    lo, hi = (float(x) for x in rating_range)
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ConfigError(f"{what}: {value:g} is not a rating on the data's scale [{lo:g}, {hi:g}]")
    return float(value)


def two_sided(
    ratings: object, like_threshold: float, rating_range: tuple[float, float]
) -> tuple[float, float] | None:
    """The two values of binary feedback (an impression left unclicked and a click, a
    thumbs down and up): ``ratings`` that take exactly two, the ends of the rating
    scale, one under ``like_threshold`` and one at or above it; None otherwise. Two
    values inside a wider scale (only 3s and 5s of 1-5 stars) are ratings that
    happen to be few, where a 3 still says the user chose the item."""
    values = np.asarray(ratings, dtype=np.float64)
    levels = np.unique(values[np.isfinite(values)])
    lo, hi = (float(x) for x in rating_range)
    if len(levels) == 2 and (levels[0], levels[1]) == (lo, hi) and lo < like_threshold <= hi:
        return lo, hi
    return None


def support_rule_for(
    ratings: object, like_threshold: float, rating_range: tuple[float, float]
) -> str:
    """The implicit objectives' support positives for training ``ratings`` when the
    config leaves them open: "liked" for binary feedback (:func:`two_sided`). There
    the lower value is an answer, not an interaction, and "rated" read it as a click:
    four unclicked science-fiction films made a user's top 8 all science fiction. On
    a scale of more levels a low rating still says the user chose the item (a film
    rated at all was watched), so "rated"."""
    return "liked" if two_sided(ratings, like_threshold, rating_range) is not None else "rated"


def inferred_like_threshold(
    ratings: object,
    rating_range: tuple[float, float],
    flags: str = "--set like_threshold=X, or like_threshold=",
) -> float:
    """:func:`like_threshold_for` the scale, or a ConfigError where under 1 % of
    ``ratings`` reach it on a scale of three or more levels: one typo past the
    scale's top (a 7 among 1-5 stars) stretches the scale, puts the threshold above
    every real rating, and every ranking model and metric would then learn or count
    from no positives, failing far from the cause or, worse, not at all. Feedback of
    two values (0 shown, 1 clicked) is left alone: its rare 1s are what is liked.
    ``flags``: how the calling command gives a threshold."""
    threshold = like_threshold_for(rating_range)
    values = np.asarray(ratings, dtype=np.float64)
    liked = int((values >= threshold).sum())
    levels = np.unique(values)
    lo, hi = (float(x) for x in rating_range)
    if len(values) and not liked and len(levels) == 1:
        # clicks read on a 1-5 scale (fit_recommender's default range): no positive, so
        # a ranking model learnt nothing and its loss measured nothing, without a word
        raise ConfigError(
            f"every rating is {levels[0]:g}, under the like threshold {threshold:g} of the "
            f"rating scale [{lo:g}, {hi:g}]: nothing would count as liked. For implicit "
            f"feedback give the scale as that one value (--rating-range {levels[0]:g},"
            f"{levels[0]:g}, or rating_range=({levels[0]:g}, {levels[0]:g})); else give a "
            f"threshold ({flags})"
        )
    if not len(values) or liked >= 0.01 * len(values) or len(levels) < 3:
        return threshold
    raise ConfigError(
        f"like threshold {threshold:g}, the top quarter of the rating scale [{lo:g}, {hi:g}], "
        f"is reached by {liked:,} of {len(values):,} ratings: almost nothing would count "
        "as liked. If the scale's top is a typo, give the scale (--rating-range LOW,HIGH, "
        f"or rating_range=; those rows are dropped); else give a threshold ({flags})"
    )


COUNT_LEVELS = 20  # more whole-number values than this, over a range this wide, may be counts


def counts_note(
    ratings: pd.Series, rating_range: tuple[float, float], like_threshold: float
) -> str | None:
    """What to check where the ratings look like counts (plays, purchases, views): whole
    numbers over a wide range, most near its bottom. Read as a rating scale, only the
    top quarter counts as liked, so "liked" (P2's relevant items, the ranking models'
    positives, P4's successes) was a handful of the heaviest plays, without a word.
    None where they look like a scale (a 0-100 review score sits high in its range)."""
    values = pd.to_numeric(ratings, errors="coerce").dropna().to_numpy(dtype=np.float64)
    lo, hi = (float(x) for x in rating_range)
    if not len(values) or hi - lo < COUNT_LEVELS or lo < 0 or (values != values.round()).any():
        return None
    levels = np.unique(values)
    median = float(np.median(values))
    if len(levels) <= COUNT_LEVELS or median > lo + 0.25 * (hi - lo):
        return None
    liked = float((values >= like_threshold).mean())
    return (
        f"ratings are whole numbers from {lo:g} to {hi:g} ({len(levels):,} values, median "
        f"{median:g}): counts (plays, purchases) rather than a rating scale? Read as a "
        f"scale, liked is its top quarter, {like_threshold:g} and up ({liked:.1%} of the "
        "rows). To count every interaction as liked, give them as 1s (implicit feedback); "
        "to keep the counts, say from which count an item is liked (--set like_threshold=N "
        "for train, --like-threshold N for benchmark)"
    )


def inferred_threshold_said(
    ratings: pd.Series,
    rating_range: tuple[float, float],
    name: str,
    flags: str = "--set like_threshold=X, or like_threshold=",
) -> float:
    """:func:`inferred_like_threshold`, with a warning where the ratings look like counts
    (:func:`counts_note`): training and the benchmark read them as a scale silently.
    Counts so skewed that under 1 % reach the top quarter are refused with the counts'
    advice, not the scale typo's (``--rating-range``, which would drop the heaviest)."""
    note = counts_note(ratings, rating_range, like_threshold_for(rating_range))
    try:
        like = inferred_like_threshold(ratings, rating_range, flags)
    except ConfigError:
        if note is None:
            raise
        raise ConfigError(f"{name}: {note}") from None
    if note is not None:
        warnings.warn(f"{name}: {note}", UserWarning, stacklevel=outside_metarec())
    return like


def check_objective(objective: str, rating_range: tuple[float, float], name: str) -> None:
    """A rating model on data whose ratings are all one value (clicks, purchases read as
    1s) learns nothing and predicts that value for every item: refused, naming the
    objectives that learn from such data."""
    lo, hi = (float(x) for x in rating_range)
    if objective == "rating" and lo == hi:
        raise ConfigError(
            f"{name}: every rating is {lo:g} (implicit feedback), so a rating model learns "
            "nothing from it; train an implicit objective (--set objective=softmax, or "
            'objective="softmax" in a config or metarec.train; bce or bpr where the catalogue '
            "is too large for it) holding out no P1 users (--holdout none; metarec.train "
            "holds none out), and compare models with benchmark --protocol p2"
        )


def has_timestamps(interactions: pd.DataFrame) -> bool:
    """Whether the ratings have times that order them, by which P2's and P4's supports
    are ordered: a frame built in memory may have no timestamp column at all, and one
    time for every rating orders nothing (a support is then drawn at random, as
    :func:`metarec.data.tasks.ordered` draws it, and said so)."""
    stamps = interactions.get("timestamp")
    return stamps is not None and stamps.nunique(dropna=True) > 1


def check_table(frame: object, table: str) -> pd.DataFrame:
    """``frame`` if it is a DataFrame, else a DataError naming the ``table``."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{table}: expected a pandas DataFrame, got {type(frame).__name__}")
    if isinstance(frame.columns, pd.MultiIndex):  # its "user_id" is a tuple: a raw KeyError
        raise DataError(
            f"{table}: its columns are a MultiIndex ({frame.columns[0]!r:.40}, ...); flatten "
            "them to one name each, e.g. frame.columns = frame.columns.get_level_values(0)"
        )
    return frame


@dataclass
class Dataset:
    """Ratings plus item (and optional user) side information."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None
    rating_range: tuple[float, float] = (1.0, 5.0)
    report: CleaningReport | None = None
    # the data options it was read with, as `metarec train` records them
    # (:mod:`metarec.data.spec`): a run trained on it keeps their column options, so
    # that ``add_items`` builds new items' text from the same columns and takes rows
    # named as the file names them. None: built in memory, or read with options a spec
    # cannot say (``sep``, a custom ``text``).
    spec: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Types only: a Dataset is built often (every replace() builds one), and its
        # columns and values are validate's and clean's to check. A list of ratings was
        # taken here, and met as an AttributeError by whatever read it first.
        if not isinstance(self.name, str):
            raise DataError(f"name: expected a data set name (text), got {self.name!r:.60}")
        check_table(self.interactions, "interactions")
        check_table(self.items, "items")
        if self.users is not None:
            check_table(self.users, "users")
        if self.spec is not None and not isinstance(self.spec, dict):
            raise DataError(f"spec: expected a dict of data options, got {self.spec!r:.60}")
        # None was "'NoneType' object is not iterable" from whatever read the scale first
        scale = as_scale(self.rating_range)
        if scale is None:
            raise ConfigError(
                f"rating_range: expected (low, high) with low <= high, got {self.rating_range!r}"
            )
        self.rating_range = scale

    def __repr__(self) -> str:
        # the dataclass's printed three whole frames: print(ds) in a notebook
        ratings = self.interactions
        users = ratings["user_id"].nunique() if "user_id" in ratings.columns else None
        said = [
            counted(len(ratings), "rating"),
            counted(len(self.items), "item"),
            "users unknown" if users is None else counted(int(users), "user"),
        ]
        lo, hi = self.rating_range
        features = f", user features {self.user_feature_columns}" if self.users is not None else ""
        return (
            f"{type(self).__name__}({self.name!r}: {', '.join(said)}, scale [{lo:g}, {hi:g}]"
            f"{features})"
        )

    @property
    def n_users(self) -> int:
        """Distinct users with at least one interaction."""
        return int(self.interactions["user_id"].nunique())

    @property
    def like_threshold(self) -> float:
        """Ratings at or above this count as liked (:func:`like_threshold_for`)."""
        return like_threshold_for(self.rating_range)

    @property
    def n_items(self) -> int:
        """Rows of the items table (the catalogue, rated or not)."""
        return len(self.items)

    @property
    def user_feature_columns(self) -> list[str]:
        """The users table's columns other than the id."""
        if self.users is None:
            return []
        return [c for c in self.users.columns if c != "user_id"]

    def describe(self) -> dict[str, object]:
        """Sizes, density, ratings per user and item, the scale: what ``metarec data
        describe`` prints."""
        inter = self.interactions
        per_user = inter.groupby("user_id").size()
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "items_rated": int(inter["item_id"].nunique()),
            "interactions": len(inter),
            "density": len(inter) / max(1, self.n_users * max(1, self.n_items)),
            "rating_range": list(self.rating_range),
            "like_threshold": self.like_threshold,
            # numbers as text ("4") in a data set not cleaned yet: the mean of what reads
            "rating_mean": float(pd.to_numeric(inter["rating"], errors="coerce").mean())
            if len(inter)
            else float("nan"),
            "ratings_per_user_median": float(per_user.median()) if len(per_user) else 0.0,
            "ratings_per_user_min": int(per_user.min()) if len(per_user) else 0,
            "user_features": self.user_feature_columns,
            "has_timestamps": has_timestamps(inter),
            "notes": self.scale_notes(),
        }

    def scale_notes(self) -> list[str]:
        """What a person should check about the scale before training: a 0 below an
        otherwise 1-N scale is the strongest dislike here, but some catalogues (Book-
        Crossing) write 0 for "read, not rated"; which it is, only they know."""
        ratings = pd.to_numeric(self.interactions["rating"], errors="coerce")
        levels = np.unique(ratings.dropna().to_numpy(dtype=np.float64))
        if not len(levels):
            # described as if it had a scale: [1, 5] and a like threshold of 4, read
            # from no rating (data validate says "no rows")
            return [
                "no ratings: the rating range and like threshold shown are the defaults "
                "(or --rating-range), not read from the data"
            ]
        if len(levels) == 1 and self.rating_range[0] == self.rating_range[1]:
            # `data validate` said "ok" and a default `train` then refused the data
            return [
                f"every rating is {levels[0]:g} (implicit feedback): train with --set "
                "objective=softmax (bce or bpr where the catalogue is too large for it) and "
                "--holdout none, and compare models with benchmark --protocol p2 (P1 and "
                "evaluate measure predicted ratings)"
            ]
        binary = two_sided(levels, self.like_threshold, self.rating_range)
        if binary is not None:
            # 0/1 impressions passed as "ok" without a word on how training reads them
            lo, hi = (f"{x:g}" for x in binary)
            return [
                f"ratings take two values, {lo} and {hi} (binary feedback such as "
                f"impressions and clicks): an implicit objective (--set objective=softmax, "
                f"bce or bpr) reads a {hi} as liked and a {lo} as not (support_positives = "
                "liked, which training picks for such data); compare models with "
                "benchmark --protocol p2"
            ]
        counts = counts_note(ratings, self.rating_range, self.like_threshold)
        if counts is not None:
            return [counts]
        rest = levels[1:]
        if len(rest) < 3 or levels[0] != 0 or rest[0] != 1 or not (rest == rest.round()).all():
            return []
        zeros = int((ratings == 0).sum())
        return [
            f"{zeros:,} rating(s) of 0 below an otherwise 1-{rest[-1]:g} scale are read as the "
            f"strongest dislike; if 0 means an interaction without a rating, give "
            f"--rating-range 1,{rest[-1]:g} (rating_range=(1, {rest[-1]:g})) and those rows "
            "are dropped"
        ]

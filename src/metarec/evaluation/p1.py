"""Protocol P1, the MeLU protocol: new users and new items, rating prediction.

* Users with 13 to 100 ratings are kept.
* New items: released in ``new_item_year`` or later when the catalogue has
  enough of them (ml-1m: 1998), else a seeded random ``new_item_fraction``
  (ml-100k has few 1998 titles).
* Users: a seeded 20 % are new; of the existing ones 10 % are held out as
  validation tasks (early stopping), the rest meta-train.
* Per user and state: ratings shuffled (seeded); the last 10 are the query
  set, the rest the support set; a user with fewer than 13 ratings in a state
  is dropped from it.
* States: ``warm`` = validation users × existing items, ``user_cold`` =
  new users × existing items, ``item_cold`` = existing users × new items,
  ``both_cold`` = new users × new items. Meta-training sees existing users ×
  existing items only. Warm is in-sample: its tasks are the validation tasks
  themselves, which chose each network's early-stopping epoch, the median cuts
  and the ensemble's weights, so its figures flatter those models and a
  benchmark runs no significance tests on it (:data:`IN_SAMPLE`).
* Pooled states ``item_cold_pooled`` and ``both_cold_pooled`` (not MeLU's):
  the same tasks, but a new item's ratings in *other* users' support sets
  count as evidence about it, as they would in a live system that has shown
  the item to a few people. Each rating model's predictions get the item's
  shrunk mean residual (:mod:`metarec.models.item_evidence`); the strict
  states stay as MeLU defined them, so both are reported.

MAE is each model's own point prediction: the median rating of its cutpoints
(:mod:`metarec.models.cutpoints`) where it has them, else its score; ``mae_mean``
is always the score's MAE, and RMSE and the ranking metrics always use the score.

A split is a list of ids, so it is saved as JSON (no ratings are copied) and
can be re-applied to the same data anywhere.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from metarec.data.cleaning import require_dataset
from metarec.data.features import user_rows
from metarec.data.registry import known_names
from metarec.data.schema import Dataset, threshold_or_scale
from metarec.data.tasks import Task, UserRatings, fixed_tasks, read_only
from metarec.errors import ConfigError, DataError, InputError, ModelError
from metarec.evaluation.metrics import per_user_table, summarise
from metarec.evaluation.splits import SplitFile, check_folds, data_digest, has_protocol_rule
from metarec.models.base import TaskPredictor, check_seed, check_whole
from metarec.models.item_evidence import ItemEvidence, fitted_residuals
from metarec.values import is_number

STATES = ("warm", "user_cold", "item_cold", "both_cold")
# the cold-item states again, with the new items' first ratings pooled as evidence
POOLED = {"item_cold_pooled": "item_cold", "both_cold_pooled": "both_cold"}
ALL_STATES = (*STATES, *POOLED)
# states scored on the users that tuned the models: figures, but no tests
IN_SAMPLE = ("warm",)
POOL_SOURCES = ("item_cold", "both_cold")
QUERY_SIZE = 10
MIN_SUPPORT = 3  # a state's user adapts on at least this many ratings
MELU_NEW_ITEM_YEAR = 1998.0  # MeLU's new items on MovieLens: released in 1998 or later
MIN_STATE_RATINGS = MIN_SUPPORT + QUERY_SIZE


@dataclass
class P1Split(SplitFile):
    protocol: ClassVar[str] = "p1"
    held_out: ClassVar[str] = "new_users"
    rule_before_recorded: ClassVar[dict[str, int]] = {"min_ratings": 13, "max_ratings": 100}

    dataset: str
    seed: int
    new_items: list[str]
    train_users: list[str]
    validation_users: list[str]
    new_users: list[str]
    rule: str = ""
    fold: int | None = None
    n_folds: int | None = None
    min_ratings: int = 13  # every user has min_ratings to max_ratings ratings (MeLU's rule)
    max_ratings: int = 100
    data_digest: str | None = None  # the ratings it was drawn from (splits.data_digest)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def rebuild_frames(self, interactions: pd.DataFrame) -> dict[str, pd.DataFrame]:
        return _frames(interactions, self)

    def rating_bounds(self) -> tuple[int, int | None]:
        return self.min_ratings, self.max_ratings

    def check_rule(self) -> None:
        if self.min_ratings < MIN_STATE_RATINGS:
            raise DataError(
                f"min_ratings {self.min_ratings}: a P1 task needs at least "
                f"{MIN_STATE_RATINGS} ratings ({MIN_SUPPORT} support + {QUERY_SIZE} query)"
            )
        super().check_rule()

    def check_groups(self, dataset: Dataset, path: str | Path, *, check_rule: bool = True) -> None:
        super().check_groups(dataset, path, check_rule=check_rule)
        year = re.fullmatch(r"released in (-?[0-9]+(?:\.[0-9]+)?) or later", self.rule)
        share = re.fullmatch(r"random ([0-9]+(?:\.[0-9]+)?)% of items", self.rule)
        if check_rule and self.rule and year is None and share is None:
            # printed as the new items' definition, whatever it says ("hello world")
            raise DataError(
                f"rule {self.rule!r:.60}: expected 'released in YEAR or later' or "
                "'random N% of items', as make_p1_split writes it",
                path=path,
            )
        if check_rule and share is not None:
            n_items = len(dataset.items)
            drawn = len(self.new_items) / max(n_items, 1)
            # the rule prints the fraction to a whole percent (12.5 % reads "12%")
            if abs(drawn - float(share[1]) / 100) > 0.005 + 1 / max(n_items, 1):
                raise DataError(
                    f"its rule says the new items are a {self.rule}, but it lists "
                    f"{len(self.new_items):,} of {dataset.name}'s {n_items:,} ({drawn:.1%}): "
                    "edited, or drawn from other data?",
                    path=path,
                )
        if check_rule and year is not None:
            # the report prints the rule as the new items' definition: an edited rule
            # over other new items (random ones) would be printed as if it held
            years = pd.to_numeric(dataset.items["year"], errors="coerce")
            if years.isna().all():
                raise DataError(
                    f"its rule says the new items are those {self.rule}, but no item of "
                    f"{dataset.name} has a release year (no items file given, or not its "
                    "year column?)",
                    path=path,
                )
            # over the rated items: one added since that nobody rated changes no figure
            # and was refused, blamed on the split
            rated = set(dataset.interactions["item_id"].astype(str))
            late = set(dataset.items.loc[years >= float(year[1]), "item_id"].astype(str))
            late &= rated
            new = set(self.new_items) & rated
            if late != new:
                odd = sorted(late ^ new)
                raise DataError(
                    f"its rule says the new items are those {self.rule}, but "
                    f"{len(odd):,} rated items are on one side only (first: {odd[0]!r}, "
                    f"{'not in new_items' if odd[0] in late else 'in new_items, not so'} "
                    f"in {dataset.name}): edited, drawn from other data, or a year changed "
                    "since?",
                    path=path,
                )

    def check_fits(self, dataset: Dataset, path: str | Path) -> None:
        super().check_fits(dataset, path)
        # new items outside the catalogue would leave the item-cold states silently empty
        if not self.new_items:
            raise DataError("new_items must not be empty", path=path)
        catalogue = set(dataset.items["item_id"].astype(str))
        absent = sorted(set(self.new_items) - catalogue)
        if absent:
            raise DataError(
                f"{len(absent)} of its new_items are not items of {dataset.name} "
                f"(first: {absent[0]!r})",
                path=path,
            )
        rated = set(dataset.interactions["item_id"].astype(str))
        if rated <= set(self.new_items):
            # meta-training sees existing items only: none would be left to train on
            raise DataError(
                f"new_items holds every rated item of {dataset.name}; existing items are "
                "needed to train on",
                path=path,
            )


def make_p1_split(
    dataset: Dataset,
    seed: int = 0,
    *,
    new_item_year: float | Literal["auto"] | None = "auto",
    new_item_fraction: float = 0.2,
    new_user_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    min_ratings: int = 13,
    max_ratings: int = 100,
    n_folds: int | None = None,
    fold: int | None = None,
) -> P1Split:
    """The P1 split; with ``n_folds`` the new users are fold ``fold`` of a seeded
    partition of the kept users (protocol P3) instead of a random 20 %.

    New items are those released in ``new_item_year`` or later. ``"auto"``: 1998 on
    the MovieLens data sets (MeLU's rule); on other catalogues with release years,
    the year from which the newest ``new_item_fraction`` of items date (a fixed 1998
    made 38 % of a books catalogue new, and every item of one from 2005 on). Without
    years, or with fewer than 5 % of items that late, a seeded random
    ``new_item_fraction`` of items."""
    require_dataset(dataset)  # a bare frame was an AttributeError on .interactions
    check_folds(n_folds, fold)
    check_seed(seed)
    for name, value, interval in (
        ("new_item_fraction", new_item_fraction, "(0, 1)"),
        ("new_user_fraction", new_user_fraction, "(0, 1)"),
        ("validation_fraction", validation_fraction, "[0, 1)"),
    ):
        # "0.2" compared with 0.0 was a raw TypeError; NaN fails the range. Options, not
        # data: ConfigError, as the seed, fold and whole-number checks beside them raise
        number = is_number(value)
        if not number or not (0.0 <= value < 1.0 if interval[0] == "[" else 0.0 < value < 1.0):
            kind = "" if number else "a number "
            raise ConfigError(f"{name} must be {kind}in {interval}; got {value!r:.40}")
    if new_item_year not in ("auto", None) and (
        not is_number(new_item_year) or not float(new_item_year).is_integer()  # NaN and inf are not
    ):
        # "1998" against the year column was a raw TypeError
        raise ConfigError(
            f"new_item_year must be a whole year, 'auto' or None; got {new_item_year!r:.40}"
        )
    # whole numbers (13.5 was taken and recorded); the bounds below say why 13
    min_ratings = check_whole(min_ratings, "min_ratings", 1)
    max_ratings = check_whole(max_ratings, "max_ratings", 1)
    if not QUERY_SIZE + 3 <= min_ratings <= max_ratings:
        # a P1 task is at least 3 support ratings and the QUERY_SIZE query ratings
        raise ConfigError(
            f"min_ratings must be at least {QUERY_SIZE + 3} (3 support + {QUERY_SIZE} query "
            f"ratings) and at most max_ratings; got {min_ratings} and {max_ratings}"
        )
    rng = np.random.default_rng(seed)
    inter = dataset.interactions
    counts = inter.groupby("user_id").size()
    kept = np.sort(counts[(counts >= min_ratings) & (counts <= max_ratings)].index.to_numpy())
    items = dataset.items
    rule = f"random {new_item_fraction:.0%} of items"
    new_items: np.ndarray
    if new_item_year is not None and "year" in items.columns:
        years = pd.to_numeric(items["year"], errors="coerce")
        if new_item_year == "auto":
            new_item_year = (
                MELU_NEW_ITEM_YEAR
                # a known data set as its loader reads it (no column options): a file of
                # one's own named ml-100k.csv took MeLU's 1998 for its new items
                if (dataset.name in known_names() and dataset.spec is None) or years.isna().all()
                else _newest_year(years, new_item_fraction, dataset.name)
            )
        late = (
            items.loc[years >= new_item_year, "item_id"].to_numpy()
            if new_item_year is not None
            else np.array([])
        )
        if len(late) >= 0.05 * len(items):  # enough new titles for a meaningful item-cold state
            new_items, rule = late, f"released in {new_item_year:g} or later"
            undated = int(years.isna().sum())
            if undated >= 0.01 * len(items):  # one stray blank is not worth a warning
                warnings.warn(
                    f"{dataset.name}: {undated:,} of {len(items):,} items have no year, so "
                    f"P1 counts them as existing items, never new ({rule})",
                    UserWarning,
                    stacklevel=2,
                )
    if not rule.startswith("released"):
        ids = np.sort(items["item_id"].to_numpy())
        new_items = rng.choice(ids, size=round(len(ids) * new_item_fraction), replace=False)
    users = rng.permutation(kept)
    if n_folds is None:
        n_new = round(len(users) * new_user_fraction)
        new_users, existing = users[:n_new], users[n_new:]
    else:
        assert fold is not None  # checked on entry
        parts = np.array_split(users, n_folds)
        new_users = parts[fold]
        existing = np.concatenate([p for i, p in enumerate(parts) if i != fold])
        # a fresh seeded draw per fold, not the head of ``existing`` (the same users
        # for folds 1 to k-1, all in fold 0's new users; see make_p2_split)
        existing = existing[np.random.default_rng([seed, fold]).permutation(len(existing))]
    n_val = round(len(existing) * validation_fraction)
    split = P1Split(
        dataset.name,
        seed,
        sorted(map(str, new_items)),
        sorted(map(str, existing[n_val:])),
        sorted(map(str, existing[:n_val])),
        sorted(map(str, new_users)),
        rule,
        fold,
        n_folds,
        min_ratings,
        max_ratings,
        data_digest(inter),
    )
    split.frames = _frames(inter, split)
    return split


def check_p1_groups(split: P1Split, n_users: int, name: str, other: str = "") -> str | None:
    """Refuse a P1 split with no one to train on, stop early on or evaluate (MeLU's rule
    keeps users with 13 to 100 ratings: on short histories it left 2 users to train on,
    and training or a benchmark failed later with 'no training interactions left');
    where it keeps under half of the users, the note to print. ``other``: what else to
    do, said after the reason."""
    kept = len(split.train_users) + len(split.validation_users) + len(split.new_users)
    whose = " (MeLU's rule)" if has_protocol_rule(split) else ""
    said = (
        f"{name}: the P1 holdout keeps users with {split.min_ratings} to "
        f"{split.max_ratings} ratings{whose}: {kept:,} of {n_users:,} users here"
        if kept < n_users
        else f"{name}: {n_users:,} users are too few for the P1 holdout"
    )
    if not split.train_users or not split.validation_users or not split.new_users:
        raise DataError(
            f"{said}, leaving {len(split.train_users):,} to train on, "
            f"{len(split.validation_users):,} to stop early on and "
            f"{len(split.new_users):,} new users to evaluate on{other}"
        )
    if kept < n_users / 2:
        return f"{said}, so it trains on {len(split.train_users):,}{other}"
    return None


def _newest_year(years: pd.Series, fraction: float, name: str) -> float | None:
    """The release year from which the newest items come closest to ``fraction`` of
    the catalogue, or None (new items drawn at random) where the closest is over half
    as many again. Years are tied: the quantile's year took every item of the latest
    year, 34 % of a catalogue for 20 %, and all of one whose items share a year."""
    share = (years.value_counts().sort_index(ascending=False).cumsum() / len(years)).rename(None)
    year = float((share - fraction).abs().idxmin())
    if share[year] <= 1.5 * fraction:
        return year
    warnings.warn(
        f"{name}: {share[year]:.0%} of items date from {year:g} or later, the closest to "
        f"P1's newest {fraction:.0%} that a release year gives; new items are a random "
        f"{fraction:.0%} of items instead",
        UserWarning,
        stacklevel=3,
    )
    return None


def _frames(inter: pd.DataFrame, split: P1Split) -> dict[str, pd.DataFrame]:
    is_new_item = inter["item_id"].isin(set(split.new_items))
    train_u = inter["user_id"].isin(set(split.train_users))
    val_u = inter["user_id"].isin(set(split.validation_users))
    new_u = inter["user_id"].isin(set(split.new_users))

    def state(mask: pd.Series) -> pd.DataFrame:
        frame = inter[mask]
        n = frame.groupby("user_id")["item_id"].transform("size")
        return frame[n >= MIN_STATE_RATINGS]

    return {
        "train": inter[train_u & ~is_new_item],
        "validation": state(val_u & ~is_new_item),
        "warm": state(val_u & ~is_new_item),
        "user_cold": state(new_u & ~is_new_item),
        "item_cold": state((train_u | val_u) & is_new_item),
        "both_cold": state(new_u & is_new_item),
    }


def state_tasks(
    frame: pd.DataFrame, index: Mapping[str, int], seed: int
) -> tuple[list[Task], list[str]]:
    """P1 tasks of one state, and the user id of each task."""
    ur = UserRatings.from_frame(frame, index)
    tasks = fixed_tasks(
        ur, query_size=QUERY_SIZE, order="shuffle", seed=seed, min_support=MIN_SUPPORT
    )
    # read-only: the query ratings are the answers the models are judged against
    return read_only(tasks), [str(ur.user_ids[t.user]) for t in tasks]


def evaluate_p1(
    models: Mapping[str, TaskPredictor],
    split: P1Split,
    index: Mapping[str, int],
    users: pd.DataFrame | None = None,
    *,
    states: tuple[str, ...] = ("user_cold", "item_cold"),
    like_threshold: float | None = None,
    rating_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Metrics per state and model: ``{"summary": {state: {model: {metric: v}}},
    "per_user": {state: {model: {metric: [..]}}}, "n_users": {state: n},
    "user_ids": {state: [the users of per_user's values]}}``.

    A pooled state (:data:`POOLED`) scores the same tasks as its strict state,
    with each rating model's predictions corrected by the new items' ratings in
    every user's support set (:func:`support_evidence`); ranking-only models
    are left out of it. ``like_threshold``: the rating at or above which a query
    item counts as relevant for precision, recall, MRR and AUC; by default the top
    quarter of ``rating_range``, or of the split's lowest and highest rating without
    one (4 on MovieLens' 1-5 stars). ``rating_range``: the scale, onto whose 1-5 image
    nDCG's gains are taken (the same figures in any units; MovieLens' own unchanged);
    without it, the ratings themselves.
    """
    like_threshold = threshold_or_scale(
        like_threshold,
        rating_range,
        [f["rating"] for f in split.frames.values()],
        "evaluate_p1",
    )
    unknown = [s for s in states if s not in STATES and s not in POOLED]
    if unknown:
        raise DataError(f"unknown P1 state(s) {unknown}; expected some of {[*STATES, *POOLED]}")
    wanted = {POOLED.get(s, s) for s in states}
    if any(s in POOLED for s in states):
        wanted |= set(POOL_SOURCES)
    tasks_of = {st: state_tasks(split.frames[st], index, split.seed) for st in sorted(wanted)}
    rows_of = {st: user_rows(users, ids) for st, (_, ids) in tasks_of.items()}
    preds_of: dict[tuple[str, str], list[np.ndarray]] = {}
    evidence_of: dict[str, ItemEvidence] = {}

    def predictions(st: str, name: str) -> list[np.ndarray]:
        if (st, name) not in preds_of:
            tasks = tasks_of[st][0]
            preds_of[st, name] = models[name].predict_tasks(tasks, rows_of[st]) if tasks else []
        return preds_of[st, name]

    # the scale, for nDCG's gain: mapped onto MeLU's 1-5 where the scale is known
    # (metrics.ndcg_graded); else the data's lowest level, for scales below 0
    if rating_range is not None and rating_range[1] > rating_range[0]:
        low, high = float(rating_range[0]), float(rating_range[1])
    else:
        low = min((float(f["rating"].min()) for f in split.frames.values() if len(f)), default=0.0)
        high = None
    summary: dict[str, dict[str, dict[str, float]]] = {}
    per_user: dict[str, dict[str, dict[str, list[float]]]] = {}
    n_users: dict[str, int] = {}
    for st in states:
        source = POOLED.get(st, st)
        tasks = tasks_of[source][0]
        n_users[st] = len(tasks)
        if not tasks:
            continue
        trues = [t.query_ratings for t in tasks]
        summary[st], per_user[st] = {}, {}
        for name, model in models.items():
            rates = _predicts_ratings(name, model)
            if st in POOLED:
                if not rates:
                    continue
                if name not in evidence_of:
                    evidence_of[name] = support_evidence(
                        model,
                        {s: tasks_of[s][0] for s in POOL_SOURCES},
                        rows_of,
                        len(index),
                    )
                preds = [
                    np.asarray(p, dtype=np.float64) + evidence_of[name].offsets(t.query_items)
                    for t, p in zip(tasks, predictions(source, name), strict=True)
                ]
            else:
                preds = predictions(st, name)
            try:
                table = per_user_table(preds, trues, like_threshold, low, high)
            except ValueError as exc:
                raise ModelError(f"model {name!r} on {st}: {exc}") from None
            cuts = getattr(model, "cutpoints", None)
            # the MAE of the mean prediction is kept beside the model's own MAE, which
            # is that of its median rating when it has cutpoints
            table["mae_mean"] = table["mae"]
            if cuts is not None and trues:  # every user cut at once, then averaged per user
                sizes = np.array([len(t) for t in trues], dtype=np.int64)
                err = np.abs(cuts.apply(np.concatenate(preds)) - np.concatenate(trues))
                owner = np.repeat(np.arange(len(trues)), sizes)
                table["mae"] = np.bincount(owner, weights=err, minlength=len(trues)) / sizes
            if not rates:
                # a ranking-only model's scores are not ratings: no MAE/RMSE for it
                table["mae"] = np.full(len(tasks), np.nan)
                table["rmse"] = np.full(len(tasks), np.nan)
                table["mae_mean"] = table["mae"]
            summary[st][name] = summarise(table)
            per_user[st][name] = {m: v.tolist() for m, v in table.items()}
    # whose values per_user holds, in its order: a cross-validation evaluates an existing
    # user in several folds (warm, item-cold), and counts each once (benchmark._pool)
    user_ids = {st: [str(u) for u in tasks_of[POOLED.get(st, st)][1]] for st in per_user}
    return {"summary": summary, "per_user": per_user, "n_users": n_users, "user_ids": user_ids}


def support_evidence(
    model: TaskPredictor,
    tasks_of: dict[str, list[Task]],
    rows_of: dict[str, Any],
    n_items: int,
) -> ItemEvidence:
    """The new items' :class:`ItemEvidence` for one model.

    The evidence is every support rating in the item-cold and both-cold tasks,
    as a residual from the model's own prediction for that user after adapting
    to that user's support set. Query ratings are never evidence, and a user's
    query items are not in their own support, so no user's held-out ratings
    reach their own predictions.
    """
    parts = [
        # the support set as query: the adapted model's fit to what the user showed
        fitted_residuals(
            model,
            [
                replace(t, query_items=t.support_items, query_ratings=t.support_ratings)
                for t in tasks
            ],
            rows_of[st],
        )
        for st, tasks in tasks_of.items()
    ]
    items = np.concatenate([np.zeros(0, dtype=np.int64), *(i for i, _ in parts)])
    residuals = np.concatenate([np.zeros(0), *(r for _, r in parts)])
    return ItemEvidence.fit(items, residuals, n_items)


def _predicts_ratings(name: str, model: Any) -> bool:
    """Whether ``model``'s predictions are ratings (its MAE means something, and pooled
    evidence can be added to them); a model that does not say is refused, not taken for
    one: a bare Recommender was, and a softmax run's logits were scored as ratings."""
    rates = getattr(model, "predicts_ratings", None)
    if not isinstance(rates, bool | np.bool_):
        raise InputError(
            f"models[{name!r}]: expected a model that says whether it predicts ratings "
            f"(predicts_ratings: True or False, as a ScoringModel or a Recommender does), got "
            f"{type(model).__name__}"
        )
    return bool(rates)

"""Median ratings: the point prediction that minimises MAE.

A rating model's score estimates the *mean* rating, which is what RMSE
rewards. MAE is minimised by the *median* of the predictive distribution, and
on an integer scale the median is itself a scale level: a user who gives 4s
and 5s in equal measure is predicted 4 or 5, never 4.5. Reporting MAE of a
mean is therefore leaving error on the table for every model.

:class:`RatingCutpoints` maps a score to a level by thresholds:
``rating = level_0 + sum_j step_j * [score > cut_j]``. For values on the scale
``|a - b| = sum_j step_j * |[a > level_j] - [b > level_j]|``, so the MAE of such
a rule is a sum of one 0/1 problem per cut: "is the rating above level j?".
Two ways to place each cut, both fitted on validation users (never on the
users being evaluated):

* ``"logistic"`` (default): a one-feature logistic regression of
  ``[rating > level_j]`` on the score; the cut is where its probability crosses
  1/2, i.e. the median of a cumulative-link (ordinal) model with a slope per
  cut. Likelihood uses every rating's distance from the cut, so few hundred
  validation users place it stably.
* ``"exact"``: the cut that minimises the validation 0/1 errors, hence the
  validation MAE, exactly (one sorted scan). It is the optimum *on the
  validation users* and overfits them: on ml-1m (seed 0, 225 validation users)
  it never predicted a 1 while the test users' own optimum did, and the bias
  model's user-cold MAE came out 0.707 against 0.695 with logistic cuts.

Monotone cuts (each at least the previous one) are enforced afterwards. The
continuous score stays what ranks items and what RMSE is computed on; only the
reported rating (and MAE) uses the cuts. Scales with more than
:data:`MAX_LEVELS` distinct values (continuous ratings) get no cuts: their
median need not be a level.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from scipy.special import expit

from metarec.errors import ModelError
from metarec.values import common_values, float32_decimal

if TYPE_CHECKING:
    import pandas as pd

    from metarec.data.tasks import Task, UserRatings

MAX_LEVELS = 20
MIN_RATINGS = 50  # fewer validation ratings than this: the cuts would be noise
CutMethod = Literal["logistic", "exact"]
RIDGE = 1e-3  # on the standardised score's slope: keeps separable validation data finite


@dataclass(frozen=True)
class RatingCutpoints:
    levels: tuple[float, ...]  # the scale, strictly increasing
    cuts: tuple[float, ...]  # len(levels) - 1 thresholds, non-decreasing

    def __post_init__(self) -> None:
        lv, ct = np.asarray(self.levels, float), np.asarray(self.cuts, float)
        if len(lv) < 2 or not np.all(np.diff(lv) > 0) or not np.isfinite(lv).all():
            raise ModelError(f"rating cutpoints: levels must increase strictly; got {self.levels}")
        if len(ct) != len(lv) - 1 or not np.isfinite(ct).all() or np.any(np.diff(ct) < 0):
            raise ModelError(
                f"rating cutpoints: need {len(lv) - 1} finite non-decreasing cuts; got {self.cuts}"
            )

    @classmethod
    def fit(
        cls,
        scores: np.ndarray,
        ratings: np.ndarray,
        levels: Sequence[float] | None = None,
        method: CutMethod = "logistic",
    ) -> RatingCutpoints:
        """Cuts for ``apply(scores)`` to predict ``ratings`` (see the module docstring)."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        y = np.asarray(ratings, dtype=np.float64).ravel()
        if len(s) != len(y) or len(s) == 0:
            raise ModelError(f"rating cutpoints: {len(s)} scores for {len(y)} ratings")
        if method not in ("logistic", "exact"):
            raise ModelError(f"rating cutpoints: method {method!r} is not logistic or exact")
        lv = np.unique(y) if levels is None else np.asarray(sorted(set(levels)), dtype=np.float64)
        order = np.argsort(s, kind="stable")
        s, y = s[order], y[order]
        place = _logistic_threshold if method == "logistic" else _best_threshold
        # above a level compared in float32, as ratings are held: a float32 0.2 is
        # 0.2000000030, "above" the level 0.2 as the data wrote it, and every cut of a
        # 0.1-step scale was fitted a level off
        y32, lv32 = y.astype(np.float32), lv.astype(np.float32)
        cuts = np.array([place(s, y32 > lv32[j]) for j in range(len(lv) - 1)])
        # A cut the validation scores never reach says only "beyond them": on a 1-10
        # scale with few 8s to 10s, the cuts above 7 all sat just past the highest score,
        # and a score of 7.0 read as a 10. Beyond the data, a score rounds to the
        # nearest level instead.
        # (a cut the data never reach and a mid the data pass: the data's edge, so the
        # scores they cover keep their verdict and those beyond it round up; on 0/1
        # with every validation score under 0.53, no score read as a 1)
        mids = (lv[:-1] + lv[1:]) / 2
        cuts = np.where(cuts > s[-1], np.maximum(s[-1], mids), cuts)
        cuts = np.where((cuts < s[0]) & (mids < s[0]), mids, cuts)
        return cls(tuple(map(float, lv)), tuple(map(float, np.maximum.accumulate(cuts))))

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Scale levels for ``scores`` (any shape)."""
        s = np.asarray(scores, dtype=np.float64)
        lv, ct = np.asarray(self.levels, dtype=np.float64), np.asarray(self.cuts)
        # the cuts passed (a prefix: they do not decrease) count up to the level, which
        # is returned as the level itself: summed steps of a 0.1 scale in float32 gave
        # 0.8000000119 for the level 0.8
        return lv[(s[..., None] > ct).sum(axis=-1)]

    def to_dict(self) -> dict[str, Any]:
        return {"levels": list(self.levels), "cuts": list(self.cuts)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "") -> RatingCutpoints:
        where = f"{source}: " if source else ""
        try:
            return cls(tuple(float(v) for v in raw["levels"]), tuple(float(v) for v in raw["cuts"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"{where}rating_cutpoints must be {{'levels': [...], 'cuts': [...]}} of numbers "
                f"({exc})"
            ) from None
        except ModelError as exc:
            raise ModelError(f"{where}{exc}") from None


def _logistic_threshold(s: np.ndarray, above: np.ndarray) -> float:
    """Where a logistic fit of P(above | s) = sigmoid(a s + b) crosses 1/2 (``s`` sorted).

    Newton's method on the two parameters, with a small ridge so that separable
    data still converge; a flat or decreasing fit (no information in the score)
    puts the cut outside the scores on the side of the majority."""
    lo, hi = float(s[0] - 1.0), float(s[-1] + 1.0)
    t = above.astype(np.float64)
    if t.min() == t.max():
        return lo if t[0] == 1.0 else hi
    # centred and scaled score: Newton is well conditioned whatever the rating scale
    mu, sd = float(s.mean()), float(s.std()) or 1.0
    x = np.stack([(s - mu) / sd, np.ones_like(s)], axis=1)
    w = np.zeros(2)
    for _ in range(100):
        p = expit(x @ w)
        grad = x.T @ (t - p) - RIDGE * w
        hess = (x * (p * (1.0 - p))[:, None]).T @ x + RIDGE * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    a, b = w
    if a <= 1e-12:
        return lo if t.mean() > 0.5 else hi
    return float(np.clip(mu - sd * b / a, lo, hi))


def _best_threshold(s: np.ndarray, above: np.ndarray) -> float:
    """Threshold ``c`` minimising errors of ``s > c`` as a predictor of ``above``
    (``s`` sorted ascending). Cuts fall midway between distinct scores."""
    n = len(s)
    # errors if c sits just after position i (items 0..i predicted "not above"):
    # positives at or below i, plus negatives after i; i = -1 puts c below everything
    pos_below = np.concatenate([[0], np.cumsum(above)])
    neg_above = (~above).sum() - np.concatenate([[0], np.cumsum(~above)])
    errors = pos_below + neg_above  # [n + 1]
    # a cut can only sit between two distinct scores (or outside them all)
    allowed = np.ones(n + 1, dtype=bool)
    allowed[1:n] = s[1:] > s[:-1]
    errors = np.where(allowed, errors, np.iinfo(np.int64).max)
    i = int(np.argmin(errors))
    if i == 0:
        return float(s[0] - 1.0)
    if i == n:
        return float(s[-1] + 1.0)
    return float((s[i - 1] + s[i]) / 2)


def rating_levels(ratings: np.ndarray) -> tuple[float, ...] | None:
    """The scale seen in training ratings, or None for a (near-)continuous scale.

    A value between two others that no more than
    :data:`~metarec.values.RARE_VALUE_SHARE` of the ratings hold is not a level: one
    stray 4.5 among 6,640 whole stars made 4.5 a level, the rating shown for every top
    item. Such a rating still counts where it lies between the levels when the cuts are
    fitted. The lowest and highest values stay levels however rare (a stray end is
    data validate's to say): dropped, a user's 1-star feedback read as a 2 at retrain."""
    lv, counts = np.unique(np.asarray(ratings, dtype=np.float64), return_counts=True)
    kept = common_values(counts)
    if len(kept):
        kept[[0, -1]] = True
    lv = lv[kept]
    if not 2 <= len(lv) <= MAX_LEVELS:
        return None
    # as the data wrote them: a float32 0.9 was reported as the level 0.8999999762
    return tuple(sorted({float32_decimal(v) for v in lv}))


class _Predictor(Protocol):
    def predict_tasks(self, tasks: Sequence[Task], users: Any = None, /) -> list[np.ndarray]: ...


def fit_validation_cutpoints(
    model: _Predictor,
    validation: UserRatings,
    users: pd.DataFrame | None,
    *,
    levels: Sequence[float] | None,
    seed: int,
    query_size: int = 10,
    method: CutMethod = "logistic",
) -> RatingCutpoints | None:
    """Cuts for ``model``'s predictions on the ``validation`` users (``users``: their
    side features, or None), on P1-shaped tasks: shuffled history, the last
    ``query_size`` ratings as query, at least 3 in support. None when the scale has
    no levels or there are too few validation ratings to place them."""
    from metarec.data.features import user_rows
    from metarec.data.tasks import fixed_tasks

    if levels is None:
        return None
    tasks = fixed_tasks(
        validation, query_size=query_size, order="shuffle", seed=seed, min_support=3
    )
    truth = np.concatenate([t.query_ratings for t in tasks] or [np.zeros(0)])
    if len(truth) < MIN_RATINGS:
        return None
    rows = user_rows(users, [validation.user_ids[t.user] for t in tasks])
    preds = model.predict_tasks(tasks, rows)
    scores = np.concatenate([np.asarray(p, dtype=np.float64) for p in preds])
    return RatingCutpoints.fit(scores, truth.astype(np.float64), levels, method)


def warn_if_unfitted(
    cutpoints: RatingCutpoints | None, levels: Sequence[float] | None, who: str
) -> None:
    """Say where validation users were given but too few to place cuts on (a levelled
    scale: a continuous one has none to place): a rating, in recommend and the
    service, is then the score clipped to the scale, not a scale level, which was
    found only in an answer."""
    if cutpoints is None and levels is not None:
        warnings.warn(
            f"{who}: rating cutpoints not fitted: the validation users hold fewer than "
            f"{MIN_RATINGS} query ratings to place them on, so a rating will be the score "
            "clipped to the scale rather than a scale level",
            UserWarning,
            stacklevel=3,
        )


class MedianView:
    """A fitted rating predictor reporting median ratings through cuts of its own.

    metarec's models report the median for MAE; the same cuts on a peer (the bias
    model in P1 and ``metarec evaluate``) show how much of the MAE gain the cuts
    alone give and how much the model.
    """

    predicts_ratings = True

    def __init__(self, base: _Predictor, cutpoints: RatingCutpoints | None) -> None:
        self.base = base
        self.cutpoints = cutpoints

    @classmethod
    def fit(
        cls,
        base: _Predictor,
        validation: UserRatings,
        users: pd.DataFrame | None,
        *,
        levels: Sequence[float] | None,
        seed: int = 0,
    ) -> MedianView:
        """Cuts fitted on ``validation`` users (see :func:`fit_validation_cutpoints`)."""
        cuts = fit_validation_cutpoints(base, validation, users, levels=levels, seed=seed)
        return cls(base, cuts)

    def predict_tasks(self, tasks: Sequence[Task], users: Any = None) -> list[np.ndarray]:
        return self.base.predict_tasks(tasks, users)

"""Metrics with exact definitions, computed per user and averaged over users.

Names follow RecBole (``ndcg@10``, ``recall@10``, ``precision@10``, ``hit@10``,
``mrr@10``, ``itemcoverage@10``, ``auc``, ``mae``, ``rmse``) plus ``f1@10``.
A per-user value that is undefined (no relevant item, one class only) is NaN
and is skipped when averaging over users (:func:`summarise`).

Rating metrics (P1, per user, over the query set):
    mae  = mean |r̂ - r|;  rmse = sqrt(mean (r̂ - r)²)   (rmse is averaged per
    user, then over users — the MeLU / RecBole-MetaRec convention).

P1 — ranking the query items by predicted score (ties keep query order):
    ndcg@k (MeLU gain)  = DCG@k / IDCG@k with gain 2^g - 1 and discount
    log2(1 + rank), rank starting at 1; IDCG sorts by the true ratings. g is the
    rating mapped linearly onto MeLU's 1-5 where the scale's ends are known, as P1
    passes them (g = 1 + 4 (r - low) / (high - low): r itself on MovieLens' 1-5);
    without the top end, g = r, or r - low on a scale with levels below 0. NaN
    when IDCG is 0 (every query rating at g = 0: no order to reward).
    precision@k = |relevant ∩ top-k| / k, relevant = rating >= threshold
    recall@k    = |relevant ∩ top-k| / |relevant| (users with none: NaN)
    f1@k        = 2·P·R / (P + R), 0 when P = R = 0 (NaN when R is)
    mrr@k       = 1 / rank of the first relevant item in the top k, else 0.
    auc         = P(score of a relevant query item > score of a non-relevant
                  one), ties counting 1/2 — the Mann-Whitney U / (n_pos·n_neg)
                  from average ranks; NaN when the query set has one class.

P2 — full-catalogue top-k (``top``: per user the k catalogue indices shown,
best first; ``relevant``: the user's relevant items):
    hits_j      = 1 if the item at rank j is relevant (j = 1..k)
    ndcg@k      = Σ_j hits_j / log2(1 + j)  /  Σ_{j ≤ min(|rel|, k)} 1 / log2(1 + j)
                  (binary gain; the ideal list puts min(|rel|, k) hits first)
    recall@k    = Σ hits / |rel|;  precision@k = Σ hits / k (k, not the list
                  length: a list shorter than k is penalised, as in RecBole)
    f1@k        = 2·P·R / (P + R), 0 when both are 0
    hit@k       = 1 if Σ hits > 0 else 0;  mrr@k = 1 / rank of the first hit, else 0
    itemcoverage@k = |distinct items over all users' top-k lists| / n_items
                  (a population figure, not a per-user one)
    auc (full ranking, :func:`full_auc`; not among P2's reported metrics, which
                  rank from top-k lists alone) = the AUC above over the user's
                  score row: relevant items against every other candidate (the
                  catalogue minus the excluded support items).
    A list padded with -1 (fewer than k items left once the support is excluded)
    counts no hit there. Tied scores are shown in a fixed pseudo-random order of
    the catalogue (:func:`metarec.models.base.top_k`), never in index order.
Users with no relevant item get NaN in every P2 per-user metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from metarec.errors import InputError
from metarec.values import is_number, is_whole, rated_at_least


def as_numbers(values: object, name: str) -> np.ndarray:
    """``values`` as float64, or an InputError naming them: numpy's "could not convert
    string to float" named no argument, and a string of one number ("0.5") became a
    0-d array of it."""
    if isinstance(values, str | bytes):
        raise InputError(f"{name}: expected numbers, got {values!r:.60}")
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected numbers, got {values!r:.60}") from None


def _pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One user's predictions and true ratings: 1-d, one for one (numpy would broadcast
    a single prediction over every rating and return a number that means nothing), at
    least one, and all finite (a NaN would make the user's MAE NaN, and the mean over
    users drop them without a word; a NaN prediction sorts first in a ranking)."""
    p, t = as_numbers(pred, "pred"), as_numbers(true, "true")
    if p.ndim != 1 or p.shape != t.shape:
        raise InputError(
            f"pred and true must be 1-d and of one length; got shapes {p.shape} and {t.shape}"
        )
    if not len(p):
        raise InputError("pred and true are empty: a metric needs at least one rating")
    if not np.isfinite(t).all():
        raise InputError(f"true ratings must be finite; got {t[~np.isfinite(t)][0]}")
    if not np.isfinite(p).all():
        raise InputError(f"predictions must be finite; got {p[~np.isfinite(p)][0]}")
    return p, t


def _check_k(k: object) -> None:
    # an InputError (a ValueError), as for every other value a metric cannot take;
    # models' check_k raises ConfigError, the error of a setting
    if not is_whole(k) or k <= 0:
        raise InputError(f"k: must be a whole number > 0, got {k!r}")


def _threshold(value: object, name: str = "threshold") -> float:
    if not is_number(value):
        raise InputError(f"{name}: expected a rating (a number), got {value!r:.40}")
    if not np.isfinite(value):
        raise InputError(f"{name}: expected a finite rating, got {value}")
    return float(value)


# 2^r overflows a double past r = 1023: a scale that long has no meaningful MeLU gain
_MAX_GAIN_LEVEL = 1000.0


def _order(pred: np.ndarray) -> np.ndarray:
    return np.argsort(-np.asarray(pred, dtype=np.float64), kind="stable")


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


# -- rating metrics ---------------------------------------------------------
def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error, mean |pred - true|."""
    p, t = _pair(pred, true)
    return float(np.mean(np.abs(p - t)))


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    """Root mean squared error, sqrt(mean (pred - true)^2)."""
    p, t = _pair(pred, true)
    return float(np.sqrt(np.mean((p - t) ** 2)))


# -- P1: ranking the query set ---------------------------------------------
def ndcg_graded(
    pred: np.ndarray, true: np.ndarray, k: int, low: float = 0.0, high: float | None = None
) -> float:
    """MeLU's nDCG@k with gain 2^r - 1.

    ``low`` (and ``high``) are the rating scale's ends. Given both, a rating is first
    mapped linearly onto MeLU's 1-5 (``1 + 4 (r - low) / (high - low)``): the identity
    on MovieLens' 1-5, and what makes the figure the same in any units. Raw 2^r on a
    0-100 scale made every gain but the top rating's vanish beside it (nDCG@3 0.0008
    for every model in a review), and past 1,000 it overflowed. Without ``high``: the
    gain is taken on the rating itself, shifted to start at 0 on a scale that goes
    below 0 (Jester's -10..10), where 2^r - 1 turns negative and nDCG leaves [0, 1].
    """
    pred, true = _pair(pred, true)
    _check_k(k)
    gains = 2.0 ** _gain_levels(true, *_scale(low, high)) - 1.0
    # as deep as the list goes: k = 10**12 allocated a discount per position, 7 TiB
    disc = 1.0 / np.log2(np.arange(2, min(k, len(pred)) + 2))
    top = _order(pred)[:k]
    dcg = float((gains[top] * disc[: len(top)]).sum())
    ideal = np.sort(gains)[::-1][:k]
    idcg = float((ideal * disc[: len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else float("nan")  # no gain anywhere: undefined


def _scale(low: float, high: float | None) -> tuple[float, float | None]:
    low = _threshold(low, "low")
    if high is not None:
        high = _threshold(high, "high")
        if not high > low:
            raise InputError(f"high={high:g} must be above low={low:g}")
    return low, high


def _gain_levels(true: np.ndarray, low: float, high: float | None = None) -> np.ndarray:
    """Ratings as the levels of the 2^r gain (any shape): mapped onto 1-5 with ``high``,
    else levels above the scale's start (see :func:`ndcg_graded`)."""
    if (true < low).any():
        # a rating under the scale's lowest level has a gain below 0: nDCG leaves [0, 1]
        raise InputError(
            f"true rating {true[true < low][0]:g} is below low={low:g}, the scale's lowest level"
        )
    if high is not None:
        if (true > high).any():
            raise InputError(
                f"true rating {true[true > high][0]:g} is above high={high:g}, the scale's "
                "highest level"
            )
        return 1.0 + 4.0 * (true - low) / (high - low)
    levels = true - min(low, 0.0)
    if levels.max() > _MAX_GAIN_LEVEL:
        raise InputError(
            f"true rating {true.max():g} is {levels.max():g} levels above the scale's start: "
            f"the gain 2^r overflows past {_MAX_GAIN_LEVEL:g}"
        )
    return levels


def precision_at(pred: np.ndarray, true: np.ndarray, k: int, threshold: float) -> float:
    """Items rated >= ``threshold`` among the ``k`` highest predicted, over ``k``."""
    pred, true = _pair(pred, true)
    _check_k(k)
    top = _order(pred)[:k]
    return float(rated_at_least(true[top], _threshold(threshold)).sum() / k)


def recall_at(pred: np.ndarray, true: np.ndarray, k: int, threshold: float) -> float:
    """Items rated >= ``threshold`` among the ``k`` highest predicted, over all such
    items; NaN when the user has none."""
    pred, true = _pair(pred, true)
    _check_k(k)
    rel = rated_at_least(true, _threshold(threshold))
    if not rel.any():
        return float("nan")
    top = _order(pred)[:k]
    return float(rel[top].sum() / rel.sum())


def f1(precision: float | np.ndarray, recall: float | np.ndarray) -> np.ndarray:
    """Harmonic mean, 0 where both are 0, NaN where either is NaN."""
    p, r = as_numbers(precision, "f1: precision"), as_numbers(recall, "f1: recall")
    if p.shape != r.shape:  # numpy broadcast a mismatch, or raised naming neither
        raise InputError(
            f"f1: precision and recall must be of one shape; got {p.shape} and {r.shape}"
        )
    for name, values in (("precision", p), ("recall", r)):
        outside = (values < 0) | (values > 1)  # NaN compares false: it stays NaN
        if outside.any():  # f1(2, 5) was 2.86, a harmonic mean of no precision and recall
            raise InputError(f"f1: {name} must lie in [0, 1], got {values[outside].flat[0]:g}")
    total = p + r
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, 2.0 * p * r / np.where(total > 0, total, 1.0), 0.0)
    return np.where(np.isnan(total), np.nan, out)


def f1_at(pred: np.ndarray, true: np.ndarray, k: int, threshold: float) -> float:
    """Harmonic mean of :func:`precision_at` and :func:`recall_at`."""
    return float(f1(precision_at(pred, true, k, threshold), recall_at(pred, true, k, threshold)))


def mrr_at(pred: np.ndarray, true: np.ndarray, k: int, threshold: float) -> float:
    """1 / rank of the first item rated >= ``threshold`` in the top ``k``; 0 if none."""
    pred, true = _pair(pred, true)
    _check_k(k)
    top = _order(pred)[:k]
    hits = np.flatnonzero(rated_at_least(true[top], _threshold(threshold)))
    return float(1.0 / (hits[0] + 1)) if len(hits) else 0.0


def auc_score(scores: np.ndarray, positive: np.ndarray) -> float:
    """Rank AUC of ``scores`` for the boolean ``positive`` mask (ties count 1/2).

    (Σ average ranks of positives − n_pos(n_pos + 1)/2) / (n_pos · n_neg):
    the Mann-Whitney U statistic, which counts every tied pair as 1/2.
    NaN when either class is empty.
    """
    scores = as_numbers(scores, "scores")
    positive = _mask(positive)
    if scores.shape != positive.shape or positive.ndim != 1:
        raise InputError(
            f"scores and positive must be 1-d and of one length; got shapes "
            f"{scores.shape} and {positive.shape}"
        )
    if not np.isfinite(scores).all():
        raise InputError(f"scores must be finite; got {scores[~np.isfinite(scores)][0]}")
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64), method="average")
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _mask(positive: object) -> np.ndarray:
    """``positive`` as booleans: True/False or 1/0 (a 2 or a NaN read as True before)."""
    raw = np.asarray(positive)
    if raw.dtype == bool:
        return raw
    if raw.dtype.kind not in "iuf" or not np.isin(raw, (0, 1)).all():
        shown = raw.ravel()[:3].tolist() if raw.dtype.kind in "iuf" else raw.dtype
        raise InputError(f"positive: expected booleans or 0/1 per score, got {shown!r:.60}")
    return raw.astype(bool)


def auc_query(pred: np.ndarray, true: np.ndarray, threshold: float) -> float:
    """P1 per-user AUC: query items rated >= ``threshold`` against the rest."""
    pred, true = _pair(pred, true)
    return auc_score(pred, rated_at_least(true, _threshold(threshold)))


P1_METRICS = (
    "mae",
    "rmse",
    "ndcg@1",
    "ndcg@3",
    "ndcg@5",
    "precision@5",
    "recall@5",
    "f1@5",
    "mrr@5",
    "auc",
)


def p1_user_metrics(
    pred: np.ndarray,
    true: np.ndarray,
    threshold: float = 4.0,
    low: float = 0.0,
    high: float | None = None,
) -> dict[str, float]:
    """All P1 metrics for one user's query set (``low``, ``high``: the scale's ends, for
    nDCG's gain; see :func:`ndcg_graded`)."""
    pred, true = _pair(pred, true)
    precision = precision_at(pred, true, 5, threshold)
    recall = recall_at(pred, true, 5, threshold)
    return {
        "mae": mae(pred, true),
        "rmse": rmse(pred, true),
        "ndcg@1": ndcg_graded(pred, true, 1, low, high),
        "ndcg@3": ndcg_graded(pred, true, 3, low, high),
        "ndcg@5": ndcg_graded(pred, true, 5, low, high),
        "precision@5": precision,
        "recall@5": recall,
        "f1@5": float(f1(precision, recall)),
        "mrr@5": mrr_at(pred, true, 5, threshold),
        "auc": auc_query(pred, true, threshold),
    }


def per_user_table(
    preds: Sequence[np.ndarray],
    trues: Sequence[np.ndarray],
    threshold: float = 4.0,
    low: float = 0.0,
    high: float | None = None,
) -> dict[str, np.ndarray]:
    """Metric name → per-user values (NaN where undefined, e.g. recall without relevant
    items); ``low``, ``high``: the scale's ends, for nDCG's gain (:func:`ndcg_graded`)."""
    for name, lists in (("preds", preds), ("trues", trues)):
        if isinstance(lists, str | bytes) or not hasattr(lists, "__len__"):
            # None or a generator met len() as a TypeError naming neither
            raise InputError(f"{name}: expected a list with one array per user, got {lists!r:.60}")
    if len(preds) != len(trues):
        raise InputError(f"preds has {len(preds)} users, trues {len(trues)}: one list a user")
    pairs = []
    for user, (p, t) in enumerate(zip(preds, trues, strict=True)):
        try:
            pairs.append(_pair(p, t))
        except ValueError as exc:
            raise InputError(f"user {user} of {len(preds)}: {exc}") from None
    threshold, (low, high) = _threshold(threshold), _scale(low, high)
    out = {m: np.empty(len(pairs), dtype=np.float64) for m in P1_METRICS}
    # Users with query sets of one length are scored as one matrix: one user at a time
    # (p1_user_metrics, the reference these equal) took a second for 3,000 users, and a
    # P1 run scores every state of every model. P1's query sets share a length or few.
    lengths = np.array([len(p) for p, _ in pairs], dtype=np.int64)
    for length in np.unique(lengths):
        users = np.flatnonzero(lengths == length)
        pred = np.stack([pairs[u][0] for u in users])
        true = np.stack([pairs[u][1] for u in users])
        try:
            values = _p1_block(pred, true, threshold, low, high)
        except ValueError as exc:  # the first user the block refuses, named as above
            bad = next(u for u in users if not _p1_ok(*pairs[u], low, high))
            raise InputError(f"user {bad} of {len(preds)}: {exc}") from None
        for m, v in values.items():
            out[m][users] = v
    return out


def _p1_ok(pred: np.ndarray, true: np.ndarray, low: float, high: float | None) -> bool:
    try:
        _gain_levels(true, low, high)
    except InputError:
        return False
    return True


def _p1_block(
    pred: np.ndarray, true: np.ndarray, threshold: float, low: float, high: float | None
) -> dict[str, np.ndarray]:
    """:func:`p1_user_metrics` for ``[users, q]`` predictions and ratings at once."""
    levels = _gain_levels(true, low, high)
    q = true.shape[1]
    err = pred - true
    order = np.argsort(-pred, axis=1, kind="stable")  # _order's ties, row by row
    gains = 2.0**levels - 1.0
    ranked_gains = np.take_along_axis(gains, order, axis=1)
    ideal = -np.sort(-gains, axis=1)
    disc = 1.0 / np.log2(np.arange(2, q + 2))
    out: dict[str, np.ndarray] = {
        "mae": np.abs(err).mean(axis=1),
        "rmse": np.sqrt((err**2).mean(axis=1)),
    }
    for k in (1, 3, 5):
        dcg = (ranked_gains[:, :k] * disc[:k]).sum(axis=1)
        idcg = (ideal[:, :k] * disc[:k]).sum(axis=1)
        out[f"ndcg@{k}"] = np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), np.nan)
    rel = rated_at_least(true, threshold)
    hits = np.take_along_axis(rel, order, axis=1)[:, :5]
    n_rel = rel.sum(axis=1)
    out["precision@5"] = hits.sum(axis=1) / 5
    with np.errstate(invalid="ignore", divide="ignore"):
        out["recall@5"] = np.where(n_rel > 0, hits.sum(axis=1) / n_rel, np.nan)
    out["f1@5"] = f1(out["precision@5"], out["recall@5"])
    out["mrr@5"] = np.where(hits.any(axis=1), 1.0 / (hits.argmax(axis=1) + 1), 0.0)
    ranks = rankdata(pred, method="average", axis=1)
    n_neg = q - n_rel
    u = (ranks * rel).sum(axis=1) - n_rel * (n_rel + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        out["auc"] = np.where((n_rel > 0) & (n_neg > 0), u / (n_rel * n_neg), np.nan)
    return out


def summarise(table: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over users of each metric, NaN users skipped."""
    if not isinstance(table, dict):
        raise InputError(f"table: expected metric name -> per-user values, got {table!r:.60}")
    return {m: _nanmean(as_numbers(v, f"table[{m!r}]")) for m, v in table.items()}


# -- P2: full-catalogue top-k ----------------------------------------------
def hit_matrix(top: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Boolean [n_users, k]: is the item at each rank relevant to that user?

    ``top`` may be narrower than ``k`` (short lists: the missing ranks are
    misses) and may hold -1 for an empty slot. One vectorised membership test
    over (user, item) keys instead of a Python loop over users.
    """
    _check_k(k)
    hits = _hits(_top_lists(top), _index_lists(relevant, "relevant"), k)
    out = np.zeros((len(hits), k), dtype=bool)
    out[:, : hits.shape[1]] = hits
    return out


def _hits(top: np.ndarray, relevant: list[np.ndarray], k: int) -> np.ndarray:
    """:func:`hit_matrix` for the ranks shown only: [n_users, min(k, width)]."""
    if len(top) != len(relevant):
        raise InputError(f"top has {len(top)} rows, relevant {len(relevant)}: one a user")
    n_users, width = top.shape
    shown = top[:, : min(k, width)]
    lengths = np.array([len(r) for r in relevant], dtype=np.int64)
    rel_items = np.concatenate(relevant) if lengths.sum() else np.zeros(0, dtype=np.int64)
    # items renumbered densely first: user * (largest index + 1) + item wrapped past
    # int64 for indices near 2**62, and another user's item counted as a hit
    valid = shown >= 0
    n_shown = int(valid.sum())
    _, codes = np.unique(np.concatenate([shown[valid], rel_items]), return_inverse=True)
    span = int(codes.max(initial=0)) + 1
    shown_codes = np.zeros(shown.shape, dtype=np.int64)
    shown_codes[valid] = codes[:n_shown]
    rel_keys = np.repeat(np.arange(n_users, dtype=np.int64), lengths) * span + codes[n_shown:]
    keys = np.arange(n_users, dtype=np.int64)[:, None] * span + shown_codes
    return np.isin(keys, rel_keys) & valid


def _index_lists(lists: object, name: str) -> list[np.ndarray]:
    """``lists`` as one array of catalogue indices per user. Each must be whole numbers
    >= 0: a -1 in one user's list was another user's item in the (user, item) keys of
    :func:`_hits`, and 1.7 was cut to item 1."""
    if isinstance(lists, str | bytes) or not hasattr(lists, "__len__"):
        raise InputError(
            f"{name}: expected a list of catalogue indices per user, got {lists!r:.60}"
        )
    out = []
    per_user: Sequence[object] = lists  # type: ignore[assignment]
    for u, items in enumerate(per_user):
        raw = np.asarray(items)
        if raw.ndim != 1 or (raw.size and raw.dtype.kind not in "iuf"):
            raise InputError(
                f"{name}[{u}]: expected a list of catalogue indices, got {items!r:.60}"
            )
        if not raw.size:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        with np.errstate(invalid="ignore"):
            arr = raw.astype(np.int64)
        wrong = (arr != raw) | (arr < 0)
        if wrong.any():
            bad = raw[wrong][0].item()
            raise InputError(f"{name}[{u}]: holds {bad!r}; indices are whole numbers >= 0")
        out.append(arr)
    return out


def _top_lists(top: object) -> np.ndarray:
    """``top`` as [n_users, width] catalogue indices, -1 for an empty slot, no item
    twice in a row: a list that shows an item twice would count it as two hits, and
    recall and nDCG would leave [0, 1]."""
    try:
        raw = np.asarray(top)
        arr = raw.astype(np.int64)
    except (TypeError, ValueError):  # ragged rows, text
        raise InputError(
            "top: expected [n_users, k] catalogue indices, rows of one length"
        ) from None
    # True and False are no items, though numpy reads them as 1 and 0
    if arr.ndim != 2 or (raw.size and (raw.dtype.kind == "b" or not (arr == raw).all())):
        raise InputError(
            f"top: expected [n_users, k] whole catalogue indices; got shape {arr.shape}, "
            f"dtype {raw.dtype}"
        )
    if (arr < -1).any():
        raise InputError(f"top: holds {int(arr.min())}; indices are >= 0 (-1: an empty slot)")
    ordered = np.sort(arr, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if repeated.any():
        user, col = np.argwhere(repeated)[0]
        raise InputError(f"top: row {user} shows item {ordered[user, col + 1]} twice")
    return arr


def ranking_table(top: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> dict[str, np.ndarray]:
    """P2 per-user metrics @k: ndcg, recall, precision, f1, hit, mrr (NaN: no relevant item).

    ``top[u]``: catalogue indices shown to user ``u``, best first;
    ``relevant[u]``: the user's relevant catalogue indices (unique).
    """
    _check_k(k)
    rel = _index_lists(relevant, "relevant")
    hits = _hits(_top_lists(top), rel, k).astype(np.float64)  # the ranks shown, <= k
    n_rel = np.array([len(np.unique(r)) for r in rel], dtype=np.float64)
    # discounts as deep as a list or an ideal list reaches, not k deep: a k past the
    # catalogue (10**10, say) asked for memory no list could fill
    depth = int(min(k, max(n_rel.max(initial=0), hits.shape[1])))
    disc = 1.0 / np.log2(np.arange(2, depth + 2))
    ideal_cum = np.concatenate([[0.0], np.cumsum(disc)])  # ideal_cum[m] = Σ_{j ≤ m} disc_j
    dcg = hits @ disc[: hits.shape[1]]
    idcg = ideal_cum[np.minimum(n_rel, k).astype(np.int64)]
    n_hits = hits.sum(axis=1)
    # a list as wide as nothing (top of shape [n, 0]) has no first hit: argmax refused it
    first = np.argmax(hits > 0, axis=1) if hits.shape[1] else np.zeros(len(hits), dtype=np.int64)
    none = n_rel == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(none, np.nan, n_hits / np.where(none, 1.0, n_rel))
        ndcg = np.where(none, np.nan, dcg / np.where(none, 1.0, idcg))
    precision = np.where(none, np.nan, n_hits / k)
    return {
        f"ndcg@{k}": ndcg,
        f"recall@{k}": recall,
        f"precision@{k}": precision,
        f"f1@{k}": f1(precision, recall),
        f"hit@{k}": np.where(none, np.nan, (n_hits > 0).astype(np.float64)),
        f"mrr@{k}": np.where(none, np.nan, np.where(n_hits > 0, 1.0 / (first + 1), 0.0)),
    }


def coverage(top: np.ndarray, n_items: int) -> float:
    """``itemcoverage@k``: distinct items over all users' lists / ``n_items`` (-1 = empty slot)."""
    if not is_whole(n_items) or n_items <= 0:
        raise InputError(f"n_items: must be a whole number > 0, got {n_items!r}")
    shown = _top_lists(top).ravel()
    if shown.size and shown.max() >= n_items:
        raise InputError(f"top holds item {shown.max()}, outside a catalogue of {n_items}")
    return float(len(np.unique(shown[shown >= 0])) / n_items)


def full_auc(
    scores: np.ndarray,
    relevant: Sequence[np.ndarray],
    exclude: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Per-user full-ranking AUC from score rows [n_users, n_items] (NaN: one class).

    Candidates are every item except ``exclude[u]`` (the support set, which
    the user is never shown); relevant candidates are ranked against all the
    other candidates, ties counting 1/2.
    """
    scores = as_numbers(scores, "scores")
    rel = _index_lists(relevant, "relevant")  # before len(): None was a bare TypeError
    if scores.ndim != 2 or len(scores) != len(rel):
        raise InputError(
            f"scores must be [n_users, n_items] with a row per relevant set; got {scores.shape} "
            f"for {len(rel)} users"
        )
    n_items = scores.shape[1]
    if not np.isfinite(scores).all():
        user = int(np.argwhere(~np.isfinite(scores))[0, 0])
        raise InputError(f"scores[{user}]: scores must be finite")
    skip = [np.zeros(0, dtype=np.int64)] * len(rel)
    if exclude is not None:
        skip = _index_lists(exclude, "exclude")
        if len(skip) != len(rel):
            raise InputError(f"exclude has {len(skip)} lists for {len(rel)} users: one a user")
    for name, lists in (("relevant", rel), ("exclude", skip)):
        for u, items in enumerate(lists):
            if items.size and items.max() >= n_items:
                raise InputError(f"{name}[{u}]: item indices must be in [0, {n_items})")
    out = np.full(len(scores), np.nan)
    for u, row in enumerate(scores):
        keep = np.ones(len(row), dtype=bool)
        keep[skip[u]] = False
        positive = np.zeros(len(row), dtype=bool)
        positive[rel[u]] = True
        out[u] = auc_score(row[keep], positive[keep])
    return out


def ranking_summary(
    top: np.ndarray, relevant: Sequence[np.ndarray], k: int, n_items: int
) -> dict[str, float]:
    """Means over users of :func:`ranking_table` plus ``itemcoverage@k``."""
    out = summarise(ranking_table(top, relevant, k))
    out[f"itemcoverage@{k}"] = coverage(np.asarray(top)[:, :k], n_items)
    return out

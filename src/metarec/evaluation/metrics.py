"""Metrics with exact definitions, computed per user and averaged over users.

Rating metrics (per user, over the query set):
    mae  = mean |r̂ - r|;  rmse = sqrt(mean (r̂ - r)²)   (rmse is averaged per
    user, then over users — the MeLU / RecBole-MetaRec convention).

Ranking the query items by predicted score (ties keep query order):
    ndcg@k (MeLU gain)  = DCG@k / IDCG@k with gain 2^r - 1 and discount
    log2(1 + rank), rank starting at 1; IDCG sorts by the true ratings.
    precision@k = |relevant ∩ top-k| / k, relevant = rating >= threshold
    recall@k    = |relevant ∩ top-k| / |relevant| (users with none: skipped)
    mrr@k       = 1 / rank of the first relevant item in the top k, else 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _order(pred: np.ndarray) -> np.ndarray:
    return np.argsort(-np.asarray(pred, dtype=np.float64), kind="stable")


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(true))))


def rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(true)) ** 2)))


def ndcg_graded(pred: np.ndarray, true: np.ndarray, k: int) -> float:
    true = np.asarray(true, dtype=np.float64)
    gains = 2.0**true - 1.0
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    top = _order(pred)[:k]
    dcg = float((gains[top] * disc[: len(top)]).sum())
    ideal = np.sort(gains)[::-1][:k]
    idcg = float((ideal * disc[: len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else 0.0


def precision_at(pred: np.ndarray, true: np.ndarray, k: int, threshold: float) -> float:
    top = _order(pred)[:k]
    return float((np.asarray(true)[top] >= threshold).sum() / k)


def recall_at(pred: np.ndarray, true: np.ndarray, k: int, threshold: float) -> float:
    rel = np.asarray(true) >= threshold
    if not rel.any():
        return float("nan")
    top = _order(pred)[:k]
    return float(rel[top].sum() / rel.sum())


def mrr_at(pred: np.ndarray, true: np.ndarray, k: int, threshold: float) -> float:
    top = _order(pred)[:k]
    hits = np.flatnonzero(np.asarray(true)[top] >= threshold)
    return float(1.0 / (hits[0] + 1)) if len(hits) else 0.0


P1_METRICS = ("mae", "rmse", "ndcg@1", "ndcg@3", "ndcg@5", "precision@5", "recall@5", "mrr@5")


def p1_user_metrics(pred: np.ndarray, true: np.ndarray, threshold: float = 4.0) -> dict[str, float]:
    """All P1 metrics for one user's query set."""
    return {
        "mae": mae(pred, true),
        "rmse": rmse(pred, true),
        "ndcg@1": ndcg_graded(pred, true, 1),
        "ndcg@3": ndcg_graded(pred, true, 3),
        "ndcg@5": ndcg_graded(pred, true, 5),
        "precision@5": precision_at(pred, true, 5, threshold),
        "recall@5": recall_at(pred, true, 5, threshold),
        "mrr@5": mrr_at(pred, true, 5, threshold),
    }


def per_user_table(
    preds: Sequence[np.ndarray], trues: Sequence[np.ndarray], threshold: float = 4.0
) -> dict[str, np.ndarray]:
    """Metric name → per-user values (NaN where undefined, e.g. recall without relevant items)."""
    rows = [p1_user_metrics(p, t, threshold) for p, t in zip(preds, trues, strict=True)]
    return {m: np.array([r[m] for r in rows], dtype=np.float64) for m in P1_METRICS}


def summarise(table: dict[str, np.ndarray]) -> dict[str, float]:
    return {
        m: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for m, v in table.items()
    }

"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metarec.evaluation import metrics as M

TRUE = np.array([5.0, 3.0, 4.0, 1.0])
PRED = np.array([4.0, 4.5, 3.0, 1.0])  # ranks: item1 (4.5), item0 (4.0), item2 (3.0), item3


def test_mae_rmse() -> None:
    # |errors| = 1, 1.5, 1, 0
    assert M.mae(PRED, TRUE) == pytest.approx(3.5 / 4)
    assert M.rmse(PRED, TRUE) == pytest.approx(math.sqrt((1 + 2.25 + 1 + 0) / 4))


def test_ndcg_melu_gain() -> None:
    # ranked true ratings: 3, 5, 4, 1 → gains 7, 31, 15, 1
    dcg3 = 7 / math.log2(2) + 31 / math.log2(3) + 15 / math.log2(4)
    idcg3 = 31 / math.log2(2) + 15 / math.log2(3) + 7 / math.log2(4)
    assert M.ndcg_graded(PRED, TRUE, 3) == pytest.approx(dcg3 / idcg3)
    assert M.ndcg_graded(PRED, TRUE, 1) == pytest.approx(7 / 31)
    assert M.ndcg_graded(TRUE, TRUE, 4) == pytest.approx(1.0)


def test_precision_recall_mrr() -> None:
    # relevant (>= 4): items 0 and 2. Top-2 by prediction: items 1, 0.
    assert M.precision_at(PRED, TRUE, 2, 4.0) == pytest.approx(0.5)
    assert M.recall_at(PRED, TRUE, 2, 4.0) == pytest.approx(0.5)
    assert M.recall_at(PRED, TRUE, 3, 4.0) == pytest.approx(1.0)
    assert M.mrr_at(PRED, TRUE, 5, 4.0) == pytest.approx(0.5)
    assert M.mrr_at(PRED, TRUE, 1, 4.0) == 0.0
    assert math.isnan(M.recall_at(PRED, np.ones(4), 2, 4.0))


def test_ties_keep_query_order() -> None:
    flat = np.zeros(4)
    assert M.ndcg_graded(flat, TRUE, 1) == pytest.approx(1.0)  # item 0 (rating 5) comes first


def test_per_user_table_and_summary_skip_undefined() -> None:
    table = M.per_user_table([PRED, PRED], [TRUE, np.ones(4)])
    assert np.isnan(table["recall@5"][1])
    summary = M.summarise(table)
    assert summary["recall@5"] == pytest.approx(1.0)
    assert summary["mae"] == pytest.approx((3.5 / 4 + np.abs(PRED - 1).mean()) / 2)

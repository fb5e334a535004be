"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metarec.errors import InputError
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
    # a k past the list is the list's depth: 10**12 was a 7 TiB MemoryError
    assert M.ndcg_graded(PRED, TRUE, 10**12) == M.ndcg_graded(PRED, TRUE, len(PRED))


def test_ndcg_with_no_gain_to_order_is_undefined() -> None:
    # every query rating at the bottom of a scale read without its top: each gain is
    # 2^0 - 1 = 0, so every order is ideal and none better; 0 (not NaN) entered the
    # mean as the worst possible list
    zeros = np.zeros(4)
    assert math.isnan(M.ndcg_graded(PRED, zeros, 3))
    per_user = M.per_user_table([PRED, PRED], [zeros, TRUE], 3.0)
    assert math.isnan(per_user["ndcg@3"][0])
    assert per_user["ndcg@3"][1] == pytest.approx(M.ndcg_graded(PRED, TRUE, 3))


def test_ndcg_gain_on_a_scale_below_zero_starts_at_its_lowest_level() -> None:
    # a -2..2 scale shifted to 0..4: ranked true ratings 0, 2, 1, -2 → 2, 4, 3, 0
    # → gains 3, 15, 7, 0 (2^r - 1 would give 0, 3, 1, -0.75 and a "nDCG" above 1)
    true = TRUE - 3.0
    dcg3 = 3 / math.log2(2) + 15 / math.log2(3) + 7 / math.log2(4)
    idcg3 = 15 / math.log2(2) + 7 / math.log2(3) + 3 / math.log2(4)
    assert M.ndcg_graded(PRED, true, 3, low=-2.0) == pytest.approx(dcg3 / idcg3)
    assert M.ndcg_graded(PRED, true, 1, low=-2.0) == pytest.approx(3 / 15)
    # a scale from 0 or above keeps MeLU's 2^r - 1
    assert M.ndcg_graded(PRED, TRUE, 3, low=1.0) == M.ndcg_graded(PRED, TRUE, 3)


def test_a_nan_prediction_is_refused_not_averaged_away() -> None:
    with pytest.raises(ValueError, match=r"user 1 of 2: predictions must be finite; got nan"):
        M.per_user_table([PRED, np.array([1.0, np.nan, 2.0, 3.0])], [TRUE, TRUE])


def test_precision_recall_mrr() -> None:
    # relevant (>= 4): items 0 and 2. Top-2 by prediction: items 1, 0.
    assert M.precision_at(PRED, TRUE, 2, 4.0) == pytest.approx(0.5)
    assert M.recall_at(PRED, TRUE, 2, 4.0) == pytest.approx(0.5)
    assert M.recall_at(PRED, TRUE, 3, 4.0) == pytest.approx(1.0)
    assert M.mrr_at(PRED, TRUE, 5, 4.0) == pytest.approx(0.5)
    assert M.mrr_at(PRED, TRUE, 1, 4.0) == 0.0
    assert math.isnan(M.recall_at(PRED, np.ones(4), 2, 4.0))


def test_a_rating_at_a_threshold_float32_cannot_hold_is_relevant() -> None:
    # tasks hold ratings as float32, where 0.7 is 0.69999999: below a float64 0.7, so a
    # like at the threshold was relevant to training and P2 but not to P1's metrics
    true = np.array([0.7, 0.7, 0.5, 0.6], dtype=np.float32)
    pred = np.array([4.0, 3.0, 2.0, 1.0])
    assert M.precision_at(pred, true, 2, 0.7) == 1.0
    assert M.recall_at(pred, true, 2, 0.7) == 1.0
    assert M.mrr_at(pred, true, 2, 0.7) == 1.0
    assert M.auc_query(pred, true, 0.7) == 1.0
    table = M.per_user_table([pred], [true], threshold=0.7)
    assert table["precision@5"].tolist() == [0.4] and table["recall@5"].tolist() == [1.0]


def test_ties_keep_query_order() -> None:
    flat = np.zeros(4)
    assert M.ndcg_graded(flat, TRUE, 1) == pytest.approx(1.0)  # item 0 (rating 5) comes first


def test_per_user_table_and_summary_skip_undefined() -> None:
    table = M.per_user_table([PRED, PRED], [TRUE, np.ones(4)])
    assert np.isnan(table["recall@5"][1])
    summary = M.summarise(table)
    assert summary["recall@5"] == pytest.approx(1.0)
    assert summary["mae"] == pytest.approx((3.5 / 4 + np.abs(PRED - 1).mean()) / 2)


# -- P1 additions: f1 and AUC ---------------------------------------------------
def test_f1_at_is_the_harmonic_mean() -> None:
    # top-2 = items 1, 0; relevant = {0, 2}: P = 1/2, R = 1/2 → F1 = 1/2
    assert M.f1_at(PRED, TRUE, 2, 4.0) == pytest.approx(0.5)
    # top-3 = items 1, 0, 2: P = 2/3, R = 1 → F1 = 2·(2/3)/(5/3) = 0.8
    assert M.f1_at(PRED, TRUE, 3, 4.0) == pytest.approx(0.8)
    # top-1 = item 1 (rated 3): P = R = 0 → 0, not NaN
    assert M.f1_at(PRED, TRUE, 1, 4.0) == 0.0
    assert math.isnan(M.f1_at(PRED, np.ones(4), 2, 4.0))  # no relevant item: recall undefined


def test_query_auc_by_hand() -> None:
    # relevant: items 0 (pred 4.0) and 2 (pred 3.0); others: 1 (4.5), 3 (1.0)
    # pairs (pos, neg): (0,1) 0, (0,3) 1, (2,1) 0, (2,3) 1 → 2/4
    assert M.auc_query(PRED, TRUE, 4.0) == pytest.approx(0.5)
    assert M.auc_query(TRUE, TRUE, 4.0) == pytest.approx(1.0)
    assert M.auc_query(-TRUE, TRUE, 4.0) == pytest.approx(0.0)


def test_auc_ties_count_half_and_one_class_is_nan() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.1])
    positive = np.array([True, False, True, False])
    # (0 vs 1) 1, (0 vs 3) 1, (2 vs 1) tie ½, (2 vs 3) 1 → 3.5 / 4
    assert M.auc_score(scores, positive) == pytest.approx(0.875)
    assert M.auc_score(np.zeros(4), positive) == pytest.approx(0.5)  # all tied
    assert math.isnan(M.auc_score(scores, np.ones(4, dtype=bool)))
    assert math.isnan(M.auc_score(scores, np.zeros(4, dtype=bool)))


def test_p1_table_has_auc_and_f1_and_skips_one_class_users() -> None:
    table = M.per_user_table([PRED, PRED], [TRUE, np.full(4, 5.0)])
    assert table["auc"][0] == pytest.approx(0.5)
    assert np.isnan(table["auc"][1])  # every query rating relevant: one class
    assert table["f1@5"][0] == pytest.approx(2 * 0.4 * 1.0 / 1.4)  # P@5 = 2/5, R@5 = 1
    assert M.summarise(table)["auc"] == pytest.approx(0.5)


# -- P2: full-catalogue top-k -----------------------------------------------------
def test_ranking_table_by_hand() -> None:
    top = np.array([[3, 1, 7], [4, 5, 6], [2, 8, 0], [5, 6, 7]])
    relevant = [np.array([1, 9]), np.array([], dtype=np.int64), np.array([2, 8, 0, 5]), [9]]
    t = M.ranking_table(top, relevant, 3)
    assert set(t) == {"ndcg@3", "recall@3", "precision@3", "f1@3", "hit@3", "mrr@3"}
    # user 0: one hit at rank 2; ideal over min(|rel| = 2, 3) = 2 ranks
    assert t["ndcg@3"][0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert t["recall@3"][0] == pytest.approx(1 / 2)
    assert t["precision@3"][0] == pytest.approx(1 / 3)
    assert t["f1@3"][0] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # 0.4
    assert t["hit@3"][0] == 1.0 and t["mrr@3"][0] == pytest.approx(1 / 2)
    # user 1: nothing relevant → NaN everywhere (skipped in means)
    assert all(np.isnan(v[1]) for v in t.values())
    # user 2: all three shown are relevant; ideal over min(4, 3) = 3 → ndcg 1; recall 3/4
    assert t["ndcg@3"][2] == pytest.approx(1.0)
    assert t["recall@3"][2] == pytest.approx(3 / 4) and t["precision@3"][2] == 1.0
    assert t["f1@3"][2] == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert t["mrr@3"][2] == 1.0
    # user 3: no hit → zeros (f1 is 0, not NaN)
    assert [t[m][3] for m in ("ndcg@3", "recall@3", "precision@3", "f1@3", "hit@3", "mrr@3")] == [
        0.0
    ] * 6
    summary = M.ranking_summary(top, relevant, 3, n_items=20)
    assert summary["hit@3"] == pytest.approx(2 / 3)  # users 0, 2, 3; user 1 skipped
    # distinct items shown: {0, 1, 2, 3, 4, 5, 6, 7, 8} = 9 of 20
    assert summary["itemcoverage@3"] == pytest.approx(9 / 20)


def test_ranking_table_k_beyond_the_list_and_empty_slots() -> None:
    # a 2-item list judged @3: the missing third rank is a miss; precision divides by k
    t = M.ranking_table(np.array([[1, 4]]), [np.array([4])], 3)
    assert t["precision@3"][0] == pytest.approx(1 / 3)
    assert t["ndcg@3"][0] == pytest.approx(1 / math.log2(3))  # ideal: 1 hit at rank 1
    assert t["mrr@3"][0] == pytest.approx(1 / 2)
    # -1 marks an empty slot and never matches
    t = M.ranking_table(np.array([[4, -1, -1]]), [np.array([4])], 3)
    assert t["precision@3"][0] == pytest.approx(1 / 3) and t["ndcg@3"][0] == 1.0
    # also beside another user's relevant items: users' items share one key space, where
    # a -1 of the second user lands on the first user's last key
    t = M.ranking_table(np.array([[0, -1], [1, -1]]), [np.array([9]), np.array([2])], 2)
    assert t["hit@2"].tolist() == [0.0, 0.0] and t["mrr@2"].tolist() == [0.0, 0.0]
    # a list of no items (top [n, 0]) shows nothing: argmax of an empty sequence before
    t = M.ranking_table(np.zeros((2, 0)), [np.array([2]), np.array([], dtype=int)], 3)
    assert [t[m][0] for m in ("ndcg@3", "recall@3", "precision@3", "f1@3", "hit@3", "mrr@3")] == [
        0.0
    ] * 6
    assert all(np.isnan(t[m][1]) for m in t)  # no relevant item: NaN, as for any list
    # a wider list is cut at k
    t = M.ranking_table(np.array([[0, 1, 2, 3]]), [np.array([3])], 2)
    assert t["hit@2"][0] == 0.0
    # indices near 2**62: user * (largest + 1) + item wrapped past int64, and user 0's
    # shown item 7 met another user's key for the relevant item 2**62 - 1
    big = 2**62 - 1
    one = [np.array([1])] * 3
    t = M.ranking_table(np.array([[7], [0], [0], [0], [0]]), [np.array([big]), *one, [7]], 1)
    assert t["hit@1"].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0]
    t = M.ranking_table(np.array([[big], [7]]), [np.array([big]), np.array([7])], 1)
    assert t["hit@1"].tolist() == [1.0, 1.0]
    # True and False are no items, though numpy reads them as 1 and 0
    with pytest.raises(InputError, match=r"top: expected .* whole catalogue indices"):
        M.ranking_table(np.array([[True, False]]), [np.array([1])], 2)


def test_ranking_table_matches_a_loop_over_users() -> None:
    rng = np.random.default_rng(0)
    k, n_items = 10, 60
    top = np.stack([rng.permutation(n_items)[:k] for _ in range(50)])
    relevant = [rng.choice(n_items, size=int(rng.integers(0, 8)), replace=False) for _ in range(50)]
    table = M.ranking_table(top, relevant, k)
    for u in range(50):
        rel = set(relevant[u].tolist())
        hits = [int(i in rel) for i in top[u]]
        if not rel:
            assert np.isnan(table["ndcg@10"][u])
            continue
        dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
        idcg = sum(1 / math.log2(j + 2) for j in range(min(len(rel), k)))
        assert table["ndcg@10"][u] == pytest.approx(dcg / idcg)
        assert table["recall@10"][u] == pytest.approx(sum(hits) / len(rel))
        first = hits.index(1) + 1 if 1 in hits else None
        assert table["mrr@10"][u] == pytest.approx(1 / first if first else 0.0)


def test_coverage() -> None:
    assert M.coverage(np.array([[0, 1], [1, 2]]), 10) == pytest.approx(3 / 10)
    assert M.coverage(np.array([[0, -1], [0, -1]]), 4) == pytest.approx(1 / 4)


def test_full_auc_excludes_support_and_halves_ties() -> None:
    scores = np.array([[0.5, 0.5, 0.2, 0.9], [0.1, 0.2, 0.3, 0.4]])
    relevant = [np.array([0]), np.array([], dtype=np.int64)]
    # user 0, all four candidates: 0 vs 1 tie ½, vs 2 win 1, vs 3 loss 0 → 1.5/3
    assert M.full_auc(scores, relevant)[0] == pytest.approx(0.5)
    # support item 3 excluded: (½ + 1) / 2
    auc = M.full_auc(scores, relevant, exclude=[np.array([3]), np.array([0])])
    assert auc[0] == pytest.approx(0.75)
    assert np.isnan(auc[1])  # no relevant item


def test_metric_inputs_that_would_broadcast_or_wrap_are_refused() -> None:
    pred, true = np.array([0.9, 0.8, 0.1]), np.array([5.0, 3.0, 1.0])
    for call in [
        lambda: M.mae([3.0], true),  # one prediction broadcast over three ratings
        lambda: M.ndcg_graded(pred[:2], true, 3),
        lambda: M.auc_score(pred, np.array([True, False])),
        lambda: M.coverage(np.array([[0, 1, 2], [3, 4, 5]]), 3),
    ]:
        with pytest.raises(ValueError):
            call()
    for call in [
        lambda: M.precision_at(pred, true, -2, 4.0),
        lambda: M.recall_at(pred, true, 0, 4.0),
        lambda: M.mrr_at(pred, true, 2.0, 4.0),  # type: ignore[arg-type]
    ]:
        with pytest.raises(ValueError, match="k: must be a whole number > 0"):
            call()
    assert M.precision_at(pred, true, np.int64(2), 4.0) == 0.5


def test_inputs_that_would_give_numbers_outside_the_metric_are_named() -> None:
    pred, true = np.array([0.9, 0.8, 0.1]), np.array([5.0, 3.0, 1.0])
    rel = [np.array([1])]
    for call, needle in [
        # one item shown three times counted three hits: recall@3 = 3, ndcg@3 = 2.13
        (lambda: M.ranking_table(np.array([[1, 1, 1]]), rel, 3), "row 0 shows item 1 twice"),
        (lambda: M.ranking_table(np.array([[1.5, 2.0]]), rel, 2), "whole catalogue indices"),
        (lambda: M.ranking_table([[1, 2], [3]], rel * 2, 2), "rows of one length"),
        (lambda: M.ranking_table(np.array([[1, 2]]), rel * 2, 2), "top has 1 rows, relevant 2"),
        # a NaN true rating made the user's MAE NaN, and the mean dropped them silently
        (lambda: M.p1_user_metrics(pred, np.array([5.0, np.nan, 1.0])), "true ratings must be"),
        (lambda: M.mae([], []), "empty"),
        (lambda: M.mae(["a"], [1.0]), r"pred: expected numbers, got \['a'\]"),
        (lambda: M.precision_at(pred, true, 2, None), "threshold: expected a rating"),
        (lambda: M.full_auc(np.zeros((1, 3)), [np.array([5])]), r"relevant\[0\]: item indices"),
        (lambda: M.full_auc(np.zeros((1, 3)), None), "relevant: expected a list"),  # TypeError
        (lambda: M.coverage(np.array([[0, 1]]), 0), "n_items: must be a whole number > 0"),
    ]:
        with pytest.raises(InputError, match=needle):
            call()
    with pytest.raises(InputError, match=r"k: must be a whole number > 0, got 1\.5"):
        M.ranking_table(np.array([[1, 2]]), rel, 1.5)  # type: ignore[arg-type]
    # -1 is an empty slot, and whole floats are indices still
    table = M.ranking_table(np.array([[1.0, 2.0, -1.0]]), rel, 3)
    assert table["ndcg@3"][0] == 1.0 and table["recall@3"][0] == 1.0


def test_inputs_that_gave_a_silent_wrong_answer_are_refused() -> None:
    pred = np.array([0.9, 0.8, 0.1])
    for call, needle in [
        # user 1's item -1 was user 0's highest item in the (user, item) keys: a false hit
        (lambda: M.ranking_table([[3], [0]], [[0], [-1]], 1), r"relevant\[1\]: holds -1"),
        (lambda: M.ranking_table([[0, 1]], [[1.7]], 2), r"relevant\[0\]: holds 1\.7"),
        (lambda: M.ranking_table([[0, 1]], [["a"]], 2), r"relevant\[0\]: expected a list"),
        (lambda: M.ranking_table([[0, 1]], 5, 2), "relevant: expected a list of catalogue"),
        (lambda: M.hit_matrix([[0, 1]], [1], 2), r"relevant\[0\]: expected a list"),
        (lambda: M.full_auc([[1.0, 2.0, 3.0]], [[1.5]]), r"relevant\[0\]: holds 1\.5"),
        (lambda: M.full_auc([[1.0, 2.0, 3.0]] * 2, [[2], [1]], [[0]]), "exclude has 1 lists"),
        (lambda: M.full_auc([[np.nan, 2.0, 3.0]], [[2]]), r"scores\[0\]: scores must be finite"),
        # nDCG left [0, 1] with a rating under the scale's lowest level
        (lambda: M.ndcg_graded([2, 1], [-5, 1], 2), "true rating -5 is below low=0"),
        (lambda: M.ndcg_graded([1, 2], [1, 2], 2, low=np.nan), "low: expected a finite"),
        (lambda: M.ndcg_graded([1, 2], [1, 2], 2, low="0"), "low: expected a rating"),  # type: ignore[arg-type]
        (lambda: M.ndcg_graded([1, 2], [2000, 1], 2), "the gain 2\\^r overflows"),
        # NaN predictions: MAE NaN, and a NaN sorted first in every ranking
        (lambda: M.mae([np.nan, 1], [1, 2]), "predictions must be finite; got nan"),
        (lambda: M.rmse([np.inf], [1]), "predictions must be finite; got inf"),
        (lambda: M.mrr_at([np.nan, 2, 1], [1, 5, 1], 3, 4), "predictions must be finite"),
        (lambda: M.auc_score([np.nan, 1], [True, False]), "scores must be finite"),
        # a 2 or a NaN counted as a relevant item
        (lambda: M.auc_score([1, 2, 3], [0, 2, 0]), "positive: expected booleans or 0/1"),
        (lambda: M.auc_score([1, 2], [np.nan, 0]), "positive: expected booleans or 0/1"),
        (lambda: M.auc_score(["a", "b"], [1, 0]), "scores: expected numbers"),
        (lambda: M.per_user_table([pred], [pred, pred]), "preds has 1 users, trues 2"),
        # TypeError "has no len()" before
        (lambda: M.per_user_table(None, None), "preds: expected a list with one array per user"),  # type: ignore[arg-type]
        (lambda: M.per_user_table([pred], (p for p in [pred])), "trues: expected a list with"),  # type: ignore[arg-type]
        # f1(2, 5) was 2.86; ("a", "b") numpy's "could not convert string to float"
        (lambda: M.f1(2.0, 0.5), r"f1: precision must lie in \[0, 1\], got 2"),
        (lambda: M.f1(np.array([0.5, np.nan]), np.array([0.5, -0.1])), "f1: recall must lie in"),
        (lambda: M.f1("a", "b"), "f1: precision: expected numbers, got 'a'"),  # type: ignore[arg-type]
        (lambda: M.f1([0.5, 0.5], [0.5, 0.5, 0.5]), "f1: precision and recall must be of one"),
        (lambda: M.summarise([1, 2]), "table: expected metric name"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(InputError, match=needle):
            call()
    # what stays valid: 0/1 as a mask, whole floats as indices, a k past the catalogue
    assert M.auc_score([1, 2, 3], [0, 1, 1]) == 1.0
    assert M.ranking_table([[0, 1]], [np.array([1.0])], 2)["hit@2"][0] == 1.0
    huge = M.ranking_table([[0, 1]], [[1]], 10**10)  # was a 74 GiB allocation
    assert huge["recall@10000000000"][0] == 1.0
    assert huge["precision@10000000000"][0] == pytest.approx(1e-10)
    assert huge["ndcg@10000000000"][0] == pytest.approx(1 / math.log2(3))


def test_the_table_equals_the_per_user_reference_ties_and_lengths_included() -> None:
    # per_user_table scores users with one query length as a matrix; p1_user_metrics,
    # held to hand-computed values above, is the reference, user by user
    rng = np.random.default_rng(3)
    lengths = rng.choice([1, 3, 5, 10, 12], size=300)
    trues = [rng.integers(1, 6, size=n).astype(float) for n in lengths]
    # rounded predictions tie often; some users have no liked item, some only liked ones
    preds = [np.round(rng.uniform(1, 5, size=n) * 2) / 2 for n in lengths]
    trues[0][:] = 2.0
    trues[1][:] = 5.0
    table = M.per_user_table(preds, trues, threshold=4.0, low=1.0)
    for user, (p, t) in enumerate(zip(preds, trues, strict=True)):
        want = M.p1_user_metrics(p, t, 4.0, 1.0)
        for metric, value in want.items():
            np.testing.assert_allclose(table[metric][user], value, rtol=1e-12, atol=0.0)
    assert np.isnan(table["recall@5"][0]) and np.isnan(table["auc"][1])


def test_the_table_names_the_user_whose_ratings_fall_below_the_scale() -> None:
    ok, low = np.array([3.0, 4.0]), np.array([3.0, 0.5])
    with pytest.raises(InputError, match=r"user 2 of 3: true rating 0.5 is below low=1"):
        M.per_user_table([ok, ok, ok], [ok, ok, low], low=1.0)


def test_ndcg_on_a_known_scale_is_the_same_in_any_units() -> None:
    # the scale mapped onto MeLU's 1-5 first: the identity on 1-5, so MovieLens'
    # figures are MeLU's; on 0-100 raw 2^r made every gain but the top one vanish
    assert M.ndcg_graded(PRED, TRUE, 3, low=1.0, high=5.0) == M.ndcg_graded(PRED, TRUE, 3)
    hundred = (TRUE - 1.0) * 25.0  # 1-5 as 0-100
    for k in (1, 3, 5):
        on_100 = M.ndcg_graded(PRED, hundred, k, low=0.0, high=100.0)
        assert on_100 == pytest.approx(M.ndcg_graded(PRED, TRUE, k))
    assert M.ndcg_graded(PRED, hundred, 3) < 0.85 * M.ndcg_graded(PRED, TRUE, 3)  # raw 2^r
    # and past 1,000 units, where 2^r overflowed: refused without a scale, scored with one
    huge = TRUE * 1e9
    with pytest.raises(ValueError, match="overflows"):
        M.ndcg_graded(PRED, huge, 3)
    assert M.ndcg_graded(PRED, huge, 3, low=1e9, high=5e9) == pytest.approx(
        M.ndcg_graded(PRED, TRUE, 3)
    )
    table = M.per_user_table([PRED], [hundred], threshold=75.0, low=0.0, high=100.0)
    assert table["ndcg@3"][0] == pytest.approx(M.ndcg_graded(PRED, TRUE, 3))
    with pytest.raises(ValueError, match="true rating 5 is above high=4"):
        M.ndcg_graded(PRED, TRUE, 3, low=1.0, high=4.0)
    with pytest.raises(ValueError, match="high=1 must be above low=1"):
        M.ndcg_graded(PRED, TRUE, 3, low=1.0, high=1.0)

"""Pooled cold-item states of P1 and the item evidence behind them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from metarec.data.schema import Dataset
from metarec.data.tasks import Task, UserRatings
from metarec.errors import DataError
from metarec.evaluation.p1 import (
    POOL_SOURCES,
    P1Split,
    evaluate_p1,
    state_tasks,
    support_evidence,
)
from metarec.models.bias import BiasModel
from metarec.models.item_evidence import ItemEvidence


def test_item_evidence_matches_hand_computed_values() -> None:
    # item 0 rated with residuals 1 and 3, item 1 with -2, item 2 never.
    # Leave-one-out guesses: for s = 1, 3/2, 1/2 and 0 (item 1 has no other
    # rating) -> squared errors 0.25, 6.25, 4 -> mean 3.5; s = 0: 4, 4, 4 -> 4;
    # s = 2: 0, 64/9, 4 -> 3.70; s = inf: 1, 9, 4 -> 4.67. So s = 1 wins.
    ev = ItemEvidence.fit(
        np.array([0, 0, 1]), np.array([1.0, 3.0, -2.0]), 3, shrinkages=(0, 1, 2, 1e9)
    )
    assert ev.shrinkage == 1.0
    assert ev.loo_error[0.0] == pytest.approx(4.0)
    assert ev.loo_error[1.0] == pytest.approx(3.5)
    assert ev.loo_error[2.0] == pytest.approx((0 + 64 / 9 + 4) / 3)
    np.testing.assert_allclose(ev.offsets(np.array([0, 1, 2])), [4 / 3, -1.0, 0.0])


def test_item_evidence_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equal in length"):
        ItemEvidence.fit(np.array([0, 1]), np.array([1.0]), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        ItemEvidence.fit(np.array([0, 2]), np.array([1.0, 1.0]), 2)
    with pytest.raises(ValueError, match="finite"):
        ItemEvidence.fit(np.array([0]), np.array([np.nan]), 2)
    empty = ItemEvidence.fit(np.zeros(0, dtype=int), np.zeros(0), 2)
    np.testing.assert_array_equal(empty.offsets(np.array([0, 1])), [0.0, 0.0])


def _world(tmp_path: Path) -> tuple[P1Split, dict[str, int], UserRatings]:
    """New items of planted quality +-1 that text (here: nothing) cannot reveal."""
    rng = np.random.default_rng(0)
    old = [f"o{i}" for i in range(40)]
    new = [f"n{i}" for i in range(30)]
    quality = {
        **{i: rng.normal(0, 0.5) for i in old},
        **{i: (-1.0) ** k for k, i in enumerate(new)},
    }
    rows = []
    for u in range(120):
        for item in [*rng.choice(old, 20, replace=False), *rng.choice(new, 20, replace=False)]:
            r = np.clip(np.rint(3.5 + quality[item] + rng.normal(0, 0.5)), 1, 5)
            rows.append((f"u{u}", item, float(r), float(len(rows))))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": old + new, "text": old + new})
    ds = Dataset("planted", inter, items)
    users = [f"u{u}" for u in range(120)]
    P1Split("planted", 0, new, users[:90], users[90:100], users[100:]).save(tmp_path / "s.json")
    split = P1Split.load(tmp_path / "s.json", ds)
    index = {item: k for k, item in enumerate(old + new)}
    return split, index, UserRatings.from_frame(split.frames["train"], index)


class _RankOnly:
    predicts_ratings = False

    def predict_tasks(self, tasks: list[Task], users: object = None) -> list[np.ndarray]:
        return [np.zeros(len(t.query_items)) for t in tasks]


def test_pooled_states_learn_new_items_from_other_users_support(tmp_path: Path) -> None:
    split, index, train = _world(tmp_path)
    models = {"bias": BiasModel().fit(train, len(index)), "rank-only": _RankOnly()}
    states = ("item_cold", "both_cold", "item_cold_pooled", "both_cold_pooled")
    result = evaluate_p1(models, split, index, states=states)  # type: ignore[arg-type]
    s = result["summary"]
    # the strict states know nothing of the planted +-1: about 1 off on every rating
    assert s["item_cold"]["bias"]["mae"] > 0.8
    for pooled, strict in (("item_cold_pooled", "item_cold"), ("both_cold_pooled", "both_cold")):
        assert result["n_users"][pooled] == result["n_users"][strict] > 0
        assert s[pooled]["bias"]["mae"] < 0.6 * s[strict]["bias"]["mae"]
        assert "rank-only" not in s[pooled] and "rank-only" in s[strict]
    # whose values they are, for a cross-validation to count a user once
    for state in states:
        ids = result["user_ids"][state]
        assert len(ids) == len(set(ids)) == result["n_users"][state]
        assert len(result["per_user"][state]["bias"]["mae"]) == len(ids)
    assert result["user_ids"]["item_cold_pooled"] == result["user_ids"]["item_cold"]


def test_query_ratings_are_never_evidence(tmp_path: Path) -> None:
    split, index, train = _world(tmp_path)
    model = BiasModel().fit(train, len(index))
    tasks_of = {st: state_tasks(split.frames[st], index, split.seed)[0] for st in POOL_SOURCES}
    rows_of = dict.fromkeys(POOL_SOURCES)
    before = support_evidence(model, tasks_of, rows_of, len(index))
    scrambled = {
        st: [replace(t, query_ratings=6.0 - t.query_ratings) for t in tasks]
        for st, tasks in tasks_of.items()
    }
    after = support_evidence(model, scrambled, rows_of, len(index))
    np.testing.assert_array_equal(before.sums, after.sums)
    np.testing.assert_array_equal(before.counts, after.counts)
    # only new items are in the pool, and every one of them was rated in some support
    new_rows = [index[i] for i in split.new_items]
    assert (
        before.counts[new_rows].min() > 0 and before.counts.sum() == before.counts[new_rows].sum()
    )


class _SaysNothing:
    """Predictions, and no word on whether they are ratings (a Recommender said none)."""

    def predict_tasks(self, tasks: list[Task], users: object = None) -> list[np.ndarray]:
        return [np.full(len(t.query_items), 9.0) for t in tasks]


def test_a_model_that_does_not_say_whether_it_predicts_ratings_is_refused(
    tmp_path: Path,
) -> None:
    # it was taken for a rating model: a softmax run's logits scored as ratings (MAE
    # 2.2), and the pooled states' rating corrections added to them
    split, index, _ = _world(tmp_path)
    with pytest.raises(DataError, match=r"models\['odd'\]: .* says whether it predicts ratings"):
        evaluate_p1({"odd": _SaysNothing()}, split, index, states=("item_cold",))  # type: ignore[dict-item]


def test_unknown_state_is_named(tmp_path: Path) -> None:
    split, index, _ = _world(tmp_path)
    with pytest.raises(DataError, match="item_cold_polled"):
        evaluate_p1({}, split, index, states=("item_cold_polled",))


def test_a_model_with_cutpoints_reports_the_mae_of_its_median_ratings(tmp_path: Path) -> None:
    # every user's predictions are cut at once and averaged per user: the same figures
    # as cutting them user by user, with the mean prediction's MAE kept beside them
    from metarec.models.cutpoints import RatingCutpoints

    split, index, train = _world(tmp_path)
    model = BiasModel().fit(train, len(index))
    model.cutpoints = RatingCutpoints((1.0, 2.0, 3.0, 4.0, 5.0), (2.2, 2.9, 3.6, 4.1))
    result = evaluate_p1({"bias": model}, split, index, states=("user_cold",))
    tasks = state_tasks(split.frames["user_cold"], index, split.seed)[0]
    preds = model.predict_tasks(tasks)
    by_user = [  # averaged in float64, not in the float32 of the levels and ratings
        np.abs(model.cutpoints.apply(p) - t.query_ratings).mean(dtype=np.float64)
        for p, t in zip(preds, tasks, strict=True)
    ]
    mean = [np.abs(p - t.query_ratings).mean() for p, t in zip(preds, tasks, strict=True)]
    got = result["per_user"]["user_cold"]["bias"]
    np.testing.assert_allclose(got["mae"], by_user, rtol=1e-12)
    np.testing.assert_allclose(got["mae_mean"], mean, rtol=1e-12)
    assert not np.allclose(by_user, mean)


def test_a_cross_validation_counts_a_user_of_several_folds_once() -> None:
    """Existing users are evaluated (warm, item-cold) in every fold but their own: their
    values were concatenated, so 5 folds counted a user up to 4 times in the tests."""
    from metarec.evaluation.benchmark import _pool

    def fold(ids: list[str], mae: list[float], auc: list[float]) -> dict[str, Any]:
        per_user = {"item_cold": {"m": {"mae": mae, "auc": auc}}}
        summary = {"item_cold": {"m": {"mae": float(np.mean(mae)), "auc": float(np.nanmean(auc))}}}
        return {
            "summary": summary,
            "per_user": per_user,
            "n_users": {"item_cold": len(ids)},
            "user_ids": {"item_cold": ids},
        }

    nan = float("nan")
    pooled = _pool([
        fold(["a", "b"], [1.0, 0.5], [nan, 0.8]),
        fold(["c", "a"], [0.2, 0.0], [0.4, nan]),
        fold(["b", "d"], [0.7, 0.3], [0.6, 0.9]),
    ])  # fmt: skip
    assert pooled["n_users"] == {"item_cold": 4}  # not 6
    values = pooled["per_user"]["item_cold"]["m"]
    assert values["mae"] == pytest.approx([0.5, 0.6, 0.2, 0.3])  # a, b, c, d
    np.testing.assert_allclose(values["auc"], [nan, 0.7, 0.4, 0.9])  # a's undefined twice
    # the headline means stay the folds' means (mean ± std over folds)
    assert pooled["summary"]["item_cold"]["m"]["mae"] == pytest.approx(np.mean([0.75, 0.1, 0.5]))
    # folds that did not say whose values they are (P2: each test user in one fold)
    untold = [{k: v for k, v in fold(["a"], [1.0], [0.5]).items() if k != "user_ids"}] * 2
    assert _pool(untold)["per_user"]["item_cold"]["m"]["mae"] == [1.0, 1.0]
    assert _pool(untold)["n_users"] == {"item_cold": 2}

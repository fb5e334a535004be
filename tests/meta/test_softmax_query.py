"""The softmax objective's query loss ranks what comes next among the items the user
does not already have (the support set), as recommendation does (``exclude_seen``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from metarec.data.tasks import Task, collate
from metarec.meta.learner import _support_and_query

from .test_direct import _softmax_learner
from .test_maml import _double


def _clicks_batch():
    """Clicks (every rating 1): users whose support and query share no item; the first
    holds item 0 in its support and has the shortest query, so its padded query
    entries point at a left-out item."""
    rng = np.random.default_rng(5)
    tasks = []
    for user, (k, q) in enumerate([(6, 2), (3, 5), (9, 4)]):
        items = rng.choice(np.arange(1, 50), k + q, replace=False)
        if user == 0:
            items[0] = 0
        ones = np.ones(k + q, dtype=np.float32)
        tasks.append(Task(user, items[:k], ones[:k], items[k:], ones[k:]))
    batch = collate(
        tasks, user_features=np.array([[1], [2], [3]]), objective="softmax",
        like_threshold=1.0, negative_pool=np.arange(50), rng=np.random.default_rng(0),
        support_positives="rated",
    )  # fmt: skip
    return tasks, _double(batch)


def _unadapted(learner: Any, n: int) -> dict[str, torch.Tensor]:
    """The shared starting parameters for ``n`` tasks, as the transfer control scores."""
    return {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in learner.fast_init().items()}


def _losses_and_scores(
    learner: Any, batch: Any, fast: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task softmax losses and each task's scores over the catalogue, no gradients."""
    with torch.no_grad():
        losses = learner.softmax_task_losses(batch, fast)
        return losses, learner.scorer.scores_over_catalogue(fast, batch.user_features)


def _nll(scores: torch.Tensor, candidates: np.ndarray, targets: np.ndarray) -> float:
    """Mean NLL of ``targets`` under a softmax over ``candidates`` alone."""
    logz = torch.logsumexp(scores[torch.as_tensor(candidates)], 0)
    return float((logz - scores[torch.as_tensor(targets)]).mean())


@pytest.mark.parametrize("algorithm", ["fomaml", "maml"])
def test_the_query_softmax_leaves_out_the_users_support_items(algorithm: str) -> None:
    learner = _softmax_learner(algorithm, encoder=True)
    tasks, batch = _clicks_batch()
    learner.set_catalogue()
    fast = learner.adapt(batch, steps=2, first_order=algorithm != "maml")
    losses = learner.softmax_task_losses(batch, fast).detach()
    scores = learner.scorer.scores_over_catalogue(fast, batch.user_features).detach()
    for row, task in enumerate(tasks):
        unseen = np.setdiff1d(np.arange(50), task.support_items)
        assert float(losses[row]) == pytest.approx(
            _nll(scores[row], unseen, task.query_items), rel=1e-10
        )
    # finite value and gradient although padded query entries point at a left-out item
    loss = learner.outer_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in learner.parameters() if p.grad is not None)


def test_support_items_below_the_like_threshold_are_left_out_too() -> None:
    """Under ``support_positives = "liked"`` the support side holds only the liked
    items; the disliked ones are the user's all the same, so they leave the softmax."""
    learner = _softmax_learner("fomaml", encoder=True)
    rng = np.random.default_rng(3)
    items = rng.choice(np.arange(50), 12, replace=False)
    ratings = np.array([5, 1, 2, 4, 1, 5, 5, 4, 5, 3, 4, 5], dtype=np.float32)
    task = Task(0, items[:6], ratings[:6], items[6:], ratings[6:])
    batch = _double(collate(
        [task], user_features=np.array([[1]]), objective="softmax", like_threshold=4.0,
        negative_pool=np.arange(50), rng=np.random.default_rng(0), support_positives="liked",
    ))  # fmt: skip
    assert sorted(batch.support_items[0].tolist()) == sorted(items[[0, 3, 5]].tolist())
    learner.set_catalogue()
    fast = learner.adapt(batch, steps=1, first_order=True)
    loss, scores = _losses_and_scores(learner, batch, fast)
    unseen = np.setdiff1d(np.arange(50), task.support_items)
    liked_query = task.query_items[task.query_ratings >= 4]
    assert float(loss[0]) == pytest.approx(_nll(scores[0], unseen, liked_query), rel=1e-10)


def test_a_joined_batch_keeps_its_targets_in_the_softmax() -> None:
    """The transfer control scores support and query together as targets: nothing that
    is a target is left out, so its loss is the whole catalogue's softmax."""
    learner = _softmax_learner("transfer", encoder=False)
    tasks, batch = _clicks_batch()
    both = _support_and_query(batch, "softmax")
    learner.set_catalogue()
    fast = _unadapted(learner, len(both))
    losses, scores = _losses_and_scores(learner, both, fast)
    for row, task in enumerate(tasks):
        targets = np.concatenate([task.support_items, task.query_items])
        assert float(losses[row]) == pytest.approx(
            _nll(scores[row], np.arange(50), targets), rel=1e-10
        )


def test_the_transfer_control_is_judged_over_the_whole_catalogue() -> None:
    """Early stopping scores the control on plain (not joined) episodes: it keeps the
    support items in, as its training does; left out, it stopped epochs sooner and
    lost 0.04 nDCG@10 over P2's folds, a peer moved by metarec's method."""
    learner = _softmax_learner("transfer", encoder=False)
    tasks, batch = _clicks_batch()
    learner.set_catalogue()
    fast = _unadapted(learner, len(batch))
    losses, scores = _losses_and_scores(learner, batch, fast)
    for row, task in enumerate(tasks):
        assert float(losses[row]) == pytest.approx(
            _nll(scores[row], np.arange(50), task.query_items), rel=1e-10
        )

"""The implicit objectives' fold-in: one Newton step of the support's logistic loss."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from metarec.config import ModelConfig, TrainConfig
from metarec.data.tasks import Task, TaskBatch, collate
from metarec.meta.learner import MetaLearner

from .test_maml import _double, _finite_difference, live_net

MODEL = ModelConfig(hidden=8, tower_hidden=16, user_embedding_dim=2, factors=4)


def _learner(
    objective: str, algorithm: str = "fomaml", adapt: str = "context", **model: object
) -> MetaLearner:
    mc = ModelConfig(**{**vars(MODEL), "implicit_fold_in": True, **model})
    net = live_net(mc)
    with torch.no_grad():  # a projection far from its ~0 start, so the solve is not all ridge
        assert net.user.factor is not None
        net.user.factor.weight.normal_(0, 0.5)
        net.user.factor_ridge_raw.fill_(-0.5)
    cfg = TrainConfig(
        algorithm=algorithm, objective=objective, adapt=adapt, inner_steps=2, model=mc
    )
    return MetaLearner(net, cfg).double()


def _clicks(objective: str) -> TaskBatch:
    """Two users of different support sizes, so one row is padded."""
    rng = np.random.default_rng(3)
    tasks = [
        Task(u, rng.choice(50, n, replace=False), np.full(n, 5.0, np.float32),
             rng.choice(50, 3, replace=False), np.full(3, 5.0, np.float32))
        for u, n in ((0, 6), (1, 3))
    ]  # fmt: skip
    batch = collate(
        tasks,
        user_features=np.array([[1], [2]]),
        objective=objective,
        negatives=2,
        negative_pool=np.arange(50),
        rng=np.random.default_rng(4),
    )
    return _double(batch)


def _newton(loss, start: torch.Tensor, ridge: torch.Tensor) -> torch.Tensor:
    """One Newton step of ``loss(x) + ridge/2 |x - start|²`` from ``start``, with the
    gradient and Hessian from autograd, not from the IRLS formulas under test."""

    def total(x: torch.Tensor) -> torch.Tensor:
        return loss(x) + 0.5 * ridge * ((x - start) ** 2).sum()

    x = start.detach().clone()
    g = torch.autograd.functional.jacobian(total, x)
    hess = torch.autograd.functional.hessian(total, x)
    if x.dim() == 0:
        return x - g / hess
    return x - torch.linalg.solve(hess, g)


@pytest.mark.parametrize(
    "objective, adapt, encoder",
    [("bce", "context", False), ("bpr", "context", False),
     ("bce", "head", True), ("bpr", "all", True)],
)  # fmt: skip
def test_the_start_is_one_newton_step_of_the_supports_logistic_loss(
    objective: str, adapt: str, encoder: bool
) -> None:
    learner = _learner(objective, adapt=adapt, support_encoder=encoder)
    batch = _clicks(objective)
    with torch.no_grad():
        got = learner.adapt(batch, steps=0)
    for i in range(len(batch)):
        bias, factor = _reference_start(learner, batch, i, objective)
        torch.testing.assert_close(got["user_bias"][i], bias)
        torch.testing.assert_close(got["user_factor"][i], factor)
        assert factor.abs().max() > 0.05  # the step is not all ridge


def _reference_start(
    learner: MetaLearner, batch: TaskBatch, i: int, objective: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """User ``i``'s bias and taste vector after Newton steps taken by autograd."""
    user = learner.model.user
    m, items, y = batch.support_mask[i], batch.support_items[i], batch.support_y[i]
    with torch.no_grad():
        h, b = learner.model.tower(items)
        # the support encoder's shifts come first (the pooled positives' read-out)
        shifts = user.encode_support(h, m * y, (m * y).sum())
        context = user.context + shifts.get("context", 0.0)
        start = user.user_factor + shifts.get("user_factor", 0.0)
        zero = {"context": context, "user_bias": torch.zeros_like(user.user_bias),
                "user_factor": torch.zeros_like(user.user_factor)}  # fmt: skip
        base = learner.scorer.scores(zero, items, h, b, batch.user_features[i])
        p = user.factor(h)

    def support_loss(bias: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        s = base + bias + p @ factor
        if objective == "bpr":
            half = len(s) // 2
            return -(F.logsigmoid(s[:half] - s[half:]) * m[:half]).sum()
        return (F.binary_cross_entropy_with_logits(s, y, reduction="none") * m).sum()

    bias, factor = user.user_bias.detach(), start
    if objective == "bce":  # bpr: a pair's two scores share the bias, which stays
        damping = user.bias_damping().detach()
        bias = _newton(lambda x: support_loss(x, factor), bias, damping)
    ridge = user.factor_ridge().detach()
    return bias, _newton(lambda x: support_loss(bias, x), factor, ridge)


@pytest.mark.parametrize("objective", ["bce", "bpr"])
def test_a_batch_adapts_each_user_as_alone(objective: str) -> None:
    learner = _learner(objective)
    batch = _clicks(objective)
    with torch.no_grad():
        both = learner.adapt(batch, steps=2)
        for i in range(len(batch)):
            one = TaskBatch(**{k: v[i : i + 1] for k, v in vars(batch).items()})
            width = int(one.support_mask.sum())
            if objective != "bpr":  # the padding cut off, as a user served alone has none
                one.support_items = one.support_items[:, :width]
                one.support_y = one.support_y[:, :width]
                one.support_mask = one.support_mask[:, :width]
            alone = learner.adapt(one, steps=2)
            for k in both:
                torch.testing.assert_close(both[k][i], alone[k][0])


@pytest.mark.parametrize("objective", ["bce", "bpr"])
def test_mamls_meta_gradient_runs_through_the_newton_step(objective: str) -> None:
    learner = _learner(objective, algorithm="maml")
    batch = _clicks(objective)
    learner.outer_loss(batch).backward()
    net = learner.model.user
    assert net.factor is not None
    checks = [(net.factor.weight, (1, 2)), (net.factor_ridge_raw, ()), (net.context, (2,))]
    if objective == "bce":
        checks.append((net.bias_damping_raw, ()))
    for param, idx in checks:
        assert param.grad is not None
        analytic = param.grad[idx].item()
        numeric = _finite_difference(learner, batch, param, idx)
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9), (param.shape, idx)
        assert abs(analytic) > 1e-6  # the solve is on the gradient's path


def test_without_it_the_taste_vector_starts_where_it_was() -> None:
    learner = _learner("bce", implicit_fold_in=False)
    with torch.no_grad():
        got = learner.adapt(_clicks("bce"), steps=0)
    user = learner.model.user
    torch.testing.assert_close(got["user_factor"][1], user.user_factor.detach())
    torch.testing.assert_close(got["user_bias"][1], user.user_bias.detach())


def test_it_is_said_to_do_nothing_where_it_cannot() -> None:
    base = TrainConfig()
    for sets, idle in (
        (["objective=bce"], False),
        (["objective=bpr"], False),
        (["objective=softmax"], True),  # the rating objective is the default
        ([], True),
        (["objective=bce", "model.factors=0"], True),
    ):
        assignments = [*sets, "model.implicit_fold_in=true"]
        if idle:
            with pytest.warns(UserWarning, match=r"--set model\.implicit_fold_in: has no effect"):
                cfg = base.with_overrides(assignments)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                cfg = base.with_overrides(assignments)
        assert cfg.model.implicit_fold_in

"""The direct (hand-batched) inner loop and query scoring equal the torch.func path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarec.config import ModelConfig, TrainConfig
from metarec.data.tasks import Task, TaskBatch, collate
from metarec.meta import inner
from metarec.meta.learner import MetaLearner

from .test_maml import _double, _tiny, live_net


def _batch(support_sizes: list[int], seed: int = 1) -> TaskBatch:
    """Tasks of uneven support and query sizes (padding inside the batch), one with none."""
    rng = np.random.default_rng(seed)
    tasks = [
        Task(
            i,
            rng.choice(50, k, replace=False),
            rng.integers(1, 6, k).astype(np.float32),
            rng.choice(50, 3 + i, replace=False),
            rng.integers(1, 6, 3 + i).astype(np.float32),
        )
        for i, k in enumerate(support_sizes)
    ]
    codes = np.array([[1 + i % 3] for i in range(len(tasks))])
    return _double(collate(tasks, user_features=codes))


def _run(learner: MetaLearner, batch: TaskBatch, *, direct: bool, first_order: bool):
    learner.scorer.direct_path = direct
    learner.zero_grad()
    fast = learner.adapt(batch, steps=learner.cfg.inner_steps, first_order=first_order)
    loss = learner.outer_loss(batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}
    return {k: v.detach().clone() for k, v in fast.items()}, loss.item(), grads


@pytest.mark.parametrize("algorithm", ["fomaml", "maml", "metasgd"])
@pytest.mark.parametrize("sizes", [[7], [1, 9, 4, 2], [0, 3]])
def test_direct_path_equals_torch_func(algorithm: str, sizes: list[int]) -> None:
    learner, _ = _tiny(algorithm, "context")
    batch = _batch(sizes)
    assert learner.scorer.direct(learner.fast_init())
    fast_d, loss_d, grads_d = _run(learner, batch, direct=True, first_order=algorithm != "maml")
    fast_g, loss_g, grads_g = _run(learner, batch, direct=False, first_order=algorithm != "maml")
    assert fast_d.keys() == fast_g.keys()
    for k in fast_d:
        assert fast_d[k].shape == fast_g[k].shape
        torch.testing.assert_close(fast_d[k], fast_g[k], rtol=1e-10, atol=1e-12)
    assert loss_d == pytest.approx(loss_g, rel=1e-10)
    # every parameter the meta-gradient reaches (tower, head, step sizes, damping, ridge)
    assert grads_d.keys() == grads_g.keys()
    for name in grads_d:
        torch.testing.assert_close(grads_d[name], grads_g[name], rtol=1e-8, atol=1e-12)


def test_direct_path_zero_steps_and_float32() -> None:
    """The closed-form start alone, and single precision (served models) within tolerance."""
    learner, _ = _tiny("fomaml", "context")
    learner = learner.float()
    batch = _batch([5, 2, 8])
    batch = TaskBatch(
        **{k: v.float() if v.is_floating_point() else v for k, v in vars(batch).items()}
    )
    for steps in (0, 4):
        out = {}
        for direct in (True, False):
            learner.scorer.direct_path = direct
            with torch.no_grad():
                out[direct] = learner.adapt(batch, steps=steps)
        for k in out[True]:
            torch.testing.assert_close(out[True][k], out[False][k], rtol=1e-5, atol=1e-6)


def test_masked_scores_equal_padded_scores() -> None:
    learner, _ = _tiny("fomaml", "context")
    batch = _batch([3, 6, 1])
    with torch.no_grad():
        fast = learner.adapt(batch, steps=2)
        learner.scorer.direct_path = True
        direct = learner.query_scores(batch, fast)
        learner.scorer.direct_path = False
        padded = learner.query_scores(batch, fast)
    mask = batch.query_mask > 0
    torch.testing.assert_close(direct[mask], padded[mask], rtol=1e-10, atol=1e-12)
    assert (direct[~mask] == 0).all()


def test_other_scopes_take_the_generic_path() -> None:
    for scope in ("head", "all"):
        learner, _ = _tiny("fomaml", scope)
        assert not learner.scorer.direct(learner.fast_init())


def test_one_user_without_vmap_equals_the_batched_call() -> None:
    """The generic path skips vmap for one user; the numbers are the batched ones."""
    learner, _ = _tiny("fomaml", "head")
    batch = _batch([4, 4])
    one = TaskBatch(**{k: v[:1] for k, v in vars(batch).items()})
    with torch.no_grad():
        both = learner.adapt(batch, steps=2)
        alone = learner.adapt(one, steps=2)
    for k in both:
        torch.testing.assert_close(alone[k][0], both[k][0], rtol=1e-10, atol=1e-12)


def _softmax_learner(algorithm: str, encoder: bool) -> MetaLearner:
    """A double-precision softmax learner with every path live (head, encoder, factors)."""
    mc = ModelConfig(hidden=8, tower_hidden=16, user_embedding_dim=2, support_encoder=encoder)
    cfg = TrainConfig(
        algorithm=algorithm, adapt="context", objective="softmax", like_threshold=4.0,
        inner_steps=3, inner_lr=0.5, model=mc,
    )  # fmt: skip
    return MetaLearner(live_net(mc), cfg).double()


def _softmax_batch(support_sizes: list[int]) -> TaskBatch:
    rng = np.random.default_rng(3)
    tasks = [
        Task(
            i,
            rng.choice(50, k, replace=False),
            rng.integers(1, 6, k).astype(np.float32),
            rng.choice(50, 6, replace=False),
            rng.integers(3, 6, 6).astype(np.float32),
        )
        for i, k in enumerate(support_sizes)
    ]
    codes = np.array([[1 + i % 3] for i in range(len(tasks))])
    batch = collate(
        tasks, user_features=codes, objective="softmax", like_threshold=4.0,
        negative_pool=np.arange(50), rng=np.random.default_rng(0), support_positives="liked",
    )  # fmt: skip
    return _double(batch)


@pytest.mark.parametrize("algorithm", ["fomaml", "maml", "metasgd", "reptile"])
@pytest.mark.parametrize("encoder", [False, True])
@pytest.mark.parametrize("sizes", [[6], [1, 9, 4, 2]])
@pytest.mark.parametrize("chunked", [False, True])
def test_softmax_direct_path_equals_torch_func(
    algorithm: str, encoder: bool, sizes: list[int], chunked: bool, monkeypatch
) -> None:
    """Adapted parameters, the query loss and every meta-gradient (MAML's second-order
    one included) agree with the vmap/grad path, padding and likeless supports included,
    with the batch in one piece and split into chunks of users."""
    if chunked:  # 50 items x 8 wide: chunks of one user
        monkeypatch.setattr(inner, "_CHUNK_ELEMENTS", 400)
    learner = _softmax_learner(algorithm, encoder)
    batch = _softmax_batch(sizes)
    assert learner.scorer.direct(learner.fast_init())
    runs = {}
    for direct in (True, False):
        learner.scorer.direct_path = direct
        learner.zero_grad()
        learner.set_catalogue()
        fast = learner.adapt(batch, steps=3, first_order=algorithm != "maml")
        if algorithm == "reptile":
            loss = learner.reptile_grads(batch)
        else:
            loss = learner.outer_loss(batch)
            loss.backward()
        grads = {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}
        runs[direct] = ({k: v.detach().clone() for k, v in fast.items()}, loss.item(), grads)
    (fast_d, loss_d, grads_d), (fast_g, loss_g, grads_g) = runs[True], runs[False]
    assert fast_d.keys() == fast_g.keys()
    for k in fast_d:
        assert fast_d[k].shape == fast_g[k].shape
        torch.testing.assert_close(fast_d[k], fast_g[k], rtol=1e-9, atol=1e-11)
    assert loss_d == pytest.approx(loss_g, rel=1e-9)
    assert grads_d.keys() == grads_g.keys() and len(grads_d) > 5
    for name in grads_d:
        torch.testing.assert_close(grads_d[name], grads_g[name], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("chunk_elements", [1 << 20, 800])
def test_catalogue_scores_direct_equals_vmap(chunk_elements: int, monkeypatch) -> None:
    """Catalogue-wide scoring (recommendation, the softmax query loss) on both paths,
    for a batch and for one user, in one piece and in chunks of two users."""
    monkeypatch.setattr(inner, "_CHUNK_ELEMENTS", chunk_elements)
    learner = _softmax_learner("fomaml", True)
    batch = _softmax_batch([3, 5, 2])
    learner.set_catalogue()
    h, b = learner.scorer.catalogue  # type: ignore[misc]
    with torch.no_grad():
        fast = learner.adapt(batch, steps=2)
        for users in (slice(None), slice(1, 2)):
            one = {k: v[users] for k, v in fast.items()}
            out = {}
            for direct in (True, False):
                learner.scorer.direct_path = direct
                out[direct] = learner.scorer.catalogue_scores(one, batch.user_features[users], h, b)
            assert out[True].shape == (len(batch.users[users]), 50)
            torch.testing.assert_close(out[True], out[False], rtol=1e-10, atol=1e-12)


def test_the_catalogue_side_is_rebuilt_for_new_representations_and_for_gradients() -> None:
    """The item side of catalogue scoring is kept between calls: it must follow the
    representations the learner sets each step, and one built without gradients (a
    validation pass) must not serve a loss that trains the head."""
    learner = _softmax_learner("fomaml", False)
    scorer = learner.scorer
    with torch.no_grad():
        learner.set_catalogue()
        quiet = scorer.catalogue_side()
        assert scorer.catalogue_side() is quiet  # kept while nothing changed
    assert not quiet.hw.requires_grad
    trained = scorer.catalogue_side()
    assert trained is not quiet and trained.hw.requires_grad
    learner.set_catalogue()
    assert scorer.catalogue_side() is not trained
    # and what it gives is what a side built afresh gives
    batch = _softmax_batch([3, 5, 2])
    with torch.no_grad():
        fast = learner.adapt(batch, steps=2)
        h, b = scorer.catalogue  # type: ignore[misc]
        kept = scorer.scores_over_catalogue(fast, batch.user_features)
        fresh = scorer.catalogue_scores(fast, batch.user_features, h, b)
    torch.testing.assert_close(kept, fresh, rtol=0, atol=0)

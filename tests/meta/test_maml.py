"""Meta-gradients are right, and meta-learning beats transfer where it should."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from metarec.config import ModelConfig, TrainConfig
from metarec.data.tasks import Task, TaskBatch, UserRatings, collate, fixed_tasks
from metarec.meta.learner import MetaLearner, _support_and_query
from metarec.meta.trainer import TaskSource, Trainer
from metarec.models.preference import PreferenceNet


def _double(batch: TaskBatch) -> TaskBatch:
    return TaskBatch(
        **{k: v.double() if v.is_floating_point() else v for k, v in vars(batch).items()}
    )


def live_net(mc: ModelConfig) -> PreferenceNet:
    """A double-precision net over 50 random items with every path live: the head's
    output layer and the support encoder start at zero (the bias model) otherwise."""
    torch.manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    net = PreferenceNet(vectors, mc, [3], offset=3.0).double()
    net.tower.id_known[:] = 1
    with torch.no_grad():
        net.tower.id_emb.normal_()
        net.user.context.normal_()
        for p in net.user.mlp.parameters():
            p.normal_(0, 0.3)
        for module in (net.user.encoder, net.user.factor_encoder):
            if module is not None:
                for p in module.parameters():
                    p.normal_(0, 0.3)
        net.tower.base_bias.normal_()
    return net


def _tiny(algorithm: str, adapt: str = "head") -> tuple[MetaLearner, TaskBatch]:
    mc = ModelConfig(hidden=8, tower_hidden=16, user_embedding_dim=2)
    cfg = TrainConfig(algorithm=algorithm, adapt=adapt, inner_steps=2, inner_lr=0.1, model=mc)
    net = live_net(mc)
    rng = np.random.default_rng(0)
    tasks = [
        Task(
            i,
            rng.choice(50, 5, replace=False),
            rng.integers(1, 6, 5).astype(np.float32),
            rng.choice(50, 4, replace=False),
            rng.integers(1, 6, 4).astype(np.float32),
        )
        for i in range(3)
    ]
    batch = _double(collate(tasks, user_features=np.array([[1], [2], [3]])))
    return MetaLearner(net, cfg).double(), batch


def _finite_difference(
    learner: MetaLearner, batch: TaskBatch, param: torch.Tensor, idx: tuple[int, ...]
) -> float:
    eps = 1e-6
    with torch.no_grad():
        param[idx] += eps
        plus = learner.outer_loss(batch).item()
        param[idx] -= 2 * eps
        minus = learner.outer_loss(batch).item()
        param[idx] += eps
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize("adapt", ["context", "head", "all"])
def test_maml_meta_gradient_matches_finite_differences(adapt: str) -> None:
    learner, batch = _tiny("maml", adapt)
    net = learner.model
    learner.outer_loss(batch).backward()
    # one adapted parameter (initial value) and one that is not adapted (item tower / features)
    checks = [
        (net.user.mlp[0].weight, (0, 1)),
        (net.user.context, (2,)),
        (net.tower.proj.weight, (1, 2)),
        (net.user.features[0].weight, (1, 0)),
    ]
    for param, idx in checks:
        analytic = param.grad[idx].item()
        numeric = _finite_difference(learner, batch, param, idx)
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9), (adapt, param.shape, idx)


@pytest.mark.parametrize("adapt", ["head", "all"])
def test_the_id_dropout_draw_reaches_the_query_scores_of_every_scope(adapt: str) -> None:
    # with the tower adapted ("all") the query side kept every id while the support side
    # dropped them: the query scores ignored the draw
    from torch.func import functional_call

    learner, batch = _tiny("fomaml", adapt)
    dropped = torch.zeros(50, dtype=torch.float64)  # every id dropped
    with torch.no_grad():
        fast = learner.adapt(batch, steps=1)
        got = learner.query_scores(batch, fast, dropped)
        assert not torch.allclose(got, learner.query_scores(batch, fast, None))
        for i in range(len(batch.query_items)):  # one user at a time, ids gated off
            tower = {k[6:]: v[i] for k, v in fast.items() if k.startswith("tower.")}
            items = batch.query_items[i]
            h, b = (
                functional_call(learner.model.tower, tower, (items, dropped))
                if tower
                else learner.model.tower(items, dropped)
            )
            user = {k: v[i] for k, v in fast.items() if not k.startswith("tower.")}
            alone = functional_call(learner.model.user, user, (h, b, batch.user_features[i]))
            torch.testing.assert_close(got[i], alone)


def test_first_order_differs_from_second_order() -> None:
    maml, batch = _tiny("maml")
    fo, _ = _tiny("fomaml")
    maml.outer_loss(batch).backward()
    fo.outer_loss(batch).backward()
    g2 = maml.model.user.mlp[0].weight.grad
    g1 = fo.model.user.mlp[0].weight.grad
    assert not torch.allclose(g1, g2)  # second-order terms are present
    assert torch.nn.functional.cosine_similarity(g1.flatten(), g2.flatten(), dim=0) > 0.5


@pytest.mark.parametrize("adapt", ["context", "head"])
def test_metasgd_is_first_order_meta_sgd(adapt: str) -> None:
    # as the README defines it: the initial values take first-order MAML's gradient, and
    # the step sizes' gradient is the exact one where there is one inner step (with more
    # it leaves out how a step size moves the later steps' gradients, as documented)
    sgd, batch = _tiny("metasgd", adapt)
    fo, _ = _tiny("fomaml", adapt)
    sgd.cfg.inner_steps = fo.cfg.inner_steps = 1
    sgd.outer_loss(batch).backward()
    fo.outer_loss(batch).backward()
    for (name, mine), (_, theirs) in zip(
        sgd.model.named_parameters(), fo.model.named_parameters(), strict=True
    ):
        if theirs.grad is not None:
            torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-9, atol=1e-12, msg=name)
    for name, step in sgd.step_sizes.items():
        idx = tuple(0 for _ in step.shape)
        analytic = step.grad[idx].item()
        assert analytic == pytest.approx(_finite_difference(sgd, batch, step, idx), abs=1e-6), name


def test_metasgd_learns_step_sizes() -> None:
    learner, batch = _tiny("metasgd")
    learner.outer_loss(batch).backward()
    grads = [p.grad for p in learner.step_sizes.values()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_metasgd_learns_one_step_size_per_parameter_entry() -> None:
    # collapsed to each tensor's mean, every entry would share one step size, and so one
    # gradient: Meta-SGD would be MAML with a learned learning rate per tensor
    learner, batch = _tiny("metasgd")
    learner.outer_loss(batch).backward()
    grads = [p.grad for p in learner.step_sizes.values() if p.numel() > 1]
    assert grads and all(g is not None for g in grads)
    assert any(g.unique().numel() > 1 for g in grads)


@pytest.mark.parametrize("adapt", ["context", "head"])
def test_reptile_gives_what_it_does_not_adapt_first_order_mamls_gradient(adapt: str) -> None:
    """Reptile has no rule for the parameters it does not adapt. They got the query
    loss at values adapted on support and query, where the closed-form solve fits the
    query itself: on P1 ml-1m training diverged in its first epoch, and the solve's
    damping and ridge, which that loss never reached, kept their starting values."""
    reptile, batch = _tiny("reptile", adapt)
    fo, _ = _tiny("fomaml", adapt)
    reptile.reptile_grads(batch)
    fo.outer_loss(batch).backward()
    shared = {id(p) for p in reptile.fast_init().values()}
    fo_params = dict(fo.model.named_parameters())
    checked = set()
    for name, p in reptile.model.named_parameters():
        if id(p) in shared or fo_params[name].grad is None:
            continue
        torch.testing.assert_close(p.grad, fo_params[name].grad, msg=name)
        checked.add(name)
    assert {"user.bias_damping_raw", "user.factor_ridge_raw", "tower.proj.weight"} <= checked
    # the shared initial values move toward the mean values adapted on support and query
    user = reptile.model.user
    assert user.context.grad is not None
    assert not torch.allclose(user.context.grad, fo.model.user.context.grad)


def test_reptile_moves_the_start_by_the_mean_inner_gradient() -> None:
    # divided by inner_lr alone, the step would grow with inner_steps (2 here: twice too long).
    # Reptile's direction is start - mean adapted values; over the inner path's length
    # inner_lr · inner_steps it is, for gradient steps, the mean inner gradient
    learner, batch = _tiny("reptile", "context")
    start = {k: v.detach().clone() for k, v in learner.fast_init().items()}
    learner.reptile_grads(batch)
    both = _support_and_query(batch, learner.cfg.objective)
    steps, lr = learner.cfg.inner_steps, learner.cfg.inner_lr
    assert steps == 2
    adapted = learner.adapt(both, steps=steps, first_order=True, fast=start)
    for name, p in learner.fast_init().items():
        mean_step = (start[name] - adapted[name].detach().mean(0)) / (lr * steps)
        torch.testing.assert_close(p.grad, mean_step, msg=name)


def _bimodal_users(n_users: int, rng: np.random.Generator, vectors: np.ndarray) -> UserRatings:
    """Two kinds of users who agree on item quality but have opposite tastes.

    A globally trained model learns the shared quality and, for taste, the
    average user: indifferent. Only a model trained to adapt can tell the
    kinds apart from a few ratings.
    """
    world = np.random.default_rng(123)  # the same item quality and taste axis for every call
    direction = vectors @ world.normal(size=vectors.shape[1])
    direction = direction / np.abs(direction).max()
    quality = vectors @ world.normal(size=vectors.shape[1])
    quality = quality / np.abs(quality).max()
    users, items, ratings = [], [], []
    for u in range(n_users):
        sign = 1.0 if u % 2 == 0 else -1.0
        chosen = rng.choice(len(vectors), 30, replace=False)
        users += [f"u{u}"] * 30
        items += list(chosen)
        ratings += list(3.0 + 0.8 * quality[chosen] + 1.5 * sign * direction[chosen])
    import pandas as pd

    frame = pd.DataFrame({"user_id": users, "item_id": [str(i) for i in items], "rating": ratings})
    return UserRatings.from_frame(frame, {str(i): i for i in range(len(vectors))})


@pytest.mark.slow
def test_maml_beats_transfer_on_a_synthetic_task_family() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(120, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    train = _bimodal_users(200, rng, vectors)
    test = _bimodal_users(60, rng, vectors)
    results = {}
    for algo in ("maml", "transfer"):
        mc = ModelConfig(
            hidden=16, tower_hidden=32, use_item_ids=False, use_user_features=False, factors=8
        )
        # the same inner loop (closed-form bias, then 2 gradient steps) for every algorithm;
        # no closed-form taste, so only what the gradient steps achieve counts
        cfg = TrainConfig(
            algorithm=algo,
            adapt="context",
            inner_steps=2,
            inner_lr=0.3,
            epochs=15,
            meta_batch_size=20,
            min_support=5,
            max_support=10,
            outer_lr=5e-3,
            seed=0,
            device="cpu",
            model=mc,
        )
        torch.manual_seed(0)
        net = PreferenceNet(torch.as_tensor(vectors), mc, [], offset=3.0)
        trainer = Trainer(MetaLearner(net, cfg), cfg, progress=False)
        trainer.fit(TaskSource(train, np.zeros((len(train), 0), dtype=np.int64)))
        tasks = fixed_tasks(test, query_size=10, seed=1, max_support=5)
        test_source = TaskSource(test, np.zeros((len(test), 0), dtype=np.int64))
        results[algo] = trainer.validation_loss(tasks, test_source)
    # transfer learns the shared quality but never learns to tell the two kinds apart
    assert results["maml"] < 0.6 * results["transfer"], results


def test_support_encoder_starts_as_a_no_op_and_then_shifts_the_user() -> None:
    torch.manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    plain_cfg = ModelConfig(hidden=8, tower_hidden=16, user_embedding_dim=2)
    enc_cfg = ModelConfig(hidden=8, tower_hidden=16, user_embedding_dim=2, support_encoder=True)
    torch.manual_seed(1)
    plain = PreferenceNet(vectors, plain_cfg, [3], offset=3.0)
    torch.manual_seed(1)
    encoded = PreferenceNet(vectors, enc_cfg, [3], offset=3.0)
    encoded.load_state_dict(plain.state_dict(), strict=False)
    tasks = [
        Task(
            0,
            np.array([1, 2, 3]),
            np.array([5.0, 4.0, 1.0], np.float32),
            np.array([4]),
            np.array([3.0], np.float32),
        )
    ]
    batch = collate(tasks, user_features=np.array([[1]]))
    cfg = TrainConfig(inner_steps=2, model=plain_cfg)
    a = MetaLearner(plain, cfg).adapt(batch, steps=2)
    b = MetaLearner(encoded, TrainConfig(inner_steps=2, model=enc_cfg)).adapt(batch, steps=2)
    for k in a:  # zero-initialised encoder: exactly the model without one
        torch.testing.assert_close(a[k], b[k])
    with torch.no_grad():
        assert encoded.user.encoder is not None and encoded.user.factor_encoder is not None
        encoded.user.encoder.weight.normal_()
        encoded.user.factor_encoder.weight.normal_()
    c = MetaLearner(encoded, TrainConfig(inner_steps=0, model=enc_cfg)).adapt(batch, steps=0)
    h, _ = encoded.tower(batch.support_items[0])
    w = batch.support_mask[0] * (batch.support_y[0] - 3.0)
    pooled = (h * w[:, None]).sum(0) / 3**0.5
    with torch.no_grad():
        expected = encoded.user.context + encoded.user.encoder(pooled)
    # the closed-form steps move only bias and taste vector, so the context is the encoder's
    torch.testing.assert_close(c["context"][0], expected)


def test_support_and_query_together_keep_each_bpr_positive_with_its_negative() -> None:
    """bpr lays each side out as [positives | negatives], paired by position: joined end
    to end, Reptile and transfer paired support negatives against query positives."""
    from metarec.data.tasks import TaskBatch

    t = torch.tensor
    batch = TaskBatch(
        t([0]), t([[1]]),
        t([[1, 2, 11, 12]]), t([[1.0, 1.0, 0.0, 0.0]]), t([[1.0, 1.0, 1.0, 1.0]]),
        t([[3, 13]]), t([[1.0, 0.0]]), t([[1.0, 0.0]]),
    )  # fmt: skip
    both = _support_and_query(batch, "bpr")
    assert both.support_items.tolist() == [[1, 2, 3, 11, 12, 13]]
    assert both.support_y.tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]
    assert both.support_mask.tolist() == [[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]]
    assert both.query_items.tolist() == both.support_items.tolist()
    plain = _support_and_query(batch, "rating")  # other objectives: end to end
    assert plain.support_items.tolist() == [[1, 2, 11, 12, 3, 13]]


def test_metasgd_step_sizes_start_at_the_inner_learning_rate() -> None:
    # started ten times larger, nothing noticed: only that they exist and learn was tested
    learner, _ = _tiny("metasgd")
    assert learner.step_sizes and all(
        torch.equal(p, torch.full_like(p, learner.cfg.inner_lr))
        for p in learner.step_sizes.values()
    )


def test_a_support_floor_few_users_reach_is_warned_of() -> None:
    # accepted without a word, a run "on 419 users" trained on the 2 who had more
    # than min_support ratings
    import pandas as pd

    sizes = [12] * 2 + [5] * 8  # two users past a floor of 10, eight under it
    frame = pd.DataFrame(
        [(f"u{u}", str(i), 1.0 + (u + i) % 5) for u, n in enumerate(sizes) for i in range(n)],
        columns=["user_id", "item_id", "rating"],
    )
    ratings = UserRatings.from_frame(frame, {str(i): i for i in range(12)})
    mc = ModelConfig(hidden=4, tower_hidden=8, use_item_ids=False, use_user_features=False)
    net = PreferenceNet(torch.nn.functional.normalize(torch.randn(12, 8), dim=-1), mc, [], 3.0)

    def check(floor: int) -> None:
        cfg = TrainConfig(min_support=floor, max_support=20, device="cpu", model=mc)
        Trainer(MetaLearner(net, cfg), cfg, progress=False)._check_episodes(ratings)

    with pytest.warns(UserWarning, match=r"min_support=10: only 2 of 10 training users have"):
        check(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check(4)  # every user reaches it


def test_task_losses_by_hand() -> None:
    """Each objective's masked mean loss of one task, against its formula; a flipped
    BPR sign trained and validated on the same wrong loss, and nothing else saw it."""
    from metarec.meta.inner import task_loss

    pred, y, mask = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0]), torch.ones(2)
    # BPR: positive 2.0 paired with negative 0.0 → -log σ(2) = log(1 + e^-2) = 0.126928
    assert float(task_loss(pred, y, mask, "bpr")) == pytest.approx(0.126928, abs=1e-6)
    # BCE: (log(1 + e^-2) + log(1 + e^0)) / 2 = (0.126928 + 0.693147) / 2
    assert float(task_loss(pred, y, mask, "bce")) == pytest.approx(0.410038, abs=1e-6)
    # squared and absolute error, the padding (mask 0) left out of the mean
    assert float(task_loss(pred, y, torch.tensor([1.0, 0.0]), "rating")) == pytest.approx(1.0)
    assert float(task_loss(pred, torch.tensor([1.0, 3.0]), mask, "rating_l1")) == pytest.approx(2.0)

"""MeLU: the vectorised local update against a plain per-user loop, MAML's second-order
terms, head-only adaptation, feature handling, and that training learns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.data.tasks import Task, UserRatings, collate
from metarec.errors import DataError, ModelError, UnsupportedError
from metarec.models.base import TrainingData
from metarec.peers import MeLU, make_peer
from metarec.peers.melu_features import ItemFeatures, user_encoder

from .conftest import Small


@pytest.fixture(scope="module")
def melu(small: Small) -> MeLU:
    model = make_peer("melu-5", seed=2, epochs=1, min_updates=0, device="cpu").fit(small.data)
    assert isinstance(model, MeLU)
    return model


def test_architecture_is_the_papers(melu: MeLU, small: Small) -> None:
    net = melu.net
    assert net is not None
    shapes = {k: tuple(v.shape) for k, v in net.head_params().items()}
    n_user = len(melu.user_features.columns)  # ml-100k: age, gender, occupation
    assert n_user == 3
    assert shapes == {
        "0.weight": (64, 32 * (2 + n_user)), "0.bias": (64,),
        "2.weight": (64, 64), "2.bias": (64,), "4.weight": (1, 64), "4.bias": (1,),
    }  # fmt: skip
    assert net.year.embedding_dim == 32 and net.genre.out_features == 32
    assert net.genre.in_features == melu.item_features.n_genres == 18  # MovieLens genres


def _loop_adapt(melu: MeLU, task: Task, user_codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reference code's local update, one user at a time with plain autograd."""
    net = melu.net
    assert net is not None
    items = net.item_embeddings(melu.years, melu.genres).detach()
    user = net.user_embeddings(user_codes[None])[0].detach()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in net.head_params().items()}
    x = items[torch.as_tensor(task.support_items)]
    y = torch.as_tensor(task.support_ratings)
    for _ in range(melu.local_steps):
        loss = torch.nn.functional.mse_loss(net.predict(params, x, user), y)
        grads = torch.autograd.grad(loss, list(params.values()))
        params = {
            k: (v - melu.local_lr * g).detach().requires_grad_(True)
            for (k, v), g in zip(params.items(), grads, strict=True)
        }
    return params


def test_vectorised_local_update_matches_a_per_user_loop(melu: MeLU, small: Small) -> None:
    melu.local_lr = 1e-2  # large enough that five steps move the head visibly
    try:
        tasks = small.tasks[:4]
        codes = torch.as_tensor(melu._codes(small.users.iloc[:4], 4))
        scores = melu.score_catalogue(tasks, small.users.iloc[:4])
        net = melu.net
        assert net is not None
        items = net.item_embeddings(melu.years, melu.genres).detach()
        for i, task in enumerate(tasks):
            params = _loop_adapt(melu, task, codes[i])
            user = net.user_embeddings(codes[i : i + 1])[0]
            want = net.predict(params, items, user).detach().numpy()
            np.testing.assert_allclose(scores[i], want, rtol=1e-4, atol=1e-4)
            # one user alone takes the plain autograd path: the same steps
            alone = melu.score_catalogue([task], small.users.iloc[i : i + 1])
            np.testing.assert_allclose(alone[0], scores[i], rtol=1e-5, atol=1e-5)
            # inference mode records no graph for that loop: the vmapped path there
            with torch.inference_mode():
                inferred = melu.score_catalogue([task], small.users.iloc[i : i + 1])
            np.testing.assert_allclose(inferred[0], scores[i], rtol=1e-5, atol=1e-5)
        unadapted = melu.score_catalogue([Task(0, tasks[0].support_items[:0],
                                               tasks[0].support_ratings[:0], [], [])])  # fmt: skip
        assert np.abs(scores[0] - unadapted[0]).max() > 1e-3  # the update did something
    finally:
        melu.local_lr = 5e-6


def test_maml_is_second_order_and_reaches_embeddings_but_adapts_only_the_head(
    melu: MeLU, small: Small
) -> None:
    net = melu.net
    assert net is not None
    tasks = melu.training_tasks(small.data.ratings, np.random.default_rng(0))[:8]
    codes = melu.user_features.transform(small.data.users, small.data.ratings.user_ids)
    batch = collate(tasks, user_features=codes)
    melu.local_lr = 1e-2
    grads = {}
    try:
        for first_order in (False, True):
            melu.first_order = first_order
            net.zero_grad()
            melu._batch_loss(net, batch).backward()
            grads[first_order] = {k: p.grad.clone() for k, p in net.named_parameters()}
    finally:
        melu.local_lr, melu.first_order = 5e-6, False
    # the global update reaches the embeddings (they are meta-learned, not adapted)
    assert grads[False]["year.weight"].abs().sum() > 0
    assert grads[False]["user.0.weight"].abs().sum() > 0
    # second-order terms change the head's meta-gradient
    assert not torch.allclose(grads[False]["head.0.weight"], grads[True]["head.0.weight"])
    # local adaptation touches the head only
    items = net.item_embeddings(melu.years, melu.genres)
    user = net.user_embeddings(batch.user_features)
    fast = melu.adapt(net, items[batch.support_items], batch.support_y, batch.support_mask, user)
    assert set(fast) == set(net.head_params())


def test_training_tasks_follow_melus_split(melu: MeLU) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["few"] * 12 + ["mid"] * 30 + ["many"] * 150,
            "item_id": [str(i) for i in range(1, 13)]
            + [str(i) for i in range(1, 31)]
            + [str(i) for i in range(1, 151)],
            "rating": 4.0,
        }
    )
    ur = UserRatings.from_frame(frame, {str(i): i - 1 for i in range(1, 200)})
    tasks = melu.training_tasks(ur, np.random.default_rng(0))
    sizes = {str(ur.user_ids[t.user]): (len(t.support_items), len(t.query_items)) for t in tasks}
    assert sizes == {"mid": (20, 10), "many": (90, 10)}  # < 13 dropped, > 100 subsampled
    for t in tasks:
        assert not set(t.support_items) & set(t.query_items)


def test_item_and_user_features() -> None:
    items = pd.DataFrame(
        {"item_id": ["a", "b", "c"], "year": [1995.0, np.nan, 1995.0],
         "genres": ["Comedy|Drama", "", "Drama"]}
    )  # fmt: skip
    feats = ItemFeatures.fit(items)
    assert feats.years == {"1995": 1} and feats.genres == {"Comedy": 0, "Drama": 1}
    new = pd.DataFrame({"item_id": ["d"], "year": [2019], "genres": ["Drama|Western"]})
    years, genres = feats.encode(new)
    assert years.tolist() == [0]  # unseen year → unknown
    assert genres.tolist() == [[0.0, 1.0]]  # unseen genre ignored
    users = pd.DataFrame(
        {"user_id": [str(i) for i in range(40)], "age": list(range(20, 60)),
         "zip_code": [str(10000 + i) for i in range(40)]}
    )  # fmt: skip
    enc = user_encoder(users)
    assert enc.columns == ["age", "zip_code"]
    assert "age" in enc.bins and "zip_code" not in enc.bins  # postcodes stay categories
    assert len(enc.vocab["zip_code"]) == 40
    # a blank zip is unknown (0), as a served user's missing one is; zips pandas read as
    # floats (a column with gaps) are found by the number a request sends
    gappy = users.assign(zip_code=[float(10000 + i) for i in range(39)] + [None])
    enc = user_encoder(gappy)
    assert enc.encode_one({"zip_code": "10003"})[1] == enc.vocab["zip_code"]["10003"] != 0
    assert enc.transform(gappy, gappy["user_id"].to_numpy())[-1, 1] == 0
    assert enc.encode_one({"zip_code": None})[1] == 0 and "" not in enc.vocab["zip_code"]


def test_new_items_scored_from_year_and_genres(melu: MeLU, small: Small) -> None:
    items = small.data.catalogue.items
    toy_story = items.iloc[0]  # 1995, Animation|Children's|Comedy
    twin = pd.DataFrame(
        {"item_id": ["twin"], "title": ["Twin"], "year": [toy_story["year"]],
         "genres": [toy_story["genres"]]}
    )  # fmt: skip
    model = make_peer("melu-1", seed=2, epochs=1, min_updates=0, device="cpu").fit(small.data)
    model.add_items(twin, np.zeros((1, 64)))
    scores = model.score_catalogue(small.tasks[:3], small.users.iloc[:3])
    assert scores.shape[1] == small.data.n_items + 1
    np.testing.assert_allclose(scores[:, -1], scores[:, 0], rtol=1e-6)  # same features
    with pytest.raises(UnsupportedError, match="melu-1: scores items from their year and genres"):
        model.add_items(pd.DataFrame({"item_id": ["x"], "title": ["X"]}), np.zeros((1, 64)))


def test_training_learns_the_rating_scale(small: Small) -> None:
    # a larger global lr than the paper's so three epochs on 300 users suffice
    model = make_peer("melu-1", seed=0, epochs=3, global_lr=1e-2, min_updates=0, device="cpu").fit(
        small.data
    )
    assert isinstance(model, MeLU)
    assert model.losses[0] > model.losses[1] > model.losses[2]
    preds = model.predict_tasks(small.tasks, small.users)
    errors = [np.abs(p - t.query_ratings).mean() for p, t in zip(preds, small.tasks, strict=True)]
    mae = np.mean(errors)
    assert mae < 1.05  # an untrained net predicts ~0, an MAE of ~3.5


def test_errors(small: Small) -> None:
    with pytest.raises(ModelError, match="melu-1: not fitted"):
        make_peer("melu-1").score_catalogue([])
    few = small.data.interactions.groupby("user_id").head(5)
    with pytest.raises(DataError, match="no training user has at least 13 ratings"):
        make_peer("melu-1", epochs=1, min_updates=0, device="cpu").fit(
            TrainingData(few, small.data.catalogue, small.data.users)
        )


def test_a_users_table_it_cannot_read_is_refused(melu: MeLU, small: Small) -> None:
    # read as no features at all (no user_id) or as unknown values (text for an age),
    # where metarec's networks refuse the same tables
    tasks, users = small.tasks[:2], small.users.iloc[:2]
    for bad, pattern in (
        (users.drop(columns="user_id"), "needs a user_id column"),
        (pd.DataFrame({"foo": [1, 2]}), "needs a user_id column"),
        (users.assign(age=["x", "y"]), r"age: .*number"),
    ):
        with pytest.raises(DataError, match=rf"melu-5: users: .*{pattern}"):
            melu.score_catalogue(tasks, bad)
    # as every model's score_catalogue checks its tasks and their rows
    with pytest.raises(DataError, match=r"melu-5: 1 user rows for 2 tasks"):
        melu.score_catalogue(tasks, users.iloc[:1])
    assert melu.score_catalogue(tasks, users).shape == (2, melu.n_items)


def test_epochs_rise_until_the_updates_reach_the_papers_ml1m_schedule(small: Small) -> None:
    melu = make_peer("melu-5")
    assert isinstance(melu, MeLU)
    # ml-1m's P1 training users: 64 or 65 batches of 32, so the paper's 20 epochs
    assert melu.epochs_for(2025) == melu.epochs_for(2050) == 20
    assert melu.epochs_for(658) == 61  # ml-100k's P2 split: 21 batches
    assert make_peer("melu-5", min_updates=0).epochs_for(658) == 20  # as published
    model = make_peer("melu-1", seed=0, epochs=1, min_updates=25, device="cpu").fit(small.data)
    assert isinstance(model, MeLU)
    n_tasks = len(model.training_tasks(small.data.ratings, np.random.default_rng(0)))
    assert model.epochs_run == -(-25 // -(-n_tasks // 32)) > 1
    assert len(model.losses) == model.epochs_run

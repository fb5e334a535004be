"""The service serves an ensemble folder as it serves a run: real uvicorn, SQLite, models."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from metarec.config import TrainConfig
from metarec.data import load_dataset
from metarec.ensemble_run import EnsembleRecommender, fit_from_runs, load_run
from metarec.errors import DataError
from metarec.pipeline import encode_catalogue, fit_recommender, split_users

from .conftest import LiveServer


@pytest.fixture(scope="module")
def ensemble_dir(
    service_run: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The service's small run blended with popularity and content kNN, saved."""
    ds = load_dataset("ml-100k", root=shared_data)
    ens = fit_from_runs(
        [service_run], ds, peers=["popularity", "knn"], buckets=(0, 1, 5), log=lambda _: None
    )
    return ens.save(tmp_path_factory.mktemp("ens") / "ml100k-ensemble")


RATINGS = [("1", 5.0), ("95", 5.0), ("71", 4.0), ("288", 1.0)]  # Toy Story, Aladdin, ...


def test_ensemble_serves_recommendations_with_reasons(
    make_server: Callable[..., LiveServer], server_api_key: str, ensemble_dir: Path
) -> None:
    live = make_server(run=ensemble_dir)
    body = {"user_id": "e1", "ratings": [{"item_id": i, "rating": r} for i, r in RATINGS]}
    with live.client(server_api_key) as c:
        assert c.get("/ready").json()["model"].startswith("ml100k-ensemble@")
        assert c.post("/v1/users", json=body).status_code == 201
        first = c.get("/v1/users/e1/recommendations", params={"k": 5}).json()
        again = c.get("/v1/users/e1/recommendations", params={"k": 5}).json()
        c.post("/v1/users/e1/events", json={"event_id": "x1", "item_id": "50", "type": "like"})
        after = c.get("/v1/users/e1/recommendations", params={"k": 5}).json()
        metrics = c.get("/metrics").text
    ids = [it["item_id"] for it in first["items"]]
    assert len(ids) == 5 and not set(ids) & {i for i, _ in RATINGS}
    assert all(it["reason"] for it in first["items"])
    # the same ranking as the ensemble in-process, for the same history
    rec = load_run(ensemble_dir)
    assert isinstance(rec, EnsembleRecommender)
    assert ids == rec.recommend(rec.adapt(RATINGS), k=5)["item_id"].tolist()
    assert again["items"] == first["items"]  # served from the adaptation cache
    assert "metarec_adaptations_total 2" in metrics  # one per feedback state, not per request
    assert after["n_events"] == 5 and "50" not in [it["item_id"] for it in after["items"]]
    with live.client(server_api_key) as c:
        # an ensemble never folds in, so nothing it serves learned from the user
        erased = c.delete("/v1/users/e1").json()
    assert erased == {"user_id": "e1", "events_erased": 5, "fold_in": "none"}


def test_items_added_to_a_served_ensemble(
    make_server: Callable[..., LiveServer], server_api_key: str, ensemble_dir: Path
) -> None:
    live = make_server(run=ensemble_dir)
    new = {"item_id": "ens-new", "title": "Toy Story 4", "year": 2019, "genres": ["Animation"]}
    with live.client(server_api_key) as c:
        body = {"user_id": "e2", "ratings": [{"item_id": "1", "rating": 5}]}
        c.post("/v1/users", json=body)
        c.get("/v1/users/e2/recommendations")  # cached before the catalogue grows
        put = c.put("/v1/items", json={"items": [new]})
        assert put.status_code == 200 and put.json()["added"] == 1
        params = {"candidates": "ens-new,2", "k": 2}
        recs = c.get("/v1/users/e2/recommendations", params=params).json()
        assert "ens-new" in [it["item_id"] for it in recs["items"]]
        upd = c.put("/v1/items", json={"items": [new | {"title": "Toy Story Four"}]}).json()
        assert upd["added"] == 0 and upd["updated"] == 1
        assert c.get("/v1/items/ens-new").json()["title"] == "Toy Story Four (2019)"
        hits = c.get("/v1/items", params={"q": "toy story four"}).json()["items"]
        assert [h["item_id"] for h in hits] == ["ens-new"]
        assert c.post("/v1/admin/reload").status_code == 200  # re-applies the stored items
        assert c.get("/v1/items/ens-new").json()["title"] == "Toy Story Four (2019)"
        # fold-in corrects one run's item biases; an ensemble says so instead of half-doing it
        folded = c.post("/v1/admin/fold-in")
        assert folded.status_code == 422 and folded.json()["error"]["code"] == "unsupported"
        # the feedback loop of an ensemble is its retrain as a whole
        assert "by `metarec retrain ENSEMBLE`" in folded.json()["error"]["message"]
        recs = c.get("/v1/users/e2/recommendations", params={"candidates": "ens-new"}).json()
    assert [it["item_id"] for it in recs["items"]] == ["ens-new"]


def test_reload_swaps_a_run_for_an_ensemble(
    make_server: Callable[..., LiveServer], server_api_key: str, ensemble_dir: Path, tmp_path: Path
) -> None:
    live = make_server()  # the single run
    (tmp_path / "neither").mkdir()
    with live.client(server_api_key) as c:
        assert c.get("/ready").json()["model"].startswith("ml100k-small@")
        swapped = c.post("/v1/admin/reload", json={"run": str(ensemble_dir)})
        assert swapped.status_code == 200
        assert swapped.json()["model"].startswith("ml100k-ensemble@")
        bad = c.post("/v1/admin/reload", json={"run": str(tmp_path / "neither")})
        assert bad.status_code == 422 and "neither a metarec run" in bad.json()["error"]["message"]
        assert c.get("/ready").json()["model"].startswith("ml100k-ensemble@")


def test_each_member_is_served_the_user_features_it_reads(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    service_run: Path,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    """An ensemble whose primary reads no user features: the service stripped every key
    the primary lacks, so the member that reads age served without it, not as weighted."""
    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(ds.items, "tfidf", cache_dir=tmp_path / "emb", progress=False)
    train, val = split_users(ds.interactions, 0.1, seed=3)  # service_run's split
    model = {"use_user_features": False}
    cfg = TrainConfig.from_dict({"epochs": 1, "max_train_users": 60, "seed": 3, "model": model})
    featureless, _ = fit_recommender(catalogue, train, cfg, validation=val, progress=False)
    spec = {"dataset": "ml-100k", "data": str(shared_data)}
    featureless.metadata |= {"dataset": ds.name, "data_spec": spec}
    blind = featureless.save(tmp_path / "blind")
    ens = fit_from_runs([blind, service_run], ds, peers=(), buckets=(0,), log=lambda _: None)
    ens.weights[:] = 0.5  # both members count, whatever these short fits earned
    folder = ens.save(tmp_path / "ens")
    rec = load_run(folder)
    assert isinstance(rec, EnsembleRecommender)
    profile = {"age": 9, "gender": "F", "occupation": "student"}
    with_them = rec.score(rec.adapt(RATINGS, user_features=profile))
    without = rec.score(rec.adapt(RATINGS))
    assert abs(with_them - without).max() > 1e-6  # the second member reads them
    # in Python too: checked against the primary alone, the profile warned "not a feature
    # of this model" yet moved the scores, and a bad age was named as a made-up user's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec.adapt(RATINGS, user_features=profile)
    with pytest.warns(UserWarning, match="'agee' not a feature of this model"):
        rec.adapt(RATINGS, user_features={"agee": 3})
    with pytest.raises(DataError, match=r"^user_features: age: "):
        rec.adapt(RATINGS, user_features={"age": "abc"})
    live = make_server(run=folder)
    body = {
        "user_id": "f1",
        "features": profile,
        "ratings": [{"item_id": i, "rating": r} for i, r in RATINGS],
    }
    with live.client(server_api_key) as c:
        assert c.post("/v1/users", json=body).status_code == 201
        served = c.get("/v1/users/f1/recommendations", params={"k": 20}).json()["items"]
    scores = {it["item_id"]: it["score"] for it in served}
    expected = {i: float(with_them[rec.item_index[i]]) for i in scores}
    assert scores == pytest.approx(expected, abs=1e-5)


def test_an_ensembles_prior_is_scored_once_until_it_changes(ensemble_dir: Path) -> None:
    """Every explained list of an ensemble scored its no-ratings prior anew, a cold
    request's work for every member; kept now until items or vectors change. What is
    kept is the members' prior, blended with the weights of the user's number of
    ratings."""
    import numpy as np

    from metarec.explain import ensemble_prior, explain_indices

    rec = load_run(ensemble_dir)
    assert isinstance(rec, EnsembleRecommender)
    user = rec.adapt(RATINGS)
    priors: list[int] = []  # the members scored for a user with no ratings
    member_scores = rec.ensemble.member_scores

    def counted(tasks: list, users: object = None) -> np.ndarray:
        if all(len(t.support_items) == 0 for t in tasks):
            priors.append(1)
        return member_scores(tasks, users)  # type: ignore[arg-type]

    rec.ensemble.member_scores = counted  # type: ignore[method-assign]
    first = ensemble_prior(rec)
    explain_indices(rec, user, [0, 1, 2])
    explain_indices(rec, user, [3, 4])
    assert len(priors) == 1
    np.testing.assert_array_equal(ensemble_prior(rec), first)
    # what it stands for: the blend at no ratings, and at the user's own weights
    np.testing.assert_allclose(first, rec.score(rec.adapt([])), rtol=1e-5, atol=1e-5)
    weights = rec.ensemble.weights_for(len(RATINGS))
    at_k = ensemble_prior(rec, len(RATINGS))
    np.testing.assert_allclose(at_k, weights @ rec.ensemble.member_scores([_nobody()])[:, 0])
    # a user's features are not ratings: the prior the lift starts from has them
    features = {"age": 70, "gender": "F", "occupation": "retired"}
    np.testing.assert_allclose(
        ensemble_prior(rec, 0, features),
        rec.score(rec.adapt([], user_features=features)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert not np.allclose(ensemble_prior(rec, 0, features), first, atol=1e-4)
    rec.add_items(
        pd.DataFrame({"item_id": ["p-new"], "title": ["Night Train"]}),
        vectors=np.ones((1, rec.model.tower.item_vectors.shape[1]), dtype=np.float32),
    )
    made = len(priors)
    again = ensemble_prior(rec)
    assert len(again) == len(first) + 1 and len(priors) == made + 1  # for the grown catalogue
    before = rec.changes
    rec.update_peer_vectors([0], np.ones((1, rec.model.tower.item_vectors.shape[1])))
    ensemble_prior(rec)
    assert rec.changes == before + 1 and len(priors) == made + 2


def _nobody() -> object:
    import numpy as np

    from metarec.data.tasks import Task

    return Task.support_only([], np.zeros(0, dtype=np.float32))

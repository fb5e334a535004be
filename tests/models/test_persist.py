"""Ensembles saved as folders: identical scores after loading, atomic writes, clear refusals.

Real parts only: a small metarec model meta-trained on ml-100k (TF-IDF vectors,
one epoch), real peers, real files. Failures during a save are injected by
making one write raise, as a crash or Ctrl-C would.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.config import TrainConfig
from metarec.data import load_dataset
from metarec.data.tasks import Task, UserRatings
from metarec.ensemble_run import EnsembleRecommender, load_run
from metarec.errors import DataError, ModelError, UnsupportedError
from metarec.models import persist
from metarec.models.base import TrainingData
from metarec.models.ensemble import Ensemble
from metarec.models.meta_model import MetaModel
from metarec.peers import make_peer
from metarec.pipeline import encode_catalogue, split_users


class World:
    data: TrainingData
    tasks: list[Task]
    users: pd.DataFrame
    ranking: Ensemble
    rating: Ensemble


@pytest.fixture(scope="module")
def world(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    ds = load_dataset("ml-100k", root=shared_data)
    catalogue = encode_catalogue(
        ds.items, "tfidf", cache_dir=tmp_path_factory.mktemp("emb"), progress=False
    )
    rest, held = split_users(ds.interactions, 0.02, seed=1)
    train, val = split_users(rest, 0.1, seed=1)
    w = World()
    w.data = TrainingData(train, catalogue, ds.users, val, ds.rating_range, 1)
    cfg = TrainConfig(epochs=1, max_train_users=100, inner_steps=1, seed=1, device="cpu")
    meta = MetaModel(cfg, name="fomaml").fit(w.data)
    peers = {n: make_peer(n, seed=1).fit(w.data) for n in ("popularity", "bias", "knn")}
    buckets = (0, 1, 5)
    w.ranking = Ensemble(
        {"fomaml": meta, "popularity": peers["popularity"], "knn": peers["knn"]},
        mode="ranking",
        buckets=buckets,
        fit_members=False,
        seed=1,
    ).fit(w.data)
    w.rating = Ensemble(
        {"fomaml": meta, "bias": peers["bias"]},
        mode="rating",
        buckets=buckets,
        fit_members=False,
        seed=1,
    ).fit(w.data)
    held_ur = UserRatings.from_frame(held, catalogue.index)
    w.tasks = []
    for row in range(8):
        items, ratings, _ = held_ur.history(row)
        k = row % 7  # support sizes 0..6: every bucket is used
        w.tasks.append(Task(row, items[:k], ratings[:k], items[k : k + 10], ratings[k : k + 10]))
    w.users = ds.users.set_index("user_id").reindex(held_ur.user_ids[:8]).reset_index()
    return w


def test_a_seed_bag_stays_a_seed_bag(world: World, tmp_path: Path) -> None:
    members = dict(world.rating.members)
    bag = Ensemble(members, mode="rating", fit_members=False, learn_weights=False).fit(world.data)
    loaded = Ensemble.load(bag.save(tmp_path / "bag"))
    assert not loaded.learn_weights
    assert np.all(loaded.weights == 0.5)
    np.testing.assert_array_equal(
        loaded.score_catalogue(world.tasks, world.users),
        bag.score_catalogue(world.tasks, world.users),
    )


@pytest.mark.parametrize("mode", ["ranking", "rating"])
def test_round_trip_gives_identical_scores(world: World, mode: str, tmp_path: Path) -> None:
    ens: Ensemble = getattr(world, mode)
    out = ens.save(tmp_path / "ens", metadata={"note": "test"})
    loaded = Ensemble.load(out)
    assert loaded.mode == mode and loaded.buckets == ens.buckets
    assert list(loaded.members) == list(ens.members)
    np.testing.assert_array_equal(loaded.weights, ens.weights)
    assert loaded.weight_table() == ens.weight_table()
    assert loaded.metadata == {"note": "test"}
    assert loaded.learn_weights
    # the users each bucket's weights rest on, and the rule that chose them
    assert ens.bucket_users is not None and loaded.bucket_users == ens.bucket_users
    assert loaded.min_bucket_users == ens.min_bucket_users == 20
    # one saved before the fields: its weights were learned with no minimum
    manifest = json.loads((out / "ensemble.json").read_text())
    del manifest["min_bucket_users"], manifest["bucket_users"]
    (out / "ensemble.json").write_text(json.dumps(manifest))
    old = Ensemble.load(out)
    assert old.min_bucket_users == 1 and old.bucket_users is None
    np.testing.assert_array_equal(old.weights, ens.weights)
    out = ens.save(tmp_path / "ens", metadata={"note": "test"})
    assert loaded.cutpoints == ens.cutpoints
    assert (ens.cutpoints is not None) == (mode == "rating")  # median cuts for ratings only
    np.testing.assert_array_equal(
        loaded.score_catalogue(world.tasks, world.users),
        ens.score_catalogue(world.tasks, world.users),
    )
    for a, b in zip(
        loaded.predict_tasks(world.tasks, world.users),
        ens.predict_tasks(world.tasks, world.users),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    # only safetensors and JSON on disk
    suffixes = {p.suffix for p in out.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".safetensors"}


def test_saving_over_an_ensemble_replaces_it(world: World, tmp_path: Path) -> None:
    out = tmp_path / "ens"
    world.rating.save(out)
    world.ranking.save(out)
    assert Ensemble.load(out).mode == "ranking"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ens"]  # no temp or old folders


def _fail_on_second_tensor_write(monkeypatch: pytest.MonkeyPatch) -> None:
    real = persist.save_tensors
    calls = {"n": 0}

    def failing(path: Any, tensors: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # after the metarec member and one peer are written
            raise KeyboardInterrupt
        real(path, tensors)

    monkeypatch.setattr(persist, "save_tensors", failing)


def test_interrupted_save_leaves_no_folder(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_on_second_tensor_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        world.ranking.save(tmp_path / "ens")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_save_keeps_the_old_ensemble(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ens"
    world.rating.save(out)
    _fail_on_second_tensor_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        world.ranking.save(out)
    assert Ensemble.load(out).mode == "rating"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ens"]


def test_unsaveable_members_are_refused_before_writing(world: World, tmp_path: Path) -> None:
    meta = world.ranking.members["fomaml"]
    ens = Ensemble({"fomaml": meta, "my-als": make_peer("als")}, fit_members=False)
    with pytest.raises(UnsupportedError, match="'my-als'"):
        ens.save(tmp_path / "ens")
    peers_only = Ensemble({"popularity": world.ranking.members["popularity"]}, fit_members=False)
    with pytest.raises(UnsupportedError, match="metarec member"):
        peers_only.save(tmp_path / "ens")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recommender.json").write_text("{}")
    with pytest.raises(ModelError, match="not an ensemble folder"):
        world.ranking.save(tmp_path / "run")  # never clobbers another kind of folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize(
    "edit, needles",
    [
        (lambda m: m.update(format_version=9), ["format_version 9 is newer", "upgrade"]),
        (lambda m: m.update(mode="average"), ["'mode'", "average"]),
        (lambda m: m.pop("weights"), ["'weights'", "missing"]),
        (lambda m: m["weights"].pop(), ["'weights'", "2 rows for 3 buckets"]),
        (lambda m: m["weights"][1].__setitem__(0, -1.0), ["'weights[1]'", ">= 0"]),
        (lambda m: m["members"][1].update(kind="als"), ["'members[1].kind'", "als"]),
        (lambda m: m["members"][2].update(path="../x"), ["'members[2].path'"]),
        (lambda m: m.update(zscore_items=10**6), ["'zscore_items'"]),
        # the count that disagrees with the members' catalogue is named, not zscore_items
        (lambda m: m.update(n_items=5), ["'n_items'", "says 5", "member 'fomaml'"]),
        (lambda m: m["members"][2]["options"].update(colour=1), ["members[2]", "colour"]),
        # json.dumps writes NaN, and Python's json reads it back
        (lambda m: m.update(like_threshold=float("nan")), ["'like_threshold'", "finite", "nan"]),
        # an option of the wrong type: float("x")'s ValueError, "x" >= 0's TypeError
        (
            lambda m: m["members"][1]["options"].update(like_threshold="x"),
            ["members[1] (popularity)", "option like_threshold must be a finite number", "'x'"],
        ),
        (
            lambda m: m["members"][2]["options"].update(damping="x"),
            ["members[2] (knn)", "option damping must be a number >= 0", "'x'"],
        ),
        # off the runs' 1-5 scale: nothing liked (training refuses it)
        (
            lambda m: m.update(like_threshold=99),
            ["'like_threshold'", "99 is not a rating on the data's scale [1, 5]"],
        ),
        (
            lambda m: m["members"][1]["options"].update(like_threshold=0),
            ["'members[1].options.like_threshold'", "0 is not a rating"],
        ),
        # read back as the data the ensemble was built on (abtest): was an AttributeError
        (
            lambda m: m.update(metadata={"data_spec": "ml-100k"}),
            ["metadata.data_spec: expected an object", "'ml-100k'"],
        ),
    ],
    ids=[
        "version",
        "mode",
        "no-weights",
        "weights-rows",
        "negative",
        "kind",
        "path",
        "zscore",
        "n-items",
        "option",
        "nan",
        "option-type",
        "option-number",
        "like-off-scale",
        "member-like-off-scale",
        "data-spec",
    ],
)
def test_bad_manifest_names_file_and_field(
    world: World, tmp_path: Path, edit: Any, needles: list[str]
) -> None:
    out = world.ranking.save(tmp_path / "ens")
    manifest = json.loads((out / "ensemble.json").read_text())
    edit(manifest)
    (out / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError) as err:
        load_run(out)
    assert "ensemble.json" in str(err.value)
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize(
    "which, edit, needles",
    [
        # True is an int to isinstance: loaded, and the ensemble recommended
        ("ranking", lambda m: m["weights"][0].__setitem__(0, True),
         ["'weights[0]'", "finite and >= 0"]),
        # one folder read as two members: a name's weight scored another's model
        ("ranking", lambda m: m["members"][1].update(path=m["members"][0]["path"]),
         ["'members[1].path'", "is members[0]'s folder too"]),
        # printed as a rating of 50 on 1-5 stars
        ("rating", lambda m: m["rating_cutpoints"]["levels"].__setitem__(-1, 50.0),
         ["'rating_cutpoints.levels'", "50 is off the runs' scale [1, 5]"]),
        # the ensemble's own folder, "not a metarec run", naming neither file nor field
        ("ranking", lambda m: m["members"][1].update(path=""),
         ["'members[1].path'", "must be a relative path inside the folder: ''"]),
        ("ranking", lambda m: m["members"][1].update(path="."), ["'members[1].path'"]),
        ("ranking", lambda m: m.update(bucket_users=[1, -2]),
         ["'bucket_users'", "whole numbers >= 0 or null"]),
    ],
    ids=["bool-weight", "same-member-folder", "level-off-scale", "empty-path", "dot-path",
         "bucket-users"],
)  # fmt: skip
def test_more_hand_edits_are_named(
    world: World, tmp_path: Path, which: str, edit: Any, needles: list[str]
) -> None:
    out = getattr(world, which).save(tmp_path / "ens")
    manifest = json.loads((out / "ensemble.json").read_text())
    edit(manifest)
    (out / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError) as err:
        load_run(out)
    for needle in needles:
        assert needle in str(err.value)


def test_members_of_another_catalogue_or_encoder_are_refused_at_fit(world: World) -> None:
    # only save and load compared catalogues: an ensemble in memory (a benchmark's,
    # EnsembleRecommender(ens)) blended another item's score by position without a word
    meta = world.ranking.members["fomaml"]
    reordered = copy.deepcopy(meta)
    rec = reordered._rec()
    rec.items = rec.items.iloc[::-1].reset_index(drop=True)
    other_encoder = copy.deepcopy(meta)
    other_encoder._rec().encoder_config = {"id": "tfidf-svd:d64:0123456789abcdef"}

    def fit(members: dict[str, Any]) -> Ensemble:
        return Ensemble(members, mode="ranking", buckets=(0,), fit_members=False,
                        learn_weights=False, seed=1).fit(world.data)  # fmt: skip

    with pytest.raises(ModelError, match=r"member 'b' holds another catalogue than 'a' \(item 0: "):
        fit({"a": meta, "b": reordered})
    with pytest.raises(ModelError, match="member 'a' holds another catalogue than the data's"):
        fit({"a": reordered})
    with pytest.raises(ModelError, match="member 'b' encodes items with another encoder"):
        fit({"a": meta, "b": other_encoder})
    assert fit({"a": meta, "b": copy.deepcopy(meta)}).n_items == world.data.n_items


def test_a_member_of_another_catalogue_is_refused_at_load(world: World, tmp_path: Path) -> None:
    # a member folder swapped for a run of as many items in another order loaded, and
    # its score of index i, another item's, was blended without a word
    meta = world.ranking.members["fomaml"]
    bag = Ensemble({"a": meta, "b": meta}, mode="ranking", buckets=(0,), fit_members=False,
                   learn_weights=False, seed=1).fit(world.data)  # fmt: skip
    out = bag.save(tmp_path / "ens")
    manifest = json.loads((out / "ensemble.json").read_text())
    items = out / manifest["members"][1]["path"] / "items.json"
    columns = json.loads(items.read_text())
    (items).write_text(json.dumps({k: v[::-1] for k, v in columns.items()}))
    with pytest.raises(ModelError) as err:
        load_run(out)
    said = str(err.value)
    assert "ensemble.json: field 'members[1]'" in said
    assert "member 'b' holds another catalogue than 'a' (item 0: " in said


def test_truncated_member_file_is_a_model_error(world: World, tmp_path: Path) -> None:
    out = world.ranking.save(tmp_path / "ens")
    peer = out / "members" / "2" / "peer.safetensors"
    peer.write_bytes(peer.read_bytes()[:100])
    with pytest.raises(ModelError, match=r"peer\.safetensors"):
        Ensemble.load(out)
    shutil.rmtree(out / "members" / "0")
    with pytest.raises(ModelError, match=r"members\[0\]\.path"):
        Ensemble.load(out)


def test_loaded_ensemble_recommends_and_grows_like_a_run(world: World, tmp_path: Path) -> None:
    rec = load_run(world.ranking.save(tmp_path / "ens"))
    assert isinstance(rec, EnsembleRecommender)
    history = [("Toy Story (1995)", 5.0), ("Heat (1995)", 2.0)]
    user = rec.adapt(history)
    top = rec.recommend(user, k=5)
    assert len(top) == 5 and "Toy Story (1995)" not in set(top["title"])
    row = world.tasks[3]
    ids = rec.items["item_id"].to_numpy()[row.support_items]
    np.testing.assert_allclose(
        rec.score(rec.adapt(list(zip(ids, row.support_ratings.tolist(), strict=True)))),
        world.ranking.score_catalogue([_support_only(row)])[0],
        rtol=1e-6,
        atol=1e-6,
    )
    n = rec.n_items
    new = pd.DataFrame({"item_id": ["new-1"], "title": ["Toy Story 4"], "year": [2019]})
    assert rec.add_items(new) == 1
    assert rec.n_items == n + 1 and rec.resolve("new-1") == n
    assert len(rec.score(user)) == n + 1  # a user adapted before the item came is rescored
    # z-scores are over the catalogue as fitted: existing items keep their scores
    np.testing.assert_allclose(rec.score(user)[:n], rec.score(rec.adapt(history))[:n], atol=1e-6)


def test_an_ensemble_refuses_bad_arguments_as_a_run_does(world: World, tmp_path: Path) -> None:
    from metarec.errors import DataError

    rec = load_run(world.ranking.save(tmp_path / "ens"))
    for call, needle in [
        (lambda: rec.adapt_many([[("1", 5)]], {"age": 25}), "expected one mapping .* a user"),
        (lambda: rec.adapt([("1", 5)], user_features="x"), "user_features: expected a mapping"),
        (lambda: rec.adapt_many(None), "adapt_many: expected a list of histories"),
        (lambda: rec.adapt_many(5), "adapt_many: expected a list of histories"),
        (lambda: rec.score(rec.adapt([]), 5), "items: expected a list"),
    ]:
        with pytest.raises(DataError, match=needle):
            call()  # type: ignore[arg-type]
    width = rec.primary.model.tower.item_vectors.shape[1]
    before = rec.score(rec.adapt([("1", 5)]))
    for idx, vectors, needle in [
        ([-1], np.ones((1, width)), r"idx must be item indices in \[0, \d+\), got -1"),
        ([10**6], np.ones((1, width)), "idx must be item indices"),
        ([0], np.full((1, width), np.nan), "update_peer_vectors: the vector of item '1' holds NaN"),
        ([0], np.ones((1, width + 1)), "update_peer_vectors: vectors of shape"),
    ]:
        with pytest.raises(DataError, match=needle):
            rec.update_peer_vectors(idx, vectors)
    np.testing.assert_array_equal(rec.score(rec.adapt([("1", 5)])), before)  # nothing moved
    new = pd.DataFrame({"item_id": ["v1"], "title": ["V"]})
    with pytest.raises(DataError, match="add_items: vectors: expected numbers"):
        rec.add_items(new, vectors=[["a"] * width])


def _support_only(task: Task) -> Task:
    return Task(task.user, task.support_items, task.support_ratings, task.query_items[:0],
                task.query_ratings[:0])  # fmt: skip


@pytest.fixture(scope="module")
def rankers(world: World) -> Ensemble:
    """The P2 ranking models beside a metarec member (which carries the catalogue)."""
    from metarec.models.episodic import EpisodicLinear
    from metarec.models.stacked import StackedRanker

    # the stacked ranker learns from 300 of the training users: the round trip is under
    # test, not its quality, and its signals over every user took 20 s more
    inter = world.data.interactions
    few = replace(
        world.data, interactions=inter[inter["user_id"].isin(inter["user_id"].unique()[:300])]
    )
    members = {
        "fomaml": world.ranking.members["fomaml"],
        "episodic": EpisodicLinear(lams=(300.0,), seed=1).fit(world.data),
        # on the 300 most rated items: its signals' rows are not the catalogue's
        "stacked": StackedRanker(
            folds=2,
            bags=2,
            max_iter=15,
            min_samples_leaf=50,
            n_candidates=150,
            seed=1,
            max_items=300,
        ).fit(few),
    }
    return Ensemble(members, mode="ranking", buckets=(0, 1, 5), fit_members=False, seed=1).fit(
        world.data
    )


def test_episodic_and_stacked_members_round_trip(
    world: World, rankers: Ensemble, tmp_path: Path
) -> None:
    loaded = Ensemble.load(rankers.save(tmp_path / "ens"))
    for name in ("episodic", "stacked"):
        np.testing.assert_array_equal(
            loaded.members[name].score_catalogue(world.tasks, world.users),
            rankers.members[name].score_catalogue(world.tasks, world.users),
        )
    np.testing.assert_array_equal(
        loaded.score_catalogue(world.tasks, world.users),
        rankers.score_catalogue(world.tasks, world.users),
    )
    suffixes = {p.suffix for p in (tmp_path / "ens").rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".safetensors"}


def test_an_updated_vector_reaches_the_stacked_members_own_row(
    rankers: Ensemble, tmp_path: Path
) -> None:
    from metarec.models.stacked import StackedRanker

    rec = load_run(rankers.save(tmp_path / "ens"))
    stacked = rec.ensemble.members["stacked"]
    assert isinstance(stacked, StackedRanker) and stacked.signals is not None
    pos = stacked.universe.position
    inside = int(np.flatnonzero((pos >= 0) & (pos != np.arange(len(pos))))[0])
    outside = int(np.flatnonzero(pos < 0)[0])
    before = stacked.signals.vectors.copy()
    width = rec.primary.model.tower.item_vectors.shape[1]
    rec.update_peer_vectors([inside, outside], np.random.default_rng(0).random((2, width)))
    changed = np.flatnonzero((stacked.signals.vectors != before).any(axis=1))
    # catalogue item `inside` is row pos[inside] there; one outside the universe has none
    assert changed.tolist() == [pos[inside]]


def test_damaged_stacked_state_names_the_member(rankers: Ensemble, tmp_path: Path) -> None:
    out = rankers.save(tmp_path / "ens")
    manifest = json.loads((out / "ensemble.json").read_text())
    entry = next(m for m in manifest["members"] if m["name"] == "stacked")
    del entry["state"]["tree_baseline"]
    (out / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"members\[2\] \(stacked\).*tree_baseline"):
        Ensemble.load(out)


def test_one_model_round_trips_on_its_own(world: World, rankers: Ensemble, tmp_path: Path) -> None:
    """What a benchmark keeps of each finished model so that an interrupted run resumes."""
    models = {**world.ranking.members, "bias": world.rating.members["bias"], **rankers.members}
    for name, model in models.items():
        loaded = persist.load_model(persist.save_model(model, tmp_path / name))
        assert type(loaded) is type(model) and loaded.n_items == model.n_items
        np.testing.assert_array_equal(
            loaded.score_catalogue(world.tasks, world.users),
            model.score_catalogue(world.tasks, world.users),
        )
        # and its scale: a loaded bias predicted 27 from a 99 its fitted self refused
        assert loaded.rating_range == model.rating_range == (1.0, 5.0), name
    bag = persist.load_model(persist.save_model(world.rating, tmp_path / "bag"))
    assert isinstance(bag, Ensemble)  # an ensemble keeps its own layout
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert bag.rating_range == (1.0, 5.0)
    assert all(m.rating_range == (1.0, 5.0) for m in bag.members.values())
    off = replace(world.tasks[3], support_ratings=np.full(3, 99.0))
    for model in (bag, bag.members["bias"]):
        with pytest.raises(DataError, match="support rating 99 is off the model's scale"):
            model.predict_tasks([off])
    # a model saved before the scale was kept loads, without it
    out = tmp_path / "bias"
    manifest = json.loads((out / "model.json").read_text())
    del manifest["rating_range"]
    (out / "model.json").write_text(json.dumps(manifest))
    assert persist.load_model(out).rating_range is None
    (out / "model.json").write_text(json.dumps(manifest | {"rating_range": [5, "x"]}))
    with pytest.raises(ModelError, match=r"field 'rating_range': expected \[low, high\] or null"):
        persist.load_model(out)


def test_one_model_folder_is_checked(world: World, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ModelError, match="not a model folder"):
        persist.save_model(world.rating.members["bias"], tmp_path / "mine")
    out = persist.save_model(world.rating.members["bias"], tmp_path / "bias")
    manifest = json.loads((out / "model.json").read_text())
    (out / "model.json").write_text(json.dumps({**manifest, "kind": "melu"}))
    with pytest.raises(ModelError, match=r"model\.json: field 'kind': 'melu' is not one of"):
        persist.load_model(out)
    # no ensemble in sight: the message says "model", with no advice about one
    with pytest.raises(UnsupportedError, match=r"^model 'als' \(ALS\) cannot be saved: .*can$"):
        persist.save_model(make_peer("als", seed=1).fit(world.data), tmp_path / "als")
    assert not (tmp_path / "als").exists()
    with pytest.raises(ModelError, match=r"^model 'popularity': not fitted; call fit\(\) first"):
        persist.save_model(make_peer("popularity"), tmp_path / "unfitted")


def test_a_peer_array_in_another_dtype_than_saved_is_refused(
    world: World, rankers: Ensemble, tmp_path: Path
) -> None:
    """safetensors holds any dtype; the manifest records each array's, so popularity
    scores edited to bool (which loaded and ranked) or a ranker's sparse indices turned
    to float are refused, naming the file, the array and the dtype it was saved as."""
    from metarec.io import load_tensors, save_tensors

    out = persist.save_model(world.ranking.members["popularity"], tmp_path / "pop")
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["dtypes"] == {"scores": "float64"}
    kept = load_tensors(out / persist.PEER_FILE)
    save_tensors(out / persist.PEER_FILE, {"scores": kept["scores"] > 0})
    with pytest.raises(ModelError, match=r"peer\.safetensors: tensor 'scores' is bool, saved as"):
        persist.load_model(out)
    save_tensors(out / persist.PEER_FILE, {**kept, "extra": kept["scores"]})
    with pytest.raises(ModelError, match=r"holds arrays \['extra', 'scores'\]; .*'dtypes' names"):
        persist.load_model(out)
    save_tensors(out / persist.PEER_FILE, kept)
    (out / "model.json").write_text(json.dumps(manifest | {"dtypes": {"scores": "float16"}}))
    with pytest.raises(ModelError, match=r"model\.json: field 'dtypes': expected an object"):
        persist.load_model(out)
    # a folder saved before dtypes were recorded loads, checked against PEER_DTYPES only
    older = {k: v for k, v in manifest.items() if k != "dtypes"}
    (out / "model.json").write_text(json.dumps(older))
    assert isinstance(persist.load_model(out), type(world.ranking.members["popularity"]))
    save_tensors(out / persist.PEER_FILE, {"scores": kept["scores"].to(torch.bfloat16)})
    with pytest.raises(ModelError, match=r"'scores' is bfloat16, not a dtype a peer saves"):
        persist.load_model(out)

    ens = rankers.save(tmp_path / "ens")
    index = [m["name"] for m in json.loads((ens / "ensemble.json").read_text())["members"]]
    peer = ens / "members" / str(index.index("stacked")) / persist.PEER_FILE
    arrays = load_tensors(peer)
    key = next(k for k, v in arrays.items() if k.endswith(".indices"))
    save_tensors(peer, {**arrays, key: arrays[key].double()})
    with pytest.raises(ModelError, match=rf"tensor '{key}' is float64, saved as int"):
        Ensemble.load(ens)

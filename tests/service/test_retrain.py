"""`metarec retrain`: logged feedback in, a new run out only when it is not worse."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import metarec.retrain
from metarec.cli import main
from metarec.errors import ConfigError
from metarec.recommender import Recommender
from metarec.retrain import (
    RetrainResult,
    _gate_loss,
    _held_out_users,
    feedback_frame,
    not_worse,
)
from metarec.service.store import FeedbackStore, NewEvent
from metarec.trained_users import recorded_training_users

from .conftest import LiveServer

FAST = ["--set", "epochs=1", "--set", "max_train_users=60", "--set", "inner_steps=1", "--quiet"]


def retrain_argv(run: Path, db: str, out: Path, tolerance: float) -> list[str]:
    return ["retrain", str(run), "--db", db, "--out", str(out), "--tolerance", f"{tolerance:g}"]


@pytest.mark.parametrize(
    "old, new, tolerance, ok",
    [
        (0.80, 0.79, 0.0, True),
        (0.80, 0.80, 0.0, True),
        (0.80, 0.81, 0.0, False),
        (0.80, 0.81, 0.02, True),
        (0.80, 0.79, -0.02, False),  # a negative tolerance demands a gain
        (0.80, math.nan, 0.0, False),
        (math.nan, 0.5, 0.0, False),
    ],
)
def test_release_rule(old: float, new: float, tolerance: float, ok: bool) -> None:
    assert not_worse(old, new, tolerance) is ok


@pytest.mark.parametrize(
    "old, new, written",
    [
        (0.81234, 0.79876, ("0.8123", "0.7988")),
        (1.14451, 1.14453, ("1.14451", "1.14453")),  # read "1.1445, 1.1445 (worse)"
        (0.8, 0.8, ("0.8000", "0.8000")),
        (3.2e-10, 3.1e-10, ("0.00000000032", "0.00000000031")),  # a scale 1e-9 wide
        (0.7, 0.7 + 2**-53, ("0.7", "0.7000000000000001")),  # one unit in the last place
    ],
)
def test_a_refusal_writes_its_figures_with_the_places_that_tell_them_apart(
    old: float, new: float, written: tuple[str, str], tmp_path: Path
) -> None:
    result = RetrainResult(old, new, 5, 1, 3, accepted=False, written=False, out=tmp_path)
    got = result.written_maes()
    assert got == written
    if old == new:  # a gain asked for, none made: not "better" beside two equal figures
        result.details["tolerance"] = -1.0
        assert result.verdict() == "equal, not better by 1"
    assert f"MAE old {got[0]}, new {got[1]}" in result.summary()


def test_the_ranking_gate_loss_is_one_minus_ndcg() -> None:
    # were the gate's loss for an implicit run nDCG@3 itself, the model that ranked the
    # held-out users' items better would be the one refused.
    # 4 users rate 15 items each: a model that predicts their query ratings exactly
    # ranks each query in its ideal order, nDCG@3 = 1, a loss of 0
    rows = [(f"u{u}", f"i{j}", float((u + j) % 5 + 1), float(j))
            for u in range(4) for j in range(15)]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    index = {f"i{j}": j for j in range(15)}

    def model(sign: float) -> Any:
        return SimpleNamespace(
            item_index=index,
            rating_range=(1.0, 5.0),
            predict_tasks=lambda tasks, rows: [sign * t.query_ratings for t in tasks],
        )

    loss, n = _gate_loss(model(1.0), frame, None, 0, "1 - nDCG@3")
    assert n == 4 and loss == pytest.approx(0.0)
    backwards, _ = _gate_loss(model(-1.0), frame, None, 0, "1 - nDCG@3")
    assert 0 < backwards <= 1  # ranked in reverse: a loss, at most 1


def test_retrain_names_the_encoder_folder_the_runs_vectors_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run saved with ./my-model, retrained from where another ./my-model is: the new
    run's config named that one while its vectors came from the run's own folder; and
    the run's folder written in full was refused as another encoder."""
    from metarec.config import TrainConfig
    from metarec.errors import ConfigError
    from metarec.retrain import with_runs_encoder

    own, here = tmp_path / "train" / "my-model", tmp_path / "elsewhere" / "my-model"
    own.mkdir(parents=True)
    here.mkdir(parents=True)
    monkeypatch.chdir(here.parent)
    saved = {"type": "sentence", "model": str(own)}
    for given in ("./my-model", str(own)):
        cfg = with_runs_encoder(TrainConfig(encoder=given), "./my-model", saved)
        assert cfg.encoder == str(own), given
    with pytest.raises(ConfigError, match="retrain keeps the run's encoder"):
        with_runs_encoder(TrainConfig(encoder=str(here)), "./my-model", saved)
    tfidf = {"type": "tfidf", "id": "tfidf-svd:d64:ab"}
    assert with_runs_encoder(TrainConfig(encoder="tfidf"), "tfidf", tfidf).encoder == "tfidf"
    with pytest.raises(ConfigError, match="retrain keeps the run's encoder"):
        with_runs_encoder(TrainConfig(encoder="minilm"), "tfidf", tfidf)


def test_only_items_the_run_records_as_added_outlive_the_data() -> None:
    # an item trained on and since removed from the data's items file stayed in every
    # retrained run, said to be "added in Python"
    from metarec.retrain import run_only_items

    data = pd.DataFrame({"item_id": ["1", "2"], "title": ["A", "B"], "text": ["a", "b"]})
    run = pd.DataFrame(
        {"item_id": ["1", "2", "3", "py"], "title": list("ABCP"), "text": list("abcp")}
    )
    kept = run_only_items(data, run, {"py"})
    assert kept.to_dict("list") == {"item_id": ["py"], "title": ["P"], "text": ["p"]}
    # a run saved before additions were recorded: every item beyond the data, as before
    assert run_only_items(data, run, None)["item_id"].tolist() == ["3", "py"]


def test_feedback_on_items_outside_the_catalogue_is_left_out_and_counted(
    tmp_path: Path,
) -> None:
    # kept, a rating of an item the catalogue lacks would go on to training, while the
    # count (the summary's "left out") said it was left out
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    store.create_user("u", {})
    store.add_events(
        "u", [NewEvent("a", "1", "rating", 4.0, 1.0), NewEvent("b", "ghost", "rating", 5.0, 2.0)]
    )
    frame, dropped = feedback_frame(store, (1.0, 5.0), {"1", "2"})
    assert frame[["user_id", "item_id", "rating"]].values.tolist() == [["feedback:u", "1", 4.0]]
    assert dropped == 1 and frame.attrs["clipped"] == 0
    # a store written for a run on another scale: 6 to 10 became 5 without a word
    store.add_events("u", [NewEvent("c", "2", "rating", 9.0, 3.0)])
    frame, _ = feedback_frame(store, (1.0, 5.0), {"1", "2"})
    store.close()
    assert frame["rating"].tolist() == [4.0, 5.0] and frame.attrs["clipped"] == 1
    details = {"feedback_ratings_clipped": 1, "rating_range": [1.0, 5.0]}
    result = RetrainResult(0.8, 0.7, 10, 1, 2, True, True, tmp_path, details=details)
    assert "(1 outside the run's scale [1.0, 5.0] clipped to it" in result.summary()


def test_a_retrained_run_without_its_held_out_users_is_refused(tmp_path: Path) -> None:
    # judged on a fresh draw of users, some of which it trained on (which favours the
    # old model), without a word
    from metarec.errors import DataError, ModelError

    with pytest.raises(ModelError, match=r"heldout\.json: missing; a retrained run is judged"):
        _held_out_users(tmp_path, None, _old({"holdout": "retrain"}))
    # nor a P1 run without its split: a fresh draw held half its training users
    with pytest.raises(ModelError, match=r"split\.json: missing; this run was trained on a P1"):
        _held_out_users(tmp_path, None, _old({"holdout": "p1"}))
    # a damaged one names what it lacks ("list indices must be integers or slices")
    for damaged, what in (("[]", "users"), ('{"users": []}', "rule")):
        (tmp_path / "heldout.json").write_text(damaged)
        with pytest.raises(DataError, match=f"expected an object with users and rule; {what}"):
            _held_out_users(tmp_path, None, _old({"holdout": "retrain"}))


def test_a_p1_run_whose_split_was_edited_since_is_not_judged_on_it(
    shared_data: Path, tmp_path: Path
) -> None:
    # its new users swapped for training users: the old run was judged on users it
    # learned from (evaluate refuses such a split by the digest the run records)
    from metarec.data import load_dataset
    from metarec.errors import ModelError
    from metarec.evaluation.p1 import make_p1_split

    ds = load_dataset("ml-100k", root=shared_data)
    split = make_p1_split(ds, seed=0)
    split.save(tmp_path / "split.json")
    meta = {"holdout": "p1", "split_digest": split.digest()}
    held, _ = _held_out_users(tmp_path, ds, _old(meta))
    assert held == set(split.new_users)
    raw = json.loads((tmp_path / "split.json").read_text())
    raw["new_users"], raw["train_users"] = raw["train_users"], raw["new_users"]
    (tmp_path / "split.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="no longer the split the run was trained with"):
        _held_out_users(tmp_path, ds, _old(meta))


def _old(metadata: dict[str, Any], seed: int = 3) -> Any:
    """What _held_out_users reads of the old run."""
    return SimpleNamespace(metadata=metadata, cfg=SimpleNamespace(seed=seed))


def test_held_out_users_are_the_draw_the_run_early_stopped_on(tmp_path: Path) -> None:
    from metarec.errors import ModelError
    from metarec.pipeline import split_users

    frame = pd.DataFrame(
        {"user_id": [f"u{i // 3}" for i in range(300)], "item_id": "1", "rating": 4.0}
    )
    ds = SimpleNamespace(interactions=frame)
    for fraction in (0.1, 0.3):  # metarec.train(validation_fraction=0.3) drew 30 %
        _, val = split_users(frame, fraction, 5)
        meta = {"split_seed": 5, "validation_fraction": fraction}
        held, rule = _held_out_users(tmp_path, ds, _old(meta))
        assert held == set(val["user_id"]) and rule == f"a seeded {fraction:.0%} of users"
    # a run recorded before the share was (the CLI recorded its data): the CLI's 10 %
    _, val = split_users(frame, 0.1, 3)
    assert _held_out_users(tmp_path, ds, _old({"dataset": "d"}))[0] == set(val["user_id"])
    # a model fitted in Python records nothing of its users: no one to judge it on
    held, rule = _held_out_users(tmp_path, ds, _old({}))
    assert held == set() and "records no split of its users" in rule
    held, rule = _held_out_users(tmp_path, ds, _old({"validation_fraction": 0.0}))
    assert held == set() and "trained on every user" in rule
    with pytest.raises(ModelError, match="validation_fraction 'x' is no share of users"):
        _held_out_users(tmp_path, ds, _old({"validation_fraction": "x"}))


@pytest.fixture
def feedback_db(make_server: Callable[..., LiveServer], server_api_key: str) -> str:
    """Two users' feedback and one added item, logged through the real service."""
    live = make_server()
    new_item = {"item_id": "fb-new", "title": "A Brand New Cartoon", "year": 2021,
                "genres": "Animation|Children's"}  # fmt: skip
    with live.client(server_api_key) as c:
        assert c.put("/v1/items", json={"items": [new_item]}).status_code == 200
        kids = [{"item_id": i, "rating": 5} for i in ("1", "95", "71", "fb-new")]
        c.post("/v1/users", json={"user_id": "kid", "features": {"age": 9}, "ratings": kids})
        c.post("/v1/users", json={"user_id": "noir"})
        kinds = ["like", "dislike", "click", "skip"] * 5
        events = [
            {"event_id": f"n{i}", "item_id": str(i), "type": t}
            for i, t in zip(range(40, 60), kinds, strict=True)
        ]
        assert c.post("/v1/users/noir/events", json={"events": events}).json()["accepted"] == 20
    live.stop()
    return live.settings.db_url


@pytest.mark.slow
def test_retrain_writes_a_run_that_knows_the_feedback(
    service_run: Path,
    feedback_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_server: Callable[..., LiveServer],
    server_api_key: str,
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    # an item added in Python and saved with the run is recorded in the run alone: the
    # new run was built from the data and the store, and lost it and its feedback
    run = tmp_path / "served"
    shutil.copytree(service_run, run)
    served = Recommender.load(run)
    served.add_items(pd.DataFrame({"item_id": ["py-new"], "title": ["A Python Addition"]}))
    served.save(run)
    store = FeedbackStore(feedback_db)
    store.add_events("kid", [NewEvent("py", "py-new", "rating", 4.0, time.time())])
    store.close()
    out = tmp_path / "retrained"
    argv = retrain_argv(run, feedback_db, out, 10)
    code = main(argv + FAST)
    printed = capsys.readouterr().out
    assert code == 0, printed
    old_new = re.search(r"MAE old (\d\.\d+), new (\d\.\d+)", printed)
    assert old_new and "25 ratings from 2 users" in printed
    assert "1 items the run holds beyond the data's items file" in printed
    report = json.loads((out / "retrain.json").read_text())
    assert report["accepted"] and not report["forced"]
    assert report["old_mae"] == pytest.approx(float(old_new.group(1)), abs=1e-4)
    assert report["feedback_ratings"] == 25 and report["n_eval_users"] > 50
    rec = Recommender.load(out)
    assert "fb-new" in rec.item_index  # the API-added item is part of the new catalogue
    assert rec.cfg.epochs == 1 and rec.metadata["retrained_from"] == str(run)
    assert rec.popularity[rec.item_index["fb-new"]] == 1  # trained on the kid's rating of it
    assert rec.popularity[rec.item_index["py-new"]] == 1
    assert rec.items.loc[rec.item_index["py-new"], "title"] == "A Python Addition"
    # recorded as the new run's additions (the service's and Python's): its data lacks
    # them, and the next retrain or ensemble must know them for the run's own
    assert set(rec.metadata["added_items"]) == {"fb-new", "py-new"}
    # the next round is judged on the same users this one held out, never on its own
    # training users (without the record it fell back to a fresh 10 % of all users)
    held = json.loads((out / "heldout.json").read_text())
    assert held["rule"] == report["held_out"] and len(held["users"]) == report["n_eval_users"]
    assert _held_out_users(out, None, rec) == (set(held["users"]), held["rule"])
    # and records the users it trained on, the feedback's among them, so that `abtest`
    # keeps them out (it refused a users list for a run that recorded none)
    trained, _ = recorded_training_users(out) or (set(), "")
    assert {"feedback:kid"} <= trained and not trained & set(held["users"])
    # the service swaps to it without a restart
    live = make_server(db_url=feedback_db)
    with live.client(server_api_key) as c:
        assert c.post("/v1/admin/reload", json={"run": str(out)}).status_code == 200
        recs = c.get("/v1/users/kid/recommendations").json()
    assert recs["model"].startswith("retrained@") and recs["n_events"] == 5


@pytest.mark.slow
def test_a_retrain_stopped_while_writing_leaves_no_run(
    service_run: Path,
    feedback_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Stopped before its last file, the new run loaded (its model was written) without
    heldout.json, and the next round judged it on another set of users."""
    import metarec.io

    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs" / "retrained"
    argv = retrain_argv(service_run, feedback_db, out, 10)
    save_json = metarec.io.save_json

    def stop_at_the_last_file(path: Path, *args: object, **kwargs: object) -> None:
        if Path(path).name == "heldout.json":
            raise KeyboardInterrupt  # what SIGTERM and Ctrl-C raise
        save_json(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(metarec.io, "save_json", stop_at_the_last_file)
    assert main(argv + FAST) == 130
    capsys.readouterr()
    assert not out.exists()
    # the training's checkpoint stays for the rerun, and nothing else
    left = [p.name for p in out.parent.iterdir()]
    assert left == [".retrained.retrain-checkpoint"], "a staged folder was left behind"
    monkeypatch.setattr(metarec.io, "save_json", save_json)
    # the rerun takes the trained model from the checkpoint kept beside --out (minutes
    # of training were lost to a Ctrl-C before); the trainer's own tests resume one
    # stopped mid-way
    from metarec.meta.trainer import Trainer

    epochs: list[int] = []
    real = Trainer.train_epoch
    monkeypatch.setattr(Trainer, "train_epoch", lambda *a: epochs.append(a[2]) or real(*a))
    assert main(argv + FAST) == 0, capsys.readouterr().err  # not refused as existing
    assert epochs == [] and "resumed after epoch 1" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "heldout.json", "items.json", "model.safetensors",
        "recommender.json", "retrain.json", "trained-users.json",
    ]  # fmt: skip
    assert [p.name for p in out.parent.iterdir()] == ["retrained"]  # judged: checkpoint gone


@pytest.mark.slow
def test_retrain_refuses_a_model_that_is_not_good_enough(
    service_run: Path,
    feedback_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "refused"
    # a tolerance of -10 demands a gain of 10 MAE: no model can pass, deterministically
    argv = retrain_argv(service_run, feedback_db, out, -10)
    assert main(argv + FAST) == 1
    captured = capsys.readouterr()
    m = re.search(r"held-out MAE (\d\.\d+) vs (\d\.\d+)", captured.err)
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0, captured.err
    assert "not written" in captured.err and not out.exists()
    # a better model that misses the demanded gain is not called worse
    better = float(m.group(1)) < float(m.group(2))
    equal = float(m.group(1)) == float(m.group(2))
    said = (
        "(equal, not better by 10)" if equal else "(better, but not by 10)" if better else "(worse)"
    )
    assert said in captured.err
    # the --force the refusal suggests writes that model without training again
    assert (tmp_path / ".refused.retrain-checkpoint" / "checkpoint.json").exists()
    from metarec.meta.trainer import Trainer

    epochs: list[int] = []
    real = Trainer.train_epoch
    monkeypatch.setattr(Trainer, "train_epoch", lambda *a: epochs.append(a[2]) or real(*a))
    assert main([*argv, "--force", *FAST]) == 0
    assert epochs == [] and out.exists()
    assert not (tmp_path / ".refused.retrain-checkpoint").exists()


@pytest.mark.slow
def test_the_gate_judges_the_new_model_against_the_old(
    service_run: Path,
    feedback_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # with the losses swapped a worse model would pass; judging the old model twice, the
    # new one would pass whatever it was. Losses are set: old 0.80,
    # new 0.90, at tolerance 0 a refusal
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    judged: list[Any] = []
    gate_loss = metarec.retrain._gate_loss

    def set_losses(
        rec: Any, frame: pd.DataFrame, users: Any, seed: int, metric: str
    ) -> tuple[float, int]:
        _, n = gate_loss(rec, frame, users, seed, metric)
        judged.append(rec)
        return (0.80 if len(judged) == 1 else 0.90), n  # the old run is judged first

    monkeypatch.setattr(metarec.retrain, "_gate_loss", set_losses)
    out = tmp_path / "worse"
    assert main(retrain_argv(service_run, feedback_db, out, 0) + FAST) == 1
    assert "(worse): held-out MAE 0.9000 vs 0.8000" in capsys.readouterr().err
    assert len(judged) == 2 and judged[0] is not judged[1]
    assert not out.exists()


def _copy_with_metadata(run: Path, to: Path, **changes: Any) -> Path:
    """A copy of ``run`` whose recorded metadata has ``changes``."""
    shutil.copytree(run, to)
    manifest = json.loads((to / "recommender.json").read_text())
    manifest["metadata"] |= changes
    (to / "recommender.json").write_text(json.dumps(manifest))
    return to


def test_a_model_that_records_no_split_of_its_users_is_retrained_only_by_force(
    service_run: Path,
    feedback_db: str,
    shared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # fitted in Python and saved: a 10 % draw by its seed judged the old model mostly on
    # users it trained on, as "the early-stopping users", in a gate that then favoured it
    run = tmp_path / "python-fitted"
    shutil.copytree(service_run, run)
    manifest = json.loads((run / "recommender.json").read_text())
    for key in ("holdout", "validation_fraction", "split_seed", "dataset", "data_spec"):
        manifest["metadata"].pop(key, None)
    (run / "recommender.json").write_text(json.dumps(manifest))
    data = ["--dataset", "ml-100k", "--data", str(shared_data)]
    assert main(retrain_argv(run, feedback_db, tmp_path / "new", 10) + data + FAST) == 2
    err = capsys.readouterr().err
    assert "the model records no split of its users" in err, err
    assert "there is no user neither model trains on" in err and "--force" in err, err
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_retrain_holds_out_the_users_the_old_runs_split_seed_drew(
    service_run: Path,
    feedback_db: str,
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run trained with --split-seed 7 held out the users seed 7 drew; judging it on
    its training seed's draw would judge it on users it trained on."""

    from metarec.data import load_dataset
    from metarec.pipeline import split_users

    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    run = _copy_with_metadata(service_run, tmp_path / "split-seed-run", split_seed=7)
    out = tmp_path / "retrained"
    argv = retrain_argv(run, feedback_db, out, 10)
    assert main(argv + FAST) == 0, capsys.readouterr().err
    ds = load_dataset("ml-100k", root=shared_data)
    _, held = split_users(ds.interactions, 0.1, 7)
    recorded = json.loads((out / "heldout.json").read_text())["users"]
    assert recorded == sorted(set(held["user_id"].astype(str)))


@pytest.mark.slow
def test_a_run_trained_on_every_user_is_retrained_only_by_force_and_its_heir_is_judged(
    service_run: Path,
    feedback_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:

    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    run = _copy_with_metadata(
        service_run, tmp_path / "every-user", holdout="none", validation_fraction=0.0
    )
    (run / "split.json").unlink(missing_ok=True)
    out = tmp_path / "heir"
    assert main(retrain_argv(run, feedback_db, out, 10) + FAST) == 2
    assert "there is no user neither model trains on" in capsys.readouterr().err
    assert main([*retrain_argv(run, feedback_db, out, 10), "--force", *FAST]) == 0
    capsys.readouterr()
    # the new run held out its early-stopping users: judged on them, not refused for good
    held = json.loads((out / "heldout.json").read_text())
    assert held["users"] and "early-stopping users" in held["rule"]
    assert main(retrain_argv(out, feedback_db, tmp_path / "next", 10) + FAST) == 0, (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_a_retrain_that_kept_the_untrained_model_says_so(
    service_run: Path,
    feedback_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # "wrote" with exit 0, and retrain.json's best_epoch 0 the only trace, where train
    # said the untrained model was kept
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "retrained"
    argv = ["retrain", str(service_run), "--db", feedback_db, "--out", str(out)]
    argv += ["--tolerance", "10", *FAST, "--set", "outer_lr=1e-9"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "no epoch of meta-training beat the untrained model" in capsys.readouterr().err
    assert json.loads((out / "retrain.json").read_text())["best_epoch"] == 0
    # the report shows the run's epochs; a loss kept as null (not finite) says so
    manifest = json.loads((out / "recommender.json").read_text())
    manifest["metadata"]["history"][-1]["val_loss"] = None
    (out / "recommender.json").write_text(json.dumps(manifest))
    assert main(["report", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "| not finite |" in shown
    # the verdict it was written on, not "trained with --holdout none" (it was not)
    verdict = json.loads((out / "retrain.json").read_text())
    assert f"## Retrained from {service_run}" in shown
    assert "best epoch 0" in shown and "--holdout none" not in shown
    assert f"MAE on {verdict['n_eval_users']:,} held-out users" in shown
    assert f"old {verdict['old_mae']:.4f}, new {verdict['new_mae']:.4f}" in shown
    assert "tolerance 10)" in shown
    n, users = verdict["feedback_ratings"], verdict["feedback_users"]
    assert (
        f"Feedback: {n:,} rating{'s' * (n != 1)} from {users:,} user{'s' * (users != 1)};" in shown
    )
    # one user is "1 user": "3 ratings from 1 users" was printed
    (out / "retrain.json").write_text(json.dumps({**verdict, "feedback_users": 1}))
    assert main(["report", str(out)]) == 0
    assert f"Feedback: {n:,} ratings from 1 user;" in capsys.readouterr().out
    (out / "retrain.json").write_text(json.dumps(verdict))
    # written before the metric was recorded: judged on MAE, and reported so
    unnamed = {k: v for k, v in verdict.items() if k != "metric"}
    (out / "retrain.json").write_text(json.dumps(unnamed))
    assert main(["report", str(out)]) == 0
    assert f"MAE on {verdict['n_eval_users']:,} held-out users" in capsys.readouterr().out


def test_retrain_without_feedback_says_so_before_training(
    service_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarec.service.store import FeedbackStore

    db = f"sqlite:///{tmp_path / 'empty.db'}"
    FeedbackStore(db).close()  # a store the service created, with nothing logged yet
    out = tmp_path / "nothing"
    assert main(["retrain", str(service_run), "--db", db, "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "--db: no feedback to retrain on" in err and "force=True" not in err
    assert err.rstrip().endswith("; --force retrains anyway")
    assert not out.exists()


def test_retrain_names_its_parameters_to_python_and_its_flags_at_the_shell(
    service_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarec.errors import ConfigError
    from metarec.retrain import retrain
    from metarec.service.store import FeedbackStore

    db = f"sqlite:///{tmp_path / 'empty.db'}"
    FeedbackStore(db).close()
    cases = [
        ({"out": service_run}, "out: ", "--out: "),
        # a run nested in the served one was accepted
        ({"out": service_run / "retrained"}, "out: ", "--out: "),
        ({"out": service_run.parent}, "out: ", "--out: "),
        ({"out": tmp_path / "new", "tolerance": float("nan")}, "tolerance: ", "--tolerance: "),
        ({"out": tmp_path / "new"}, "db_url: no feedback", "--db: no feedback"),
    ]
    for kwargs, python, shell in cases:
        with pytest.raises(ConfigError) as err:
            retrain(service_run, db, **kwargs)  # type: ignore[arg-type]
        assert str(err.value).startswith(python), err.value
        assert "--" not in str(err.value), err.value  # Python callers gave no flags
        argv = ["retrain", str(service_run), "--db", db, "--out", str(kwargs["out"])]
        argv += ["--tolerance", str(kwargs.get("tolerance", 0.0)), *FAST]
        assert main(argv) == 2
        assert f"metarec: error: {shell}" in capsys.readouterr().err


def test_retrain_refuses_a_spec_its_run_could_not_read_back(tmp_path: Path) -> None:
    from metarec.errors import ConfigError
    from metarec.retrain import retrain

    # the new run records the spec it is given; a misspelt key (ignored in loading)
    # would save a run that every later load refuses
    with pytest.raises(ConfigError, match=r"^spec: unknown key 'datset'"):
        retrain(tmp_path / "run", "sqlite:///x.db", tmp_path / "out", spec={"datset": "x"})
    with pytest.raises(ConfigError, match=r"^spec: expected an object, got 'ml-100k'"):
        retrain(tmp_path / "run", "sqlite:///x.db", tmp_path / "out", spec="ml-100k")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_an_item_in_the_store_without_text_is_named_with_the_store() -> None:
    # the service stores none; one written by hand was blamed on "items: row 1682" of
    # the data, where no such row is
    from metarec.retrain import combined_items
    from metarec.service.store import DamagedStoreError

    base = pd.DataFrame({"item_id": ["1", "2"], "title": ["Heat", "Ran"]})
    blank = {"item_id": "new1", "title": "", "text": "", "genres": "", "year": None}
    with pytest.raises(
        DamagedStoreError,
        match=r"^database sqlite:///f\.db: item 'new1': no text to encode .*edited by hand",
    ):
        combined_items(base, [blank], "sqlite:///f.db")
    named = {**blank, "title": "Newer"}
    assert combined_items(base, [named], "x")["item_id"].tolist() == ["1", "2", "new1"]


def test_a_store_that_served_another_run_is_said_to_before_retraining(tmp_path: Path) -> None:
    # an ml-1m service's store retrained an ml-100k run: its item "1" rewrote Toy
    # Story's text, without a word
    import warnings

    from metarec.retrain import _warn_if_served_another
    from metarec.service.serving import ServedRef

    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    here, other = tmp_path / "run", tmp_path / "other"
    here.mkdir()
    (tmp_path / "current").symlink_to(here)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_served_another(store, here)  # nothing recorded yet
        served = ServedRef(str(tmp_path / "current"), str(here), None)
        store.bump_served_state(run=served.dumps())
        _warn_if_served_another(store, here)  # the folder its link led to
        _warn_if_served_another(store, tmp_path / "current")
    store.bump_served_state(run=ServedRef(str(other), str(other), None).dumps())
    with pytest.warns(UserWarning, match=rf"records serving {re.escape(str(other))} .*not "):
        _warn_if_served_another(store, here)
    store.close()


def test_feedback_ratings_land_on_the_datas_levels() -> None:
    import numpy as np
    import pandas as pd

    from metarec.retrain import on_levels

    feedback = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["1", "2", "3"],
                             "rating": [7.75, 3.25, 10.0]})  # fmt: skip
    snapped = on_levels(feedback, np.arange(1.0, 11.0))  # a click, a skip, a like on 1-10
    assert snapped["rating"].tolist() == [8.0, 3.0, 10.0]
    # a continuous scale has no levels: left as it is
    assert on_levels(feedback, np.linspace(0, 1, 500))["rating"].tolist() == [7.75, 3.25, 10.0]


def test_retrain_keeps_the_runs_encoder_and_objective(
    service_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --set encoder= was recorded in the new run's config while its items were still
    # encoded by the old run's encoder
    from metarec.service.store import FeedbackStore

    db = f"sqlite:///{tmp_path / 'empty.db'}"
    FeedbackStore(db).close()
    kept = json.loads((service_run / "recommender.json").read_text())["config"]["encoder"]
    other = "minilm" if kept != "minilm" else "tfidf"
    out = tmp_path / "new"
    argv = ["retrain", str(service_run), "--db", db, "--out", str(out), "--force"]
    assert main([*argv, "--set", f"encoder={other}", *FAST]) == 2
    assert f"metarec: error: encoder: retrain keeps the run's encoder ({kept!r})" in (
        capsys.readouterr().err
    )
    assert not out.exists()
    # and its objective: a bce model's scores were judged by their MAE as ratings
    assert main([*argv, "--set", "objective=bce", *FAST]) == 2
    assert "metarec: error: objective: retrain keeps the run's objective ('rating'), got 'bce'" in (
        capsys.readouterr().err
    )
    assert not out.exists()


def test_held_out_users_that_are_not_in_the_data_are_refused_before_training(
    service_run: Path, tmp_path: Path, feedback_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # trained in full, then "MAE old nan, new nan"; --force wrote NaN into retrain.json
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(service_run, run)
    (run / "heldout.json").write_text('{"users": ["nobody"], "rule": "edited"}')
    out = tmp_path / "new"
    argv = ["retrain", str(run), "--db", feedback_db, "--out", str(out)]
    assert main(argv + FAST) == 2
    assert "held-out users (edited): none of the 1 is in the data" in capsys.readouterr().err
    assert not out.exists()
    assert main([*argv, "--force", *FAST]) == 0, capsys.readouterr().err
    record = json.loads((out / "retrain.json").read_text(), parse_constant=lambda c: 1 / 0)
    assert record["old_mae"] is None and record["new_mae"] is None


def test_a_cap_the_feedback_users_fill_is_refused_before_training(
    service_run: Path, tmp_path: Path, feedback_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # with as many feedback users as max_train_users, every data set user was dropped,
    # the fit's own subsample could drop feedback users, and trained-users.json still
    # listed them all
    out = tmp_path / "new"
    argv = ["retrain", str(service_run), "--db", feedback_db, "--out", str(out), "--force"]
    assert main([*argv, *FAST, "--set", "max_train_users=2"]) == 2
    said = capsys.readouterr().err
    assert ("max_train_users 2 leaves no room for the data set's users: the store holds 2 "
            "feedback users") in said  # fmt: skip
    assert "(--set max_train_users=none)" in said  # the spelling --set takes ("null" is not)
    assert not out.exists()


def test_on_clicks_the_release_rule_ranks_the_catalogue(shared_data: Path) -> None:
    # every rating 1: any order of the query items had nDCG 1, so an untrained model
    # was "not worse" (1 - nDCG@3 old 0.0000, new 0.0000) and was written
    from metarec.config import TrainConfig
    from metarec.data import load_dataset
    from metarec.errors import ConfigError
    from metarec.pipeline import encode_catalogue, fit_recommender, split_users
    from metarec.retrain import CATALOGUE_METRIC, _gate_loss, gate_metric

    ds = load_dataset("ml-100k", root=shared_data)
    clicks = ds.interactions[ds.interactions["rating"] >= 4].assign(rating=1.0)
    train, held = split_users(clicks, 0.1, seed=0)
    catalogue = encode_catalogue(ds.items, "tfidf", progress=False)
    cfg = TrainConfig(objective="bce", max_train_users=120, seed=1, device="cpu")

    def fit(changes: list[str], **kwargs: Any) -> Recommender:
        rec, _ = fit_recommender(
            catalogue, train, cfg.with_overrides(changes), progress=False, **kwargs
        )
        return rec

    # clicks on the default 1-5 scale: nothing liked, so nothing learnt, without a word
    with pytest.raises(ConfigError, match=r"every rating is 1, under the like threshold 4 "):
        fit(["epochs=1"])
    trained = fit(["epochs=3"], rating_range=(1.0, 1.0))
    assert gate_metric(trained) == CATALOGUE_METRIC == "1 - nDCG@10 over the catalogue"
    # a worse model: trained on clicks of random items; fitted on the 1-5 scale with a
    # threshold given, where the held-out ratings tell what they are
    rng = np.random.default_rng(0)
    noise = train.assign(item_id=rng.choice(ds.items["item_id"].to_numpy(), len(train)))
    worse, _ = fit_recommender(
        catalogue, noise, cfg.with_overrides(["epochs=3", "like_threshold=1"]), progress=False
    )
    assert gate_metric(worse) == "1 - nDCG@3"
    assert gate_metric(worse, held["rating"].to_numpy()) == CATALOGUE_METRIC
    good, n = _gate_loss(trained, held, None, 0, CATALOGUE_METRIC)
    bad, _ = _gate_loss(worse, held, None, 0, CATALOGUE_METRIC)
    assert n > 50 and 0 < good < bad - 0.05 < 1, (good, bad)
    assert not not_worse(good, bad, 0.0)


def _podcast_run(tmp_path: Path, *, n_users: int, per_user: int) -> tuple[Path, Path, Any]:
    """Files with their own column names (plays.csv, episodes.csv), their data set, and a
    run trained on it in ``tmp_path / "run"``."""
    import metarec as mr

    rows = [f"r{u},m{(u * 7 + j) % 30},{1 + (u + j) % 5}" for u in range(n_users)
            for j in range(per_user)]  # fmt: skip
    plays, episodes = tmp_path / "plays.csv", tmp_path / "episodes.csv"
    plays.write_text("listener,episode,stars\n" + "\n".join(rows) + "\n")
    episodes.write_text(
        "id,headline\n" + "".join(f"m{i},episode {i} of a show\n" for i in range(30))
    )
    ds = mr.load_table(plays, episodes, user_col="listener", item_col="episode",
                       rating_col="stars", item_id_col="id", title_col="headline")  # fmt: skip
    mr.train(ds, {"epochs": 1}, encoder="tfidf", run_dir=tmp_path / "run", progress=False)
    return plays, episodes, ds


def test_retrain_reads_the_runs_files_given_again_with_its_recorded_columns(
    tmp_path: Path,
) -> None:
    # a run records its files' column options, and retrain is told the files: they were
    # read as if their columns had the default names ("user column 'user_id' not found")
    from metarec.errors import ConfigError, DataError
    from metarec.retrain import retrain

    plays, episodes, _ = _podcast_run(tmp_path, n_users=40, per_user=12)
    missing = f"sqlite:///{tmp_path / 'no-feedback.db'}"
    # the data is read as the run recorded it; what stops the retrain is the store
    with pytest.raises((ConfigError, DataError)) as caught:
        retrain(tmp_path / "run", missing, tmp_path / "out",
                spec={"interactions": str(plays), "items": str(episodes)})  # fmt: skip
    assert "no-feedback.db" in str(caught.value) and "not found" not in str(caught.value)


def test_data_grown_by_an_item_held_out_users_rated_is_retrained_and_judged(
    tmp_path: Path,
) -> None:
    # the loop's normal course: the data gained an item since the run, and held-out
    # users rated it. The old run lacked it, and the gate failed with "unknown item"
    # after the whole training; the old run now scores it from its text, as served.
    # A 9 among 1-5 stars in the grown file is read on the run's scale and dropped by
    # cleaning, not refused after encoding as "train: row N", a place in no file
    from metarec.retrain import retrain

    plays, episodes, ds = _podcast_run(tmp_path, n_users=60, per_user=14)
    held = json.loads((tmp_path / "run" / "recommender.json").read_text())
    db = f"sqlite:///{tmp_path / 'feedback.db'}"
    store = FeedbackStore(db)
    store.create_user("fan", {})
    store.add_events("fan", [NewEvent("e1", "m1", "rating", 5.0, 1.0)])
    store.close()
    from metarec.pipeline import recorded_validation_split

    _, drawn = recorded_validation_split(ds.interactions, held["metadata"], 0)
    raters = sorted(drawn["user_id"].unique())[:5]
    assert raters
    grown_plays = tmp_path / "plays2.csv"
    grown_plays.write_text(
        plays.read_text()
        + "".join(f"{u},m99,{4 + n % 2}\n" for n, u in enumerate(raters))
        + "r0,m2,9\n"
    )
    grown_items = tmp_path / "episodes2.csv"
    grown_items.write_text(episodes.read_text() + "m99,a brand new episode of the show\n")
    result = retrain(
        tmp_path / "run", db, tmp_path / "out", force=True,
        spec={"interactions": str(grown_plays), "items": str(grown_items)},
    )  # fmt: skip
    assert result.details["items_new_to_the_run"] == 1
    assert np.isfinite(result.old_mae) and np.isfinite(result.new_mae)
    assert "m99" in Recommender.load(tmp_path / "out").item_index


def test_held_out_users_too_short_to_judge_are_refused_before_training_with_why(
    tmp_path: Path,
) -> None:
    # eight ratings a user: no held-out user had the 3 + 10 a comparison needs, found
    # after training as "held-out users: 0 ... (not comparable)" without a reason
    from metarec.errors import ConfigError
    from metarec.retrain import retrain

    plays, episodes, _ = _podcast_run(tmp_path, n_users=40, per_user=8)
    db = f"sqlite:///{tmp_path / 'feedback.db'}"
    store = FeedbackStore(db)
    store.create_user("fan", {})
    store.add_events("fan", [NewEvent("e1", "m1", "rating", 5.0, 1.0)])
    store.close()
    spec = {"interactions": str(plays), "items": str(episodes)}
    with pytest.raises(ConfigError) as caught:
        retrain(tmp_path / "run", db, tmp_path / "out", spec=spec)
    message = str(caught.value)
    assert "has the 13 ratings a comparison needs (3 to adapt on, 10 to judge" in message
    assert "the most any has is 8" in message and "force=True" in message
    assert not (tmp_path / "out").exists()
    result = retrain(tmp_path / "run", db, tmp_path / "out", spec=spec, force=True)
    assert result.written and result.n_eval_users == 0
    assert "none has the 13 ratings a comparison needs" in result.summary()


def test_features_of_feedback_users_without_ratings_are_not_trained_on(
    service_run: Path, feedback_db: str
) -> None:
    """A service user who rated nothing added their feature values to the new run's
    vocabulary: a category only such users hold got an embedding row that training
    never moved, where "unknown" is trained."""
    store = FeedbackStore(feedback_db)
    store.create_user("ghost", {"age": 77})
    store.close()
    old = Recommender.load(service_run)
    got = metarec.retrain.read_inputs(service_run, old, None, feedback_db, force=False)
    assert got.users is not None
    fed = got.users[got.users["user_id"].str.startswith("feedback:")]
    assert set(fed["user_id"]) == {"feedback:kid", "feedback:noir"}  # both rated
    assert fed.set_index("user_id").loc["feedback:kid", "age"] == 9


def test_a_store_recorded_before_scales_were_kept_keeps_its_runs_scale(
    service_run: Path,
    feedback_db: str,
    make_server: Callable[..., LiveServer],
    tmp_path: Path,
) -> None:
    # the first run on another scale served after an upgrade recorded its own scale
    # alone, and the 1-5 feedback before it was read as its ratings
    from metarec.service.serving import ServedRef

    store = FeedbackStore(feedback_db)
    served = ServedRef.parse(store.served_state()[1])
    assert served is not None
    legacy = {"run": served.run, "folder": served.folder, "events_upto": served.events_upto}
    store.bump_served_state(json.dumps(legacy))
    store.close()
    ten = tmp_path / "ten"
    shutil.copytree(service_run, ten)
    manifest = json.loads((ten / "recommender.json").read_text())
    manifest.update(rating_range=[1, 10], rating_cutpoints=None)
    (ten / "recommender.json").write_text(json.dumps(manifest))
    make_server(run=ten, db_url=feedback_db).stop()
    store = FeedbackStore(feedback_db)
    now = ServedRef.parse(store.served_state()[1])
    store.close()
    assert now is not None and now.scales == ((1.0, 5.0), (1.0, 10.0))


def test_feedback_given_to_a_run_on_another_scale_is_refused(
    service_run: Path, feedback_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A click run's "chose it" (1) was read as the worst rating of a 1-10 run, with
    only the warning that the store served another run."""
    from metarec.service import serving
    from metarec.service.serving import ServedRef

    assert serving.recorded_scale(str(service_run)) == (1.0, 5.0)
    assert serving.recorded_scale(str(tmp_path / "gone")) is None
    store = FeedbackStore(feedback_db)
    served = ServedRef.parse(store.served_state()[1])
    assert served is not None and served.scales == ((1.0, 5.0),)  # recorded by the service
    # scales of another form leave the rest read (the whole ref became a "bare path")
    odd = {"run": "r", "folder": "f", "events_upto": 3, "scales": [[1, 5, 7]]}
    assert ServedRef.parse(json.dumps(odd)) == ServedRef("r", "f", 3)
    # a run on 1-10 served after it (a warning at its start) keeps the 1-5 ratings'
    # scale on record; with no feedback stored, a scale nothing was given on is dropped
    assert served.serving((1.0, 10.0), feedback=True) == ((1.0, 5.0), (1.0, 10.0))
    assert served.serving((1.0, 10.0), feedback=False) == ((1.0, 10.0),)
    assert served.serving((1, 5), feedback=True) == ((1.0, 5.0),)
    # only the last run served was compared: this very run, retrained, read ratings
    # given to the 1-10 run before it as its own
    store.bump_served_state(replace(served, scales=((1.0, 10.0), (1.0, 5.0))).dumps())
    with pytest.raises(
        ConfigError,
        match=r"given to a run it served, on ratings \[1, 10\], .*"
        r"on more than one scale; use a store that served runs on \[1, 5\] alone",
    ):
        metarec.retrain.read_inputs(service_run, Recommender.load(service_run), None,
                                    feedback_db, force=False)  # fmt: skip
    # a ref recorded before the scales were kept: the served folder's scale, as before
    legacy = {"run": served.run, "folder": served.folder, "events_upto": served.events_upto}
    store.bump_served_state(json.dumps(legacy))
    store.close()
    other = tmp_path / "other"
    shutil.copytree(service_run, other)  # another folder than the one the store served
    old = Recommender.load(other)
    asked: list[str] = []
    monkeypatch.setattr(
        serving, "recorded_scale", lambda folder: asked.append(folder) or (1.0, 1.0)
    )
    with pytest.warns(UserWarning, match="records serving"), pytest.raises(
        ConfigError, match=r"its feedback was given to .*, on ratings \[1, 1\], and would be "
        r"read as ratings of .* on \[1, 5\]; retrain the run it served, or force=True"
    ):  # fmt: skip
        metarec.retrain.read_inputs(other, old, None, feedback_db, force=False)
    # the folder the server loaded, not a link's path, which may have moved since
    assert Path(asked[0]).resolve() == service_run.resolve()
    with pytest.warns(UserWarning, match=r"on ratings \[1, 1\]"):
        metarec.retrain.read_inputs(other, old, None, feedback_db, force=True)
    # the same scale, as the real served run has: no refusal
    monkeypatch.setattr(serving, "recorded_scale", lambda folder: (1.0, 5.0))
    with pytest.warns(UserWarning, match="records serving"):
        metarec.retrain.read_inputs(other, old, None, feedback_db, force=False)

"""An interrupted benchmark resumes at the model it was fitting, in the fold it was in,
with the figures an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from metarec.errors import ConfigError
from metarec.evaluation import benchmark
from metarec.evaluation.run_store import RunStore


def test_only_the_same_commands_folds_are_read(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "p2-x-3fold", {"seed": 0, "shots": (1, 3)})
    assert store.finished() == {}
    store.start()
    store.save(0, _fold_record(0.5))
    store.save(2, _fold_record(0.25))
    (store.dir / "fold1.json").write_text('{"cut sh')  # a fold cut short: fitted again
    again = RunStore(tmp_path, "p2-x-3fold", {"seed": 0, "shots": [1, 3]})
    assert set(again.finished()) == {0, 2}
    assert again.finished()[0]["summary"]["3"]["m"]["ndcg@10"] == 0.5
    other = RunStore(tmp_path, "p2-x-3fold", {"seed": 1, "shots": [1, 3]})
    assert other.finished() == {}
    # another command: the first one's folds are gone, and it is said why (a commit
    # in between refitted every model without a word)
    with pytest.warns(UserWarning, match=r"not reused \(its seed differ from this run's\)"):
        other.start()
    assert sorted(p.name for p in other.dir.iterdir()) == ["key.json"]
    other.clear()
    assert not other.dir.exists()


def test_the_warnings_of_an_interrupted_session_reach_the_resumed_runs_report(
    tmp_path: Path,
) -> None:
    # a fold read back warns no more: what it warned of is kept with the progress
    store = RunStore(tmp_path, "p2-x", {"seed": 0})
    with pytest.raises(KeyboardInterrupt), store.session(resume=True):
        store.warned.append("ensemble: K >= 5 had 3 (takes K >= 0's)")
        store.save(0, _fold_record())
        raise KeyboardInterrupt
    again = RunStore(tmp_path, "p2-x", {"seed": 0})
    with again.session(resume=True) as finished:
        assert set(finished) == {0}
        assert again.warned == ["ensemble: K >= 5 had 3 (takes K >= 0's)"]
    # kept with each fold too: a kill -9 or an OOM runs no exception path
    killed = RunStore(tmp_path, "p2-k", {"seed": 0})
    with killed.session(resume=True):
        killed.warned.append("few test users at K = 5 (3)")
        killed.save(0, _fold_record())
        seen = RunStore(tmp_path, "p2-k", {"seed": 0})._earlier_warnings()
        assert seen == ["few test users at K = 5 (3)"]
    other = RunStore(tmp_path, "p2-x", {"seed": 1})  # another command's: not its warnings
    with pytest.warns(UserWarning, match="not reused"), other.session(resume=True):
        assert other.warned == []


def test_a_kept_model_is_read_back_only_when_whole(tmp_path: Path) -> None:
    import numpy as np

    from metarec.peers.popularity import Popularity

    popularity = Popularity()
    popularity.scores = np.array([3.0, 1.0, 2.0])  # as fitted
    store = RunStore(tmp_path, "p2-x", {"seed": 0})
    store.start()
    store.save_model(None, 0, "popularity", _model_record("popularity"), popularity)
    record = _model_record("knn")
    store.save_model(None, 1, "knn", record, None)  # nothing needs it later: figures only

    again = RunStore(tmp_path, "p2-x", {"seed": 0})
    kept = again.finished_model(None, 0, "popularity", needed=True)
    assert kept is not None and kept[0]["fit_s"] == 0.1
    assert isinstance(kept[1], Popularity) and np.array_equal(kept[1].scores, popularity.scores)
    figures = again.finished_model(None, 1, "knn", needed=False)
    assert figures is not None and figures[1] is None
    assert json.dumps(figures[0]) == json.dumps({"name": "knn", **record})
    assert again.finished_model(None, 1, "knn", needed=True) is None  # no model kept: refit
    assert again.finished_model(None, 1, "als", needed=False) is None  # another model there
    assert again.finished_model(0, 0, "popularity", needed=False) is None  # another fold
    (store.dir / "split" / "00-popularity" / "model" / "peer.safetensors").write_bytes(b"cut")
    assert again.finished_model(None, 0, "popularity", needed=True) is None  # damaged: refit
    assert (
        RunStore(tmp_path, "p2-x", {"seed": 1}).finished_model(None, 1, "knn", needed=False) is None
    )  # another command's
    again.clear()  # what --no-resume does before the run
    assert again.finished_model(None, 1, "knn", needed=False) is None
    assert not again.dir.exists()


def _fold_record(ndcg: float = 0.5) -> dict[str, Any]:
    """A kept fold's record, as a P2 run with K = 3 and one model writes it."""
    figures = _model_record("m")["result"]
    figures["summary"]["3"]["m"]["ndcg@10"] = ndcg
    return {**figures, "timings": {"m": 0.1}, "configs": {}, "split": {"protocol": "p2"}}


def _model_record(name: str) -> dict[str, Any]:
    """A kept model's record as a P2 run with K = 3 writes it."""
    return {
        "fit_s": 0.1,
        "config": None,
        "result": {
            "summary": {"3": {name: {"ndcg@10": 0.5, "recall@10": 0.25}}},
            "per_user": {"3": {name: {"ndcg@10": [0.4, 0.6], "recall@10": [0.0, float("nan")]}}},
            "n_users": {"3": 2},
        },
    }


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda r: r.update(result=None), r"field 'result': expected an object, got None"),
        (lambda r: r.update(fit_s="abc"), r"field 'fit_s': expected seconds >= 0, got 'abc'"),
        (lambda r: r["result"]["summary"]["3"]["knn"].update({"ndcg@10": "x"}),
         r"field 'summary\.3\.knn\.ndcg@10': expected a finite number or null, got 'x'"),
        (lambda r: r["result"]["summary"]["3"]["knn"].update({"ndcg@10": 42.0}),
         r"field 'summary\.3\.knn\.ndcg@10': expected a number in \[0, 1\], got 42\.0"),
        (lambda r: r["result"]["per_user"]["3"]["knn"]["recall@10"].append(-1),
         r"field 'per_user\.3\.knn\.recall@10\[2\]': expected a number >= 0, got -1"),
        (lambda r: r["result"]["per_user"]["3"].update(als=r["result"]["per_user"]["3"]["knn"]),
         r"field 'per_user\.3': expected the figures of \['knn'\]"),
        (lambda r: r["result"].pop("n_users"), r"field 'n_users': expected an object, got None"),
    ],
)  # fmt: skip
def test_a_damaged_kept_model_record_is_fitted_again_with_a_word(
    tmp_path: Path, damage: Callable[[dict[str, Any]], Any], said: str
) -> None:
    """A kept record was merged as it was: a null result ended the resumed run in a
    traceback, an nDCG of 42 reached the report."""
    store = RunStore(tmp_path, "p2-x", {"seed": 0})
    store.start()
    store.save_model(None, 0, "knn", _model_record("knn"), None)
    path = store.dir / "split" / "00-knn" / "result.json"
    record = json.loads(path.read_text())
    kept = store.finished_model(None, 0, "knn", needed=False)  # as kept
    assert kept is not None and json.dumps(kept[0]) == json.dumps(record)
    damage(record)
    path.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match=said + r".*; fitting knn again"):
        assert (
            RunStore(tmp_path, "p2-x", {"seed": 0}).finished_model(None, 0, "knn", needed=False)
            is None
        )


def test_a_damaged_kept_fold_is_fitted_again_with_a_word(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "p2-x", {"seed": 0})
    store.start()
    fold = _fold_record()
    store.save(0, fold)
    store.save(1, {**fold, "timings": {"knn": None}})
    with pytest.warns(UserWarning, match=r"fold1\.json, field 'timings': .*; fitting fold 1 again"):
        done = RunStore(tmp_path, "p2-x", {"seed": 0}).finished()
    assert list(done) == [0]


@pytest.mark.slow
def test_a_resumed_run_gives_the_uninterrupted_figures(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metarec.models.ensemble import Ensemble
    from metarec.models.meta_model import MetaModel
    from metarec.peers.knn import ContentKNN
    from metarec.peers.popularity import Popularity

    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    options: dict[str, Any] = dict(
        root=str(shared_data), folds=2, peers=["popularity", "knn"], algorithms=["fomaml"],
        shots=[3], progress=False, plots=False,
        overrides=["encoder=tfidf", "epochs=1", "max_train_users=60", "inner_steps=1"],
    )  # fmt: skip
    whole = benchmark.run_benchmark("p2", "ml-100k", out=tmp_path / "whole", **options)

    fits: list[str] = []
    for cls in (Popularity, ContentKNN, MetaModel, Ensemble):

        def counted(self: Any, data: Any, _fit: Any = cls.fit) -> Any:
            fits.append(type(self).__name__)
            if fits.count("Ensemble") == 2:  # fold 1's blend, once its three models are kept
                raise KeyboardInterrupt
            return _fit(self, data)

        monkeypatch.setattr(cls, "fit", counted)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        benchmark.run_benchmark("p2", "ml-100k", out=out, **options)
    partial = out / ".p2-ml-100k-2fold.partial"
    assert (partial / "fold0.json").exists() and not (partial / "fold0").exists()
    kept = sorted(p.name for p in (partial / "fold1").iterdir())
    assert kept == ["00-popularity", "01-knn", "02-metarec-fomaml"]
    assert not (partial / "fold1" / "01-knn" / "model").exists()  # no member: figures only
    assert not (out / "p2-ml-100k-2fold.json").exists()
    first_leg = json.loads((partial / "elapsed.json").read_text())["seconds"]
    assert first_leg > 0

    del fits[:]
    started = time.perf_counter()
    resumed = benchmark.run_benchmark("p2", "ml-100k", out=out, **options)
    # the total counts the interrupted session too, not only the last one
    last_leg = time.perf_counter() - started
    assert first_leg + 0.5 * last_leg < resumed["timings"]["total_s"] <= first_leg + last_leg
    # fold 0 read whole; fold 1's models read (popularity and the metarec model as
    # fitted models, knn as figures), so only the blend's weights are learned again
    assert fits == ["Ensemble"]
    assert not partial.exists()
    for field in (
        "summary", "std", "per_fold", "significance", "ci95", "ensemble_weights", "configs"
    ):  # fmt: skip
        assert json.dumps(resumed[field], default=str) == json.dumps(whole[field], default=str)


def test_the_key_follows_the_data_and_takes_any_catalogue() -> None:
    import pandas as pd

    from metarec.data.schema import Dataset

    inter = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "rating": [4.0]})
    items = pd.DataFrame({"item_id": ["i"], "title": ["Heat"], "tags": [["crime", "la"]]})
    ds = Dataset("mine", inter, items, None, (1.0, 5.0), None)
    key = benchmark._run_key("p2", ds, splits=None, seed=0, shots=(1, 3))
    # what is stored and compared: the key as it reads back from JSON
    assert RunStore(Path("unused"), "x", key).key["shots"] == [1, 3]
    assert key["interactions"].startswith("1:")
    rerated = Dataset("mine", inter.assign(rating=5.0), items, None, (1.0, 5.0), None)
    assert benchmark._run_key("p2", rerated, splits=None, seed=0, shots=(1, 3)) != key
    # resumed at another thread count, a fold mixed models of both (softmax training
    # follows the thread count): another run
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert benchmark._run_key("p2", ds, splits=None, seed=0, shots=(1, 3)) != key
    finally:
        torch.set_num_threads(threads)
    # the same rows in another order are another run: ties in time follow the order (P2's
    # first K ratings), and the two orders' folds were mixed in one report
    two = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["i", "j"], "rating": [4.0, 2.0]})
    both = pd.DataFrame({"item_id": ["i", "j"], "title": ["Heat", "Ran"]})

    def ordered(frame: pd.DataFrame) -> dict[str, Any]:
        return benchmark._run_key("p2", Dataset("mine", frame, both), splits=None, seed=0)

    assert ordered(two)["interactions"] != ordered(two.iloc[::-1])["interactions"]
    assert ordered(two) == ordered(two.copy())
    # folds kept in an older form (no user_ids) are not pooled with newer ones, even
    # where no commit tells the two versions apart (an installed package)
    assert key["fold_format"] == benchmark.FOLD_FORMAT


def test_a_kept_fold_of_an_older_form_is_not_resumed(monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    from metarec.data.schema import Dataset

    inter = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "rating": [4.0]})
    ds = Dataset("mine", inter, pd.DataFrame({"item_id": ["i"], "title": ["Heat"]}))
    monkeypatch.setattr(benchmark, "git_commit", lambda: None)
    key = benchmark._run_key("p2", ds, splits=None, seed=0)
    monkeypatch.setattr(benchmark, "FOLD_FORMAT", benchmark.FOLD_FORMAT - 1)
    assert benchmark._run_key("p2", ds, splits=None, seed=0) != key


def test_the_key_follows_the_users_file() -> None:
    import pandas as pd

    from metarec.data.schema import Dataset

    inter = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "rating": [4.0]})
    items = pd.DataFrame({"item_id": ["i"], "title": ["Heat"]})
    users = pd.DataFrame({"user_id": ["u"], "age": [34]})

    def key(users: pd.DataFrame | None) -> dict[str, Any]:
        ds = Dataset("mine", inter, items, users, (1.0, 5.0), None)
        return benchmark._run_key("p2", ds, splits=None, seed=0)

    # the models read the users' features: a resumed run kept models fitted on the old
    assert key(users) != key(users.assign(age=35))
    assert key(users) != key(None)
    assert key(users) == key(users.copy())


# -- resuming on tiny data (seconds): a synthetic catalogue, two peers and the ridge ----
def _tiny() -> Any:
    import numpy as np
    import pandas as pd

    from metarec.data.schema import Dataset

    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"i{i}", float(rng.integers(1, 6)), t)
        for u in range(60)
        for t, i in enumerate(rng.choice(40, size=30, replace=False))
    ]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    titles = [f"film {i} {('crime', 'drama', 'comedy')[i % 3]}" for i in range(40)]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(40)], "title": titles})
    return Dataset("tiny", inter, items, None, (1.0, 5.0), None)


TINY_RUN: dict[str, Any] = dict(
    peers=["popularity", "bias"], algorithms=["episodic"], shots=[1, 3], plots=False,
    overrides=["encoder=tfidf"],
)  # fmt: skip


@pytest.fixture()
def stop_at_bias(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``stop_at_bias(n)``: the n-th fit of the bias peer from now on is interrupted
    (Ctrl-C), once popularity, fitted before it, has been kept."""
    from metarec.peers.bias import Bias

    fit = Bias.fit

    def arm(n: int) -> None:
        calls = [0]

        def interrupted(self: Any, data: Any) -> Any:
            calls[0] += 1
            if calls[0] == n:
                raise KeyboardInterrupt
            return fit(self, data)

        monkeypatch.setattr(Bias, "fit", interrupted)

    return arm


def _read_back(out: str) -> list[str]:
    """The models a run read from kept progress instead of fitting (its log)."""
    return [
        line.split("] ", 1)[1].split(":", 1)[0]
        for line in out.splitlines()
        if "fitted and evaluated by an earlier, stopped run" in line
    ]


@pytest.mark.slow
def test_a_resumed_p1_run_reads_back_a_model_that_predicts_no_ratings(
    shared_data: Path,
    tmp_path: Path,
    stop_at_bias: Callable[[int], None],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """P1's pooled states leave popularity out (it predicts no ratings): its kept record
    was refused as damaged, refitted, and the report said its files had been edited."""
    import warnings

    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    options: dict[str, Any] = dict(
        root=str(shared_data), peers=["popularity", "bias"], algorithms=["fomaml"], plots=False,
        overrides=["encoder=tfidf", "epochs=1", "max_train_users=60", "inner_steps=1"],
    )  # fmt: skip
    stop_at_bias(1)
    with pytest.raises(KeyboardInterrupt):
        benchmark.run_benchmark("p1", "ml-100k", out=tmp_path, **options)
    kept = json.loads(next(tmp_path.rglob("00-popularity/result.json")).read_text())
    assert kept["result"]["summary"]["item_cold_pooled"] == {}  # what was refused
    stop_at_bias(0)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*fitting .* again")
        result = benchmark.run_benchmark("p1", "ml-100k", out=tmp_path, **options)
    assert _read_back(capsys.readouterr().out) == ["popularity"]
    assert not [w for w in result.get("warnings", []) if "again" in w]


def test_a_split_file_edited_before_the_resume_refits_every_model(
    tmp_path: Path, stop_at_bias: Callable[[int], None], capsys: pytest.CaptureFixture[str]
) -> None:
    from metarec.evaluation.p2 import make_p2_split

    ds = _tiny()
    splits = tmp_path / "splits"
    split = make_p2_split(ds, seed=0)
    split.save(splits / "p2-tiny-split.json")
    stop_at_bias(1)
    with pytest.raises(KeyboardInterrupt):
        benchmark.run_benchmark("p2", ds, out=tmp_path / "out", splits=splits, **TINY_RUN)
    assert (tmp_path / "out" / ".p2-tiny.partial" / "split" / "00-popularity").is_dir()

    # still a sound split (every check passes), but another one: popularity's kept
    # figures are of the first
    moved = split.train_users[0]
    split.train_users = split.train_users[1:]
    split.validation_users = [*split.validation_users, moved]
    split.save(splits / "p2-tiny-split.json")
    stop_at_bias(0)
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"its splits differ"):
        benchmark.run_benchmark("p2", ds, out=tmp_path / "out", splits=splits, **TINY_RUN)
    assert _read_back(capsys.readouterr().out) == []
    written = json.loads((tmp_path / "out" / "p2-tiny-split.json").read_text())
    assert moved in written["validation_users"]


@pytest.mark.parametrize("folds", [1, 2])
def test_split_files_are_written_with_the_report_not_before(
    folds: int,
    tmp_path: Path,
    stop_at_bias: Callable[[int], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from metarec.evaluation.p2 import make_p2_split
    from metarec.evaluation.splits import split_file_name

    ds = _tiny()
    out = tmp_path / "out"
    fold_ids: list[int | None] = [None] if folds == 1 else list(range(folds))
    names = [split_file_name("p2", "tiny", f) for f in fold_ids]
    benchmark.run_benchmark("p2", ds, out=out, folds=folds, seed=0, **TINY_RUN)
    seed0 = {n: (out / n).read_bytes() for n in names}

    # seed 1, interrupted in its last fold: the folder still holds seed 0's report and
    # seed 0's split files, which --splits would read as that report's
    stop_at_bias(folds)
    with pytest.raises(KeyboardInterrupt) as stopped:
        benchmark.run_benchmark("p2", ds, out=out, folds=folds, seed=1, **TINY_RUN)
    # where its progress is, for the command to say (it said "OUT/.NAME.partial/")
    partial = out / (".p2-tiny-seed1" + (f"-{folds}fold" if folds > 1 else "") + ".partial")
    assert stopped.value.__notes__ == [f"kept in {partial}"] and partial.is_dir()
    seeded = [split_file_name("p2", "tiny-seed1", f) for f in fold_ids]
    assert not any((out / n).exists() for n in seeded)
    assert {n: (out / n).read_bytes() for n in names} == seed0
    stop_at_bias(0)
    capsys.readouterr()
    record = benchmark.run_benchmark("p2", ds, out=out, folds=folds, seed=1, **TINY_RUN)
    assert _read_back(capsys.readouterr().out) == ["popularity"]  # it did resume
    assert record["seed"] == 1
    # data made in Python: no CLI option names it ("--dataset tiny" was written)
    assert record["command"].endswith("name its files (--interactions, --items)")
    # beside seed 0's, under names of their own: seed 1's split files replaced seed 0's
    # while seed 0's report stayed
    assert {n: (out / n).read_bytes() for n in names} == seed0
    for fold, name in zip(fold_ids, seeded, strict=True):
        # a finished fold's split comes from the kept progress, the last one drawn again
        expected = tmp_path / "expected" / name
        make_p2_split(ds, seed=1, n_folds=folds if folds > 1 else None, fold=fold).save(expected)
        assert json.loads((out / name).read_text()) == json.loads(expected.read_text())


@pytest.mark.parametrize("resume", [True, False])
def test_a_refused_split_file_keeps_an_interrupted_runs_progress(
    resume: bool,
    tmp_path: Path,
    stop_at_bias: Callable[[int], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from metarec.errors import DataError
    from metarec.evaluation.p2 import make_p2_split

    ds = _tiny()
    out = tmp_path / "out"
    stop_at_bias(1)
    with pytest.raises(KeyboardInterrupt):
        benchmark.run_benchmark("p2", ds, out=out, **TINY_RUN)
    kept = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert Path(".p2-tiny.partial/split/00-popularity/result.json") in kept

    # the same report from a split file with a user in two groups: refused, and
    # the interrupted run's popularity is still there to resume with
    split = make_p2_split(ds, seed=0)
    split.validation_users = [*split.validation_users, split.test_users[0]]
    split.save(tmp_path / "bad" / "p2-tiny-split.json")
    with pytest.raises(DataError, match="share 1 users"):
        benchmark.run_benchmark(
            "p2", ds, out=out, splits=tmp_path / "bad", resume=resume, **TINY_RUN
        )
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == kept
    stop_at_bias(0)
    capsys.readouterr()
    benchmark.run_benchmark("p2", ds, out=out, **TINY_RUN)
    assert _read_back(capsys.readouterr().out) == ["popularity"]


def test_another_commands_progress_goes_only_once_this_one_keeps_something(
    tmp_path: Path,
) -> None:
    from contextlib import AbstractContextManager, nullcontext

    first = RunStore(tmp_path, "p2-x", {"seed": 0})
    first.start()
    first.save_model(None, 0, "knn", _model_record("knn"), None)
    kept = sorted(first.dir.rglob("*"))

    # refused (or stopped) before its first model: what the first command kept stays
    for resume in (True, False):
        other = RunStore(tmp_path, "p2-x", {"seed": 1})
        # said at once (not when it goes, a model later); --no-resume asked for it
        said: AbstractContextManager[Any] = (
            pytest.warns(UserWarning, match="not reused") if resume else nullcontext()
        )
        with said, pytest.raises(ValueError), other.session(resume=resume):
            raise ValueError("a bad input found late")
        assert sorted(first.dir.rglob("*")) == kept
    same = RunStore(tmp_path, "p2-x", {"seed": 0})
    with pytest.raises(KeyboardInterrupt), same.session(resume=False):
        raise KeyboardInterrupt
    assert same.finished_model(None, 0, "knn", needed=False) is None  # --no-resume: not read
    assert RunStore(tmp_path, "p2-x", {"seed": 0}).finished_model(None, 0, "knn", needed=False)

    # once it keeps a model of its own, the other's is gone
    other = RunStore(tmp_path, "p2-x", {"seed": 1})
    with pytest.warns(UserWarning, match="not reused") as said, other.session(resume=True):
        assert other.finished_model(None, 0, "knn", needed=False) is None
        other.save_model(None, 1, "als", _model_record("als"), None)
    # metarec's own: the CLI printed one said from contextlib as another library's
    assert {Path(w.filename).name for w in said} == {"run_store.py"}
    assert sorted(p.name for p in (other.dir / "split").iterdir()) == ["01-als"]
    assert json.loads((other.dir / "key.json").read_text()) == {"seed": 1}


def test_uncommitted_source_is_part_of_the_key_new_files_too(tmp_path: Path) -> None:
    # a benchmark resumed after an edit not yet committed took the earlier code's folds;
    # `git diff` alone misses a new module not yet added
    import importlib.util
    import shutil
    import subprocess

    from metarec.evaluation import machine

    package = tmp_path / "src" / "metarec"
    (package / "evaluation").mkdir(parents=True)
    shutil.copy(machine.__file__, package / "evaluation" / "machine.py")
    roles, parts = ("AUTHOR", "COMMITTER"), ("NAME", "EMAIL")
    who = {f"GIT_{role}_{part}": "t" for role in roles for part in parts}
    env = {**who, "HOME": str(tmp_path), "PATH": os.environ["PATH"]}

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    spec = importlib.util.spec_from_file_location("copied", package / "evaluation" / "machine.py")
    assert spec is not None and spec.loader is not None
    copied = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copied)
    assert copied.uncommitted_digest() is None  # committed: the commit says it all
    assert copied.git_commit() is not None
    (package / "newmod.py").write_text("X = 1\n")
    first = copied.uncommitted_digest()
    (package / "newmod.py").write_text("X = 2\n")
    second = copied.uncommitted_digest()
    assert None not in (first, second) and first != second
    git("add", ".")
    git("commit", "-q", "-m", "new module")
    assert copied.uncommitted_digest() is None
    (package / "evaluation" / "machine.py").write_text(
        (package / "evaluation" / "machine.py").read_text() + "\n# edited\n"
    )
    assert copied.uncommitted_digest() is not None


def test_a_run_from_python_on_files_writes_the_command_that_reads_them(
    tmp_path: Path,
) -> None:
    import shlex

    from metarec.cli import build_parser
    from metarec.cli.options import data_spec
    from metarec.data import clean, load_table

    tiny = _tiny()
    tiny.interactions.rename(columns={"user_id": "member"}).to_csv(tmp_path / "r.csv", index=False)
    tiny.items.to_csv(tmp_path / "films.csv", index=False)
    ds = clean(load_table(tmp_path / "r.csv", tmp_path / "films.csv", user_col="member"))
    record = benchmark.run_benchmark("p2", ds, out=tmp_path / "out", **TINY_RUN)
    words = shlex.split(record["command"])
    assert words[:2] == ["metarec", "benchmark"] and "#" not in words
    args = build_parser().parse_args(words[1:])
    assert data_spec(args)["interactions"] == str(tmp_path / "r.csv")
    assert args.user_col == "member" and args.rating_range == "1,5"


def test_a_run_that_would_replace_another_reports_split_file_is_refused(
    tmp_path: Path,
) -> None:
    # seed 1 read seed 0's split files (--splits falls back to them) and wrote them as
    # seed 1's, over the file seed 1's earlier report beside it was run on
    ds = _tiny()
    benchmark.run_benchmark("p2", ds, out=tmp_path / "zero", **TINY_RUN)
    mixed = tmp_path / "mixed"
    benchmark.run_benchmark("p2", ds, out=mixed, seed=1, **TINY_RUN)
    kept = (mixed / "p2-tiny-seed1-split.json").read_bytes()
    with pytest.raises(ConfigError, match=r"p2-tiny-seed1-split\.json: holds another split"):
        benchmark.run_benchmark(
            "p2", ds, out=mixed, seed=1, splits=tmp_path / "zero",
            **{**TINY_RUN, "peers": ["popularity"]},
        )  # fmt: skip
    assert (mixed / "p2-tiny-seed1-split.json").read_bytes() == kept
    # the same split again (the same command, or its own files read back) is no conflict
    benchmark.run_benchmark(
        "p2", ds, out=mixed, seed=1, splits=mixed, **{**TINY_RUN, "peers": ["popularity"]}
    )


def test_metarec_installed_inside_another_repository_records_no_commit(tmp_path: Path) -> None:
    # a .venv inside the user's own repository is in its work tree: the user's commit was
    # recorded as metarec's, and every commit of theirs threw away a benchmark's folds
    import importlib.util
    import shutil
    import subprocess

    from metarec.evaluation import machine

    installed = tmp_path / ".venv" / "site-packages" / "metarec" / "evaluation"
    installed.mkdir(parents=True)
    shutil.copy(machine.__file__, installed / "machine.py")
    (tmp_path / ".gitignore").write_text(".venv/\n")
    (tmp_path / "app.py").write_text("print('theirs')\n")
    roles, parts = ("AUTHOR", "COMMITTER"), ("NAME", "EMAIL")
    env = {**{f"GIT_{r}_{p}": "t" for r in roles for p in parts}, "HOME": str(tmp_path),
           "PATH": os.environ["PATH"]}  # fmt: skip
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "their project"]):
        subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("installed", installed / "machine.py")
    assert spec is not None and spec.loader is not None
    copied = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copied)
    assert copied.git_commit() is None
    assert copied.uncommitted_digest() is None


def test_the_key_names_the_encoders_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared_data: Path
) -> None:
    """A model folder retrained under the same `--set encoder=PATH` resumed the folds
    of the old weights, and the record then named the new ones for all of them."""
    from metarec.encoders import SentenceEncoder

    keys: list[dict[str, Any]] = []

    class Stop(Exception):
        pass

    def capture(out: Path, name: str, key: dict[str, Any]) -> None:
        keys.append(key)
        raise Stop

    monkeypatch.setattr(benchmark, "RunStore", capture)
    for encoder in ("minilm", "tfidf"):
        with pytest.raises(Stop):
            benchmark.run_benchmark("p2", "ml-100k", root=str(shared_data), out=tmp_path,
                                    peers=["popularity"], algorithms=["episodic"],
                                    overrides=[f"encoder={encoder}"], progress=False)  # fmt: skip
    assert keys[0]["encoder"] == SentenceEncoder().id  # the bundled weights' digest
    assert keys[1]["encoder"] is None  # a TF-IDF fit follows from the data in the key


def test_a_records_warnings_are_metarecs_and_the_callers_not_other_libraries() -> None:
    import warnings

    from metarec.evaluation.benchmark import _noting_warnings

    kept: list[str] = []
    with warnings.catch_warnings(record=True) as shown, _noting_warnings(kept):
        warnings.simplefilter("always")
        places = ["/venv/lib/site-packages/torch/nn/x.py", "/venv/lib/site-packages/metarec/a.py"]
        places += ["/work/src/metarec/models/base.py", "/home/me/script.py"]
        # a checkout named metarec with its venv inside, and Debian's system packages:
        # both were kept as metarec's or the caller's
        places += ["/home/me/metarec/.venv/lib/python3.11/site-packages/torch/nn/x.py",
                   "/usr/lib/python3/dist-packages/matplotlib/x.py",
                   "/usr/lib/python3/dist-packages/metarec/b.py"]  # fmt: skip
        for where in places:
            warnings.warn_explicit(f"from {where}", UserWarning, where, 1)
        warnings.warn_explicit("old", DeprecationWarning, "/work/src/metarec/x.py", 1)
    assert kept == [
        "from /venv/lib/site-packages/metarec/a.py",
        "from /work/src/metarec/models/base.py",
        "from /home/me/script.py",
        "from /usr/lib/python3/dist-packages/metarec/b.py",
    ]
    assert len(shown) == 8  # every one still shown


def test_a_cross_validations_warnings_name_their_folds_once_each() -> None:
    """A fold's warning did not say which fold's tables it concerned; kept once a fold,
    the report says it once, naming the folds."""
    import warnings

    from metarec.evaluation.benchmark import _fold_scope, _noting_warnings
    from metarec.evaluation.report import _warning_lines

    kept: list[str] = []
    fold: list[int | None] = [None]
    # the default filters, as a run has them: a line's warning is said once, and folds
    # after the first went unnamed
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        warnings.showwarning = lambda *args, **kwargs: None  # not on the test's stderr
        with _noting_warnings(kept, lambda: fold[0]):
            warnings.warn("encoding", UserWarning, stacklevel=1)  # before any fold
            for fold[0] in (0, 1, 2, 3):
                with _fold_scope():
                    warnings.warn("too few test users", UserWarning, stacklevel=1)
                    if fold[0] == 2:
                        warnings.warn("cuts not fitted", UserWarning, stacklevel=1)
    assert kept == [
        "encoding",
        "fold 0: too few test users",
        "fold 1: too few test users",
        "fold 2: too few test users",
        "fold 2: cuts not fitted",
        "fold 3: too few test users",
    ]
    assert _warning_lines({"warnings": kept}) == [
        "**Warnings while it ran.**",
        "",
        "- encoding",
        "- folds 0, 1, 2 and 3: too few test users",
        "- fold 2: cuts not fitted",
        "",
    ]

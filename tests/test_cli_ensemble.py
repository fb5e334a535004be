"""``metarec ensemble``, then ``metarec recommend`` on the folder it writes; bad folders;
the loaded ensemble's Python API, which is a single run's.

One small run (tfidf, one epoch, P1 split as ``metarec train`` saves it) is
blended with peers fitted on its training users; ~20 s on 2 cores, so the
tests that build it are marked slow.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.cli import main
from metarec.config import TrainConfig
from metarec.data import clean, load_dataset
from metarec.evaluation.p1 import make_p1_split
from metarec.pipeline import encode_catalogue, fit_recommender
from metarec.recommender import Recommender


@pytest.fixture(scope="module")
def run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as `metarec train` writes it: model, split.json, data reference."""
    ds = load_dataset("ml-100k", root=shared_data)
    root = tmp_path_factory.mktemp("runs")
    split = make_p1_split(ds, seed=0)
    catalogue = encode_catalogue(ds.items, "tfidf", cache_dir=root / "emb", progress=False)
    cfg = TrainConfig(epochs=1, max_train_users=100, inner_steps=1, seed=0, device="cpu")
    spec = {"dataset": "ml-100k", "data": str(shared_data)}
    rec, _ = fit_recommender(
        catalogue,
        split.frames["train"],
        cfg,
        users=ds.users,
        validation=split.frames["validation"],
        progress=False,
        metadata={"dataset": ds.name, "data_spec": spec, "holdout": "p1"},
    )
    rec.save(root / "fomaml-run")
    split.save(root / "fomaml-run" / "split.json")
    return root / "fomaml-run"


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("metarec: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.slow
def test_ensemble_then_recommend(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ens = tmp_path / "my ens"
    args = ["ensemble", str(run), "--peers", "popularity,bias", "--buckets", "0,1,5"]
    assert main([*args, "--out", str(ens)]) == 0
    out = capsys.readouterr().out
    assert "K>=0" in out and "K>=5" in out and "popularity" in out and "fomaml-run" in out
    assert f"try: metarec recommend '{ens}' --rate" in out  # a pasteable path
    manifest = json.loads((ens / "ensemble.json").read_text())
    assert [m["kind"] for m in manifest["members"]] == ["metarec", "popularity", "bias"]
    assert manifest["metadata"]["runs"] == [str(run.resolve())]

    # the installed command, in its own process, as a user runs it
    proc = subprocess.run(
        [sys.executable, "-m", "metarec.cli", "recommend", str(ens), "--rate",
         "Toy Story (1995)=5", "--rate", "Heat (1995)=2", "-k", "5", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    top = json.loads(proc.stdout)
    assert [r["rank"] for r in top] == [1, 2, 3, 4, 5]
    assert not {"Toy Story (1995)", "Heat (1995)"} & {r["title"] for r in top}
    assert all(r["reason"] for r in top)

    # the same input errors as for a single run
    assert main(["recommend", str(ens), "--rate", "Toy Story (1995)=9"]) == 2
    assert "outside [1, 5]" in _error_line(capsys.readouterr().err)

    # report shows its members and weights; evaluate says what to do instead
    assert main(["report", str(ens)]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"# Ensemble {ens}") and "| 5+ |" in shown and "bias" in shown
    # with the users each bucket's weights rest on, as `metarec ensemble` printed them
    saved = json.loads((ens / "ensemble.json").read_text())
    counts = saved["bucket_users"]
    assert "| support size | fomaml-run | popularity | bias | users |" in shown
    first = next(line for line in shown.splitlines() if line.startswith("| 0+ |"))
    assert first.endswith(f"| {counts[0]} |")
    assert main(["evaluate", str(ens)]) == 2
    assert "an ensemble folder; evaluate scores a single run" in _error_line(
        capsys.readouterr().err
    )

    # items added in Python, saved, loaded again (the bias peer's counts grew with it)
    import pandas as pd

    from metarec.ensemble_run import load_run

    rec = load_run(ens, device="cpu")
    rec.add_items(pd.DataFrame({"item_id": ["new1"], "title": ["Space Robots (2024)"]}))
    rec.save(tmp_path / "grown")  # a run and an ensemble save alike
    again = load_run(tmp_path / "grown", device="cpu")
    assert again.n_items == rec.n_items and "new1" in again.item_index

    # a peer's arrays in a dtype no peer saves: numpy's TypeError, a traceback
    from metarec.io import load_tensors, save_tensors
    from metarec.models.persist import PEER_FILE

    peer = next((ens / "members").glob(f"*/{PEER_FILE}"))
    kept = load_tensors(peer)
    save_tensors(peer, {k: v.to(torch.bfloat16) if v.is_floating_point() else v
                        for k, v in kept.items()})  # fmt: skip
    assert main(["recommend", str(ens)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert PEER_FILE in line and "is bfloat16, saved as float" in line
    save_tensors(peer, kept)

    # a corrupt manifest: one line naming file and field
    manifest["members"][1]["kind"] = "als"
    (ens / "ensemble.json").write_text(json.dumps(manifest))
    assert main(["recommend", str(ens)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "ensemble.json" in line and "members[1].kind" in line


@pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows")
def test_an_ensemble_waits_for_no_one_writing_its_out(
    run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    held_lock: Callable[[Path], int],
) -> None:
    # two blends into one --out both said "saved", and one of them was lost
    out = tmp_path / "ens"
    pid = held_lock(out)
    assert main(["ensemble", str(run), "--peers", "popularity", "--out", str(out)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"process {pid} is writing it" in line and "another --out" in line
    assert not (out / "ensemble.json").exists()


def test_a_member_given_twice_is_refused_in_python_before_any_loading(
    tmp_path: Path, shared_data: Path
) -> None:
    from metarec.ensemble_run import fit_from_runs
    from metarec.errors import ConfigError, DataError

    # no run folder or data set is read: the check comes first
    with pytest.raises(ConfigError, match=r"run .* given twice"):
        fit_from_runs([tmp_path / "a", tmp_path / "x" / ".." / "a"], None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="peer knn given twice"):
        fit_from_runs([tmp_path / "a"], None, peers=["knn", "bias", "knn"])  # type: ignore[arg-type]
    # one folder or peer as text was read letter by letter ("run / given twice")
    with pytest.raises(ConfigError, match=r"runs: expected a list, got '/runs/a'; write"):
        fit_from_runs("/runs/a", None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"peers: expected a list, got 'popularity'"):
        fit_from_runs(["/runs/a"], None, peers="popularity")  # type: ignore[arg-type]
    # refused before the runs load and the peers fit (minutes, with knn or stacked)
    with pytest.raises(DataError, match="dataset: expected a metarec Dataset"):
        fit_from_runs([str(tmp_path / "a")], None)  # type: ignore[arg-type]
    ds = load_dataset("ml-100k", root=shared_data)
    with pytest.raises(ConfigError, match="seed"):
        fit_from_runs([str(tmp_path / "a")], ds, seed=-1)
    # on clicks the bias model scores every item alike: its weight table said 0.9 of the
    # blend where the blend ranked as the runs alone
    clicks = clean(replace(ds, interactions=ds.interactions.assign(rating=1.0),
                           rating_range=(1.0, 1.0)))  # fmt: skip
    with pytest.raises(ConfigError, match="peers: bias cannot tell one item from another "
                                          "here: every rating is 1"):  # fmt: skip
        fit_from_runs([str(tmp_path / "a")], clicks, peers=["popularity", "bias"])


def test_fit_from_runs_names_an_unknown_peer_and_a_log_it_cannot_call(tmp_path: Path) -> None:
    """A typo was told it "cannot be saved in an ensemble", as if it were a peer; a log
    that is not a function was a raw TypeError once the runs had loaded."""
    from metarec.ensemble_run import fit_from_runs
    from metarec.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        fit_from_runs([tmp_path / "a"], None, peers=["popularity", "nope"])  # type: ignore[arg-type]
    assert str(err.value) == (
        "peers: unknown ['nope']; known peers for an ensemble: popularity, bias, knn, "
        "episodic, stacked"
    )
    with pytest.raises(ConfigError, match=r"^peers: expected a list, got None"):
        fit_from_runs([tmp_path / "a"], None, peers=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^log: expected a function .* or None, got 3"):
        fit_from_runs([tmp_path / "a"], None, log=3)  # type: ignore[arg-type]


@pytest.mark.slow
def test_evaluate_writes_strict_json(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a metric no user could give is NaN; metrics.json held it as a bare NaN token,
    # which strict JSON readers refuse
    import shutil

    import metarec.evaluation.p1 as p1

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    nan = float("nan")
    metrics = ("mae", "rmse", "ndcg@3", "precision@5", "mrr@5", "recall@5")
    monkeypatch.setattr(
        p1,
        "evaluate_p1",
        lambda *a, **k: {
            "n_users": {"user_cold": 3},
            "summary": {"user_cold": {"bias": dict.fromkeys(metrics, nan)}},
        },
    )
    assert main(["evaluate", str(copy)]) == 0

    def refuse(token: str) -> None:
        raise AssertionError(f"metrics.json holds {token}")

    written = json.loads((copy / "metrics.json").read_text(), parse_constant=refuse)
    assert written["summary"]["user_cold"]["bias"]["recall@5"] is None


def test_ensemble_refuses_a_runs_damaged_data_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the data is loaded from the first run's recorded spec before the runs are: a
    # spec edited to a name was an AttributeError, metadata edited to a list another
    run = tmp_path / "run"
    run.mkdir()
    for metadata, needle in [
        ({"data_spec": "ml-100k"}, "metadata.data_spec: expected an object, got 'ml-100k'"),
        ([1], "metadata: expected an object, got [1]"),
    ]:
        (run / "recommender.json").write_text(json.dumps({"metadata": metadata}))
        assert main(["ensemble", str(run), "--out", str(tmp_path / "ens")]) == 2
        line = _error_line(capsys.readouterr().err)
        assert f"{run / 'recommender.json'}: {needle}" in line, line
    assert not (tmp_path / "ens").exists()


@pytest.mark.slow
def test_ensemble_refuses_unsaveable_peers_before_work(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ens"
    assert main(["ensemble", str(run), "--peers", "als", "--out", str(out)]) == 2
    assert "--peers: ['als'] cannot be saved" in _error_line(capsys.readouterr().err)
    from metarec.ensemble_run import fit_from_runs
    from metarec.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^peers: \['als'\] cannot be saved"):
        fit_from_runs([run], None, peers=["als"])  # type: ignore[arg-type]
    assert main(["ensemble", str(run), "--peers", "popularity,nope", "--out", str(out)]) == 2
    assert "--peers: unknown ['nope']; known peers for an ensemble: popularity," in (
        _error_line(capsys.readouterr().err)
    )
    # refused once the data had loaded, naming no flag
    rating = ["ensemble", str(run), "--mode", "rating", "--out", str(out)]
    assert main([*rating, "--peers", "bias,popularity"]) == 2
    assert (
        "--peers bias,popularity: --mode rating blends predicted ratings, and of the "
        "peers only bias predicts them, not popularity" in _error_line(capsys.readouterr().err)
    )
    # one member alone was saved as an "ensemble" of weight 1 and served as a blend
    assert main(["ensemble", str(run), "--peers", "", "--out", str(out)]) == 2
    assert "a blend needs at least two members" in _error_line(capsys.readouterr().err)
    assert not out.exists()
    assert main(["ensemble", str(run), "--max-items", "0", "--out", str(out)]) == 2
    assert "--max-items: must be >= 1, got 0" in _error_line(capsys.readouterr().err)
    assert main(["ensemble", str(run), "--max-episodes", "-1", "--out", str(out)]) == 2
    assert "--max-episodes: must be >= 1, got -1" in _error_line(capsys.readouterr().err)
    # taken without a word where no peer reads them
    assert main(["ensemble", str(run), "--max-items", "10", "--out", str(out)]) == 2
    assert (
        "--max-items: applies to the peers episodic and stacked, which --peers "
        "(popularity) does not name" in _error_line(capsys.readouterr().err)
    )
    episodic = ["--peers", "episodic", "--max-episodes", "5"]
    assert main(["ensemble", str(run), *episodic, "--out", str(out)]) == 2
    assert "--max-episodes: applies to the peers stacked" in _error_line(capsys.readouterr().err)
    # a typo is named as one before the checks that read the peers' kinds
    assert main([*rating, "--peers", "bais"]) == 2
    assert "--peers: unknown ['bais']; known peers" in _error_line(capsys.readouterr().err)
    assert (
        main(["ensemble", str(run), "--peers", "nope", "--max-items", "5", "--out", str(out)]) == 2
    )
    assert "--peers: unknown ['nope']" in _error_line(capsys.readouterr().err)
    assert not out.exists()
    # the same member twice (one run by two spellings, a peer listed twice)
    assert main(["ensemble", str(run), str(run / ".." / run.name), "--out", str(out)]) == 2
    assert f"run {run.resolve()} given twice" in _error_line(capsys.readouterr().err)
    # or a copy of it (cp -r): the two split one model's weight between them
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["ensemble", str(run), str(copy), "--out", str(out)]) == 2
    assert f"run {copy} holds the same model as {run} (a copy?); give each once" in (
        _error_line(capsys.readouterr().err)
    )
    assert main(["ensemble", str(run), "--peers", "bias,bias", "--out", str(out)]) == 2
    assert "--peers: 'bias' given twice" in _error_line(capsys.readouterr().err)
    # taken for "no peers" and the default buckets without a word
    assert main(["ensemble", str(run), "--peers", ",", "--out", str(out)]) == 2
    assert "--peers: expected comma-separated names" in _error_line(capsys.readouterr().err)
    assert main(["ensemble", str(run), "--buckets", "", "--out", str(out)]) == 2
    assert "--buckets: expected comma-separated integers" in _error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.slow
def test_serve_names_the_flag_a_bad_setting_came_from(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for flag, value in (("--max-batch", "-1"), ("--torch-threads", "0"), ("--cache-size", "0")):
        assert main(["serve", str(run), flag, value]) == 2
        assert f"{flag}: must be a whole number > 0, got {value}" in _error_line(
            capsys.readouterr().err
        )


@pytest.mark.parametrize("command", ["recommend", "serve", "ensemble"])
def test_folders_that_are_neither_run_nor_ensemble(
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # serve must not create its database for a bad folder
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    extra = ["--out", str(tmp_path / "o")] if command == "ensemble" else []
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "unfinished" / "checkpoint").mkdir(parents=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "odd" / "recommender.json").mkdir(parents=True)
    (tmp_path / "odd" / "checkpoint").mkdir()
    cases = {
        "missing": "no such file or directory",
        "empty": "neither a metarec run",
        "file.txt": "not a directory",
        # both were "no such file or directory", beside a link ls shows
        "loop": "a symbolic link that points back to itself (a loop)",
        "dangling": f"a symbolic link to {tmp_path / 'gone'}, which does not exist",
        "unfinished": "an unfinished training run (its checkpoint/ is here, no model yet)",
        # told it was an unfinished run
        "odd": "recommender.json: is not a file; a run's manifest is a JSON file",
    }
    for name, needle in cases.items():
        assert main([command, str(tmp_path / name), *extra]) == 2
        assert needle in _error_line(capsys.readouterr().err)
    left = ["dangling", "empty", "file.txt", "loop", "odd", "unfinished"]
    assert sorted(p.name for p in tmp_path.iterdir()) == left


@pytest.mark.slow
def test_abtest_takes_an_ensemble_as_an_arm(
    run: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ens = tmp_path / "ens"
    assert main(["ensemble", str(run), "--peers", "popularity", "--out", str(ens)]) == 0
    capsys.readouterr()
    users = str(run / "split.json")
    data = ["--dataset", "ml-100k", "--root", str(shared_data)]
    assert main(["abtest", str(run), str(ens), *data, "--users", users, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    new_users = json.loads((run / "split.json").read_text())["new_users"]
    inter = report["interleave"]
    assert report["users"] == len(new_users)
    assert inter["wins_a"] + inter["wins_b"] + inter["ties"] == len(new_users)
    # the same seeded arms with the run in both: arm A is unchanged, arm B was the blend
    assert main(["abtest", str(run), str(run), *data, "--users", users, "--json"]) == 0
    same = json.loads(capsys.readouterr().out)["replay"]["arms"]
    arms = report["replay"]["arms"]
    assert arms["A"] == same["A"]
    assert arms["B"]["users"] == same["B"]["users"]
    assert arms["B"]["hits_per_k"] != same["B"]["hits_per_k"]


@pytest.mark.slow
def test_a_rating_ensemble_is_anchored_on_the_bias_model_by_default(
    run: Path, tmp_path: Path
) -> None:
    # the default anchor, popularity, predicts no rating: --mode rating always failed
    ens = tmp_path / "ens"
    args = ["ensemble", str(run), "--mode", "rating", "--buckets", "0,5", "--out", str(ens)]
    assert main(args) == 0
    manifest = json.loads((ens / "ensemble.json").read_text())
    assert [m["kind"] for m in manifest["members"]] == ["metarec", "bias"]


def test_ensemble_carries_a_ranking_model(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """metarec's episodic model joins like a peer (here on the 800 most rated items
    only), is saved in the folder, and serves."""
    ens = tmp_path / "ens"
    args = ["ensemble", str(run), "--peers", "popularity,episodic", "--buckets", "0,1,5"]
    assert main([*args, "--max-items", "800", "--out", str(ens)]) == 0
    manifest = json.loads((ens / "ensemble.json").read_text())
    assert [m["kind"] for m in manifest["members"]] == ["metarec", "popularity", "episodic"]
    assert manifest["members"][2]["options"]["max_items"] == 800
    capsys.readouterr()
    assert main(["recommend", str(ens), "--rate", "Toy Story (1995)=5", "-k", "3", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)
    assert len(top) == 3 and "Toy Story (1995)" not in {r["title"] for r in top}
    # a ranking model cannot blend ratings: refused before any fitting
    out = tmp_path / "rating"
    assert (
        main(["ensemble", str(run), "--peers", "episodic", "--mode", "rating", "--out", str(out)])
        == 2
    )
    assert "rating" in _error_line(capsys.readouterr().err)
    assert not out.exists()


def test_runs_with_different_encoders_are_not_one_ensemble() -> None:
    """An item added later is encoded once, by the first run's encoder, for every
    member: a second encoder's members got vectors of another model (or width)."""
    from metarec.models.members import same_encoder

    minilm = {"id": "sentence:all-MiniLM-L6-v2@0123456789ab:max128"}
    assert same_encoder(minilm, dict(minilm))
    assert same_encoder(minilm, {"id": "sentence:all-MiniLM-L6-v2:max128"})  # saved before ids
    assert not same_encoder(minilm, {"id": "tfidf-svd:d64:abc"})
    assert not same_encoder(minilm, {"id": "sentence:all-MiniLM-L6-v2@0123456789ab:max64"})


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"scores": np.ones((4, 3))}, "'scores' has 2 dimensions, expected 1"),
        ({"scores": np.full(4, float("nan"))}, "'scores' holds NaN"),
    ],
)
def test_a_damaged_peer_array_is_refused_by_name(arrays: dict[str, object], needle: str) -> None:
    from metarec.errors import ModelError
    from metarec.models.persist import _peer_from_state

    with pytest.raises(ModelError, match=needle):
        _peer_from_state("popularity", 0, {}, {}, arrays, 4, "ens/members[1]")  # type: ignore[arg-type]


@pytest.mark.slow
def test_runs_of_several_seeds_with_one_split_seed_blend(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A seed bag from the command line: without --split-seed each run held out the
    users its own seed drew, and the ensemble refused them."""
    tiny = ["--set", "encoder=tfidf", "--set", "epochs=1", "--set", "max_train_users=60",
            "--set", "inner_steps=1", "--quiet", "--holdout", "none"]  # fmt: skip
    data = ["--dataset", "ml-100k", "--data", str(shared_data)]
    for s in (1, 2):
        out = str(tmp_path / f"seed{s}")
        assert main(["train", *data, "--out", out, *tiny, "--set", f"seed={s}",
                     "--split-seed", "0"]) == 0  # fmt: skip
    runs = [str(tmp_path / "seed1"), str(tmp_path / "seed2")]
    assert main(["ensemble", *runs, "--peers", "popularity", "--out", str(tmp_path / "bag")]) == 0
    # "--config OLD_RUN/config.json trains a run again": a bag member came back on its
    # own seed's split (a plain seed=1 run), its holdout and split seed not carried
    capsys.readouterr()
    config = str(tmp_path / "seed1" / "config.json")
    again = tmp_path / "again"
    assert main(["train", *data, "--out", str(again), "--config", config, "--quiet"]) == 0
    assert "holdout none, split seed 0 (--holdout and --split-seed" in capsys.readouterr().out
    model = "model.safetensors"
    assert (again / model).read_bytes() == (tmp_path / "seed1" / model).read_bytes()
    # a split seed given: only what was taken from the run is said to be its
    assert main(["train", *data, "--out", str(tmp_path / "again5"), "--config", config,
                 "--split-seed", "5", "--quiet"]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "drew it: holdout none (--holdout" in said and "split seed 5" not in said, said
    assert main(["train", *data, "--out", str(tmp_path / "seed3"), *tiny, "--set", "seed=3"]) == 0
    capsys.readouterr()
    other = [runs[0], str(tmp_path / "seed3")]
    assert main(["ensemble", *other, "--peers", "popularity", "--out", str(tmp_path / "x")]) == 2
    assert "--split-seed" in _error_line(capsys.readouterr().err)


# -- the Python API of a loaded ensemble: what a single run's Recommender offers ------
@pytest.fixture(scope="module")
def ens_dir(run: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small run blended with popularity, saved."""
    from metarec.ensemble_run import fit_from_runs

    ds = load_dataset("ml-100k", root=shared_data)
    ens = fit_from_runs([run], ds, peers=["popularity"], buckets=(0, 1, 5), log=lambda _: None)
    return ens.save(tmp_path_factory.mktemp("ens") / "ens")


@pytest.mark.slow
def test_fit_from_runs_with_log_none_prints_nothing(
    run: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarec.ensemble_run import fit_from_runs

    ds = load_dataset("ml-100k", root=shared_data)
    ens = fit_from_runs([run], ds, peers=["popularity"], buckets=(0,), log=None)  # TypeError
    assert list(ens.members) == [run.name, "popularity"]
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_an_ensemble_scores_only_the_users_it_adapted(ens_dir: Path) -> None:
    """Two loads of one ensemble given different new items have catalogues of one size:
    the other's state was scored as its own, its seen index hiding the wrong item."""
    import pandas as pd

    from metarec.ensemble_run import load_run
    from metarec.errors import DataError

    a, b, fresh = (load_run(ens_dir, device="cpu") for _ in range(3))
    a.add_items(pd.DataFrame({"item_id": ["n1"], "title": ["Space Robots (2024)"]}))
    b.add_items(pd.DataFrame({"item_id": ["n2"], "title": ["Garden Ghosts (2024)"]}))
    user = a.adapt([("n1", 5.0)])
    for other in (b, fresh):  # fresh: a catalogue one item short of the state's
        with pytest.raises(DataError, match=r"^user: this state was adapted by another model"):
            other.score(user)
        with pytest.raises(DataError, match="adapted by another model"):
            other.recommend(user, k=3)
    scores = a.score(user)
    scores[:] = 0.0  # the caller's copy: the state keeps what it was adapted to
    assert np.count_nonzero(a.score(user)) > 0
    assert "n1" not in a.recommend(user, k=5)["item_id"].tolist()


@pytest.mark.slow
def test_an_ensemble_offers_a_runs_python_api(ens_dir: Path, tmp_path: Path) -> None:
    """Each method a Recommender has is blended, taken from the primary member, or
    refused with the reason; never an AttributeError."""
    import pandas as pd

    from metarec.data.tasks import Task
    from metarec.ensemble_run import EnsembleRecommender, load_run
    from metarec.errors import ConfigError, DataError, ModelError, UnsupportedError

    rec = load_run(ens_dir, device="cpu")
    assert isinstance(rec, EnsembleRecommender)
    ids = rec.items["item_id"].tolist()
    support, ratings = np.array([0, 1]), np.array([5.0, 3.0], dtype=np.float32)
    task = Task(0, support, ratings, np.array([2, 3]), np.array([4.0, 4.0], dtype=np.float32))

    # the blend over tasks is the blend over an adapted user
    scores = rec.score_catalogue([task])
    assert scores.shape == (1, rec.n_items)
    np.testing.assert_allclose(scores[0], rec.score(rec.adapt([(ids[0], 5.0), (ids[1], 3.0)])))
    assert rec.score_catalogue([]).shape == (0, rec.n_items)
    # a feature value `adapt` refuses is refused by adapt_many too, naming the user, not
    # coded "unknown" without a word
    with pytest.raises(DataError, match=r"user_features\[1\]: age"):
        rec.adapt_many([[(ids[0], 5.0)], [(ids[1], 4.0)]], [None, {"age": "old"}])
    [pred] = rec.predict_tasks([task])
    np.testing.assert_allclose(pred, scores[0, [2, 3]], rtol=1e-6)
    chunked = rec.predict_tasks([task] * 3, batch_size=2)
    assert len(chunked) == 3 and all(np.allclose(p, pred) for p in chunked)
    users = pd.DataFrame({"user_id": ["x"], "age": [30], "gender": ["F"]})
    assert rec.score_catalogue([task], users).shape == (1, rec.n_items)
    with pytest.raises(UnsupportedError, match="users: an ensemble's members read user"):
        rec.predict_tasks([task], np.zeros((1, 3), dtype=np.int64))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="users: expected a DataFrame with a user_id column"):
        rec.score_catalogue([task], users.drop(columns="user_id"))
    with pytest.raises(ConfigError, match="batch_size: must be a whole number >= 1, got 0"):
        rec.predict_tasks([task], batch_size=0)
    with pytest.raises(DataError, match="task 0: support item 5000 is not in"):
        rec.score_catalogue([Task.support_only([5000], [5.0])])

    # from the primary member
    assert rec.features is rec.primary.features
    new = pd.DataFrame({"item_id": ["n1"], "title": ["Space Robots (2024)"]})
    assert rec.prepare_items(new)["text"].str.strip().ne("").all()
    with pytest.raises(DataError, match="already in the catalogue"):
        rec.prepare_items(pd.DataFrame({"item_id": [ids[0]], "title": ["X"]}))

    # refused, saying why and what to do instead (as the service's fold-in does)
    with pytest.raises(UnsupportedError, match="fold-in corrects one run's item biases"):
        rec.fold_in_items(pd.DataFrame({"user_id": ["a"], "item_id": ["1"], "rating": [5]}))
    with pytest.raises(UnsupportedError, match="fold-in"):  # a run's call: not a TypeError
        rec.fold_in_items(pd.DataFrame(), keep_unrated=True)

    # saved as `metarec ensemble` saves it, items added since included
    rec.add_items(new)
    history = [("n1", 5.0), (ids[0], 4.0)]
    saved = rec.save(tmp_path / "copy")
    again = EnsembleRecommender.load(saved, device="cpu")
    assert again.n_items == rec.n_items and again.metadata == rec.metadata
    np.testing.assert_allclose(again.score(again.adapt(history)), rec.score(rec.adapt(history)))
    with pytest.raises(ModelError, match="is not an ensemble folder; not replacing it"):
        rec.save(ens_dir.parent)  # a folder of other things is never replaced
    with pytest.raises(ConfigError, match="directory: expected a folder's path"):
        rec.save(None)  # type: ignore[arg-type]


@pytest.mark.slow
def test_retrain_of_an_ensemble_refits_it_on_the_feedback_and_judges_it(
    ens_dir: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The feedback loop of a served ensemble: retrain told users to retrain each member
    run and blend them again, which `metarec ensemble` refuses (a retrained run trained
    on feedback no data file holds). It retrains the ensemble as a whole: every member
    and the weights, on the data plus the store's feedback, judged on the P1 split's new
    users, which no member trained or weighed on."""
    from metarec.ensemble_run import EnsembleRecommender, load_run
    from metarec.service.store import FeedbackStore, NewEvent

    db = f"sqlite:///{tmp_path / 'fb.db'}"
    store = FeedbackStore(db)
    store.create_user("fan", {}, [NewEvent(f"e{i}", item, "rating", 5.0, 1.0)
                                  for i, item in enumerate(("1", "50", "100"))])  # fmt: skip
    store.close()
    out = tmp_path / "ens2"
    argv = ["retrain", str(ens_dir), "--db", db, "--out", str(out), "--force", "--quiet"]
    # stopped after its member trained: the rerun takes the member from its checkpoint
    from metarec.meta.trainer import Trainer
    from metarec.models.ensemble import Ensemble

    with pytest.MonkeyPatch.context() as mp:
        real_fit, epochs = Ensemble.fit, []
        mp.setattr(Ensemble, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        assert main(argv) == 130
        checkpoints = tmp_path / ".ens2.retrain-checkpoint"
        assert (checkpoints / "0" / "checkpoint.json").exists()  # the member's place
        mp.setattr(Ensemble, "fit", real_fit)
        real_epoch = Trainer.train_epoch
        mp.setattr(Trainer, "train_epoch", lambda *a: epochs.append(a[2]) or real_epoch(*a))
        assert main(argv) == 0
    assert epochs == [] and not checkpoints.exists()
    said = capsys.readouterr().out
    assert "resumed fomaml-run after epoch 1" in said
    # a ranking blend's scores are no ratings: judged by 1 - nDCG@3, not MAE
    assert re.search(r"held-out users: [1-9]\d*; 1 - nDCG@3 old 0\.\d+, new 0\.\d+", said)
    assert "feedback: 3 ratings from 1 user" in said and "1 users" not in said
    new = load_run(out)
    old = load_run(ens_dir)
    assert isinstance(new, EnsembleRecommender) and isinstance(old, EnsembleRecommender)
    assert list(new.ensemble.members) == list(old.ensemble.members)
    assert new.ensemble.bucket_users is not None  # weights learned again
    split = json.loads((run / "split.json").read_text())
    held = json.loads((out / "heldout.json").read_text())
    assert held == {"rule": "the P1 split's new users", "users": sorted(split["new_users"])}
    trained = set(json.loads((out / "trained-users.json").read_text())["users"])
    assert "feedback:fan" in trained and not trained & set(split["new_users"])
    record = json.loads((out / "retrain.json").read_text())
    assert record["retrained_from"] == str(ens_dir) and record["metric"] == "1 - nDCG@3"
    assert set(record["best_epochs"]) == {"fomaml-run"}
    # its metarec member trained again (the old one's weights are not the new one's)
    old_w = old.primary.learner.state_dict()
    new_w = new.primary.learner.state_dict()
    assert any(not torch.equal(old_w[k], new_w[k]) for k in old_w)
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "best epochs fomaml-run" in capsys.readouterr().out

    # the next round is judged on the same users; abtest knows whom it trained on
    again = tmp_path / "ens3"
    assert main(["retrain", str(out), "--db", db, "--out", str(again), "--force", "--quiet"]) == 0
    assert json.loads((again / "heldout.json").read_text()) == held
    capsys.readouterr()
    assert main(["abtest", str(ens_dir), str(out), "--users", str(run / "split.json")]) == 0
    assert main(["abtest", str(ens_dir), str(out), "--users", "heldout:0.1"]) == 0
    # its members record their retrain: blended alone, or retrained alone, each refused
    member = out / "members" / "0"
    assert json.loads((member / "recommender.json").read_text())["metadata"]["holdout"] == (
        "retrain"
    )
    assert main(["ensemble", str(member), "--out", str(tmp_path / "e")]) == 2
    assert "a retrained run learned from logged feedback" in capsys.readouterr().err
    assert main(["retrain", str(member), "--db", db, "--out", str(tmp_path / "m")]) == 2
    assert "a member of an ensemble retrained from" in capsys.readouterr().err
    # without its heldout.json it is not judged on a fresh draw
    (out / "heldout.json").unlink()
    assert main(["retrain", str(out), "--db", db, "--out", str(tmp_path / "x")]) == 2
    assert "heldout.json: missing; a retrained ensemble is judged" in capsys.readouterr().err


@pytest.mark.slow
def test_retrain_of_an_ensemble_keeps_its_members_seeds_and_peers_options(
    run: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --set seed=N trained every member with it (a seed bag became one model), and the
    # episodic peer was rebuilt with seed 0 where the ensemble's was 3
    from metarec.ensemble_run import fit_from_runs
    from metarec.retrain_ensemble import _unfitted
    from metarec.service.store import FeedbackStore, NewEvent

    ds = load_dataset("ml-100k", root=shared_data)
    twin = tmp_path / "runs" / "twin"
    shutil.copytree(run, twin)
    # another model (a copy is refused as the same member twice)
    other = Recommender.load(twin)
    with torch.no_grad():
        other.model.user.context.add_(0.01)
    other.save(twin)
    ens = fit_from_runs([run, twin], ds, peers=["episodic"], seed=3, log=lambda _: None)
    ens_dir = ens.save(tmp_path / "ens")
    db = f"sqlite:///{tmp_path / 'fb.db'}"
    store = FeedbackStore(db)
    store.create_user("fan", {}, [NewEvent("e1", "1", "rating", 5.0, 1.0)])
    store.close()
    argv = ["retrain", str(ens_dir), "--db", db, "--force", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "x"), "--set", "seed=1"]) == 2
    assert "--set seed=1: an ensemble's metarec members keep their own seeds" in (
        capsys.readouterr().err
    )
    # the peer the retrain fits afresh: the ensemble's seed and name, the peer's options
    old_episodic: Any = ens.members["episodic"]
    episodic: Any = _unfitted("episodic", old_episodic, ens.seed)
    assert episodic.seed == 3 and episodic.name == "episodic"
    options = ("shots", "lams", "feature_sets", "support_scale", "max_items")
    assert [getattr(episodic, o) for o in options] == [getattr(old_episodic, o) for o in options]


@pytest.mark.slow
def test_an_ensemble_of_runs_trained_on_every_user_is_judged_on_their_early_stopping_users(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # its first run's folder was read for a split.json: gone, the retrain was refused;
    # trained again with P1, the ensemble was judged on users its runs had trained on
    from metarec.pipeline import recorded_validation_split
    from metarec.service.store import FeedbackStore, NewEvent

    first = tmp_path / "runs" / "none"
    train = ["train", "--dataset", "ml-100k", "--data", str(shared_data), "--quiet", "--set",
             "epochs=1", "--set", "encoder=tfidf", "--set", "max_train_users=60"]  # fmt: skip
    assert main([*train, "--holdout", "none", "--out", str(first)]) == 0
    assert (
        main(["ensemble", str(first), "--peers", "popularity", "--out", str(tmp_path / "e")]) == 0
    )
    meta = json.loads((first / "recommender.json").read_text())["metadata"]
    ds = load_dataset("ml-100k", root=shared_data)
    _, val = recorded_validation_split(ds.interactions, meta, 0)
    db = f"sqlite:///{tmp_path / 'fb.db'}"
    store = FeedbackStore(db)
    store.create_user("fan", {}, [NewEvent("e1", "1", "rating", 5.0, 1.0)])
    store.close()
    shutil.rmtree(first)
    assert main([*train, "--out", str(first)]) == 0  # the folder, now of a P1 run
    capsys.readouterr()
    argv = ["retrain", str(tmp_path / "e"), "--db", db, "--force", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "new")]) == 0, capsys.readouterr().err
    held = json.loads((tmp_path / "new" / "heldout.json").read_text())
    assert held["users"] == sorted(set(val["user_id"].astype(str)))
    assert held["rule"] == "the early-stopping users of its runs"


def test_runs_on_another_scale_or_other_users_are_not_one_ensemble(
    run: Path, tmp_path: Path, shared_data: Path
) -> None:
    # blended without a word, then refused at every served rating past the first run's
    # scale; runs trained on every user of other data were never compared
    from metarec.ensemble_run import fit_from_runs
    from metarec.errors import ConfigError

    ds = load_dataset("ml-100k", root=shared_data)
    wide = tmp_path / "wide"
    shutil.copytree(run, wide)
    manifest = json.loads((wide / "recommender.json").read_text())
    manifest["rating_range"] = [1.0, 10.0]
    (wide / "recommender.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"trained on ratings \[1, 10\] and .* on \[1, 5\]; an "):
        fit_from_runs([run, wide], ds, log=lambda _: None)
    other = tmp_path / "other"
    shutil.copytree(run, other)
    split = json.loads((other / "split.json").read_text())
    # five of its training users held out instead: a whole split, of other users
    split["new_users"] = sorted([*split["new_users"], *split["train_users"][-5:]])
    split["train_users"] = split["train_users"][:-5]
    (other / "split.json").write_text(json.dumps(split))
    with pytest.raises(ConfigError, match="was trained on other users than"):
        fit_from_runs([run, other], ds, log=lambda _: None)


def test_a_run_holding_items_added_in_python_is_blended(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # refused as trained on other data ("the data's catalogue (1,682 items) is not the
    # run's (1,683 items)"), though the README adds items so and retrain keeps them
    from metarec.ensemble_run import load_run

    grown = tmp_path / "grown"
    shutil.copytree(run, grown)
    rec = Recommender.load(grown)
    rec.add_items(pd.DataFrame({"item_id": ["py-new"], "title": ["A Python Addition"]}))
    rec.save(grown)
    ens = tmp_path / "ens"
    code = main(["ensemble", str(grown), "--peers", "popularity", "--out", str(ens)])
    assert code == 0, capsys.readouterr().err
    blended = load_run(ens)
    assert "py-new" in blended.item_index and blended.n_items == rec.n_items
    # one saved before additions were recorded in the run is blended as it was then
    manifest = json.loads((grown / "recommender.json").read_text())
    del manifest["metadata"]["added_items"]
    (grown / "recommender.json").write_text(json.dumps(manifest))
    # and stays one when it gains items: recording these alone made py-new other data
    old = Recommender.load(grown)
    old.add_items(pd.DataFrame({"item_id": ["py-2"], "title": ["A Second Addition"]}))
    old.save(grown)
    assert "added_items" not in old.metadata
    code = main(["ensemble", str(grown), "--peers", "popularity", "--out", str(tmp_path / "e2")])
    assert code == 0, capsys.readouterr().err


def test_a_member_that_kept_its_untrained_model_is_said_to(
    run: Path, shared_data: Path, tmp_path: Path
) -> None:
    # blended as a meta-learned member without a word, though it is the bias model
    from metarec.ensemble_run import fit_from_runs
    from metarec.recommender import Recommender

    ds = load_dataset("ml-100k", root=shared_data)
    rec = Recommender.load(run)
    said: list[str] = []
    fit_from_runs([run], ds, peers=["popularity"], log=said.append)
    kept_untrained = f"note: {run} kept its untrained model"
    assert (rec.metadata["best_epoch"] == 0) == any(kept_untrained in s for s in said)
    untrained = tmp_path / "untrained"
    rec.metadata["best_epoch"] = 0
    rec.save(untrained)
    shutil.copy(run / "split.json", untrained / "split.json")
    said.clear()
    fit_from_runs([untrained], ds, peers=["popularity"], log=said.append)
    assert (
        f"note: {untrained} kept its untrained model (epoch 0: no epoch beat it on its "
        "validation users), so it adds the bias model to the blend"
    ) in said


def test_retrain_of_an_ensemble_refuses_a_peer_blind_on_its_data(
    ens_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`metarec ensemble` refuses a peer that scores every item alike; retrain refitted
    one and gave it weight again (an ensemble built before, or in Python)."""
    import metarec.evaluation.blind_peers as blind
    from metarec.errors import ConfigError
    from metarec.retrain import retrain
    from metarec.service.store import FeedbackStore, NewEvent

    db = f"sqlite:///{tmp_path / 'fb.db'}"
    store = FeedbackStore(db)
    store.create_user("fan", {}, [NewEvent("e0", "1", "rating", 5.0, 1.0)])
    store.close()
    seen: list[list[str]] = []

    def blind_popularity(ds: Any, peers: list[str]) -> dict[str, str]:
        seen.append(list(peers))
        return {p: "as if on clicks" for p in peers if p == "popularity"}

    monkeypatch.setattr(blind, "blind_peers", blind_popularity)
    said = "peer popularity cannot tell one item from another here: as if on clicks; rebuild"
    with pytest.raises(ConfigError, match=said):
        retrain(ens_dir, db, tmp_path / "out", progress=False)
    assert seen == [["popularity"]]  # the peers alone, not the metarec member
    assert not (tmp_path / "out").exists()


def test_a_run_whose_features_the_first_runs_data_lacks_is_warned_about(
    run: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ensemble and an A/B test read the first run's data: one trained without a
    users file left the second run's features unread (every user "unknown") while its
    weights were learned, or it was judged, without a word."""
    bare = tmp_path / "bare" / "ml-100k"
    bare.mkdir(parents=True)
    for part in ("inter", "item"):
        (bare / f"ml-100k.{part}").symlink_to(shared_data / "ml-100k" / f"ml-100k.{part}")
    first = tmp_path / "first"
    shutil.copytree(run, first)
    manifest = json.loads((first / "recommender.json").read_text())
    manifest["metadata"]["data_spec"] = {"dataset": "ml-100k", "data": str(bare.parent)}
    (first / "recommender.json").write_text(json.dumps(manifest))
    argv = ["ensemble", str(first), str(run), "--peers", "popularity"]
    assert main([*argv, "--out", str(tmp_path / "e")]) == 0
    said = capsys.readouterr().err
    assert f"{run} reads the user features age, gender, occupation" in said, said
    ab = ["abtest", str(first), str(run), "--users", str(first / "split.json"), "--json"]
    assert main(ab) == 0
    assert f"{run} reads the user features age, gender, occupation" in capsys.readouterr().err

"""``metarec abtest``: two small runs trained on ml-100k, compared end to end; bad input.

The runs take ~10-20 s to train on 2 cores, so the tests that use them are marked slow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from metarec.cli import main
from metarec.config import TrainConfig
from metarec.data import load_dataset
from metarec.data.schema import Dataset
from metarec.evaluation.p1 import make_p1_split
from metarec.pipeline import encode_catalogue, fit_recommender
from metarec.recommender import Recommender
from metarec.trained_users import save_trained_users


@pytest.fixture(scope="module")
def ml100k(shared_data: Path) -> Dataset:
    return load_dataset("ml-100k", root=shared_data)


@pytest.fixture(scope="module")
def runs(ml100k: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two runs meta-trained on P1's training users (tfidf, one epoch), new users held out."""
    root = tmp_path_factory.mktemp("runs")
    split = make_p1_split(ml100k, seed=0)
    catalogue = encode_catalogue(ml100k.items, "tfidf", cache_dir=root / "emb", progress=False)
    out = []
    for name, cfg in (
        ("a", TrainConfig(epochs=1, max_train_users=100, inner_steps=1, seed=1, device="cpu")),
        ("b", TrainConfig(epochs=1, max_train_users=120, inner_steps=2, seed=2, device="cpu")),
    ):
        rec, _ = fit_recommender(
            catalogue,
            split.frames["train"],
            cfg,
            users=ml100k.users,
            validation=split.frames["validation"],
            progress=False,
        )
        rec.save(root / name)
        out.append(root / name)
    split.save(out[0] / "split.json")
    # run B stands for a run trained on every user it was given (--holdout none): it
    # records them in trained-users.json, as `metarec train` and `metarec.train` do
    save_trained_users(out[1], [*split.train_users, *split.validation_users])
    return out[0], out[1]


@pytest.fixture(scope="module")
def ensemble(
    runs: tuple[Path, Path], ml100k: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Run A blended with the popularity peer (run B records no split to share)."""
    from metarec.ensemble_run import fit_from_runs

    ens = fit_from_runs([runs[0]], ml100k, peers=["popularity"], log=lambda _: None)
    out = tmp_path_factory.mktemp("ensemble") / "ens"
    ens.save(out)
    return out


def _data(shared_data: Path) -> list[str]:
    return ["--dataset", "ml-100k", "--root", str(shared_data)]


@pytest.mark.slow
def test_abtest_end_to_end_json_and_reproducible(
    runs: tuple[Path, Path],
    ml100k: Dataset,
    shared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = runs
    args = ["abtest", str(a), str(b), *_data(shared_data), "--json"]
    code = main([*args, "--users", str(a / "split.json"), "--out", str(tmp_path / "r.json"),
                 "--save-split", str(tmp_path / "p4.json")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"  # the plot beside it
    assert report["threshold"] == 4.0  # ml-100k's 1-5 stars: liked is >= 4
    # every P1 new user has >= 13 ratings, so all of them take part
    new_users = json.loads((a / "split.json").read_text())["new_users"]
    counts = ml100k.interactions.groupby("user_id").size()
    eligible = sum(int(counts[u]) >= 6 for u in new_users)
    assert report["users"] == eligible == len(new_users)
    rep = report["replay"]
    arms = rep["arms"]
    assert arms["A"]["users"] + arms["B"]["users"] == eligible
    assert abs(arms["A"]["users"] - arms["B"]["users"]) <= 1
    for arm in arms.values():
        assert 0 <= arm["ci"][0] <= arm["rate"] <= arm["ci"][1] <= 1
        assert arm["rate"] == pytest.approx(arm["successes"] / arm["users"])
    assert 0 <= rep["p"] <= 1
    assert rep["lift"] == pytest.approx(arms["B"]["rate"] / arms["A"]["rate"] - 1)
    inter = report["interleave"]
    assert inter["wins_a"] + inter["wins_b"] + inter["ties"] == eligible
    assert inter["delta"] == pytest.approx((inter["wins_b"] - inter["wins_a"]) / eligible)
    # the saved P4 split replays the same test exactly
    code = main([*args, "--users", str(tmp_path / "p4.json")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out) | {"runs": None} == report | {"runs": None}
    # the P4 file fixes K and the seed: a flag that would be ignored is refused
    for flag in ("--support", "--seed"):
        assert main([*args, "--users", str(tmp_path / "p4.json"), flag, "2"]) == 2
        assert f"{flag}: the P4 split" in capsys.readouterr().err
    # a split of another data set, and a k past the catalogue, are refused by name
    other = json.loads((tmp_path / "p4.json").read_text()) | {"dataset": "ml-1m"}
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main([*args, "--users", str(tmp_path / "other.json")]) == 2
    assert "a P4 split of 'ml-1m', not of 'ml-100k'" in capsys.readouterr().err
    assert main([*args, "--users", str(tmp_path / "p4.json"), "-k", "100000"]) == 2
    assert "-k: 100000 is more than the catalogue's" in capsys.readouterr().err
    # interleaving alone draws no replay plot: the earlier test's r.png stood beside the
    # new r.json as if it showed it
    code = main([*args, "--users", str(tmp_path / "p4.json"), "--method", "interleave",
                 "--out", str(tmp_path / "r.json")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "replay" not in json.loads((tmp_path / "r.json").read_text())
    assert not (tmp_path / "r.png").exists()


@pytest.mark.slow
def test_abtest_table_and_skipped_users(
    runs: tuple[Path, Path], ml100k: Dataset, shared_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    a, b = runs
    # users neither run trained on: run A's new users (its training users are refused)
    ids = sorted(json.loads((a / "split.json").read_text())["new_users"])[:60]
    (tmp_path / "users.txt").write_text("\n".join([*ids, "no-such-user"]) + "\n")
    counts = ml100k.interactions.groupby("user_id").size()
    short = sum(int(counts[u]) < 41 for u in ids)
    assert 0 < short < 60  # the support of 40 leaves some users out, not all
    code = main(["abtest", str(a), str(b), *_data(shared_data), "--users",
                 str(tmp_path / "users.txt"), "--support", "40", "-k", "5",
                 "--method", "replay"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert f"skipped {short} users with fewer than 41 ratings" in out
    assert "skipped 1 users not in the data ('no-such-user')" in out  # named
    assert f"{60 - short:,} users, support K = 40, top-5" in out
    assert "lift (B/A - 1)" in out and "users per arm for 80% power" in out
    assert "interleaving" not in out
    # a list holding users run A trained on measures memory, not cold start
    trained = json.loads((a / "split.json").read_text())["train_users"][:3]
    (tmp_path / "seen.txt").write_text("\n".join([*ids, *trained]) + "\n")
    code = main(["abtest", str(a), str(b), *_data(shared_data), "--users",
                 str(tmp_path / "seen.txt"), "--method", "replay"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "3 of its users" in err and "trained run A" in err, err
    # so does one of the users a run trained on every user recorded (--holdout none)
    code = main(["abtest", str(b), str(a), *_data(shared_data), "--users",
                 str(tmp_path / "seen.txt"), "--method", "replay"])  # fmt: skip
    _assert_one_line_error(
        code, capsys.readouterr().err, "3 of its users", "trained run A",
        f"{b / 'trained-users.json'}",
    )  # fmt: skip
    # a run that records nothing: its training users are unknown, so a users list
    # cannot be checked against them; refused, not taken as "none"
    bare = tmp_path / "bare"
    shutil.copytree(b, bare)
    (bare / "trained-users.json").unlink()
    code = main(["abtest", str(a), str(bare), *_data(shared_data), "--users",
                 str(tmp_path / "users.txt"), "--method", "replay"])  # fmt: skip
    _assert_one_line_error(
        code, capsys.readouterr().err, "run B", "does not record its training users",
        "heldout:FRACTION",
    )  # fmt: skip


def test_a_heldout_draw_points_to_a_split_file_only_where_a_run_has_one(
    runs: tuple[Path, Path], shared_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    a, b = runs
    args = ["abtest", "--method", "interleave", *_data(shared_data), "--users", "heldout:0.05"]
    assert main([*args, str(b), str(a)]) == 0, capsys.readouterr().err
    assert f"--users {a}/split.json tests new users only" in capsys.readouterr().out
    # --root alone is --data alone, as its help says (it was refused without --dataset)
    alone = ["abtest", "--method", "interleave", "--root", str(shared_data / "ml-100k")]
    assert main([*alone, "--users", "heldout:0.05", str(a), str(a)]) == 0, capsys.readouterr()
    capsys.readouterr()
    # run B trained on every user (implicit feedback's default): it has no split.json
    assert main([*args, str(b), str(b)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "split.json" not in out
    assert "leave them out of their training data and give their ids: --users FILE" in out
    # a run split with another seed trained on some of A's new users: A's split.json
    # was offered all the same, and refused when given
    other = tmp_path / "other-split"
    shutil.copytree(a, other)
    make_p1_split(load_dataset("ml-100k", root=shared_data), seed=1).save(other / "split.json")
    assert main([*args, str(a), str(other)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "split.json" not in out and "--users FILE" in out


@pytest.mark.slow
def test_abtest_refuses_an_ensembles_training_users(
    runs: tuple[Path, Path], ensemble: Path, shared_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    a, _ = runs
    split = json.loads((a / "split.json").read_text())
    args = ["abtest", "--method", "interleave", *_data(shared_data)]
    # an ensemble folder holds no split.json: its users are its runs' (here run A's), the
    # training users and the validation users its weights were learned on
    for group in ("train_users", "validation_users"):
        (tmp_path / "seen.txt").write_text("\n".join(split[group][:20]))
        code = main([*args, str(ensemble), str(ensemble), "--users", str(tmp_path / "seen.txt")])
        _assert_one_line_error(
            code, capsys.readouterr().err, "20 of its users", "trained run A",
            "the split.json or trained-users.json of a run it blends",
        )  # fmt: skip
    code = main([*args, str(a), str(ensemble), "--users", str(a / "split.json")])
    assert code == 0, capsys.readouterr().err  # its new users are fine
    # read for them, the runs it blends are inputs: no output may land in one
    code = main([*args, str(ensemble), str(ensemble), "--users", "heldout:0.05",
                 "--save-split", str(a / "new.json")])  # fmt: skip
    _assert_one_line_error(
        code, capsys.readouterr().err, f"{a}, a run that ensemble A blends"
    )  # fmt: skip
    assert not (a / "new.json").exists()
    # where the run's split cannot be read, its training users are unknown: refused,
    # except for heldout:FRACTION, which is documented to take training users too
    moved = tmp_path / "moved"
    shutil.copytree(ensemble, moved)
    manifest = json.loads((moved / "ensemble.json").read_text())
    manifest["metadata"]["runs"] = [str(tmp_path / "gone")]
    (moved / "ensemble.json").write_text(json.dumps(manifest))
    code = main([*args, str(a), str(moved), "--users", str(a / "split.json")])
    _assert_one_line_error(
        code, capsys.readouterr().err, "run B", "training users are unknown",
        f"came from {tmp_path / 'gone'}, which is gone", "heldout:FRACTION",
    )  # fmt: skip
    saved = tmp_path / "p4.json"
    assert main([*args, str(a), str(a), "--users", "heldout:0.05", "--save-split", str(saved)]) == 0
    assert "users drawn by heldout:0.05: from all of" in capsys.readouterr().out
    # its replay takes the users as the first run did: it was refused, naming the
    # training users the first run had taken without a word
    assert json.loads(saved.read_text())["users_from"] == "heldout:0.05"
    assert main([*args, str(a), str(a), "--users", str(saved)]) == 0, capsys.readouterr().err
    assert "users drawn by heldout:0.05" in capsys.readouterr().out
    # --save-split writes JSON whatever the name; it reads back under any name
    as_text = tmp_path / "p4-split.txt"
    as_text.write_bytes(saved.read_bytes())
    assert main([*args, str(a), str(a), "--users", str(as_text)]) == 0, capsys.readouterr().err
    assert "users drawn by heldout:0.05" in capsys.readouterr().out
    assert main([*args, str(moved), str(moved), "--users", "heldout:0.05"]) == 0
    capsys.readouterr()
    # the run trained again on another split since: its split.json is not the member's
    manifest["metadata"]["runs"] = [str(a)]
    (moved / "ensemble.json").write_text(json.dumps(manifest))
    member = json.loads((moved / "members/0/recommender.json").read_text())
    member["metadata"]["split_digest"] = "0" * 64
    (moved / "members/0/recommender.json").write_text(json.dumps(member))
    code = main([*args, str(moved), str(a), "--users", str(a / "split.json")])
    _assert_one_line_error(
        code, capsys.readouterr().err, "run A", "is no longer the split member",
    )  # fmt: skip


@pytest.mark.slow
def test_abtest_users_the_data_cannot_test_are_refused_naming_the_file(
    runs: tuple[Path, Path], shared_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    a, b = runs
    (tmp_path / "users.txt").write_text("no-such-user\nnor-this-one\n")
    code = main(["abtest", str(a), str(b), *_data(shared_data), "--users",
                 str(tmp_path / "users.txt")])  # fmt: skip
    _assert_one_line_error(
        code, capsys.readouterr().err, str(tmp_path / "users.txt"),
        "none of its users can be tested on ml-100k: 2 are not in the data",
    )  # fmt: skip
    # a list with a repeated user is refused as a split file with one is, not deduplicated
    new = json.loads((a / "split.json").read_text())["new_users"][:3]
    (tmp_path / "twice.txt").write_text("\n".join([*new, new[1]]))
    code = main(["abtest", str(a), str(b), *_data(shared_data), "--users",
                 str(tmp_path / "twice.txt"), "--method", "interleave"])  # fmt: skip
    _assert_one_line_error(
        code, capsys.readouterr().err,
        f"{tmp_path / 'twice.txt'}, line 4: user {new[1]!r} is listed again (first on line 2)",
    )  # fmt: skip
    # a K none of them can take: the largest that some can, not a doubt about the data,
    # also with an unknown id beside them
    (tmp_path / "new.txt").write_text("\n".join([*new, "nobody"]))
    code = main(["abtest", str(a), str(b), *_data(shared_data), "--users",
                 str(tmp_path / "new.txt"), "--support", "1000"])  # fmt: skip
    most = int(load_dataset("ml-100k", root=shared_data).interactions.groupby("user_id")
               .size().reindex(new).max()) - 1  # fmt: skip
    _assert_one_line_error(
        code, capsys.readouterr().err, str(tmp_path / "new.txt"),
        f"1 are not in the data, 3 have 1000 ratings or fewer (the most any of them allows "
        f"is --support {most})",
    )  # fmt: skip
    # the same run on both arms is allowed, and said: an A/A test
    code = main(["abtest", str(a), str(a), *_data(shared_data), "--users",
                 str(tmp_path / "users.txt")])  # fmt: skip
    assert code == 2 and "A and B are the same run: an A/A test" in capsys.readouterr().out
    (tmp_path / "p4.json").write_text(json.dumps(
        {"protocol": "p4", "users": ["1", "2"], "arms": ["A", "B"], "seed": 0, "support": 1000}
    ))  # fmt: skip
    code = main(["abtest", str(a), str(b), *_data(shared_data), "--users",
                 str(tmp_path / "p4.json")])  # fmt: skip
    _assert_one_line_error(
        code, capsys.readouterr().err, str(tmp_path / "p4.json"),
        "ratings in ml-100k; the split's K = 1000 needs more (2 such users",
    )  # fmt: skip


@pytest.mark.slow
def test_abtest_command_line_entry_point(
    runs: tuple[Path, Path], ml100k: Dataset, shared_data: Path
) -> None:
    a, b = runs
    proc = subprocess.run(
        [sys.executable, "-m", "metarec.cli", "abtest", str(a), str(b), *_data(shared_data),
         "--users", "heldout:0.05", "--method", "interleave"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    n = round(ml100k.n_users * 0.05)  # every ml-100k user has >= 20 ratings: none skipped
    assert f"Team-draft interleaving over all {n} users" in proc.stdout
    assert "Replay" not in proc.stdout


@pytest.mark.slow
def test_abtest_refuses_to_write_over_its_inputs(
    runs: tuple[Path, Path], shared_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    a, b = runs
    run = tmp_path / "run"  # a copy: without the check, these commands destroyed it
    shutil.copytree(a, run)
    users = tmp_path / "users.txt"
    users.write_text("\n".join(json.loads((a / "split.json").read_text())["new_users"]))
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    split = ["--users", str(run / "split.json")]
    for arms, extra, needle in [
        ([run, b], [*split, "--out", str(run / "recommender.json")], "inside run A's folder"),
        ([run, b], [*split, "--out", str(run / "split.json")], "is the --users file"),
        ([run, b], [*split, "--save-split", str(run / "split.json")], "is the --users file"),
        ([run, b], ["--users", "heldout:0.1", "--save-split", str(run / "split.json")],
         "inside run A's folder"),
        ([b, run], [*split, "--out", str(run / ".." / "run" / "new.json")], "run B's folder"),
        ([b, b], ["--users", str(users), "--out", str(users)], "is the --users file"),
        ([b, b], ["--users", str(users), "--save-split", str(users)], "is the --users file"),
        # the replay plot beside the report (r.png) would land on the users file
        ([b, b], ["--users", str(tmp_path / "r.png"), "--out", str(tmp_path / "r.json")],
         "r.json's plot"),
    ]:  # fmt: skip
        code = main(["abtest", *map(str, arms), *_data(shared_data), *extra, "--method", "both"])
        _assert_one_line_error(code, capsys.readouterr().err, needle)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "users.txt"]
    # --method interleave draws no plot: a users file of the plot's name is no clash
    (tmp_path / "r.png").write_text("\n".join(users.read_text().split()[:20]))
    code = main(["abtest", str(b), str(b), *_data(shared_data), "--users",
                 str(tmp_path / "r.png"), "--out", str(tmp_path / "r.json"),
                 "--method", "interleave"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "r.png").read_text().split() == users.read_text().split()[:20]


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--users", "heldout:1.5"], ["heldout:1.5", "(0, 1]"]),
        (["--users", "heldout:abc"], ["heldout:abc", "FRACTION"]),
        (["--users", "missing-users.txt"], ["missing-users.txt", "no such file"]),
        (["--users", "heldout:0.1", "--support", "-1"], ["--support", "-1"]),
        (["--users", "heldout:0.1", "-k", "0"], ["-k", "got 0"]),
    ],
)
def test_abtest_bad_arguments(
    extra: list[str], needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["abtest", str(tmp_path / "a"), str(tmp_path / "b"), *extra])
    _assert_one_line_error(code, capsys.readouterr().err, *needles)


@pytest.mark.slow
def test_abtest_refused_late_writes_no_split(
    runs: tuple[Path, Path], shared_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    a, b = runs
    # -k and --like-threshold are checked only after the split is drawn; the split was
    # saved before them, so a refused command left --save-split's file behind
    for extra, needle in [
        (["-k", "99999"], "-k: 99999 is more than the catalogue's"),
        (["--like-threshold", "99"], "--like-threshold"),
        (["--like-threshold", "nan"], "--like-threshold"),
    ]:
        code = main(["abtest", str(a), str(b), *_data(shared_data), "--users",
                     str(a / "split.json"), "--method", "replay", "--save-split",
                     str(tmp_path / "p4.json"), "--out", str(tmp_path / "r.json"),
                     *extra])  # fmt: skip
        _assert_one_line_error(code, capsys.readouterr().err, needle)
        assert not list(tmp_path.iterdir()), extra


@pytest.mark.parametrize(
    "outputs, needles",
    [
        (["--save-split", "x.json", "--out", "x.json"],
         ["--save-split and --out name the same file", "x.json"]),
        (["--out", "r.png"], ["--out", "r.png", "plot", "same name"]),
        (["--out", "r.json", "--save-split", "r.png"], ["--save-split", "r.png", "plot"]),
    ],
)  # fmt: skip
def test_abtest_outputs_on_one_file_are_refused(
    outputs: list[str], needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # one output written over another: the report replaced the saved split (exit 0)
    named = [str(tmp_path / o) if i % 2 else o for i, o in enumerate(outputs)]
    code = main(["abtest", str(tmp_path / "a"), str(tmp_path / "b"), "--users", "heldout:0.1",
                 *named])  # fmt: skip
    _assert_one_line_error(code, capsys.readouterr().err, *needles)
    assert not list(tmp_path.iterdir())


def test_abtest_a_folder_where_its_plot_goes_is_refused_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # found after the test, when the report and the split were already written
    (tmp_path / "r.png").mkdir()
    outputs = ["--out", str(tmp_path / "r.json"), "--save-split", str(tmp_path / "s.json")]
    code = main(["abtest", str(tmp_path / "a"), str(tmp_path / "b"), "--users", "heldout:0.1",
                 *outputs])  # fmt: skip
    _assert_one_line_error(code, capsys.readouterr().err, "plot", "r.png: is a folder")
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]


def test_abtest_unknown_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["abtest", str(tmp_path / "nope"), str(tmp_path / "b"), "--users", "heldout:0.1"])
    _assert_one_line_error(code, capsys.readouterr().err, "nope", "no such file or directory")
    (tmp_path / "empty").mkdir()
    code = main(["abtest", str(tmp_path / "empty"), str(tmp_path / "b"), "--users", "heldout:0.1"])
    _assert_one_line_error(code, capsys.readouterr().err, "empty", "neither a metarec run")


@pytest.mark.slow
def test_abtest_runs_with_different_catalogues(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _ = runs
    other = tmp_path / "other"
    shutil.copytree(a, other)
    items = json.loads((other / "items.json").read_text())
    first = items["item_id"][0]
    items["item_id"][0] = "renamed"
    (other / "items.json").write_text(json.dumps(items))
    code = main(["abtest", str(a), str(other), "--users", "heldout:0.1"])
    _assert_one_line_error(
        code,
        capsys.readouterr().err,
        f"different catalogues (1 item(s) only in A, such as {first!r}; "
        "1 item(s) only in B, such as 'renamed')",
    )
    # a run that took new items (as a served run does, then retrained): said why
    shutil.rmtree(other)
    grown = Recommender.load(a)
    grown.add_items(pd.DataFrame({"item_id": ["n1"], "title": ["A new film (2030)"]}))
    grown.save(other)
    code = main(["abtest", str(a), str(other), "--users", "heldout:0.1"])
    _assert_one_line_error(
        code, capsys.readouterr().err, "(1 item(s) only in B (added after training), such as 'n1')"
    )
    # the same catalogue on another scale: named, not met deep in scoring as "support
    # rating 5 is off the model's scale"
    shutil.rmtree(other)
    shutil.copytree(a, other)
    meta = json.loads((other / "recommender.json").read_text())
    (other / "recommender.json").write_text(json.dumps(meta | {"rating_range": [0.5, 4.5]}))
    code = main(["abtest", str(a), str(other), "--users", "heldout:0.1"])
    _assert_one_line_error(
        code, capsys.readouterr().err, "trained on ratings [1, 5]", "on [0.5, 4.5]"
    )


@pytest.mark.slow
def test_abtest_on_data_the_runs_were_not_trained_on(
    runs: tuple[Path, Path], shared_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Other items were tested (exit 0); ratings on another scale failed as "support
    rating 8 is off the model's scale", naming neither the data nor a flag. Fewer
    items than a run holds are its data only when it records the rest as added later
    (test_a_run_holding_items_added_in_python_is_blended)."""
    import pandas as pd

    a, b = runs
    source = shared_data / "ml-100k"
    inter = pd.read_csv(source / "ml-100k.inter", sep="\t")
    items = pd.read_csv(source / "ml-100k.item", sep="\t")
    cases = {
        "fewer": (inter[inter["item_id:token"] <= 1600], items[items["item_id:token"] <= 1600]),
        "more": (
            pd.concat([inter, inter.head(1).assign(**{"item_id:token": 1683})]),
            pd.concat([items, items.head(1).assign(**{"item_id:token": 1683})]),
        ),
        "doubled": (inter.assign(**{"rating:float": inter["rating:float"] * 2}), items),
    }
    for name, (rows, catalogue) in cases.items():
        folder = tmp_path / name / "ml-100k"
        folder.mkdir(parents=True)
        rows.to_csv(folder / "ml-100k.inter", sep="\t", index=False)
        catalogue.to_csv(folder / "ml-100k.item", sep="\t", index=False)
        shutil.copy(source / "ml-100k.user", folder)
    new_users = json.loads((a / "split.json").read_text())["new_users"]
    (tmp_path / "new.txt").write_text("\n".join(new_users) + "\n")
    argv = ["abtest", str(a), str(b), "--users", str(tmp_path / "new.txt"), "--data"]
    code = main([*argv, str(tmp_path / "fewer" / "ml-100k")])
    _assert_one_line_error(
        code, capsys.readouterr().err, "--data: ml-100k's catalogue (1,600 items) is not the "
        "run's (1,682 items): the run holds 82 items it lacks, such as '1601'"
    )  # fmt: skip
    code = main([*argv, str(tmp_path / "more" / "ml-100k")])
    _assert_one_line_error(
        code, capsys.readouterr().err, "--data: ml-100k's catalogue (1,683 items) is not the "
        "run's (1,682 items): the run lacks 1 of its items, such as '1683'"
    )  # fmt: skip
    code = main([*argv, str(tmp_path / "doubled" / "ml-100k")])
    _assert_one_line_error(
        code, capsys.readouterr().err,
        "--data: ml-100k's ratings are on [2, 10], the run's on [1, 5]",
    )  # fmt: skip
    # another data set named alone was blamed on a --data never given
    code = main([*argv[:-1], "--dataset", "ml-1m", "--root", str(shared_data)])
    _assert_one_line_error(
        code, capsys.readouterr().err, "--dataset ml-1m: ml-1m's catalogue (3,883 items) is not "
    )  # fmt: skip
    # metarec ensemble said so only after fitting its peers, in the same words
    code = main(["ensemble", str(a), "--data", str(tmp_path / "doubled" / "ml-100k"),
                 "--peers", "popularity", "--out", str(tmp_path / "ens")])  # fmt: skip
    _assert_one_line_error(
        code, capsys.readouterr().err,
        "ml-100k's ratings are on [2, 10], the run's on [1, 5]; give the data",
    )  # fmt: skip
    # one user: arm B empty, and every replay figure "n/a" with exit 0
    one = tmp_path / "one.txt"
    one.write_text(new_users[0] + "\n")
    code = main(["abtest", str(a), str(b), "--users", str(one), *_data(shared_data),
                 "--method", "replay", "--out", str(tmp_path / "r.json")])  # fmt: skip
    _assert_one_line_error(code, capsys.readouterr().err, "the replay needs users in both arms")
    assert not (tmp_path / "r.json").exists()


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("metarec: error:")]
    assert len(lines) == 1 and "Traceback" not in err and "usage:" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.slow
def test_outputs_over_the_data_read_are_refused(
    runs: tuple[Path, Path], shared_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # the report replaced the ratings file it had just been computed from (exit 0); a copy,
    # so that a regression cannot overwrite the shared data
    a, b = runs
    shutil.copytree(shared_data / "ml-100k", tmp_path / "ml-100k")
    ratings = tmp_path / "ml-100k" / "ml-100k.inter"
    before = ratings.read_bytes()
    data = ["--dataset", "ml-100k", "--data", str(tmp_path)]
    for outputs in (["--out", str(ratings)], ["--save-split", str(ratings)]):
        code = main(["abtest", str(a), str(b), *data, "--users", "heldout:0.1", *outputs])
        _assert_one_line_error(code, capsys.readouterr().err, outputs[0], "is the data file")
    assert ratings.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "ml-100k").iterdir()) == [
        "ml-100k.inter", "ml-100k.item", "ml-100k.user"
    ]  # fmt: skip


@pytest.mark.slow
def test_abtest_data_folder_holding_the_runs_data_set(
    runs: tuple[Path, Path], shared_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`--data DIR` where DIR holds the data set the run records reads it from there, as
    evaluate, ensemble and retrain do; abtest read DIR as the data set's own folder
    ("no data set found") although the run said which one it was."""
    a, b = runs
    rec = Recommender.load(a)
    rec.metadata["data_spec"] = {"dataset": "ml-100k"}  # as `metarec train` records it
    rec.save(tmp_path / "a")
    shutil.copy(a / "split.json", tmp_path / "a")
    code = main(["abtest", str(tmp_path / "a"), str(b), "--users", str(a / "split.json"),
                 "--data", str(shared_data), "--method", "interleave", "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["interleave"]["wins_a"] >= 0

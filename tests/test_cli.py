"""The ``metarec`` command: error paths give exit 2 and one line; the happy path works."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from metarec.cli import main


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metarec.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def assert_one_line_error(proc: Any, *needles: str) -> None:
    """``proc``: a CompletedProcess, or the ``cli`` fixture's result."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("metarec: error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    (tmp_path / "items.csv").write_text("item_id,title\n10,Heat\n11,Fargo\n12,Ran\n")
    return tmp_path


@pytest.mark.parametrize(
    "ratings, items, needles",
    [
        ("user_id,item_id,rating\n1,10,5\n1,11,x\n", None, ["ratings.csv", "line 3", "'x'"]),
        ("user_id,item_id,rating\n1,10,5\n1,99,4\n", None, ["ratings.csv", "line 3", "'99'"]),
        (
            "user_id,item_id,rating\n1,10,5\n1,12,4\n",
            "item_id,title\n10,Heat\n11,Fargo\n12,\n",  # the title column read unnamed
            ["items.csv", "line 4", "'12'", "no text"],
        ),
        # a comma header over tab-separated rows (a header of tabs or semicolons is read)
        ("user_id,item_id,rating\n1\t10\t5\n", None, ["ratings.csv", "line 2", "comma"]),
    ],
    ids=["bad-rating", "unknown-item", "empty-text", "wrong-delimiter"],
)
def test_malformed_files_name_file_and_line(
    files: Path, ratings: str, items: str | None, needles: list[str]
) -> None:
    (files / "ratings.csv").write_text(ratings)
    if items is not None:
        (files / "items.csv").write_text(items)
    proc = run_cli(
        "data",
        "describe",
        "--interactions",
        str(files / "ratings.csv"),
        "--items",
        str(files / "items.csv"),
        "--strict",
    )
    assert_one_line_error(proc, *needles)


def test_a_link_loop_given_as_a_file_is_one_line(files: Path) -> None:
    # Path.resolve() raised RuntimeError("Symlink loop") through the CLI as a traceback
    (files / "loop.csv").symlink_to(files / "loop.csv")
    proc = run_cli("data", "validate", "--interactions", str(files / "loop.csv"))
    assert_one_line_error(proc, "loop.csv", "points back to itself")
    # a dangling link was named by its target: "/gone: file not found"
    (files / "dangling.csv").symlink_to(files / "gone.csv")
    proc = run_cli("data", "validate", "--interactions", str(files / "dangling.csv"))
    assert_one_line_error(proc, "dangling.csv: is a symbolic link to", "which does not exist")


def test_a_bad_rating_range_is_the_flags_error(files: Path) -> None:
    # 5,1 was a "problem" of the data (exit 1) and named the Python argument
    proc = run_cli("data", "validate", "--interactions", str(files / "ratings.csv"),
                   "--rating-range", "5,1")  # fmt: skip
    assert_one_line_error(proc, "--rating-range: expected finite min <= max, got '5,1'")


def test_a_data_set_beside_its_own_files_is_refused(files: Path) -> None:
    # the files won and the name was dropped without a word
    proc = run_cli("data", "validate", "ml-100k", "--interactions", str(files / "ratings.csv"))
    assert_one_line_error(proc, "give a data set ('ml-100k') or --interactions")


def test_validate_lists_every_problem_and_exits_1(files: Path) -> None:
    (files / "ratings.csv").write_text("user_id,item_id,rating\n1,10,5\n1,11,x\n1,99,9\n")
    proc = run_cli(
        "data",
        "validate",
        "--interactions",
        str(files / "ratings.csv"),
        "--items",
        str(files / "items.csv"),
        "--rating-range",
        "1,5",
    )
    assert proc.returncode == 1
    out = proc.stdout
    assert "line 3" in out and "line 4" in out and "problem(s)" in out
    # --json gives JSON here too (it printed the text above)
    args = ["data", "validate", "--interactions", str(files / "ratings.csv"),
            "--items", str(files / "items.csv"), "--rating-range", "1,5", "--json"]  # fmt: skip
    proc = run_cli(*args)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["ok"] is False and len(report["problems"]) >= 2


def test_validate_lists_a_scale_one_typo_stretched(files: Path) -> None:
    # warned of, then "ok: no problems found" and exit 0 beside a scale of 1-99
    rows = [f"{u},{10 + u % 2},{1 + u % 5}" for u in range(200)]
    (files / "ratings.csv").write_text("user_id,item_id,rating\n" + "\n".join([*rows, "x,10,99"]))
    args = ["data", "validate", "--interactions", str(files / "ratings.csv"),
            "--items", str(files / "items.csv")]  # fmt: skip
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "problem: rating scale read from the data as [1, 99], but 1 rating(s) of 99" in (
        proc.stdout
    )
    assert run_cli(*args, "--rating-range", "1,5").returncode == 1  # the 99 is out of range
    (files / "ratings.csv").write_text("user_id,item_id,rating\n" + "\n".join(rows))
    assert run_cli(*args).returncode == 0
    # a lone half star beside the typo made the rest no even scale: "ok", then train
    # refused the data for the like threshold the 7 set
    many = [f"{u},{10 + u % 2},{1 + u % 5}" for u in range(1200)]
    stray = "\n".join([*many, "x,10,7", "y,11,4.5"])
    (files / "ratings.csv").write_text("user_id,item_id,rating\n" + stray)
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "problem: rating scale read from the data as [1, 7], but 1 rating(s) of 7" in (
        proc.stdout
    )
    assert "problem: like threshold 5.5, the top quarter of the rating scale [1, 7]" in (
        proc.stdout
    )
    assert "train with --set like_threshold=X" in proc.stdout


def test_validate_shows_what_cleaning_notes_but_keeps(files: Path) -> None:
    # an item whose only text is its year passed as "ok: no problems found"
    (files / "items.csv").write_text("item_id,title,year\n10,Heat,1995\n11,,1984\n")
    (files / "ratings.csv").write_text("user_id,item_id,rating\n1,10,5\n1,11,4\n")
    args = ["data", "validate", "--interactions", str(files / "ratings.csv"),
            "--items", str(files / "items.csv")]  # fmt: skip
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "note: 1 items' text has no letter (e.g. '11': '1984.')" in proc.stdout
    assert proc.stdout.rstrip().endswith("ok: no problems found")
    assert json.loads(run_cli(*args, "--json").stdout)["notes"][0].startswith("1 items' text")


def test_wrong_atomic_header(tmp_path: Path) -> None:
    (tmp_path / "x.inter").write_text("user_id:token\titem_id\trating:float\n1\t2\t3\n")
    assert_one_line_error(
        run_cli("data", "describe", "--data", str(tmp_path / "x.inter")),
        "x.inter",
        "line 1",
        "item_id",
    )


@pytest.mark.parametrize(
    "args, needles",
    [
        (["train", "--dataset", "ml-100k", "--out", "x", "--set", "bogus=1"], ["bogus"]),
        # an own-files option beside a named dataset would be ignored
        (
            ["train", "--dataset", "ml-100k", "--out", "x", "--title-col", "name"],
            ["--title-col", "give --interactions too"],
        ),
        (["train", "--dataset", "ml-100k", "--out", "x", "--set", "inner_lr=-1"], ["inner_lr"]),
        (
            ["train", "--dataset", "ml-100k", "--out", "x", "--set", "algorithm=sgd"],
            ["sgd", "maml"],
        ),
        (["train", "--dataset", "ml-100k", "--out", "x", "--set", "device=gpu"], ["'gpu'"]),
        # a device this machine lacks: refused before the data is loaded
        (
            ["train", "--dataset", "ml-100k", "--out", "x", "--set", "device=cuda:63"],
            ["--set device: 'cuda:63' asked for"],
        ),
        (["train", "--dataset", "ml-100k", "--out", "x", "--set", "negatives=0"], ["negatives"]),
        (["train", "--dataset", "nope", "--out", "x"], ["nope", "ml-100k"]),
        (["train", "--config", "missing.toml", "--out", "x"], ["missing.toml"]),
        (["recommend", "no-such-run"], ["no-such-run"]),
        (["evaluate", "no-such-run"], ["no-such-run"]),
        # NaN slips past `x <= 0`; a run trained with it would score every item NaN
        (
            ["train", "--dataset", "ml-100k", "--out", "x", "--set", "inner_lr=nan"],
            ["inner_lr", "finite"],
        ),
        (["train", "--dataset", "ml-100k", "--out", "x", "--set", "seed=-1"], ["seed", ">= 0"]),
        (
            ["retrain", "run", "--db", "sqlite:///f.db", "--out", "x", "--tolerance", "nan"],
            ["--tolerance"],
        ),
        # --root is --data's other name: two different folders is a conflict, not "last wins"
        (
            [
                "retrain",
                "run",
                "--db",
                "sqlite:///f.db",
                "--out",
                "x",
                "--data",
                "a",
                "--root",
                "b",
            ],
            ["--data a and --root b"],
        ),
        (
            ["data", "validate", "--interactions", "r.csv", "--user-col", "rating"],
            ["--rating-col 'rating'", "also --user-col"],
        ),
    ],
)
def test_bad_arguments(
    args: list[str],
    needles: list[str],
    tmp_path: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(cli(*args), *needles)
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_a_ratings_file_given_as_a_data_set_says_where_a_file_goes(
    tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("r.csv").write_text("user_id,item_id,rating\n1,10,5\n")
    assert_one_line_error(cli("data", "validate", "r.csv"), "r.csv", "is a file", "--interactions")


def test_files_the_system_or_our_readers_refuse_are_one_line(
    tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfgdir").mkdir()
    (tmp_path / "five.toml").write_text("train = 5\n")
    (tmp_path / "gpu.toml").write_text('[train]\ndevice = "cuda:63"\n')
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "run").mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "model.safetensors").write_bytes(b"")
    for args, needles in [
        (["train", "--config", "cfgdir", "--out", "x"], ["cfgdir", "is a folder; a TOML"]),
        (["train", "--config", "five.toml", "--out", "x"], ["five.toml", "table"]),
        # where the device was asked for: the file, not a --set the user never gave
        (["train", "--config", "gpu.toml", "--out", "x"], ["gpu.toml: device: 'cuda:63' asked"]),
        (["report", "list.json"], ["list.json", "not a benchmark result"]),
        # saving over another run would leave its split and metrics beside the new model
        (["retrain", "run", "--db", "sqlite:///f.db", "--out", "taken"], ["taken", "exists"]),
    ]:
        assert_one_line_error(cli(*args), *needles)
    assert not (tmp_path / "x").exists()


def test_an_out_path_the_file_system_refuses_is_one_line(
    shared_data: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    (tmp_path / "afile").write_text("")
    proc = cli("train", "--dataset", "ml-100k", "--data", str(shared_data), "--quiet",
               "--set", "encoder=tfidf", "--out", str(tmp_path / "afile" / "run"))  # fmt: skip
    assert_one_line_error(proc, str(tmp_path / "afile"), "is a file; a folder is needed")
    # a threshold off the data's scale: known once the data loads, refused then, before
    # the catalogue is encoded (it was refused by training, after the encoding)
    proc = cli("train", "--dataset", "ml-100k", "--data", str(shared_data),
               "--set", "encoder=tfidf", "--set", "like_threshold=100",
               "--out", str(tmp_path / "run"))  # fmt: skip
    assert_one_line_error(proc, "like_threshold: 100 is not a rating", "[1, 5]")
    assert "data: ml-100k" in proc.stdout and "meta-training" not in proc.stdout
    assert "encoding" not in proc.stdout  # refused before the encoding, not after
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "quickstart"])
def test_a_folder_that_holds_no_run_is_no_runs_out(
    command: str, shared_data: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # a model written in among someone's notes, or into an ensemble's folder, which
    # then read as neither; a run folder is trained again, an empty one made a run
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("hi")
    blend = tmp_path / "blend"
    blend.mkdir()
    (blend / "ensemble.json").write_text("{}")
    for out, said in ((notes, "holds todo.txt and no run"), (blend, "is an ensemble folder")):
        proc = cli(command, "--dataset", "ml-100k", "--data", str(shared_data), "--quiet",
                   "--set", "encoder=tfidf", "--out", str(out))  # fmt: skip
        assert_one_line_error(proc, f"--out {out}: {said}")
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"]
    assert sorted(p.name for p in blend.iterdir()) == ["ensemble.json"]


def test_a_run_folder_and_an_empty_one_are_runs_outs(tmp_path: Path) -> None:
    from metarec.cli.options import RUN_ENTRIES, check_run_out
    from metarec.trained_users import SPLIT, TRAINED_USERS

    assert {SPLIT, TRAINED_USERS} <= RUN_ENTRIES  # spelled out there, kept in step here

    (tmp_path / "empty").mkdir()
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)  # an interrupted run's
    (tmp_path / "run" / "notes.txt").write_text("mine")
    (tmp_path / "logged").mkdir()  # `metarec train --out logged 2> logged/train.log`
    (tmp_path / "logged" / "train.log").write_text("")
    (tmp_path / "mounted" / "lost+found").mkdir(parents=True)  # a file system's root
    for out in ("empty", "run", "new", "logged", "mounted"):
        check_run_out(tmp_path / out, "--out")


@pytest.mark.parametrize("command", ["train", "benchmark"])
def test_a_model_that_cannot_be_found_is_refused_before_the_work(
    shared_data: Path,
    tmp_path: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the same answer on a machine with a network
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    if command == "train":  # loading it would fail: the model's error comes first
        data = ["--interactions", str(tmp_path / "ratings.csv")]
    else:  # the out folder was made and the data loaded before the model was looked for
        data = ["--protocol", "p2", "--dataset", "ml-100k", "--data", str(shared_data)]
    proc = cli(command, *data, "--set", "encoder=no-such-model",
               "--out", str(tmp_path / "out"))  # fmt: skip
    assert_one_line_error(proc, "cannot load model 'no-such-model'", "not in the Hugging Face")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, unwritable even to root")
def test_every_output_is_checked_before_the_work_and_named_as_given(
    tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # before: the error named a hidden lock or temporary file, or came after the fitting
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "afolder").mkdir()
    ab = ["abtest", "run", "run", "--users", "100"]
    for args, flag, given in [
        (["train", "--dataset", "ml-100k", "--out", "/proc/x"], "--out", "/proc/x"),
        (["quickstart", "--out", "/proc/x/y"], "--out", "/proc/x/y"),
        (["benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--out", "/proc/b"],
         "--out", "/proc/b"),
        (["retrain", "run", "--db", "sqlite:///f.db", "--out", "/proc/r"], "--out", "/proc/r"),
        ([*ab, "--out", "/proc/ab.json"], "--out", "/proc/ab.json"),
        ([*ab, "--save-split", "afolder"], "--save-split", "afolder"),
    ]:  # fmt: skip
        proc = cli(*args)
        assert_one_line_error(proc, f"{flag} {given}: ")
        assert ".lock" not in proc.stderr and ".tmp" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afolder", "run"]


def test_too_little_data_to_train_leaves_no_run_folder(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # one user: the P1 holdout sets them aside as a new user, so nothing is left to train
    (files / "ratings.csv").write_text("user_id,item_id,rating\n1,10,5\n1,11,3\n")
    out = tmp_path / "run"
    proc = cli(
        "train",
        "--interactions",
        str(files / "ratings.csv"),
        "--items",
        str(files / "items.csv"),
        "--out",
        str(out),
    )
    assert_one_line_error(proc, "13 to 100 ratings (MeLU's rule): 0 of 1 users", "--holdout none")
    assert not out.exists()


def test_a_p1_holdout_of_short_histories_is_refused_with_the_rule(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """MeLU's rule keeps users with 13 to 100 ratings: of 40 users with 6 ratings and 3
    with 20 it kept 3, and the run trained on 2, stopped early on none and saved a split
    ``evaluate`` could not use."""
    rows = [f"{u},{10 + (u + k) % 12},{1 + (u * k) % 5}" for u in range(40) for k in range(6)]
    rows += [f"{u},{10 + k},{1 + k % 5}" for u in range(40, 43) for k in range(20)]
    items = ["item_id,title,genres"] + [f"{i},Book {i},Drama" for i in range(10, 30)]
    (files / "short.csv").write_text("user_id,item_id,rating\n" + "\n".join(rows))
    (files / "books.csv").write_text("\n".join(items))
    out = tmp_path / "run"
    data = ["--interactions", str(files / "short.csv"), "--items", str(files / "books.csv")]
    proc = cli("train", *data, "--out", str(out))
    assert_one_line_error(
        proc, "keeps users with 13 to 100 ratings (MeLU's rule): 3 of 43 users here",
        "to stop early on", "--holdout none",
    )  # fmt: skip
    assert not out.exists()


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "args, line",
    [
        (["recommend", "run", "--device", "cuda:x"], "recommend: error: --device: 'cuda:x' is"),
        (["recommend", "run", "-k", "abc"], "recommend: error: -k: invalid int value: 'abc'"),
        (["serve", "run", "--port", "x"], "serve: error: --port: invalid int value: 'x'"),
        (["serve", "run", "--db", ""], "serve: error: --db: expected a store URL"),
        (["retrain", "run", "--db", " ", "--out", "o"], "retrain: error: --db: expected a store"),
        (["abtest", "a", "b", "--users", "1", "--method", "z"], "--method: invalid choice: 'z'"),
        # trained with the defaults without a word; the second of two kept
        (["train", "--config", ""], "train: error: --config: expected a path"),
        (
            ["train", "--config", "a.toml", "--config", "b.toml"],
            "train: error: --config: given twice",
        ),
        # taken, then refused after the data loaded as "seed" (or trained, below 2**64)
        (["train", "--split-seed", "4294967296"], "error: --split-seed: expected an integer"),
    ],
)
def test_a_bad_option_value_is_one_line_naming_the_flag_once(
    args: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # an empty --db once fell back to the default store without a word
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and line in err and "usage:" not in err, err
    flag = line.split("error: ")[-1].split(":")[0] if "error: " in line else "--method"
    assert err.count(flag) == 1, err


@pytest.mark.parametrize(
    "args, usage",
    [
        (["recommend", "run", "--bogus", "x"], "usage: metarec recommend"),
        (["data", "validate", "--bogus"], "usage: metarec data"),
        (["--bogus", "report", "x"], "usage: metarec [-h]"),  # typed before the command
    ],
)
def test_an_unknown_option_shows_its_commands_usage(
    args: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # parse_args would print the top-level usage, a list of commands
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(usage) and "unrecognized arguments: --bogus" in err


def test_version_and_help_say_what_the_data_options_default_to(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `metarec --version` was "the following arguments are required: command"
    from metarec import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"metarec {__version__}\n"
    helps = {}
    for command in ("evaluate", "check-model", "train"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps[command] = " ".join(capsys.readouterr().out.split())
    assert "default: the data the run recorded" in helps["evaluate"]
    assert "(default ml-100k)" in helps["check-model"] and "(default 5)" in helps["check-model"]
    assert "the dataset's own folder" in helps["train"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [["abtest", "a", "b", "--users", ""],  # read as the current folder: "is a folder"
     ["abtest", "a", "b", "--users", "u.txt", "--save-split", ""],
     ["abtest", "a", "b", "--users", "u.txt", "--data", " "],  # read as no --data at all
     ["train", "--interactions", "", "--out", "x"], ["train", "--dataset", "ml-100k",
     "--data", "", "--out", "x"], ["benchmark", "--protocol", "p2", "--splits", ""],
     ["retrain", "r", "--db", "sqlite:///x.db", "--out", "x", "--root", ""]],
)  # fmt: skip
def test_an_empty_path_is_refused_by_its_flag(
    args: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:  # argparse's own refusal
        main(args)
    err = capsys.readouterr().err
    flag = args[args.index(next(a for a in args if not a.strip())) - 1]
    assert exit_info.value.code == 2, err
    assert f"error: {flag}: expected a path, got an empty string" in err, err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_train_evaluate_recommend(
    shared_data: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    run = tmp_path / "run"
    proc = run_cli(
        "train",
        "--dataset",
        "ml-100k",
        "--data",
        str(shared_data),
        "--out",
        str(run),
        "--quiet",
        "--set",
        "encoder=tfidf",
        "--set",
        "epochs=2",
        "--set",
        "max_train_users=150",
    )
    assert proc.returncode == 0, proc.stderr
    assert (run / "split.json").exists() and (run / "config.json").exists()
    # it says how many users it trains on: max_train_users of the training users
    assert "meta-training fomaml on 150 users (a seeded sample of " in proc.stdout
    # the encoding is said before it starts (TF-IDF's fit at 500,000 items: 80 s silent)
    assert "encoding 1,682 item texts (tfidf; vectors cached by text) ..." in proc.stdout
    proc = run_cli("evaluate", str(run))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["summary"]) == {
        "user_cold", "item_cold", "both_cold", "item_cold_pooled", "both_cold_pooled"
    }  # fmt: skip
    assert 0.5 < metrics["summary"]["user_cold"]["bias"]["mae"] < 1.2
    # the data given again without its users file: every user was scored as "unknown"
    # on age, gender and occupation, and every figure moved without a word
    bare = tmp_path / "bare" / "ml-100k"
    bare.mkdir(parents=True)
    for part in ("inter", "item"):
        (bare / f"ml-100k.{part}").symlink_to(shared_data / "ml-100k" / f"ml-100k.{part}")
    proc = cli("evaluate", str(run), "--dataset", "ml-100k", "--data", str(bare.parent))
    assert proc.returncode == 0, proc.stderr
    assert "reads the user features age, gender, occupation, which the data" in (proc.stderr)
    assert cli("evaluate", str(run)).stderr.count("user features") == 0
    # the features the run reads, from the command line too: none could be given
    plain = json.loads(cli("recommend", str(run), "--rate", "1=5", "--json").stdout)
    given = cli("recommend", str(run), "--rate", "1=5", "--json",
                "--feature", "age=25", "--feature", "gender=F")  # fmt: skip
    assert given.returncode == 0, given.stderr
    assert [r["score"] for r in json.loads(given.stdout)] != [r["score"] for r in plain]
    assert_one_line_error(
        cli("recommend", str(run), "--feature", "agee=25"),
        "--feature agee: not a feature of this run (it reads age, gender, occupation)",
    )
    assert_one_line_error(
        cli("recommend", str(run), "--feature", "age=old"),
        "--feature age: must be a number or left out (got 'old')",
    )
    # --data DIR holding the run's data set, as the not-found message advises: it was
    # read as the data set's own folder, "no data set found"
    assert cli("evaluate", str(run), "--data", str(shared_data)).returncode == 0
    proc = run_cli(
        "recommend",
        str(run),
        "--rate",
        "Toy Story (1995)=5",
        "--rate",
        "Heat (1995)=2",
        "-k",
        "2000",  # past the catalogue: every unseen item, Aladdin among them
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    every = json.loads(proc.stdout)
    assert len(every) == 1682 - 2 and all(r["title"] != "Toy Story (1995)" for r in every)
    top = every[:5]
    # beside each score (a predicted rating, not clipped) the scale level it stands for
    assert all(r["rating"] in (1, 2, 3, 4, 5) for r in top), top
    # each item says why: the liked rating pulls where the item is like it, the
    # disliked one never does
    from metarec.explain import FROM_RATINGS, FROM_TEXT, LESS_LIKED, NEW_ITEM, POPULAR

    # the table says what its columns are: a score past 5 beside a rating of 5 read as
    # a bug
    table = run_cli("recommend", str(run), "--rate", "Toy Story (1995)=5", "-k", "3").stdout
    assert table.rstrip().endswith(
        "(score: the predicted rating, not clipped to the scale; rating: the level of the "
        "1-5 scale the user most plausibly gives)"
    ), table
    # this small run's ratings move every score by one amount (its lists are the
    # prior's), so every reason is the prior's: "Because you liked Toy Story" and "Fits
    # the pattern of your ratings" were said of items the ratings had not raised
    reasons = {r["title"]: r["reason"] for r in every}
    assert set(reasons.values()) <= {POPULAR, LESS_LIKED, FROM_TEXT, NEW_ITEM}
    assert FROM_RATINGS not in reasons.values()
    # the error paths in-process: a subprocess each would add seconds of imports
    bad = cli("recommend", str(run), "--rate", "Toy Stori (1995)=5")
    assert_one_line_error(bad, "Toy Stori", "Toy Story (1995)")
    bad = cli("recommend", str(run), "--rate", "Toy Story (1995)=9")
    assert_one_line_error(bad, "--rate entry 1 ('Toy Story (1995)'): rating 9 is outside [1, 5]")
    # one item twice (by title and by id): the last rating is used, and said so
    twice = cli("recommend", str(run), "--rate", "Toy Story (1995)=5", "--rate", "1=2")
    assert twice.returncode == 0
    assert "--rate: Toy Story (1995)=5, 1=2 rate the same item; the last (2) is used" in (
        twice.stderr
    )
    # an id starting with "-" is an item, not an option argparse found no value for
    dashed = cli("recommend", str(run), "--rate", "-5=4")
    assert_one_line_error(dashed, "'-5'")
    assert "expected one argument" not in dashed.stderr
    # an edited split.json tested the model on users it trained on, with exit 0
    original = (run / "split.json").read_text()
    for edit, needle in [
        (lambda d: d.update(train_users=d["new_users"], new_users=d["train_users"]),
         "not the split this run was trained with"),  # every group check passes
        (lambda d: d.update(new_users=d["new_users"] + d["train_users"][:5]),
         "train_users and new_users share 5 users"),
        (lambda d: d.update(new_users=[*d["new_users"], d["new_users"][0]]),
         "new_users holds"),  # tested twice, counted twice
        (lambda d: d.update(seed=float("inf")), "seed must be a whole number >= 0, got inf"),
        (lambda d: d.update(seed=-3), "seed must be a whole number >= 0, got -3"),
        (lambda d: d.update(fold=7, n_folds=5), r"fold must be an integer in [0, 5); got 7"),
        (lambda d: d.update(protocol="p2"), "protocol 'p2', expected 'p1'"),
    ]:  # fmt: skip
        edited = json.loads(original)
        edit(edited)
        (run / "split.json").write_text(json.dumps(edited))
        assert_one_line_error(cli("evaluate", str(run)), "split.json", needle)
    (run / "split.json").write_text(original)
    # the users a narrower scale emptied were blamed on split.json, "not users of ml-100k"
    assert_one_line_error(
        cli("evaluate", str(run), "--rating-range", "1,3"),
        "ml-100k: read on the rating scale [1, 3] (--rating-range?)",
        "trained on [1, 5]",
    )
    assert cli("evaluate", str(run)).returncode == 0
    shown = cli("report", str(run))
    assert shown.returncode == 0 and shown.stdout.startswith(f"# Run {run}")
    # what evaluate wrote, which the report left out; --write, a silent no-op, refused
    assert "| state | users | model | mae |" in shown.stdout
    assert "| user_cold | " in shown.stdout
    assert_one_line_error(cli("report", str(run), "--write"), "--write", "is a run folder")
    blend = run.parent / "blend"  # the check reads the manifest's name alone
    blend.mkdir()
    (blend / "ensemble.json").write_text("{}")
    assert_one_line_error(cli("report", str(blend), "--write"), "--write", "is an ensemble folder")
    (run / "metrics.json").unlink()  # the table ended at training, without a word why
    assert f"Not evaluated yet: `metarec evaluate {run}`" in cli("report", str(run)).stdout
    manifest = json.loads((run / "recommender.json").read_text())
    for field, value in (("metadata", "x"), ("metadata", {"history": "x"})):
        (run / "recommender.json").write_text(json.dumps(manifest | {field: value}))
        # was "'str' object has no attribute 'get'"
        assert_one_line_error(cli("report", str(run)), "recommender.json", "field 'metadata")
    # a run of a format this metarec does not read: refused as `recommend` refuses it,
    # where the report was printed as if it were this one's
    (run / "recommender.json").write_text(json.dumps(manifest | {"format_version": 9}))
    assert_one_line_error(cli("report", str(run)), "recommender.json", "format_version 9 is newer")


def test_describe_shows_the_scale_and_what_counts_as_liked(files: Path) -> None:
    (files / "ratings.csv").write_text("user_id,item_id,rating\n1,10,1\n1,11,10\n2,10,7\n")
    proc = run_cli(
        "data", "describe", "--interactions", str(files / "ratings.csv"),
        "--items", str(files / "items.csv"), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["rating_range"] == [1.0, 10.0]
    assert info["like_threshold"] == 7.75  # the top quarter: 8, 9 and 10 are liked


def test_validate_says_what_all_one_ratings_need(files: Path, cli: Callable[..., Any]) -> None:
    # "ok: no problems found", then a default train refused the data
    rows = "".join(f"{u},{i},1\n" for u in range(5) for i in range(4))
    (files / "clicks.csv").write_text("user_id,item_id,rating\n" + rows)
    (files / "items.csv").write_text("item_id,title\n" + "".join(f"{i},T{i}\n" for i in range(4)))
    args = ["--interactions", str(files / "clicks.csv"), "--items", str(files / "items.csv")]
    res = cli("data", "validate", *args)
    assert res.returncode == 0, res.stderr
    assert "note: every rating is 1 (implicit feedback): train with --set objective=softmax" in (
        res.stdout
    )
    assert "implicit feedback" in cli("data", "describe", *args).stdout


def test_warnings_are_one_line(
    shared_data: Path, tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warning reads like an error: one line, no source line of metarec's own."""
    monkeypatch.setenv("METAREC_DATA", str(shared_data))
    res = cli("data", "describe", "ml-100k", "--data", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        f"metarec: warning: data set 'ml-100k' is not in {tmp_path}; "
        "looking in METAREC_DATA, the cache, then GroupLens' download"
    ]
    assert "users: 943" in res.stdout


def test_validate_under_strict_says_the_fixes_are_not_made(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # each problem says what cleaning does with it ("cleaning keeps the latest"), which
    # --strict does not: train and describe refuse the file there
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,1,5\n1,1,3\n2,1,4\n")
    args = ["data", "validate", "--interactions", str(tmp_path / "r.csv")]
    assert "with --strict" not in cli(*args).stdout
    proc = cli(*args, "--strict")
    assert proc.returncode == 1
    assert "with --strict, train and describe stop at the first of these instead" in proc.stdout


def test_a_data_set_name_wins_over_a_folder_of_that_name_here(
    shared_data: Path, tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # in the data folder itself (the README's form, `--data .`), or beside any folder
    # called ml-100k, the name was read as that folder: "not both", or "no data set"
    monkeypatch.chdir(shared_data)
    res = cli("data", "describe", "ml-100k", "--data", ".")
    assert res.returncode == 0, res.stderr
    assert "users: 943" in res.stdout
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ml-100k").mkdir()
    res = cli("data", "describe", "ml-100k", "--data", str(shared_data))
    assert res.returncode == 0 and "users: 943" in res.stdout, res.stderr
    # written as a path it is the folder, and said so where the name alone is given
    assert_one_line_error(cli("data", "describe", "./ml-100k"), "no data set found")
    monkeypatch.setenv("METAREC_DATA", str(shared_data))
    res = cli("data", "describe", "ml-100k")
    assert res.returncode == 0 and "for the folder of that name here give ./ml-100k" in res.stderr


def test_a_second_ctrl_c_while_the_first_is_told_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pressed twice, Ctrl-C's second press raised inside the handling of the first (and
    in torch's exit hooks after it): a traceback under the one-line message."""
    import io
    import signal

    from metarec.cli import benchmarking

    def interrupted(args: Any) -> int:
        raise KeyboardInterrupt

    handlers: list[tuple[Any, Any]] = []

    class Told(io.StringIO):
        def write(self, text: str) -> int:
            handlers.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))
            return super().write(text)

    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    told = Told()
    monkeypatch.setattr(benchmarking, "cmd_report", interrupted)
    monkeypatch.setattr(sys, "stderr", told)
    assert main(["report", "x.json"]) == 130
    assert "metarec: interrupted" in told.getvalue()
    assert handlers and all(h == (signal.SIG_IGN, signal.SIG_IGN) for h in handlers)
    # called in a process of one's own (a notebook, these tests): its handlers come back
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_stop_once_the_command_has_stopped_ends_the_process_at_once() -> None:
    # what runs after main() returns 130 (the interpreter's exit, torch's atexit hooks)
    # took a second Ctrl-C as a new interruption and printed a traceback
    code = (
        "import os, signal, sys, time\n"
        "import metarec.cli\n"
        "metarec.cli.main = lambda: 130\n"
        "from metarec.launch import main\n"
        "sys.argv = ['metarec', 'train']\n"
        "print(main(), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(30)\n"
        "print('not stopped')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (res.returncode, res.stdout.split(), res.stderr) == (130, ["130"], "")


def test_an_interrupt_says_what_resumes(
    cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from metarec.cli import benchmarking

    def interrupted(args: Any) -> int:
        stop = KeyboardInterrupt()
        # as RunStore says where (add_note from Python 3.11)
        vars(stop)["__notes__"] = ["kept in /runs/.p2-ml-100k-5fold.partial"]
        raise stop

    monkeypatch.setattr(benchmarking, "cmd_benchmark", interrupted)
    monkeypatch.setattr(benchmarking, "cmd_report", interrupted)
    res = cli("benchmark", "--protocol", "p2", "--folds", "5")
    assert res.returncode == 130
    assert "resume at the model it was fitting (finished folds and models are kept in " in (
        res.stderr
    )
    assert "/runs/.p2-ml-100k-5fold.partial/)" in res.stderr
    res = cli("report", "x.json")  # nothing to resume: no promise
    assert (res.returncode, res.stderr.strip()) == (130, "metarec: interrupted")
    # the speed benchmark keeps nothing (one process's timings), so promises nothing
    res = cli("benchmark", "--protocol", "speed")
    assert (res.returncode, res.stderr.strip()) == (130, "metarec: interrupted")


def test_sigterm_stops_a_long_command_like_ctrl_c(
    cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler's or `docker stop`'s SIGTERM: the message and exit status 143, not
    a silent death; the process's own SIGTERM handler is back afterwards."""
    import os
    import signal
    import time

    from metarec.cli import benchmarking

    def terminated(args: Any) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises long before this ends
        return 0

    monkeypatch.setattr(benchmarking, "cmd_benchmark", terminated)
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.perf_counter()
    res = cli("benchmark", "--protocol", "p2")
    assert res.returncode == 143 and time.perf_counter() - t0 < 4
    assert "metarec: terminated; run the same command again to resume" in res.stderr
    assert signal.getsignal(signal.SIGTERM) == before
    # a command with nothing to resume (ensemble) stops so too, its locks let go: it
    # died of the signal, 143 without a word, before
    from metarec.cli import ensemble, service

    monkeypatch.setattr(ensemble, "cmd_ensemble", terminated)
    res = cli("ensemble", "run", "--out", "o")
    assert (res.returncode, res.stderr.strip()) == (143, "metarec: terminated")
    # retrain keeps its epochs beside --out, and says that the same command resumes
    monkeypatch.setattr(service, "cmd_retrain", terminated)
    res = cli("retrain", "run", "--db", "sqlite:///x.db", "--out", "o")
    assert res.returncode == 143
    assert "metarec: terminated; run the same command again to resume" in res.stderr


def test_describe_json_is_strict_json_even_for_empty_data(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n")
    (tmp_path / "i.csv").write_text("item_id,title\na,Alpha\n")
    proc = cli("data", "describe", "--interactions", str(tmp_path / "r.csv"),
               "--items", str(tmp_path / "i.csv"), "--title-col", "title", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    def refuse(word: str) -> None:
        raise AssertionError(f"{word} is not JSON")

    info = json.loads(proc.stdout, parse_constant=refuse)
    assert info["interactions"] == 0 and info["rating_mean"] is None  # the mean of nothing
    # a scale read from no rating: [1, 5] and 4 were shown as the data's
    assert any("no ratings: the rating range and like threshold shown are the defaults" in n
               for n in info["notes"]), info["notes"]  # fmt: skip


def test_describe_notes_zeros_below_a_one_to_n_scale(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """Book-Crossing writes 0 for "read, not rated" beside 1-10 ratings: read as the
    strongest dislike without a word, where giving the scale drops them."""
    args = ["data", "describe", *_eight_readers(tmp_path, lambda u, i: (u + i) % 11)]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    zeros = sum((u + i) % 11 == 0 for u in range(8) for i in range(6))
    assert f"note: {zeros} rating(s) of 0 below an otherwise 1-10 scale" in proc.stdout
    assert "--rating-range 1,10" in proc.stdout
    assert json.loads(cli(*args, "--json").stdout)["notes"]
    # the scale given, the zeros are dropped: nothing left to note
    proc = cli(*args, "--rating-range", "1,10", "--json")
    assert json.loads(proc.stdout)["notes"] == []


def test_validate_says_how_two_valued_feedback_is_read(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # 0/1 impressions were "ok" without a word, and training read the 0s as clicks
    args = ["data", "validate", *_eight_readers(tmp_path, lambda u, i: int((u + i) % 4 == 0))]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "ratings take two values, 0 and 1 (binary feedback" in proc.stdout
    assert "reads a 1 as liked and a 0 as not (support_positives = liked" in proc.stdout


def test_counts_read_as_a_rating_scale_are_noted(tmp_path: Path, cli: Callable[..., Any]) -> None:
    """Play counts of 1 to 260 were read as a rating scale without a word: liked, the
    top quarter, was a few of the heaviest plays, and validate said "ok"."""
    import pandas as pd

    from metarec.data.schema import counts_note, inferred_threshold_said

    args = ["data", "validate", *_eight_readers(tmp_path, lambda u, i: 1 + (u * 6 + i) ** 3 // 400)]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "ratings are whole numbers from 1 to 260" in proc.stdout
    assert "counts (plays, purchases) rather than a rating scale?" in proc.stdout
    assert "(--set like_threshold=N for train, --like-threshold N for benchmark)" in proc.stdout
    plays = pd.Series([float(1 + k**3 // 400) for k in range(48)])
    with pytest.warns(UserWarning, match=r"plays: ratings are whole numbers from 1 to 260 \("):
        assert inferred_threshold_said(plays, (1.0, 260.0), "plays") == 195.25
    # so skewed that under 1 % reach the top quarter: refused with the counts' advice,
    # not the scale typo's (--rating-range would drop the heaviest plays)
    from metarec.errors import ConfigError

    heavy = pd.Series([float(2 + k % 39) for k in range(499)] + [172.0])
    with pytest.raises(ConfigError, match=r"heavy: ratings are whole numbers from 2 to 172") as e:
        inferred_threshold_said(heavy, (2.0, 172.0), "heavy")
    assert "--rating-range" not in str(e.value)
    # a 0-100 review score sits high in its range; ten levels are a scale; halves too
    scores = pd.Series([float(55 + k % 45) for k in range(48)])
    assert counts_note(scores, (0.0, 100.0), 75.0) is None
    assert counts_note(pd.Series([float(1 + k % 10) for k in range(48)]), (1, 100), 75) is None
    assert counts_note(plays + 0.5, (1.5, 260.5), 195.25) is None


def _eight_readers(tmp_path: Path, rating: Callable[[int, int], int]) -> list[str]:
    """Data options for 8 users who each rated all 6 books, ``rating(user, book)``, as
    CSV files in ``tmp_path``."""
    rows = [f"u{u},b{i},{rating(u, i)}" for u in range(8) for i in range(6)]
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n" + "\n".join(rows) + "\n")
    (tmp_path / "i.csv").write_text("item_id,title\n" + "".join(f"b{i},B{i}\n" for i in range(6)))
    return ["--interactions", str(tmp_path / "r.csv"), "--items", str(tmp_path / "i.csv"),
            "--title-col", "title"]  # fmt: skip


def _small_ratings(files: Path) -> list[str]:
    """Twelve users rating ten items: enough to meta-train for one epoch in seconds."""
    titles = ["Heat", "Fargo", "Alien", "Brazil", "Ran", "Jaws", "Big", "Rocky", "Psycho", "Up"]
    items = "item_id,title\n" + "".join(f"{i},{t}\n" for i, t in enumerate(titles))
    (files / "items.csv").write_text(items)
    rows = [f"{u},{i},{1 + (u * i) % 5}" for u in range(12) for i in range(10) if (u + i) % 3]
    (files / "ratings.csv").write_text("user_id,item_id,rating\n" + "\n".join(rows) + "\n")
    return ["--interactions", str(files / "ratings.csv"), "--items", str(files / "items.csv"),
            "--quiet", "--set", "encoder=tfidf", "--set", "epochs=1"]  # fmt: skip


def test_a_runs_files_given_again_are_read_with_its_column_names(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # --user-col and the like defaulted to metarec's names at the shell, so a run's
    # record never filled them: "user column 'user_id' not found" from retrain,
    # evaluate and ensemble given the run's own files (grown since) again
    args = _small_ratings(files)
    ratings = files / "ratings.csv"
    ratings.write_text(ratings.read_text().replace("user_id,item_id,rating", "who,what,stars"))
    run = tmp_path / "run"
    named = ["--user-col", "who", "--item-col", "what", "--rating-col", "stars",
             "--items-id-col", "item_id"]  # fmt: skip
    proc = cli("train", *args, *named, "--holdout", "none", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    db = tmp_path / "no-feedback.db"
    proc = cli("retrain", str(run), "--db", f"sqlite:///{db}", "--out", str(tmp_path / "new"),
               "--interactions", str(ratings), "--items", str(files / "items.csv"),
               "--quiet")  # fmt: skip
    assert_one_line_error(proc, "no-feedback.db")  # the data read; the store is what is not
    # a column the user names wins over the record
    proc = cli("retrain", str(run), "--db", f"sqlite:///{db}", "--out", str(tmp_path / "new"),
               "--interactions", str(ratings), "--user-col", "whom", "--quiet")  # fmt: skip
    assert_one_line_error(proc, "user column 'whom' not found")


@pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows")
def test_evaluate_waits_for_no_one_writing_its_run(
    files: Path, tmp_path: Path, cli: Callable[..., Any], held_lock: Callable[[Path], int]
) -> None:
    # a train into the folder meanwhile replaced the model, and evaluate wrote the old
    # model's figures beside the new one: it takes the run's lock, as train does
    run = tmp_path / "run"
    assert (
        cli("train", *_small_ratings(files), "--holdout", "none", "--out", str(run)).returncode == 0
    )
    pid = held_lock(run)
    proc = cli("evaluate", str(run))
    assert_one_line_error(proc, f"process {pid} is writing it", "then evaluate")


def test_a_run_trained_on_every_user_is_not_evaluated_on_a_split_beside_it(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # it records no split digest: a split.json copied from another run was read as its
    # own, and its "new" users, on whom the model had trained, scored at exit 0
    run = tmp_path / "run"
    args = _small_ratings(files)
    assert cli("train", *args, "--holdout", "none", "--out", str(run)).returncode == 0
    (run / "split.json").write_text('{"protocol": "p1"}')
    proc = cli("evaluate", str(run), *args[:4])
    assert_one_line_error(proc, "trained on every user (holdout none", "--holdout p1")
    assert not (run / "metrics.json").exists()


def test_a_support_floor_no_user_reaches_is_refused(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # every user has 6 or 7 ratings: no episode could be drawn, and the untrained
    # model would have been saved as if it had been trained
    out = tmp_path / "run"
    proc = cli("train", *_small_ratings(files), "--holdout", "none",
               "--set", "min_support=7", "--set", "max_support=20", "--out", str(out))  # fmt: skip
    assert_one_line_error(proc, "min_support=7", "the most is 7", "lower min_support")
    assert not out.exists()
    # one rating a user: "lower min_support" was said with min_support at 0 already
    args = _small_ratings(files)
    (files / "ratings.csv").write_text(
        "user_id,item_id,rating\n" + "".join(f"{u},{u % 10},{1 + u % 5}\n" for u in range(40))
    )
    proc = cli("train", *args, "--holdout", "none", "--set", "min_support=0", "--out", str(out))
    assert_one_line_error(proc, "no training user has more than 1 rating(s)", "two ratings or more")
    assert "lower min_support" not in proc.stderr
    assert not out.exists()


def test_training_again_drops_the_last_runs_results(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text('{"summary": "an earlier model"}')
    (out / "split.json").write_text('{"new_users": ["users this model will train on"]}')
    proc = cli("train", *_small_ratings(files), "--holdout", "none", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.safetensors").exists()
    # neither the old figures nor a split whose new users this model trained on survive
    assert not (out / "metrics.json").exists() and not (out / "split.json").exists()
    # what it trained on is recorded instead, so `abtest` can keep those users out
    rated = {line.split(",")[0] for line in (files / "ratings.csv").read_text().splitlines()[1:]}
    assert json.loads((out / "trained-users.json").read_text()) == {"users": sorted(rated)}
    # trained again on a P1 split, the run records its users in split.json alone
    proc = cli("train", *_small_ratings(files), "--holdout", "p1", "--out", str(out))
    if proc.returncode == 0:
        assert (out / "split.json").exists() and not (out / "trained-users.json").exists()


def test_training_a_run_again_with_more_epochs_says_it_resumed(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    out = tmp_path / "run"
    args = [*_small_ratings(files), "--holdout", "none", "--out", str(out)]
    assert cli("train", *args).returncode == 0
    proc = cli("train", *args, "--set", "epochs=2")
    assert proc.returncode == 0, proc.stderr
    assert ", resumed after epoch 1, " in proc.stdout
    # fewer epochs than the checkpoint holds: trained afresh, as the config asks
    proc = cli("train", *args)
    assert proc.returncode == 0 and "resumed" not in proc.stdout
    assert "trained 2 epochs, more than epochs=1; training from the start" in proc.stderr
    assert json.loads((out / "config.json").read_text())["epochs"] == 1


def test_an_interrupted_save_leaves_no_run_that_mixes_two(
    files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while the new config is written over an existing run: the old model must
    not stay loadable beside the new config and split."""
    import metarec.io
    from metarec.cli import main

    out = tmp_path / "run"
    args = ["train", *_small_ratings(files), "--holdout", "none", "--out", str(out)]
    assert main(args) == 0
    real = metarec.io.save_json

    def interrupted(path: Path, obj: object) -> None:
        if Path(path).name == "config.json":
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(metarec.io, "save_json", interrupted)
    assert main([*args, "--set", "seed=1"]) == 130
    capsys.readouterr()
    assert not (out / "recommender.json").exists()  # not a run: `evaluate` refuses it


def test_a_rating_model_on_implicit_feedback_is_refused(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    args = _small_ratings(files)
    rows = (files / "ratings.csv").read_text().splitlines()
    ones = [",".join([*r.split(",")[:2], "1"]) for r in rows[1:]]  # clicks: every rating 1
    (files / "ratings.csv").write_text("\n".join([rows[0], *ones]) + "\n")
    out = tmp_path / "run"
    proc = cli("train", *args, "--out", str(out))
    assert_one_line_error(proc, "every rating is 1 (implicit feedback)", "objective=softmax")
    assert 'objective="softmax" in a config or metarec.train' in proc.stderr
    assert not out.exists()


def test_implicit_feedback_trains_on_every_user_by_default(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """P1 measures predicted ratings: on clicks the default P1 holdout set users and items
    aside (130 of 162 users trained) for an evaluation that then refused the run."""
    args = _small_ratings(files)
    rows = (files / "ratings.csv").read_text().splitlines()
    ones = [",".join([*r.split(",")[:2], "1"]) for r in rows[1:]]
    (files / "ratings.csv").write_text("\n".join([rows[0], *ones]) + "\n")
    bce = ["--set", "objective=bce"]
    proc = cli("train", *args, *bce, "--holdout", "p1", "--out", str(tmp_path / "p1"))
    assert_one_line_error(proc, "--holdout p1: every rating of", "use --holdout none")
    assert not (tmp_path / "p1").exists()
    # quickstart evaluates with P1 and has no --holdout to suggest
    proc = cli("quickstart", *args, *bce, "--out", str(tmp_path / "qs"))
    assert_one_line_error(proc, "quickstart evaluates with protocol P1", "`metarec train`")
    assert "--holdout" not in proc.stderr
    out = tmp_path / "run"
    proc = cli("train", *args, *bce, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "holdout: none (every rating is 1, implicit feedback" in proc.stdout
    assert not (out / "split.json").exists()
    assert json.loads((out / "recommender.json").read_text())["metadata"]["holdout"] == "none"
    # every model's list has the same fields, as the HTTP API's: a click model's had no
    # rating, and --no-reasons no reason, so a client failed on one model, not another
    for extra in ([], ["--no-reasons"]):
        proc = cli("recommend", str(out), "--rate", "0=1", "-k", "2", "--json", *extra)
        listed = json.loads(proc.stdout)
        assert [list(r) for r in listed] == [
            ["rank", "item_id", "title", "score", "rating", "reason"]
        ] * 2, listed
        assert listed[0]["rating"] is None and (listed[0]["reason"] is None) == bool(extra)


def test_ids_written_differently_in_two_files_are_named(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    (files / "items.csv").write_text("item_id,title\n000199,Heat\n000200,Fargo\n")
    (files / "ratings.csv").write_text("user_id,item_id,rating\n1,199,5\n1,200,3\n2,199,4\n")
    proc = cli("train", "--interactions", str(files / "ratings.csv"),
               "--items", str(files / "items.csv"), "--out", str(tmp_path / "run"))  # fmt: skip
    assert_one_line_error(proc, "cleaning dropped every rating", "item '199'", "look like '000199'")


def test_the_items_and_users_files_may_name_their_ids_otherwise(files: Path) -> None:
    (files / "ratings.csv").write_text("reader,isbn,score\nu1,0001,8\nu1,0002,3\nu2,0001,9\n")
    (files / "books.csv").write_text("book_id,title\n0001,Emma\n0002,Ulysses\n")
    (files / "readers.csv").write_text("user_id,age\nu1,30\nu2,41\n")
    proc = run_cli(
        "data", "describe", "--interactions", str(files / "ratings.csv"),
        "--items", str(files / "books.csv"), "--users", str(files / "readers.csv"),
        "--user-col", "reader", "--item-col", "isbn", "--rating-col", "score",
        "--items-id-col", "book_id", "--users-id-col", "user_id", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["interactions"], info["items_rated"], info["user_features"]) == (3, 2, ["age"])


def test_the_p1_table_says_which_states_had_no_or_few_test_users() -> None:
    from metarec.cli.training import format_p1_table

    vals = {"mae": 0.8, "rmse": 1.0, "ndcg@3": 0.7, "precision@5": 0.5, "mrr@5": 0.6}
    table = format_p1_table({
        "summary": {"user_cold": {"bias": vals}, "item_cold": {"bias": vals}},
        "n_users": {"user_cold": 55, "item_cold": 3, "both_cold": 0},
    })  # fmt: skip
    assert "both_cold            0  not evaluated: no test user in this state" in table
    assert "few test users in item_cold (3): those figures are rough" in table
    assert "user_cold (55)" not in table


def test_the_p1_table_shows_a_ranking_models_missing_errors_as_such() -> None:
    # an implicit run evaluated on P1 printed "nan" for its MAE beside the bias model's
    from metarec.cli.training import format_p1_table

    bias = {"mae": 0.8, "rmse": 1.0, "ndcg@3": 0.7, "precision@5": 0.5, "mrr@5": 0.6}
    ranker = {**bias, "mae": float("nan"), "rmse": float("nan"), "ndcg@3": 0.75}
    table = format_p1_table({
        "summary": {"user_cold": {"bias": bias, "metarec-fomaml": ranker}},
        "n_users": {"user_cold": 55},
    })  # fmt: skip
    assert "nan" not in table
    row = next(line for line in table.splitlines() if "metarec-fomaml" in line)
    assert row.split()[3:6] == ["—", "—", "0.7500"]
    assert table.splitlines()[-1].startswith("—: no value; metarec-fomaml ranks items and predicts")
    assert "bias rank" not in table and "without a test user" not in table
    # a rating model's ranking metric no user could give: blank, and said why
    unliked = {**bias, "precision@5": float("nan")}
    table = format_p1_table({"summary": {"user_cold": {"bias": unliked}},
                             "n_users": {"user_cold": 55}})  # fmt: skip
    assert table.splitlines()[-1] == (
        "—: no value; a ranking metric without a test user who liked a query item"
    )


def test_a_bare_rate_takes_a_one_value_runs_rating_and_is_refused_elsewhere() -> None:
    # on a run of clicks read as all 1s, "--rate i5" was refused with an example
    # ("=5") that run refused in turn
    from metarec.cli.training import parse_rates, rated_on_scale
    from metarec.errors import ConfigError

    given = parse_rates(["i5", "Heat (1995)=1"])
    assert given == [("i5", None), ("Heat (1995)", 1.0)]
    assert rated_on_scale(given, (1.0, 1.0)) == [("i5", 1.0), ("Heat (1995)", 1.0)]
    with pytest.raises(ConfigError, match=r"--rate 'i5': give its rating, ITEM=RATING on "
                       r"this run's scale \[1, 5\], e\.g\. --rate \"i5=5\""):  # fmt: skip
        rated_on_scale(given, (1.0, 5.0))
    with pytest.raises(ConfigError, match="expected ITEM=RATING"):
        parse_rates(["=4"])
    # a bare title with "=" in it, or a mistyped rating: the scale tells which
    given = parse_rates(["Film =3 SciFi", "Heat=five"])
    assert rated_on_scale(given[:1], (1.0, 1.0)) == [("Film =3 SciFi", 1.0)]
    with pytest.raises(ConfigError, match=r"--rate 'Heat=five': rating 'five' is not a number"):
        rated_on_scale(given[1:], (1.0, 5.0))


def test_too_few_users_for_a_p1_holdout_is_not_blamed_on_its_rule() -> None:
    from metarec.cli.training import _check_p1_groups
    from metarec.errors import DataError
    from metarec.evaluation.p1 import P1Split

    every = P1Split("x", 0, [], train_users=["a", "b", "c"], validation_users=[],
                    new_users=["d"])  # fmt: skip
    with pytest.raises(DataError, match=r"x: 4 users are too few for the P1 holdout, leaving 3 "
                       r"to train on, 0 to stop early on and 1 new users"):  # fmt: skip
        _check_p1_groups(every, 4, "x", True)
    with pytest.raises(DataError, match=r"\(MeLU's rule\): 4 of 9 users here"):
        _check_p1_groups(every, 9, "x", True)


def test_a_run_that_kept_its_untrained_model_says_so(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # "saved (best epoch 0)" and exit 0 read as a trained model
    args = [*_small_ratings(files), "--holdout", "none", "--out", str(tmp_path / "run")]
    # half the users love the films whose text says "even" and hate the others, half
    # the reverse: every film's mean is 3, so only a model of the user beats the bias one
    kinds = ("even", "odd")
    titles = "item_id,title\n" + "".join(f"{i},{kinds[i % 2]} film {i}\n" for i in range(30))
    (files / "items.csv").write_text(titles)
    rows = [
        f"{u},{i},{5 if (u + i) % 2 else 1}"
        for u in range(40)
        for i in ((u + j) % 30 for j in range(20))
    ]
    (files / "ratings.csv").write_text("user_id,item_id,rating\n" + "\n".join(rows) + "\n")
    proc = cli("train", *args, "--set", "epochs=2", "--set", "outer_lr=1e-9")
    assert proc.returncode == 0, proc.stderr
    assert "(best epoch 0, " in proc.stdout
    assert "no epoch of meta-training beat the untrained model" in proc.stderr
    other = [*args[:-1], str(tmp_path / "other")]
    proc = cli("train", *other, "--set", "epochs=2")
    assert proc.returncode == 0 and "untrained" not in proc.stderr, proc.stdout
    # an early stop is said as one: the bar ended at "6/30" with no word why
    held = [a for a in args if a not in ("--holdout", "none")]
    proc = cli("train", *held[:-1], str(tmp_path / "early"), "--set", "epochs=30",
               "--set", "outer_lr=1e-9", "--set", "patience=2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "of 2 trained: stopped early, 2 epochs without a better validation loss" in (proc.stdout)
    shown = cli("report", str(tmp_path / "other")).stdout
    assert "No P1 figures: trained with --holdout none" in shown


def test_train_interrupted_before_its_first_checkpoint_leaves_no_folder(
    files: Path, tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the cleanup caught Exception only: Ctrl-C (KeyboardInterrupt) and SIGTERM left an
    # empty run folder behind
    import metarec.pipeline

    def interrupted(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(metarec.pipeline, "fit_recommender", interrupted)
    out = tmp_path / "run"
    proc = cli("train", *_small_ratings(files), "--holdout", "none", "--out", str(out))
    assert proc.returncode == 130 and not out.exists()


def test_a_diverged_training_leaves_no_checkpoint_to_resume(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # refused as diverged after its last epoch, its checkpoint stayed: every other
    # command then called the folder an unfinished run to resume, which ended the same way
    out = tmp_path / "run"
    args = [*_small_ratings(files), "--holdout", "none", "--set", "inner_lr=10"]
    proc = cli("train", *args, "--out", str(out))
    assert proc.returncode == 2 and "meta-training diverged" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_train_says_what_cleaning_noted_where_it_dropped_no_row(
    files: Path, tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the cleaning summary was printed only where a row was dropped: a users file whose
    # ids matched no rating user ('001' for 1) trained every user without features,
    # without a word
    import metarec.pipeline

    def interrupted(*_: Any, **__: Any) -> Any:  # what was said before training is enough
        raise KeyboardInterrupt

    monkeypatch.setattr(metarec.pipeline, "fit_recommender", interrupted)
    users = files / "users.csv"
    users.write_text("user_id,age\n" + "".join(f"{u:03d},{20 + u}\n" for u in range(12)))
    args = [*_small_ratings(files), "--users", str(users), "--holdout", "none"]
    proc = cli("train", *args, "--out", str(tmp_path / "run"))
    assert proc.returncode == 130
    assert "note: none of the 12 rating users has a row in the users table" in proc.stdout
    assert "(it has '000' for '0': they differ in how a number is written" in proc.stdout


def test_a_final_save_that_fails_leaves_no_run_files_and_says_the_checkpoint_is_kept(
    files: Path, tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a full disk at the last write left config.json and split.json, which read as a
    # run, beside no model, and no word that running again would resume
    import metarec.run_folder
    from metarec.recommender import Recommender

    def disk_full(rec: Recommender, out: Path) -> Path:
        raise OSError(28, "No space left on device", str(out / "model.safetensors"))

    monkeypatch.setattr(metarec.run_folder, "write_run", disk_full)  # what train writes with
    out = tmp_path / "run"
    proc = cli("train", *_small_ratings(files), "--holdout", "none", "--out", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "No space left on device" in proc.stderr
    assert f"the training is kept in {out / 'checkpoint'}" in proc.stderr
    assert (out / "checkpoint").is_dir()
    assert not (out / "config.json").exists() and not (out / "trained-users.json").exists()


def test_an_interrupt_once_the_model_is_saved_keeps_the_runs_records(
    files: Path, tmp_path: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C while the folder synced after recommender.json was renamed into place: the
    # run loaded, and its config.json and trained-users.json (split.json) were deleted
    import metarec.run_folder
    from metarec.recommender import Recommender

    real = metarec.run_folder.write_run

    def then_interrupted(rec: Recommender, out: Path) -> Path:
        real(rec, out)
        raise KeyboardInterrupt

    monkeypatch.setattr(metarec.run_folder, "write_run", then_interrupted)
    out = tmp_path / "run"
    proc = cli("train", *_small_ratings(files), "--holdout", "none", "--out", str(out))
    assert proc.returncode == 130, proc.stderr
    assert (out / "recommender.json").is_file()
    assert (out / "config.json").is_file() and (out / "trained-users.json").is_file()


def test_report_of_a_run_with_a_damaged_metrics_file_prints_nothing_but_the_error(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # the run's table printed, then the error: half a report above an exit code 2
    run = tmp_path / "run"
    trained = cli("train", *_small_ratings(files), "--holdout", "none", "--out", str(run))
    assert trained.returncode == 0
    assert "No P1 figures" in cli("report", str(run)).stdout
    (run / "metrics.json").write_text('{"rows":')
    proc = cli("report", str(run))
    assert proc.returncode == 2 and proc.stdout == ""
    assert "metrics.json" in proc.stderr and "Traceback" not in proc.stderr
    # readable, but of figures no evaluation gives: printed as "nan" and "7.0000", exit 0
    for summary, needle in [
        ({"bias": {"mae": float("nan")}}, "field 'summary.user_cold.bias.mae' is nan"),
        ({"bias": {"ndcg@3": 7}}, "'summary.user_cold.bias.ndcg@3' is 7, expected a number in"),
    ]:
        edited = {"protocol": "p1", "n_users": {"user_cold": 3}, "summary": {"user_cold": summary}}
        (run / "metrics.json").write_text(json.dumps(edited))
        proc = cli("report", str(run))
        assert proc.returncode == 2 and proc.stdout == "" and needle in proc.stderr, proc.stderr
    # a ranking model's errors (null) print as the evaluate table prints them, with its note
    ranker = {"mae": None, "rmse": None, "ndcg@3": 0.5, "precision@5": 0.4, "mrr@5": 0.6}
    edited = {"protocol": "p1", "n_users": {"user_cold": 3},
              "summary": {"user_cold": {"metarec-bce": ranker}}}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(edited))
    proc = cli("report", str(run))
    assert proc.returncode == 0 and "| metarec-bce | — | — | 0.5000 |" in proc.stdout
    assert "—: no value; metarec-bce ranks items and predicts no rating" in proc.stdout
    (run / "metrics.json").write_text('{"protocol": "p2", "summary": {}, "n_users": {}}')
    proc = cli("report", str(run))
    assert proc.returncode == 2 and "field 'protocol' is 'p2', expected 'p1'" in proc.stderr


def test_run_commands_on_a_small_run_say_what_a_user_needs(
    files: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """What a review of recommend, data and ensemble found, on one small run."""
    run = tmp_path / "small run"
    assert (
        cli("train", *_small_ratings(files), "--holdout", "none", "--out", str(run)).returncode == 0
    )
    # an empty RUN was the current folder
    proc = run_cli("recommend", "")
    assert proc.returncode == 2 and "expected a path, got an empty string" in proc.stderr
    # a device this machine lacks is named as the flag, as serve names it
    assert_one_line_error(cli("recommend", str(run), "--device", "cuda:7"), "--device:")
    # every item rated: pandas' "Empty DataFrame" dump, and "[\n\n]" as JSON
    every = [a for i in range(10) for a in ("--rate", f"{i}=3")]
    shown = cli("recommend", str(run), *every, "--no-reasons")
    assert shown.returncode == 0 and shown.stdout == ""
    assert "no items left to recommend: the user rated all 10" in shown.stderr
    assert json.loads(cli("recommend", str(run), *every, "--json").stdout) == []
    # an ensemble whose buckets make no blend: refused before the data loads, by flag
    assert_one_line_error(
        cli("ensemble", str(run), "--buckets", "1,3", "--out", str(tmp_path / "e")), "--buckets:"
    )
    # a run written into an ensemble folder: recommend went on serving the ensemble
    ens = tmp_path / "ens"
    ens.mkdir()
    (ens / "ensemble.json").write_text("{}")
    assert_one_line_error(
        cli("train", *_small_ratings(files), "--out", str(ens)), "an ensemble folder"
    )
    assert sorted(p.name for p in ens.iterdir()) == ["ensemble.json"]
    # a data set named twice: one of the two was dropped without a word
    assert_one_line_error(
        cli("data", "describe", "ml-100k", "--dataset", "ml-1m"),
        "give a data set ('ml-100k') or --dataset, not both",
    )
    # a folder and --data: two folders (a name and --data is the folder holding it)
    assert_one_line_error(
        cli("data", "describe", str(run), "--data", str(tmp_path)), "or --data, not both"
    )


def test_a_ctrl_c_before_the_command_runs_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # while the command modules import or the arguments are read: a traceback through
    # numpy's import, before the command's own handler
    import metarec.cli
    from metarec.launch import main as launch

    def interrupted() -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(metarec.cli, "main", interrupted)
    monkeypatch.setattr(sys, "argv", ["metarec", "train"])
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    try:
        assert launch() == 130
    finally:  # the entry point leaves handlers that end the process: not this one's
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    assert capsys.readouterr().err == "\nmetarec: interrupted\n"


def test_metarecs_own_warnings_print_as_its_own_lines(tmp_path: Path) -> None:
    # when loader warnings began to name the caller's line, the command's caller was the
    # console script or runpy, and each printed as "UserWarning from metarec:6: ..."
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu1,i1,4\nu1,i2,5\n")
    (tmp_path / "i.csv").write_text("item_id,title,year\ni1,A,978307200\ni2,B,1999/2000\n")
    res = run_cli("data", "describe", "--interactions", "r.csv", "--items", "i.csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    said = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(said) == 2, res.stderr
    assert all(line.startswith("metarec: warning: ") for line in said), said
    assert not any(" from " in line for line in said), said


def test_every_commands_help_page_says_what_it_does() -> None:
    """`metarec quickstart --help` went from its usage straight to the options; the
    one line `metarec --help` lists for each command now heads its own page too."""
    import argparse

    from metarec.cli import build_parser

    def pages(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, str | None]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += [(f"{path} {name}", sub.description), *pages(sub, f"{path} {name}")]
        return found

    described = pages(build_parser(), "metarec")
    assert len(described) >= 12 and all(d for _, d in described), described
    assert dict(described)["metarec quickstart"] == (
        "clean, encode, meta-train, evaluate (P1), recommend (ml-100k unless --dataset)."
    )


def test_the_legend_says_a_rating_is_a_clipped_score_where_the_run_has_no_cuts() -> None:
    # "the level of the scale" was said beside a rating of 4.312
    from types import SimpleNamespace

    import pandas as pd

    from metarec.cli.training import columns_legend

    top = pd.DataFrame({"score": [4.312], "rating": [4.312]})
    clipped = SimpleNamespace(rating_range=(1.0, 5.0), cutpoints=None)
    assert "rating: the score clipped to the 1-5 scale" in columns_legend(clipped, top)
    levels = SimpleNamespace(rating_range=(1.0, 5.0), cutpoints=object())
    assert "rating: the level of the 1-5 scale" in columns_legend(levels, top)
    assert columns_legend(levels, top.drop(columns="rating")).startswith("(score: how the model")


def test_a_long_title_does_not_pad_every_row_of_the_table() -> None:
    import pandas as pd

    from metarec.cli.training import WIDEST_CELL, table_text

    # one title of 600 characters made every row of `recommend`'s table 600 wide
    long = "A " * 300
    strangelove = "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1963)"
    top = pd.DataFrame(
        {"rank": [1, 2], "item_id": ["1", "2"], "title": [long, strangelove], "score": [4.5, 4.0]}
    )
    lines = table_text(top).splitlines()
    assert max(map(len, lines)) < WIDEST_CELL + 30
    assert "…" in lines[1] and "4.500" in lines[1]
    assert strangelove in lines[2]  # MovieLens' longest title stays whole
    assert "4.000" in lines[2]
    # a scale of millionths: three decimals printed every score as 0.000
    tiny = pd.DataFrame({"item_id": ["1", "2"], "score": [5.43e-6, 5.1e-6], "rating": [5e-6, 4e-6]})
    assert table_text(tiny).split() == [
        "item_id",
        "score",
        "rating",
        "1",
        "5.43e-06",
        "5e-06",
        "2",
        "5.1e-06",
        "4e-06",
    ]


def test_the_speed_benchmark_refuses_files_before_reading_them(
    cli: Callable[..., Any], tmp_path: Path
) -> None:
    # it named a missing user_id column first, then, with the columns right, the refusal
    ratings = tmp_path / "books.csv"
    ratings.write_text("reader,book,stars\nr1,b1,8\n")
    res = cli("benchmark", "--protocol", "speed", "--interactions", str(ratings))
    assert res.returncode == 2, res.stderr
    assert "runs on a known dataset (e.g. ml-100k), not files of one's own" in res.stderr
    assert "user_id" not in res.stderr
    # a folder of atomic files likewise, read and cleaned before its refusal
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "books.inter").write_text("reader:token\tbook:token\nr1\tb1\n")
    res = cli("benchmark", "--protocol", "speed", "--dataset", str(folder))
    assert res.returncode == 2, res.stderr
    assert f"runs on a known dataset (e.g. ml-100k), not '{folder}'" in res.stderr, res.stderr


@pytest.mark.slow
def test_training_again_keeps_the_figures_of_the_same_model_only(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a rerun of a finished command wrote the same model again and deleted the
    # metrics.json that evaluate had written of it
    from metarec.cli import main

    run = tmp_path / "run"
    train = ["train", "--dataset", "ml-100k", "--data", str(shared_data), "--out", str(run),
             "--quiet", "--set", "encoder=tfidf", "--set", "epochs=1",
             "--set", "max_train_users=60", "--set", "inner_steps=1"]  # fmt: skip
    assert main(train) == 0
    assert main(["evaluate", str(run)]) == 0
    figures = (run / "metrics.json").read_bytes()
    assert main(train) == 0
    assert (run / "metrics.json").read_bytes() == figures
    # the same model under another threshold: evaluate's precision moves with it
    assert main([*train, "--set", "like_threshold=4.5"]) == 0
    assert not (run / "metrics.json").exists()
    assert main(["evaluate", str(run)]) == 0
    assert main([*train, "--set", "seed=1"]) == 0  # another model: its figures are to come
    assert not (run / "metrics.json").exists()
    capsys.readouterr()


def test_a_runs_split_is_carried_onto_its_own_data_only(tmp_path: Path) -> None:
    from metarec.cli.training import _recorded_split

    config = tmp_path / "run" / "config.json"
    config.parent.mkdir()
    config.write_text("{}")

    def recorded(spec: dict[str, Any]) -> None:
        meta = {"data_spec": spec, "holdout": "p1", "split_seed": 7}
        (config.parent / "recommender.json").write_text(json.dumps({"metadata": meta}))

    known = {"dataset": "ml-100k", "data": None, "interactions": None}
    recorded(known)
    assert _recorded_split(str(config), {**known, "data": "/elsewhere"}) == ("p1", 7)
    assert _recorded_split(str(config), {**known, "dataset": "ml-1m"}) is None
    # a folder of atomic files is the data itself: another folder is other data
    folder = {"dataset": None, "data": "/x/clicks", "interactions": None}
    recorded(folder)
    assert _recorded_split(str(config), folder) == ("p1", 7)
    assert _recorded_split(str(config), {**folder, "data": "/y/ratings"}) is None
    assert _recorded_split(str(tmp_path / "cfg.toml"), folder) is None  # no run's config


def test_the_store_url_may_come_from_the_environment(
    cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A PostgreSQL URL's password in --db was readable by every account in ps."""
    from metarec.cli.options import DB_ENV, db_from_env

    monkeypatch.delenv(DB_ENV, raising=False)
    assert db_from_env(None, required=False) is None
    assert_one_line_error(cli("retrain", "run", "--out", "o"), "--db: required", f"${DB_ENV}")
    monkeypatch.setenv(DB_ENV, "postgresql://svc:pw@db/feedback")
    assert db_from_env(None, required=True) == "postgresql://svc:pw@db/feedback"
    assert db_from_env("sqlite:///given.db", required=True) == "sqlite:///given.db"  # --db wins
    monkeypatch.setenv(DB_ENV, " ")
    assert_one_line_error(cli("retrain", "run", "--out", "o"), f"${DB_ENV}: empty")
    # serve reads it, and a bad one is named as what it came from, not a --db never given
    monkeypatch.setenv(DB_ENV, "bogus://svc:pw@db/feedback")
    # the flag is renamed, not the URL's own "--db"
    from metarec.cli.service import _store_named
    from metarec.errors import MetarecError
    from metarec.service.store import check_db_url

    monkeypatch.setenv(DB_ENV, "bogus:///srv/feed--db.db")
    said = r"^\$METAREC_DB 'bogus:///srv/feed--db\.db'"
    with pytest.raises(MetarecError, match=said), _store_named(None):
        check_db_url("bogus:///srv/feed--db.db")
    monkeypatch.setenv(DB_ENV, "bogus://svc:pw@db/feedback")
    (tmp_path / "ens").mkdir()  # an ensemble's folder, by its manifest's name: the URL is
    (tmp_path / "ens" / "ensemble.json").write_text("{}")  # refused before a run loads
    assert_one_line_error(
        cli("serve", str(tmp_path / "ens"), "--port", "0"),
        f"${DB_ENV} 'bogus://svc:***@db/feedback': unsupported database",
    )


def test_a_pair_value_starting_with_a_dash_is_glued_to_its_option() -> None:
    from metarec.cli import _glued_pairs

    assert _glued_pairs(["recommend", "r", "--rate", "-5=4", "-k", "3"]) == [
        "recommend",
        "r",
        "--rate=-5=4",
        "-k",
        "3",
    ]
    # an option after a pair option is left to argparse, which says its value is missing
    assert _glued_pairs(["--rate", "--json"]) == ["--rate", "--json"]
    assert _glued_pairs(["--set", "-x"]) == ["--set", "-x"]  # no "=": an option
    assert _glued_pairs(["--", "--rate", "-5=4"]) == ["--", "--rate", "-5=4"]
    assert _glued_pairs(["--rate"]) == ["--rate"]


def test_a_path_under_a_user_who_is_not_there_is_an_error_not_a_traceback(
    cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # pathlib's expanduser raised RuntimeError("Could not determine home directory.")
    monkeypatch.setenv("METAREC_CACHE", "~no-such-user-here/cache")
    monkeypatch.delenv("METAREC_DATA", raising=False)
    proc = cli("data", "describe", "ml-100k")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "a path starting with ~NAME names no user here" in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [["recommend", "RUN", "-k", "5", "-k", "2"],
     ["data", "describe", "--dataset", "ml-1m", "--dataset", "ml-100k"],
     ["train", "--dataset", "ml-100k", "--out", "a", "--out", "b"]],
)  # fmt: skip
def test_an_option_of_one_value_given_twice_is_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    # argparse kept the last without a word: --out a --out b wrote b, -k 5 -k 2 listed two
    with pytest.raises(SystemExit) as info:
        main(argv)
    flag = argv[-2]
    assert info.value.code == 2
    assert f"error: {flag}: given twice; give it once" in capsys.readouterr().err


def test_an_abbreviated_option_is_not_read_as_another(capsys: pytest.CaptureFixture[str]) -> None:
    # `--split 3` was --split-seed 3: an option added later would change what it means
    with pytest.raises(SystemExit) as info:
        main(["recommend", "RUN", "--rat", "1=5"])
    assert info.value.code == 2
    assert "unrecognized arguments: --rat 1=5" in capsys.readouterr().err

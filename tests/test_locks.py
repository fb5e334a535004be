"""One writer at a time per output folder (``metarec.locks``), across real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from metarec.errors import BusyError
from metarec.locks import exclusive, holder, lock_path

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows")

HOLD = """
import sys
from metarec.locks import exclusive
with exclusive(sys.argv[1], "hint"):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def held_elsewhere(target: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``target``'s lock until the block ends (then killed -9)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_second_writer_is_refused_until_the_first_dies(tmp_path: Path) -> None:
    target = tmp_path / "p2-ml-100k"
    with held_elsewhere(target) as holder:
        with pytest.raises(BusyError) as refused, exclusive(target, "use another --out"):
            pytest.fail("entered a folder another process holds")
        message = str(refused.value)
        assert str(target) in message and "use another --out" in message
        assert f"process {holder.pid} is writing it" in message
    # killed without releasing: the kernel dropped the lock, nothing stale is left to delete
    with exclusive(target, "hint"):
        assert lock_path(target).read_text() == f"{os.getpid()}\n"
    assert not lock_path(target).exists()  # released: nothing left beside the output


def test_the_holder_is_named_while_it_lives_and_reading_takes_no_lock(tmp_path: Path) -> None:
    target = tmp_path / "run"
    assert holder(target) is None  # no lock file
    with held_elsewhere(target) as proc:
        assert holder(target) == proc.pid
        # asking did not take the lock from its holder
        with pytest.raises(BusyError), exclusive(target, "hint"):
            pass
    # killed -9: its pid stays in the file, but no process has it
    assert lock_path(target).exists() and holder(target) is None
    with exclusive(target, "hint"):  # asking did not keep the lock either
        assert holder(target) == os.getpid()


def test_a_run_read_while_a_writer_holds_it_without_a_manifest_says_so(tmp_path: Path) -> None:
    from metarec.errors import ModelError
    from metarec.recommender import Recommender

    run = tmp_path / "run"
    run.mkdir()  # a train into a new folder: no recommender.json until it saves
    with held_elsewhere(run) as proc, pytest.raises(ModelError) as refused:
        Recommender.load(run)
    assert f"process {proc.pid} is writing the folder" in str(refused.value)
    with pytest.raises(ModelError, match="not a metarec run"):
        Recommender.load(run)


def test_one_process_cannot_enter_twice_and_other_folders_are_free(tmp_path: Path) -> None:
    with exclusive(tmp_path / "a", "hint"):
        with exclusive(tmp_path / "b", "hint"):  # another output: its own lock
            pass
        with pytest.raises(BusyError), exclusive(tmp_path / "a", "hint"):
            pass
    with exclusive(tmp_path / "a", "hint"):  # released on leaving the block, even by raising
        pass


def test_a_folder_named_through_a_link_is_the_same_folder(tmp_path: Path) -> None:
    # the lock sat beside the name given: train into runs/L and into runs/Llink -> L
    # wrote one folder at once, the second resuming from the first's live checkpoint
    (tmp_path / "L").mkdir()
    (tmp_path / "Llink").symlink_to("L")
    (tmp_path / "parent-link").symlink_to(tmp_path)
    with exclusive(tmp_path / "L", "hint"):
        for alias in (tmp_path / "Llink", tmp_path / "parent-link" / "L"):
            with pytest.raises(BusyError, match="is writing it"), exclusive(alias, "hint"):
                pass


def test_the_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError), exclusive(tmp_path / "run", "hint"):
        raise ValueError("training failed")
    assert not lock_path(tmp_path / "run").exists()
    with exclusive(tmp_path / "run", "hint"):
        pass


@pytest.mark.parametrize("command", ["benchmark", "train"])
def test_the_cli_refuses_a_folder_another_run_is_writing(
    command: str, shared_data: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    if command == "benchmark":
        target = tmp_path / "p2-ml-100k"
        args = ["benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--out", str(tmp_path)]
    else:
        target = tmp_path / "run"
        args = ["train", "--dataset", "ml-100k", "--out", str(target), "--set", "encoder=tfidf"]
    with held_elsewhere(target) as holder:
        proc = cli(*args, "--data", str(shared_data), "--quiet")
    assert proc.returncode == 2
    assert f"process {holder.pid} is writing it" in proc.stderr and "--out" in proc.stderr
    assert "Traceback" not in proc.stderr
    # nothing of the refused run: no kept progress, no run files (the killed holder's
    # lock file stays, unlocked, and is reused)
    assert [p.name for p in tmp_path.iterdir() if p != lock_path(target)] == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX locks")
def test_a_link_planted_as_the_lock_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    # the lock is emptied and given our pid: through a link, any file the user can
    # write (a shared folder's neighbour could plant one) lost its contents
    from metarec.errors import ConfigError

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    lock_path(tmp_path / "run").symlink_to(victim)
    with (
        pytest.raises(ConfigError, match=r"\.run\.lock is a symbolic link, not a lock"),
        exclusive(tmp_path / "run", "hint"),
    ):
        pass
    assert victim.read_text() == "keep me"


def test_a_run_folder_that_is_not_there_is_said_to_be_missing(tmp_path: Path) -> None:
    # was "not a metarec run (no recommender.json)", as if a folder were there
    from metarec.errors import ModelError
    from metarec.recommender import Recommender

    with pytest.raises(
        ModelError, match=r"/typo: no such file or directory; expected a metarec run's"
    ):
        Recommender.load(tmp_path / "typo")

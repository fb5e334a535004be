"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from metarec.cli import main

# pytest-xdist runs the suite in several worker processes (addopts in pyproject.toml):
# each takes its share of the cores for torch, so two workers on two cores do not run
# four threads against each other. Subprocesses the tests start keep torch's default.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, torch.get_num_threads() // _WORKERS))

# The MovieLens copies kept next to the project (never inside it): ../shared/data.
_FALLBACK_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """metarec's cache (encoded catalogues, the unpacked bundled model) in this run's
    temporary folder, never the user's ``~/.cache/metarec``: vectors left there by an
    earlier run, or written meanwhile by another worker, decided what tests read.
    Subprocesses inherit it; a test that needs a cache of its own sets its own."""
    cache = tmp_path_factory.mktemp("metarec-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METAREC_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding ml-100k/ and ml-1m/ (RecBole atomic files), or skip."""
    env = os.environ.get("METAREC_DATA")
    for candidate in ([Path(env)] if env else []) + [_FALLBACK_DATA]:
        if (candidate / "ml-100k").is_dir() or (candidate / "ml-1m").is_dir():
            return candidate.resolve()
    pytest.skip("MovieLens not found: set METAREC_DATA or place it at ../shared/data")


@dataclass
class CliResult:
    """What ``metarec`` returned and printed (the fields of a CompletedProcess)."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``metarec ARGS`` run in this process. Error-path tests use it: each subprocess
    pays the seconds that importing torch costs, and these tests only need ``main``'s
    exit code and messages; end-to-end tests still start the real command."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture()
def held_lock() -> Iterator[Callable[[Path], int]]:
    """``hold(path)``: another process takes ``path``'s writer lock (what `train`,
    `evaluate` and `ensemble` take) and keeps it until the test ends; returns its pid."""
    holders: list[subprocess.Popen[str]] = []

    def hold(path: Path) -> int:
        script = (
            "import sys\nfrom metarec.locks import exclusive\n"
            "with exclusive(sys.argv[1], 'hint'):\n print('held', flush=True); sys.stdin.read()"
        )
        holder = subprocess.Popen(
            [sys.executable, "-c", script, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        return holder.pid

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()


@pytest.fixture()
def fsync_log(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths ``os.fsync`` is called on from now, in order (read from Linux's /proc)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name a file descriptor's path")
    paths: list[Path] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        paths.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return paths

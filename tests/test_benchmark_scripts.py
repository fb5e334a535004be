"""The scripts in benchmarks/ import what the library still has and answer bad input
as `metarec` does (one line, exit 2), before any work: they are run rarely, so a
renamed function or a silently accepted 0 would otherwise surface only when a result
is being reproduced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=BENCHMARKS
    )


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_starts(script: str) -> None:
    proc = _run(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--data" in proc.stdout and "--out" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, needle",
    [
        (["compiled_outer_step.py", "--epochs", "0"], "argument --epochs: must be > 0, got 0"),
        (["time_popularity.py", "--data", "/no/such/folder"], "/no/such/folder: no such folder"),
        (["stacked_variants.py", "x", '{"nope": 1}'], "['nope'] are not StackedRanker options"),
        (["time_popularity.py", "--out", "afile"], "--out afile: is a file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "afile" in args:
        (tmp_path / "afile").write_text("")
        args = [str(tmp_path / a) if a == "afile" else a for a in args]
        needle = needle.replace("afile", str(tmp_path / "afile"))
    proc = _run(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and needle in proc.stderr.strip().splitlines()[-1]

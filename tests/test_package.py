"""The package's surface: every public name resolves, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import metarec


def test_every_public_name_resolves() -> None:
    assert set(metarec._HOME) == set(metarec.__all__)  # the loader's table and the exports
    for name in metarec.__all__:
        assert getattr(metarec, name) is not None, name
    assert set(dir(metarec)) >= set(metarec.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Recomender'"):
        metarec.Recomender  # noqa: B018
    with pytest.raises(AttributeError):
        metarec._private  # noqa: B018


def test_subpackages_are_attributes_of_a_fresh_import() -> None:
    """`import metarec; metarec.data.load_dataset(...)` works, as it did when the
    package imported its subpackages eagerly (a fresh process: nothing loaded yet)."""
    code = "import metarec; print(metarec.data.load_dataset is metarec.load_dataset)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


def test_the_cli_starts_without_torch() -> None:
    """`metarec --help` and argument errors should not wait seconds for torch and pandas;
    the public names load on first use (PEP 562)."""
    code = "import sys, metarec, metarec.cli; print(sorted({'torch', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["metarec", "metarec.cli"])
def test_python_dash_m_runs_the_command(module: str) -> None:
    # `python -m metarec` said "is a package and cannot be directly executed"
    out = subprocess.run(
        [sys.executable, "-m", module, "data", "validate", "--interactions", "/nonexistent.csv"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "metarec: error: /nonexistent.csv: file not found"

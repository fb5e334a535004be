"""The package's surface: every public name resolves, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_every_package_the_code_imports_is_declared() -> None:
    """An import that works only because another dependency pulls its package in breaks
    when that one stops doing so (pydantic and starlette came through fastapi,
    transformers through sentence-transformers, undeclared)."""
    import ast
    import re
    from importlib.metadata import packages_distributions

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    root = Path(metarec.__file__).parent
    imported: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"metarec"}

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    # beside the tests (a clone or the sdist), not the package, which may be installed
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = {k: v for k, v in project["optional-dependencies"].items() if k != "dev"}
    requirements = [*project["dependencies"], *(r for group in extras.values() for r in group)]
    declared = {norm(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}  # type: ignore[union-attr]
    dists = packages_distributions()
    undeclared = {
        module
        for module in third_party
        if not {norm(d) for d in dists.get(module, [module])} & declared
    }
    assert third_party and not undeclared, sorted(undeclared)

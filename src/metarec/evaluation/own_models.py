"""Models of one's own in a benchmark: a researcher's :class:`ScoringModel` judged in
the same run as metarec and every peer, on the same splits, metrics and tests.

A model is given as an unfitted :class:`ScoringModel` (copied for each fold, so
every fold fits a fresh one) or a factory returning one (called for each fold;
with the run's seed when it takes a ``seed`` parameter). At the shell it is
``--model NAME=MODULE:FACTORY``, imported as ``uvicorn`` imports an app: the
current folder first on the import path.

Such a model is reported as a peer: metarec's best model is still the reference
its significance marks compare against, and it stays out of the ensemble (which
blends metarec's models and the protocol's anchor). A run's kept progress is
keyed on the names of the model's class and factory, the text of the files that
define them, the classes it inherits from and the modules of one's own they import
by name (in the current folder or beside the model's files), and the settings the
built model holds, so an edited model file or another constructor argument starts
the run over instead of mixing figures from two versions of the code.
"""

from __future__ import annotations

import builtins
import copy
import difflib
import functools
import hashlib
import importlib
import inspect
import json
import re
import site
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from metarec.errors import ConfigError
from metarec.models.base import ScoringModel

OwnModel = ScoringModel | Callable[..., ScoringModel]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# names the run's own rows use: a model of one's own under them would replace them
_RESERVED = ("metarec-", "bias-median")


def check_names(names: Iterable[str], taken: Iterable[str]) -> None:
    """ConfigError for a name that is not fit for a report row or is another model's
    (``taken``: every peer's name, not only this run's: a model named ``popularity`` in
    a run without that peer would be taken for it as the ensemble's member and the A/B
    test's arm)."""
    taken = set(taken)
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(
                f"models: name {name!r} must start with a letter or digit and hold only "
                "letters, digits, '.', '_' and '-'"
            )
        if name.startswith(_RESERVED[0]) or name == _RESERVED[1]:
            raise ConfigError(
                f"models: name {name!r} is metarec's own (names starting 'metarec-', and "
                "'bias-median', are its rows); choose another"
            )
        if name in taken:
            raise ConfigError(
                f"models: name {name!r} is a peer's, in this run or not (the rows, the "
                "ensemble and the A/B test find their anchors by it); choose another"
            )


def load_factory(spec: str) -> tuple[str, Callable[..., ScoringModel]]:
    """``"NAME=MODULE:ATTR"`` → (NAME, the object ATTR names in MODULE)."""
    name, eq, target = spec.partition("=")
    if not eq or not name.strip() or ":" not in target:
        raise ConfigError(
            f"--model {spec!r}: expected NAME=MODULE:FACTORY, e.g. "
            "mine=mymodels:MyModel (a ScoringModel class or a function returning one)"
        )
    return name.strip(), import_factory(target, f"--model {spec!r}")


def import_factory(target: str, where: str) -> Callable[..., ScoringModel]:
    """The callable ``"MODULE:ATTR"`` names, imported with the current folder first on
    the path (a ``mymodels.py`` beside the command), as ``uvicorn`` imports an app;
    ``where`` (the flag and its value) begins each error."""
    module_name, colon, attr = target.partition(":")
    if not colon or not module_name or not attr:
        raise ConfigError(
            f"{where}: expected MODULE:FACTORY, e.g. mymodels:MyModel (a ScoringModel "
            "class or a function returning one)"
        )
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        stem = Path(module_name).stem or "mymodels"
        # said of a path whether or not the file is there: "is a file" of no file misled
        there = "no such file" if not Path(module_name).is_file() else "a file"
        raise ConfigError(
            f"{where}: {module_name!r} is a path ({there}), not a module name; give the "
            f"module's name ({stem}:{attr}) and run from its folder or put that folder on "
            "PYTHONPATH"
        )
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        wanted = exc.name or ""
        if wanted != module_name and not module_name.startswith(f"{wanted}."):
            # the module was found; one it imports is not installed
            raise ConfigError(
                f"{where}: importing {module_name} failed: it imports {wanted!r}, which is "
                "not installed (pip install it, or remove the import)"
            ) from None
        raise ConfigError(
            f"{where}: no module {exc.name!r} (looked in {cwd}, on PYTHONPATH and in the "
            "installed packages: run from the module's folder, or add it to PYTHONPATH)"
        ) from None
    except Exception as exc:  # the user's module failed while being imported
        raise ConfigError(
            f"{where}: importing {module_name} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            near = difflib.get_close_matches(part, [n for n in dir(obj) if n[:1] != "_"], 1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"{where}: {module_name} has no {attr!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(
            f"{where}: {module_name}:{attr} is of type {type(obj).__name__}, not a "
            "ScoringModel class or a function returning one"
        )
    return obj


def takes_seed(given: OwnModel) -> bool:
    """Whether each fold's (or check's) seed reaches the model: a factory with a
    ``seed`` parameter. A model given built is copied, its seed fixed."""
    if isinstance(given, ScoringModel) or not callable(given):
        return False
    try:
        return "seed" in inspect.signature(given).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


def build(name: str, given: OwnModel, seed: int, *, field: str = "models") -> ScoringModel:
    """A fresh, unfitted model for one fold (``field``: what messages name as given)."""
    if isinstance(given, ScoringModel):
        try:
            return copy.deepcopy(given)  # each fold fits its own, never the last fold's
        except Exception as exc:  # a lock, a file handle, an open connection
            raise ConfigError(
                f"{field}: {name!r} cannot be copied for each fold ({type(exc).__name__}: "
                f"{exc}); give a factory instead (a class, or a function returning a model)"
            ) from None
    if not callable(given):
        raise ConfigError(
            f"{field}: {name!r} is of type {type(given).__name__}; expected an unfitted "
            "ScoringModel or a factory returning one"
        )
    try:
        model = given(seed=seed) if takes_seed(given) else given()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"{field}: building {name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(model, ScoringModel):
        raise ConfigError(
            f"{field}: {name!r} gave an object of type {type(model).__name__}; expected a "
            "ScoringModel (metarec.models.base): fit(data) returning itself, "
            "score_catalogue(tasks, users=None) and n_items"
        )
    return model


def fingerprint(name: str, given: OwnModel, seed: int) -> dict[str, Any]:
    """What identifies a model for a resumed run: its factory's and class's qualified
    names, a digest of the files that define them, and a digest of the settings the
    built model holds (``MyModel(dim=32)`` against ``dim=64``, or two ``partial``
    factories, share their code but not their figures)."""
    model = build(name, given, seed)  # refuses a bad factory before the data loads
    # the class and every class it inherits from outside metarec and installed
    # packages (a base class in another file of one's own is the model's code too),
    # and the factory
    parts: list[Any] = [type(model), *(c for c in type(model).__mro__[1:] if _ones_own(c))]
    factory = given
    while isinstance(factory, functools.partial):  # its settings are in the model's
        factory = factory.func
    if not isinstance(given, ScoringModel) and factory not in parts:
        parts.append(factory)
    names, digest, sourceless, read = [], hashlib.sha256(), [], set()
    for part in parts:
        qualname = f"{getattr(part, '__module__', '?')}:{getattr(part, '__qualname__', '?')}"
        names.append(qualname)
        if isinstance(part, type) and not _ones_own(part):
            continue  # metarec's own class given as a model: named, not read
        try:
            source = inspect.getsourcefile(part)
        except (TypeError, OSError):  # OSError: a class of `python -c`'s __main__ (3.10+)
            source = None
        if source is not None and Path(source).is_file():
            source = str(Path(source).resolve())
            if source not in read:  # two classes of one file: its text once
                read.add(source)
                digest.update(Path(source).read_bytes())
        else:
            sourceless.append(qualname)
    # the researcher's modules the model's code imports (a helper that builds its
    # features is its code as much as the class is), in a stable order
    for source in sorted(_imported_own_files(parts, read) - read):
        digest.update(Path(source).read_bytes())
    if sourceless:
        warnings.warn(
            f"models: {name!r}: no source file for {', '.join(sourceless)} (defined in a "
            "notebook or at the prompt?), so an edit to it is not seen: a resumed run "
            "would mix its figures with the old code's; run with resume=False "
            "(--no-resume) after editing it",
            stacklevel=4,  # the caller of run_benchmark
        )
    settings = json.dumps(_settings(vars(model)), sort_keys=True)
    return {
        "name": name,
        "code": names,
        "source": digest.hexdigest()[:16],
        "settings": hashlib.sha256(settings.encode()).hexdigest()[:16],
    }


def _imported_own_files(parts: Iterable[Any], sources: Iterable[str]) -> set[str]:
    """The source files of the researcher's modules reachable by import from the
    modules defining ``parts``: a module a global names, or the module a global
    function or class comes from (``from helpers import features``), and onwards.
    Only modules in the current folder or a folder of ``sources`` (the parts' own
    files) count (a package installed with ``pip install --user`` or put on
    ``PYTHONPATH`` is not the model's code); a constant imported by name, or a module
    imported inside a function, is not followed."""
    roots = {Path.cwd().resolve(), *(Path(source).parent for source in sources)}
    todo = [sys.modules.get(getattr(part, "__module__", "") or "") for part in parts]
    seen: set[str] = set()
    files: set[str] = set()
    while todo:
        module = todo.pop()
        if module is None or module.__name__ in seen:
            continue
        seen.add(module.__name__)
        source = _own_module_file(module)
        if source is None or not any(Path(source).is_relative_to(r) for r in roots):
            continue
        files.add(source)
        for value in list(vars(module).values()):
            if inspect.ismodule(value):
                todo.append(value)
            elif inspect.isclass(value) or inspect.isroutine(value):
                todo.append(sys.modules.get(getattr(value, "__module__", "") or ""))
    return files


def _own_module_file(module: Any) -> str | None:
    """A module's source file when it is the researcher's: not metarec's, not an
    installed package's or the standard library's, and Python source."""
    if module.__name__.split(".")[0] == "metarec":
        return None
    source = getattr(module, "__file__", None)
    if not isinstance(source, str) or not source.endswith(".py") or not Path(source).is_file():
        return None
    resolved = str(Path(source).resolve())
    return None if installed_path(resolved) else resolved


def _ones_own(cls: type) -> bool:
    """A class of the researcher's code: not metarec's (its version is the run's), not
    an installed package's or the standard library's, which change with an upgrade."""
    module = getattr(cls, "__module__", "") or ""
    if module == "builtins" and getattr(builtins, cls.__name__, None) is cls:
        return False  # object, dict, ...
    if module.split(".")[0] in ("metarec", "abc", "typing"):
        return False
    try:
        source = inspect.getsourcefile(cls)
    except (TypeError, OSError):  # OSError: __main__ without a file (`python -c`)
        return module in ("__main__", "builtins")  # defined at the prompt: no file
    return source is None or not installed_path(str(Path(source).resolve()))


def installed_path(resolved: str) -> bool:
    """Whether a resolved file path lies with installed packages or the standard library."""
    return any(resolved.startswith(p) for p in _INSTALLED)


# where installed packages and the standard library live (``pip install --user`` and
# Debian's dist-packages too); not the whole prefix: with a system Python it is /usr,
# and an app in /usr/src/app was taken for an installed package
_LIBRARY_PATHS = ("stdlib", "platstdlib", "purelib", "platlib")
_INSTALLED = tuple(
    str(Path(p).resolve())
    for p in {
        *(sysconfig.get_paths().get(key) for key in _LIBRARY_PATHS),
        *site.getsitepackages(),
        site.getusersitepackages(),
    }
    if p and Path(p).is_dir() and Path(p).resolve() != Path.cwd().resolve()
)


def _settings(value: Any, depth: int = 0) -> Any:
    """A model's attributes as JSON that is the same across processes: numbers and
    text as they are, arrays by a digest of their bytes, other objects by their type
    and (a few levels down) their own attributes; never a memory address."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_settings(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _settings(v, depth + 1) for k, v in value.items()}
    import pandas as pd  # here: the CLI imports this module before it needs pandas

    if isinstance(value, set | frozenset):  # its repr's order changes from process to process
        return sorted((_settings(v, depth + 1) for v in value), key=repr)
    if isinstance(value, pd.Series | pd.DataFrame | pd.Index):
        # by its values and labels: its attributes end in reprs ("NumpyBlock: 1000
        # dtype: float64") that two frames of other values share
        try:
            hashed = pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes()
        except TypeError:  # cells pandas cannot hash (lists, sets, arrays): each one's
            # settings, as an attribute's (exact floats, sets in order); their JSON kept
            # ten digits and set order, so other settings matched, and one never did
            table = value.to_series() if isinstance(value, pd.Index) else value
            frame = table.to_frame() if isinstance(table, pd.Series) else table
            # by position: a name two columns share reads as a frame
            cells = [
                [_settings(v, depth + 1) for v in frame.iloc[:, j].tolist()]
                for j in range(frame.shape[1])
            ]
            labels = [_settings(i, depth + 1) for i in frame.index.tolist()]
            hashed = json.dumps([labels, cells], default=repr).encode()
        digest = hashlib.sha256(hashed)
        if isinstance(value, pd.DataFrame):
            digest.update(repr([(str(c), str(t)) for c, t in value.dtypes.items()]).encode())
        else:
            digest.update(f"{value.name!r}{value.dtype}".encode())
        return f"{type(value).__name__}{value.shape}:" + digest.hexdigest()[:16]
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return (
            f"{value.dtype}{value.shape}:"
            + hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        )
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, functools.partial):
        return [kind, _settings(value.func, depth + 1), _settings(value.args, depth + 1),
                _settings(value.keywords, depth + 1)]  # fmt: skip
    if depth < 3 and hasattr(value, "__dict__") and not inspect.isroutine(value):
        return [kind, _settings(vars(value), depth + 1)]
    return re.sub(r" at 0x[0-9a-fA-F]+", "", kind if inspect.isroutine(value) else repr(value))


def fingerprints(models: Mapping[str, OwnModel], seed: int) -> list[dict[str, Any]]:
    return [fingerprint(name, given, seed) for name, given in models.items()]

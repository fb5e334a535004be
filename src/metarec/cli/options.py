"""Options several commands share: where the data is, and how training is configured.

Nothing here imports torch or pandas: ``metarec --help`` and a mistyped option
must answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from metarec.errors import ConfigError
from metarec.file_options import FILE_ARGS, file_flags

DEFAULT_RUN = "runs/quickstart"


def seed(value: str) -> int:
    """``--seed``, ``--split-seed``: numpy's generators take a non-negative integer, and
    a training config's seed is below 2**32 (4294967296 was refused as ``--set seed``
    and taken as ``--split-seed``; a larger one failed after the data loaded, naming
    ``seed``)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}") from None
    if not 0 <= n < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 4294967295, got {n}")
    return n


def path_arg(value: str) -> str:
    """A file or folder option: an empty string would mean the current folder."""
    if not value.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return value


def store_url(value: str) -> str:
    """``--db``: an empty URL is refused, not read as "use the default store"."""
    if not value.strip():
        raise argparse.ArgumentTypeError(
            "expected a store URL (sqlite:///feedback.db, postgresql://...), got an empty string"
        )
    return value


# the store's URL, where a password in --db would be readable by every account in ps
DB_ENV = "METAREC_DB"


def db_from_env(given: str | None, *, required: bool) -> str | None:
    """``--db`` wins, then ``$METAREC_DB``; None where neither is set and the command
    has a default. An empty ``$METAREC_DB`` is refused, as an empty ``--db`` is."""
    if given is not None:
        return given
    value = os.environ.get(DB_ENV)
    if value is None:
        if required:
            raise ConfigError(f"--db: required, a store URL (sqlite:///feedback.db, "
                              f"postgresql://...), or set ${DB_ENV}")  # fmt: skip
        return None
    if not value.strip():
        raise ConfigError(f"${DB_ENV}: empty; give a store URL, or unset it")
    return value


@contextlib.contextmanager
def named_as_flags(
    flags: Mapping[str, str], within: Mapping[str, str] | None = None
) -> Iterator[None]:
    """The library names its parameters in its errors (``max_items: must be >= 1``); a
    person at the shell typed a flag (``--max-items``): rewrite the name a ConfigError
    starts with, by ``flags`` (parameter -> flag), and advice anywhere in it by
    ``within`` (``force=True`` -> ``--force``)."""
    try:
        yield
    except ConfigError as exc:
        message = str(exc)
        for said, flag in (within or {}).items():
            message = message.replace(said, flag)
        name, sep, rest = message.partition(":")
        if sep and name in flags:
            message = f"{flags[name]}{sep}{rest}"
        if message == str(exc):
            raise
        raise ConfigError(message) from None


def check_writable(value: str | os.PathLike[str], flag: str, *, file: bool = False) -> None:
    """Refuse at once an output the command could never write, naming the flag and the
    path given: found only at the end of a long job, the error would name a hidden
    lock or temporary file and the job's work would be lost. A folder output is
    probed where it (or its nearest existing parent) is; ``file``: the output is a
    file, so its folder is. Nothing is left behind."""
    target = Path(value)
    if file and target.is_dir():
        raise ConfigError(f"{flag} {value}: is a folder; a file name is needed")
    if not file and target.exists() and not target.is_dir():
        raise ConfigError(f"{flag} {value}: is a file; a folder is needed")
    from metarec.io import nearest_existing  # here: importing io imports torch

    probe = nearest_existing(target.parent if file else target)
    if not probe.is_dir():
        raise ConfigError(f"{flag} {value}: {probe} is a file; a folder is needed")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{flag} {value}: cannot write in {probe} ({exc.strerror or exc})"
        ) from None


# what `train` leaves in a run folder, finished or (checkpoint/) interrupted; spelled
# out, as metarec.trained_users (SPLIT, TRAINED_USERS) imports torch
RUN_ENTRIES = frozenset({
    "recommender.json", "model.safetensors", "items.json", "config.json", "split.json",
    "trained-users.json", "metrics.json", "heldout.json", "retrain.json", "checkpoint",
})  # fmt: skip


def check_run_out(value: str | os.PathLike[str], flag: str) -> None:
    """Refuse a run's output folder that holds something other than a run: `train`
    writes its files into the folder it is given, and mixed a model into a folder of
    notes (or into an ensemble's, which then read as neither). A run folder is trained
    again (resumed from its checkpoint where the command is the same); a new or empty
    folder is made a run."""
    out = Path(value)
    if not out.is_dir():
        return
    from metarec.models.persist import is_ensemble_dir  # here: persist imports torch

    if is_ensemble_dir(out):
        raise ConfigError(
            f"{flag} {value}: is an ensemble folder; train writes a run, give a new folder"
        )
    # what a run folder may hold beside the run: the command's own log (`2> run/log`
    # creates it first) and a fresh file system's lost+found
    names = sorted(
        p.name
        for p in out.iterdir()
        if not (p.name.startswith(".") or p.name.endswith(".log") or p.name == "lost+found")
    )
    if names and not RUN_ENTRIES.intersection(names):
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3:,} more" if len(names) > 3 else "")
        raise ConfigError(
            f"{flag} {value}: holds {shown} and no run; a run's files are written into "
            "the folder given, so give a new or empty one"
        )


def add_data_args(
    p: argparse.ArgumentParser, *, recorded: bool = False, default: str | None = None
) -> None:
    """The data options. ``recorded``: the command reads a run's recorded data unless
    told otherwise (evaluate, ensemble, retrain); ``default``: the data set read when
    none is named (quickstart and check-model: ml-100k), where ``--data`` is the folder
    that holds it rather than a data set's own folder."""
    title = "data (a named dataset, a folder, or your own files"
    title += "; default: the data the run recorded)" if recorded else ")"
    g = p.add_argument_group(title)
    g.add_argument(
        "--dataset",
        help="ml-100k, ml-1m or ml-latest-small" + (f" (default {default})" if default else ""),
    )
    if default:
        g.add_argument(
            "--data",
            type=path_arg,
            help=f"folder holding {default}/ (or the --dataset named); default: "
            "$METAREC_DATA, the cache, else GroupLens' download",
        )
    else:
        g.add_argument(
            "--data",
            type=path_arg,
            help="the dataset's own folder (RecBole atomic or GroupLens raw files), or with "
            "--dataset the folder holding it",
        )
    add_file_args(g)


def add_file_args(g: Any) -> None:
    # "" is refused, not read as the option left out (or the current folder)
    g.add_argument("--interactions", type=path_arg, help="CSV/TSV/Parquet/JSON Lines of ratings")
    g.add_argument("--items", type=path_arg, help="CSV/TSV/Parquet/JSON Lines of items")
    g.add_argument("--users", type=path_arg, help="CSV/TSV/Parquet/JSON Lines of users")
    # no defaults here: unset, a run's recorded column names fill them in where its
    # files are given again (retrain, evaluate, ensemble); loading reads unset as the
    # default names
    g.add_argument("--user-col", help="the user id column (default: user_id)")
    g.add_argument("--item-col", help="the item id column (default: item_id)")
    g.add_argument("--rating-col", help="the rating column (default: rating)")
    g.add_argument("--timestamp-col", help="the time column (default: timestamp, if present)")
    g.add_argument("--title-col", help="the items file's title column (default: title)")
    g.add_argument("--genre-col", help="the items file's genres column (default: genres)")
    g.add_argument("--year-col", help="the items file's year column (default: year)")
    g.add_argument("--text-cols", default="", help="comma-separated extra item text columns")
    g.add_argument(
        "--text-template",
        help="how an item's encoder text is laid out, e.g. '{title}. Author: {author}. "
        "Shelves: {genres}.' (fields: title, year, genres and the --text-cols but text; a "
        "missing part goes with its brackets and its 'Label:'; default: '{title} ({year}). "
        "Genres: {genres}.', then the --text-cols and the file's text column)",
    )
    g.add_argument(
        "--user-feature-cols",
        default="",
        help="comma-separated user feature columns (default: every users-file column but its id)",
    )
    g.add_argument(
        "--rating-range",
        help="min,max (default: from the data; a benchmark of a known dataset keeps its "
        "fixed scale and refuses it)",
    )
    g.add_argument(
        "--items-id-col",
        dest="item_id_col",
        metavar="ITEMS_ID_COL",
        help="the items file's id column (default: --item-col)",
    )
    g.add_argument("--users-id-col", help="the users file's id column (default: --user-col)")
    g.add_argument(
        "--strict",
        action="store_true",
        help="fail on the first bad value (rating, unknown item, empty text) instead of "
        "dropping it and reporting (data validate lists them all either way; not for a "
        "benchmark of a known dataset, whose cleaning is fixed)",
    )


def add_set_arg(p: argparse.ArgumentParser, what: str) -> None:
    """``--set KEY=VALUE`` (repeatable): ``what`` it overrides, for the help."""
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help=f"{what} (repeatable; a key given again overrides the earlier value)",
    )


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=path_arg,  # "" trained with the defaults without a word (twice: refused,
        # as every option of one value is, metarec.cli._StoreOnce)
        help="TOML file ([train] table or top-level keys), or a run's config.json",
    )
    add_set_arg(p, "override a config value")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """``--device`` for commands that load saved runs or ensembles."""
    p.add_argument(
        "--device",
        type=device_name,
        default=None,
        help="torch device for the loaded models: auto, cpu, cuda, cuda:N, mps or xpu "
        "(default: the one the run was trained for, or auto where this machine lacks it)",
    )


def device_name(value: str) -> str:
    """argparse type for ``--device``: a bad name is a usage error (exit 2)."""
    from metarec.device import check_device

    try:
        return check_device(value, "--device")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_file_args(args: argparse.Namespace) -> None:
    """Options for your own files given without ``--interactions`` would be ignored:
    refused, as is ``--interactions`` beside ``--dataset``, and ``--data`` where it would
    not be read."""
    if getattr(args, "interactions", None):
        if getattr(args, "dataset", None):
            raise ConfigError("give --dataset or --interactions (your own files), not both")
        if data_or_root(args) is not None:
            raise ConfigError(
                "--data: the folder of data sets, or of RecBole atomic files; your own files "
                "(--interactions) are read from their paths, so it would not be read"
            )
        return
    _check_data_is_read(args)
    # --rating-range and --strict also apply to a folder of atomic files
    for flag, attr, default in FILE_ARGS[1:]:
        if attr != "rating_range" and getattr(args, attr, default) != default:
            raise ConfigError(f"{flag}: describes your own files; give --interactions too")


def _check_data_is_read(args: argparse.Namespace) -> None:
    """``--data`` beside ``--dataset`` folders only: a known data set's name with
    ``--data`` is read from that folder, a folder of one's own is read as itself, so
    ``--data`` was dropped without a word."""
    given = getattr(args, "dataset", None)
    names = [] if not given else [given] if isinstance(given, str) else list(given)
    data = data_or_root(args)
    if data is None or not names:
        return
    from metarec.data import known_names

    own = [Path(n).expanduser().exists() or Path(n + ".inter").exists() for n in names]
    if not any(n in known_names() for n in names) and all(own):  # else: "not known"
        raise ConfigError(
            f"--data {data}: the folder that holds known data sets ({', '.join(known_names())}"
            f"); --dataset {names[0]} is a folder or prefix of its own, so --data would not "
            "be read"
        )


def data_or_root(args: argparse.Namespace) -> str | None:
    """``--data`` or its alias ``--root``; both, naming different folders, is refused
    (argparse would keep whichever came last without a word)."""
    data, root = getattr(args, "data", None), getattr(args, "root", None)
    if data is not None and root is not None and Path(data).resolve() != Path(root).resolve():
        raise ConfigError(f"--data {data} and --root {root}: two different folders; give one")
    return data if data is not None else root


def data_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The data options as a spec (:mod:`metarec.data.spec`), paths made absolute."""
    from metarec.data.spec import make_spec

    check_file_args(args)
    return make_spec(vars(args))


def file_args_command(args: argparse.Namespace) -> str:
    """The own-files options as given (non-default ones), for a reproduction command."""
    return shlex.join(file_flags(vars(args)))


def train_config(args: argparse.Namespace) -> Any:
    """The TrainConfig of ``--config`` (or the defaults) with every ``--set`` applied."""
    from metarec.config import TrainConfig
    from metarec.device import resolve_device

    config = getattr(args, "config", None)
    cfg = TrainConfig.from_toml(config) if config else TrainConfig()
    sets = list(getattr(args, "set", None) or [])
    cfg = cfg.with_overrides(sets)
    # a device this machine lacks: refused before the data loads, naming where it was asked
    if any(s.split("=", 1)[0].strip() == "device" for s in sets):
        where = "--set device"
    else:
        where = f"{config}: device" if config else "device"
    resolve_device(cfg.device, where)
    return cfg


def comma_list(value: str | None, flag: str) -> list[str] | None:
    """``"a,b"`` → ["a", "b"], and ``""`` → [] (none, said on purpose); an empty name
    within (``","``, ``"a,,b"``) or one given twice is a ConfigError naming ``flag``:
    they were dropped without a word, so ``--peers ","`` fitted no peer and
    ``--algorithms maml,maml`` fitted MAML twice."""
    if value is None:
        return None
    if not value.strip():
        return []
    names = [v.strip() for v in value.split(",")]
    if not all(names):
        raise ConfigError(f"{flag}: expected comma-separated names, got {value!r}")
    _once(names, flag)
    return names


def int_list(value: str, flag: str) -> list[int]:
    """``"1,3,5"`` → [1, 3, 5]; anything else, or a number given twice, is a
    ConfigError naming ``flag``."""
    try:
        numbers = [int(v) for v in value.split(",")]
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated integers, got {value!r}") from None
    _once(numbers, flag)
    return numbers


def _once(values: list[Any], flag: str) -> None:
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise ConfigError(f"{flag}: {twice!r} given twice")

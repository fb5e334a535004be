"""Data specs: where a data set comes from, as a plain dict a run can record.

A spec has the keys of :data:`SPEC_KEYS` (the CLI's data options, one for
one). ``metarec train`` saves the spec it was given in the run's metadata, so
``evaluate``, ``ensemble``, ``abtest`` and ``retrain`` reload the same data
without being told again. Paths in a spec are absolute, so a run folder can be
used from any working directory.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metarec.data.schema import Dataset
from metarec.data.text import DEFAULT_TEMPLATE, ItemTextConfig, template_fields
from metarec.errors import ConfigError, DataError, MetarecError, ModelError
from metarec.values import is_whole

SPEC_KEYS = (
    "dataset",
    "data",
    "interactions",
    "items",
    "users",
    "user_col",
    "item_col",
    "rating_col",
    "timestamp_col",
    "title_col",
    "genre_col",
    "year_col",
    "text_cols",
    "text_template",
    "user_feature_cols",
    "rating_range",
    "strict",
    "item_id_col",
    "users_id_col",
)
PATH_KEYS = ("data", "interactions", "items", "users")
# how a table's columns are read (and its scale): what a run trained on files records
# beside the paths, and what the same files given again still need
COLUMN_KEYS = tuple(k for k in SPEC_KEYS if k not in (*PATH_KEYS, "dataset", "strict"))


def make_spec(values: dict[str, Any]) -> dict[str, Any]:
    """A spec from ``values`` (missing keys become None), with its paths made absolute."""
    spec: dict[str, Any] = {k: values.get(k) for k in SPEC_KEYS}
    for k in PATH_KEYS:
        if spec[k]:
            given = Path(spec[k])
            try:
                spec[k] = str(Path(spec[k]).resolve())
            except (OSError, RuntimeError):  # RuntimeError: a symlink loop before 3.13
                raise DataError(
                    "is a symbolic link that points back to itself (a loop)", path=spec[k]
                ) from None
            if given.is_symlink() and not given.exists():
                # resolved, it was "/nonexistent: file not found", a path the user never gave
                raise DataError(
                    f"is a symbolic link to {os.readlink(given)}, which does not exist; give "
                    "the file itself",
                    path=given,
                )
    return spec


def spec_problem(spec: object) -> str | None:
    """What is wrong with ``spec`` as a data spec, from the key at fault if one is
    ("dataset: expected text ..."; None: nothing): an object whose keys
    are data options (a misspelt one would be ignored, and the data loaded from what is
    left), each value text or null as the command line gives them ("1,5", "a,b"), and
    ``strict`` true or false."""
    if not isinstance(spec, dict):
        return f"expected an object, got {spec!r:.60}"
    unknown = sorted(str(k) for k in spec if k not in SPEC_KEYS)
    if unknown:
        return f"unknown key {unknown[0]!r}; the keys are {', '.join(SPEC_KEYS)}"
    for key, value in spec.items():
        if key == "strict":
            if value is not None and not isinstance(value, bool):
                return f"{key}: expected true or false, got {value!r:.60}"
        elif value is not None and not isinstance(value, str):
            return f"{key}: expected text or null, got {value!r:.60}"
    return None


def check_recorded(metadata: dict[str, Any], source: str) -> None:
    """The fields of a saved run's (or ensemble's) ``metadata`` that are read back, each
    of the type its writer gives it, or a ModelError naming ``source`` and the field: a
    ``data_spec`` edited to "ml-100k" was an AttributeError deep in loading the data
    (``evaluate``, ``ensemble``, ``retrain``), a ``split_seed`` of "3" a ValueError."""

    def bad(field: str, problem: str) -> ModelError:
        return ModelError(f"{source}: metadata.{field}: {problem} (damaged or edited?)")

    spec = metadata.get("data_spec")
    if spec is not None:
        problem = spec_problem(spec)
        if problem is not None:
            key, _, rest = problem.partition(": ")
            if isinstance(spec, dict) and key in spec:
                raise bad(f"data_spec.{key}", rest)
            raise bad("data_spec", problem)
    holdout = metadata.get("holdout")
    if holdout is not None and not isinstance(holdout, str):
        raise bad("holdout", f"expected text (p1, none or retrain), got {holdout!r:.60}")
    seed = metadata.get("split_seed")
    if seed is not None and (not is_whole(seed) or seed < 0):
        raise bad("split_seed", f"expected a whole number >= 0, got {seed!r:.60}")
    digest = metadata.get("split_digest")
    if digest is not None and not isinstance(digest, str):
        raise bad("split_digest", f"expected text (the split's digest), got {digest!r:.60}")
    added = metadata.get(ADDED_ITEMS)
    if added is not None and not (
        isinstance(added, list) and all(isinstance(i, str) for i in added)
    ):
        raise bad(ADDED_ITEMS, f"expected a list of item ids (text), got {added!r:.60}")


# a run's metadata key: the ids of the items added to it after training (add_items, or
# the service's through retrain), which no data file lists and which a command given
# the run's data must not take for a sign of other data
ADDED_ITEMS = "added_items"


def added_items(metadata: Mapping[str, Any]) -> set[str] | None:
    """The ids a run records as added after training (:data:`ADDED_ITEMS`); None for a
    run saved before they were recorded (2026-12-06), whose items beyond its data may
    be any such additions."""
    if ADDED_ITEMS not in metadata:
        return None
    return set(metadata.get(ADDED_ITEMS) or ())


def spec_for_run(
    given: dict[str, Any] | None, recorded: dict[str, Any] | None, where: str
) -> dict[str, Any]:
    """The data a command on a run reads: ``given`` where it names data (with the run's
    recorded columns filled in, :func:`with_recorded_columns`), else the run's own
    (``recorded``), taking ``given``'s ``strict`` and rating scale. Those two were
    dropped without a word when no data was named (``metarec evaluate RUN --strict``
    ran unstrict); a column or file option without the data it belongs to is refused.
    ``where``: the run, for messages."""
    given = given or {}
    if names_data(given):
        named = recorded.get("dataset") if isinstance(recorded, dict) else None
        data = given.get("data")
        alone = data and not (given.get("dataset") or given.get("interactions"))
        # `--data DIR` where DIR holds the run's data set, as the not-found message
        # advises: it was read as the data set's own folder ("no data set found")
        if named and alone and (Path(str(data)).expanduser() / str(named)).is_dir():
            given = {**given, "dataset": named}
        return with_recorded_columns(given, recorded)
    if not recorded:
        raise ConfigError(
            f"{where}: the run does not record its data; give --dataset/--data or --interactions"
        )
    stray = [k for k in SPEC_KEYS if given.get(k) and k not in ("strict", "rating_range")]
    if stray:
        flag = "--" + stray[0].replace("_", "-").replace("item-id-col", "items-id-col")
        raise ConfigError(
            f"{flag}: applies to data given with --interactions (or --dataset/--data); "
            f"without them {where}'s recorded data is read, with its own columns"
        )
    overlay = {k: given[k] for k in ("strict", "rating_range") if given.get(k)}
    return {**recorded, **overlay}


def with_recorded_columns(spec: dict[str, Any], recorded: dict[str, Any] | None) -> dict[str, Any]:
    """``spec``, which names its own files (``interactions``), with the column options
    a run recorded for its files filled in where ``spec`` leaves them unset: the run's
    files given again (``--interactions plays.csv``, grown since) were read as if their
    columns had metarec's default names ("user column 'user_id' not found"), although
    the run records that its users are in ``listener``. Options ``spec`` gives win; a
    run trained on a named data set (``dataset``/``data``) records none to fill."""
    if not spec.get("interactions") or not isinstance(recorded, dict):
        return spec
    if recorded.get("dataset") or recorded.get("data"):
        return spec
    # an items or users file's options only where that file is given: the run's
    # --text-cols beside interactions alone was refused as if the user had typed it
    needs = {"item_id_col": "items", "title_col": "items", "genre_col": "items",
             "year_col": "items", "text_cols": "items", "text_template": "items",
             "users_id_col": "users",
             "user_feature_cols": "users"}  # fmt: skip
    filled = {
        k: recorded[k]
        for k in COLUMN_KEYS
        if not spec.get(k) and recorded.get(k) and (k not in needs or spec.get(needs[k]))
    }
    return {**spec, **filled}


def spec_flags(spec: dict[str, Any] | None, rating_range: tuple[float, float]) -> str | None:
    """The CLI's data options that read the files of ``spec`` again, on the scale
    ``rating_range`` a data set was cleaned to (given in Python, it is in no spec), or
    None where ``spec`` names no files (a known data set's, or a frame built in memory)."""
    import shlex

    from metarec.file_options import file_flags

    if not spec:
        return None
    if not spec.get("interactions"):
        data = spec.get("data")
        return shlex.join(["--dataset", str(data)]) if data and not spec.get("dataset") else None
    scale = ",".join(f"{v:g}" for v in rating_range)
    return shlex.join(file_flags({**spec, "rating_range": scale}))


def names_data(spec: dict[str, Any] | None) -> bool:
    """Whether ``spec`` says where data is (otherwise a caller falls back to a run's)."""
    return bool(spec and any(spec.get(k) for k in ("dataset", "data", "interactions")))


def load_from_spec(spec: dict[str, Any], *, cleaned: bool = True) -> Dataset:
    """Load (and unless ``cleaned=False``, clean) the data set a spec describes.

    ``spec["strict"]`` turns every value problem cleaning would fix (a bad
    rating, an unknown item, empty text, ...) into an error naming file and line.
    """
    from metarec.data import clean

    raw = _load_raw(spec)
    if not cleaned:
        return raw
    return clean(raw, rating_range=spec_rating_range(spec), strict=bool(spec.get("strict")))


def spec_rating_range(spec: dict[str, Any]) -> tuple[float, float] | None:
    """The spec's ``rating_range`` ("min,max") as numbers; None leaves it to the data."""
    if not spec.get("rating_range"):
        return None
    try:
        lo, hi = (float(x) for x in str(spec["rating_range"]).split(","))
    except ValueError:
        raise ConfigError(
            f"--rating-range: expected min,max, got {spec['rating_range']!r}"
        ) from None
    # checked here, as the flag: 5,1 was a "problem" of the data in `data validate`
    # (exit 1), or named the Python argument rating_range
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ConfigError(
            f"--rating-range: expected finite min <= max, got {spec['rating_range']!r}"
        )
    return lo, hi


def _columns(value: str | None) -> list[str]:
    return [c.strip() for c in (value or "").split(",") if c.strip()]


def spec_text(spec: Mapping[str, Any]) -> ItemTextConfig | None:
    """How the spec's items' text is laid out: its ``text_template`` with its
    ``text_cols`` (None: the default layout), checked now, the flag named."""
    template = spec.get("text_template")
    if not template:
        return None
    extra = tuple(_columns(spec.get("text_cols")))
    try:
        config = ItemTextConfig(template=str(template), extra=extra)
    except ConfigError as exc:  # malformed: "{title", "{0}", "{title!r}"
        raise ConfigError(f"--text-template: {exc}") from None
    # not an items file's own `text` column (a description): it follows the template's
    # text, as a new item's `text` does (add_items, the HTTP API), where it is the
    # item's whole text or its description, never a part placed inside a layout
    allowed = ("title", "year", "genres", *[c for c in extra if c != "text"])
    unknown = [f for f in template_fields(config.template) if f not in allowed]
    fields = ", ".join(f"{{{f}}}" for f in allowed)
    if "text" in unknown:
        raise ConfigError(
            f"--text-template {template!r}: {{text}}, the items file's own text column, "
            f"follows the layout (as a new item's text does) and is not placed in it; "
            f"the layout may use {fields}"
        )
    if unknown:
        raise ConfigError(
            f"--text-template {template!r}: {{{unknown[0]}}} is no item field; it may use "
            f"{fields} (name other columns of the items file with --text-cols)"
        )
    return config


def recorded_item_text(spec: object) -> ItemTextConfig:
    """How a run's new items' text is laid out, from the data spec it recorded: as its
    data's was, so a new item reads to the encoder as the catalogue's items do. Not
    with the file's own ``text`` column as a part: a new item's ``text`` is its whole
    text (filled in as an empty part, it left an item without one no text)."""
    spec = spec if isinstance(spec, dict) else {}
    template = spec.get("text_template")
    template = template if isinstance(template, str) and template else DEFAULT_TEMPLATE
    extra = tuple(c for c in _columns(spec.get("text_cols")) if c != "text")
    return ItemTextConfig(template=template, extra=extra)


def _load_raw(spec: dict[str, Any]) -> Dataset:
    from metarec.data import load_dataset, load_path, load_table

    text = spec_text(spec)
    if spec.get("interactions"):
        return load_table(
            spec["interactions"],
            spec.get("items"),
            spec.get("users"),
            user_col=spec.get("user_col") or "user_id",
            item_col=spec.get("item_col") or "item_id",
            rating_col=spec.get("rating_col") or "rating",
            timestamp_col=spec.get("timestamp_col"),
            item_id_col=spec.get("item_id_col"),
            users_id_col=spec.get("users_id_col"),
            title_col=spec.get("title_col"),
            genre_col=spec.get("genre_col"),
            year_col=spec.get("year_col"),
            text_cols=_columns(spec.get("text_cols")),
            user_feature_cols=_columns(spec.get("user_feature_cols")),
            rating_range=spec_rating_range(spec),
            text=text,
        )
    if spec.get("dataset"):
        return load_dataset(spec["dataset"], root=spec.get("data"), clean=False, text=text)
    if spec.get("data"):
        return load_path(spec["data"], rating_range=spec_rating_range(spec), text=text)
    raise ConfigError(
        "no data given: use --dataset NAME [--data DIR], --data DIR, or --interactions FILE"
    )


def spec_files(spec: dict[str, Any]) -> list[Path]:
    """The files a spec reads, resolved, as far as they can be found without a download:
    its own files, or the files of the data set folder or atomic prefix it names. A spec
    that names nothing findable gives none (loading it says what is wrong)."""
    from metarec.data.registry import locate

    own = [spec[k] for k in ("interactions", "items", "users") if spec.get(k)]
    if own:
        return [Path(p).resolve() for p in own if Path(p).is_file()]
    where: Path | None = None
    if spec.get("dataset"):
        try:
            with warnings.catch_warnings():  # "not in ROOT": the loading will say so
                warnings.simplefilter("ignore")
                where = locate(spec["dataset"], spec.get("data"), download=False)[1]
        except (MetarecError, OSError):
            return []
    elif spec.get("data"):
        where = Path(spec["data"]).expanduser()
        if where.suffix == ".inter" and where.is_file():  # load_path takes the file too
            where = where.with_suffix("")
    if where is None:
        return []
    if where.is_dir():  # a raw folder or a folder of atomic files: its files are read
        return sorted(p.resolve() for p in where.iterdir() if p.is_file())
    # an atomic prefix (data/ml-100k/ml-100k): its .inter, .item and .user files
    return sorted(p.resolve() for p in where.parent.glob(where.name + ".*") if p.is_file())


def check_not_overwriting(spec: dict[str, Any], flag: str, path: Path, *, folder: bool) -> None:
    """Refuse an output that would replace a file the data is read from: a report named
    as the ratings file, or a run folder that is the data's folder (a run writes
    ``items.json``, the name of an items file in JSON Lines). ``folder``: ``path`` is a
    folder the command writes files into (a data file deeper below it is not replaced);
    otherwise a file."""
    where = path.resolve()
    for data_file in spec_files(spec):
        if data_file == where or (folder and data_file.parent == where):
            what = "is" if data_file == where else "holds"
            raise ConfigError(
                f"{flag} {path}: {what} the data file {data_file}, which the command "
                f"reads; writing there could replace it: give {'a folder' if folder else 'a file'} "
                "of its own"
            )

"""Named data sets: found locally, or downloaded once from GroupLens into a cache.

Where :func:`load_dataset` looks, in order:

1. ``root=`` (the CLI's ``--data``),
2. the ``METAREC_DATA`` directory (several may be joined with ``os.pathsep``),
3. the cache, ``$METAREC_CACHE/datasets/<name>/`` (default
   ``~/.cache/metarec/datasets/<name>/``),
4. GroupLens' own archive, checked against a pinned SHA-256 and unpacked into
   the cache (download to a temporary file, verify, extract to a temporary
   folder, rename), so an interrupted or corrupt download never looks complete.

Each directory may hold RecBole atomic files (``<dir>/<name>/<name>.inter`` or
``<dir>/<name>.inter``) or the unpacked GroupLens archive (``<dir>/<name>/``,
or ``<dir>`` itself).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import shutil
import time
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from metarec.data.atomic import load_atomic
from metarec.data.cleaning import clean as clean_dataset
from metarec.data.movielens import detect_layout, load_movielens_raw
from metarec.data.schema import Dataset
from metarec.data.text import ItemTextConfig
from metarec.errors import (
    ConfigError,
    DataError,
    DatasetNotFoundError,
    outside_metarec,
    why_missing,
)
from metarec.tempfiles import create_temp_dir, create_temp_file, sync_directory, sync_tree

ENV_DATA = "METAREC_DATA"
ENV_CACHE = "METAREC_CACHE"
_BASE_URL = "https://files.grouplens.org/datasets/movielens/"

# The URL opener; tests replace it to simulate being offline or a bad server.
urlopen = urllib.request.urlopen


@dataclass(frozen=True)
class KnownDataset:
    name: str
    url: str
    sha256: str | None  # None: unverifiable, downloaded with a warning
    size: int | None
    layout: str  # the GroupLens layout inside the archive
    rating_range: tuple[float, float]
    ratings: int  # rows of the release's ratings file, to tell a damaged copy


# SHA-256 of GroupLens' archives, as published in TensorFlow Datasets'
# url_checksums/movielens.txt and matched by several independent projects.
KNOWN_DATASETS: dict[str, KnownDataset] = {
    d.name: d
    for d in (
        KnownDataset(
            "ml-100k",
            _BASE_URL + "ml-100k.zip",
            "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            4_924_029,
            "ml-100k",
            (1.0, 5.0),
            100_000,
        ),
        KnownDataset(
            "ml-1m",
            _BASE_URL + "ml-1m.zip",
            "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            5_917_549,
            "ml-1m",
            (1.0, 5.0),
            1_000_209,
        ),
        KnownDataset(
            "ml-latest-small",
            _BASE_URL + "ml-latest-small.zip",
            "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            978_202,
            "ml-latest",
            (0.5, 5.0),
            100_836,
        ),
    )
}

Kind = Literal["atomic", "raw"]


def known_names() -> list[str]:
    return sorted(KNOWN_DATASETS)


def cache_root() -> Path:
    """Where downloaded data sets are unpacked, one folder per name.

    ``$METAREC_CACHE`` is metarec's whole cache (encoders keep models there
    too), so data sets go in its ``datasets/`` folder.
    """
    env = os.environ.get(ENV_CACHE)
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "metarec"
    return base / "datasets"


def find_local(name: str, directory: str | Path) -> tuple[Kind, Path] | None:
    """The atomic prefix or raw folder of ``name`` under ``directory``, if there."""
    d = Path(directory).expanduser()
    for prefix in (d / name / name, d / name):
        if prefix.with_name(prefix.name + ".inter").is_file():
            return "atomic", prefix
    known = KNOWN_DATASETS.get(name)
    for folder in (d / name, d):
        layout = detect_layout(folder)
        if layout is not None and (known is None or layout == known.layout):
            if folder == d and _another_release(d.name, name):
                continue
            return "raw", folder
    return None


# the folders GroupLens' archives unpack into: layouts are shared between releases
# (ml-10M100K's files are ml-1m's, ml-25m's ml-latest-small's), so a folder of one of
# these names holds that release and no other (ml-10M was loaded as ml-1m, every
# half-star rating dropped as off its scale)
GROUPLENS_FOLDERS = frozenset(
    {"ml-100k", "ml-1m", "ml-10m100k", "ml-20m", "ml-25m", "ml-32m", "ml-latest",
     "ml-latest-small"}
)  # fmt: skip


def _another_release(folder: str, name: str) -> bool:
    return folder.lower() in GROUPLENS_FOLDERS and folder.lower() != name.lower()


def load_path(
    path: str | Path,
    *,
    name: str | None = None,
    text: ItemTextConfig | None = None,
    rating_range: tuple[float, float] | None = None,
) -> Dataset:
    """Load whatever ``path`` holds: RecBole atomic files or a GroupLens folder.

    ``path`` may be a directory or an atomic prefix (``data/ml-100k``).
    ``rating_range``: atomic files' scale, when known (else read from the data;
    a GroupLens folder's is known from its layout).
    """
    if not isinstance(path, str | os.PathLike) or not str(path).strip():
        raise ConfigError(f"path: expected a data set folder or prefix, got {path!r:.60}")
    p = Path(path).expanduser()
    if p.is_dir() and detect_layout(p) is not None:
        return load_movielens_raw(p, name=name, text=text)
    if (p.is_dir() and any(p.glob("*.inter"))) or p.with_name(p.name + ".inter").is_file():
        return load_atomic(p, name, text=text, rating_range=rating_range)
    if p.suffix == ".inter" and p.is_file():
        return load_atomic(p, text=text, rating_range=rating_range)
    if not p.exists():  # a typo: not "no data set found" in a folder that is not there
        raise DataError(
            f"{why_missing(p)} (nor RecBole atomic files that it prefixes, {p.name}.inter); "
            "check the path",
            path=p,
        )
    if p.is_file():
        if zipfile.is_zipfile(p):  # the archive a failed download asks for, as fetched
            raise DataError(
                "is a zip archive: unzip it and give the folder it unpacks into", path=p
            )
        raise DataError(
            "is a file, where a data set folder or a RecBole prefix is expected; a ratings "
            "file is read with --interactions FILE (and --items FILE for its items)",
            path=p,
        )
    tables = sorted(
        f.name
        for f in (p.iterdir() if p.is_dir() else ())
        if f.is_file() and f.suffix.lower() in (".csv", ".tsv", ".parquet", ".jsonl", ".json")
    )
    # a folder of one's own CSVs, which the MovieLens layouts' ratings.csv seemed to take
    own = (
        f"; it holds {', '.join(tables[:3])}{', ...' if len(tables) > 3 else ''}: name "
        "your own files with --interactions FILE --items FILE (interactions_path=, "
        "items_path= of load_table)"
        if tables
        else ""
    )
    raise DataError(
        "no data set found: expected RecBole atomic files (<name>.inter, .item, .user) "
        "or an unpacked MovieLens archive (u.data with u.item, ratings.dat with "
        f"movies.dat, or ratings.csv with movies.csv){own}",
        path=p,
    )


def locate(
    name: str, root: str | Path | None = None, *, download: bool = True
) -> tuple[Kind, Path]:
    """Find ``name`` (see the module docstring for the order), downloading if allowed."""
    known = _known(name)
    looked: list[str] = []
    if root is not None:
        if not Path(root).expanduser().is_dir():
            # a mistyped folder fell back to METAREC_DATA, the cache or a download with
            # only a warning, and the run trained on data from elsewhere
            where = Path(root).expanduser()
            what = "is a file;" if where.exists() else "no such folder;"
            if where.is_file() and zipfile.is_zipfile(where):
                what = "is a zip archive: unzip it and"
            raise DataError(f"{what} give the folder that holds the data sets", path=root)
        found = find_local(name, root)
        if found:
            return found
        looked.append(f"root {root}")
        warnings.warn(
            f"data set {name!r} is not in {root}; looking in {ENV_DATA}, the cache, then "
            "GroupLens' download",
            stacklevel=outside_metarec(),
        )
    env = os.environ.get(ENV_DATA)
    for d in (env or "").split(os.pathsep):
        if d and not Path(d).expanduser().is_dir():
            # a typo fell through to the cache or a download without a word, where a
            # mistyped --data is refused
            warnings.warn(
                f"{ENV_DATA} names {d}, which is no folder; it is skipped",
                stacklevel=outside_metarec(),
            )
        elif d:
            found = find_local(name, d)
            if found:
                return found
    looked.append(f"{ENV_DATA}={env}" if env else f"{ENV_DATA} (not set)")
    cached = find_local(name, cache_root())
    damaged = _damaged(cached[1]) if cached else ""
    if cached and damaged:
        # replaced by a fresh download, not deleted first: offline, the user kept a copy
        # to delete or mend by hand, and another loader reading it was not pulled from
        # under (the fresh one is moved in whole, the damaged one aside)
        said = (
            f"the downloaded copy is damaged ({damaged} changed or missing since it was unpacked)"
        )
        if not download:
            raise DataError(f"{said}: delete this folder to download it again", path=cached[1])
        warnings.warn(f"{cached[1]}: {said}: downloading it again", stacklevel=outside_metarec())
        try:
            return "raw", fetch(known)
        except DatasetNotFoundError as exc:
            raise DatasetNotFoundError(
                f"{cached[1]}: {said}, and a fresh one was not fetched: {exc}"
            ) from exc
    if cached:
        # what a killed download left beside it: swept only by a download before, which
        # a data set in the cache never needs again
        _sweep_leftovers(cache_root(), name)
        return cached
    looked.append(f"the cache {cache_root() / name}")
    if not download:
        raise DatasetNotFoundError(_not_found(name, looked, "downloading is switched off"))
    try:
        return "raw", fetch(known)
    except DatasetNotFoundError as exc:
        raise DatasetNotFoundError(_not_found(name, looked, str(exc))) from exc


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    download: bool = True,
    clean: bool = True,
    text: ItemTextConfig | None = None,
) -> Dataset:
    """Load a named MovieLens data set (``ml-100k``, ``ml-1m``, ``ml-latest-small``).

    ``clean=False`` returns the loader's output, internal ``_line`` columns
    included; ``text`` sets how item text is built.
    """
    known = _known(name)
    if root is not None and not (isinstance(root, str | os.PathLike) and str(root).strip()):
        raise ConfigError(f"root: expected a folder path or None, got {root!r:.60}")
    for flag, value in (("download", download), ("clean", clean)):
        if not isinstance(value, bool):  # "no" is truthy: it cleaned, or downloaded
            raise ConfigError(f"{flag}: expected True or False, got {value!r:.40}")
    if text is not None and not isinstance(text, ItemTextConfig):
        raise ConfigError(f"text: expected an ItemTextConfig, got {text!r:.60}")
    kind, path = locate(name, root, download=download)
    if kind == "atomic":  # the scale is known: not read from (a typo in) the data
        ds = load_atomic(path, text=text, rating_range=known.rating_range)
    else:
        ds = load_movielens_raw(path, text=text)
    if len(ds.interactions) != known.ratings:
        # the archive was checksummed when downloaded, but an unpacked copy (the cache,
        # a folder given) can lose its tail or be edited later, and still parse
        warnings.warn(
            f"{path}: holds {len(ds.interactions):,} ratings where GroupLens' {name} has "
            f"{known.ratings:,}: a damaged or edited copy? Remove it to load a fresh one",
            UserWarning,
            stacklevel=2,
        )
    ds = replace(ds, name=name, rating_range=known.rating_range)
    return clean_dataset(ds) if clean else ds


def _known(name: str) -> KnownDataset:
    try:
        return KNOWN_DATASETS[name]
    except KeyError:
        hint = ""
        if isinstance(name, str) and os.path.lexists(name):
            hint = f"; {name!r} looks like a path: give it with --data {name} (load_path in Python)"
        elif isinstance(name, str) and ("/" in name or os.sep in name):
            hint = (
                f"; {name!r} looks like a path (given with --data {name}, load_path in "
                "Python), but there is no such file or folder"
            )
        raise ConfigError(
            f"unknown data set {name!r}; known: {', '.join(known_names())} "
            f"(or load your own files with load_table / --interactions){hint}"
        ) from None


def _not_found(name: str, looked: list[str], why: str) -> str:
    return (
        f"data set {name!r} not found: looked in {', '.join(looked)}; {why}. "
        f"Point metarec at local files with root= (Python), the {ENV_DATA} environment "
        "variable or --data DIR (command line): a directory holding RecBole atomic files "
        f"({name}/{name}.inter) or the unpacked GroupLens archive ({name}/)"
    )


# --------------------------------------------------------------------------- download


def fetch(known: KnownDataset, cache: Path | None = None) -> Path:
    """Download, verify and unpack ``known`` into the cache; return its folder."""
    cache = cache or cache_root()
    target = cache / known.name
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if target.exists() and not target.is_dir():
            # found only after the download, as a NotADirectoryError from rmtree
            raise NotADirectoryError(f"{target} is a file, where the data set's folder goes")
        _sweep_leftovers(cache, known.name)
        fd, part = create_temp_file(cache, f".{known.name}-", ".zip.part")
        os.close(fd)
        unpack = create_temp_dir(cache, f".{known.name}-unpack-")
    except OSError as exc:  # $METAREC_CACHE a file, or a folder one cannot write
        why = exc.strerror or str(exc)
        raise DatasetNotFoundError(
            f"{known.name}: cannot use the download cache {cache} ({why}); set "
            f"${ENV_CACHE} to a folder you can write, or give the data with --data DIR / root="
        ) from None
    try:
        digest, declared, kind = _download(known.url, part, known.size)
        got = part.stat().st_size
        if known.size is not None and got < known.size and declared == got:
            # every byte the server declared came: a login or proxy page, not the archive
            # ("stopped short, try again" sent the user to retry what never helps)
            raise DatasetNotFoundError(
                f"{known.url} answered with {got:,} bytes of {kind or 'an unnamed type'}, "
                f"not the {known.size:,}-byte archive (a proxy or login page?); it was "
                "discarded: download the archive yourself and give its folder with --data"
            )
        if known.size is not None and got < known.size:
            # a connection closed early ends a read without an error: say so, rather
            # than blame the checksum on a proxy or a new release (which the checksum
            # below still says for a file of another size)
            raise DatasetNotFoundError(
                f"the download from {known.url} stopped short: {got:,} bytes of "
                f"{known.size:,}; it was discarded, try again"
            )
        _verify(known, digest)
        try:
            folder = _extract(part, unpack, known)
            _install(folder, target, known)
        except OSError as exc:  # a full disk while unpacking was a bare errno message
            raise DatasetNotFoundError(
                f"{known.name}: unpacking into the download cache {cache} failed "
                f"({exc.strerror or exc}); free space there, set ${ENV_CACHE} to another "
                "folder, or give the data with --data DIR / root="
            ) from None
    finally:
        part.unlink(missing_ok=True)
        shutil.rmtree(unpack, ignore_errors=True)
    return target


LEFTOVER_AGE_S = 6 * 3600


def _sweep_leftovers(cache: Path, name: str) -> None:
    """Remove the partial download and unpack folder a killed loader left (kill -9
    skips its cleanup); only ones hours old, so a concurrent loader keeps its own."""
    now = time.time()
    for path in [*cache.glob(f".{name}-*.zip.part"), *cache.glob(f".{name}-unpack-*")]:
        try:
            if now - path.stat().st_mtime < LEFTOVER_AGE_S:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            continue  # gone already, or not ours to remove


def _download(url: str, dest: Path, size: int | None = None) -> tuple[str, int | None, str]:
    """The sha256 of what ``url`` sent into ``dest``, the length its server declared
    (None: none) and its content type; a progress bar where stderr is a terminal (a
    download was silent, and a slow link looked like a hang)."""
    from tqdm.auto import tqdm

    sha = hashlib.sha256()
    try:
        with urlopen(url, timeout=60) as resp, dest.open("wb") as out:
            headers = getattr(resp, "headers", None) or {}
            length = str(headers.get("Content-Length") or "")
            declared = int(length) if length.isdigit() else None
            kind = str(headers.get("Content-Type") or "")
            with tqdm(
                total=declared or size,
                desc=f"downloading {url}",
                unit="B",
                unit_scale=True,
                disable=None,  # off where stderr is no terminal: logs, CI
            ) as bar:
                while chunk := resp.read(1 << 20):
                    sha.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError and timeouts are OSErrors; ValueError covers a malformed URL.
        raise DatasetNotFoundError(f"downloading {url} into {dest.parent} failed ({exc})") from exc
    return sha.hexdigest(), declared, kind


def _verify(known: KnownDataset, digest: str) -> None:
    if known.sha256 is None:
        warnings.warn(
            f"no pinned checksum for {known.name}; downloaded archive has sha256 {digest}",
            stacklevel=3,
        )
    elif digest != known.sha256:
        raise DatasetNotFoundError(
            f"the archive downloaded from {known.url} has sha256 {digest}, expected "
            f"{known.sha256}; it was discarded (a proxy or an updated release may be at fault)"
        )


def _extract(archive: Path, dest: Path, known: KnownDataset) -> Path:
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                parts = Path(member).parts
                if Path(member).is_absolute() or ".." in parts:
                    raise DatasetNotFoundError(
                        f"the archive from {known.url} has an unsafe path {member!r}"
                    )
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise DatasetNotFoundError(f"the archive from {known.url} is not a zip ({exc})") from exc
    inner = dest / known.name
    if not inner.is_dir():
        dirs = [p for p in dest.iterdir() if p.is_dir() and not p.name.startswith("__")]
        inner = dirs[0] if len(dirs) == 1 else dest
    if detect_layout(inner) != known.layout:
        raise DatasetNotFoundError(
            f"the archive from {known.url} does not hold the expected {known.layout} files"
        )
    return inner


# in a downloaded data set's folder: each file's SHA-256 as unpacked from the verified
# archive, so a copy truncated or edited since is found (it was read as it was, with a
# warning at most, and a truncated ratings file trained as the data set)
UNPACKED = ".metarec-unpacked.json"


def _record_unpacked(folder: Path) -> None:
    files = {
        str(f.relative_to(folder)): _sha256(f)
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.name != UNPACKED
    }
    (folder / UNPACKED).write_text(json.dumps(files, indent=1) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _damaged(folder: Path) -> str:
    """The files of a cached data set that differ from what was unpacked from its
    verified archive, named ("" where none does). A folder unpacked by a version that
    kept no record is read as it is (load_dataset still checks its count of ratings)."""
    record = folder / UNPACKED
    if not record.is_file():
        return ""
    try:
        files = json.loads(record.read_text(encoding="utf-8"))
        damaged = [
            name for name, digest in files.items()
            if not (folder / name).is_file() or _sha256(folder / name) != digest
        ]  # fmt: skip
    except (OSError, ValueError, AttributeError) as exc:
        damaged = [f"{UNPACKED} ({exc})"]
    return f"{', '.join(damaged[:3])}{', ...' if len(damaged) > 3 else ''}"


def _install(folder: Path, target: Path, known: KnownDataset) -> None:
    aside = None
    if target.exists():
        if detect_layout(target) == known.layout and not _damaged(target):
            return  # another process finished (or mended it) first
        # a stale, incomplete or damaged folder: moved aside whole, where the sweep of
        # a killed loader's leftovers finds it, and removed once ours is in place
        aside = target.with_name(f".{target.name}-unpack-old-{secrets.token_hex(4)}")
        try:
            os.replace(target, aside)
        except FileNotFoundError:  # another loader moved it first
            aside = None
    _record_unpacked(folder)
    sync_tree(folder)
    try:
        os.replace(folder, target)
        sync_directory(target.parent)
    except OSError:
        # another loader installed it between the check and the rename (the rename
        # then meets a non-empty folder): theirs is as good as ours
        if target.exists() and detect_layout(target) == known.layout:
            return
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)

"""Temporary files and folders for atomic writes, made with the usual permissions.

``tempfile.mkstemp`` and ``mkdtemp`` make owner-only files (0600) and folders
(0700) whatever the umask, because they are meant for private scratch data.
Every artifact metarec writes is first written under a temporary name and then
renamed into place, so those permissions would stick to run folders, result
files, the encoding cache and the unpacked model: a service running as another
account could not read the run a training job wrote. These helpers make the
same unguessable, exclusive names with ``0666`` / ``0777`` masked by the umask,
as ``open`` and ``mkdir`` would. Once renamed, :func:`sync_directory` makes the
rename itself durable; :func:`sync_tree` first makes an unpacked folder's files
durable, so that a power loss cannot leave a complete-looking folder of empty files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

_ATTEMPTS = 100  # a clash of 48 random bits is next to impossible; this only bounds the loop
TOKEN_BYTES = 6  # of the random part of a temporary name: 12 hex digits
# a live writer holds its temporary file or folder for seconds to minutes; one this old
# was left by a process killed mid-write (kill -9 skips every cleanup)
STALE_AGE_S = 3600.0
T = TypeVar("T")


def create_temp_file(directory: str | Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new empty file in ``directory``, opened for writing: (descriptor, path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    return _fresh(directory, prefix, suffix, lambda path: (os.open(path, flags, 0o666), path))


def create_temp_dir(parent: str | Path, prefix: str, suffix: str = "") -> Path:
    """A new empty folder in ``parent``."""

    def make(path: Path) -> Path:
        os.mkdir(path, 0o777)
        return path

    return _fresh(parent, prefix, suffix, make)


def _fresh(parent: str | Path, prefix: str, suffix: str, make: Callable[[Path], T]) -> T:
    """``make`` at the first random name in ``parent`` that is free (it raises
    FileExistsError where the name is taken)."""
    for _ in range(_ATTEMPTS):
        try:
            return make(Path(parent) / f"{prefix}{secrets.token_hex(TOKEN_BYTES)}{suffix}")
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: no free temporary name after {_ATTEMPTS} tries")


def remove_stale(parent: str | Path, *patterns: str, age_s: float | None = None) -> None:
    """Remove what ``patterns`` (globs) match in ``parent`` and is older than ``age_s``:
    the temporary files and folders a killed writer left, which nothing else would
    remove. A younger one may be another process's, still being written, and stays.
    Age counts from the last change of contents or name (ctime too: a rename keeps
    the mtime, so a folder moved aside a moment ago looked hours old). ``patterns``
    are globs: escape names that come from outside (``glob.escape``)."""
    now, age_s = time.time(), STALE_AGE_S if age_s is None else age_s
    for pattern in patterns:
        for path in Path(parent).glob(pattern):
            try:
                st = path.lstat()
                if now - max(st.st_mtime, st.st_ctime) < age_s:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            except OSError:
                continue  # gone already, or not ours to remove


def sync_directory(folder: str | Path) -> None:
    """Flush ``folder``'s entries to disk: a rename is in the folder, not the file, so a
    power loss after ``os.replace`` could bring back the old name though the new file's
    bytes were synced. Best effort: where a folder cannot be opened for it (Windows),
    the rename stays atomic, only not yet durable."""
    _fsync(folder)


def _fsync(path: str | Path) -> None:
    """fsync ``path`` (a file or a folder), best effort: one that cannot be opened or
    synced is left as it is."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: str | Path) -> None:
    """Flush every file and folder under ``folder`` to disk, before it is renamed into
    place: ``ZipFile.extractall`` leaves its files' bytes in the page cache, and after
    a power loss the renamed folder could hold its names with empty or torn contents.
    Best effort, as :func:`sync_directory`."""
    for root, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            _fsync(os.path.join(root, name))
        _fsync(root)

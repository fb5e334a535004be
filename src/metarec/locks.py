"""One writer at a time for a folder that a long job fills.

A benchmark keeps its progress in ``OUT/.NAME.partial/`` and a training run its
checkpoint in ``RUN/checkpoint/``. Two commands aimed at the same place would
each read, replace and resume from the other's half-finished work, and their
final reports would overwrite each other. The second one is therefore refused
at once, with the holder's process id, rather than made to wait: these jobs
run for minutes to hours, and the fix (another ``--out``) is the user's.

The lock is POSIX ``flock`` on a hidden sibling, ``.NAME.lock``. The kernel
drops it when its holder exits however it exits (``kill -9`` included), so a
crashed run never leaves a stale lock for anyone to delete by hand. The file is
removed on release, so a finished run leaves nothing behind. Where ``fcntl`` is
missing (Windows) no lock is taken.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from metarec.errors import BusyError, ConfigError


def lock_path(target: str | Path) -> Path:
    """The lock of the folder ``target`` names, wherever the name points: through a
    link (``runs/latest -> runs/r7``) a second writer took a lock of its own beside
    the link and wrote the folder alongside the first."""
    target = Path(target).resolve()
    return target.parent / f".{target.name}.lock"


@contextmanager
def exclusive(target: str | Path, hint: str) -> Iterator[None]:
    """Hold ``target``'s lock for the block; :class:`BusyError` (saying ``hint``,
    what to do instead) if another process or another block holds it."""
    if sys.platform == "win32":
        yield
        return
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, Path(target), hint)
    try:
        yield
    finally:
        # unlinked while still held: a process that opened the old file meanwhile
        # sees, once it gets the lock, that the path no longer names its file
        path.unlink(missing_ok=True)
        os.close(fd)


def holder(target: str | Path) -> int | None:
    """The process id written in ``target``'s lock while that process lives, else
    None. Only read, never locked: taking the lock even for a moment, to test it,
    could refuse a writer starting at that moment. A pid reused after a ``kill -9``
    can name the wrong process; this is for messages, never for decisions."""
    if sys.platform == "win32":  # no locks there; and os.kill(pid, 0) sends Ctrl-C
        return None
    try:
        text = lock_path(target).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return None
    except OSError:  # alive, another user's
        pass
    return int(text)


def _acquire(path: Path, target: Path, hint: str) -> int:
    import fcntl

    while True:
        try:
            # not through a link: the lock is emptied and written with our pid, and a
            # link planted under its name made that the fate of any file it pointed at
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EMLINK):  # EMLINK: FreeBSD's
                raise
            raise ConfigError(
                f"{target}: its lock {path} is a symbolic link, not a lock metarec made; "
                "remove the link (metarec writes its process id into the lock)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise BusyError(f"{target}: {who} is writing it (lock {path}); {hint}") from None
        if _names(path, fd):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # its holder released and removed it between our open and lock


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

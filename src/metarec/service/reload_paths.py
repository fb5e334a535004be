"""Which folders ``POST /v1/admin/reload`` may load: run folders under one folder.

Any path was taken. A client holding the write key (every visitor of a
``--page-api-key`` page, any local user of a keyless server) could learn whether any
folder exists and the server's working directory (``/proc/self/cwd``), read the
values of other files through a run whose ``recommender.json`` links to them (echoed
in the refusal), and hang a worker thread for good on a run whose ``items.json`` is
a FIFO. A reload now loads folders under :func:`runs_root` alone (``serve
--runs-dir``; by default the folder holding the served run, where ``metarec
retrain --out`` writes beside it), whose files are regular files inside that root.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from metarec.service.errors import ApiError, cut
from metarec.service.settings import ServiceSettings

# a run folder holds a few files and an ensemble's members/NAME/ folders; its
# checkpoint/ a few more: enough to read it, not a tree to walk
_MOST_ENTRIES = 10_000


def runs_root(settings: ServiceSettings) -> Path:
    """The folder whose run folders a reload may load."""
    if settings.runs_dir is not None:
        return Path(settings.runs_dir)
    return Path(settings.run).absolute().parent


def check_reloadable(run: str, root: Path, serving: Path) -> None:
    """Refuse (403) a reload of ``run`` outside ``root``, and (422) one whose files are
    not all regular files and folders inside it; ``serving``, the folder being served,
    may always be read again. Judged on the paths links lead to, before anything in
    the folder is read, so a refusal says nothing of what is there."""
    real = Path(os.path.realpath(run))
    top = Path(os.path.realpath(root))
    if real == Path(os.path.realpath(serving)):
        return
    if not _inside(real, top):
        raise ApiError(
            403,
            "run_outside_runs_dir",
            f"run: {cut(run, 200)} is not under {root}, the folder whose runs a reload "
            "may load (serve --runs-dir)",
        )
    if not real.is_dir():
        return  # not there, or no folder: said by the load, as before
    seen = 0
    for folder, dirs, files in os.walk(real):
        for name in (*dirs, *files):
            seen += 1
            path = Path(folder) / name
            if seen > _MOST_ENTRIES:
                raise ApiError(422, "invalid_run", f"run: {cut(run, 200)}: too many files")
            if not _inside(Path(os.path.realpath(path)), top):
                raise ApiError(
                    403,
                    "run_outside_runs_dir",
                    f"run: {path.relative_to(real)} links out of {root}, the folder whose "
                    "runs a reload may load",
                )
            try:
                mode = path.stat().st_mode
            except OSError:
                continue  # a dangling link: the load names a missing file
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ApiError(
                    422,
                    "invalid_run",
                    f"run: {path.relative_to(real)} is not a regular file (a FIFO, socket "
                    "or device would block or never end a read)",
                )
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents

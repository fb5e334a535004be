"""Which folders ``POST /v1/admin/reload`` may load: run folders under one folder.

Any path was taken. A client holding the write key (every visitor of a
``--page-api-key`` page, any local user of a keyless server) could learn whether any
folder exists and the server's working directory (``/proc/self/cwd``), read the
values of other files through a run whose ``recommender.json`` links to them (echoed
in the refusal), and hang a worker thread for good on a run whose ``items.json`` is
a FIFO.

A reload now loads a folder whose path, as written, lies below :func:`runs_root`
(``serve --runs-dir``; by default the folder holding the served run, where ``metarec
retrain --out`` writes beside it), or the run the server was started on. Links
within that folder are followed (making them takes write access there, the
operator's), so ``runs/current -> /data/runs/v3`` works; a path judged by where its
links led was open to a link made elsewhere (``~/l -> runs/v4``), which the store
then recorded and a later reload followed wherever it had been moved. The run
folder's own files must be regular files and folders that stay inside it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from metarec.service.errors import ApiError, cut
from metarec.service.settings import ServiceSettings

log = logging.getLogger("metarec.service")

# a run folder holds a few files and an ensemble's members/NAME/ folders; its
# checkpoint/ a few more: enough to read it, not a tree to walk
_MOST_ENTRIES = 10_000


def warn_if_shared(root: Path) -> None:
    """Log a warning where other accounts may write in ``root`` (``/tmp``, where a run
    in /tmp is served from): a run they put there, or a file they swap in between the
    check and the load, is what a reload then reads."""
    try:
        mode = root.stat().st_mode
    except OSError:
        return
    if mode & stat.S_IWOTH:
        log.warning(
            "reloads load runs from %s, which every account on this machine may write "
            "to: give --runs-dir a folder of your own",
            root,
        )


def runs_root(settings: ServiceSettings) -> Path:
    """The folder whose run folders a reload may load."""
    if settings.runs_dir is not None:
        return Path(settings.runs_dir)
    return Path(settings.run).absolute().parent


def check_reloadable(run: str, root: Path, started: Path) -> None:
    """Refuse (403) a reload of ``run`` unless its path as written lies below ``root``
    or is ``started``, the run the server was started on; and (422) one whose files
    are not all regular files and folders inside it. Judged before anything in the
    folder is read, so a refusal says nothing of what is there."""
    written, top = Path(os.path.abspath(run)), Path(os.path.abspath(root))
    if written != Path(os.path.abspath(started)) and not _below(written, top):
        log.warning("reload of %s refused: not below %s (--runs-dir)", cut(run, 200), root)
        raise ApiError(
            403,
            "run_outside_runs_dir",
            f"run: {cut(run, 200)} is not in the folder whose runs a reload may load "
            "(serve --runs-dir names it; its path is in the server's log)",
        )
    real = Path(os.path.realpath(written))
    if not real.is_dir():
        return  # not there, or no folder: said by the load, as before
    seen = 0
    for folder, dirs, files in os.walk(real, followlinks=True):
        for name in (*dirs, *files):
            seen += 1
            path = Path(folder) / name
            if seen > _MOST_ENTRIES:
                raise ApiError(422, "invalid_run", f"run: {cut(run, 200)}: too many files")
            where = os.path.relpath(path, real)
            target = Path(os.path.realpath(path))
            if target != real and not _below(target, real):
                raise ApiError(422, "invalid_run", f"run: {where} links out of the run folder")
            try:
                mode = path.stat().st_mode
            except OSError:
                continue  # a dangling link: the load names a missing file
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ApiError(
                    422,
                    "invalid_run",
                    f"run: {where} is not a regular file (a FIFO, socket or device would "
                    "block or never end a read)",
                )


def _below(path: Path, root: Path) -> bool:
    return root in path.parents

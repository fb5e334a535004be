"""Error kinds raised by metarec.

Every error a user can cause derives from :class:`MetarecError`; the CLI turns
those into one line on stderr and exit code 2, the library lets them propagate.
Messages name the file, row, field or value at fault and what was expected.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path


class MetarecError(Exception):
    """Base class of all errors caused by input, configuration or state."""


class ConfigError(MetarecError):
    """A configuration value is missing, unknown or out of range."""


class DataError(MetarecError):
    """A data file or frame is malformed.

    ``path``, ``row`` (1-based line number in the file, header = line 1) and
    ``field`` are kept as attributes so callers can act on them. A message about a
    frame built in memory names "row N": its position, ``frame.iloc[N]``, from 0.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.row = row
        self.field = field
        where = []
        if self.path is not None:
            where.append(self.path)
        if row is not None:
            where.append(f"line {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class InputError(DataError, ValueError):
    """Values handed to a function (a metric, a statistic) that it cannot take: an
    impossible count, arrays of different lengths, a NaN rating. A DataError, so the
    CLI prints one line; also a ValueError, which is what callers of such numeric
    functions catch (and what these functions raised before they named the argument)."""


class DatasetNotFoundError(MetarecError):
    """A named dataset could not be found locally nor downloaded."""


class UnknownItemError(MetarecError, KeyError):
    """An item id or title is not in the catalogue."""

    def __init__(self, key: str, suggestions: Sequence[str] = (), why: str = "") -> None:
        self.key = key
        self.suggestions = list(suggestions)
        msg = f"unknown item {key!r}" + (f": {why}" if why else "")
        if self.suggestions:
            msg += "; close matches: " + ", ".join(repr(s) for s in self.suggestions)
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class ModelError(MetarecError):
    """A saved model is missing, incomplete or incompatible."""


class EncoderUnavailableError(ModelError):
    """A run's encoder cannot encode new items as it encoded the run's catalogue: its
    model is gone, or changed since the run was saved. The operator's to fix, not a
    client's: the service answers 500 ``encoder_unavailable``."""


class DivergedError(ModelError):
    """Meta-training ended with a model past the scale's error: refused, not saved, and
    not resumable either (its checkpoint would finish the same way)."""


class BusyError(MetarecError):
    """Another process is writing the folder this one was asked to write."""


class UnsupportedError(MetarecError):
    """A model was asked for something it cannot do (e.g. score an item it never saw)."""


def why_missing(path: str | Path) -> str:
    """Why ``path``, which does not exist, is not there, for a message: a symbolic link
    loop or a dangling link was "no such file or directory", a puzzle beside a link
    that ``ls`` shows."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link that points back to itself (a loop)"
        if Path(path).is_symlink():
            return f"a symbolic link to {os.readlink(path)}, which does not exist"
    return "no such file or directory"


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

# True while the `metarec` command runs (metarec.cli.main): no user's line called what
# warns, and the command prints a warning raised in metarec's files as its own line
# (a process-wide flag, not a context variable: the service's worker threads see it)
IN_COMMAND = False


def outside_metarec() -> int:
    """The ``stacklevel`` at which a warning raised by the caller names the first frame
    outside metarec: the user's line. A fixed stacklevel fits one call path only, and
    a loader's warning reached through ``load_table`` named a line of metarec's own
    (``generic.py:581``), where the same warning through another path named the user's.
    (Python 3.12's ``skip_file_prefixes`` does this; metarec supports 3.10.) Under the
    ``metarec`` command, 1: the warning's own line, which the command knows for its
    own, where the first frame outside was the console script or runpy."""
    if IN_COMMAND:
        return 1
    frame = sys._getframe(1)  # the function that warns: stacklevel 1
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level

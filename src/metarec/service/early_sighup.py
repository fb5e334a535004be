"""A SIGHUP that comes before the server can take it: remembered, not fatal.

``metarec serve`` installs this the moment the command starts (the default action
of SIGHUP ends the process, and the server's imports and the run's load take
seconds); the app reloads once it serves, the supervisor of several workers
forwards it to them. Kept apart from the app so that installing it imports nothing.
"""

from __future__ import annotations

import signal
import threading

EARLY_SIGHUP = threading.Event()
# a SIGTERM or Ctrl-C one server process was asked to stop with: set by its handler
# before it raises, since Python drops an exception raised where the signal happened to
# land in a garbage collector's callback ("Exception ignored in ..."), and the server
# then served on; read once uvicorn's own handlers are in place, which take it again
STOP_ASKED = threading.Event()


def catch_early_sighup() -> None:
    """Until the server's own handler is in place, remember a SIGHUP; call from the
    main thread."""
    signal.signal(signal.SIGHUP, lambda *_: EARLY_SIGHUP.set())

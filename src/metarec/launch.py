"""The ``metarec`` command's entry point, kept apart from :mod:`metarec.cli`.

A SIGHUP ends a process by default, and importing the CLI's command modules takes a
few tenths of a second: a reload asked for as ``metarec serve`` started (a
``systemctl reload`` right after a start) stopped the service. Here, before those
imports, ``serve`` starts remembering a SIGHUP (:mod:`metarec.service.early_sighup`,
which imports nothing), for the server to act on once it serves.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading


def main() -> int:
    """The process's entry point (the console script, ``python -m metarec``): after a
    stop it leaves handlers that end the process, so call :func:`metarec.cli.main` to
    run a command inside a process of one's own."""
    try:
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
        if command == "serve" and threading.current_thread() is threading.main_thread():
            from metarec.service.early_sighup import catch_early_sighup

            catch_early_sighup()
        from metarec.cli import main as run_command

        code = run_command()
    except KeyboardInterrupt:
        # a Ctrl-C while the command modules import or the arguments are read, before a
        # command's own handler: a traceback through numpy's import
        print("\nmetarec: interrupted", file=sys.stderr)
        code = 130
    if code in (130, 143) and threading.current_thread() is threading.main_thread():
        # stopped by the user: a second Ctrl-C or SIGTERM during the interpreter's exit
        # (torch's atexit hooks) printed "Exception ignored in atexit callback" and a
        # traceback after the one-line message. It now ends the process at once, with
        # the same code: a stop, not ignored, as an exit hook that hangs needs one
        def stop_now(signum: int, frame: object) -> None:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

        signal.signal(signal.SIGINT, stop_now)
        signal.signal(signal.SIGTERM, stop_now)
    return code

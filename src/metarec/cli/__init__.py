"""The ``metarec`` command: a thin shell over the library.

One module a command group, each with a ``register(sub)`` that adds its
subcommands and options next to the code that reads them. Every user-caused
error (bad file, bad config, unknown title, ...) is printed as one line on
stderr with exit code 2 and no traceback; Ctrl-C exits 130 and says what
resumes, and so does SIGTERM (a scheduler's, or ``docker stop``'s) with 143
for the commands that resume. Importing this package loads neither torch nor
pandas, so ``--help`` and a mistyped option answer at once; each command
imports what it needs.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from metarec import errors
from metarec.allocator import keep_freed_memory
from metarec.cli import (
    abtest,
    benchmarking,
    conformance,
    dataset,
    ensemble,
    service,
    training,
)
from metarec.errors import MetarecError

__all__ = ["build_parser", "main"]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
# what an interrupted command keeps (training checkpoints every epoch; a benchmark
# keeps its finished folds and models), said only where running it again really resumes
_RESUMES = {
    # an interruption while encoding has no checkpoint yet to resume from
    "train": "; run the same command again to resume from the last finished epoch, if any",
    "quickstart": "; run the same command again to resume from the last finished epoch, if any",
    "benchmark": "; run the same command again to resume at the model it was fitting",
    "retrain": "; run the same command again to resume from the last finished epoch, if any",
}


class _StoreOnce(argparse._StoreAction):
    """An option's value, refused when the option is given twice: argparse kept the last
    (``--out a --out b`` wrote b, ``-k 5 -k 2`` listed two) without a word. Repeatable
    options say so (``action="append"``)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        given: set[str] = namespace.__dict__.setdefault(_GIVEN, set())
        if option_string is not None and self.dest in given:
            parser.error(f"{option_string}: given twice; give it once")
        given.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


_GIVEN = "_metarec_options_given"  # the options a parse has met, dropped once it ends


class _Parser(argparse.ArgumentParser):
    """argparse with a bad option value reported in one line, as every other bad value
    is: ``metarec recommend: error: --device: 'cuda:x' is not a device; ...``. A
    missing, unknown or valueless option, or an unknown command, still gets the usage,
    which shows what the command takes. An option of one value given twice is refused
    (:class:`_StoreOnce`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # no abbreviations: `--split 3` was read as --split-seed, and an option added
        # later would have made a script's abbreviation ambiguous, or another option's
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        # the registry its argument groups share too
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = super().parse_known_args(args, namespace)
        parsed.__dict__.pop(_GIVEN, None)
        return parsed, rest

    def error(self, message: str) -> NoReturn:
        flag, sep, detail = message.partition(": ")
        flag = flag.removeprefix("argument ").split("/")[-1]
        # "expected one argument": the option's value is missing, a usage error
        if sep and flag.startswith("-") and not re.fullmatch(r"expected .* arguments?", detail):
            # our type checks name the flag themselves; argparse names it again
            detail = detail.removeprefix(f"{flag}: ")
            self.exit(2, f"{self.prog}: error: {flag}: {detail}\n")
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="metarec",
        description="Cold-start recommendation with meta-learning over LM item vectors.",
    )
    from metarec import __version__

    p.add_argument("--version", action="version", version=f"metarec {__version__}")
    # named in the usage as COMMAND: the list of every command ran to 103 columns
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # the order `metarec --help` lists them in: a run's life, then evaluation, then serving
    for group in (training, dataset, ensemble, benchmarking, conformance, abtest, service):
        group.register(sub)
    _describe(sub)
    return p


def _describe(sub: Any) -> None:
    """Each command's one-line help as its own page's description, where it has none:
    `metarec quickstart --help` went from its usage straight to the options."""
    helps = {action.dest: action.help for action in sub._choices_actions}
    for name, parser in sub.choices.items():
        if parser.description is None and helps.get(name):
            parser.description = f"{helps[name]}."  # as listed, uncapitalised
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _describe(action)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = _glued_pairs(list(sys.argv[1:] if argv is None else argv))
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # parse_args would report them with the top-level usage, which lists commands,
        # not the options of the one the user is typing (unless typed before it)
        before = unknown[0] in argv and argv.index(unknown[0]) < argv.index(args.command)
        (parser if before else _innermost(parser, args)).error(
            f"unrecognized arguments: {' '.join(unknown)}"
        )
    args._t0 = time.perf_counter()
    if getattr(args, "k", 1) is not None and getattr(args, "k", 1) <= 0:
        # one line, as every bad value is (parser.error printed the top-level usage)
        print(f"metarec: error: -k: must be > 0, got {args.k}", file=sys.stderr)
        return 2
    if os.environ.get("METAREC_KEEP_FREED_MEMORY", "1") != "0":
        keep_freed_memory()  # large tensors reuse freed memory (see metarec.allocator)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        errors.IN_COMMAND = True  # metarec's warnings name metarec's lines: see _show_warning
        try:
            return _run(args)
        finally:
            errors.IN_COMMAND = False


# the options whose value is KEY=VALUE, where the key is free text (an item id)
_PAIR_OPTIONS = ("--rate", "--feature", "--set")


def _glued_pairs(argv: list[str]) -> list[str]:
    """``argv`` with ``--rate -5=4`` written as ``--rate=-5=4``: argparse reads a value
    starting with ``-`` as an option, so item ``-5`` was refused as "--rate: expected
    one argument". A pair's value never starts with ``--``, which stays an option."""
    out: list[str] = []
    pending = iter(argv)
    for arg in pending:
        if arg == "--":
            out.append(arg)
            out.extend(pending)
            break
        if arg in _PAIR_OPTIONS:
            value = next(pending, None)
            if value is not None and re.match(r"-[^-].*=", value):
                out.append(f"{arg}={value}")
                continue
            out.append(arg)
            if value is not None:
                out.append(value)
            continue
        out.append(arg)
    return out


def _innermost(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The (sub)parser of the command ``args`` chose, e.g. ``metarec data validate``'s."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _innermost(chosen, args)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be: the command stops the same way."""


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated


def _stop_before_serving(signum: int, frame: Any) -> None:
    print("metarec: stopped before serving", file=sys.stderr)
    raise SystemExit(0)


def _run(args: argparse.Namespace) -> int:
    installed, previous, previous_int, previous_hup = False, None, None, None
    main_thread = threading.current_thread() is threading.main_thread()
    if args.command != "serve" and main_thread:
        # a job scheduler or `docker stop` ends a long job (train, retrain, benchmark)
        # with SIGTERM; by default the process would vanish without a word, past the
        # cleanup of its locks and temporary files. Its writes are atomic either way, so
        # this adds the message and the cleanup; `serve` keeps uvicorn's graceful stop.
        previous, installed = signal.signal(signal.SIGTERM, _terminate), True
    elif args.command == "serve" and main_thread:
        # until the server puts in its own (its imports take a second or two): a stop,
        # Ctrl-C as SIGTERM, then exits 0, as one during the load or once serving does
        # (Ctrl-C gave "interrupted" and 130 in the first seconds); nothing is written
        # before the server starts
        previous, installed = signal.signal(signal.SIGTERM, _stop_before_serving), True
        previous_int = signal.signal(signal.SIGINT, _stop_before_serving)
        # and a reload asked for (SIGHUP, whose default ends the process: a `systemctl
        # reload` in the first seconds stopped the service) is kept for once it serves
        from metarec.service.early_sighup import catch_early_sighup

        previous_hup = signal.getsignal(signal.SIGHUP)
        catch_early_sighup()
        # a server that does not answer or stop: `kill -USR1 PID` writes every thread's
        # Python stack to its stderr (its log), without stopping it. Not where stderr is
        # no file (called in-process, as tests do): faulthandler writes to a descriptor
        with contextlib.suppress(AttributeError, ValueError, OSError):
            faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        return int(args.func(args))
    except MetarecError as exc:
        print(f"metarec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if main_thread:
            # the user has asked to stop: a second Ctrl-C (people press it twice) or a
            # SIGTERM after it, while this one is told and the process ends, printed a
            # traceback from torch's exit hooks; ignored until it is told (the finally
            # below gives an in-process caller its own handlers back), and after that
            # metarec.launch has them end a process of its own at once
            ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
            if previous_int is None and ignored is not None:
                previous_int = ignored
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stopped = "terminated" if isinstance(exc, _Terminated) else "interrupted"
        # the speed benchmark keeps nothing: its measures are of one uninterrupted process
        speed = args.command == "benchmark" and getattr(args, "protocol", None) == "speed"
        resumes = "" if speed else _RESUMES.get(args.command, "")
        notes = getattr(exc, "__notes__", ())
        if resumes and notes:  # a benchmark's folder of finished folds and models
            from metarec.evaluation.run_store import KEPT_NOTE

            kept = [n for n in notes if n.startswith(KEPT_NOTE)]
            if kept:
                resumes += f" (finished folds and models are {kept[0]}/)"
        print(f"\nmetarec: {stopped}{resumes}", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130
    except RuntimeError as exc:
        if "home directory" not in str(exc):
            raise
        # pathlib's expanduser of a "~name/..." with no such user (in --data, an option,
        # $METAREC_DATA or $METAREC_CACHE) ended in a traceback
        print(
            f"metarec: error: a path starting with ~NAME names no user here ({exc})",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:
        # the reader went away (`metarec report ... | head`): not an error of ours; point
        # stdout at devnull so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # the file system refused a path the user gave or that a run names (a file where
        # a folder is wanted, no permission, a name too long): their input, not our bug
        print(f"metarec: error: {os_message(exc)}", file=sys.stderr)
        return 2
    finally:
        if installed:  # main() called in a process of one's own (tests, notebooks)
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
        if previous_hup is not None:
            signal.signal(signal.SIGHUP, previous_hup)


def os_message(exc: OSError) -> str:
    """``PATH: reason`` for an error of the file system, as ``ls`` or ``cp`` say it."""
    if exc.filename is None:
        return str(exc)
    where = str(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    elif isinstance(exc, FileExistsError) and Path(where).is_file():
        # mkdir(exist_ok=True) on a file says "File exists", which reads as no error
        return f"{where}: is a file; a folder is needed there"
    return f"{where}: {exc.strerror or exc}"


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A warning as one line on stderr, like an error: a person at a terminal needs
    the message, not the source line that issued it. Other libraries' warnings keep
    their category, so they are not taken for metarec's."""
    ours = Path(filename).resolve().is_relative_to(_PACKAGE_DIR)
    kind = "" if ours else f"{category.__name__} from {Path(filename).name}:{lineno}: "
    print(f"metarec: warning: {kind}{message}", file=sys.stderr if file is None else file)

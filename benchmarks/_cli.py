"""What every benchmark script shares at its command line: count types that refuse 0
and negatives before any work, a results folder checked up front (a file there would
lose a run's results at its very end), a data folder that must exist (a mistyped one
would otherwise fall back to metarec's lookup or a download), and one-line errors with
exit code 2, as ``metarec`` itself answers."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from metarec.errors import MetarecError

RESULTS = Path(__file__).resolve().parent / "results"


def positive_int(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return n


def positive_float(value: str) -> float:
    x = float(value)
    if not x > 0 or x == float("inf"):  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value}")
    return x


def non_negative_float(value: str) -> float:
    x = float(value)
    if not 0 <= x < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {value}")
    return x


def data_folder(value: str) -> str:
    if not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no such folder")
    return value


def add_common(parser: argparse.ArgumentParser) -> None:
    """``--data`` (must exist) and ``--out`` (default: benchmarks/results)."""
    parser.add_argument("--data", type=data_folder, help="folder holding the datasets")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="folder for the results (default: %(default)s)"
    )


def results_folder(out: Path) -> Path:
    """``out``, made if missing; a file there is refused before the run, not after."""
    if out.exists() and not out.is_dir():
        raise MetarecError(f"--out {out}: is a file; a folder is needed there")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run(main: Callable[[], object]) -> None:
    """Call ``main``; an error the user caused is one line and exit 2."""
    prog = Path(sys.argv[0]).name
    try:
        main()
    except MetarecError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or "").strip().splitlines()[-1:] if isinstance(exc.stderr, str) else []
        print(f"{prog}: error: the measuring process failed: {' '.join(tail)}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        sys.exit(130)

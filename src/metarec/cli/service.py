"""``metarec serve`` and ``metarec retrain``: the service and the loop that retrains it."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metarec.cli.options import (
    DB_ENV,
    add_data_args,
    add_device_arg,
    add_set_arg,
    check_writable,
    data_or_root,
    data_spec,
    db_from_env,
    named_as_flags,
    path_arg,
    store_url,
)
from metarec.errors import MetarecError


def register(sub: Any) -> None:
    sv = sub.add_parser("serve", help="HTTP service: recommendations that learn from feedback")
    sv.add_argument("run", type=path_arg, help="run folder or ensemble folder to serve")
    sv.add_argument(
        "--db",
        type=store_url,
        help="feedback store URL: sqlite:///path.db or postgresql://user:pw@host/db "
        "(default: $METAREC_DB, which keeps a password out of ps, else the sqlite file "
        "metarec-feedback.db in the current directory)",
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument(
        "--port", type=int, default=8000, help="port to bind (default 8000; 0: any free port)"
    )
    add_device_arg(sv)
    sv.add_argument(
        "--api-key",
        help="key for writes and users' data (default: $METAREC_API_KEY; without one, they are "
        "taken from loopback only, which behind a proxy on this host is every client)",
    )
    sv.add_argument(
        "--cors", action="append", metavar="ORIGIN", help="allowed browser origin (repeatable)"
    )
    sv.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="host name under which a server without --api-key, or with --page-api-key, "
        "answers (repeatable; IP "
        "addresses, localhost and the --host name always are; any other name is refused, "
        "so a site cannot point its own name at the server and read the API)",
    )
    sv.add_argument(
        "--page-api-key",
        action="store_true",
        help="hand the API key to the web page at / (demos on a trusted network only)",
    )
    sv.add_argument(
        "--max-body-bytes", type=int, default=1_000_000, help="largest request body (default 1 MB)"
    )
    sv.add_argument(
        "--max-batch", type=int, default=1000, help="max events per request (default 1000)"
    )
    sv.add_argument(
        "--cache-size",
        type=int,
        default=10_000,
        help="adapted users kept in memory (default 10000)",
    )
    sv.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="threads for model work in each worker (default 1)",
    )
    sv.add_argument(
        "--runs-dir",
        type=path_arg,
        help="the folder whose run folders POST /v1/admin/reload may load (default: the "
        "folder holding RUN, where `metarec retrain --out` writes beside it)",
    )
    sv.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes on the port, each with its own copy of the model, kept in "
        "step through the feedback store (default 1; about one per core)",
    )
    sv.set_defaults(func=cmd_serve)

    rt = sub.add_parser(
        "retrain", help="meta-train on the data plus logged feedback; keep it only if not worse"
    )
    rt.add_argument(
        "run", type=path_arg, help="the run or ensemble being served (an ensemble: every member)"
    )
    rt.add_argument(
        "--db", type=store_url, help="feedback store URL (as for serve; default: $METAREC_DB)"
    )
    rt.add_argument("--out", type=path_arg, required=True, help="folder for the new run")
    add_data_args(rt, recorded=True)
    rt.add_argument("--root", type=path_arg, help="same as --data")
    add_set_arg(rt, "override the run's config (an ensemble's: each metarec member's)")
    rt.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="held-out MAE (1 - nDCG@3 for implicit objectives and ranking ensembles, "
        "1 - nDCG@10 over the "
        "catalogue on one-level data such as clicks) the new model may lose and "
        "still be written (negative: the "
        "gain it must show; default 0)",
    )
    rt.add_argument("--force", action="store_true", help="write the new run even if worse")
    rt.add_argument("--quiet", action="store_true", help="no progress bars")
    rt.set_defaults(func=cmd_retrain)


def cmd_serve(args: argparse.Namespace) -> int:
    from metarec.ensemble_run import run_kind
    from metarec.service.server import check_workers, serve
    from metarec.service.settings import ServiceSettings, default_db_url
    from metarec.service.store import check_db_url

    check_workers(args.workers)
    run_kind(args.run)  # a bad folder fails before the feedback store is created
    with named_as_flags(_FLAGS, _WITHIN):
        settings = ServiceSettings(
            run=Path(args.run),
            db_url=db_from_env(args.db, required=False) or default_db_url(),
            api_key=ServiceSettings.key_from_env(args.api_key),
            cors_origins=tuple(args.cors or ()),
            allowed_hosts=allowed_hosts(args),
            page_api_key=args.page_api_key,
            max_body_bytes=args.max_body_bytes,
            max_events_per_batch=args.max_batch,
            cache_size=args.cache_size,
            torch_threads=args.torch_threads,
            device=args.device,
            runs_dir=None if args.runs_dir is None else Path(args.runs_dir),
        )
    with _store_named(args.db):
        check_db_url(settings.db_url)  # before the run loads: "bogus://x" was refused after it
    serve(settings, host=args.host, port=args.port, workers=args.workers)
    # Ctrl-C and SIGTERM reach uvicorn, which drains in-flight requests and returns:
    # a clean stop, so 0, as uvicorn and gunicorn exit (not 130 like an interrupted job)
    return 0


def allowed_hosts(args: argparse.Namespace) -> tuple[str, ...]:
    """``--allowed-host`` names, and for a server that checks Host (keyless, or with
    ``--page-api-key``) bound to a name (``--host vm``) that name: the address it
    announces was refused as a name it was not given."""
    import ipaddress

    from metarec.service.settings import HOST_NAME, ServiceSettings

    names = tuple(args.allowed_host or ())
    bound = str(args.host).strip("[]")
    try:
        ipaddress.ip_address(bound)
    except ValueError:
        checks = ServiceSettings.host_checked(
            ServiceSettings.key_from_env(args.api_key), bool(getattr(args, "page_api_key", False))
        )
        if checks and HOST_NAME.fullmatch(bound) and bound not in names:
            names += (bound,)
    return names


# ServiceSettings' fields as `metarec serve` spells them
_FLAGS = {
    "max_body_bytes": "--max-body-bytes",
    "max_events_per_batch": "--max-batch",
    "cache_size": "--cache-size",
    "torch_threads": "--torch-threads",
    "api key": "--api-key (or $METAREC_API_KEY)",
    "page_api_key": "--page-api-key",
    "allowed_hosts": "--allowed-host",
    "cors_origins": "--cors",
    "runs_dir": "--runs-dir",
}
_WITHIN = {"(api_key)": "(--api-key or $METAREC_API_KEY)"}


_RETRAIN_FLAGS = {
    "out": "--out",
    "tolerance": "--tolerance",
    "db_url": "--db",
}


@contextlib.contextmanager
def _store_named(given: str | None) -> Iterator[None]:
    """Errors about a store URL read from ``$METAREC_DB`` name it, not a --db never
    given (the messages name --db, as most URLs come from it)."""
    try:
        yield
    except MetarecError as exc:
        if given is None and os.environ.get(DB_ENV) is not None and "--db" in str(exc):
            # the flag as a word: a URL's own "feed--db.db" is left as it is
            exc.args = (re.sub(r"(?<![\w-])--db(?![\w-])", f"${DB_ENV}", str(exc)),)
        raise


def cmd_retrain(args: argparse.Namespace) -> int:
    from metarec.retrain import retrain

    check_writable(args.out, "--out")
    given, args.db = args.db, db_from_env(args.db, required=True)
    args.data = data_or_root(args)
    within = {"force=True": "--force", "spec=": "--dataset/--data or --interactions"}
    with _store_named(given), named_as_flags(_RETRAIN_FLAGS, within):
        result = retrain(
            args.run,
            args.db,
            args.out,
            spec=data_spec(args),
            overrides=list(args.set or []),
            tolerance=args.tolerance,
            force=args.force,
            progress=not args.quiet,
        )
    print(result.summary())
    resumed = result.details.get("resumed_from")
    if isinstance(resumed, dict):  # an ensemble's metarec members, each its own
        print("resumed " + ", ".join(f"{n} after epoch {e}" for n, e in resumed.items()))
    elif resumed:  # as train's closing line says it
        print(f"resumed after epoch {resumed}")
    if result.written and result.details.get("best_epoch") == 0:  # as train says it
        from metarec.cli.training import UNTRAINED_NOTE

        print(UNTRAINED_NOTE, file=sys.stderr)
    if result.written:
        forced = "" if result.accepted else " (forced)"
        print(f"wrote {result.out}{forced} in {result.seconds:.0f} s")
        return 0
    print(
        f"metarec: the retrained model is not accepted ({result.verdict()}): held-out "
        f"{result.metric} {result.written_maes()[1]} vs {result.written_maes()[0]} for {args.run} "
        f"(tolerance {args.tolerance:g}); {args.out} not written (--force writes it anyway, "
        "from the training kept beside it)",
        file=sys.stderr,
    )
    return 1

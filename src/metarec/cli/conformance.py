"""``metarec check-model``: a model of one's own through the contract every metarec model
keeps (:mod:`metarec.conformance`), before it goes into a benchmark."""

from __future__ import annotations

import argparse
from typing import Any

from metarec.cli.options import add_data_args, comma_list, data_spec, seed
from metarec.errors import ConfigError


def register(sub: Any) -> None:
    c = sub.add_parser(
        "check-model",
        help="run a model of your own through the conformance checks every metarec model "
        "passes (exit 1 if one fails)",
    )
    c.add_argument(
        "factory",
        metavar="MODULE:FACTORY",
        help="a ScoringModel class or a function returning one (given seed= if it takes "
        "it), imported from MODULE with the current folder first on the path",
    )
    add_data_args(c, default="ml-100k")
    c.add_argument(
        "--not-personalised",
        action="store_true",
        help="the scores do not depend on the support set (as popularity's)",
    )
    c.add_argument(
        "--unseeded",
        action="store_true",
        help="no randomness: another seed gives the same model (closed-form models)",
    )
    c.add_argument(
        "--reads-text",
        action="store_true",
        help="new items are scored from their text vectors (checked: two texts, two scores)",
    )
    c.add_argument("--skip", help=f"comma-separated checks not to run, of: {_checks()}")
    c.add_argument("--encoder", default="tfidf", help="item text encoder (default tfidf)")
    c.add_argument(
        "--seed", type=seed, default=5, help="the model's and the world's seed (default 5)"
    )
    c.set_defaults(func=cmd_check_model)


def _checks() -> str:
    # the names without importing metarec.conformance (torch) for --help
    return (
        "scored_from_support, empty_support, new_items, recommend_excludes_seen, any_k, "
        "same_seed, query_never_read, predict_tasks, bad_support_refused, inputs_unchanged"
    )


def cmd_check_model(args: argparse.Namespace) -> int:
    from metarec.evaluation.own_models import build, import_factory

    skip = comma_list(args.skip, "--skip") or []
    unknown = [s for s in skip if s not in _checks().split(", ")]
    if unknown:
        raise ConfigError(f"--skip: unknown check(s) {unknown}; expected some of {_checks()}")
    factory = import_factory(args.factory, f"MODULE:FACTORY {args.factory!r}")
    # a factory that gives no model: exit 2, before the data loads
    build(args.factory, factory, args.seed, field="MODULE:FACTORY")

    from metarec.conformance import make_world, run_checks
    from metarec.data.spec import load_from_spec

    if not (args.dataset or args.interactions):
        args.dataset = "ml-100k"
    ds = load_from_spec(data_spec(args))
    world = make_world(ds, encoder=args.encoder, seed=args.seed)
    outcome = run_checks(
        factory,
        world,
        seed=args.seed,
        personalised=not args.not_personalised,
        seeded=not args.unseeded,
        reads_text=args.reads_text,
        skip=skip,
    )
    width = max((len(name) for name in outcome.results), default=0)
    for name, why in outcome.results.items():
        print(f"{'ok  ' if why is None else 'FAIL'} {name:<{width}}  {why or ''}".rstrip())
    failed = len(outcome.failed)
    print(
        f"{outcome.model}: {len(outcome.results) - failed} of {len(outcome.results)} checks "
        f"passed on {ds.name}" + (f"; {failed} failed" if failed else "")
    )
    return 1 if failed else 0

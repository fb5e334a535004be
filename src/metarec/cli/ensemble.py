"""``metarec ensemble``: blend trained runs and peers into a saved ensemble."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from metarec.cli.options import (
    add_data_args,
    check_writable,
    comma_list,
    data_spec,
    int_list,
    named_as_flags,
    path_arg,
    seed,
)
from metarec.errors import ConfigError, ModelError


def register(sub: Any) -> None:
    en = sub.add_parser(
        "ensemble",
        help="blend trained runs and peers with weights learned on validation users; save it",
    )
    en.add_argument(
        "runs", nargs="+", type=path_arg, metavar="RUN", help="run folders trained on the same data"
    )
    en.add_argument(
        "--peers",
        help="comma-separated models fitted on the runs' training data: the peers "
        "popularity, bias, knn, and metarec's ranking models episodic, stacked "
        "(default popularity, and bias with --mode rating; '' for none)",
    )
    en.add_argument(
        "--mode",
        choices=("ranking", "rating"),
        default="ranking",
        help="ranking: blend standardised scores for nDCG@10 (default); rating: blend "
        "ratings for MAE (rating models and the bias peer only)",
    )
    en.add_argument("--buckets", help="support-size buckets (default 0,1,3,5,10,20)")
    en.add_argument(
        "--min-bucket-users",
        type=int,
        default=20,
        help="a bucket judged on fewer validation users takes the weights of the bucket "
        "below it (default 20)",
    )
    en.add_argument(
        "--max-items",
        type=int,
        help="fit episodic and stacked on this many of the most rated items only and rank "
        "the rest by popularity below them: their memory grows with the square of the "
        "items (default: every item)",
    )
    en.add_argument(
        "--max-episodes",
        type=int,
        help="train each bag of the stacked ranker's trees on this many training episodes, "
        "a seeded sample (default: every episode)",
    )
    en.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seeds the peers, the order of validation ratings given at one time (all of "
        "them where the data has no times) and the weight search beyond four members (up "
        "to four it is an exact grid, the same for every seed); default 0",
    )
    en.add_argument("--out", type=path_arg, required=True, help="ensemble folder to write")
    add_data_args(en, recorded=True)
    en.set_defaults(func=cmd_ensemble)


def cmd_ensemble(args: argparse.Namespace) -> int:
    """Blend trained runs (and peers fitted on their training data) into a saved ensemble."""
    from metarec.ensemble_run import check_members, check_peer_names, rating_peers, run_kind
    from metarec.locks import exclusive
    from metarec.models.persist import check_target

    runs = [Path(r) for r in args.runs]
    for run in runs:  # bad paths fail here, before any data is loaded
        if run_kind(run) != "run":
            raise ConfigError(f"{run}: is an ensemble; give the run folders to blend")
    # the anchor a blend falls back on for users with few ratings: in rating mode the
    # bias model (popularity predicts no rating, and was refused once the data loaded)
    given = (
        args.peers
        if args.peers is not None
        else ("bias" if args.mode == "rating" else "popularity")
    )
    peers = comma_list(given, "--peers") or []
    with named_as_flags({"peers": "--peers"}):
        check_peer_names(peers)
    check_members(runs, peers)
    rating = rating_peers()
    if args.mode == "rating" and [p for p in peers if p not in rating]:
        raise ConfigError(
            f"--peers {given}: --mode rating blends predicted ratings, and of the peers only "
            f"{' and '.join(rating)} predicts them, not "
            f"{', '.join(p for p in peers if p not in rating)}"
        )
    # "" is refused by int_list: it was taken for the default buckets without a word
    buckets = int_list(args.buckets, "--buckets") if args.buckets is not None else None
    if buckets is not None and (sorted(set(buckets)) != buckets or buckets[0] != 0):
        # found by the ensemble after the data had loaded, naming no flag
        raise ConfigError(
            f"--buckets: support sizes that start at 0 and increase, got {args.buckets!r}"
        )
    if args.min_bucket_users < 1:  # found by the ensemble after the runs had loaded
        raise ConfigError(f"--min-bucket-users: must be >= 1, got {args.min_bucket_users}")
    for flag, value, readers in (("--max-items", args.max_items, ("episodic", "stacked")),
                                 ("--max-episodes", args.max_episodes, ("stacked",))):  # fmt: skip
        if value is not None and value < 1:
            raise ConfigError(f"{flag}: must be >= 1, got {value}")
        if value is not None and not set(readers) & set(peers):
            # taken without a word, as if it had capped something (benchmark refuses it)
            raise ConfigError(
                f"{flag}: applies to the peers {' and '.join(readers)}, which --peers "
                f"({given or 'none'}) does not name"
            )
    out = Path(args.out)
    if out.resolve() in {r.resolve() for r in runs}:
        raise ConfigError(f"--out {out}: must not be one of the runs")
    check_target(out)  # before the slow part, as the save would refuse it
    check_writable(out, "--out")
    # two blends into one --out both said "saved", and one of them was lost
    with exclusive(out, "wait for it to finish, or give another --out"):
        return _blend(args, runs, peers, buckets, out)


def _blend(
    args: argparse.Namespace,
    runs: list[Path],
    peers: list[str],
    buckets: list[int] | None,
    out: Path,
) -> int:
    from metarec.data.spec import check_recorded, load_from_spec, names_data, spec_for_run
    from metarec.ensemble_run import fit_from_runs, format_weights
    from metarec.io import load_json

    spec = data_spec(args)
    # the first run's record: its data, or its files' column options for files given
    manifest = runs[0] / "recommender.json"
    recorded = None
    if not names_data(spec) or manifest.is_file():
        meta = load_json(manifest)
        metadata = meta.get("metadata") if isinstance(meta, dict) else None
        if not isinstance(metadata, dict | None):
            raise ModelError(
                f"{manifest}: metadata: expected an object, got {metadata!r:.60} "
                "(damaged or edited?)"
            )
        metadata = metadata or {}
        # read before the run is loaded: the checks Recommender.load makes of it
        check_recorded(metadata, str(manifest))
        recorded = metadata.get("data_spec")
    spec = spec_for_run(spec, recorded, str(runs[0]))
    ds = load_from_spec(spec)
    with named_as_flags({"peers": "--peers"}):
        ens = fit_from_runs(
            runs,
            ds,
            peers=peers,
            mode=args.mode,
            buckets=buckets,
            seed=args.seed,
            progress=True,
            max_items=args.max_items,
            max_episodes=args.max_episodes,
            min_bucket_users=args.min_bucket_users,
        )
    ens.metadata["data_spec"] = spec
    print("\nweights by support size (ratings the user has):")
    print(format_weights(ens))
    ens.save(out)
    print(f"\nsaved {out}")
    where = shlex.quote(str(out))  # pasteable with a space or a quote in the path
    # the top of the scale it was fitted on: 5 on 1-5 stars, 1 on clicks (5 was refused)
    top = f"{ens.rating_range[1]:g}" if ens.rating_range is not None else "5"
    print(f'try: metarec recommend {where} --rate "ITEM={top}"   or   metarec serve {where}')
    return 0

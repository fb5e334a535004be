"""``metarec abtest``: protocol P4, an offline A/B test of two saved runs or ensembles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarec.cli.options import (
    add_device_arg,
    check_writable,
    data_or_root,
    named_as_flags,
    path_arg,
    seed,
)
from metarec.errors import ConfigError, DataError, MetarecError

if TYPE_CHECKING:
    from metarec.data.schema import Dataset
    from metarec.ensemble_run import EnsembleRecommender


def register(sub: Any) -> None:
    ab = sub.add_parser(
        "abtest",
        help="protocol P4: offline A/B test (replay, interleaving) of two saved runs or ensembles",
    )
    ab.add_argument(
        "run_a", type=path_arg, metavar="RUN_A", help="run or ensemble folder of policy A (control)"
    )
    ab.add_argument(
        "run_b",
        type=path_arg,
        metavar="RUN_B",
        help="run or ensemble folder of policy B (treatment)",
    )
    ab.add_argument(
        "--dataset",
        metavar="NAME",
        help="ml-100k, ml-1m or ml-latest-small (default: RUN_A's data)",
    )
    ab.add_argument(
        "--data",
        type=path_arg,
        metavar="PATH",
        help="the data set's folder (atomic or GroupLens files), or with --dataset the "
        "folder holding it, as every command reads --data",
    )
    ab.add_argument("--root", type=path_arg, metavar="DIR", help="same as --data")
    ab.add_argument(
        "--users",
        required=True,
        type=path_arg,  # "" was read as the current folder, "is a folder"
        metavar="SPEC",
        help="held-out users: a file of user ids (one per line), a P1 split JSON (its new "
        "users), a P4 split JSON (arms and K as saved), or heldout:FRACTION (a seeded "
        "fraction of all users; they may have been in the runs' training data)",
    )
    ab.add_argument(
        "--support",
        type=int,
        default=None,
        metavar="K",
        help="each user's first K ratings adapt them (default 5; a P4 split file's own K)",
    )
    ab.add_argument(
        "-k", dest="top_k", type=int, default=10, metavar="N", help="items recommended (default 10)"
    )
    ab.add_argument("--seed", type=seed, help="arm assignment and interleaving coins (default 0)")
    ab.add_argument(
        "--method",
        choices=["replay", "interleave", "both"],
        default="both",
        help="replay (arms of users), team-draft interleaving, or both (the default)",
    )
    ab.add_argument("--json", action="store_true", help="print the report as JSON")
    ab.add_argument(
        "--out",
        type=path_arg,
        metavar="FILE",
        help="also write the JSON report to this file, and its plot beside it (.png)",
    )
    ab.add_argument(
        "--like-threshold",
        type=float,
        help="rating at or above which a later item counts as a success (default: the top "
        "quarter of the data's rating scale, 4 on 1-5 stars)",
    )
    ab.add_argument(
        "--save-split",
        type=path_arg,
        metavar="FILE",
        help="write the P4 split (users, arms, K, seed) as JSON",
    )
    add_device_arg(ab)
    ab.set_defaults(func=cmd_abtest)


def cmd_abtest(args: argparse.Namespace) -> int:
    """Protocol P4: replay and/or interleave two saved runs on held-out users."""
    import numpy as np

    for flag, value in outputs(args):  # the plot too: found a folder after the rest
        check_writable(value, flag, file=True)
    check_outputs(args)
    if any("plot" in flag for flag, _ in outputs(args)):
        from metarec.evaluation.report import pyplot

        pyplot()  # an MPLBACKEND matplotlib cannot use: named before the work

    from metarec.data.schema import has_timestamps
    from metarec.data.spec import (
        check_not_overwriting,
        load_from_spec,
        make_spec,
        spec_for_run,
    )
    from metarec.ensemble_run import EnsembleRecommender, data_mismatch, load_run
    from metarec.evaluation.abtest import format_report, run_abtest
    from metarec.evaluation.p4_split import P4Split, make_p4_split
    from metarec.evaluation.users_spec import check_users_spec, users_from_spec
    from metarec.io import jsonable, save_json, write_bytes_atomic
    from metarec.models.base import ScoringModel
    from metarec.models.meta_model import MetaModel

    support = 5 if args.support is None else args.support
    if support < 0:
        raise ConfigError(f"--support: K must be >= 0, got {support}")
    if args.top_k <= 0:
        raise ConfigError(f"-k: must be > 0, got {args.top_k}")
    heldout = check_users_spec(args.users)  # before the slow part: loading runs and data
    # --root alone is --data alone (the data set's folder), as its help and retrain say
    data = data_or_root(args)
    # either arm may be a run folder or a saved ensemble
    with named_as_flags({"device": "--device"}):  # as serve names it
        recs = {
            arm: load_run(run, device=args.device)
            for arm, run in (("A", args.run_a), ("B", args.run_b))
        }
    if list(recs["A"].items["item_id"]) != list(recs["B"].items["item_id"]):
        raise ConfigError(
            f"{args.run_a} and {args.run_b} have different catalogues "
            f"({_catalogue_difference(recs['A'], recs['B'])}); "
            "an A/B test needs two runs trained on the same data"
        )
    scales = [tuple(map(float, recs[arm].rating_range)) for arm in ("A", "B")]
    if scales[0] != scales[1]:  # was "score_catalogue: support rating 5 is off the scale"
        shown = [f"[{lo:g}, {hi:g}]" for lo, hi in scales]
        raise ConfigError(
            f"{args.run_a} was trained on ratings {shown[0]} and {args.run_b} on {shown[1]}; "
            "an A/B test needs two runs trained on the same data"
        )
    # as evaluate, ensemble and retrain read a run's data: `--data DIR` holding the
    # run's data set takes it from there (it was read as the data set's own folder)
    spec = spec_for_run(
        make_spec({"dataset": args.dataset, "data": data}),
        recs["A"].metadata.get("data_spec") or None,
        args.run_a,
    )
    for flag, path in outputs(args):
        check_not_overwriting(spec, flag, path, folder=False)
    ds = load_from_spec(spec)
    from metarec.ensemble_run import warn_of_unread_features

    for arm, run in (("A", args.run_a), ("B", args.run_b)):
        rec = recs[arm]
        members = rec.metarec_members() if hasattr(rec, "metarec_members") else [rec]
        for member in members:
            # A's data: B trained with a users file was judged without it, unwarned
            warn_of_unread_features(ds, member, run)
    problem = data_mismatch(ds, recs["A"])  # A's catalogue and scale are B's (above)
    if problem:
        # the flag given: "--data" was said of --dataset ml-1m alone
        flag = (
            f"--dataset {args.dataset}"
            if args.dataset
            else "--data"
            if args.data
            else f"{args.run_a}'s recorded data"
        )
        raise ConfigError(
            f"{flag}: {problem} ({args.run_a} and {args.run_b}); give the data they were trained on"
        )
    note = sys.stderr if args.json else sys.stdout  # keep --json output parseable
    if Path(args.run_a).resolve() == Path(args.run_b).resolve():
        # allowed: an A/A test checks the procedure (its differences should be noise)
        print("A and B are the same run: an A/A test", file=note)
    drawn = 0 if args.seed is None else args.seed
    chosen = users_from_spec(args.users, ds, drawn)
    if isinstance(chosen, P4Split):
        split = chosen
        if split.users_from.startswith("heldout:"):
            # drawn by heldout:F, which may hold training users: its replay is taken as
            # the first run was, not refused for them
            heldout = check_users_spec(split.users_from)
        for flag, given in (("--support", args.support), ("--seed", args.seed)):
            if given is not None:  # the file fixes them; ignoring the flag would mislead
                raise ConfigError(
                    f"{flag}: the P4 split {args.users} fixes K ({split.support}) and the "
                    f"seed ({split.seed}); leave {flag} out, or draw a new split"
                )
        if split.dataset and split.dataset != ds.name:
            raise ConfigError(
                f"--users {args.users}: a P4 split of {split.dataset!r}, not of {ds.name!r}"
            )
        counts = ds.interactions.groupby(ds.interactions["user_id"].astype(str)).size()
        have = counts.reindex(split.users, fill_value=0).to_numpy()
        short = np.flatnonzero(have <= split.support)
        if len(short):
            user = split.users[short[0]]
            raise DataError(
                f"user {user!r} has {have[short[0]]} ratings in {ds.name}; the split's "
                f"K = {split.support} needs more ({len(short)} such users; is {ds.name} "
                "the data the split was drawn from?)",
                path=args.users,
            )
        print(
            f"split from {args.users}: K = {split.support}, seed {split.seed}, arms as saved",
            file=note,
        )
    else:
        split = make_p4_split(ds.interactions, chosen, support=support, seed=drawn, dataset=ds.name)
        if heldout is not None:
            split.users_from = str(args.users)
        if split.skipped.get("too_few_ratings"):
            print(
                f"skipped {split.skipped['too_few_ratings']} users with fewer than "
                f"{support + 1} ratings",
                file=note,
            )
        if split.skipped.get("not_in_data"):
            known = set(ds.interactions["user_id"].astype(str))
            absent = list(dict.fromkeys(str(u) for u in chosen if str(u) not in known))
            named = ", ".join(repr(u) for u in absent[:5]) + (", ..." if len(absent) > 5 else "")
            print(
                f"skipped {split.skipped['not_in_data']} users not in the data ({named})",
                file=note,
            )
        if not split.users:
            missing = split.skipped.get("not_in_data", 0)
            counts = ds.interactions.groupby(ds.interactions["user_id"].astype(str)).size()
            largest = counts.reindex([str(u) for u in chosen]).max()  # NaN: none in the data
            most = int(largest) - 1 if largest == largest else 0
            raise DataError(
                f"none of its users can be tested on {ds.name}: {missing} are not in the "
                f"data, {split.skipped.get('too_few_ratings', 0)} have {support} ratings or "
                "fewer "
                + (
                    f"(is {ds.name} the data the runs were trained on?)"
                    # a few unknown ids beside users with too few ratings: K is the slip
                    if most < 1
                    else f"(the most any of them allows is --support {most})"
                ),
                path=args.users,
            )
    if not has_timestamps(ds.interactions):  # as the benchmark warns for P2's support
        print(
            f"note: {ds.name} has no timestamps, so each user's support is K of their "
            "ratings drawn at random (seeded), not their first K by time",
            file=note,
        )
    if heldout is not None:  # said, as a replay of its split file would not show it
        # a run's split.json, where neither arm trained on its new users: runs trained on
        # every user (implicit feedback's default) have none, and one of two runs split
        # with other seeds holds users the other trained on; the hint named either
        untrained = next(
            (
                path
                for path in (Path(args.run_a) / "split.json", Path(args.run_b) / "split.json")
                if path.is_file() and _nobody_trained_on(path, args, recs, ds)
            ),
            None,
        )
        instead = (
            f"--users {untrained} tests new users only"
            if untrained is not None
            else "to test users neither run trained on, leave them out of their training "
            "data and give their ids: --users FILE"
        )
        print(
            f"users drawn by {split.users_from}: from all of {ds.name}'s users, so some may "
            f"have trained the runs ({instead})",
            file=note,
        )
    if heldout is None:  # heldout:FRACTION may hold training users, as documented
        for arm, run in (("A", args.run_a), ("B", args.run_b)):
            trained, source = trained_users_of(arm, run, recs[arm], ds, args.users)
            seen = sorted(trained & set(split.users))
            if seen:
                raise DataError(
                    f"{len(seen)} of its users (first: {seen[0]!r}) trained run {arm} "
                    f"({run}, {source}): an A/B test on them measures memory, not "
                    "cold start; use the runs' new users (--users RUN/split.json of the "
                    "run that was trained on this split) or heldout:FRACTION knowingly",
                    path=args.users,
                )
    policies: dict[str, ScoringModel] = {
        arm: rec.ensemble
        if isinstance(rec, EnsembleRecommender)
        else MetaModel.from_recommender(rec, name=arm)
        for arm, rec in recs.items()
    }
    from metarec.data.schema import check_like_threshold

    threshold = ds.like_threshold if args.like_threshold is None else args.like_threshold
    check_like_threshold(threshold, ds.rating_range, "--like-threshold")
    n_items = len(recs["A"].item_index)
    if args.top_k > n_items:
        raise ConfigError(f"-k: {args.top_k} is more than the catalogue's {n_items:,} items")
    report = run_abtest(
        policies["A"],
        policies["B"],
        ds.interactions,
        split,
        recs["A"].item_index,
        k=args.top_k,
        method=args.method,
        users=ds.users,
        threshold=threshold,
    )
    report["runs"] = {"A": str(args.run_a), "B": str(args.run_b)}
    report = jsonable(report)
    # written only now that every input has passed (-k and --like-threshold are checked
    # after the split is drawn) and the test has run: a refused command wrote the split
    # before, and left it as if the test had been done
    plot = None
    if args.out and report.get("replay"):  # drawn before anything is written
        from metarec.evaluation.report import abtest_png

        plot = abtest_png({**report, "A": str(args.run_a), "B": str(args.run_b)})
    if args.save_split:
        split.save(args.save_split)
    if args.out:
        save_json(args.out, report)
        png = Path(args.out).with_suffix(".png")
        if plot is not None:
            write_bytes_atomic(png, plot)
        elif _is_png(png) and not _is_users_file(png, args.users):
            # an earlier test's replay plot (this one, interleaving alone, has none)
            # stood beside the new report as if it showed it; a file of that name that
            # is no picture, or is what this test read, is not the plot
            png.unlink()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report, report["runs"]))
    return 0


def _is_png(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:  # none there, a folder, unreadable
        return False


def _is_users_file(path: Path, users: str) -> bool:
    return not users.startswith("heldout:") and Path(users).resolve() == path.resolve()


def outputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """Every file the command writes, with the flag that names it: the --out report, its
    replay plot beside it (the report's name with .png; none for --method interleave,
    which has no replay to plot) and the --save-split file."""
    written: list[tuple[str, Path]] = []
    if args.out is not None:
        written.append(("--out", Path(args.out)))
        if args.method != "interleave":
            written.append((f"--out {args.out}'s plot", Path(args.out).with_suffix(".png")))
    if args.save_split is not None:
        written.append(("--save-split", Path(args.save_split)))
    return written


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output that lands on what the command reads: the
    --users file or anything inside either arm's folder. Each write replaces its file
    whole, so ``--out RUN/recommender.json`` replaced the run's manifest with a report
    and ``--save-split RUN/split.json`` its P1 split (and with it the record of which
    users the run trained on), exit 0 both times. Nothing a report needs is inside a
    run folder, so the whole folder is refused, not only the files in it today (a run
    grows: metrics.json, checkpoint/). Paths are compared resolved, so ``./runA/../runA``
    and a symbolic link to a run are caught too."""
    users = None if args.users.startswith("heldout:") else Path(args.users).resolve()
    folders = []  # (what the folder is, the folder resolved)
    for arm, run in (("A", args.run_a), ("B", args.run_b)):
        folders.append((f"run {arm}'s folder {run}", Path(run).resolve()))
        # an ensemble's training users are read from its runs' split.json
        # (ensemble_trained_users): those folders are inputs too
        folders += [
            (f"{blended}, a run that ensemble {arm} blends", Path(blended).resolve())
            for blended in blended_runs(run)
        ]
    written = outputs(args)
    # two outputs on one file: the later write silently replaced the earlier (the report
    # overwrote the saved split, and --out r.png's plot the report)
    for i, (flag, path) in enumerate(written):
        for other, there in written[:i]:
            if path.resolve() != there.resolve():
                continue
            if other == "--out" and "plot" in flag:  # --out r.png
                raise ConfigError(
                    f"--out {path}: the report's plot is written beside it with a .png name, "
                    "the same name; name the report .json"
                )
            if "plot" in other:
                raise ConfigError(
                    f"{flag} {path}: the report's plot is written there (the --out name with "
                    ".png); give another file name"
                )
            raise ConfigError(
                f"{flag} and {other} name the same file ({path}); the report would replace "
                "the split: give each its own file"
            )
    for flag, path in written:
        where = path.resolve()
        if where == users:
            raise ConfigError(
                f"{flag} {path}: is the --users file {args.users}; writing it would replace "
                "the input; give another file name"
            )
        for what, folder in folders:
            if where.is_relative_to(folder):
                raise ConfigError(
                    f"{flag} {path}: is inside {what}; writing there could replace a file "
                    "of the run; give a file outside the runs"
                )


def blended_runs(folder: str) -> list[str]:
    """The run folders an ensemble folder records it was built from; none for a run
    folder, or where the manifest cannot be read (loading the arm reports that)."""
    from metarec.io import load_json
    from metarec.models.persist import MANIFEST

    path = Path(folder) / MANIFEST
    if not path.is_file():
        return []
    try:
        raw = load_json(path)
    except (OSError, ValueError, MetarecError):
        return []
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    runs = meta.get("runs") if isinstance(meta, dict) else None
    return [r for r in runs if isinstance(r, str)] if isinstance(runs, list) else []


def trained_users_of(arm: str, run: str, rec: Any, ds: Dataset, users: str) -> tuple[set[str], str]:
    """The users arm ``arm`` (``run``) learned from and where that is recorded, or a
    ConfigError where the run records none."""
    from metarec.ensemble_run import EnsembleRecommender
    from metarec.trained_users import TRAINED_USERS, recorded_training_users

    if isinstance(rec, EnsembleRecommender):
        trained = ensemble_trained_users(rec, arm, run, ds, users)
        return trained, f"the split.json or {TRAINED_USERS} of a run it blends"
    recorded = recorded_training_users(run)
    if recorded is None:
        raise ConfigError(
            f"--users {users}: run {arm} ({run}) does not record its "
            f"training users (no split.json or {TRAINED_USERS}: saved by other "
            "code, or trained before runs recorded them), so the test cannot "
            "keep them out; train it again with metarec train, or test it on "
            "--users heldout:FRACTION (which may hold training users)"
        )
    return recorded


def _nobody_trained_on(
    split_file: Path, args: argparse.Namespace, recs: dict[str, Any], ds: Dataset
) -> bool:
    """Whether ``split_file``'s new users are users neither arm learned from (False where
    that cannot be told: the file unreadable, a run recording none)."""
    from metarec.evaluation.users_spec import users_from_spec

    try:
        users = users_from_spec(split_file, ds)
        if not isinstance(users, list):
            return False
        return not any(
            trained_users_of(arm, run, recs[arm], ds, str(split_file))[0] & set(users)
            for arm, run in (("A", args.run_a), ("B", args.run_b))
        )
    except (MetarecError, OSError, ValueError, KeyError, TypeError):
        # a damaged split.json: no hint from it (a command that uses it says why)
        return False


def ensemble_trained_users(
    rec: EnsembleRecommender, arm: str, folder: str, ds: Dataset, users: str
) -> set[str]:
    """The users an ensemble learned from: its runs' training and validation users (the
    peers were fitted on the first run's, the weights learned on the validation users).

    An ensemble folder holds copies of its runs' models but not their split.json, so
    reading the ensemble folder alone found none and let an ensemble be tested on the
    very users it trained on. The split is read from the run folders ensemble.json
    records (metadata.runs, in the order of its metarec members), and each must still be
    the split that member was trained with: a member records its split's digest
    (``metarec train``), and a run folder trained again since holds another split. Where
    the runs' splits cannot be read so (a run moved or deleted, its split.json gone or
    replaced), the ensemble's training users are unknown, and guessing "none" is what
    let the leak through: the test is refused, except for --users heldout:FRACTION,
    which is documented to possibly hold training users and is not checked for them. A
    member without a recorded split whose run has no split.json was trained with a
    seeded hold-out of its own (``--holdout none``, :func:`metarec.train`): its users
    are in its trained-users.json (:mod:`metarec.trained_users`)."""
    from metarec.evaluation.p1 import P1Split
    from metarec.models.meta_model import MetaModel
    from metarec.trained_users import TRAINED_USERS, recorded_training_users

    def unknown(why: str) -> ConfigError:
        return ConfigError(
            f"--users {users}: run {arm} ({folder}) is an ensemble whose training users "
            f"are unknown: {why}; test it on --users heldout:FRACTION (which may hold "
            "training users), or rebuild the ensemble from runs that record their users "
            "(split.json or trained-users.json)"
        )

    # a retrained ensemble trained its members itself, and lists their users
    recorded = recorded_training_users(folder)
    if recorded is not None:
        return recorded[0]
    runs = rec.metadata.get("runs")
    members = [
        (name, m.recommender)
        for name, m in rec.ensemble.members.items()
        if isinstance(m, MetaModel) and m.recommender is not None
    ]
    if not isinstance(runs, list) or len(runs) != len(members):
        raise unknown("its ensemble.json does not record the runs its members came from")
    trained: set[str] = set()
    for run, (name, member) in zip(runs, members, strict=True):
        digest = member.metadata.get("split_digest")
        split_file = Path(str(run)) / "split.json"
        if not Path(str(run)).is_dir():
            raise unknown(f"member {name!r} came from {run}, which is gone")
        if not split_file.is_file():
            if digest is not None or member.metadata.get("holdout") == "p1":
                raise unknown(f"member {name!r} was trained on a P1 split; {split_file} is gone")
            recorded = recorded_training_users(run)
            if recorded is None:
                raise unknown(
                    f"member {name!r} came from {run}, which records no training users "
                    f"(no split.json or {TRAINED_USERS})"
                )
            trained |= recorded[0]
            continue
        split = P1Split.load(split_file, ds, check_rule=False)
        if digest is not None and digest != split.digest():
            raise unknown(
                f"{split_file} is no longer the split member {name!r} was trained with "
                "(the run was trained again, or the file edited)"
            )
        trained |= {*split.train_users, *split.validation_users}
    return trained


def _catalogue_difference(a: Any, b: Any) -> str:
    """How arm B's catalogue differs from arm A's, in a few words: which items one has
    alone (an example of each, and whether the run records them as added after
    training, as a served run that took new items and was retrained does), or an order."""
    from metarec.data.spec import added_items

    ids_a, ids_b = [str(i) for i in a.items["item_id"]], [str(i) for i in b.items["item_id"]]
    parts = []
    for arm, rec, mine, theirs in (("A", a, ids_a, set(ids_b)), ("B", b, ids_b, set(ids_a))):
        alone = [i for i in mine if i not in theirs]
        if alone:
            added = added_items(rec.metadata) or set()
            late = " (added after training)" if added.issuperset(alone) else ""
            parts.append(f"{len(alone)} item(s) only in {arm}{late}, such as {alone[0]!r}")
    return "; ".join(parts) or "the same items in another order"

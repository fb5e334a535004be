"""``metarec quickstart``, ``train``, ``evaluate`` and ``recommend``: one run's life."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarec.cli.options import (
    DEFAULT_RUN,
    add_data_args,
    add_device_arg,
    add_train_args,
    check_run_out,
    check_writable,
    data_spec,
    named_as_flags,
    path_arg,
    seed,
    train_config,
)
from metarec.config import VALIDATION_FRACTION
from metarec.errors import ConfigError, DataError, MetarecError, ModelError

if TYPE_CHECKING:
    import pandas as pd

DEMO_USER = [
    ("Toy Story (1995)", 5.0),
    ("Aladdin (1992)", 5.0),
    ("The Lion King (1994)", 4.0),  # as titles are shown (the file's "Lion King, The")
    ("Scream (1996)", 1.0),
    ("Heat (1995)", 2.0),
]


def register(sub: Any) -> None:
    q = sub.add_parser(
        "quickstart",
        help="clean, encode, meta-train, evaluate (P1), recommend (ml-100k unless --dataset)",
    )
    add_data_args(q, default="ml-100k")
    add_train_args(q)
    q.add_argument(
        "--out", type=path_arg, default=DEFAULT_RUN, help=f"run folder (default {DEFAULT_RUN})"
    )
    q.set_defaults(func=cmd_quickstart)

    t = sub.add_parser("train", help="meta-train a recommender into a run folder")
    add_data_args(t)
    add_train_args(t)
    t.add_argument("--out", type=path_arg, required=True, help="run folder")
    t.add_argument(
        "--holdout",
        choices=["p1", "none"],
        default=None,
        help="p1: hold out P1's new users/items for `metarec evaluate` (default for "
        "ratings); none: train on all users (10%% kept for early stopping; the default "
        "where every rating is one value, clicks or purchases, which P1 cannot measure)",
    )
    t.add_argument(
        "--split-seed",
        type=seed,
        default=None,
        help="seed of the users' split (default: the training seed, --set seed=N); runs of several "
        "seeds with one split seed share their validation users, so `metarec ensemble` "
        "can blend them (a seed bag)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="protocol P1 metrics of a run against the bias model")
    e.add_argument("run", type=path_arg)
    add_data_args(e, recorded=True)
    add_device_arg(e)
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("recommend", help="top-k for a new user given a few ratings")
    r.add_argument("run", type=path_arg, help="run folder or ensemble folder")
    r.add_argument(
        "--rate",
        action="append",
        metavar="ITEM=RATING",
        help="an item id or title and its rating (repeatable; a title in any case, its "
        "year left out where one item has it; a bare ITEM on a run of clicks read as "
        "one value)",
    )
    r.add_argument(
        "--feature",
        action="append",
        metavar="KEY=VALUE",
        help="a user feature the run was trained with, a column of its users file "
        "(age=25, gender=F; repeatable); those not given are unknown",
    )
    r.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    r.add_argument("--json", action="store_true", help="print the list as JSON instead of a table")
    add_device_arg(r)
    r.add_argument(
        "--no-reasons", action="store_true", help="leave out why each item is recommended"
    )
    r.set_defaults(func=cmd_recommend)


def _check_p1_groups(split: Any, n_users: int, name: str, holdout_flag: bool) -> None:
    from metarec.evaluation.p1 import check_p1_groups

    other = "; use --holdout none to train on every user" if holdout_flag else ""
    note = check_p1_groups(split, n_users, name, other)
    if note:
        print(f"note: {note}")


def _holdout_for(holdout: str | None, ds: Any, holdout_flag: bool) -> str:
    """``--holdout`` as given, or its default for the data: P1 measures predicted
    ratings, so on data whose every rating is one value it would set users and items
    aside for an evaluation that refuses the run."""
    implicit = ds.rating_range[0] == ds.rating_range[1]
    if holdout is None:
        if implicit:
            print(
                f"holdout: none (every rating is {ds.rating_range[0]:g}, implicit feedback, "
                "which P1 cannot measure: every user trains; compare models with "
                "benchmark --protocol p2)"
            )
        return "none" if implicit else "p1"
    if holdout == "p1" and implicit:
        why = (
            f"every rating of {ds.name} is {ds.rating_range[0]:g} (implicit feedback), and "
            "P1 measures predicted ratings"
        )
        if not holdout_flag:  # quickstart, which evaluates with P1 and has no --holdout
            raise ConfigError(
                f"quickstart evaluates with protocol P1: {why}; train with `metarec train` "
                "(every user, by default on such data) and compare models with "
                "`metarec benchmark --protocol p2`"
            )
        raise ConfigError(
            f"--holdout p1: {why}, so its held-out users could never be evaluated; use "
            "--holdout none (the default for such data) and benchmark --protocol p2"
        )
    return holdout


def train_run(
    spec: dict[str, Any],
    cfg: Any,
    out: Path,
    *,
    holdout: str | None,
    progress: bool,
    holdout_flag: bool = True,
    split_seed: int | None = None,
) -> dict[str, Any]:
    """Load, encode, meta-train and save a run folder; returns what was built.
    ``holdout``: "p1", "none", or None: p1 unless every rating is one value (implicit
    feedback, whose held-out P1 users no evaluation could score); ``holdout_flag``:
    whether the command has ``--holdout`` to suggest; ``split_seed``: the users' split's
    seed (default: the training seed)."""
    from metarec.data.schema import (
        check_like_threshold,
        check_objective,
        inferred_threshold_said,
    )
    from metarec.data.spec import check_not_overwriting, load_from_spec
    from metarec.evaluation.p1 import make_p1_split
    from metarec.io import remove_orphan_temps, save_json, write_bytes_atomic
    from metarec.locks import exclusive
    from metarec.pipeline import encode_catalogue, fit_recommender, ready_encoder, split_users
    from metarec.trained_users import (
        SPLIT,
        TRAINED_USERS,
        clear_for_new_model,
        save_trained_users,
    )

    check_not_overwriting(spec, "--out", out, folder=True)
    if (out / "ensemble.json").is_file():
        # the run's files went in beside the ensemble's, and `recommend` went on serving
        # the ensemble: the mirror of `ensemble --out`, which refuses a run folder
        raise ConfigError(f"--out {out}: an ensemble folder; not writing a run into it")
    encoder = ready_encoder(cfg.encoder, device=cfg.device)  # a typo'd model: before the data
    # a second train into the same folder would resume from this one's checkpoint: refused
    # before the data is loaded and the catalogue encoded, not minutes later
    with exclusive(out, "wait for it to finish, or give another --out"):
        t0 = time.perf_counter()
        ds = load_from_spec(spec)
        print(
            f"data: {ds.name}: {ds.n_users:,} users, {ds.n_items:,} items, "
            f"{len(ds.interactions):,} ratings"
        )
        # its notes too: a users file matching no rating user, timestamps in two units,
        # said by `data validate` alone where cleaning dropped no row
        if ds.report is not None and (ds.report.dropped or ds.report.notes):
            print(ds.report.summary())
        if ds.interactions.empty:
            raise DataError(nothing_left(ds))
        # before the slow encoding
        check_objective(cfg.objective, ds.rating_range, ds.name)
        if cfg.like_threshold is not None:
            check_like_threshold(cfg.like_threshold, ds.rating_range, "like_threshold")
        else:
            inferred_threshold_said(ds.interactions["rating"], ds.rating_range, ds.name)
        holdout = _holdout_for(holdout, ds, holdout_flag)
        drawn = cfg.seed if split_seed is None else split_seed
        split = make_p1_split(ds, seed=drawn) if holdout == "p1" else None
        if split is not None:
            _check_p1_groups(split, ds.n_users, ds.name, holdout_flag)
            train_rows, val_rows = split.frames["train"], split.frames["validation"]
        else:
            train_rows, val_rows = split_users(
                ds.interactions, VALIDATION_FRACTION, drawn, for_training=True
            )
        if train_rows.empty:
            # refused before the run folder exists, so a failed start leaves nothing behind
            raise DataError(
                f"{ds.name}: no training ratings: {len(ds.interactions):,} rating(s) by "
                f"{ds.n_users:,} user(s) remain after cleaning, and the "
                + (
                    "P1 holdout (new users and new items set aside)"
                    if split
                    else "validation share"
                )
                + " leaves none to train on; give more users"
                + (" or use --holdout none" if split and holdout_flag else "")
            )
        # said before it starts: fitting TF-IDF on 500,000 items took 87 s without a word
        # (benchmarks/results/scale-review-e57f980/encode_phases500k.txt)
        print(f"encoding {ds.n_items:,} item texts ({cfg.encoder}; vectors cached by text) ...")
        catalogue = encode_catalogue(ds.items, encoder, progress=progress)
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        n_train = train_rows["user_id"].nunique()
        # fit_recommender samples max_train_users of them: say how many it trains on
        sampled = n_train if cfg.max_train_users is None else min(n_train, cfg.max_train_users)
        print(
            f"meta-training {cfg.algorithm} on {sampled:,} users"
            + (f" (a seeded sample of {n_train:,})" if sampled < n_train else "")
            + " ..."
        )
        try:
            rec, history = fit_recommender(
                catalogue,
                train_rows,
                cfg,
                users=ds.users,
                validation=val_rows,
                rating_range=ds.rating_range,
                checkpoint_dir=out / "checkpoint",
                progress=progress,
                metadata={
                    "dataset": ds.name,
                    "data_spec": spec,
                    "holdout": holdout,
                    "split_seed": drawn,
                    **({"validation_fraction": VALIDATION_FRACTION} if split is None else {}),
                    # evaluate refuses a split.json edited since (a leak made to look better)
                    **({"split_digest": split.digest()} if split is not None else {}),
                },
            )
        except BaseException:
            # refused before the first checkpoint (a config the data cannot take), or as
            # diverged (which removes it), or interrupted before it (Ctrl-C, SIGTERM: not
            # Exceptions): leave no empty run folder behind; an interruption after it
            # keeps its checkpoint
            if created and not any(p.is_file() for p in out.rglob("*")):
                shutil.rmtree(out, ignore_errors=True)
            raise
        from metarec.run_folder import write_run

        # a rerun of a finished command writes the same run again: evaluate's figures of
        # it stay (they were deleted as an old model's). The same model is not enough:
        # evaluate reads the config too (like_threshold set anew made them stale)
        kept = _bytes(out / "metrics.json")
        same_run = ("model.safetensors", SPLIT, "config.json", "recommender.json")
        before = {n: _bytes(out / n) for n in same_run} if kept is not None else {}
        clear_for_new_model(out, has_split=split is not None)
        # written with the model, so a failed run leaves no config that looks like a run
        written = [out / "config.json", out / (SPLIT if split is not None else TRAINED_USERS)]
        try:
            # the encoder as the run records it: a folder made absolute (training again
            # from another working directory read another ./my-model)
            save_json(
                out / "config.json",
                dataclasses.replace(cfg, encoder=rec.cfg.encoder).to_dict(),
            )
            if split is not None:
                split.save(out / SPLIT)
            else:  # what keeps `abtest` from testing the model on users it learned from
                seen = {*train_rows["user_id"].unique(), *val_rows["user_id"].unique()}
                save_trained_users(out, seen)
            write_run(rec, out)  # under this command's lock, beside the records it wrote
        except BaseException as exc:
            if (out / "recommender.json").is_file():
                # written last (write_run removes an old one first): the model is whole,
                # and a Ctrl-C while its folder synced took its records away with it
                # (evaluate then said "train with --holdout p1" of a run that had)
                raise
            # a full disk at the end: the checkpoint stays to resume from, the files
            # written for the model go with it
            for path in written:
                path.unlink(missing_ok=True)
            if isinstance(exc, ModelError | OSError) and (out / "checkpoint").is_dir():
                raise ModelError(
                    f"{exc}; the training is kept in {out / 'checkpoint'}: free space and "
                    "run the same command again to save it"
                ) from None
            raise
        remove_orphan_temps(out)  # a kill during an earlier save; the lock is ours
        if (
            kept is not None
            and before.get("model.safetensors") is not None
            and all(_bytes(out / name) == data for name, data in before.items())
        ):
            write_bytes_atomic(out / "metrics.json", kept)
        secs = time.perf_counter() - t0
        # the seconds are this command's: say so when earlier epochs came from a checkpoint
        resumed = f", resumed after epoch {history.resumed_from}" if history.resumed_from else ""
        ran = max((int(row["epoch"] or 0) for row in history.epochs), default=0)
        # early stopping said as such: the bar ended at "7/30" with no word why
        stopped = (
            f" of {ran} trained: stopped early, {rec.cfg.patience} "
            f"epoch{'' if rec.cfg.patience == 1 else 's'} without a better validation loss"
            if history.diverged_at is None and 0 < ran < rec.cfg.epochs
            else ""
        )
        print(f"saved {out} (best epoch {history.best_epoch}{stopped}{resumed}, {secs:.0f} s)")
        if history.best_epoch == 0 and len(history.epochs) > 1:
            # exit 0 and "best epoch 0" read as a trained model; it is the starting one
            print(UNTRAINED_NOTE, file=sys.stderr)
        return {"dataset": ds, "catalogue": catalogue, "recommender": rec, "seconds": secs}


UNTRAINED_NOTE = (
    "note: no epoch of meta-training beat the untrained model on the validation users, "
    "so the untrained model was kept (the bias model for ratings, popularity for likes); "
    "try another algorithm or learning rate"
)


def nothing_left(ds: Any) -> str:
    """Why no rating survived cleaning, in the words of its largest cause."""
    dropped: dict[str, int] = ds.report.dropped if ds.report is not None else {}
    if not dropped:
        return f"{ds.name}: no ratings to train on"
    reason = max(dropped, key=lambda r: dropped[r])
    examples = ds.report.examples.get(reason) or []
    message = f"{ds.name}: cleaning dropped every rating, {dropped[reason]:,} of them as {reason}"
    if examples:
        message += f" ({examples[0]})"
    if reason == "item id not in the items table" and len(ds.items):
        # the usual cause: one file writes ids differently (199 against 000199)
        message += (
            f"; the items file's ids look like {str(ds.items['item_id'].iloc[0])!r}: "
            "do both files write them alike?"
        )
    return message


def cmd_train(args: argparse.Namespace) -> int:
    cfg = train_config(args)
    check_writable(args.out, "--out")
    check_run_out(args.out, "--out")
    holdout, split_seed = args.holdout, args.split_seed
    spec = data_spec(args)
    recorded = _recorded_split(args.config, spec)
    if recorded is not None:
        # "--config OLD_RUN/config.json trains a run again": config.json holds the
        # training settings alone, and a seed-bag member (--split-seed 0 --set seed=1)
        # came back on another split, a plain seed=1 run, without a word. On the same
        # data only: another data set's holdout may not fit it (p1 on clicks)
        taken = []
        if holdout is None:
            holdout = recorded[0]
            taken.append(f"holdout {holdout}")
        if split_seed is None:
            split_seed = recorded[1]
            taken.append(f"split seed {split_seed}")
        if taken:
            print(
                f"the users' split as {Path(args.config).parent} drew it: "
                f"{', '.join(taken)} (--holdout and --split-seed choose others)"
            )
    train_run(
        spec,
        cfg,
        Path(args.out),
        holdout=holdout,
        progress=not args.quiet,
        split_seed=split_seed,
    )
    return 0


def _bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _recorded_split(config: str | None, spec: dict[str, Any]) -> tuple[str, int] | None:
    """(holdout, split seed) of the run whose ``config.json`` ``config`` is, where its
    ``recommender.json`` beside it records them and the data ``spec`` is the run's
    (the folder it was read from aside); None otherwise."""
    if not config or Path(config).name != "config.json":
        return None
    manifest = Path(config).parent / "recommender.json"
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8")).get("metadata") or {}
    except (OSError, ValueError, AttributeError):
        return None
    given = json.loads(json.dumps(spec, default=str))
    ran = meta.get("data_spec")
    # a known data set is the same read from another folder (--data); without one,
    # --data is the data set itself (a folder of atomic files), and another is other data
    aside = {"data"} if given.get("dataset") else set()
    if not isinstance(ran, dict) or {k: v for k, v in ran.items() if k not in aside} != {
        k: v for k, v in given.items() if k not in aside
    }:
        return None
    holdout, seed = meta.get("holdout"), meta.get("split_seed")
    if holdout not in ("p1", "none") or not isinstance(seed, int) or isinstance(seed, bool):
        return None
    return holdout, seed


def evaluate_run(run: Path, ds: Any, rec: Any) -> dict[str, Any]:
    """Protocol P1 of a run on its saved split against the bias model; prints the table
    and writes ``run/metrics.json``."""
    from metarec.data.tasks import UserRatings
    from metarec.evaluation.p1 import ALL_STATES, P1Split, evaluate_p1
    from metarec.io import jsonable, save_json
    from metarec.models.bias import BiasModel
    from metarec.models.cutpoints import MedianView, rating_levels
    from metarec.trained_users import TRAINED_USERS

    if ds.rating_range[0] == ds.rating_range[1]:
        raise ConfigError(
            f"{ds.name}: every rating is {ds.rating_range[0]:g} (implicit feedback); P1 "
            "measures predicted ratings, so compare models with benchmark --protocol p2"
        )
    if not (run / "split.json").exists():
        raise ConfigError(
            f"{run}: no split.json; train with --holdout p1 to evaluate with protocol P1"
        )
    if tuple(ds.rating_range) != tuple(rec.rating_range):
        # cleaning drops ratings off the scale: users emptied by it were then blamed on
        # split.json, "not users of ml-100k", which named neither the scale nor its flag
        (lo, hi), (run_lo, run_hi) = ds.rating_range, rec.rating_range
        raise ConfigError(
            f"{ds.name}: read on the rating scale [{lo:g}, {hi:g}] (--rating-range?), and "
            f"{run} was trained on [{run_lo:g}, {run_hi:g}]; evaluate it on its own scale"
        )
    from metarec.ensemble_run import warn_of_unread_features

    # the same files given again without --users: every user scored as "unknown" on
    # every feature, and every figure moved without a word
    warn_of_unread_features(ds, rec, str(run))
    holdout = rec.metadata.get("holdout")
    if holdout not in (None, "p1") or (run / TRAINED_USERS).is_file():
        # a run trained on every user (--holdout none, retrain) records no digest: a
        # split.json copied beside it was read as its own, and its "new" users scored
        # though the model had trained on them
        raise ConfigError(
            f"{run / 'split.json'}: this run was trained on every user (holdout "
            f"{holdout or 'none'}, {TRAINED_USERS}), so it has no P1 split of its own "
            "(copied from another run?); evaluating on it would test the model on users it "
            "trained on. Train with --holdout p1 to evaluate with protocol P1"
        )
    split = P1Split.load(run / "split.json", ds)
    recorded = rec.metadata.get("split_digest")
    if recorded is not None and recorded != split.digest():
        raise ConfigError(
            f"{run / 'split.json'}: not the split this run was trained with (edited or "
            "copied from another run?); evaluating on it could test the model on users it "
            "trained on"
        )
    known = set(ds.interactions["user_id"].astype(str))
    absent = [u for u in split.new_users if str(u) not in known]
    if absent:
        # another data set: every state would come out empty, and metrics.json with it
        raise ConfigError(
            f"{run / 'split.json'}: {len(absent):,} of its {len(split.new_users):,} new users "
            f"(e.g. {absent[0]!r}) are not in {ds.name}; the run was trained on "
            f"{split.dataset}: evaluate it on that data"
        )
    bias = BiasModel().fit(
        UserRatings.from_frame(split.frames["train"], rec.item_index), rec.n_items
    )
    name = f"metarec-{rec.cfg.algorithm}"
    judged: dict[str, Any] = {name: rec, "bias": bias}
    if len(split.frames["validation"]):
        # the run reports median ratings for MAE; the bias model gets cuts of its own
        judged["bias-median"] = MedianView.fit(
            bias,
            UserRatings.from_frame(split.frames["validation"], rec.item_index),
            ds.users,
            levels=rating_levels(split.frames["train"]["rating"].to_numpy()),
            seed=split.seed,
        )
    result = evaluate_p1(
        judged,
        split,
        rec.item_index,
        ds.users,
        states=tuple(s for s in ALL_STATES if s != "warm"),  # warm: validation users
        # what the run trained with (the data's top quarter unless set): 4 on 1-5 stars,
        # 7.75 on 1-10, the 1s of 0/1
        like_threshold=(
            ds.like_threshold if rec.cfg.like_threshold is None else rec.cfg.like_threshold
        ),
        rating_range=rec.rating_range,
    )
    # shown first: a write that fails still leaves the figures on the screen
    print(f"\nProtocol P1 on {ds.name} (new items: {split.rule}); lower MAE/RMSE is better")
    print(format_p1_table(result))
    # strict JSON, as every result file: a metric no user could give (recall where no
    # query item is liked) is NaN, which json writes as a bare token strict readers refuse
    save_json(
        run / "metrics.json",
        jsonable(
            {
                "protocol": "p1",
                "dataset": ds.name,
                "split_rule": split.rule,
                "n_users": result["n_users"],
                "summary": result["summary"],
            }
        ),
    )
    return result


# what `evaluate` prints of each state and model, and `report RUN` of its metrics.json
P1_TABLE_METRICS = ("mae", "rmse", "ndcg@3", "precision@5", "mrr@5")


def _valued(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def blank_metrics_note(summary: dict[str, dict[str, dict[str, Any]]]) -> str | None:
    """Why cells of a P1 table are "—" (NaN in memory, null in metrics.json), or None
    where none is. A bare "nan" beside the bias model's figures read as a failed run."""
    unrated = sorted(
        {
            n
            for models in summary.values()
            for n, vals in models.items()
            if not _valued(vals.get("mae"))
        }
    )
    # ranking metrics no user could give (no liked query item) are blank too
    unliked = any(
        not _valued(vals.get(m))
        for models in summary.values()
        for name, vals in models.items()
        for m in P1_TABLE_METRICS
        if name not in unrated or m not in ("mae", "rmse")
    )
    why = []
    if unrated:
        verbs = "ranks items and predicts" if len(unrated) == 1 else "rank items and predict"
        why.append(
            f"{', '.join(unrated)} {verbs} no rating (an implicit objective), so MAE and "
            "RMSE do not apply"
        )
    if unliked:
        why.append("a ranking metric without a test user who liked a query item")
    return "—: no value; " + "; ".join(why) if why else None


def format_p1_table(result: dict[str, Any]) -> str:
    metrics = P1_TABLE_METRICS
    lines = [f"{'state':<16} {'users':>5}  {'model':<18}" + "".join(f"{m:>12}" for m in metrics)]
    for state, models in result["summary"].items():
        for name, vals in models.items():
            row = f"{state:<16} {result['n_users'][state]:>5}  {name:<18}"
            lines.append(
                row
                + "".join(
                    f"{vals[m]:>12.4f}" if _valued(vals[m]) else f"{'—':>12}" for m in metrics
                )
            )
    for state, n in result["n_users"].items():
        if n == 0:  # a row left out without a word read as a state not asked for
            lines.append(f"{state:<16} {0:>5}  not evaluated: no test user in this state")
    note = blank_metrics_note(result["summary"])
    if note:
        lines.append(note)
    few = [f"{s} ({n})" for s, n in result["n_users"].items() if isinstance(n, int) and 0 < n < 20]
    if few:
        lines.append(
            f"few test users in {', '.join(few)}: those figures are rough, and a difference "
            "between models there is unlikely to be significant"
        )
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from metarec.data.spec import load_from_spec, spec_for_run
    from metarec.ensemble_run import run_kind
    from metarec.locks import exclusive
    from metarec.recommender import Recommender

    run = Path(args.run)
    if run_kind(run) == "ensemble":
        raise ConfigError(
            f"{run}: an ensemble folder; evaluate scores a single run on its own P1 split. "
            "Evaluate each run it blends, or fit and score the ensemble beside its members "
            "and the peers with `metarec benchmark`"
        )
    if run.is_dir():  # its metrics.json is written there: found unwritable at the end,
        # the evaluation's minutes were lost
        check_writable(run, "RUN (where metrics.json goes)")
    # the run's lock, as train takes it: a train into the folder meanwhile replaced the
    # model, and this wrote the old model's figures beside the new one
    with exclusive(run, "wait for it to finish, then evaluate"):
        with named_as_flags({"device": "--device"}):  # as serve names it
            rec = Recommender.load(run, device=args.device)
        spec = spec_for_run(data_spec(args), rec.metadata.get("data_spec"), str(run))
        evaluate_run(run, load_from_spec(spec), rec)
    return 0


def parse_features(given: Sequence[str]) -> dict[str, str]:
    """``--feature KEY=VALUE`` values as a user's features, read as a users file's row
    is (text; a number where the run bins it). A key given twice is refused."""
    out: dict[str, str] = {}
    for entry in given:
        key, sep, value = entry.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"--feature {entry!r}: expected KEY=VALUE, e.g. --feature age=25")
        if key in out:
            raise ConfigError(f"--feature {key}: given twice ({out[key]!r} and {value!r})")
        out[key] = value
    return out


def check_features_read(rec: Any, features: dict[str, str]) -> None:
    """Each ``--feature`` one the run reads, with a value it can read. A key it reads
    no feature of is refused, as the HTTP API refuses it: in Python it is only warned
    of, and a misspelt ``--feature agee=25`` scored the user as if no age was given."""
    from metarec.data.features import feature_readers, short_name

    readers = feature_readers(rec)
    read = readers.columns
    unknown = next((short_name(k) for k in features if k not in read), None)
    if unknown is not None and not read:
        raise ConfigError(
            f"--feature {unknown}: this run reads no user features (it was trained "
            "without a users file, or with model.use_user_features off)"
        )
    if unknown is not None:
        raise ConfigError(
            f"--feature {unknown}: not a feature of this run (it reads {', '.join(read)})"
        )
    unreadable = readers.problem(features, json_types=False, unset="left out")
    if unreadable is not None:
        raise ConfigError(f"--feature {unreadable}")


def parse_rates(rates: Sequence[str]) -> list[tuple[str, float | None]]:
    """``--rate ITEM=RATING`` values as (item, rating) pairs; a bare ``ITEM`` has no
    rating yet (None), which :func:`rated_on_scale` settles once the run is loaded."""
    out: list[tuple[str, float | None]] = []
    for r in rates:
        title, sep, value = r.rpartition("=")
        if not sep and r.strip():
            out.append((r.strip(), None))
            continue
        if not title.strip():
            raise ConfigError(
                f'--rate {r!r}: expected ITEM=RATING, e.g. --rate "Toy Story (1995)=5"'
            )
        try:
            out.append((title.strip(), float(value)))
        except ValueError:
            # a bare title with "=" in it ("Film =3 SciFi"), or a rating mistyped: which
            # one, only the run's scale says (rated_on_scale)
            out.append((r.strip(), None))
    return out


def warn_repeated_rates(rec: Any, rates: Sequence[tuple[str, float]]) -> None:
    """The library keeps an item's latest rating (a user re-rating); on one command line
    the same item twice, by id and by title say, is more likely a slip: say which won."""
    given: dict[int, list[tuple[str, float]]] = {}
    for key, value in rates:
        try:
            given.setdefault(rec.resolve(key), []).append((key, value))
        except MetarecError:
            continue  # adapt names the unknown item
    for pairs in given.values():
        if len(pairs) > 1:
            names = ", ".join(f"{k}={v:g}" for k, v in pairs)
            warnings.warn(
                f"--rate: {names} rate the same item; the last ({pairs[-1][1]:g}) is used",
                stacklevel=2,
            )


def rated_on_scale(
    rates: list[tuple[str, float | None]], rating_range: tuple[float, float]
) -> list[tuple[str, float]]:
    """Bare ``--rate ITEM`` values given the run's one rating (clicks read as all 1s,
    where "ITEM=5" is off the scale and the error's own example was refused);
    refused on a scale of several values, naming it."""
    lo, hi = rating_range
    out = []
    for item, rating in rates:
        if rating is None:
            title, sep, value = item.rpartition("=")
            if lo != hi and sep and title.strip():
                raise ConfigError(f"--rate {item!r}: rating {value!r} is not a number")
            if lo != hi:
                raise ConfigError(
                    f"--rate {item!r}: give its rating, ITEM=RATING on this run's scale "
                    f'[{lo:g}, {hi:g}], e.g. --rate "{item}={hi:g}"'
                )
            rating = lo
        out.append((item, rating))
    return out


def cmd_recommend(args: argparse.Namespace) -> int:
    import json

    from metarec.ensemble_run import load_run
    from metarec.explain import recommend_with_reasons
    from metarec.inputs import history_pairs
    from metarec.io import jsonable

    # before the slow part, loading the model; a value that is no number is judged after
    # it, as on a one-value run it may be part of a bare title
    given = parse_rates(args.rate or [])
    features = parse_features(args.feature or [])
    with named_as_flags({"device": "--device"}):  # as serve names it
        rec = load_run(args.run, device=args.device)  # a run folder or an ensemble folder
    rates = rated_on_scale(given, rec.rating_range)
    # checked as the flag's: "history entry 0" named nothing on this command line, and
    # "--rate entry 0" the first --rate
    history_pairs(rates, rec.rating_range, rec.resolve, "--rate", first=1)
    warn_repeated_rates(rec, rates)
    check_features_read(rec, features)
    user = rec.adapt(rates, user_features=features or None)
    top = (
        rec.recommend(user, k=args.k)
        if args.no_reasons
        else recommend_with_reasons(rec, user, k=args.k)
    )
    top = with_ratings(rec, top)
    if args.json:
        # the same fields for every model, as the HTTP API answers: rating null where the
        # model predicts none, reason null with --no-reasons (a ranking ensemble's list
        # lacked the key, so a client reading it failed on one model and not another)
        records = top.to_dict(orient="records")
        fields = ("rank", "item_id", "title", "score", "rating", "reason")
        shown = [{f: r.get(f) for f in fields} | r for r in records]
        print(json.dumps(jsonable(shown), indent=2))
    elif not len(top):  # pandas printed "Empty DataFrame / Columns: [...] / Index: []"
        print(f"no items left to recommend: the user rated all {rec.n_items:,}", file=sys.stderr)
    else:
        print(table_text(top))
        print(columns_legend(rec, top))
    return 0


# a title of 600 characters padded every row of the table to its width; MovieLens'
# longest (Dr. Strangelove's full title, 75) stays whole
WIDEST_CELL = 80


def table_text(top: pd.DataFrame) -> str:
    """``top`` as the terminal table ``recommend`` and ``quickstart`` print: scores to
    three decimals (three significant digits in a column whose numbers are all below
    0.01), text cells past :data:`WIDEST_CELL` characters cut with an
    ellipsis (``--json`` has them whole)."""
    from pandas.api.types import is_numeric_dtype

    def cut(value: object) -> object:
        if isinstance(value, str) and len(value) > WIDEST_CELL:
            return value[: WIDEST_CELL - 1] + "…"
        return value

    shown = top.copy()
    formats: dict[str, Any] = {}
    for column in shown.columns:
        if not is_numeric_dtype(shown[column]):
            shown[column] = shown[column].map(cut)
        elif shown[column].dtype.kind == "f":
            # a column of small numbers (ratings on a 0-1e-5 scale) in significant
            # digits: three decimals printed every score of it as 0.000
            most = float(shown[column].abs().max()) if len(shown) else 0.0
            small = 0 < most < 0.01
            formats[column] = (lambda x: f"{x:.3g}") if small else (lambda x: f"{x:.3f}")
    return shown.to_string(index=False, formatters=formats)


def columns_legend(rec: Any, top: pd.DataFrame) -> str:
    """What the table's score and rating columns are: a score of 5.59 beside a rating of
    5 on 1-5 stars read as a bug where nothing said the score is not clipped."""
    if "rating" not in top.columns:
        return "(score: how the model ranks the items for this user, higher first)"
    lo, hi = rec.rating_range
    rating = (
        f"the level of the {lo:g}-{hi:g} scale the user most plausibly gives"
        if rec.cutpoints is not None
        else f"the score clipped to the {lo:g}-{hi:g} scale (the run has no rating cuts)"
    )
    return f"(score: the predicted rating, not clipped to the scale; rating: {rating})"


def with_ratings(rec: Any, top: pd.DataFrame) -> pd.DataFrame:
    """``top`` with a ``rating`` column after ``score`` where the scores are ratings:
    the scale level the user most plausibly gives (the score clipped to the scale
    where the run has no cutpoints), as the service shows it (which leaves it null
    for ranking models). A score is not clipped (a strong match can pass the scale's
    top); the rating is on the scale."""
    if not rec.scores_are_ratings:
        return top
    top = top.copy()
    ratings = rec.median_ratings(top["score"].to_numpy(dtype=float))
    top.insert(list(top.columns).index("score") + 1, "rating", ratings)
    return top


def cmd_quickstart(args: argparse.Namespace) -> int:
    cfg = train_config(args)
    spec = data_spec(args)
    if not any(spec.get(k) for k in ("dataset", "interactions")):
        spec["dataset"] = "ml-100k"
    check_writable(args.out, "--out")
    check_run_out(args.out, "--out")
    out = Path(args.out)
    run = train_run(spec, cfg, out, holdout="p1", progress=not args.quiet, holdout_flag=False)
    evaluate_run(out, run["dataset"], run["recommender"])
    rec = run["recommender"]
    demo = [(t, r) for t, r in DEMO_USER if _known(rec, t)]
    if demo:
        print("\nA new user rates: " + "; ".join(f"{t} = {r:g}" for t, r in demo))
    else:  # a catalogue of one's own holds none of the demo's films
        print("\nA new user with no ratings yet (the meta-learned prior):")
    top = with_ratings(rec, rec.recommend(rec.adapt(demo), k=10))
    print(table_text(top))
    if len(top):
        print(columns_legend(rec, top))
    if demo and len(top):
        print(shared_with_zero_shot(rec, demo, top))
    print(
        f"\nrun folder: {out}  (model.safetensors, recommender.json, items.json, "
        "config.json, split.json, metrics.json)"
    )
    # the hint rates what this catalogue holds, at the top of its scale, quoted for a shell
    rated = [t for t, _ in demo] or [str(t) for t in rec.items["title"].head(2)]
    top_rating = f"{rec.rating_range[1]:g}"
    hint = " ".join(f"--rate {shlex.quote(f'{t}={top_rating}')}" for t in rated[:2])
    print(f"try: metarec recommend {shlex.quote(str(out))} {hint}")
    print(f"total time: {time.perf_counter() - args._t0:.0f} s")
    return 0


def shared_with_zero_shot(rec: Any, demo: list[tuple[str, float]], top: pd.DataFrame) -> str:
    """How many of the demo user's list a user with no ratings gets too (the rated items
    left out of both): on ml-100k quickstart's run keeps an epoch before its taste path
    has grown, and its list was shown as if the ratings had chosen it."""
    ids = rec.items["item_id"].to_numpy()
    rated = {ids[rec.resolve(t)] for t, _ in demo}
    prior = rec.recommend(rec.adapt([]), k=len(top) + len(rated))
    unrated = [i for i in prior["item_id"] if i not in rated][: len(top)]
    same = len(set(top["item_id"]) & set(unrated))
    if same == len(top):
        return (
            f"(all {same} are what a new user with no ratings gets: this list does not "
            "follow these ratings; see the README, How far a new user's ratings move their "
            "list)"
        )
    return f"({same} of these {len(top)} are also what a new user with no ratings gets)"


def _known(rec: Any, title: str) -> bool:
    try:
        rec.resolve(title)
        return True
    except MetarecError:
        return False

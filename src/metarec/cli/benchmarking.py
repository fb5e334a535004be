"""``metarec benchmark`` and ``metarec report``: protocols P1-P3 and speed, and their reports."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from metarec.cli.options import (
    add_file_args,
    add_set_arg,
    check_file_args,
    check_writable,
    comma_list,
    data_spec,
    file_args_command,
    int_list,
    named_as_flags,
    path_arg,
    seed,
)
from metarec.errors import ConfigError, DataError, why_missing
from metarec.values import counted, safe_name


def register(sub: Any) -> None:
    b = sub.add_parser(
        "benchmark",
        help="run protocol P1 or P2 (P3 with --folds) for metarec and every peer, or the "
        "speed benchmark; writes JSON, Markdown and PNG",
    )
    b.add_argument(
        "--protocol",
        choices=("p1", "p2", "speed"),
        default="p1",
        help="p1 (MeLU protocol; the default), p2 (few-shot ranking) or speed (latency and "
        "throughput; it takes --dataset, --data, --seed, --out, --no-plots and --quiet only)",
    )
    bd = b.add_argument_group("data (known datasets, folders of atomic files, or your own files)")
    bd.add_argument(
        "--dataset",
        action="append",
        help="a known dataset (ml-100k, ml-1m, ml-latest-small) or a folder or prefix of "
        "RecBole atomic files; repeatable; default ml-1m for p1, ml-100k for p2 and speed",
    )
    bd.add_argument("--data", type=path_arg, help="folder holding the known datasets")
    add_file_args(bd)
    b.add_argument(
        "--like-threshold",
        type=float,
        help="rating at or above which an item counts as liked, for every model and metric "
        "(default: the top quarter of the data's rating scale, 4 on 1-5 stars)",
    )
    b.add_argument(
        "--algorithms",
        help="comma-separated (default: maml,fomaml,reptile,metasgd; P2 adds episodic,stacked)",
    )
    b.add_argument(
        "--peers",
        help='comma-separated, "" for none '
        "(default: all: popularity,bias,knn,als,melu-1,melu-5,transfer)",
    )
    b.add_argument(
        "--model",
        action="append",
        metavar="NAME=MODULE:FACTORY",
        help="a model of your own, judged beside the peers: a ScoringModel class or a "
        "function returning one (given seed= if it takes it), imported from MODULE with the "
        "current folder first on the path, e.g. mine=mymodels:MyModel; repeatable",
    )
    b.add_argument("--folds", type=int, default=1, help="P3: k folds over users (default 1)")
    b.add_argument("--shots", help="P2 support sizes (default 0,1,3,5,10,20)")
    b.add_argument(
        "--seed", type=seed, default=0, help="seeds the splits and every model (default 0)"
    )
    b.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="fit each meta-learning algorithm with this many seeds and average them (default 1)",
    )
    b.add_argument(
        "--splits",
        type=path_arg,
        metavar="DIR",
        help="read each fold's split from the files an earlier run wrote to DIR "
        "(e.g. benchmarks/results) instead of drawing them",
    )
    b.add_argument(
        "--max-items",
        type=int,
        help="P2: fit the episodic ridge and the stacked ranker on this many of the most rated "
        "items, the rest ranked by popularity below them (default: every item; their "
        "memory grows with the square of the items)",
    )
    b.add_argument(
        "--max-episodes",
        type=int,
        help="P2: train each bag of the stacked ranker's trees on this many training episodes, "
        "a seeded sample (default: every episode; ml-1m has 22,500 and a bag fits in 20 min)",
    )
    b.add_argument(
        "--out",
        type=path_arg,
        default="benchmarks/results",
        help="folder for the JSON, Markdown, PNG and split files (default benchmarks/results); "
        "an interrupted run keeps its finished folds and models in OUT/.NAME.partial/, and "
        "the same command resumes from them",
    )
    add_set_arg(b, "a training-config override for every metarec model, e.g. epochs=3")
    b.add_argument("--no-plots", action="store_true", help="write JSON and Markdown only")
    b.add_argument(
        "--no-resume",
        action="store_true",
        help="start over: ignore what an earlier, stopped run of this command kept",
    )
    b.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    b.set_defaults(func=cmd_benchmark)

    rp = sub.add_parser(
        "report", help="render a benchmark result, a run or an ensemble folder as Markdown"
    )
    rp.add_argument(
        "run", metavar="PATH", help="benchmark .json, results folder, run folder or ensemble folder"
    )
    rp.add_argument("--write", action="store_true", help="also rewrite the .md and .png files")
    rp.add_argument(
        "--no-plots",
        action="store_true",
        help="with --write: rewrite the .md only (its old plots are removed)",
    )
    rp.set_defaults(func=cmd_report)


def benchmark_datasets(args: argparse.Namespace) -> list[tuple[Any, str | None]]:
    """What ``metarec benchmark`` runs on: (known name or loaded dataset, how the
    reproduction command names it when it is not a known name)."""
    from metarec.data import clean, known_names, load_path
    from metarec.data.spec import check_not_overwriting, load_from_spec, spec_rating_range

    check_file_args(args)
    out_folder = Path(args.out)
    if args.interactions:
        spec = data_spec(args)
        check_not_overwriting(spec, "--out", out_folder, folder=True)
        return [(load_from_spec(spec), file_args_command(args))]
    out: list[tuple[Any, str | None]] = []
    names = args.dataset or (["ml-1m"] if args.protocol == "p1" else ["ml-100k"])
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:  # the same report written twice over
        raise ConfigError(f"--dataset {twice!r}: given twice")
    for name in names:
        read = {"dataset": name, "data": args.data} if name in known_names() else {"data": name}
        check_not_overwriting(read, "--out", out_folder, folder=True)
        if name in known_names():
            if args.rating_range or args.strict:
                flag = "--rating-range" if args.rating_range else "--strict"
                raise ConfigError(
                    f"{flag}: applies to a folder of atomic files or your own files, not to "
                    f"the known dataset {name!r} (its scale and cleaning are fixed)"
                )
            out.append((name, None))
        elif Path(name).expanduser().exists() or Path(name + ".inter").exists():
            rr = spec_rating_range(data_spec(args))
            ds = clean(load_path(name), rating_range=rr, strict=bool(args.strict))
            out.append((ds, f"--dataset {name}"))
        else:
            raise ConfigError(
                f"--dataset {name!r}: neither a known dataset ({', '.join(known_names())}) "
                "nor a folder or prefix of RecBole atomic files; for CSV/TSV/Parquet/JSON Lines "
                "files use --interactions FILE [--items FILE ...]"
            )
    # reports are named after the data set: two folders of one name (x1/books and
    # x2/books), or ml-100k and a copy of it, wrote one report over the other
    reported: dict[str, str] = {}
    for given, (ds, _) in zip(names, out, strict=True):
        report = ds if isinstance(ds, str) else safe_name(ds.name)
        if report in reported:
            raise ConfigError(
                f"--dataset {given!r}: its report is named {report!r}, as that of "
                f"--dataset {reported[report]!r}; one would overwrite the other. Rename one "
                "folder, or benchmark them into different --out folders"
            )
        reported[report] = given
    return out


def own_models(specs: list[str] | None) -> dict[str, Any]:
    """``--model NAME=MODULE:FACTORY`` flags → {NAME: factory}, imported now: a typo
    is refused before the data loads, not after the peers are fitted."""
    from metarec.evaluation.own_models import load_factory

    out: dict[str, Any] = {}
    for spec in specs or []:
        name, factory = load_factory(spec)
        if name in out:
            raise ConfigError(f"--model {spec!r}: the name {name!r} is given twice")
        out[name] = factory
    return out


def cmd_benchmark(args: argparse.Namespace) -> int:
    if args.protocol == "speed" and args.model:
        raise ConfigError("--model: applies to --protocol p1 and p2, not speed")
    if args.protocol != "speed":  # its report has no plots
        from metarec.evaluation.report import pyplot

        pyplot()  # an MPLBACKEND matplotlib cannot use: named before the work
    models = own_models(args.model)
    if args.protocol == "speed":
        from metarec.data.registry import known_names

        own = [name for name in args.dataset or [] if name not in known_names()]
        if getattr(args, "interactions", None) or own:
            # before the data is read: a missing user_id column was named first
            raise ConfigError(
                "--protocol speed: runs on a known dataset (e.g. ml-100k), not "
                + (f"{own[0]!r}" if own else "files of one's own")
            )
    datasets = benchmark_datasets(args)
    check_writable(args.out, "--out")
    if args.protocol == "speed":
        if args.seeds != 1:
            # the speed benchmark times single models; a bag there would be silently ignored
            raise ConfigError(
                f"--seeds: applies to --protocol p1 and p2, not speed (got {args.seeds})"
            )
        # what the speed benchmark does not take: refused, not silently ignored
        for flag, given in (
            ("--splits", args.splits is not None),
            ("--folds", args.folds != 1),
            ("--algorithms", args.algorithms is not None),
            ("--peers", args.peers is not None),
            ("--shots", args.shots is not None),
            ("--set", bool(args.set)),
            ("--no-resume", args.no_resume),  # three minutes: nothing is kept to resume
            ("--like-threshold", args.like_threshold is not None),
        ):
            if given:
                raise ConfigError(f"{flag}: applies to --protocol p1 and p2, not speed")
        if args.max_items is not None or args.max_episodes is not None:
            flag = "--max-items" if args.max_items is not None else "--max-episodes"
            raise ConfigError(f"{flag}: applies to --protocol p2, not speed")
        if len(datasets) > 1:  # the others were dropped without a word
            raise ConfigError("--dataset: --protocol speed runs on one dataset; give one")
        dataset, _ = datasets[0]
        from metarec.evaluation.speed import run_speed_benchmark

        run_speed_benchmark(
            dataset=dataset, root=args.data, out=args.out, seed=args.seed,
            progress=not args.quiet,
        )  # fmt: skip
        return 0
    if args.protocol == "p1":
        # P2's options: silently ignored by P1 before
        for flag, given in (
            ("--shots", args.shots is not None),
            ("--max-items", args.max_items is not None),
            ("--max-episodes", args.max_episodes is not None),
        ):
            if given:
                raise ConfigError(f"{flag}: applies to --protocol p2, not p1")
    comma_list(args.algorithms, "--algorithms")  # before the data loads: minutes on ml-1m
    comma_list(args.peers, "--peers")
    shots = int_list(args.shots, "--shots") if args.shots is not None else None  # "" refused
    if shots is not None and any(k < 0 for k in shots):
        raise ConfigError(f"--shots: support sizes must be >= 0, got {args.shots!r}")
    from metarec.evaluation.benchmark import run_benchmark  # torch: after the cheap checks

    for dataset, named in datasets:
        with named_as_flags(_BENCHMARK_FLAGS):
            run_benchmark(
                args.protocol,
                dataset,
                root=args.data,
                out=args.out,
                seed=args.seed,
                folds=args.folds,
                algorithms=comma_list(args.algorithms, "--algorithms"),
                peers=comma_list(args.peers, "--peers"),
                overrides=list(args.set or []),
                shots=shots,
                seeds=args.seeds,
                splits=args.splits,
                progress=not args.quiet,
                plots=not args.no_plots,
                like_threshold=args.like_threshold,
                data_args=named,
                max_items=args.max_items,
                max_episodes=args.max_episodes,
                resume=not args.no_resume,
                models=models,
                model_args=args.model or [],
            )
    return 0


def _print_run_report(path: Path) -> None:
    """A run folder's report: its training, a retrain's verdict, its P1 figures."""
    from metarec.io import check_format_version, load_json, reading
    from metarec.run_folder import READABLE_VERSIONS

    with reading(path / "recommender.json", "metarec run's recommender.json"):
        meta = load_json(path / "recommender.json")
        # as every other command reads it: a run of another format is not reported on
        # as if it were this one's
        check_format_version(
            meta.get("format_version"), READABLE_VERSIONS, path / "recommender.json"
        )
        _print_run(path, meta)
    if (path / "retrain.json").exists():
        with reading(path / "retrain.json", "metarec retrain's retrain.json"):
            _print_retrain(load_json(path / "retrain.json"))
    if (path / "metrics.json").exists():
        with reading(path / "metrics.json", "metarec evaluate's metrics.json"):
            _print_run_metrics(load_json(path / "metrics.json"))
    elif (path / "retrain.json").exists():
        pass  # its verdict is its figures; "trained with --holdout none" it was not
    elif (path / "split.json").exists():  # the table stopped at training, unexplained
        print(f"\nNot evaluated yet: `metarec evaluate {path}` adds P1's figures here.")
    else:
        print(
            "\nNo P1 figures: trained with --holdout none, so no held-out users to "
            "evaluate on (`metarec benchmark` measures such data)."
        )


def cmd_report(args: argparse.Namespace) -> int:
    from metarec.io import load_json, reading

    if args.no_plots and not args.write:
        raise ConfigError("--no-plots: applies with --write (without it nothing is written)")
    path = Path(args.run)
    from metarec.ensemble_run import is_ensemble_dir

    ensemble = path.is_dir() and is_ensemble_dir(path)
    run_folder = ensemble or (path.is_dir() and (path / "recommender.json").exists())
    if run_folder and args.write:  # it was a silent no-op, exit 0
        raise ConfigError(
            f"--write: rewrites a benchmark's report (a .json or a results folder); {path} "
            f"is {'an ensemble' if ensemble else 'a run'} folder, whose report is printed only"
        )
    if ensemble:
        _print_ensemble(path)
        return 0
    if path.is_dir() and (path / "recommender.json").exists():
        # the whole report or none of it: a damaged metrics.json after the run's table
        # printed half a report above the error
        shown = io.StringIO()
        with contextlib.redirect_stdout(shown):
            _print_run_report(path)
        sys.stdout.write(shown.getvalue())
        return 0
    if path.is_dir():
        found = sorted(
            p
            for pattern in ("p[12]-*.json", "speed*.json")
            for p in path.glob(pattern)
            # a run's split files and its per-user values are no reports of their own
            if not p.name.endswith(("-split.json", "-per-user.json"))
        )
        if not found:
            if (path / "checkpoint").is_dir():
                from metarec.ensemble_run import run_kind

                run_kind(path)  # an unfinished training run: says how to resume it
            raise ConfigError(
                f"{path}: no benchmark results (p1-*.json, p2-*.json, speed*.json) in it"
            )
    elif not path.exists():
        raise ConfigError(f"{path}: {why_missing(path)}")
    elif path.suffix == ".json":
        found = [path]
    else:
        raise ConfigError(f"{path}: not a run folder, a results folder or a benchmark .json")
    # the whole folder or none of it: each record is checked and rendered before the
    # first is printed or written (a damaged second file left the first's report
    # printed and its .md and plots rewritten above the error)
    records: list[tuple[Path, dict[str, Any]]] = []
    for f in found:
        record = load_json(f)
        if path.is_dir() and not _is_benchmark_record(record):
            # an A/B test's --out (p2-...-abtest.json) or another file that matched
            warnings.warn(f"{f}: not a benchmark result; left out of the report", stacklevel=1)
            continue
        records.append((f, record))
    if not records:
        raise ConfigError(f"{path}: no benchmark results in it, only other JSON files")
    texts = []
    for f, record in records:
        # a field missing or of another type: edited by hand, or an older metarec's
        with reading(f, "benchmark result of this metarec (rerun the benchmark?)"):
            text = _render_result(f, record)
        if len(records) > 1:
            # a folder's reports one after another: each says which file it renders
            # (speed.json and its repeats have the same title)
            title, _, rest = text.partition("\n")
            text = f"{title}\n\nSource: `{f}`\n{rest}"
        texts.append(text)
    if args.write:
        from metarec.evaluation.report import write_report

        for f, record in records:
            with reading(f, "benchmark result of this metarec (rerun the benchmark?)"):
                write_report(record, f.with_suffix(""), plots=not args.no_plots)
    for text in texts:
        print(text)
    return 0


def _is_benchmark_record(record: object) -> bool:
    """A P1 or P2 record or a speed benchmark's (what ``report`` renders), by its kind
    alone: a damaged one of these is refused when it renders."""
    if not isinstance(record, dict):
        return False
    return record.get("benchmark") == "speed" or record.get("protocol") in ("p1", "p2")


def _print_ensemble(path: Path) -> None:
    """An ensemble folder's members and learned weights as Markdown (it is loaded, so
    a damaged folder is refused as every command refuses it)."""
    from metarec.ensemble_run import EnsembleRecommender, bucket_users_shown, load_run

    rec = load_run(path, device="cpu")
    assert isinstance(rec, EnsembleRecommender)
    ens = rec.ensemble
    names = list(ens.members)
    users = bucket_users_shown(ens)
    print(f"# Ensemble {path}\n")
    print(f"Mode: {ens.mode}; members: {', '.join(names)}; items: {rec.n_items}\n")
    print("Weights by support size (ratings the user has, from each bucket's floor)")
    if users is not None:
        print("and the validation users each bucket's weights were learned on:\n")
    else:
        print("(not learned):\n")
    extra = [] if users is None else ["users"]
    print("| support size | " + " | ".join([*names, *extra]) + " |")
    print("|---" * (len(names) + len(extra) + 1) + "|")
    for b, (floor, row) in enumerate(zip(ens.buckets, ens.weights, strict=True)):
        cells = [f"{w:.2f}" for w in row] + ([] if users is None else [users[b]])
        print(f"| {floor}+ | " + " | ".join(cells) + " |")
    if (path / "retrain.json").exists():  # a retrained ensemble: its verdict, as a run's
        from metarec.io import load_json, reading

        with reading(path / "retrain.json", "metarec retrain's retrain.json"):
            _print_retrain(load_json(path / "retrain.json"))


def _print_run(path: Path, meta: dict[str, Any]) -> None:
    """A run folder's dataset, config and training history as Markdown."""
    metadata = meta.get("metadata", {})
    if not isinstance(metadata, dict):
        raise DataError(
            f"expected an object, got {metadata!r:.40}",
            path=path / "recommender.json",
            field="metadata",
        )
    history = metadata.get("history", [])
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise DataError(
            f"expected a list of epoch rows, got {history!r:.40}",
            path=path / "recommender.json",
            field="metadata.history",
        )
    print(f"# Run {path}\n")
    print(f"Dataset: {metadata.get('dataset', '?')}; items: {meta['n_items']}")
    print("Config: " + json.dumps(meta["config"], sort_keys=True))
    if history:
        keys = [k for k in history[0] if k != "epoch"]
        print("\n| epoch | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for row in history:
            cells = [_epoch_cell(row.get(k, "")) for k in keys]
            print(f"| {row.get('epoch', '')} | " + " | ".join(cells) + " |")


def _print_retrain(record: dict[str, Any]) -> None:
    """What ``metarec retrain`` judged the run on (``retrain.json``): the run it
    replaces, the feedback, and the release rule's losses on the held-out users."""

    def loss(key: str) -> str:
        value = record.get(key)
        return "not finite" if value is None else f"{float(value):.4f}"

    verdict = "accepted" if record["accepted"] else "refused, written with --force"
    tolerance = float(record.get("tolerance", 0.0))
    epochs = record.get("best_epochs")  # a retrained ensemble's, one per metarec member
    best = (
        "best epochs " + ", ".join(f"{name} {epoch}" for name, epoch in epochs.items())
        if isinstance(epochs, dict)
        else f"best epoch {record.get('best_epoch', '?')}"
    )
    # built whole before it is printed: a damaged file prints no half of it
    text = (
        f"\n## Retrained from {record['retrained_from']}\n\n"
        f"Feedback: {counted(int(record['feedback_ratings']), 'rating')} from "
        f"{counted(int(record['feedback_users']), 'user')}; {best}.\n"
        # runs retrained before the metric was recorded (2026-12-02) were judged on MAE
        f"{record.get('metric', 'MAE')} on {int(record['n_eval_users']):,} held-out users "
        f"({record.get('held_out', '?')}): old {loss('old_mae')}, new {loss('new_mae')} "
        f"({verdict}" + (f"; tolerance {tolerance:g}" if tolerance else "") + ")."
    )
    print(text)


def _epoch_cell(value: object) -> str:
    if value is None:  # a loss that was not finite is kept as null
        return "not finite"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _print_run_metrics(metrics: dict[str, Any]) -> None:
    """What ``metarec evaluate`` wrote (``metrics.json``), as Markdown: one row per
    state and model. A damaged file meets ``reading``'s one-line error."""
    from metarec.cli.training import P1_TABLE_METRICS, blank_metrics_note
    from metarec.values import is_finite_number, is_whole

    if metrics.get("protocol", "p1") != "p1":  # a benchmark record copied in: all dashes
        raise ValueError(f"field 'protocol' is {metrics['protocol']!r:.40}, expected 'p1'")
    summary, n_users = metrics["summary"], metrics["n_users"]
    for state, models in summary.items():
        if not (is_whole(n_users[state]) and n_users[state] >= 0):
            raise ValueError(f"field 'n_users.{state}' is {n_users[state]!r:.40}, not a count")
        for name, vals in models.items():
            for m in P1_TABLE_METRICS:
                value = vals.get(m)
                # errors are >= 0, the ranking metrics fractions; NaN printed as "nan"
                top = math.inf if m in ("mae", "rmse") else 1
                if value is not None and not (is_finite_number(value) and 0 <= value <= top):
                    raise ValueError(
                        f"field 'summary.{state}.{name}.{m}' is {value!r:.40}, expected a "
                        + ("number >= 0" if top == math.inf else "number in [0, 1]")
                        + " or null"
                    )
    print(f"\n## P1 on {metrics.get('dataset', '?')} (new items: {metrics.get('split_rule')})\n")
    print("| state | users | model | " + " | ".join(P1_TABLE_METRICS) + " |")
    print("|---" * (len(P1_TABLE_METRICS) + 3) + "|")
    for state, models in summary.items():
        for name, vals in models.items():
            cells = [
                "—" if vals.get(m) is None else f"{float(vals[m]):.4f}" for m in P1_TABLE_METRICS
            ]
            print(f"| {state} | {int(n_users[state])} | {name} | " + " | ".join(cells) + " |")
    note = blank_metrics_note(summary)
    if note:
        print(f"\n{note}")


def _render_result(path: Path, record: dict[str, Any]) -> str:
    """A benchmark record as Markdown, its fields checked first."""
    from metarec.evaluation.report import check_record_fields, render_markdown

    if not isinstance(record, dict):
        raise ConfigError(f"{path}: not a benchmark result (a JSON {type(record).__name__})")
    speed = record.get("benchmark") == "speed"
    if not speed and (record.get("protocol") not in ("p1", "p2") or "summary" not in record):
        raise ConfigError(
            f"{path}: not a benchmark result (no protocol/summary, not a speed benchmark)"
        )
    if speed:
        from metarec.evaluation.speed import check_speed_fields

        check_speed_fields(record, path)
    else:
        check_record_fields(record, path)
    return render_markdown(record)


# run_benchmark's parameters as `metarec benchmark` spells them
_BENCHMARK_FLAGS = {
    "peers": "--peers",
    "algorithms": "--algorithms",
    "like_threshold": "--like-threshold",
    "overrides": "--set",
    "folds": "--folds",
    "seeds": "--seeds",
    "shots": "--shots",
    "max_items": "--max-items",
    "max_episodes": "--max-episodes",
    "out": "--out",
    "models": "--model",
}

"""The ``metarec`` command: a thin shell over the library.

Every user-caused error (bad file, bad config, unknown title, ...) is printed
as one line on stderr with exit code 2 and no traceback; Ctrl-C exits 130 and
says how to resume.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarec.errors import ConfigError, MetarecError

DEFAULT_RUN = "runs/quickstart"


# -- data sources -----------------------------------------------------------
def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (a named dataset, a folder, or your own files)")
    g.add_argument("--dataset", help="ml-100k, ml-1m or ml-latest-small")
    g.add_argument(
        "--data", help="folder holding the dataset (RecBole atomic or GroupLens raw files)"
    )
    _add_file_args(g)


# your own files: (flag, attribute, default) in the order a reproduction command lists them
FILE_ARGS: tuple[tuple[str, str, str | None], ...] = (
    ("--interactions", "interactions", None),
    ("--items", "items", None),
    ("--users", "users", None),
    ("--user-col", "user_col", "user_id"),
    ("--item-col", "item_col", "item_id"),
    ("--rating-col", "rating_col", "rating"),
    ("--timestamp-col", "timestamp_col", None),
    ("--title-col", "title_col", None),
    ("--genre-col", "genre_col", None),
    ("--year-col", "year_col", None),
    ("--text-cols", "text_cols", ""),
    ("--user-feature-cols", "user_feature_cols", ""),
    ("--rating-range", "rating_range", None),
)


def _file_args_command(args: argparse.Namespace) -> str:
    """The own-files options as given (non-default ones), for a reproduction command."""
    import shlex

    parts: list[str] = []
    for flag, attr, default in FILE_ARGS:
        value = getattr(args, attr, None)
        if value is not None and value != default:
            parts += [flag, str(value)]
    if getattr(args, "strict", False):
        parts.append("--strict")
    return shlex.join(parts)


def _add_file_args(g: Any) -> None:
    g.add_argument("--interactions", help="CSV/TSV/Parquet of ratings")
    g.add_argument("--items", help="CSV/TSV/Parquet of items")
    g.add_argument("--users", help="CSV/TSV/Parquet of users")
    g.add_argument("--user-col", default="user_id")
    g.add_argument("--item-col", default="item_id")
    g.add_argument("--rating-col", default="rating")
    g.add_argument("--timestamp-col")
    g.add_argument("--title-col")
    g.add_argument("--genre-col")
    g.add_argument("--year-col")
    g.add_argument("--text-cols", default="", help="comma-separated extra item text columns")
    g.add_argument("--user-feature-cols", default="", help="comma-separated user feature columns")
    g.add_argument("--rating-range", help="min,max (default: from the data)")
    g.add_argument(
        "--strict",
        action="store_true",
        help="fail on the first bad value (rating, unknown item, empty text) instead of "
        "dropping it and reporting",
    )


def _data_spec(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "dataset",
        "data",
        "interactions",
        "items",
        "users",
        "user_col",
        "item_col",
        "rating_col",
        "timestamp_col",
        "title_col",
        "genre_col",
        "year_col",
        "text_cols",
        "user_feature_cols",
        "rating_range",
        "strict",
    )
    spec = {k: getattr(args, k, None) for k in keys}
    for k in ("data", "interactions", "items", "users"):
        if spec[k]:
            spec[k] = str(Path(spec[k]).resolve())
    return spec


def load_from_spec(spec: dict[str, Any], *, cleaned: bool = True) -> Any:
    """Load (and unless ``cleaned=False``, clean) a dataset from CLI-style options.

    ``spec["strict"]`` turns every value problem cleaning would fix (a bad
    rating, an unknown item, empty text, ...) into an error naming file and line.
    """
    from metarec.data import clean

    raw = _load_raw(spec)
    if not cleaned:
        return raw
    rr = _rating_range(spec)
    return clean(raw, rating_range=rr, strict=bool(spec.get("strict")))


def _rating_range(spec: dict[str, Any]) -> tuple[float, float] | None:
    if not spec.get("rating_range"):
        return None
    try:
        lo, hi = (float(x) for x in str(spec["rating_range"]).split(","))
    except ValueError:
        raise ConfigError(
            f"--rating-range: expected min,max, got {spec['rating_range']!r}"
        ) from None
    return lo, hi


def _load_raw(spec: dict[str, Any]) -> Any:
    from metarec.data import load_dataset, load_path, load_table

    if spec.get("interactions"):
        rr = _rating_range(spec)
        split = lambda s: [c.strip() for c in (s or "").split(",") if c.strip()]  # noqa: E731
        return load_table(
            spec["interactions"],
            spec.get("items"),
            spec.get("users"),
            user_col=spec.get("user_col") or "user_id",
            item_col=spec.get("item_col") or "item_id",
            rating_col=spec.get("rating_col") or "rating",
            timestamp_col=spec.get("timestamp_col"),
            title_col=spec.get("title_col"),
            genre_col=spec.get("genre_col"),
            year_col=spec.get("year_col"),
            text_cols=split(spec.get("text_cols")),
            user_feature_cols=split(spec.get("user_feature_cols")),
            rating_range=rr,
        )
    if spec.get("dataset"):
        return load_dataset(spec["dataset"], root=spec.get("data"), clean=False)
    if spec.get("data"):
        return load_path(spec["data"])
    raise ConfigError(
        "no data given: use --dataset NAME [--data DIR], --data DIR, or --interactions FILE"
    )


# -- commands ---------------------------------------------------------------
def cmd_data(args: argparse.Namespace) -> int:
    from metarec.data import validate

    spec = _data_spec(args)
    if args.source:
        if Path(args.source).exists():
            spec["data"] = str(Path(args.source).resolve())
        else:
            spec["dataset"] = args.source
    if args.action == "validate":
        raw = load_from_spec(spec, cleaned=False)
        problems = validate(raw, rating_range=_rating_range(spec))
        for p in problems:
            print(f"problem: {p}")
        print("ok: no problems found" if not problems else f"{len(problems)} problem(s)")
        return 0 if not problems else 1
    ds = load_from_spec(spec)
    if args.action == "describe":
        info = ds.describe()
        if ds.report is not None:
            info["cleaning"] = ds.report.to_dict()
        if args.json:
            print(json.dumps(info, indent=2, default=str))
        else:
            for k, v in info.items():
                if k != "cleaning":
                    print(f"{k:>26}: {v}")
            if ds.report is not None:
                print("cleaning:\n" + ds.report.summary())
    return 0


def _config(args: argparse.Namespace) -> Any:
    from metarec.config import TrainConfig

    cfg = TrainConfig.from_toml(args.config) if getattr(args, "config", None) else TrainConfig()
    return cfg.with_overrides(list(getattr(args, "set", None) or []))


def _train_run(
    spec: dict[str, Any], cfg: Any, out: Path, *, holdout: str, progress: bool
) -> dict[str, Any]:
    from metarec.evaluation.p1 import make_p1_split
    from metarec.io import save_json
    from metarec.pipeline import encode_catalogue, fit_recommender, split_users

    t0 = time.perf_counter()
    ds = load_from_spec(spec)
    print(
        f"data: {ds.name}: {ds.n_users:,} users, {ds.n_items:,} items, "
        f"{len(ds.interactions):,} ratings"
    )
    if ds.report is not None and ds.report.dropped:
        print(ds.report.summary())
    catalogue = encode_catalogue(ds.items, cfg.encoder, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "config.json", cfg.to_dict())
    if holdout == "p1":
        split = make_p1_split(ds, seed=cfg.seed)
        split.save(out / "split.json")
        train_rows, val_rows = split.frames["train"], split.frames["validation"]
    else:
        train_rows, val_rows = split_users(ds.interactions, 0.1, cfg.seed)
    print(f"meta-training {cfg.algorithm} on {train_rows['user_id'].nunique():,} users ...")
    rec, history = fit_recommender(
        catalogue,
        train_rows,
        cfg,
        users=ds.users,
        validation=val_rows,
        rating_range=ds.rating_range,
        checkpoint_dir=out / "checkpoint",
        progress=progress,
        metadata={"dataset": ds.name, "data_spec": spec, "holdout": holdout},
    )
    rec.save(out)
    secs = time.perf_counter() - t0
    print(f"saved {out} (best epoch {history.best_epoch}, {secs:.0f} s)")
    return {"dataset": ds, "catalogue": catalogue, "recommender": rec, "seconds": secs}


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args)
    _train_run(_data_spec(args), cfg, Path(args.out), holdout=args.holdout, progress=not args.quiet)
    return 0


def _evaluate_run(run: Path, ds: Any, rec: Any) -> dict[str, Any]:
    from metarec.data.tasks import UserRatings
    from metarec.evaluation.p1 import P1Split, evaluate_p1
    from metarec.io import save_json
    from metarec.models.bias import BiasModel
    from metarec.models.cutpoints import MedianView, rating_levels

    if not (run / "split.json").exists():
        raise ConfigError(
            f"{run}: no split.json; train with --holdout p1 to evaluate with protocol P1"
        )
    split = P1Split.load(run / "split.json", ds)
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
        states=("user_cold", "item_cold", "both_cold", "item_cold_pooled", "both_cold_pooled"),
    )
    save_json(
        run / "metrics.json",
        {
            "protocol": "p1",
            "dataset": ds.name,
            "split_rule": split.rule,
            "n_users": result["n_users"],
            "summary": result["summary"],
        },
    )
    print(f"\nProtocol P1 on {ds.name} (new items: {split.rule}); lower MAE/RMSE is better")
    print(format_p1_table(result))
    return result


def format_p1_table(result: dict[str, Any]) -> str:
    metrics = ("mae", "rmse", "ndcg@3", "precision@5", "mrr@5")
    lines = [f"{'state':<16} {'users':>5}  {'model':<18}" + "".join(f"{m:>12}" for m in metrics)]
    for state, models in result["summary"].items():
        for name, vals in models.items():
            row = f"{state:<16} {result['n_users'][state]:>5}  {name:<18}"
            lines.append(row + "".join(f"{vals[m]:>12.4f}" for m in metrics))
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from metarec.recommender import Recommender

    run = Path(args.run)
    rec = Recommender.load(run)
    spec = _data_spec(args)
    if not any(spec.get(k) for k in ("dataset", "data", "interactions")):
        spec = rec.metadata.get("data_spec") or {}
    _evaluate_run(run, load_from_spec(spec), rec)
    return 0


def _parse_rates(rates: Sequence[str]) -> list[tuple[str, float]]:
    out = []
    for r in rates:
        title, sep, value = r.rpartition("=")
        if not sep or not title.strip():
            raise ConfigError(
                f'--rate {r!r}: expected ITEM=RATING, e.g. --rate "Toy Story (1995)=5"'
            )
        try:
            out.append((title.strip(), float(value)))
        except ValueError:
            raise ConfigError(f"--rate {r!r}: rating {value!r} is not a number") from None
    return out


def cmd_recommend(args: argparse.Namespace) -> int:
    from metarec.ensemble_run import load_run
    from metarec.explain import recommend_with_reasons

    rates = _parse_rates(args.rate or [])  # before the slow part: loading the model
    rec = load_run(args.run)  # a run folder or an ensemble folder
    user = rec.adapt(rates)
    top = (
        rec.recommend(user, k=args.k)
        if args.no_reasons
        else recommend_with_reasons(rec, user, k=args.k)  # type: ignore[arg-type]
    )
    if args.json:
        print(top.to_json(orient="records", indent=2))
    else:
        print(top.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0


DEMO_USER = [
    ("Toy Story (1995)", 5.0),
    ("Aladdin (1992)", 5.0),
    ("Lion King, The (1994)", 4.0),
    ("Scream (1996)", 1.0),
    ("Heat (1995)", 2.0),
]


def cmd_quickstart(args: argparse.Namespace) -> int:
    cfg = _config(args)
    spec = _data_spec(args)
    if not any(spec.get(k) for k in ("dataset", "interactions")):
        spec["dataset"] = "ml-100k"
    out = Path(args.out)
    run = _train_run(spec, cfg, out, holdout="p1", progress=not args.quiet)
    _evaluate_run(out, run["dataset"], run["recommender"])
    rec = run["recommender"]
    demo = [(t, r) for t, r in DEMO_USER if _known(rec, t)]
    print("\nA new user rates: " + "; ".join(f"{t} = {r:g}" for t, r in demo))
    top = rec.recommend(rec.adapt(demo), k=10)
    print(top.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"\nrun folder: {out}  (model.safetensors, recommender.json, config.json, metrics.json)")
    print(f'try: metarec recommend {out} --rate "Star Wars (1977)=5" --rate "Fargo (1996)=4"')
    print(f"total time: {time.perf_counter() - args._t0:.0f} s")
    return 0


def _known(rec: Any, title: str) -> bool:
    try:
        rec.resolve(title)
        return True
    except MetarecError:
        return False


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v for v in value.split(",") if v]


def _benchmark_datasets(args: argparse.Namespace) -> list[tuple[Any, str | None]]:
    """What ``metarec benchmark`` runs on: (known name or loaded dataset, how the
    reproduction command names it when it is not a known name)."""
    from metarec.data import clean, known_names, load_path

    if args.interactions:
        if args.dataset:
            raise ConfigError("give --dataset or --interactions (your own files), not both")
        return [(load_from_spec(_data_spec(args)), _file_args_command(args))]
    # --rating-range and --strict also apply to a folder of atomic files
    given = [
        arg
        for arg in FILE_ARGS[1:]
        if arg[1] != "rating_range" and getattr(args, arg[1], None) != arg[2]
    ]
    if given:
        raise ConfigError(f"{given[0][0]}: describes your own files; give --interactions too")
    out: list[tuple[Any, str | None]] = []
    for name in args.dataset or (["ml-1m"] if args.protocol == "p1" else ["ml-100k"]):
        if name in known_names():
            if args.rating_range or args.strict:
                flag = "--rating-range" if args.rating_range else "--strict"
                raise ConfigError(
                    f"{flag}: applies to a folder of atomic files or your own files, not to "
                    f"the known dataset {name!r} (its scale and cleaning are fixed)"
                )
            out.append((name, None))
        elif Path(name).expanduser().exists() or Path(name + ".inter").exists():
            rr = _rating_range(_data_spec(args))
            ds = clean(load_path(name), rating_range=rr, strict=bool(args.strict))
            out.append((ds, f"--dataset {name}"))
        else:
            raise ConfigError(
                f"--dataset {name!r}: neither a known dataset ({', '.join(known_names())}) "
                "nor a folder or prefix of RecBole atomic files; for CSV/TSV/Parquet files use "
                "--interactions FILE [--items FILE ...]"
            )
    return out


def cmd_benchmark(args: argparse.Namespace) -> int:
    datasets = _benchmark_datasets(args)
    if args.protocol == "speed":
        if args.seeds != 1:
            # the speed benchmark times single models; a bag there would be silently ignored
            raise ConfigError(
                f"--seeds: applies to --protocol p1 and p2, not speed (got {args.seeds})"
            )
        if args.splits is not None:
            raise ConfigError("--splits: applies to --protocol p1 and p2, not speed")
        if args.like_threshold is not None:
            raise ConfigError("--like-threshold: applies to --protocol p1 and p2, not speed")
        dataset, named = datasets[0]
        if named is not None:
            raise ConfigError("--protocol speed: runs on a known dataset (e.g. ml-100k)")
        from metarec.evaluation.speed import run_speed_benchmark

        run_speed_benchmark(
            dataset=dataset, root=args.data, out=args.out, seed=args.seed,
            progress=not args.quiet,
        )  # fmt: skip
        return 0
    shots = None
    if args.shots:
        try:
            shots = [int(k) for k in args.shots.split(",")]
        except ValueError:
            raise ConfigError(
                f"--shots: expected comma-separated integers, got {args.shots!r}"
            ) from None
        if any(k < 0 for k in shots):
            raise ConfigError(f"--shots: support sizes must be >= 0, got {args.shots!r}")
    from metarec.evaluation.benchmark import run_benchmark  # torch: after the cheap checks

    for dataset, named in datasets:
        run_benchmark(
            args.protocol,
            dataset,
            root=args.data,
            out=args.out,
            seed=args.seed,
            folds=args.folds,
            algorithms=_csv(args.algorithms),
            peers=_csv(args.peers),
            overrides=list(args.set or []),
            shots=shots,
            seeds=args.seeds,
            splits=args.splits,
            progress=not args.quiet,
            plots=not args.no_plots,
            like_threshold=args.like_threshold,
            data_args=named,
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from metarec.io import load_json

    path = Path(args.run)
    if path.is_dir() and (path / "recommender.json").exists():
        meta = load_json(path / "recommender.json")
        history = meta.get("metadata", {}).get("history", [])
        print(f"# Run {path}\n")
        print(f"Dataset: {meta.get('metadata', {}).get('dataset', '?')}; items: {meta['n_items']}")
        print("Config: " + json.dumps(meta["config"], sort_keys=True))
        if history:
            keys = [k for k in history[0] if k != "epoch"]
            print("\n| epoch | " + " | ".join(keys) + " |")
            print("|---" * (len(keys) + 1) + "|")
            for row in history:
                cells = [
                    f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in keys
                ]
                print(f"| {row.get('epoch', '')} | " + " | ".join(cells) + " |")
        return 0
    if path.is_dir():
        found = sorted(
            p
            for pattern in ("p[12]-*.json", "speed*.json")
            for p in path.glob(pattern)
            if not p.name.endswith("-split.json")
        )
        if not found:
            raise ConfigError(
                f"{path}: no benchmark results (p1-*.json, p2-*.json, speed*.json) in it"
            )
    elif path.suffix == ".json" and path.exists():
        found = [path]
    else:
        raise ConfigError(f"{path}: not a run folder, a results folder or a benchmark .json")
    for f in found:
        record = load_json(f)
        try:
            print(_render_result(f, record, write=args.write, plots=not args.no_plots))
        except KeyError as err:
            raise ConfigError(
                f"{f}: missing field {err} (written by an older metarec? rerun the benchmark)"
            ) from None
    return 0


def _render_result(path: Path, record: dict[str, Any], *, write: bool, plots: bool) -> str:
    """A benchmark record as Markdown; ``write`` also rewrites its .md (and plots)."""
    from metarec.evaluation.report import render_markdown, write_report

    speed = record.get("benchmark") == "speed"
    if not speed and (record.get("protocol") not in ("p1", "p2") or "summary" not in record):
        raise ConfigError(
            f"{path}: not a benchmark result (no protocol/summary, not a speed benchmark)"
        )
    if write:
        write_report(record, path.with_suffix(""), plots=plots)
    return render_markdown(record)


def cmd_abtest(args: argparse.Namespace) -> int:
    """Protocol P4: replay and/or interleave two saved runs on held-out users."""
    from metarec.ensemble_run import EnsembleRecommender, load_run
    from metarec.evaluation.abtest import (
        P4Split,
        check_users_spec,
        format_report,
        jsonable,
        make_p4_split,
        run_abtest,
        users_from_spec,
    )
    from metarec.io import save_json
    from metarec.models.base import ScoringModel
    from metarec.models.meta_model import MetaModel

    support = 5 if args.support is None else args.support
    if support < 0:
        raise ConfigError(f"--support: K must be >= 0, got {support}")
    if args.top_k <= 0:
        raise ConfigError(f"-k: must be > 0, got {args.top_k}")
    check_users_spec(args.users)  # before the slow part: loading runs and data
    # either arm may be a run folder or a saved ensemble
    recs = {arm: load_run(run) for arm, run in (("A", args.run_a), ("B", args.run_b))}
    if list(recs["A"].items["item_id"]) != list(recs["B"].items["item_id"]):
        raise ConfigError(
            f"{args.run_a} and {args.run_b} have different catalogues; "
            "an A/B test needs two runs trained on the same data"
        )
    if args.root and not args.dataset:
        raise ConfigError("--root DIR needs --dataset NAME (or give the folder as --data PATH)")
    spec: dict[str, Any] = {"dataset": args.dataset, "data": args.root or args.data}
    if spec["data"]:
        spec["data"] = str(Path(spec["data"]).resolve())
    if not any(spec.values()):
        spec = recs["A"].metadata.get("data_spec") or {}
    ds = load_from_spec(spec)
    note = sys.stderr if args.json else sys.stdout  # keep --json output parseable
    chosen = users_from_spec(args.users, ds.interactions["user_id"].astype(str).unique(), args.seed)
    if isinstance(chosen, P4Split):
        split = chosen
        print(
            f"split from {args.users}: K = {split.support}, seed {split.seed}, arms as saved",
            file=note,
        )
    else:
        split = make_p4_split(
            ds.interactions, chosen, support=support, seed=args.seed, dataset=ds.name
        )
        if split.skipped.get("too_few_ratings"):
            print(
                f"skipped {split.skipped['too_few_ratings']} users with fewer than "
                f"{support + 1} ratings",
                file=note,
            )
        if split.skipped.get("not_in_data"):
            print(f"skipped {split.skipped['not_in_data']} users not in the data", file=note)
    if args.save_split:
        split.save(args.save_split)
    policies: dict[str, ScoringModel] = {
        arm: rec.ensemble
        if isinstance(rec, EnsembleRecommender)
        else MetaModel.from_recommender(rec, name=arm)
        for arm, rec in recs.items()
    }
    report = run_abtest(
        policies["A"],
        policies["B"],
        ds.interactions,
        split,
        recs["A"].item_index,
        k=args.top_k,
        method=args.method,
        users=ds.users,
        threshold=ds.like_threshold if args.like_threshold is None else args.like_threshold,
    )
    report["runs"] = {"A": str(args.run_a), "B": str(args.run_b)}
    report = jsonable(report)
    if args.out:
        save_json(args.out, report)
        if report.get("replay"):
            from metarec.evaluation.report import save_abtest_plot

            save_abtest_plot(
                {**report, "A": str(args.run_a), "B": str(args.run_b)},
                Path(args.out).with_suffix(".png"),
            )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report, report["runs"]))
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    """Blend trained runs (and peers fitted on their training data) into a saved ensemble."""
    from metarec.ensemble_run import fit_from_runs, format_weights, run_kind
    from metarec.io import load_json
    from metarec.models.persist import check_target

    runs = [Path(r) for r in args.runs]
    for run in runs:  # bad paths fail here, before any data is loaded
        if run_kind(run) != "run":
            raise ConfigError(f"{run}: is an ensemble; give the run folders to blend")
    peers = _csv(args.peers) or []
    buckets = None
    if args.buckets:
        try:
            buckets = [int(b) for b in args.buckets.split(",")]
        except ValueError:
            raise ConfigError(
                f"--buckets: expected comma-separated integers, got {args.buckets!r}"
            ) from None
    out = Path(args.out)
    if out.resolve() in {r.resolve() for r in runs}:
        raise ConfigError(f"--out {out}: must not be one of the runs")
    check_target(out)  # before the slow part, as the save would refuse it
    spec = _data_spec(args)
    if not any(spec.get(k) for k in ("dataset", "data", "interactions")):
        meta = load_json(runs[0] / "recommender.json")
        spec = (meta.get("metadata") or {}).get("data_spec") if isinstance(meta, dict) else None
        if not spec:
            raise ConfigError(
                f"{runs[0]}: the run does not record its data; give --dataset/--data or "
                "--interactions"
            )
    ds = load_from_spec(spec)
    ens = fit_from_runs(runs, ds, peers=peers, mode=args.mode, buckets=buckets, seed=args.seed)
    ens.metadata["data_spec"] = spec
    print("\nweights by support size (ratings the user has):")
    print(format_weights(ens))
    ens.save(out)
    print(f"\nsaved {out}")
    print(f'try: metarec recommend {out} --rate "ITEM=5"   or   metarec serve {out}')
    return 0


# -- service: serve and retrain --------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    from metarec.ensemble_run import run_kind
    from metarec.service.server import serve
    from metarec.service.settings import ServiceSettings, default_db_url

    run_kind(args.run)  # a bad folder fails before the feedback store is created
    settings = ServiceSettings(
        run=Path(args.run),
        db_url=args.db or default_db_url(),
        api_key=ServiceSettings.key_from_env(args.api_key),
        cors_origins=tuple(args.cors or ()),
        page_api_key=args.page_api_key,
        max_body_bytes=args.max_body_bytes,
        max_events_per_batch=args.max_batch,
        cache_size=args.cache_size,
        torch_threads=args.torch_threads,
    )
    serve(settings, host=args.host, port=args.port)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from metarec.retrain import retrain

    result = retrain(
        args.run,
        args.db,
        args.out,
        spec=_data_spec(args),
        overrides=list(args.set or []),
        tolerance=args.tolerance,
        force=args.force,
        progress=not args.quiet,
    )
    print(result.summary())
    if result.written:
        forced = "" if result.accepted else " (forced)"
        print(f"wrote {result.out}{forced} in {result.seconds:.0f} s")
        return 0
    print(
        f"metarec: the retrained model is worse: held-out MAE {result.new_mae:.4f} vs "
        f"{result.old_mae:.4f} for {args.run} (tolerance {args.tolerance:g}); "
        f"{args.out} not written (--force writes it anyway)",
        file=sys.stderr,
    )
    return 1


def _add_service_commands(sub: Any) -> None:
    sv = sub.add_parser("serve", help="HTTP service: recommendations that learn from feedback")
    sv.add_argument("run", help="run folder or ensemble folder to serve")
    sv.add_argument(
        "--db",
        help="feedback store URL: sqlite:///path.db or postgresql://user:pw@host/db "
        "(default: sqlite file metarec-feedback.db in the current directory)",
    )
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", help="key for write endpoints (default: $METAREC_API_KEY)")
    sv.add_argument(
        "--cors", action="append", metavar="ORIGIN", help="allowed browser origin (repeatable)"
    )
    sv.add_argument(
        "--page-api-key",
        action="store_true",
        help="hand the API key to the web page at / (demos on a trusted network only)",
    )
    sv.add_argument("--max-body-bytes", type=int, default=1_000_000)
    sv.add_argument("--max-batch", type=int, default=1000, help="max events per request")
    sv.add_argument("--cache-size", type=int, default=10_000, help="adapted users kept in memory")
    sv.add_argument(
        "--torch-threads", type=int, default=1, help="threads for model work (default 1)"
    )
    sv.set_defaults(func=cmd_serve)

    rt = sub.add_parser(
        "retrain", help="meta-train on the data plus logged feedback; keep it only if not worse"
    )
    rt.add_argument("run", help="the run being served")
    rt.add_argument("--db", required=True, help="feedback store URL (as for serve)")
    rt.add_argument("--out", required=True, help="folder for the new run")
    _add_data_args(rt)
    rt.add_argument("--root", dest="data", help="same as --data")
    rt.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the run's config")
    rt.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="held-out MAE the new model may lose and still be written (negative: the "
        "gain it must show; default 0)",
    )
    rt.add_argument("--force", action="store_true", help="write the new run even if worse")
    rt.add_argument("--quiet", action="store_true", help="no progress bars")
    rt.set_defaults(func=cmd_retrain)


# -- parser -----------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metarec",
        description="Cold-start recommendation with meta-learning over LM item vectors.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def train_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="TOML file ([train] table or top-level keys)")
        sp.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override a config value (repeatable)",
        )
        sp.add_argument("--quiet", action="store_true", help="no progress bars")

    q = sub.add_parser(
        "quickstart", help="ml-100k: clean, encode, meta-train, evaluate (P1), recommend"
    )
    _add_data_args(q)
    train_opts(q)
    q.add_argument("--out", default=DEFAULT_RUN, help=f"run folder (default {DEFAULT_RUN})")
    q.set_defaults(func=cmd_quickstart)

    d = sub.add_parser("data", help="describe or validate a dataset")
    d.add_argument("action", choices=["describe", "validate"])
    d.add_argument("source", nargs="?", help="dataset name or folder (or use --interactions ...)")
    d.add_argument("--json", action="store_true")
    _add_data_args(d)
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("train", help="meta-train a recommender into a run folder")
    _add_data_args(t)
    train_opts(t)
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument(
        "--holdout",
        choices=["p1", "none"],
        default="p1",
        help="p1: hold out P1's new users/items for `metarec evaluate` (default); "
        "none: train on all users (10%% kept for early stopping)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="protocol P1 metrics of a run against the bias model")
    e.add_argument("run")
    _add_data_args(e)
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("recommend", help="top-k for a new user given a few ratings")
    r.add_argument("run", help="run folder or ensemble folder")
    r.add_argument(
        "--rate",
        action="append",
        metavar="ITEM=RATING",
        help="an item id or exact title and its rating",
    )
    r.add_argument("-k", type=int, default=10)
    r.add_argument("--json", action="store_true")
    r.add_argument(
        "--no-reasons", action="store_true", help="leave out why each item is recommended"
    )
    r.set_defaults(func=cmd_recommend)

    en = sub.add_parser(
        "ensemble",
        help="blend trained runs and peers with weights learned on validation users; save it",
    )
    en.add_argument("runs", nargs="+", metavar="RUN", help="run folders trained on the same data")
    en.add_argument(
        "--peers",
        default="popularity",
        help="comma-separated models fitted on the runs' training data: the peers "
        "popularity, bias, knn, and metarec's ranking models episodic, stacked "
        "(default popularity; '' for none)",
    )
    en.add_argument(
        "--mode",
        choices=("ranking", "rating"),
        default="ranking",
        help="ranking: blend standardised scores for nDCG@10 (default); rating: blend "
        "ratings for MAE (rating models and the bias peer only)",
    )
    en.add_argument("--buckets", help="support-size buckets (default 0,1,3,5,10,20)")
    en.add_argument("--seed", type=int, default=0)
    en.add_argument("--out", required=True, help="ensemble folder to write")
    _add_data_args(en)
    en.set_defaults(func=cmd_ensemble)

    b = sub.add_parser(
        "benchmark",
        help="run protocol P1 or P2 (P3 with --folds) for metarec and every peer; "
        "writes JSON, Markdown and PNG",
    )
    b.add_argument(
        "--protocol",
        choices=("p1", "p2", "speed"),
        default="p1",
        help="p1 (MeLU protocol), p2 (few-shot ranking) or speed (latency and throughput)",
    )
    bd = b.add_argument_group("data (known datasets, folders of atomic files, or your own files)")
    bd.add_argument(
        "--dataset",
        action="append",
        help="a known dataset (ml-100k, ml-1m, ml-latest-small) or a folder or prefix of "
        "RecBole atomic files; repeatable; default ml-1m for p1, ml-100k for p2",
    )
    bd.add_argument("--data", help="folder holding the known datasets")
    _add_file_args(bd)
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
        help="comma-separated (default: all: popularity,bias,knn,als,melu-1,melu-5,transfer)",
    )
    b.add_argument("--folds", type=int, default=1, help="P3: k folds over users (default 1)")
    b.add_argument("--shots", help="P2 support sizes (default 0,1,3,5,10,20)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="fit each meta-learning algorithm with this many seeds and average them (default 1)",
    )
    b.add_argument(
        "--splits",
        metavar="DIR",
        help="read each fold's split from the files an earlier run wrote to DIR "
        "(e.g. benchmarks/results) instead of drawing them",
    )
    b.add_argument("--out", default="benchmarks/results")
    b.add_argument("--set", action="append", metavar="KEY=VALUE")
    b.add_argument("--no-plots", action="store_true")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_benchmark)

    rp = sub.add_parser("report", help="render a benchmark result or a run folder as Markdown")
    rp.add_argument("run", metavar="RUN", help="benchmark .json, results folder, or run folder")
    rp.add_argument("--write", action="store_true", help="also rewrite the .md and .png files")
    rp.add_argument("--no-plots", action="store_true")
    rp.set_defaults(func=cmd_report)

    ab = sub.add_parser(
        "abtest",
        help="protocol P4: offline A/B test (replay, interleaving) of two saved runs or ensembles",
    )
    ab.add_argument("run_a", metavar="RUN_A", help="run folder of policy A (control)")
    ab.add_argument("run_b", metavar="RUN_B", help="run folder of policy B (treatment)")
    ab.add_argument(
        "--dataset",
        metavar="NAME",
        help="ml-100k, ml-1m or ml-latest-small (default: RUN_A's data)",
    )
    ab.add_argument(
        "--data", metavar="PATH", help="folder holding the data set (atomic or GroupLens files)"
    )
    ab.add_argument("--root", metavar="DIR", help="folder holding the named --dataset")
    ab.add_argument(
        "--users",
        required=True,
        metavar="SPEC",
        help="held-out users: a file of user ids (one per line), a P1 split JSON (its new "
        "users), a P4 split JSON (arms and K as saved), or heldout:FRACTION (a seeded "
        "fraction of all users; they may have been in the runs' training data)",
    )
    ab.add_argument(
        "--support", type=int, default=None, metavar="K", help="K: first K ratings (default 5)"
    )
    ab.add_argument(
        "-k", dest="top_k", type=int, default=10, metavar="N", help="items recommended (10)"
    )
    ab.add_argument("--seed", type=int, default=0, help="arm assignment and interleaving coins")
    ab.add_argument("--method", choices=["replay", "interleave", "both"], default="both")
    ab.add_argument("--json", action="store_true", help="print the report as JSON")
    ab.add_argument(
        "--out",
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
        "--save-split", metavar="FILE", help="write the P4 split (users, arms, K, seed) as JSON"
    )
    ab.set_defaults(func=cmd_abtest)
    _add_service_commands(sub)
    return p


_PACKAGE_DIR = Path(__file__).resolve().parent
# what an interrupted command keeps (training checkpoints every epoch; a benchmark
# keeps its finished folds), said only where running it again really resumes
_RESUMES = {
    "train": "; run the same command again to resume from the last checkpoint",
    "quickstart": "; run the same command again to resume from the last checkpoint",
    "benchmark": "; run the same command again: a multi-fold run resumes at its first "
    "unfinished fold, a single split starts over",
}


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args._t0 = time.perf_counter()
    if getattr(args, "k", 1) is not None and getattr(args, "k", 1) <= 0:
        parser.error(f"-k: must be > 0, got {args.k}")
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except MetarecError as exc:
        print(f"metarec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmetarec: interrupted{_RESUMES.get(args.command, '')}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`metarec report ... | head`): not an error of ours; point
        # stdout at devnull so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

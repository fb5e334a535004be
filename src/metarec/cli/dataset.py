"""``metarec data describe|validate``: look at a data set before training on it."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

from metarec.cli.options import add_data_args, data_spec
from metarec.errors import ConfigError, MetarecError


def register(sub: Any) -> None:
    d = sub.add_parser("data", help="describe or validate a dataset")
    d.add_argument(
        "action",
        choices=["describe", "validate"],
        help="describe: counts, scale and notes of the data as cleaned; validate: every "
        "problem cleaning would act on, one a line (exit status 1 where there is one)",
    )
    d.add_argument(
        "source",
        nargs="?",
        help="dataset name (a folder of that name: ./NAME) or folder (or --interactions ...)",
    )
    d.add_argument("--json", action="store_true", help="print JSON (both actions)")
    add_data_args(d)
    d.set_defaults(func=cmd_data)


def _a_folder(source: str) -> bool:
    """Whether ``source`` names a folder rather than a known data set: a known name wins
    unless written as a path (``./ml-100k``), as for ``--dataset``. A folder of that name
    where the command ran (the data folder itself, say) took it over."""
    from metarec.data.registry import known_names

    as_path = source.startswith((".", "~")) or "/" in source or "\\" in source
    return (as_path or source not in known_names()) and Path(source).expanduser().exists()


def _like_threshold_problem(cleaned: Any) -> list[str]:
    """What ``train`` (without a like threshold given) refuses the cleaned data for."""
    from metarec.data.schema import inferred_threshold_said

    if not len(cleaned.interactions):
        return []
    try:
        with warnings.catch_warnings():  # the counts' note is among the notes already
            warnings.simplefilter("ignore", UserWarning)
            inferred_threshold_said(
                cleaned.interactions["rating"],
                cleaned.rating_range,
                cleaned.name,
                "train with --set like_threshold=X",
            )
    except ConfigError as exc:
        return [str(exc)]
    return []


def cmd_data(args: argparse.Namespace) -> int:
    from metarec.data import clean, validate
    from metarec.data.spec import load_from_spec, spec_rating_range

    spec = data_spec(args)
    if args.source and args.interactions:
        # the files won and the name was dropped without a word
        raise ConfigError(
            f"give a data set ({args.source!r}) or --interactions (your own files), not both"
        )
    # one of the two was dropped without a word: `describe ml-100k --dataset ml-1m`
    # described ml-100k, `describe DIR --dataset ml-1m` ml-1m. With a name, --data is
    # the folder that holds it (as for every command); with a folder it is a second one
    is_folder = bool(args.source) and _a_folder(args.source)
    named = [
        flag
        for flag, key in (("--dataset", "dataset"), ("--data", "data"))
        if spec.get(key) and (key == "dataset" or is_folder)
    ]
    if args.source and named:
        raise ConfigError(f"give a data set ({args.source!r}) or {named[0]}, not both")
    if args.source:
        if is_folder:
            spec["data"] = str(Path(args.source).resolve())
        else:
            spec["dataset"] = args.source
            if not spec.get("data") and Path(args.source).exists():
                # looked for where data sets are kept (METAREC_DATA, the cache, the
                # download): a failure there said nothing of the folder right here
                warnings.warn(
                    f"{args.source!r} is read as the data set's name; for the folder of "
                    f"that name here give ./{args.source}",
                    UserWarning,
                    stacklevel=2,
                )
    rating_range = spec_rating_range(spec)  # a bad flag before minutes of loading
    if args.action == "validate":
        raw = load_from_spec(spec, cleaned=False)
        problems = validate(raw, rating_range=rating_range)
        if rating_range is None and not spec.get("dataset"):  # a known set's scale is fixed
            from metarec.data.generic import scale_typos

            problems = [*problems, *scale_typos(raw.interactions, raw.items)]
        # what cleaning notes but keeps (an item whose only text is its year): not a
        # problem, yet "ok" alone hid it where `data describe` shows it
        try:
            cleaned = clean(raw, rating_range=rating_range)
            report = cleaned.report
            # and what describe says of the scale (all 1s: no rating model can learn)
            scale_notes = cleaned.scale_notes() if len(cleaned.interactions) else []
            # train's refusal of a scale almost no rating reaches the top quarter of:
            # "ok" here, then train stopped on it
            problems = [*problems, *_like_threshold_problem(cleaned)]
        except MetarecError:  # a table cleaning cannot read: the problems say why
            report, scale_notes = None, []
        cleaning_notes = [*(report.notes if report is not None else []), *scale_notes]
        if args.json:
            shown = {"ok": not problems, "problems": list(problems), "notes": cleaning_notes}
            print(json.dumps(shown, indent=2))
        else:
            for p in problems:
                print(f"problem: {p}")
            for n in cleaning_notes:
                print(f"note: {n}")
            print("ok: no problems found" if not problems else f"{len(problems)} problem(s)")
            if problems and spec.get("strict"):
                # each problem says what cleaning does with it; --strict does none of that
                print("with --strict, train and describe stop at the first of these instead")
        return 0 if not problems else 1
    ds = load_from_spec(spec)
    info = ds.describe()
    if ds.report is not None:
        info["cleaning"] = ds.report.to_dict()
    if args.json:
        from metarec.io import jsonable

        # strict JSON: an empty data set's means are NaN, which JSON has no word for
        print(json.dumps(jsonable(info), indent=2, default=str, allow_nan=False))
    else:
        for k, v in info.items():
            if k not in ("cleaning", "notes"):
                print(f"{k:>26}: {v}")
        notes = info["notes"]
        assert isinstance(notes, list)
        for note in notes:
            print(f"note: {note}")
        if ds.report is not None:
            print("cleaning:\n" + ds.report.summary())
    return 0

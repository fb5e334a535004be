"""Benchmark reports: Markdown tables and PNG plots from a benchmark record.

``write_report(record, stem)`` writes ``stem.md`` and ``stem-*.png`` (every file
rendered in memory first, so a record that fails to render leaves the old report
whole);
``render_markdown(record)`` is what ``metarec report RUN`` prints. The record
is the JSON a benchmark writes (a protocol run, or the speed benchmark, which
has no plots), so a report can be re-rendered from a
committed result file without rerunning anything.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from metarec.data.schema import liked_words
from metarec.errors import ConfigError, DataError
from metarec.evaluation.blind_peers import blind_note
from metarec.evaluation.metrics import P1_METRICS
from metarec.evaluation.p1 import IN_SAMPLE as P1_IN_SAMPLE
from metarec.evaluation.stats import choice_p
from metarec.io import json_bytes, jsonable, write_bytes_atomic
from metarec.values import counted, is_finite_number, is_number, is_whole

# every P1 metric, in the order metrics.py defines them, with the mean's MAE beside the
# model's own (its median rating's, where it has cutpoints)
P1_COLUMNS = (P1_METRICS[0], "mae_mean", *P1_METRICS[1:])
P2_COLUMNS = (
    "ndcg@10",
    "recall@10",
    "precision@10",
    "f1@10",
    "hit@10",
    "mrr@10",
    "itemcoverage@10",
)
LOWER_IS_BETTER = {"mae", "mae_mean", "rmse"}
P1_PLOT_METRICS = ("mae", "ndcg@3")  # one plot each, a panel per state


def plot_paths(protocol: str | None, stem: Path) -> list[Path]:
    """Every plot a report of ``protocol`` can draw beside ``stem``, by exact name: the
    files a run checks it can write before it starts, and the ones :func:`write_report`
    removes when it no longer draws them. The speed benchmark (None) has none."""
    if protocol not in ("p1", "p2"):
        return []
    kinds = ["curves"] if protocol == "p2" else [m.replace("@", "") for m in P1_PLOT_METRICS]
    return [stem.with_name(f"{stem.name}-{kind}.png") for kind in ("abtest", *kinds)]


# a P1/P2 record's top-level fields and the JSON types `metarec benchmark` writes them
# as (None: may be null); a hand-edited one is refused by field name, not by the line
# of the renderer that tripped over it
_RECORD_TYPES: dict[str, tuple[type | None, ...]] = {
    "protocol": (str,),
    "dataset": (str,),
    "seed": (int,),
    "seeds": (int,),
    "folds": (int,),
    "split_rule": (str,),
    "user_rule": (dict,),
    "n_users": (dict,),
    "n_scored": (dict,),
    "support_order": (str,),
    "summary": (dict,),
    "std": (dict,),
    "ci95": (dict,),
    "reference": (dict,),
    "reference_chosen_from": (dict,),
    "reference_excluded": (dict,),
    "significance": (dict,),
    "ensemble_weights": (list,),
    "abtest": (dict, None),
    "per_fold": (list, None),
    "configs": (dict,),
    "overrides": (list,),
    "timings": (dict,),
    "split_files": (list,),
    "machine": (dict,),
    "command": (str,),
    "rating_range": (list,),
    "like_threshold": (int, float, None),
    "max_items": (int, None),
    "max_episodes": (int, None),
    "own_models": (list,),
    "blind_peers": (dict,),
    "cleaning": (dict,),
    "encoder_id": (str,),
    "warnings": (list,),
    "abtest_not_run": (str,),
}
_JSON_NAMES: dict[type | None, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    dict: "an object",
    list: "a list",
    None: "null",
}


def check_record_fields(record: dict[str, Any], source: str | Path) -> None:
    """Refuse a P1/P2 record whose top-level field has another JSON type than the
    benchmark writes, naming the file and the field."""
    for name, allowed in _RECORD_TYPES.items():
        if name not in record:
            continue  # a missing field is named where it is needed
        value = record[name]
        ok = any(
            value is None if t is None else isinstance(value, t) and not isinstance(value, bool)
            for t in allowed
        )
        if name == "rating_range" and ok:
            ok = len(value) == 2 and all(is_number(x) for x in value)
        if not ok:
            expected = " or ".join(
                _JSON_NAMES[t] for t in allowed if not (t is int and float in allowed)
            )
            if name == "rating_range":
                expected = "[low, high]"
            raise DataError(
                f"expected {expected}, got {value!r:.40} (damaged or edited?)",
                path=source,
                field=name,
            )
    _check_tables(record, source)


# rating errors, in the rating scale's units; every other metric is in [0, 1]
_ERROR_METRICS = frozenset({"mae", "rmse", "mae_mean"})


def _metric_problem(metric: str, value: Any) -> str | None:
    """What a metric's value should have been, or None where it is one."""
    if value is None:
        return None
    # an undefined value is null (NaN in records before 2026-11-30); Infinity is no
    # value of a metric in [0, 1] or of a rating error: an edit
    if not (is_finite_number(value) or (isinstance(value, float) and math.isnan(value))):
        return "a finite number or null"
    # a metric past its range printed and was bolded as the best (1.7000)
    if value < 0:
        return "a number >= 0"
    if metric not in _ERROR_METRICS and value > 1 + 1e-9:  # a ratio's rounding may pass 1
        return "a number in [0, 1]"
    return None


def check_evaluation(result: Any, source: str | Path, *, models: set[str] | None = None) -> None:
    """An evaluation's figures as a benchmark keeps them for a resumed run (a model's,
    or a fold's): ``summary`` (group, model, metric: a mean), ``per_user`` (the same,
    a list of values), ``n_users`` (group: a count), each value of the type and range
    the benchmark writes, and, given ``models``, of those models alone. A damaged or
    edited file had been merged into the report as it was: a null became Python's
    TypeError, an nDCG of 42 a figure."""

    def bad(where: str, expected: str, value: Any) -> DataError:
        return DataError(
            f"expected {expected}, got {value!r:.40} (damaged or edited?)", path=source, field=where
        )

    if not isinstance(result, dict):
        raise bad("result", "an object", result)
    for name in ("summary", "per_user", "n_users"):
        if not isinstance(result.get(name), dict):
            raise bad(name, "an object", result.get(name))
    _check_tables({"summary": result["summary"], "n_users": result["n_users"]}, source)
    for field in ("summary", "per_user"):
        for group, by_model in result[field].items():
            if not isinstance(by_model, dict):
                raise bad(f"{field}.{group}", "an object", by_model)
            # a group may hold none of them: P1's pooled states leave out a model that
            # predicts no ratings (popularity, knn, als)
            if models is not None and not set(by_model) <= models:
                raise bad(f"{field}.{group}", f"the figures of {sorted(models)}", sorted(by_model))
            if field == "summary":
                continue
            for model, metrics in by_model.items():
                if not isinstance(metrics, dict):
                    raise bad(f"per_user.{group}.{model}", "an object", metrics)
                for metric, values in metrics.items():
                    where = f"per_user.{group}.{model}.{metric}"
                    if not isinstance(values, list):
                        raise bad(where, "a list of values", values)
                    for n, value in enumerate(values):
                        expected = _metric_problem(metric, value)
                        if expected:
                            raise bad(f"{where}[{n}]", expected, value)
    user_ids = result.get("user_ids", {})
    if not isinstance(user_ids, dict) or not all(isinstance(v, list) for v in user_ids.values()):
        raise bad("user_ids", "an object of lists of user ids", user_ids)


def _check_tables(record: dict[str, Any], source: str | Path) -> None:
    """The nested tables the report reads, each value of the type the benchmark writes:
    a hand-edited number (a string, an interval of one end) is named by its full path
    (``ci95.10.popularity.ndcg@10``), not met later as Python's wording."""

    def bad(where: str, expected: str, value: Any) -> DataError:
        return DataError(
            f"expected {expected}, got {value!r:.40} (damaged or edited?)", path=source, field=where
        )

    def cells(name: str, depth: int) -> Iterator[tuple[str, Any]]:
        """(dotted path, value) of every leaf ``depth`` objects below ``record[name]``."""
        return leaves(name, record.get(name, {}), depth)

    def leaves(name: str, table: Any, depth: int) -> Iterator[tuple[str, Any]]:
        level: list[tuple[str, Any]] = [(name, table)]
        for _ in range(depth):
            deeper = []
            for where, table in level:
                if not isinstance(table, dict):
                    raise bad(where, "an object", table)
                deeper += [(f"{where}.{key}", value) for key, value in table.items()]
            level = deeper
        return iter(level)

    for name in ("summary", "std"):
        for where, value in cells(name, 3):
            expected = _metric_problem(where.rsplit(".", 1)[-1], value)
            if expected:
                raise bad(where, expected, value)
    for where, value in cells("ci95", 3):
        ends = value if isinstance(value, list) and len(value) == 2 else None
        if ends is None or not all(e is None or is_number(e) for e in ends):
            raise bad(where, "[low, high] of numbers or nulls", value)
        if None not in ends and ends[0] > ends[1]:
            raise bad(where, "[low, high] with low <= high", value)
    lo_hi = record.get("rating_range")
    if isinstance(lo_hi, list) and len(lo_hi) == 2 and lo_hi[0] > lo_hi[1]:
        raise bad("rating_range", "[low, high] with low <= high", lo_hi)
    for name in ("folds", "seeds"):
        if name in record and record[name] < 1:
            raise bad(name, "a whole number >= 1", record[name])
    models = {m for group in record.get("summary", {}).values() for m in group}
    if record.get("protocol") == "p2":
        # every model at every K (P1's states may leave out a model that predicts no
        # ratings): one missing at the first K was left out of every table and curve
        # without a word, at a later K a bare "missing field 'popularity'"
        for k, group in record.get("summary", {}).items():
            for model in sorted(models - set(group)):
                raise bad(f"summary.{k}.{model}", "the model's figures at every K", None)
    for where, model in cells("reference", 1):
        if models and model not in models:  # an empty summary is named where it is read
            raise bad(where, "one of the record's models", model)
    for group, left in (record.get("reference_excluded") or {}).items():
        where = f"reference_excluded.{group}"
        if not isinstance(left, list) or not all(isinstance(m, str) for m in left):
            raise bad(where, "a list of model names", left)
        if record.get("reference", {}).get(group) in left:
            raise bad(where, "models other than the reference", left)
    for n, row in enumerate(record.get("ensemble_weights") or []):
        for where, value in leaves(f"ensemble_weights[{n}]", row, 2):  # bucket, model
            if not (is_number(value) and not math.isinf(value)):
                raise bad(where, "a finite weight", value)
    for n, text in enumerate(record.get("warnings") or []):
        if not isinstance(text, str):
            raise bad(f"warnings[{n}]", "a string", text)
    for where, entry in cells("blind_peers", 1):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("why"), str)
            and isinstance(entry.get("left_out"), bool)
        ):
            raise bad(where, '{"why": text, "left_out": true or false}', entry)
    cleaning = record.get("cleaning") or {}
    for key, kind in (("rows_in", "a count"), ("rows_out", "a count")):
        if key in cleaning and not is_whole(cleaning[key]):
            raise bad(f"cleaning.{key}", kind, cleaning[key])
    for where, value in leaves("cleaning.dropped", cleaning.get("dropped", {}), 1):
        if not is_whole(value):
            raise bad(where, "a count", value)
    for where, value in cells("timings", 1):
        if where == "timings.fit_s":  # a list of folds, each model: seconds
            for n, fold in enumerate(value if isinstance(value, list) else [value]):
                for at, secs in leaves(f"{where}[{n}]", fold, 1):
                    if not is_number(secs):
                        raise bad(at, "seconds (a number)", secs)
        elif value is not None and not is_number(value):
            raise bad(where, "seconds (a number)", value)
    for field in ("n_users", "n_scored"):
        for where, value in cells(field, 1):
            if not is_whole(value) or value < 0:
                raise bad(where, "a whole number >= 0", value)
    for where, comp in cells("significance", 3):
        if not isinstance(comp, dict):
            raise bad(where, "an object", comp)
        for key, check, expected in (
            ("p_holm", is_number, "a number"),
            ("significant", lambda v: isinstance(v, bool), "true or false"),
            ("better", lambda v: isinstance(v, bool), "true or false"),
        ):
            if key not in comp or not check(comp[key]):
                raise bad(f"{where}.{key}", expected, comp.get(key))
        # p_choice: Holm's p times the models the reference was picked from (the legend
        # says so where the record has reference_chosen_from); a record from before the
        # choice was accounted for judged p_holm alone
        judged = "p_choice" if "reference_chosen_from" in record else "p_holm"
        for key in ("p_holm", "p_choice"):
            if (key in comp or key == judged) and not (
                is_number(comp.get(key)) and 0 <= comp[key] <= 1
            ):
                raise bad(f"{where}.{key}", "a p-value in [0, 1]", comp.get(key))
        if judged == "p_choice":
            group = where.split(".")[1]  # a P1 state or a K: never dotted
            n = record["reference_chosen_from"].get(group)
            if not is_whole(n) or n < 1:
                raise bad(f"reference_chosen_from.{group}", "a whole number >= 1", n)
            # a hand-edited p_holm beside the p_choice it once gave
            expect = choice_p(comp["p_holm"], n)
            if not math.isclose(comp["p_choice"], expect, rel_tol=1e-9, abs_tol=1e-300):
                raise bad(f"{where}.p_choice", f"{n} x p_holm = {expect:g}", comp["p_choice"])
        if comp["significant"] != (comp[judged] < 0.05):  # the mark the legend defines
            raise bad(f"{where}.significant", f"{comp[judged] < 0.05} for {judged} "
                      f"{comp[judged]:g}", comp["significant"])  # fmt: skip
    for where, n in cells("reference_chosen_from", 1):
        if not is_whole(n) or n < 1:
            raise bad(where, "a whole number >= 1", n)


# a plot's longest model name: a model of one's own may be named at any length, and a
# 100-character one ran across the next panel (the tables keep the whole name)
LABEL_CHARACTERS = 40


def _label(name: str) -> str:
    """``name`` for a plot, its middle cut where longer than :data:`LABEL_CHARACTERS`
    (both ends kept, where names of one family differ)."""
    if len(name) <= LABEL_CHARACTERS:
        return name
    tail = LABEL_CHARACTERS // 3
    return name[: LABEL_CHARACTERS - tail - 1] + "…" + name[-tail:]


def _bounds(ci: Sequence[float | None] | None) -> tuple[float, float] | None:
    """A CI's (low, high) where both ends exist, else None."""
    if not ci or not all(_defined(end) for end in ci):
        return None
    return float(ci[0]), float(ci[1])  # type: ignore[arg-type]


def _defined(value: float | None) -> bool:
    """A mean that exists: not null (a record's JSON) nor NaN (one still in memory)."""
    return value is not None and not math.isnan(value)


def _fmt(value: float | None, std: float | None = None) -> str:
    if not _defined(value):
        return "—"
    text = f"{value:.4f}"
    if std is not None:  # a std of exactly 0 too: one table mixed "0.0300" and "0.0250 ± 0.0000"
        text += f" ± {std:.4f}"
    return text


def _best(models: dict[str, dict[str, float]], metric: str) -> set[str]:
    """Every model with the best mean: exact ties (peers that all fall back to
    popularity at K = 0) are bolded together, not the first of them alone."""
    vals = {m: v.get(metric, math.nan) for m, v in models.items()}
    vals = {m: x for m, x in vals.items() if _defined(x)}
    if not vals:
        return set()
    # by the figure the table prints: 0.85257199128 and 0.85257199387 both read
    # 0.8526, and bolding one of them alone marked float noise as a win
    shown = {m: float(_fmt(x)) for m, x in vals.items()}
    top = (min if metric in LOWER_IS_BETTER else max)(shown.values())
    return {m for m, x in shown.items() if x == top}


def _sig_note(record: dict[str, Any], group: str, metric: str, model: str) -> str:
    # a record without "significance" is damaged: its absence must not read as "no
    # difference was significant"; a model without a comparison (the reference itself,
    # a ranking model's MAE) is simply blank
    comp = record["significance"].get(group, {}).get(metric, {}).get(model)
    if not comp:
        return ""
    mark = "†" if comp["significant"] and not comp["better"] else ""
    if comp["significant"] and comp["better"]:
        mark = "*"
    n = record.get("reference_chosen_from", {}).get(group, 1)
    return f"{_fmt_p(comp['p_holm'], 0.05 / n)}{mark}"


def _fmt_p(p: float, threshold: float = 0.05) -> str:
    """``p`` to two significant digits, or more where two would cross ``threshold``:
    0.0499 read 0.05* against a legend that marks p < 0.05 (or 0.0083 against a mark
    at 0.05 / 6, which 0.008334 misses). A p below a double's reach is 0.0, and read
    "0", a certainty no test gives: it is written as below 1e-300."""
    if p == 0:
        return "<1e-300"
    for digits in (2, 3, 4, 6):
        text = f"{p:.{digits}g}"
        if (float(text) < threshold) == (p < threshold):
            return text
    return repr(p)


def describe_machine(m: dict[str, Any]) -> str:
    """One line for a record's ``machine`` (:func:`metarec.evaluation.machine.machine_info`);
    fields that older records lack are left out."""
    cpu = f" ({m['cpu']}, {m.get('cpu_capability')})" if m.get("cpu") else ""
    n = m.get("torch_threads")
    threads = f", {n} torch thread{'' if n == 1 else 's'}" if n else ""
    gpu = m["cuda"] if m.get("cuda") else "no GPU"
    return f"{m['cpu_count']} CPUs{cpu}{threads}, torch {m['torch']}, {gpu}"


def _liked(record: dict[str, Any]) -> str:
    """What counted as a liked (relevant) item; records before 2026-12-01 used 4 on 1-5."""
    if "like_threshold" not in record:
        return ""
    lo, hi = record.get("rating_range") or (None, None)
    liked = liked_words(record["like_threshold"], record.get("rating_range"))
    scale = f" on a {lo:g}-{hi:g} scale" if lo is not None and lo != hi else ""
    return f" Liked (relevant): {liked}{scale}."


def _header(record: dict[str, Any]) -> list[str]:
    folds = record.get("folds", 1)
    m = record["machine"]
    title = {
        "p1": "P1 (MeLU protocol: warm, user-cold, item-cold, both-cold)",
        "p2": "P2 (few-shot full-catalogue ranking)",
    }[record["protocol"]]
    seeds = int(record.get("seeds", 1))
    seed = int(record["seed"])
    lines = [
        f"# {title} on {md_text(record['dataset'])}",
        "",
        (
            f"Seeds {seed} to {seed + seeds - 1} (each meta-learning algorithm a seed bag: "
            f"{seeds} fits averaged)"
            if seeds > 1
            else f"Seed {seed}"
        )
        # the population std (numpy's default, dividing by the folds' count), said: a
        # reader taking it for the sample std would widen it by sqrt(n / (n - 1))
        + (
            f", {folds} folds over users (mean ± population std over folds)"
            if folds > 1
            else ", one split"
        )
        + (f"; new items: {record['split_rule']}" if record.get("split_rule") else "")
        + _user_rule(record)
        + (
            "; support: K ratings drawn at random per user (the data has no times that order "
            "its ratings)"
            if record.get("support_order") == "random"
            else ""
        )
        + f". Machine: {describe_machine(m)}"
        + f". Total time {_duration(record['timings']['total_s'])}."
        + _liked(record),
        "",
        f"Reproduce: `{record['command']}`" + _own_models(record),
        "",
        *_cleaning_lines(record),
        *_blind_lines(record),
        *_warning_lines(record),
        "**Bold**: the best mean (on each model that ties for it). "
        + ("`p` columns" if record["protocol"] == "p1" else "`(p …)` in the nDCG@10 cells")
        + ": Holm-corrected paired Wilcoxon p-value of the "
        "reference metarec model against that model, per user; " + _marks_legend(record),
        "",
    ]
    return lines


IN_SAMPLE_NOTE = (
    "In-sample: these are the validation users, whose tasks also chose each network's "
    "early-stopping epoch, the median cuts and the ensemble's weights, so the figures "
    "flatter those models; no tests are run here."
)


def _marks_legend(record: dict[str, Any]) -> str:
    if "reference_chosen_from" not in record:  # before the choice was accounted for
        return "`*` marks a significant (p < 0.05) win of the reference, `†` a significant loss."
    return (
        "the reference is the best metarec model on these same users, picked from N "
        "(given with it), so `*` marks a win of the reference and `†` a loss that stay "
        "significant when p is multiplied by N (p · N < 0.05: Bonferroni for the choice, "
        "which a test of a model named in advance would not need)."
    )


def _reference(record: dict[str, Any], group: str) -> str:
    """The reference model of a state or K, with how many it was picked from."""
    n = record.get("reference_chosen_from", {}).get(group)
    out = record["reference"][group] + ("" if n is None else f", best of {n}")
    left = record.get("reference_excluded", {}).get(group) or []
    if left:  # its weights there are a peer's alone, so its figures are that peer's
        out += "; not " + ", ".join(left) + ", a peer alone for these users"
    return out


def dropped_words(cleaning: dict[str, Any]) -> str:
    """What a record's ``cleaning`` (:meth:`CleaningReport.to_dict`) dropped, in one
    sentence: the ratings kept of those read, then each reason with its count."""
    from metarec.data.schema import ITEMS_TABLE

    reasons = [
        f"{counted(n, 'item')} ({reason.removeprefix(ITEMS_TABLE)})"
        if reason.startswith(ITEMS_TABLE)
        else f"{counted(n, 'rating')} ({reason})"
        for reason, n in cleaning.get("dropped", {}).items()
    ]
    rows_in, rows_out = cleaning.get("rows_in", 0), cleaning.get("rows_out", 0)
    return (
        f"{rows_out:,} of {rows_in:,} ratings kept; dropped "
        + ", ".join(reasons)
        + " (`metarec data describe` with the same data options lists examples)"
    )


def _cleaning_lines(record: dict[str, Any]) -> list[str]:
    """What cleaning dropped before the run: the figures are of the data kept."""
    cleaning = record.get("cleaning")
    if not cleaning:
        return []
    return [f"**Data cleaned before the run.** {dropped_words(cleaning)}.", ""]


def _blind_lines(record: dict[str, Any]) -> list[str]:
    """The peers that score every item alike on this data (:mod:`blind_peers`)."""
    note = blind_note(record.get("blind_peers") or {})
    return [f"**Peers blind on this data.** {note}", ""] if note else []


def md_text(text: str) -> str:
    """``text`` to read as written in Markdown: a data set named ``a-b-_c_`` set part
    of a report's heading in italics."""
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", text)


def _duration(seconds: float) -> str:
    """A run's time in minutes, or seconds under one ("0.0 min" for a small run's 2 s)."""
    if seconds < 0.5:
        return "under 1 s"
    return f"{seconds:.0f} s" if seconds < 59.5 else f"{seconds / 60:.1f} min"


def _warning_lines(record: dict[str, Any]) -> list[str]:
    """What the run warned of while it worked: rating cuts not fitted (so a "median"
    row is the mean row), an ensemble's support-size buckets copying a smaller one's
    weights, too few test users; said on stderr alone, the tables read as if none held."""
    said = record.get("warnings") or []
    if not said:
        return []
    return ["**Warnings while it ran.**", "", *(f"- {text}" for text in _by_fold(said)), ""]


FOLD_PREFIX = "fold "  # a cross-validation's warning, as the record keeps it: "fold 2: ..."
_FOLD_WARNING = re.compile(rf"{FOLD_PREFIX}(\d+): (.*)", re.S)


def _by_fold(said: list[str]) -> list[str]:
    """One line a warning, naming the folds that gave it ("folds 0, 2 and 4: ..."): the
    record keeps it once a fold, and five copies of one text buried the others."""
    folds: dict[str, list[int]] = {}
    lines: list[tuple[bool, str]] = []  # (said of folds, text), in the record's order
    for text in map(str, said):
        found = _FOLD_WARNING.fullmatch(text)
        if found is None:
            lines.append((False, text))
            continue
        body = found.group(2)
        if body not in folds:
            folds[body] = []
            lines.append((True, body))  # placed where its first fold said it
        folds[body].append(int(found.group(1)))
    out = []
    for of_folds, text in lines:
        if not of_folds:
            out.append(text)
            continue
        names = [str(n) for n in sorted(set(folds[text]))]
        which = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        out.append(f"fold{'s' if len(names) > 1 else ''} {which}: {text}")
    return out


def _user_rule(record: dict[str, Any]) -> str:
    """A split file's own rule for drawing users, where it is not the protocol's: its
    figures are over other users than the protocol's would be."""
    rule = record.get("user_rule")
    if not rule:
        return ""
    said = ", ".join(f"{name} {value}" for name, value in rule.items())
    return f"; users drawn by the split files' own rule ({said}), not the protocol's"


def _own_models(record: dict[str, Any]) -> str:
    """Which code gave the rows of models of one's own: the command reruns whatever
    their files hold by then."""
    kept = record.get("own_models")
    if not isinstance(kept, list) or not kept:
        return ""
    said = "; ".join(
        f"`{k.get('name')}`: {', '.join(map(str, k.get('code', [])))} (source "
        f"{k.get('source')}, settings {k.get('settings')}), run from `{k.get('folder')}`"
        for k in kept
        if isinstance(k, dict)
    )
    return f" — models of one's own as run: {said}"


def _std(record: dict[str, Any]) -> dict[str, Any]:
    """The per-fold spread: required of a cross-validated record, whose header
    promises "mean ± std"."""
    return record["std"] if record.get("folds", 1) > 1 else {}


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    if not record["summary"]:
        raise ValueError("its summary is empty: no state or support size was evaluated")
    return dict(record["summary"])


def _p1_markdown(record: dict[str, Any]) -> list[str]:
    lines = _header(record)
    spread = _std(record)
    # a state of no test user has no table: say so, or the report reads as if the
    # protocol had no such state (own data without new items, say)
    empty = [st for st, n in record["n_users"].items() if not n]
    if empty:
        lines += [f"Not evaluated, no test user in the state: {', '.join(empty)}.", ""]
    for state, models in _summary(record).items():
        ref = record["reference"][state]
        std = spread.get(state, {})
        tested = bool(record["significance"].get(state))
        lines += [
            f"## {state} ({record['n_users'][state]} users; "
            + (f"reference: {_reference(record, state)})" if tested else "no tests)"),
            "",
            *(() if tested or state not in P1_IN_SAMPLE else (IN_SAMPLE_NOTE, "")),
            "| model | " + " | ".join(P1_COLUMNS) + " | p (mae) | p (ndcg@3) |",
            "|---" * (len(P1_COLUMNS) + 3) + "|",
        ]
        best = {c: _best(models, c) for c in P1_COLUMNS}
        for name, vals in models.items():
            cells = []
            for c in P1_COLUMNS:
                cell = _fmt(vals.get(c), std.get(name, {}).get(c) if record["folds"] > 1 else None)
                cells.append(f"**{cell}**" if name in best[c] else cell)
            label = f"{name} (ref)" if name == ref and tested else name
            lines.append(
                f"| {label} | "
                + " | ".join(cells)
                + "".join(
                    f" | {_sig_note(record, state, c, name) if _defined(vals.get(c)) else ''}"
                    for c in ("mae", "ndcg@3")
                )
                + " |"
            )
        lines.append("")
    return lines


def _p2_markdown(record: dict[str, Any]) -> list[str]:
    lines = _header(record)
    shots = list(_summary(record))
    # how many users each figure averages: what a p-value or a tie rests on
    counts = {k: record["n_users"].get(k) for k in shots}
    pooled = f" (the {record['folds']} folds' together)" if record.get("folds", 1) > 1 else ""
    if len(set(counts.values())) == 1 and None not in counts.values():
        lines += [f"Test users: {next(iter(counts.values())):,} at every K{pooled}.", ""]
    elif None not in counts.values():  # a record that does not say gets no line
        each = ", ".join(f"K={k}: {n:,}" for k, n in counts.items())
        lines += [f"Test users{pooled}: {each}.", ""]
    scored = {k: record.get("n_scored", {}).get(k) for k in shots}
    fewer = {k: n for k, n in scored.items() if n is not None and n != counts.get(k)}
    if fewer:  # users without a liked item after their support: no ranking to score
        each = ", ".join(f"K={k}: {n:,}" for k, n in fewer.items())
        lines += [
            f"Means and tests rest on the test users with a liked item after their support "
            f"({each}); the others have no ranking metric.",
            "",
        ]
    models = list(record["summary"][shots[0]])
    spread = _std(record)
    for metric in P2_COLUMNS:
        lines += [
            f"## {metric} by support size K",
            "",
            "| model | " + " | ".join(f"K={k}" for k in shots) + " |",
            "|---" * (len(shots) + 1) + "|",
        ]
        best = {k: _best(record["summary"][k], metric) for k in shots}
        for name in models:
            cells = []
            for k in shots:
                vals = record["summary"][k].get(name, {})
                sd = spread.get(k, {}).get(name, {}).get(metric)
                cell = _fmt(vals.get(metric), sd if record["folds"] > 1 else None)
                if metric == "ndcg@10" and _defined(vals.get(metric)):  # no test of "—"
                    note = _sig_note(record, k, metric, name)
                    cell += f" (p {note})" if note else ""
                cells.append(f"**{cell}**" if name in best[k] else cell)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        if metric == "ndcg@10":
            lines += [
                "Reference per K: " + ", ".join(f"K={k}: {_reference(record, k)}" for k in shots),
                "",
            ]
    return lines


def _ab_choice(ab: dict[str, Any]) -> str:
    """How the A/B test's arm B was chosen; a record without ``chosen_on`` is from
    before B was chosen on the validation users."""
    on = ab.get("chosen_on", "test users")
    if on == "the only candidate":
        return "B is the run's only single metarec model, fixed before the test."
    if on == "validation users":
        figures = ", ".join(f"{m} {v:.4f}" for m, v in ab.get("choice", {}).items())
        users = f"{ab['choice_users']:,} " if "choice_users" in ab else ""
        return (
            f"B is the metarec model with the best nDCG@10 at K = {ab['support']} on the "
            f"{users}validation users ({figures}), not on these test users; the ensemble, whose "
            "weights were learned on the validation users, is not a candidate."
        )
    return (
        f"B is the metarec model with the best nDCG@10 at K = {ab['support']} on these "
        "same test users, chosen after seeing them, so the test leans toward B; "
        "`metarec abtest RUN_A RUN_B` tests two models fixed in advance."
    )


def render_markdown(record: dict[str, Any]) -> str:
    if record.get("benchmark") == "speed":
        from metarec.evaluation.speed import speed_markdown  # speed.py imports this module

        return speed_markdown(record)
    lines = _p1_markdown(record) if record["protocol"] == "p1" else _p2_markdown(record)
    weights = record.get("ensemble_weights") or []
    # with --folds the weights and the A/B test are the first fold's alone (the JSON has
    # each fold's weights): said so, not shown as if they covered every fold's users
    folds = record.get("folds") or 1
    first = is_whole(folds) and folds > 1
    if weights and weights[0]:
        whose = "the first fold's, " if first else ""
        lines += [
            f"## Ensemble weights ({whose}learned on validation users, by support size)",
            "",
        ]
        members = list(next(iter(weights[0].values())))
        lines += [
            "| bucket | " + " | ".join(members) + " |",
            "|---" * (len(members) + 1) + "|",
        ]
        for bucket, row in weights[0].items():
            lines.append(f"| {bucket} | " + " | ".join(f"{row[m]:.2f}" for m in members) + " |")
        lines.append("")
    ab = record.get("abtest")
    if not ab and record.get("abtest_not_run"):
        lines += ["## Offline A/B test (P4)", "", f"Not run: {record['abtest_not_run']}.", ""]
    if ab and ab.get("replay"):
        rp, il = ab["replay"], ab.get("interleave") or {}
        a, b = rp["arms"]["A"], rp["arms"]["B"]

        def num(x: float | None, f: str = ".3f") -> str:
            return "—" if x is None else format(x, f)

        lines += [
            f"## Offline A/B test (P4): A = {ab['A']}, B = {ab['B']}, "
            f"support K = {ab['support']}, top {ab['k']}"
            + (f", the first fold's {a['users'] + b['users']} test users" if first else ""),
            "",
            "Success: at least one of the top-k items "
            + (
                ab.get("liked")
                or liked_words(record.get("like_threshold", 4), record.get("rating_range"))
            )
            + (
                # the support was drawn at random, so nothing comes "after" it
                " among the user's other ratings (the support drawn at random: the data "
                "has no times). "
                if record.get("support_order") == "random"
                else " after the support period. "
            )
            + _ab_choice(ab),
            "",
            "| arm | users | success rate | 95 % CI | hits per k |",
            "|---|---|---|---|---|",
            f"| A ({ab['A']}) | {a['users']} | {num(a['rate'])} | "
            f"{num(a['ci'][0])}–{num(a['ci'][1])} | {num(a['hits_per_k'])} |",
            f"| B ({ab['B']}) | {b['users']} | {num(b['rate'])} | "
            f"{num(b['ci'][0])}–{num(b['ci'][1])} | {num(b['hits_per_k'])} |",
            "",
            f"Lift B/A − 1: {num(rp['lift'], '+.1%')} (95 % CI {num(rp['lift_ci'][0], '+.1%')} "
            f"to {num(rp['lift_ci'][1], '+.1%')}), p = {num(rp['p'], '.3g')} "
            f"({rp['test']}"
            + (f"; Fisher's exact p = {num(rp['p_exact'], '.3g')}" if "p_exact" in rp else "")
            + "); users per arm for 80 % power: "
            f"{rp.get('users_per_arm_80_note') or num(rp['users_per_arm_80'], ',.0f')}.",
            "",
        ]
        if il:
            lines += [
                f"Team-draft interleaving over {il['users']} users: A wins {il['wins_a']}, "
                f"B wins {il['wins_b']}, ties {il['ties']}; Δ = {num(il['delta'], '+.3f')}, "
                f"p = {num(il['p'], '.3g')} (sign test).",
                "",
            ]
    fits = record["timings"]["fit_s"][0]
    lines.append("Fit time (s, first fold): " + ", ".join(f"{k} {v:.0f}" for k, v in fits.items()))
    return "\n".join(lines) + "\n"


def plot(record: dict[str, Any], stem: Path) -> list[Path]:
    """Write the PNG plots of :func:`render_plots`; every one is drawn before the first
    is written."""
    drawn = render_plots(record, stem)
    for path, png in drawn.items():
        write_bytes_atomic(path, png)
    return list(drawn)


def render_plots(record: dict[str, Any], stem: Path) -> dict[Path, bytes]:
    """PNG plots by path: P2 metric-vs-K curves; P1 per-state means with 95 % CIs; the
    P4 A/B test of the run, when it has one. The speed benchmark has none."""
    # a name in a script the plotting font lacks (日本語の書籍) drew boxes, with a
    # warning per glyph and per draw (eight lines of them): said once, here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = _render_plots(record, stem)
    missing = set()
    for w in caught:
        found = re.match(r"Glyph (\d+) .*missing from font", str(w.message))
        if found:
            missing.add(chr(int(found.group(1))))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:
        warnings.warn(
            f"plots: the font has no {', '.join(sorted(missing)[:5])}"
            + (f" and {len(missing) - 5} more characters" if len(missing) > 5 else "")
            + ", drawn as boxes in the plots' titles; the Markdown has them",
            UserWarning,
            stacklevel=2,
        )
    return written


def _render_plots(record: dict[str, Any], stem: Path) -> dict[Path, bytes]:
    if record.get("benchmark") == "speed":
        return {}
    plt = pyplot()

    written: dict[Path, bytes] = {}
    ab = record.get("abtest")
    if ab and ab.get("replay"):
        # the support's order is the record's, beside the test, which abtest_png reads
        timed = {"support_order": record.get("support_order"), **ab}
        written[stem.with_name(stem.name + "-abtest.png")] = abtest_png(timed)
    if record["protocol"] == "p2":
        shots = list(record["summary"])
        xs = [int(k) for k in shots]
        names = list(record["summary"][shots[0]])
        # one colour per model (the default ten-colour cycle left 14-model runs with
        # pairs told apart by line style alone): metarec's models take tab20's strong
        # colours, peers (dashed) its pale ones
        palette = plt.get_cmap("tab20")
        ours = [n for n in names if n.startswith("metarec-")]
        theirs = [n for n in names if not n.startswith("metarec-")]
        colour = {n: palette((2 * i) % 20) for i, n in enumerate(ours)}
        # peers first take the strong hues no metarec model has, then pale ones: the
        # i-th peer in the pale shade of the i-th metarec model's hue made pairs that
        # read as one model (transfer and the ensemble, both pink)
        free = list(range(len(ours), 10))
        for j, n in enumerate(theirs):
            colour[n] = (
                palette(2 * free[j]) if j < len(free) else palette(2 * ((j - len(free)) % 10) + 1)
            )
        lo, hi = record.get("rating_range") or (0.0, 1.0)
        seen = "interactions" if lo == hi else "ratings"
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
        for ax, metric in zip(axes, ("ndcg@10", "recall@10"), strict=True):
            for name in names:
                ys = [record["summary"][k][name][metric] for k in shots]
                style = "-o" if name.startswith("metarec-") else "--."
                ax.plot(
                    xs,
                    ys,
                    style,
                    label=_label(name),
                    color=colour[name],
                    linewidth=2 if "ensemble" in name else 1.2,
                    # a peer's dashes over metarec's lines: one that ties a metarec model
                    # (popularity and a network at K = 0) was hidden under it
                    zorder=3 if not name.startswith("metarec-") else 2,
                )
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_xlabel(f"support size K ({seen} seen)")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        # beside the panels, not over the curves at small K
        axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle(plot_title(record))
        fig.tight_layout()
        written[stem.with_name(stem.name + "-curves.png")] = _png(fig)
    else:
        states = list(record["summary"])
        for metric in P1_PLOT_METRICS:
            # four panels to a row: six states in one row are too narrow to read
            cols = min(4, len(states))
            rows = -(-len(states) // cols)
            fig, grid = plt.subplots(rows, cols, figsize=(4 * cols, 4.2 * rows), squeeze=False)
            axes = list(grid.flat)
            for ax in axes[len(states) :]:
                ax.set_visible(False)
            for ax, state in zip(axes, states, strict=False):
                models = [m for m, v in record["summary"][state].items() if _defined(v.get(metric))]
                means = [record["summary"][state][m][metric] for m in models]
                # a bound that is null or NaN (bootstrap_ci of one user's value) draws no
                # bar: it set the axis limits to NaN, and no file of the run was written
                cis = [_bounds(record["ci95"][state].get(m, {}).get(metric)) for m in models]
                err = [
                    [mu - ci[0] if ci else 0 for mu, ci in zip(means, cis, strict=True)],
                    [ci[1] - mu if ci else 0 for mu, ci in zip(means, cis, strict=True)],
                ]
                # points with CIs, not bars: the axis starts near the data so that the
                # CIs are readable, and bars from there would exaggerate the gaps
                for i, (m, mu) in enumerate(zip(models, means, strict=True)):
                    ax.errorbar(
                        mu,
                        i,
                        xerr=[[err[0][i]], [err[1][i]]],
                        fmt="o",
                        color="tab:blue" if m.startswith("metarec-") else "tab:gray",
                        capsize=3,
                    )
                ax.set_yticks(range(len(models)), [_label(m) for m in models])
                ax.invert_yaxis()  # the table's order, top to bottom
                lo = min(c[0] for c in cis if c) if any(cis) else min(means)
                hi = max(c[1] for c in cis if c) if any(cis) else max(means)
                pad = (hi - lo) * 0.15 + 1e-6
                ax.set_xlim(lo - pad, hi + pad)
                better = "lower" if metric in LOWER_IS_BETTER else "higher"
                ax.set_xlabel(f"{metric} ({better} is better)")
                ax.set_title(f"{state} ({metric})")
                ax.tick_params(axis="y", labelsize=7)
                ax.grid(axis="x", alpha=0.3)
            fig.suptitle(plot_title(record, metric))
            fig.tight_layout()
            written[stem.with_name(stem.name + f"-{metric.replace('@', '')}.png")] = _png(fig)
    return written


def plot_title(record: dict[str, Any], metric: str = "ndcg@10") -> str:
    """The title of a record's P1 plot of ``metric``, or of its P2 curves. A k-fold
    record's says so, and what its points and intervals are: a plot shown alone must
    not pass for one split's."""
    folds = record.get("folds") or 1
    over, mean = (f" over {folds} folds", "mean of the folds' ") if folds > 1 else ("", "")
    if record["protocol"] == "p2":
        return f"P2 on {record['dataset']}{over}: {mean}nDCG@10 and recall@10 by support size"
    pooled = " over the pooled users" if folds > 1 else ""
    return (
        f"P1 on {record['dataset']}{over}: {mean or 'mean '}{metric} per model "
        f"with 95 % bootstrap CIs{pooled}"
    )


def pyplot() -> Any:
    """``matplotlib.pyplot`` drawing to files (Agg). A ``MPLBACKEND`` matplotlib cannot
    use (a notebook's inline backend in a shell) is a ConfigError naming it: matplotlib's
    ValueError came from its import, after the work, and inside a record's rendering it
    was blamed on the record. Commands that draw call it before their work too."""
    import os

    try:
        import matplotlib
    except ValueError as exc:
        raise ConfigError(
            f"MPLBACKEND={os.environ.get('MPLBACKEND', '')!r}: matplotlib cannot use it "
            f"({exc}); unset it, or set MPLBACKEND=Agg, to draw the plots"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def abtest_png(ab: dict[str, Any]) -> bytes:
    """A P4 report (with its arms' names as ``A`` and ``B``) as a PNG: replay success
    per arm with Wilson 95 % CIs, and the interleaving verdicts when it has them."""
    plt = pyplot()
    rp, il = ab["replay"], ab.get("interleave")
    names = {"A": f"A: {_label(ab['A'])}", "B": f"B: {_label(ab['B'])}"}
    fig, axes = plt.subplots(1, 2 if il else 1, figsize=(11 if il else 6, 3.6), squeeze=False)
    ax = axes[0][0]
    arms = [rp["arms"][a] for a in ("A", "B")]
    rates = [a["rate"] if a["rate"] is not None else float("nan") for a in arms]
    err = [
        [r - a["ci"][0] if a["ci"][0] is not None else 0 for r, a in zip(rates, arms, strict=True)],
        [a["ci"][1] - r if a["ci"][1] is not None else 0 for r, a in zip(rates, arms, strict=True)],
    ]
    ax.barh([names["A"], names["B"]], rates, xerr=err, color=["tab:gray", "tab:blue"], capsize=3)
    ax.set_xlim(0, 1)
    liked = ab.get("liked") or liked_words(ab["threshold"], None)
    # a support drawn at random (no times in the data) has no "later"
    later = "outside the support" if ab.get("support_order") == "random" else "later"
    ax.set_xlabel(f"success rate (a top-{ab['k']} item {liked} {later})")
    lift = rp.get("lift")
    ax.set_title(
        f"replay, {arms[0]['users']} + {arms[1]['users']} users: lift "
        + ("n/a" if lift is None else f"{lift:+.1%}")
        + ("" if rp.get("p") is None else f", p = {rp['p']:.3g}"),
        fontsize=9,
    )
    ax.grid(axis="x", alpha=0.3)
    if il:
        ax = axes[0][1]
        counts = [il["wins_a"], il["ties"], il["wins_b"]]
        ax.barh(["A wins", "ties", "B wins"], counts, color=["tab:gray", "tab:olive", "tab:blue"])
        ax.set_xlabel("users")
        p = il.get("p")
        ax.set_title(
            f"team-draft interleaving, {il['users']} users"
            + ("" if p is None else f": p = {p:.3g}"),
            fontsize=9,
        )
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        f"P4 offline A/B test on {ab.get('dataset') or 'the data'}: support K = {ab['support']}"
    )
    fig.tight_layout()
    return _png(fig)


def _png(fig: Any) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(
    record: dict[str, Any],
    stem: Path,
    *,
    plots: bool = True,
    save_record: bool = False,
    extra: Mapping[Path, bytes] | None = None,
) -> list[Path]:
    """Write ``stem.md`` and (with ``plots``) ``stem-*.png``, and remove the plots of
    ``stem`` this report does not draw; ``save_record``: also ``stem.json``, last;
    ``extra``: other files that belong with the record (a run's split files), written
    before it.

    Everything is rendered before the first file is written, so a record that fails to
    render (damaged, edited, a bug) leaves the previous report as it was."""
    stem = Path(stem)
    md = stem.with_name(stem.name + ".md")
    files = render_plots(record, stem) if plots else {}
    files[md] = render_markdown(record).encode()
    files.update(extra or {})
    saved = stem.with_name(stem.name + ".json")
    # strict JSON: a peer's undefined mean (popularity has no MAE) is null, as every
    # other reader than Python's takes it (JSON.parse refused NaN)
    record_json = json_bytes(jsonable(record), strict=True) if save_record else None
    # every file goes into one folder, so one that can take the first takes them all;
    # but a folder where a file goes was found after the plots before it were written
    blocked = [p for p in (*files, *([saved] if save_record else [])) if p.is_dir()]
    if blocked:
        raise ConfigError(f"{blocked[0]}: is a folder; the report writes a file of that name")
    for path, data in files.items():
        write_bytes_atomic(path, data)
    protocol = None if record.get("benchmark") == "speed" else record.get("protocol")
    for path in plot_paths(protocol, stem):
        # an earlier run's plot (drawn before --no-plots, or of an A/B test this run has
        # not) would stand beside this report as if it showed it
        if path not in files and (path.is_file() or path.is_symlink()):
            path.unlink(missing_ok=True)
    if record_json is not None:
        # last: a new record is never beside an older report
        write_bytes_atomic(saved, record_json)
        files[saved] = record_json
    return [md, *(p for p in files if p != md)]

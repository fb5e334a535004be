"""The committed results and the README agree with each other.

The README's result tables are copied from ``benchmarks/results/*.json`` (the
issue's acceptance: "the figures in the README match the committed result
files"), and every committed benchmark Markdown file is what ``metarec report``
renders from its JSON. These tests read the files as committed, so a rerun that
replaces a JSON without updating the README, or a hand edit of a table, fails
here. No data set and no training is needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from metarec.evaluation.report import plot_title, render_markdown

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
README = (ROOT / "README.md").read_text(encoding="utf-8")

# README rows that are not in any result file: the paper's own figures
NOT_FROM_FILES = {"MeLU-5 as published (its own split)"}
# README row labels → result-file model names
LABELS = {
    "bias model": "bias",
    "bias": "bias",
    "bias model + median cuts": "bias-median",
    "popularity": "popularity",
    "knn": "knn",
    "content kNN": "knn",
    "als": "als",
    "ALS (implicit, fold-in)": "als",
    "MeLU-1, faithful, same split": "melu-1",
    "MeLU-5, faithful, same split": "melu-5",
    "MeLU-1, faithful": "melu-1",
    "MeLU-5, faithful": "melu-5",
    "transfer (no meta-learning)": "transfer",
    "transfer": "transfer",
    "metarec MAML": "metarec-maml",
    "metarec first-order MAML": "metarec-fomaml",
    "metarec Reptile": "metarec-reptile",
    "metarec Meta-SGD": "metarec-metasgd",
    "metarec episodic": "metarec-episodic",
    "metarec stacked": "metarec-stacked",
    "metarec ensemble": "metarec-ensemble",
    "metarec ensemble (popularity, first-order MAML, episodic, stacked)": "metarec-ensemble",
}
STATES = ("user_cold", "item_cold", "both_cold")


def _table_after(heading: str, nth: int = 0) -> list[list[str]]:
    """Body rows of the ``nth`` Markdown table under ``heading`` (a README line)."""
    lines = README.splitlines()
    start = lines.index(heading)
    tables: list[list[list[str]]] = []
    rows: list[list[str]] | None = None
    for line in lines[start + 1 :]:
        if line.startswith("#") and line.count("#") <= heading.count("#") and tables:
            break
        if line.startswith("|"):
            if rows is None:
                rows = []
                tables.append(rows)
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        else:
            rows = None
    return tables[nth][1:]  # without the header row


def _cell(text: str) -> tuple[str, str, bool]:
    """'**0.4751 ± 0.0186**' → ('0.4751 ± 0.0186', marks, bold)."""
    bold = text.startswith("**")
    text = text.strip("*") if bold else text
    marks = "".join(ch for ch in text[-2:] if ch in "*†")
    return text.rstrip("*†").strip(), marks, bold


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def _marks(sig: dict[str, Any] | None) -> str:
    """The mark a significance entry earns: ``*`` a significant win of the reference,
    ``†`` a significant loss, nothing otherwise (the reference itself has no entry)."""
    if not sig or not sig["significant"]:
        return ""
    return "*" if sig["better"] else "†"


def _model(label: str) -> str:
    """A README row's model: a display name, or the result file's own name."""
    model = LABELS.get(label, label)
    assert re.fullmatch(r"[a-z0-9-]+", model), f"README row {label!r}: no model mapped to it"
    return model


def _check_cell(
    where: str, cell: str, mean: float, std: float | None, sig: dict[str, Any] | None
) -> None:
    number, marks, _ = _cell(cell)
    expected = f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"
    assert number == expected, f"{where}: README has {number}, the result file {expected}"
    assert marks == _marks(sig), f"{where}: README marks {marks!r}, the file {_marks(sig)!r}"


def _check_bold(
    where: str, rows: list[list[str]], column: int, lower: bool, reference: str | None = None
) -> None:
    """Bold marks one row, a best metarec model of the column; where the file names the
    model the marks compare against (``reference``), that one."""
    values = {
        r[0]: float(_cell(r[column])[0].split(" ")[0])
        for r in rows
        if r[0] not in NOT_FROM_FILES and _model(r[0]).startswith("metarec-")
    }
    best = min(values.values()) if lower else max(values.values())
    bold = [r[0] for r in rows if _cell(r[column])[2]]
    assert len(bold) == 1, f"{where}: bold should mark one row, not {bold}"
    assert values.get(bold[0]) == best, f"{where}: bold {bold[0]!r} is not a best metarec model"
    if reference is not None:
        assert _model(bold[0]) == reference, f"{where}: bold should mark {reference}"


@pytest.mark.parametrize(
    ("heading", "file", "metrics"),
    [
        (
            "### P1 on MovieLens 1M (MeLU protocol: rating prediction for new users and new items)",
            "p1-ml-1m.json",
            ("mae", "ndcg@3"),
        ),
        ("### P3: 5-fold cross-validation of P1 on MovieLens 1M", "p1-ml-1m-5fold-seeds3.json",
         ("mae",)),
    ],
)  # fmt: skip
def test_readme_p1_tables_match_result_files(heading: str, file: str, metrics: tuple[str]) -> None:
    record = _load(file)
    rows = _table_after(heading)
    std = record.get("std") if record.get("folds", 1) > 1 else None
    assert {r[0] for r in rows} - NOT_FROM_FILES, "empty table"
    for row in rows:
        if row[0] in NOT_FROM_FILES:
            continue
        model = _model(row[0])
        for i, (state, metric) in enumerate((s, m) for s in STATES for m in metrics):
            where = f"{file} {row[0]} {state} {metric}"
            _check_cell(
                where,
                row[1 + i],
                record["summary"][state][model][metric],
                std[state][model][metric] if std else None,
                record["significance"][state][metric].get(model),
            )
    for i, (_, metric) in enumerate((s, m) for s in STATES for m in metrics):
        _check_bold(f"{file} column {i + 1}", rows, 1 + i, lower=metric == "mae")


@pytest.mark.parametrize(
    ("heading", "file"),
    [
        ("### P2 on MovieLens 100K (few-shot full-catalogue ranking)", "p2-ml-100k.json"),
        ("#### P2 over 5 folds", "p2-ml-100k-5fold.json"),
    ],
)
def test_readme_p2_tables_match_result_files(heading: str, file: str) -> None:
    record = _load(file)
    rows = _table_after(heading)
    shots = [str(k) for k in record["summary"]]
    std = record.get("std") if record.get("folds", 1) > 1 else None
    assert len(rows) >= 5
    for row in rows:
        model = _model(row[0])
        assert len(row) == 1 + len(shots), f"{file} {row[0]}: one column per K"
        for i, k in enumerate(shots):
            _check_cell(
                f"{file} {row[0]} K={k}",
                row[1 + i],
                record["summary"][k][model]["ndcg@10"],
                std[k][model]["ndcg@10"] if std else None,
                record["significance"][k]["ndcg@10"].get(model),
            )
    for i, k in enumerate(shots):
        _check_bold(f"{file} K={k}", rows, 1 + i, lower=False, reference=record["reference"][k])


def _numbers(text: str) -> list[str]:
    """The figures in a table row's value cells, as written (thousands commas dropped)."""
    return [n.replace(",", "") for n in re.findall(r"\d[\d,]*\.?\d*", text)]


def test_readme_speed_tables_match_speed_json() -> None:
    """Both speed tables carry the figures ``speed.md`` renders from ``speed.json``, in
    its order (the README words some row labels differently)."""
    rendered = render_markdown(_load("speed.json"))
    ours = [r for r in rendered.splitlines() if r.startswith("| ") and "---" not in r]
    readme = _table_after("### Speed, beside MeLU in the same process (ml-100k)", 0)
    readme += _table_after("### Speed, beside MeLU in the same process (ml-100k)", 1)
    ours = [r for r in ours if not r.startswith(("| support", "| measure"))]
    assert len(readme) == len(ours), "the README's speed tables have the rendered rows"
    for mine, theirs in zip(readme, ours, strict=True):
        cells = theirs.strip().strip("|").split("|")
        expected = _numbers("|".join(cells[1:]))
        got = _numbers("|".join(c.strip("*") for c in mine[1:]))
        assert got == expected, f"speed row {mine[0]!r}: README {got}, speed.json {expected}"


def _latency_records(workers: int) -> list[dict[str, Any]]:
    paths = [*RESULTS.glob("service-latency*.json"), *RESULTS.glob("service-latency*/*/*.json")]
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(paths)]
    return [r for r in records if (r.get("server_workers") or 1) == workers]


def test_readme_service_latency_table_matches_result_files() -> None:
    """One worker: a run per offered rate; two: every run's figures in one cell, in
    order of cold p99 (as the README says)."""
    rows = _table_after("### Service latency (cold users with 10 ratings, ml-100k, loopback)")
    two = sorted(_latency_records(2), key=lambda r: r["scenarios"]["cold"]["latency_ms"]["p99"])
    one = {r["scenarios"]["cold"]["target_requests_per_s"]: r for r in _latency_records(1)}
    assert len(two) == 4 and set(one) == {80.0, 150.0, 200.0}
    assert len(rows) == 2 + 2 * len(one)
    for row in rows:
        workers, scenario, offered = int(row[0]), row[1], float(row[2])
        runs = two if workers == 2 else [one[offered]]
        figures = [r["scenarios"][scenario] for r in runs]
        expected = [
            [f["achieved_requests_per_s"] for f in figures],
            [f["latency_ms"]["p50"] for f in figures],
            [f["latency_ms"]["p99"] for f in figures],
            [1e3 * f["server_cpu_s"] / f["ok"] for f in figures],
        ]
        for cell, want in zip(row[3:7], expected, strict=True):
            got = [float(n) for n in _numbers(cell)]
            assert len(got) == len(want), f"{row[:3]}: {cell!r}"
            for g, w in zip(got, want, strict=True):  # as printed: 0.1, or 3 figures
                assert abs(g - w) <= max(0.051, 0.005 * w), f"{row[:3]}: README {g}, file {w}"


def _benchmark_records() -> list[Path]:
    out = []
    for path in sorted(RESULTS.rglob("*.json")):
        # a benchmark's kept progress (".p2-ml-100k.partial/", git-ignored) is not a result
        hidden = any(part.startswith(".") for part in path.relative_to(RESULTS).parts)
        if path.name.endswith("-split.json") or hidden:
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        if "protocol" in record or record.get("benchmark") == "speed":
            out.append(path)
    return out


@pytest.mark.parametrize(
    "path", _benchmark_records(), ids=lambda p: p.relative_to(RESULTS).with_suffix("").as_posix()
)
def test_committed_markdown_is_rendered_from_its_json(path: Path) -> None:
    record = json.loads(path.read_text(encoding="utf-8"))
    rendered = render_markdown(record)
    committed = path.with_suffix(".md").read_text(encoding="utf-8")
    assert committed.rstrip() == rendered.rstrip(), (
        f"{path.with_suffix('.md').name} is not what `metarec report {path.name}` renders; "
        "rewrite it with `metarec report --write`"
    )


@pytest.mark.parametrize(
    "path", _benchmark_records(), ids=lambda p: p.relative_to(RESULTS).with_suffix("").as_posix()
)
def test_committed_records_are_strict_json(path: Path) -> None:
    # NaN for a peer's undefined mean: JSON.parse and other strict readers refused it
    def refuse(constant: str) -> None:
        raise ValueError(f"{path.name} holds {constant}, which strict JSON has not")

    json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_a_written_record_is_strict_json(tmp_path: Path) -> None:
    from metarec.evaluation.report import write_report

    record = json.loads((RESULTS / "p1-ml-1m.json").read_text())
    record["summary"]["warm"]["popularity"]["mae"] = float("nan")
    write_report(record, tmp_path / "p1", plots=False, save_record=True)
    saved = json.loads((tmp_path / "p1.json").read_text(), parse_constant=lambda c: 1 / 0)
    assert saved["summary"]["warm"]["popularity"]["mae"] is None


def test_a_p1_state_without_test_users_is_named_not_left_out() -> None:
    """Own data without new items has no item-cold user: the report had no such section
    and read as if the protocol had no such state."""
    record = json.loads((RESULTS / "p1-ml-1m.json").read_text(encoding="utf-8"))
    assert "Not evaluated" not in render_markdown(record)
    del record["summary"]["both_cold"], record["summary"]["both_cold_pooled"]
    record["n_users"].update(both_cold=0, both_cold_pooled=0)
    text = render_markdown(record)
    assert "Not evaluated, no test user in the state: both_cold, both_cold_pooled." in text
    assert "## both_cold" not in text


def test_p_values_and_bold_follow_the_printed_figures() -> None:
    from metarec.evaluation.report import _best, _fmt_p

    # 0.0499 printed as 0.05* beside a legend that marks p < 0.05
    assert (_fmt_p(0.04987), _fmt_p(0.0504), _fmt_p(0.012), _fmt_p(1.0)) == (
        "0.0499", "0.05", "0.012", "1",
    )  # fmt: skip
    # a p below a double's reach (every one of 2,000 users on one side) is 0.0: "0" read
    # as a certainty
    assert _fmt_p(0.0) == "<1e-300"
    # one of two models that both print 0.8526 was bolded alone, by float noise
    models = {"a": {"mae": 0.85257199128}, "b": {"mae": 0.85257199387}, "c": {"mae": 0.86}}
    assert _best(models, "mae") == {"a", "b"}


def test_a_p2_report_says_how_many_users_its_means_rest_on() -> None:
    # "Test users: 82 at every K" stood over tests of 79: users without a liked item
    # after their support have no ranking metric
    record = json.loads((RESULTS / "p2-ml-100k.json").read_text())
    record["n_scored"] = {k: n for k, n in record["n_users"].items()}
    assert "Means and tests rest on" not in render_markdown(record)
    record["n_scored"]["5"] = 79
    assert (
        "Means and tests rest on the test users with a liked item after their support "
        "(K=5: 79); the others have no ranking metric." in render_markdown(record)
    )


def test_item_cold_bounds_quoted_in_the_readmes_are_the_committed_ones() -> None:
    """The READMEs argue from the bounds' 5-fold means (what the text can and cannot
    recover of a new item's mean); a rerun that moved them would leave the argument
    quoting figures no file holds."""
    record = json.loads((RESULTS / "item-cold-bounds.json").read_text(encoding="utf-8"))
    means = record["runs"]["5-fold mean"]
    bench_readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    for variant in (
        "support+history",
        "support+history+text neighbours",
        "support+history+text ridge",
        "support+history+item mean",
    ):
        assert f"{means[variant]:.4f}" in bench_readme, (variant, means[variant])
    assert f"{means['support+history+item mean']:.4f}" in README
    table = (RESULTS / "item-cold-bounds.md").read_text(encoding="utf-8")
    for variant, value in means.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {variant} |"))
        assert row.rstrip(" |").endswith(f"{value:.4f}"), row


def test_a_k_fold_records_plots_say_they_are_over_folds() -> None:
    # the 5-fold plots were titled as one split's, though their points are the folds'
    # means and their intervals are drawn over the pooled users
    five = json.loads((RESULTS / "p1-ml-1m-5fold-seeds3.json").read_text())
    assert plot_title(five, "mae") == (
        "P1 on ml-1m over 5 folds: mean of the folds' mae per model with 95 % bootstrap "
        "CIs over the pooled users"
    )
    one = json.loads((RESULTS / "p1-ml-1m.json").read_text())
    assert plot_title(one, "mae") == "P1 on ml-1m: mean mae per model with 95 % bootstrap CIs"
    p2 = json.loads((RESULTS / "p2-ml-100k-5fold.json").read_text())
    assert plot_title(p2) == (
        "P2 on ml-100k over 5 folds: mean of the folds' nDCG@10 and recall@10 by support size"
    )
    p2_one = json.loads((RESULTS / "p2-ml-100k.json").read_text())
    assert plot_title(p2_one) == "P2 on ml-100k: nDCG@10 and recall@10 by support size"


def test_a_click_log_record_says_clicks_where_a_rating_record_says_ratings() -> None:
    record = _load("p2-ml-100k.json")
    rated = render_markdown(record)
    assert "Liked (relevant): rated >= 4 on a 1-5 scale." in rated
    assert "Success: at least one of the top-k items rated >= 4 after" in rated
    # the same record as a click log would write it: one value, which every item clears
    clicks = {**record, "rating_range": [1.0, 1.0], "like_threshold": 1.0}
    clicks["abtest"] = {k: v for k, v in record["abtest"].items() if k != "liked"}
    told = render_markdown(clicks)
    assert "Liked (relevant): interacted with." in told
    assert "Success: at least one of the top-k items interacted with after" in told
    assert "rated >=" not in told and "1-1 scale" not in told
    # a threshold at the bottom of a scale of ratings is still a threshold
    bottom = render_markdown({**record, "like_threshold": 1.0})
    assert "Liked (relevant): rated >= 1 on a 1-5 scale." in bottom

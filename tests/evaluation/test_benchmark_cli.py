"""``metarec benchmark`` and ``metarec report`` end to end on real ml-100k (tiny configs)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.evaluation.benchmark import peer_alone

# one inner step: adapting every user over the whole catalogue (P2's softmax objective)
# five times was most of the P2 test's minute
TINY = ["--set", "epochs=1", "--set", "max_train_users=60", "--set", "encoder=tfidf"]
TINY += ["--set", "inner_steps=1"]
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metarec.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {**os.environ, "METAREC_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.mark.slow
def test_p2_benchmark_writes_json_markdown_png_and_report_renders_it(
    shared_data: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    proc = run_cli(
        "benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--data", str(shared_data),
        "--peers", "popularity,knn", "--algorithms", "fomaml", "--shots", "0,3",
        "--out", str(tmp_path), "--quiet", *TINY, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # quiet: no progress, but the one line that says where the report went
    said = f"[p2 ml-100k] wrote {tmp_path / 'p2-ml-100k'}.json, -per-user.json, .md, .png\n"
    assert proc.stdout == said
    record = json.loads((tmp_path / "p2-ml-100k.json").read_text())
    assert set(record["summary"]) == {"0", "3"}
    models = set(record["summary"]["3"])
    assert {"popularity", "knn", "metarec-fomaml", "metarec-ensemble"} <= models
    assert 0 <= record["summary"]["3"]["popularity"]["ndcg@10"] <= 1
    # significance of the reference against every other model, Holm-corrected
    ref = record["reference"]["3"]
    sig = record["significance"]["3"]["ndcg@10"]
    assert set(sig) == models - {ref}
    assert all(0 <= s["p_holm"] <= 1 for s in sig.values())
    # the reference is the best of the metarec models on these users: its marks say so
    n = record["reference_chosen_from"]["3"]
    alone = peer_alone(record["ensemble_weights"], "p2", "3")  # then not a candidate
    assert ("3" in record["reference_excluded"]) == alone
    assert n == len({m for m in models if m.startswith("metarec-")}) - alone == 2 - alone
    assert all(s["p_choice"] == pytest.approx(min(1, n * s["p_holm"])) for s in sig.values())
    assert all(s["significant"] == (s["p_choice"] < 0.05) for s in sig.values())
    assert f"K=3: {ref}, best of {n}" in (tmp_path / "p2-ml-100k.md").read_text()
    # the per-user values the tests rest on are written beside the record, so its means
    # and p-values can be checked from the files alone
    from metarec.evaluation.stats import compare_to_peers

    users = json.loads((tmp_path / "p2-ml-100k-per-user.json").read_text())["groups"]["3"]
    values = {m: np.array(v["ndcg@10"], dtype=float) for m, v in users.items()}
    for model, v in values.items():
        assert np.nanmean(v) == pytest.approx(record["summary"]["3"][model]["ndcg@10"])
    again = compare_to_peers(values, ref, sorted(sig), False, seed=0, chosen_from=n)
    assert {m: c["p_holm"] for m, c in again.items()} == pytest.approx(
        {m: s["p_holm"] for m, s in sig.items()}
    )
    # the users the tests rest on, which the report states where fewer than the test users
    assert all(s["n"] == record["n_scored"]["3"] for s in sig.values())
    assert record["n_scored"]["3"] <= record["n_users"]["3"]
    report = (tmp_path / "p2-ml-100k.md").read_text()
    assert report.startswith("# P2")
    # the CPU and torch's kernel dispatch are recorded: results can differ between them
    machine = record["machine"]
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    if machine["cpu"]:
        assert f"({machine['cpu']}, {machine['cpu_capability']})" in report
    assert (tmp_path / "p2-ml-100k-curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "p2-ml-100k-abtest.png").exists()  # no K = 5: no A/B test ran
    assert (tmp_path / "p2-ml-100k-split.json").exists()

    # --splits reads that split back instead of drawing one: under another seed the
    # test users, and so popularity's figures, are still the first run's. Its rule, edited
    # to a looser one the same users meet, is the report's to state (the protocol's is not)
    assert "user_rule" not in record
    split_file = tmp_path / "p2-ml-100k-split.json"
    from metarec.data import load_dataset

    counts = load_dataset("ml-100k", shared_data).interactions["user_id"].value_counts()
    looser = [str(u) for u in counts[(counts >= 20) & (counts < 25)].index]  # it draws them too
    edited = json.loads(split_file.read_text())
    # (as validation users: popularity, fitted on the training users, is then unchanged)
    looser += edited["validation_users"]
    edited |= {"min_ratings": 20, "comment": "mine", "validation_users": sorted(looser)}
    split_file.write_text(json.dumps(edited))
    again = tmp_path / "again"
    proc = run_cli(
        "benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--data", str(shared_data),
        "--peers", "popularity", "--algorithms", "episodic", "--shots", "3", "--seed", "1",
        "--splits", str(tmp_path), "--out", str(again), "--quiet", "--no-plots", *TINY, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # said once, not again when the fold read the file it had checked
    assert proc.stderr.count("key(s) 'comment' not read") == 1, proc.stderr[-2000:]
    # a seed but 0 is in the names: into one folder, seed 1's split file replaced seed
    # 0's beside seed 0's report
    rerun = json.loads((again / "p2-ml-100k-seed1.json").read_text())
    assert f"--splits {tmp_path}" in rerun["command"]
    first = json.loads((tmp_path / "p2-ml-100k-split.json").read_text())
    copied = json.loads((again / "p2-ml-100k-seed1-split.json").read_text())
    assert copied["test_users"] == first["test_users"]
    pop = record["summary"]["3"]["popularity"]
    assert rerun["summary"]["3"]["popularity"] == pytest.approx(pop, rel=0, abs=0)
    assert rerun["user_rule"] == {"min_ratings": 20}
    assert "users drawn by the split files' own rule (min_ratings 20), not the protocol's" in (
        (again / "p2-ml-100k-seed1.md").read_text()
    )

    shown = run_cli("report", str(tmp_path / "p2-ml-100k.json"), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "ndcg@10 by support size K" in shown.stdout
    assert "metarec-ensemble" in shown.stdout


@pytest.mark.slow
def test_p1_benchmark_reports_four_states_and_pooled_ones(
    shared_data: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    proc = run_cli(
        "benchmark", "--protocol", "p1", "--dataset", "ml-100k", "--data", str(shared_data),
        "--peers", "bias,popularity", "--algorithms", "fomaml", "--out", str(tmp_path),
        "--quiet", "--no-plots", "--seeds", "2", *TINY, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "p1-ml-100k-seeds2.json").read_text())
    # first-order MAML is a bag of two seeds, reported under its own name
    assert record["seeds"] == 2 and "--seeds 2" in record["command"]
    bag = record["configs"]["metarec-fomaml"]
    assert bag["seeds"] == [0, 1] and len(bag["best_epoch"]) == 2
    assert set(record["summary"]) == {
        "warm", "user_cold", "item_cold", "both_cold", "item_cold_pooled", "both_cold_pooled"
    }  # fmt: skip
    # ranking-only peers have no ratings to correct, so they are not in the pooled states
    assert "popularity" not in record["summary"]["item_cold_pooled"]
    assert record["n_users"]["item_cold_pooled"] == record["n_users"]["item_cold"]
    cold = record["summary"]["user_cold"]
    assert cold["popularity"]["mae"] is None  # null (strict JSON): not a rating model
    assert 0.5 < cold["metarec-fomaml"]["mae"] < 1.2
    assert "mae" in record["significance"]["user_cold"]
    # warm is scored on the users that tuned the models: figures, no tests
    assert record["significance"]["warm"] == {} and "warm" in record["reference_chosen_from"]
    comp = record["significance"]["user_cold"]["mae"]["bias"]
    n = record["reference_chosen_from"]["user_cold"]
    ours = {m for m in record["summary"]["user_cold"] if m.startswith("metarec-")}
    assert n == len(ours - set(record["reference_excluded"].get("user_cold", [])))
    assert comp["p_choice"] == pytest.approx(min(1, n * comp["p_holm"]))
    # the bias model with median cuts is reported beside it; its mean MAE is the bias row's
    assert cold["bias-median"]["mae_mean"] == pytest.approx(cold["bias"]["mae"])
    assert cold["bias-median"]["mae"] < cold["bias"]["mae"]
    assert cold["bias-median"]["rmse"] == pytest.approx(cold["bias"]["rmse"])
    # an ensemble whose weights are the bias model's alone for a state's users is no
    # metarec model to judge the peers against (this tiny run's often are)
    for state in record["summary"]:
        alone = peer_alone(record["ensemble_weights"], "p1", state)
        assert (state in record["reference_excluded"]) == alone
        assert not alone or record["reference"][state] != "metarec-ensemble"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["report", "nowhere.json"], "nowhere.json: no such file or directory"),
        (["report", "nowhere.json", "--no-plots"], "--no-plots: applies with --write"),
        (["benchmark", "--protocol", "p2", "--folds", "0", "--dataset", "ml-100k"], "folds"),
        (["benchmark", "--protocol", "p2", "--shots", "1,x"], "--shots"),
        (["benchmark", "--protocol", "p2", "--shots", ""], "--shots: expected comma-separated"),
        (["benchmark", "--protocol", "p1", "--seeds", "0", "--dataset", "ml-100k"], "seeds"),
        (["benchmark", "--protocol", "speed", "--seeds", "3"], "not speed"),
        (["benchmark", "--protocol", "speed", "--splits", "."], "not speed"),
        (["benchmark", "--protocol", "speed", "--set", "epochs=1"], "--set: applies to"),
        (["benchmark", "--protocol", "speed", "--folds", "5"], "--folds: applies to"),
        (["benchmark", "--protocol", "speed", "--peers", "als"], "--peers: applies to"),
        (["benchmark", "--protocol", "speed", "--algorithms", "maml"], "--algorithms: applies"),
        (["benchmark", "--protocol", "speed", "--shots", "1"], "--shots: applies to"),
        (["benchmark", "--protocol", "speed", "--no-resume"], "--no-resume: applies to"),
        (["benchmark", "--protocol", "p2", "--set", "like_threshold=3"], "--like-threshold"),
        (["benchmark", "--dataset", "ml-9m"], "--dataset 'ml-9m': neither a known dataset"),
        (["benchmark", "--items", "i.csv"], "--items: describes your own files"),
        (
            ["benchmark", "--dataset", "ml-100k", "--interactions", "r.csv"],
            "not both",
        ),
        (["benchmark", "--protocol", "speed", "--like-threshold", "3"], "not speed"),
        (["benchmark", "--protocol", "speed", "--max-items", "500"], "not speed"),
        (["benchmark", "--protocol", "speed", "--max-episodes", "500"], "--max-episodes"),
        (
            ["benchmark", "--protocol", "p2", "--max-episodes", "0", "--dataset", "ml-100k"],
            "--max-episodes: must be a whole number >= 1, got 0",
        ),
        (
            ["benchmark", "--protocol", "p2", "--max-items", "0", "--dataset", "ml-100k"],
            "--max-items: must be a whole number >= 1, got 0",
        ),
        (["benchmark", "--dataset", "ml-100k", "--rating-range", "1,10"], "not to the known"),
        (
            ["benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--peers", "pop"],
            "--peers: unknown peer(s) ['pop']",
        ),
        (
            ["benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--algorithms", "sgd"],
            "--algorithms: ['sgd'] not among p2's algorithms",
        ),
        (
            ["benchmark", "--protocol", "p1", "--dataset", "ml-100k", "--algorithms", "stacked"],
            "--algorithms: ['stacked'] rank items and predict no ratings: use them with protocol",
        ),
        (
            ["benchmark", "--protocol", "p2", "--folds", "5", "--splits", "nowhere"],
            "--splits: no p2-ml-100k-fold0-split.json in nowhere",
        ),
        # silently ignored, deduplicated or dropped before, with real work started
        (["benchmark", "--protocol", "p1", "--shots", "1,3"], "--shots: applies to --protocol p2"),
        (["benchmark", "--protocol", "p1", "--max-items", "9"], "--max-items: applies to --pro"),
        (["benchmark", "--protocol", "p2", "--shots", "1,1"], "--shots: 1 given twice"),
        (["benchmark", "--protocol", "p2", "--algorithms", "maml,maml"], "'maml' given twice"),
        (["benchmark", "--protocol", "p2", "--peers", "bias,bias"], "--peers: 'bias' given"),
        (["benchmark", "--protocol", "p2", "--peers", ","], "--peers: expected comma-separated"),
        (["benchmark", "--dataset", "ml-100k", "--dataset", "ml-100k"], "'ml-100k': given twice"),
        # accepted, and the record said what the run had not done: a "-seeds3" report of
        # models fitted once, seed 0 beside networks seeded 5, a --max-episodes unread
        (
            ["benchmark", "--protocol", "p2", "--algorithms", "episodic", "--seeds", "3"],
            "--seeds: bags the meta-learning algorithms (maml, fomaml, reptile, metasgd), and "
            "this run fits none of them (episodic)",
        ),
        (["benchmark", "--protocol", "p2", "--set", "seed=5"], "--set: seed is the benchmark's"),
        (
            ["benchmark", "--protocol", "p2", "--algorithms", "episodic", "--max-episodes", "9"],
            "--max-episodes: applies to the stacked ranker",
        ),
        (
            ["benchmark", "--protocol", "p2", "--algorithms", "fomaml", "--max-items", "9"],
            "--max-items: applies to the episodic ridge and the stacked ranker",
        ),
        # ml-1m was dropped without a word
        (
            ["benchmark", "--protocol", "speed", "--dataset", "ml-100k", "--dataset", "ml-1m"],
            "--dataset: --protocol speed runs on one dataset",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str],
    needle: str,
    shared_data: Path,
    cli: Callable[..., Any],  # tests/conftest.py: CliResult
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # nothing may be written, and not into the checkout
    res = cli(*args, "--data", str(shared_data)) if args[0] == "benchmark" else cli(*args)
    assert res.returncode == 2, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln] == [res.stderr.strip()]  # one line
    assert needle in res.stderr
    assert not any(tmp_path.iterdir())


def test_no_resume_reaches_the_run(
    cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from metarec.evaluation import benchmark

    seen: list[bool] = []
    monkeypatch.setattr(benchmark, "run_benchmark", lambda *a, **k: seen.append(k["resume"]))
    assert cli("benchmark", "--protocol", "p2", "--quiet").returncode == 0
    assert cli("benchmark", "--protocol", "p2", "--quiet", "--no-resume").returncode == 0
    assert seen == [True, False]


def test_bad_input_from_the_installed_command(env: dict[str, str]) -> None:
    """The same path through a real process: exit code 2, one line, no traceback."""
    proc = run_cli("benchmark", "--protocol", "speed", "--seeds", "3", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "metarec: error: --seeds: applies to --protocol p1 and p2, not speed (got 3)"
    ]


def test_default_algorithms_depend_on_the_protocol() -> None:
    from metarec.evaluation.benchmark import _command, build_models, default_algorithms

    # P2 adds the episodic ranking model; P1 (ratings) cannot use it
    assert default_algorithms("p2") == (
        "maml",
        "fomaml",
        "reptile",
        "metasgd",
        "episodic",
        "stacked",
    )
    assert not {"episodic", "stacked"} & set(default_algorithms("p1"))
    shots = (0, 1, 3, 5, 10, 20)
    plain = _command("p2", "ml-100k", 0, 1, default_algorithms("p2"), _peers("p2"), shots, 1, None)
    assert "--algorithms" not in plain and "--seeds" not in plain
    chosen = _command("p2", "ml-100k", 0, 5, ["fomaml", "episodic"], _peers("p2"), shots, 3, "d")
    assert chosen.endswith("--folds 5 --algorithms fomaml,episodic --seeds 3 --data d")
    capped = _command(
        "p2", "ml-100k", 0, 1, ["stacked"], _peers("p2"), shots, 1, None,
        max_items=500, max_episodes=2000,
    )  # fmt: skip
    assert capped.endswith("--algorithms stacked --max-items 500 --max-episodes 2000")
    # what the shell splits or drops is quoted: the line is pasted, and "--peers " (no
    # peers) and "--data my data" failed there
    quoted = _command(
        "p2", "ml-100k", 0, 1, ["fomaml"], [], shots, 1, "my data", splits="s p.json",
        peers_named=True,
    )  # fmt: skip
    assert "--peers '' " in quoted and "--splits 's p.json'" in quoted
    assert quoted.endswith("--data 'my data'")
    models = build_models(
        "p2", algorithms=["episodic", "stacked"], peers=[], seed=0, max_items=500,
        max_episodes=2000,
    )  # fmt: skip
    assert [m.max_items for m in models.values()] == [500, 500]  # type: ignore[attr-defined]
    assert models["metarec-stacked"].max_episodes == 2000  # type: ignore[attr-defined]


def test_seeds_make_each_meta_algorithm_an_equal_weight_bag() -> None:
    from metarec.evaluation.benchmark import build_models
    from metarec.models.ensemble import Ensemble
    from metarec.models.meta_model import MetaModel

    models = build_models("p1", algorithms=["fomaml"], peers=["bias"], seed=3, seeds=2)
    bag = models["metarec-fomaml"]
    assert isinstance(bag, Ensemble) and not bag.learn_weights and bag.mode == "rating"
    assert [m.cfg.seed for m in bag.members.values()] == [3, 4]  # type: ignore[attr-defined]
    assert all(isinstance(m, MetaModel) for m in bag.members.values())
    assert not isinstance(models["bias"], Ensemble)  # peers are never bagged
    ranking = build_models("p2", algorithms=["fomaml"], peers=[], seed=0, seeds=2)
    assert ranking["metarec-fomaml"].mode == "ranking"  # type: ignore[attr-defined]
    single = build_models("p1", algorithms=["fomaml"], peers=[], seed=0)
    assert isinstance(single["metarec-fomaml"], MetaModel)


def _peers(protocol: str) -> tuple[str, ...]:
    from metarec.evaluation.benchmark import P1_PEERS, P2_PEERS

    return P1_PEERS if protocol == "p1" else P2_PEERS


def test_pooling_folds_skips_missing_metrics_without_warnings() -> None:
    import warnings

    from metarec.evaluation.benchmark import _pool

    def fold(mae: float) -> dict:
        return {
            "n_users": {"g": 1},
            "summary": {"g": {"m": {"mae": mae, "ndcg@10": 0.5}}},
            "per_user": {"g": {"m": {"mae": [mae], "ndcg@10": [0.5]}}},
        }

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ranking model's MAE is NaN in every fold
        ranking = _pool([fold(float("nan")), fold(float("nan"))])
    assert math.isnan(ranking["summary"]["g"]["m"]["mae"])
    assert math.isnan(ranking["std"]["g"]["m"]["mae"])
    mixed = _pool([fold(1.0), fold(float("nan")), fold(3.0)])
    assert mixed["summary"]["g"]["m"]["mae"] == 2.0 and mixed["std"]["g"]["m"]["mae"] == 1.0
    assert mixed["n_users"]["g"] == 3
    # a state with no user in the first fold is pooled from the folds that have it: it
    # was dropped from the report, neither a table nor "no test user"
    small = fold(2.0)
    small["summary"]["h"] = small["summary"].pop("g")
    small["per_user"]["h"] = small["per_user"].pop("g")
    small["n_users"] = {"g": 0, "h": 1}
    pooled = _pool([fold(1.0), small])
    assert pooled["summary"]["h"]["m"]["mae"] == 2.0 and pooled["n_users"]["h"] == 1
    assert pooled["per_user"]["h"]["m"]["mae"] == [2.0]


def test_like_threshold_is_the_top_quarter_of_the_rating_scale() -> None:
    from metarec.data import like_threshold_for

    assert like_threshold_for((1, 5)) == 4.0  # MovieLens stars: P2's "liked" as published
    assert like_threshold_for((2, 10)) == 8.0
    assert like_threshold_for((0.5, 5)) == 3.875  # half stars: 4 and up
    assert like_threshold_for((0, 1)) == 0.75  # 0/1 feedback: the 1s
    assert like_threshold_for((1, 1)) == 1.0  # implicit: every interaction
    # reports say it as a reader counts stars: "rated >= 7.75" left them to work out 8
    from metarec.data.schema import liked_words

    assert liked_words(7.75, (1, 10)) == "rated >= 7.75 (of ratings in whole numbers: 8 and up)"
    assert liked_words(3.875, (0.5, 5)) == "rated >= 3.875 (of ratings in halves: 4 and up)"
    # a threshold given is said as given: 4.25 on 1-5 may be half stars, 4.5 liked
    assert liked_words(4.25, (1, 5)) == "rated >= 4.25"
    assert liked_words(4.0, (1, 5)) == "rated >= 4"
    assert liked_words(1.0, (1, 1)) == "interacted with"


def test_p1_on_implicit_feedback_is_refused_before_any_fit(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "clicks.csv").write_text("user_id,item_id,rating\nu1,a,1\nu1,b,1\nu2,a,1\n")
    (tmp_path / "items.csv").write_text("item_id,title\na,Alpha\nb,Beta\n")
    proc = run_cli(
        "benchmark", "--protocol", "p1", "--interactions", str(tmp_path / "clicks.csv"),
        "--items", str(tmp_path / "items.csv"), "--title-col", "title",
        "--out", str(tmp_path / "out"), env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "clicks: every rating is 1 (implicit feedback)" in proc.stderr
    assert "so use protocol P2" in proc.stderr
    assert not list((tmp_path / "out").glob("*.json"))


@pytest.mark.slow
def test_own_files_on_another_rating_scale_give_the_known_datasets_figures(
    shared_data: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """ml-100k written as CSV with every rating doubled (2-10): the benchmark reads
    it through --interactions/--items, counts "liked" as >= 8 instead of >= 4, and
    so every model that ranks by likes gives the figures of the named dataset, here
    read as a folder of atomic files (``--dataset DIR``, a dataset of one's own)."""
    import pandas as pd

    prefix = shared_data / "ml-100k" / "ml-100k"
    inter = pd.read_csv(f"{prefix}.inter", sep="\t")
    inter.columns = ["member", "film", "stars", "when"]
    inter["stars"] *= 2
    inter.to_csv(tmp_path / "my ratings.csv", index=False)
    items = pd.read_csv(f"{prefix}.item", sep="\t")
    items.columns = ["film", "name", "year", "genres"]
    items.to_csv(tmp_path / "films.csv", index=False)
    common = [
        "--protocol", "p2", "--peers", "popularity,bias", "--algorithms", "episodic",
        "--shots", "0,3", "--quiet", "--no-plots", "--set", "encoder=tfidf",
    ]  # fmt: skip
    own = tmp_path / "own"
    proc = run_cli(
        "benchmark", "--interactions", str(tmp_path / "my ratings.csv"),
        "--items", str(tmp_path / "films.csv"), "--user-col", "member", "--item-col", "film",
        "--rating-col", "stars", "--timestamp-col", "when", "--title-col", "name",
        "--year-col", "year", "--genre-col", "genres", "--out", str(own), *common, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the named dataset's own files, as a folder of atomic files under another name
    folder = tmp_path / "films"
    folder.mkdir()
    for part in ("inter", "item", "user"):
        shutil.copy(f"{prefix}.{part}", folder / f"films.{part}")
    named = tmp_path / "named"
    proc = run_cli(
        "benchmark", "--dataset", str(folder), "--out", str(named), *common, env=env
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    mine = json.loads((own / "p2-my-ratings.json").read_text())  # the file stem, made safe
    ref = json.loads((named / "p2-films.json").read_text())  # the folder's name
    assert f"--dataset {folder} " in ref["command"] and "--data " not in ref["command"]
    assert (mine["like_threshold"], mine["rating_range"]) == (8.0, [2.0, 10.0])
    assert (ref["like_threshold"], ref["rating_range"]) == (4.0, [1.0, 5.0])
    assert (
        json.loads((own / "p2-my-ratings-split.json").read_text())["test_users"]
        == (json.loads((named / "p2-films-split.json").read_text())["test_users"])
    )
    for k in ("0", "3"):
        for model in ("popularity", "bias", "metarec-episodic", "metarec-ensemble"):
            assert mine["summary"][k][model] == pytest.approx(ref["summary"][k][model]), (k, model)
    # the blend's weights per K evaluated, not per default bucket (K >= 5, 10 and 20
    # were warned of as judged on too few users, and no figure used them)
    assert list(ref["ensemble_weights"][0]) == ["K>=0", "K>=3"]
    # and those are the named dataset's: popularity's committed figure at K = 3
    committed = RESULTS / "p2-ml-100k.json"
    published = json.loads(committed.read_text())["summary"]["3"]["popularity"]["ndcg@10"]
    assert ref["summary"]["3"]["popularity"]["ndcg@10"] == pytest.approx(published)
    assert "rated >= 8 on a 2-10 scale" in (own / "p2-my-ratings.md").read_text()

    # the recorded command names the files and reproduces the run
    command = mine["command"]
    assert "--interactions" in command and "--user-col member" in command
    assert "--set encoder=tfidf" in command
    import shlex

    again = tmp_path / "again"
    words = shlex.split(command)
    assert words[:2] == ["metarec", "benchmark"]
    proc = run_cli(*words[1:], "--out", str(again), "--quiet", "--no-plots", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rerun = json.loads((again / "p2-my-ratings.json").read_text())
    assert rerun["summary"] == mine["summary"]


def test_report_plots_the_ab_test_of_a_committed_run(tmp_path: Path) -> None:
    from metarec.evaluation.report import plot

    record = json.loads((RESULTS / "p2-ml-100k.json").read_text())
    assert record["abtest"]["replay"]
    written = plot(record, tmp_path / "p2")
    assert {p.name for p in written} == {"p2-curves.png", "p2-abtest.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    record["abtest"] = None
    assert [p.name for p in plot(record, tmp_path / "q")] == ["q-curves.png"]


def test_report_renders_and_rewrites_a_speed_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarec.cli import main

    record = json.loads((RESULTS / "speed.json").read_text())
    (tmp_path / "speed.json").write_text(json.dumps(record))
    assert main(["report", "--write", str(tmp_path / "speed.json")]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# Speed on ml-100k")
    assert (tmp_path / "speed.md").read_text() == (RESULTS / "speed.md").read_text()
    # a results folder renders its speed record beside the protocol results
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out == shown
    (tmp_path / "speed.json").write_text(json.dumps({"benchmark": "latency"}))
    assert main(["report", str(tmp_path / "speed.json")]) == 2
    assert "not a speed benchmark" in capsys.readouterr().err
    (tmp_path / "speed.json").write_text(json.dumps({"benchmark": "speed"}))
    assert main(["report", str(tmp_path / "speed.json")]) == 2
    assert "missing field 'machine'" in capsys.readouterr().err
    # a benchmark run without the quickstart (or saved before the field existed) says so
    del record["quickstart"]
    (tmp_path / "speed.json").write_text(json.dumps(record))
    assert main(["report", str(tmp_path / "speed.json")]) == 0
    assert "| `metarec quickstart`: wall s / peak MiB | not run | not run |" in (
        capsys.readouterr().out
    )


def test_characters_the_plot_font_lacks_are_said_once(tmp_path: Path) -> None:
    import warnings

    from metarec.evaluation.report import render_plots

    record = json.loads((RESULTS / "p2-ml-100k.json").read_text())
    record["dataset"] = "日本語の書籍"  # eight lines of "Glyph ... missing from font(s)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = render_plots(record, tmp_path / "p2")
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and said[0].startswith("plots: the font has no の, 日, 書, 本, 籍"), said
    assert len(written) == 2  # the curves and the A/B test, drawn all the same


def test_a_p1_state_of_one_user_draws_its_point_without_a_bar(tmp_path: Path) -> None:
    from metarec.evaluation.report import render_plots, write_report
    from metarec.evaluation.stats import bootstrap_ci

    record = json.loads((RESULTS / "p1-ml-1m.json").read_text())
    # one user's value has no CI (NaN from the bootstrap, null in a saved record): the
    # axis limits became NaN and the benchmark wrote none of its files
    record["ci95"]["both_cold"]["bias"]["mae"] = list(bootstrap_ci(np.array([0.7])))
    written = write_report(record, tmp_path / "p1", save_record=True)
    assert tmp_path / "p1-mae.png" in written
    saved = json.loads((tmp_path / "p1.json").read_text())
    assert saved["ci95"]["both_cold"]["bias"]["mae"] == [None, None]
    saved["ci95"]["both_cold"]["bias"]["ndcg@3"] = [0.7, None]
    assert len(render_plots(saved, tmp_path / "again")) == len(written) - 2  # md, json


def test_the_ab_plot_of_a_random_support_says_no_later(monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    from metarec.evaluation.report import abtest_png

    labels: list[str] = []
    drawn = Axes.set_xlabel

    def noted(self: Any, text: str, *args: Any, **kwargs: Any) -> Any:
        labels.append(text)
        return drawn(self, text, *args, **kwargs)

    monkeypatch.setattr(Axes, "set_xlabel", noted)
    ab = json.loads((RESULTS / "p2-ml-100k.json").read_text())["abtest"]
    abtest_png(ab)
    assert labels[0].endswith("later)"), labels
    abtest_png({**ab, "support_order": "random"})  # as `metarec abtest` reports it
    assert labels[-2].endswith("outside the support)"), labels


def test_a_figure_missing_from_a_record_carries_no_test_mark() -> None:
    from metarec.evaluation.report import check_record_fields, render_markdown

    # "— (p 0.003*)": a significance mark on no figure
    record = json.loads((RESULTS / "p2-ml-100k-5fold.json").read_text())
    record["summary"]["10"]["knn"]["ndcg@10"] = None
    check_record_fields(record, "r.json")  # a metric a model has not: null, as NaN is written
    ndcg = render_markdown(record).split("## ndcg@10 by support size K")[1].split("\n## ")[0]
    knn = next(line for line in ndcg.splitlines() if line.startswith("| knn |"))
    assert knn.split(" | ")[5] == "—", knn  # K = 10
    p1 = json.loads((RESULTS / "p1-ml-1m.json").read_text())
    p1["summary"]["user_cold"]["bias"]["mae"] = None
    row = next(
        line
        for line in render_markdown(p1).split("## user_cold")[1].splitlines()
        if line.startswith("| bias |")
    )
    assert row.split(" | ")[-2] == "", row  # p (mae) left empty
    # a support drawn at random (no times in the data) has no "after"
    p2 = json.loads((RESULTS / "p2-ml-100k.json").read_text())
    assert "rated >= 4 after the support period." in render_markdown(p2)
    p2["support_order"] = "random"
    assert "among the user's other ratings (the support drawn at random" in render_markdown(p2)
    # a data set's name as written: "a-b-_c_" set part of the heading in italics
    p1["dataset"] = "a-b-_c_"
    assert render_markdown(p1).split("\n")[0].endswith(" on a-b-\\_c\\_")


def test_report_refuses_a_damaged_record_and_bolds_every_tied_best(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarec.cli import main

    record = json.loads((RESULTS / "p2-ml-100k-5fold.json").read_text())
    # at K = 0 the ensemble's blend may differ from popularity's list in the 5th
    # digit (0.4497 at 6401958): level with it here, so that the tie is the record's own
    at0 = record["summary"]["0"]
    at0["metarec-ensemble"]["ndcg@10"] = at0["popularity"]["ndcg@10"]
    path = tmp_path / "p2-ml-100k-5fold.json"
    path.write_text(json.dumps(record))
    assert main(["report", str(path)]) == 0
    shown = capsys.readouterr().out
    # at K = 0 every model without a prior falls back to popularity's list: all bold
    ndcg = shown.split("## ndcg@10 by support size K")[1].split("\n## ")[0]
    row = {line.split(" | ")[0]: line for line in ndcg.splitlines() if line.startswith("| ")}
    for name in ("popularity", "knn", "als", "metarec-stacked"):
        assert row[f"| {name}"].split(" | ")[1].startswith("**0.4496 ± 0.0204"), name
    for field, needle in [
        ("significance", "missing field 'significance'"),
        ("std", "missing field 'std'"),  # the header promises mean ± std over folds
        ("summary", "its summary is empty"),
        # of another type: the field is named, not the renderer's line that tripped
        ("seed", "field 'seed': expected an integer, got '0'"),
        ("rating_range", "field 'rating_range': expected [low, high], got [5]"),
        ("like_threshold", "field 'like_threshold': expected a number or null, got '4'"),
    ]:
        broken = dict(record)
        if field == "summary":
            broken["summary"] = {}
        elif field in ("seed", "like_threshold"):
            broken[field] = str(int(record[field]))
        elif field == "rating_range":
            broken[field] = [5]
        else:
            broken.pop(field)
        path.write_text(json.dumps(broken))
        assert main(["report", str(path)]) == 2, field
        err = capsys.readouterr().err
        assert str(path) in err and needle in err, err
    # a value deep in a table: named by its full path
    model = "metarec-stacked"
    for table, value, needle in [
        ("summary", "0.5", f"field 'summary.10.{model}.ndcg@10': expected a finite number"),
        ("ci95", [0.4], f"field 'ci95.10.{model}.ndcg@10': expected [low, high] of numbers"),
        ("ci95", [0.5, 0.4], "expected [low, high] with low <= high, got [0.5, 0.4]"),
        ("std", [], f"field 'std.10.{model}.ndcg@10': expected a finite number or null, got []"),
    ]:
        broken = json.loads(json.dumps(record))
        broken[table]["10"][model]["ndcg@10"] = value
        path.write_text(json.dumps(broken))
        assert main(["report", str(path)]) == 2, (table, value)
        err = capsys.readouterr().err
        assert str(path) in err and needle in err, err
    broken = json.loads(json.dumps(record))
    broken["significance"]["10"]["ndcg@10"]["popularity"]["p_holm"] = "0.01"
    broken["n_users"]["10"] = -1
    path.write_text(json.dumps(broken))
    assert main(["report", str(path)]) == 2
    assert "field 'n_users.10': expected a whole number >= 0, got -1" in capsys.readouterr().err
    broken["n_users"]["10"] = record["n_users"]["10"]
    path.write_text(json.dumps(broken))
    assert main(["report", str(path)]) == 2
    needle = "field 'significance.10.ndcg@10.popularity.p_holm': expected a number, got '0.01'"
    assert needle in capsys.readouterr().err
    # impossible values rendered as if real: a bold "inf" best, "a 5-1 scale"
    for edit, needle in [
        (lambda r: r["summary"]["10"]["popularity"].update({"ndcg@10": math.inf}),
         "field 'summary.10.popularity.ndcg@10': expected a finite number or null, got inf"),
        (lambda r: r.update(rating_range=[5, 1]), "field 'rating_range': expected [low, high] "
         "with low <= high"),
        (lambda r: r.update(folds=-1), "field 'folds': expected a whole number >= 1, got -1"),
        (lambda r: r["reference"].update({"1": "nomodel"}),
         "field 'reference.1': expected one of the record's models, got 'nomodel'"),
        (lambda r: r["ensemble_weights"][0]["K>=0"].update(popularity="x"),
         "field 'ensemble_weights[0].K>=0.popularity': expected a finite weight, got 'x'"),
        (lambda r: r["timings"]["fit_s"][0].update(popularity="x"),
         "field 'timings.fit_s[0].popularity': expected seconds (a number), got 'x'"),
        # printed as "(p 2)", a bold 1.7000 best, and a * on p 0.12
        (lambda r: r["significance"]["5"]["ndcg@10"]["popularity"].update(p_holm=2.0),
         "field 'significance.5.ndcg@10.popularity.p_holm': expected a p-value in [0, 1]"),
        (lambda r: r["summary"]["5"]["popularity"].update({"ndcg@10": 1.7}),
         "field 'summary.5.popularity.ndcg@10': expected a number in [0, 1], got 1.7"),
        (lambda r: r["summary"]["5"]["popularity"].update({"ndcg@10": -0.1}),
         "field 'summary.5.popularity.ndcg@10': expected a number >= 0, got -0.1"),
        (lambda r: r["significance"]["5"]["ndcg@10"]["popularity"].update(
            p_holm=0.12, p_choice=min(1, 0.12 * r["reference_chosen_from"]["5"]),
            significant=True),
         "field 'significance.5.ndcg@10.popularity.significant': expected False for p_choice "
         "0.48, got True"),
        # a p_holm edited beside the p_choice it gave
        (lambda r: r["significance"]["5"]["ndcg@10"]["popularity"].update(p_holm=0.12),
         "field 'significance.5.ndcg@10.popularity.p_choice': expected 4 x p_holm = 0.48, got"),
    ]:  # fmt: skip
        broken = json.loads(json.dumps(record))
        edit(broken)
        path.write_text(json.dumps(broken))
        assert main(["report", str(path)]) == 2
        err = capsys.readouterr().err
        assert needle in err, err
    path.write_text("[1, 2, 3]")
    assert main(["report", str(path)]) == 2
    assert "not a benchmark result (a JSON list)" in capsys.readouterr().err
    path.write_text('{"protocol": "p2", "summary": {"1')
    assert main(["report", str(path)]) == 2
    assert "not valid JSON (Unterminated string starting at: line 1, column 32)" in (
        capsys.readouterr().err
    )


def test_report_write_draws_the_plots_before_replacing_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarec.cli import main

    record = json.loads((RESULTS / "p1-ml-1m.json").read_text())
    record.pop("ci95")  # the plots need it, the Markdown does not
    (tmp_path / "p1.json").write_text(json.dumps(record))
    assert main(["report", "--write", str(tmp_path / "p1.json")]) == 2
    assert "missing field 'ci95'" in capsys.readouterr().err
    assert not (tmp_path / "p1.md").exists()


def test_a_report_that_cannot_be_written_names_the_report_not_its_temporary_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarec.cli import main

    shutil.copy(RESULTS / "speed.json", tmp_path / "speed.json")
    (tmp_path / "speed.md").mkdir()  # a folder where the report goes
    assert main(["report", "--write", str(tmp_path / "speed.json")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'speed.md'}: is a folder; the report writes a file" in err, err
    assert ".tmp" not in err
    # a P2 report's .md as a folder: refused before its plots were rewritten
    shutil.copy(RESULTS / "p2-ml-100k.json", tmp_path / "p2.json")
    (tmp_path / "p2.md").mkdir()
    assert main(["report", "--write", str(tmp_path / "p2.json")]) == 2
    assert "p2.md: is a folder" in capsys.readouterr().err
    assert not list(tmp_path.glob("p2*.png"))


def test_a_results_folder_is_reported_whole_or_not_at_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarec.cli import main

    record = json.loads((RESULTS / "p2-ml-100k.json").read_text())
    (tmp_path / "p2-a.json").write_text(json.dumps(record))
    record["summary"]["5"]["popularity"]["ndcg@10"] = "x"
    (tmp_path / "p2-b.json").write_text(json.dumps(record))
    # the first file's report was printed, and with --write its .md and plots written,
    # before the second was refused
    assert main(["report", "--write", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "p2-b.json" in captured.err and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p2-a.json", "p2-b.json"]
    # an A/B test's --out beside the records is left out with a warning, not refused
    (tmp_path / "p2-b.json").unlink()
    (tmp_path / "p2-ml-100k-abtest-runs.json").write_text('{"users": 82, "replay": null}')
    assert main(["report", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "abtest-runs.json: not a benchmark result; left out" in captured.err
    assert captured.out.startswith("# P2")
    # a run's per-user values sit beside its record: no report, and no warning
    (tmp_path / "p2-a-per-user.json").write_text('{"about": "", "groups": {}}')
    assert main(["report", str(tmp_path)]) == 0
    assert "per-user" not in capsys.readouterr().err
    (tmp_path / "p2-a-per-user.json").unlink()
    (tmp_path / "p2-a.json").unlink()  # nothing left to report: refused, not silent
    assert main(["report", str(tmp_path)]) == 2
    assert "no benchmark results in it, only other JSON files" in capsys.readouterr().err
    # a training run stopped before its model was saved: said as `train` would resume it
    unfinished = tmp_path / "run"
    (unfinished / "checkpoint").mkdir(parents=True)
    assert main(["report", str(unfinished)]) == 2
    assert "an unfinished training run (its checkpoint/ is here" in capsys.readouterr().err


def test_a_number_past_what_a_float_holds_is_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a JSON 10**400 is a Python int: float() and math.isfinite raised OverflowError
    from metarec.cli import main

    text = (RESULTS / "p2-ml-100k.json").read_text()
    record = json.loads(text)
    record["summary"]["5"]["popularity"]["ndcg@10"] = 0.123456789
    huge = json.dumps(record).replace("0.123456789", "1" + "0" * 400)
    (tmp_path / "p2.json").write_text(huge)
    assert main(["report", str(tmp_path / "p2.json")]) == 2
    err = capsys.readouterr().err
    assert "p2.json" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "field 'summary.5.popularity.ndcg@10'" in err
    # a speed record's figures: a NaN latency and a negative rate were printed as measured
    speed = json.loads((RESULTS / "speed.json").read_text())
    first = next(iter(speed["adaptation"]))
    speed["adaptation"][first]["metarec"]["p50_ms"] = float("nan")
    (tmp_path / "speed.json").write_text(json.dumps(speed))
    assert main(["report", str(tmp_path / "speed.json")]) == 2
    err = capsys.readouterr().err
    assert f"field 'adaptation.{first}.metarec.p50_ms': nan is no time, rate or count" in err


def test_a_plotting_backend_matplotlib_cannot_use_is_named_before_the_work(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # matplotlib's ValueError came from its import: blamed on a valid record by report,
    # a traceback after all the work from benchmark and abtest
    shutil.copy(RESULTS / "p2-ml-100k.json", tmp_path / "p2.json")
    bad = {**env, "MPLBACKEND": "bogus"}
    for args in (["report", "--write", str(tmp_path / "p2.json")],
                 ["benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--out",
                  str(tmp_path / "out")]):  # fmt: skip
        proc = run_cli(*args, env=bad)
        assert proc.returncode == 2, proc.stderr
        assert "MPLBACKEND='bogus': matplotlib cannot use it" in proc.stderr
        assert "Traceback" not in proc.stderr and "p2.json" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p2.json"]


def test_report_into_a_closed_pipe_is_quiet(env: dict[str, str]) -> None:
    """`metarec report results/ | head -1`: the reader leaving early is not an error."""
    proc = subprocess.run(
        f"{sys.executable} -m metarec.cli report {RESULTS} | head -c 10",
        shell=True, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.stdout == "# P1 (MeLU"
    assert proc.stderr == "", proc.stderr


def test_options_the_data_makes_absurd_are_refused_before_any_fit(
    shared_data: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """Checked once the data is loaded, before a model is fitted or a file written."""
    base = [
        "benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--data", str(shared_data),
        "--peers", "popularity", "--algorithms", "episodic", "--out", str(tmp_path),
    ]  # fmt: skip
    for extra, needle in [
        # above the top rating nothing is liked: every ranking model would learn nothing
        (["--like-threshold", "100"], "--like-threshold: 100 is not a rating"),
        (["--like-threshold", "nan"], "--like-threshold: nan"),
        (["--folds", "1000"], "use at most 94"),
        # its list of folds was built first: an OverflowError's traceback, or GBs
        (["--folds", "99999999999999999999999"], "--folds: at most 1,000"),
    ]:
        proc = cli(*base, *extra)
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_run_refused_before_its_first_model_leaves_no_kept_progress(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # two users: P2 cannot split them, which it finds before anything is written (it
    # was inside the run, after an interrupted run's progress had been discarded)
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\nu1,a,5\nu1,b,3\nu2,a,4\n")
    (tmp_path / "i.csv").write_text("item_id,title\na,Alpha\nb,Beta\n")
    proc = cli(
        "benchmark", "--protocol", "p2", "--interactions", str(tmp_path / "r.csv"),
        "--items", str(tmp_path / "i.csv"), "--title-col", "title", "--set", "encoder=tfidf",
        "--peers", "popularity", "--algorithms", "episodic", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"shots": ()}, "shots: support sizes"),
        ({"shots": (-1,)}, "shots: support sizes"),
        ({"algorithms": []}, "at least one metarec model"),
        # 2.5 started a run; "5" was a raw TypeError
        ({"max_items": 2.5}, "max_items: must be a whole number >= 1, got 2.5"),
        ({"max_episodes": "5"}, "max_episodes: must be a whole number >= 1, got '5'"),
        # "4" ran every model, then failed writing the report; True was 1.0, all liked
        ({"like_threshold": "4"}, "like_threshold: expected a number or None, got '4'"),
        ({"like_threshold": True}, "like_threshold: expected a number or None, got True"),
    ],
)
def test_run_benchmark_refuses_options_before_loading_anything(
    options: dict, needle: str, tmp_path: Path
) -> None:
    from metarec.errors import ConfigError
    from metarec.evaluation.benchmark import run_benchmark

    # a data set that does not exist: the options are refused before it is looked for
    with pytest.raises(ConfigError, match=needle):
        run_benchmark("p2", "no-such-data", out=tmp_path, peers=["popularity"], **options)
    assert not any(tmp_path.iterdir())


def test_run_benchmark_refuses_a_dataset_it_did_not_clean(tmp_path: Path) -> None:
    # failed inside the first fit, at a row number of neither the file nor the frame
    from metarec.data import Dataset
    from metarec.errors import DataError
    from metarec.evaluation.benchmark import run_benchmark

    rows = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"],
                         "rating": [4.0, np.nan, 5.0]})  # fmt: skip
    ds = Dataset("raw", rows, pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]}))
    with pytest.raises(DataError, match=r"^raw: 1 problem\(s\) .*rating.*clean it first"):
        run_benchmark("p2", ds, out=tmp_path, peers=["popularity"], overrides=["encoder=tfidf"])
    assert not any(tmp_path.iterdir())


def test_run_benchmark_names_its_parameters_and_the_cli_its_flags(
    shared_data: Path, tmp_path: Path
) -> None:
    """In Python an error names the argument (``peers``), at the shell the flag."""
    from metarec.cli.options import named_as_flags
    from metarec.errors import ConfigError
    from metarec.evaluation.benchmark import run_benchmark

    with pytest.raises(ConfigError, match=r"^peers: unknown peer\(s\) \['pop'\]"):
        run_benchmark("p2", "ml-100k", root=shared_data, out=tmp_path, peers=["pop"])
    with pytest.raises(ConfigError, match=r"^like_threshold: 9 is not a rating on the data"):
        run_benchmark("p2", "ml-100k", root=shared_data, out=tmp_path, like_threshold=9)
    flags = named_as_flags({"like_threshold": "--like-threshold"})
    with pytest.raises(ConfigError, match=r"^--like-threshold: 9 is not a rating"), flags:
        raise ConfigError("like_threshold: 9 is not a rating on the data's scale [1, 5]")
    flags = named_as_flags({"like_threshold": "--like-threshold"})
    with pytest.raises(ConfigError, match=r"^seed: kept as it is"), flags:
        raise ConfigError("seed: kept as it is")
    assert not any(tmp_path.iterdir())


def test_result_names_keep_letters_of_any_script() -> None:
    from metarec.values import safe_name

    # both were "data": the second benchmark replaced the first's results
    assert safe_name("日本") != safe_name("中国")
    assert safe_name("données clics") == "données-clics"
    assert safe_name("my ratings") == "my-ratings"
    assert safe_name("a/../b") == "a-..-b"  # never a path
    assert safe_name("///") == "data"


def test_a_long_data_file_name_gives_result_names_a_file_system_takes(tmp_path: Path) -> None:
    from metarec.errors import ConfigError
    from metarec.evaluation.benchmark import _check_outputs
    from metarec.values import MAX_NAME_BYTES, safe_name

    # a 225-character name failed with "File name too long" once every model was fitted
    long, other = "b" * 225, "b" * 224 + "c"
    assert len(safe_name(long).encode()) <= MAX_NAME_BYTES
    assert safe_name(long) != safe_name(other)  # cut at one length, yet two results
    assert safe_name(long).startswith("b" * 80)
    cjk = safe_name("日本語の書籍" * 13)  # 78 characters, 234 bytes, cut at a character
    assert len(cjk.encode()) <= MAX_NAME_BYTES and cjk.startswith("日本語")
    assert safe_name("b" * MAX_NAME_BYTES) == "b" * MAX_NAME_BYTES  # short enough: as it was
    for name in (safe_name(long), cjk):  # the longest result name, with its seeds and folds
        _check_outputs(tmp_path, [tmp_path / f"p2-{name}-5fold-seeds3-abtest.png"])
    with pytest.raises(ConfigError, match=r"too long a file name .* up to \d+ bytes"):
        _check_outputs(tmp_path / "new", [tmp_path / "new" / f"p2-{long}-abtest.png"])


def test_a_run_beside_another_fold_plans_split_files_is_refused_before_any_work(
    shared_data: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    """A 2-fold run would replace folds 0 and 1 of a 3-fold run's split files (named
    by fold only) and leave its fold 2: the 3-fold report beside a mix of two plans."""
    for fold in range(3):
        raw = {"protocol": "p2", "dataset": "ml-100k", "seed": 0, "fold": fold, "n_folds": 3}
        (tmp_path / f"p2-ml-100k-fold{fold}-split.json").write_text(json.dumps(raw))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    res = cli(
        "benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--data", str(shared_data),
        "--folds", "2", "--peers", "popularity", "--algorithms", "episodic",
        "--out", str(tmp_path), "--quiet",
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln] == [res.stderr.strip()]  # one line
    assert f"--out: {tmp_path / 'p2-ml-100k-fold0-split.json'} holds fold 0 of a 3-fold" in (
        res.stderr
    )
    assert "give another out folder, or move" in res.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _no_fit(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a model was fitted: the run should have been refused before")


@pytest.mark.parametrize(
    "shots, needle",
    [
        # every model was fitted, then a ValueError traceback and a record without figures
        ("99999", "--shots: K = 99999: P2 evaluates a user at K only with more than K ratings"),
        # exit 0 with K = 2000 missing from a report whose command names it
        ("1,2000", "none of this split's test users of ml-100k has that many; the largest K"),
    ],
)
def test_a_support_size_no_test_user_can_take_is_refused_before_any_fit(
    shots: str,
    needle: str,
    shared_data: Path,
    tmp_path: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from metarec.evaluation import benchmark

    monkeypatch.setattr(benchmark, "_fold_run", _no_fit)
    res = cli(
        "benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--data", str(shared_data),
        "--algorithms", "fomaml", "--peers", "popularity", "--shots", shots, *TINY,
        "--quiet", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln] == [res.stderr.strip()]
    assert needle in res.stderr, res.stderr
    largest = int(res.stderr.rsplit(" ", 1)[1])
    assert 24 <= largest < 2000  # every P2 user has >= 25 ratings
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        # every model was fitted, then "ensemble: needs validation users", on every resume
        ({"validation_users": []}, "no validation users: the meta-learners stop early"),
        # accepted where drawing the split refuses it, and the report stated the rule
        ({"min_ratings": 0}, "min_ratings must be at least 1, got 0"),
    ],
)
def test_a_split_file_no_run_can_use_is_refused_before_any_fit(
    edit: dict[str, Any],
    needle: str,
    shared_data: Path,
    tmp_path: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from metarec.data import load_dataset
    from metarec.evaluation import benchmark
    from metarec.evaluation.p2 import make_p2_split

    monkeypatch.setattr(benchmark, "_fold_run", _no_fit)
    make_p2_split(load_dataset("ml-100k", shared_data)).save(tmp_path / "drawn.json")
    raw = json.loads((tmp_path / "drawn.json").read_text())
    if edit.get("validation_users") == []:
        raw["train_users"] += raw["validation_users"]
    raw.update(edit)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "p2-ml-100k-split.json").write_text(json.dumps(raw))
    res = cli(
        "benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--data", str(shared_data),
        "--algorithms", "episodic", "--peers", "popularity", "--shots", "5", *TINY,
        "--splits", str(tmp_path / "splits"), "--quiet", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln] == [res.stderr.strip()]
    assert needle in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_data_that_would_not_be_read_is_refused(
    shared_data: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # --data beside a folder of one's own, or one's own files, was dropped without a word
    own = shared_data / "ml-100k"
    for args in (
        ["benchmark", "--protocol", "p2", "--dataset", str(own), "--data", str(tmp_path)],
        ["train", "--dataset", str(own), "--data", str(tmp_path)],
        ["train", "--interactions", str(own / "ml-100k.inter"), "--data", str(tmp_path)],
    ):
        res = cli(*args, "--out", str(tmp_path / "out"))
        assert res.returncode == 2, (args, res.stderr)
        assert "--data" in res.stderr and "would not be read" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_the_largest_support_size_is_what_every_fold_allows(shared_data: Path) -> None:
    from metarec.data import load_dataset
    from metarec.errors import ConfigError
    from metarec.evaluation.benchmark import _check_shots, _split

    ds = load_dataset("ml-100k", root=shared_data)
    folds = [(f, _split("p2", ds, seed=0, fold=f, n_folds=5, splits=None)) for f in range(5)]
    with pytest.raises(ConfigError, match=r"none of fold \d's test users .* allows is \d+$") as exc:
        _check_shots(ds, (1, 5000), folds)
    largest = int(str(exc.value).rsplit(" ", 1)[1])
    _check_shots(ds, (0, largest), folds)  # taken: no error
    with pytest.raises(ConfigError, match=f"K = {largest + 1}:"):
        _check_shots(ds, (largest + 1,), folds)


@pytest.mark.parametrize(
    "taken", ["p2-ml-100k.json", "p2-ml-100k.md", "p2-ml-100k-curves.png", "p2-ml-100k-split.json"]
)
def test_a_folder_where_a_result_file_goes_is_refused_before_any_fit(
    taken: str,
    shared_data: Path,
    tmp_path: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from metarec.evaluation import benchmark

    monkeypatch.setattr(benchmark, "_fold_run", _no_fit)  # it failed 'Is a directory' after
    (tmp_path / taken).mkdir()
    res = cli(
        "benchmark", "--protocol", "p2", "--dataset", "ml-100k", "--data", str(shared_data),
        "--algorithms", "fomaml", "--peers", "popularity", *TINY, "--quiet",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert f"--out: {tmp_path / taken} is a folder, where the run writes a result file" in (
        res.stderr
    )
    assert [p.name for p in tmp_path.iterdir()] == [taken]


def _fold(shots: Sequence[str]) -> dict[str, Any]:
    """What ``_fold_run`` returns, for two models evaluated at ``shots`` by three users."""
    metrics = ("ndcg@10", "recall@10", "precision@10", "hit@10", "mrr@10", "itemcoverage@10")
    values = {"metarec-fomaml": [0.2, 0.4, 0.3], "popularity": [0.1, 0.3, 0.2]}
    return {
        "summary": {
            k: {m: {x: float(np.mean(v)) for x in metrics} for m, v in values.items()}
            for k in shots
        },
        "per_user": {k: {m: {x: v for x in metrics} for m, v in values.items()} for k in shots},
        "n_users": dict.fromkeys(shots, 3),
        "abtest": None,
        "timings": {"popularity": 0.1, "metarec-fomaml": 1.0},
        "configs": {},
        "ensemble_weights": {},
        "split_file": "p2-ml-100k-split.json",
        "split": {"protocol": "p2", "dataset": "ml-100k", "seed": 0},
        "split_rule": "",
    }


def test_run_benchmark_writes_no_record_it_could_not_report_whole(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metarec.errors import ConfigError, DataError
    from metarec.evaluation import benchmark, report

    folds: list[dict[str, Any]] = []
    monkeypatch.setattr(benchmark, "_fold_run", lambda *a, **k: folds[0])
    # the faked folds write a split file that is no split, which a later run would
    # refuse to replace (see test_run_store)
    monkeypatch.setattr(benchmark, "_check_split_files", lambda *a, **k: None)

    def run() -> dict[str, Any]:
        return benchmark.run_benchmark(
            "p2", "ml-100k", root=str(shared_data), out=tmp_path, peers=["popularity"],
            algorithms=["fomaml"], shots=(1, 3), overrides=["encoder=tfidf"], progress=False,
        )  # fmt: skip

    # a K that no test user could take, found only once evaluated (what the check before
    # the fits rules out): the record would lack it while its command names it
    folds[:] = [_fold(["1"])]
    with pytest.raises(ConfigError, match=r"^shots: no test user could be evaluated at K = 3 "):
        run()
    folds[:] = [_fold([])]  # a ValueError traceback from the report, with the JSON written
    with pytest.raises(DataError, match="no support size K had a test user to evaluate"):
        run()
    assert not list(tmp_path.glob("p2-ml-100k*"))

    folds[:] = [_fold(["1", "3"])]
    record = run()
    report_files = [tmp_path / "p2-ml-100k.md", tmp_path / "p2-ml-100k-curves.png"]
    old = [p.read_bytes() for p in report_files]
    saved = (tmp_path / "p2-ml-100k.json").read_bytes()
    assert json.loads(saved)["summary"] == record["summary"]

    # a report that fails to render: the JSON was written first, beside the old report
    def broken(record: dict[str, Any], stem: Path) -> dict[Path, bytes]:
        raise RuntimeError("a plot failed")

    monkeypatch.setattr(report, "render_plots", broken)
    folds[:] = [_fold(["1", "3"])]
    folds[0]["summary"]["1"]["popularity"]["ndcg@10"] = 0.9
    split_file = tmp_path / "p2-ml-100k-split.json"
    split_before = split_file.read_bytes()
    folds[0]["split"] = {**folds[0]["split"], "seed": 1}  # its split: written with it, or not
    with pytest.raises(RuntimeError, match="a plot failed"):
        run()
    assert (tmp_path / "p2-ml-100k.json").read_bytes() == saved
    assert split_file.read_bytes() == split_before
    assert [p.read_bytes() for p in report_files] == old


def test_a_report_removes_the_plots_it_no_longer_draws_and_nothing_else(tmp_path: Path) -> None:
    from metarec.evaluation.report import write_report

    record = json.loads((RESULTS / "p2-ml-100k.json").read_text())
    stem = tmp_path / "p2"
    # beside the report, but none of its plots: never removed
    kept = [tmp_path / "p2-notes.png", tmp_path / "p2-curves.png.bak", tmp_path / "p2.png"]
    for path in kept:
        path.write_bytes(b"mine")
    written = write_report(record, stem)
    assert {p.name for p in written} == {"p2.md", "p2-curves.png", "p2-abtest.png"}
    # a rerun without an A/B test: its old plot stood beside the new report
    write_report({**record, "abtest": None}, stem)
    assert not (tmp_path / "p2-abtest.png").exists()
    assert (tmp_path / "p2-curves.png").read_bytes()[:4] == b"\x89PNG"
    # --no-plots: the old curves stood beside the new report
    assert write_report(record, stem, plots=False) == [tmp_path / "p2.md"]
    assert sorted(tmp_path.iterdir()) == sorted([*kept, tmp_path / "p2.md"])
    assert all(p.read_bytes() == b"mine" for p in kept)

    # P1's plots (one per metric, a panel per state) by their own names; a folder
    # named like a plot is not a plot this report drew
    p1 = json.loads((RESULTS / "p1-ml-1m.json").read_text())
    for name in ("p1-mae.png", "p1-ndcg3.png", "p1-abtest.png", "p1-curves.png"):
        (tmp_path / name).write_bytes(b"old")
    (tmp_path / "p1-abtest.png").unlink()
    (tmp_path / "p1-abtest.png").mkdir()
    write_report(p1, tmp_path / "p1", plots=False)
    assert sorted(p.name for p in tmp_path.glob("p1*")) == [
        "p1-abtest.png", "p1-curves.png", "p1.md",  # P1 draws no curves: not its file
    ]  # fmt: skip


def test_report_write_of_a_damaged_record_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarec.cli import main

    record = json.loads((RESULTS / "p2-ml-100k.json").read_text())
    # the table shows a missing figure as "—"; the curves cannot draw it
    del record["summary"]["10"]["popularity"]["recall@10"]
    (tmp_path / "p2.json").write_text(json.dumps(record))
    old = {name: name.encode() for name in ("p2.md", "p2-curves.png", "p2-abtest.png")}
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    assert main(["report", "--write", str(tmp_path / "p2.json")]) == 2
    assert "'recall@10'" in capsys.readouterr().err
    # the A/B test's plot was drawn and written before the curves failed
    assert {name: (tmp_path / name).read_bytes() for name in old} == old


def test_a_p2_record_missing_a_model_at_one_k_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarec.cli import main

    # missing at the first K: left out of every table and curve without a word; at a
    # later K: "missing field 'popularity'", which named no place
    for k in ("0", "20"):
        record = json.loads((RESULTS / "p2-ml-100k.json").read_text())
        del record["summary"][k]["popularity"]
        (tmp_path / "p2.json").write_text(json.dumps(record))
        assert main(["report", str(tmp_path / "p2.json")]) == 2
        err = capsys.readouterr().err
        assert f"summary.{k}.popularity" in err and "at every K" in err, err


def _thirty_users(folder: Path, ratings_each: int) -> None:
    """r.csv: 30 users rating ``ratings_each`` of 40 items (no timestamps); i.csv: titles."""
    rows = [
        f"u{u},i{(u + n) % 40},{1 + (u * n) % 5}" for u in range(30) for n in range(ratings_each)
    ]
    (folder / "r.csv").write_text("user_id,item_id,rating\n" + "\n".join(rows) + "\n")
    (folder / "i.csv").write_text(
        "item_id,title\n" + "\n".join(f"i{n},Item {n}" for n in range(40)) + "\n"
    )


def test_p2_on_data_without_timestamps_says_its_support_is_drawn_at_random(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # "the first K ratings by time" was a seeded permutation without a word
    from metarec.evaluation.report import render_markdown

    _thirty_users(tmp_path, ratings_each=30)
    proc = run_cli(
        "benchmark", "--protocol", "p2", "--interactions", str(tmp_path / "r.csv"),
        "--items", str(tmp_path / "i.csv"), "--folds", "9", "--out", str(tmp_path / "o"), env=env,
    )  # fmt: skip
    assert proc.returncode == 2  # refused after the warning: 9 folds of 30 users
    assert "r: no timestamps, so each test user's support is K of their ratings drawn at " in (
        proc.stderr
    )
    record = json.loads((RESULTS / "p2-ml-100k.json").read_text())
    assert "drawn at random" not in render_markdown(record)
    record["support_order"] = "random"
    assert "; support: K ratings drawn at random per user (the data has no times that" in (
        render_markdown(record)
    )


def test_two_data_sets_whose_reports_share_a_name_are_refused(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # x1/books then x2/books: the second report overwrote the first, and exit 0
    for folder in ("x1", "x2"):
        (tmp_path / folder / "books").mkdir(parents=True)
        (tmp_path / folder / "books" / "books.inter").write_text(
            "user_id:token\titem_id:token\trating:float\n1\t10\t4\n"
        )
    proc = run_cli(
        "benchmark", "--protocol", "p2", "--dataset", str(tmp_path / "x1" / "books"),
        "--dataset", str(tmp_path / "x2" / "books"), "--out", str(tmp_path / "o"), env=env,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "x2/books': its report is named 'books', as that of --dataset" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_p2_on_a_frame_without_a_timestamp_column_is_said_to_draw_at_random(
    tmp_path: Path,
) -> None:
    # a frame built in memory may have no timestamp column: the check for one raised
    # KeyError 'timestamp'
    import pandas as pd

    from metarec.data import Dataset
    from metarec.errors import ConfigError
    from metarec.evaluation.benchmark import run_benchmark

    rows = [(f"u{u}", f"i{(u + n) % 40}", float(1 + (u * n) % 5)) for u in range(30)
            for n in range(30)]  # fmt: skip
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    items = pd.DataFrame({"item_id": [f"i{n}" for n in range(40)],
                          "title": [f"Item {n}" for n in range(40)]})  # fmt: skip
    with (
        pytest.warns(UserWarning, match="no timestamps, so each test user's support"),
        pytest.raises(ConfigError, match="folds: 9 folds of 30 users"),
    ):
        run_benchmark("p2", Dataset("x", inter, items), out=tmp_path, folds=9,
                      overrides=["encoder=tfidf"], progress=False)  # fmt: skip


def test_a_p1_benchmark_on_histories_too_short_for_its_rule_says_so(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    # numpy's 'Mean of empty slice', then 'no training interactions left (check filters
    # and splits)', where train said which rule left no one
    _thirty_users(tmp_path, ratings_each=8)
    res = cli(
        "benchmark", "--protocol", "p1", "--interactions", str(tmp_path / "r.csv"),
        "--items", str(tmp_path / "i.csv"), "--out", str(tmp_path / "o"), "--quiet",
        "--set", "encoder=tfidf",
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "keeps users with 13 to 100 ratings (MeLU's rule): 0 of 30 users here" in res.stderr
    assert "P2 (--protocol p2) takes users with 25 or more" in res.stderr
    assert "Traceback" not in res.stderr and "empty slice" not in res.stderr
    assert not (tmp_path / "o").exists()
    # a split's own rule is not called MeLU's
    from metarec.errors import DataError
    from metarec.evaluation.p1 import P1Split, check_p1_groups

    own = P1Split("x", 0, [], [], [], [], min_ratings=30, max_ratings=60)
    with pytest.raises(DataError, match=r"keeps users with 30 to 60 ratings: 0 of 9 users"):
        check_p1_groups(own, 9, "x")


def test_a_p1_benchmark_says_once_that_items_without_a_year_count_as_existing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # each fold's split was drawn twice, in the check of them all and in its turn, and
    # the warning came twice
    rows = [f"u{u},i{(u * 7 + n) % 40},{1 + (u * n) % 5}" for u in range(60) for n in range(20)]
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n" + "\n".join(rows) + "\n")
    years = ["" if n < 4 else "2000" if n >= 32 else "1990" for n in range(40)]
    (tmp_path / "i.csv").write_text(
        "item_id,title,year\n" + "".join(f"i{n},Item {n},{y}\n" for n, y in enumerate(years))
    )
    proc = run_cli(
        "benchmark", "--protocol", "p1", "--interactions", str(tmp_path / "r.csv"),
        "--items", str(tmp_path / "i.csv"), "--out", str(tmp_path / "o"), "--quiet",
        "--no-plots", "--peers", "bias", "--algorithms", "fomaml", *TINY, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = "r: 4 of 40 items have no year, so P1 counts them as existing items, never new"
    assert proc.stderr.count(said) == 1, proc.stderr


def test_peers_blind_on_the_data_are_left_out_of_the_defaults_and_said(tmp_path: Path) -> None:
    """On clicks of a catalogue with neither year nor genres, MeLU saw one unknown item
    (AUC 0.5) and the bias model a tie (the same ten items for everyone), and the
    report marked metarec's wins over both significant, without a word."""
    import pandas as pd

    from metarec.data import Dataset, clean
    from metarec.evaluation.benchmark import run_benchmark
    from metarec.evaluation.blind_peers import blind_note, blind_peers
    from metarec.evaluation.report import render_markdown

    rows = [(f"u{u}", f"b{(u * 7 + n * 3) % 40}", 1.0, float(n)) for u in range(30)
            for n in range(30)]  # fmt: skip
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    inter = inter.drop_duplicates(["user_id", "item_id"])
    items = pd.DataFrame(
        {
            "item_id": [f"b{n}" for n in range(40)],
            "title": [f"Book {n}" for n in range(40)],
            "description": [f"A tale of {n % 4} kings" for n in range(40)],
        }
    )
    ds = clean(Dataset("books", inter, items, rating_range=(1.0, 1.0)))
    with pytest.warns(UserWarning, match="peer melu-1 left out of the default peers: the "
                                         "catalogue has no year or genres"):  # fmt: skip
        record = run_benchmark(
            "p2",
            ds,
            out=tmp_path,
            algorithms=["episodic"],
            shots=[0, 5],
            overrides=["encoder=tfidf"],
            progress=False,
            plots=False,
        )
    ran = set(record["summary"]["5"])
    assert {"popularity", "knn", "als", "transfer"} <= ran
    assert not ran & {"melu-1", "melu-5", "bias"}
    assert record["blind_peers"]["bias"] == {
        "why": "every rating is 1, so every bias is 0 and its list is the tie order",
        "left_out": True,
    }
    assert "--peers" not in record["command"]  # the defaults, left out again on a rerun
    # what it warned of on stderr is in the record and the report: 3 validation users
    # gave the K >= 5 weights no bucket of their own, which the weights table hid
    assert any("K >= 5 had 3 (takes K >= 0's)" in w for w in record["warnings"])
    assert not any("left out of the default peers" in w for w in record["warnings"])  # said
    assert "**Warnings while it ran.**\n\n- ensemble: K >= 0 learned from 3" in render_markdown(
        record
    )
    assert record["encoder_id"].startswith("tfidf")  # the encoder by its fit, not its name
    md = render_markdown(record)
    assert "**Peers blind on this data.** Left out: melu-1, melu-5 (the catalogue has no " in md
    assert "; bias (every rating is 1, so every bias is 0 and its list is the tie order)." in md
    # named, a blind peer is kept, and the report says what a win over it is worth
    named = {p: {"why": w, "left_out": False} for p, w in blind_peers(ds, ["bias"]).items()}
    assert blind_note(named).startswith("Kept as named, but blind here: bias (every rating")
    assert blind_note(named).endswith("A win over a blind peer says nothing of metarec.")
    # the default list named: blind peers kept, and the command names them, or a rerun
    # of it would leave them out
    from metarec.evaluation.benchmark import P2_PEERS

    with pytest.warns(UserWarning, match="peer bias kept as named, but every rating is 1"):
        kept = run_benchmark("p2", ds, out=tmp_path / "named", algorithms=["episodic"],
                             peers=list(P2_PEERS), shots=[0, 5], overrides=["encoder=tfidf"],
                             progress=False, plots=False)  # fmt: skip
    assert {"melu-1", "bias"} <= set(kept["summary"]["5"])
    assert f"--peers {','.join(P2_PEERS)}" in kept["command"]
    assert "Kept as named, but blind here: melu-1, melu-5 (" in render_markdown(kept)
    # without K = 5 among the shots there is no A/B test, and the report says so (its
    # section and -abtest.png were missing without a word)
    with pytest.warns(UserWarning, match=r"books: no offline A/B test: it is run at K = 5"):
        no_ab = run_benchmark("p2", ds, out=tmp_path / "no5", algorithms=["episodic"],
                              peers=["popularity"], shots=[0, 3], overrides=["encoder=tfidf"],
                              progress=False, plots=False)  # fmt: skip
    assert no_ab["abtest"] is None
    assert "## Offline A/B test (P4)\n\nNot run: it is run at K = 5, and the support sizes " in (
        render_markdown(no_ab)
    )
    assert "abtest_not_run" not in record and record["abtest"]
    # an edited entry is named, not an AttributeError in the renderer
    from metarec.errors import DataError
    from metarec.evaluation.report import check_record_fields

    with pytest.raises(DataError, match=r"r\.json, field 'blind_peers\.bias': expected"):
        saved = json.loads(json.dumps(record))  # as the record is read back
        check_record_fields({**saved, "blind_peers": {"bias": "x"}}, "r.json")
    # MovieLens' items have years and genres, and ratings on 1-5: no peer is blind
    stars = [float(1 + i % 5) for i in range(len(inter))]
    ml = Dataset("ml", inter.assign(rating=stars), items.assign(year=1990.0), rating_range=(1, 5))
    assert blind_peers(ml, ["melu-1", "melu-5", "bias", "bias-median"]) == {}
    # clicks declared on a 0-1 scale are every one 1 all the same
    ones = Dataset("ml", inter, items.assign(year=1990.0), rating_range=(0, 1))
    # and MeLU, fitted to one rating, learns nothing from the years and genres it reads
    assert blind_peers(ones, ["bias", "melu-1", "knn"]) == {
        "bias": "every rating is 1, so every bias is 0 and its list is the tie order",
        "melu-1": "every rating is 1, so MeLU, a regressor of the rating, learns nothing "
        "that tells one item from another",
    }


def test_what_cleaning_dropped_is_said_recorded_and_reported(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A third of the ratings (items the items file lacks) were dropped without a word:
    train printed the cleaning report, the benchmark neither printed nor recorded it,
    and its report described data other than the files given."""
    from metarec.evaluation.report import render_markdown

    rows = [f"u{u},i{(u * 7 + n) % 40},{1 + (u * n) % 5}" for u in range(60) for n in range(20)]
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n" + "\n".join(rows) + "\n")
    (tmp_path / "i.csv").write_text(  # items i0 to i3 missing; i4 has no text at all
        "item_id,title\n" + "".join(f"i{n},{'' if n == 4 else f'Item {n}'}\n"
                                    for n in range(4, 40))
    )  # fmt: skip
    proc = run_cli(
        "benchmark", "--protocol", "p1", "--interactions", str(tmp_path / "r.csv"),
        "--items", str(tmp_path / "i.csv"), "--out", str(tmp_path / "o"), "--quiet",
        "--no-plots", "--peers", "bias", "--algorithms", "fomaml", *TINY, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(next((tmp_path / "o").glob("p1-*.json")).read_text())
    dropped = record["cleaning"]["dropped"]
    gone = sum(v for k, v in dropped.items() if not k.startswith("items table: "))
    assert record["cleaning"]["rows_in"] == 1200 == record["cleaning"]["rows_out"] + gone
    assert any(k.startswith("items table: ") and v == 1 for k, v in dropped.items())
    said = f"r: cleaning dropped data before the benchmark: {record['cleaning']['rows_out']:,} of"
    assert proc.stderr.count(said) == 1, proc.stderr[-2000:]
    md = render_markdown(record)
    assert f"**Data cleaned before the run.** {record['cleaning']['rows_out']:,} of 1,200" in md
    assert "1 item (item has neither text nor title)" in md
    assert not any("cleaning dropped" in w for w in record.get("warnings", []))  # said once
    # a damaged record's cleaning is named, not rendered
    from metarec.errors import DataError
    from metarec.evaluation.report import check_record_fields

    record["cleaning"]["dropped"] = {"x": "many"}
    with pytest.raises(DataError, match=r"r\.json, field 'cleaning\.dropped\.x': expected a"):
        check_record_fields(record, "r.json")


def test_a_long_model_name_is_cut_in_the_plots_not_across_them(tmp_path: Path) -> None:
    import warnings

    from metarec.evaluation.report import _label, render_plots

    long = "mine-" + "x" * 240 + "-v2"
    record = json.loads((RESULTS / "p2-ml-100k.json").read_text())
    for by_model in record["summary"].values():
        by_model[long] = by_model.pop("popularity")
    with warnings.catch_warnings():
        # a 250-character legend entry pushed the panels out: "Tight layout not applied"
        warnings.simplefilter("error")
        assert render_plots({**record, "abtest": None}, tmp_path / "p2")
    assert _label("metarec-fomaml") == "metarec-fomaml"
    assert len(_label(long)) == 40 and _label(long).startswith("mine-x")
    assert _label(long).endswith("x-v2") and "…" in _label(long)

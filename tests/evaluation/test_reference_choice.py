"""A benchmark's reference is the best metarec model on the test users: its marks account
for that choice, P1's in-sample warm state gets none, and the committed records were
re-judged by the script that says so."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from metarec.errors import DataError
from metarec.evaluation.report import check_record_fields, render_markdown

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def _rejudge_module() -> Any:
    path = ROOT / "benchmarks" / "maintenance" / "rejudge_significance.py"
    spec = importlib.util.spec_from_file_location("rejudge_significance", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text())


def _legacy(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as a run before 2026-12-04 wrote it: marks by Holm's p alone."""
    old = copy.deepcopy(record)
    old.pop("reference_chosen_from")
    for by_metric in old["significance"].values():
        for by_peer in by_metric.values():
            for comp in by_peer.values():
                del comp["p_choice"]
                comp["significant"] = comp["p_holm"] < 0.05
    return old


@pytest.mark.parametrize("name", ["p1-ml-1m.json", "p2-ml-100k.json"])
def test_committed_records_are_what_the_rejudging_gives(name: str) -> None:
    rejudge = _rejudge_module().rejudge
    record = _load(name)
    assert rejudge(record) == record  # twice changes nothing
    legacy = _legacy(record)
    if name.startswith("p1"):  # the warm state's tests as an old run kept them
        legacy["significance"]["warm"] = legacy["significance"]["user_cold"]
    assert rejudge(legacy) == record


def test_the_reference_is_said_to_be_the_best_of_n_and_its_marks_account_for_it() -> None:
    record = _load("p1-ml-1m.json")
    n = record["reference_chosen_from"]["user_cold"]
    assert n == sum(m.startswith("metarec-") for m in record["summary"]["user_cold"])
    comp = record["significance"]["user_cold"]["mae"]["metarec-maml"]
    # Holm alone would have marked it (p 0.033); picked from 5, 0.167 does not
    assert comp["p_holm"] < 0.05 <= comp["p_choice"] == pytest.approx(n * comp["p_holm"])
    assert not comp["significant"]
    text = render_markdown(record)
    assert f"reference: {record['reference']['user_cold']}, best of {n})" in text
    assert "multiplied by N (p · N < 0.05" in text
    # a record from before: Holm's p alone, and the old legend
    old = render_markdown(_legacy(record))
    assert "best of" not in old and "`*` marks a significant (p < 0.05) win" in old


def test_the_warm_state_is_in_sample_and_untested() -> None:
    record = _load("p1-ml-1m.json")
    assert record["significance"]["warm"] == {}
    text = render_markdown(record)
    warm = text[text.index("## warm") : text.index("## user_cold")]
    assert "no tests)" in warm and "In-sample: these are the validation users" in warm
    assert "*" not in warm.replace("**", "")  # bold stays, no marks


def test_a_mark_that_disagrees_with_its_p_choice_is_refused() -> None:
    record = _load("p2-ml-100k.json")
    comp = record["significance"]["10"]["ndcg@10"]["metarec-ensemble"]
    assert comp["p_holm"] < 0.05 and not comp["significant"]  # Holm alone would mark it
    comp["significant"] = True
    with pytest.raises(DataError, match=r"metarec-ensemble.significant': expected False for p_"):
        check_record_fields(record, "p2.json")
    comp["significant"], comp["p_choice"], was = False, 1.5, comp["p_choice"]
    with pytest.raises(DataError, match="p_choice': expected a p-value in"):
        check_record_fields(record, "p2.json")
    comp["p_choice"] = was
    check_record_fields(record, "p2.json")
    record["reference_chosen_from"]["3"] = 0
    with pytest.raises(DataError, match=r"reference_chosen_from\.3': expected a whole number"):
        check_record_fields(record, "p2.json")


def test_an_ensemble_that_is_a_peer_alone_is_not_the_reference() -> None:
    """A run whose learned weights put everything on the bias model from K = 1 up made
    "metarec-ensemble" the reference, the bias model with median cuts under another
    name, reported as beating the bias model significantly."""
    from metarec.evaluation.benchmark import peer_alone

    def table(**rows: dict[str, float]) -> dict[str, dict[str, float]]:
        return {f"K>={b.removeprefix('k')}": w for b, w in rows.items()}

    ours, peer = {"metarec-fomaml": 1.0, "bias": 0.0}, {"metarec-fomaml": 0.0, "bias": 1.0}
    # P1's users adapt on 3 ratings or more: the buckets from K >= 1 (up to 3) on don't count
    biased = table(k0=ours, k1=ours, k3=peer, k5=peer, k10=peer, k20=peer)
    assert peer_alone([biased], "p1", "user_cold")
    assert not peer_alone([biased, table(k0=ours, k1=ours, k3=peer, k5=ours)], "p1", "item_cold")
    assert not peer_alone([table(k0=peer, k1=peer, k3=ours)], "p1", "user_cold")
    # P2: the bucket of each K alone
    assert peer_alone([biased], "p2", "20") and peer_alone([biased], "p2", "4")
    assert not peer_alone([biased], "p2", "1") and not peer_alone([biased], "p2", "0")
    assert not peer_alone([{}], "p2", "20") and not peer_alone([], "p1", "warm")  # no ensemble

    record = _load("p2-ml-100k.json")
    assert record["reference"]["10"] == "metarec-stacked"
    record["reference_excluded"] = {"10": ["metarec-ensemble"]}
    check_record_fields(record, "p2.json")
    said = "K=10: metarec-stacked, best of 7; not metarec-ensemble, a peer alone for these users"
    assert said in render_markdown(record)
    record["reference_excluded"] = {"20": [record["reference"]["20"]]}
    with pytest.raises(DataError, match=r"'reference_excluded\.20': expected models other than"):
        check_record_fields(record, "p2.json")


def test_rejudging_keeps_an_excluded_ensemble_out_of_the_count() -> None:
    """The script recounted the candidates from the summary and so put the excluded
    ensemble back: twice the p_choice, and marks lost."""
    rejudge = _rejudge_module().rejudge
    record = _load("p2-ml-100k-fomaml-repeat-a.json")
    record["reference_excluded"] = {"10": ["metarec-ensemble"]}
    ours = {m for m in record["summary"]["10"] if m.startswith("metarec-")}
    again = rejudge(record)
    assert again["reference_chosen_from"]["10"] == len(ours) - 1
    assert rejudge(again) == again  # twice changes nothing

"""The speed benchmark runs end to end and reports metarec beside MeLU (tiny settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metarec.evaluation.speed import run_speed_benchmark


@pytest.mark.slow
def test_speed_benchmark_reports_both_systems(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    run_speed_benchmark(
        dataset="ml-100k", root=str(shared_data), out=tmp_path, repeats=3,
        quickstart=False, progress=False, encoder="tfidf", max_train_users=60,
    )  # fmt: skip
    record = json.loads((tmp_path / "speed.json").read_text())
    for key in ("support10_steps5", "support50_steps1", "support10_steps0"):
        for system in ("metarec", "melu"):
            lat = record["adaptation"][key][system]
            assert 0 < lat["p50_ms"] <= lat["p99_ms"]
    assert record["batched"]["metarec"]["users_per_s"] > 0
    assert {
        "metarec-fomaml-b64",
        "metarec-fomaml-b64-q10",
        "metarec-maml-b64",
        "melu-1",
        "melu-5",
    } <= set(record["training"])
    md = (tmp_path / "speed.md").read_text()
    assert "Adaptation latency" in md and "MeLU" in md

"""The speed benchmark runs end to end and reports metarec beside MeLU (tiny settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metarec.errors import DatasetNotFoundError, ModelError
from metarec.evaluation.speed import run_speed_benchmark


@pytest.mark.slow
def test_speed_benchmark_reports_both_systems(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    import metarec.evaluation.speed as speed

    def nowhere(root: str | None) -> str:
        raise DatasetNotFoundError("data set 'ml-100k' not found (looked in: nowhere)")

    # a quickstart that cannot run loses none of the figures measured before it
    monkeypatch.setattr(speed, "quickstart_folder", nowhere)
    run_speed_benchmark(
        dataset="ml-100k", root=str(shared_data), out=tmp_path, repeats=3,
        quickstart=True, progress=False, encoder="tfidf", max_train_users=60,
    )  # fmt: skip
    record = json.loads((tmp_path / "speed.json").read_text())
    assert record["quickstart"] is None and "not found" in record["quickstart_failed"]
    for key in ("support10_steps5", "support50_steps1", "support10_steps0"):
        for system in ("metarec", "melu"):
            lat = record["adaptation"][key][system]
            # three calls: a p99 would only be the slowest, so none is given
            assert lat["p50_ms"] > 0 and "p99_ms" not in lat and lat["threads"] >= 1
    assert record["batched"]["metarec"]["users_per_s"] > 0
    assert "p99_ms" not in record["batched"]["metarec"]  # 5 calls
    # each training row says the threads it ran on: second-order MAML on one
    assert record["training"]["metarec-maml-b64"]["threads"] == 1
    assert record["training"]["melu-5"]["threads"] == torch.get_num_threads()
    assert len(record["load_average_before"]) == 3
    assert {
        "metarec-fomaml-b64",
        "metarec-fomaml-b64-q10",
        "metarec-maml-b64",
        "melu-1",
        "melu-5",
    } <= set(record["training"])
    # MeLU's epochs alone are timed, as metarec's are, not its setup
    melu = record["training"]["melu-1"]
    assert melu["epoch_s"] == sorted(melu["epochs_s"])[len(melu["epochs_s"]) // 2]
    # what was timed, so that a later default does not pass for it
    assert record["config"]["seed"] == 0 and record["encoder_name"] == "tfidf"
    assert record["max_train_users"] == 60 and record["melu"]["local_steps"] == 5
    md = (tmp_path / "speed.md").read_text()
    assert "Adaptation latency" in md and "MeLU" in md
    # a reduced run named the full command, under figures that command does not give
    assert record["command"] == (
        'python -c "from metarec.evaluation.speed import run_speed_benchmark; '
        "run_speed_benchmark(dataset='ml-100k', seed=0, repeats=3, encoder='tfidf', "
        'max_train_users=60)"'
    )
    assert f"Reproduce: `{record['command']}`" in md
    assert "— (under 100 calls)" in md and "Torch threads each row ran on: 1: " in md


def test_a_run_at_every_default_is_reproduced_by_the_cli_command() -> None:
    from metarec.evaluation.speed import _speed_command

    defaults = {"repeats": 200, "quickstart": True, "encoder": "minilm",
                "max_train_users": None, "train_epochs": 3}  # fmt: skip
    assert _speed_command("ml-1m", 3, **defaults) == (
        "metarec benchmark --protocol speed --dataset ml-1m --seed 3"
    )
    assert _speed_command("ml-1m", 3, **defaults | {"quickstart": False}).endswith(
        "run_speed_benchmark(dataset='ml-1m', seed=3, quickstart=False)\""
    )


def test_quickstart_reads_ml_100k_where_the_data_look_finds_it(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root without ml-100k (found through $METAREC_DATA) ended the benchmark after
    every other figure: quickstart was given ROOT/ml-100k, which is no folder."""
    from metarec.data import load_dataset
    from metarec.evaluation.speed import quickstart_folder

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("METAREC_DATA", str(shared_data))
    with pytest.warns(UserWarning, match="is not in"):
        folder = quickstart_folder(str(empty))
    assert len(load_dataset("ml-100k", folder, clean=False).interactions) == 100_000
    assert Path(quickstart_folder(str(shared_data))).is_dir()


def test_a_failed_quickstart_is_said_in_the_report() -> None:
    from metarec.evaluation.speed import speed_markdown

    record = json.loads((Path(__file__).parents[2] / "benchmarks/results/speed.json").read_text())
    record |= {"quickstart": None, "quickstart_failed": "speed benchmark: ... failed: x"}
    md = speed_markdown(record)
    assert "| `metarec quickstart`: wall s / peak MiB | failed (see the record" in md
    del record["quickstart_failed"]
    assert "| not run | not run |" in speed_markdown(record)


def test_melu_runs_the_quickstart_job(shared_data: Path) -> None:
    from metarec.evaluation.speed import melu_quickstart

    maes = melu_quickstart(str(shared_data), epochs=1, min_updates=0, device="cpu")
    assert set(maes) == {"user_cold", "item_cold"}
    assert all(0 < v < 4 for v in maes.values())  # MAE on 1-5 stars


def test_child_process_wall_time_and_peak_memory() -> None:
    from metarec.evaluation.speed import _child_wall_and_peak

    done = _child_wall_and_peak(["-c", "x = bytearray(64 * 2**20)"])  # 64 MB touched
    assert done["ok"] and done["wall_s"] > 0
    assert done["peak_rss_mb"] >= 64
    # a failed job is no figure at all, not a short wall time
    with pytest.raises(ModelError, match=r"failed: .*ValueError: no such run"):
        _child_wall_and_peak(["-c", "raise ValueError('no such run')"])


def test_int8_variant_quantises_quietly_and_degrades_without_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import warnings

    import torch

    from metarec.evaluation.speed import int8_variant, quantization_notices_off

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(8, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quantization_notices_off():
            quant = int8_variant(model)
            assert quant is not None
            y = quant(x)
    assert not [w for w in caught if "quantiz" in str(w.message).lower()]
    assert type(quant[0]) is not torch.nn.Linear  # a dynamically quantised layer
    torch.testing.assert_close(y, model(x), atol=0.05, rtol=0.1)  # int8 weights: close, not equal
    monkeypatch.delattr(torch.ao.quantization, "quantize_dynamic")
    assert int8_variant(model) is None


def test_a_record_of_other_data_or_seed_is_named_by_them() -> None:
    # a run on ml-1m replaced ml-100k's speed.json without a word
    from metarec.evaluation.speed import speed_stem

    assert speed_stem("ml-100k", 0) == "speed"  # the README's table
    assert speed_stem("ml-1m", 0) == "speed-ml-1m"
    assert speed_stem("ml-100k", 3) == "speed-ml-100k-seed3"

"""An interrupted multi-fold benchmark resumes at its first unfinished fold, with the
figures an uninterrupted run gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from metarec.evaluation import benchmark
from metarec.evaluation.fold_store import FoldStore


def test_only_the_same_commands_folds_are_read(tmp_path: Path) -> None:
    store = FoldStore(tmp_path, "p2-x-3fold", {"seed": 0, "shots": (1, 3)})
    assert store.finished() == {}
    store.start()
    store.save(0, {"summary": {"3": {"m": {"ndcg@10": 0.5}}}})
    store.save(2, {"summary": {}})
    (store.dir / "fold1.json").write_text('{"cut sh')  # a fold cut short: fitted again
    again = FoldStore(tmp_path, "p2-x-3fold", {"seed": 0, "shots": [1, 3]})
    assert set(again.finished()) == {0, 2}
    assert again.finished()[0]["summary"]["3"]["m"]["ndcg@10"] == 0.5
    other = FoldStore(tmp_path, "p2-x-3fold", {"seed": 1, "shots": [1, 3]})
    assert other.finished() == {}
    other.start()  # another command: the first one's folds are gone
    assert sorted(p.name for p in other.dir.iterdir()) == ["key.json"]
    other.clear()
    assert not other.dir.exists()


@pytest.mark.slow
def test_a_resumed_run_gives_the_uninterrupted_figures(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    options: dict[str, Any] = dict(
        root=str(shared_data), folds=2, peers=["popularity"], algorithms=["episodic"],
        shots=[3], overrides=["encoder=tfidf"], progress=False, plots=False,
    )  # fmt: skip
    whole = benchmark.run_benchmark("p2", "ml-100k", out=tmp_path / "whole", **options)

    fitted: list[int | None] = []
    fold_run = benchmark._fold_run

    def interrupted_at_fold_1(*args: Any, **kwargs: Any) -> dict[str, Any]:
        fitted.append(kwargs["fold"])
        if kwargs["fold"] == 1 and fitted.count(1) == 1:
            raise KeyboardInterrupt
        return fold_run(*args, **kwargs)

    monkeypatch.setattr(benchmark, "_fold_run", interrupted_at_fold_1)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        benchmark.run_benchmark("p2", "ml-100k", out=out, **options)
    assert (out / ".p2-ml-100k-2fold.partial" / "fold0.json").exists()
    assert not (out / "p2-ml-100k-2fold.json").exists()
    resumed = benchmark.run_benchmark("p2", "ml-100k", out=out, **options)
    assert fitted == [0, 1, 1]  # fold 0 was not fitted again
    assert not (out / ".p2-ml-100k-2fold.partial").exists()
    for field in ("summary", "std", "per_fold", "significance", "ci95", "ensemble_weights"):
        assert json.dumps(resumed[field], default=str) == json.dumps(whole[field], default=str)


def test_the_key_follows_the_data_and_takes_any_catalogue() -> None:
    import pandas as pd

    from metarec.data.schema import Dataset

    inter = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "rating": [4.0]})
    items = pd.DataFrame({"item_id": ["i"], "title": ["Heat"], "tags": [["crime", "la"]]})
    ds = Dataset("mine", inter, items, None, (1.0, 5.0), None)
    key = benchmark._run_key("p2", ds, splits=None, seed=0, shots=(1, 3))
    # what is stored and compared: the key as it reads back from JSON
    assert FoldStore(Path("unused"), "x", key).key["shots"] == [1, 3]
    assert key["interactions"].startswith("1:")
    rerated = Dataset("mine", inter.assign(rating=5.0), items, None, (1.0, 5.0), None)
    assert benchmark._run_key("p2", rerated, splits=None, seed=0, shots=(1, 3)) != key

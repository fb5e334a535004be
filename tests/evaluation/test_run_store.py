"""An interrupted benchmark resumes at the model it was fitting, in the fold it was in,
with the figures an uninterrupted run gives."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from metarec.evaluation import benchmark
from metarec.evaluation.run_store import RunStore


def test_only_the_same_commands_folds_are_read(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "p2-x-3fold", {"seed": 0, "shots": (1, 3)})
    assert store.finished() == {}
    store.start()
    store.save(0, {"summary": {"3": {"m": {"ndcg@10": 0.5}}}})
    store.save(2, {"summary": {}})
    (store.dir / "fold1.json").write_text('{"cut sh')  # a fold cut short: fitted again
    again = RunStore(tmp_path, "p2-x-3fold", {"seed": 0, "shots": [1, 3]})
    assert set(again.finished()) == {0, 2}
    assert again.finished()[0]["summary"]["3"]["m"]["ndcg@10"] == 0.5
    other = RunStore(tmp_path, "p2-x-3fold", {"seed": 1, "shots": [1, 3]})
    assert other.finished() == {}
    # another command: the first one's folds are gone, and it is said why (a commit
    # in between refitted every model without a word)
    with pytest.warns(UserWarning, match=r"not reused \(its seed differ from this run's\)"):
        other.start()
    assert sorted(p.name for p in other.dir.iterdir()) == ["key.json"]
    other.clear()
    assert not other.dir.exists()


def test_a_kept_model_is_read_back_only_when_whole(tmp_path: Path) -> None:
    import numpy as np

    from metarec.peers.popularity import Popularity

    popularity = Popularity()
    popularity.scores = np.array([3.0, 1.0, 2.0])  # as fitted
    record: dict[str, Any] = {"fit_s": 0.1, "config": None, "result": {"summary": {"3": {}}}}
    store = RunStore(tmp_path, "p2-x", {"seed": 0})
    store.start()
    store.save_model(None, 0, "popularity", record, popularity)
    store.save_model(None, 1, "knn", record, None)  # nothing needs it later: figures only

    again = RunStore(tmp_path, "p2-x", {"seed": 0})
    kept = again.finished_model(None, 0, "popularity", needed=True)
    assert kept is not None and kept[0]["fit_s"] == 0.1
    assert isinstance(kept[1], Popularity) and np.array_equal(kept[1].scores, popularity.scores)
    assert again.finished_model(None, 1, "knn", needed=False) == ({"name": "knn", **record}, None)
    assert again.finished_model(None, 1, "knn", needed=True) is None  # no model kept: refit
    assert again.finished_model(None, 1, "als", needed=False) is None  # another model there
    assert again.finished_model(0, 0, "popularity", needed=False) is None  # another fold
    (store.dir / "split" / "00-popularity" / "model" / "peer.safetensors").write_bytes(b"cut")
    assert again.finished_model(None, 0, "popularity", needed=True) is None  # damaged: refit
    assert (
        RunStore(tmp_path, "p2-x", {"seed": 1}).finished_model(None, 1, "knn", needed=False) is None
    )  # another command's
    again.clear()  # what --no-resume does before the run
    assert again.finished_model(None, 1, "knn", needed=False) is None
    assert not again.dir.exists()


@pytest.mark.slow
def test_a_resumed_run_gives_the_uninterrupted_figures(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metarec.models.ensemble import Ensemble
    from metarec.models.meta_model import MetaModel
    from metarec.peers.knn import ContentKNN
    from metarec.peers.popularity import Popularity

    monkeypatch.setenv("METAREC_CACHE", str(tmp_path / "cache"))
    options: dict[str, Any] = dict(
        root=str(shared_data), folds=2, peers=["popularity", "knn"], algorithms=["fomaml"],
        shots=[3], progress=False, plots=False,
        overrides=["encoder=tfidf", "epochs=1", "max_train_users=60", "inner_steps=1"],
    )  # fmt: skip
    whole = benchmark.run_benchmark("p2", "ml-100k", out=tmp_path / "whole", **options)

    fits: list[str] = []
    for cls in (Popularity, ContentKNN, MetaModel, Ensemble):

        def counted(self: Any, data: Any, _fit: Any = cls.fit) -> Any:
            fits.append(type(self).__name__)
            if fits.count("Ensemble") == 2:  # fold 1's blend, once its three models are kept
                raise KeyboardInterrupt
            return _fit(self, data)

        monkeypatch.setattr(cls, "fit", counted)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        benchmark.run_benchmark("p2", "ml-100k", out=out, **options)
    partial = out / ".p2-ml-100k-2fold.partial"
    assert (partial / "fold0.json").exists() and not (partial / "fold0").exists()
    kept = sorted(p.name for p in (partial / "fold1").iterdir())
    assert kept == ["00-popularity", "01-knn", "02-metarec-fomaml"]
    assert not (partial / "fold1" / "01-knn" / "model").exists()  # no member: figures only
    assert not (out / "p2-ml-100k-2fold.json").exists()
    first_leg = json.loads((partial / "elapsed.json").read_text())["seconds"]
    assert first_leg > 0

    del fits[:]
    started = time.perf_counter()
    resumed = benchmark.run_benchmark("p2", "ml-100k", out=out, **options)
    # the total counts the interrupted session too, not only the last one
    last_leg = time.perf_counter() - started
    assert first_leg + 0.5 * last_leg < resumed["timings"]["total_s"] <= first_leg + last_leg
    # fold 0 read whole; fold 1's models read (popularity and the metarec model as
    # fitted models, knn as figures), so only the blend's weights are learned again
    assert fits == ["Ensemble"]
    assert not partial.exists()
    for field in (
        "summary", "std", "per_fold", "significance", "ci95", "ensemble_weights", "configs"
    ):  # fmt: skip
        assert json.dumps(resumed[field], default=str) == json.dumps(whole[field], default=str)


def test_the_key_follows_the_data_and_takes_any_catalogue() -> None:
    import pandas as pd

    from metarec.data.schema import Dataset

    inter = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "rating": [4.0]})
    items = pd.DataFrame({"item_id": ["i"], "title": ["Heat"], "tags": [["crime", "la"]]})
    ds = Dataset("mine", inter, items, None, (1.0, 5.0), None)
    key = benchmark._run_key("p2", ds, splits=None, seed=0, shots=(1, 3))
    # what is stored and compared: the key as it reads back from JSON
    assert RunStore(Path("unused"), "x", key).key["shots"] == [1, 3]
    assert key["interactions"].startswith("1:")
    rerated = Dataset("mine", inter.assign(rating=5.0), items, None, (1.0, 5.0), None)
    assert benchmark._run_key("p2", rerated, splits=None, seed=0, shots=(1, 3)) != key

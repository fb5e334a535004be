"""The README's Python blocks, run as written on the real ml-100k.

Only the training budgets and paths are changed, through the exact README text
each replaces (a README edit that drops one fails here, so the two cannot drift
apart unnoticed): the blocks as printed fit for about six minutes, and write
into the current folder; here they take about 30 s.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def edited(block: str, edits: list[tuple[str, str]]) -> str:
    for old, new in edits:
        assert block.count(old) == 1, f"the README block no longer has {old!r} exactly once"
        block = block.replace(old, new)
    return block


@pytest.mark.slow
def test_the_readme_python_blocks_run(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # "runs/ml100k" and "results" land here
    first, second, own = python_blocks()
    ns: dict[str, Any] = {}
    exec(
        edited(
            first,
            [
                ('root="../shared/data"', f"root={str(shared_data)!r}"),
                ("inner_steps=5)", "inner_steps=5, epochs=2)"),
            ],
        ),
        ns,
    )
    rec = ns["mr"].Recommender
    assert isinstance(ns["rec"], rec)  # loaded back from the run folder it was saved to
    assert (tmp_path / "runs" / "ml100k" / "model.safetensors").is_file()
    assert ns["feedback"]["item_id"].tolist() == ["n1", "1", "n1"]
    top = ns["rec"].recommend(ns["user"], k=10)
    assert isinstance(top, pd.DataFrame) and len(top) == 10
    assert "Toy Story (1995)" not in set(top["title"])  # rated: not recommended again
    assert "n1" in set(ns["rec"].recommend(ns["rec"].adapt([]), k=2000)["item_id"])

    exec(
        edited(
            second,
            [
                (
                    'objective="bce", epochs=3',
                    'objective="bce", epochs=1, max_train_users=100',
                ),
                (
                    "StackedRanker(seed=0)",
                    "StackedRanker(seed=0, bags=1, folds=2, max_iter=20, n_candidates=50)",
                ),
                ('algorithms=["episodic"])', 'algorithms=["episodic"], shots=[5], progress=False)'),
            ],
        ),
        ns,
    )
    assert set(ns["ens"].weight_table()) == {"K>=0", "K>=1", "K>=3", "K>=5", "K>=10", "K>=20"}
    top = np.asarray(ns["top"])
    assert top.shape == (len(ns["user_ids"]), 10)
    assert 0 < ns["record"]["summary"]["5"]["metarec-episodic"]["ndcg@10"] <= 1
    assert (tmp_path / "results" / "p2-ml-100k.md").is_file()

    # a class defined in exec'd text has no file to digest for a resumed run: said so
    with pytest.warns(UserWarning, match="'most-liked': no source file for .*MostLiked"):
        exec(
            edited(
                own,
                [
                    ('out="results", models=', 'out="own", models='),
                    (
                        'algorithms=["episodic"], shots=[5])',
                        'algorithms=["episodic"], shots=[5], progress=False, plots=False)',
                    ),
                ],
            ),
            ns,
        )
    at5 = ns["record"]["summary"]["5"]
    # the popularity peer's rule written again: judged on the same split, the same figures
    assert 0 < at5["most-liked"]["ndcg@10"] <= 1
    assert at5["most-liked"] == at5["popularity"]
    assert "most-liked" in ns["record"]["significance"]["5"]["ndcg@10"]

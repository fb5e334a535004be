"""The finished folds of a multi-fold benchmark, kept so that an interrupted run resumes.

A 5-fold P2 run takes one to two hours on two cores; losing it to a Ctrl-C or a
closed terminal at fold 4 should cost one fold, not the run. Each finished fold's
figures (the per-user values included) go to ``OUT/.NAME.partial/foldF.json``
beside a ``key.json`` that says which command produced them: the options, the
data's fingerprint and the code's commit. Run the same command again and the
folds found there are read instead of refitted; any other command ignores and
replaces them. The folder goes once the final report is written.

Resuming gives the figures of an uninterrupted run, because every model seeds
itself from the run's seed when it is fitted: no fold depends on the random
state another fold left behind (``tests/evaluation/test_fold_store.py`` holds a
resumed run to an uninterrupted one).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from metarec.errors import ModelError
from metarec.io import load_json, save_json


class FoldStore:
    def __init__(self, out: Path, name: str, key: dict[str, Any]) -> None:
        self.dir = Path(out) / f".{name}.partial"
        # as it reads back from JSON, so a saved key compares equal to a fresh one
        self.key = json.loads(json.dumps(key, default=str))

    def _same_command(self) -> bool:
        try:
            return bool(load_json(self.dir / "key.json") == self.key)
        except ModelError:  # no earlier run, or its key is unreadable
            return False

    def finished(self) -> dict[int, dict[str, Any]]:
        """The folds an interrupted run of the same command finished; {} otherwise."""
        if not self._same_command():
            return {}
        done: dict[int, dict[str, Any]] = {}
        for path in self.dir.glob("fold*.json"):
            try:
                done[int(path.stem.removeprefix("fold"))] = load_json(path)
            except (ModelError, ValueError):
                continue  # a fold written by hand or cut short: fitted again
        return done

    def start(self) -> None:
        """Forget whatever another command left here and record this one's key."""
        if self.dir.exists() and not self._same_command():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        save_json(self.dir / "key.json", self.key)

    def save(self, fold: int, run: dict[str, Any]) -> None:
        save_json(self.dir / f"fold{fold}.json", run)  # atomic: a fold is whole or absent

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

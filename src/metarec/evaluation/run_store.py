"""The finished work of a benchmark run, kept so that an interrupted run resumes.

A P2 run takes 25 minutes on two cores for one split and one to two hours over
5 folds; losing it to a Ctrl-C or a closed terminal should cost the model being
fitted, not the run. Two levels are kept under ``OUT/.NAME.partial/``, beside a
``key.json`` that says which command produced them (the options, the data's
fingerprint and the code's commit):

- ``foldF.json``: a finished fold's figures, the per-user values included.
- ``elapsed.json``: the time the interrupted sessions ran, added to the report's
  total, and the warnings they gave (:attr:`RunStore.warned`), which the report lists.
- ``FOLD/MODEL/``: within the fold being run (``split`` for a single split), each
  model that has been fitted and evaluated: ``result.json`` (its figures, fit time
  and config) and, for a model the ensemble or the A/B test still needs, the
  fitted model itself (``model/``, :func:`metarec.models.persist.save_model`:
  safetensors and JSON). A model nothing else needs keeps only its figures.

Run the same command again and what is found there is read instead of refitted
(``--no-resume`` starts over); any other command ignores it, and replaces it once
it has kept a model of its own (so a command refused for bad input, or stopped
before its first model, costs nothing). The folder goes once the final report is
written. One process at a time works here:
:func:`~metarec.evaluation.benchmark.run_benchmark` holds ``OUT/.NAME.lock``
(:mod:`metarec.locks`) throughout, so a second command aimed at the same report
is refused instead of taking over this one's progress.

Resuming gives the figures of an uninterrupted run, because every model seeds
itself from the run's seed when it is fitted, so nothing depends on the random
state another model left behind, and a saved model scores exactly as it did
before it was saved (``tests/evaluation/test_run_store.py`` holds a resumed run
to an uninterrupted one).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from metarec.errors import DataError, MetarecError, ModelError
from metarec.evaluation.report import check_evaluation
from metarec.io import load_json, save_json
from metarec.models.base import ScoringModel
from metarec.values import is_finite_number

RESULT = "result.json"
MODEL = "model"
ELAPSED = "elapsed.json"
BOOKKEEPING = {"key.json", ELAPSED}  # not progress: a run that kept only these kept nothing


# the note an interrupted run's KeyboardInterrupt carries: the folder its progress is in
KEPT_NOTE = "kept in "


class RunStore:
    def __init__(self, out: Path, name: str, key: dict[str, Any]) -> None:
        self.dir = Path(out) / f".{name}.partial"
        # as it reads back from JSON, so a saved key compares equal to a fresh one
        self.key = json.loads(json.dumps(key, default=str))
        self.earlier_s = 0.0  # what interrupted sessions of this command ran (see session)
        # the warnings every session of this command gave, in order: the caller adds
        # this session's (the models refitted in it warn again, those read back cannot)
        self.warned: list[str] = []
        self._same = self._same_command()
        self._started = False  # this command's key recorded, another's progress gone
        self._drop_quietly = False  # --no-resume: dropping its own progress was asked for

    def _same_command(self) -> bool:
        try:
            return bool(load_json(self.dir / "key.json") == self.key)
        except ModelError:  # no earlier run, or its key is unreadable
            return False

    def finished(self) -> dict[int, dict[str, Any]]:
        """The folds an interrupted run of the same command finished; {} otherwise."""
        if not self._same:
            return {}
        done: dict[int, dict[str, Any]] = {}
        for path in self.dir.glob("fold*.json"):
            try:
                fold = int(path.stem.removeprefix("fold"))
                record = load_json(path)
            except (ModelError, ValueError):
                continue  # a fold written by hand or cut short: fitted again
            try:
                check_evaluation(record, path)
                _check_kept_fold(record, path)
            except DataError as exc:
                warnings.warn(f"{exc}; fitting fold {fold} again", stacklevel=1)
                continue
            done[fold] = record
        return done

    def start(self) -> None:
        """Forget whatever another command left here and record this one's key."""
        if self.dir.exists() and not self._same:
            if not self._drop_quietly:
                self._say_what_is_dropped()
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        save_json(self.dir / "key.json", self.key)
        self._same = True
        self._started = True

    def _say_what_is_dropped(self) -> None:
        """A warning naming why kept progress is not read: the CLI had said "run the
        same command again to resume", and a commit in between (a README edit
        included) refitted every model without a word."""
        kept = [p for p in self.dir.rglob("*") if p.is_file() and p.name not in BOOKKEEPING]
        if not kept:
            return
        try:
            old = load_json(self.dir / "key.json")
        except ModelError:
            old = None
        if isinstance(old, dict):
            keys = sorted(set(old) | set(self.key))
            changed = [k for k in keys if old.get(k) != self.key.get(k)]
            why = f"its {', '.join(changed)} differ from this run's"
        else:
            why = "it does not say which command made it"
        warnings.warn(
            f"{self.dir}: the progress an interrupted run left here is not reused ({why}); "
            "starting afresh",
            # here, not a caller: start() is reached through session()'s contextmanager,
            # and a warning attributed to contextlib was printed as another library's
            stacklevel=1,
        )

    @contextmanager
    def session(
        self, *, resume: bool, started: float | None = None
    ) -> Iterator[dict[int, dict[str, Any]]]:
        """A run of the command: yields the folds to read back (none unless ``resume``),
        and on an error forgets a run that kept nothing, so a command refused before its
        first model (too few users, say) leaves no folder behind.

        What another command kept (or, without ``resume``, this one) is discarded only
        when this run keeps its first model or fold, not when the session opens: a run
        that fails before that (a bad input found late) leaves it to be resumed.

        The time an interrupted session ran (from ``started``, a ``perf_counter``
        reading, or from now) is kept, and :attr:`earlier_s` is what the sessions
        before this one spent, so a resumed run's total time counts every leg."""
        if not resume:
            self._same = False  # nothing read back
            self._drop_quietly = True
        finished = self.finished()
        self.earlier_s = self._earlier_seconds()
        self.warned = self._earlier_warnings()
        if self._same:
            self.start()  # its own progress: nothing to discard
        elif self.dir.exists() and not self._drop_quietly:
            self._say_what_is_dropped()  # now, not minutes later when it goes
            self._drop_quietly = True
        began = time.perf_counter() if started is None else started
        try:
            yield finished
        except BaseException as exc:
            if not self._started:
                raise  # nothing of this run kept, and what was there is left as it was
            kept = [p for p in self.dir.rglob("*") if p.is_file() and p.name not in BOOKKEEPING]
            if isinstance(exc, Exception) and not kept:
                self.clear()
            elif self.dir.exists():
                self._save_elapsed(self.earlier_s + time.perf_counter() - began)
                if isinstance(exc, KeyboardInterrupt):
                    # where, for the command's closing words (it said "OUT/.NAME.partial/")
                    # (add_note, but Python 3.10 lacks it; 3.11's keeps notes there too)
                    vars(exc).setdefault("__notes__", []).append(f"{KEPT_NOTE}{self.dir}")
            raise

    def _earlier_seconds(self) -> float:
        if not self._same:
            return 0.0
        try:
            seconds = load_json(self.dir / ELAPSED).get("seconds", 0.0)
            return float(seconds) if isinstance(seconds, (int, float)) else 0.0
        except (ModelError, AttributeError):  # none kept (interrupted before this existed)
            return 0.0

    def _save_elapsed(self, seconds: float) -> None:
        save_json(self.dir / ELAPSED, {"seconds": seconds, "warnings": self.warned})

    def _earlier_warnings(self) -> list[str]:
        if not self._same:
            return []
        try:
            said = load_json(self.dir / ELAPSED).get("warnings", [])
        except (ModelError, AttributeError):
            return []
        return [w for w in said if isinstance(w, str)] if isinstance(said, list) else []

    def save(self, fold: int, run: dict[str, Any]) -> None:
        self._begin()
        if self.warned:  # with the fold: a kill -9 or an OOM skips the session's own save
            self._save_elapsed(self.earlier_s)
        save_json(self.dir / f"fold{fold}.json", run)  # atomic: a fold is whole or absent
        shutil.rmtree(self._fold_dir(fold), ignore_errors=True)  # its models: in the fold now

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self._same = False  # nothing kept to read back
        self._started = False

    def _begin(self) -> None:
        if not self._started:
            self.start()

    # -- models within the fold being run ----------------------------------------
    def _fold_dir(self, fold: int | None) -> Path:
        return self.dir / ("split" if fold is None else f"fold{fold}")

    def _model_dir(self, fold: int | None, index: int, name: str) -> Path:
        # by position as well as name: two names that make the same file name stay apart
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self._fold_dir(fold) / f"{index:02d}-{safe}"

    def finished_model(
        self, fold: int | None, index: int, name: str, *, needed: bool
    ) -> tuple[dict[str, Any], ScoringModel | None] | None:
        """What a run of the same command kept of model ``name`` (the ``index``-th):
        its record and, when ``needed``, the fitted model; None if it must be fitted."""
        if not self._same:
            return None
        where = self._model_dir(fold, index, name)
        try:
            record = load_json(where / RESULT)
        except ModelError:  # never finished, or cut short
            return None
        if not isinstance(record, dict) or record.get("name") != name:
            return None
        try:
            _check_kept_model(record, name, where / RESULT)
        except DataError as exc:
            warnings.warn(f"{exc}; fitting {name} again", stacklevel=1)
            return None
        if not needed:
            return record, None
        from metarec.models.persist import load_model

        try:
            return record, load_model(where / MODEL)
        except (MetarecError, OSError):  # kept without its model, or damaged: fit again
            return None

    def save_model(
        self,
        fold: int | None,
        index: int,
        name: str,
        record: dict[str, Any],
        model: ScoringModel | None,
    ) -> None:
        """Keep a fitted and evaluated model's ``record`` and, if given, the model.
        The record is written last, so a model cut short while saving is fitted again."""
        from metarec.models.persist import save_model

        self._begin()
        where = self._model_dir(fold, index, name)
        shutil.rmtree(where, ignore_errors=True)
        if model is not None:
            save_model(model, where / MODEL)
        save_json(where / RESULT, {"name": name, **record})


def _check_kept_model(record: dict[str, Any], name: str, path: Path) -> None:
    """DataError unless a kept model's record can be read back (else it is fitted
    again): it had been merged as it was, so a damaged or edited one ended the resumed
    run in a traceback (a null result) or wrote its figures into the report (an nDCG
    of 42)."""
    fit_s = record.get("fit_s")
    if not is_finite_number(fit_s) or fit_s < 0:
        raise DataError(f"expected seconds >= 0, got {fit_s!r:.40}", path=path, field="fit_s")
    if record.get("config") is not None and not isinstance(record["config"], dict):
        raise DataError(
            f"expected an object or null, got {record['config']!r:.40}", path=path, field="config"
        )
    check_evaluation(record.get("result"), path, models={name})


def _check_kept_fold(record: dict[str, Any], path: Path) -> None:
    """The fields of a kept fold the report reads besides its figures."""
    timings = record.get("timings")
    if not isinstance(timings, dict) or not all(
        is_finite_number(v) and v >= 0 for v in timings.values()
    ):
        raise DataError(
            f"expected seconds >= 0 by model, got {timings!r:.60}", path=path, field="timings"
        )
    for field in ("configs", "split"):
        if not isinstance(record.get(field), dict):
            raise DataError(f"expected an object, got {record.get(field)!r:.40}", path=path,
                            field=field)  # fmt: skip

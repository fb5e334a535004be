"""After a catalogue change the model refused part way, the service re-reads the run it
was serving: the same folder (not where a moved link points now), and only if no
reload replaced the model in between."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import metarec.service.serving as serving
from metarec.errors import DataError
from metarec.service.metrics import Metrics
from metarec.service.serving import ModelHolder
from metarec.service.store import FeedbackStore

NEW = [{"item_id": "new", "title": "A New Film", "text": "x", "genres": None, "year": None}]


@pytest.fixture()
def runs(service_run: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two run folders and a link to the first, as a deployment publishes runs."""
    one, two = tmp_path / "run1", tmp_path / "run2"
    shutil.copytree(service_run, one)
    shutil.copytree(service_run, two)
    os.symlink(one, tmp_path / "current")
    return one, two, tmp_path / "current"


def _refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise DataError("refused")

    monkeypatch.setattr(serving, "apply_items", refuse)


@pytest.fixture()
def holder(tmp_path: Path) -> Iterator[ModelHolder]:
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    yield ModelHolder(store, Metrics(), 10, "cpu")
    store.close()


def test_the_same_folder_is_read_again_though_the_link_moved(
    runs: tuple[Path, Path, Path], holder: ModelHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two, current = runs
    first = holder.load(current)
    assert first.folder == one
    current.unlink()
    os.symlink(two, current)  # a retrained run published, no reload asked for yet
    _refusing(monkeypatch)
    with pytest.raises(DataError, match="refused"):
        holder.upsert_items(NEW)
    now = holder.current
    assert now is not first and now.generation == first.generation + 1
    assert now.folder == one and now.name == first.name and now.run == current


def test_a_reload_that_landed_first_is_not_undone(
    runs: tuple[Path, Path, Path], holder: ModelHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, two, current = runs
    holder.load(current)
    restore = holder._restore

    def reload_first(served: serving.Served) -> None:
        # SIGHUP or POST /admin/reload between the refusal and the re-read
        holder.load(two)
        restore(served)

    monkeypatch.setattr(holder, "_restore", reload_first)
    _refusing(monkeypatch)
    with pytest.raises(DataError, match="refused"):
        holder.upsert_items(NEW)
    assert holder.current.folder == two


def test_a_put_behind_a_refused_one_does_not_call_its_items_unchanged(
    runs: tuple[Path, Path, Path], holder: ModelHolder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PUT refused by the store after the model took its items, whose model could not be
    read afresh, leaves a model holding items no store has. A second PUT of the same
    items, already past its catch-up and waiting for the first, compared against that
    model and answered "unchanged": nothing was stored, and the next catch-up dropped
    them. It waits for the store instead (503), as every request does meanwhile."""
    from metarec.service.items import encode, item_frame

    holder.load(runs[2])
    frame = item_frame(NEW, holder.current.rec.items["text"])
    vectors = encode(holder.current.rec, frame)
    holder.current.rec.add_items(frame, vectors=vectors)  # what the refused PUT left
    holder._unstored = True
    with pytest.raises(serving.OutOfStepError, match="nothing was stored"):
        holder._upsert(frame, NEW, holder.current, vectors)
    assert not holder.store.added_items()

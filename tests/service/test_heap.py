"""The server process takes each loaded model out of the cyclic collector's full
passes (``gc.freeze``), whose walks over it stalled every request under load;
a service built inside someone else's process leaves that process's collector alone."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from metarec.service.app import create_app
from metarec.service.metrics import Metrics
from metarec.service.serving import ModelHolder
from metarec.service.settings import ServiceSettings
from metarec.service.store import FeedbackStore


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    s = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    yield s
    s.close()


def _collectable(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_each_load_freezes_the_heap_it_made_only_where_asked(
    service_run: Path, store: FeedbackStore
) -> None:
    gc.unfreeze()
    try:
        plain = ModelHolder(store, Metrics(), 10, "cpu").load(service_run)
        assert gc.get_freeze_count() == 0 and _collectable(plain)
        holder = ModelHolder(store, Metrics(), 10, "cpu", freeze_heap=True)
        first = holder.load(service_run)
        assert gc.get_freeze_count() > 0 and not _collectable(first)
        second = holder.load(service_run)  # a reload: the new model is frozen too
        assert second is not first and not _collectable(second)
    finally:
        gc.unfreeze()


def test_an_app_freezes_only_when_its_settings_say_so(service_run: Path, tmp_path: Path) -> None:
    for freeze in (False, True):
        db = f"sqlite:///{tmp_path / f'{freeze}.db'}"
        app = create_app(ServiceSettings(run=service_run, db_url=db, freeze_heap=freeze))
        try:
            assert app.state.holder.freeze_heap is freeze
        finally:
            app.state.store.close()
            gc.unfreeze()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_reload_lets_what_the_last_load_froze_be_collected(
    service_run: Path, store: FeedbackStore
) -> None:
    """A replaced model's reference cycles are not kept forever: each load unfreezes
    and collects before it freezes the new heap."""
    gc.unfreeze()
    try:
        holder = ModelHolder(store, Metrics(), 10, "cpu", freeze_heap=True)
        garbage = _Cycle()
        alive = weakref.ref(garbage)
        holder.load(service_run)  # freezes it with everything else alive now
        del garbage
        gc.collect()
        assert alive() is not None  # frozen: out of the collector's reach
        holder.load(service_run)
        assert alive() is None
    finally:
        gc.unfreeze()


def test_each_newly_cached_user_is_counted_towards_a_heap_trim(
    service_run: Path, store: FeedbackStore
) -> None:
    """Each cached user pins freed memory (1.1 MB a user on 20,000 items, 2.7 GB after
    2,000 users): the holder counts them, and trims once the heap has grown enough.
    Here any growth is enough; a cached answer keeps nothing new and is not counted."""
    from metarec.allocator import HeapTrimmer, release_freed_memory
    from metarec.service.store import NewEvent

    if not release_freed_memory():
        pytest.skip("malloc_trim is glibc's")
    holder = ModelHolder(store, Metrics(), 10, "cpu")
    holder.heap = HeapTrimmer(growth=-(1 << 62), every=1)
    served = holder.load(service_run)
    item = str(served.rec.items["item_id"].iloc[0])
    store.create_user("u1", {}, [NewEvent("e1", item, "rating", 5.0)])
    user = store.user("u1")
    assert user is not None
    holder.user_state(served, user)
    assert holder.heap.trims == 1
    holder.user_state(served, user)  # from the cache
    assert holder.heap.trims == 1

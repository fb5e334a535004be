"""The adaptation cache and the readers–writer lock, with real threads."""

from __future__ import annotations

import threading
import time

import pytest

from metarec.service.cache import AdaptationCache, ReadWriteLock


def test_cache_is_bounded_and_versioned() -> None:
    cache: AdaptationCache[str] = AdaptationCache(2)
    cache.put("a", (1, 3), "A")
    cache.put("b", (1, 1), "B")
    assert cache.get("a", (1, 3)) == "A"  # touches a: b is now the oldest
    cache.put("c", (1, 0), "C")
    assert len(cache) == 2 and cache.get("b", (1, 1)) is None
    assert cache.get("a", (1, 4)) is None  # a new event for a: the old state is unusable
    assert cache.get("a", (2, 3)) is None  # a new model generation: likewise
    cache.invalidate("a")
    assert cache.get("a", (1, 3)) is None and len(cache) == 1
    cache.clear()
    assert len(cache) == 0


def test_writer_excludes_readers_and_is_not_starved() -> None:
    lock = ReadWriteLock()
    inside: list[str] = []
    overlap: list[bool] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with lock.read():
                inside.append("r")
                overlap.append("w" in inside)
                time.sleep(0.001)
                inside.remove("r")

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    for _ in range(5):
        with lock.write():
            inside.append("w")
            overlap.append("r" in inside)
            time.sleep(0.002)
            inside.remove("w")
    waited = time.perf_counter() - t0
    stop.set()
    for t in readers:
        t.join()
    assert not any(overlap) and len(overlap) > 10
    assert waited < 2.0  # four busy readers did not starve the writer


def test_readers_are_not_starved_by_writers_back_to_back() -> None:
    # two clients' PUTs of a catalogue import: another writer was always waiting, so a
    # reader (an event, waiting a few seconds at most) never got in
    lock = ReadWriteLock()
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            with lock.write():
                time.sleep(0.02)

    writers = [threading.Thread(target=writer) for _ in range(2)]
    for t in writers:
        t.start()
    try:
        time.sleep(0.05)
        got_in = 0
        for _ in range(5):
            try:
                with lock.read(timeout=2.0):
                    got_in += 1
            except TimeoutError:
                pass
    finally:
        stop.set()
        for t in writers:
            t.join()
    assert got_in == 5
    # and a reader that times out leaves the lock as it was
    with lock.write(), pytest.raises(TimeoutError), lock.read(timeout=0.01):
        pass
    with lock.read(timeout=0.5), lock.read(timeout=0.5):
        pass


def test_a_bounded_catch_up_waits_its_bound_once_not_per_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a second request naming an item this process lacks waited the bound for the first
    # request's catch-up (_sync), then the bound again for this process's own change
    # being stored (_swap): twice the 5 s the README promises
    from metarec.service import serving
    from metarec.service.serving import ModelHolder, OutOfStepError

    monkeypatch.setattr(serving, "ITEM_CHANGE_WAIT_S", 1.0)

    class Changed:  # another process's change: version 2, where this one has seen 1
        def served_state(self) -> tuple[int, None]:
            return 2, None

    holder = ModelHolder.__new__(ModelHolder)  # the locks and state a catch-up reads
    holder.store, holder._seen, holder._failed, holder._unstored = Changed(), 1, None, False
    holder._sync, holder._swap = threading.Lock(), threading.Lock()
    holder._swap.acquire()  # this process's own change, being stored
    took: dict[str, float] = {}

    def request(name: str) -> None:
        start = time.monotonic()
        with pytest.raises(OutOfStepError):
            holder.sync(wait=True, bounded=True)
        took[name] = time.monotonic() - start

    first = threading.Thread(target=request, args=("first",))
    first.start()
    time.sleep(0.1)  # the first holds _sync, waiting on _swap
    request("second")
    first.join()
    holder._swap.release()
    assert took["first"] < 1.6 and took["second"] < 1.6, took

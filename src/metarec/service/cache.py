"""A bounded, thread-safe LRU cache of adapted users, and a readers–writer lock.

A cached entry is only valid for the model and feedback it was adapted on: the
key carries the model's generation and revision and the user's number of events,
so a new event, a model swap or an in-place change of the model makes old
entries unreachable even if an invalidation raced with a request that was still
adapting; :meth:`AdaptationCache.invalidate`
frees them early.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V")


class AdaptationCache(Generic[V]):
    """``(user_id, version) → value`` with least-recently-used eviction; one entry per user."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[str, tuple[Hashable, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, user_id: str, version: Hashable) -> V | None:
        with self._lock:
            hit = self._data.get(user_id)
            if hit is None or hit[0] != version:
                return None
            self._data.move_to_end(user_id)
            return hit[1]

    def put(self, user_id: str, version: Hashable, value: V) -> None:
        with self._lock:
            self._data[user_id] = (version, value)
            self._data.move_to_end(user_id)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def invalidate(self, user_id: str) -> None:
        with self._lock:
            self._data.pop(user_id, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class ReadWriteLock:
    """Many readers or one writer, neither starved: a waiting writer stops new readers,
    and a writer leaving lets the readers waiting then in before the next writer. Where
    writers came back to back (two clients' PUTs of a catalogue import), a reader never
    got in, and one that waits at most a few seconds was refused for the whole import."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self._waiting_readers = 0
        # set as a writer leaves with readers waiting: they go before the next writer,
        # until none is left waiting
        self._readers_turn = False

    @contextlib.contextmanager
    def read(self, timeout: float | None = None) -> Iterator[None]:
        """Held to read; ``timeout``: a TimeoutError past it, not holding the lock."""
        with self._cond:
            self._waiting_readers += 1
            try:
                if not self._cond.wait_for(self._reader_may_enter, timeout=timeout):
                    raise TimeoutError("lock not free to read")
                self._readers += 1
            finally:
                self._waiting_readers -= 1
                if self._waiting_readers == 0 and self._readers_turn:
                    self._readers_turn = False
                    self._cond.notify_all()  # a writer waiting for the turn to end
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    def _reader_may_enter(self) -> bool:
        return not self._writer and (self._readers_turn or not self._waiting_writers)

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers or self._readers_turn:
                    self._cond.wait()
            finally:  # interrupted (Ctrl-C), it must not stop readers for good
                self._waiting_writers -= 1
                self._cond.notify_all()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._readers_turn = self._waiting_readers > 0
                self._cond.notify_all()

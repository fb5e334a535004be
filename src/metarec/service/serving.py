"""The model being served: load, swap without downtime, grow the catalogue, adapt, recommend.

A :class:`Served` bundles one loaded :class:`Recommender` (or, for an ensemble
folder, an :class:`~metarec.ensemble_run.EnsembleRecommender`) with its name, a
generation number and a readers–writer lock. Requests take the current
``Served`` once and use it to the end, so a swap (``reload``) never changes
the model under a request in flight: the old object simply stops being
handed out. Adding items changes a model in place, under its write lock;
scoring holds the read lock.

Adapted users are cached (bounded LRU) under ``(generation, revision, number
of events)``: events are only ever added, so a user's count grows with every
piece of feedback, and a change of the model in place that adaptation reads (a
re-encoded item, a fold-in) bumps the revision under the write lock, so a stale
adaptation can never be served, even one a request finished and cached after
the change had cleared the cache. Readers of the catalogue (titles, ids,
search) hold the read lock too: adding items rebuilds them under the write lock. After a
restart the cache is empty and each user is re-adapted from the store on
their first request. For an ensemble the cached state is the user's blended
catalogue scores (every member adapted once), so a cached request is a sort;
reasons come from the ensemble's first metarec member's item vectors.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeGuard

import numpy as np
import pandas as pd
from sqlalchemy.exc import DatabaseError

from metarec.allocator import HeapTrimmer
from metarec.data.features import feature_readers
from metarec.ensemble_run import ENSEMBLE_FOLD_IN, EnsembleRecommender, ServedModel, load_run
from metarec.errors import DataError, MetarecError, ModelError, UnsupportedError
from metarec.explain import SCORED_WHOLE, explain_indices
from metarec.explain import prepare as prepare_explanations
from metarec.models.persist import MANIFEST, is_ensemble_dir
from metarec.recommender import Recommender, UserState
from metarec.service.cache import AdaptationCache, ReadWriteLock
from metarec.service.feedback import latest_events, ratings_of, reads_negatives, what_you_did
from metarec.service.items import (
    apply_items,
    encode,
    item_frame,
    layout_of,
    unchanged,
    unusable,
)
from metarec.service.metrics import Metrics
from metarec.service.store import ErasedUser, FeedbackStore, UserSummary

log = logging.getLogger("metarec.service")
# what became of a fold-in after an erasure: none can have read the user (no events);
# redone without them here and announced to the others; announced, but this process
# could not reload yet (it tries again, as after any change it cannot load); none is
# served (an ensemble, a run whose scores are not ratings), so none learned from them
FoldInAfterErasure = Literal["unaffected", "redone", "pending", "none"]
# a catch-up with the shared store that failed (a run deleted, the database busy) is
# tried again after this long, not on every request
SYNC_RETRY_S = 10.0

# torch.func (vmap/grad, used by adaptation and scoring) is not safe to run from several
# threads at once: concurrent transforms trip an internal functorch assertion. All model
# math in the service runs under this one lock; torch still uses every core inside a call.
TORCH_LOCK = threading.Lock()
# how long a request naming items waits for a PUT being stored (see storing_item_names)
# or for a catch-up (see sync)
ITEM_CHANGE_WAIT_S = 5.0
_UNSTORED = (
    "this server process holds items the feedback store refused and has not yet read "
    "the store afresh; nothing was stored, retry"
)
_HELD_UP = (
    "this server process is still taking a change (another process's, read from the "
    "feedback store, or one of its own being stored); nothing was stored, retry"
)

Announce = Literal["never", "if_moved", "always"]
Scale = tuple[float, float]  # a run's rating scale, (low, high)


@dataclass(frozen=True)
class ServedRef:
    """What every server process on a feedback store serves, as the store records it:
    the run as given (a link, which SIGHUP follows), the folder it led to when loaded
    (what the others load, so a link moved since is not followed by some processes
    and not others), and the last event the fold-in learned from (so processes that
    load at different times learn the same offsets).

    ``scales``: the rating scale of every run served on the store since it last held no
    feedback, so that ``retrain`` can refuse feedback given on another scale: a 1-5
    run served, then a 1-10 run (a warning at its start), and the 1-5 ratings were
    read as 1-10 ones, where only the last run served was compared. Empty in a ref
    recorded before this was kept."""

    run: str
    folder: str
    events_upto: int | None
    scales: tuple[Scale, ...] = ()
    # the model the folder held when recorded (run_name: its digest), so that a process
    # loading the folder later can tell it was rewritten in place; None before 2026-12-07
    model: str | None = None

    def dumps(self) -> str:
        return json.dumps(
            {
                "run": self.run,
                "folder": self.folder,
                "events_upto": self.events_upto,
                "scales": [list(scale) for scale in self.scales],
                **({"model": self.model} if self.model is not None else {}),
            }
        )

    @staticmethod
    def parse(text: str | None) -> ServedRef | None:
        if text is None:
            return None
        try:
            d = json.loads(text)
            upto = d["events_upto"]
            model = d.get("model")
            ref = ServedRef(
                str(d["run"]),
                str(d["folder"]),
                None if upto is None else int(upto),
                model=model if isinstance(model, str) else None,
            )
        except (ValueError, TypeError, KeyError, OverflowError):
            return ServedRef(text, text, None)  # a bare path, as first recorded
        try:  # on its own: a scales field of another form leaves the rest of the ref read
            scales = tuple((float(lo), float(hi)) for lo, hi in d.get("scales") or ())
        except (ValueError, TypeError, OverflowError):
            return ref
        return replace(ref, scales=scales)

    def serving(self, scale: Scale, feedback: bool) -> tuple[Scale, ...]:
        """The scales to record once a run on ``scale`` is served after this ref's:
        its own are kept while the store holds ``feedback`` given on them."""
        here = (float(scale[0]), float(scale[1]))
        kept = self.scales if feedback else ()
        return kept if here in kept else (*kept, here)


def recorded_scale(folder: str) -> Scale | None:
    """The rating scale of the run or ensemble in ``folder``; None where it cannot be
    read (moved, deleted). A run's manifest says it; an ensemble is loaded."""
    try:
        raw = json.loads((Path(folder) / "recommender.json").read_text(encoding="utf-8"))
        lo, hi = raw["rating_range"]
        return float(lo), float(hi)
    except (OSError, ValueError, TypeError, KeyError):
        pass
    from metarec.ensemble_run import load_run

    try:
        lo, hi = load_run(folder).rating_range
    except (MetarecError, OSError):
        return None
    return float(lo), float(hi)


def run_name(run: Path) -> str:
    """``<run folder>@<first 8 hex of the model file's SHA-256>``: changes with every retrain.

    For an ensemble folder the digest covers its manifest and every member's tensors.
    """
    digest = hashlib.sha256()
    if is_ensemble_dir(run):
        files = [run / MANIFEST, *sorted(run.glob("members/*/*.safetensors"))]
    else:
        files = [run / "model.safetensors"]
    for path in files:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return f"{printable(run.resolve().name)}@{digest.hexdigest()[:8]}"


def printable(text: object) -> str:
    """``text`` with its unprintable characters as escapes: a folder named with a newline
    and an ANSI escape wrote a forged line into the log (and the /ready answer)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


_SEP = "\x00"  # between titles in Served.haystack
# the Latin, Greek and Cyrillic accents a decomposed title carries: a search for "kyoto"
# found no "Kyōto", nor "amelie" "Amélie". Other marks stay, on both sides alike: a
# kana's voicing mark (が against か) tells two words apart
_ACCENTS = re.compile("[\u0300-\u036f]")


def search_key(text: str) -> str:
    """``text`` as a title search compares it: case-folded, accents dropped."""
    folded = text.casefold()
    if folded.isascii():  # most titles: no decomposition to pay for on a refresh
        return folded
    return _ACCENTS.sub("", unicodedata.normalize("NFKD", folded))


@dataclass
class Served:
    rec: ServedModel  # a single run, or an ensemble (its primary member's catalogue)
    # as given (absolute, links kept): a reload reads it again, so a link moved to
    # the retrained run is followed by SIGHUP
    run: Path
    name: str
    generation: int
    folder: Path  # the folder ``run`` led to when loaded (links resolved)
    lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    # bumped under the write lock when the model changes in place in a way a user's
    # adaptation depends on (a re-encoded item, a fold-in): part of the cache key
    revision: int = 0
    titles: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    by_popularity: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # the case-folded titles in popularity order, each after a NUL, searched with one
    # str.find per hit: a Python loop over 500,000 titles held the read lock 146 ms for
    # a word no title holds, this 7 (benchmarks/results/title-search.md)
    haystack: str = ""
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def refresh(self) -> None:
        """Recompute search data, and what explanations read, after the catalogue changed
        (caller holds the write lock)."""
        # the model's own list, which an append extends rather than remakes; copied, as
        # answers read this one while the model changes
        self.titles = list(self.rec._displays())
        self.item_ids = [str(i) for i in self.rec.items["item_id"].tolist()]
        self.by_popularity = np.argsort(-self.rec.popularity, kind="stable")
        # a NUL in a title would let a match run over two titles: searched as a space
        folded = [search_key(self.titles[i]).replace(_SEP, " ") for i in self.by_popularity]
        self.haystack = "".join(_SEP + t for t in folded)
        lengths = np.fromiter((len(t) + 1 for t in folded), dtype=np.int64, count=len(folded))
        self.starts = np.cumsum(lengths) - lengths + 1  # where each title begins
        prepare_explanations(self.rec)

    def search(self, q: str, limit: int) -> list[dict[str, str]]:
        """Up to ``limit`` items whose title contains ``q`` (ignoring case and accents:
        :func:`search_key`), most rated first."""
        needle = search_key(q.strip()).replace(_SEP, " ")
        if not needle and q.strip():  # accents alone: no title holds nothing but them
            return []
        out: list[dict[str, str]] = []
        with self.lock.read():  # the fields below are rebuilt together as items are added
            hay, starts = self.haystack, self.starts
            at = 0
            while len(out) < limit and len(starts):
                hit = hay.find(needle, at)
                if hit < 0:
                    break
                # the empty needle is found at the separator before the first title
                rank = max(int(np.searchsorted(starts, hit, side="right")) - 1, 0)
                i = int(self.by_popularity[rank])
                out.append({"item_id": self.item_ids[i], "title": self.titles[i]})
                # the needle holds no separator, so the next hit is in a later title
                at = int(starts[rank + 1]) if rank + 1 < len(starts) else len(hay) + 1
        return out


class OutOfStepError(MetarecError):
    """A request this process cannot answer yet, nothing stored: its model holds a change
    the store refused, not yet read afresh; or a bounded wait for a change being taken
    (a catch-up, a PUT being stored) ran out. Answered with 503 ``store_unavailable``
    and Retry-After."""


class AdaptBatcher:
    """Adapts the users of concurrent requests together, in one vmapped call.

    Each request queues its user, then waits for :data:`TORCH_LOCK`; whoever
    holds the lock adapts every queued user of the same model at once. Under
    load the batches grow by themselves (one adaptation of 16 users costs about
    as much as three of one); an idle server adds no delay, as there is no timer.
    """

    def __init__(self, max_batch: int = 64) -> None:
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[tuple[Served, list[tuple[str, float]], Any, Future[UserState]]] = []

    def adapt(self, served: Served, pairs: list[tuple[str, float]], features: Any) -> UserState:
        fut: Future[UserState] = Future()
        with self._lock:
            self._pending.append((served, pairs, features, fut))
        while not fut.done():
            with served.lock.read(), TORCH_LOCK:
                if fut.done():
                    break
                with self._lock:
                    mine = [p for p in self._pending if p[0] is served][: self.max_batch]
                    taken = {id(m) for m in mine}
                    self._pending = [p for p in self._pending if id(p) not in taken]
                self._run(served.rec, mine)
        return fut.result()

    @staticmethod
    def _run(rec: ServedModel, jobs: list[Any]) -> None:
        try:
            states = rec.adapt_many([j[1] for j in jobs], [j[2] for j in jobs])
        except Exception:
            # one bad history must not fail the others: adapt each alone
            for _, pairs, features, fut in jobs:
                try:  # as the batch reads them: a stored profile's extra keys are skipped
                    fut.set_result(rec.adapt_many([pairs], [features])[0])
                except Exception as err:
                    fut.set_exception(err)
            return
        for job, state in zip(jobs, states, strict=True):
            job[3].set_result(state)


def _encode_for(served: Served, frame: pd.DataFrame) -> np.ndarray:
    """``frame``'s items encoded for ``served``; an ensemble that cannot take items is
    refused first. Changes nothing, so it may raise before anything changes."""
    if isinstance(served.rec, EnsembleRecommender):
        served.rec.check_items()
    return encode(served.rec, frame)


def foldable(rec: ServedModel) -> TypeGuard[Recommender]:
    """Fold-in needs one run whose scores are ratings."""
    return isinstance(rec, Recommender) and rec.cfg.objective == "rating"


def settle_heap() -> None:
    """Collect once, then take every object alive now out of the cyclic collector's
    reach (``gc.freeze``).

    A served run is millions of long-lived Python objects (item frames, titles, search
    indexes). The collector's full passes walked all of them, stalling every request
    for a tenth of a second or more at a time under load (a probe of the latency
    benchmark's server at 200 requests/s). Frozen after each load, a full pass walks
    only what was made since.
    Unfreezing first lets a replaced model's reference cycles be collected before the
    new heap is frozen. That one full collection walks the old and the new heap, so a
    reload stalls requests once, for about as long as one of the passes it removes.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelHolder:
    def __init__(
        self,
        store: FeedbackStore,
        metrics: Metrics,
        cache_size: int,
        device: str | None = None,
        *,
        freeze_heap: bool = False,
    ) -> None:
        self.store = store
        self.freeze_heap = freeze_heap  # the server process's own choice: see settle_heap
        self.device = device
        self.metrics = metrics
        self.cache: AdaptationCache[tuple[UserState, dict[int, str]]] = AdaptationCache(cache_size)
        self.heap = HeapTrimmer()
        self._swap = threading.Lock()  # one swap or catalogue change at a time
        self._current: Served | None = None
        self._generation = 0
        self.batcher = AdaptBatcher()
        # the store's served-state version the current model reflects (see sync), and a
        # version whose catch-up failed, not tried again before a pause
        self._seen = 0
        self._ref: ServedRef | None = None  # what the current model was loaded as
        self._sync = threading.Lock()
        self._failed: tuple[int, float] | None = None
        # the model serves a change the store refused, and reading it afresh failed too:
        # answers from it would show what no other process and no restart serves
        self._unstored = False
        # held to write by a PUT that adds items from applying them until the store has
        # them (or the model is read afresh), and to read by requests that store what
        # names items (see storing_item_names); not the model's lock, which a slow store
        # would hold for every read
        self._new_items = ReadWriteLock()
        # the items of the PUT holding _new_items to write, set before it applies them:
        # a request naming none of them, only items the model held already, names stored
        # items and does not wait for the PUT (see storing_item_names)
        self._adding: frozenset[str] = frozenset()
        self._adding_lock = threading.Lock()

    @property
    def current(self) -> Served:
        served = self._current
        if served is None:
            raise RuntimeError("no model loaded")
        return served

    @property
    def ready(self) -> bool:
        return self._current is not None

    # -- loading and swapping -------------------------------------------------
    def load(
        self,
        run: str | Path,
        loaded: ServedModel | None = None,
        *,
        folder: Path | None = None,
        replacing: Served | None = None,
        announce: Announce = "never",
    ) -> Served:
        """Load ``run`` (or take it ``loaded`` already), re-apply the items added through
        the API, fold in, make it current. ``folder``: the folder ``run`` led to before (a
        link moved since is not followed); ``replacing``: swap only if that is still the
        served model (a reload that landed first has read the run and store afresh).

        ``announce``: whether this load sets what every server process on the store
        serves (:class:`ServedRef`, with a new fold-in cut-off), in the same step as the
        swap: ``"always"`` (a reload asked for), ``"if_moved"`` (a start or a SIGHUP:
        only if the folder differs from the one recorded), ``"never"`` (a catch-up, a
        restore: the recorded cut-off is used, and a folder other than the recorded one
        -- a reload landed meanwhile -- leaves this process out of step, so its next
        request catches up)."""
        given = Path(run).absolute()
        try:
            path = folder if folder is not None else given.resolve()
        except (RuntimeError, OSError) as exc:  # a loop: RuntimeError before Python 3.13
            if isinstance(exc, OSError) and exc.errno != errno.ELOOP:
                raise
            raise ModelError(f"{given}: a symbolic link loop, not a run folder") from None
        # the slow part, outside the lock: the old model keeps serving
        rec = load_run(path, device=self.device) if loaded is None else loaded
        with TORCH_LOCK:
            # the first adaptation in a process imports torch.func's machinery (~1.5 s):
            # pay it here, not in the first user's request
            rec.recommend(rec.adapt([(str(rec.items["item_id"].iat[0]), rec.rating_range[1])]), k=1)
        name = run_name(path)
        with self._swap:
            if replacing is not None and self._current is not replacing:
                return self.current
            # read before the items: a change landing while they load is caught next sync
            version, text = self.store.served_state()
            recorded = ServedRef.parse(text)
            in_step = recorded is None or recorded.folder == str(path)
            # the same folder reached through a link (a start on one, as the README
            # advises, where the store recorded the folder): recorded, or the other
            # processes, and any started later, kept re-reading the old name on SIGHUP.
            # Not the other way: a start on the folder leaves a recorded link alone
            renamed = (
                recorded is not None
                and in_step
                and recorded.run != str(given)
                and str(given) != str(path)
            )
            # a ref without a cut-off (as first recorded) is replaced by one that has one
            moved = not in_step or recorded is None or recorded.events_upto is None or renamed
            if announce == "always" or (announce == "if_moved" and moved):
                latest = upto = self.store.last_event_id()
                if announce == "if_moved" and in_step and recorded is not None:
                    # the same model under a new name: the same fold-in cut-off
                    upto = recorded.events_upto if recorded.events_upto is not None else upto
                scale = (float(rec.rating_range[0]), float(rec.rating_range[1]))
                if recorded is not None and not recorded.scales and not in_step and latest:
                    # a ref from before the scales were kept: its run's, read once, so
                    # the first switch after an upgrade does not forget them
                    earlier = recorded_scale(recorded.folder)
                    if earlier is not None:
                        recorded = replace(recorded, scales=(earlier,))
                scales = (scale,) if recorded is None else recorded.serving(scale, latest > 0)
                ref: ServedRef | None = ServedRef(str(given), str(path), upto, scales, name)
                publish = True
                if announce == "if_moved" and not in_step and self._current is None:
                    # a start on another run than the store's: often a restart with the
                    # first command after a reload or retrain, which rolls back every
                    # server on the store; as intended it says so too
                    assert recorded is not None
                    log.warning(
                        "starting on %s, not %s, which the shared store records as served "
                        "(a reload or retrain since this command was written?): every "
                        "server process on the store now serves %s. To restart on the "
                        "served run, start on a link that reloads move (README: Closing "
                        "the loop)",
                        printable(path),
                        printable(recorded.folder),
                        name,
                    )
            else:
                ref, publish = recorded, False
                if recorded is not None and recorded.model not in (None, name):
                    log.warning(
                        "%s now holds %s, not %s, which the shared store records as served: "
                        "the folder was rewritten in place while served, so this process "
                        "serves another model than those that loaded it before. Give a "
                        "retrained run a new folder, and reload (POST /v1/admin/reload, or "
                        "a moved link and SIGHUP) to put every process on one",
                        printable(path),
                        name,
                        recorded.model,
                    )
            rows = self.store.added_items()
            added = updated = 0
            if rows:
                frame = item_frame(rows, rec.items["text"], layout_of(rec))
                # a store written before items were checked may hold one no model can
                # take: serve without it rather than refuse to start
                skipped = unusable(frame)
                for item_id, why in skipped.items():
                    log.warning("stored item %r left out: %s", item_id, why)
                frame = frame[~frame["item_id"].isin(skipped)].reset_index(drop=True)
                try:
                    added, updated = apply_items(rec, frame, encode(rec, frame))
                except MetarecError as exc:
                    if self._current is not None and announce != "never":
                        # a reload or SIGHUP: keep serving the model that has them (this
                        # one, published, dropped them for every process)
                        raise ModelError(
                            f"{name} cannot take the {len(frame)} items added through the "
                            f"API ({exc}); still serving {self._current.name}"
                        ) from None
                    # at a start, items this model cannot take (a run of another
                    # encoder, say) would stop every start from now on: serve the run
                    # without them, loudly, read afresh, as a failure part way may have
                    # changed some members
                    log.error("the %d stored items left out: %s", len(frame), exc)
                    rec, rows = load_run(path, device=self.device), []
            if foldable(rec):
                # the served state is a function of (run, store): a restart or reload
                # learns the new items from the stored feedback as /admin/fold-in did.
                # The store is read before the model lock: read under it, every
                # request of this process waited on it (0.5 s at 82,000 events)
                feedback = self._feedback(rec, None if ref is None else ref.events_upto)
                with TORCH_LOCK:
                    self._fold_in(rec, feedback)
            self._generation += 1
            served = Served(rec, given, name, self._generation, path)
            served.refresh()
            if publish:
                # recorded before it serves: a store that refuses leaves the old model
                # serving, where answers came meanwhile from a run no store recorded
                self._announce(version, ref=ref)
            elif in_step:
                self._ref, self._seen = ref, version
            else:  # loaded another folder than the one recorded (a reload landed while
                # this loaded): out of step, so the next request's sync loads the recorded one
                self._ref = None
            self._current = served
            self._unstored = False
            self.cache.clear()
        log.info(
            "serving %s (%d items; through the API: %d added, %d updated)",
            name,
            rec.n_items,
            added,
            updated,
        )
        if self.freeze_heap:
            settle_heap()
        return served

    # -- server processes sharing one store -----------------------------------
    def sync(self, *, wait: bool = False, bounded: bool = False) -> None:
        """:meth:`_catch_up`, then refuse to answer from a model that holds items the
        store refused (:class:`OutOfStepError`, a 503) until reading it afresh works:
        a catch-up that failed, or a request that found another catching up, served
        them. ``bounded`` (a request's): ``wait`` waits :data:`ITEM_CHANGE_WAIT_S` at
        most for another catch-up, or for a change of this process's own being stored,
        then an :class:`OutOfStepError`."""
        self._catch_up(wait=wait, most_s=ITEM_CHANGE_WAIT_S if bounded else None)
        if self._unstored:
            raise OutOfStepError(_UNSTORED)

    def _catch_up(self, *, wait: bool = False, most_s: float | None = None) -> None:
        """Catch up with a change another server process made to the served state (items
        added, a fold-in, a reload to another run: :meth:`FeedbackStore.served_state`) by
        reloading (run, store), as a restart would. One read of one row when nothing
        changed. The request that finds a change reloads; requests meanwhile keep the
        model they have, unless ``wait`` (those that name an item this process lacks:
        one just added through another process must be found). A catch-up that fails is tried again
        after :data:`SYNC_RETRY_S`, not on every request."""
        try:
            version, _ = self.store.served_state()
        except DatabaseError as exc:  # what is loaded still serves (see sync); the
            log.warning("could not read the shared served state: %s", exc)  # reads fail
            return
        if version == self._seen or self._waiting_to_retry(version):
            return

        deadline = None if most_s is None else time.monotonic() + most_s

        def take(lock: threading.Lock) -> bool:
            """``lock`` taken: at once, or (``wait``) by the one deadline of both locks."""
            if not wait:
                return lock.acquire(blocking=False)
            if deadline is None:
                return lock.acquire()
            return lock.acquire(timeout=max(deadline - time.monotonic(), 0.0))

        if not take(self._sync):
            if wait:
                raise OutOfStepError(_HELD_UP)
            return  # another request is catching up: serve the model we have
        held_up = False
        try:
            try:
                # under the swap lock: a reload of this process that has bumped the
                # version but not yet recorded it as seen finishes first, rather than
                # being loaded a second time as another process's change. A request
                # that names no item does not wait for it (a PUT here waiting on a slow
                # store held it, and with it every request behind this one's _sync);
                # one that does waits most_s at most
                if not take(self._swap):
                    held_up = wait
                    return
                try:
                    version, text = self.store.served_state()
                    seen = self._seen
                finally:
                    self._swap.release()
                if version == seen or self._waiting_to_retry(version):
                    return  # another request caught up first, or the change was ours
                ref = ServedRef.parse(text)
                current = self.current
                run, folder = (
                    (current.run, current.folder) if ref is None else (ref.run, Path(ref.folder))
                )
                self.load(run, folder=folder)
                self.metrics.count_reload()  # a swap as a reload's or SIGHUP's is
            except Exception as exc:
                if isinstance(exc, MetarecError):  # the operator's to fix (a run deleted)
                    log.error("catching up with the shared store failed; serving on: %s", exc)
                else:
                    log.exception("catching up with the shared store failed; serving on")
                self._failed = (version, time.monotonic() + SYNC_RETRY_S)
                return
            self._failed = None
            log.info("caught up with the shared store (version %d): %s", version, printable(folder))
        finally:
            self._sync.release()
            if held_up:
                raise OutOfStepError(_HELD_UP)

    def _waiting_to_retry(self, version: int) -> bool:
        failed = self._failed
        return failed is not None and failed[0] == version and time.monotonic() < failed[1]

    def _announce(
        self,
        seen: int,
        *,
        ref: ServedRef | None = None,
        items: Sequence[dict[str, Any]] = (),
        expect: bool = False,
    ) -> None:
        """Record a change this process made (``seen``: the version it had before; the
        caller holds ``_swap``): a new ``ref`` and/or stored ``items``, so the other
        processes on the store catch up. ``expect``: only if no other process changed
        anything since ``seen``. This process serves the change already, unless another
        process's change came between and is still to be loaded; if the store does not
        take it (busy, or moved on), this process is out of step with what the store
        records, so its next request catches up rather than serving on as if the change
        were everyone's."""
        try:
            before, after = self.store.bump_served_state(
                None if ref is None else ref.dumps(), items, expect=seen if expect else None
            )
        except Exception:
            self._seen, self._ref = -1, None
            raise
        if ref is not None:
            self._ref = ref
        if before == seen:
            self._seen = after

    def reload(self, run: str | Path) -> Served:
        """Load ``run`` and make every server process on the store serve it."""
        return self.load(run, announce="always")

    def upsert_items(self, rows: Sequence[dict[str, Any]]) -> tuple[int, int, int]:
        """Encode, apply to the served model, then store (with the announcement to the
        other processes, in one transaction); → (added, updated, unchanged): an item
        sent again as the model holds it (its vector a cache hit) is neither applied nor
        stored again."""
        rec = self.current.rec
        frame = item_frame(rows, rec.items["text"], layout_of(rec))
        bad = unusable(frame)
        if bad:
            item_id, why = next(iter(bad.items()))
            raise DataError(f"items: item {item_id!r}: {why}")
        self.sync(wait=True)  # apply on top of what the other processes serve
        encoded = self.current
        # before any lock: with a sentence encoder on a CPU, seconds for a large PUT
        vectors = _encode_for(encoded, frame)
        # a new item is named (an event, a new user's rating) only once the store has it:
        # one accepted between the model taking it and the store refusing it was kept,
        # on an item no process and no restart has
        with self._new_items.write():
            with self._adding_lock:
                self._adding = frozenset(str(i) for i in frame["item_id"])
            try:
                return self._upsert(frame, rows, encoded, vectors)
            finally:
                with self._adding_lock:  # after _restore: _unstored is set by now
                    self._adding = frozenset()

    def _upsert(
        self,
        frame: pd.DataFrame,
        rows: Sequence[dict[str, Any]],
        encoded: Served,
        vectors: np.ndarray,
    ) -> tuple[int, int, int]:
        with self._swap:
            served = self.current
            if served is not encoded:  # swapped meanwhile (a reload): its encoder's vectors
                vectors = _encode_for(served, frame)
            if self._unstored:  # a refused PUT's model, not read afresh: its items are
                raise OutOfStepError(_UNSTORED)  # no evidence of what the store holds
            same = unchanged(served.rec, frame)  # under _swap: no other change between
            if same.any():
                frame, vectors = frame.loc[~same].reset_index(drop=True), vectors[~same]
                rows = [row for row, kept in zip(rows, same, strict=True) if not kept]
            if not len(frame):
                return 0, 0, int(same.sum())  # nothing to apply, store or announce
            # a re-encoded item's offset was fitted to its old vector: folded in again
            # below up to the same cut-off, as a load of (run, store) does, from feedback
            # read before the model's lock (on the items it will then hold)
            rec, index = served.rec, served.rec.item_index
            ids = [str(i) for i in frame["item_id"]]
            feedback = None
            if foldable(rec) and self._ref is not None and any(i in index for i in ids):
                feedback = self._feedback(rec, self._ref.events_upto, {*index, *ids})
            refused: Exception | None = None
            try:
                with served.lock.write(), TORCH_LOCK:
                    added, updated = apply_items(served.rec, frame, vectors)
                    if updated and feedback is not None and foldable(rec):
                        self._fold_in(rec, feedback)
                    if updated:
                        served.revision += 1
                    served.refresh()
                # stored once the model took them (a refused item is never stored, so no
                # later start fails on it), and acknowledged once stored
                self._announce(self._seen, items=rows)
            except Exception as exc:
                refused = exc
            if refused is None and updated:
                self.cache.clear()  # users who rated a re-encoded item adapt anew: free early
        if refused is not None:
            # the model may have taken part of the change (an update before an add, an
            # ensemble's first members): serve (run, store) read afresh, as a restart would
            self._restore(served)
            raise refused
        if self.freeze_heap:
            gc.freeze()  # the rebuilt indexes and titles; the old ones went by refcount
        return added, updated, int(same.sum())

    @contextmanager
    def storing_item_names(self, names: Iterable[str]) -> Iterator[Served]:
        """The served model to check a request's items (``names``) against, held until
        what the request stores is stored: an item a PUT is adding is named only once
        the store has it, or, refused, once the model no longer holds it. Call
        :meth:`sync` first (it may reload, which must not wait on this).

        A request whose items the model holds and no PUT in flight is adding goes at
        once: those items are stored, whatever the PUT's fate. Any other waits at most
        :data:`ITEM_CHANGE_WAIT_S` for a PUT being stored (an :class:`OutOfStepError`,
        503, after): requests queued behind a slow store took every worker thread, and
        readers then waited too; and every event waited for any PUT before."""
        wanted = set(names)
        with self._adding_lock:
            # read with the PUT's items, which it sets before the model takes them: an
            # item the model holds here and the PUT does not name was stored before
            served = self.current
            index = served.rec.item_index
            stored = not self._unstored and all(
                i in index and i not in self._adding for i in wanted
            )
        if stored:
            yield served
            return
        with contextlib.ExitStack() as held:
            try:  # the wait alone: a TimeoutError of the caller's is its own
                held.enter_context(self._new_items.read(timeout=ITEM_CHANGE_WAIT_S))
            except TimeoutError:
                raise OutOfStepError(
                    "items are being added by another request (applied to the model and "
                    "stored); nothing was stored, retry"
                ) from None
            if self._unstored:  # a refused PUT's model, not read afresh: it holds them
                raise OutOfStepError(_UNSTORED)
            yield self.current

    def _restore(self, served: Served) -> None:
        """After a refused change: the model may have taken part of it first (an update
        before an add, an ensemble's first members), so serve (run, store) read afresh, as
        a restart would; the same folder, even if the run's link has moved since."""
        try:
            self.load(served.run, folder=served.folder, replacing=served)
        except Exception:
            log.exception(
                "re-reading %s after refused items failed; requests wait for the store",
                served.name,
            )
            self._seen = -1  # what it serves may hold the refused change: catch up next
            self._unstored = True  # and answer nothing from it meanwhile (see sync)

    def fold_in(self) -> dict[str, Any]:
        """Learn the items the network never trained on from all stored feedback."""
        self.sync(wait=True)
        with self._swap:
            served = self.current
            rec = served.rec
            if not isinstance(rec, Recommender):
                raise UnsupportedError(ENSEMBLE_FOLD_IN)
            upto = self.store.last_event_id()  # what every process then learns from
            feedback = self._feedback(rec, upto)  # read before the locks (see load)
            with served.lock.write(), TORCH_LOCK:
                summary = self._fold_in(rec, feedback)
                served.revision += 1
            self.cache.clear()  # adaptation reads the corrected item biases: free them early
            base = self._ref or ServedRef(
                str(served.run), str(served.folder), None, model=served.name
            )
            # the others fold in as they reload; refused if a reload (say) landed while
            # this folded in, which the new ref would otherwise undo
            self._announce(self._seen, ref=replace(base, events_upto=upto), expect=True)
        if self.freeze_heap:
            gc.freeze()
        return {"model": served.name, **summary}

    def _feedback(
        self, rec: Recommender, upto: int | None, items: set[str] | None = None
    ) -> pd.DataFrame:
        """The stored feedback on ``items`` (default: ``rec``'s) up to event ``upto``
        (None: all of it), as the ratings a fold-in learns from."""
        from metarec.retrain import feedback_frame

        frame, _ = feedback_frame(
            self.store,
            rec.rating_range,
            set(rec.item_index) if items is None else items,
            negatives=reads_negatives(rec),
            upto=upto,
        )
        return frame

    def _fold_in(self, rec: Recommender, feedback: pd.DataFrame) -> dict[str, Any]:
        """Fold in ``feedback`` (:meth:`_feedback`)."""
        # the run's own offsets (a fold-in in Python, saved with it) stay for the items
        # the store has no rating of: the model served is the run plus the store
        summary = rec.fold_in_items(feedback, keep_unrated=True)
        if not summary["ratings_used"]:  # a store without feedback yet: nothing to say
            return summary
        log.info(
            "fold-in: %d new items from %d ratings (shrinkage %g)",
            summary["items_updated"],
            summary["ratings_used"],
            summary["shrinkage"],
        )
        return summary

    # -- users ----------------------------------------------------------------
    def forget_user(self, user_id: str) -> tuple[ErasedUser, FoldInAfterErasure] | None:
        """Erase a user from the store (None: no such user); → what was erased, and what
        became of the fold-in. Any process's fold-in, recorded or still running, may
        have learned item offsets from their ratings, whatever this process serves (it
        may be behind the store): the erasure of a user with events bumps the served
        state in its own transaction (:meth:`FeedbackStore.forget_user`), so every
        process, this one first, reloads the recorded run and store at the recorded
        cut-off, as a store that never held the user gives, and a fold-in in flight is
        refused (a fold-in alone would keep an offset no stored rating supports)."""
        self.sync(wait=True)
        erased = self.store.forget_user(user_id, announce=True)
        if erased is None:
            return None
        self.cache.invalidate(user_id)
        if erased.version is None:
            return erased, "unaffected"
        try:
            self.sync(wait=True)  # this process's reload; the others' come with their requests
        except MetarecError as exc:
            log.error("an erasure's fold-in is not redone in this process yet: %s", exc)
        # a catch-up that failed serves on (and tries again): this process is then behind
        if self._seen < erased.version:
            return erased, "pending"
        # announced all the same: another process may be publishing a run that does
        # fold in, from feedback it read before the erasure; the bump makes it read again
        return erased, "redone" if foldable(self.current.rec) else "none"

    def user_state(self, served: Served, user: UserSummary) -> tuple[UserState, dict[int, str]]:
        """The user adapted, and what to say of each item of their history (catalogue
        index → "You skipped it") should it be listed."""
        # read before adapting: an adaptation that began before an in-place change is
        # cached under the revision it read, which no later request asks for
        version = (served.generation, served.revision, user.created_at, user.n_events)
        cached = self.cache.get(user.user_id, version)
        if cached is not None:
            return cached
        rec = served.rec
        t0 = time.perf_counter()
        latest = latest_events(self.store.events_for(user.user_id))
        history = ratings_of(latest, rec.rating_range, negatives=reads_negatives(rec))
        index = rec.item_index
        said = {
            index[i]: what_you_did(ev, rec.rating_range) for i, ev in latest.items() if i in index
        }
        lo, hi = rec.rating_range
        # items this model does not know (a swapped-in run without them) are left out;
        # ratings are clipped in case the new run's rating range is narrower
        pairs = [
            (item, min(max(r, lo), hi))
            for item, r in history.items()
            if item in rec.item_index and r is not None
        ]
        # a stored profile was checked against the model serving when it was stored; a
        # model loaded since may bin a feature the other did not: what it cannot read
        # counts as unknown, as a value it has never seen does, rather than failing
        # every request of the user (as items it does not know are left out above)
        # every member's features, for an ensemble: the primary's alone were served
        features = feature_readers(rec).readable(user.features)
        state = self.batcher.adapt(served, pairs, features)
        rejected = [
            rec.item_index[i] for i, r in history.items() if r is None and i in rec.item_index
        ]
        if rejected:  # a dislike no rating expresses: left out, and still not recommended
            state.seen = np.union1d(state.seen, np.asarray(rejected, dtype=np.int64))
        self.metrics.observe_adaptation(time.perf_counter() - t0)
        self.cache.put(user.user_id, version, (state, said))
        self.heap.note()  # each kept state pins freed memory (see HeapTrimmer)
        return state, said

    def recommend(
        self,
        served: Served,
        user: UserSummary,
        k: int,
        *,
        exclude_seen: bool,
        candidates: list[str] | None,
        reasons: bool = True,
    ) -> list[dict[str, Any]]:
        """The user's top ``k``, each with its reason unless not ``reasons`` (None)."""
        state, said = self.user_state(served, user)
        rec = served.rec
        with served.lock.read(), TORCH_LOCK:
            # scored once for the list and its reasons, which read the whole catalogue's
            # scores: a user with no ratings is explained by its ranking, and one with
            # ratings by how they raised each item against it (scored twice before); a
            # catalogue past SCORED_WHOLE is read by rows for the reasons
            whole = reasons and (not state.history or rec.n_items <= SCORED_WHOLE)
            every = rec.score(state) if whole else None
            idx, scores = rec.top(
                state, k, exclude_seen=exclude_seen, candidates=candidates, scores=every
            )
            # one catalogue for the whole answer: adding items rebuilds both lists
            ids, titles = served.item_ids, served.titles
            said_why: list[str | None] = [None] * len(idx)
            if reasons:
                explained = explain_indices(
                    rec,
                    state,
                    idx.tolist(),
                    titles=titles,
                    ids=ids,
                    history_said=said,
                    scores=every,
                )
                said_why = [why.reason for why in explained]
        # a rating model's without cutpoints too (too few validation ratings, or a
        # continuous scale): its score clipped to the scale, as median_ratings says
        ratings = rec.median_ratings(scores).tolist() if rec.scores_are_ratings else None
        return [
            {
                "rank": rank,
                "item_id": ids[i],
                "title": titles[i],
                "score": float(score),
                "rating": None if ratings is None else ratings[rank - 1],
                "reason": why,
            }
            for rank, (i, score, why) in enumerate(zip(idx, scores, said_why, strict=True), 1)
        ]

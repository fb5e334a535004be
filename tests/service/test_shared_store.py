"""Server processes sharing one feedback store serve the same state.

Two apps on one SQLite file stand for two workers of ``metarec serve --workers 2``
(or two servers behind a load balancer): a change made through one (items added,
a reload to another run, a fold-in) is served by the other from its next request.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from metarec.service.serving import ServedRef

from .conftest import LiveServer


def _database_locked(*args: Any, **kwargs: Any) -> Any:
    """A store write that finds the database locked past its wait."""
    from sqlalchemy.exc import OperationalError

    raise OperationalError("UPDATE service_state", {}, Exception("database is locked"))


class HeldCall:
    """``owner.name`` held from now on: ``reached`` is set when a call waits, and
    ``released`` lets it go through, or fail as a database locked past its wait
    (``fails``)."""

    def __init__(
        self, owner: Any, name: str, monkeypatch: pytest.MonkeyPatch, *, fails: bool = False
    ) -> None:
        self.reached, self.released = threading.Event(), threading.Event()
        real = getattr(owner, name)

        def held(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            self.released.wait(timeout=60)
            return _database_locked() if fails else real(*args, **kwargs)

        monkeypatch.setattr(owner, name, held)


class HeldStoreWrite(HeldCall):
    """The store's writes of the served state (a PUT's items, a reload's run) held."""

    def __init__(self, store: Any, monkeypatch: pytest.MonkeyPatch, *, fails: bool) -> None:
        super().__init__(store, "bump_served_state", monkeypatch, fails=fails)


class Background:
    """``call`` run in a thread; :meth:`answer` waits for what it returned."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._got: list[Any] = []
        self._thread = threading.Thread(target=lambda: self._got.append(call()), daemon=True)
        self._thread.start()

    def answer(self) -> Any:
        self._thread.join(timeout=60)
        assert self._got, "the request did not finish"
        return self._got[0]


@contextmanager
def put_while_held(client: httpx.Client, held: HeldCall, *item_ids: str) -> Iterator[Background]:
    """A PUT of ``item_ids`` started and stopped at ``held`` until the block ends."""
    items = [{"item_id": i, "title": "Night Train"} for i in item_ids]
    put = Background(lambda: client.put("/v1/items", json={"items": items}))
    try:
        assert held.reached.wait(timeout=30)
        yield put
    finally:
        held.released.set()


@pytest.fixture
def two(service_run: Path, tmp_path: Path) -> Path:
    """A second run folder (a copy: its name tells which one a server serves)."""
    return Path(shutil.copytree(service_run, tmp_path / "two"))


def generation(live: LiveServer) -> int:
    with live.client() as c:
        text = c.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("metarec_model_generation "))
    return int(float(line.split()[1]))


def test_items_added_through_one_server_are_served_by_the_other(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    a, b = make_server(), make_server()
    before = generation(b)
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        assert cb.get("/v1/items/fresh").status_code == 404
        item = {"item_id": "fresh", "title": "Night Train", "year": 2001, "genres": ["Drama"]}
        assert ca.put("/v1/items", json={"items": [item]}).json()["added"] == 1
        # the other server's very next request sees it: rating it is not "unknown item"
        assert cb.get("/v1/items/fresh").json()["title"] == "Night Train (2001)"
        user = {"user_id": "u", "ratings": [{"item_id": "fresh", "rating": 5}]}
        assert cb.post("/v1/users", json=user).status_code == 201
        both = {"candidates": "fresh,1", "k": 2, "exclude_seen": False}
        got = cb.get("/v1/users/u/recommendations", params=both)
        assert got.status_code == 200 and len(got.json()["items"]) == 2
    assert generation(b) == before + 1  # one reload to catch up
    assert generation(a) == 1  # the server that made the change already serves it


def test_nothing_changed_means_no_reload(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    a, b = make_server(), make_server()
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        ca.post("/v1/users", json={"user_id": "v", "ratings": [{"item_id": "1", "rating": 4}]})
        for _ in range(5):  # events are read from the store per request, not reloaded
            assert cb.get("/v1/users/v/recommendations").status_code == 200
            ca.post("/v1/users/v/events", json={"item_id": "2", "type": "click"})
    assert generation(a) == generation(b) == 1


def test_a_reload_through_one_server_moves_the_other(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    service_run: Path,
    tmp_path: Path,
) -> None:
    other = shutil.copytree(service_run, tmp_path / "retrained")
    a, b = make_server(), make_server()
    with a.client(server_api_key) as ca, b.client() as cb:
        old = cb.get("/ready").json()["model"]
        moved = ca.post("/v1/admin/reload", json={"run": str(other)}).json()["model"]
        assert moved != old and moved.startswith("retrained@")
        assert cb.get("/ready").json()["model"] == moved
        # B swapped models too, by catching up: counted as A's reload is
        reloads = [
            ln for ln in cb.get("/metrics").text.splitlines()
            if ln.startswith("metarec_model_reloads_total ")
        ]  # fmt: skip
        assert reloads == ["metarec_model_reloads_total 1"]


def test_a_fold_in_through_one_server_reaches_the_other(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from metarec import retrain
    from metarec.service import serving

    # the stored feedback is read before the model lock: read under it, a catch-up held
    # every request of its process (0.9 s at 82,000 events)
    held: list[bool] = []
    real = retrain.feedback_frame

    def reading(*args: Any, **kwargs: Any) -> Any:
        held.append(serving.TORCH_LOCK.locked())
        return real(*args, **kwargs)

    monkeypatch.setattr(retrain, "feedback_frame", reading)
    a, b = make_server(), make_server()
    twins = [{"item_id": i, "title": "Night Train", "year": 2001} for i in ("loved", "hated")]
    pick = {"candidates": "loved,hated", "k": 2}
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        ca.put("/v1/items", json={"items": twins})
        assert cb.get("/v1/items/loved").status_code == 200  # B has the items, no ratings yet
        for u in range(25):
            ratings = [{"item_id": str(1 + (u + j) % 50), "rating": 3 + (u + j) % 3}
                       for j in range(3)]  # fmt: skip
            ratings += [{"item_id": "loved", "rating": 5}, {"item_id": "hated", "rating": 1}]
            ca.post("/v1/users", json={"user_id": f"fan{u}", "ratings": ratings})
        cb.post("/v1/users", json={"user_id": "new", "ratings": [{"item_id": "1", "rating": 4}]})
        tied = cb.get("/v1/users/new/recommendations", params=pick).json()["items"]
        assert abs(tied[0]["score"] - tied[1]["score"]) < 1e-4
        assert ca.post("/v1/admin/fold-in").json()["items_updated"] == 2
        # B never folded in itself: it serves what A's fold-in made the state
        ranked = cb.get("/v1/users/new/recommendations", params=pick).json()["items"]
        assert [r["item_id"] for r in ranked] == ["loved", "hated"]
    assert len(held) >= 3 and not any(held), held  # starts, A's fold-in, B's catch-up


# two items of one text: only ratings (a fold-in's offsets) can tell them apart
TWINS = [{"item_id": i, "title": "Night Train", "year": 2001} for i in ("loved", "hated")]


def gap(client: Any) -> float:
    """User "new"'s score of the loved twin less the hated one's."""
    params = {"candidates": "loved,hated", "k": 2}
    ranked = client.get("/v1/users/new/recommendations", params=params).json()["items"]
    score = {r["item_id"]: r["score"] for r in ranked}
    return score["loved"] - score["hated"]


def test_an_erased_user_leaves_the_fold_in_and_every_cache(
    make_server: Callable[..., LiveServer], server_api_key: str, tmp_path: Path
) -> None:
    """DELETE /v1/users/{id} erases a user's events; where the fold-in the store records
    learned item offsets from them, every process reloads the run and store at the
    recorded cut-off, as a store that never held them gives: erased through a process
    that never saw the fold-in too (it judged by its own record, found nothing to redo,
    and the other served the erased ratings on), and without folding in the feedback
    that came since (the erasure moved the cut-off to now). A user created again under
    the id is adapted afresh everywhere, not served the erased one's cached state."""
    a, b = make_server(), make_server()
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        ca.put("/v1/items", json={"items": TWINS})
        for u in range(4):
            ratings = [{"item_id": str(1 + u), "rating": 4}, {"item_id": "loved", "rating": 5},
                       {"item_id": "hated", "rating": 1}]  # fmt: skip
            ca.post("/v1/users", json={"user_id": f"fan{u}", "ratings": ratings})
        ca.post("/v1/users", json={"user_id": "new", "ratings": [{"item_id": "1", "rating": 4}]})
        assert ca.get("/v1/users/new").status_code == 200
        assert ca.post("/v1/admin/fold-in").json()["items_updated"] == 2
        assert gap(ca) > 0.1
        # feedback after the fold-in, which no fold-in has learned yet: an erasure must
        # not fold it in (two fans of the other twin would turn the ranking over)
        for u in range(2):
            ratings = [{"item_id": "loved", "rating": 1}, {"item_id": "hated", "rating": 5}]
            ca.post("/v1/users", json={"user_id": f"late{u}", "ratings": ratings})
        before = ca.get("/v1/users/fan0/recommendations", params={"k": 5}).json()["items"]
        # erased through B, which has not loaded A's fold-in
        for u in range(4):
            erased = cb.delete(f"/v1/users/fan{u}")
            assert erased.status_code == 200, erased.text
            assert erased.json() == {"user_id": f"fan{u}", "events_erased": 3, "fold_in": "redone"}
        assert cb.get("/v1/users/fan0").status_code == 404
        gone = ca.delete("/v1/users/fan0")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "unknown_user"
        # no rating before the cut-off supports either twin now: tied in both, and in a
        # process started afresh on the store
        assert abs(gap(ca)) < 1e-4 and abs(gap(cb)) < 1e-4
        c = make_server()
        with c.client(server_api_key) as cc:
            assert abs(gap(cc)) < 1e-4
        # fan0 again, with as many events as before but other tastes: adapted afresh
        other = [{"item_id": str(200 + j), "rating": 1 + 4 * (j % 2)} for j in range(3)]
        ca.post("/v1/users", json={"user_id": "fan0", "ratings": other})
        after = cb.get("/v1/users/fan0/recommendations", params={"k": 5}).json()["items"]
        fresh = ca.get("/v1/users/fan0/recommendations", params={"k": 5}).json()["items"]
        assert after == fresh != before
        # a user no fold-in read (created after the cut-off) reloads nothing, so B keeps
        # its generation: its cached state of the erased user must not answer for the new
        top = [{"item_id": str(50 + j), "rating": 5 - 4 * (j % 2)} for j in range(3)]
        ca.post("/v1/users", json={"user_id": "late", "ratings": top})
        cached = cb.get("/v1/users/late/recommendations", params={"k": 5}).json()["items"]
        assert ca.delete("/v1/users/late").json()["fold_in"] == "redone"  # any may have read it
        ca.post("/v1/users", json={"user_id": "late", "ratings": other})
        after = cb.get("/v1/users/late/recommendations", params={"k": 5}).json()["items"]
        fresh = ca.get("/v1/users/late/recommendations", params={"k": 5}).json()["items"]
        assert after == fresh != cached


def test_a_fold_in_that_read_an_erased_users_ratings_does_not_publish_them(
    make_server: Callable[..., LiveServer], server_api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold-in that had read the feedback when an erasure committed, and published
    after it: judged by the cut-off recorded then, the erasure announced nothing, and
    the fold-in's process served the erased ratings on. Every erasure on a run that
    folds in now moves the served state, so the fold-in is refused and caught up."""
    from metarec.service import serving

    a, b = make_server(), make_server()
    folding, go = threading.Event(), threading.Event()
    real = serving.ModelHolder._feedback
    armed = [False]

    def paused(self: Any, *args: Any, **kwargs: Any) -> Any:
        read = real(self, *args, **kwargs)
        if armed[0]:  # the first read after arming: A's fold-in, before it folds in
            armed[0] = False
            folding.set()
            go.wait(60)
        return read

    monkeypatch.setattr(serving.ModelHolder, "_feedback", paused)
    answers: list[httpx.Response] = []
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        ca.put("/v1/items", json={"items": TWINS})
        for u in range(3):
            ratings = [{"item_id": "loved", "rating": 5}, {"item_id": "hated", "rating": 1}]
            ca.post("/v1/users", json={"user_id": f"fan{u}", "ratings": ratings})
        ca.post("/v1/users", json={"user_id": "new", "ratings": [{"item_id": "1", "rating": 4}]})
        armed[0] = True
        folder = threading.Thread(target=lambda: answers.append(ca.post("/v1/admin/fold-in")))
        folder.start()
        assert folding.wait(60)
        for u in range(3):  # through B, while A's fold-in holds the fans' ratings
            assert cb.delete(f"/v1/users/fan{u}").json()["fold_in"] == "redone"
        go.set()
        folder.join(60)
        assert answers[0].status_code == 409, answers[0].text  # the state moved on
        assert abs(gap(ca)) < 1e-4 and abs(gap(cb)) < 1e-4


def test_an_erasure_a_process_cannot_reload_after_says_pending(
    make_server: Callable[..., LiveServer], server_api_key: str, service_run: Path, tmp_path: Path
) -> None:
    """The reload after an erasure failed (the run folder gone) and the answer said
    "redone": a catch-up that fails serves on, so only the version it reached tells."""
    run = shutil.copytree(service_run, tmp_path / "mine")
    a = make_server(run=run)
    with a.client(server_api_key) as ca:
        ca.post("/v1/users", json={"user_id": "fan", "ratings": [{"item_id": "1", "rating": 5}]})
        shutil.rmtree(run)
        erased = ca.delete("/v1/users/fan")
    assert erased.status_code == 200, erased.text
    assert erased.json() == {"user_id": "fan", "events_erased": 1, "fold_in": "pending"}


def test_a_change_that_cannot_be_loaded_leaves_the_other_serving(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    service_run: Path,
    tmp_path: Path,
) -> None:
    other = shutil.copytree(service_run, tmp_path / "short-lived")
    a, b = make_server(), make_server()
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        ca.post("/v1/admin/reload", json={"run": str(other)})
        shutil.rmtree(other)  # gone before B catches up
        for _ in range(3):  # B logs the failure once and keeps its model
            assert cb.get("/v1/items/1").status_code == 200
        assert generation(b) == 1


def test_a_server_started_later_serves_what_the_store_records(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    service_run: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = shutil.copytree(service_run, tmp_path / "retrained")
    a = make_server()
    with a.client(server_api_key) as ca:
        moved = ca.post("/v1/admin/reload", json={"run": str(other)}).json()["model"]
    # a worker replacing one that died: the run its siblings serve, not the one first given
    follower = make_server(follow_store=True)
    with follower.client() as c:
        assert c.get("/ready").json()["model"] == moved
    # an operator starting a server on another run: that run is what the store serves
    # now, said as a warning naming both (a restart with the first command rolls back
    # every server on the store)
    with caplog.at_level(logging.WARNING, logger="metarec.service"):
        make_server()
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"not {other.resolve()}" in m and "every server process" in m for m in said), said
    with a.client() as ca:
        assert ca.get("/ready").json()["model"].startswith(service_run.name + "@")
    caplog.clear()  # a start on what the store records says nothing of the kind
    with caplog.at_level(logging.WARNING, logger="metarec.service"):
        make_server()
    assert not [r for r in caplog.records if "shared store records" in r.getMessage()]


def test_a_run_folder_rewritten_in_place_is_said_by_the_process_that_reads_it(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    service_run: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker replacing a dead one read the folder's new files while the others kept
    what they had loaded, without a word: workers served different models."""
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(service_run, tmp_path / "served"))
    first = make_server(run=folder)
    with first.client() as c:
        served = c.get("/ready").json()["model"]
    weights = load_file(folder / "model.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.numel() > 1)
    weights[name] = weights[name] * 1.01  # a retrain written over the served folder
    save_file(weights, folder / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="metarec.service"):
        follower = make_server(run=folder, follow_store=True)
    with follower.client() as c:
        now = c.get("/ready").json()["model"]
    assert now != served
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"holds {now}, not {served}" in m and "rewritten in place" in m for m in said)
    # the fix the warning gives: a reload records what the folder now holds, and a
    # process reading it later says nothing
    with first.client(server_api_key) as c:
        assert c.post("/v1/admin/reload", json={"run": str(folder)}).json()["model"] == now
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="metarec.service"):
        make_server(follow_store=True)
    assert not [r for r in caplog.records if "rewritten in place" in r.getMessage()]


def test_a_catch_up_holds_up_only_requests_that_name_items(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    a, b = make_server(), make_server()
    holder = b.app.state.holder
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        ca.put("/v1/items", json={"items": [{"item_id": "fresh", "title": "Night Train"}]})
        holder._sync.acquire()  # another request of B's is catching up (a slow load)
        try:
            # no wait for a request that names no item: the model B has answers it
            assert cb.get("/v1/items", params={"q": "toy"}).status_code == 200
            assert generation(b) == 1
        finally:
            holder._sync.release()
        assert cb.get("/v1/items/fresh").status_code == 200  # names an item: catches up


def test_a_failed_catch_up_is_tried_again_after_a_pause(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import metarec.service.serving as serving

    a, b = make_server(), make_server()
    holder = b.app.state.holder
    real_load, failures = holder.load, []

    def load_fails_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise OSError("database is locked")  # a passing failure
        return real_load(*args, **kwargs)

    monkeypatch.setattr(holder, "load", load_fails_once)
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        ca.put("/v1/items", json={"items": [{"item_id": "fresh", "title": "Night Train"}]})
        monkeypatch.setattr(serving, "SYNC_RETRY_S", 60.0)
        assert cb.get("/v1/items/fresh").status_code == 404  # failed: serves on
        assert cb.get("/v1/items/fresh").status_code == 404  # not retried at once
        holder._failed = (holder._failed[0], 0.0)  # the pause is over
        assert cb.get("/v1/items/fresh").status_code == 200


def test_an_item_change_that_cannot_be_stored_is_not_served(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = make_server()
    store = a.app.state.store

    monkeypatch.setattr(store, "bump_served_state", _database_locked)
    with a.client(server_api_key) as ca:
        item = {"item_id": "fresh", "title": "Night Train"}
        assert ca.put("/v1/items", json={"items": [item]}).status_code == 503
        assert ca.get("/v1/items/fresh").status_code == 404  # applied, then undone
    assert store.added_items() == []


@pytest.mark.parametrize("read_afresh", ["works", "fails"])
def test_an_item_is_named_only_once_the_store_has_it(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
    read_afresh: str,
) -> None:
    """The model took an item, then the store was asked to keep it: an event naming it
    in between was accepted and kept, on an item the store then refused (a 503), which
    no process and no restart has. So too where reading the run afresh then failed, and
    the model still held the item."""
    from metarec.service import serving

    a = make_server()
    store = a.app.state.store
    if read_afresh == "fails":

        def unreadable(*args: Any, **kwargs: Any) -> Any:
            raise OSError("the run folder cannot be read")

        monkeypatch.setattr(serving, "load_run", unreadable)
    with a.client(server_api_key) as ca, a.client(server_api_key) as cb:
        assert ca.post("/v1/users", json={"user_id": "v"}).status_code == 201
        held = HeldStoreWrite(store, monkeypatch, fails=True)
        item = {"item_id": "ghost", "title": "Night Train"}
        put = Background(lambda: ca.put("/v1/items", json={"items": [item]}))
        assert held.reached.wait(timeout=30)  # the model holds the item now
        threading.Timer(0.5, held.released.set).start()  # once the event below waits
        event = {"event_id": "on-ghost", "type": "like", "item_id": "ghost"}
        got = cb.post("/v1/users/v/events", json=event)
        new_user = {"user_id": "w", "ratings": [{"item_id": "ghost", "rating": 4}]}
        created = cb.post("/v1/users", json=new_user)
        assert put.answer().status_code == 503
        # refused, or unknown once the model was read afresh: never accepted
        assert got.status_code in (422, 503), got.text
        assert created.status_code in (422, 503), created.text
        assert cb.get("/v1/items/ghost").status_code == (404 if read_afresh == "works" else 503)
    assert [ev.item_id for ev in store.events_for("v")] == []
    assert store.user("w") is None


def test_every_server_scores_an_added_item_alike(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    a, b = make_server(), make_server()
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        _fresh_item_rated_low(ca)
        # another item through A: B's catch-up (a load) folds in to the recorded cut-off,
        # which A's offsets were learned to
        ca.put("/v1/items", json={"items": [{"item_id": "other", "title": "Day Train"}]})
        on_a, on_b = _score_of_fresh(ca), _score_of_fresh(cb)
    assert on_a == pytest.approx(on_b, abs=1e-5)


def test_every_server_holds_the_catalogue_in_one_order(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    # ties between unrated new items were broken by catalogue position, which differed:
    # the server taking a change appended in request order and updated in place, one
    # catching up from the store ordered by time of the last change, then by id
    a, b = make_server(), make_server()
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        for batch in (["zz", "aa"], ["mm"], ["zz", "bb"]):  # the last updates zz
            items = [{"item_id": i, "title": f"Title {i} {n}"} for n, i in enumerate(batch)]
            assert ca.put("/v1/items", json={"items": items}).status_code == 200
        assert cb.get("/v1/items/zz").status_code == 200  # b catches up
    order_a = a.app.state.holder.current.rec.items["item_id"].tolist()
    order_b = b.app.state.holder.current.rec.items["item_id"].tolist()
    assert order_a[-4:] == ["zz", "aa", "mm", "bb"]
    assert order_a == order_b


def _fresh_item_rated_low(c: Any) -> None:
    """Item "fresh" added, rated 1 by 30 users; user "n" with one rating of item 1."""
    c.put("/v1/items", json={"items": [{"item_id": "fresh", "title": "Night Train"}]})
    for u in range(30):
        ratings = [{"item_id": str(1 + (u + j) % 50), "rating": 4} for j in range(3)]
        ratings.append({"item_id": "fresh", "rating": 1})
        c.post("/v1/users", json={"user_id": f"r{u}", "ratings": ratings})
    c.post("/v1/users", json={"user_id": "n", "ratings": [{"item_id": "1", "rating": 4}]})


def _score_of_fresh(c: Any) -> float:
    got = c.get("/v1/users/n/recommendations", params={"candidates": "fresh", "k": 1})
    return float(got.json()["items"][0]["score"])


def test_a_worker_started_later_learns_what_the_others_folded_in(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    """Fold-in learns from the feedback up to a recorded event, so a worker loading
    later (replacing one that died) scores the items as its siblings do."""
    a = make_server()
    with a.client(server_api_key) as ca:
        _fresh_item_rated_low(ca)
        on_a = _score_of_fresh(ca)
    late = make_server(follow_store=True)
    with late.client(server_api_key) as cl:
        on_late = _score_of_fresh(cl)
    assert on_late == pytest.approx(on_a, abs=1e-5)


def _reload_during_next_load(monkeypatch: pytest.MonkeyPatch, other: LiveServer, run: Path) -> None:
    """The next run a server loads, another server's reload to ``run`` lands meanwhile."""
    import metarec.ensemble_run as ensemble_run
    import metarec.service.serving as serving

    real, done = serving.load_run, []

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        loaded = real(*args, **kwargs)
        if not done:
            done.append(1)
            other.app.state.holder.reload(run)
        return loaded

    monkeypatch.setattr(serving, "load_run", slow_load)  # a catch-up's load
    monkeypatch.setattr(ensemble_run, "load_run", slow_load)  # a start's


def test_a_reload_landing_during_a_catch_up_is_not_lost(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    two: Path,
    service_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    three = shutil.copytree(service_run, tmp_path / "three")
    a, b, c = make_server(), make_server(), make_server()
    with a.client(server_api_key) as ca:
        ca.post("/v1/admin/reload", json={"run": str(two)})
    _reload_during_next_load(monkeypatch, b, three)  # while C catches up to "two"
    with c.client() as cc:
        cc.get("/v1/items/1")  # the catch-up, with B's reload to "three" meanwhile
        assert cc.get("/ready").json()["model"].startswith("three@")  # not left on "two"


def test_a_replacement_worker_does_not_undo_a_reload_made_while_it_started(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    two: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = make_server()
    _reload_during_next_load(monkeypatch, a, two)  # while the replacement loads
    late = make_server(follow_store=True)
    with late.client() as cl, a.client() as ca:
        assert ca.get("/ready").json()["model"].startswith("two@")  # A kept its reload
        assert cl.get("/ready").json()["model"].startswith("two@")  # and the late one follows


def test_a_catch_up_loads_the_folder_the_others_serve_not_where_a_link_moved(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    service_run: Path,
    tmp_path: Path,
) -> None:
    import os

    old = shutil.copytree(service_run, tmp_path / "old")
    new = shutil.copytree(service_run, tmp_path / "new")
    link = tmp_path / "current"
    os.symlink(old, link)
    a, b = make_server(run=link), make_server(run=link)
    link.unlink()
    os.symlink(new, link)  # a retrained run published; no SIGHUP yet
    with a.client(server_api_key) as ca, b.client() as cb:
        ca.put("/v1/items", json={"items": [{"item_id": "fresh", "title": "Night Train"}]})
        assert cb.get("/v1/items/fresh").status_code == 200  # B caught up ...
        assert cb.get("/ready").json()["model"].startswith("old@")  # ... to A's folder


def test_a_start_on_a_link_to_the_served_folder_records_the_link(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    service_run: Path,
    tmp_path: Path,
) -> None:
    """Started once on a folder, then (as the README advises) on a link to it: the store
    kept the folder's name, so a worker started later, and every reload of what the
    store records, re-read the old folder after the link moved."""
    import os

    old = shutil.copytree(service_run, tmp_path / "old")
    new = shutil.copytree(service_run, tmp_path / "new")
    make_server(run=old).stop()
    link = tmp_path / "current"
    os.symlink(old, link)
    a = make_server(run=link)
    worker = make_server(follow_store=True)  # one started in place of a dead one
    assert worker.app.state.holder.current.run == link
    link.unlink()
    os.symlink(new, link)  # a retrained run published, then SIGHUP or a bare reload
    with worker.client(server_api_key) as c:
        assert c.post("/v1/admin/reload").json()["model"].startswith("new@")
    with a.client() as c:
        assert c.get("/ready").json()["model"].startswith("new@")
    # and a start on the folder the link leads to leaves the recorded link alone
    make_server(run=new)
    recorded = ServedRef.parse(a.app.state.store.served_state()[1])
    assert recorded is not None and recorded.run == str(link)


def test_a_reload_without_a_run_reloads_what_the_store_records(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    two: Path,
) -> None:
    a, b = make_server(), make_server()
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        ca.post("/v1/admin/reload", json={"run": str(two)})
        # B had no request since: "reload the current run" is A's, not B's stale one
        assert cb.post("/v1/admin/reload").json()["model"].startswith("two@")
        assert ca.get("/ready").json()["model"].startswith("two@")


def test_a_fold_in_that_raced_a_reload_is_refused_and_the_reload_stands(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    two: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = make_server(), make_server()
    store = b.app.state.store
    real = store.last_event_id

    def reload_lands_meanwhile() -> int:  # B has synced and is about to fold in
        a.app.state.holder.reload(two)
        return real()

    monkeypatch.setattr(store, "last_event_id", reload_lands_meanwhile)
    with a.client(server_api_key) as ca, b.client(server_api_key) as cb:
        got = cb.post("/v1/admin/fold-in")
        assert got.status_code == 409 and got.json()["error"]["code"] == "state_changed"
        monkeypatch.setattr(store, "last_event_id", real)
        assert cb.get("/ready").json()["model"].startswith("two@")  # B caught up
        assert ca.get("/ready").json()["model"].startswith("two@")


def test_a_request_naming_items_waits_for_a_put_only_while_it_is_stored(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an event waited for the PUT's encoding too (seconds with a sentence encoder on a
    # CPU), and for as long as the store took: queued events took every worker thread.
    # Then every event waited while a PUT was stored, though only one naming an item of
    # the PUT can be refused with it
    from metarec.service import serving

    a = make_server()
    store = a.app.state.store
    monkeypatch.setattr(serving, "ITEM_CHANGE_WAIT_S", 0.5)
    with a.client(server_api_key) as ca, a.client(server_api_key) as cb:
        assert ca.post("/v1/users", json={"user_id": "v"}).status_code == 201

        def click(named: str, put: str) -> int:
            event = {"event_id": f"on-{named}-{put}", "type": "click", "item_id": named}
            return int(cb.post("/v1/users/v/events", json=event).status_code)

        with put_while_held(ca, HeldCall(serving, "encode", monkeypatch), "encoding") as put:
            assert click("1", "encoding") == 200  # not waited for
        assert put.answer().status_code == 200
        for put_ids, named, code in (
            # an item the model held and the PUT does not name is stored: not waited for
            (["storing"], "1", 200),
            # the PUT's new item, and an item it updates: waited for a while, then "retry"
            (["storing-2"], "storing-2", 503),
            (["storing-3", "2"], "2", 503),
        ):
            held = HeldStoreWrite(store, monkeypatch, fails=False)
            with put_while_held(ca, held, *put_ids) as put:
                assert click(named, put_ids[0]) == code
            assert put.answer().status_code == 200
        new_user = {"user_id": "w", "ratings": [{"item_id": "1", "rating": 4}]}
        held = HeldStoreWrite(store, monkeypatch, fails=False)
        with put_while_held(ca, held, "s4") as put:
            assert cb.post("/v1/users", json=new_user).status_code == 201
        assert put.answer().status_code == 200
        event = {"event_id": "after", "type": "click", "item_id": "storing-2"}
        assert cb.post("/v1/users/v/events", json=event).status_code == 200


def test_a_put_waiting_on_the_store_holds_up_no_reader(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the store write under the model's lock held every recommendation, search and item
    # lookup of the process for as long as the store took (30 s at most)
    a = make_server()
    with a.client(server_api_key) as ca, a.client(server_api_key) as reader:
        reader.timeout = httpx.Timeout(20)  # a read held up fails here, not after the PUT
        assert ca.post("/v1/users", json={"user_id": "r"}).status_code == 201
        held = HeldStoreWrite(a.app.state.store, monkeypatch, fails=False)
        with put_while_held(ca, held, "late") as put:
            assert reader.get("/v1/users/r/recommendations").status_code == 200
            assert reader.get("/v1/items/1").status_code == 200
            assert reader.get("/v1/items", params={"q": "a"}).status_code == 200
        assert put.answer().status_code == 200
        assert reader.get("/v1/items/late").status_code == 200


def test_a_put_waiting_on_the_store_holds_up_no_reader_with_two_servers(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # another server's change made this one's next reader catch up, and the catch-up
    # waited for this server's PUT being stored; every request naming an item waited
    # behind it, a lookup of an item the server had all along included. One naming an
    # item this server lacks waits a while at most, then is told to retry
    from metarec.service import serving

    monkeypatch.setattr(serving, "ITEM_CHANGE_WAIT_S", 0.5)
    a, b = make_server(), make_server()
    with a.client(server_api_key) as ca, a.client(server_api_key) as reader:
        reader.timeout = httpx.Timeout(20)
        assert ca.post("/v1/users", json={"user_id": "r"}).status_code == 201
        held = HeldStoreWrite(a.app.state.store, monkeypatch, fails=False)
        with put_while_held(ca, held, "late") as put:
            with b.client(server_api_key) as cb:  # b's own change bumps the version
                other = {"item_id": "other", "title": "Day Train"}
                assert cb.put("/v1/items", json={"items": [other]}).status_code == 200
            assert reader.get("/v1/items", params={"q": "a"}).status_code == 200
            assert reader.get("/v1/items/1").status_code == 200
            picked = {"candidates": "1,2", "k": 1}
            assert reader.get("/v1/users/r/recommendations", params=picked).status_code == 200
            assert reader.get("/v1/items/other").status_code == 503
            event = {"event_id": "on-other", "type": "click", "item_id": "other"}
            assert reader.post("/v1/users/r/events", json=event).status_code == 503
        assert put.answer().status_code == 200
        # and an item only the other server had is waited for, and found
        assert reader.get("/v1/items/other").status_code == 200


def test_a_reload_is_served_only_once_the_store_records_it(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    two: Path,
    service_run: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the new run answered while the store was asked to record it, and the store refused
    a = make_server()
    with a.client(server_api_key) as ca, a.client(server_api_key) as cb:
        held = HeldStoreWrite(a.app.state.store, monkeypatch, fails=True)
        reload = Background(lambda: ca.post("/v1/admin/reload", json={"run": str(two)}))
        assert held.reached.wait(timeout=60)
        meanwhile = cb.get("/ready").json()["model"]
        held.released.set()
        assert reload.answer().status_code == 503
    assert meanwhile.startswith(service_run.name + "@"), meanwhile


def test_a_reload_the_store_did_not_record_is_not_served(
    make_server: Callable[..., LiveServer],
    server_api_key: str,
    two: Path,
    service_run: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = make_server()
    store = a.app.state.store
    real = store.bump_served_state

    with a.client(server_api_key) as ca:
        monkeypatch.setattr(store, "bump_served_state", _database_locked)
        assert ca.post("/v1/admin/reload", json={"run": str(two)}).status_code == 503
        monkeypatch.setattr(store, "bump_served_state", real)
        # out of step with the store, which still records the first run: caught up
        assert ca.get("/ready").json()["model"].startswith(service_run.name + "@")

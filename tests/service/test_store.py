"""The feedback store against real SQLite files and, when available, a real PostgreSQL.

Set ``METAREC_TEST_POSTGRES_URL`` (``postgresql://user:pw@host/db``; `.ci/run` starts
a local server and sets it) to run every store test against PostgreSQL as well.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import OperationalError

from metarec.errors import BusyError, ConfigError
from metarec.service.feedback import history_from_events
from metarec.service.store import (
    MIGRATION_LOCK,
    SCHEMA_VERSION,
    SQLITE_BUSY_TIMEOUT_S,
    ErasedUser,
    EventConflictError,
    FeedbackStore,
    NewEvent,
    UnknownUserError,
    UserExistsError,
    events,
    make_engine,
    schema_version,
    service_state,
    users,
)

from .conftest import fresh_postgres, reset_postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    yield from fresh_postgres()


@pytest.fixture
def store(store_url: str) -> Iterator[FeedbackStore]:
    s = FeedbackStore(store_url)
    yield s
    s.close()


INSERTER = "metarec_inserter"  # a role that may only read and insert (.ci/run makes it)


def _inserter_url(owner: FeedbackStore, pg_url: str) -> str:
    """``pg_url`` as the role that may only read and insert, granted that on the store."""
    from sqlalchemy.engine import make_url

    with owner.engine.begin() as conn:
        conn.execute(text(f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {INSERTER}"))
        conn.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {INSERTER}"))
    return make_url(pg_url).set(username=INSERTER, password="metarec").render_as_string(False)


def _inserter(owner: FeedbackStore, pg_url: str) -> FeedbackStore:
    """The store opened as the role that may only read and insert (:func:`_inserter_url`);
    the test is skipped, ``owner`` closed, where the server has no such role."""
    url = _inserter_url(owner, pg_url)
    try:
        return FeedbackStore(url)
    except ConfigError as exc:
        owner.close()
        pytest.skip(f"PostgreSQL: no role {INSERTER}, password 'metarec' (.ci/run makes it): {exc}")


def ev(event_id: str, item: str = "1", kind: str = "click", value: float | None = None,
       ts: float | None = None) -> NewEvent:  # fmt: skip
    return NewEvent(event_id, item, kind, value, ts)


def test_schema_is_created_once_and_versioned(store_url: str) -> None:
    first = FeedbackStore(store_url)
    assert first.previous_version == 0
    first.create_user("u", {})
    first.close()
    again = FeedbackStore(store_url)  # reopening migrates nothing and keeps the data
    assert again.previous_version == SCHEMA_VERSION and again.user("u") is not None
    with again.engine.connect() as conn:
        versions = conn.execute(text("SELECT version FROM schema_version")).scalars().all()
    assert versions == [1, 2, 3, 4]
    again.close()


def test_a_version_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    old = FeedbackStore(f"sqlite:///{path}")
    old.create_user("u", {}, [ev("e1", "1", "rating", 4.0)])
    old.close()
    with sqlite3.connect(path) as raw:  # as metarec before the served state was shared
        raw.execute("DROP TABLE service_state")
        raw.execute("DELETE FROM schema_version WHERE version >= 2")
    store = FeedbackStore(f"sqlite:///{path}")
    assert store.previous_version == 1
    assert store.user("u") is not None and store.user("u").n_events == 1  # type: ignore[union-attr]
    assert store.served_state() == (0, None)
    store.close()


def test_a_version_2_store_numbers_its_items_in_the_order_they_were_served(
    store_url: str,
) -> None:
    engine = make_engine(store_url)
    with engine.begin() as conn:  # the tables as metarec wrote them before
        conn.execute(
            text(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at FLOAT NOT NULL)"
            )
        )
        for version in (1, 2):
            conn.execute(text(f"INSERT INTO schema_version VALUES ({version}, 'old', 0)"))
        conn.execute(
            text(
                "CREATE TABLE items (item_id VARCHAR(128) PRIMARY KEY, title TEXT "
                "NOT NULL, text TEXT, genres TEXT, year INTEGER, updated_at FLOAT "
                "NOT NULL)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO items (item_id, title, updated_at) VALUES "
                "('late', 'L', 30.0), ('b', 'B', 10.0), ('a', 'A', 10.0)"
            )
        )
        for table in (users, events, service_state):  # unchanged since version 2
            table.create(conn)
        conn.execute(service_state.insert().values(id=1, version=0, run=None))
    engine.dispose()
    store = FeedbackStore(store_url)
    assert store.previous_version == 2
    assert [r["item_id"] for r in store.added_items()] == ["a", "b", "late"]
    store.upsert_items([{"item_id": "new", "title": "N"}, {"item_id": "a", "title": "A2"}])
    assert [r["item_id"] for r in store.added_items()] == ["a", "b", "late", "new"]
    indexes = {i["name"] for i in inspect(store.engine).get_indexes("items")}
    assert "ix_items_added" in indexes  # each change reads the largest number
    store.close()


def test_a_version_3_store_redates_events_from_far_past_their_arrival(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stored before the service refused them, an event dated years ahead won "the
    latest event per item" for good; it takes its arrival time, as an event sent
    without a time does. An event a little ahead (a fast clock), or in the past, keeps
    its own."""
    old = FeedbackStore(store_url)
    now = time.time()
    old.create_user("u", {}, [
        ev("far", "1", "rating", 5.0, ts=now + 3e9),  # 2121
        ev("near", "2", "rating", 4.0, ts=now + 60.0),
        ev("past", "3", "rating", 2.0, ts=1e9),
    ])  # fmt: skip
    old.add_events("u", [ev("later", "1", "rating", 1.0, ts=now + 30.0)])
    with old.engine.begin() as conn:  # as metarec wrote it before version 4
        conn.execute(text("DELETE FROM schema_version WHERE version >= 4"))
    assert [e.event_id for e in old.events_for("u")][-1] == "far"
    old.close()
    with caplog.at_level(logging.WARNING, logger="metarec.service"):
        store = FeedbackStore(store_url)
    assert store.previous_version == 3
    assert "1 stored event(s) dated more than 600 s after they arrived" in caplog.text
    stored = {e.event_id: e.timestamp for e in store.events_for("u")}
    with store.engine.connect() as conn:
        arrived = dict(conn.execute(text("SELECT event_id, received_at FROM events")).all())
    assert stored["far"] == pytest.approx(arrived["far"]) and stored["far"] < now + 60
    assert stored["near"] == pytest.approx(now + 60.0) and stored["past"] == 1e9
    # the rating of item 1 that came after it is the latest now
    assert [e.event_id for e in store.events_for("u")][-1] == "near"
    assert [e.event_id for e in store.events_for("u") if e.item_id == "1"][-1] == "later"
    store.close()


def test_items_keep_the_order_they_were_first_added_in(store: FeedbackStore) -> None:
    # not by id, and an update (a newer updated_at) does not move an item to the end
    store.bump_served_state(items=[{"item_id": "z", "title": "Z"}, {"item_id": "a", "title": "A"}])
    store.bump_served_state(items=[{"item_id": "m", "title": "M"}])
    store.bump_served_state(items=[{"item_id": "z", "title": "Z2"}, {"item_id": "b", "title": "B"}])
    got = store.added_items()
    assert [r["item_id"] for r in got] == ["z", "a", "m", "b"] and got[0]["title"] == "Z2"


def test_served_state_versions_every_change_once(store_url: str) -> None:
    a, b = FeedbackStore(store_url), FeedbackStore(store_url)  # two server processes
    assert a.served_state() == (0, None)
    assert a.bump_served_state("/runs/x") == (0, 1)
    assert b.bump_served_state("/runs/y") == (1, 2)
    assert a.served_state() == b.served_state() == (2, "/runs/y")
    # an item change keeps the recorded run (it used to write its own, undoing a reload)
    assert a.bump_served_state(items=[{"item_id": "n", "title": "N"}]) == (2, 3)
    assert b.served_state() == (3, "/runs/y")
    assert [r["item_id"] for r in b.added_items()] == ["n"]
    with pytest.raises(BusyError, match="moved on"):  # made from version 2: refused
        a.bump_served_state("/runs/z", expect=2)
    assert b.served_state() == (3, "/runs/y")
    a.close()
    b.close()


def test_an_expected_version_is_judged_after_another_change_commits(store_url: str) -> None:
    """A fold-in made from version 0 while a reload's bump to 1 is not yet committed:
    it waits on the row and must then be refused. On PostgreSQL it read version 0
    before waiting, found it expected, and overwrote the reload acknowledged meanwhile."""
    store = FeedbackStore(store_url)
    store.served_state()
    other = make_engine(store_url).connect()
    changing = other.begin()
    bump = "UPDATE service_state SET version = version + 1, run = 'reloaded' WHERE id = 1"
    other.exec_driver_sql(bump)
    outcome: list[object] = []

    def fold_in() -> None:
        try:
            outcome.append(store.bump_served_state("folded", expect=0))
        except Exception as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=fold_in)
    waiting.start()
    time.sleep(0.5)  # the fold-in is now waiting on the row (SQLite: on the write lock)
    changing.commit()
    other.close()
    waiting.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], BusyError), outcome
    assert "moved on (version 1, not 0)" in str(outcome[0])
    assert store.served_state() == (1, "reloaded")
    store.close()


def test_items_are_stored_only_with_their_announcement(tmp_path: Path) -> None:
    store = FeedbackStore(f"sqlite:///{tmp_path / 's.db'}")
    with store.engine.begin() as conn:  # the announcement cannot be written
        conn.exec_driver_sql("DROP TABLE service_state")
    with pytest.raises(OperationalError):
        store.bump_served_state(items=[{"item_id": "n", "title": "N"}])
    assert store.added_items() == []
    store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    FeedbackStore(url).close()
    with sqlite3.connect(tmp_path / "s.db") as raw:
        raw.execute("INSERT INTO schema_version VALUES (99, 'future', 0)")
    with pytest.raises(
        ConfigError, match=r"database sqlite:///.*s\.db: schema version 99 is newer"
    ):
        FeedbackStore(url)


def test_a_store_edited_under_its_schema_is_refused_at_open(tmp_path: Path) -> None:
    """Found by name when the store opens, not as a constraint error, a traceback from
    the first fold-in, or a 500 on every write."""

    def edited(*statements: str) -> str:
        path = tmp_path / f"s{len(list(tmp_path.glob('*.db')))}.db"
        FeedbackStore(f"sqlite:///{path}").close()
        with sqlite3.connect(path) as raw:
            for statement in statements:
                raw.execute(statement)
        return f"sqlite:///{path}"

    url = edited("DELETE FROM schema_version")  # was "UNIQUE constraint failed: ..."
    with pytest.raises(ConfigError, match="tables are there but schema_version records no"):
        FeedbackStore(url)
    url = edited("ALTER TABLE events DROP COLUMN value")
    with pytest.raises(ConfigError, match=r"s1\.db: table events lacks column\(s\) value at"):
        FeedbackStore(url)
    url = edited(
        "DROP TABLE service_state",
        "CREATE TABLE service_state (id INTEGER PRIMARY KEY, version BIGINT NOT NULL, "
        "run TEXT, owner TEXT NOT NULL)",
    )
    with pytest.raises(ConfigError, match=r"service_state has column\(s\) owner that metarec"):
        FeedbackStore(url)
    # a column that may be empty, or has a default, is no obstacle to metarec's writes
    url = edited(
        "ALTER TABLE events ADD COLUMN note TEXT",
        "ALTER TABLE items ADD COLUMN n INT NOT NULL DEFAULT 0",
        # computed by the database: required, but never metarec's to write
        "ALTER TABLE events ADD COLUMN twice REAL GENERATED ALWAYS AS (value * 2) NOT NULL",
    )
    store = FeedbackStore(url)
    store.create_user("u", {}, [ev("e", "1", "rating", 4.0)])
    assert store.user("u") is not None
    store.close()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = FeedbackStore(f"sqlite:///{tmp_path / 'w.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    store.close()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://x/y", "::"])
def test_bad_urls_name_the_problem(url: str) -> None:
    with pytest.raises(ConfigError, match="--db"):
        FeedbackStore(url)


def test_users_and_idempotent_events(store: FeedbackStore) -> None:
    assert store.create_user("u1", {"age": 30}, [ev("i1", "1", "rating", 5.0)]) == 1
    with pytest.raises(UserExistsError):
        store.create_user("u1", {})
    assert store.add_events("u1", [ev("a"), ev("b"), ev("a")]) == (2, 1)
    assert store.add_events("u1", [ev("b"), ev("c")]) == (1, 1)
    with pytest.raises(UnknownUserError):
        store.add_events("ghost", [ev("z")])
    user = store.user("u1")
    assert user is not None and user.n_events == 4 and user.features == {"age": 30}
    assert store.user("ghost") is None
    assert store.count_events() == 4 and store.event_ids() == {"i1", "a", "b", "c"}


def test_a_forgotten_user_leaves_no_row_and_others_keep_theirs(store: FeedbackStore) -> None:
    store.create_user("gone", {"age": 30}, [ev("g1"), ev("g2", "2", "rating", 4.0)])
    store.create_user("kept", {}, [ev("k1")])
    store.add_events("gone", [ev("g3", "3")])
    erased = store.forget_user("gone")
    assert erased == ErasedUser(3, None)  # not announced: no version
    assert store.user("gone") is None and store.events_for("gone") == []
    assert [u for u, _ in store.iter_all_events()] == ["kept"]
    assert store.forget_user("gone") is None and store.forget_user("never") is None
    # the id is free again: a new user under it starts from nothing, another creation
    before = store.user("kept")
    store.create_user("gone", {}, [])
    again = store.user("gone")
    assert again is not None and again.n_events == 0 and again.features == {}
    assert before is not None and again.created_at >= before.created_at > 0
    # its event ids too: a retried send of an erased event is stored anew, as the user's
    assert store.add_events("gone", [ev("g1")]) == (1, 0)
    quiet = store.forget_user("gone")
    assert quiet is not None and quiet.events == 1
    store.create_user("none", {})
    assert store.forget_user("none") == ErasedUser(0, None)
    if store.is_sqlite:  # erased rows are overwritten in the file, not left in free pages
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1


def test_an_erased_user_is_not_left_in_sqlites_write_ahead_log(tmp_path: Path) -> None:
    """secure_delete clears the database file's pages, not the log: the erased user's
    id stayed readable in store.db-wal while the service ran."""
    store = FeedbackStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_user("kept", {}, [ev("k1")])
    store.create_user("erase-me-7f3a", {}, [ev("e1-7f3a"), ev("e2-7f3a", "2")])
    store.forget_user("erase-me-7f3a")
    for path in tmp_path.glob("store.db*"):
        assert b"7f3a" not in path.read_bytes(), path.name
    store.close()


def test_an_announced_erasure_moves_the_served_state_with_it(store: FeedbackStore) -> None:
    """Announced (a served run that folds in feedback), an erasure of a user with events
    bumps the served state's version in its own transaction, so every process reloads
    and a fold-in that read the user before it is refused; the run recorded stays."""
    store.bump_served_state('{"run": "r"}')
    version, run = store.served_state()
    store.create_user("a", {}, [ev("a1")])
    store.create_user("b", {}, [ev("b1")])
    erased = store.forget_user("a", announce=True)
    assert erased is not None and erased.version == version + 1
    assert store.served_state() == (version + 1, run)
    quiet = store.forget_user("b")  # not announced: the state stays
    assert quiet is not None and quiet.version is None and quiet.events == 1
    store.create_user("c", {})
    assert store.forget_user("c", announce=True) == ErasedUser(0, None)  # no events
    assert store.served_state() == (version + 1, run)
    with pytest.raises(BusyError):  # a fold-in that read the state before the erasure
        store.bump_served_state('{"run": "r2"}', expect=version)
    # a served-state row deleted by hand is put back, as any change puts it back: the
    # erasure is announced all the same (it was not, and answered "unaffected")
    with store.engine.begin() as conn:
        conn.execute(service_state.delete())
    store.create_user("d", {}, [ev("d1")])
    restored = store.forget_user("d", announce=True)
    assert restored is not None and restored.version == store.served_state()[0] == 1


def test_event_ids_are_unique_across_users(store: FeedbackStore) -> None:
    store.create_user("a", {})
    store.create_user("b", {})
    assert store.add_events("a", [ev("same")]) == (1, 0)
    assert store.add_events("a", [ev("same")]) == (0, 1)  # a retry
    # another user's id is a conflict, not a retry: refused, and the request rolled back
    with pytest.raises(EventConflictError, match="another user's event"):
        store.add_events("b", [ev("fresh", "9"), ev("same")])
    with pytest.raises(EventConflictError, match="already stored as click of item"):
        store.add_events("a", [ev("same", "9")])
    # a retry repeats the event whole: the same id with another rating is a conflict,
    # not a duplicate whose new rating would be dropped without a word
    assert store.add_events("a", [ev("r1", "7", "rating", 2.0)]) == (1, 0)
    with pytest.raises(EventConflictError, match=r"already stored as rating of item '7' \(2"):
        store.add_events("a", [ev("r1", "7", "rating", 5.0)])
    assert store.user("b").n_events == 0 and store.user("a").n_events == 2


def test_events_come_back_in_time_order_and_latest_wins(store: FeedbackStore) -> None:
    store.create_user("u", {})
    store.add_events(
        "u", [ev("late", "7", "like", ts=200.0), ev("early", "7", "rating", 2.0, 100.0)]
    )
    store.add_events("u", [ev("other", "8", "skip", ts=150.0)])
    events = store.events_for("u")
    assert [e.event_id for e in events] == ["early", "other", "late"]
    assert [e.event_id for e in store.events_for("u", limit=2)] == ["other", "late"]
    assert history_from_events(events, (1.0, 5.0)) == {"7": 5.0, "8": 2.0}
    assert [(u, e.event_id) for u, e in store.iter_all_events()] == [
        ("u", "early"), ("u", "other"), ("u", "late")
    ]  # fmt: skip


def test_events_of_one_time_keep_their_batchs_order(store: FeedbackStore) -> None:
    """Events without times take the batch's time: the later in the batch wins, whatever
    their ids (rows written in id order would make "z1"'s 1 lose to "a2"'s 5)."""
    store.create_user("u", {})
    store.add_events("u", [ev("z1", "7", "rating", 5.0), ev("a2", "7", "rating", 1.0)])
    events = store.events_for("u")
    assert [e.event_id for e in events] == ["z1", "a2"]
    assert history_from_events(events, (1.0, 5.0)) == {"7": 1.0}


def test_events_up_to_a_cut_off_include_the_event_at_it(store: FeedbackStore) -> None:
    # read as id < upto, fold-in (which learns from the events up to last_event_id())
    # would leave out the latest stored event, the cut-off itself
    store.create_user("u", {})
    store.add_events("u", [ev("a", "1", ts=1.0), ev("b", "2", "like", ts=2.0)])
    cut = store.last_event_id()
    store.add_events("u", [ev("c", "3", ts=3.0)])
    assert [e.event_id for _, e in store.iter_all_events(cut)] == ["a", "b"]
    assert [e.event_id for _, e in store.iter_all_events()] == ["a", "b", "c"]


def test_items_are_upserted(store: FeedbackStore) -> None:
    store.upsert_items([{"item_id": "n1", "title": "A", "year": 2001, "genres": "Drama"}])
    store.upsert_items(
        [{"item_id": "n1", "title": "B", "text": "t"}, {"item_id": "n2", "title": "C"}]
    )
    rows = {r["item_id"]: r for r in store.added_items()}
    assert set(rows) == {"n1", "n2"}
    assert rows["n1"]["title"] == "B" and rows["n1"]["text"] == "t" and rows["n1"]["year"] is None


def test_concurrent_writers_lose_and_double_nothing(store: FeedbackStore) -> None:
    """8 threads post overlapping batches (every id sent by two threads): each id stored once,
    and accepted counts add up to exactly the distinct ids."""
    store.create_user("c", {})
    ids = [f"e{i}" for i in range(800)]
    accepted: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        mine = ids[(n // 2) * 200 : (n // 2 + 1) * 200]  # threads 2k and 2k+1 share ids
        for lo in range(0, len(mine), 25):
            got, _ = store.add_events("c", [ev(i) for i in mine[lo : lo + 25]])
            with lock:
                accepted.append(got)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(accepted) == len(ids)
    assert store.count_events() == len(ids) and store.event_ids() == set(ids)


def test_batches_of_the_same_events_in_opposite_orders_both_succeed(
    store: FeedbackStore,
) -> None:
    """A client's retry can send a batch's events in another order while the first send
    is still being written; PostgreSQL locks each id as its row goes in, so two orders
    deadlocked and one request was refused 503. A user's batches now go in one after
    another, so the second waits for the first and stores nothing twice."""
    store.create_user("d", {})
    ids = [f"e{i:05d}" for i in range(3000)]
    results: list[tuple[int, int]] = []
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def send(order: list[str]) -> None:
        start.wait()
        try:
            results.append(store.add_events("d", [ev(i) for i in order]))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    for _ in range(3):
        threads = [threading.Thread(target=send, args=(order,)) for order in (ids, ids[::-1])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = [f"{i}x" for i in ids]  # fresh ids for the next round
    assert not failures, failures
    assert sorted(results) == [(0, 3000)] * 3 + [(3000, 0)] * 3  # one stores, one repeats
    assert store.count_events() == 9000


def test_a_store_that_must_exist_is_not_created_and_a_non_database_is_refused(
    tmp_path: Path,
) -> None:
    typo = tmp_path / "typo.db"
    # retrain reads what a service wrote: a mistyped --db is an error, not "no feedback"
    with pytest.raises(ConfigError, match=r"typo\.db\): no such file; give the --db"):
        FeedbackStore(f"sqlite:///{typo}", create=False)
    assert not typo.exists()
    # an empty file is not made a database by the look (a connection sets WAL mode)
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(ConfigError, match="not a SQLite database"):
        FeedbackStore(f"sqlite:///{empty}", create=False)
    assert empty.stat().st_size == 0
    bare = tmp_path / "bare.db"
    sqlite3.connect(bare).execute("CREATE TABLE other (x)").connection.close()
    with pytest.raises(ConfigError, match="holds no feedback store"):
        FeedbackStore(f"sqlite:///{bare}", create=False)
    FeedbackStore(f"sqlite:///{typo}").close()
    FeedbackStore(f"sqlite:///{typo}", create=False).close()  # now it holds one
    text = tmp_path / "ratings.csv"
    text.write_text("user_id,item_id,rating\n" * 200)
    with pytest.raises(ConfigError, match="cannot open"):
        FeedbackStore(f"sqlite:///{text}")


def test_a_relative_sqlite_url_error_names_the_file_it_meant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # three slashes: relative to the working folder, which the URL does not show
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        FeedbackStore("sqlite:///no-such-folder/f.db")
    assert f"(file {tmp_path.resolve() / 'no-such-folder' / 'f.db'})" in str(err.value)
    assert "cannot open" in str(err.value)


def test_the_event_cut_off_waits_for_inserts_in_flight_on_postgresql(pg_url: str) -> None:
    """An event that took its id first but commits last must not fall below a cut-off
    taken before it commits: a process reading the feedback later would learn from it,
    one reading at the cut-off would not."""
    store = FeedbackStore(pg_url)
    store.create_user("u", {})
    cut: list[int] = []
    with store.engine.connect() as slow:  # closed even when an assertion fails: an open
        tx = slow.begin()  # transaction would hold the table past the test's teardown
        slow.execute(
            events.insert().values(event_id="slow", user_id="u", item_id="1", type="click",
                                   value=None, ts=1.0, received_at=1.0)
        )  # fmt: skip
        store.add_events("u", [ev("fast")])  # a higher id, committed first
        taker = threading.Thread(target=lambda: cut.append(store.last_event_id()), daemon=True)
        taker.start()
        taker.join(0.5)
        waited = taker.is_alive() and not cut
        tx.commit()
    assert waited, f"the cut-off {cut} passed over an insert in flight"
    taker.join(10)
    assert [e.event_id for _, e in store.iter_all_events(cut[0])] == ["slow", "fast"]
    store.add_events("u", [ev("later")])  # inserts go on once the cut-off is taken
    assert store.last_event_id() > cut[0]
    store.close()


def test_a_user_created_by_another_transaction_meanwhile_exists_on_postgresql(
    pg_url: str,
) -> None:
    # the check found no user, the insert met the other's key: a 500 UniqueViolation
    # where the service promises 409 user_exists (SQLite's writers lock before the check)
    store = FeedbackStore(pg_url)
    outcome: list[BaseException | int] = []

    def create() -> None:
        try:
            outcome.append(store.create_user("u", {}))
        except BaseException as exc:  # what it raised is the outcome
            outcome.append(exc)

    with store.engine.connect() as other:
        tx = other.begin()
        other.execute(users.insert().values(user_id="u", features="{}", created_at=1.0))
        creator = threading.Thread(target=create, daemon=True)
        creator.start()
        creator.join(0.5)  # its insert waits on the other's uncommitted key
        tx.commit()
    creator.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], UserExistsError), outcome
    assert store.user("u") is not None
    store.close()


def test_stores_opened_at_once_migrate_one_at_a_time_on_postgresql(pg_url: str) -> None:
    engine = make_engine(pg_url)
    opened: list[FeedbackStore] = []
    with engine.connect() as other, other.begin():  # a server migrating right now
        other.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        opener = threading.Thread(target=lambda: opened.append(FeedbackStore(pg_url)), daemon=True)
        opener.start()
        opener.join(0.5)
        waited = opener.is_alive() and not opened
    opener.join(30)
    assert waited, "a store migrated while another server held the migration lock"
    assert opened and opened[0].previous_version == 0
    # and several at once: each finds the schema made by whoever went first
    more: list[int] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            s = FeedbackStore(pg_url)
            more.append(s.previous_version)
            s.close()
        except BaseException as exc:  # any failure, reported below
            errors.append(exc)

    reset_postgres(pg_url)
    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and sorted(more) == [0, SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION]
    opened[0].close()
    engine.dispose()


def test_a_role_that_cannot_lock_events_still_gets_a_cut_off(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SHARE mode needs UPDATE on the table or its ownership; a service role that only
    reads and inserts gets the cut-off as before, with a warning, not a failed fold-in."""
    owner = FeedbackStore(pg_url)
    owner.create_user("u", {})
    owner.add_events("u", [ev("a"), ev("b")])
    inserter = _inserter(owner, pg_url)
    # its batches are written in turn without a row lock, which would need UPDATE
    assert inserter.add_events("u", [ev("c"), ev("b")]) == (1, 1)
    with caplog.at_level("WARNING", logger="metarec.service"):
        assert inserter.last_event_id() == owner.last_event_id() > 0
        inserter.last_event_id()
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "cannot lock the events table" in caplog.records[0].message
    inserter.close()
    owner.close()


def test_a_role_that_may_not_migrate_is_told_which_role_may(pg_url: str) -> None:
    """Version 4 re-dates events (an UPDATE): a role that only reads and inserts is
    told the schema needs migrating by the tables' owner, with nothing half-done."""
    owner = FeedbackStore(pg_url)
    owner.create_user("u", {}, [ev("far", ts=time.time() + 3e9)])
    inserter = _inserter(owner, pg_url)  # at the current version: nothing to migrate
    url = inserter.engine.url.render_as_string(hide_password=False)
    inserter.close()
    with owner.engine.begin() as conn:
        conn.execute(text("DELETE FROM schema_version WHERE version >= 4"))
    with pytest.raises(
        ConfigError,
        match=r"version 3\) needs migrating to version 4 .*"
        r"permission denied for table events.*role that owns the tables",
    ):
        FeedbackStore(url)
    with owner.engine.connect() as conn:
        assert conn.execute(select(func.max(schema_version.c.version))).scalar() == 3
    assert owner.events_for("u")[0].timestamp > time.time() + 1e9  # not re-dated
    owner.close()
    FeedbackStore(pg_url).close()  # the owner migrates it


def test_a_cut_off_stuck_behind_an_insert_gives_up_as_busy_on_postgresql(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inserts queue behind a waiting SHARE request, so its wait is bounded; the service
    answers the OperationalError with 503 store_busy (a retry)."""
    import time

    from metarec.service import store as store_module

    monkeypatch.setattr(store_module, "CUT_OFF_LOCK_TIMEOUT_MS", 300)
    store = FeedbackStore(pg_url)
    store.create_user("u", {})
    with store.engine.connect() as slow:
        tx = slow.begin()
        slow.execute(
            events.insert().values(event_id="slow", user_id="u", item_id="1", type="click",
                                   value=None, ts=1.0, received_at=1.0)
        )  # fmt: skip
        t0 = time.monotonic()
        with pytest.raises(OperationalError, match="lock timeout"):
            store.last_event_id()
        waited = time.monotonic() - t0
        tx.commit()
    assert 0.25 < waited < 5
    store.add_events("u", [ev("after")])  # nothing left locked
    cut = store.last_event_id()
    assert [e.event_id for _, e in store.iter_all_events(cut)] == ["slow", "after"]
    store.close()


def test_postgresql_connections_give_up_on_a_server_that_went_away(pg_url: str) -> None:
    # without keepalives a pooled connection whose server vanished (a host gone, a
    # firewall dropping packets) held its request in a read for the system's two hours
    engine = make_engine(pg_url)
    raw = engine.raw_connection()
    try:
        given = raw.driver_connection.info.get_parameters()  # libpq's, as connected
    finally:
        raw.close()
        engine.dispose()
    assert {k: given.get(k) for k in ("keepalives", "keepalives_idle", "tcp_user_timeout")} == {
        "keepalives": "1", "keepalives_idle": "30", "tcp_user_timeout": "60000"
    }  # fmt: skip
    # the URL's own value wins
    engine = make_engine(pg_url + ("&" if "?" in pg_url else "?") + "keepalives_idle=5")
    raw = engine.raw_connection()
    try:
        assert raw.driver_connection.info.get_parameters()["keepalives_idle"] == "5"
    finally:
        raw.close()
        engine.dispose()


def test_a_postgresql_lock_held_elsewhere_is_waited_for_as_long_as_sqlites(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL's default waits for ever: a write behind an operator's open transaction,
    # a read behind an ALTER TABLE, held its request (and a thread) for good, never a 503
    import metarec.service.store as store_module

    assert store_module.POSTGRES_LOCK_WAIT_MS == SQLITE_BUSY_TIMEOUT_S * 1000
    store = FeedbackStore(pg_url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "30s"
    store.close()
    # one the server or role sets is kept (as a connection option it overrode $PGOPTIONS,
    # and PgBouncer refused it)
    for given in ("5s", "0"):  # 0 said on purpose too
        monkeypatch.setenv("PGOPTIONS", f"-c lock_timeout={given}")
        with make_engine(pg_url).connect() as conn:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == given
    monkeypatch.delenv("PGOPTIONS")
    monkeypatch.setattr(store_module, "POSTGRES_LOCK_WAIT_MS", 300)
    store = FeedbackStore(pg_url)
    store.create_user("u", {})
    holder = make_engine(pg_url).connect()
    holding = holder.begin()
    holder.exec_driver_sql("UPDATE service_state SET version = version WHERE id = 1")
    holder.exec_driver_sql("LOCK TABLE users, service_state IN ACCESS EXCLUSIVE MODE")
    calls = [("write", store.bump_served_state), ("read", lambda: store.user("u")),
             ("state", store.served_state)]  # fmt: skip
    try:
        for what, call in calls:
            started = time.monotonic()
            with pytest.raises(OperationalError) as err:
                call()
            # lock_not_available, which the service answers with 503 store_busy
            assert getattr(err.value.orig, "sqlstate", None) == "55P03", what
            assert time.monotonic() - started < 10, what
        # PgBouncer's transaction pooling hands each transaction a server connection of
        # its own, without the session's wait: reads waited for ever there
        lost = store.engine.connect()
        lost.exec_driver_sql("SET SESSION lock_timeout = 0")
        lost.commit()
        lost.close()
        for what, call in calls:
            with pytest.raises(OperationalError) as err:
                call()
            assert getattr(err.value.orig, "sqlstate", None) == "55P03", f"{what}, pooled"
    finally:
        holding.rollback()
        holder.close()
        store.close()


def test_a_database_that_cannot_be_reached_is_one_line() -> None:
    # psycopg puts its hint on a second line, which the CLI printed under the error
    with pytest.raises(ConfigError) as err:
        FeedbackStore("postgresql://u:p@127.0.0.1:1/db")
    assert "cannot open" in str(err.value) and "\n" not in str(err.value)


def test_writers_queued_behind_a_locked_file_share_one_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds SQLite's write lock: each of three writers in this
    process waited its own full timeout after the one before it (the third answered
    after three); each now gives up within one."""
    import sqlite3
    import threading
    import time

    from sqlalchemy.exc import OperationalError

    from metarec.service import store as store_module

    monkeypatch.setattr(store_module, "SQLITE_BUSY_TIMEOUT_S", 1.0)
    db = tmp_path / "locked.db"
    s = FeedbackStore(f"sqlite:///{db}")
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a backup job, a sqlite3 shell
    waited: list[float] = []

    def write(n: int) -> None:
        t0 = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"):
            s.create_user(f"u{n}", {})
        waited.append(time.monotonic() - t0)

    try:
        threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert len(waited) == 3 and max(waited) < 1.9, waited  # was 1, 2 and 3 s
    s.create_user("after", {})  # the file free again: the next write lands at once
    assert s.user("after") is not None
    s.close()


def test_rows_the_service_never_wrote_are_named_as_damage(store: FeedbackStore) -> None:
    # retrain and serve died with a ValueError or JSONDecodeError traceback, and the
    # service answered such a user's requests with a bare 500
    from metarec.service.store import DamagedStoreError

    store.create_user("u", {"age": 30}, [ev("e1", "1", "rating", 4.0), ev("e2", "2")])
    with store.engine.begin() as conn:
        conn.execute(events.update().where(events.c.event_id == "e2").values(type="purchase"))
    with pytest.raises(DamagedStoreError, match=r"user 'u' event 'e2': type 'purchase' is not "
                       r"one of rating, click"):  # fmt: skip
        store.events_for("u")
    with pytest.raises(DamagedStoreError, match="type 'purchase'"):
        list(store.iter_all_events())
    with store.engine.begin() as conn:
        conn.execute(events.update().where(events.c.event_id == "e2").values(type="click"))
    if store.url.startswith("sqlite"):  # PostgreSQL's typed column holds no text
        # text as a click's value: the user's page failed its response validation, and a
        # retry of the event formatted it with {:g}, each a bare 500 naming no event
        with store.engine.begin() as conn:
            conn.exec_driver_sql("update events set value = 'abc' where event_id = 'e2'")
        needle = r"user 'u' event 'e2': a click event with value 'abc' \(damaged or edited"
        with pytest.raises(DamagedStoreError, match=needle):
            store.events_for("u")
        with pytest.raises(DamagedStoreError, match=needle):
            store.add_events("u", [ev("e2", "2")])
        with store.engine.begin() as conn:
            conn.exec_driver_sql("update events set value = NULL where event_id = 'e2'")
    with store.engine.begin() as conn:
        conn.execute(users.update().where(users.c.user_id == "u").values(features="{x"))
    with pytest.raises(DamagedStoreError, match=r"user 'u': features are not JSON"):
        store.user("u")
    with pytest.raises(DamagedStoreError, match=r"user 'u': features are not JSON"):
        store.all_user_features()


def test_an_item_row_the_service_never_wrote_is_named_as_damage(tmp_path: Path) -> None:
    # a year of "abc" stopped a server's start with float()'s ValueError (SQLite alone:
    # PostgreSQL's typed columns hold no such year)
    from metarec.service.store import DamagedStoreError, items

    store = FeedbackStore(f"sqlite:///{tmp_path / 'store.db'}")

    store.upsert_items([{"item_id": "n1", "title": "New", "text": "t", "genres": "", "year": 1999}])
    assert store.added_items()[0]["year"] == 1999
    for values, needle in (
        ({"year": "abc"}, r"item 'n1': year 'abc' is not a number"),
        ({"year": float("inf")}, r"item 'n1': year inf is not a number"),
    ):
        with store.engine.begin() as conn:
            conn.execute(items.update().where(items.c.item_id == "n1").values(**values))
        with pytest.raises(DamagedStoreError, match=needle + r" \(damaged or edited by hand"):
            store.added_items()
    store.close()


def test_a_table_dropped_by_hand_is_named_at_start(tmp_path: Path) -> None:
    # "no such table: events" from deep in the first fold-in, a traceback and exit 1
    from metarec.errors import ConfigError

    path = tmp_path / "store.db"
    FeedbackStore(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE events")
    conn.close()
    with pytest.raises(ConfigError, match=r"table\(s\) events missing at schema version"):
        FeedbackStore(f"sqlite:///{path}")


def test_a_new_sqlite_store_is_its_owners_alone(tmp_path: Path) -> None:
    import os

    # users' histories and features were readable by every account (the umask's 0644)
    store = FeedbackStore(f"sqlite:///{tmp_path / 'new.db'}")
    store.create_user("u", {"age": 30}, [ev("e1", "1")])
    store.close()
    for path in tmp_path.glob("new.db*"):
        assert os.stat(path).st_mode & 0o777 == 0o600, path
    kept = tmp_path / "kept.db"  # one that is there keeps the mode its operator gave it
    kept.touch(mode=0o640)
    os.chmod(kept, 0o640)
    FeedbackStore(f"sqlite:///{kept}").close()
    assert os.stat(kept).st_mode & 0o777 == 0o640


def test_another_applications_table_is_not_called_metarecs_damaged(tmp_path: Path) -> None:
    # "metarec's tables are there ... (damaged or edited by hand?); restore it from a
    # backup", for a database whose "users" another application made
    from metarec.errors import ConfigError

    path = tmp_path / "shared.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    conn.close()
    with pytest.raises(ConfigError, match=r"holds table\(s\) users that metarec did not make"):
        FeedbackStore(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:  # nothing of metarec's left behind by the refusal
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert names == {"users"}
    # metarec's own versions table emptied by hand: damage, as before
    store_path = tmp_path / "store.db"
    FeedbackStore(f"sqlite:///{store_path}").close()
    with sqlite3.connect(store_path) as conn:
        conn.execute("DELETE FROM schema_version")
    conn.close()
    with pytest.raises(ConfigError, match=r"records no version \(damaged or edited by hand"):
        FeedbackStore(f"sqlite:///{store_path}")


def test_a_damaged_sqlite_file_is_named_not_met_as_a_traceback(tmp_path: Path) -> None:
    from metarec.service.store import DamagedStoreError

    path = tmp_path / "store.db"
    store = FeedbackStore(f"sqlite:///{path}")
    store.create_user("u", {}, [ev(f"e{n}", str(n % 50 + 1)) for n in range(400)])
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with path.open("r+b") as fh:  # pages past the schema's, overwritten
        fh.seek(4096 * 3)
        fh.write(b"\xff" * 8192)
    store = FeedbackStore(f"sqlite:///{path}", create=False)
    with pytest.raises(DamagedStoreError, match=r"store\.db\): cannot be read \(database disk "
                       r"image is malformed\); restore it from a backup"):  # fmt: skip
        store.events_for("u")
    store.close()


def test_a_write_queued_while_the_file_is_deleted_stores_nothing(tmp_path: Path) -> None:
    # the file was checked before the write's wait in the queue: a write that waited
    # behind another while the file was deleted was acknowledged into the deleted file
    path = tmp_path / "store.db"
    store = FeedbackStore(f"sqlite:///{path}")
    store.create_user("u1", {})
    assert store._write_lock is not None
    store._write_lock.acquire()  # another write in progress
    outcome: list[object] = []

    def queued() -> None:
        try:
            outcome.append(store.add_events("u1", [ev("late")]))
        except OperationalError as exc:
            outcome.append(exc)

    writer = threading.Thread(target=queued)
    writer.start()
    time.sleep(0.2)  # the write is waiting in the queue
    path.unlink()
    store._write_lock.release()
    writer.join(timeout=30)
    store.close()
    assert len(outcome) == 1 and isinstance(outcome[0], OperationalError), outcome
    assert "database file is gone" in str(outcome[0])


def test_unreachable_is_read_from_the_drivers_own_errors_only(tmp_path: Path) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import IntegrityError

    from metarec.service.store import unreachable

    # a real refusal: nothing listens on port 1
    engine = create_engine("postgresql+psycopg://u:p@127.0.0.1:1/db?connect_timeout=2")
    with pytest.raises(OperationalError) as refused:
        engine.connect()
    assert unreachable(refused.value)
    # a database file that is there answers; one with a duplicate key is no outage,
    # though the values it quotes read like one
    quoted = Exception("duplicate key: Key (user_id)=(connection refused) already exists")
    assert not unreachable(IntegrityError("INSERT", {}, quoted))
    store = FeedbackStore(f"sqlite:///{tmp_path / 's.db'}")
    store.create_user("connection refused", {})
    with pytest.raises(IntegrityError) as duplicate, store.engine.begin() as conn:
        conn.execute(users.insert().values(user_id="connection refused", features="{}",
                                           created_at=1.0))  # fmt: skip
    assert not unreachable(duplicate.value)
    store.close()


def test_a_role_that_may_not_delete_is_told_the_grant_erasure_needs(pg_url: str) -> None:
    """Erasing a user deletes rows, a grant a role that reads and inserts lacks: the
    operator is told which, and nothing of the user is gone."""
    from metarec.service.store import StoreForbiddenError

    owner = FeedbackStore(pg_url)
    owner.create_user("u", {}, [ev("a"), ev("b")])
    inserter = _inserter(owner, pg_url)
    with pytest.raises(StoreForbiddenError, match="DELETE on users and events"):
        inserter.forget_user("u")
    summary = owner.user("u")
    assert summary is not None and summary.n_events == 2
    inserter.close()
    owner.close()

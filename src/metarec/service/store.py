"""The durable feedback store: users, events, added items (SQLAlchemy Core).

SQLite (WAL mode, ``synchronous=FULL``) is the embedded default; PostgreSQL is
used by URL (``postgresql://user:pw@host/db``, driven by psycopg 3). The
store creates and migrates its own schema: ``schema_version`` records every
migration applied, and a database written by a newer metarec is refused.

Durability: :meth:`FeedbackStore.add_events` returns only after its
transaction has committed, so an event the service acknowledged survives a
``kill -9`` (and, with ``synchronous=FULL``, a power cut). Idempotency: the
client's ``event_id`` is unique in the table; a retried id is skipped by the
database itself (``INSERT ... ON CONFLICT DO NOTHING RETURNING``), never by a
check-then-insert race, and reported as a duplicate.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from metarec.errors import BusyError, ConfigError, DataError, MetarecError
from metarec.service.feedback import EVENT_TYPES, StoredEvent
from metarec.values import is_finite_number

log = logging.getLogger("metarec.service")

SCHEMA_VERSION = 4
ID_LENGTH = 128
# how far past the server's clock an event's time may lie: a client's clock runs
# a little fast, but "the latest event per item wins", so an event dated 2099
# would outrank every later rating of that item for good
FUTURE_SLACK_S = 600.0
# A user's batches are written one after another on PostgreSQL. Each event id's index
# entry is locked as its row goes in, so two batches of the same events in different
# orders (a client's retry while the first send was still being written) deadlocked, and
# one was refused. An advisory lock, not the user's row (FOR UPDATE needs the UPDATE
# grant, which a role that only reads and inserts lacks); not rows sorted by id either:
# where timestamps tie, a batch's order is its events' order. The first key keeps
# metarec's locks apart from other users of advisory locks on the database ("metr").
_ONE_WRITER_PER_USER = text("SELECT pg_advisory_xact_lock(1835365731, hashtext(:user_id))")
_INSERT_CHUNK = 500  # rows per INSERT statement (SQLite caps bound parameters per statement)

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("description", String(200), nullable=False),
    Column("applied_at", Float, nullable=False),
)
users = Table(
    "users",
    metadata,
    Column("user_id", String(ID_LENGTH), primary_key=True),
    Column("features", Text, nullable=False, default="{}"),  # JSON object
    Column("created_at", Float, nullable=False),
)
events = Table(
    "events",
    metadata,
    # BIGINT on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incrementing rowid
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("event_id", String(ID_LENGTH), nullable=False, unique=True),
    Column("user_id", String(ID_LENGTH), ForeignKey("users.user_id"), nullable=False),
    Column("item_id", String(ID_LENGTH), nullable=False),
    Column("type", String(16), nullable=False),
    Column("value", Float, nullable=True),
    Column("ts", Float, nullable=False),  # client timestamp, else arrival time (epoch seconds)
    Column("received_at", Float, nullable=False),
    Index("ix_events_user", "user_id", "id"),
)
items = Table(
    "items",
    metadata,
    Column("item_id", String(ID_LENGTH), primary_key=True),
    Column("title", Text, nullable=False),
    Column("text", Text, nullable=True),
    Column("genres", Text, nullable=True),
    Column("year", Integer, nullable=True),
    Column("updated_at", Float, nullable=False),
    # the order items were first added in (an update keeps it), by which every server
    # process appends them to its catalogue: ordered by updated_at, a process that loads
    # the store put an updated item last where the process that took the change kept it
    # in place, and the same catalogue in two orders breaks score ties two ways
    Column("added", BigInteger, nullable=True),
    Index("ix_items_added", "added"),  # each change reads the largest number
)

# One row: what every server process on this store must serve. ``version`` grows with each
# change to the served state that is not derived from events alone (items added through
# the API, a fold-in, a reload to another run); ``run`` is the run folder served since.
# A process that sees a version it has not loaded reloads (run, store), so the worker
# processes of one `metarec serve --workers N`, or servers behind one load balancer, stay
# in step.
service_state = Table(
    "service_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("run", Text, nullable=True),
)
# the tables metarec serves from (schema_version beside them records their migrations)
STORE_TABLES = (users, events, items, service_state)


# The statements run on every recommendation request are built once, with the user id
# bound at execution: building a statement (and its cache key) cost SQLAlchemy more than
# running it. A user's features, creation time and event count (the version of their
# adapted state: a user's events are only ever added, and an erased user's id created
# again is another creation), in one statement:
_OWN_EVENTS = events.c.user_id == bindparam("user_id")
_USER_SUMMARY = select(
    users.c.features,
    select(func.count()).where(_OWN_EVENTS).scalar_subquery(),
    users.c.created_at,
).where(users.c.user_id == bindparam("user_id"))
_STATE = select(service_state.c.version, service_state.c.run).where(service_state.c.id == 1)

# a run of None keeps the one recorded: only a reload (or a start on another run) sets it
_BUMP = (
    service_state.update()
    .where(service_state.c.id == 1)
    .values(
        version=service_state.c.version + 1,
        run=func.coalesce(bindparam("run", type_=Text), service_state.c.run),
    )
    .returning(service_state.c.version)
)
# a user's events, latest first (each adaptation reads them)
_USER_EVENTS = (
    select(events.c.event_id, events.c.item_id, events.c.type, events.c.value, events.c.ts)
    .where(_OWN_EVENTS)
    .order_by(events.c.ts.desc(), events.c.id.desc())
)


# -- migrations ---------------------------------------------------------------
def _v1(conn: Connection) -> None:
    for table in (users, events, items):
        table.create(conn, checkfirst=True)


def _v2(conn: Connection) -> None:
    service_state.create(conn, checkfirst=True)
    conn.execute(service_state.insert().values(id=1, version=0, run=None))


def _v3(conn: Connection) -> None:
    # _v1 creates the items table as it is now, with the column; an older one lacks it
    if "added" not in {c["name"] for c in inspect(conn).get_columns("items")}:
        conn.execute(text("ALTER TABLE items ADD COLUMN added BIGINT"))
        conn.execute(text("CREATE INDEX ix_items_added ON items (added)"))
    # the items stored before: in the order every process loaded them so far
    ordered = conn.execute(
        select(items.c.item_id).order_by(items.c.updated_at, items.c.item_id)
    ).scalars()
    numbered = [{"id": item_id, "added": n} for n, item_id in enumerate(ordered, 1)]
    if numbered:
        conn.execute(
            items.update().where(items.c.item_id == bindparam("id")),
            numbered,
        )


def _v4(conn: Connection) -> None:
    # stored before the service refused event times far past its clock: such an event
    # takes its arrival time, as one sent without a time does, so that it no longer
    # outranks every later event of its item
    redated = conn.execute(
        events.update()
        .where(events.c.ts > events.c.received_at + FUTURE_SLACK_S)
        .values(ts=events.c.received_at)
    ).rowcount
    if redated:
        log.warning(
            "%d stored event(s) dated more than %g s after they arrived now carry their "
            "arrival time",
            redated,
            FUTURE_SLACK_S,
        )


# (version, description, step): append new versions, never edit an applied one
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "users, events (unique event_id), items", _v1),
    (2, "service_state (what every server process on the store serves)", _v2),
    (3, "items.added (the order items were first added in)", _v3),
    (4, "events dated far past their arrival carry their arrival time", _v4),
]


# how long a fold-in cut-off waits on PostgreSQL for the event inserts in flight
CUT_OFF_LOCK_TIMEOUT_MS = 5000
INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE

# pg_advisory_xact_lock's key for schema migration: any constant other code does not use
MIGRATION_LOCK = 0x6D657461726563  # "metarec"


def migrate(engine: Engine) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; return the version found before.

    Servers started at once (several hosts on one PostgreSQL) migrate one at a time: on
    PostgreSQL a transaction-scoped advisory lock, on SQLite its one writer (the
    ``BEGIN IMMEDIATE`` of every write). Without it, two would both find the schema
    missing, and the second's ``CREATE TABLE`` or version row fail."""
    where = f"database {shown_url(engine.url)}"  # as every refusal names it
    with _write(engine) as conn:
        if engine.dialect.name == "postgresql":
            # a server starting waits however long another one's migration takes (a
            # store's events re-dated, a large index built), not a request's 30 s
            conn.execute(text("SET LOCAL lock_timeout = 0"))
            conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        had_versions = inspect(conn).has_table(schema_version.name)
        schema_version.create(conn, checkfirst=True)
        current = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
        if current > SCHEMA_VERSION:
            raise ConfigError(
                f"{where}: schema version {current} is newer than this "
                f"metarec's ({SCHEMA_VERSION}); upgrade metarec or use another database"
            )
        present = set(inspect(conn).get_table_names())
        clash = [t.name for t in STORE_TABLES if t.name in present]
        if current == 0 and clash and not had_versions:
            # another application's "users" was called metarec's, damaged, to restore
            raise ConfigError(
                f"{where}: it holds table(s) {', '.join(clash)} "
                "that metarec did not make (another application's?); give metarec a "
                "database of its own, or on PostgreSQL a schema of its own "
                "(?options=-csearch_path%3Dmetarec)"
            )
        if current == 0 and clash:
            # the migrations would run over tables they did not make: a UNIQUE
            # constraint's failure at best, items renumbered at worst
            raise ConfigError(
                f"{where}: metarec's tables are there but schema_version "
                "records no version (damaged or edited by hand?); restore it from a "
                "backup, or use another database"
            )
        for version, description, step in MIGRATIONS:
            if version > current:
                try:
                    step(conn)
                    conn.execute(
                        schema_version.insert().values(
                            version=version, description=description, applied_at=time.time()
                        )
                    )
                except ProgrammingError as exc:
                    if getattr(exc.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
                        raise
                    said = " ".join(str(exc.orig).split())
                    raise ConfigError(
                        f"{where}: its schema (version {current}) needs "
                        f"migrating to version {version} ({description}), which this role "
                        f"may not do ({said}); start metarec once with the role that owns "
                        "the tables, then this one"
                    ) from None
        # a table dropped by hand under a recorded version, which no migration recreates:
        # "no such table: events" from deep in the first fold-in
        present = set(inspect(conn).get_table_names())
        missing = [t.name for t in STORE_TABLES if t.name not in present]
        if missing:
            raise ConfigError(
                f"{where}: table(s) {', '.join(missing)} missing at "
                "schema version "
                f"{max(current, SCHEMA_VERSION)} (damaged or edited by hand?); restore it from a "
                "backup, or use another database"
            )
        _check_columns(conn, where)
    return int(current)


def _check_columns(conn: Connection, where: str) -> None:
    """A column dropped by hand was "no such column" in a traceback from the first
    fold-in, and a required one added without a default failed every write as a 500;
    both are refused here, at start. An added column that may be empty is harmless."""
    for table in STORE_TABLES:
        found = {c["name"]: c for c in inspect(conn).get_columns(table.name)}
        lost = [c.name for c in table.columns if c.name not in found]
        required = [
            name
            for name, c in found.items()
            if name not in table.columns
            and not c.get("nullable", True)
            and c.get("default") is None
            and not c.get("autoincrement", False)
            and not c.get("computed")  # written by the database itself
            and not c.get("identity")
        ]
        if lost or required:
            said = (
                f"lacks column(s) {', '.join(lost)}"
                if lost
                else f"has column(s) {', '.join(required)} that metarec does not write, "
                "required and without a default"
            )
            raise ConfigError(
                f"{where}: table {table.name} {said} at schema version "
                f"{SCHEMA_VERSION} (damaged or edited by hand?); restore it from a backup, "
                "or use another database"
            )


# -- engine -------------------------------------------------------------------
def normalise_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` → the psycopg 3 driver; SQLite as given."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


# how long a write waits for another process's SQLite write lock before the request
# gets a 503 store_busy (the service's own writers queue in-process and never meet it)
SQLITE_BUSY_TIMEOUT_S = 30.0
FILE_GONE = "the database file is gone (deleted or moved while serving)"


# libpq's connection parameters: give up connecting after 10 s, and probe an idle
# connection after 30 s, then every 10 s, dropping it after 3 unanswered probes; data
# sent and unacknowledged for 60 s drops it too (a server gone mid-request)
POSTGRES_WAITS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
# How long a read or write waits for a lock another session holds (an operator's open
# transaction or ALTER TABLE, another process's change) before the request is a 503
# store_busy, as long as for a SQLite write lock: PostgreSQL waits for ever by default,
# and each such request held a thread for good. Set on each new connection where the
# server or role set none ($PGOPTIONS, ALTER ROLE ... SET win), with SET, not as a
# connection option, which PgBouncer refuses and which overrode $PGOPTIONS.
POSTGRES_LOCK_WAIT_MS = int(SQLITE_BUSY_TIMEOUT_S * 1000)
LOCK_WAIT_OURS = "metarec_lock_wait"  # the connection's flag: the wait is ours to set


# a password in libpq's ?password= (and ?sslpassword=) form, and, in a URL SQLAlchemy
# cannot parse, in the user part: all up to the last "@" (a password may hold / ? # @)
_QUERY_SECRET = re.compile(r"(?i)([?&](?:ssl)?password=)[^&#]*")
_USER_SECRET = re.compile(r"(://[^:/@?#]*:).*@(?=[^@]*$)")
# and in one it parsed: up to the last "@" before the path ("u:p@ss@h" is password p of
# host ss@h to SQLAlchemy, which hid only the p)
_AUTH_SECRET = re.compile(r"(://[^:/@?#]*:)[^/?#]*@")


def shown_url(url: str | URL) -> str:
    """``url`` as messages and logs show it, with any password as ``***``: SQLAlchemy
    hides the user part's alone, so ``?password=`` reached the startup line, and a URL
    refused as unsupported was echoed whole."""
    if not isinstance(url, URL):
        try:
            url = make_url(url)
        except (ArgumentError, ValueError):
            return _QUERY_SECRET.sub(r"\1***", _USER_SECRET.sub(r"\1***@", str(url)))
    text = _AUTH_SECRET.sub(r"\1***@", url.render_as_string(hide_password=True))
    return _QUERY_SECRET.sub(r"\1***", text)


def check_db_url(url: str) -> URL:
    """``url`` parsed, or a ConfigError naming it unless it is a SQLite file or a
    PostgreSQL database: what ``serve`` checks before loading the run (a bogus URL was
    refused only after the model had loaded)."""
    given, url = url, normalise_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is no number
        raise ConfigError(
            f"--db {shown_url(given)!r}: not a database URL; expected sqlite:///path.db or "
            "postgresql://user:password@host/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError(
                f"--db {shown_url(given)!r}: the SQLite store must be a file (sqlite:///path.db)"
            )
    elif backend != "postgresql":
        raise ConfigError(
            f"--db {shown_url(given)!r}: unsupported database {backend!r}; use sqlite or postgresql"
        )
    return parsed


def make_engine(url: str) -> Engine:
    parsed = check_db_url(url)
    url = normalise_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
            # a SQLite connection is a file handle and a page cache, cheap to keep but not
            # to open (four PRAGMAs), so the pool keeps one for each of the request
            # threads (anyio's 40) rather than opening and closing overflow ones under load
            pool_size=40,
            max_overflow=24,  # bursts beyond (reloads, fold-in, retraining reads)
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        try:
            # a server that does not answer (a firewall dropping packets, a host gone)
            # held each request until the system's TCP timeout, minutes: at connect, and
            # on a pooled connection whose server went away meanwhile (no keepalives:
            # a request blocked in a read for the system's two hours). Each is libpq's
            # own; one in the URL (?connect_timeout=N, ?keepalives_idle=N) wins
            waits = {k: v for k, v in POSTGRES_WAITS.items() if k not in parsed.query}
            engine = create_engine(
                url, pool_size=8, max_overflow=24, pool_pre_ping=True, connect_args=waits
            )
            event.listen(engine, "connect", _postgres_on_connect)
            event.listen(engine, "begin", _postgres_on_begin)
            return engine
        except ModuleNotFoundError:
            raise ConfigError("PostgreSQL needs psycopg: pip install 'metarec[postgres]'") from None
    raise AssertionError(backend)  # check_db_url refused any other


def _postgres_on_connect(dbapi_connection: Any, record: Any) -> None:
    """A lock wait of :data:`POSTGRES_LOCK_WAIT_MS` on a new connection where nothing set
    one (its source PostgreSQL's default: not the server's file, the role, the database
    or ``$PGOPTIONS``, whose value, 0 included, is kept); remembered on the connection so
    that each transaction sets it again (:func:`_postgres_on_begin`)."""
    with dbapi_connection.cursor() as cur:
        cur.execute("SELECT source FROM pg_settings WHERE name = 'lock_timeout'")
        row = cur.fetchone()
        ours = row is not None and row[0] == "default"
        if ours:
            cur.execute(f"SET lock_timeout = {int(POSTGRES_LOCK_WAIT_MS)}")
    dbapi_connection.commit()
    record.info[LOCK_WAIT_OURS] = ours


def _postgres_on_begin(conn: Connection) -> None:
    # every transaction, reads too: PgBouncer's transaction pooling may run it on another
    # server connection, which lacks the session's wait (a read behind an ALTER TABLE
    # waited for ever there); one round trip a transaction, a tenth of a millisecond
    if conn.connection.info.get(LOCK_WAIT_OURS):
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(POSTGRES_LOCK_WAIT_MS)}")


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling would defer BEGIN; we emit BEGIN ourselves
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cur.execute("PRAGMA synchronous=FULL")  # a committed event is on disk
    cur.execute("PRAGMA foreign_keys=ON")
    # an erased user's rows are overwritten, not left in free pages (SQLite's default
    # where a build leaves it off); only deletes pay for it, and only erasures delete
    cur.execute("PRAGMA secure_delete=ON")
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # a write transaction takes the write lock up front: a deferred one that read first
    # could not upgrade after another writer committed (SQLITE_BUSY_SNAPSHOT)
    write = conn.get_execution_options().get("metarec_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextlib.contextmanager
def _write(engine: Engine, busy_ms: int | None = None) -> Iterator[Connection]:
    """A write transaction; ``busy_ms``: how long SQLite may wait for the file's write
    lock this time (what is left of the caller's wait), instead of the full timeout."""
    with engine.connect() as conn:
        conn.execution_options(metarec_write=True)
        raw: Any = None
        if busy_ms is not None:  # outside SQLAlchemy's transaction: a connection setting
            raw = conn.connection.driver_connection
            raw.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        try:
            tx = conn.begin()
            try:
                yield conn
            except BaseException:
                tx.rollback()
                raise
            try:
                tx.commit()
            except DBAPIError as exc:
                # the connection lost while it committed: the server may have taken the
                # write, so "nothing was stored" (said of a lost connection before) may
                # be false (a client that retried a new user got 409 user_exists)
                setattr(exc, COMMIT_UNKNOWN, True)
                raise
        finally:
            if raw is not None:  # the pool hands the connection to others
                raw.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")


# -- records ------------------------------------------------------------------
@dataclass(frozen=True)
class NewEvent:
    event_id: str
    item_id: str
    type: str
    value: float | None = None
    timestamp: float | None = None


@dataclass(frozen=True)
class UserSummary:
    user_id: str
    features: dict[str, Any]
    n_events: int
    created_at: float = 0.0  # tells a user erased and created again from the first


@dataclass(frozen=True)
class ErasedUser:
    """What :meth:`FeedbackStore.forget_user` removed."""

    events: int  # the user's events deleted
    # the served state's version the erasure bumped it to (every process reloads); None
    # where it was not announced
    version: int | None = None


def _what(ev: NewEvent) -> tuple[str, str, float | None]:
    """What makes two sends of one event id the same event (the arrival time does not)."""
    return ev.item_id, ev.type, ev.value


class UserExistsError(MetarecError):
    pass


class UnknownUserError(MetarecError):
    pass


class EventConflictError(MetarecError):
    """An event id already names a different event: ids are idempotency keys, so a
    retry must resend the same event, and a new event needs a new id."""


class StoreUnwritableError(MetarecError):
    """The store refuses writes (read-only, full, failing): the command line exits 2
    naming it, the service answers 503 ``store_unavailable`` (nothing was stored)."""


# what a store that cannot take writes says: SQLite's words, PostgreSQL's SQLSTATEs
_UNWRITABLE = {
    "attempt to write a readonly database": "it is read-only",
    "disk i/o error": "a disk I/O error",
    "database or disk is full": "the disk is full",
    # SQLite's "can't open": a folder it cannot write its journal in, or no file
    # handles left; the operator's to fix either way
    "unable to open database file": "it cannot be opened: a read-only folder? no file handles?",
}
_UNWRITABLE_STATES = {
    "25006": "it is read-only",  # read_only_sql_transaction: a standby, or read-only set
    "53100": "the disk is full",
    "58030": "an I/O error",
}


def cannot_write(exc: DBAPIError) -> str | None:
    """Why the store refused a write where it cannot take any (read-only, full, an I/O
    error), in a few words; None for any other failure."""
    state = str(getattr(exc.orig, "sqlstate", None) or "")
    if state in _UNWRITABLE_STATES:
        return _UNWRITABLE_STATES[state]
    if not isinstance(exc, OperationalError):
        return None  # its text may quote the client's values
    said = str(exc.orig).lower()
    return next((why for words, why in _UNWRITABLE.items() if words in said), None)


class DamagedStoreError(DataError):
    """A row or page of the store that the service never wrote: the command line exits 2
    naming it, the service answers 500 ``store_damaged`` (the fault is not the client's)."""


# what psycopg says of a server it cannot reach or that went away (a connection's
# SQLSTATE is often absent: the failure is before or outside any statement)
_UNREACHABLE = (
    "connection failed",
    "connection refused",
    "could not connect",
    "server closed the connection",
    "terminating connection",
    "the database system is",
    "not currently accepting connections",
    "connection timeout",
    "timeout expired",
    "consuming input failed",
)


# set on a DBAPIError raised by a write's COMMIT: whether it landed is unknown
COMMIT_UNKNOWN = "metarec_commit_unknown"


def unreachable(exc: DBAPIError) -> bool:
    """Whether ``exc`` says the database server cannot be reached (down, restarting,
    refusing connections, the connection lost) rather than that a statement failed:
    a condition a retry may outlast."""
    if exc.connection_invalidated:
        return True
    state = str(getattr(exc.orig, "sqlstate", None) or "")
    # 08: connection exceptions; 57P01-57P03: shut down by an administrator or a
    # crash, or not yet accepting connections
    if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False  # its text may quote the client's values: "(user_id)=(busy-42)"
    said = str(exc.orig).lower()
    return any(words in said for words in _UNREACHABLE)


def _create_private(path: Path) -> None:
    """A new SQLite store file readable by its owner alone: it holds users' histories
    and features (age, gender, occupation), and the umask's 0644 let every account on
    the machine read them. SQLite gives its -wal and -shm files the database's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:  # there already (as its operator left it), or no folder to make it
        return  # in: SQLite's own error names that


class StoreForbiddenError(ConfigError):
    """The database role lacks a grant the store needs (PostgreSQL's permission denied):
    the operator's to fix, so the command line exits 2 naming it and the service answers
    500 ``store_forbidden``, not a client's 4xx nor a retry's 503."""


class FeedbackStore:
    """Users, their events and added items in one SQL database."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """``create=False``: the database must already hold a store (``metarec retrain``
        reads what a service wrote; a mistyped URL must not read as "no feedback")."""
        self.engine = make_engine(url)
        self.url = shown_url(self.engine.url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        database = self.engine.url.database
        # the database file, for ping (None: in memory)
        self._file = (
            Path(database).resolve()
            if self.is_sqlite and database and database != ":memory:"
            and not database.startswith("file:")
            else None
        )  # fmt: skip
        if self.is_sqlite:
            # sqlite:///x.db is relative to the working folder, sqlite:////x.db absolute:
            # an error names the file meant, which the URL's slashes hide
            self.url += f" (file {self._file or Path(str(database)).resolve()})"
        # SQLite has one writer: queue writers in-process instead of busy-waiting in SQLite
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._warned_unlocked_cut_off = False
        try:
            missing = None if create else self._why_no_store()
            if missing is not None:
                raise ConfigError(
                    f"database {self.url}: {missing}; give the --db the service wrote to"
                )
            if create and self._file is not None and not self.engine.url.query:
                # (a URL with options, ?mode=ro&uri=true, names its file otherwise)
                _create_private(self._file)
            self.previous_version = migrate(self.engine)
        except DatabaseError as exc:  # unreachable, or a file that is not a database
            said = " ".join(str(exc.orig).split())  # drivers' hints come on a second line
            raise ConfigError(f"database {self.url}: cannot open ({said})") from None

    def _why_no_store(self) -> str | None:
        """Why the database holds no store (None: it does), read without writing: a
        connection sets SQLite's journal mode, which would turn an empty file into a
        database and create a missing one."""
        path = self.engine.url.database
        if self.is_sqlite and path:
            file = Path(path)
            if not file.is_file():
                return "no such file"
            with file.open("rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    return "not a SQLite database (an empty file, or another kind)"
        if not inspect(self.engine).has_table(events.name):
            return "holds no feedback store (no events table)"
        return None

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection to read with; a damaged database (a page overwritten, a file cut)
        is a DataError naming it, where retrain and serve died with SQLAlchemy's
        traceback. A locked one (OperationalError) stays what it is: busy, not damaged."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except OperationalError:
            raise
        except ProgrammingError as exc:
            self._refuse_if_forbidden(exc, "read")
            raise
        except DatabaseError as exc:
            said = " ".join(str(exc.orig).split())
            raise DamagedStoreError(
                f"database {self.url}: cannot be read ({said}); restore it from a backup"
            ) from None

    def _refuse_if_forbidden(self, exc: ProgrammingError, doing: str) -> None:
        """PostgreSQL's "permission denied" as a StoreForbiddenError naming the table;
        any other ProgrammingError (SQL this code got wrong) is the caller's to raise."""
        if getattr(exc.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
            return
        said = " ".join(str(exc.orig).split())
        raise StoreForbiddenError(
            f"database {self.url}: this role may not {doing} what the store needs ({said}); "
            "the service's role needs SELECT and INSERT on every table of the store, "
            "UPDATE on service_state and items (for added items, reloads and fold-ins) "
            "and DELETE on users and events (to erase a user): grant them, or serve "
            "with the role that owns the tables"
        ) from None

    def _damaged(self, what: str, problem: str) -> DamagedStoreError:
        return DamagedStoreError(
            f"database {self.url}: {what}: {problem} (damaged or edited by hand?)"
        )

    def _features(self, user_id: str, raw: str | None) -> dict[str, Any]:
        """A user's stored features: a JSON object, as the service writes them."""
        try:
            features = json.loads(raw or "{}")
        except json.JSONDecodeError as exc:
            raise self._damaged(f"user {user_id!r}", f"features are not JSON ({exc.msg})") from None
        if not isinstance(features, dict):
            raise self._damaged(f"user {user_id!r}", f"features {raw!r:.40} are not an object")
        return features

    def _event(self, user_id: str, row: Sequence[Any]) -> StoredEvent:
        """An event row as the service wrote it: a known type, a rating's finite value."""
        event_id, item_id, kind, value, ts = row
        where = f"user {user_id!r} event {event_id!r}"
        if kind not in EVENT_TYPES:
            raise self._damaged(where, f"type {kind!r} is not one of {', '.join(EVENT_TYPES)}")
        if kind == "rating" and not is_finite_number(value):
            raise self._damaged(where, f"a rating event with value {value!r}")
        # other events hold no value or a number (a click's weight): text there failed
        # the response's validation, a bare 500 that named neither user nor event
        if value is not None and not is_finite_number(value):
            raise self._damaged(where, f"a {kind} event with value {value!r:.40}")
        if not is_finite_number(ts):
            raise self._damaged(where, f"timestamp {ts!r} is not a number")
        number = None if value is None else float(value)
        return StoredEvent(event_id, item_id, kind, number, float(ts))

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A write transaction; a store that cannot take writes (a read-only file or
        database, a full disk, an I/O error) is a :class:`StoreUnwritableError` naming
        it, where the service answered 500 with a traceback a request and a start that
        had to record its run died with one (exit 1)."""
        try:
            with self._transaction() as conn:
                yield conn
        except DBAPIError as exc:
            why = cannot_write(exc)
            if why is None:
                raise
            # failed as it committed: SQLite may have kept the write (an I/O error at
            # COMMIT may or may not roll back), so "nothing was stored" may be false
            outcome = (
                "the write may have been stored as it failed; retry (a repeated event "
                "counts as a duplicate)"
                if getattr(exc, COMMIT_UNKNOWN, False)
                else "nothing was stored"
            )
            raise StoreUnwritableError(
                f"database {self.url}: cannot be written ({why}); {outcome}"
            ) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        if self._write_lock is None:  # PostgreSQL: a role may lack a grant a write needs
            try:
                with _write(self.engine) as conn:
                    yield conn
            except ProgrammingError as exc:
                self._refuse_if_forbidden(exc, "write")
                raise
            return
        # one wait per write, in the queue and at the file together: each writer queued
        # behind one that waited out the file's lock used to wait its own 30 s after it,
        # so the tenth answered after five minutes
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
        if not self._write_lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_S):
            raise OperationalError(
                "BEGIN IMMEDIATE",
                None,
                sqlite3.OperationalError(
                    f"database is locked: writers queued past {SQLITE_BUSY_TIMEOUT_S:g} s"
                ),
            )
        try:
            # checked once this write's turn has come, not before its wait in the queue:
            # a write queued while the file was deleted was acknowledged into it
            self._check_file("write")
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            # the lock taken at once (the usual case): the connection's own timeout is
            # the budget, and two PRAGMAs a write would only cost time
            waited = left_ms < SQLITE_BUSY_TIMEOUT_S * 1000 - 100
            with _write(self.engine, busy_ms=left_ms if waited else None) as conn:
                yield conn
        finally:
            self._write_lock.release()

    def _insert(self, table: Table) -> Any:
        return (sqlite if self.is_sqlite else postgresql).insert(table)

    def ping(self) -> None:
        self._check_file("ping")
        with self.engine.connect() as conn:
            conn.execute(select(1))

    def _check_file(self, doing: str) -> None:
        """An OperationalError if the SQLite file was deleted while in use: a pooled
        connection holds it open and answers on, so writes were acknowledged into a
        file no later start would read, and the readiness probe said "reachable"."""
        if self._file is not None and not self._file.exists():
            raise OperationalError(doing, None, Exception(f"{self._file}: {FILE_GONE}"))

    # -- the served state shared by server processes ---------------------------
    def served_state(self) -> tuple[int, str | None]:
        """(version, run) of what every server process on this store must serve."""
        with self.engine.connect() as conn:
            row = conn.execute(_STATE).first()
        if row is None:  # a hand-edited table: as if nothing was ever changed
            return 0, None
        return int(row[0]), row[1]

    def _bump(self, conn: Connection, run: str | None) -> tuple[int, bool]:
        """The served state's version bumped (and ``run`` recorded) in ``conn``'s
        transaction; → (the version after, whether the row had to be put back first)."""
        after = conn.execute(_BUMP, {"run": run}).scalar()
        if after is not None:
            return int(after), False
        # the row is gone (a hand-edited table): put it back
        conn.execute(
            self._insert(service_state)
            .values(id=1, version=0, run=None)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        return int(conn.execute(_BUMP, {"run": run}).scalar_one()), True

    def bump_served_state(
        self,
        run: str | None = None,
        items: Sequence[dict[str, Any]] = (),
        *,
        expect: int | None = None,
    ) -> tuple[int, int]:
        """Record a change to the served state; → the version (before, after). ``run``:
        the run every process is to serve from now on (None: the one recorded);
        ``items``: added items stored in the same transaction, so the change and its
        announcement land together or not at all. Two processes' changes get two
        versions. ``expect``: only if the version is still that one, else
        :class:`~metarec.errors.BusyError` and nothing is written (a change made from a
        state that another process has moved on from)."""
        with self._tx() as conn:
            # the bump first: its row lock queues another process's change behind this
            # one, so the items' order numbers (read from the table) are never shared
            after, restored = self._bump(conn, run)
            if not restored and expect is not None and after - 1 != expect:
                # judged on the version the bump itself moved from, which is the row as
                # committed once its lock is ours: a version read before the bump, under
                # PostgreSQL's read committed, missed a reload committing meanwhile, and
                # this fold-in undid it. Raising rolls the bump back.
                raise BusyError(
                    f"the served state moved on (version {int(after) - 1}, not {expect}): "
                    "another server process changed it meanwhile; try again"
                )
            self._upsert_items(conn, items)
        return int(after) - 1, int(after)

    # -- users ----------------------------------------------------------------
    def create_user(
        self, user_id: str, features: dict[str, Any], initial: Sequence[NewEvent] = ()
    ) -> int:
        """Create a user with optional first events (one transaction); → events stored."""
        now = time.time()
        with self._tx() as conn:
            exists = conn.execute(select(users.c.user_id).where(users.c.user_id == user_id))
            if exists.first() is not None:
                raise UserExistsError(f"user {user_id!r} already exists")
            try:
                conn.execute(
                    users.insert().values(
                        user_id=user_id,
                        features=json.dumps(features, sort_keys=True),
                        created_at=now,
                    )
                )
            except IntegrityError:
                # PostgreSQL: another transaction created the user between the check and
                # the insert (SQLite's writers take the lock before the check); the key
                # is the only constraint an insert of these values can break
                raise UserExistsError(f"user {user_id!r} already exists") from None
            accepted, _ = self._insert_events(conn, user_id, initial, now)
        return accepted

    def user(self, user_id: str) -> UserSummary | None:
        with self._read() as conn:
            row = conn.execute(_USER_SUMMARY, {"user_id": user_id}).first()
        if row is None:
            return None
        return UserSummary(user_id, self._features(user_id, row[0]), int(row[1]), float(row[2]))

    def forget_user(self, user_id: str, *, announce: bool = False) -> ErasedUser | None:
        """Erase a user (a data subject's request to be forgotten): their events and their
        row, in one transaction; None for a user the store does not hold. ``announce``
        (a served model that folds in feedback): where the user had events, the served
        state's version is bumped in the same transaction, so every server process
        reloads the recorded run and store, at the recorded cut-off, without them; and
        a fold-in or reload that read the feedback before this committed, and publishes
        after, is refused or caught up by the version it finds moved. Judged by the
        recorded cut-off alone, such an in-flight fold-in published the erased ratings
        as its own. Erasure and announcement land together or not at all."""
        with self._tx() as conn:
            self._one_writer(conn, user_id)  # not between another writer's check and insert
            exists = conn.execute(select(users.c.user_id).where(users.c.user_id == user_id))
            if exists.first() is None:
                return None
            erased = conn.execute(events.delete().where(events.c.user_id == user_id)).rowcount
            conn.execute(users.delete().where(users.c.user_id == user_id))
            version = self._bump(conn, None)[0] if announce and erased else None
        if self.is_sqlite and erased:
            self._drop_old_frames()
        return ErasedUser(int(erased), version)

    def _drop_old_frames(self) -> None:
        """Empty SQLite's write-ahead log after an erasure: the deleted rows' old frames
        stayed readable in the -wal file while the service ran (secure_delete clears
        the database file's pages, not the log). Best effort: with readers in the log
        it is emptied at a later checkpoint."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        except DBAPIError as exc:
            log.warning("after an erasure, the write-ahead log was not emptied: %s", exc)

    # -- events ---------------------------------------------------------------
    def add_events(self, user_id: str, batch: Sequence[NewEvent]) -> tuple[int, int]:
        """Store a batch for one user; → (accepted, duplicates). Returns after commit."""
        now = time.time()
        with self._tx() as conn:
            self._one_writer(conn, user_id)
            exists = conn.execute(select(users.c.user_id).where(users.c.user_id == user_id))
            if exists.first() is None:
                raise UnknownUserError(f"unknown user {user_id!r}")
            return self._insert_events(conn, user_id, batch, now)

    def _one_writer(self, conn: Connection, user_id: str) -> None:
        """This transaction the only writer of ``user_id``'s rows until it ends
        (:data:`_ONE_WRITER_PER_USER`); SQLite's writers are one at a time already."""
        if not self.is_sqlite:
            conn.execute(_ONE_WRITER_PER_USER, {"user_id": user_id})

    def _insert_events(
        self, conn: Connection, user_id: str, batch: Sequence[NewEvent], now: float
    ) -> tuple[int, int]:
        unique: dict[str, NewEvent] = {}
        for ev in batch:
            first = unique.setdefault(ev.event_id, ev)  # a repeat inside one batch: a retry
            if _what(first) != _what(ev):
                raise EventConflictError(
                    f"event_id {ev.event_id!r}: sent twice in one request with different events"
                )
        rows = [
            {
                "event_id": ev.event_id,
                "user_id": user_id,
                "item_id": ev.item_id,
                "type": ev.type,
                "value": ev.value,
                "ts": now if ev.timestamp is None else ev.timestamp,
                "received_at": now,
            }
            for ev in unique.values()
        ]
        ids = list(unique)  # the rows' event ids, in order
        accepted = 0
        for lo in range(0, len(rows), _INSERT_CHUNK):
            chunk = ids[lo : lo + _INSERT_CHUNK]
            stmt = (
                self._insert(events)
                .values(rows[lo : lo + _INSERT_CHUNK])
                .on_conflict_do_nothing(index_elements=["event_id"])
                .returning(events.c.event_id)
            )
            taken = {r[0] for r in conn.execute(stmt).all()}
            accepted += len(taken)
            self._check_retries(conn, user_id, [e for e in chunk if e not in taken], unique)
        return accepted, len(batch) - accepted

    def _check_retries(
        self, conn: Connection, user_id: str, ids: list[str], sent: dict[str, NewEvent]
    ) -> None:
        """Ids already stored must be retries of the same event, or the whole request is
        refused (and rolled back): else another user's, or another, event would be
        silently dropped as a "duplicate"."""
        if not ids:
            return
        query = select(
            events.c.event_id,
            events.c.user_id,
            events.c.item_id,
            events.c.type,
            events.c.value,
            events.c.ts,
        ).where(events.c.event_id.in_(ids))
        for event_id, owner, item_id, kind, value, ts in conn.execute(query):
            self._event(owner, (event_id, item_id, kind, value, ts))  # as the service wrote it
            new = sent[event_id]
            if owner != user_id:
                raise EventConflictError(
                    f"event_id {event_id!r} is already another user's event; event ids are "
                    "unique across users"
                )
            if (item_id, kind, value) != _what(new):
                raise EventConflictError(
                    f"event_id {event_id!r} is already stored as {kind} of item {item_id!r}"
                    + ("" if value is None else f" ({value:g})")
                    + "; a retry must resend the same event, a new event needs a new id"
                )

    def events_for(self, user_id: str, limit: int | None = None) -> list[StoredEvent]:
        """A user's events in application order (timestamp, then arrival);
        ``limit`` keeps the latest ones."""
        query = _USER_EVENTS if limit is None else _USER_EVENTS.limit(limit)
        with self._read() as conn:
            rows = conn.execute(query, {"user_id": user_id}).all()
        return [self._event(user_id, r) for r in reversed(rows)]

    def iter_all_events(self, upto: int | None = None) -> Iterator[tuple[str, StoredEvent]]:
        """Every (user_id, event), grouped by user, each user's in application order;
        ``upto``: only events stored up to that row id (:meth:`last_event_id`)."""
        query = select(
            events.c.user_id,
            events.c.event_id,
            events.c.item_id,
            events.c.type,
            events.c.value,
            events.c.ts,
        ).order_by(events.c.user_id, events.c.ts, events.c.id)
        if upto is not None:
            query = query.where(events.c.id <= upto)
        with self._read() as conn:
            for r in conn.execute(query):
                yield r[0], self._event(r[0], r[1:])

    def last_event_id(self) -> int:
        """The row id of the latest stored event (0: none): a cut-off every server
        process can apply alike to "the feedback so far".

        Every event at or below it is committed when it is returned. On PostgreSQL a
        transaction takes its id when it inserts and may commit after one with a higher
        id, so the largest id seen could pass over an event still to come, which a
        process reading later would count as before the cut-off and one reading now
        would not. ``SHARE`` mode waits for the transactions inserting events to end
        (and holds new inserts back while it reads). On SQLite writers commit one at
        a time, in id order."""
        query = select(func.coalesce(func.max(events.c.id), 0))
        with self.engine.connect() as conn:
            if self.is_sqlite:
                return int(conn.execute(query).scalar_one())
            try:
                with conn.begin():
                    # inserts queue behind a waiting SHARE request: bound the wait (a
                    # timeout is an OperationalError, which the service answers with 503)
                    conn.execute(text(f"SET LOCAL lock_timeout = '{CUT_OFF_LOCK_TIMEOUT_MS}ms'"))
                    conn.execute(text(f"LOCK TABLE {events.name} IN SHARE MODE"))
                    return int(conn.execute(query).scalar_one())
            except ProgrammingError as exc:
                if getattr(exc.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
                    raise
                # SHARE mode needs the table's owner or UPDATE on it, which a service role
                # that only inserts may lack: the cut-off as before, said once
                if not self._warned_unlocked_cut_off:
                    self._warned_unlocked_cut_off = True
                    log.warning(
                        "the role cannot lock the events table (it needs UPDATE on it, or to "
                        "own it), so a fold-in cut-off may pass over an event being inserted "
                        "and server processes may differ until the next fold-in"
                    )
            return int(conn.execute(query).scalar_one())

    def all_user_features(self) -> dict[str, dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(select(users.c.user_id, users.c.features)).all()
        return {r[0]: self._features(r[0], r[1]) for r in rows}

    def count_events(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar() or 0)

    def event_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(events.c.event_id))}

    # -- items ----------------------------------------------------------------
    def upsert_items(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace added items (item_id, title, text, genres, year), and tell
        the server processes on the store (:meth:`bump_served_state`): the items are
        numbered in order under that announcement's lock."""
        self.bump_served_state(items=rows)

    def _upsert_items(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        now = time.time()
        # numbered in the order given, after every item stored so far (an update keeps its
        # number): the order a server process that takes the change appends them in
        last = conn.execute(select(func.coalesce(func.max(items.c.added), 0))).scalar_one()
        payload = [
            {
                "item_id": r["item_id"],
                "title": r["title"],
                "text": r.get("text"),
                "genres": r.get("genres"),
                "year": r.get("year"),
                "updated_at": now,
                "added": int(last) + n,
            }
            for n, r in enumerate(rows, 1)
        ]
        for lo in range(0, len(payload), _INSERT_CHUNK):
            stmt = self._insert(items).values(payload[lo : lo + _INSERT_CHUNK])
            stmt = stmt.on_conflict_do_update(
                index_elements=["item_id"],
                set_={c: stmt.excluded[c] for c in ("title", "text", "genres", "year",
                                                    "updated_at")},
            )  # fmt: skip
            conn.execute(stmt)

    def added_items(
        self, item_ids: Sequence[str] | None = None, *, with_times: bool = False
    ) -> list[dict[str, Any]]:
        """Every added or updated item (or those of ``item_ids``), in the order they were
        first added; ``with_times``: with each row's ``updated_at``."""
        columns = [items.c.item_id, items.c.title, items.c.text, items.c.genres, items.c.year]
        if with_times:
            columns.append(items.c.updated_at)
        # an unnumbered row (written by a process still running a version before this
        # column) last, in the order of before, on SQLite and PostgreSQL alike
        query = select(*columns).order_by(
            items.c.added.is_(None), items.c.added, items.c.updated_at, items.c.item_id
        )
        if item_ids is not None:
            query = query.where(items.c.item_id.in_(list(item_ids)))
        with self.engine.connect() as conn:
            return [self._item(dict(r._mapping)) for r in conn.execute(query)]

    def _item(self, row: dict[str, Any]) -> dict[str, Any]:
        """An item row as the service wrote it: a year that is a number or none (a year of
        'abc' stopped a server's start with a traceback). Its text columns need no check:
        SQLite's text affinity and PostgreSQL's types store any value written as text."""
        year = row["year"]
        if year is not None and not is_finite_number(year):
            raise self._damaged(f"item {row['item_id']!r}", f"year {year!r:.40} is not a number")
        return row

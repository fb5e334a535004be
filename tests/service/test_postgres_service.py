"""The service on a real PostgreSQL (``$METAREC_TEST_POSTGRES_URL``; `.ci/run` starts
one): what a client gets when the database goes away or the role lacks a grant."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from metarec.service.store import FeedbackStore, normalise_url

from .conftest import LiveServer


@contextmanager
def refusing_connections(pg_url: str) -> Iterator[None]:
    """The test database refuses new connections and drops the open ones (as a server
    restarting would), until the block ends. Needs the role to own the database, as
    `.ci/run`'s does; a skip otherwise."""
    url = make_url(normalise_url(pg_url))
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = url.database
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": name},
            )
    except Exception as exc:  # the role cannot: not this test's subject
        admin.dispose()
        pytest.skip(f"PostgreSQL: the test role cannot close database {name!r}: {exc}")
    try:
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def test_a_database_that_went_away_is_a_503_to_retry_and_then_serves_again(
    pg_url: str, server_api_key: str, make_server: Callable[..., LiveServer]
) -> None:
    # was 500 internal_error with a traceback per request: a client or balancer could
    # not tell a retry would do
    live = make_server(db_url=pg_url)
    with httpx.Client(base_url=live.url, headers={"X-API-Key": server_api_key}) as c:
        assert c.post("/v1/users", json={"user_id": "u"}).status_code == 201
        event = {"event_id": "e1", "item_id": "1", "type": "like"}
        with refusing_connections(pg_url):
            for answer in (
                c.post("/v1/users/u/events", json=event),
                c.get("/v1/users/u/recommendations"),
            ):
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "store_unavailable"
                assert answer.headers["Retry-After"] == "5"
        deadline = time.monotonic() + 30
        while (stored := c.post("/v1/users/u/events", json=event)).status_code == 503:
            assert time.monotonic() < deadline, stored.text
            time.sleep(0.2)
        assert stored.json() == {"accepted": 1, "duplicates": 0}  # nothing stored before


def test_a_role_without_a_grant_a_write_needs_is_told_which(
    pg_url: str, server_api_key: str, make_server: Callable[..., LiveServer]
) -> None:
    # a role that may only read and insert: adding items (an UPDATE of service_state)
    # was a 500 internal_error, the cause only in the server's log
    owner = make_server(db_url=pg_url)
    httpx.get(f"{owner.url}/ready").raise_for_status()  # the owner made the schema
    owner.stop()
    role = "metarec_inserter"
    store = FeedbackStore(pg_url)
    with store.engine.begin() as conn:
        conn.execute(text(f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {role}"))
        conn.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"))
    store.close()
    url = make_url(pg_url).set(username=role, password="metarec").render_as_string(False)
    try:
        FeedbackStore(url).close()
    except Exception as exc:
        pytest.skip(f"PostgreSQL: no role {role} with password 'metarec' (.ci/run makes it): {exc}")
    live = make_server(db_url=url)
    with httpx.Client(base_url=live.url, headers={"X-API-Key": server_api_key}) as c:
        assert c.post("/v1/users", json={"user_id": "u"}).status_code == 201  # inserts: fine
        item = {"item_id": "n1", "title": "Night Train"}
        refused = c.put("/v1/items", json={"items": [item]})
        assert refused.status_code == 500, refused.text
        error = refused.json()["error"]
        assert error["code"] == "store_forbidden"
        assert "permission denied for table service_state" in error["message"]
        assert "UPDATE on service_state and items" in error["message"]
        assert c.get("/v1/items/n1").status_code == 404  # nothing half-added


def test_items_refused_while_the_database_is_away_are_not_served_meanwhile(
    pg_url: str, server_api_key: str, make_server: Callable[..., LiveServer]
) -> None:
    # the model took the items before the store refused them, and reading it afresh
    # failed too: this process served an item no other process or restart had
    live = make_server(db_url=pg_url)
    with httpx.Client(base_url=live.url, headers={"X-API-Key": server_api_key}) as c:
        assert c.get("/v1/items/1").status_code == 200
        with refusing_connections(pg_url):
            item = {"item_id": "phantom", "title": "Night Train"}
            refused = c.put("/v1/items", json={"items": [item]})
            assert refused.status_code == 503, refused.text
            looked_up = c.get("/v1/items/phantom")
            assert looked_up.status_code == 503, looked_up.text  # was 200
        deadline = time.monotonic() + 30
        while (after := c.get("/v1/items/phantom")).status_code == 503:
            assert time.monotonic() < deadline, after.text
            time.sleep(0.2)
        assert after.status_code == 404  # caught up: the store never had it
        assert c.get("/v1/items/1").status_code == 200


def test_a_user_id_with_a_nul_is_refused_as_sent_not_as_a_damaged_store(
    pg_url: str, server_api_key: str, make_server: Callable[..., LiveServer]
) -> None:
    # PostgreSQL holds no NUL in text: psycopg's refusal read as "restore it from a backup"
    live = make_server(db_url=pg_url)
    with httpx.Client(base_url=live.url, headers={"X-API-Key": server_api_key}) as c:
        event = {"event_id": "e1", "item_id": "1", "type": "like"}
        for answer in (
            c.get("/v1/users/a%00b"),
            c.get("/v1/users/a%00b/recommendations"),
            c.post("/v1/users/a%00b/events", json=event),
        ):
            assert answer.status_code == 422, answer.text
            assert "user_id: must not contain the control character U+0000" in answer.text

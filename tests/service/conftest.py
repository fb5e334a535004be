"""Fixtures for the HTTP service: a small trained run and real uvicorn servers on loopback.

``service_run`` (a saved run folder), ``server_api_key`` and ``live_server``
(the base URL of a running server, session-wide) are shared with the page
test; ``make_server`` starts a fresh server (own SQLite file unless given one)
for tests that need one to themselves.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from metarec.config import TrainConfig
from metarec.data import load_dataset
from metarec.pipeline import encode_catalogue, fit_recommender, split_users
from metarec.service import ServiceSettings, create_app
from metarec.service.server import listening_socket, uvicorn_config
from metarec.service.store import make_engine, metadata, normalise_url

PG_ENV = "METAREC_TEST_POSTGRES_URL"


def reset_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        metadata.drop_all(conn)
    engine.dispose()


@contextmanager
def database_to_itself(url: str) -> Iterator[None]:
    """Waits until no other test process uses the database at ``url``, and keeps it
    for the block: the tests drop its tables and close every connection to it, so two
    pytest-xdist workers (or two runs) on the one database deadlocked and failed each
    other's tests. Without ``fcntl`` (Windows) nothing is waited for."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    # the database, however the URL names it (localhost or 127.0.0.1, a driver or none)
    where = make_url(normalise_url(url))
    host = "localhost" if where.host in (None, "", "127.0.0.1", "::1") else where.host
    key = hashlib.sha256(f"{host}:{where.port or 5432}/{where.database}".encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"metarec-test-postgres-{key}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        yield


def fresh_postgres() -> Iterator[str]:
    """The test database emptied before and after, or a skip saying how to get one;
    held by this test alone meanwhile."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL: set {PG_ENV}=postgresql://user:pw@host/db to run")
    with database_to_itself(url):
        reset_postgres(url)
        yield url
        reset_postgres(url)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An emptied PostgreSQL test database (``$METAREC_TEST_POSTGRES_URL``), or a skip."""
    yield from fresh_postgres()


@pytest.fixture(scope="session")
def service_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small metarec model fitted on ml-100k (TF-IDF encoder), saved as a run folder."""
    ds = load_dataset("ml-100k", root=shared_data)
    cache = tmp_path_factory.mktemp("emb")
    catalogue = encode_catalogue(ds.items, "tfidf", cache_dir=cache, progress=False)
    cfg = TrainConfig(epochs=4, max_train_users=150, inner_steps=2, seed=3, device="cpu")
    train, val = split_users(ds.interactions, 0.1, seed=3)
    spec = {"dataset": "ml-100k", "data": str(shared_data)}  # lets `metarec retrain` find it
    rec, _ = fit_recommender(
        catalogue,
        train,
        cfg,
        users=ds.users,
        validation=val,
        progress=False,
        metadata={"dataset": ds.name, "data_spec": spec},
    )
    run = tmp_path_factory.mktemp("runs") / "ml100k-small"
    rec.save(run)
    return run


@pytest.fixture(scope="session")
def server_api_key() -> str:
    return "test-" + secrets.token_hex(12)


@dataclass
class LiveServer:
    url: str
    settings: ServiceSettings
    app: Any
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self, key: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)


def start_server(settings: ServiceSettings) -> LiveServer:
    """The app under a real uvicorn on a loopback socket, in a thread."""
    app = create_app(settings)
    sock = listening_socket("127.0.0.1", 0)  # what `metarec serve` binds, on a free port
    port = sock.getsockname()[1]
    config = uvicorn_config(  # as `metarec serve`
        app, max_body_bytes=settings.max_body_bytes, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return LiveServer(f"http://127.0.0.1:{port}", settings, app, server, thread)


@pytest.fixture(scope="session")
def live_server(
    service_run: Path, server_api_key: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    db = tmp_path_factory.mktemp("db") / "feedback.db"
    live = start_server(
        ServiceSettings(run=service_run, db_url=f"sqlite:///{db}", api_key=server_api_key)
    )
    yield live.url
    live.stop()


@pytest.fixture
def make_server(
    service_run: Path,
    server_api_key: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def make(**overrides: Any) -> LiveServer:
        fields: dict[str, Any] = {
            "run": service_run,
            "db_url": f"sqlite:///{tmp_path / 'feedback.db'}",
            "api_key": server_api_key,
            # the tests' runs sit in their own temporary folders, not beside service_run
            "runs_dir": tmp_path_factory.getbasetemp(),
        }
        fields.update(overrides)
        live = start_server(ServiceSettings(**fields))
        started.append(live)
        return live

    yield make
    for live in started:
        live.stop()


def serve_subprocess(run: Path, db: Path, key: str, log: Path) -> subprocess.Popen:
    """``metarec serve`` as its own process (for tests that kill it), on a port the
    system picks: :func:`served_url` reads which from ``log``."""
    env = {**os.environ, "METAREC_API_KEY": key, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "metarec.cli", "serve", str(run), "--db", f"sqlite:///{db}"]
    cmd += ["--port", "0"]
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)


_SERVING = re.compile(r"^metarec: serving .+ on (http://[^/\s]+)/", re.M)


def served_url(log: Path, proc: subprocess.Popen, timeout: float = 120.0, nth: int = 1) -> str:
    """The address that the ``nth`` ``metarec serve --port 0`` writing to ``log`` says it
    serves on. The server binds the free port itself: one a test found free and handed
    over could be taken meanwhile by a server of another pytest-xdist worker."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = _SERVING.findall(text)
        if len(found) >= nth:
            return str(found[nth - 1])
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{text[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no serving line in {timeout:.0f} s:\n{text[-2000:]}")
        time.sleep(0.05)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready in time")

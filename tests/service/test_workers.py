"""`metarec serve --workers N`: N server processes on one port, kept in step through the
feedback store, looked after by a supervisor (SIGHUP reaches each, a dead one is
replaced, SIGTERM stops them all with exit code 0)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from metarec.errors import ConfigError
from metarec.service.server import check_workers

from .conftest import served_url, wait_ready


@pytest.mark.parametrize("workers", [0, -1, 65, True, 2.0, "2"])
def test_worker_counts_are_checked(workers: object) -> None:
    with pytest.raises(ConfigError, match=r"--workers: .*; expected a whole number 1-64"):
        check_workers(workers)


def test_a_bad_worker_count_exits_2_before_loading(
    service_run: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    db = tmp_path / "feedback.db"
    res = cli("serve", str(service_run), "--db", f"sqlite:///{db}", "--workers", "0")
    assert res.returncode == 2 and "--workers: 0; expected" in res.stderr, res.stderr
    assert not db.exists()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Workers:
    """A `metarec serve --workers 2` process, its log and its URL."""

    def __init__(self, run: Path, tmp: Path, key: str) -> None:
        self.log = tmp / "serve.log"
        self.key = key
        env = {**os.environ, "METAREC_API_KEY": key, "PYTHONUNBUFFERED": "1"}
        cmd = ["metarec", "serve", str(run), "--db", f"sqlite:///{tmp / 'feedback.db'}"]
        cmd += ["--port", "0", "--workers", "2"]
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)

    @functools.cached_property
    def url(self) -> str:
        """Where the supervisor says it serves (once it has said so)."""
        return served_url(self.log, self.proc)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.text())) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} x{count} not in the log:\n{self.text()}")
            time.sleep(0.1)

    def clients_by_worker(self, want: int = 2, tries: int = 60) -> dict[int, httpx.Client]:
        """Keep-alive connections that landed on different workers (a connection stays
        with the process that accepted it), by that process's id."""
        found: dict[int, httpx.Client] = {}
        opened = []
        for _ in range(tries):
            c = httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=60)
            opened.append(c)
            pid = re.search(r"^metarec_process_id (\d+)", c.get("/metrics").text, re.M)
            assert pid is not None
            found.setdefault(int(pid.group(1)), c)
            if len(found) == want:
                break
        for c in opened:
            if c not in found.values():
                c.close()
        assert len(found) == want, f"connections reached {len(found)} worker(s) only"
        return found


@pytest.fixture
def workers(service_run: Path, tmp_path: Path, server_api_key: str) -> Iterator[Workers]:
    w = Workers(service_run, tmp_path, server_api_key)
    try:
        wait_ready(w.url, w.proc, timeout=120)
        w.wait_for(r"\(2 worker processes\)")
        yield w
    finally:
        if w.proc.poll() is None:
            w.proc.kill()  # the workers see their supervisor go and stop themselves
            w.proc.wait()


def test_two_workers_share_the_port_and_stay_in_step(workers: Workers) -> None:
    by_pid = workers.clients_by_worker()
    (pid_a, a), (pid_b, b) = by_pid.items()
    item = {"item_id": "fresh", "title": "Night Train", "year": 2001}
    assert a.put("/v1/items", json={"items": [item]}).json()["added"] == 1
    # the other process serves it from its next request on: a rating of it is accepted
    user = {"user_id": "u", "ratings": [{"item_id": "fresh", "rating": 5}]}
    assert b.post("/v1/users", json=user).status_code == 201
    assert b.get("/v1/items/fresh").status_code == 200
    workers.wait_for(r"caught up with the shared store \(version \d+\)")
    for c in (a, b):
        c.close()

    # SIGHUP reaches each worker, which reloads the run while serving
    workers.proc.send_signal(signal.SIGHUP)
    workers.wait_for(r"SIGHUP: now serving", count=2)

    # kill -USR1 on a worker writes its stacks and leaves it serving (it ended it)
    os.kill(pid_b, signal.SIGUSR1)
    workers.wait_for(r"Thread 0x[0-9a-f]+ \(most recent call first\)")
    assert alive(pid_b)

    # a worker that dies is replaced; the port never stops answering
    os.kill(pid_a, signal.SIGKILL)
    workers.wait_for(rf"worker {pid_a} exited with code -9; starting another")
    with httpx.Client(base_url=workers.url, timeout=60) as c:
        assert c.get("/v1/items/fresh").status_code == 200
    workers.wait_for(r"Application startup complete", count=3)

    # SIGTERM: every worker stops, requests finished, exit code 0; a connection made
    # during the drain is refused, not left hanging
    stop_during_a_request(workers)
    assert not alive(pid_b)
    # the workers exit as a process asked to stop does: the lock an encoding made
    # (the item added above) was reported leaked at every stop
    assert "leaked semaphore" not in workers.text(), workers.text()


def test_a_run_no_worker_can_load_exits_2_and_leaves_no_worker(
    service_run: Path, tmp_path: Path, server_api_key: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(service_run, run)
    (run / "recommender.json").write_text("[]")  # damaged after `serve` checked it is a run
    w = Workers(run, tmp_path, server_api_key)
    assert w.proc.wait(timeout=120) == 2
    out = w.text()
    assert "metarec: error:" in out and "not a JSON object" in out, out
    assert "Traceback" not in out
    assert not (tmp_path / "feedback.db").exists()


def first_worker_started(w: Workers, timeout: float = 60.0) -> None:
    """Wait until the supervisor has started a worker (its signal handlers are in place).
    A worker, not any child: a short-lived one from an import (a `uname` run, say) came
    before the handlers, and a SIGTERM then killed the supervisor by default."""
    children = Path(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children")
    deadline = time.monotonic() + timeout
    while not any("multiprocessing" in _cmdline(pid) for pid in children.read_text().split()):
        assert w.proc.poll() is None and time.monotonic() < deadline, w.text()
        time.sleep(0.05)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:  # gone already
        return ""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux /proc")
def test_signals_while_the_workers_start(
    service_run: Path, tmp_path: Path, server_api_key: str
) -> None:
    # SIGHUP while the first worker loads: not forwarded to it (it would have died, and
    # the server with it), the start goes on
    (tmp_path / "hup").mkdir()
    w = Workers(service_run, tmp_path / "hup", server_api_key)
    try:
        first_worker_started(w)
        w.proc.send_signal(signal.SIGHUP)
        wait_ready(w.url, w.proc, timeout=120)
    finally:
        w.proc.kill()
        w.proc.wait()
    # SIGTERM while the first worker loads: a clean stop, exit code 0
    (tmp_path / "term").mkdir()
    w = Workers(service_run, tmp_path / "term", server_api_key)
    first_worker_started(w)
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(timeout=60) == 0, w.text()
    assert "Traceback" not in w.text()


def stop_during_a_request(workers: Workers) -> None:
    """SIGTERM while a request is in flight: the port refuses new connections at once
    while the supervisor waits for that request, then exits with code 0. (The
    supervisor's copy of the listening socket kept the port open after the workers
    closed theirs: a connection made during the drain hung, then was reset.)"""
    stalled = socket.create_connection(("127.0.0.1", workers.port))
    stalled.sendall(
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-API-Key: " + workers.key.encode() + b'\r\nContent-Length: 40\r\n\r\n{"user'
    )  # the rest of the body withheld: a request in flight, which the drain waits for
    time.sleep(0.5)
    before = len(re.findall(r"Shutting down", workers.text()))
    workers.proc.send_signal(signal.SIGTERM)
    workers.wait_for(r"Shutting down", count=before + 1)
    deadline = time.monotonic() + 10
    while True:
        try:
            late = socket.create_connection(("127.0.0.1", workers.port), timeout=2)
        except ConnectionRefusedError:
            break  # refused at once: the client may try another server
        late.close()
        assert time.monotonic() < deadline, "the port still took connections during the drain"
        time.sleep(0.1)
    assert workers.proc.poll() is None  # still draining the stalled request
    stalled.close()
    assert workers.proc.wait(timeout=60) == 0

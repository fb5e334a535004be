"""Under load and under kill -9: every acknowledged event is stored exactly once."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from metarec.service.store import FeedbackStore

from .conftest import LiveServer, serve_subprocess, served_url, wait_ready

N_EVENTS = 20_000
N_CLIENTS = 16
N_USERS = 40
TYPES = ("click", "skip", "like", "dislike", "rating")


def _event(event_id: str, rng: random.Random) -> dict[str, object]:
    kind = rng.choice(TYPES)
    event: dict[str, object] = {
        "event_id": event_id,
        "item_id": str(rng.randint(1, 1682)),
        "type": kind,
    }
    if kind == "rating":
        event["value"] = rng.randint(1, 5)
    return event


@pytest.mark.slow
def test_20000_events_from_16_clients_with_retries(
    make_server: Callable[..., LiveServer], server_api_key: str
) -> None:
    live = make_server()
    users = [f"load-{n}" for n in range(N_USERS)]
    with live.client(server_api_key) as c:
        for u in users:
            assert c.post("/v1/users", json={"user_id": u}).status_code == 201
    totals = {"accepted": 0, "duplicates": 0, "retried": 0}
    lock = threading.Lock()
    errors: list[str] = []

    def client(n: int) -> None:
        rng = random.Random(n)
        ids = [f"c{n}-{i}" for i in range(N_EVENTS // N_CLIENTS)]
        sent: list[tuple[str, dict]] = []
        accepted = duplicates = retried = 0
        with live.client(server_api_key) as c:
            lo = 0
            while lo < len(ids):
                size = rng.randint(1, 60)
                user = rng.choice(users)
                batch = {"events": [_event(i, rng) for i in ids[lo : lo + size]]}
                lo += size
                r = c.post(f"/v1/users/{user}/events", json=batch)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    return
                accepted += r.json()["accepted"]
                duplicates += r.json()["duplicates"]
                sent.append((user, batch))
                if rng.random() < 0.3:  # a client retrying a batch it already sent
                    old_user, old = rng.choice(sent)
                    r = c.post(f"/v1/users/{old_user}/events", json=old)
                    assert r.json() == {"accepted": 0, "duplicates": len(old["events"])}
                    retried += len(old["events"])
        with lock:
            totals["accepted"] += accepted
            totals["duplicates"] += duplicates
            totals["retried"] += retried

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(N_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    assert not errors, errors[:3]
    assert totals["accepted"] == N_EVENTS and totals["duplicates"] == 0 and totals["retried"] > 0
    store = FeedbackStore(live.settings.db_url)
    try:
        assert store.count_events() == N_EVENTS
        assert store.event_ids() == {
            f"c{n}-{i}" for n in range(N_CLIENTS) for i in range(N_EVENTS // N_CLIENTS)
        }
    finally:
        store.close()
    with live.client(server_api_key) as c:
        metrics = c.get("/metrics").text
        recs = c.get(f"/v1/users/{users[0]}/recommendations").json()
    assert f"metarec_events_stored_total {N_EVENTS}" in metrics
    assert f"metarec_events_duplicate_total {totals['retried']}" in metrics
    assert len(recs["items"]) == 10
    assert seconds < 60, f"{N_EVENTS} events took {seconds:.0f} s"


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_event(
    service_run: Path, server_api_key: str, tmp_path: Path
) -> None:
    db, log = tmp_path / "feedback.db", tmp_path / "server.log"
    proc = serve_subprocess(service_run, db, server_api_key, log)
    url = served_url(log, proc)
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    try:
        wait_ready(url, proc)
        headers = {"X-API-Key": server_api_key}
        with httpx.Client(base_url=url, headers=headers) as c:
            for n in range(4):
                c.post("/v1/users", json={"user_id": f"k{n}"})

        def client(n: int) -> None:
            rng = random.Random(n)
            with httpx.Client(base_url=url, headers=headers, timeout=10) as c:
                i = 0
                while not stop.is_set():
                    batch = [_event(f"k{n}-{i + j}", rng) for j in range(rng.randint(1, 20))]
                    i += len(batch)
                    try:
                        r = c.post(f"/v1/users/k{n}/events", json={"events": batch})
                    except httpx.HTTPError:
                        return  # the server died mid-request: that batch was never acknowledged
                    if r.status_code == 200:
                        with lock:
                            acked.update(e["event_id"] for e in batch)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()  # SIGKILL while the clients are still posting
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert len(acked) >= 2000, log.read_text()[-2000:]
        proc = serve_subprocess(service_run, db, server_api_key, log)
        url = served_url(log, proc, nth=2)  # the log is appended to
        wait_ready(url, proc)
        with httpx.Client(base_url=url, headers={"X-API-Key": server_api_key}) as c:
            counts = [c.get(f"/v1/users/k{n}").json()["n_events"] for n in range(4)]
        store = FeedbackStore(f"sqlite:///{db}")
        try:
            stored = store.event_ids()
        finally:
            store.close()
        assert acked <= stored, f"{len(acked - stored)} acknowledged events lost"
        assert sum(counts) == len(stored) >= len(acked)
        proc.send_signal(signal.SIGHUP)  # reload the run in place
        deadline = time.monotonic() + 30
        while "metarec_model_generation 2" not in httpx.get(url + "/metrics").text:
            assert time.monotonic() < deadline, "SIGHUP did not reload the model"
            time.sleep(0.1)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def _catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler of its own for ``sig`` (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1], 16)
    return bool(caught >> (sig - 1) & 1)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux /proc")
def test_a_reload_asked_for_while_the_server_starts_does_not_stop_it(
    service_run: Path, tmp_path: Path, server_api_key: str
) -> None:
    """SIGHUP's default action ends the process: one in the first seconds of `metarec
    serve` (a `systemctl reload` right after a start), before the server's imports put
    its handler in place, stopped the service with exit code 129."""
    proc = serve_subprocess(service_run, tmp_path / "f.db", server_api_key, tmp_path / "log")
    try:
        deadline = time.monotonic() + 30
        while not _catches(proc.pid, signal.SIGTERM):  # the command has begun
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # long before the server's imports are done
        proc.send_signal(signal.SIGHUP)
        url = served_url(tmp_path / "log", proc)
        wait_ready(url, proc)
        deadline = time.monotonic() + 30  # and the reload asked for happens once it serves
        while "metarec_model_generation 2" not in httpx.get(url + "/metrics").text:
            assert time.monotonic() < deadline, (tmp_path / "log").read_text()[-2000:]
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

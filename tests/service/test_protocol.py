"""The request-head limits of the service's HTTP protocol, on a real uvicorn over a
loopback socket with an app of its own: one whose answer takes longer than the head
timeout, which the service's endpoints do not reliably."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from metarec.service import protocol
from metarec.service.server import listening_socket, uvicorn_config


async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep(1.0)  # twice the head timeout below
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def slow_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    import uvicorn

    monkeypatch.setattr(protocol, "HEAD_TIMEOUT_S", 0.5)
    sock = listening_socket("127.0.0.1", 0)
    config = uvicorn_config(slow_app, max_body_bytes=5000, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(timeout=30)


def replies(port: int, first: bytes, later: bytes, answers: int) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(first)
        time.sleep(0.2)
        sock.sendall(later)
        got = b""
        while got.count(b"HTTP/1.1 ") < answers or not got.endswith((b"ok", b"}")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    return [line for line in got.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def test_bytes_after_a_request_wait_for_its_answer_past_the_head_timeout(
    slow_server: int,
) -> None:
    # a blank line after a body, which servers should take (RFC 9112 2.2), started the
    # head timer while the answer was being computed: its client got a 408 in place of
    # the answer to a request that had run
    first = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    assert replies(slow_server, first, b"\r\n", 1) == [b"HTTP/1.1 200 OK"]


def test_a_head_too_large_is_answered_once(
    slow_server: int, caplog: pytest.LogCaptureFixture
) -> None:
    # answered twice, the second write met the closed sending side: "Fatal error on
    # transport" in the log, and the connection torn down under its client
    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + pad * (protocol.MAX_HEAD_BYTES // len(pad) + 5)
    with caplog.at_level(logging.ERROR):
        got = replies(slow_server, head, b"", 1)
        time.sleep(0.3)
    assert got == [b"HTTP/1.1 431 Request Header Fields Too Large"]
    assert not [r for r in caplog.records if "Fatal error" in r.getMessage()]


def test_a_body_that_does_not_arrive_is_refused(
    slow_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ten bytes of a declared million held the connection, and what it had sent, for
    # good: the head's timeout ended at the head
    monkeypatch.setattr(protocol, "BODY_TIMEOUT_S", 0.5)
    monkeypatch.setattr(protocol, "BODY_MIN_RATE", 10**9)  # no longer for its size
    with socket.create_connection(("127.0.0.1", slow_server), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n0123456789")
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), got
    assert b"body did not arrive within 0.5 s of its head" in got
    # a whole body sent in time is answered as ever, past the body timeout
    first = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    assert replies(slow_server, first, b"", 1) == [b"HTTP/1.1 200 OK"]


def test_a_large_declared_body_gets_time_for_its_size(
    slow_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a server started with a larger --max-body-bytes: 60 s cut an upload on a slow
    # link however large a body the server took
    monkeypatch.setattr(protocol, "BODY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(protocol, "BODY_MIN_RATE", 1000)  # 3,000 bytes: 3 s
    body = b"x" * 3000
    with socket.create_connection(("127.0.0.1", slow_server), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n" + body[:1000])
        time.sleep(1.0)  # past BODY_TIMEOUT_S, within the size's time
        sock.sendall(body[1000:])
        got = sock.recv(65536)
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got
    assert protocol.body_timeout([(b"content-length", b"3000")]) == 3.0
    assert protocol.body_timeout([(b"content-length", b"10")]) == 0.3
    assert protocol.body_timeout([]) == 0.3  # chunked: the plain limit
    # counted up to the server's limit: a body declared past it is read and dropped
    # before its 413, and a declared 64 MiB held the connection for 70 minutes
    assert protocol.body_timeout([(b"content-length", b"67108864")], 5000) == 5.0
    with socket.create_connection(("127.0.0.1", slow_server), timeout=20) as sock:
        started = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\nx")
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert time.monotonic() - started < 10  # 5 s for the 5,000 bytes the server takes


def test_a_pipelined_body_waits_for_the_answer_before_it(
    slow_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # behind a request whose answer takes a second, the next one's body is not read:
    # its timer wrote a 408 in place of the first request's answer
    monkeypatch.setattr(protocol, "BODY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(protocol, "BODY_MIN_RATE", 10**9)
    body = b"x" * 300_000
    first = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    second = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    with socket.create_connection(("127.0.0.1", slow_server), timeout=10) as sock:
        sock.sendall(first + second)
        got = b""
        while got.count(b"HTTP/1.1 ") < 2 or not got.endswith(b"ok"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    assert got.count(b"HTTP/1.1 200 OK\r\n") == 2 and b" 408 " not in got, got

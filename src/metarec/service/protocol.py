"""The HTTP protocol uvicorn runs the service with: its own, except that a request the
parser cannot read gets the service's JSON error body instead of uvicorn's plain text.

uvicorn answers bytes that are not HTTP (a bad request line, an invented method, a
broken header) with ``400`` and ``Invalid HTTP request received.`` as text before any
application code runs; every other error of the service is JSON
(``{"error": {"code", "message"}}``), so a client parsing errors would choke on
exactly this one. The override keeps uvicorn's behaviour otherwise: the status, its
default headers (``date``, ``server``), and closing the connection, as the stream
cannot be trusted after a parse error. httptools is a dependency, so its protocol
(the C parser, uvicorn's choice when it is installed) is the one overridden.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from metarec.service.errors import error_response
from metarec.service.middleware import SECURITY_HEADERS

BAD_HTTP = "bad_http"


URI_TOO_LONG = "uri_too_long"
# httptools splits a URL with 16-bit offsets: a longer one is a parse error
MAX_URL_BYTES = 65_535
# what a recommendations request's candidates may hold: the limit counts decoded
# characters, the parser's bytes of the URL as sent, where a client's encoding makes
# a comma three bytes (%2C): 20,000 ASCII characters stay under it so encoded, with
# room for the path, a long user id and the other parameters
MAX_CANDIDATES_CHARS = 20_000
# a request's head (request line and headers): the parser kept every header line a
# client sent, so one endless request grew the server by what it sent (700 MB in a
# review); browsers send a few KiB of headers, but a candidates list may fill the URL
# to MAX_URL_BYTES, so the head may hold that and 64 KiB of headers more
MAX_HEAD_BYTES = MAX_URL_BYTES + 1 + 64 * 1024
HEAD_TOO_LARGE = "headers_too_large"
# a head must arrive within this time from its first byte (or from the connection,
# for the first): a client that sent nothing, or a header line every few seconds, held
# its connection for good, and a few hundred of them left no file descriptor to accept
# anyone else with ("slowloris"); the keep-alive timeout covers the wait between requests
HEAD_TIMEOUT_S = 20.0
HEAD_TIMEOUT = "request_timeout"
# and for its body, from the end of the head (a megabyte at 17 kB/s): a body sent a
# few bytes at a time held its connection, and what it had sent, for good; three
# thousand such requests to a server with a key stayed open past a minute
BODY_TIMEOUT_S = 60.0
# ... or longer for a large declared body (--max-body-bytes past the default): a second
# for each BODY_MIN_RATE bytes, the rate 60 s gives a megabyte, so a 20 MB upload on a
# slow link is not cut at a minute while a body that trickles is still stopped
BODY_MIN_RATE = 16_000
# how long a refused connection goes on reading (and dropping) what its client sends
LINGER_S = 2.0


def bad_http_response(
    default_headers: list[tuple[bytes, bytes]],
    message: str,
    status: tuple[int, bytes, str] = (400, b"Bad Request", BAD_HTTP),
) -> bytes:
    """A complete error response (``400`` by default) with the body every other error
    of the service has; ``status``: (code, reason phrase, error code)."""
    code, reason, error = status
    body = error_response(code, error, message).body
    head = [b"HTTP/1.1 %d %s\r\n" % (code, reason)]
    # the headers every other answer carries: these never pass the app's middleware
    head += [
        name + b": " + value + b"\r\n" for name, value in (*default_headers, *SECURITY_HEADERS)
    ]
    head += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + bytes(body)


def body_timeout(headers: list[tuple[bytes, bytes]], limit: int | None = None) -> float:
    """Seconds a request's body may take from its head: :data:`BODY_TIMEOUT_S`, or a
    second per :data:`BODY_MIN_RATE` bytes its ``Content-Length`` declares where that is
    longer, counting at most ``limit`` bytes (the server's --max-body-bytes): a body
    declared past the limit is read and dropped before its 413, and a declared 64 MiB
    held the connection 70 minutes, from any client, key or none."""
    declared = [value for name, value in headers if name == b"content-length"]
    try:
        size = int(declared[0]) if len(declared) == 1 else 0
    except ValueError:
        size = 0  # the parser refuses it
    if limit is not None:
        size = min(size, limit)
    return max(BODY_TIMEOUT_S, size / BODY_MIN_RATE)


def with_body_limit(
    protocol: type[JsonErrorHttpProtocol], limit: int | None
) -> type[JsonErrorHttpProtocol]:
    """``protocol`` giving bodies time for at most ``limit`` bytes (uvicorn builds the
    protocol itself, from a class, so the server's limit travels as a class attribute)."""
    return type(protocol.__name__, (protocol,), {"max_body_bytes": limit})


class JsonErrorHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose parse errors are JSON, and which bounds what a
    request's head may take: :data:`MAX_HEAD_BYTES` of memory (``431``) and
    :data:`HEAD_TIMEOUT_S` of time (``408``), neither of which uvicorn limits."""

    max_body_bytes: int | None = None  # the server's limit (with_body_limit)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._head_bytes = 0
        self._head_done = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._parsed_head = 0  # the URL and header lines parsed so far, in bytes
        self._head_too_large = False
        self._discarding = False  # refused: what arrives is read and dropped
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_timeout = BODY_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding or self.transport.is_closing():
            return  # refused already: the rest of what the client sends is dropped
        counting = self._reading_head
        if counting and self._head_timer is None:
            self._start_head_timer()  # the first byte of a request after another
        self._head_done = False
        super().data_received(data)
        if self._discarding:
            return  # refused within the parse (a head too large): answered once already
        # only bytes that were all head count (a chunk that ended a body may have begun
        # the next head, and is not counted: the count stays at or under the truth)
        if counting and not self._head_done and self._reading_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._refuse_large_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed_head = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._parsed_head += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        # a whole head within one read is parsed before data_received could count it
        self._parsed_head += len(name) + len(value) + 4
        if self._parsed_head > MAX_HEAD_BYTES:
            self._head_too_large = True
            raise ValueError("head too large")  # the parser stops: send_400_response

    def _refuse_large_head(self) -> None:
        self._refuse(
            (431, b"Request Header Fields Too Large", HEAD_TOO_LARGE),
            f"the request's head (request line and headers) passed {MAX_HEAD_BYTES:,} "
            "bytes, all this server reads",
        )

    def on_headers_complete(self) -> None:
        self._reading_head, self._head_done = False, True
        self._stop_head_timer()
        self._body_timeout = body_timeout(self.headers, self.max_body_bytes)
        self._body_timer = self.loop.call_later(self._body_timeout, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_body_timer()
        super().on_message_complete()
        self._reading_head, self._head_bytes = True, 0  # the next request's, if any

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self._discarding or self.transport.is_closing():
            return
        if self.pipeline or getattr(self.flow, "read_paused", False):
            # the server is not reading: an earlier request's answer is being computed
            # (this one waits in the pipeline), or the app has not taken what came; a
            # 408 written now took the place of that earlier answer
            self._body_timer = self.loop.call_later(self._body_timeout, self._body_timed_out)
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # answered already (a refusal draining the body): done
            return
        self._refuse(
            (408, b"Request Timeout", HEAD_TIMEOUT),
            f"the request's body did not arrive within {self._body_timeout:g} s of its head",
        )

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._reading_head or self._discarding or self.transport.is_closing():
            return
        if (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            # the last request's answer is still being computed: bytes after its body (a
            # stray blank line, the next pipelined head) wait for it, and its client got
            # a 408 in place of the answer; the head's time counts again from here
            self._start_head_timer()
            return
        self._refuse(
            (408, b"Request Timeout", HEAD_TIMEOUT),
            f"the request's head did not arrive within {HEAD_TIMEOUT_S:g} s",
        )

    def _refuse(self, status: tuple[int, bytes, str], message: str) -> None:
        """Answer and end the connection, reading on for a moment: closed at once over
        the rest of a long head still arriving, the socket was reset, and the client
        lost the answer before it read it."""
        self._stop_head_timer()
        self.transport.write(bad_http_response(self.server_state.default_headers, message, status))
        self._discarding = True
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer is all: the client sees its end
        self.loop.call_later(LINGER_S, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        url = getattr(self, "url", b"")  # what the parser read of the URL so far
        if self._head_too_large:
            self._refuse_large_head()
            return
        if len(url) > MAX_URL_BYTES:
            # a long candidates list: say so, not that the bytes were no HTTP
            message = (
                f"the URL is {len(url):,} bytes as sent; this server reads up to "
                f"{MAX_URL_BYTES:,}: send fewer candidates (at most {MAX_CANDIDATES_CHARS:,} "
                "characters, which percent-encoding may make three times as many bytes)"
            )
            status = (414, b"URI Too Long", URI_TOO_LONG)
        else:
            message = f"{msg.rstrip('.')}: not an HTTP/1.1 request this server can read"
            status = (400, b"Bad Request", BAD_HTTP)
        self.transport.write(bad_http_response(self.server_state.default_headers, message, status))
        self.transport.close()

"""The HTTP protocol uvicorn runs the service with: its own, except that a request the
parser cannot read gets the service's JSON error body instead of uvicorn's plain text.

uvicorn answers bytes that are not HTTP (a bad request line, an invented method, a
broken header) with ``400`` and ``Invalid HTTP request received.`` as text before any
application code runs; every other error of the service is JSON
(``{"error": {"code", "message"}}``), so a client parsing errors would choke on
exactly this one. The override keeps uvicorn's behaviour otherwise: the status, its
default headers (``date``, ``server``), and closing the connection, as the stream
cannot be trusted after a parse error.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is a dependency; h11 serves where it cannot be built
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

BAD_HTTP = "bad_http"


def bad_http_response(default_headers: list[tuple[bytes, bytes]], message: str) -> bytes:
    """A complete ``400`` response carrying the service's JSON error body."""
    body = json.dumps({"error": {"code": BAD_HTTP, "message": message}}).encode()
    head = [b"HTTP/1.1 400 Bad Request\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


def _message(msg: str) -> str:
    return f"{msg.rstrip('.')}: not an HTTP/1.1 request this server can read"


class _JsonBadRequest:
    transport: Any
    server_state: Any

    def send_400_response(self, msg: str) -> None:
        self.transport.write(bad_http_response(self.server_state.default_headers, _message(msg)))
        self.transport.close()


class JsonErrorH11Protocol(_JsonBadRequest, H11Protocol):
    """uvicorn's h11 protocol with JSON parse errors."""


if HttpToolsProtocol is not None:

    class JsonErrorHttpToolsProtocol(_JsonBadRequest, HttpToolsProtocol):
        """uvicorn's httptools protocol (the C parser) with JSON parse errors."""

    HTTP_PROTOCOL: type[Any] = JsonErrorHttpToolsProtocol
else:  # pragma: no cover - httptools is a dependency
    HTTP_PROTOCOL = JsonErrorH11Protocol

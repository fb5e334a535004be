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

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from metarec.service.errors import error_response

BAD_HTTP = "bad_http"


def bad_http_response(default_headers: list[tuple[bytes, bytes]], message: str) -> bytes:
    """A complete ``400`` response with the body every other error of the service has."""
    body = error_response(400, BAD_HTTP, message).body
    head = [b"HTTP/1.1 400 Bad Request\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + bytes(body)


class JsonErrorHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose parse errors are JSON."""

    def send_400_response(self, msg: str) -> None:
        message = f"{msg.rstrip('.')}: not an HTTP/1.1 request this server can read"
        self.transport.write(bad_http_response(self.server_state.default_headers, message))
        self.transport.close()

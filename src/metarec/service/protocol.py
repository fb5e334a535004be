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


URI_TOO_LONG = "uri_too_long"
# httptools splits a URL with 16-bit offsets: a longer one is a parse error
MAX_URL_BYTES = 65_535
# what a recommendations request's candidates may hold: the limit counts decoded
# characters, the parser's bytes of the URL as sent, where a client's encoding makes
# a comma three bytes (%2C): 20,000 ASCII characters stay under it so encoded, with
# room for the path, a long user id and the other parameters
MAX_CANDIDATES_CHARS = 20_000


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
        url = getattr(self, "url", b"")  # what the parser read of the URL so far
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

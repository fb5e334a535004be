"""Pure ASGI middleware: body-size limit, per-route metrics, JSON CORS refusals, HEAD.

Written against raw ASGI rather than ``BaseHTTPMiddleware`` so that neither
adds a task or copies the body per request.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metarec.service.docs_pages import DOCS_POLICY
from metarec.service.errors import INTERNAL, cut, error_response
from metarec.service.metrics import Metrics

log = logging.getLogger("metarec.service")


async def _send_error(send: Send, status: int, code: str, message: str, *, close: bool) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, budget: int) -> bool:
    """Read and drop the rest of a request body, up to ``budget`` bytes; whether it was
    read to its end. Answering while the client is still sending would make it see a
    reset connection, not our 413; and once the body is read to its end the connection
    stays open, since closing it is a second chance of a reset (unread bytes in the
    server's socket make the close a TCP reset, which can discard our response)."""
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return False
        budget -= len(msg.get("body", b""))
        if not msg.get("more_body", False):
            return True
        if budget < 0:
            return False


async def refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    budget: int,
) -> None:
    """Answer a request with a JSON error before the app sees it: its body (up to
    ``budget`` bytes) is read first, so the error is not lost to a reset connection,
    and the connection closes only when the body could not be read to its end. A
    client waiting for "100 Continue" has not sent its body: it is not asked for it."""
    waiting = any(name == b"expect" for name, _ in scope.get("headers", ()))
    drained = not waiting and await _drain(receive, budget)
    await _send_error(send, status, code, message, close=not drained)


def _not_json(scope: Scope) -> str | None:
    """Why a request's body is refused as not JSON (every body this API reads is JSON),
    or None. Only a body that is there counts: ``curl -X POST -d ''`` says form data.
    A body without a Content-Type is refused too (it was a 422 quoting the raw bytes),
    and so is a compressed one, which nothing here decodes."""
    headers = dict(scope.get("headers", ()))
    kind, *params = headers.get(b"content-type", b"").decode("latin-1").lower().split(";")
    kind = kind.strip()
    sized = headers.get(b"content-length", b"0").strip() not in (b"0", b"")
    if not (sized or b"transfer-encoding" in headers):
        return None
    encoding = headers.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
    if encoding not in ("", "identity"):
        return f"Content-Encoding {encoding!r}: this API reads uncompressed JSON bodies"
    if not kind:
        return "no Content-Type: send the JSON body with Content-Type: application/json"
    if kind == "application/json" or kind.endswith("+json"):
        return _not_utf8(params)
    return f"Content-Type {kind!r}: this API reads application/json bodies"


def _not_utf8(params: list[str]) -> str | None:
    """JSON is UTF-8 (RFC 8259), and application/json defines no charset; one that says
    otherwise is refused rather than ignored, since its text would be misread"""
    for param in params:
        name, _, value = param.partition("=")
        charset = value.strip().strip('"')
        # ASCII is UTF-8's first 128 characters: a body in it is read alike
        if name.strip() == "charset" and charset not in ("utf-8", "utf8", "us-ascii", "ascii"):
            return (
                f"charset {cut(charset, 40)}: this API reads JSON as UTF-8 (RFC 8259); "
                "send UTF-8 and drop the charset or make it utf-8"
            )
    return None


class BodyLimit:
    """413 for a body over ``max_bytes``: by Content-Length, or, for a body sent without
    one (chunked), by reading it here up to the limit before the app sees it; 415 for a
    body that says it is not JSON."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_budget = max(64 * max_bytes, 64 << 20)  # beyond this, just hang up

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = _not_json(scope)
        if refused is not None:
            await refuse(
                scope, receive, send, 415, "unsupported_media_type", refused,
                budget=self.max_bytes,
            )  # fmt: skip
            return
        too_large = f"request body over the limit of {self.max_bytes} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_error(
                        send, 400, "bad_request", "invalid Content-Length header", close=True
                    )
                    return
                if declared > self.drain_budget:  # too much to read for nothing: hang up
                    await _send_error(send, 413, "too_large", too_large, close=True)
                    return
                if declared > self.max_bytes:
                    await refuse(scope, receive, send, 413, "too_large", too_large, budget=declared)
                    return
                # the HTTP server delivers exactly the declared length
                await self.app(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return
            size += len(msg.get("body", b""))
            if size > self.max_bytes:
                drained = not msg.get("more_body", False) or await _drain(
                    receive, self.drain_budget
                )
                await _send_error(send, 413, "too_large", too_large, close=not drained)
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_GONE = 499  # the status label of a request whose client left before the answer


def _route_path(scope: Scope) -> str:
    """The template of the route a request was for: the one the router matched, else
    the first whose path it fits (a request refused before routing, a 415 or a repeated
    query parameter, was counted as "unmatched", out of its route's error rate)."""
    route: Any = scope.get("route")
    name = getattr(route, "path", None)
    if name:
        return str(name)
    router = getattr(scope.get("app"), "router", None)
    for candidate in getattr(router, "routes", ()):
        match, _ = candidate.matches(scope)  # PARTIAL: the path, another method
        if match != Match.NONE and getattr(candidate, "path", None):
            return str(candidate.path)
    return "unmatched"


class RequestMetrics:
    """Count and time every request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status: int | None = None
        failed = gone = False

        async def tracked(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        async def watched() -> Message:
            nonlocal gone
            msg = await receive()
            if msg["type"] == "http.disconnect" and status is None:
                gone = True  # whatever is answered now reaches no one
            return msg

        try:
            await self.app(scope, watched, tracked)
        except BaseException:
            failed = True
            raise
        finally:
            name = _route_path(scope)
            # a client can send any method token: one label each would grow without bound
            method = scope["method"] if scope["method"] in _METHODS else "other"
            # the client went away before the answer (499, as nginx logs it): that
            # counted as a 500 of the server's, setting off its alerts, or a 400
            if gone or (status is None and not failed):
                code = CLIENT_GONE
            else:
                code = status if status is not None else 500
            self.metrics.observe_request(name, method, code, time.perf_counter() - t0)


class Unexpected:
    """An error no handler took: the JSON 500 every other error is, logged once, and the
    connection kept. Starlette's outermost middleware answers it too, then raises it
    again for the server, which logged a second traceback and closed the client's
    keep-alive connection, so its next request on it failed as reset."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if started:  # part of an answer is out: only the server can end it
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await _send_error(send, 500, "internal_error", INTERNAL, close=False)


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the service's JSON error
    shape (Starlette answers it in plain text) so a client parses every error one way.
    The page at ``/`` is never shared: it may carry the API key (``--page-api-key``),
    which any listed origin, or every one under ``*``, could read and write with."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/":
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = bytes(response.body).decode("utf-8", "replace")  # "Disallowed CORS origin"
        if not self.allow_origins:
            refused += "; this server allows no other origin (start it with --cors ORIGIN)"
        kept = {
            k: v for k, v in response.headers.items() if k.lower().startswith(("access-", "vary"))
        }
        return error_response(
            response.status_code,
            "cors_refused",
            f"{refused} (origin {request_headers.get('origin')!r}, method "
            f"{request_headers.get('access-control-request-method')!r})",
            **kept,
        )


class HeadAsGet:
    """HEAD answered as the GET it mirrors, headers only (RFC 9110 has every GET
    resource take HEAD; FastAPI routes GET alone, so uptime checks and load balancers
    that probe with HEAD got 405)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}  # Content-Length stays the GET's
            await send(message)

        inner = {**scope, "method": "GET"}
        try:
            await self.app(inner, receive, headers_only)
        finally:
            # the route the router matched, for the request metrics outside (a HEAD
            # probe was counted as "unmatched", out of its route's counts and latency)
            if "route" in inner:
                scope["route"] = inner["route"]


class StrictTarget:
    """Refuse a request target the routes would misread: a path whose percent-escapes
    are not UTF-8 (decoded with replacement, /v1/users/%ff named the user "\ufffd"),
    and a query parameter given twice (the last one silently won: candidates=2&
    candidates=3 ranked item 3 alone)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.budget = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = _target_problem(scope)
            if problem is not None:
                status, code, message = problem
                await refuse(scope, receive, send, status, code, message, budget=self.budget)
                return
        await self.app(scope, receive, send)


class SingleHost:
    """Refuse a request naming its ``Host`` more than once (400, as RFC 9112 asks): the
    keyless server's Host guard read the first and its cross-origin check the last, so
    the two judged different hosts."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.budget = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hosts = sum(1 for name, _ in scope.get("headers", ()) if name == b"host")
            if hosts > 1:
                message = f"the Host header is given {hosts} times; give it once"
                await refuse(scope, receive, send, 400, "bad_request", message, budget=self.budget)
                return
        await self.app(scope, receive, send)


def _target_problem(scope: Scope) -> tuple[int, str, str] | None:
    raw = scope.get("raw_path") or scope.get("path", "").encode()
    try:
        urllib.parse.unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return 400, "bad_request", "the request path is not UTF-8 once its %-escapes are decoded"
    raw_query = scope.get("query_string", b"")
    try:
        # the framework decodes with replacement: "%ff" would be searched, or named as an
        # unknown item, as U+FFFD, which the client never sent
        urllib.parse.unquote_to_bytes(raw_query).decode("utf-8")
    except UnicodeDecodeError:
        return 400, "bad_request", "the query string is not UTF-8 once its %-escapes are decoded"
    query = raw_query.decode("latin-1")
    names = [name for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return (
            422,
            "validation_error",
            f"{twice[0]}: given {names.count(twice[0])} times; give each query parameter once"
            + (" (candidates take one comma-separated list)" if twice[0] == "candidates" else ""),
        )
    return None


# the page's own script and style are inline; it reads the API on its own origin only
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
_ON_THE_PAGE = (*SECURITY_HEADERS, (b"content-security-policy", PAGE_POLICY.encode()))
_ON_THE_DOCS = (*SECURITY_HEADERS, (b"content-security-policy", DOCS_POLICY.encode()))
_EXTRA_BY_PATH = {"/": _ON_THE_PAGE, "/docs": _ON_THE_DOCS, "/redoc": _ON_THE_DOCS}


class SecurityHeaders:
    """Headers every answer carries: no content sniffing, no framing (the page in
    another site's frame could be clicked through), no caching of answers that hold a
    user's history or the page's API key, no referrer; the page and the API's docs
    pages their content policies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _EXTRA_BY_PATH.get(scope["path"], SECURITY_HEADERS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in extra if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

"""Request bodies read as JSON a client meant: each key once, every string valid text.

Python's decoder keeps the last of a repeated key (``{"rating": 5, "rating": 1}``
stored a 1 without a word) and reads ``"\\ud800"`` as a lone surrogate, which
pydantic then reports with the key printed as replacement characters. Both are
refused here, before validation, as a ``bad_json`` 400 that says which key or
string; :func:`metarec.service.errors.unreadable_body` words them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

# an escaped UTF-16 surrogate: once the body is strict UTF-8, only then can a decoded
# string hold a lone one, so bodies without one (nearly all) skip the walk
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class UnreadableJson(ValueError):
    """JSON that parses but says two things at once, or holds no text."""


def _each_key_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise UnreadableJson(
                    f"request body gives the key {shown(key)} twice in one "
                    "object; give each key once"
                )
            seen.add(key)
    return obj


def _lone_surrogate(value: Any) -> str | None:
    """The first string in ``value`` (keys included) that is not valid Unicode."""
    stack = [value]
    while stack:
        node = stack.pop()
        texts: list[str] = []
        if isinstance(node, str):
            texts = [node]
        elif isinstance(node, dict):
            texts = list(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return text
    return None


def shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for a message: as written where it is text, escaped where it holds
    a lone surrogate (which no response could encode), cut to ``limit`` with its quote."""
    try:
        text.encode("utf-8")
        quoted = repr(text)
    except UnicodeEncodeError:
        quoted = ascii(text)
    return quoted if len(quoted) <= limit else f"{quoted[: limit - 4]}...{quoted[0]}"


def _no_constant(name: str) -> Any:
    # Python's decoder reads NaN, Infinity and -Infinity, which JSON has no word for
    raise UnreadableJson(f"request body holds {name}, which is not JSON; send a number or null")


def parse(body: bytes) -> Any:
    """``body`` as JSON, refusing repeated keys and lone surrogates (:class:`UnreadableJson`).

    Decoded as strict UTF-8 first (:class:`UnicodeDecodeError` otherwise): Python's
    decoder of bytes guesses UTF-16 and UTF-32 and lets an encoded surrogate through."""
    text = body.decode("utf-8")
    if "\x00" in text:  # UTF-16 or UTF-32 of a JSON text: every other byte is NUL
        raise UnreadableJson(
            "request body holds NUL bytes, as UTF-16 or UTF-32 text does; send JSON as UTF-8"
        )
    value = json.loads(text, object_pairs_hook=_each_key_once, parse_constant=_no_constant)
    if _ESCAPED_SURROGATE.search(text):
        bad = _lone_surrogate(value)
        if bad is not None:
            raise UnreadableJson(
                f"request body holds a string with a lone UTF-16 surrogate "
                f"({shown(bad)}), which is no text; escape a character "
                "outside the BMP as a surrogate pair or send it as UTF-8"
            )
    return value


class _StrictJsonRequest(Request):
    # (field, limit) of the list this route's body may hold at most ``limit`` of
    cap: tuple[str, int] | None = None

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse(await self.body())
            if self.cap is not None:
                _check_cap(self._json, *self.cap)
        return self._json


def _check_cap(value: Any, field: str, limit: int) -> None:
    """A 413 for a list past the server's limit, before validation: 300,000 empty
    events (under the 1 MB body limit) were validated one by one, and their 900,000
    errors described, on the event loop: 7 s in which no other request was answered."""
    listed = value.get(field) if isinstance(value, dict) else None
    if isinstance(listed, list) and len(listed) > limit:
        raise HTTPException(413, f"{field}: {len(listed)} in one request; the limit is {limit}")


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is read by :func:`parse` (FastAPI reads it via
    ``Request.json``, so a request class of our own is the one place to do it), with
    the list caps the app keeps in ``app.state.body_caps`` by (method, path)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        keys = [(method, self.path) for method in self.methods or ()]

        async def strict(request: Request) -> Response:
            strict_request = _StrictJsonRequest(request.scope, request.receive)
            caps = getattr(request.app.state, "body_caps", {})
            strict_request.cap = next((caps[k] for k in keys if k in caps), None)
            return await handle(strict_request)

        return strict

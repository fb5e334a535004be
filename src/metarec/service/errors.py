"""Every error leaves the service as ``{"error": {"code", "message"}}`` with the right status.

Validation messages name the field and the value at fault; a failure the
client did not cause is logged with its traceback and answered with a generic
500 that reveals nothing about the server.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from metarec.service.json_body import UnreadableJson
from metarec.service.store import COMMIT_UNKNOWN, FILE_GONE, INSUFFICIENT_PRIVILEGE, unreachable

# PostgreSQL's SQLSTATEs of a transaction refused whole that a retry may pass: a lock
# wait past lock_timeout, a serialisation failure, a deadlock
_RETRY_STATES = frozenset({"55P03", "40001", "40P01"})

log = logging.getLogger("metarec.service")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "not_ready",
}


class ApiError(Exception):
    """Raised by endpoints: status, a stable machine code, a message for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers or None
    )


# what a client is told of a fault of the server's (the log has the rest)
INTERNAL = "internal server error; see the server log"

# pydantic's types for a body that is not a JSON object where a model was expected
_NOT_AN_OBJECT = ("dict_type", "model_type", "model_attributes_type")


def cut(value: Any, width: int = 80) -> str:
    """``repr(value)``, shortened to ``width`` characters with its closing quote kept:
    ``'xxxx…x'``, not ``'xxxx`` as a plain ``{value!r:.80}`` gave."""
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 2]}…{text[-1]}"


def describe_validation(
    errors: list[dict[str, Any]], body: Any = None, body_of: str = ""
) -> tuple[int, str, str]:
    """FastAPI/pydantic errors → (status, code, message naming field and value);
    ``body``: the request's JSON as sent, where it was read; ``body_of``: the last
    part of the request's path (``events``)."""
    for err in errors:
        if err.get("type") in ("json_invalid", "json_type"):
            where = [p for p in err.get("loc", ()) if isinstance(p, int)]
            reason = (err.get("ctx") or {}).get("error") or err.get("msg", "")
            at = f" at character {where[0]}" if where else ""
            return 400, "bad_json", f"request body is not valid JSON{at}: {reason}".strip()
    errors = _one_per_union(errors)
    if body_of == "events" and isinstance(body, dict) and "events" not in body:
        # one event sent bare is read as {"events": [it]}: name its fields as sent
        bare = ("body", "events", 0)
        errors = [
            {**e, "loc": ("body", *e["loc"][3:])} if tuple(e.get("loc", ()))[:3] == bare else e
            for e in errors
        ]
    parts = []
    for err in errors[:5]:
        loc = field_path(err.get("loc", ()))
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden" and loc.startswith("items["):
            # a catalogue's own columns (author, description) have no field of their own
            msg = "not a field of an item (title, text, genres, year); put further text in text"
        if not loc and isinstance(body, list) and err.get("type") in _NOT_AN_OBJECT:
            msg = "expected a JSON object, got a list" + (
                ' (several events go in {"events": [...]})' if body_of == "events" else ""
            )
        value = err.get("input")
        # not where the message or the location names the value already: a non-finite
        # feature said "(got inf) (got inf)", and a bad feature name was named twice
        named = "(got " in msg or tuple(err.get("loc", ()))[-1:] == ("[key]",)
        plain = not (named or isinstance(value, dict | list) or value is None)
        shown = f" (got {cut(value)})" if plain else ""
        if not loc and _NAMES_ITS_FIELD.match(msg):
            # a check across fields (a rating event's value) names the field itself; a
            # bare event's fields are named as sent, not as parts of "body"
            loc, _, msg = msg.partition(":")
            msg = msg.strip()
        parts.append(f"{loc or 'body'}: {msg}{shown}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "validation_error", "; ".join(parts) + more


# "value: required for a rating event": a model-level message that names its field
_NAMES_ITS_FIELD = re.compile(r"^[a-z_]+: ")

# the names pydantic gives a union's members in an error's location: a type
# ("float", "datetime") or a validator chain ("function-after[_a_genre(), ...]")
_UNION_MEMBER = re.compile(
    r"[a-z]+(?:-[a-z]+)*\[.*\]|constrained-[a-z]+|str|int|float|bool|datetime|date|time|none"
)


def _one_per_union(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pydantic reports a value a union refuses once per member, each located under
    the member's internal name (``timestamp.datetime``, ``timestamp.float``, or a
    validator chain for ``genres``). A client wants each field named as it wrote it:
    the member names go; the members that got further than a type mismatch (an
    error deeper in the value, ``genres[1]``, or a validator's own message) are the
    ones reported, every error of theirs; where every member only mismatched the
    type, their messages are one line, joined with "or"."""

    def member(loc: tuple[Any, ...]) -> int | None:
        return next(
            (i for i, p in enumerate(loc) if isinstance(p, str) and _UNION_MEMBER.fullmatch(p)),
            None,
        )

    # a bare type name ("time") is a member only beside another member of its union:
    # alone it may be a key of the client's own, a user feature named "time"
    roots: dict[tuple[Any, ...], int] = {}
    for err in errors:
        loc = tuple(err.get("loc", ()))
        at = member(loc)
        if at is not None:
            roots[loc[:at]] = roots.get(loc[:at], 0) + 1
    out: list[dict[str, Any]] = []
    # union root -> member name -> (its errors, whether it got past the type)
    unions: dict[tuple[Any, ...], dict[str, list[dict[str, Any]]]] = {}
    further: set[tuple[tuple[Any, ...], str]] = set()
    for err in errors:
        loc = tuple(err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        tag = member(loc)
        if tag is not None and roots[loc[:tag]] == 1 and loc[tag].isidentifier():
            tag = None
        plain = {**err, "msg": msg, "loc": tuple(p for i, p in enumerate(loc) if i != tag)}
        if tag is None:
            out.append(plain)
            continue
        root, name = loc[:tag], loc[tag]
        if root not in unions:
            unions[root] = {}
            out.append({"_union": root})  # where the union's lines go
        unions[root].setdefault(name, []).append(plain)
        if len(loc) > tag + 1 or err.get("type") == "value_error":
            further.add((root, name))
    merged: list[dict[str, Any]] = []
    for err in out:
        if "_union" not in err:
            merged.append(err)
            continue
        root = err["_union"]
        members = unions[root]
        reached = [errs for name, errs in members.items() if (root, name) in further]
        if reached:
            merged.extend(e for errs in reached for e in errs)
            continue
        first = next(iter(members.values()))[0]
        msgs = list(dict.fromkeys(e["msg"] for errs in members.values() for e in errs))
        merged.append({**first, "loc": root, "msg": "; or ".join(msgs)})
    return merged


def unreadable_body(exc: StarletteHTTPException) -> str | None:
    """What FastAPI's "There was an error parsing the body" was, said: JSON's decoder
    reports bad syntax itself (a bad_json naming the character), but not bytes that are
    no UTF-8, nesting past Python's recursion limit, an integer past its 4,300 digits,
    or what :mod:`metarec.service.json_body` refuses (a repeated key, a lone surrogate)."""
    if exc.status_code != 400 or exc.detail != "There was an error parsing the body":
        return None
    cause = exc.__cause__
    if isinstance(cause, UnreadableJson):
        return str(cause)
    if isinstance(cause, UnicodeDecodeError):
        return (
            f"request body is not UTF-8 text (byte 0x{cause.object[cause.start]:02x} at "
            f"position {cause.start}); send JSON as UTF-8"
        )
    if isinstance(cause, RecursionError):
        return "request body is not JSON this API reads: it nests too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "request body holds a number too long to read (over 4,300 digits)"
    return "request body could not be read as JSON"


def field_path(loc: Any) -> str:
    """pydantic's location as a client writes it: ``events[0].item_id``."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path") and not out:  # where it came from goes
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _without_final_slash(request: Request) -> str | None:
    """The request's path less its final '/' where a route takes that path (``/docs/``:
    ``/docs``), else None. Redirecting there is left out on purpose: ``/v1/items/1/``
    is item "1/", and a redirect would answer for another id and re-send writes."""
    path = request.url.path
    if not path.endswith("/") or path == "/":
        return None
    scope = {**request.scope, "path": path.rstrip("/") or "/"}
    for route in request.app.routes:
        if isinstance(route, Route) and route.matches(scope)[0] != Match.NONE:
            return str(scope["path"])
    return None


def allowed_methods(request: Request) -> str:
    """Every method some route at the request's path takes, for a 405's ``Allow``.
    Starlette's names the first route whose path matched alone: ``/v1/items`` "took
    GET", where it takes PUT too."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match != Match.NONE:
                methods |= route.methods
    if "GET" in methods:  # every GET answers HEAD, which FastAPI lists only sometimes
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        last = request.url.path.rsplit("/", 1)[-1]
        status, code, message = describe_validation(list(exc.errors()), exc.body, last)
        return error_response(status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        unreadable = unreadable_body(exc)
        if unreadable is not None:
            return error_response(400, "bad_json", unreadable)
        code = _CODES.get(exc.status_code, f"http_{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and detail == "Not Found":  # no route: say which path
            path = request.url.path
            bare = _without_final_slash(request)
            hint = f"did you mean {cut(bare, 300)}?" if bare else "see /docs"
            detail = f"no endpoint at {cut(path, 300)} ({hint})"
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and headers.get("Allow"):  # say what the path takes
            headers["Allow"] = allowed_methods(request)
            detail = (
                f"{request.method} is not a method {cut(request.url.path, 300)} "
                f"takes; it takes {headers['Allow']}"
            )
        return error_response(exc.status_code, code, detail, **headers)

    @app.exception_handler(DBAPIError)
    async def _store_error(request: Request, exc: DBAPIError) -> JSONResponse:
        # SQLite's "database is locked": another process (a second service on the same
        # file, a sqlite3 shell) held the write lock past the wait. Nothing was stored;
        # the client may retry, and a 503 says so where a 500 would not
        # only a driver's own errors are read by their words: an integrity or data
        # error's text quotes the client's values, which may say "busy" or "locked"
        said = str(exc.orig).lower() if isinstance(exc, OperationalError) else ""
        if FILE_GONE in said:
            log.error("feedback store unusable on %s %s: %s", request.method, request.url.path,
                      exc.orig)  # fmt: skip
            return error_response(
                503, "store_unavailable", f"the feedback store is unusable: {FILE_GONE}; "
                "nothing was stored",
            )  # fmt: skip
        if unreachable(exc):  # PostgreSQL down, restarting or refusing: one line, not a trace
            log.error("feedback store unreachable on %s %s: %s", request.method,
                      request.url.path, " ".join(str(exc.orig).split())[:300])  # fmt: skip
            if getattr(exc, COMMIT_UNKNOWN, False):
                outcome = (
                    "the connection was lost as the write was committed, so it may have "
                    "been stored: retry (a repeated event is counted as a duplicate; a "
                    "user answered 409 user_exists was created)"
                )
            elif request.method in ("GET", "HEAD"):
                outcome = "retry"
            else:
                outcome = "nothing was stored, retry"
            return error_response(
                503,
                "store_unavailable",
                f"the feedback store cannot be reached; {outcome}",
                **{"Retry-After": "5"},
            )
        # PostgreSQL: a lock wait past its lock_timeout (the fold-in cut-off's), and a
        # deadlock (two users' batches inserting the same ids in opposite orders; one
        # user's batches are written in turn) or a serialisation failure, which roll the
        # transaction back whole: a retry will do
        if "locked" in said or "busy" in said or getattr(exc.orig, "sqlstate", "") in _RETRY_STATES:
            log.warning("feedback store busy on %s %s: %s", request.method, request.url.path,
                        exc.orig)  # fmt: skip
            return error_response(
                503,
                "store_busy",
                "the feedback store is locked by another writer; nothing was stored, retry",
                **{"Retry-After": "1"},
            )
        if getattr(exc.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE:  # outside the store's
            said = " ".join(str(exc.orig).split())  # own transactions, which name it already
            log.error("%s %s: %s", request.method, request.url.path, said)
            return error_response(
                500, "store_forbidden", f"the feedback store's role may not do this ({said})"
            )
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", INTERNAL)

"""The HTTP API (FastAPI): catalogue search, users, feedback events, recommendations.

Endpoints that touch torch or the database run in the thread pool
(:func:`in_thread_pool`), so the event loop never blocks on them; the
model is shared across threads behind :class:`~metarec.service.serving.ModelHolder`'s
locks. Unknown users posting events get 404 (no auto-create): a client
creates a user once with ``POST /v1/users`` and can tell a typo from a new user.
"""

import asyncio
import contextlib
import functools
import html
import logging
import math
import os
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Body, Depends, FastAPI, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from metarec.data.features import feature_readers
from metarec.errors import (
    BusyError,
    EncoderUnavailableError,
    MetarecError,
    UnknownItemError,
    UnsupportedError,
)
from metarec.explain import support_floor
from metarec.service import docs_pages, errors, schemas
from metarec.service.access import ApiKeyGuard, KeylessHostGuard
from metarec.service.early_sighup import EARLY_SIGHUP, STOP_ASKED
from metarec.service.errors import ApiError, cut, error_response
from metarec.service.feedback import event_rating, reads_negatives, star_values
from metarec.service.json_body import StrictJsonRoute
from metarec.service.metrics import Metrics
from metarec.service.middleware import (
    BodyLimit,
    HeadAsGet,
    JsonCORSMiddleware,
    RequestMetrics,
    SecurityHeaders,
    SingleHost,
    StrictTarget,
    Unexpected,
)
from metarec.service.protocol import MAX_CANDIDATES_CHARS
from metarec.service.reload_paths import check_reloadable, runs_root, warn_if_shared
from metarec.service.serving import ModelHolder, OutOfStepError, Served, ServedRef
from metarec.service.settings import ServiceSettings
from metarec.service.store import (
    FILE_GONE,
    ID_LENGTH,
    DamagedStoreError,
    EventConflictError,
    FeedbackStore,
    NewEvent,
    StoreForbiddenError,
    StoreUnwritableError,
    UnknownUserError,
    UserExistsError,
)
from metarec.values import off_scale

log = logging.getLogger("metarec.service")
T = TypeVar("T")

STATIC = Path(__file__).with_name("static")
PLACEHOLDER_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>metarec</title></head><body><h1>metarec</h1>
<p>The API is running; see <a href="docs">the API docs</a>.</p></body></html>
"""
_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="the service's key")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of the service's one error body for these status codes."""
    return {code: {"model": schemas.ErrorBody} for code in codes}


# what a write can answer beyond any route's: no key or a wrong one (401), a write from
# another host to a server without a key (403), a body too large (413) or not JSON
# (415), a store another process holds past the wait (503, with Retry-After)
WRITE_ERRORS = _errors(401, 403, 413, 415, 503)


def _page(settings: ServiceSettings) -> str:
    path = STATIC / "index.html"
    page = path.read_text(encoding="utf-8") if path.exists() else PLACEHOLDER_PAGE
    page = page.replace(
        '<meta name="metarec-search-limit" content="100">',
        f'<meta name="metarec-search-limit" content="{int(settings.max_search_results)}">',
    )
    if settings.page_api_key and settings.api_key:
        page = page.replace(
            '<meta name="metarec-api-key" content="">',
            f'<meta name="metarec-api-key" content="{html.escape(settings.api_key, quote=True)}">',
        )
    return page


def features_problem(rec: Any, features: dict[str, Any]) -> str | None:
    """What the model cannot read in a user's ``features`` (None: nothing): a key no
    member reads, or a value a member that reads it cannot (:class:`FeatureReaders`)."""
    return feature_readers(rec).problem(features)


def in_thread_pool(endpoint: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """A blocking endpoint (torch, the database) run in the thread pool as FastAPI runs a
    plain ``def``, but declared async so that its small response is validated on the
    event loop: for a ``def`` endpoint FastAPI makes a second trip to the pool for that,
    which under load costs a queue wait and a thread switch per request. FastAPI reads
    the parameters from the wrapped function's signature."""

    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(endpoint, *args, **kwargs)

    return run


def query_guard() -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing query parameters the API route does not take: a typo
    (``candidate=``, ``exclude-seen=``) was ignored, and the answer looked like the one
    asked for. Only under /v1/: monitors may add their own parameters to /ready and
    /health. One per app: it keeps each route's names, found once, not per request."""
    names_by_route: dict[int, frozenset[str]] = {}  # routes live as long as the app

    async def known_query(request: Request) -> None:  # async: no thread hop of its own
        if not request.url.path.startswith("/v1/") or not request.query_params:
            return
        route = request.scope.get("route")
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            return
        taken = names_by_route.get(id(route))
        if taken is None:
            names: set[str] = set()
            pending = [dependant]
            while pending:  # the route's own parameters and its dependencies'
                d = pending.pop()
                names.update(p.alias for p in d.query_params)
                pending.extend(d.dependencies)
            taken = names_by_route[id(route)] = frozenset(names)
        unknown = sorted(set(request.query_params) - taken)
        if unknown:
            expected = ", ".join(sorted(taken)) if taken else "none"
            raise ApiError(
                422,
                "validation_error",
                f"unknown query parameter(s) {unknown} (this endpoint takes: {expected})",
            )

    return known_query


def create_app(settings: ServiceSettings) -> FastAPI:
    """Load the run, open the store (creating/migrating its schema), build the app."""
    from metarec.ensemble_run import load_run

    metrics = Metrics()
    given = Path(settings.run).absolute()
    # resolved once: a link moved while this loads is followed by the next SIGHUP
    folder = given.resolve()
    if settings.follow_store:
        # a worker started after the first (or in place of one that died): it serves
        # what its siblings serve, which a reload may have moved since the start
        store = FeedbackStore(settings.db_url)
        ref = ServedRef.parse(store.served_state()[1])
        if ref is not None:
            given, folder = Path(ref.run), Path(ref.folder)
        run = load_run(folder, device=settings.device)
    else:
        # the run first: one that does not load must not leave a new, empty database behind
        run = load_run(folder, device=settings.device)
        store = FeedbackStore(settings.db_url)
    holder = ModelHolder(
        store, metrics, settings.cache_size, settings.device, freeze_heap=settings.freeze_heap
    )
    # a server started on another run than the store records (a reload in an earlier
    # life, or by another server on the store) makes its run the one served
    holder.load(
        given,
        loaded=run,
        folder=folder,
        announce="never" if settings.follow_store else "if_moved",
    )
    warn_if_shared(runs_root(settings))
    if settings.api_key is None and settings.warn_no_api_key:
        log.warning(
            "NO API KEY CONFIGURED: writes and users' data accept loopback clients only, and "
            "every request must name the server by IP address, localhost or an allowed host "
            "(set --api-key or METAREC_API_KEY)"
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.install_sighup and threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _reload_in_background)
            if EARLY_SIGHUP.is_set():  # one came while the run loaded: re-read it now
                EARLY_SIGHUP.clear()
                _reload_in_background()
            if STOP_ASKED.is_set():
                # asked to stop before uvicorn's handlers were in place, its raise
                # dropped: sent again, to them, it shuts the server down gracefully
                signal.raise_signal(signal.SIGTERM)
        yield
        store.close()

    def _reload_in_background() -> None:
        def work() -> None:
            try:
                # from what the store records (another process may have reloaded), and
                # a link moved to another folder: every process on the store follows
                holder.sync(wait=True)
                current = holder.current
                # replacing: an admin reload that lands during this load has read the run
                # and store afresh; swapping after it served, and published, the old run
                served = holder.load(current.run, announce="if_moved", replacing=current)
                if served is not current:
                    metrics.count_reload()
                log.info("SIGHUP: now serving %s", served.name)
            except MetarecError as exc:  # a run moved or refused: said in a line
                log.error("SIGHUP reload failed; still serving the previous model: %s", exc)
            except Exception:
                log.exception("SIGHUP reload failed; still serving the previous model")

        threading.Thread(target=work, name="metarec-reload", daemon=True).start()

    app = FastAPI(
        # "/v1/items/1/" (or "1%2F") is not item "1": a 307 to it answered for another
        # id, re-sent writes, and took its Location from the client's Host header
        redirect_slashes=False,
        dependencies=[Depends(query_guard())],
        title="metarec",
        # served below, pinned with integrity hashes (service/docs_pages.py)
        docs_url=None,
        redoc_url=None,
        summary="Cold-start recommendations that adapt to every piece of feedback.",
        version="1",
        lifespan=lifespan,
        # what any route can answer (500: a damaged store, or a fault of the server's),
        # the refusals before routing among them: a head too large or too slow (431,
        # 408), a keyless server named by another Host (403), a body too large or not
        # JSON (413, 415; a GET's too); the writes add WRITE_ERRORS, routes their own
        responses=_errors(400, 403, 405, 408, 413, 414, 415, 422, 431, 500),
    )
    app.router.route_class = StrictJsonRoute  # set before the routes are added, which take it
    app.state.settings = settings
    app.state.body_caps = {route: (field, limit) for route, _, field, limit in _list_caps(settings)}
    app.state.holder = holder
    app.state.store = store
    app.state.metrics = metrics
    errors.install(app)

    @app.exception_handler(MetarecError)
    async def _metarec_error(request: Request, exc: MetarecError) -> JSONResponse:
        if isinstance(exc, OutOfStepError):  # waits for the store: a retry will do
            return error_response(503, "store_unavailable", str(exc), **{"Retry-After": "5"})
        if isinstance(exc, StoreUnwritableError):  # the operator's to fix: one line, no trace
            log.error("%s %s: %s", request.method, request.url.path, exc)
            return error_response(503, "store_unavailable", str(exc), **{"Retry-After": "30"})
        if isinstance(exc, DamagedStoreError | StoreForbiddenError | EncoderUnavailableError):
            # the server's to fix, not the client's: a 5xx, logged
            log.error("%s %s: %s", request.method, request.url.path, exc)
            code = "store_damaged" if isinstance(exc, DamagedStoreError) else "store_forbidden"
            if isinstance(exc, EncoderUnavailableError):
                code = "encoder_unavailable"
            return error_response(500, code, str(exc))
        code = "unknown_item" if isinstance(exc, UnknownItemError) else "invalid"
        if isinstance(exc, UnsupportedError):  # e.g. an ensemble member that cannot add items
            code = "unsupported"
        return error_response(422, code, str(exc))

    # outermost last: metrics see everything, CORS answers preflights, then size, then
    # one Host, then Host (a keyless server's), then key, then the request target; innermost, HEAD
    # reaches the routes as GET
    app.add_middleware(HeadAsGet)
    app.add_middleware(StrictTarget, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        ApiKeyGuard,
        api_key=settings.api_key,
        max_body_bytes=settings.max_body_bytes,
        allowed_origins=settings.cors_origins,
        allowed_hosts=settings.allowed_hosts,
    )
    if settings.checks_host:
        app.add_middleware(
            KeylessHostGuard,
            allowed_hosts=settings.allowed_hosts,
            max_body_bytes=settings.max_body_bytes,
        )
    app.add_middleware(SingleHost, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Unexpected)  # inside CORS and metrics: a 500 is seen by both
    # without --cors too (no origin allowed), so a preflight is refused as cors_refused,
    # as the README says, rather than as a 405 of OPTIONS
    app.add_middleware(
        JsonCORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PUT", "DELETE"],  # DELETE: erasing a user
        allow_headers=["Content-Type", "X-API-Key"],
        # a 503's wait, which browser code cannot read unless exposed
        expose_headers=["Retry-After"] if settings.cors_origins else [],
    )
    app.add_middleware(SecurityHeaders)  # on every answer, refusals and preflights too
    app.add_middleware(RequestMetrics, metrics=metrics)

    page = _page(settings)
    keyed = [Security(_KEY_HEADER)]  # for the docs' "Authorize" button; ApiKeyGuard enforces
    # no control characters, as in a new id: PostgreSQL cannot hold a NUL in text, and
    # a user id with one was a 500 "store damaged" there (404 on SQLite)
    UserId = Annotated[
        str,
        PathParam(min_length=1, max_length=ID_LENGTH),
        AfterValidator(lambda v: schemas.no_control(v, allowed="")),
    ]

    def served(*, wait: bool = False) -> Served:
        """The model to answer with, after catching up with what another server process
        on the store changed; ``wait``: for requests that name an item this process
        lacks (:func:`any_unknown`), which must see one just added through another
        process, waiting 5 s at most (then a 503)."""
        holder.sync(wait=wait, bounded=True)
        return holder.current

    def any_unknown(item_ids: Iterable[str]) -> bool:
        """Whether this process's model lacks one of ``item_ids``: only then is an item
        added through another process waited for (a catch-up); one it knows is answered
        at once, where every such request waited for a catch-up, and with it for a
        change of this process's own being stored (a PUT on a slow store)."""
        index = holder.current.rec.item_index
        return any(i not in index for i in item_ids)

    def known_item(s: Served, item_id: str, where: str) -> int:
        idx = s.rec.item_index.get(item_id)
        if idx is None:
            raise ApiError(422, "unknown_item", f"{where}: unknown item {item_id!r}")
        return idx

    def check_rating(s: Served, value: float | None, where: str) -> None:
        lo, hi = s.rec.rating_range
        # compared in float32, as ratings are held: a scale read from 0.1-1.0 data
        # refused its own 0.1
        if value is None or not math.isfinite(value) or off_scale(value, lo, hi):
            raise ApiError(
                422,
                "validation_error",
                f"{where}: rating {value!r} is outside the model's rating range [{lo:g}, {hi:g}]",
            )

    def unknown_user(user_id: str) -> ApiError:
        return ApiError(404, "unknown_user", f"unknown user {user_id!r}; create it first")

    def user_or_404(user_id: str) -> Any:
        user = store.user(user_id)
        if user is None:
            raise unknown_user(user_id)
        return user

    # -- operations -----------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    swagger = docs_pages.swagger_page(app.title, app.openapi_url or "")  # made once
    redoc = docs_pages.redoc_page(app.title, app.openapi_url or "")

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def swagger_docs() -> HTMLResponse:
        return HTMLResponse(swagger)

    @app.get("/redoc", response_class=HTMLResponse, include_in_schema=False)
    async def redoc_docs() -> HTMLResponse:
        return HTMLResponse(redoc)

    @app.get("/health", response_model=schemas.Health, tags=["operations"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["operations"],
        responses={200: {"model": schemas.Ready}, **_errors(503)},
    )
    def ready() -> JSONResponse:
        if not holder.ready:
            return error_response(503, "not_ready", "no model loaded")
        try:
            store.ping()
        except Exception as exc:
            # the driver's words in a line: SQLAlchemy's own add "[SQL: ping]" and a
            # "Background on this error" link, three lines a probe
            said = " ".join(str(getattr(exc, "orig", None) or exc).split())
            log.warning("readiness: database unreachable: %s", said)
            # a deleted SQLite file is the operator's to put back, not a network fault to
            # wait out: writes already said so, and the probe said only "unreachable"
            why = f": {FILE_GONE}" if FILE_GONE in str(exc) else ""
            return error_response(503, "not_ready", f"database unreachable{why}")
        s = served()
        lo, hi = s.rec.rating_range
        return JSONResponse(
            {
                "status": "ready",
                "model": s.name,
                "rating_range": [lo, hi],
                "stars": star_values(s.rec),  # what the page's stars post
                # from which rating the model's support counts an item as liked: where a
                # page's two stars (no, yes) split a rating that is neither
                "like_threshold": support_floor(s.rec),
            }
        )

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    async def prometheus() -> PlainTextResponse:
        text = metrics.render(
            {
                "metarec_adaptation_cache_size": (
                    "Adapted users held in memory",
                    lambda: len(holder.cache),
                ),
                "metarec_model_generation": (
                    "Models loaded since start",
                    lambda: holder.current.generation,
                ),
                "metarec_catalogue_items": (
                    "Items the served model can recommend",
                    lambda: holder.current.rec.n_items,
                ),
                "metarec_process_id": (
                    "The server process that answered (with --workers N each process keeps "
                    "its own counts, and a scrape reaches one of them)",
                    os.getpid,
                ),
            }
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- catalogue ------------------------------------------------------------
    # 503: a catalogue change another process made that this one cannot read yet
    @app.get("/v1/items", response_model=schemas.ItemList, tags=["items"], responses=_errors(503))
    @in_thread_pool
    def search_items(
        q: Annotated[str, Query(max_length=200, description="part of a title")] = "",
        limit: Annotated[int, Query(ge=1, le=settings.max_search_results)] = 20,
    ) -> dict[str, Any]:
        """Titles containing ``q`` (ignoring case and accents), most rated first; empty
        ``q``: most rated."""
        try:
            # a NUL or an escape is in no title (a title's control characters are
            # searched as spaces): "q=%00" listed every title with a space in it
            schemas.no_control(q, allowed="\t")
        except ValueError as exc:
            raise ApiError(422, "validation_error", f"q: {exc} (got {cut(q)})") from None
        return {"items": served().search(q, limit)}

    # ":path": a catalogue's own ids may hold "/" ("news/2026/17"; ids added through
    # the API may not), sent as "%2F" or plain; "1/" is then item "1/", not "1"
    @app.get(
        "/v1/items/{item_id:path}",
        response_model=schemas.ItemDetail,
        tags=["items"],
        responses=_errors(404, 503),
    )
    @in_thread_pool
    def get_item(item_id: Annotated[str, PathParam(min_length=1, max_length=ID_LENGTH)]) -> Any:
        s = served(wait=any_unknown([item_id]))
        with s.lock.read():  # an item being added is in the index before its title
            idx = s.rec.item_index.get(item_id)
            if idx is None:
                raise ApiError(404, "unknown_item", f"unknown item {item_id!r}")
            return {
                "item_id": item_id,
                "title": s.titles[idx],
                "text": str(s.rec.items["text"].iat[idx]),
                "n_ratings": int(s.rec.popularity[idx]),
            }

    @app.put(
        "/v1/items",
        response_model=schemas.ItemsOut,
        tags=["items"],
        dependencies=keyed,
        responses=WRITE_ERRORS,
    )
    @in_thread_pool
    def put_items(body: schemas.ItemsIn) -> dict[str, int]:
        """Add items (or re-encode existing ids); recommendable as soon as this returns."""
        ids = [it.item_id for it in body.items]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ApiError(422, "validation_error", f"items: item_id repeated: {repeated[:5]}")
        rows = [it.model_dump() for it in body.items]
        for row in rows:
            if isinstance(row["genres"], list):
                row["genres"] = "|".join(row["genres"])  # stored as MovieLens writes genres
        added, updated, same = holder.upsert_items(rows)
        return {
            "added": added,
            "updated": updated,
            "unchanged": same,
            "n_items": holder.current.rec.n_items,
        }

    # -- users ----------------------------------------------------------------
    @app.post(
        "/v1/users",
        status_code=201,
        response_model=schemas.UserCreated,
        tags=["users"],
        dependencies=keyed,
        responses=WRITE_ERRORS | _errors(409),
    )
    @in_thread_pool
    def create_user(body: schemas.UserIn) -> dict[str, Any]:
        s = served(wait=any_unknown(r.item_id for r in body.ratings))
        unreadable = features_problem(s.rec, body.features)
        if unreadable is not None:
            raise ApiError(422, "validation_error", f"features.{unreadable}")
        initial = []
        # the items read and the ratings stored under one lock: an item being added is
        # named only once the store has it (see storing_item_names)
        naming = (
            holder.storing_item_names(r.item_id for r in body.ratings)
            if body.ratings
            else contextlib.nullcontext(s)
        )
        with naming as now:
            for n, r in enumerate(body.ratings):
                known_item(now, r.item_id, f"ratings[{n}].item_id")
                check_rating(now, r.rating, f"ratings[{n}].rating")
                event_id = f"{schemas.INITIAL_EVENT_PREFIX}{uuid.uuid4().hex}"
                initial.append(NewEvent(event_id, r.item_id, "rating", r.rating))
            try:
                n_events = store.create_user(body.user_id, body.features, initial)
            except UserExistsError:
                raise ApiError(
                    409, "user_exists", f"user {body.user_id!r} already exists"
                ) from None
        metrics.count_events(n_events, 0)
        return {"user_id": body.user_id, "n_events": n_events}

    @app.get(
        "/v1/users/{user_id}",
        response_model=schemas.UserOut,
        tags=["users"],
        responses=_errors(401, 403, 404, 503),
        dependencies=keyed,  # a user's data is read under the writes' rule
    )
    @in_thread_pool
    def get_user(user_id: UserId) -> dict[str, Any]:
        user = user_or_404(user_id)
        s = served()
        lo_hi = s.rec.rating_range
        negatives = reads_negatives(s.rec)
        events = list(store.events_for(user_id, limit=settings.max_history_returned))
        with s.lock.read():  # an item being added is in the index before its title
            titles = [
                None if (idx := s.rec.item_index.get(ev.item_id)) is None else s.titles[idx]
                for ev in events
            ]

        def _on_scale(rating: float | None) -> float | None:
            # as adaptation reads it (serving clips a stored rating off this run's scale,
            # from a store written for another run): the field says what adaptation used
            return None if rating is None else min(max(rating, lo_hi[0]), lo_hi[1])

        history = [
            {
                "event_id": ev.event_id,
                "item_id": ev.item_id,
                "title": title,
                "type": ev.type,
                "value": ev.value,
                "rating": _on_scale(event_rating(ev.type, ev.value, lo_hi, negatives=negatives)),
                "timestamp": ev.timestamp,
            }
            for ev, title in zip(events, titles, strict=True)
        ]
        return {
            "user_id": user_id,
            "features": user.features,
            "n_events": user.n_events,
            "history": history,
        }

    @app.delete(
        "/v1/users/{user_id}",
        response_model=schemas.UserErased,
        tags=["users"],
        dependencies=keyed,
        responses=WRITE_ERRORS | _errors(404),
    )
    @in_thread_pool
    def erase_user(user_id: UserId) -> dict[str, Any]:
        """Erase a user and every event of theirs from the store (a request to be
        forgotten). Runs trained on them keep what training learned; a fold-in that
        learned from their ratings is redone, in every server process."""
        erased = holder.forget_user(user_id)
        if erased is None:
            raise unknown_user(user_id)
        summary, fold_in = erased
        return {"user_id": user_id, "events_erased": summary.events, "fold_in": fold_in}

    @app.post(
        "/v1/users/{user_id}/events",
        response_model=schemas.EventsOut,
        tags=["users"],
        dependencies=keyed,
        responses=WRITE_ERRORS | _errors(404, 409),
        # one event object is taken as well as {"events": [...]} (schemas.EventsIn)
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"$ref": "#/components/schemas/EventsIn"},
                                {"$ref": "#/components/schemas/EventIn"},
                            ]
                        }
                    }
                },
            }
        },
    )
    @in_thread_pool
    def post_events(
        user_id: UserId,
        body: Annotated[
            schemas.EventsIn,
            Body(description='one event, or {"events": [...]}; retried event_ids count once'),
        ],
    ) -> dict[str, int]:
        # may read the store afresh: not under the lock below
        holder.sync(wait=any_unknown(ev.item_id for ev in body.events), bounded=True)
        batch = []
        # the items read and the events stored under one lock: an item being added is
        # named only once the store has it (see storing_item_names)
        with holder.storing_item_names(ev.item_id for ev in body.events) as s:
            try:
                for n, ev in enumerate(body.events):
                    known_item(s, ev.item_id, f"{body.where(n)}item_id")
                    if ev.type == "rating":
                        check_rating(s, ev.value, f"{body.where(n)}value")
                    elif ev.value is not None and not math.isfinite(ev.value):
                        raise ApiError(
                            422, "validation_error", f"{body.where(n)}value: must be finite"
                        )
                    batch.append(NewEvent(ev.event_id, ev.item_id, ev.type, ev.value, ev.epoch()))
            except ApiError:
                # the resource before its fields: a 404 for an unknown user, not an item's
                # 422; looked up only here, as storing the events finds the user anyway
                user_or_404(user_id)
                raise
            try:
                accepted, duplicates = store.add_events(user_id, batch)
            except UnknownUserError:
                raise unknown_user(user_id) from None
            except EventConflictError as exc:  # nothing of the request was stored
                raise ApiError(409, "event_conflict", str(exc)) from None
        metrics.count_events(accepted, duplicates)
        if accepted:
            holder.cache.invalidate(user_id)
        return {"accepted": accepted, "duplicates": duplicates}

    @app.get(
        "/v1/users/{user_id}/recommendations",
        response_model=schemas.Recommendations,
        tags=["users"],
        responses=_errors(401, 403, 404, 503),
        dependencies=keyed,
    )
    @in_thread_pool
    def recommendations(
        user_id: UserId,
        k: Annotated[int, Query(ge=1, le=settings.max_k)] = 10,
        exclude_seen: bool = True,
        candidates: Annotated[
            str | None,
            Query(max_length=MAX_CANDIDATES_CHARS, description="comma-separated item ids"),
        ] = None,
        reasons: Annotated[
            bool,
            Query(
                description="false: no reason per item (null), which saves checking each "
                "named rating by adapting the user again without it (24 ms a list for a "
                "softmax run on ml-100k)"
            ),
        ] = True,
    ) -> dict[str, Any]:
        named = [] if candidates is None else [c.strip() for c in candidates.split(",")]
        s = served(wait=any_unknown(c for c in named if c))
        user = user_or_404(user_id)  # the resource first: a 404 before a field's 422
        pool = None
        if candidates is not None:
            pool = [c for c in named if c]
            if not pool:
                raise ApiError(422, "validation_error", "candidates: no item ids given")
            for c in pool:
                known_item(s, c, "candidates")
        items = holder.recommend(
            s, user, k, exclude_seen=exclude_seen, candidates=pool, reasons=reasons
        )
        return {"user_id": user_id, "model": s.name, "n_events": user.n_events, "items": items}

    # -- admin ----------------------------------------------------------------
    @app.post(
        "/v1/admin/reload",
        response_model=schemas.ReloadOut,
        tags=["admin"],
        dependencies=keyed,
        responses=WRITE_ERRORS,
    )
    @in_thread_pool
    def reload(body: schemas.ReloadIn | None = None) -> dict[str, Any]:
        """Swap to another run (or re-read the current one) without downtime."""
        if body is None or not body.run:
            holder.sync(wait=True)  # "the current run": what the store records now
        run = body.run if body is not None and body.run else str(holder.current.run)
        if "\x00" in run:
            raise ApiError(422, "invalid_run", "run: a path cannot contain a NUL character")
        # a reload without a path re-reads the one the store records, which a reload
        # with one set: checked alike, as a link it went through may have moved
        check_reloadable(run, runs_root(settings), Path(settings.run))
        try:
            s = holder.reload(run)
        except (DamagedStoreError, StoreForbiddenError):  # the store's fault, not the run's
            raise
        except MetarecError as exc:
            raise ApiError(422, "invalid_run", f"run: {exc}") from None
        except OSError as exc:  # a path the system refuses, e.g. a name too long
            raise ApiError(422, "invalid_run", f"run: {cut(run, 200)}: {exc.strerror}") from None
        metrics.count_reload()
        return {"model": s.name, "n_items": s.rec.n_items}

    @app.post(
        "/v1/admin/fold-in",
        response_model=schemas.FoldInOut,
        tags=["admin"],
        dependencies=keyed,
        responses=WRITE_ERRORS | _errors(409),
    )
    @in_thread_pool
    def fold_in(
        body: Annotated[schemas.NoFields | None, Body(description="none, or {}")] = None,
    ) -> dict[str, Any]:
        """Learn items the model never trained on from their ratings so far, without
        retraining: each gets its shrunk mean residual as an item bias (see
        `Recommender.fold_in_items`). A load or reload does the same, from the feedback up
        to the last fold-in."""
        try:
            return holder.fold_in()
        except BusyError as exc:
            raise ApiError(409, "state_changed", str(exc)) from None

    app.openapi = _described_as_served(app, settings)  # type: ignore[method-assign]
    return app


def _list_caps(settings: ServiceSettings) -> tuple[tuple[tuple[str, str], str, str, int], ...]:
    """Each capped list of a request body: its route, its schema model, its field and its
    limit. Refused by size (413) before validation (:class:`~metarec.service.json_body.
    StrictJsonRoute`), and stated as ``maxItems`` in the OpenAPI document."""
    return (
        (("POST", "/v1/users/{user_id}/events"), "EventsIn", "events",
         settings.max_events_per_batch),
        (("POST", "/v1/users"), "UserIn", "ratings", settings.max_events_per_batch),
        (("PUT", "/v1/items"), "ItemsIn", "items", settings.max_items_per_request),
    )  # fmt: skip


# the headers an error answer carries, which FastAPI's responses cannot state
_HEADERS: dict[str, dict[str, Any]] = {
    "405": {"Allow": {"description": "the methods the path answers", "schema": {"type": "string"}}},
    "503": {
        "Retry-After": {
            "description": "seconds to wait before trying again, where a retry will do "
            "(store_busy 1; store_unavailable 5 while the database is unreachable or a "
            "change is being caught up with; absent where a retry will not do, such as a "
            "SQLite file removed while serving)",
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}


def _described_as_served(app: FastAPI, settings: ServiceSettings) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with the document mended where FastAPI's generation says other
    than the server does. FastAPI merges ``openapi_extra`` into what it generated, so
    the events body kept its ``$ref`` to EventsIn beside the ``anyOf``: in OpenAPI 3.1
    both hold, and a client validating against it refused the one-event body. Errors
    are JSON on every route, /metrics' text/plain included. The batch limits are the
    server's settings, answered with 413 rather than pydantic's 422, so they are
    stated here rather than enforced by the models."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        events = doc["paths"]["/v1/users/{user_id}/events"]["post"]["requestBody"]
        events["content"]["application/json"]["schema"].pop("$ref", None)
        for operations in doc["paths"].values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if status[0] in "45" and "application/json" not in content and content:
                        response["content"] = {"application/json": content.popitem()[1]}
                    if status in _HEADERS:
                        response["headers"] = dict(_HEADERS[status])
        models = doc["components"]["schemas"]
        for _, model, field, limit in _list_caps(settings):
            models[model]["properties"][field]["maxItems"] = limit
        return doc

    return openapi

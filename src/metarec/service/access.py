"""Who may reach the API: the key every write needs, the loopback rule of a server
without one, and the ``Host`` a loopback client must name to that server.

Pure ASGI, checked before routing and before a body is parsed as JSON.
"""

from __future__ import annotations

import hmac
import ipaddress
import urllib.parse

from starlette.types import ASGIApp, Receive, Scope, Send

from metarec.service.errors import cut
from metarec.service.middleware import refuse

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# users' own data (features, histories, and the lists that reveal their tastes): read
# under the writes' rule, where a keyed server had it open to whoever reached its port
USERS_PATH = "/v1/users"


def guarded(method: str, path: str) -> bool:
    """Whether a request needs the key (or, without one, a loopback client): every write
    under /v1/, and every request for users' data."""
    users = path == USERS_PATH or path.startswith(USERS_PATH + "/")
    return users or (method in WRITE_METHODS and path.startswith("/v1/"))


def is_loopback(host: str | None) -> bool:
    try:
        addr = ipaddress.ip_address(host) if host is not None else None
    except ValueError:
        return host == "localhost"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        # a dual-stack socket (--host ::) shows 127.0.0.1 as ::ffff:127.0.0.1, which
        # Python before 3.13 does not call loopback: its writes were refused
        addr = addr.ipv4_mapped
    return addr is not None and addr.is_loopback


class ApiKeyGuard:
    """Write requests under /v1/, and every request for users' data (:func:`guarded`),
    need ``X-API-Key``; checked before routing and before the body is parsed, so a
    client without the key learns nothing about which write routes exist (an unknown
    path or a wrong method is 401, not 404 or 405), which users exist, or how bodies are
    validated (the body is read and dropped: answering while it is still arriving would
    reset the connection and lose the 401). With no key configured, only loopback
    clients may make them.

    ``max_body_bytes``: the body limit's, which :class:`BodyLimit` (outside this guard)
    has already enforced, so the body read and dropped is never longer."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        max_body_bytes: int,
        allowed_origins: tuple[str, ...] = (),
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.allowed_origins = allowed_origins
        self.allowed_hosts = frozenset(h.lower().rstrip(".") for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and guarded(scope["method"], scope["path"]):
            denied = self._check(scope)
            if denied is not None:
                await refuse(scope, receive, send, *denied, budget=self.max_body_bytes)
                return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> tuple[int, str, str] | None:
        if self.key is None:
            client = scope.get("client")
            if is_loopback(client[0] if client else None):
                return self._cross_origin(scope)
            return (
                403,
                "forbidden",
                "no API key is configured on this server, so it accepts writes, and "
                "reads of users' data, from loopback clients only; start it with "
                "--api-key or METAREC_API_KEY",
            )
        keys = [value for name, value in scope.get("headers", ()) if name == b"x-api-key"]
        if not keys:
            return 401, "missing_api_key", "this endpoint needs the X-API-Key header"
        if len(keys) > 1:  # which one a proxy or the framework would read is anyone's guess
            return 400, "bad_request", f"X-API-Key given {len(keys)} times; give it once"
        given = keys[0]
        if not hmac.compare_digest(given, self.key):
            return 401, "invalid_api_key", "the X-API-Key header does not match the server's key"
        return None

    def _cross_origin(self, scope: Scope) -> tuple[int, str, str] | None:
        """A keyless server's loopback write, or read of a user's data, sent by a page of
        another origin (a site the user has open, whose script posts to 127.0.0.1):
        refused, unless --cors lists that origin. Such a request comes from the browser
        on this host, so the loopback rule let any site reload the model or fold
        feedback in."""
        headers = dict(scope.get("headers", ()))
        origin = headers.get(b"origin", b"").decode("latin-1")
        if not origin:
            return None  # not a browser's cross-origin request (curl, a script)
        if origin in self.allowed_origins or "*" in self.allowed_origins:
            return None
        host = headers.get(b"host", b"").decode("latin-1")
        if origin != "null" and _same_origin(origin, host, self.allowed_hosts):
            return None
        kind = "write" if scope["method"] in WRITE_METHODS else "read of a user's data"
        return (
            403,
            "forbidden",
            f"a {kind} from a page of another origin ({cut(origin)}) to a server without "
            "an API key; start it with --api-key, or list the origin with --cors",
        )


def _same_origin(origin: str, host: str, allowed_hosts: frozenset[str]) -> bool:
    """Whether a browser's ``Origin`` is this server as the request reached it (its
    ``Host``, the default port written or left out alike), under a name a keyless
    server answers to (:func:`keyless_name`): a rebound DNS name, whose page sets both
    alike, is not. A page opened as demo.localhost or under an --allowed-host name
    could read but not rate while only loopback names counted here."""
    try:
        o = urllib.parse.urlsplit(origin)
        h = urllib.parse.urlsplit(f"{o.scheme}://{host}")
        default = {"http": 80, "https": 443}.get(o.scheme)
        same = (o.hostname or "").rstrip(".") == (h.hostname or "").rstrip(".") and (
            o.port or default
        ) == (h.port or default)
    except ValueError:  # a port past 65535, a bracket unclosed
        return False
    name = host_name(host)
    return same and name is not None and keyless_name(name, allowed_hosts)


def keyless_name(name: str, allowed_hosts: frozenset[str]) -> bool:
    """Whether a server without a key answers to ``name`` (as :func:`host_name` gives
    it): an IP address, ``localhost`` or a name under ``.localhost`` (which browsers
    keep on loopback), or one of ``allowed_hosts``: names a site cannot rebind."""
    if name in allowed_hosts or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class KeylessHostGuard:
    """A server without an API key answers a request only when its ``Host`` is an IP
    address, ``localhost`` (or a name under ``.localhost``, which browsers keep on
    loopback) or one of ``allowed_hosts``, whoever the client is.

    Why: a page of any site, open in a browser that can reach this server (on this
    host, or on its network), can rebind its own DNS name to the server's address and
    then read the API as its own origin, every user's history included, which neither
    the loopback rule nor CORS stops (the browser sees no cross-origin request). Its
    requests still name the site in ``Host``, and an IP address cannot be rebound.
    Judged for every client, not only loopback ones: uvicorn takes a loopback client's
    ``X-Forwarded-For`` as its address, which such a page can set. A server with a key
    takes no part (it is meant to be reached: its catalogue reads are open to whoever
    reaches it, and a user's data needs its key) unless its page carries the key
    (``--page-api-key``): a rebinding site read the key off the page, then wrote as it
    pleased."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...], max_body_bytes: int) -> None:
        self.app = app
        self.allowed_hosts = frozenset(h.lower().rstrip(".") for h in allowed_hosts)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = self._refused_host(scope)
            if host is not None:
                message = (
                    f"Host {cut(host)}: a server without an API key, or one that hands its "
                    "key to its page (--page-api-key), answers only when it is reached by "
                    "IP address or as localhost (a site's page can point its own name at "
                    "the server's address and read the API, or the key); list the name "
                    "with --allowed-host"
                )
                await refuse(
                    scope, receive, send, 403, "forbidden", message, budget=self.max_body_bytes
                )
                return
        await self.app(scope, receive, send)

    def _refused_host(self, scope: Scope) -> str | None:
        given = [value for name, value in scope.get("headers", ()) if name == b"host"]
        if not given:
            return None  # HTTP/1.0 without Host: no browser sends that
        host = given[0].decode("latin-1")
        name = host_name(host)
        return None if name is not None and keyless_name(name, self.allowed_hosts) else host


def host_name(host: str) -> str | None:
    """The lower-cased name or address in a ``Host`` value (``[::1]:8000`` gives ``::1``),
    without a trailing dot; None where it cannot be read as a host and port."""
    try:
        parts = urllib.parse.urlsplit(f"http://{host}")
        parts.port  # noqa: B018 -- raises on a port that is not a number or past 65535
    except ValueError:
        return None
    if parts.hostname is None or parts.username is not None or parts.path or parts.query:
        return None
    return parts.hostname.rstrip(".")

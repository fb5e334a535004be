"""Service settings: one frozen object built by the CLI (or a test) and read everywhere.

Request limits live here so every endpoint enforces the same numbers; the
length limits of ids (128) and texts are part of the schema
(:mod:`metarec.service.schemas`, matching the database columns).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from metarec.device import resolve_device
from metarec.errors import ConfigError
from metarec.values import is_whole

DEFAULT_DB_FILE = "metarec-feedback.db"
API_KEY_ENV = "METAREC_API_KEY"
ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.\-]+(?::\d{1,5})?|https?://\[[0-9A-Fa-f:]+\](?::\d{1,5})?",
    re.IGNORECASE,  # a browser sends "http", and this is made so (browser_origin)
)


def default_db_url(cwd: str | Path | None = None) -> str:
    """SQLite file in the working directory (not in the run folder, so that serving a
    retrained run from the same place keeps every user and event)."""
    return f"sqlite:///{(Path(cwd or Path.cwd()) / DEFAULT_DB_FILE).resolve()}"


@dataclass(frozen=True)
class ServiceSettings:
    run: Path
    db_url: str = field(default_factory=default_db_url)
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    # Host names (beyond IP addresses and localhost) under which a server without an API
    # key answers: see access.KeylessHostGuard.
    allowed_hosts: tuple[str, ...] = ()
    # Put the API key into the page's <meta name="metarec-api-key"> (demos on a trusted network).
    page_api_key: bool = False
    max_body_bytes: int = 1_000_000
    max_events_per_batch: int = 1000
    max_items_per_request: int = 1000
    max_k: int = 100
    max_search_results: int = 100
    max_history_returned: int = 1000
    cache_size: int = 10_000
    # Model work runs one request at a time (torch.func is not thread-safe), so one
    # torch thread leaves the other cores to the HTTP side; on a busy 2-core machine
    # two threads made a single adapt-and-recommend about 8x slower.
    torch_threads: int = 1
    install_sighup: bool = False  # only the CLI's server installs a SIGHUP handler
    freeze_heap: bool = False  # only the CLI's server: see serving.settle_heap
    # the CLI's server says it once on stderr, beside where it serves; an app built in
    # Python (create_app) logs it, and the CLI printed both, per worker process
    warn_no_api_key: bool = True
    # torch device for the served models; None: each run's own, or auto where it is missing
    device: str | None = None
    # a worker of `serve --workers N` other than the first: serve the run the feedback
    # store records (a reload may have moved it since the server started), not ``run``
    follow_store: bool = False
    # the folder under which POST /v1/admin/reload may load run folders; None: the one
    # holding ``run`` (a retrained run written beside it). Any path was taken: a client
    # with the write key (every visitor of a --page-api-key page) probed the file
    # system, read values of files through a crafted run, and hung workers on a FIFO
    runs_dir: Path | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_events_per_batch",
            "max_items_per_request",
            "max_k",
            "max_search_results",
            "max_history_returned",  # SQLite reads a negative LIMIT as none
            "cache_size",
            "torch_threads",
        ):
            value = getattr(self, name)
            # "10" was a TypeError, nan and 1.5 were taken
            if not is_whole(value) or value <= 0:
                raise ConfigError(f"{name}: must be a whole number > 0, got {value!r:.40}")
        if self.torch_threads > MAX_TORCH_THREADS:  # 100000 failed as an unreadable run
            raise ConfigError(
                f"torch_threads: at most {MAX_TORCH_THREADS}, got {self.torch_threads}"
            )
        if self.api_key is not None:
            check_api_key(self.api_key, "api key")
        if not isinstance(self.page_api_key, bool):
            raise ConfigError(
                f"page_api_key: expected True or False, got {self.page_api_key!r:.40}"
            )
        if self.page_api_key and self.api_key is None:
            # it did nothing, and the page asked every visitor for a key it could not have
            raise ConfigError("page_api_key: hands the page the API key, and none is set (api_key)")
        if self.page_api_key and not (self.api_key or "").isascii():
            # a browser sends a header's characters as single bytes: every write of the
            # page failed, and the key form it would have asked with is hidden
            raise ConfigError(
                "page_api_key: the page's browser cannot send a key with characters past "
                "ASCII (fetch refuses it, or sends other bytes); give the page an ASCII key"
            )
        if self.device is not None:  # a device this machine lacks fails before the store opens
            resolve_device(self.device, "--device")
        if isinstance(self.cors_origins, str) or not isinstance(self.cors_origins, tuple):
            # a string was read letter by letter ("--cors 'h'")
            raise ConfigError(
                f"cors_origins: expected a tuple of origins, got {self.cors_origins!r:.60}"
            )
        # as a browser writes them, which is what the CORS check compares
        object.__setattr__(self, "cors_origins", tuple(map(browser_origin, self.cors_origins)))
        if self.api_key is None and "*" in self.cors_origins:
            # a keyless server takes writes from this machine, and "*" let every site open
            # in its browser make them (reloads included)
            raise ConfigError(
                "cors_origins: '*' on a server without an API key would let every website "
                "open in this machine's browser write to it; give a key, or list origins"
            )
        if isinstance(self.allowed_hosts, str) or not isinstance(self.allowed_hosts, tuple):
            raise ConfigError(
                f"allowed_hosts: expected a tuple of host names, got {self.allowed_hosts!r:.60}"
            )
        if self.allowed_hosts and not self.checks_host:
            # a server with a key does not check Host at all: the names would do nothing
            raise ConfigError(
                "allowed_hosts: only a server without an API key, or one that hands its "
                "key to the page (page_api_key), checks the Host its clients name, and "
                "this one has a key (api_key)"
            )
        object.__setattr__(self, "allowed_hosts", tuple(map(host_only, self.allowed_hosts)))
        if self.runs_dir is not None and not Path(self.runs_dir).is_dir():
            raise ConfigError(f"runs_dir: {self.runs_dir} is not a folder")

    @property
    def checks_host(self) -> bool:
        return self.host_checked(self.api_key, self.page_api_key)

    @staticmethod
    def host_checked(api_key: str | None, page_api_key: bool) -> bool:
        """Whether requests must name the server by address, localhost or an allowed
        name: a server whose reads a rebinding site could take as its own origin (no
        key), or whose page hands such a site the key (``page_api_key``)."""
        return api_key is None or page_api_key

    @staticmethod
    def key_from_env(explicit: str | None) -> str | None:
        """``--api-key`` wins, then ``$METAREC_API_KEY``; ``None`` when neither is set.

        An empty or blank one is refused, wherever it came from: ``--api-key "$KEY"``
        with ``KEY`` unset would otherwise serve with no key, writes open to every
        loopback client (every client, behind a proxy on the same host)."""
        if explicit is not None:
            where, key = "--api-key", explicit
        elif API_KEY_ENV in os.environ:
            where, key = f"${API_KEY_ENV}", os.environ[API_KEY_ENV]
        else:
            return None
        if not key.strip():
            raise ConfigError(
                f"{where}: empty or blank; give a key, or leave {where} out to serve "
                "without one" + ("" if where == "--api-key" else f" (unset {API_KEY_ENV})")
            )
        return check_api_key(key, where)


# far past any machine's cores: 100000 threads failed as "not a readable safetensors file"
MAX_TORCH_THREADS = 1024
HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def check_api_key(key: object, where: str) -> str:
    """``key`` if a client can send it in ``X-API-Key``, else a ConfigError naming
    ``where``: HTTP strips spaces and tabs around a header's value and cannot carry a
    line end, so a key read from a file with its newline started a server no client
    could write to."""
    if not isinstance(key, str):
        raise ConfigError(f"{where}: expected text, got {type(key).__name__}")
    if not key.strip():
        raise ConfigError(f"{where}: must not be empty or blank")
    if key != key.strip() or any(not c.isprintable() for c in key):
        raise ConfigError(
            f"{where}: has spaces or a line end at its ends, or a control character, "
            "which no HTTP header can carry; remove them (a key read from a file keeps "
            "its newline)"
        )
    return key


def host_only(name: object) -> str:
    """``name`` as ``Host`` carries it (lower case, no trailing dot), or a ConfigError:
    a port, scheme, path or space would never match what a client sends, and a browser
    sends a name in other scripts as its ``xn--`` form."""
    if not isinstance(name, str) or not HOST_NAME.fullmatch(name):
        raise ConfigError(
            f"allowed_hosts: {name!r:.80} is not a host name such as metarec.internal "
            "(letters, digits, - and _ between dots; no scheme, port or path)"
        )
    return name.lower().rstrip(".")


def browser_origin(origin: object) -> str:
    """``origin`` as a browser sends it in ``Origin`` (host in lower case, no default
    port), or a ConfigError: the CORS check compares the two as text, so
    ``https://Shop.example.com:443`` never matched, and neither did a path or a bare
    host."""
    if origin == "*":
        return "*"
    if not isinstance(origin, str) or not ORIGIN.fullmatch(origin):
        raise ConfigError(
            f"--cors {origin!r}: expected an origin such as https://shop.example.com "
            "or http://localhost:3000 (scheme, host, optional port; no path), or *"
        )
    scheme, rest = origin.split("://", 1)
    host, _, port = rest.rpartition(":") if rest.rsplit("]", 1)[-1].count(":") else (rest, "", "")
    if port and int(port) > 65535:
        raise ConfigError(f"--cors {origin!r}: port {port} is past 65535")
    if port and int(port) == _DEFAULT_PORTS[scheme.lower()]:
        port = ""
    return f"{scheme.lower()}://{host.lower()}" + (f":{int(port)}" if port else "")

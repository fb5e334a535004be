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

DEFAULT_DB_FILE = "metarec-feedback.db"
API_KEY_ENV = "METAREC_API_KEY"
ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.\-]+(?::\d{1,5})?|https?://\[[0-9A-Fa-f:]+\](?::\d{1,5})?"
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
    # torch device for the served models; None: each run's own, or auto where it is missing
    device: str | None = None
    # a worker of `serve --workers N` other than the first: serve the run the feedback
    # store records (a reload may have moved it since the server started), not ``run``
    follow_store: bool = False

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_events_per_batch",
            "max_items_per_request",
            "max_k",
            "max_search_results",
            "cache_size",
            "torch_threads",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api key: must not be empty or blank")
        if self.device is not None:  # a device this machine lacks fails before the store opens
            resolve_device(self.device, "--device")
        for origin in self.cors_origins:
            # a browser sends its Origin as scheme://host[:port], so anything else
            # (a path, a bare host) would silently never match
            if origin != "*" and not ORIGIN.fullmatch(origin):
                raise ConfigError(
                    f"--cors {origin!r}: expected an origin such as https://shop.example.com "
                    "or http://localhost:3000 (scheme, host, optional port; no path), or *"
                )

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
        return key

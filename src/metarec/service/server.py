"""Run the service with uvicorn: one worker (the model and the adaptation cache live in
one process), SIGHUP reloads the run without downtime."""

from __future__ import annotations

import logging
import socket
import sys
from typing import TYPE_CHECKING, Any

from metarec.errors import ConfigError
from metarec.service.settings import ServiceSettings

if TYPE_CHECKING:
    import uvicorn


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, or ConfigError saying why it cannot be.

    The service binds before it loads the run or opens the feedback store, so a port
    in use or a mistyped host fails at once with exit code 2 and leaves nothing
    behind; handed to uvicorn, the same socket serves (no window for another process
    to take the port between the check and the start).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port: {port!r} is not a TCP port; expected 0-65535 (0: any free)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"--host: {host!r} is not an address here ({reason})") from None
    sock = socket.socket(family, kind, proto)
    # as uvicorn does: a restarted server may take a port whose old connections linger
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"--host/--port: cannot listen on {host}:{port} ({exc.strerror})"
        ) from None
    return sock


def uvicorn_config(app: Any, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for the service: one worker, no access log (the metrics count
    requests), and the HTTP protocol whose parse errors are JSON like every other error."""
    import uvicorn

    from metarec.service.protocol import JsonErrorHttpProtocol

    return uvicorn.Config(app, workers=1, access_log=False, http=JsonErrorHttpProtocol, **options)


def serve(settings: ServiceSettings, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    import dataclasses

    from metarec.service.app import create_app

    sock = listening_socket(host, port)
    port = sock.getsockname()[1]  # the one the system chose, for port 0
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    torch.set_num_threads(settings.torch_threads)
    settings = dataclasses.replace(settings, install_sighup=True, freeze_heap=True)
    try:
        app = create_app(settings)
    except BaseException:
        sock.close()
        raise
    store = app.state.store
    print(
        f"metarec: serving {app.state.holder.current.name} on http://{host}:{port}/",
        file=sys.stderr,
    )
    print(f"metarec: feedback store {store.url}", file=sys.stderr)
    if settings.api_key is None:
        print(
            "metarec: WARNING: no API key configured (--api-key or METAREC_API_KEY): "
            "write endpoints accept loopback clients only",
            file=sys.stderr,
        )
    import uvicorn

    config = uvicorn_config(app, log_level="info")
    with sock:
        uvicorn.Server(config).run(sockets=[sock])

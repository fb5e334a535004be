"""Run the service with uvicorn: one process, or ``workers`` processes on one socket.

Each worker is a whole server (the model, the adaptation cache, its own batching of
adaptations), so N workers use N cores for the model work that holds one process to
one core at a time. They share only the feedback store, which keeps them in step
(:meth:`~metarec.service.serving.ModelHolder.sync`). A small supervisor (this module,
not uvicorn's, whose SIGHUP restarts workers) starts them, forwards SIGHUP so each
reloads the run without downtime, restarts one that dies and stops them all on
SIGTERM or Ctrl-C, letting in-flight requests finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from metarec.errors import ConfigError, MetarecError, ModelError
from metarec.service.early_sighup import EARLY_SIGHUP, STOP_ASKED, catch_early_sighup
from metarec.service.settings import ServiceSettings
from metarec.values import is_whole

if TYPE_CHECKING:
    import uvicorn


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, or ConfigError saying why it cannot be.

    The service binds before it loads the run or opens the feedback store, so a port
    in use or a mistyped host fails at once with exit code 2 and leaves nothing
    behind; handed to uvicorn, the same socket serves (no window for another process
    to take the port between the check and the start).
    """
    if not is_whole(port) or not 0 <= port <= 65535:
        raise ConfigError(f"--port: {port!r} is not a TCP port; expected 0-65535 (0: any free)")
    port = int(port)  # getaddrinfo takes no numpy integer
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


def uvicorn_config(app: Any, *, max_body_bytes: int | None, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for the service: one worker, no access log (the metrics count
    requests), and the HTTP protocol whose parse errors are JSON like every other error,
    which gives a body time for its size up to ``max_body_bytes``, the server's limit
    (:func:`~metarec.service.protocol.body_timeout`; None: as declared)."""
    import uvicorn

    from metarec.service.protocol import JsonErrorHttpProtocol, with_body_limit

    # proxy_headers off: the TCP peer is the client. uvicorn's default took a client
    # address from X-Forwarded-For where $FORWARDED_ALLOW_IPS trusts the sender (often
    # "*" in container images), and a keyless server's loopback-only writes were then
    # taken from anywhere that sent "X-Forwarded-For: 127.0.0.1"
    return uvicorn.Config(
        app,
        workers=1,
        access_log=False,
        http=with_body_limit(JsonErrorHttpProtocol, max_body_bytes),
        proxy_headers=False,
        **options,
    )


MAX_WORKERS = 64
# listened on before "serving ... on" is printed (uvicorn's own backlog): a client that
# connects on reading that line was refused until uvicorn's loop had started
BACKLOG = 2048
STOP_GRACE_S = 30.0  # what a stopping worker gets to finish its requests before SIGKILL


def check_workers(workers: object) -> int:
    if not is_whole(workers) or not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers: {workers!r}; expected a whole number 1-{MAX_WORKERS}")
    return int(workers)


def serve(
    settings: ServiceSettings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1
) -> None:
    check_workers(workers)
    if threading.current_thread() is threading.main_thread():
        # while the run loads: reloaded once serving, not an exit (`metarec serve` has
        # put it in place already, before this module's imports)
        catch_early_sighup()
    sock = listening_socket(host, port)
    port = sock.getsockname()[1]  # the one the system chose, for port 0
    _configure_logging()
    with sock:
        if workers == 1:
            with _stopped_cleanly():
                logging.getLogger("metarec.service").info("loading %s", settings.run)
                app = _server_app(settings)
                sock.listen(BACKLOG)  # before the line a script waits for: then it connects
                _announce(settings, app.state.holder.current.name, app.state.store.url, host, port)
                if STOP_ASKED.is_set():  # a stop whose raise was dropped: not served
                    raise _StopAsked
                _run_uvicorn(app, sock, settings.max_body_bytes)
        else:
            with contextlib.suppress(_Stopped):
                Supervisor(settings, sock, workers).run(host, port)


class _StopAsked(BaseException):
    """SIGTERM in one server process. A BaseException, as KeyboardInterrupt is: raised
    wherever the load happens to be, it must pass the ``except Exception`` of a file
    reader (which would report a stop as a damaged weights file) and of libraries."""


@contextlib.contextmanager
def _stopped_cleanly() -> Iterator[None]:
    """SIGTERM or Ctrl-C, while the run loads or once it serves, stops one server
    process with exit code 0, as the supervisor of several does: a stop asked for is
    not a failure (systemd, Kubernetes and shells would log it as one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_sig: int, _frame: Any) -> None:
        STOP_ASKED.set()  # kept, should the raise be dropped (see STOP_ASKED)
        raise _StopAsked

    # uvicorn puts its own handlers in while it serves, and once it has shut down
    # gracefully raises the signal again (>= 0.29), which lands here; Ctrl-C too, so
    # that it does not land in the command line's "stopped before serving"
    previous = signal.signal(signal.SIGTERM, stop)
    previous_int = signal.signal(signal.SIGINT, stop)
    try:
        yield
    except (_StopAsked, KeyboardInterrupt):
        logging.getLogger("metarec.service").info("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _configure_logging() -> None:
    # the process id: under --workers each worker logs its own "serving ..." and
    # fold-in lines, which could not be told apart when two disagreed
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
    )


def _server_app(settings: ServiceSettings) -> Any:
    """The app as a server process runs it: its torch threads, SIGHUP, a frozen heap."""
    import torch
    from tqdm.std import tqdm

    from metarec.service.app import create_app

    torch.set_num_threads(settings.torch_threads)
    # a server shows no bars, yet encoding added items makes one (disabled), and tqdm's
    # first bar makes a multiprocessing lock: a named semaphore, which a worker killed
    # with -9 left for the resource tracker to report "leaked" at the server's stop
    tqdm.set_lock(threading.RLock())
    return create_app(
        dataclasses.replace(settings, install_sighup=True, freeze_heap=True, warn_no_api_key=False)
    )


def _run_uvicorn(app: Any, sock: socket.socket, max_body_bytes: int) -> None:
    import uvicorn

    config = uvicorn_config(app, max_body_bytes=max_body_bytes, log_level="info")
    uvicorn.Server(config).run(sockets=[sock])


def _announce(
    settings: ServiceSettings, model: str, store_url: str, host: str, port: int, workers: int = 1
) -> None:
    processes = f" ({workers} worker processes)" if workers > 1 else ""
    where = f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it
    print(f"metarec: serving {model} on http://{where}:{port}/{processes}", file=sys.stderr)
    print(f"metarec: feedback store {store_url}", file=sys.stderr)
    if settings.api_key is None:
        print(
            "metarec: WARNING: no API key configured (--api-key or METAREC_API_KEY): "
            "writes and users' data accept loopback clients only, and every client must name "
            "this server by IP address or localhost"
            + (f" or {', '.join(settings.allowed_hosts)}" if settings.allowed_hosts else ""),
            file=sys.stderr,
        )
    elif settings.checks_host:  # --page-api-key: the page's key must not be read off
        # a DNS-rebound name, so such a server checks Host as a keyless one does
        print(
            "metarec: the page carries the API key (--page-api-key): every client must "
            "name this server by IP address or localhost"
            + (f" or {', '.join(settings.allowed_hosts)}" if settings.allowed_hosts else "")
            + " (--allowed-host adds a name)",
            file=sys.stderr,
        )


def _worker(settings: ServiceSettings, sock: socket.socket, report: Any, supervisor: int) -> None:
    """One worker process: build the app, report ("ready", model, store) or ("failed",
    error) to the supervisor, then serve until SIGTERM."""
    # its own process group: a Ctrl-C at the terminal reaches the supervisor alone, which
    # stops the workers with SIGTERM (a second signal would make uvicorn drop requests)
    os.setpgrp()
    catch_early_sighup()
    # `kill -USR1` dumps its stacks, as the supervisor's (README): the default ended the
    # worker, the process most likely to hang
    with contextlib.suppress(AttributeError, ValueError, OSError):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    _configure_logging()
    _stop_with(supervisor)
    try:
        app = _server_app(settings)
    except MetarecError as exc:
        report.send(("failed", f"{type(exc).__name__}\t{exc}"))
        sys.exit(2)
    except BaseException as exc:
        report.send(("failed", f"{type(exc).__name__}\t{exc}"))
        raise
    report.send(("ready", app.state.holder.current.name, app.state.store.url))
    report.close()
    # uvicorn raises SIGTERM again once it has shut down; unhandled, it killed the worker
    # (exit -15) before multiprocessing's finalizers ran, and the resource tracker warned
    # of "leaked semaphore objects" (tqdm's lock, made by any encoding) at every stop
    with _stopped_cleanly():
        _run_uvicorn(app, sock, settings.max_body_bytes)


def _stop_with(parent: int) -> None:
    """Stop this worker (SIGTERM: in-flight requests finish) when the supervisor is gone,
    killed without a chance to stop it: a worker must not serve on, unsupervised."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="metarec-supervisor-watch", daemon=True).start()


class _Stopped(Exception):
    """SIGTERM or Ctrl-C while the workers started: a clean stop, as after the start."""


class Supervisor:
    """Starts ``workers`` server processes on ``sock`` and looks after them."""

    def __init__(self, settings: ServiceSettings, sock: socket.socket, workers: int) -> None:
        self.settings = settings
        self.sock = sock
        self.workers = workers
        self.context = multiprocessing.get_context("spawn")  # torch and threads: never fork
        self.processes: list[Any] = []
        self.reports: list[Any] = []  # each worker's start report, once waited for: None
        self.serving: set[int] = set()  # pids of the workers that reported ready
        self.hup_pending: set[int] = set()  # starting workers a SIGHUP is owed to
        self.stop = threading.Event()
        self.log = logging.getLogger("metarec.service")

    def _start(self, *, first: bool = False) -> tuple[Any, Any]:
        """A worker; all but the first serve the run the store records (a reload may
        have moved it from the one given, before a worker is replaced)."""
        settings = self.settings if first else dataclasses.replace(self.settings, follow_store=True)
        receive, send = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker, args=(settings, self.sock, send, os.getpid()), name="metarec-worker"
        )
        process.start()
        send.close()
        return process, receive

    def _wait_ready(self, process: Any, receive: Any) -> tuple[str, str]:
        """(model, store) once the worker serves; a worker that fails to start stops the
        server with its own error (exit code 2 for a bad run or store, as one process)."""
        while not self.stop.is_set():
            if receive.poll(0.2):
                try:
                    message = receive.recv()
                except EOFError:
                    message = ("failed", f"Exit\tworker exited with code {process.exitcode}")
                receive.close()
                if message[0] == "ready":
                    self._serving(process.pid)
                    return message[1], message[2]
                kind, _, text = message[1].partition("\t")
                self._stop_all()
                raise (ModelError if kind != "ConfigError" else ConfigError)(text)
            if not process.is_alive() and not receive.poll(0):
                self._stop_all()
                raise ModelError(f"a worker exited while starting (code {process.exitcode})")
        self._stop_all()
        raise _Stopped

    def run(self, host: str, port: int) -> None:
        handlers = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        try:
            # the first alone: it creates or migrates the store's schema before the others
            # open it, and a run or store that cannot be served fails once
            first = self._start(first=True)
            self.processes.append(first[0])
            model, store_url = self._wait_ready(*first)
            rest = [self._start() for _ in range(self.workers - 1)]
            self.processes += [p for p, _ in rest]
            for process, receive in rest:
                self._wait_ready(process, receive)
            self.reports = [None] * self.workers
            if EARLY_SIGHUP.is_set():  # one came before these handlers: every worker reloads
                EARLY_SIGHUP.clear()
                self._on_signal(signal.SIGHUP, None)
            self.sock.listen(BACKLOG)  # the workers' socket: queued until one accepts
            _announce(self.settings, model, store_url, host, port, self.workers)
            self._watch()
        finally:
            self._stop_all()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, _frame: Any) -> None:
        if sig == signal.SIGHUP:  # each worker reloads the run itself, serving meanwhile
            for process in self.processes:
                if not process.is_alive():
                    continue
                if process.pid in self.serving:
                    os.kill(process.pid, signal.SIGHUP)
                else:  # still starting (its Python may not be up): sent once it serves
                    self.hup_pending.add(process.pid)
        else:
            self.stop.set()

    def _serving(self, pid: int) -> None:
        self.serving.add(pid)
        if pid in self.hup_pending:
            self.hup_pending.discard(pid)
            os.kill(pid, signal.SIGHUP)

    def _watch(self) -> None:
        """Restart a worker that dies: at once if it had served a minute, else after a
        pause that doubles while it keeps dying (a run deleted under a running server
        must not turn into a tight loop of failing starts)."""
        n = len(self.processes)
        started, pause = [time.monotonic()] * n, [1.0] * n
        restart_at: list[float | None] = [None] * n
        while not self.stop.wait(0.5):
            now = time.monotonic()
            for slot, process in enumerate(self.processes):
                self._read_reports(slot)
                if process.is_alive():
                    continue
                if restart_at[slot] is None:
                    lived = now - started[slot]
                    pause[slot] = 1.0 if lived > 60 else min(pause[slot] * 2, 60.0)
                    restart_at[slot] = now if lived > 60 else now + pause[slot]
                    self.log.error(
                        "worker %s exited with code %s; starting another",
                        process.pid,
                        process.exitcode,
                    )
                if now >= (restart_at[slot] or now):
                    self.processes[slot], self.reports[slot] = self._start()
                    started[slot], restart_at[slot] = now, None

    def _read_reports(self, slot: int) -> None:
        """Log a restarted worker's start (its supervisor is no longer waiting on it)."""
        receive = self.reports[slot]
        try:
            while receive is not None and receive.poll(0):
                message = receive.recv()
                if message[0] == "failed":
                    # "ConfigError\tdatabase ...": the tab split kind from text for _wait_ready
                    kind, _, text = message[1].partition("\t")
                    self.log.error("a restarted worker failed to start: %s: %s", kind, text)
                else:
                    self._serving(self.processes[slot].pid)
        except (EOFError, OSError):
            receive.close()
            self.reports[slot] = None

    def _stop_all(self) -> None:
        """SIGTERM to every worker (uvicorn lets in-flight requests finish), then wait."""
        # the workers stop listening at once; this process's copy of the socket kept the
        # port open, so the kernel took new connections into its queue, where they hung
        # until the last worker finished and were then reset. Closed, they are refused at
        # once, as a single process's are, and a client or balancer tries elsewhere
        self.sock.close()
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()

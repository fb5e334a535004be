"""`metarec serve` binds its port before it loads anything: a bad host or a taken port is
a one-line error with exit code 2, and no feedback store is created."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from metarec.errors import ConfigError
from metarec.service.server import listening_socket
from metarec.service.settings import ServiceSettings

from .conftest import served_url, wait_ready


@pytest.mark.parametrize("port", [-1, 65536, 99999, True, "80"])
def test_ports_outside_tcp_are_refused(port: object) -> None:
    with pytest.raises(ConfigError, match=r"--port: .* is not a TCP port; expected 0-65535"):
        listening_socket("127.0.0.1", port)  # type: ignore[arg-type]


def test_an_unresolvable_host_is_named() -> None:
    with pytest.raises(ConfigError, match=r"--host: '999\.1\.1\.1' is not an address here"):
        listening_socket("999.1.1.1", 0)


def test_port_zero_takes_a_free_port_that_then_is_taken() -> None:
    with listening_socket("127.0.0.1", 0) as sock:
        sock.listen()
        port = sock.getsockname()[1]
        assert port > 0
        with pytest.raises(ConfigError, match=rf"cannot listen on 127\.0\.0\.1:{port} \("):
            listening_socket("127.0.0.1", port)


def serve_refused(run: Path, tmp_path: Path, *flags: str) -> str:
    """``metarec serve RUN FLAGS`` refused: exit code 2, no traceback, no store
    created; its stderr."""
    db = tmp_path / "feedback.db"
    command = [sys.executable, "-m", "metarec.cli", "serve", str(run), "--db", f"sqlite:///{db}"]
    proc = subprocess.run([*command, *flags], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not db.exists()
    return proc.stderr


def test_serve_on_a_taken_port_exits_2_before_opening_the_store(
    service_run: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stderr = serve_refused(service_run, tmp_path, "--port", str(port))
    assert f"metarec: error: --host/--port: cannot listen on 127.0.0.1:{port}" in stderr


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("max_body_bytes", 0, "max_body_bytes: must be a whole number > 0, got 0"),
        ("torch_threads", -1, "torch_threads: must be a whole number > 0, got -1"),
        # taken: SQLite reads a negative LIMIT as none; nan, 1.5 and True as counts; "10"
        # was a TypeError
        ("max_history_returned", -5, "max_history_returned: must be a whole number > 0"),
        ("max_history_returned", 0, "max_history_returned: must be a whole number > 0"),
        ("max_k", float("nan"), "max_k: must be a whole number > 0, got nan"),
        ("max_k", "10", "max_k: must be a whole number > 0, got '10'"),
        ("cache_size", 1.5, "cache_size: must be a whole number > 0, got 1.5"),
        ("torch_threads", True, "torch_threads: must be a whole number > 0, got True"),
        # 100000 failed as "not a readable safetensors file"
        ("torch_threads", 100_000, "torch_threads: at most 1024, got 100000"),
        ("api_key", "  ", "api key: must not be empty"),
        ("api_key", 5, "api key: expected text, got int"),  # an AttributeError
        # HTTP strips a header's spaces and cannot carry a newline: no client could write
        ("api_key", "secret\n", "api key: has spaces or a line end at its ends"),
        ("api_key", " secret", "api key: has spaces or a line end at its ends"),
        ("cors_origins", ("notaurl",), "--cors 'notaurl': expected an origin"),
        ("cors_origins", ("https://shop.example/",), "no path"),
        ("cors_origins", ("http://x.example:99999",), "port 99999 is past 65535"),
        # walked letter by letter: "--cors 'h'"
        ("cors_origins", "http://a.example", "cors_origins: expected a tuple of origins"),
        ("device", "gpu", "--device: 'gpu' is not a device"),
        # it did nothing, without a word
        ("page_api_key", True, "page_api_key: hands the page the API key, and none is set"),
        ("page_api_key", "yes", "page_api_key: expected True or False"),
        ("allowed_hosts", ("metarec.internal:8000",), "'metarec.internal:8000' is not a host"),
        ("allowed_hosts", ("http://metarec.internal",), "no scheme, port or path"),
        ("allowed_hosts", ("a b",), "allowed_hosts: 'a b' is not a host name"),
        ("allowed_hosts", "metarec.internal", "allowed_hosts: expected a tuple of host names"),
    ],
)
def test_settings_refuse_what_would_not_work(field: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        ServiceSettings(run=Path("run"), **{field: value})  # type: ignore[arg-type]


def test_allowed_hosts_are_kept_as_host_carries_them_and_need_a_keyless_server() -> None:
    settings = ServiceSettings(run=Path("run"), allowed_hosts=("Metarec.Internal.", "box"))
    assert settings.allowed_hosts == ("metarec.internal", "box")
    # a keyed server does not check Host: the names would do nothing
    with pytest.raises(ConfigError, match="or one that hands its key to the page"):
        ServiceSettings(run=Path("run"), api_key="k", allowed_hosts=("box",))


def test_a_keyless_server_bound_to_a_name_answers_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # `serve --host vm` announced http://vm:8000/ and refused every request to it
    from argparse import Namespace

    from metarec.cli.service import allowed_hosts

    monkeypatch.delenv("METAREC_API_KEY", raising=False)
    given = Namespace(host="vm", api_key=None, allowed_host=["box"])
    assert allowed_hosts(given) == ("box", "vm")
    for host in ("127.0.0.1", "::", "[::1]", "0.0.0.0"):
        assert allowed_hosts(Namespace(host=host, api_key=None, allowed_host=None)) == ()
    assert allowed_hosts(Namespace(host="vm", api_key="k", allowed_host=None)) == ()
    # a keyed server whose page carries the key checks Host too, its bound name allowed
    page = Namespace(host="vm", api_key="k", allowed_host=None, page_api_key=True)
    assert allowed_hosts(page) == ("vm",)


def test_serve_names_the_flag_of_an_allowed_host_that_would_do_nothing(
    service_run: Path, tmp_path: Path
) -> None:
    flags = ("--port", "0", "--api-key", "k", "--allowed-host", "box")
    stderr = serve_refused(service_run, tmp_path, *flags)
    assert "metarec: error: --allowed-host: only a server without an API key, or one that" in stderr
    assert "(--api-key or $METAREC_API_KEY)" in stderr


@pytest.mark.parametrize(
    ("origin", "sent"),
    [
        ("*", "*"),
        ("https://shop.example", "https://shop.example"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        # as a browser sends them: these never matched an Origin header
        ("https://shop.example:443", "https://shop.example"),
        ("HTTP://Upper.Example.com:80", "http://upper.example.com"),
        ("http://shop.example:443", "http://shop.example:443"),
    ],
)
def test_settings_take_browser_origins(origin: str, sent: str) -> None:
    settings = ServiceSettings(run=Path("run"), api_key="k", cors_origins=(origin,))
    assert settings.cors_origins == (sent,)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_serve_on_a_missing_device_exits_2_before_opening_the_store(
    service_run: Path, tmp_path: Path
) -> None:
    stderr = serve_refused(service_run, tmp_path, "--port", "0", "--device", "cuda")
    assert "metarec: error: --device: 'cuda' asked for" in stderr


def test_serving_a_run_that_does_not_load_creates_no_database(
    service_run: Path, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(service_run, run)
    (run / "recommender.json").write_text("[]")  # damaged after it was checked to be a run
    db = tmp_path / "feedback.db"
    res = cli("serve", str(run), "--db", f"sqlite:///{db}", "--port", "0")
    assert res.returncode == 2 and "not a JSON object" in res.stderr, res.stderr
    assert not db.exists()


def test_load_commands_take_a_device(
    service_run: Path, cli: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    res = cli("recommend", str(service_run), "--device", "cpu", "-k", "3", "--json")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)) == 3
    with pytest.raises(SystemExit) as exit_info:  # a usage error, before anything loads
        cli("recommend", str(service_run), "--device", "gpu")
    assert exit_info.value.code == 2
    assert "'gpu' is not a device" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, env, needle",
    [
        (["--api-key", ""], {}, "--api-key: empty or blank"),
        ([], {"METAREC_API_KEY": " "}, "$METAREC_API_KEY: empty or blank"),
        # read from a secrets file with its newline: it started, and no client could write
        ([], {"METAREC_API_KEY": "secret\n"}, "$METAREC_API_KEY: has spaces or a line end"),
        (["--api-key", "secret "], {}, "--api-key: has spaces or a line end at its ends"),
    ],
)
def test_an_empty_api_key_is_refused_not_read_as_none(
    service_run: Path,
    tmp_path: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    flag: list[str],
    env: dict[str, str],
    needle: str,
) -> None:
    # `--api-key "$KEY"` with KEY unset: serving with no key would open every write
    monkeypatch.delenv("METAREC_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    db = tmp_path / "feedback.db"
    res = cli("serve", str(service_run), "--db", f"sqlite:///{db}", "--port", "0", *flag)
    assert res.returncode == 2 and needle in res.stderr, res.stderr
    assert not db.exists()


def test_a_key_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAREC_API_KEY", "from-env")
    assert ServiceSettings.key_from_env("given") == "given"
    assert ServiceSettings.key_from_env(None) == "from-env"
    monkeypatch.delenv("METAREC_API_KEY")
    assert ServiceSettings.key_from_env(None) is None


def _stop_with_exit_0(proc: subprocess.Popen[bytes], sig: signal.Signals, log: Path) -> None:
    """Send ``sig``; the process must exit 0 within 60 s. One still there gets SIGUSR1
    first, so that its log holds every thread's stack (faulthandler): where it hangs."""
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        raise AssertionError(f"no exit 60 s after {sig!r}; its log:\n{log.read_text()}") from None
    assert code == 0, log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_one_server_process_stops_on_a_signal_with_exit_code_0(
    service_run: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    # as the supervisor of several: a stop asked for is not a failure (uvicorn raised
    # the signal again after its graceful shutdown, so the process died of SIGTERM)

    def ready(proc: subprocess.Popen[bytes], log: Path) -> bool:
        wait_ready(served_url(log, proc), proc, timeout=120)
        return True

    text = _serve_then_stop(service_run, tmp_path, ready, 120, sig)
    assert "Traceback" not in text and "interrupted" not in text, text
    assert "Finished server process" in text, text


def _serve_then_stop(
    service_run: Path,
    tmp_path: Path,
    ready: Callable[[subprocess.Popen[bytes], Path], bool],
    timeout: float,
    sig: signal.Signals = signal.SIGTERM,
) -> str:
    """Start ``metarec serve`` on port 0, send ``sig`` once ``ready(proc, log)`` (or
    ``timeout`` s), expect exit code 0; its log."""
    command = ["metarec", "serve", str(service_run), "--db", f"sqlite:///{tmp_path / 'f.db'}"]
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([*command, "--port", "0"], stdout=fh, stderr=fh)
    try:
        deadline = time.monotonic() + timeout
        while not ready(proc, log) and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.005)
        _stop_with_exit_0(proc, sig, log)
    finally:
        proc.kill()
        proc.wait()
    return log.read_text()


def test_the_serving_line_comes_once_the_port_takes_connections(
    service_run: Path, tmp_path: Path
) -> None:
    """A script that connects on reading "serving ... on" was refused: the socket was
    bound, but listened on only once uvicorn's loop had started."""
    import re
    import socket

    connected: list[int] = []

    def connect_at_the_line(_proc: subprocess.Popen[bytes], log: Path) -> bool:
        said = re.search(r"serving \S+ on http://127\.0\.0\.1:(\d+)/", log.read_text())
        if said is None:
            return False
        with socket.create_connection(("127.0.0.1", int(said.group(1))), timeout=10):
            connected.append(int(said.group(1)))
        return True

    _serve_then_stop(service_run, tmp_path, connect_at_the_line, 60)
    assert connected


_DROPPED_STOP = """
import sys
from pathlib import Path
from metarec.service import server
from metarec.service.early_sighup import STOP_ASKED
from metarec.service.settings import ServiceSettings

real = server._run_uvicorn


def dropped(*args):
    STOP_ASKED.set()  # what the handler leaves when Python drops its raise: the flag
    return real(*args)


server._run_uvicorn = dropped
settings = ServiceSettings(run=Path(sys.argv[1]), db_url=sys.argv[2])
server.serve(settings, port=0)
"""


def test_a_stop_whose_raise_python_dropped_still_stops_the_server(
    service_run: Path, tmp_path: Path
) -> None:
    """A SIGTERM landing in a garbage collector's callback: Python printed "Exception
    ignored" and dropped the handler's raise, and the server served on until a second
    signal (the reviewer's 3 hangs in 10 starts stopped at the serving line). Dropped
    as uvicorn starts, the latest it can be: its own handlers take the stop again."""
    db = f"sqlite:///{tmp_path / 'f.db'}"
    proc = subprocess.run(
        [sys.executable, "-c", _DROPPED_STOP, str(service_run), db],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "metarec.service: stopped" in proc.stderr, proc.stderr[-2000:]
    assert "Application startup complete" in proc.stderr, proc.stderr[-2000:]
    assert "Shutting down" in proc.stderr


def test_one_server_process_stopped_while_it_loads_exits_0(
    service_run: Path, tmp_path: Path
) -> None:
    # logged once the handler is in place, before the run loads
    text = _serve_then_stop(service_run, tmp_path, lambda _, log: "loading" in log.read_text(), 60)
    assert "Traceback" not in text and "stopped" in text, text
    # stopped during the load (torch's import alone takes a second), not once serving
    assert "metarec: serving" not in text, text


def _catches_sigterm(proc: subprocess.Popen[bytes], _log: Path) -> bool:
    """Whether the process has a SIGTERM handler in place (its bit in /proc's SigCgt)."""
    status = Path(f"/proc/{proc.pid}/status").read_text()
    caught = int(next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_one_server_process_stopped_before_its_imports_end_exits_0(
    service_run: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGTERM or Ctrl-C from the moment the command catches them (together), while the
    server's modules still import, exits 0 as a later stop does; SIGTERM died of the
    signal, 143 and no word, and Ctrl-C said "interrupted" with 130, before."""
    text = _serve_then_stop(service_run, tmp_path, _catches_sigterm, 30, sig)
    assert "Traceback" not in text and "stopped before serving" in text, text
    assert not (tmp_path / "f.db").exists()


def test_a_stop_passes_the_broad_excepts_of_a_loader() -> None:
    """A file reader's ``except Exception`` (metarec.io, a library's) must not catch
    the stop and report it as, say, a damaged weights file."""
    from metarec.service.server import _stopped_cleanly

    reached = []
    with _stopped_cleanly():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here, before the sleep ends
        except Exception:  # what a loader does
            reached.append("caught as an error")
        reached.append("went on loading")
    assert reached == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        # a dual-stack socket (--host ::) shows 127.0.0.1 so: its writes were refused
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", False),
        ("10.0.0.1", False),
        ("example.com", False),
        (None, False),
    ],
)
def test_loopback_clients_are_known_on_any_socket(host: str | None, loopback: bool) -> None:
    from metarec.service.access import is_loopback

    assert is_loopback(host) is loopback


def test_the_command_catches_a_sighup_before_its_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGHUP's default ends a process, and the CLI's imports take tenths of a second: a
    reload asked for as `metarec serve` started stopped it (exit 129)."""
    import metarec.cli
    from metarec import launch

    seen: list[object] = []
    monkeypatch.setattr(
        metarec.cli, "main", lambda: seen.append(signal.getsignal(signal.SIGHUP)) or 0
    )
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        for argv, caught in (["metarec", "train"], False), (["metarec", "serve", "run"], True):
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            monkeypatch.setattr(sys, "argv", argv)
            assert launch.main() == 0
            assert (seen[-1] is not signal.SIG_DFL) is caught, argv
    finally:
        signal.signal(signal.SIGHUP, before)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("bogus://x", "unsupported database 'bogus'"),
        ("sqlite://", "the SQLite store must be a file"),
        ("not a url", "not a database URL"),
        # a port that is no number: a ValueError's traceback and exit code 1
        ("postgresql://u:secret@127.0.0.1:notaport/db", "'postgresql://u:***@127.0.0.1:notaport"),
        # echoed whole, password and all
        ("mysql://metarec:secret@127.0.0.1/x", "--db 'mysql://metarec:***@127.0.0.1/x'"),
        ("bogus://u@h/x?sslmode=require&password=secret", "password=***"),
    ],
)
def test_a_store_url_no_store_takes_is_refused_before_the_run_loads(
    service_run: Path,
    cli: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    needle: str,
) -> None:
    # refused only after the model had loaded (seconds, minutes for a large run)
    from metarec.service import server

    def loaded(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the run was loaded before the store URL was checked")

    monkeypatch.setattr(server, "serve", loaded)
    res = cli("serve", str(service_run), "--db", url, "--port", "0")
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr, res.stderr
    assert "secret" not in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_store_shows_its_url_without_a_password(tmp_path: Path) -> None:
    from metarec.service.store import FeedbackStore, shown_url

    # libpq's ?password= form reached the startup line ("feedback store ...&password=")
    assert shown_url("postgresql://u@h/db?password=pw&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )
    assert shown_url("postgresql://u:p%40w@h:5/db?SSLPASSWORD=k") == (
        "postgresql://u:***@h:5/db?SSLPASSWORD=***"
    )
    # a password holding / ? # or @, which SQLAlchemy takes, was shown whole or in part
    for secret in ("pa/ss", "pa?ss", "pa#ss", "p@ss"):
        assert shown_url(f"mysql://u:{secret}@h/x") == "mysql://u:***@h/x", secret
    assert shown_url("postgresql://h:5432/db?application_name=a") == (
        "postgresql://h:5432/db?application_name=a"  # no password: nothing hidden
    )
    db = tmp_path / "f.db"
    assert FeedbackStore(f"sqlite:///{db}").url.startswith(f"sqlite:///{db}")


def test_a_runs_dir_that_is_no_folder_is_refused(
    service_run: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"runs_dir: .* is not a folder"):
        ServiceSettings(run=Path("run"), runs_dir=tmp_path / "missing")
    res = cli("serve", str(service_run), "--runs-dir", str(service_run / "items.json"))
    assert (
        res.returncode == 2 and "--runs-dir: " in res.stderr and "is not a folder" in (res.stderr)
    ), res.stderr


def test_every_origin_on_a_keyless_server_is_refused(
    service_run: Path, cli: Callable[..., Any]
) -> None:
    # any website open in the machine's browser wrote to it, reloads included
    with pytest.raises(ConfigError, match=r"cors_origins: '\*' on a server without an API key"):
        ServiceSettings(run=Path("run"), cors_origins=("*",))
    assert ServiceSettings(run=Path("run"), api_key="k", cors_origins=("*",)).cors_origins
    res = cli("serve", str(service_run), "--cors", "*", "--port", "0")
    assert res.returncode == 2 and "--cors: '*' on a server without an API key" in res.stderr


def test_a_key_handed_to_the_page_is_one_a_browser_can_send() -> None:
    # 'clé' is a key curl sends as UTF-8; a browser sends é as one byte, or refuses it
    with pytest.raises(ConfigError, match="page_api_key: the page's browser cannot send"):
        ServiceSettings(run=Path("run"), api_key="clé", page_api_key=True)
    assert ServiceSettings(run=Path("run"), api_key="clé").api_key == "clé"  # curl's to send
    assert ServiceSettings(run=Path("run"), api_key="my key", page_api_key=True).page_api_key


def test_a_keyless_server_says_so_once_and_no_empty_fold_in(
    service_run: Path, tmp_path: Path
) -> None:
    """`metarec serve` without a key printed the warning twice (its own line and the
    app's log, in capitals), and 'fold-in: 0 new items from 0 ratings' on a new store."""
    env = {k: v for k, v in os.environ.items() if k != "METAREC_API_KEY"}
    env["PYTHONUNBUFFERED"] = "1"
    log = tmp_path / "log"
    cmd = [sys.executable, "-m", "metarec.cli", "serve", str(service_run),
           "--db", f"sqlite:///{tmp_path / 'f.db'}", "--port", "0"]  # fmt: skip
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_ready(served_url(log, proc), proc)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    text = log.read_text()
    assert text.lower().count("no api key") == 1, text
    assert "fold-in:" not in text, text

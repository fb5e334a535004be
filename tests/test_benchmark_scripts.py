"""The scripts in benchmarks/ import what the library still has and answer bad input
as `metarec` does (one line, exit 2), before any work: they are run rarely, so a
renamed function or a silently accepted 0 would otherwise surface only when a result
is being reproduced."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


ALL_SCRIPTS = sorted(p.relative_to(BENCHMARKS).as_posix() for p in BENCHMARKS.rglob("*.py"))


def _metarec_imports(tree: ast.AST) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of metarec in ``tree``, at any depth, and in
    any string in it that is Python itself (code a script hands a child process)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("metarec"):
            yield node.lineno, str(node.module), [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("metarec"):
                    yield node.lineno, alias.name, []
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "metarec" in node.value
            and "import" in node.value
        ):
            try:
                inner = ast.parse(node.value)
            except SyntaxError:
                continue
            for _, module, names in _metarec_imports(inner):
                yield node.lineno, module, names


@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_every_import_of_metarec_a_script_makes_resolves(script: str) -> None:
    # --help reaches only the imports at the top: those inside functions, and the code
    # the scripts pass to child processes as text, ran first when a result was rebuilt
    tree = ast.parse((BENCHMARKS / script).read_text(encoding="utf-8"))
    for line, module, names in _metarec_imports(tree):
        imported = importlib.import_module(module)
        for name in names:
            if name == "*" or hasattr(imported, name):
                continue
            try:  # a submodule its package does not import itself
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                pytest.fail(f"{script}:{line}: from {module} import {name}: no such name")


# Each script run as `python SCRIPT ARGS` would run it, but all in one child process:
# a process each paid the 2 s that importing torch costs, 14 times over, for runs
# that end at argparse. The child is still apart from the tests, and every script
# gets a fresh __main__ namespace; what a script leaves behind (a module it imported)
# is harmless to the next one's --help.
_DRIVER = """
import contextlib, io, json, runpy, sys, traceback
sys.path.insert(0, sys.argv[1])  # what `python SCRIPT` puts first: the script's folder
answers = []
for argv in json.loads(sys.stdin.read()):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        sys.argv = argv
        try:
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
    answers.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(answers))
"""

BAD_INPUT = [
    (["compiled_outer_step.py", "--epochs", "0"], "argument --epochs: must be > 0, got 0"),
    (["time_popularity.py", "--data", "/no/such/folder"], "/no/such/folder: no such folder"),
    (["stacked_variants.py", "x", '{"nope": 1}'], "['nope'] are not StackedRanker options"),
    (["time_popularity.py", "--out", "AFILE"], "--out AFILE: is a file"),
]


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, str]]:
    """Exit code, stdout and stderr of every run the tests below check, by its
    command line."""
    afile = tmp_path_factory.mktemp("out") / "afile"
    afile.write_text("")
    runs = [[script, "--help"] for script in SCRIPTS]
    runs += [[str(afile) if a == "AFILE" else a for a in args] for args, _ in BAD_INPUT]
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(BENCHMARKS)],
        input=json.dumps(runs), capture_output=True, text=True, timeout=300, cwd=BENCHMARKS,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    replies = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(replies) == len(runs)
    # the temporary file's path read as AFILE, in the command line and the messages
    return {
        " ".join(run).replace(str(afile), "AFILE"): (code, out, err.replace(str(afile), "AFILE"))
        for run, (code, out, err) in zip(runs, replies, strict=True)
    }


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_starts(script: str, answers: dict[str, tuple[int, str, str]]) -> None:
    code, out, err = answers[f"{script} --help"]
    assert code == 0, err
    assert "--data" in out and "--out" in out


@pytest.mark.slow
@pytest.mark.parametrize(("args", "needle"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], needle: str, answers: dict[str, tuple[int, str, str]]
) -> None:
    code, _, err = answers[" ".join(args)]
    assert code == 2, err
    assert "Traceback" not in err and needle in err.strip().splitlines()[-1]


def test_service_benchmark_client_keeps_connections_and_replaces_closed_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The latency benchmark's own HTTP client (a real loopback server here): answers
    come back whole, one connection serves request after request, and a connection the
    server closed while idle is replaced rather than counted as a failed request."""
    import asyncio
    import json

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from service_latency import RawHttp

    async def scenario() -> None:
        opened = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal opened
            opened += 1
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                target = head.split(b" ")[1]
                body = json.dumps({"target": target.decode()}).encode()
                status = b"404 Not Found" if b"missing" in target else b"200 OK"
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body
                )
                await writer.drain()
                if b"bye" in target:  # closes after answering, as an idle timeout would
                    break
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = RawHttp(f"http://127.0.0.1:{port}")
        try:
            assert await client.get("/v1/x?k=10") == (200, b'{"target": "/v1/x?k=10"}')
            assert (await client.get("/missing"))[0] == 404
            assert opened == 1
            assert (await client.get("/bye"))[0] == 200
            await asyncio.sleep(0.1)  # the server has closed that connection
            assert await client.get("/after") == (200, b'{"target": "/after"}')
            assert opened == 2
        finally:
            client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux /proc")
def test_service_benchmark_counts_the_cpu_of_worker_processes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With --workers the model work runs in child processes of the server: their CPU
    time is the server's too (the parent alone would read as almost idle)."""
    import time

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from service_latency import Server

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
    burn += "open(__import__('sys').argv[1], 'w').close()\ntime.sleep(60)"
    flag = tmp_path / "burnt"
    parent = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {burn!r}, {str(flag)!r}])\n"
        "time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent])
    server = Server(proc, "http://unused", tmp_path / "log")
    try:
        deadline = time.monotonic() + 30
        while not flag.exists():
            assert time.monotonic() < deadline, "the child did not burn its CPU"
            time.sleep(0.05)
        cpu = server.cpu_seconds()
        assert cpu is not None and cpu >= 0.5
    finally:
        for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
            subprocess.run(["kill", child], check=False)
        server.stop()


@pytest.mark.slow
def test_the_memory_benchmark_measures_a_fit(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the fit runs in a child process from code held as text, which --help never runs
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from ranker_memory import measure

    row = measure("ml-100k", "episodic-binary", str(shared_data))
    assert row["items"] == 1682 and row["fit_s"] > 0  # ml-100k's catalogue
    assert row["bytes"] > 0 and row["bytes_per_item_pair"] == row["bytes"] / 1682**2


def test_the_capped_rankers_benchmark_writes_its_record(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # its results folder was shadowed by a fit's scores: every fit ran, then the
    # write failed with a TypeError and the results were lost
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import capped_rankers

    monkeypatch.setattr(capped_rankers, "RUNS", (("ml-100k", "episodic", (250,)),))
    out = tmp_path / "out"
    argv = ["capped_rankers.py", "--data", str(shared_data), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    capped_rankers.main()
    record = json.loads((out / "capped-rankers.json").read_text())
    assert [r["items_fitted"] for r in record["runs"]] == [250] and record["seed"] == 0
    assert (out / "capped-rankers.md").read_text().startswith("# What `max_items` costs")

"""Service latency: requests/s and p50/p95/p99 of recommendations for cold users.

The real server (``metarec serve``'s code: uvicorn, ``--workers`` processes,
default one, a fresh SQLite feedback store) runs on loopback with a trained
run; this process creates users with 10 real MovieLens ratings each through
the API, then drives an open-loop load of ``GET /v1/users/{id}/recommendations?k=10`` at a fixed
target rate (requests are sent on schedule whether or not earlier ones have
answered, so a slow server cannot slow the load down and hide its queueing).
Latency is measured from each request's scheduled send time to its last
byte, so time a request waited behind a lagging client counts too.

Two scenarios, each with a short warm-up that is not counted:

* ``cold``: every request is a user's first recommendation after being
  created with 10 ratings, so the server adapts the model on every request
  (its adaptation cache cannot help). This is the project's service target:
  p99 <= 50 ms at >= 200 requests/s.
* ``cached``: repeated requests for a small pool of such users, whose
  adapted state the server keeps: what a page refreshing its list costs.

Results: ``benchmarks/results/service-latency.json`` (raw figures, server
process CPU, machine, command) and ``.md`` (a table and the command).

    python benchmarks/service_latency.py --data ../shared/data
    python benchmarks/service_latency.py --run runs/quickstart --rate 200 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
from _cli import data_folder, non_negative_float, positive_float, positive_int, results_folder
from _cli import run as cli_run

from metarec.errors import MetarecError
from metarec.evaluation.machine import machine_info
from metarec.evaluation.report import describe_machine
from metarec.io import load_json, save_json, write_bytes_atomic

ROOT = Path(__file__).resolve().parents[1]
TARGET = {"p99_ms": 50.0, "requests_per_s": 200.0}
RATINGS_PER_USER = 10
REQUEST_TIMEOUT_S = 30.0  # a request not answered by then counts as an error
K = 10
# The server's own process (and its workers), as `metarec serve` runs it.
SERVER_CODE = """
import sys
from pathlib import Path
from metarec.service.server import serve
from metarec.service.settings import ServiceSettings
serve(ServiceSettings(run=Path(sys.argv[1]), db_url=sys.argv[2], torch_threads=int(sys.argv[4])),
      host="127.0.0.1", port=int(sys.argv[3]), workers=int(sys.argv[5]))
"""


# -- the run and the users ---------------------------------------------------------------
def train_run(out: Path, data: str | None, overrides: list[str]) -> Path:
    """A small ml-100k run with the default model shape (only the epochs are few): the
    served network is the one `metarec train` makes, so its latency is the one measured."""
    from metarec import load_dataset, train
    from metarec.config import TrainConfig

    cfg = TrainConfig(epochs=3).with_overrides(overrides)
    if (out / "recommender.json").exists():
        saved = load_json(out / "recommender.json")["config"]
        if saved == cfg.to_dict():
            print(f"reusing the trained run {out}", file=sys.stderr)
            return out
    print(f"training a small ml-100k run into {out} ...", file=sys.stderr)
    train(load_dataset("ml-100k", root=data), cfg, run_dir=out, progress=False)
    return out


def histories(data: str | None, n: int, seed: int) -> list[list[dict[str, Any]]]:
    """``n`` histories of 10 real ratings: random MovieLens users' random ratings (users
    repeat when ``n`` exceeds the dataset's users; each becomes a new service user)."""
    from metarec import load_dataset

    frame = load_dataset("ml-100k", root=data).interactions
    rng = np.random.default_rng(seed)
    groups = [g for _, g in frame.groupby("user_id") if len(g) >= RATINGS_PER_USER]
    out = []
    for u in rng.integers(0, len(groups), size=n):
        g = groups[int(u)]
        rows = g.iloc[rng.choice(len(g), RATINGS_PER_USER, replace=False)]
        out.append(
            [
                {"item_id": str(i), "rating": float(r)}
                for i, r in zip(rows["item_id"], rows["rating"], strict=True)
            ]
        )
    return out


# -- the server ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def cpu_seconds(self) -> float | None:
        """User + system CPU time so far of the server process and its worker processes
        (Linux /proc; a worker that exited has left its time out)."""
        total, pending = 0, [self.proc.pid]
        try:
            while pending:
                pid = pending.pop()
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            return None
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_server(run: Path, workdir: Path, torch_threads: int = 0, workers: int = 1) -> Server:
    """``torch_threads``: each worker's torch intra-op threads (``metarec serve
    --torch-threads``; model work runs one batch at a time, so 1 is the default);
    ``workers``: server processes (``metarec serve --workers``)."""
    port = free_port()
    log = workdir / "server.log"
    db = f"sqlite:///{workdir / 'feedback.db'}"
    argv = [str(run), db, str(port), str(torch_threads), str(workers)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_CODE, *argv],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(server.url + "/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise SystemExit(f"the server did not become ready in 120 s:\n{log.read_text()}")


# -- the load --------------------------------------------------------------------------------
async def create_users(
    client: httpx.AsyncClient, prefix: str, rated: list[list[dict[str, Any]]]
) -> list[str]:
    sem = asyncio.Semaphore(8)
    ids = [f"{prefix}-{n:06d}" for n in range(len(rated))]

    async def one(uid: str, ratings: list[dict[str, Any]]) -> None:
        async with sem:
            r = await client.post("/v1/users", json={"user_id": uid, "ratings": ratings})
            if r.status_code != 201:
                raise SystemExit(f"creating {uid}: HTTP {r.status_code}: {r.text}")

    await asyncio.gather(*(one(u, r) for u, r in zip(ids, rated, strict=True)))
    return ids


class RawHttp:
    """A lean HTTP/1.1 GET client for the measured load: keep-alive connections over
    asyncio streams, one request at a time on each, opened as the load needs them.

    httpx spent 3 to 5 ms of CPU a request at 200 requests/s (the client's CPU is in
    every record), a whole core of this 2-core machine beside the server's, so the load
    generator itself held the server back; this costs a fraction of that. Creating users
    (not measured) still goes through httpx.
    """

    # uvicorn closes a connection idle for 5 s (its timeout_keep_alive); older ones
    # are dropped here rather than written to as the server closes them
    MAX_IDLE_S = 4.0

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def get(self, target: str) -> tuple[int, bytes]:
        """Status and body of ``GET target``; ``OSError``/``ValueError`` when the
        connection fails or the response is not the plain one the service sends."""
        while self._idle:
            reader, writer, since = self._idle.pop()
            if time.monotonic() - since < self.MAX_IDLE_S:
                try:
                    return await self._exchange(reader, writer, target)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:  # the server answered part: a real failure
                        raise
                    # closed by the server before answering: as any client, try anew
            else:
                writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return await self._exchange(reader, writer, target)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str
    ) -> tuple[int, bytes]:
        try:
            writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise ValueError(f"not an HTTP status line: {lines[0]!r:.80}")
            status = int(parts[1])
            fields = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            if "content-length" not in fields:
                raise ValueError(f"no Content-Length in the response to {target}")
            body = await reader.readexactly(int(fields["content-length"]))
        except BaseException:
            writer.close()
            raise
        if fields.get("connection", "").lower() == "close":
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        return status, body

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


@dataclass
class LoadResult:
    scheduled: int
    latency_ms: list[float] = field(default_factory=list)  # from scheduled send, ok only
    service_ms: list[float] = field(default_factory=list)  # from actual send, ok only
    errors: Counter[str] = field(default_factory=Counter)
    dropped: int = 0  # not sent: too many requests already in flight
    wall_s: float = 0.0
    server_cpu_s: float | None = None
    client_cpu_s: float = 0.0


async def open_loop(
    client: RawHttp,
    user_ids: list[str],
    *,
    rate: float,
    duration: float,
    warmup: float,
    max_in_flight: int,
    server: Server,
) -> LoadResult:
    """Send request i at t0 + i/rate (warm-up first, not counted), user ids in turn."""
    n_warm, n_main = int(rate * warmup), int(rate * duration)
    res = LoadResult(scheduled=n_main)
    in_flight = 0
    tasks: list[asyncio.Task[None]] = []

    async def one(uid: str, due: float, counted: bool) -> None:
        nonlocal in_flight
        sent = time.perf_counter()
        try:
            status, body = await asyncio.wait_for(
                client.get(f"/v1/users/{quote(uid)}/recommendations?k={K}"), REQUEST_TIMEOUT_S
            )
            ok = status == 200 and len(json.loads(body)["items"]) == K
            outcome = "ok" if ok else f"HTTP {status}"
        except Exception as exc:  # any failure is a failed request, counted by its kind
            outcome = type(exc).__name__
        done = time.perf_counter()
        in_flight -= 1
        if not counted:
            return
        if outcome == "ok":
            res.latency_ms.append((done - due) * 1e3)
            res.service_ms.append((done - sent) * 1e3)
        else:
            res.errors[outcome] += 1

    t0 = time.perf_counter() + 0.05
    cpu0 = cpu_main = server.cpu_seconds()
    proc0 = time.process_time()
    for i in range(n_warm + n_main):
        due = t0 + i / rate
        if i == n_warm:
            cpu_main, proc0 = server.cpu_seconds(), time.process_time()
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= max_in_flight:
            res.dropped += i >= n_warm
            continue
        in_flight += 1
        tasks.append(asyncio.create_task(one(user_ids[i % len(user_ids)], due, i >= n_warm)))
    await asyncio.gather(*tasks)
    res.wall_s = time.perf_counter() - (t0 + n_warm / rate)
    cpu1 = server.cpu_seconds()
    if cpu0 is not None and cpu_main is not None and cpu1 is not None:
        res.server_cpu_s = cpu1 - cpu_main
    res.client_cpu_s = time.process_time() - proc0
    return res


def summarise(res: LoadResult, rate: float, duration: float) -> dict[str, Any]:
    def pct(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
        a = np.asarray(values)
        return {
            "p50": round(float(np.percentile(a, 50)), 2),
            "p95": round(float(np.percentile(a, 95)), 2),
            "p99": round(float(np.percentile(a, 99)), 2),
            "max": round(float(a.max()), 2),
            "mean": round(float(a.mean()), 2),
        }

    ok = len(res.latency_ms)
    return {
        "target_requests_per_s": rate,
        "duration_s": duration,
        "scheduled": res.scheduled,
        "ok": ok,
        "errors": dict(res.errors),
        "dropped": res.dropped,
        "achieved_requests_per_s": round(ok / res.wall_s, 1) if res.wall_s > 0 else 0.0,
        "wall_s": round(res.wall_s, 2),
        "latency_ms": pct(res.latency_ms),
        "service_time_ms": pct(res.service_ms),
        "server_cpu_s": None if res.server_cpu_s is None else round(res.server_cpu_s, 2),
        "client_cpu_s": round(res.client_cpu_s, 2),
    }


async def run_load(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.max_in_flight, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
        n_cold = int(args.rate * (args.duration + args.warmup)) + 1
        rated = histories(args.data, n_cold + args.cached_users, args.seed)
        t = time.perf_counter()
        cold_ids = await create_users(client, "bench-cold", rated[:n_cold])
        cached_ids = await create_users(client, "bench-cached", rated[n_cold:])
        created_s = time.perf_counter() - t
        print(f"created {len(rated)} users in {created_s:.1f} s", file=sys.stderr)
        out: dict[str, Any] = {"users_created": len(rated), "create_users_s": round(created_s, 2)}
        common = {
            "rate": args.rate,
            "duration": args.duration,
            "warmup": args.warmup,
            "max_in_flight": args.max_in_flight,
            "server": server,
        }
        for name, ids in (("cold", cold_ids), ("cached", cached_ids)):
            print(f"{name}: {args.rate:g} req/s for {args.duration:g} s ...", file=sys.stderr)
            load = RawHttp(server.url)
            try:
                result = await open_loop(load, ids, **common)
            finally:
                load.close()
            out[name] = summarise(result, args.rate, args.duration)
        return out


# -- report ----------------------------------------------------------------------------------
def _workers(record: dict[str, Any]) -> str:
    n = record.get("server_workers", 1)  # records from before --workers: one
    return "one worker process" if n == 1 else f"{n} worker processes"


def markdown(record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = [
        "# Service latency: recommendations for cold users (10 ratings each)",
        "",
        f"Reproduce: `{record['command']}`",
        "",
        f"Machine: {describe_machine(m)}, Python {m['python']}; server: "
        f"uvicorn, {_workers(record)}, SQLite feedback store, loopback; open-loop load from a "
        "separate "
        "process (keep-alive HTTP/1.1 over asyncio streams); latency from each request's "
        "scheduled send time. "
        f"Run: `{record['run']['name']}` ({record['run']['n_items']} items, "
        f"{record['run']['algorithm']}, {record['run']['inner_steps']} inner steps); "
        f"server torch threads: {record['server_torch_threads']}; load average before: "
        f"{', '.join(map(str, record['load_average_before']))}.",
        "",
        "| scenario | target req/s | achieved req/s | p50 ms | p95 ms | p99 ms | max ms "
        "| errors | dropped | server CPU % | server CPU ms/request | load client CPU ms/request |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}"

    for name in ("cold", "cached"):
        s = record["scenarios"][name]
        lat = s["latency_ms"]
        cpu = s["server_cpu_s"]
        cpu_pct = "—" if cpu is None else f"{100 * cpu / s['wall_s']:.0f}"
        answered = s["ok"] + sum(s["errors"].values())
        per_req = "—" if cpu is None or not answered else f"{1e3 * cpu / answered:.1f}"
        client = "—" if not answered else f"{1e3 * s['client_cpu_s'] / answered:.1f}"
        errors = ", ".join(f"{n} × {kind}" for kind, n in s["errors"].items()) or "0"
        lines.append(
            f"| {name} | {s['target_requests_per_s']:g} | {s['achieved_requests_per_s']:g} "
            f"| {ms(lat['p50'])} | {ms(lat['p95'])} | {ms(lat['p99'])} | {ms(lat['max'])} "
            f"| {errors} | {s['dropped']} | {cpu_pct} | {per_req} | {client} |"
        )
    t = record["target"]
    verdict = "met" if record["target_met"] else "missed"
    lines += [
        "",
        f"Target (the project's, cold): p99 <= {t['p99_ms']:g} ms at >= "
        f"{t['requests_per_s']:g} requests/s: **{verdict}**.",
        "",
        "`cold`: each request is a new user's first recommendation (the server adapts on every "
        "request). `cached`: repeated requests for "
        f"{record['cached_users']} users whose adapted state the server keeps.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="a trained run folder (default: train a small one)")
    p.add_argument(
        "--data", type=data_folder, help="folder holding ml-100k/ (default: metarec's lookup)"
    )
    p.add_argument("--train-out", type=Path, default=ROOT / "runs" / "service-latency-ml-100k")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--rate", type=positive_float, default=200.0, help="target requests/s (open loop)"
    )
    p.add_argument(
        "--duration", type=positive_float, default=30.0, help="seconds measured per scenario"
    )
    p.add_argument(
        "--warmup", type=non_negative_float, default=3.0, help="seconds not counted, per scenario"
    )
    p.add_argument(
        "--max-in-flight", type=positive_int, default=256, help="beyond this, requests drop"
    )
    p.add_argument("--cached-users", type=positive_int, default=100)
    p.add_argument(
        "--torch-threads",
        type=positive_int,
        default=1,
        help="server's torch threads (the service's default: 1)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="server processes (metarec serve --workers; default 1)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    results_folder(args.out)  # a file there: refused now, not after the load test
    if args.run is not None and not (args.run / "recommender.json").is_file():
        raise MetarecError(f"--run {args.run}: not a metarec run folder (no recommender.json)")

    run = args.run.resolve() if args.run else train_run(args.train_out, args.data, args.overrides)
    meta = load_json(run / "recommender.json")
    with tempfile.TemporaryDirectory(prefix="metarec-bench-") as tmp:
        load_before = os.getloadavg()
        server = start_server(run, Path(tmp), args.torch_threads, args.workers)
        try:
            figures = asyncio.run(run_load(server, args))
        finally:
            server.stop()
        failed = any(figures[n]["errors"] for n in ("cold", "cached"))
        if failed:  # the server's own account of what went wrong, before its folder goes
            tail = server.log.read_text(errors="replace").splitlines()[-60:]
            print("server log (last lines):\n" + "\n".join(tail), file=sys.stderr)
    cold = figures["cold"]
    record = {
        "benchmark": "service-latency",
        "k": K,
        "ratings_per_user": RATINGS_PER_USER,
        "cached_users": args.cached_users,
        "seed": args.seed,
        "target": TARGET,
        # kept up with the offered rate: every scheduled request answered, none dropped
        # (the achieved rate counts until the last response, so a server that keeps up
        # reads a little under the offered rate, and cannot be the test)
        "target_met": bool(
            cold["latency_ms"]["p99"] is not None
            and cold["latency_ms"]["p99"] <= TARGET["p99_ms"]
            and args.rate >= TARGET["requests_per_s"]
            and cold["ok"] == cold["scheduled"]
        ),
        "scenarios": {"cold": cold, "cached": figures["cached"]},
        "users_created": figures["users_created"],
        "create_users_s": figures["create_users_s"],
        "run": {
            "path": str(run),
            "name": run.name,
            "n_items": meta["n_items"],
            "algorithm": meta["config"]["algorithm"],
            "inner_steps": meta["config"]["inner_steps"],
            "model": meta["config"]["model"],
        },
        "server_torch_threads": args.torch_threads,
        "server_workers": args.workers,
        # other work on the machine skews every figure: the 1/5/15-minute load at the start
        "load_average_before": [round(x, 2) for x in load_before],
        "machine": machine_info(),
        "command": "python benchmarks/service_latency.py "
        + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    # the default rate (the target) keeps the plain name; other rates get their own files
    stem = "service-latency" + ("" if args.rate == 200 else f"-{args.rate:g}rps")
    stem += "" if args.workers == 1 else f"-{args.workers}workers"
    save_json(args.out / f"{stem}.json", record)
    write_bytes_atomic(args.out / f"{stem}.md", markdown(record).encode())
    print(markdown(record))
    return 0


if __name__ == "__main__":
    cli_run(main)

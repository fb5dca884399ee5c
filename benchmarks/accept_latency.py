"""Throughput and latency of the accept path, ``POST /optimize_portfolio``, against a bare FastAPI endpoint.

Everything in one run on one machine, so the ratio is meaningful on a loaded machine:

1. **bare**: ``benchmarks.bare_app`` (a FastAPI endpoint that parses a small pydantic body),
   one uvicorn process, saturated with ``wrk -t2 -c64``;
2. **accept (moments, 8 assets)**: the real API, one uvicorn process, on PostgreSQL + RedisHuey
   (no worker: only the accept path is measured), saturated the same way;
3. **accept (prices, 20 × 755)**: the same API with a 20-asset × 755-row price history body;
4. **open loop**: the 8-asset body at a fixed rate (default 300 req/s) from an asyncio client;
   requests are sent on schedule whatever the server's speed, so queueing delay shows up in
   the percentiles instead of hiding in the client (wrk is closed-loop; wrk2 is not packaged).

``--embedded`` adds the open-loop row on the embedded default (SQLite + SqliteHuey); ``--auth``
adds rows with an API key (``QHYBRID_API_KEYS``) and a rate limit too high to refuse anything
(``QHYBRID_RATE_LIMIT``, counted in Redis), to measure what authentication and limiting cost.
The load average before and after is printed: the machine is shared with other work.

``--workers 2`` adds the price body on ``qhybrid serve --workers 2`` as a separate, labelled row
(the targets are for one process).

Run: ``.venv/bin/python -m benchmarks.accept_latency [--rate 300] [--seconds 10]``
(needs ``wrk`` on the PATH: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import psycopg
import redis

from benchmarks.report import machine, markdown_table

try:
    import uvloop as _uvloop

    uvloop: Any = _uvloop
except ImportError:  # uvicorn[standard] brings it; the client works without it, only slower
    uvloop = None
from qhybrid.demo import sample_request
from tests.support.processes import free_port, start_process

POSTGRES_ADMIN = os.environ.get("QHYBRID_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("QHYBRID_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{headers}
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def moments_body(n: int = 8) -> dict[str, Any]:
    """An ``n``-asset request given as moments (μ and a PSD Σ), as a bank's risk system sends it."""
    rng = np.random.default_rng(12)
    factors = rng.normal(size=(n, n)) * 0.01
    sigma = factors @ factors.T + np.eye(n) * 1e-4
    return {
        "assets": [
            {"name": f"A{i:02d}", "expected_return": round(float(rng.normal(0.001, 0.0005)), 6)}
            for i in range(n)
        ],
        "covariance": [[round(float(v), 10) for v in row] for row in (sigma + sigma.T) / 2],
        "risk_aversion": 0.5,
        "budget": n // 2,
        "backend": "emulated-cloud",
        "shots": 1024,
    }


def prices_body() -> dict[str, Any]:
    """The demo's request on all 20 bundled tickers and 755 daily closes."""
    from qhybrid.portfolio.data import load_sp500

    names, _, _ = load_sp500()
    return sample_request(tickers=tuple(names[:20]), days=755)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(
    url: str,
    body_file: Path,
    seconds: float,
    connections: int,
    headers: dict[str, str] | None = None,
    pid: int | None = None,
) -> dict[str, Any]:
    """Saturate ``url`` with wrk; with ``pid``, also the server's CPU time per answered request.

    CPU time is what a request costs the server whatever else runs on the machine, where req/s
    falls with the share of the cores the server gets: the column to compare across a loaded run.
    """
    script = body_file.with_suffix(".lua")
    extra = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in (headers or {}).items())
    script.write_text(_WRK_SCRIPT.format(body=body_file, headers=extra))
    cpu_before = _cpu_seconds(pid) if pid is not None else 0.0
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cpu = _cpu_seconds(pid) - cpu_before if pid is not None else None
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    latency = dict(re.findall(r"\s+(50|99)(?:\.000)?%\s+([\d.]+\w+)", out))
    return {
        "req/s": round(rate),
        "requests": total,
        "non-2xx": int(bad.group(1)) if bad else 0,
        "socket errors": errors.group(0).split(":", 1)[1].strip() if errors else "0",
        "p50": latency.get("50", "?"),
        "p99": latency.get("99", "?"),
        "client send lag p99": "-",
        "server CPU per request": f"{cpu / total * 1000:.2f}ms" if cpu is not None and total else "-",
    }


class _Connection(asyncio.Protocol):
    """One keep-alive connection of the open-loop client: a request at a time, answers parsed in place.

    A protocol, not asyncio streams and a task per request: the client shares the machine's two
    cores with the server, and its own CPU per request showed up as send lag in the tail.
    """

    def __init__(self, done: Callable[[_Connection, int, float], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.scheduled = 0.0
        self.done = done
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end])
        match = re.search(rb"(?i)content-length:\s*(\d+)", head)
        total = end + 4 + (int(match.group(1)) if match else 0)
        if len(self.buffer) < total:
            return
        del self.buffer[:total]
        self.done(self, int(head.split(b" ", 2)[1]), self.scheduled)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


async def _fire(
    host: str, port: int, path: str, rate: float, seconds: float, body: bytes, headers: dict[str, str]
) -> tuple[list[float], list[float], int, float]:
    """Send ``rate`` requests a second for ``seconds``, each on schedule; latencies, lags and errors.

    A raw HTTP/1.1 client over keep-alive connections (a new one whenever none is idle): httpx
    costs about a millisecond of CPU per request, which on a loaded 2-core machine made the client,
    not the server, the bottleneck. Each latency runs from the request's scheduled send time, so a
    client that falls behind shows up in the figures (no coordinated omission); the lag of each
    send behind its schedule is returned too, so a tail made by the client itself can be told apart.
    """
    loop = asyncio.get_running_loop()
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    idle: list[_Connection] = []
    opened: list[_Connection] = []
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    total = int(rate * seconds)
    finished = loop.create_future()
    answered = 0

    def done(connection: _Connection, status: int, scheduled: float) -> None:
        nonlocal errors, answered
        if status == 202:
            latencies.append(time.perf_counter() - scheduled)
        else:
            errors += 1
        idle.append(connection)
        answered += 1
        if answered == total and not finished.done():
            finished.set_result(None)

    def send(connection: _Connection, scheduled: float) -> None:
        connection.scheduled = scheduled
        lags.append(time.perf_counter() - scheduled)
        assert connection.transport is not None
        connection.transport.write(request)

    async def open_and_send(scheduled: float) -> None:
        nonlocal errors, answered
        try:
            _, connection = await loop.create_connection(lambda: _Connection(done), host, port)
        except OSError:
            errors += 1
            answered += 1
            if answered == total and not finished.done():
                finished.set_result(None)
            return
        opened.append(connection)
        send(connection, scheduled)

    pending: set[asyncio.Task[None]] = set()
    begin = time.perf_counter()
    for index in range(total):
        scheduled = begin + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        while idle and idle[-1].lost:
            idle.pop()
        if idle:
            send(idle.pop(), scheduled)
        else:
            task = asyncio.ensure_future(open_and_send(scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
    # A connection lost with a request in flight never answers: give up after a while.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(finished, timeout=30)
    errors += total - answered
    elapsed = time.perf_counter() - begin
    for connection in opened:
        if connection.transport is not None:
            connection.transport.close()
    return latencies, lags, errors, total / elapsed


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _open_loop(
    port: int, body: bytes, rate: float, seconds: float, headers: dict[str, str]
) -> dict[str, Any]:
    run = uvloop.run if uvloop is not None else asyncio.run
    path = "/optimize_portfolio"
    run(_fire("127.0.0.1", port, path, min(rate, 50), 1.0, body, headers))  # warm-up
    latencies, lags, errors, achieved = run(_fire("127.0.0.1", port, path, rate, seconds, body, headers))
    ms = [value * 1000 for value in latencies] or [float("nan")]
    lag_ms = [value * 1000 for value in lags] or [float("nan")]
    return {
        "req/s": f"{achieved:.0f} (target {rate:.0f})",
        "requests": len(latencies) + errors,
        "non-2xx": errors,
        "socket errors": "-",
        "p50": f"{_percentile(ms, 0.50):.1f}ms",
        "p99": f"{_percentile(ms, 0.99):.1f}ms",
        "client send lag p99": f"{_percentile(lag_ms, 0.99):.1f}ms",
        "server CPU per request": "-",
    }


@contextmanager
def _postgres_and_redis() -> Iterator[dict[str, str]]:
    database = f"qhybrid_bench_{uuid.uuid4().hex[:8]}"
    queue_name = f"bench-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield {
            "QHYBRID_DATABASE_URL": f"{base}/{database}",
            "QHYBRID_REDIS_URL": REDIS_URL,
            "QHYBRID_QUEUE_NAME": queue_name,
        }
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"*{queue_name}*"))
        if keys:
            client.delete(*keys)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def main() -> None:
    """Measure the bare endpoint and the accept path in one run; print a Markdown table and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=300.0, help="open-loop requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measured run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument(
        "--embedded", action="store_true", help="add the open-loop row on SQLite + SqliteHuey"
    )
    parser.add_argument(
        "--auth", action="store_true", help="add rows with an API key and a (never reached) rate limit"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also measure the price body on `qhybrid serve --workers N` (an additional, labelled row)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not on the PATH (apt-get install wrk)")
    load_before = _load()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bodies = {
            "bare": json.dumps({"name": "AAPL", "value": 0.0012}).encode(),
            "moments": json.dumps(moments_body(8)).encode(),
            "prices": json.dumps(prices_body()).encode(),
        }
        files = {}
        for name, data in bodies.items():
            files[name] = folder / f"{name}.json"
            files[name].write_bytes(data)

        port = free_port()
        bare = start_process(
            "bare",
            ["-m", "uvicorn", "benchmarks.bare_app:app", "--port", str(port), "--log-level", "warning"],
            log_dir=folder,
            env={},
            health_url=f"http://127.0.0.1:{port}/docs",
        )
        try:
            url = f"http://127.0.0.1:{port}/bare"
            _wrk(url, files["bare"], 2, args.connections)  # warm-up
            rows.append(
                {"row": "bare FastAPI endpoint (small pydantic body)", "body bytes": len(bodies["bare"])}
                | _wrk(url, files["bare"], args.seconds, args.connections, pid=bare.popen.pid)
            )
        finally:
            bare.stop()

        setups: list[tuple[str, dict[str, str], dict[str, str]]] = []
        with _postgres_and_redis() as production:
            setups.append(("postgresql + RedisHuey", production, {}))
            if args.auth:
                key = uuid.uuid4().hex
                auth_env = {
                    **production,
                    "QHYBRID_API_KEYS": f"bench:{key}",
                    "QHYBRID_RATE_LIMIT": "1000000/second",
                }
                label = "postgresql + RedisHuey, API key + rate limit"
                setups.append((label, auth_env, {"Authorization": f"Bearer {key}"}))
            if args.embedded:
                setups.append(("sqlite + SqliteHuey", {}, {}))
            for index, (label, env, headers) in enumerate(setups):
                port = free_port()
                data_dir = folder / f"data-{uuid.uuid4().hex[:6]}"
                api = start_process(
                    f"api-{uuid.uuid4().hex[:6]}",
                    ["-m", "qhybrid", "serve", "--port", str(port), "--log-level", "warning"],
                    log_dir=folder,
                    env={"QHYBRID_DATA_DIR": str(data_dir), **env},
                    health_url=f"http://127.0.0.1:{port}/healthz",
                )
                try:
                    url = f"http://127.0.0.1:{port}/optimize_portfolio"
                    if env:
                        _wrk(url, files["moments"], 2, args.connections, headers)  # warm-up
                        rows.append(
                            {
                                "row": f"accept, moments 8 assets, {label}",
                                "body bytes": len(bodies["moments"]),
                            }
                            | _wrk(
                                url, files["moments"], args.seconds, args.connections, headers, api.popen.pid
                            )
                        )
                    rows.append(
                        {
                            "row": f"accept open loop, moments 8 assets, {label}",
                            "body bytes": len(bodies["moments"]),
                        }
                        | _open_loop(port, bodies["moments"], args.rate, args.seconds, headers)
                    )
                    if index == 0:
                        rows.append(
                            {"row": f"accept, prices 20 × 755, {label}", "body bytes": len(bodies["prices"])}
                            | _wrk(
                                url, files["prices"], args.seconds, args.connections, headers, api.popen.pid
                            )
                        )
                finally:
                    api.stop()
            if args.workers > 1:
                port = free_port()
                api = start_process(
                    f"api-{uuid.uuid4().hex[:6]}",
                    [
                        "-m",
                        "qhybrid",
                        "serve",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                        "--workers",
                        str(args.workers),
                    ],
                    log_dir=folder,
                    env={"QHYBRID_DATA_DIR": str(folder / f"data-{uuid.uuid4().hex[:6]}"), **production},
                    health_url=f"http://127.0.0.1:{port}/healthz",
                )
                try:
                    url = f"http://127.0.0.1:{port}/optimize_portfolio"
                    _wrk(url, files["prices"], 2, args.connections)  # warm-up (each process)
                    rows.append(
                        {
                            "row": f"accept, prices 20 × 755, postgresql + RedisHuey, "
                            f"{args.workers} uvicorn processes (additional row)",
                            "body bytes": len(bodies["prices"]),
                        }
                        | _wrk(url, files["prices"], args.seconds, args.connections)
                    )
                finally:
                    api.stop()
    bare_rate = rows[0]["req/s"]
    accept_rate = rows[1]["req/s"]
    print(
        f"# accept path vs bare FastAPI, wrk -t2 -c{args.connections} -d{args.seconds:.0f}s; "
        "one uvicorn process each"
    )
    print(f"# {machine()}, {sys.platform}; load average before {load_before}, after {_load()}")
    print("\n".join(markdown_table(rows)))
    print(f"\nratio accept (moments, PostgreSQL + Redis) / bare: {accept_rate / bare_rate:.1%}")


if __name__ == "__main__":
    main()

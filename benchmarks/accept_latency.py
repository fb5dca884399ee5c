"""Latency of the accept path: ``POST /optimize_portfolio`` under an open-loop load.

Starts a real uvicorn API (no worker: only the accept path is measured) on the embedded default
and on PostgreSQL + Redis, fires requests at a fixed rate from an asyncio client, and prints
p50/p95/p99/max latency and the achieved rate. Open loop: requests are sent on schedule whatever
the server's speed, so queueing delay shows up in the figures instead of hiding in the client.

Run: ``.venv/bin/python -m benchmarks.accept_latency [--rate 300] [--seconds 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import redis

from benchmarks.report import machine, markdown_table
from qhybrid.demo import sample_request
from tests.support.processes import free_port, start_process

POSTGRES_ADMIN = os.environ.get("QHYBRID_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("QHYBRID_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _fire(url: str, rate: float, seconds: float, body: bytes) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(timeout=30.0, limits=limits, trust_env=False) as client:

        async def one() -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers={"content-type": "application/json"})
                if response.status_code != 202:
                    errors += 1
                    return
            except httpx.HTTPError:
                errors += 1
                return
            latencies.append(time.perf_counter() - started)

        tasks: list[asyncio.Task[None]] = []
        total = int(rate * seconds)
        begin = time.perf_counter()
        for index in range(total):
            delay = begin + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - begin
    return latencies, errors, total / elapsed


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _run(
    name: str, env: dict[str, str], rate: float, seconds: float, folder: Path, workers: int
) -> dict[str, object]:
    port = free_port()
    api = start_process(
        f"api-{name}",
        ["-m", "qhybrid", "serve", "--port", str(port), "--log-level", "warning", "--workers", str(workers)],
        log_dir=folder,
        env=env,
        health_url=f"http://127.0.0.1:{port}/readyz",
    )
    try:
        body = json.dumps(sample_request()).encode()
        url = f"http://127.0.0.1:{port}/optimize_portfolio"
        asyncio.run(_fire(url, min(rate, 50), 1.0, body))  # warm-up: connections, caches
        latencies, errors, achieved = asyncio.run(_fire(url, rate, seconds, body))
    finally:
        api.stop()
    ms = [value * 1000 for value in latencies]
    return {
        "setup": name,
        "api procs": workers,
        "target/s": rate,
        "achieved/s": round(achieved, 1),
        "ok": len(ms),
        "errors": errors,
        "p50 ms": round(_percentile(ms, 0.50), 1),
        "p95 ms": round(_percentile(ms, 0.95), 1),
        "p99 ms": round(_percentile(ms, 0.99), 1),
        "max ms": round(max(ms), 1),
    }


def main() -> None:
    """Measure both setups and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the measured run")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn processes")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        embedded = {"QHYBRID_DATA_DIR": str(folder / "embedded")}
        rows.append(_run("sqlite + SqliteHuey", embedded, args.rate, args.seconds, folder, args.workers))
        database = f"qhybrid_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        try:
            base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
            env = {
                "QHYBRID_DATA_DIR": str(folder / "production"),
                "QHYBRID_DATABASE_URL": f"{base}/{database}",
                "QHYBRID_REDIS_URL": REDIS_URL,
                "QHYBRID_QUEUE_NAME": f"bench-{uuid.uuid4().hex[:8]}",
            }
            rows.append(_run("postgresql + RedisHuey", env, args.rate, args.seconds, folder, args.workers))
        finally:
            with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"*{env['QHYBRID_QUEUE_NAME']}*"))
            if keys:
                client.delete(*keys)
    print(
        f"# accept latency, {args.seconds:.0f} s at {args.rate:.0f} req/s, {args.workers} uvicorn process(es)"
    )
    print(f"# {machine()}, {sys.platform}")
    print("\n".join(markdown_table(rows)))


if __name__ == "__main__":
    main()

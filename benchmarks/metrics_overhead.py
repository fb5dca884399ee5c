"""What the request metrics cost per request: the ASGI middleware alone, against no middleware.

A minimal ASGI application (one route, answers 202 with a small body) is called in-process,
directly through its ASGI interface, with and without :class:`qhybrid.api.middleware.RequestMetrics`
around it; the difference per request is what counting a request (a route lookup in the scope,
a counter increment and a histogram observation) adds to the accept path. Alternating rounds of
both, so a loaded machine slows them alike; the median of the rounds is reported.

Run: ``.venv/bin/python -m benchmarks.metrics_overhead [--requests 20000] [--rounds 7]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from benchmarks.report import machine, markdown_table
from qhybrid.api.middleware import RequestMetrics


async def accept(request: Request) -> Response:
    return Response(b'{"job_id":"x"}', status_code=202, media_type="application/json")


def application() -> ASGIApp:
    return Starlette(routes=[Route("/optimize_portfolio", accept, methods=["POST"])])


async def drive(app: ASGIApp, requests: int) -> float:
    """Seconds per request, calling the ASGI app directly."""

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        return None

    started = time.perf_counter()
    for _ in range(requests):
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "path": "/optimize_portfolio",
            "raw_path": b"/optimize_portfolio",
            "root_path": "",
            "scheme": "http",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)
    return (time.perf_counter() - started) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    bare = application()
    counted = RequestMetrics(application())
    times: dict[str, list[float]] = {"bare": [], "counted": []}
    asyncio.run(drive(counted, 1000))  # warm up: the label's series is created once
    for _ in range(args.rounds):
        times["bare"].append(asyncio.run(drive(bare, args.requests)))
        times["counted"].append(asyncio.run(drive(counted, args.requests)))
    bare_us = statistics.median(times["bare"]) * 1e6
    counted_us = statistics.median(times["counted"]) * 1e6
    print(machine())
    print(f"{args.requests} requests × {args.rounds} alternating rounds, median per request")
    for line in markdown_table(
        [
            {
                "ASGI app": "Starlette, one route",
                "µs/request": f"{bare_us:.1f}",
                "added by RequestMetrics": "",
            },
            {
                "ASGI app": "same, inside RequestMetrics",
                "µs/request": f"{counted_us:.1f}",
                "added by RequestMetrics": f"{counted_us - bare_us:.1f} µs",
            },
        ]
    ):
        print(line)


if __name__ == "__main__":
    main()

"""ASGI middleware: limits on a request body's size and on the time it takes to arrive; request metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import anyio
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qhybrid.core.metrics import HTTP_DURATION, HTTP_REQUESTS


class BodySizeLimit:
    """Answer 413 to any request whose body exceeds ``max_bytes``, declared or streamed.

    The body is buffered (it is small by construction) so a chunked upload that grows past the
    limit is refused before the application sees any of it.

    The whole body must arrive within ``timeout_seconds`` (else 408 and the connection closed).

    Args:
        app: The wrapped application.
        max_bytes: Largest accepted body.
        timeout_seconds: Time the client has to send all of it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_seconds: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request through the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await send_error(
                    send, 400, "invalid_request", "content-length: not an integer", field="content-length"
                )
                return
            if too_big:
                await self._refuse(send)
                return
        chunks: list[bytes] = []
        outcome = "complete"
        # One deadline for the whole body, not per chunk: a client trickling a byte at a time
        # must not hold the connection (and its buffer) any longer than a slow honest one.
        with anyio.move_on_after(self.timeout_seconds) as deadline:
            outcome = await self._read(receive, chunks)
        if deadline.cancelled_caught:
            await send_error(
                send,
                408,
                "body_timeout",
                f"body: not received within {self.timeout_seconds:g} s (QHYBRID_BODY_TIMEOUT_SECONDS)",
                field="body",
                headers=[(b"connection", b"close")],
            )
            return
        if outcome == "disconnected":
            return
        if outcome == "too_big":
            await self._refuse(send)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive, chunks: list[bytes]) -> str:
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return "disconnected"
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return "too_big"
            chunks.append(chunk)
            if not message.get("more_body", False):
                return "complete"

    async def _refuse(self, send: Send) -> None:
        await send_error(
            send,
            413,
            "payload_too_large",
            f"body: larger than the limit of {self.max_bytes} bytes",
            field="body",
            headers=[(b"connection", b"close")],
        )


async def send_error(
    send: Send,
    status: int,
    error: str,
    message: str,
    *,
    field: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with the API's error body from the ASGI layer (no route, no body parsing).

    Args:
        send: The ASGI send callable.
        status: HTTP status.
        error: Machine-readable kind.
        message: ``"<field>: <rule broken>"``.
        field: The request part at fault.
        headers: Extra response headers.
    """
    detail = message.split(": ", 1)[1] if message.startswith(f"{field}: ") else message
    payload = json.dumps(
        {"error": error, "message": message, "errors": [{"field": field, "rule": error, "message": detail}]}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestMetrics:
    """Counts every request by route template, method and status code, and times it.

    The label is the matched route's template (``/jobs/{job_id}``), never the raw path, so the
    number of series stays bounded; a path no route matched is counted as ``unmatched``. It
    costs a dictionary lookup and two metric updates per request: no I/O on the accept path.

    Args:
        app: The wrapped application.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._durations: dict[tuple[str, str], Histogram] = {}
        self._counts: dict[tuple[str, str, int], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request, then count it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        timed = False

        async def send_and_watch(message: Message) -> None:
            nonlocal status, timed
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # Streams (server-sent events) last as long as the job: time to the headers.
                self._duration(_route_of(scope), scope["method"]).observe(time.perf_counter() - started)
                timed = True
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            route = _route_of(scope)
            if not timed:
                self._duration(route, scope["method"]).observe(time.perf_counter() - started)
            self._requests(route, scope["method"], status).inc()

    # The labelled children, kept: ``labels()`` takes a lock and builds a key on every call.
    # Routes, methods and codes are few, so these dictionaries stay small.
    def _duration(self, route: str, method: str) -> Histogram:
        key = (route, method)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = HTTP_DURATION.labels(route, method)
        return child

    def _requests(self, route: str, method: str, status: int) -> Counter:
        key = (route, method, status)
        child = self._counts.get(key)
        if child is None:
            child = self._counts[key] = HTTP_REQUESTS.labels(route, method, str(status))
        return child


def _route_of(scope: Scope) -> str:
    # Starlette's router records the matched route in the scope it shares with the middleware.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"

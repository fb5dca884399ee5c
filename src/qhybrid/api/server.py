"""How ``qhybrid serve`` runs uvicorn: timeouts and a connection cap against trickling clients.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 past
``limit_concurrency``, but it has no deadline for a request's headers: a client that sends them a
byte at a time holds its connection forever (issue 9 saw 400 such connections still open after
70 s). :class:`HeaderDeadlineProtocol` adds one: from the moment a connection opens, or its previous
response ends, the client has ``QHYBRID_HEADER_TIMEOUT_SECONDS`` to complete the next request's
headers, else the connection is closed. The body has its own deadline, in
:class:`qhybrid.api.middleware.BodySizeLimit` (``QHYBRID_BODY_TIMEOUT_SECONDS``).

The protocol extends uvicorn's own HTTP protocol (httptools when installed, else h11) through
four methods both implement (``connection_made``, ``data_received``, ``on_response_complete``,
``connection_lost``) and their ``cycle`` attribute; ``tests/api/test_limits.py`` drives it with
real trickling sockets, so an upgrade that changes them fails there. uvicorn is pinned below 0.56.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from qhybrid.core.config import Settings, get_settings


class HeaderDeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol with a deadline on each request's headers.

    ``header_timeout`` is read from the settings (``QHYBRID_HEADER_TIMEOUT_SECONDS``) unless a
    subclass sets it.
    """

    header_timeout: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        """Open the connection and start the clock on its first request's headers."""
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_after: Any = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Parse what arrived; once a request's headers are complete, stop the clock."""
        super().data_received(data)
        if self._header_timer is not None and self.cycle is not self._waiting_after:
            self._disarm()

    def on_response_complete(self) -> None:
        """The response is out: the next request's headers get the same deadline."""
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the clock with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if self.transport.is_closing() or not self._idle():
            return  # closing, or a pipelined request is already in progress
        seconds = self.header_timeout or get_settings().header_timeout_seconds
        self._waiting_after = self.cycle
        self._header_timer = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._header_timer = None

    def _idle(self) -> bool:
        return self.cycle is None or bool(self.cycle.response_complete)

    def _expire(self) -> None:
        self._header_timer = None
        # Only a connection still waiting for the same request's headers is closed.
        if self.cycle is self._waiting_after and self._idle() and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn settings that bound what a client can hold: time, connections, header size."""
    return {
        "http": "qhybrid.api.server:HeaderDeadlineProtocol",
        "timeout_keep_alive": settings.keep_alive_seconds,
        "limit_concurrency": settings.max_connections,
        # h11's default (16 KiB) made explicit: one request's headers, buffered at most.
        "h11_max_incomplete_event_size": 16 * 1024,
    }

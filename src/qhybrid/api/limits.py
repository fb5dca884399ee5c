"""Per-tenant submission rate limit (``QHYBRID_RATE_LIMIT``), checked before the body is read.

The counting is the ``limits`` library's moving window: at most N submissions in any window of
the configured length, which a burst at a window's edge cannot double as with fixed windows. With
a Redis queue the counts live in that Redis (every API process and host shares them, keys under
``qhybrid-limits:<queue name>``); otherwise in the API process's memory, so each of
``qhybrid serve --workers N``'s processes counts on its own. If Redis stops answering, the
process counts in its memory until it answers again (logged), rather than refusing everyone or
limiting no one.

Every ``POST /optimize_portfolio`` counts, accepted or not: the limit is on what the API has to
read and validate, and an idempotent replay costs that too.
"""

from __future__ import annotations

import logging
import math
import time

import anyio.to_thread
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from qhybrid.api.auth import TENANT_STATE
from qhybrid.api.middleware import send_error
from qhybrid.core.config import Settings, parse_rate

log = logging.getLogger("qhybrid.api")

#: The route whose requests count.
SUBMIT_PATH = "/optimize_portfolio"


class SubmissionLimiter:
    """Counts each tenant's submissions; answers how long to wait when one is over the limit.

    Args:
        settings: ``rate_limit`` and the queue (Redis when the queue is Redis).
    """

    def __init__(self, settings: Settings) -> None:
        rate = parse_rate(settings.rate_limit) if settings.rate_limit else None
        self.text = settings.rate_limit
        self._item: RateLimitItem | None = (
            None if rate is None else RateLimitItemPerSecond(rate[0], rate[1], namespace="submit")
        )
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        self.shared = False
        url = settings.resolved_redis_url
        if self._item is not None and url is not None:
            storage = storage_from_string(
                url,
                key_prefix=f"qhybrid-limits:{settings.queue_name}",
                wrap_exceptions=True,
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
            )
            self._shared = MovingWindowRateLimiter(storage)
            self.shared = True
        self._degraded = False

    @property
    def enabled(self) -> bool:
        """Whether a rate limit is configured."""
        return self._item is not None

    def hit(self, tenant: str) -> int | None:
        """Count one submission of ``tenant``.

        Returns:
            ``None`` when it is within the limit, else the seconds until one more would be.
        """
        if self._item is None:
            return None
        if self._shared is not None:
            try:
                wait = self._count(self._shared, tenant)
            except StorageError as exc:
                if not self._degraded:
                    log.warning(
                        "rate limit: Redis does not answer (%s); counting in this process until it does",
                        type(exc.storage_error).__name__,
                    )
                self._degraded = True
            else:
                if self._degraded:
                    log.warning("rate limit: Redis answers again; counting there")
                self._degraded = False
                return wait
        return self._count(self._memory, tenant)

    def _count(self, limiter: MovingWindowRateLimiter, tenant: str) -> int | None:
        assert self._item is not None
        if limiter.hit(self._item, tenant):
            return None
        reset = limiter.get_window_stats(self._item, tenant).reset_time
        return max(1, math.ceil(reset - time.time()))


class SubmissionRateLimit:
    """ASGI middleware: a tenant over ``QHYBRID_RATE_LIMIT`` gets 429 and ``Retry-After``.

    It runs after :class:`~qhybrid.api.auth.TenantAuth` (the tenant is known) and before the body
    is read.

    Args:
        app: The wrapped application (whose ``state.services.limiter`` is a :class:`SubmissionLimiter`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count a submission; refuse it when over the limit."""
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != SUBMIT_PATH:
            await self.app(scope, receive, send)
            return
        limiter: SubmissionLimiter = scope["app"].state.services.limiter
        tenant = (scope.get("state") or {}).get(TENANT_STATE)
        if not limiter.enabled or not isinstance(tenant, str):
            await self.app(scope, receive, send)
            return
        # Redis is a network round trip: off the event loop. Memory is a dictionary: inline.
        wait = await anyio.to_thread.run_sync(limiter.hit, tenant) if limiter.shared else limiter.hit(tenant)
        if wait is None:
            await self.app(scope, receive, send)
            return
        await send_error(
            send,
            429,
            "rate_limited",
            f"tenant: more submissions than QHYBRID_RATE_LIMIT allows ({limiter.text}); retry in {wait} s",
            field="tenant",
            headers=[(b"retry-after", str(wait).encode()), (b"connection", b"close")],
        )

"""Per-tenant submission rate limit (``QHYBRID_RATE_LIMIT``), checked before the body is read.

The same counter limits failed authentications per client address
(``QHYBRID_AUTH_FAILURE_LIMIT``, see :mod:`qhybrid.api.auth`).

Counted by :class:`~qhybrid.api.ratelimit.RateLimiter`: in Redis when the queue is Redis, else in
each API process's memory.

Every ``POST /optimize_portfolio`` counts, accepted or not: the limit is on what the API has to
read and validate, and an idempotent replay costs that too.
"""

from __future__ import annotations

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from qhybrid.api.auth import TENANT_STATE
from qhybrid.api.middleware import send_error
from qhybrid.api.ratelimit import RateLimiter

#: The route whose requests count.
SUBMIT_PATH = "/optimize_portfolio"


class SubmissionRateLimit:
    """ASGI middleware: a tenant over ``QHYBRID_RATE_LIMIT`` gets 429 and ``Retry-After``.

    It runs after :class:`~qhybrid.api.auth.TenantAuth` (the tenant is known) and before the body
    is read.

    Args:
        app: The wrapped application (whose ``state.services.limiter`` is a
            :class:`~qhybrid.api.ratelimit.RateLimiter`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count a submission; refuse it when over the limit."""
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != SUBMIT_PATH:
            await self.app(scope, receive, send)
            return
        limiter: RateLimiter = scope["app"].state.services.limiter
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

"""Counting events per identity in a moving window: the ``limits`` library, in Redis or in memory.

With a Redis queue the counts live in that Redis (every API process and host shares them, keys
under ``qhybrid-limits:<queue name>``); otherwise in the API process's memory, so each of
``qhybrid serve --workers N``'s processes counts on its own. If Redis stops answering, the
process counts in its memory until it answers again (logged), rather than refusing everyone or
limiting no one. A moving window allows at most N events in any window of the configured length,
which a burst at a window's edge cannot double as with fixed windows.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from qhybrid.core.config import Settings, parse_rate

log = logging.getLogger("qhybrid.api")


class RateLimiter:
    """Counts events per identity (a tenant's submissions, an address's failed keys).

    Args:
        settings: The queue (Redis when the queue is Redis) and, by default, ``rate_limit``.
        rate: The limit, e.g. ``60/minute``; ``None``: ``settings.rate_limit``.
        namespace: Keeps the counts of different limits apart.
    """

    def __init__(self, settings: Settings, rate: str | None = None, namespace: str = "submit") -> None:
        text = settings.rate_limit if rate is None else rate
        parsed = parse_rate(text) if text else None
        self.text = text
        self._item: RateLimitItem | None = (
            None if parsed is None else RateLimitItemPerSecond(parsed[0], parsed[1], namespace=namespace)
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
        """Count one event of ``tenant`` (or of any other identity).

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

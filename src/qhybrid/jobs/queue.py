"""The queue adapter: ``kick(job_id)`` and ``kick_at(job_id, when)`` over Huey.

Messages carry a job id and nothing else; the database says what to do with it. The queue only
wakes workers up, so a lost message costs latency (the reconciler re-kicks), never a job.
``SqliteHuey`` backs the embedded default, ``RedisHuey`` production; another engine (Celery for
SQS, say) would be one more class with these three methods.
"""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from huey import RedisHuey, SqliteHuey
from huey.api import Huey
from huey.consumer import Consumer
from huey.storage import SqliteStorage

from qhybrid.core.config import Settings
from qhybrid.jobs.models import utcnow

JobHandler = Callable[[str], None]


class _NormalSyncSqliteStorage(SqliteStorage):  # type: ignore[misc]
    """SqliteStorage with ``synchronous=NORMAL``.

    Huey's default (FULL) fsyncs every enqueue, which put the accept path's p99 near 255 ms at
    300 req/s on this machine. NORMAL in WAL mode cannot corrupt the file; a power cut may drop the
    last few messages, which the reconciler recovers from the database.
    """

    def _create_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._create_connection()
        conn.execute("pragma synchronous=1")
        return conn


class _SqliteHuey(SqliteHuey):  # type: ignore[misc]
    storage_class = _NormalSyncSqliteStorage


#: Called when the consumer starts to stop: the signal's name and whether it waits for the steps.
StopHandler = Callable[[str, bool], None]


class _Consumer(Consumer):  # type: ignore[misc]
    """Huey's consumer, telling the worker when and why it stops (Huey logs that at INFO only)."""

    on_stop: StopHandler | None = None

    def stop(self, graceful: bool = False) -> None:
        """Say why, then stop as Huey does (``graceful``: wait for the running tasks)."""
        signum = getattr(self, "_signum", None)
        if self.on_stop is not None:
            self.on_stop(signal.Signals(signum).name if signum else "stop", graceful)
        super().stop(graceful=graceful)


def make_huey(settings: Settings) -> Huey:
    """The Huey instance the settings call for (Redis if ``redis_url`` is set, else SQLite)."""
    if settings.redis_url:
        return RedisHuey(name=settings.queue_name, url=settings.redis_url, results=False, utc=True)
    settings.ensure_dirs()
    return _SqliteHuey(
        name=settings.queue_name, filename=str(settings.queue_path), results=False, utc=True, timeout=30
    )


class JobQueue:
    """Wakes workers up about jobs.

    Args:
        huey: The Huey instance (producer and consumer share its configuration).
        handler: What a consumer runs for a job id; producers (the API) leave it unset and a
            worker sets it once its journey exists.
    """

    def __init__(self, huey: Huey, handler: JobHandler | None = None) -> None:
        self.huey = huey
        self.handler = handler
        self._advance = huey.task(name="advance")(self._run)

    def _run(self, job_id: str) -> None:
        if self.handler is None:
            raise RuntimeError("this JobQueue has no handler; only a worker can consume")
        self.handler(job_id)

    def kick(self, job_id: str) -> None:
        """Ask a worker to look at the job now."""
        self._advance(job_id)

    def kick_at(self, job_id: str, when: datetime) -> None:
        """Ask a worker to look at the job at ``when`` (kept durably by the queue engine)."""
        delay = max(0.0, (when - utcnow()).total_seconds())
        self._advance.schedule(args=(job_id,), delay=delay)

    def ping(self) -> None:
        """Raise if the queue engine cannot be reached."""
        storage: Any = self.huey.storage
        if hasattr(storage, "conn") and hasattr(storage.conn, "ping"):
            storage.conn.ping()
        else:
            self.huey.pending_count()

    def pending(self) -> int:
        """Messages waiting to be consumed now (not counting scheduled ones)."""
        return int(self.huey.pending_count())

    def scheduled(self) -> int:
        """Messages waiting for their time."""
        return int(self.huey.scheduled_count())

    def consumer(
        self, *, workers: int, shutdown_timeout: float | None = None, on_stop: StopHandler | None = None
    ) -> Any:
        """A Huey consumer running this queue's tasks in ``workers`` threads.

        Args:
            workers: Threads.
            shutdown_timeout: On SIGTERM, seconds to let running tasks finish (``None``: no limit).
            on_stop: Told the signal's name and whether the stop waits, when the consumer stops.
        """
        # periodic=False: the reconciler runs on its own timer, finer than Huey's one-minute crontab.
        # graceful_signal="TERM": a supervisor's SIGTERM lets the running steps finish; Ctrl-C
        # (SIGINT) stops at once, and the worker releases what was running.
        consumer = _Consumer(
            self.huey,
            workers=workers,
            worker_type="thread",
            periodic=False,
            scheduler_interval=1,
            initial_delay=0.05,
            max_delay=0.5,
            shutdown_timeout=shutdown_timeout,
            graceful_signal="TERM",
        )
        consumer.on_stop = on_stop
        return consumer

"""Huey as the queue engine: ``SqliteHuey`` for the embedded default, ``RedisHuey`` for production.

Scheduled kicks live in the engine's durable schedule (SQLite table / Redis sorted set), not in
worker memory. Huey has no acknowledgements: a message being processed when its worker is killed
is gone, which the reconciler makes up for from the database.

Scheduled kicks (polls, retries) are written straight into the schedule, and once due they go to
the head of the queue, ahead of fresh kicks. Huey's own way (enqueue with an eta, a worker moves
it to the schedule, the scheduler appends it to the tail once due) made a poll wait behind the
whole backlog twice: a batch of 100 kicked jobs left the median job 66 s in SUBMITTED. A due poll
or retry belongs to a job already under way; finishing it first keeps the jobs in flight few.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from huey import RedisHuey, SqliteHuey
from huey.api import Huey
from huey.consumer import Consumer as HueyConsumer
from huey.consumer import Scheduler
from huey.storage import RedisStorage, SqliteStorage

from qhybrid.core.config import Settings
from qhybrid.core.files import private_file
from qhybrid.jobs.queue.base import Consumer, JobHandler, JobQueue, StopHandler


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


#: Seconds between two reads of the schedule on Redis: the latency a due poll may add (Huey's
#: scheduler allows whole seconds only). One Lua call per tick and worker process.
REDIS_SCHEDULER_SECONDS = 0.1
#: The same on SQLite, where each read takes the file's write lock (the embedded single-host case).
SQLITE_SCHEDULER_SECONDS = 1.0


def enqueue_first(huey: Huey, messages: Sequence[bytes]) -> None:
    """Put serialized messages at the head of the queue, the first of them taken first."""
    storage: Any = huey.storage
    if type(storage) is RedisStorage:
        # Workers BRPOP from the right: the last pushed there is the next one taken.
        if messages:
            storage.conn.rpush(storage.queue_key, *reversed(messages))
    elif isinstance(storage, SqliteStorage):
        for data in messages:
            storage.enqueue(data, priority=1)  # dequeued by priority, then age
    else:
        for data in messages:
            storage.enqueue(data)


class _Scheduler(Scheduler):  # type: ignore[misc]
    """Huey's scheduler, reading the schedule more often and putting due messages first."""

    def __init__(self, huey: Huey, stop_flag: Any, interval: float, periodic: bool) -> None:
        super().__init__(huey, stop_flag, interval, periodic)
        self._next_loop: float = time.monotonic()
        # Huey clamps the interval to whole seconds; set it after.
        self.interval = (
            REDIS_SCHEDULER_SECONDS if type(huey.storage) is RedisStorage else SQLITE_SCHEDULER_SECONDS
        )

    def loop(self, now: Any = None) -> None:
        """Move every due message to the head of the queue, then sleep until the next tick."""
        current = self._next_loop
        self._next_loop += self.interval
        if self._next_loop < time.monotonic():
            self._next_loop = time.monotonic()  # late (a stall): do not run ticks back to back
            return
        try:
            due = self.huey.storage.read_schedule(now or self.huey._get_timestamp())
        except Exception:
            self._logger.exception("Error reading schedule.")
        else:
            try:
                enqueue_first(self.huey, due)  # oldest due first
            except Exception:
                # Read off the schedule but not queued: the reconciler re-kicks those jobs.
                self._logger.exception("Error enqueueing %d scheduled message(s).", len(due))
        self.sleep_for_interval(current, self.interval)


class _Consumer(HueyConsumer):  # type: ignore[misc]
    """Huey's consumer, telling the worker when and why it stops (Huey logs that at INFO only)."""

    on_stop: StopHandler | None = None
    scheduler_class = _Scheduler

    def stop(self, graceful: bool = False) -> None:
        """Say why, then stop as Huey does (``graceful``: wait for the running tasks)."""
        signum = getattr(self, "_signum", None)
        if self.on_stop is not None:
            self.on_stop(signal.Signals(signum).name if signum else "stop", graceful)
        super().stop(graceful=graceful)


def make_huey(settings: Settings) -> Huey:
    """The Huey instance the settings call for (Redis if a Redis URL is set, else SQLite)."""
    redis_url = settings.resolved_redis_url
    if redis_url:
        return RedisHuey(name=settings.queue_name, url=redis_url, results=False, utc=True)
    settings.ensure_dirs()
    private_file(settings.queue_path)  # job ids and their timing: the owner's only
    return _SqliteHuey(
        name=settings.queue_name, filename=str(settings.queue_path), results=False, utc=True, timeout=30
    )


class HueyQueue(JobQueue):
    """The queue over a Huey instance; the message is one task name and the job id.

    Args:
        huey: The Huey instance (producer and consumer share its configuration).
        handler: What a consumer runs for a job id (unset for producers).
    """

    def __init__(self, huey: Huey, handler: JobHandler | None = None) -> None:
        super().__init__(handler)
        self.huey = huey
        self._advance = huey.task(name="advance")(self.dispatch)

    @property
    def engine(self) -> str:
        """``redis`` or ``sqlite``."""
        return "redis" if isinstance(self.huey, RedisHuey) else "sqlite"

    def kick(self, job_id: str) -> None:
        """Ask a worker to look at the job now."""
        self._advance(job_id)

    def kick_many(self, job_ids: Sequence[str]) -> None:
        """Ask workers to look at several jobs now: one ``LPUSH`` of every message on Redis."""
        storage: Any = self.huey.storage
        if type(storage) is not RedisStorage or len(job_ids) < 2:
            super().kick_many(job_ids)
            return
        # What Huey's enqueue does for each task (this queue sets no priority, expiry or signal
        # handler), with the messages sent together.
        messages = [self.huey.serialize_task(self._advance.s(job_id)) for job_id in job_ids]
        storage.conn.lpush(storage.queue_key, *messages)

    def kick_at(self, job_id: str, when: datetime) -> None:
        """Ask a worker to look at the job at ``when``: written straight into Huey's durable schedule.

        Not through the queue, as Huey's ``schedule()`` does: there the message would wait behind
        every queued kick before a worker even moved it to the schedule.
        """
        task = self._advance.s(job_id)
        # Huey (utc=True) keeps naive UTC datetimes; the message carries its eta as Huey's does.
        task.eta = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
        self.huey.storage.add_to_schedule(self.huey.serialize_task(task), task.eta)

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
    ) -> Consumer:
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
        started: Consumer = consumer
        return started

"""The queue: ``kick(job_id)`` and ``kick_at(job_id, when)`` over one of three engines.

``SqliteHuey`` backs the embedded default, ``RedisHuey`` a Redis URL and Amazon SQS an
``sqs://`` URL (``QHYBRID_QUEUE_URL``). Messages carry a job id and nothing else; the database
says what to do with it, leases make duplicates harmless and the reconciler recovers lost ones.
"""

from __future__ import annotations

from qhybrid.core.config import Settings
from qhybrid.jobs.queue.base import Consumer, JobHandler, JobQueue
from qhybrid.jobs.queue.huey_engine import HueyQueue, make_huey
from qhybrid.jobs.queue.sqs_engine import SqsQueue

__all__ = ["Consumer", "HueyQueue", "JobHandler", "JobQueue", "SqsQueue", "make_huey", "make_queue"]


def make_queue(settings: Settings, handler: JobHandler | None = None) -> JobQueue:
    """The queue the settings call for: SQS, Redis or the embedded SQLite file.

    Raises:
        ValueError: If ``queue_url`` is an SQS URL that does not parse, or names no region.
    """
    if settings.queue_engine == "sqs":
        return SqsQueue.from_settings(settings, handler)
    return HueyQueue(make_huey(settings), handler)

"""The reconciler: re-kicks live jobs that nobody is working on but somebody should be.

Huey has no acknowledgements: a message being processed when its worker is killed is gone (SQS
brings it back after the visibility timeout, but a hop or a send can still fail), and a kick can be
lost between a commit and the enqueue. The database still says what each job waits
for, so a periodic sweep finds jobs whose lease expired, whose poll is overdue, or that were never
picked up, and kicks them again. Duplicate kicks are harmless: a job is worked on only under a lease.
"""

from __future__ import annotations

import logging
import threading

from qhybrid.jobs.queue import JobQueue
from qhybrid.jobs.store import JobStore

log = logging.getLogger("qhybrid.reconciler")


def reconcile_once(store: JobStore, queue: JobQueue, *, grace_seconds: float) -> list[str]:
    """Kick the jobs that are due, oldest first; returns their ids.

    A job waiting behind a backlog looks the same in the database as one whose kick was lost. When
    the queue already holds messages, re-kicking every due job would only add duplicates (every
    worker's reconciler doing so each sweep buried 500 queued jobs under thousands of copies), so
    a sweep kicks only as many as the queue cannot be holding a message for, and at least the
    oldest one, which guarantees that a lost kick is recovered once the backlog reaches it.
    """
    due = store.due_for_reconcile(grace_seconds=grace_seconds)
    if not due:
        return []
    try:
        waiting = queue.pending()
    except Exception:
        waiting = 0  # the queue is down: the kicks below fail and the next sweep tries again
    job_ids = due[: max(1, len(due) - waiting)]
    for job_id in job_ids:
        queue.kick(job_id)
    if job_ids:
        log.info("reconciler re-kicked %d job(s): %s", len(job_ids), ", ".join(job_ids[:10]))
    return job_ids


class Reconciler(threading.Thread):
    """Runs :func:`reconcile_once` every ``interval`` seconds until stopped.

    Args:
        store: The job store.
        queue: Where the kicks go.
        interval: Seconds between sweeps.
        grace_seconds: How overdue a job must be before it is re-kicked.
    """

    def __init__(self, store: JobStore, queue: JobQueue, *, interval: float, grace_seconds: float) -> None:
        super().__init__(name="qhybrid-reconciler", daemon=True)
        self._store = store
        self._queue = queue
        self._interval = interval
        self._grace = grace_seconds
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sweep until :meth:`stop`; a failed sweep is logged and retried at the next tick."""
        while not self._stop_event.wait(self._interval):
            try:
                reconcile_once(self._store, self._queue, grace_seconds=self._grace)
            except Exception:
                log.exception("reconciler sweep failed")

    def stop(self) -> None:
        """Ask the thread to end after the current sweep."""
        self._stop_event.set()

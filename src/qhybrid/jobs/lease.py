"""Keep a job's lease alive while its worker is busy with a long step.

A lease says "this worker is on the job until ``lease_expires_at``"; the reconciler hands a job
whose lease expired to another worker, which is how a job survives a killed worker. A step that
runs longer than the lease (the angle search of a large program under load, the exact baselines,
a round of sub-problems) would otherwise be taken over while its worker is still alive and
working, and then done twice, the first worker's result thrown away by the conditional update.
So while a worker advances a job, a small thread renews its lease every third of the lease
period. A killed worker stops renewing with the process, so its lease still expires on time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

log = logging.getLogger("qhybrid.jobs.lease")


class LeaseRenewer(Protocol):
    """What the keeper needs from the store."""

    def renew_lease(self, job_id: str, *, owner: str, lease_seconds: float) -> bool:
        """Extend ``owner``'s live lease; False once it is no longer ``owner``'s."""
        ...


@contextmanager
def kept_lease(store: LeaseRenewer, job_id: str, *, owner: str, lease_seconds: float) -> Iterator[None]:
    """Renew ``owner``'s lease on ``job_id`` every ``lease_seconds / 3`` until the block ends.

    Renewal stops for good as soon as the lease is no longer ``owner``'s (the worker released it,
    the job ended, or the lease expired and another worker took it). A failed renewal (database
    briefly unreachable) is retried at the next period; the lease then expires only if the outage
    outlasts it, as it would for a dead worker.
    """
    stop = threading.Event()
    period = lease_seconds / 3

    def renew() -> None:
        while not stop.wait(period):
            try:
                if not store.renew_lease(job_id, owner=owner, lease_seconds=lease_seconds):
                    return
            except Exception as exc:  # any failure (database briefly away): try next period
                log.warning("job %s: could not renew the lease (%s); retrying", job_id, type(exc).__name__)

    keeper = threading.Thread(target=renew, name=f"lease-{job_id[:8]}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()

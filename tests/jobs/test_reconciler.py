"""The reconciler's sweep on a real queue (SqliteHuey, no consumer): it recovers lost kicks
without burying a backlog under duplicates."""

from __future__ import annotations

from qhybrid.core.config import Settings
from qhybrid.jobs.reconciler import reconcile_once
from tests.support.journey import build


def test_a_sweep_does_not_duplicate_a_queued_backlog(settings: Settings) -> None:
    services = build(settings)
    queued = [services.new_job() for _ in range(3)]
    for job_id in queued:
        services.queue.kick(job_id)  # waiting in the queue: due in the database, but not lost
    assert services.queue.pending() == 3
    kicked = reconcile_once(services.store, services.queue, grace_seconds=0)
    assert len(kicked) == 1  # only the oldest, so that a lost one is reached eventually
    assert services.queue.pending() == 4


def test_a_sweep_kicks_what_the_queue_cannot_be_holding(settings: Settings) -> None:
    services = build(settings)
    lost = [services.new_job() for _ in range(4)]  # stored, never kicked
    services.queue.kick(lost[0])
    kicked = reconcile_once(services.store, services.queue, grace_seconds=0)
    assert len(kicked) == 3  # 4 due, at most 1 of them can have its message in the queue
    assert set(kicked) <= set(lost)
    assert services.queue.pending() == 4

"""A busy worker keeps its lease; a dead or finished one does not (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time

from qhybrid.jobs.lease import kept_lease
from qhybrid.jobs.store import JobStore
from tests.jobs.test_store import new_job

LEASE = 0.6


def test_a_step_longer_than_the_lease_is_not_taken_over(store: JobStore) -> None:
    job_id = new_job(store)
    assert store.claim(job_id, owner="busy", lease_seconds=LEASE) is not None
    with kept_lease(store, job_id, owner="busy", lease_seconds=LEASE):
        threading.Event().wait(LEASE * 3)  # three lease periods of "work"
        assert store.claim(job_id, owner="thief", lease_seconds=60) is None
    # Without the keeper the same wait lets another worker in: the control.
    threading.Event().wait(LEASE * 1.5)
    assert store.claim(job_id, owner="thief", lease_seconds=60) is not None


def test_renewal_stops_once_the_lease_is_given_back(store: JobStore) -> None:
    job_id = new_job(store)
    assert store.claim(job_id, owner="w1", lease_seconds=LEASE) is not None
    with kept_lease(store, job_id, owner="w1", lease_seconds=LEASE):
        assert store.release(job_id, owner="w1")
        # Released: another worker takes it at once, and the keeper never takes it back.
        assert store.claim(job_id, owner="w2", lease_seconds=LEASE) is not None
        threading.Event().wait(LEASE * 2)
        job = store.get_job(job_id)
        assert job is not None and job.lease_owner == "w2"


def test_an_expired_lease_is_not_revived(store: JobStore) -> None:
    job_id = new_job(store)
    assert store.claim(job_id, owner="late", lease_seconds=0.001) is not None
    time.sleep(0.05)
    assert not store.renew_lease(job_id, owner="late", lease_seconds=60)
    assert store.claim(job_id, owner="other", lease_seconds=60) is not None

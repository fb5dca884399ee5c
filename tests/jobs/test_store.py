"""The store's conditional writes, on SQLite and on a real PostgreSQL database."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import inspect

from qhybrid.domain.states import JobState
from qhybrid.jobs.models import Job, utcnow
from qhybrid.jobs.store import IdempotencyConflictError, InvalidCursorError, JobStore

COLUMNS = [column.name for column in Job.__table__.c]


def new_job(store: JobStore, *, key: str | None = None, request_hash: str = "h1") -> str:
    job, created = store.create_job(
        job_id=str(uuid.uuid4()),
        request={"budget": 1},
        request_hash=request_hash,
        backend="local",
        shots=100,
        deadline_at=utcnow() + timedelta(hours=1),
        idempotency_key=key,
    )
    assert created
    return job.id


def test_migration_creates_the_tables_and_is_idempotent(store: JobStore) -> None:
    store.db.migrate()  # a second start must be a no-op
    names = set(inspect(store.db.engine).get_table_names())
    assert {"jobs", "job_events", "remote_tasks", "alembic_version"} <= names


def test_create_records_the_accepted_event(store: JobStore) -> None:
    job_id = new_job(store)
    view = store.view(job_id)
    assert view is not None
    assert view.job.state == "ACCEPTED"
    assert [(e.from_state, e.to_state) for e in view.events] == [(None, "ACCEPTED")]
    assert view.job.created_at.tzinfo is not None


def test_idempotency_key_returns_the_same_job_or_conflicts(store: JobStore) -> None:
    job_id = new_job(store, key="k-1", request_hash="same")
    again, created = store.create_job(
        job_id=str(uuid.uuid4()),
        request={},
        request_hash="same",
        backend="local",
        shots=1,
        deadline_at=utcnow(),
        idempotency_key="k-1",
    )
    assert not created
    assert again.id == job_id
    with pytest.raises(IdempotencyConflictError):
        store.create_job(
            job_id=str(uuid.uuid4()),
            request={},
            request_hash="different",
            backend="local",
            shots=1,
            deadline_at=utcnow(),
            idempotency_key="k-1",
        )
    assert store.count_jobs() == 1


def test_only_one_of_two_workers_gets_the_lease(store: JobStore) -> None:
    job_id = new_job(store)
    assert store.claim(job_id, owner="w1", lease_seconds=60) is not None
    assert store.claim(job_id, owner="w2", lease_seconds=60) is None
    # The holder may renew.
    assert store.claim(job_id, owner="w1", lease_seconds=60) is not None


def test_an_expired_lease_can_be_taken_over(store: JobStore) -> None:
    job_id = new_job(store)
    assert store.claim(job_id, owner="w1", lease_seconds=0.001) is not None
    threading.Event().wait(0.05)
    assert store.claim(job_id, owner="w2", lease_seconds=60) is not None
    # The old owner's writes are refused now.
    assert not store.transition(job_id, owner="w1", source=JobState.ACCEPTED, target=JobState.PREPARING)
    assert store.transition(job_id, owner="w2", source=JobState.ACCEPTED, target=JobState.PREPARING)


def test_transition_is_conditional_on_the_expected_state(store: JobStore) -> None:
    job_id = new_job(store)
    store.claim(job_id, owner="w", lease_seconds=60)
    assert store.transition(
        job_id, owner="w", source=JobState.ACCEPTED, target=JobState.PREPARING, detail="go"
    )
    assert not store.transition(job_id, owner="w", source=JobState.ACCEPTED, target=JobState.PREPARING)
    view = store.view(job_id)
    assert view is not None
    assert [e.to_state for e in view.events] == ["ACCEPTED", "PREPARING"]
    assert view.events[-1].detail == "go"
    assert view.job.version == 2


def test_concurrent_transitions_move_the_job_once(store: JobStore) -> None:
    job_id = new_job(store)
    store.claim(job_id, owner="w", lease_seconds=60)
    results: list[bool] = []

    def attempt() -> None:
        results.append(
            store.transition(job_id, owner="w", source=JobState.ACCEPTED, target=JobState.PREPARING)
        )

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    view = store.view(job_id)
    assert view is not None
    assert [e.to_state for e in view.events] == ["ACCEPTED", "PREPARING"]


def test_terminal_transition_clears_lease_and_schedule(store: JobStore) -> None:
    job_id = new_job(store)
    store.claim(job_id, owner="w", lease_seconds=60)
    store.update_job(job_id, owner="w", next_poll_at=utcnow())
    assert store.transition(job_id, owner="w", source=JobState.ACCEPTED, target=JobState.FAILED, error="boom")
    job = store.get_job(job_id)
    assert job is not None
    assert (job.state, job.error, job.lease_owner, job.next_poll_at) == ("FAILED", "boom", None, None)
    assert job.finished_at is not None
    assert store.claim(job_id, owner="w", lease_seconds=60) is None


def test_cancel_before_work_is_immediate(store: JobStore) -> None:
    job_id = new_job(store)
    outcome = store.request_cancel(job_id)
    assert outcome.accepted and outcome.immediate
    assert outcome.job is not None and outcome.job.state == "CANCELLED"
    again = store.request_cancel(job_id)
    assert not again.accepted


def test_cancel_while_a_worker_holds_the_job_only_flags_it(store: JobStore) -> None:
    job_id = new_job(store)
    store.claim(job_id, owner="w", lease_seconds=60)
    outcome = store.request_cancel(job_id)
    assert outcome.accepted and not outcome.immediate
    job = store.get_job(job_id)
    assert job is not None
    assert job.state == "ACCEPTED" and job.cancel_requested


def test_remote_task_needs_the_lease(store: JobStore) -> None:
    job_id = new_job(store)
    assert (
        store.create_remote_task(job_id=job_id, owner="w", attempt=1, backend="local", client_token="t" * 32)
        is None
    )
    store.claim(job_id, owner="w", lease_seconds=60)
    row = store.create_remote_task(
        job_id=job_id, owner="w", attempt=1, backend="local", client_token="t" * 32
    )
    assert row is not None
    store.update_remote_task(row.id, task_id="task-1")
    fetched = store.remote_task(job_id, 1)
    assert fetched is not None and fetched.task_id == "task-1" and fetched.client_token == "t" * 32


def test_list_pages_newest_first_without_gaps(store: JobStore) -> None:
    ids = [new_job(store) for _ in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = store.list_jobs(limit=3, cursor=cursor)
        seen.extend(job.id for job in page)
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen)) == 7
    created = [store.get_job(i).created_at for i in seen]  # type: ignore[union-attr]
    assert created == sorted(created, reverse=True)
    with pytest.raises(InvalidCursorError):
        store.list_jobs(limit=3, cursor="not-a-cursor")


def test_list_filters_by_state(store: JobStore) -> None:
    keep = new_job(store)
    cancelled = new_job(store)
    store.request_cancel(cancelled)
    page, _ = store.list_jobs(limit=10, state=JobState.CANCELLED)
    assert [j.id for j in page] == [cancelled]
    page, _ = store.list_jobs(limit=10, state=JobState.ACCEPTED)
    assert [j.id for j in page] == [keep]


def test_reconciler_query_finds_expired_leases_and_overdue_polls(store: JobStore) -> None:
    fresh = new_job(store)
    expired = new_job(store)
    overdue = new_job(store)
    waiting = new_job(store)
    store.claim(expired, owner="dead", lease_seconds=0.001)
    store.claim(overdue, owner="w", lease_seconds=60)
    store.release(overdue, owner="w", next_poll_at=utcnow() - timedelta(seconds=120))
    store.claim(waiting, owner="w", lease_seconds=60)
    store.release(waiting, owner="w", next_poll_at=utcnow() + timedelta(seconds=120))
    threading.Event().wait(0.05)
    due = set(store.due_for_reconcile(grace_seconds=30))
    assert due == {expired, overdue}
    # With no grace, an ACCEPTED job whose kick may have been lost is due as well.
    assert fresh in set(store.due_for_reconcile(grace_seconds=0))


def test_transitions_are_counted_with_the_time_spent_in_the_state_left(store: JobStore) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    moved = {"from_state": "accepted", "to_state": "preparing"}
    before = sample("qhybrid_job_transitions_total", **moved)
    timed = sample("qhybrid_job_state_seconds_count", state="accepted")
    job_id = new_job(store)
    assert store.transition(job_id, owner=None, source=JobState.ACCEPTED, target=JobState.PREPARING)
    assert sample("qhybrid_job_transitions_total", **moved) == before + 1
    assert sample("qhybrid_job_state_seconds_count", state="accepted") == timed + 1
    # A move that loses its race is not counted.
    assert not store.transition(job_id, owner=None, source=JobState.ACCEPTED, target=JobState.PREPARING)
    assert sample("qhybrid_job_transitions_total", **moved) == before + 1
    assert store.count_by_state()[JobState.PREPARING] >= 1


def test_events_after_reads_only_the_new_ones(store: JobStore) -> None:
    job_id = new_job(store)
    state, events = store.events_after(job_id) or (None, [])
    assert state is JobState.ACCEPTED and [e.to_state for e in events] == ["ACCEPTED"]
    store.transition(job_id, owner=None, source=JobState.ACCEPTED, target=JobState.PREPARING)
    state, newer = store.events_after(job_id, events[-1].id) or (None, [])
    assert state is JobState.PREPARING and [e.to_state for e in newer] == ["PREPARING"]
    assert store.events_after("no-such-job") is None


def test_a_move_returns_the_row_as_it_left_it(store: JobStore) -> None:
    job_id = new_job(store)
    claimed = store.claim(job_id, owner="w", lease_seconds=60)
    assert claimed is not None
    moved = store.transition_returning(
        job_id, owner="w", source=JobState.ACCEPTED, target=JobState.PREPARING, last_error="x"
    )
    assert moved is not None
    assert (moved.state, moved.version, moved.last_error) == ("PREPARING", claimed.version + 1, "x")
    stored = store.get_job(job_id)
    assert stored is not None
    assert {c: getattr(moved, c) for c in COLUMNS} == {c: getattr(stored, c) for c in COLUMNS}
    # Not moved (wrong source state): nothing returned, nothing written.
    assert (
        store.transition_returning(job_id, owner="w", source=JobState.ACCEPTED, target=JobState.PREPARING)
        is None
    )
    assert [event.to_state for event in store.view(job_id).events] == ["ACCEPTED", "PREPARING"]  # type: ignore[union-attr]


def test_the_claim_brings_the_attempts_task_row(store: JobStore) -> None:
    job_id = new_job(store)
    first = store.claim_with_task(job_id, owner="w", lease_seconds=60)
    assert first is not None and first[1] is None
    job = first[0]
    assert job.state == "ACCEPTED" and job.lease_owner == "w"
    store.update_job(job_id, owner="w", attempt=1)
    row = store.attempt_task(job_id=job_id, owner="w", attempt=1, backend="local", client_token="a" * 32)
    assert row is not None and row.client_token == "a" * 32
    store.update_remote_task(row.id, task_id="task-1", counts={"01": 3})
    again = store.claim_with_task(job_id, owner="w", lease_seconds=60)
    assert again is not None and again[1] is not None
    task = again[1]
    assert (task.id, task.task_id, task.counts, task.attempt) == (row.id, "task-1", {"01": 3}, 1)
    assert store.claim_with_task(job_id, owner="other", lease_seconds=60) is None


def test_an_attempts_task_row_is_written_once_and_only_under_the_lease(store: JobStore) -> None:
    job_id = new_job(store)
    assert (
        store.attempt_task(job_id=job_id, owner="w", attempt=1, backend="local", client_token="a" * 32)
        is None
    )
    assert store.remote_task(job_id, 1) is None
    store.claim(job_id, owner="w", lease_seconds=60)
    first = store.attempt_task(job_id=job_id, owner="w", attempt=1, backend="local", client_token="a" * 32)
    assert first is not None and first.client_token == "a" * 32
    # A second worker's try (after a crash) finds the first token: the provider is asked by it.
    second = store.attempt_task(job_id=job_id, owner="w", attempt=1, backend="local", client_token="b" * 32)
    assert second is not None and (second.id, second.client_token) == (first.id, "a" * 32)
    store.release(job_id, owner="w")
    later = store.attempt_task(job_id=job_id, owner="w", attempt=1, backend="local", client_token="c" * 32)
    assert later is not None and later.client_token == "a" * 32


def test_a_task_update_goes_with_the_release_only_under_the_lease(store: JobStore) -> None:
    job_id = new_job(store)
    store.claim(job_id, owner="w", lease_seconds=60)
    row = store.create_remote_task(
        job_id=job_id, owner="w", attempt=1, backend="local", client_token="t" * 32
    )
    assert row is not None
    assert not store.release(job_id, owner="intruder", task_update=(row.id, {"polls": 5}))
    assert store.remote_task(job_id, 1).polls == 0  # type: ignore[union-attr]
    assert store.release(job_id, owner="w", task_update=(row.id, {"polls": 1, "state": "QUEUED"}))
    fetched = store.remote_task(job_id, 1)
    assert fetched is not None and (fetched.polls, fetched.state) == (1, "QUEUED")
    job = store.get_job(job_id)
    assert job is not None and job.lease_owner is None

"""The accept path's group commit on real databases and queues (SQLite + SqliteHuey, PostgreSQL + Redis)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from qhybrid.core.config import Settings
from qhybrid.jobs.database import Database
from qhybrid.jobs.intake import Accepted, Intake
from qhybrid.jobs.models import Job, JobEvent, utcnow
from qhybrid.jobs.queue import HueyQueue, JobQueue, make_huey, make_queue
from qhybrid.jobs.store import IdempotencyConflictError, JobStore, NewJob, TenantCapError, TenantCaps


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(request: pytest.FixtureRequest, settings: Settings) -> Iterator[tuple[JobStore, JobQueue]]:
    """A migrated store and its queue: the embedded default, or PostgreSQL + Redis."""
    if request.param == "postgresql":
        settings = settings.model_copy(
            update={
                "database_url": request.getfixturevalue("postgres_url"),
                "redis_url": request.getfixturevalue("redis_server"),
                "queue_name": request.getfixturevalue("queue_name"),
            }
        )
    db = Database(settings.resolved_database_url)
    db.migrate()
    yield JobStore(db), make_queue(settings)
    db.dispose()


def new_job(*, idempotency_key: str | None = None, tenant: str = "default", risk: float = 0.5) -> NewJob:
    document = json.dumps({"budget": 1, "risk_aversion": risk, "assets": [{"name": "A"}]})
    return NewJob(
        id=str(uuid.uuid4()),
        request_json=document,
        request_hash=str(hash(document)),
        backend="emulated-cloud",
        shots=100,
        deadline_at=utcnow() + timedelta(hours=1),
        idempotency_key=idempotency_key,
        cost={"estimated": 1.5, "currency": "USD"},
        tenant=tenant,
    )


#: Transactions of the direct path (PostgreSQL), per ``accept_all`` call of the running test.
DIRECT_TRANSACTIONS: list[int] = []


@pytest.fixture(autouse=True)
def _count_direct() -> None:
    DIRECT_TRANSACTIONS.clear()


def accept_all(store: JobStore, queue: JobQueue, jobs: list[tuple[NewJob, TenantCaps | None]]) -> list[Any]:
    """Hand every job to one Intake at once, as concurrent requests do; outcomes or exceptions."""

    async def run() -> list[Any]:
        intake = Intake(store, queue)
        await intake.start()
        try:
            return await asyncio.gather(
                *(intake.accept(new, caps) for new, caps in jobs), return_exceptions=True
            )
        finally:
            await intake.stop()
            DIRECT_TRANSACTIONS.append(intake.direct_transactions)

    return asyncio.run(run())


def test_a_burst_is_stored_in_few_transactions_and_every_job_kicked(setup: tuple[JobStore, JobQueue]) -> None:
    store, queue = setup
    commits: list[int] = []
    event.listen(store.db.engine, "commit", lambda _conn: commits.append(1))
    jobs = [new_job() for _ in range(40)]
    outcomes = accept_all(store, queue, [(new, None) for new in jobs])
    assert all(isinstance(o, Accepted) and o.created for o in outcomes)
    assert [o.job.id for o in outcomes] == [new.id for new in jobs]
    with store.db.read() as session:
        stored = {job.id: job for job in session.scalars(select(Job))}
        events = session.scalars(select(JobEvent)).all()
    assert set(stored) == {new.id for new in jobs}
    assert sorted(e.job_id for e in events) == sorted(new.id for new in jobs)
    assert all(e.to_state == "ACCEPTED" and e.from_state is None for e in events)
    # The document is stored as the text the API serialised, and reads back as that JSON.
    assert stored[jobs[0].id].request == json.loads(jobs[0].request_json)
    assert stored[jobs[0].id].estimated_cost == 1.5
    assert queue.pending() == len(jobs)
    # Group commit: far fewer transactions than jobs (40 jobs arrived before the first commit).
    # PostgreSQL's plain jobs are inserted by the intake's own connections, SQLite's by the store.
    transactions = len(commits) + sum(DIRECT_TRANSACTIONS)
    assert 1 <= transactions <= 4
    assert (sum(DIRECT_TRANSACTIONS) > 0) == (not store.db.is_sqlite)


def test_one_bad_job_does_not_fail_its_group(setup: tuple[JobStore, JobQueue]) -> None:
    store, queue = setup
    first = new_job()
    accept_all(store, queue, [(first, None)])
    # The same id again with another request: a collision, not a retry of the first request.
    duplicate = NewJob(**{**first.__dict__, "request_hash": first.request_hash + "-other"})
    others = [new_job(), new_job()]
    outcomes = accept_all(store, queue, [(others[0], None), (duplicate, None), (others[1], None)])
    assert isinstance(outcomes[0], Accepted) and isinstance(outcomes[2], Accepted)
    assert isinstance(outcomes[1], Exception) and not isinstance(outcomes[1], Accepted)
    assert store.count_jobs() == 3
    assert queue.pending() == 3  # the first job and the two others; nothing for the duplicate


def test_a_commit_whose_answer_was_lost_is_answered_202_not_500(
    setup: tuple[JobStore, JobQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server commits, the connection drops before the client hears it: the retry meets its row."""
    store, queue = setup
    lost: list[str] = []

    def commit_then_lose(real: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            outcome = real(*args, **kwargs)  # committed on the server
            if not lost:
                lost.append("once")
                raise OSError("connection lost after COMMIT")
            return outcome

        return wrapped

    if store.db.is_sqlite:
        monkeypatch.setattr(store, "create_jobs", commit_then_lose(store.create_jobs))
    else:
        monkeypatch.setattr(Intake, "_insert_lean", commit_then_lose(Intake._insert_lean))
    jobs = [new_job(), new_job()]
    outcomes = accept_all(store, queue, [(job, None) for job in jobs])
    assert lost == ["once"]
    assert all(isinstance(outcome, Accepted) for outcome in outcomes), outcomes
    assert [outcome.job_id for outcome in outcomes] == [job.id for job in jobs]
    assert store.count_jobs() == 2  # stored once each
    assert queue.pending() >= 2  # kicked (a second kick is harmless: the lease decides)


def test_idempotency_keys_replay_or_conflict(setup: tuple[JobStore, JobQueue]) -> None:
    store, queue = setup
    original = new_job(idempotency_key="key-1")
    (first,) = accept_all(store, queue, [(original, None)])
    retry = new_job(idempotency_key="key-1")  # same document, new id: a client's retry
    other_tenant = new_job(idempotency_key="key-1", tenant="acme")
    changed = new_job(idempotency_key="key-1", risk=0.9)
    replayed, elsewhere, conflict = accept_all(
        store, queue, [(retry, None), (other_tenant, None), (changed, None)]
    )
    assert first.created
    assert isinstance(replayed, Accepted) and not replayed.created and replayed.job.id == original.id
    assert isinstance(elsewhere, Accepted) and elsewhere.created and elsewhere.job.id == other_tenant.id
    assert isinstance(conflict, IdempotencyConflictError)
    assert store.count_jobs() == 2


def test_caps_count_the_jobs_of_the_same_group(setup: tuple[JobStore, JobQueue]) -> None:
    store, queue = setup
    caps = TenantCaps(max_active=3)
    jobs = [new_job(tenant="acme") for _ in range(5)] + [new_job(tenant="other") for _ in range(2)]
    outcomes = accept_all(store, queue, [(new, caps) for new in jobs])
    acme = outcomes[:5]
    assert [isinstance(o, Accepted) for o in acme] == [True, True, True, False, False]
    assert all(isinstance(o, TenantCapError) and o.cap == "max_active_jobs" for o in acme[3:])
    assert all(isinstance(o, Accepted) for o in outcomes[5:])
    assert store.count_jobs() == 5
    cost_caps = TenantCaps(max_cost_per_day=4.0)  # 1.5 USD each: two more for "other" would be 6
    more = accept_all(store, queue, [(new_job(tenant="other"), cost_caps) for _ in range(2)])
    assert [type(o).__name__ for o in more] == ["TenantCapError", "TenantCapError"]
    assert isinstance(more[0], TenantCapError) and more[0].cap == "max_cost_per_day"


def test_jobs_are_stored_when_the_queue_is_unreachable(settings: Settings) -> None:
    db = Database(settings.resolved_database_url)
    db.migrate()
    store = JobStore(db)
    # A real Redis client aimed at a port where nothing listens: every kick fails.
    dead = HueyQueue(make_huey(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})))
    outcomes = accept_all(store, dead, [(new_job(), None) for _ in range(3)])
    assert all(isinstance(o, Accepted) and o.created for o in outcomes)
    assert store.count_jobs() == 3  # the reconciler kicks them later
    db.dispose()


def test_the_direct_path_writes_the_rows_the_store_writes(postgres_url: str, settings: Settings) -> None:
    """PostgreSQL: a job inserted from the event loop reads back as one the store inserted."""
    settings = settings.model_copy(update={"database_url": postgres_url})
    db = Database(settings.resolved_database_url)
    db.migrate()
    store = JobStore(db)
    queue = make_queue(settings)
    direct, through_store = new_job(), new_job(idempotency_key="k")  # a key: the store's path
    outcomes = accept_all(store, queue, [(direct, None), (through_store, None)])
    assert all(isinstance(o, Accepted) and o.created for o in outcomes)
    assert DIRECT_TRANSACTIONS == [1]
    with db.read() as session:
        rows = {job.id: job for job in session.scalars(select(Job))}
        events = {e.job_id: e for e in session.scalars(select(JobEvent))}
    skip = {"id", "idempotency_key", "created_at", "updated_at", "deadline_at", "request_hash"}
    columns = [c.key for c in Job.__table__.columns if c.key not in skip]
    a, b = rows[direct.id], rows[through_store.id]
    assert {c: getattr(a, c) for c in columns} == {c: getattr(b, c) for c in columns}
    assert a.deadline_at == direct.deadline_at and a.request_hash == direct.request_hash
    assert a.request == json.loads(direct.request_json) and a.cost == direct.cost
    assert (events[direct.id].from_state, events[direct.id].to_state) == (None, "ACCEPTED")
    assert events[direct.id].at == a.created_at
    db.dispose()

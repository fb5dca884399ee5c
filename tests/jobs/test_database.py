"""Pooled PostgreSQL connections: a dead one is never handed out, a live one costs no round trip."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import text

from qhybrid.jobs import database as database_module
from qhybrid.jobs.database import Database
from qhybrid.jobs.models import utcnow
from qhybrid.jobs.store import JobStore


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the liveness pings (round trips) made on checkout."""
    made: list[int] = []
    real = database_module.ping_connection

    def counted(connection: object) -> None:
        made.append(1)
        real(connection)

    monkeypatch.setattr(database_module, "ping_connection", counted)
    return made


def _store(url: str, idle_ping_seconds: float = database_module.IDLE_PING_SECONDS) -> JobStore:
    db = Database(url, idle_ping_seconds=idle_ping_seconds)
    db.migrate()
    return JobStore(db)


def _new_job(store: JobStore) -> str:
    job, _ = store.create_job(
        job_id=str(uuid.uuid4()),
        request={"budget": 1},
        request_hash="h",
        backend="local",
        shots=100,
        deadline_at=utcnow() + timedelta(hours=1),
    )
    return job.id


def _terminate_backends(admin_url: str, database: str) -> int:
    """End every server process of ``database`` and wait until they are gone; how many there were."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
        # pg_terminate_backend only signals: the processes say goodbye and exit a moment later.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,))
            if left.fetchone() == (0,):
                break
            time.sleep(0.01)
    return len(rows)


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[JobStore]:
    store = _store(postgres_url)
    yield store
    store.db.dispose()


def test_connections_killed_by_the_server_are_replaced_without_an_error(
    pg_store: JobStore, postgres_server: str, postgres_url: str
) -> None:
    job_id = _new_job(pg_store)
    # Several pooled connections, all idle, then the server ends every one of them (as a restart does).
    connections = [pg_store.db.engine.connect() for _ in range(3)]
    for connection in connections:
        connection.execute(text("SELECT 1"))
    for connection in connections:
        connection.close()
    assert pg_store.db.engine.pool.checkedin() >= 3  # type: ignore[attr-defined]
    assert _terminate_backends(postgres_server, postgres_url.rsplit("/", 1)[1]) >= 3
    # Every kind of use works at once: the worker's raw statements, Core and ORM sessions.
    for _ in range(4):
        assert pg_store.claim(job_id, owner="w", lease_seconds=60) is not None
        assert pg_store.get_job(job_id) is not None
        with pg_store.db.read() as session:
            assert session.execute(text("SELECT 1")).scalar() == 1
    assert pg_store.view(job_id) is not None


def test_a_connection_used_moments_ago_is_not_pinged(postgres_url: str, pings: list[int]) -> None:
    store = _store(postgres_url)
    eager = _store(postgres_url, idle_ping_seconds=0.0)  # the control: every checkout pings
    try:
        job_id = _new_job(store)
        pings.clear()
        for _ in range(20):
            store.get_job(job_id)
            store.claim(job_id, owner="w", lease_seconds=60)
        assert pings == []
        for _ in range(20):
            eager.get_job(job_id)
        assert len(pings) >= 19
    finally:
        store.db.dispose()
        eager.db.dispose()

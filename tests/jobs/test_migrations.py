"""The Alembic migrations and the mapped models describe the same schema."""

from __future__ import annotations

import json

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from qhybrid.jobs.database import Database
from qhybrid.jobs.models import Base


def test_models_match_migrations(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    db.dispose()
    assert differences == []


def test_jobs_written_before_tenants_belong_to_the_default_tenant(database_url: str) -> None:
    from datetime import timedelta

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from qhybrid.jobs.database import MIGRATIONS_DIR
    from qhybrid.jobs.models import utcnow
    from qhybrid.jobs.store import JobStore

    db = Database(database_url)
    with db.engine.connect() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
        connection.commit()
        now = utcnow().replace(tzinfo=None)
        connection.execute(
            text(
                "INSERT INTO jobs (id, state, backend, shots, request, request_hash, idempotency_key, "
                "attempt, step_failures, cancel_requested, deadline_at, version, created_at, updated_at) "
                "VALUES ('old-job', 'completed', 'local', 10, '{}', 'h', 'k-1', 0, 0, false, "
                ":at, 1, :at, :at)"
            ),
            {"at": now},
        )
        connection.commit()
    db.migrate()
    store = JobStore(db)
    view = store.view("old-job", tenant="default")
    assert view is not None and view.job.tenant == "default"
    assert store.view("old-job", tenant="desk-7") is None
    # The key is now the default tenant's: another tenant may use it for a job of its own.
    job, created = store.create_job(
        job_id="new-job",
        request={},
        request_hash="h2",
        backend="local",
        shots=10,
        deadline_at=utcnow() + timedelta(hours=1),
        idempotency_key="k-1",
        tenant="desk-7",
    )
    assert created and job.tenant == "desk-7"
    db.dispose()


def test_the_request_is_json_text_compressed_with_lz4_on_postgresql(postgres_url: str) -> None:
    """Migration 0008: a document written as jsonb reads back the same after it, and new ones too."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from qhybrid.jobs.database import MIGRATIONS_DIR

    db = Database(postgres_url)
    document = '{"budget": 1, "assets": [{"name": "A", "expected_return": 0.001}]}'
    with db.engine.connect() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")
        connection.commit()
        connection.execute(
            text(
                "INSERT INTO jobs (id, state, backend, shots, request, request_hash, attempt, step_failures, "
                "cancel_requested, deadline_at, version, created_at, updated_at) VALUES ('old-job', "
                "'accepted', 'local', 10, CAST(:doc AS JSONB), 'h', 0, 0, false, now(), 1, now(), now())"
            ),
            {"doc": document},
        )
        connection.commit()
    db.migrate()
    with db.engine.connect() as connection:
        kind, compression = connection.execute(
            text(
                "SELECT atttypid::regtype::text, attcompression FROM pg_attribute "
                "WHERE attrelid = 'jobs'::regclass AND attname = 'request'"
            )
        ).one()
        stored = connection.execute(text("SELECT request FROM jobs WHERE id = 'old-job'")).scalar()
    assert kind == "json"
    assert compression == "l"  # lz4 (this machine's PostgreSQL 15 has it)
    assert stored == json.loads(document)
    db.dispose()

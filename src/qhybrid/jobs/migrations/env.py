"""Alembic environment: runs on the connection that ``qhybrid.jobs.database.migrate`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from qhybrid.jobs.models import Base

target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    """Apply pending migrations on ``connection``."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables when needed.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through qhybrid.jobs.database.migrate(), which supplies a connection")
run_migrations(connection)

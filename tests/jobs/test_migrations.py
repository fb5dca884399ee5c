"""The Alembic migrations and the mapped models describe the same schema."""

from __future__ import annotations

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

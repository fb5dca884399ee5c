"""The request document is stored as ``json`` text with lz4 compression on PostgreSQL (was ``jsonb``, pglz).

The API writes the document it serialised, and only Python reads it back (the worker validates it
into ``JobRequest``); no query looks inside it. ``jsonb`` made PostgreSQL parse every document into
its binary form and ``pglz`` compressed it: for the 20-asset × 755-row price body (123 kB) that was
9.4 ms of the server's CPU per insert, against 1.5 ms as ``json`` with ``lz4`` (measured with the
backend's CPU time, ``docs/benchmarks.md``), more than the API's own work. ``json`` still checks
the syntax on input. lz4 needs PostgreSQL ≥ 14 built with it; otherwise the default stays.
SQLite stores JSON as text either way: nothing changes there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _has_lz4() -> bool:
    bind = op.get_bind()
    if (bind.dialect.server_version_info or (0,)) < (14,):
        return False
    values = bind.execute(
        sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    ).scalar()
    return values is not None and "lz4" in values


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.alter_column(
        "jobs",
        "request",
        type_=postgresql.JSON(),
        existing_type=postgresql.JSONB(),
        existing_nullable=False,
        postgresql_using="request::json",
    )
    if _has_lz4():
        op.execute("ALTER TABLE jobs ALTER COLUMN request SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    if _has_lz4():
        op.execute("ALTER TABLE jobs ALTER COLUMN request SET COMPRESSION default")
    op.alter_column(
        "jobs",
        "request",
        type_=postgresql.JSONB(),
        existing_type=postgresql.JSON(),
        existing_nullable=False,
        postgresql_using="request::jsonb",
    )

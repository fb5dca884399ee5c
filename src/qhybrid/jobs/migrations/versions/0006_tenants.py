"""Tenants: API keys stored as keyed hashes, and every job, idempotency key and cost per tenant.

``tenants`` names the tenants that hold database keys; ``api_keys`` holds one row per key: only
its HMAC-SHA256 under the deployment's pepper (``key_hash``, looked up by equality, so no key is
ever compared byte by byte), a short non-secret ``prefix`` for display, and ``revoked_at``.
``jobs.tenant`` (``default`` for the jobs written before tenants existed) owns the job; the
Idempotency-Key is unique per (tenant, key) instead of globally, so a replay by another tenant
creates that tenant's own job. ``jobs.estimated_cost`` copies the accepted estimate as a number,
so the per-tenant daily cost cap is one indexed ``SUM``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from qhybrid.jobs.models import BigIntId, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# 0001 declared the global unique constraint without a name: PostgreSQL called it
# jobs_idempotency_key_key; SQLite keeps it nameless, so batch mode names it by convention.
_SQLITE_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), sa.ForeignKey("tenants.name", ondelete="CASCADE"), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])

    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("jobs", naming_convention=_SQLITE_NAMING if sqlite else None) as batch:
        batch.add_column(sa.Column("tenant", sa.String(64), nullable=False, server_default="default"))
        batch.add_column(sa.Column("estimated_cost", sa.Float(), nullable=True))
        batch.drop_constraint(
            "uq_jobs_idempotency_key" if sqlite else "jobs_idempotency_key_key", type_="unique"
        )
        batch.create_unique_constraint("uq_jobs_tenant_idempotency_key", ["tenant", "idempotency_key"])
    op.create_index("ix_jobs_tenant_created", "jobs", ["tenant", "created_at", "id"])
    op.create_index("ix_jobs_tenant_state", "jobs", ["tenant", "state"])


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_index("ix_jobs_tenant_state", table_name="jobs")
    op.drop_index("ix_jobs_tenant_created", table_name="jobs")
    with op.batch_alter_table("jobs", naming_convention=_SQLITE_NAMING if sqlite else None) as batch:
        batch.drop_constraint("uq_jobs_tenant_idempotency_key", type_="unique")
        batch.create_unique_constraint(
            "uq_jobs_idempotency_key" if sqlite else "jobs_idempotency_key_key", ["idempotency_key"]
        )
        batch.drop_column("estimated_cost")
        batch.drop_column("tenant")
    op.drop_index("ix_api_keys_tenant", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")

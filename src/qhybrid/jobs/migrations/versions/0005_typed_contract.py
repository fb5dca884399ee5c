"""The typed job contract: the stored request's schema version, and μ/Σ kept with the job.

``request_version`` tells the worker how to read ``jobs.request`` (1: written before the typed
contract, where ``options.maxiter`` may be null and ``privacy`` unresolved). ``moments`` holds the
estimated μ and Σ (a numpy archive), computed once in PREPARING and reused in FINALIZING.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request_version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("moments", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("moments")
        batch.drop_column("request_version")

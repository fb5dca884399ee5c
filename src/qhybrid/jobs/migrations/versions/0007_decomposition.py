"""Decomposed jobs: many provider tasks per job, each with its own program and sealed key.

``jobs.decomposition`` holds the outer loop's state (classical start, current answer, rounds).
``remote_tasks`` rows gain ``round`` and ``part`` (0 and 0 for a job's single task) with the
sub-problem's program, sealed key and assets; the unique key becomes (job, attempt, round, part).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from qhybrid.jobs.models import JSONType

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("decomposition", JSONType, nullable=True))
    with op.batch_alter_table("remote_tasks") as batch:
        batch.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("part", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("program", sa.Text(), nullable=True))
        batch.add_column(sa.Column("proxy_key", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("subproblem", JSONType, nullable=True))
        batch.drop_constraint("uq_remote_tasks_job_attempt", type_="unique")
        batch.create_unique_constraint(
            "uq_remote_tasks_job_attempt_part", ["job_id", "attempt", "round", "part"]
        )


def downgrade() -> None:
    with op.batch_alter_table("remote_tasks") as batch:
        batch.drop_constraint("uq_remote_tasks_job_attempt_part", type_="unique")
        batch.create_unique_constraint("uq_remote_tasks_job_attempt", ["job_id", "attempt"])
        for column in ("subproblem", "proxy_key", "program", "part", "round"):
            batch.drop_column(column)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("decomposition")

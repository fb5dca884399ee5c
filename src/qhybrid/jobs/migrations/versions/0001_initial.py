"""Jobs, job events and remote tasks.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from qhybrid.jobs.models import BigIntId, JSONType, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("backend", sa.String(64), nullable=False),
        sa.Column("shots", sa.Integer(), nullable=False),
        sa.Column("request", JSONType, nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True, unique=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("step_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("next_poll_at", UTCDateTime(), nullable=True),
        sa.Column("poll_interval", sa.Float(), nullable=True),
        sa.Column("deadline_at", UTCDateTime(), nullable=False),
        sa.Column("program", sa.Text(), nullable=True),
        sa.Column("prepared", JSONType, nullable=True),
        sa.Column("result", JSONType, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_jobs_created", "jobs", ["created_at", "id"])
    op.create_index("ix_jobs_state_poll", "jobs", ["state", "next_poll_at"])

    op.create_table(
        "job_events",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("from_state", sa.String(20), nullable=True),
        sa.Column("to_state", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(64), nullable=True),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"])

    op.create_table(
        "remote_tasks",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(64), nullable=False),
        sa.Column("client_token", sa.String(128), nullable=False, unique=True),
        sa.Column("task_id", sa.String(512), nullable=True),
        sa.Column("state", sa.String(20), nullable=True),
        sa.Column("provider_state", sa.String(64), nullable=True),
        sa.Column("queue_position", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("polls", sa.Integer(), nullable=False),
        sa.Column("counts", JSONType, nullable=True),
        sa.Column("details", JSONType, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("submitted_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("job_id", "attempt", name="uq_remote_tasks_job_attempt"),
    )
    op.create_index("ix_remote_tasks_job_id", "remote_tasks", ["job_id"])


def downgrade() -> None:
    op.drop_table("remote_tasks")
    op.drop_table("job_events")
    op.drop_table("jobs")

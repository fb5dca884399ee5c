"""Database tables: jobs, their transition events, the provider tasks submitted for them, tenants' API keys.

The schema itself is owned by the Alembic migrations in ``qhybrid/jobs/migrations``; these
mapped classes must match them (a test compares the two).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes, store UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite compares datetimes as text, which only orders correctly without an offset suffix.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Always hand back aware UTC datetimes."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of qhybrid's tables."""


class Job(Base):
    """One portfolio optimization request and its durable state."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    backend: Mapped[str] = mapped_column(String(64), nullable=False)
    shots: Mapped[int] = mapped_column(Integer, nullable=False)
    # ``json`` text, not ``jsonb``, on PostgreSQL (lz4-compressed): no query looks inside it, and
    # parsing it into jsonb cost the server more than the API's whole accept (migration 0008).
    request: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # How to read ``request``: see qhybrid.domain.request.upgrade_stored_request.
    request_version: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1", default=1)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    # Whose job it is: the tenant of the API key that submitted it (``default`` without keys).
    tenant: Mapped[str] = mapped_column(
        String(64), nullable=False, server_default="default", default="default"
    )
    # Unique per tenant (see __table_args__): another tenant's replay of a key is its own job.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    step_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    fallback_reason: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    poll_interval: Mapped[float | None] = mapped_column(Float)
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    program: Mapped[str | None] = mapped_column(Text)
    prepared: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    cost: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The accepted estimate as a number (also in ``cost``), summed by the per-tenant daily cap.
    estimated_cost: Mapped[float | None] = mapped_column(Float)
    # Sealed with the key-encryption key; never logged, never shown by the API.
    proxy_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    # μ and Σ estimated in PREPARING (a numpy archive), so FINALIZING judges on the same numbers.
    moments: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Decomposed jobs only: the outer loop's state (qhybrid.jobs.subproblems.LoopState).
    decomposition: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_state_poll", "state", "next_poll_at"),
        Index("ix_jobs_tenant_created", "tenant", "created_at", "id"),
        Index("ix_jobs_tenant_state", "tenant", "state"),
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
    )


class JobEvent(Base):
    """One transition of a job, in order; the job's history as the API shows it."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20), nullable=False)
    detail: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(64))


class RemoteTask(Base):
    """A provider task submitted (or about to be) for one attempt of a job.

    The row, with its client token, is written before the provider is called, so a worker that
    crashes mid-submission leaves a token to look the task up by instead of submitting twice.
    A job's single task has ``round`` and ``part`` 0; a decomposed job has one row per sub-problem
    (``round`` ≥ 1), each carrying its own program, sealed key and assets.
    """

    __tablename__ = "remote_tasks"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    backend: Mapped[str] = mapped_column(String(64), nullable=False)
    client_token: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    task_id: Mapped[str | None] = mapped_column(String(512))
    state: Mapped[str | None] = mapped_column(String(20))
    provider_state: Mapped[str | None] = mapped_column(String(64))
    queue_position: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)
    polls: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    counts: Mapped[dict[str, int] | None] = mapped_column(JSONType)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    round: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    part: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    program: Mapped[str | None] = mapped_column(Text)
    # Sealed for this task alone (job id, round and part are the associated data).
    proxy_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    subproblem: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        UniqueConstraint("job_id", "attempt", "round", "part", name="uq_remote_tasks_job_attempt_part"),
    )


class Tenant(Base):
    """A tenant that holds API keys in the database (tenants of ``QHYBRID_API_KEYS`` need no row)."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ApiKey(Base):
    """One API key of a tenant: never the key itself, only its keyed hash and a display prefix."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(
        String(64), ForeignKey("tenants.name", ondelete="CASCADE"), nullable=False, index=True
    )
    # HMAC-SHA256 of the key under the deployment's pepper, hex; a key is found by this value.
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),)

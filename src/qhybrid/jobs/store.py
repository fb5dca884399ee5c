"""The job store: every read and every conditional write the API, the worker and the reconciler make.

The database is the source of truth. A worker owns a job only while it holds an unexpired lease,
and every change of state is a single conditional ``UPDATE`` (expected state, lease owner) that
commits together with its event row, so two workers can never both move a job.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Insert,
    Row,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSON as PG_JSON
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, load_only

from qhybrid.core.metrics import JOB_TRANSITIONS, STATE_SECONDS
from qhybrid.domain.request import REQUEST_VERSION
from qhybrid.domain.states import TERMINAL_STATES, JobState, check_transition
from qhybrid.jobs.database import Database
from qhybrid.jobs.models import Job, JobEvent, RemoteTask, utcnow
from qhybrid.jobs.pgfast import PgFastPath, job_of, loaded
from qhybrid.jobs.tenants import DEFAULT_TENANT

#: No job is older than this; a cursor before it was not written by the API.
MIN_CURSOR_TIME = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class NewJob:
    """An ACCEPTED job to insert, as the API decided it.

    Attributes:
        request_json: The request document as JSON text: serialised once, hashed and stored as is.
    """

    id: str
    request_json: str
    request_hash: str
    backend: str
    shots: int
    deadline_at: datetime
    idempotency_key: str | None = None
    cost: dict[str, Any] | None = None
    request_version: int = REQUEST_VERSION
    tenant: str = DEFAULT_TENANT

    @property
    def estimated_cost(self) -> float | None:
        """The cost estimate in USD, summed by the tenant's daily cap."""
        estimated = (self.cost or {}).get("estimated")
        return float(estimated) if isinstance(estimated, int | float) else None

    def row(self, created_at: datetime) -> dict[str, Any]:
        """The ``jobs`` row's values; the request as ``request_text`` (JSON, see ``JobStore``)."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "estimated_cost": self.estimated_cost,
            "state": JobState.ACCEPTED.value,
            "backend": self.backend,
            "shots": self.shots,
            "request_text": self.request_json,
            "request_version": self.request_version,
            "request_hash": self.request_hash,
            "idempotency_key": self.idempotency_key,
            "attempt": 0,
            "step_failures": 0,
            "cancel_requested": False,
            "deadline_at": self.deadline_at,
            "cost": self.cost,
            "version": 1,
            "created_at": created_at,
            "updated_at": created_at,
        }

    def as_job(self, created_at: datetime, *, request: dict[str, Any] | None = None) -> Job:
        """The row as stored (a detached ``Job``); ``request`` is left unset unless given."""
        values = self.row(created_at)
        del values["request_text"]
        return Job(**values, request=request)


def _table(model: type[Job] | type[JobEvent] | type[RemoteTask]) -> Table:
    """The Core table of a mapped class (typed as a ``Table``, which it is)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


#: The first event of every job (executemany: one statement for a whole group commit).
_INSERT_EVENTS = insert(_table(JobEvent))

# The worker's hot path runs Core statements on these tables (no ORM unit of work, no identity
# map; SQLAlchemy caches their compiled form) and builds the detached mapped objects itself.
_JOBS = _table(Job)
_EVENTS = _table(JobEvent)
_TASKS = _table(RemoteTask)
_TERMINAL = sorted(s.value for s in TERMINAL_STATES)

#: When the job entered its current state: its latest event, read inside the statement that moves
#: it (a subquery in RETURNING; an index lookup on job_events.job_id), not by a SELECT of its own.
#: Not correlated with ``jobs.id``: SQLite's RETURNING drops table names, which would make it ambiguous.
_ENTERED_AT = (
    select(_EVENTS.c.at)
    .where(_EVENTS.c.job_id == bindparam("entered_job_id"))
    .order_by(_EVENTS.c.id.desc())
    .limit(1)
    .scalar_subquery()
    .label("entered_at")
)

_CLAIM = (
    update(_JOBS)
    .where(
        _JOBS.c.id == bindparam("job_id"),
        _JOBS.c.state.not_in(_TERMINAL),
        or_(
            _JOBS.c.lease_owner.is_(None),
            _JOBS.c.lease_expires_at.is_(None),
            _JOBS.c.lease_expires_at < bindparam("now"),
            _JOBS.c.lease_owner == bindparam("owner"),
        ),
    )
    .values(lease_owner=bindparam("owner"), lease_expires_at=bindparam("expires"))
    .returning(*_JOBS.c)
)

_RENEW = (
    update(_JOBS)
    .where(
        _JOBS.c.id == bindparam("job_id"),
        _JOBS.c.lease_owner == bindparam("owner"),
        _JOBS.c.lease_expires_at >= bindparam("now"),
        _JOBS.c.state.not_in(_TERMINAL),
    )
    .values(lease_expires_at=bindparam("expires"))
)

_GET_JOB = select(*_JOBS.c).where(_JOBS.c.id == bindparam("job_id"))

_SINGLE_TASK = select(*_TASKS.c).where(
    _TASKS.c.job_id == bindparam("job_id"), _TASKS.c.attempt == bindparam("attempt"), _TASKS.c.round == 0
)


def _job(row: Row[Any]) -> Job:
    """A detached ``Job`` from a row of all its columns."""
    return loaded(Job, dict(row._mapping))


def _job_without_entered(row: Row[Any]) -> Job:
    """A detached ``Job`` from a move's RETURNING row (all its columns and ``entered_at``)."""
    return loaded(Job, {key: value for key, value in row._mapping.items() if key != "entered_at"})


def _task(row: Row[Any]) -> RemoteTask:
    """A detached ``RemoteTask`` from a row of all its columns."""
    return loaded(RemoteTask, dict(row._mapping))


class IdempotencyConflictError(Exception):
    """An Idempotency-Key was reused with a different request body."""


class TenantCapError(Exception):
    """A tenant reached one of its caps; nothing was stored.

    Attributes:
        cap: ``max_active_jobs`` or ``max_cost_per_day``.
    """

    def __init__(self, cap: str, message: str) -> None:
        super().__init__(message)
        self.cap = cap


@dataclass(frozen=True)
class TenantCaps:
    """Per-tenant caps checked when a job is created (``None``: no cap).

    Attributes:
        max_active: Unfinished jobs a tenant may have.
        max_cost_per_day: Sum of the estimated costs of the jobs it submitted in the last 24 hours.
    """

    max_active: int | None = None
    max_cost_per_day: float | None = None


class InvalidCursorError(ValueError):
    """A paging cursor that this store did not produce."""


@dataclass(frozen=True)
class SealedKey:
    """A sealed obfuscation key as stored.

    Attributes:
        job_id: The job it belongs to.
        part: ``None`` for the job's own key; ``(round, part)`` for a decomposed job's sub-problem,
            whose key is sealed for that task too (``jobs.subproblems.task_name``).
        blob: The sealed bytes.
    """

    job_id: str
    part: tuple[int, int] | None
    blob: bytes


@dataclass(frozen=True)
class JobView:
    """A job with its history, as the API shows it."""

    job: Job
    events: Sequence[JobEvent]
    remote_tasks: Sequence[RemoteTask]


@dataclass(frozen=True)
class CancelOutcome:
    """What a cancel request did.

    Attributes:
        job: The job after the request (``None`` if there is no such job).
        accepted: False when the job had already ended.
        immediate: True when the job was cancelled on the spot (nothing remote existed yet).
    """

    job: Job | None
    accepted: bool
    immediate: bool


@dataclass(frozen=True)
class _Moved:
    """A transition written in the current transaction, to count once it commits."""

    source: JobState
    target: JobState
    seconds_in_source: float | None

    def count(self) -> None:
        JOB_TRANSITIONS.labels(self.source.api_name, self.target.api_name).inc()
        if self.seconds_in_source is not None:
            STATE_SECONDS.labels(self.source.api_name).observe(max(0.0, self.seconds_in_source))


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: What :func:`_encode_cursor` writes: an aware UTC time and a job id of the API's alphabet.
_CURSOR = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?\+00:00)\|([A-Za-z0-9-]{1,64})$")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    # Strict: only the exact shape the API writes. A forged cursor (a naive or far-future time, an
    # offset that overflows UTC, any other text) is a 4xx naming the cursor, never a 500.
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        match = _CURSOR.match(raw)
        if match is None:
            raise ValueError("not the shape of a cursor")
        created = datetime.fromisoformat(match.group(1))
        if not MIN_CURSOR_TIME <= created <= utcnow() + timedelta(days=1):
            raise ValueError("time out of range")
        return created, match.group(2)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursorError("cursor is not one this API returned") from exc


def _lease_free(now: datetime) -> Any:
    return or_(Job.lease_owner.is_(None), Job.lease_expires_at.is_(None), Job.lease_expires_at < now)


class JobStore:
    """Reads and conditional writes of jobs, events and remote tasks.

    Args:
        db: The database to use.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        # The request arrives as JSON text: PostgreSQL casts it to json itself and SQLite stores
        # the text, so the document is not decoded and encoded again on the way in.
        text_param = bindparam("request_text", type_=Text)
        request_value = text_param if db.is_sqlite else cast(text_param, PG_JSON)
        self._insert_jobs: Insert = insert(_table(Job)).values(request=request_value)
        # The worker's calls on PostgreSQL: one statement each on a raw pooled connection.
        self._pg = None if db.is_sqlite else PgFastPath(db.engine)

    # ----------------------------------------------------------------------------- API side

    def create_job(
        self,
        *,
        job_id: str,
        request: dict[str, Any] | str,
        request_hash: str,
        backend: str,
        shots: int,
        deadline_at: datetime,
        idempotency_key: str | None = None,
        cost: dict[str, Any] | None = None,
        request_version: int = REQUEST_VERSION,
        tenant: str = DEFAULT_TENANT,
        caps: TenantCaps | None = None,
    ) -> tuple[Job, bool]:
        """Insert an ACCEPTED job of ``tenant`` and its first event, unless the tenant used the key.

        Idempotency keys are the tenant's own: the same key sent by another tenant is a new job.

        Args:
            job_id: The new job's id.
            request: The request document, or its JSON text (serialised once by the caller).
            request_hash: Hash of the request, compared when an idempotency key is reused.
            backend: Backend name.
            shots: Shots, with the deployment's default resolved.
            deadline_at: When the job answers classically if the QPU has not.
            idempotency_key: The client's ``Idempotency-Key``, if any.
            cost: The cost estimate, as JSON.
            request_version: Version of the request document.
            tenant: The tenant the job belongs to.
            caps: The tenant's caps, checked in the inserting transaction.

        Returns:
            The job and whether it was created now (False: an earlier job with the same key).

        Raises:
            IdempotencyConflictError: If the key belongs to a job with a different request.
            TenantCapError: If the new job would break one of the tenant's ``caps`` (a replay of
                an idempotency key never does: it creates nothing).
        """
        new = NewJob(
            id=job_id,
            request_json=request if isinstance(request, str) else json.dumps(request),
            request_hash=request_hash,
            backend=backend,
            shots=shots,
            deadline_at=deadline_at,
            idempotency_key=idempotency_key,
            cost=cost,
            request_version=request_version,
            tenant=tenant,
        )
        if idempotency_key is not None:
            existing = self._by_idempotency_key(new)
            if existing is not None:
                return existing, False
        try:
            created_at, (refused,) = self.create_jobs([new], caps)
        except IntegrityError:
            # Two retries of one request raced; the loser returns the winner's job.
            if idempotency_key is None:
                raise
            existing = self._by_idempotency_key(new)
            if existing is None:
                raise
            return existing, False
        if refused is not None:
            raise refused
        return new.as_job(created_at, request=json.loads(new.request_json)), True

    def create_jobs(
        self, jobs: Sequence[NewJob], caps: TenantCaps | None = None
    ) -> tuple[datetime, list[TenantCapError | None]]:
        """Insert ACCEPTED jobs and their first events in one transaction.

        The accept path's group commit: one transaction and two multi-row INSERTs, whatever the
        number of jobs. A job that would break its tenant's ``caps`` is left out (the caps count
        the jobs of the group before it); idempotency keys are not looked up (``create_job`` does).

        Returns:
            The creation time, and per job ``None`` (stored) or the cap it would break.

        Raises:
            sqlalchemy.exc.IntegrityError: If an id or an idempotency key exists already (then
                nothing is stored).
        """
        now = utcnow()
        refused: list[TenantCapError | None] = [None] * len(jobs)
        if not jobs:
            return now, refused
        checked = caps is not None and (caps.max_active is not None or caps.max_cost_per_day is not None)
        with self.db.write() as session:
            if checked:
                assert caps is not None
                # Jobs of the group already let through count against their tenant's caps.
                pending: dict[str, tuple[int, float]] = {}
                self._lock_tenants(session, sorted({new.tenant for new in jobs}))
                for index, new in enumerate(jobs):
                    count, cost = pending.get(new.tenant, (0, 0.0))
                    try:
                        self._check_caps(session, new.tenant, caps, new.estimated_cost, now, count, cost)
                    except TenantCapError as exc:
                        refused[index] = exc
                        continue
                    pending[new.tenant] = (count + 1, cost + (new.estimated_cost or 0.0))
            stored = [new for new, problem in zip(jobs, refused, strict=True) if problem is None]
            if stored:
                # Core INSERTs on the tables rather than the ORM unit of work: this is the accept
                # path, where every round trip and every millisecond of CPU shows up in the p99.
                session.execute(self._insert_jobs, [new.row(now) for new in stored])
                session.execute(
                    _INSERT_EVENTS,
                    [
                        {"job_id": new.id, "at": now, "from_state": None, "to_state": JobState.ACCEPTED.value}
                        for new in stored
                    ],
                )
        return now, refused

    def _lock_tenants(self, session: Session, tenants: Sequence[str]) -> None:
        # The caps are checked in the transaction that inserts, so two concurrent submissions
        # cannot both pass: SQLite's writers are serialised by BEGIN IMMEDIATE; PostgreSQL takes a
        # transaction-level advisory lock per tenant (released at commit), so other tenants never
        # wait. In sorted order: two groups locking the same tenants cannot deadlock.
        if self.db.is_sqlite:
            return
        for tenant in tenants:
            session.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"tenant:{tenant}"}
            )

    def _check_caps(
        self,
        session: Session,
        tenant: str,
        caps: TenantCaps,
        estimated: float | None,
        now: datetime,
        pending_jobs: int = 0,
        pending_cost: float = 0.0,
    ) -> None:
        if caps.max_active is not None:
            active = int(
                session.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.tenant == tenant, Job.state.not_in([s.value for s in TERMINAL_STATES]))
                )
                or 0
            )
            active += pending_jobs
            if active >= caps.max_active:
                raise TenantCapError(
                    "max_active_jobs",
                    f"the tenant has {active} unfinished jobs; at most {caps.max_active} are allowed "
                    "(QHYBRID_MAX_ACTIVE_JOBS_PER_TENANT)",
                )
        if caps.max_cost_per_day is not None:
            spent = session.scalar(
                select(func.coalesce(func.sum(Job.estimated_cost), 0.0)).where(
                    Job.tenant == tenant, Job.created_at >= now - timedelta(days=1)
                )
            )
            before = float(spent or 0.0) + pending_cost
            total = before + (estimated or 0.0)
            if total > caps.max_cost_per_day:
                raise TenantCapError(
                    "max_cost_per_day",
                    f"estimated cost {total:.2f} USD in the last 24 hours with this job "
                    f"({before:.2f} before it); at most {caps.max_cost_per_day:g} "
                    "are allowed (QHYBRID_MAX_COST_PER_DAY)",
                )

    def _by_idempotency_key(self, new: NewJob) -> Job | None:
        with self.db.read() as session:
            job = session.scalars(
                select(Job).where(Job.tenant == new.tenant, Job.idempotency_key == new.idempotency_key)
            ).one_or_none()
        # A job accepted by an older API may have hashed its document differently: the documents
        # themselves decide then, so an upgrade never turns a genuine retry into a conflict.
        if (
            job is not None
            and job.request_hash != new.request_hash
            and job.request != json.loads(new.request_json)
        ):
            raise IdempotencyConflictError("Idempotency-Key was already used for a different request body")
        return job

    def get_job(self, job_id: str, *, tenant: str | None = None) -> Job | None:
        """The job row, or ``None`` (also when ``tenant`` is given and another tenant owns it)."""
        if self._pg is not None:
            job = self._pg.get_job(job_id)
        else:
            with self.db.reading() as connection:
                row = connection.execute(_GET_JOB, {"job_id": job_id}).one_or_none()
            job = None if row is None else _job(row)
        if job is None or (tenant is not None and job.tenant != tenant):
            return None
        return job

    def view(self, job_id: str, *, tenant: str | None = None) -> JobView | None:
        """The job with its events and remote tasks, or ``None`` (also when another tenant owns it).

        Args:
            job_id: The job.
            tenant: Only a job of this tenant; ``None``: any (the worker's and operators' view).
        """
        with self.db.read() as session:
            job = session.get(Job, job_id)
            if job is None or (tenant is not None and job.tenant != tenant):
                return None
            events = session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
            ).all()
            tasks = session.scalars(
                select(RemoteTask)
                .where(RemoteTask.job_id == job_id)
                .order_by(RemoteTask.attempt, RemoteTask.round, RemoteTask.part)
            ).all()
            return JobView(job=job, events=events, remote_tasks=tasks)

    def list_jobs(
        self,
        *,
        limit: int,
        cursor: str | None = None,
        state: JobState | None = None,
        states: Collection[JobState] = (),
        tenant: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """One page of jobs, newest first; only ``tenant``'s when given.

        Only the columns a list shows are loaded: a job's request (its price history) and its
        program stay in the database.

        Args:
            limit: Jobs per page.
            cursor: The previous page's next cursor.
            state: Only jobs in this state.
            states: Only jobs in one of these states (with ``state``: in any of them).
            tenant: Only this tenant's jobs; ``None``: every tenant's.

        Returns:
            The jobs and the cursor of the next page (``None`` on the last page).

        Raises:
            InvalidCursorError: If ``cursor`` is malformed.
        """
        query = (
            select(Job)
            .options(
                load_only(
                    Job.id,
                    Job.state,
                    Job.backend,
                    Job.created_at,
                    Job.updated_at,
                    Job.finished_at,
                    Job.result,
                    raiseload=True,
                )
            )
            .order_by(Job.created_at.desc(), Job.id.desc())
            .limit(limit + 1)
        )
        wanted = {s.value for s in states} | ({state.value} if state is not None else set())
        if wanted:
            query = query.where(Job.state.in_(sorted(wanted)))
        if tenant is not None:
            query = query.where(Job.tenant == tenant)
        if cursor:
            created, job_id = _decode_cursor(cursor)
            query = query.where(
                or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
            )
        with self.db.read() as session:
            jobs = list(session.scalars(query).all())
        if len(jobs) > limit:
            return jobs[:limit], _encode_cursor(jobs[limit - 1])
        return jobs, None

    def events_after(
        self, job_id: str, after: int = 0, *, tenant: str | None = None
    ) -> tuple[JobState, list[JobEvent]] | None:
        """The job's state and its events with an id above ``after``, oldest first.

        What a stream of the job's transitions reads: the event ids only grow, so the last id
        sent is all a reader has to remember.

        Args:
            job_id: The job.
            after: The last event id already read.
            tenant: Only a job of this tenant; ``None``: any.

        Returns:
            ``None`` when there is no such job (or another tenant owns it).
        """
        query = select(Job.state).where(Job.id == job_id)
        if tenant is not None:
            query = query.where(Job.tenant == tenant)
        with self.db.read() as session:
            state = session.scalar(query)
            if state is None:
                return None
            events = session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after).order_by(JobEvent.id)
            ).all()
            return JobState(state), list(events)

    def count_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state (states without a job are left out)."""
        with self.db.read() as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        return {JobState(state): int(count) for state, count in rows}

    def count_jobs(self) -> int:
        """How many jobs exist."""
        with self.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(Job)) or 0)

    def request_cancel(self, job_id: str, *, actor: str = "api", tenant: str | None = None) -> CancelOutcome:
        """Cancel a job: at once if no worker has touched it yet, else by flagging it for the worker.

        Another tenant's job is answered as if it did not exist (``job=None``).
        """
        now = utcnow()
        with self.db.write() as session:
            job = session.get(Job, job_id)
            if job is None or (tenant is not None and job.tenant != tenant):
                return CancelOutcome(job=None, accepted=False, immediate=False)
            if JobState(job.state) in TERMINAL_STATES:
                return CancelOutcome(job=job, accepted=False, immediate=False)
            if job.state == JobState.ACCEPTED.value:
                moved, _ = self._move(
                    session,
                    job_id,
                    JobState.ACCEPTED,
                    JobState.CANCELLED,
                    owner=None,
                    now=now,
                    detail="cancelled before any work started",
                    actor=actor,
                    fields={"cancel_requested": True},
                )
                if moved is not None:
                    session.flush()
                    session.refresh(job)
                    outcome = CancelOutcome(job=job, accepted=True, immediate=True)
            else:
                moved = None
            if moved is None:
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state.not_in([s.value for s in TERMINAL_STATES]))
                    .values(cancel_requested=True, updated_at=now, version=Job.version + 1)
                )
                session.flush()
                session.refresh(job)
                outcome = CancelOutcome(job=job, accepted=True, immediate=False)
        if moved is not None:
            moved.count()  # committed: now it happened
        return outcome

    # -------------------------------------------------------------------------- worker side

    def claim(self, job_id: str, *, owner: str, lease_seconds: float) -> Job | None:
        """Take the job's lease if it is live and nobody else holds an unexpired lease.

        Returns:
            The job as claimed, or ``None`` if it is terminal, missing or leased elsewhere.
        """
        now = utcnow()
        # One statement, one round trip: the conditional UPDATE hands the claimed row back
        # (RETURNING), where an UPDATE and a SELECT were two on every step of every job.
        params = {
            "job_id": job_id,
            "now": now,
            "owner": owner,
            "expires": now + timedelta(seconds=lease_seconds),
        }
        if self._pg is not None:
            return self._pg.claim(params)
        with self.db.single() as connection:
            row = connection.execute(_CLAIM, params).one_or_none()
        return None if row is None else _job(row)

    def claim_with_task(
        self, job_id: str, *, owner: str, lease_seconds: float
    ) -> tuple[Job, RemoteTask | None] | None:
        """:meth:`claim`, with the current attempt's single task row (``None`` if it has none).

        One statement on PostgreSQL: the step that polls or finalizes the task needs no read.
        """
        if self._pg is None:
            job = self.claim(job_id, owner=owner, lease_seconds=lease_seconds)
            return None if job is None else (job, self.remote_task(job_id, job.attempt))
        now = utcnow()
        return self._pg.claim_with_task(
            {"job_id": job_id, "now": now, "owner": owner, "expires": now + timedelta(seconds=lease_seconds)}
        )

    def transition(
        self,
        job_id: str,
        *,
        owner: str | None,
        source: JobState,
        target: JobState,
        detail: str | None = None,
        task_update: tuple[int, dict[str, Any]] | None = None,
        **fields: Any,
    ) -> bool:
        """Move the job ``source -> target`` if it is still in ``source`` under ``owner``'s lease.

        ``owner=None`` moves a job that nobody holds a live lease on. Entering a terminal state
        clears the lease and the poll schedule and stamps ``finished_at``. The event row is
        written in the same transaction, and so is ``task_update`` (a remote task row's id and
        fields), only if the job moved.

        Returns:
            True if the job moved; False if another actor changed it first.
        """
        moved, _ = self._transition(job_id, owner, source, target, detail, task_update, fields, fetch=False)
        return moved

    def transition_returning(
        self,
        job_id: str,
        *,
        owner: str | None,
        source: JobState,
        target: JobState,
        detail: str | None = None,
        task_update: tuple[int, dict[str, Any]] | None = None,
        **fields: Any,
    ) -> Job | None:
        """:meth:`transition`, handing back the job as the move left it (``None``: not moved).

        The row comes back from the moving ``UPDATE`` itself (RETURNING), so a worker that goes
        on with the next step does not read the row it has just written.
        """
        _, job = self._transition(job_id, owner, source, target, detail, task_update, fields, fetch=True)
        return job

    def _transition(
        self,
        job_id: str,
        owner: str | None,
        source: JobState,
        target: JobState,
        detail: str | None,
        task_update: tuple[int, dict[str, Any]] | None,
        fields: dict[str, Any],
        *,
        fetch: bool,
    ) -> tuple[bool, Job | None]:
        now = utcnow()
        if self._pg is not None:
            return self._pg_transition(job_id, owner, source, target, detail, task_update, fields, fetch, now)
        with self.db.begin() as connection:
            moved, job = self._move(
                connection,
                job_id,
                source,
                target,
                owner=owner,
                now=now,
                detail=detail,
                actor=owner,
                fields=fields,
                fetch=fetch,
            )
            if moved is not None and task_update is not None:
                row_id, task_fields = task_update
                connection.execute(
                    update(_TASKS).where(_TASKS.c.id == row_id).values(updated_at=now, **task_fields)
                )
        if moved is None:
            return False, None
        moved.count()  # after the commit: a rolled-back move is not counted
        return True, job

    def _pg_transition(
        self,
        job_id: str,
        owner: str | None,
        source: JobState,
        target: JobState,
        detail: str | None,
        task_update: tuple[int, dict[str, Any]] | None,
        fields: dict[str, Any],
        fetch: bool,
        now: datetime,
    ) -> tuple[bool, Job | None]:
        """PostgreSQL: the move, its event and the task row's update in one statement (pgfast)."""
        assert self._pg is not None
        check_transition(source, target)
        values: dict[str, Any] = {}
        if target in TERMINAL_STATES:
            values.update(finished_at=now, lease_owner=None, lease_expires_at=None, next_poll_at=None)
        values.update(fields)
        row = self._pg.move(
            job_id=job_id,
            owner=owner,
            source=source.value,
            target=target.value,
            now=now,
            detail=detail,
            fields=values,
            task_update=task_update,
            fetch=fetch,
        )
        if row is None:
            return False, None
        entered = row["entered_at"]
        _Moved(source, target, None if entered is None else (now - entered).total_seconds()).count()
        return True, (job_of(row) if fetch else None)

    def _moving(
        self,
        job_id: str,
        source: JobState,
        target: JobState,
        *,
        owner: str | None,
        now: datetime,
        fields: dict[str, Any],
        fetch: bool,
    ) -> Any:
        """The conditional UPDATE of a move, returning when the job entered ``source`` (and its row)."""
        values: dict[str, Any] = {"state": target.value, "updated_at": now, "version": _JOBS.c.version + 1}
        if target in TERMINAL_STATES:
            values.update(finished_at=now, lease_owner=None, lease_expires_at=None, next_poll_at=None)
        values.update(fields)
        lease_condition = (
            or_(
                _JOBS.c.lease_owner.is_(None),
                _JOBS.c.lease_expires_at.is_(None),
                _JOBS.c.lease_expires_at < now,
            )
            if owner is None
            else _JOBS.c.lease_owner == owner
        )
        returned = (_ENTERED_AT, *_JOBS.c) if fetch else (_ENTERED_AT, _JOBS.c.id)
        return (
            update(_JOBS)
            .where(_JOBS.c.id == job_id, _JOBS.c.state == source.value, lease_condition)
            .values(**values)
            .returning(*returned)
        )

    def _move(
        self,
        connection: Connection | Session,
        job_id: str,
        source: JobState,
        target: JobState,
        *,
        owner: str | None,
        now: datetime,
        detail: str | None,
        actor: str | None,
        fields: dict[str, Any],
        fetch: bool = False,
    ) -> tuple[_Moved | None, Job | None]:
        """The conditional UPDATE and its event: two statements; the job as moved too if ``fetch``."""
        check_transition(source, target)
        row = connection.execute(
            self._moving(job_id, source, target, owner=owner, now=now, fields=fields, fetch=fetch),
            {"entered_job_id": job_id},
        ).one_or_none()
        if row is None:
            return None, None
        entered = row.entered_at
        connection.execute(
            _INSERT_EVENTS,
            {
                "job_id": job_id,
                "at": now,
                "from_state": source.value,
                "to_state": target.value,
                "detail": detail,
                "actor": actor,
            },
        )
        seconds = None if entered is None else (now - entered).total_seconds()
        return _Moved(source, target, seconds), (_job_without_entered(row) if fetch else None)

    def update_job(
        self,
        job_id: str,
        *,
        owner: str,
        task_update: tuple[int, dict[str, Any]] | None = None,
        **fields: Any,
    ) -> bool:
        """Change fields of a live job whose lease ``owner`` holds; no state change.

        ``task_update`` (a remote task row's id and fields) is written with it, only if the job's
        row was.

        Returns:
            True if the row was updated.
        """
        now = utcnow()
        if self._pg is not None:
            return self._pg.update_job(job_id, owner, now, fields, task_update)
        with self.db.begin() as connection:
            result = connection.execute(
                update(_JOBS)
                .where(_JOBS.c.id == job_id, _JOBS.c.lease_owner == owner, _JOBS.c.state.not_in(_TERMINAL))
                .values(updated_at=now, version=_JOBS.c.version + 1, **fields)
            )
            updated = bool(result.rowcount == 1)
            if updated and task_update is not None:
                row_id, task_fields = task_update
                connection.execute(
                    update(_TASKS).where(_TASKS.c.id == row_id).values(updated_at=now, **task_fields)
                )
            return updated

    def renew_lease(self, job_id: str, *, owner: str, lease_seconds: float) -> bool:
        """Push ``owner``'s unexpired lease on a live job ``lease_seconds`` into the future.

        Returns:
            False if the lease is no longer ``owner``'s (expired and taken, released, or the job
            ended): the caller stops renewing.
        """
        now = utcnow()
        params = {
            "job_id": job_id,
            "owner": owner,
            "now": now,
            "expires": now + timedelta(seconds=lease_seconds),
        }
        if self._pg is not None:
            return self._pg.renew(params)
        with self.db.single() as connection:
            return bool(connection.execute(_RENEW, params).rowcount == 1)

    def release(
        self, job_id: str, *, owner: str, task_update: tuple[int, dict[str, Any]] | None = None, **fields: Any
    ) -> bool:
        """Give the lease back (typically with ``next_poll_at`` set) so any worker may continue.

        ``task_update``: a remote task row's id and fields, written with it (see :meth:`update_job`).
        """
        return self.update_job(
            job_id, owner=owner, task_update=task_update, lease_owner=None, lease_expires_at=None, **fields
        )

    # ------------------------------------------------------------------------- remote tasks

    def remote_task(self, job_id: str, attempt: int) -> RemoteTask | None:
        """The remote task row of one attempt of a job's single task, or ``None``."""
        if self._pg is not None:
            return self._pg.single_task(job_id, attempt)
        with self.db.reading() as connection:
            row = connection.execute(_SINGLE_TASK, {"job_id": job_id, "attempt": attempt}).one_or_none()
        return None if row is None else _task(row)

    def round_tasks(self, job_id: str, round_number: int) -> list[RemoteTask]:
        """The rows of one round of a decomposed job, by part."""
        with self.db.read() as session:
            return list(
                session.scalars(
                    select(RemoteTask)
                    .where(RemoteTask.job_id == job_id, RemoteTask.round == round_number)
                    .order_by(RemoteTask.part)
                ).all()
            )

    def create_remote_task(
        self,
        *,
        job_id: str,
        owner: str,
        attempt: int,
        backend: str,
        client_token: str,
        round_number: int = 0,
        part: int = 0,
        program: str | None = None,
        proxy_key: bytes | None = None,
        subproblem: dict[str, Any] | None = None,
    ) -> RemoteTask | None:
        """Record the client token of an attempt (or a sub-problem) before the provider is called.

        Returns:
            The new row, or ``None`` if the caller no longer holds the job's lease.
        """
        now = utcnow()
        values = {
            "job_id": job_id,
            "attempt": attempt,
            "backend": backend,
            "client_token": client_token,
            "round": round_number,
            "part": part,
            "program": program,
            "proxy_key": proxy_key,
            "subproblem": subproblem,
        }
        if self._pg is not None:
            # One statement: the INSERT itself checks the lease.
            return self._pg.create_task({**values, "owner": owner, "now": now})
        with self.db.begin() as connection:
            holder = connection.scalar(select(_JOBS.c.lease_owner).where(_JOBS.c.id == job_id))
            if holder != owner:
                return None
            row = connection.execute(
                insert(_TASKS).returning(*_TASKS.c),
                {**values, "polls": 0, "created_at": now, "updated_at": now},
            ).one()
        return _task(row)

    def attempt_task(
        self, *, job_id: str, owner: str, attempt: int, backend: str, client_token: str
    ) -> RemoteTask | None:
        """The single task row of an attempt: the existing one, else a new one with ``client_token``.

        The new row is written only under ``owner``'s lease, in one statement where no row exists
        (the common case), instead of a read and then a write.

        Returns:
            The attempt's row (its ``client_token`` tells whether it is the new one), or ``None``
            when there was none and the caller no longer holds the job's lease.
        """
        now = utcnow()
        values = {
            "job_id": job_id,
            "attempt": attempt,
            "backend": backend,
            "client_token": client_token,
            "round": 0,
            "part": 0,
            "program": None,
            "proxy_key": None,
            "subproblem": None,
        }
        if self._pg is not None:
            row = self._pg.create_task({**values, "owner": owner, "now": now}, unless_any=True)
        else:
            with self.db.begin() as connection:
                holder = connection.scalar(select(_JOBS.c.lease_owner).where(_JOBS.c.id == job_id))
                found = None
                if holder == owner:
                    found = connection.execute(
                        insert(_TASKS).prefix_with("OR IGNORE").returning(*_TASKS.c),
                        {**values, "polls": 0, "created_at": now, "updated_at": now},
                    ).one_or_none()
            row = None if found is None else _task(found)
        return row if row is not None else self.remote_task(job_id, attempt)

    def update_remote_task(self, task_row_id: int, **fields: Any) -> None:
        """Change fields of a remote task row."""
        if self._pg is not None:
            self._pg.update_task(task_row_id, utcnow(), fields)
            return
        with self.db.single() as connection:
            connection.execute(
                update(_TASKS).where(_TASKS.c.id == task_row_id).values(updated_at=utcnow(), **fields)
            )

    def unsubmitted_tokens(self) -> list[str]:
        """The client tokens of unfinished jobs' task rows that hold no task id yet.

        A worker that stored such a token may have died before or during the provider call; the
        next worker must look the task up, or submit, under that very token.
        """
        unfinished = Job.state.not_in([s.value for s in TERMINAL_STATES])
        query = (
            select(RemoteTask.client_token)
            .join(Job, Job.id == RemoteTask.job_id)
            .where(RemoteTask.task_id.is_(None), unfinished)
        )
        with self.db.read() as session:
            return [str(token) for token in session.scalars(query)]

    # ------------------------------------------------------------------------- sealed keys

    def count_sealed_keys(self) -> int:
        """How many sealed obfuscation keys exist: jobs' and sub-problems' (finished jobs included)."""
        with self.db.read() as session:
            jobs = session.scalar(select(func.count()).select_from(Job).where(Job.proxy_key.is_not(None)))
            tasks = session.scalar(
                select(func.count()).select_from(RemoteTask).where(RemoteTask.proxy_key.is_not(None))
            )
        return int(jobs or 0) + int(tasks or 0)

    def sealed_keys(self, *, unfinished_only: bool = False) -> list[SealedKey]:
        """Every sealed key (a job's, or a decomposed job's sub-problem's), or the unfinished jobs' only."""
        unfinished = Job.state.not_in([s.value for s in TERMINAL_STATES])
        jobs = select(Job.id, Job.proxy_key).where(Job.proxy_key.is_not(None))
        tasks = (
            select(RemoteTask.job_id, RemoteTask.round, RemoteTask.part, RemoteTask.proxy_key)
            .join(Job, Job.id == RemoteTask.job_id)
            .where(RemoteTask.proxy_key.is_not(None))
        )
        if unfinished_only:
            jobs, tasks = jobs.where(unfinished), tasks.where(unfinished)
        with self.db.read() as session:
            found = [SealedKey(str(row.id), None, bytes(row.proxy_key)) for row in session.execute(jobs)]
            found += [
                SealedKey(str(row.job_id), (int(row.round), int(row.part)), bytes(row.proxy_key))
                for row in session.execute(tasks)
            ]
        return found

    def reseal_keys(self, reseal: Callable[[SealedKey], bytes]) -> tuple[int, int]:
        """Replace every sealed key (jobs' and sub-problems') by ``reseal(key)``, in one transaction.

        Rows are locked while it runs (PostgreSQL: ``FOR UPDATE``; SQLite: the write lock), so a
        worker sealing a new key meanwhile waits and writes after; if any key fails to re-seal,
        nothing changes.

        Returns:
            How many sealed keys there are, and how many changed.
        """
        changed = total = 0
        with self.db.write() as session:
            jobs = session.execute(
                select(Job.id, Job.proxy_key).where(Job.proxy_key.is_not(None)).with_for_update()
            ).all()
            for row in jobs:
                blob = bytes(row.proxy_key)
                new = reseal(SealedKey(str(row.id), None, blob))
                total += 1
                if new != blob:
                    session.execute(update(Job).where(Job.id == row.id).values(proxy_key=new))
                    changed += 1
            tasks = session.execute(
                select(
                    RemoteTask.id, RemoteTask.job_id, RemoteTask.round, RemoteTask.part, RemoteTask.proxy_key
                )
                .where(RemoteTask.proxy_key.is_not(None))
                .with_for_update()
            ).all()
            for task in tasks:
                blob = bytes(task.proxy_key)
                new = reseal(SealedKey(str(task.job_id), (int(task.round), int(task.part)), blob))
                total += 1
                if new != blob:
                    session.execute(update(RemoteTask).where(RemoteTask.id == task.id).values(proxy_key=new))
                    changed += 1
        return total, changed

    # --------------------------------------------------------------------------- reconciler

    def due_for_reconcile(self, *, grace_seconds: float, limit: int = 500) -> list[str]:
        """Live jobs nobody is working on that should be: expired leases, overdue polls, lost kicks."""
        now = utcnow()
        stale = now - timedelta(seconds=grace_seconds)
        query = (
            select(Job.id)
            .where(
                Job.state.not_in([s.value for s in TERMINAL_STATES]),
                or_(
                    and_(Job.lease_owner.is_not(None), Job.lease_expires_at < now),
                    and_(
                        Job.lease_owner.is_(None),
                        or_(
                            Job.next_poll_at < stale,
                            and_(Job.next_poll_at.is_(None), Job.updated_at < stale),
                        ),
                    ),
                ),
            )
            .order_by(Job.updated_at)
            .limit(limit)
        )
        with self.db.read() as session:
            return list(session.scalars(query).all())

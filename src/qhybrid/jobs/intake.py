"""Group commit of accepted jobs: many requests, one transaction, one queue round trip.

The API's request handlers validate on the event loop and hand the job to :class:`Intake`; its
committers take every job waiting at that moment, insert them in one transaction
(:meth:`JobStore.create_jobs`), kick them with one queue call (:meth:`JobQueue.kick_many`), and
only then answer each request. A request is answered 202 only once its row is committed, as
before; under load the cost of a transaction and of a queue round trip is shared by every job
that arrived meanwhile, and at low load a job waits for nobody (a committer that is idle takes
it at once).

A tenant's caps are checked in the group's transaction, counting the jobs of the group before
each one (PostgreSQL: an advisory lock per tenant, taken in order). Jobs with an
``Idempotency-Key`` go through :meth:`JobStore.create_job` one by one (a lookup first, and the
loser of a race returns the winner's job). If a group's transaction fails, every job of the
group is retried alone, so one bad row cannot fail the others.

On PostgreSQL the plain jobs (no idempotency key, no caps) skip the store: each committer keeps a
plain psycopg connection of its own and runs, in a worker thread, one pipeline of ``BEGIN``, two
multi-row ``executemany`` and ``COMMIT``: no SQLAlchemy session, no pool pre-ping round trip.
Profiled at 300 req/s (``docs/benchmarks.md``), the store's transaction held the GIL for
milliseconds of SQLAlchemy work per group while the event loop waited for it, and that wait, not
the database, made the slow 1 %. The same transaction awaited on the event loop (psycopg's asyncio
API) was tried too and had the worse tail: every round trip's resumption queued behind the
requests being parsed. ``synchronous_commit`` is untouched: a 202 still means the row is on disk.
Anything else, or a direct insert that fails, goes through :meth:`JobStore.create_jobs` /
:meth:`JobStore.create_job` in a thread, as before. The kicks of the directly inserted jobs are
sent after the answers, by one kicker task (in a thread, batched): a kick that never arrives is the
reconciler's to repair, as when Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy import Table

from qhybrid.domain.states import JobState
from qhybrid.jobs.models import Job, JobEvent, utcnow
from qhybrid.jobs.queue import JobQueue
from qhybrid.jobs.store import JobStore, NewJob, TenantCapError, TenantCaps

log = logging.getLogger("qhybrid.jobs.intake")

#: Most jobs committed in one transaction; bounds the time a large group holds its request handlers.
MAX_GROUP = 128
#: Committers running at once: while one waits for the database, the next group forms and goes.
COMMITTERS = 2


@dataclass(frozen=True)
class Accepted:
    """The outcome of one accepted job.

    Build it with :meth:`found` (a stored ``Job`` at hand) or :meth:`inserted` (a job created now:
    the ``Job`` object is only built if :attr:`job` is read; the answer to the client needs none).

    Attributes:
        created: False when the idempotency key named an earlier job, which is returned.
    """

    created: bool
    _job: Job | None = None
    _new: NewJob | None = None
    _created_at: datetime | None = None

    @classmethod
    def found(cls, job: Job, created: bool) -> Accepted:
        """The outcome for a job read or written through the store."""
        return cls(created, _job=job)

    @classmethod
    def inserted(cls, new: NewJob, created_at: datetime) -> Accepted:
        """The outcome for a job inserted now."""
        return cls(True, _new=new, _created_at=created_at)

    @property
    def job(self) -> Job:
        """The stored job (``request`` left unset when it was created now)."""
        if self._job is not None:
            return self._job
        assert self._new is not None
        assert self._created_at is not None
        return self._new.as_job(self._created_at)

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self._new.id if self._new is not None else self.job.id

    @property
    def state(self) -> str:
        """The job's state."""
        return JobState.ACCEPTED.value if self._new is not None else self.job.state

    @property
    def created_at(self) -> datetime:
        """When the job was created."""
        return self._created_at if self._created_at is not None else self.job.created_at

    @property
    def estimated_cost(self) -> float | None:
        """The cost estimate stored with the job, if any."""
        cost = self._new.cost if self._new is not None else self.job.cost
        estimated = None if cost is None else cost.get("estimated")
        return estimated if isinstance(estimated, int | float) else None


_Pending = tuple[NewJob, TenantCaps | None, "asyncio.Future[Accepted]"]


def _checks_caps(caps: TenantCaps | None) -> bool:
    return caps is not None and (caps.max_active is not None or caps.max_cost_per_day is not None)


def _direct_statements(example: NewJob) -> tuple[sql.Composed, sql.Composed]:
    """The two INSERTs of the direct path, with the columns :meth:`NewJob.row` fills.

    Built from the mapped tables and ``NewJob.row``'s keys, so a column added there is written
    here too; the request text is cast to ``json`` by PostgreSQL, as ``JobStore`` does.
    """
    jobs, events = Job.__table__, JobEvent.__table__
    assert isinstance(jobs, Table)
    assert isinstance(events, Table)
    names: list[sql.Composable] = []
    values: list[sql.Composable] = []
    for key in example.row(utcnow()):
        column = "request" if key == "request_text" else key
        if column not in jobs.c:
            raise RuntimeError(f"NewJob.row() names {key!r}, which is not a column of {jobs.name}")
        names.append(sql.Identifier(column))
        placeholder = sql.Placeholder(key)
        values.append(sql.SQL("{}::json").format(placeholder) if key == "request_text" else placeholder)
    insert_jobs = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(jobs.name), sql.SQL(", ").join(names), sql.SQL(", ").join(values)
    )
    insert_events = sql.SQL(
        "INSERT INTO {} (job_id, at, from_state, to_state) VALUES (%(job_id)s, %(at)s, NULL, %(to_state)s)"
    ).format(sql.Identifier(events.name))
    return insert_jobs, insert_events


def _direct_row(new: NewJob, now: datetime) -> dict[str, Any]:
    row = new.row(now)
    if row["cost"] is not None:
        row["cost"] = Jsonb(row["cost"])
    return row


class Intake:
    """Commits accepted jobs in groups and kicks them; one per API process, on its event loop.

    Args:
        store: Where the jobs are written.
        queue: What wakes a worker for each created job.
        max_group: Most jobs per transaction.
        committers: Transactions in flight at once.
    """

    def __init__(
        self, store: JobStore, queue: JobQueue, *, max_group: int = MAX_GROUP, committers: int = COMMITTERS
    ) -> None:
        self.store = store
        self.queue = queue
        self.max_group = max_group
        self.committers = committers
        self._waiting: asyncio.Queue[_Pending] | None = None
        self._kicks: asyncio.Queue[str] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # libpq's URL of the store's database when it is PostgreSQL: the direct path's connections.
        db = store.db
        self._direct_url: str | None = (
            None
            if db.is_sqlite
            else db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        )
        self._statements: tuple[sql.Composed, sql.Composed] | None = None
        #: Transactions committed by the direct path (the others are counted by SQLAlchemy's events).
        self.direct_transactions = 0

    async def start(self) -> None:
        """Start the committers (and the kicker) on the running event loop."""
        self._waiting = asyncio.Queue()
        self._kicks = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name=f"qhybrid-intake-{index}")
            for index in range(self.committers)
        ]
        self._tasks.append(asyncio.create_task(self._kick_loop(), name="qhybrid-intake-kicker"))

    async def stop(self) -> None:
        """Commit what is waiting and send its kicks, then stop the committers."""
        if self._waiting is not None:
            await self._waiting.join()
        if self._kicks is not None:
            await self._kicks.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def accept(self, new: NewJob, caps: TenantCaps | None = None) -> Accepted:
        """Store the job (or find the earlier one with its idempotency key) and kick it.

        Args:
            new: The job.
            caps: Its tenant's caps, checked in the inserting transaction.

        Returns:
            The outcome, once the job's row is committed.

        Raises:
            IdempotencyConflictError: If the key belongs to a job with a different request.
            TenantCapError: If the job would break one of its tenant's caps (nothing is stored).
            Exception: What the database raised, if the job could not be stored.
        """
        if self._waiting is None:
            raise RuntimeError("Intake.start() was not called")
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._waiting.put_nowait((new, caps, future))
        return await future

    async def _commit_loop(self) -> None:
        assert self._waiting is not None
        waiting = self._waiting
        connection: psycopg.Connection[Any] | None = None
        try:
            while True:
                group = [await waiting.get()]
                while len(group) < self.max_group and not waiting.empty():
                    group.append(waiting.get_nowait())
                try:
                    rest = group
                    if self._direct_url is not None:
                        direct: list[_Pending] = []
                        rest = []
                        for pending in group:
                            plain = pending[0].idempotency_key is None and not _checks_caps(pending[1])
                            (direct if plain else rest).append(pending)
                        if direct:
                            try:
                                connection = await self._insert_direct(connection, direct)
                            except Exception:
                                # Alone, through the store, each job succeeds or fails on its own.
                                log.warning(
                                    "direct insert of %d job(s) failed; retrying each alone",
                                    len(direct),
                                    exc_info=True,
                                )
                                await self._discard(connection)
                                connection = None
                                rest = group
                    if rest:
                        await self._commit_in_thread(rest)
                except BaseException as exc:
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                finally:
                    for _ in group:
                        waiting.task_done()
        finally:
            await self._discard(connection)

    async def _insert_direct(
        self, connection: psycopg.Connection[Any] | None, group: list[_Pending]
    ) -> psycopg.Connection[Any]:
        """Insert plain jobs in one transaction (in a thread); answer them, queue their kicks."""
        assert self._kicks is not None
        jobs = [new for new, _, _ in group]
        if self._statements is None:
            self._statements = _direct_statements(jobs[0])
        now = utcnow()
        connection = await asyncio.to_thread(self._insert_lean, connection, jobs, now)
        self.direct_transactions += 1
        # Committed: every job of the group is answered, then kicked.
        for new, _, future in group:
            if not future.done():  # else the request went away (client disconnected); the job stays
                future.set_result(Accepted.inserted(new, now))
            self._kicks.put_nowait(new.id)
        return connection

    def _insert_lean(
        self, connection: psycopg.Connection[Any] | None, jobs: list[NewJob], now: datetime
    ) -> psycopg.Connection[Any]:
        """The transaction itself, in a worker thread: psycopg waits for the server without the GIL."""
        assert self._direct_url is not None
        assert self._statements is not None
        if connection is None or connection.closed or connection.broken:
            connection = psycopg.connect(self._direct_url)
        insert_jobs, insert_events = self._statements
        accepted = JobState.ACCEPTED.value
        try:
            # One pipeline: BEGIN, both INSERTs and COMMIT leave in one write, come back in one read.
            with connection.pipeline(), connection.transaction(), connection.cursor() as cursor:
                cursor.executemany(insert_jobs, [_direct_row(new, now) for new in jobs])
                cursor.executemany(
                    insert_events, [{"job_id": new.id, "at": now, "to_state": accepted} for new in jobs]
                )
        except Exception:
            with contextlib.suppress(Exception):
                connection.close()  # the committer opens a fresh one for its next group
            raise
        return connection

    async def _discard(self, connection: psycopg.Connection[Any] | None) -> None:
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(connection.close)

    async def _commit_in_thread(self, group: list[_Pending]) -> None:
        outcomes = await asyncio.to_thread(self._commit, [(new, caps) for new, caps, _ in group])
        for (_, _, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue  # the request went away (client disconnected); the job stays
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _kick_loop(self) -> None:
        assert self._kicks is not None
        kicks = self._kicks
        while True:
            ids = [await kicks.get()]
            while not kicks.empty():
                ids.append(kicks.get_nowait())
            try:
                await asyncio.to_thread(self._kick, ids)
            finally:
                for _ in ids:
                    kicks.task_done()

    def _commit(self, group: Sequence[tuple[NewJob, TenantCaps | None]]) -> list[Accepted | Exception]:
        """Store a group (in a worker thread) and kick the jobs created; an outcome per job."""
        outcomes: list[Accepted | Exception] = [Exception("not stored")] * len(group)
        # One transaction per set of caps (the API passes the same caps for every job).
        plain: dict[TenantCaps | None, list[int]] = {}
        alone: list[int] = []
        for index, (new, caps) in enumerate(group):
            if new.idempotency_key is None:
                plain.setdefault(caps, []).append(index)
            else:
                alone.append(index)
        for caps, indexes in plain.items():
            try:
                created_at, refused = self.store.create_jobs([group[index][0] for index in indexes], caps)
            except Exception as exc:
                if len(indexes) == 1:
                    outcomes[indexes[0]] = exc
                else:
                    # Alone, each job succeeds or fails on its own account.
                    alone += indexes
                continue
            for index, problem in zip(indexes, refused, strict=True):
                outcomes[index] = problem or Accepted.inserted(group[index][0], created_at)
        for index in alone:
            new, caps = group[index]
            try:
                job, created = self.store.create_job(
                    job_id=new.id,
                    request=new.request_json,
                    request_hash=new.request_hash,
                    backend=new.backend,
                    shots=new.shots,
                    deadline_at=new.deadline_at,
                    idempotency_key=new.idempotency_key,
                    cost=new.cost,
                    request_version=new.request_version,
                    tenant=new.tenant,
                    caps=caps,
                )
                outcomes[index] = Accepted.found(job, created)
            except Exception as exc:
                outcomes[index] = exc
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, Exception) and not isinstance(outcome, TenantCapError):
                outcomes[index] = self._committed_before(group[index][0]) or outcome
        self._kick([o.job_id for o in outcomes if isinstance(o, Accepted) and o.created])
        return outcomes

    def _committed_before(self, new: NewJob) -> Accepted | None:
        """The job, if an earlier attempt of this very request committed it after all.

        A COMMIT whose answer was lost (the connection dropped after the server wrote it) raises,
        and the retry then meets its own row. The id is minted per request, so a stored row with
        this id, tenant and request hash is that request's: it is answered 202, not 500.
        """
        try:
            job = self.store.get_job(new.id, tenant=new.tenant)
        except Exception:
            return None
        if job is None or job.request_hash != new.request_hash:
            return None
        return Accepted.found(job, True)

    def _kick(self, job_ids: list[str]) -> None:
        """Kick stored jobs (in a worker thread); a failure is logged, the reconciler repairs it."""
        if not job_ids:
            return
        try:
            self.queue.kick_many(job_ids)
        except Exception:
            # The jobs are stored; the reconciler will find them. The clients still get their 202.
            log.exception(
                "%d job(s) stored but the queue could not be reached; the reconciler will pick them up: %s",
                len(job_ids),
                ", ".join(job_ids),
            )

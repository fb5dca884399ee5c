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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from qhybrid.jobs.models import Job
from qhybrid.jobs.queue import JobQueue
from qhybrid.jobs.store import JobStore, NewJob, TenantCaps

log = logging.getLogger("qhybrid.jobs.intake")

#: Most jobs committed in one transaction; bounds the time a large group holds its request handlers.
MAX_GROUP = 128
#: Committers running at once: while one waits for the database, the next group forms and goes.
COMMITTERS = 2


@dataclass(frozen=True)
class Accepted:
    """The outcome of one accepted job.

    Attributes:
        job: The stored job (``request`` left unset when it was created now).
        created: False when the idempotency key named an earlier job, which is returned.
    """

    job: Job
    created: bool


_Pending = tuple[NewJob, TenantCaps | None, "asyncio.Future[Accepted]"]


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
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the committers on the running event loop."""
        self._waiting = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name=f"qhybrid-intake-{index}")
            for index in range(self.committers)
        ]

    async def stop(self) -> None:
        """Commit what is waiting, then stop the committers."""
        if self._waiting is not None:
            await self._waiting.join()
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
        while True:
            group = [await waiting.get()]
            while len(group) < self.max_group and not waiting.empty():
                group.append(waiting.get_nowait())
            try:
                outcomes = await asyncio.to_thread(self._commit, [(new, caps) for new, caps, _ in group])
                for (_, _, future), outcome in zip(group, outcomes, strict=True):
                    if future.done():
                        continue  # the request went away (client disconnected); the job stays
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
            except BaseException as exc:
                for _, _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            finally:
                for _ in group:
                    waiting.task_done()

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
                outcomes[index] = problem or Accepted(group[index][0].as_job(created_at), True)
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
                outcomes[index] = Accepted(job, created)
            except Exception as exc:
                outcomes[index] = exc
        created_ids = [o.job.id for o in outcomes if isinstance(o, Accepted) and o.created]
        if created_ids:
            try:
                self.queue.kick_many(created_ids)
            except Exception:
                # The jobs are stored; the reconciler will find them. The clients still get their 202.
                log.exception(
                    "%d job(s) stored but the queue could not be reached; the reconciler will pick "
                    "them up: %s",
                    len(created_ids),
                    ", ".join(created_ids),
                )
        return outcomes

"""The job's journey, top to bottom: what a worker does when the queue hands it a job id.

```
ACCEPTED -> PREPARING -> SUBMITTING -> SUBMITTED -> REMOTE_QUEUED -> REMOTE_RUNNING -> FINALIZING -> COMPLETED
```

A worker claims the job's lease, runs the step for the job's current state, and either moves on
to the next state or hands the job back with a time to look again (``kick_at``). No worker ever
sleeps while a provider's queue waits. Every move is a conditional update recorded as an event, so a
worker that dies anywhere leaves a job another worker can pick up where it stopped.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
from sqlalchemy.exc import OperationalError

from qhybrid.backends.base import (
    PermanentBackendError,
    QuantumBackend,
    TaskState,
    TransientBackendError,
)
from qhybrid.backends.registry import BackendRegistry
from qhybrid.core.config import Settings
from qhybrid.jobs.models import Job, RemoteTask, utcnow
from qhybrid.jobs.queue import JobQueue
from qhybrid.jobs.states import HAS_REMOTE_TASK, REMOTE_STATES, TERMINAL_STATES, JobState
from qhybrid.jobs.store import JobStore
from qhybrid.portfolio.classical import brute_force
from qhybrid.portfolio.model import PortfolioProblem
from qhybrid.portfolio.qubo import to_qubo
from qhybrid.portfolio.samples import analyse_samples
from qhybrid.proxy.abstract import abstract_problem
from qhybrid.quantum.angles import optimize_angles
from qhybrid.quantum.circuit import CircuitTooLargeError, qaoa_circuit, transpile_for
from qhybrid.quantum.decode import decode_counts
from qhybrid.quantum.qasm import to_openqasm3

log = logging.getLogger("qhybrid.worker")

#: Failures that waiting cannot fix: the job fails at once with the message.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (PermanentBackendError, CircuitTooLargeError)
#: Failures worth another try after a backoff.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (TransientBackendError, httpx.HTTPError, OperationalError)


def problem_from_request(request: dict[str, Any]) -> PortfolioProblem:
    """The portfolio problem of a validated request document."""
    assets = request["assets"]
    return PortfolioProblem(
        names=tuple(str(a["name"]) for a in assets),
        expected_returns=np.array([float(a["expected_return"]) for a in assets], dtype=np.float64),
        covariance=np.array(request["covariance"], dtype=np.float64),
        risk_aversion=float(request["risk_aversion"]),
        budget=int(request["budget"]),
    )


def job_seed(job: Job) -> int:
    """The seed of a job's randomised steps: the request's, or one derived from the job id."""
    options = job.request.get("options") or {}
    seed = options.get("seed")
    return int(seed) if seed is not None else uuid.UUID(job.id).int % (2**31)


def relative_gap(objective: float, optimum: float) -> float:
    """``(objective − optimum) / |optimum|``, or the absolute difference when the optimum is ~0."""
    difference = objective - optimum
    return difference / abs(optimum) if abs(optimum) > 1e-12 else difference


def _owner_id() -> str:
    # One owner per execution, so even two threads of one process never share a lease.
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:2000]


@dataclass
class _LostLeaseError(Exception):
    """Another actor changed the job first; this worker stops touching it."""

    job_id: str


class Journey:
    """Advances jobs through their states; one instance per worker process, shared by its threads.

    Args:
        settings: Timing and limits.
        store: The job store.
        queue: Used to schedule the next look at a job.
        backends: Provider adapters by name.
    """

    def __init__(
        self, settings: Settings, store: JobStore, queue: JobQueue, backends: BackendRegistry
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.backends = backends

    # ------------------------------------------------------------------ the entry point

    def advance(self, job_id: str) -> None:
        """Take the job's lease and run its steps until it waits on something or ends."""
        owner = _owner_id()
        job = self.store.claim(job_id, owner=owner, lease_seconds=self.settings.lease_seconds)
        if job is None:
            return  # finished, unknown, or another worker holds it
        try:
            self._run(job_id, owner)
        except _LostLeaseError:
            log.info("job %s changed under worker %s; leaving it", job_id, owner)
        except PERMANENT_ERRORS as exc:
            self._fail(job_id, owner, f"{self._state_of(job_id)}: {_describe(exc)}")
        except Exception as exc:
            # Transient errors and unexpected ones alike get a bounded number of retries, so a
            # bug cannot spin forever and a passing outage does not kill the job.
            if not isinstance(exc, TRANSIENT_ERRORS):
                log.exception("job %s: unexpected error", job_id)
            self._retry_later(job_id, owner, exc)

    def _run(self, job_id: str, owner: str) -> None:
        while True:
            job = self.store.get_job(job_id)
            if job is None or job.lease_owner != owner:
                raise _LostLeaseError(job_id)
            state = JobState(job.state)
            if state in TERMINAL_STATES:
                return
            if job.cancel_requested:
                self._cancel(job, owner)
                return
            if utcnow() >= job.deadline_at:
                self._fail(job_id, owner, "deadline passed before the job could complete", job=job)
                return
            if job.next_poll_at is not None and utcnow() < job.next_poll_at - timedelta(milliseconds=50):
                # Woken early (a duplicate kick): the scheduled wake-up still stands.
                self.store.release(job_id, owner=owner)
                return
            if state is JobState.ACCEPTED:
                self._move(job, owner, JobState.PREPARING)
            elif state is JobState.PREPARING:
                self._prepare(job, owner)
            elif state is JobState.SUBMITTING:
                self._submit(job, owner)
                return
            elif state in REMOTE_STATES:
                if not self._poll(job, owner):
                    return
            elif state is JobState.FINALIZING:
                self._finalize(job, owner)
                return

    # --------------------------------------------------------------------- the steps

    def _prepare(self, job: Job, owner: str) -> None:
        """Business problem -> QUBO -> abstract Ising -> QAOA circuit for the device -> OpenQASM 3."""
        problem = problem_from_request(job.request)
        qubo, penalty = to_qubo(problem)
        ising = abstract_problem(qubo)
        backend = self.backends.get(job.backend)
        target = backend.target()
        options = job.request.get("options") or {}
        reps = int(options.get("reps") or self.settings.default_reps)
        seed = job_seed(job)
        angles = optimize_angles(ising, reps, seed=seed, maxiter=int(options.get("maxiter") or 200))
        transpiled, metrics = transpile_for(qaoa_circuit(ising, angles), target, seed=seed)
        program = to_openqasm3(transpiled)
        prepared = {
            "reps": reps,
            "seed": seed,
            "penalty": penalty,
            "angles": angles.as_dict(),
            "device": target.name,
            "circuit": metrics.as_dict(),
        }
        self._move(job, owner, JobState.SUBMITTING, program=program, prepared=prepared, attempt=1)

    def _submit(self, job: Job, owner: str) -> None:
        """Submit the program at most once per attempt: the token is stored before the call."""
        backend = self.backends.get(job.backend)
        row = self.store.remote_task(job.id, job.attempt)
        task_id: str | None = None
        if row is None:
            row = self.store.create_remote_task(
                job_id=job.id,
                owner=owner,
                attempt=job.attempt,
                backend=job.backend,
                client_token=secrets.token_hex(16),
            )
            if row is None:
                raise _LostLeaseError(job.id)
        else:
            task_id = row.task_id
            if task_id is None:
                # A previous worker stored the token and may have reached the provider before it
                # died: ask the provider before submitting, so a paid task is never created twice.
                task_id = backend.find_task(row.client_token)
        if task_id is None:
            if job.program is None:
                raise PermanentBackendError("no program was stored for this job")
            task_id = backend.submit(job.program, job.shots, row.client_token)
        now = utcnow()
        self.store.update_remote_task(row.id, task_id=task_id, submitted_at=now, state=TaskState.QUEUED.value)
        first_poll = now + timedelta(seconds=self.settings.poll_initial_seconds)
        self._move(
            job,
            owner,
            JobState.SUBMITTED,
            detail=f"task {task_id} (attempt {job.attempt})",
            release=True,
            next_poll_at=first_poll,
            poll_interval=self.settings.poll_initial_seconds,
        )
        self.queue.kick_at(job.id, first_poll)

    def _poll(self, job: Job, owner: str) -> bool:
        """Ask the provider where the task is; True when the job moved on to FINALIZING."""
        backend = self.backends.get(job.backend)
        row = self._remote_row(job)
        if row.task_id is None:
            raise PermanentBackendError("remote task has no id in a polling state")
        status = backend.status(row.task_id)
        self.store.update_remote_task(
            row.id,
            state=status.state.value,
            provider_state=status.provider_state,
            queue_position=status.queue_position,
            message=status.message,
            polls=row.polls + 1,
        )
        state = JobState(job.state)
        if status.state is TaskState.COMPLETED:
            outcome = backend.result(row.task_id)
            self.store.update_remote_task(
                row.id, counts=outcome.counts, details={"shots": outcome.shots, **outcome.metadata}
            )
            self._move(job, owner, JobState.FINALIZING, detail=f"task {row.task_id} completed")
            return True
        if status.state in (TaskState.FAILED, TaskState.CANCELLED):
            why = status.message or "no reason given"
            reason = f"provider task {row.task_id} {status.state.value.lower()}: {why}"
            if job.attempt < self.settings.max_remote_attempts:
                self._move(job, owner, JobState.SUBMITTING, detail=reason, attempt=job.attempt + 1)
                self._submit(self._reload(job.id, owner), owner)
                return False
            self._fail(job.id, owner, f"{reason} (after {job.attempt} attempts)", job=job)
            return False
        interval = min(
            (job.poll_interval or self.settings.poll_initial_seconds) * 2, self.settings.poll_max_seconds
        )
        next_poll = utcnow() + timedelta(seconds=interval)
        target = JobState.REMOTE_RUNNING if status.state is TaskState.RUNNING else JobState.REMOTE_QUEUED
        schedule = {"next_poll_at": next_poll, "poll_interval": interval}
        if target is not state and not (
            state is JobState.REMOTE_RUNNING and target is JobState.REMOTE_QUEUED
        ):
            self._move(
                job, owner, target, detail=f"provider says {status.provider_state}", release=True, **schedule
            )
        else:
            if not self.store.release(job.id, owner=owner, step_failures=0, last_error=None, **schedule):
                raise _LostLeaseError(job.id)
        self.queue.kick_at(job.id, next_poll)
        return False

    def _finalize(self, job: Job, owner: str) -> None:
        """Decode the counts, pick the best sample on the true problem, compare with the exact optimum."""
        row = self._remote_row(job)
        if row.counts is None:
            raise PermanentBackendError("completed task has no stored counts")
        problem = problem_from_request(job.request)
        bitstrings, counts = decode_counts(row.counts, problem.num_assets)
        exact = brute_force(problem)
        analysis = analyse_samples(problem, bitstrings, counts, optimum_bits=exact.bits)
        chosen = problem.evaluate(np.array(analysis.best_bits, dtype=np.uint8))
        optimum = problem.evaluate(np.array(exact.bits, dtype=np.uint8))
        prepared = job.prepared or {}
        result = {
            **chosen.as_dict(),
            "source": "quantum" if analysis.source == "sample" else "quantum+repair",
            "classical": {**optimum.as_dict(), "method": exact.method},
            "gap": relative_gap(chosen.objective, optimum.objective),
            "gap_abs": chosen.objective - optimum.objective,
            "quantum": {
                "backend": job.backend,
                "device": prepared.get("device"),
                "task_id": row.task_id,
                "attempt": job.attempt,
                "shots": job.shots,
                "reps": prepared.get("reps"),
                "seed": prepared.get("seed"),
                "penalty": prepared.get("penalty"),
                "angles": prepared.get("angles"),
                "circuit": prepared.get("circuit"),
                "samples": analysis.as_dict(),
                "best_share": analysis.best_share,
                "optimum_share": analysis.optimum_share,
            },
        }
        self._move(job, owner, JobState.COMPLETED, detail=f"objective {chosen.objective:.6g}", result=result)

    def _cancel(self, job: Job, owner: str) -> None:
        """Cancel the provider task if there may be one, then the job."""
        detail = "cancelled by request"
        if JobState(job.state) in HAS_REMOTE_TASK:
            task_id = self._cancel_remote(job)
            if task_id:
                detail += f"; provider task {task_id} cancelled"
        self._move(job, owner, JobState.CANCELLED, detail=detail)

    # ------------------------------------------------------------------ failure paths

    def _retry_later(self, job_id: str, owner: str, exc: Exception) -> None:
        job = self.store.get_job(job_id)
        if job is None or job.lease_owner != owner or JobState(job.state) in TERMINAL_STATES:
            return
        failures = job.step_failures + 1
        if failures > self.settings.max_step_retries:
            self._fail(
                job_id, owner, f"{job.state}: gave up after {failures} tries: {_describe(exc)}", job=job
            )
            return
        delay = min(
            self.settings.retry_initial_seconds * 2 ** (failures - 1), self.settings.retry_max_seconds
        )
        delay *= random.uniform(0.8, 1.2)  # jitter, so many jobs failing together retry apart
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        when = utcnow() + timedelta(seconds=delay)
        log.warning(
            "job %s: %s failed (%s); retry %d in %.1fs", job_id, job.state, _describe(exc), failures, delay
        )
        if self.store.release(
            job_id, owner=owner, step_failures=failures, last_error=_describe(exc), next_poll_at=when
        ):
            self.queue.kick_at(job_id, when)

    def _fail(self, job_id: str, owner: str, reason: str, *, job: Job | None = None) -> None:
        job = job or self.store.get_job(job_id)
        if job is None:
            return
        state = JobState(job.state)
        if state in TERMINAL_STATES:
            return
        if state in HAS_REMOTE_TASK:
            try:
                self._cancel_remote(job)
            except Exception:  # best effort: the job fails whatever the provider says
                log.warning("job %s: could not cancel the provider task while failing", job_id)
        log.warning("job %s failed: %s", job_id, reason)
        self.store.transition(
            job_id, owner=owner, source=state, target=JobState.FAILED, detail=reason, error=reason
        )

    # ----------------------------------------------------------------------- helpers

    def _cancel_remote(self, job: Job) -> str | None:
        row = self.store.remote_task(job.id, job.attempt)
        if row is None:
            return None
        backend: QuantumBackend = self.backends.get(job.backend)
        task_id = row.task_id or backend.find_task(row.client_token)
        if task_id is None:
            return None
        backend.cancel(task_id)
        self.store.update_remote_task(row.id, task_id=task_id, state=TaskState.CANCELLED.value)
        return task_id

    def _remote_row(self, job: Job) -> RemoteTask:
        row = self.store.remote_task(job.id, job.attempt)
        if row is None:
            raise PermanentBackendError(f"no remote task recorded for attempt {job.attempt}")
        return row

    def _reload(self, job_id: str, owner: str) -> Job:
        job = self.store.get_job(job_id)
        if job is None or job.lease_owner != owner:
            raise _LostLeaseError(job_id)
        return job

    def _state_of(self, job_id: str) -> str:
        job = self.store.get_job(job_id)
        return job.state if job is not None else "?"

    def _move(
        self,
        job: Job,
        owner: str,
        target: JobState,
        *,
        detail: str | None = None,
        release: bool = False,
        **fields: Any,
    ) -> None:
        """Transition, resetting the retry bookkeeping; ``release`` also hands back the lease."""
        values: dict[str, Any] = {"step_failures": 0, "last_error": None, "next_poll_at": None}
        if release:
            values.update(lease_owner=None, lease_expires_at=None)
        values.update(fields)
        moved = self.store.transition(
            job.id, owner=owner, source=JobState(job.state), target=target, detail=detail, **values
        )
        if not moved:
            raise _LostLeaseError(job.id)
        log.info("job %s: %s -> %s", job.id, job.state, target.value)

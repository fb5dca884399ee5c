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
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import OperationalError

from qhybrid.backends.base import PermanentBackendError, QuantumBackend, TaskResult
from qhybrid.backends.registry import BackendRegistry
from qhybrid.core.config import Settings
from qhybrid.core.logging import log_context, set_log_state
from qhybrid.core.metrics import FALLBACKS, PROVIDER_TASK_SECONDS, REMOTE_RESUBMISSIONS, STEP_RETRIES
from qhybrid.domain.errors import PermanentError, TransientError
from qhybrid.domain.request import JobRequest, load_stored_request
from qhybrid.domain.result import JobResult, Prepared
from qhybrid.domain.states import (
    HAS_REMOTE_TASK,
    REMOTE_STATES,
    TERMINAL_STATES,
    TERMINAL_TASK_STATES,
    UNSUCCESSFUL_TASK_STATES,
    JobState,
    TaskState,
)
from qhybrid.gateway.context import current_job
from qhybrid.gateway.tokens import NOT_MINTED_HERE, ForeignTokenError
from qhybrid.jobs import pipeline
from qhybrid.jobs.decomposed import DecomposedSteps
from qhybrid.jobs.lease import kept_lease
from qhybrid.jobs.models import Job, RemoteTask, utcnow
from qhybrid.jobs.pgfast import loaded
from qhybrid.jobs.queue import JobQueue
from qhybrid.jobs.sizing import is_decomposed
from qhybrid.jobs.store import JobStore
from qhybrid.proxy.keys import KekMissingError, KeyVault, load_keyring, sealed_kid

log = logging.getLogger("qhybrid.worker")

_TASK_TABLE = RemoteTask.__table__

#: Failures that waiting cannot fix (a refused program, a circuit larger than the device, a
#: sealed key that does not open...): the job falls back or fails at once with the message.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (PermanentError,)
#: Failures worth another try after a backoff; the adapters translate their transport errors.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (TransientError, OperationalError)


#: States from which the classical fallback may answer instead of the QPU.
FALLBACK_STATES = frozenset({JobState.PREPARING, JobState.SUBMITTING, *REMOTE_STATES})


def actual_cost(
    estimate: dict[str, Any] | None, backend: QuantumBackend, outcome: TaskResult
) -> dict[str, Any]:
    """The cost record after a task ran: the estimate kept, the actual from the price list.

    The actual uses the shots taken and, for per-second prices, the seconds the provider reports
    it billed (``usage_seconds``), else the adapter's estimate.
    """
    record = dict(estimate or {"currency": "USD", "estimated": None})
    pricing = backend.pricing()
    if pricing is None:
        record["actual"] = 0.0
        return record
    reported = outcome.metadata.get("usage_seconds")
    seconds = (
        float(reported) if isinstance(reported, int | float) else backend.estimated_seconds(outcome.shots)
    )
    record.update(
        actual=pricing.estimate(outcome.shots, seconds), actual_seconds=seconds, currency=pricing.currency
    )
    return record


def _sampling_seconds(row: RemoteTask) -> tuple[float | None, str]:
    """How long the circuit's sampling took: the provider's usage seconds, else the task's wall time.

    The wall time runs from submission to the moment the counts were stored, so it includes the
    provider's queue and the polling interval: an upper bound on the sampling step.
    """
    reported = (row.details or {}).get("usage_seconds")
    if isinstance(reported, int | float) and not isinstance(reported, bool) and reported >= 0:
        return float(reported), "provider_usage"
    if row.submitted_at is None:
        return None, "task_wall_time"
    return max(0.0, (row.updated_at - row.submitted_at).total_seconds()), "task_wall_time"


def vault_from(settings: Settings, store: JobStore | None = None) -> KeyVault:
    """The key vault: ``QHYBRID_KEY_ENCRYPTION_KEY``, else the key file under the data dir (0600).

    With ``store``, the start is refused rather than a job lost: a missing key file is not
    re-created while any job holds a sealed key, and every unfinished job's key must open with
    the keyring.

    Raises:
        KekMissingError: Naming the missing file, or the KEK ids unfinished jobs need.
    """
    value = settings.key_encryption_key.get_secret_value() if settings.key_encryption_key else None
    sealed = store.count_sealed_keys() if store is not None and value is None else 0
    path = settings.kek_path
    vault = KeyVault(
        load_keyring(value, path, sealed_keys=sealed),
        # A rotation while this process runs: a key sealed under the new KEK reloads the file.
        reload=None if value is not None else lambda: load_keyring(None, path, sealed_keys=1),
    )
    if store is not None:
        held = set(vault.kids)
        needed: dict[str, int] = {}
        for sealed_key in store.sealed_keys(unfinished_only=True):
            kid = sealed_kid(sealed_key.blob)
            if kid is not None and kid not in held:
                needed[kid] = needed.get(kid, 0) + 1
        if needed:
            listed = ", ".join(f"{kid} ({count} key(s))" for kid, count in sorted(needed.items()))
            origin = "QHYBRID_KEY_ENCRYPTION_KEY" if value is not None else str(path)
            raise KekMissingError(
                f"unfinished jobs hold keys sealed with key-encryption keys that {origin} does not "
                f"hold: {listed}; restore them and start again"
            )
    return vault


def check_task_tokens(store: JobStore, backends: BackendRegistry) -> None:
    """Refuse to start when unfinished jobs wait on client tokens this gateway did not mint.

    A worker stores a task's token before the provider call; if it dies, whichever worker takes
    the job next must look the task up, or submit it, under that very token. A host whose token
    key differs cannot (its gateway refuses foreign tokens), and the job would end in the
    classical fallback with the provider task perhaps already paid for.

    Raises:
        ForeignTokenError: Naming the setting, with how many tokens this host cannot send.
    """
    foreign = sum(1 for token in store.unsubmitted_tokens() if not backends.minted(token))
    if foreign:
        raise ForeignTokenError(
            f"{foreign} unfinished job task(s) hold a client token that {NOT_MINTED_HERE}, and start again"
        )


def _request(job: Job) -> JobRequest:
    """The job's request, read back into the contract it was accepted under.

    Raises:
        PermanentError: If the stored document no longer validates (nothing to retry).
    """
    try:
        return load_stored_request(job.request, job.request_version)
    except ValueError as exc:
        raise PermanentError(f"the stored request does not validate: {exc}") from exc


def _stored(result: JobResult) -> dict[str, Any]:
    # Only what was set: a field that does not apply (lots of a selection, the fallback of a
    # quantum answer) is absent from the stored document rather than null.
    return result.model_dump(mode="json", exclude_unset=True)


def owner_prefix() -> str:
    """The start of every lease owner id this process uses (``host:pid:``)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:"


def _owner_id() -> str:
    # One owner per execution, so even two threads of one process never share a lease.
    return f"{owner_prefix()}{uuid.uuid4().hex[:8]}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:2000]


@dataclass
class _LostLeaseError(Exception):
    """Another actor changed the job first; this worker stops touching it."""

    job_id: str


class Journey(DecomposedSteps):
    """Advances jobs through their states; one instance per worker process, shared by its threads.

    A selection too large for one program is decomposed: :class:`DecomposedSteps` runs its
    states (many provider tasks, in rounds) when ``jobs.decomposition`` is set.

    Args:
        settings: Timing and limits.
        store: The job store.
        queue: Used to schedule the next look at a job.
        backends: Provider adapters by name.
        vault: Seals and opens the per-job obfuscation keys; built from the settings if omitted.
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        queue: JobQueue,
        backends: BackendRegistry,
        vault: KeyVault | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.backends = backends
        self.vault = vault or vault_from(settings, store)
        check_task_tokens(store, backends)
        # The row as the last move of a run left it, by lease owner (one per run): the next step
        # starts from it instead of reading the row just written. Popped by the run's next step.
        self._moved_rows: dict[str, Job] = {}
        # Likewise the task row a completed poll wrote, for FINALIZING in the same run.
        self._task_rows: dict[str, RemoteTask] = {}

    # ------------------------------------------------------------------ the entry point

    def advance(self, job_id: str) -> None:
        """Take the job's lease and run its steps until it waits on something or ends."""
        owner = _owner_id()
        claimed = self.store.claim_with_task(job_id, owner=owner, lease_seconds=self.settings.lease_seconds)
        if claimed is None:
            return  # finished, unknown, or another worker holds it
        job, task = claimed
        if task is not None:
            self._task_rows[owner] = task  # the poll or the finalizing step starts from it
        # Every egress audit entry and every log line of this run names the job (and its state).
        with (
            current_job(job_id),
            log_context(job_id=job_id, tenant=job.tenant, state=JobState(job.state).api_name),
            kept_lease(self.store, job_id, owner=owner, lease_seconds=self.settings.lease_seconds),
        ):
            try:
                self._advance_claimed(job_id, owner, job)
            finally:
                self._moved_rows.pop(owner, None)
                self._task_rows.pop(owner, None)

    def _advance_claimed(self, job_id: str, owner: str, claimed: Job) -> None:
        try:
            self._run(job_id, owner, claimed)
        except _LostLeaseError:
            log.info("job %s changed under worker %s; leaving it", job_id, owner)
        except PERMANENT_ERRORS as exc:
            self._give_up(job_id, owner, f"{self._state_of(job_id)}: {_describe(exc)}")
        except Exception as exc:
            # Transient errors and unexpected ones alike get a bounded number of retries, so a
            # bug cannot spin forever and a passing outage does not kill the job.
            if not isinstance(exc, TRANSIENT_ERRORS):
                log.exception("job %s: unexpected error", job_id)
            self._retry_later(job_id, owner, exc)

    def _run(self, job_id: str, owner: str, claimed: Job | None = None) -> None:
        """Run steps until the job waits or ends; ``claimed``: the row as the claim returned it."""
        while True:
            # The claim returned the row as it stands under our lease, and each move returns it as
            # it left it: a step reads the job only when neither did (after a fallback's move).
            if claimed is None:
                claimed = self._moved_rows.pop(owner, None)
            job, claimed = (claimed, None) if claimed is not None else (self.store.get_job(job_id), None)
            if job is None or job.lease_owner != owner:
                raise _LostLeaseError(job_id)
            state = JobState(job.state)
            set_log_state(state.api_name)
            if state in TERMINAL_STATES:
                return
            if job.cancel_requested:
                self._cancel(job, owner)
                return
            if utcnow() >= job.deadline_at and state is not JobState.FINALIZING:
                self._give_up(job_id, owner, "deadline passed before the QPU answered", job=job)
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
                (self._submit_round if job.decomposition is not None else self._submit)(job, owner)
                return
            elif state in REMOTE_STATES:
                if not (self._poll_round if job.decomposition is not None else self._poll)(job, owner):
                    return
            elif state is JobState.FINALIZING:
                (self._finalize_decomposed if job.decomposition is not None else self._finalize)(job, owner)
                return

    # --------------------------------------------------------------------- the steps

    def _prepare(self, job: Job, owner: str) -> None:
        """Business problem -> QUBO -> obfuscated Ising -> QAOA circuit for the device -> OpenQASM 3."""
        request = _request(job)
        target = self.backends.get(job.backend).target()
        if is_decomposed(request, self.settings, target.num_qubits):
            self._prepare_decomposed(job, owner, request, target)
            return
        prepared = pipeline.prepare(
            request, target, seed=pipeline.job_seed(request, job.id), settings=self.settings
        )
        sealed = self.vault.seal(prepared.key, job_id=job.id)  # the key is stored sealed, never in clear
        self._move(
            job,
            owner,
            JobState.SUBMITTING,
            program=prepared.program.text,
            prepared=prepared.program.prepared.model_dump(mode="json", exclude_unset=True),
            moments=prepared.moments.to_bytes(),
            proxy_key=sealed,
            attempt=1,
        )

    def _submit(self, job: Job, owner: str) -> None:
        """Submit the program at most once per attempt: the token is stored before the call."""
        backend = self.backends.get(job.backend)
        # Minted by the gateway, whose route tables refuse any token it did not mint: the token
        # carries no bytes of anyone's choosing.
        token = self.backends.mint_token()
        row = self.store.attempt_task(
            job_id=job.id, owner=owner, attempt=job.attempt, backend=job.backend, client_token=token
        )
        if row is None:
            raise _LostLeaseError(job.id)
        task_id: str | None = None
        if row.client_token != token:
            task_id = row.task_id
            if task_id is None:
                # A previous worker stored the token and may have reached the provider before it
                # died: ask the provider before submitting, so a paid task is never created twice.
                self._require_minted(row.client_token, f"attempt {job.attempt}")
                task_id = backend.find_task(row.client_token)
        if task_id is None:
            if job.program is None:
                raise PermanentBackendError("no program was stored for this job")
            task_id = backend.submit(job.program, job.shots, row.client_token)
        # The task's id is stored with the move to SUBMITTED, in one transaction. A worker that
        # dies before it commits leaves the job SUBMITTING with the token stored, and the next
        # worker finds the task by its token instead of submitting again.
        self._await_first_poll(
            job,
            owner,
            f"task {task_id} (attempt {job.attempt})",
            task_update=(
                row.id,
                {"task_id": task_id, "submitted_at": utcnow(), "state": TaskState.QUEUED.value},
            ),
        )

    def _poll(self, job: Job, owner: str) -> bool:
        """Ask the provider where the task is; True when the job moved on to FINALIZING."""
        backend = self.backends.get(job.backend)
        row = self._remote_row(job)
        if row.task_id is None:
            raise PermanentBackendError("remote task has no id in a polling state")
        status = backend.status(row.task_id)
        seen = {
            "state": status.state.value,
            "provider_state": status.provider_state,
            "queue_position": status.queue_position,
            "message": status.message,
            "polls": row.polls + 1,
        }
        state = JobState(job.state)
        if status.state in TERMINAL_TASK_STATES and row.submitted_at is not None:
            PROVIDER_TASK_SECONDS.labels(job.backend, status.state.value.lower()).observe(
                max(0.0, (utcnow() - row.submitted_at).total_seconds())
            )
        if status.state is TaskState.COMPLETED:
            outcome = backend.result(row.task_id)
            cost = actual_cost(job.cost, backend, outcome)
            # The status, the counts and the move to FINALIZING in one transaction: a worker that
            # dies before it leaves the job polling, and the next poll asks the provider again.
            counts = {
                **seen,
                "counts": outcome.counts,
                "details": {"shots": outcome.shots, **outcome.metadata, "link": backend.link()},
            }
            self._move(
                job,
                owner,
                JobState.FINALIZING,
                detail=f"task {row.task_id} completed",
                task_update=(row.id, counts),
                cost=cost,
            )
            moved = self._moved_rows.get(owner)
            if moved is not None:
                # The row as this move wrote it: the task's update is stamped with the move's time.
                written = {column.name: getattr(row, column.name) for column in _TASK_TABLE.c}
                written.update(counts, updated_at=moved.updated_at)
                self._task_rows[owner] = loaded(RemoteTask, written)
            return True
        if status.state in UNSUCCESSFUL_TASK_STATES:
            why = status.message or "no reason given"
            reason = f"provider task {row.task_id} {status.state.value.lower()}: {why}"
            if job.attempt < self.settings.max_remote_attempts:
                self._move(
                    job,
                    owner,
                    JobState.SUBMITTING,
                    detail=reason,
                    task_update=(row.id, seen),
                    attempt=job.attempt + 1,
                )
                REMOTE_RESUBMISSIONS.labels(job.backend).inc()
                self._submit(self._after_move(job.id, owner), owner)
                return False
            self.store.update_remote_task(row.id, **seen)
            self._give_up(job.id, owner, f"{reason} (after {job.attempt} attempts)", job=job)
            return False
        interval = min(
            (job.poll_interval or self.settings.poll_initial_seconds) * 2, self.settings.poll_max_seconds
        )
        next_poll = utcnow() + timedelta(seconds=interval)
        target = JobState.REMOTE_RUNNING if status.state is TaskState.RUNNING else JobState.REMOTE_QUEUED
        schedule: dict[str, Any] = {"next_poll_at": next_poll, "poll_interval": interval}
        # What the provider said is written with the release (or the move), in one statement.
        if target is not state and not (
            state is JobState.REMOTE_RUNNING and target is JobState.REMOTE_QUEUED
        ):
            self._move(
                job,
                owner,
                target,
                detail=f"provider says {status.provider_state}",
                release=True,
                task_update=(row.id, seen),
                **schedule,
            )
        elif not self.store.release(
            job.id, owner=owner, task_update=(row.id, seen), step_failures=0, last_error=None, **schedule
        ):
            raise _LostLeaseError(job.id)
        self.queue.kick_at(job.id, next_poll)
        return False

    def _finalize(self, job: Job, owner: str) -> None:
        """Judge the samples on the true problem, refine, compare with the classical baselines."""
        request = _request(job)
        if job.fallback_reason is not None and is_decomposed(request, self.settings, None):
            # Fell back before the decomposition began (e.g. the provider was unreachable in
            # PREPARING): a universe this large gets the decomposition's classical start, not
            # the single program's exhaustive baselines.
            self._finalize_decomposed(job, owner)
            return
        seed = pipeline.job_seed(request, job.id)
        prepared = None if job.prepared is None else Prepared.model_validate(job.prepared)
        moments = (
            pipeline.estimate(request)  # fell back before PREPARING kept them
            if job.moments is None
            else pipeline.Moments.from_bytes(
                job.moments, tuple(request.asset_names()), prepared.estimate if prepared else None
            )
        )
        if job.fallback_reason is not None:
            result = pipeline.fall_back(
                request, moments, seed=seed, reason=job.fallback_reason, settings=self.settings
            )
            detail = f"classical fallback: {job.fallback_reason}"
        else:
            row = self._remote_row(job)
            if row.counts is None:
                raise PermanentBackendError("completed task has no stored counts")
            if job.proxy_key is None:
                raise PermanentBackendError("no obfuscation key was stored for this job")
            sampling_seconds, time_source = _sampling_seconds(row)
            task = pipeline.TaskFacts(
                backend=job.backend,
                task_id=row.task_id,
                attempt=job.attempt,
                shots=job.shots,
                link=(row.details or {}).get("link"),
                sampling_seconds=sampling_seconds,
                time_source=time_source,
            )
            result = pipeline.finish(
                request,
                moments,
                row.counts,
                self.vault.open(job.proxy_key, job_id=job.id),
                seed=seed,
                prepared=prepared,
                task=task,
                settings=self.settings,
            )
            detail = f"objective {result.objective:.6g} ({result.source}, found by {result.found_by})"
        self._move(job, owner, JobState.COMPLETED, detail=detail, result=_stored(result))

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
            reason = f"{job.state}: gave up after {failures} tries: {_describe(exc)}"
            self._give_up(job_id, owner, reason, job=job)
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
            STEP_RETRIES.labels(JobState(job.state).api_name).inc()
            self.queue.kick_at(job_id, when)

    def _give_up(self, job_id: str, owner: str, reason: str, *, job: Job | None = None) -> None:
        """The QPU cannot answer: answer classically (marked) when allowed, else fail the job."""
        job = job or self.store.get_job(job_id)
        if job is None:
            return
        state = JobState(job.state)
        allowed = _request(job).options.fallback
        if not allowed or state not in FALLBACK_STATES:
            self._fail(job_id, owner, reason, job=job)
            return
        if state in HAS_REMOTE_TASK:
            try:
                self._cancel_remote(job)
            except Exception:  # best effort: the classical answer does not depend on it
                log.warning("job %s: could not cancel the provider task before falling back", job_id)
        log.warning("job %s: classical fallback: %s", job_id, reason)
        moved = self.store.transition(
            job_id,
            owner=owner,
            source=state,
            target=JobState.FINALIZING,
            detail=f"classical fallback: {reason}",
            fallback_reason=reason,
            next_poll_at=None,
            step_failures=0,
            last_error=None,
        )
        if not moved:
            return
        FALLBACKS.labels(state.api_name).inc()
        self._moved_rows.pop(owner, None)  # the fallback moved the job since: read it again
        try:
            self._run(job_id, owner)
        except _LostLeaseError:
            log.info("job %s changed under worker %s; leaving it", job_id, owner)
        except Exception as exc:
            # FINALIZING never falls back again, so this ends in a retry or in FAILED.
            self._retry_later(job_id, owner, exc)

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
        if job.decomposition is not None:
            return self._cancel_round(job)
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
        cached = self._task_rows.pop(job.lease_owner, None) if job.lease_owner else None
        if cached is not None and cached.job_id == job.id and cached.attempt == job.attempt:
            return cached
        row = self.store.remote_task(job.id, job.attempt)
        if row is None:
            raise PermanentBackendError(f"no remote task recorded for attempt {job.attempt}")
        return row

    def _after_move(self, job_id: str, owner: str) -> Job:
        """The job as this run's last move left it (returned by the move), else read again."""
        moved = self._moved_rows.pop(owner, None)
        return moved if moved is not None and moved.id == job_id else self._reload(job_id, owner)

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
        task_update: tuple[int, dict[str, Any]] | None = None,
        **fields: Any,
    ) -> None:
        """Transition, resetting the retry bookkeeping; ``release`` also hands back the lease.

        ``task_update`` (a remote task row's id and fields) is written in the same transaction.
        """
        values: dict[str, Any] = {"step_failures": 0, "last_error": None, "next_poll_at": None}
        if release:
            values.update(lease_owner=None, lease_expires_at=None)
        values.update(fields)
        # A move after which this run goes on (not released, not terminal) takes the row back from
        # its UPDATE, for the next step.
        goes_on = not release and target not in TERMINAL_STATES
        move = self.store.transition_returning if goes_on else self.store.transition
        moved = move(
            job.id,
            owner=owner,
            source=JobState(job.state),
            target=target,
            detail=detail,
            task_update=task_update,
            **values,
        )
        if not moved:
            raise _LostLeaseError(job.id)
        if isinstance(moved, Job):
            self._moved_rows[owner] = moved
        log.info("job %s: %s -> %s", job.id, job.state, target.value)

"""Decomposed jobs, the durable side: many provider tasks per job, in rounds.

:class:`DecomposedSteps` is mixed into :class:`qhybrid.jobs.journey.Journey`; the journey calls
it in the states of a job whose ``jobs.decomposition`` is set (decided in PREPARING by
:func:`qhybrid.jobs.subproblems.is_decomposed`). The same guarantees as the single task's:

- **At most once per sub-problem.** In SUBMITTING, each sub-problem's row (job, attempt, round,
  part) is written with a gateway-minted client token, its program and its key sealed for that
  task alone, before the provider is called. A row without a task id (a crash mid-submission) is
  looked up with ``find_task(token)`` before anything is sent again.
- **Redo after kill -9.** The round's sub-problems are a function of the stored loop state and
  the job's seed, so a new worker rebuilds the missing rows and finds the same sub-problems.
  Closing a round reads only stored counts and writes the new state with the transition.
- **Cancel, deadline, fallback.** Cancelling (or giving up) cancels every task of the current
  round that has not ended; the fallback answers with the classical start, marked as such.
  A sub-problem task that ends FAILED or CANCELLED is left out of its round; a round with no
  completed task gives up (fallback).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from qhybrid.backends.base import PermanentBackendError
from qhybrid.backends.registry import BackendRegistry
from qhybrid.core.config import Settings
from qhybrid.core.metrics import PROVIDER_TASK_SECONDS
from qhybrid.domain.device import DeviceTarget
from qhybrid.domain.errors import PermanentError
from qhybrid.domain.request import JobRequest, load_stored_request
from qhybrid.domain.result import EstimateReport
from qhybrid.domain.states import TERMINAL_TASK_STATES, JobState, TaskState
from qhybrid.gateway.tokens import NOT_MINTED_HERE
from qhybrid.jobs import pipeline, subproblems
from qhybrid.jobs.models import Job, RemoteTask, utcnow
from qhybrid.jobs.queue import JobQueue
from qhybrid.jobs.store import JobStore
from qhybrid.proxy.keys import KeyVault

log = logging.getLogger("qhybrid.worker")


def _stored_request(job: Job) -> JobRequest:
    try:
        return load_stored_request(job.request, job.request_version)
    except ValueError as exc:
        raise PermanentError(f"the stored request does not validate: {exc}") from exc


def _ended(row: RemoteTask) -> bool:
    return row.state is not None and TaskState(row.state) in TERMINAL_TASK_STATES


class DecomposedSteps:
    """The steps of a decomposed job; a mixin of the journey, which provides what is declared here."""

    settings: Settings
    store: JobStore
    queue: JobQueue
    backends: BackendRegistry
    vault: KeyVault

    # Provided by the journey.
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
        raise NotImplementedError

    def _reload(self, job_id: str, owner: str) -> Job:
        raise NotImplementedError

    def _after_move(self, job_id: str, owner: str) -> Job:
        raise NotImplementedError

    def _give_up(self, job_id: str, owner: str, reason: str, *, job: Job | None = None) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------ the steps

    def _prepare_decomposed(self, job: Job, owner: str, request: JobRequest, target: DeviceTarget) -> None:
        """PREPARING: μ and Σ, the classical start; no program yet (each round builds its own)."""
        moments = pipeline.estimate(request)
        state = subproblems.begin(
            request,
            moments,
            seed=pipeline.job_seed(request, job.id),
            settings=self.settings,
            capacity=target.num_qubits,
            now=utcnow(),
        )
        self._move(
            job,
            owner,
            JobState.SUBMITTING,
            detail=(
                f"decomposed: {request.num_qubits()} assets, sub-problems of at most {state.assets} assets "
                f"({state.qubits} qubits); classical start {state.objective:.6g} ({state.start.method})"
            ),
            moments=moments.to_bytes(),
            decomposition=state.model_dump(mode="json"),
            attempt=1,
        )

    def _submit_round(self, job: Job, owner: str) -> None:
        """SUBMITTING: every sub-problem of the round submitted at most once, then wait for them."""
        request = _stored_request(job)
        state = subproblems.LoopState.model_validate(job.decomposition)
        problem = subproblems.problem_of(request, self._moments(job, request))
        seed = pipeline.job_seed(request, job.id)
        subsets = subproblems.round_subsets(
            problem, state, seed=seed, parts=self.settings.decomposition_parts
        )
        if not subsets:
            stopped = state.model_copy(update={"stopped": "no_subproblems"})
            self._move(
                job,
                owner,
                JobState.FINALIZING,
                detail="no sub-problem left to send",
                decomposition=stopped.model_dump(mode="json"),
            )
            return
        backend = self.backends.get(job.backend)
        target = backend.target()
        existing = {row.part: row for row in self.store.round_tasks(job.id, state.round)}
        for part, indices in enumerate(subsets):
            row = existing.get(part)
            task_id: str | None = None
            if row is None:
                built = subproblems.build_part(
                    request, problem, state, indices, target, seed=seed, settings=self.settings
                )
                sealed = self.vault.seal(
                    built.key, job_id=job.id, task=subproblems.task_name(state.round, part)
                )
                row = self.store.create_remote_task(
                    job_id=job.id,
                    owner=owner,
                    attempt=job.attempt,
                    backend=job.backend,
                    client_token=self.backends.mint_token(),
                    round_number=state.round,
                    part=part,
                    program=built.text,
                    proxy_key=sealed,
                    subproblem=built.subproblem,
                )
                if row is None:
                    self._reload(job.id, owner)  # raises: the lease was taken over
                    raise PermanentBackendError("the sub-problem's task row could not be written")
            elif row.task_id is not None:
                continue
            else:
                # A previous worker stored the token and may have reached the provider: ask first.
                self._require_minted(row.client_token, f"sub-problem {part} of round {state.round}")
                task_id = backend.find_task(row.client_token)
            if task_id is None:
                if row.program is None:
                    raise PermanentBackendError("no program was stored for this sub-problem")
                task_id = backend.submit(row.program, job.shots, row.client_token)
            self.store.update_remote_task(
                row.id, task_id=task_id, submitted_at=utcnow(), state=TaskState.QUEUED.value
            )
        self._await_first_poll(job, owner, f"round {state.round}: {len(subsets)} sub-problem tasks")

    def _require_minted(self, token: str, what: str) -> None:
        """Refuse a stored token this gateway did not mint (another host's key made it).

        The route table would refuse to send it; the journey answers classically, saying why.
        """
        if not self.backends.minted(token):
            raise PermanentBackendError(f"the stored client token of {what} {NOT_MINTED_HERE}")

    def _await_first_poll(
        self, job: Job, owner: str, detail: str, *, task_update: tuple[int, dict[str, Any]] | None = None
    ) -> None:
        """SUBMITTING -> SUBMITTED with the lease released and the first poll scheduled.

        ``task_update`` (a remote task row's id and fields) is written in the same transaction.
        """
        first_poll = utcnow() + timedelta(seconds=self.settings.poll_initial_seconds)
        self._move(
            job,
            owner,
            JobState.SUBMITTED,
            detail=detail,
            release=True,
            task_update=task_update,
            next_poll_at=first_poll,
            poll_interval=self.settings.poll_initial_seconds,
        )
        self.queue.kick_at(job.id, first_poll)

    def _poll_round(self, job: Job, owner: str) -> bool:
        """REMOTE_*: poll the round's tasks; when all ended, close the round. True: FINALIZING."""
        state = subproblems.LoopState.model_validate(job.decomposition)
        backend = self.backends.get(job.backend)
        rows = self.store.round_tasks(job.id, state.round)
        if not rows:
            raise PermanentBackendError(f"no sub-problem task recorded for round {state.round}")
        running = False
        for row in rows:
            if _ended(row):
                continue
            if row.task_id is None:
                raise PermanentBackendError("sub-problem task has no id in a polling state")
            status = backend.status(row.task_id)
            self.store.update_remote_task(
                row.id,
                state=status.state.value,
                provider_state=status.provider_state,
                queue_position=status.queue_position,
                message=status.message,
                polls=row.polls + 1,
            )
            if status.state in TERMINAL_TASK_STATES and row.submitted_at is not None:
                PROVIDER_TASK_SECONDS.labels(job.backend, status.state.value.lower()).observe(
                    max(0.0, (utcnow() - row.submitted_at).total_seconds())
                )
            if status.state is TaskState.COMPLETED:
                outcome = backend.result(row.task_id)
                self.store.update_remote_task(
                    row.id,
                    counts=outcome.counts,
                    details={"shots": outcome.shots, **outcome.metadata, "link": backend.link()},
                )
            running = running or status.state is TaskState.RUNNING
        rows = self.store.round_tasks(job.id, state.round)
        if all(_ended(row) for row in rows):
            return self._close_round(job, owner, state, rows)
        current = JobState(job.state)
        interval = min(
            (job.poll_interval or self.settings.poll_initial_seconds) * 2, self.settings.poll_max_seconds
        )
        next_poll = utcnow() + timedelta(seconds=interval)
        target = JobState.REMOTE_RUNNING if running else JobState.REMOTE_QUEUED
        schedule: dict[str, Any] = {"next_poll_at": next_poll, "poll_interval": interval}
        if target is not current and not (
            current is JobState.REMOTE_RUNNING and target is JobState.REMOTE_QUEUED
        ):
            self._move(job, owner, target, detail=f"round {state.round}", release=True, **schedule)
        elif not self.store.release(job.id, owner=owner, step_failures=0, last_error=None, **schedule):
            self._reload(job.id, owner)  # raises: the lease was taken over
        self.queue.kick_at(job.id, next_poll)
        return False

    def _close_round(
        self, job: Job, owner: str, state: subproblems.LoopState, rows: list[RemoteTask]
    ) -> bool:
        outcomes: list[subproblems.PartOutcome] = []
        for row in rows:
            done = row.state == TaskState.COMPLETED.value and row.counts is not None
            if done and row.proxy_key is None:
                raise PermanentBackendError("no obfuscation key was stored for this sub-problem")
            key = (
                self.vault.open(row.proxy_key, job_id=job.id, task=subproblems.task_name(row.round, row.part))
                if done and row.proxy_key is not None
                else None
            )
            outcomes.append(
                subproblems.PartOutcome(
                    part=row.part,
                    subproblem=row.subproblem or {},
                    task_id=row.task_id,
                    state=row.state or "?",
                    counts=row.counts if done else None,
                    key=key,
                )
            )
        if not any(outcome.counts is not None for outcome in outcomes):
            self._give_up(job.id, owner, f"no sub-problem task of round {state.round} completed", job=job)
            return False
        request = _stored_request(job)
        problem = subproblems.problem_of(request, self._moments(job, request))
        stop = subproblems.should_stop(state, settings=self.settings, now=utcnow())
        closed = subproblems.close_round(problem, state, outcomes, last_round=stop is not None, stopped=stop)
        report = closed.rounds[-1]
        detail = (
            f"round {report.round}: {report.objective_before:.6g} -> {report.objective_after:.6g} "
            f"(sub-problems improved: {report.improved_parts or 'none'}; "
            f"refinement {'improved' if report.refinement_improved else 'unchanged'})"
        )
        document = closed.model_dump(mode="json")
        if stop is not None:
            self._move(
                job, owner, JobState.FINALIZING, detail=f"{detail}; stop: {stop}", decomposition=document
            )
            return True
        self._move(job, owner, JobState.SUBMITTING, detail=detail, decomposition=document)
        self._submit_round(self._after_move(job.id, owner), owner)
        return False

    def _finalize_decomposed(self, job: Job, owner: str) -> None:
        """FINALIZING: the loop's answer against the classical baselines (or the classical start).

        A job that fell back before PREPARING began the loop gets its classical start computed now.
        """
        request = _stored_request(job)
        moments = self._moments(job, request)
        if job.decomposition is None:
            state = subproblems.begin(
                request,
                moments,
                seed=pipeline.job_seed(request, job.id),
                settings=self.settings,
                capacity=None,
                now=utcnow(),
            )
        else:
            state = subproblems.LoopState.model_validate(job.decomposition)
        result = subproblems.result(
            request,
            moments,
            state,
            settings=self.settings,
            fallback_reason=job.fallback_reason,
        )
        detail = (
            f"objective {result.objective:.6g} ({result.source}, found by {result.found_by})"
            if job.fallback_reason is None
            else f"classical fallback: {job.fallback_reason}"
        )
        self._move(
            job,
            owner,
            JobState.COMPLETED,
            detail=detail,
            result=result.model_dump(mode="json", exclude_unset=True),
            cost=self._actual_cost(job),
        )

    def _actual_cost(self, job: Job) -> dict[str, Any]:
        """The cost record: the estimate kept, the actual summed over the completed sub-problem tasks.

        Per task as for a single task: the shots taken and, for per-second prices, the seconds the
        provider reports it billed (``usage_seconds``), else the adapter's estimate.
        """
        record = dict(job.cost or {"currency": "USD", "estimated": None})
        backend = self.backends.get(job.backend)
        pricing = backend.pricing()
        if pricing is None:
            record["actual"] = 0.0
            return record
        view = self.store.view(job.id)
        total = seconds = 0.0
        for row in [] if view is None else view.remote_tasks:
            if row.round < 1 or row.state != TaskState.COMPLETED.value or not row.details:
                continue
            shots = int(row.details.get("shots", job.shots))
            reported = row.details.get("usage_seconds")
            used = float(reported) if isinstance(reported, int | float) else backend.estimated_seconds(shots)
            total += pricing.estimate(shots, used)
            seconds += used
        record.update(actual=total, actual_seconds=seconds, currency=pricing.currency)
        return record

    def _cancel_round(self, job: Job) -> str | None:
        """Cancel every task of the current round that has not ended; their ids, comma-separated."""
        state = subproblems.LoopState.model_validate(job.decomposition)
        backend = self.backends.get(job.backend)
        cancelled: list[str] = []
        for row in self.store.round_tasks(job.id, state.round):
            if _ended(row):
                continue
            task_id = row.task_id or backend.find_task(row.client_token)
            if task_id is None:
                continue
            backend.cancel(task_id)
            self.store.update_remote_task(row.id, task_id=task_id, state=TaskState.CANCELLED.value)
            cancelled.append(task_id)
        return ", ".join(cancelled) or None

    def _moments(self, job: Job, request: JobRequest) -> pipeline.Moments:
        if job.moments is None:
            return pipeline.estimate(request)
        report = None if job.decomposition is None else job.decomposition.get("estimate")
        return pipeline.Moments.from_bytes(
            job.moments,
            tuple(request.asset_names()),
            None if report is None else EstimateReport.model_validate(report),
        )

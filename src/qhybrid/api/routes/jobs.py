"""``GET /jobs``, ``GET /jobs/{id}`` and ``POST /jobs/{id}/cancel``."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from qhybrid.api.deps import QueueDep, StoreDep, require_api_key
from qhybrid.api.errors import ApiError, invalid
from qhybrid.api.schemas import (
    ErrorBody,
    JobDocument,
    JobEventOut,
    JobPage,
    JobSummary,
    RemoteTaskOut,
)
from qhybrid.jobs.states import JobState
from qhybrid.jobs.store import InvalidCursorError, JobView

log = logging.getLogger("qhybrid.api")
router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(require_api_key)])

JobId = Annotated[
    str, Path(min_length=1, max_length=64, description="The id POST /optimize_portfolio returned.")
]
_STATUS_NAMES = [state.api_name for state in JobState]


def job_document(view: JobView) -> JobDocument:
    """The API's picture of a job."""
    job = view.job
    current = next((t for t in view.remote_tasks if t.attempt == job.attempt), None)
    return JobDocument(
        job_id=job.id,
        status=JobState(job.state).api_name,
        backend=job.backend,
        shots=job.shots,
        created_at=job.created_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
        deadline_at=job.deadline_at,
        attempt=job.attempt,
        cancel_requested=job.cancel_requested,
        error=job.error,
        last_error=job.last_error,
        next_check_at=job.next_poll_at,
        events=[
            JobEventOut(
                at=event.at,
                from_status=JobState(event.from_state).api_name if event.from_state else None,
                status=JobState(event.to_state).api_name,
                detail=event.detail,
            )
            for event in view.events
        ],
        remote_task=None
        if current is None
        else RemoteTaskOut(
            attempt=current.attempt,
            backend=current.backend,
            task_id=current.task_id,
            state=current.state,
            provider_state=current.provider_state,
            queue_position=current.queue_position,
            polls=current.polls,
            submitted_at=current.submitted_at,
            updated_at=current.updated_at,
        ),
        request=job.request,
        cost=job.cost,
        result=job.result,
    )


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "not_found", f"job_id: no job with id {job_id!r}", field="job_id")


@router.get(
    "", response_model=JobPage, summary="List jobs, newest first", responses={422: {"model": ErrorBody}}
)
def list_jobs(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page.")
    ] = None,
    status: Annotated[
        str | None, Query(description=f"Only jobs in this status: {', '.join(_STATUS_NAMES)}.")
    ] = None,
) -> JobPage:
    """One page of jobs; follow ``next_cursor`` for the next."""
    state = None
    if status is not None:
        if status not in _STATUS_NAMES:
            raise invalid(
                "status", "known_status", f"unknown status {status!r}; one of {', '.join(_STATUS_NAMES)}"
            )
        state = JobState(status.upper())
    try:
        jobs, next_cursor = store.list_jobs(limit=limit, cursor=cursor, state=state)
    except InvalidCursorError as exc:
        raise invalid("cursor", "valid_cursor", str(exc)) from exc
    return JobPage(
        items=[
            JobSummary(
                job_id=job.id,
                status=JobState(job.state).api_name,
                backend=job.backend,
                created_at=job.created_at,
                updated_at=job.updated_at,
                finished_at=job.finished_at,
                objective=(job.result or {}).get("objective"),
            )
            for job in jobs
        ],
        next_cursor=next_cursor,
    )


@router.get(
    "/{job_id}",
    response_model=JobDocument,
    summary="A job: status, events, result",
    responses={404: {"model": ErrorBody}},
)
def get_job(job_id: JobId, store: StoreDep) -> JobDocument:
    """The job's status, timestamps, transition events and, once completed, its result."""
    view = store.view(job_id)
    if view is None:
        raise _not_found(job_id)
    return job_document(view)


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobDocument,
    summary="Cancel a job (and its provider task)",
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def cancel_job(job_id: JobId, store: StoreDep, queue: QueueDep) -> JobDocument:
    """Cancel at once if no work started, else flag the job so a worker cancels the provider task too."""
    outcome = store.request_cancel(job_id)
    if outcome.job is None:
        raise _not_found(job_id)
    if not outcome.accepted:
        raise ApiError(
            409,
            "conflict",
            f"status: job is already {JobState(outcome.job.state).api_name}; it cannot be cancelled",
            field="status",
        )
    if not outcome.immediate:
        try:
            queue.kick(job_id)
        except Exception:
            log.exception("cancel of job %s recorded but the queue could not be reached", job_id)
    view = store.view(job_id)
    assert view is not None
    return job_document(view)

"""``GET /jobs``, ``GET /jobs/{id}`` and ``POST /jobs/{id}/cancel``."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from qhybrid.api.deps import QueueDep, StoreDep, TenantDep
from qhybrid.api.errors import ApiError, error_responses, invalid
from qhybrid.api.schemas import (
    JobDocument,
    JobEvent,
    JobPage,
    JobSummary,
    RemoteTaskInfo,
)
from qhybrid.domain.request import JobRequest, upgrade_stored_request
from qhybrid.domain.result import Cost, JobResult
from qhybrid.domain.states import STATUS_NAMES, JobState, parse_status
from qhybrid.jobs.store import InvalidCursorError, JobView

log = logging.getLogger("qhybrid.api")
router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[
    str, Path(min_length=1, max_length=64, description="The id POST /optimize_portfolio returned.")
]


def job_document(view: JobView) -> JobDocument:
    """The API's picture of a job: the stored request, cost and result read back into the contract."""
    job = view.job
    current = next((t for t in view.remote_tasks if t.attempt == job.attempt), None)
    return JobDocument(
        job_id=job.id,
        status=JobState(job.state),
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
            JobEvent(
                at=event.at,
                from_status=JobState(event.from_state) if event.from_state else None,
                status=JobState(event.to_state),
                detail=event.detail,
            )
            for event in view.events
        ],
        remote_task=None
        if current is None
        else RemoteTaskInfo(
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
        request=JobRequest.model_validate(upgrade_stored_request(job.request, job.request_version)),
        cost=None if job.cost is None else Cost.model_validate(job.cost),
        result=None if job.result is None else JobResult.model_validate(job.result),
    )


def _document_response(view: JobView, status_code: int = 200) -> JSONResponse:
    # Serialised here, once: returning the model would make FastAPI validate it a second time.
    return JSONResponse(job_document(view).model_dump(mode="json"), status_code=status_code)


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "not_found", f"job_id: no job with id {job_id!r}", field="job_id")


@router.get(
    "",
    response_model=JobPage,
    summary="List jobs, newest first",
    operation_id="list_jobs",
    responses=error_responses(401, 422),
)
def list_jobs(
    store: StoreDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page.")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page.")
    ] = None,
    status: Annotated[
        str | None, Query(description=f"Only jobs in this status: {', '.join(STATUS_NAMES)}.")
    ] = None,
) -> JobPage:
    """One page of the caller's jobs; follow ``next_cursor`` for the next."""
    state = None
    if status is not None:
        try:
            state = parse_status(status)
        except ValueError as exc:
            raise invalid("status", "known_status", str(exc)) from exc
    try:
        jobs, next_cursor = store.list_jobs(limit=limit, cursor=cursor, state=state, tenant=tenant)
    except InvalidCursorError as exc:
        raise invalid("cursor", "valid_cursor", str(exc)) from exc
    return JobPage(
        items=[
            JobSummary(
                job_id=job.id,
                status=JobState(job.state),
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
    operation_id="get_job",
    responses=error_responses(401, 404, 422),
)
def get_job(job_id: JobId, store: StoreDep, tenant: TenantDep) -> JSONResponse:
    """The job's status, timestamps, transition events and, once completed, its result.

    Another tenant's job is answered 404, exactly as a job that does not exist.
    """
    view = store.view(job_id, tenant=tenant)
    if view is None:
        raise _not_found(job_id)
    return _document_response(view)


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobDocument,
    summary="Cancel a job (and its provider task)",
    operation_id="cancel_job",
    responses=error_responses(401, 404, 409, 422),
)
def cancel_job(job_id: JobId, store: StoreDep, queue: QueueDep, tenant: TenantDep) -> JSONResponse:
    """Cancel at once if no work started, else flag the job so a worker cancels the provider task too."""
    outcome = store.request_cancel(job_id, tenant=tenant)
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
    view = store.view(job_id, tenant=tenant)
    assert view is not None
    return _document_response(view, status_code=202)

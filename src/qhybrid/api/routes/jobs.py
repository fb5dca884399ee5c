"""``GET /jobs``, ``GET /jobs/{id}`` (and its result, events and frontier), ``POST /jobs/{id}/cancel``."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from qhybrid.api.deps import QueueDep, SettingsDep, StoreDep, TenantDep
from qhybrid.api.errors import ApiError, error_responses, invalid
from qhybrid.api.schemas import (
    ChosenPoint,
    Frontier,
    FrontierAsset,
    FrontierPoint,
    JobDocument,
    JobEvent,
    JobPage,
    JobSummary,
    RemoteTaskInfo,
)
from qhybrid.domain.request import JobRequest, upgrade_stored_request
from qhybrid.domain.result import Cost, JobResult
from qhybrid.domain.states import STATUS_NAMES, TERMINAL_STATES, JobState, parse_status
from qhybrid.jobs.models import Job, utcnow
from qhybrid.jobs.models import JobEvent as EventRow
from qhybrid.jobs.pipeline import Moments, estimate
from qhybrid.jobs.store import InvalidCursorError, JobView
from qhybrid.portfolio.frontier import efficient_frontier, portfolio_point

log = logging.getLogger("qhybrid.api")
router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[
    str, Path(min_length=1, max_length=64, description="The id POST /optimize_portfolio returned.")
]

#: Bounds of the ``Retry-After`` hint (seconds): never 0, never longer than a client should sleep blind.
RETRY_AFTER_MIN = 1
RETRY_AFTER_MAX = 30

_DOCUMENT_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The job.",
        "headers": {
            "Retry-After": {
                "description": "While the job is unfinished: seconds until it is worth asking again.",
                "schema": {"type": "integer"},
            }
        },
    }
}
_STREAM_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "``text/event-stream``: one ``transition`` event per recorded transition, in "
        "order, its ``id`` the event's number (send it back as ``Last-Event-ID`` to resume); "
        "an ``end`` event after a terminal state; comment lines as heartbeats.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def retry_after(job: Job) -> str | None:
    """The ``Retry-After`` value for a job's document: ``None`` once the job ended.

    When a worker has scheduled the job's next look (a provider poll), that is when something may
    have changed; otherwise a worker is on it now and one second is the useful pace.
    """
    if JobState(job.state) in TERMINAL_STATES:
        return None
    seconds: float = RETRY_AFTER_MIN
    if job.next_poll_at is not None:
        seconds = (job.next_poll_at - utcnow()).total_seconds()
    return str(min(RETRY_AFTER_MAX, max(RETRY_AFTER_MIN, math.ceil(seconds))))


def _event(event: EventRow) -> JobEvent:
    return JobEvent(
        id=event.id,
        at=event.at,
        from_status=JobState(event.from_state) if event.from_state else None,
        status=JobState(event.to_state),
        detail=event.detail,
    )


def job_document(view: JobView, *, include_request: bool = False) -> JobDocument:
    """The API's picture of a job: the stored cost and result (and request) read back into the contract."""
    job = view.job
    # The attempt's latest task: its only one, or a decomposed job's last sub-problem task.
    current = next((t for t in reversed(view.remote_tasks) if t.attempt == job.attempt), None)
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
        events=[_event(event) for event in view.events],
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
        request=JobRequest.model_validate(upgrade_stored_request(job.request, job.request_version))
        if include_request
        else None,
        cost=None if job.cost is None else Cost.model_validate(job.cost),
        result=None if job.result is None else JobResult.model_validate(job.result),
    )


def _document_response(
    view: JobView, status_code: int = 200, *, include_request: bool = False
) -> JSONResponse:
    # Serialised here, once: returning the model would make FastAPI validate it a second time.
    response = JSONResponse(
        job_document(view, include_request=include_request).model_dump(mode="json"), status_code=status_code
    )
    hint = retry_after(view.job)
    if hint is not None:
        response.headers["Retry-After"] = hint
    return response


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "not_found", f"job_id: no job with id {job_id!r}", field="job_id")


def parse_statuses(values: list[str] | None) -> list[JobState]:
    """``?status=a&status=b`` and ``?status=a,b`` alike: the states asked for, in order, once each.

    Raises:
        ApiError: 422 naming ``status`` for an unknown name.
    """
    states: list[JobState] = []
    for value in values or []:
        for name in value.split(","):
            if not name.strip():
                continue
            try:
                state = parse_status(name.strip())
            except ValueError as exc:
                raise invalid("status", "known_status", str(exc)) from exc
            if state not in states:
                states.append(state)
    return states


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
        list[str] | None,
        Query(
            description="Only jobs in these statuses: repeat the parameter or separate names with commas "
            f"({', '.join(STATUS_NAMES)})."
        ),
    ] = None,
) -> JobPage:
    """One page of the caller's jobs; follow ``next_cursor`` for the next."""
    states = parse_statuses(status)
    try:
        jobs, next_cursor = store.list_jobs(limit=limit, cursor=cursor, states=states, tenant=tenant)
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
                selected=(job.result or {}).get("selected"),
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
    responses=_DOCUMENT_OK | error_responses(401, 404, 422),
)
def get_job(
    job_id: JobId,
    store: StoreDep,
    tenant: TenantDep,
    include: Annotated[
        list[Literal["request"]] | None,
        Query(description="``request``: add the request as accepted (with its price history, if any)."),
    ] = None,
) -> JSONResponse:
    """The job's status, timestamps, transition events and, once completed, its result.

    The request is left out unless ``?include=request``: a price history is most of its size.
    Another tenant's job is answered 404, exactly as a job that does not exist.
    """
    view = store.view(job_id, tenant=tenant)
    if view is None:
        raise _not_found(job_id)
    return _document_response(view, include_request="request" in (include or []))


@router.get(
    "/{job_id}/result",
    response_model=JobResult,
    summary="A completed job's result",
    operation_id="get_job_result",
    responses=error_responses(401, 404, 409, 422),
)
def get_job_result(job_id: JobId, store: StoreDep, tenant: TenantDep) -> JSONResponse:
    """The typed result of a completed job; 409 while it runs, or when it failed or was cancelled."""
    job = store.get_job(job_id, tenant=tenant)
    if job is None:
        raise _not_found(job_id)
    state = JobState(job.state)
    if state is not JobState.COMPLETED or job.result is None:
        reason = f": {job.error}" if state is JobState.FAILED and job.error else ""
        headers = {}
        hint = retry_after(job)
        if hint is not None:
            headers["Retry-After"] = hint
        raise ApiError(
            409,
            "not_completed",
            f"status: job is {state.api_name}{reason}; a result exists once it is completed",
            field="status",
            headers=headers or None,
        )
    return JSONResponse(JobResult.model_validate(job.result).model_dump(mode="json", exclude_unset=True))


def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines += [f"event: {event}", f"data: {json.dumps(data, separators=(',', ':'))}"]
    return "\n".join(lines) + "\n\n"


@router.get(
    "/{job_id}/events",
    summary="Stream a job's transitions (server-sent events)",
    operation_id="stream_job_events",
    response_class=StreamingResponse,
    responses=_STREAM_OK | error_responses(401, 404, 422),
)
async def stream_job_events(
    job_id: JobId,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    tenant: TenantDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=r"^[0-9]{1,18}$",
            description="Resume after this event (browsers send it on reconnecting).",
        ),
    ] = None,
) -> StreamingResponse:
    """Every transition of the job, as recorded, until it ends; a reconnecting reader resumes."""
    after = int(last_event_id) if last_event_id else 0
    first = await run_in_threadpool(partial(store.events_after, job_id, after, tenant=tenant))
    if first is None:
        raise _not_found(job_id)
    poll, heartbeat = settings.events_poll_seconds, settings.events_heartbeat_seconds

    async def stream() -> AsyncIterator[str]:
        nonlocal after
        found: tuple[JobState, list[EventRow]] | None = first
        # Reconnect after a second if the connection drops; the browser sends Last-Event-ID.
        yield "retry: 1000\n\n"
        quiet_since = time.monotonic()
        while found is not None:
            # The state is read before the events: a terminal state read means its event is in.
            state, events = found
            for event in events:
                yield _sse(
                    "transition",
                    {"job_id": job_id, **_event(event).model_dump(mode="json")},
                    event.id,
                )
                after = event.id
                quiet_since = time.monotonic()
            if state in TERMINAL_STATES:
                yield _sse("end", {"job_id": job_id, "status": state.api_name})
                return
            if time.monotonic() - quiet_since >= heartbeat:
                yield ": heartbeat\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(poll)
            if await request.is_disconnected():
                return
            found = await run_in_threadpool(partial(store.events_after, job_id, after, tenant=tenant))

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        # No caching, and no buffering by a reverse proxy (nginx reads X-Accel-Buffering).
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _moments_of(job: Job, request: JobRequest) -> Moments:
    names = tuple(request.asset_names())
    if job.moments is not None:
        # The very μ and Σ the job was judged on.
        return Moments.from_bytes(job.moments, names, None)
    return estimate(request)


@router.get(
    "/{job_id}/frontier",
    response_model=Frontier,
    summary="The efficient frontier of the job's universe",
    operation_id="get_job_frontier",
    responses=error_responses(401, 404, 422),
)
def get_job_frontier(
    job_id: JobId,
    store: StoreDep,
    tenant: TenantDep,
    points: Annotated[int, Query(ge=2, le=100, description="Points on the frontier.")] = 30,
) -> JSONResponse:
    """Long-only mean-variance frontier of the request's assets, with the job's answer on it.

    Computed here, in the trusted zone, on the job's μ and Σ (per period of the request's data);
    nothing of it is sent anywhere.
    """
    job = store.get_job(job_id, tenant=tenant)
    if job is None:
        raise _not_found(job_id)
    request = JobRequest.model_validate(upgrade_stored_request(job.request, job.request_version))
    moments = _moments_of(job, request)
    mu, sigma, names = moments.expected_returns, moments.covariance, moments.names
    frontier = efficient_frontier(mu, sigma, points)
    chosen = None
    if job.result is not None:
        result = JobResult.model_validate(job.result)
        if result.weights:
            weights = np.array([result.weights.get(name, 0.0) for name in names])
        else:
            held = set(result.selected)
            weights = np.array([1.0 if name in held else 0.0 for name in names])
        if weights.sum() > 0:
            weights = weights / weights.sum()
            point = portfolio_point(weights, mu, sigma)
            chosen = ChosenPoint(
                expected_return=point.expected_return,
                volatility=point.volatility,
                selected=list(result.selected),
                weights={name: float(w) for name, w in zip(names, weights, strict=True) if w > 0},
            )
    body = Frontier(
        job_id=job.id,
        assets=[
            FrontierAsset(
                name=name, expected_return=float(m), volatility=float(np.sqrt(max(sigma[i, i], 0.0)))
            )
            for i, (name, m) in enumerate(zip(names, mu, strict=True))
        ],
        points=[
            FrontierPoint(
                expected_return=p.expected_return,
                volatility=p.volatility,
                weights={
                    name: round(float(w), 6) for name, w in zip(names, p.weights, strict=True) if w > 1e-6
                },
            )
            for p in frontier
        ],
        chosen=chosen,
    )
    return JSONResponse(body.model_dump(mode="json"))


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

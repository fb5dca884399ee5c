"""Response bodies of the HTTP API (the request body is :class:`qhybrid.domain.request.JobRequest`).

Every 4xx has the shape :class:`ErrorBody`; the job document carries the typed request, cost and
result of the domain contract, so ``/openapi.json`` documents every field a client reads.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from qhybrid.domain.request import JobRequest
from qhybrid.domain.result import Cost, JobResult
from qhybrid.domain.states import JobStatus


class JobLinks(BaseModel):
    """Where to follow the job."""

    self: str = Field(description="GET: the job document.")
    cancel: str = Field(description="POST: cancel the job.")


class JobAccepted(BaseModel):
    """The answer to an accepted request: where to find the job."""

    job_id: str
    status: JobStatus
    created_at: datetime
    estimated_cost: float | None = Field(default=None, description="USD, from the provider's price list.")
    links: JobLinks


class JobEventOut(BaseModel):
    """One transition of the job."""

    at: datetime
    from_status: JobStatus | None
    status: JobStatus
    detail: str | None


class RemoteTaskOut(BaseModel):
    """The provider task of the job's current attempt."""

    attempt: int
    backend: str
    task_id: str | None
    state: str | None = Field(description="QUEUED, RUNNING, COMPLETED, FAILED or CANCELLED.")
    provider_state: str | None = Field(description="The provider's own word for the state.")
    queue_position: int | None
    polls: int
    submitted_at: datetime | None
    updated_at: datetime


class JobDocument(BaseModel):
    """Everything known about a job."""

    job_id: str
    status: JobStatus
    backend: str
    shots: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    deadline_at: datetime
    attempt: int
    cancel_requested: bool
    error: str | None = Field(description="Why the job failed, when it did.")
    last_error: str | None = Field(description="The last transient error, if the current step is retrying.")
    next_check_at: datetime | None = Field(description="When a worker looks at the job next.")
    events: list[JobEventOut]
    remote_task: RemoteTaskOut | None
    request: JobRequest = Field(
        description="The request as accepted, with the deployment's defaults filled in."
    )
    cost: Cost | None = Field(description="Estimated at submission; actual once the task ran.")
    result: JobResult | None = Field(description="Once completed: the answer and how it compares.")


class JobSummary(BaseModel):
    """A job in a list."""

    job_id: str
    status: JobStatus
    backend: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    objective: float | None


class JobPage(BaseModel):
    """One page of jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[JobSummary]
    next_cursor: str | None


class ErrorItem(BaseModel):
    """One broken rule."""

    field: str = Field(description="The request part at fault, e.g. covariance[2][1] or budget.")
    rule: str = Field(description="The rule it broke, e.g. positive_semidefinite.")
    message: str


class ErrorBody(BaseModel):
    """Every 4xx answer has this shape."""

    error: str = Field(description="Machine-readable kind: invalid_request, not_found, unauthorized...")
    message: str = Field(description="A sentence naming the field and the rule.")
    errors: list[ErrorItem] = Field(default_factory=list)

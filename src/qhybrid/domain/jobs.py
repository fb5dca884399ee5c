"""The API's answers about jobs, shared by the server that writes them and the client that reads them.

Everything here needs neither numpy nor any server code, so the light client installs with it.
The job document's ``request`` is typed by each side: the API documents it as
:class:`~qhybrid.domain.request.JobRequest`; the client keeps the JSON (validating a request needs
numpy, which a client does not install).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from qhybrid.domain.result import Cost, JobResult
from qhybrid.domain.states import TERMINAL_STATES, JobStatus


class _Answer(BaseModel):
    # Frozen: an answer is a record. Unknown fields (a newer API's) are ignored by the models and
    # kept by the client in the raw JSON; optional fields have defaults so a reader tolerates an
    # answer that leaves them out, while OpenAPI still lists every field as always sent.
    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_serialization_defaults_required=True)


class JobLinks(_Answer):
    """Where to follow the job."""

    self: str = Field(description="GET: the job document.")
    cancel: str = Field(description="POST: cancel the job.")


class JobAccepted(_Answer):
    """The answer to ``POST /optimize_portfolio``: where to find the job."""

    job_id: str
    status: JobStatus
    created_at: datetime
    estimated_cost: float | None = Field(default=None, description="USD, from the provider's price list.")
    links: JobLinks


class JobEvent(_Answer):
    """One transition of a job, as the worker recorded it."""

    id: int | None = Field(
        default=None,
        description="The event's number: increasing within a job; the stream's Last-Event-ID.",
    )
    at: datetime
    from_status: JobStatus | None = None
    status: JobStatus
    detail: str | None = None


class RemoteTaskInfo(_Answer):
    """The provider task of the job's current attempt."""

    attempt: int
    backend: str
    task_id: str | None = None
    state: str | None = Field(default=None, description="QUEUED, RUNNING, COMPLETED, FAILED or CANCELLED.")
    provider_state: str | None = Field(default=None, description="The provider's own word for the state.")
    queue_position: int | None = None
    polls: int = 0
    submitted_at: datetime | None = None
    updated_at: datetime | None = None


class JobDocumentBase(_Answer):
    """Everything known about a job but its request (each side types that itself)."""

    job_id: str
    status: JobStatus
    backend: str
    shots: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    deadline_at: datetime | None = None
    attempt: int = 0
    cancel_requested: bool = False
    error: str | None = Field(default=None, description="Why the job failed, when it did.")
    last_error: str | None = Field(
        default=None, description="The last transient error, if the current step is retrying."
    )
    next_check_at: datetime | None = Field(default=None, description="When a worker looks at the job next.")
    events: list[JobEvent] = Field(default_factory=list)
    remote_task: RemoteTaskInfo | None = None
    cost: Cost | None = Field(default=None, description="Estimated at submission; actual once the task ran.")
    result: JobResult | None = Field(
        default=None, description="Once completed: the answer and how it compares."
    )

    @property
    def finished(self) -> bool:
        """Whether the job reached a state it never leaves (completed, failed, cancelled)."""
        return self.status in TERMINAL_STATES

    @property
    def classical_fallback(self) -> bool:
        """Whether the job completed with the classical answer because the QPU could not answer."""
        return self.result is not None and self.result.source == "classical_fallback"

    @property
    def fallback_reason(self) -> str | None:
        """Why the QPU did not answer, for a classical fallback."""
        if self.result is None or self.result.fallback is None:
            return None
        return self.result.fallback.reason


class JobSummary(_Answer):
    """A job in a list."""

    job_id: str
    status: JobStatus
    backend: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    objective: float | None = None
    selected: list[str] | None = Field(default=None, description="Once completed: the assets held.")


class JobPage(_Answer):
    """One page of jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[JobSummary]
    next_cursor: str | None = None


class FrontierAsset(_Answer):
    """One asset of the universe, alone."""

    name: str
    expected_return: float = Field(description="μ of the asset (per period of the request's data).")
    volatility: float = Field(description="√Σᵢᵢ.")


class FrontierPoint(_Answer):
    """A long-only minimum-variance portfolio for one target return."""

    expected_return: float = Field(description="wᵀμ.")
    volatility: float = Field(description="√(wᵀΣw).")
    weights: dict[str, float] = Field(description="Share of each asset (≥ 0, summing to 1).")


class ChosenPoint(_Answer):
    """The job's answer, placed on the same axes."""

    expected_return: float
    volatility: float
    selected: list[str]
    weights: dict[str, float]


class Frontier(_Answer):
    """The efficient frontier of a job's universe, computed classically in the trusted zone.

    Long-only mean-variance portfolios (weights ≥ 0, summing to 1) of minimum variance for target
    returns from the minimum-variance portfolio's return to the best asset's; the same μ and Σ
    the job was judged on.
    """

    job_id: str
    assets: list[FrontierAsset]
    points: list[FrontierPoint] = Field(description="Ordered by expected return.")
    chosen: ChosenPoint | None = Field(default=None, description="The job's answer, once completed.")


class ErrorItem(_Answer):
    """One broken rule."""

    field: str = Field(description="The request part at fault, e.g. covariance[2][1] or budget.")
    rule: str = Field(description="The rule it broke, e.g. positive_semidefinite.")
    message: str


class ErrorBody(_Answer):
    """Every 4xx answer has this shape."""

    error: str = Field(description="Machine-readable kind: invalid_request, not_found, unauthorized...")
    message: str = Field(description="A sentence naming the field and the rule.")
    errors: list[ErrorItem] = Field(default_factory=list)

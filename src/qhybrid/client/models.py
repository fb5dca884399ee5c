"""The API's answers as the client reads them: the job document, its events, a page of jobs.

The result, the cost and the states are the domain's own models (:mod:`qhybrid.domain.result`,
:mod:`qhybrid.domain.states`), so a client reads exactly what the worker wrote. The request is
kept as the JSON the API echoed: validating it needs numpy (covariance checks), which a client
does not install. Unknown fields are kept (``extra="allow"``), so a newer API's additions reach
``model_dump()`` and ``raw`` instead of being dropped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from qhybrid.domain.result import Cost, JobResult
from qhybrid.domain.states import TERMINAL_STATES, JobState, JobStatus


class _ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class JobEvent(_ApiModel):
    """One transition of a job, as the worker recorded it."""

    at: datetime
    from_status: JobStatus | None = None
    status: JobStatus
    detail: str | None = None


class RemoteTask(_ApiModel):
    """The provider task of the job's current attempt."""

    attempt: int
    backend: str
    task_id: str | None = None
    state: str | None = Field(default=None, description="QUEUED, RUNNING, COMPLETED, FAILED or CANCELLED.")
    provider_state: str | None = None
    queue_position: int | None = None
    polls: int = 0
    submitted_at: datetime | None = None
    updated_at: datetime | None = None


class JobDocument(_ApiModel):
    """Everything the API knows about a job (``GET /jobs/{id}``).

    ``raw`` is the JSON exactly as the API sent it, for printing or storing unchanged.
    """

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
    last_error: str | None = Field(default=None, description="The transient error being retried, if any.")
    next_check_at: datetime | None = None
    events: list[JobEvent] = Field(default_factory=list)
    remote_task: RemoteTask | None = None
    request: dict[str, Any] | None = Field(default=None, description="The request as accepted (JSON).")
    cost: Cost | None = None
    result: JobResult | None = None

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobDocument:
        """Parse an API answer, keeping the JSON as received in :attr:`raw`."""
        document = cls.model_validate(data)
        document._raw = data
        return document

    @property
    def raw(self) -> dict[str, Any]:
        """The document exactly as the API sent it (``model_dump`` if it was built otherwise)."""
        return self._raw or self.model_dump(mode="json")

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


class JobAccepted(_ApiModel):
    """The answer to ``POST /optimize_portfolio``."""

    job_id: str
    status: JobStatus
    created_at: datetime
    estimated_cost: float | None = Field(default=None, description="USD, from the provider's price list.")
    links: dict[str, str] = Field(default_factory=dict)


class JobSummary(_ApiModel):
    """A job in a list."""

    job_id: str
    status: JobStatus
    backend: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    objective: float | None = None


class JobPage(_ApiModel):
    """One page of jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[JobSummary]
    next_cursor: str | None = None


class JobUpdate(_ApiModel):
    """What changed since the previous look at a job, while following it.

    Attributes:
        job: The document as of this update.
        events: Transitions recorded since the previous update, oldest first (every one, once).
        retrying: The transient error the worker started retrying since the previous update.
    """

    job: JobDocument
    events: tuple[JobEvent, ...] = ()
    retrying: str | None = None

    @property
    def state(self) -> JobState:
        """The job's state as of this update."""
        return self.job.status

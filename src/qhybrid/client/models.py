"""The API's answers as the client reads them: the job document, its events, a page of jobs.

Every shape is the domain's own (:mod:`qhybrid.domain.jobs`, :mod:`qhybrid.domain.result`), the
very models the API writes, so a client reads exactly what the server sent. The request is kept as
the JSON the API echoed: validating it needs numpy (covariance checks), which a client does not
install. ``raw`` keeps the JSON as received, a newer API's additional fields included.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from qhybrid.domain.jobs import (
    JobAccepted,
    JobDocumentBase,
    JobEvent,
    JobLinks,
    JobPage,
    JobSummary,
    RemoteTaskInfo,
)
from qhybrid.domain.states import JobState

__all__ = [
    "JobAccepted",
    "JobDocument",
    "JobEvent",
    "JobLinks",
    "JobPage",
    "JobSummary",
    "JobUpdate",
    "RemoteTaskInfo",
]


class JobDocument(JobDocumentBase):
    """Everything the API knows about a job (``GET /jobs/{id}``).

    ``raw`` is the JSON exactly as the API sent it, for printing or storing unchanged; a newer
    API's additional fields are kept (in ``model_dump()`` too).
    """

    model_config = ConfigDict(extra="allow")

    request: dict[str, Any] | None = Field(default=None, description="The request as accepted (JSON).")

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


class JobUpdate(BaseModel):
    """What changed since the previous look at a job, while following it.

    Attributes:
        job: The document as of this update.
        events: Transitions recorded since the previous update, oldest first (every one, once).
        retrying: The transient error the worker started retrying since the previous update.
    """

    model_config = ConfigDict(frozen=True)

    job: JobDocument
    events: tuple[JobEvent, ...] = ()
    retrying: str | None = None

    @property
    def state(self) -> JobState:
        """The job's state as of this update."""
        return self.job.status

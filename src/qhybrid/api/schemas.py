"""What the HTTP API answers: the shared shapes of :mod:`qhybrid.domain.jobs`, with the typed request.

The request body is :class:`qhybrid.domain.request.JobRequest`. Every 4xx has the shape
:class:`ErrorBody`; the job document carries the typed request, cost and result of the domain
contract, so ``/openapi.json`` documents every field a client reads.
"""

from __future__ import annotations

from pydantic import Field

from qhybrid.domain.jobs import (
    ChosenPoint,
    ErrorBody,
    ErrorItem,
    Frontier,
    FrontierAsset,
    FrontierPoint,
    JobAccepted,
    JobDocumentBase,
    JobEvent,
    JobLinks,
    JobPage,
    JobSummary,
    RemoteTaskInfo,
)
from qhybrid.domain.request import JobRequest

__all__ = [
    "ChosenPoint",
    "ErrorBody",
    "ErrorItem",
    "Frontier",
    "FrontierAsset",
    "FrontierPoint",
    "JobAccepted",
    "JobDocument",
    "JobEvent",
    "JobLinks",
    "JobPage",
    "JobSummary",
    "RemoteTaskInfo",
]


class JobDocument(JobDocumentBase):
    """Everything known about a job."""

    request: JobRequest | None = Field(
        default=None,
        description="The request as accepted, with the deployment's defaults filled in; only with "
        "``?include=request`` (a price history makes it most of the document).",
    )

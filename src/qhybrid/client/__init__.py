"""A Python client of the qhybrid API: submit a portfolio, get a job, ask it for its typed result.

It needs ``httpx``, ``pydantic`` and the domain contract's result and state models, nothing of
the server (``pip install ./clients/python`` installs exactly that; see the README).

Example:
    >>> from qhybrid.client import Client
    >>> with Client("http://127.0.0.1:8000") as client:  # doctest: +SKIP
    ...     job = client.submit(request)
    ...     print(job.id, job.estimated_cost, job.status())
    ...     result = job.result(timeout=600, require_quantum=True)
    ...     print(result.selected, result.objective, result.source)

:class:`AsyncClient` is the same for asyncio code (``await client.submit(...)``,
``await job.result(...)``).
"""

from qhybrid.client._protocol import DEFAULT_URL, result_of
from qhybrid.client.aio import AsyncClient, AsyncJob
from qhybrid.client.errors import (
    ApiRequestError,
    ApiUnreachableError,
    ClassicalFallbackError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobTimeoutError,
    QhybridClientError,
)
from qhybrid.client.models import (
    JobAccepted,
    JobDocument,
    JobEvent,
    JobPage,
    JobSummary,
    JobUpdate,
    RemoteTaskInfo,
)
from qhybrid.client.sync import Client, Job
from qhybrid.domain.result import JobResult
from qhybrid.domain.states import JobState

__all__ = [
    "DEFAULT_URL",
    "ApiRequestError",
    "ApiUnreachableError",
    "AsyncClient",
    "AsyncJob",
    "ClassicalFallbackError",
    "Client",
    "Job",
    "JobAccepted",
    "JobCancelledError",
    "JobDocument",
    "JobError",
    "JobEvent",
    "JobFailedError",
    "JobPage",
    "JobResult",
    "JobState",
    "JobSummary",
    "JobTimeoutError",
    "JobUpdate",
    "QhybridClientError",
    "RemoteTaskInfo",
    "result_of",
]

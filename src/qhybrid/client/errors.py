"""What can go wrong for a client: the API refused, could not be reached, or the job did not succeed.

Every exception derives from :class:`QhybridClientError`. The job errors carry the job document,
so a caller can read the events, the error or the fallback reason without another request.
"""

from __future__ import annotations

from typing import Any

from qhybrid.client.models import JobDocument


class QhybridClientError(Exception):
    """Base of every error the client raises."""


class ApiRequestError(QhybridClientError):
    """The API answered with an error status.

    Attributes:
        status_code: HTTP status.
        body: The decoded error body (``error``, ``message``, ``errors``) or the raw text.
        error: The machine-readable kind (``invalid_request``, ``not_found``...), if the body has one.
        message: The API's sentence naming the field and the rule, or the raw text.
        errors: The broken rules (``field``, ``rule``, ``message``), if any.
    """

    def __init__(self, status_code: int, body: Any) -> None:
        self.status_code = status_code
        self.body = body
        fields = body if isinstance(body, dict) else {}
        self.error: str | None = fields.get("error")
        self.message: str = str(fields.get("message") or body or "no body").strip()
        self.errors: list[dict[str, Any]] = list(fields.get("errors") or [])
        kind = f" {self.error}" if self.error else ""
        super().__init__(f"HTTP {status_code}{kind}: {self.message}")


class ApiUnreachableError(QhybridClientError):
    """No answer from the API: connection refused, name not found, TLS failure, request timeout.

    Attributes:
        url: The API base URL.
        reason: What the transport said.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the API at {url}: {reason}")


class JobTimeoutError(QhybridClientError, TimeoutError):
    """The job did not end within the time given.

    Attributes:
        job: The job document as last seen.
        timeout: The seconds that were given.
    """

    def __init__(self, job: JobDocument, timeout: float) -> None:
        self.job = job
        self.timeout = timeout
        super().__init__(f"job {job.job_id} still {job.status.api_name} after {timeout:g}s")


class JobError(QhybridClientError):
    """The job ended without the answer asked for.

    Attributes:
        job: The final job document.
    """

    def __init__(self, job: JobDocument, message: str) -> None:
        self.job = job
        super().__init__(message)


class JobFailedError(JobError):
    """The job failed; ``job.error`` says why."""

    def __init__(self, job: JobDocument) -> None:
        super().__init__(job, f"job {job.job_id} failed: {job.error or 'no reason recorded'}")


class JobCancelledError(JobError):
    """The job was cancelled."""

    def __init__(self, job: JobDocument) -> None:
        super().__init__(job, f"job {job.job_id} was cancelled")


class ClassicalFallbackError(JobError):
    """The job completed with the classical answer because the QPU could not answer.

    Raised only when a quantum answer was required (``require_quantum=True``); the classical
    result is still there, in ``job.result``.
    """

    def __init__(self, job: JobDocument) -> None:
        reason = job.fallback_reason or "no reason recorded"
        super().__init__(
            job, f"job {job.job_id} completed with a classical fallback: the QPU did not answer ({reason})"
        )

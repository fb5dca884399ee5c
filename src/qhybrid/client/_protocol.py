"""What the synchronous and the asynchronous clients share: everything but the I/O.

Both clients send the same requests, decode answers the same way, turn successive job documents
into :class:`~qhybrid.client.models.JobUpdate` s the same way and decide a job's outcome the same
way; only ``httpx.Client`` versus ``httpx.AsyncClient`` and ``time.sleep`` versus
``asyncio.sleep`` differ.

Following a job is two parts: a source of documents (today: polling ``GET /jobs/{id}`` with a
backoff) and :class:`Tracker`, which reads the events out of each document. A server-sent event
stream would replace the first part and keep the second.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel

from qhybrid.client.errors import (
    ApiRequestError,
    ApiUnreachableError,
    ClassicalFallbackError,
    JobCancelledError,
    JobFailedError,
)
from qhybrid.client.models import JobDocument, JobUpdate
from qhybrid.domain.result import JobResult
from qhybrid.domain.states import JobState

#: Where the API listens when neither the caller nor ``QHYBRID_API_URL`` says.
DEFAULT_URL = "http://127.0.0.1:8000"
#: Environment variables read when ``url`` / ``api_key`` are not given.
URL_VARIABLE = "QHYBRID_API_URL"
KEY_VARIABLE = "QHYBRID_API_KEY"

#: Polling: the first pause, and the longest; the pause doubles while nothing changes.
INITIAL_INTERVAL = 0.2
MAX_INTERVAL = 2.0


def resolve_url(url: str | None) -> str:
    """The API base URL: ``url``, else ``QHYBRID_API_URL``, else :data:`DEFAULT_URL`."""
    return (url or os.environ.get(URL_VARIABLE) or DEFAULT_URL).rstrip("/")


def http_options(url: str | None, api_key: str | None, timeout: float) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client`` / ``httpx.AsyncClient``."""
    key = api_key if api_key is not None else os.environ.get(KEY_VARIABLE)
    return {
        "base_url": resolve_url(url),
        "headers": {"Authorization": f"Bearer {key}"} if key else {},
        "timeout": timeout,
        # The API is usually on loopback or inside the trusted zone: a proxy from the environment
        # would be a surprise, not a help.
        "trust_env": False,
    }


def request_body(request: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    """The JSON body of a submission: a mapping as it is, a pydantic model (``JobRequest``) dumped."""
    if isinstance(request, BaseModel):
        return request.model_dump(mode="json", exclude_unset=True)
    return dict(request)


def submit_headers(idempotency_key: str | None) -> dict[str, str]:
    """Headers of a submission."""
    return {"Idempotency-Key": idempotency_key} if idempotency_key else {}


def document_params(include_request: bool) -> dict[str, str]:
    """Query parameters of ``GET /jobs/{id}``: the request (a price history) is left out unless asked for."""
    return {"include": "request"} if include_request else {}


def list_params(limit: int, cursor: str | None, status: str | None) -> dict[str, str | int]:
    """Query parameters of ``GET /jobs``."""
    params: dict[str, str | int] = {"limit": limit}
    if cursor:
        params["cursor"] = cursor
    if status:
        params["status"] = status
    return params


def decode(response: httpx.Response) -> Any:
    """The answer's JSON.

    Raises:
        ApiRequestError: For a 4xx or 5xx, with the API's error body.
    """
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.status_code >= 400:
        raise ApiRequestError(response.status_code, body)
    return body


def unreachable(url: str, exc: httpx.TransportError) -> ApiUnreachableError:
    """A transport error as one sentence (``Connection refused``, ``timed out``...)."""
    reason = str(exc).strip() or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        reason = f"no answer in time ({type(exc).__name__})"
    return ApiUnreachableError(url, reason)


@dataclass(frozen=True)
class Pacing:
    """How often to poll: back to ``initial`` after a change, doubled up to ``maximum`` while none.

    A job that moves is followed closely; a job that waits in a provider's queue, cheaply.
    """

    initial: float = INITIAL_INTERVAL
    maximum: float = MAX_INTERVAL

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"poll intervals must satisfy 0 < initial <= maximum, got {self}")

    def next(
        self, interval: float, seen: tuple[Any, ...] | None, job: JobDocument
    ) -> tuple[float, tuple[Any, ...]]:
        """The pause before the next poll, and what to compare the next document with."""
        now = (len(job.events), job.last_error)
        if now != seen:
            return self.initial, now
        return min(interval * 2, self.maximum), now


class Tracker:
    """Turns successive documents of one job into updates: every event once, in order.

    The events of a job only grow, so the count already reported is all there is to remember; a
    document with nothing new (no event, same provider state and queue position, no new retry)
    yields no update.
    """

    def __init__(self) -> None:
        self._reported = 0
        self._signature: tuple[Any, ...] | None = None
        self._last_error: str | None = None

    def update(self, job: JobDocument) -> JobUpdate | None:
        """The update ``job`` brings, or ``None`` if it says nothing new."""
        task = job.remote_task
        signature = (
            len(job.events),
            task.state if task else None,
            task.queue_position if task else None,
            job.last_error,
            job.status,
        )
        if signature == self._signature:
            return None
        self._signature = signature
        new_events = tuple(job.events[self._reported :])
        self._reported = len(job.events)
        retrying = job.last_error if job.last_error and job.last_error != self._last_error else None
        self._last_error = job.last_error
        return JobUpdate(job=job, events=new_events, retrying=retrying)


#: Pause before reconnecting a dropped event stream (the server's ``retry`` field says the same).
STREAM_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class ServerEvent:
    """One message of a ``text/event-stream``."""

    event: str
    data: str
    id: str | None


class EventParser:
    """Reads a server-sent event stream line by line (the WHATWG rules this API needs).

    Comment lines (heartbeats) and ``retry`` are skipped; a message ends at a blank line.
    """

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> ServerEvent | None:
        """The message ``line`` completes, if it does."""
        if not line:
            message = None
            if self._data:
                message = ServerEvent(self._event, "\n".join(self._data), self._id)
            self._event, self._data, self._id = "message", [], None
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


def stream_headers(last_event_id: str | None) -> dict[str, str]:
    """Headers of ``GET /jobs/{id}/events``, resuming after ``last_event_id`` when given."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return headers


def result_of(job: JobDocument, *, require_quantum: bool = False) -> JobResult:
    """The result of a finished job, or the exception that says why there is none.

    Raises:
        JobFailedError: The job failed.
        JobCancelledError: The job was cancelled.
        ClassicalFallbackError: ``require_quantum`` and the QPU did not answer.
    """
    if job.status is JobState.FAILED:
        raise JobFailedError(job)
    if job.status is JobState.CANCELLED:
        raise JobCancelledError(job)
    if job.result is None:
        raise JobFailedError(job.model_copy(update={"error": "completed without a result"}))
    if require_quantum and job.classical_fallback:
        raise ClassicalFallbackError(job)
    return job.result

"""The synchronous client: :class:`Client` and the :class:`Job` it returns."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx
from pydantic import BaseModel

from qhybrid.client import _protocol as protocol
from qhybrid.client.errors import JobTimeoutError
from qhybrid.client.models import JobAccepted, JobDocument, JobEvent, JobPage, JobUpdate
from qhybrid.domain.result import JobResult
from qhybrid.domain.states import JobState


class Client:
    """Talks to one qhybrid API.

    Args:
        url: Where the API listens; default ``QHYBRID_API_URL``, else ``http://127.0.0.1:8000``.
        api_key: Sent as ``Authorization: Bearer``; default ``QHYBRID_API_KEY``, else none.
        timeout: Seconds per HTTP request.
        poll_initial: While following a job, the pause after a change (seconds).
        poll_max: The longest pause while nothing changes (it doubles up to this).
        transport: An ``httpx`` transport to use instead of the network (tests, proxies).

    Example:
        >>> with Client("http://127.0.0.1:8000") as client:  # doctest: +SKIP
        ...     job = client.submit(request)
        ...     result = job.result(timeout=600)
        ...     print(result.selected, result.source)
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        poll_initial: float = protocol.INITIAL_INTERVAL,
        poll_max: float = protocol.MAX_INTERVAL,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._pacing = protocol.Pacing(poll_initial, poll_max)
        options = protocol.http_options(url, api_key, timeout)
        self.url: str = options["base_url"]
        self._http = httpx.Client(transport=transport, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc
        return protocol.decode(response)

    # ------------------------------------------------------------------ the API's routes

    def submit(self, request: Mapping[str, Any] | BaseModel, *, idempotency_key: str | None = None) -> Job:
        """Submit a portfolio optimization request.

        Args:
            request: The request as JSON-like data, or a ``JobRequest``.
            idempotency_key: Makes a retried submission return the same job.

        Returns:
            The accepted job (``id``, ``estimated_cost``).

        Raises:
            ApiRequestError: The API refused the request (the error names the field and the rule).
            ApiUnreachableError: No answer from the API.
        """
        body = self._call(
            "POST",
            "/optimize_portfolio",
            json=protocol.request_body(request),
            headers=protocol.submit_headers(idempotency_key),
        )
        return Job(self, JobAccepted.model_validate(body))

    def job(self, job_id: str) -> Job:
        """A handle on an existing job (no request is made)."""
        return Job(self, job_id)

    def get(self, job_id: str, *, include_request: bool = False) -> JobDocument:
        """The job document (``GET /jobs/{id}``); the request as accepted only if ``include_request``."""
        params = protocol.document_params(include_request)
        return JobDocument.from_json(self._call("GET", f"/jobs/{job_id}", params=params))

    def cancel(self, job_id: str) -> JobDocument:
        """Ask for the job to be cancelled; the document as of the request.

        Raises:
            ApiRequestError: 409 if the job already ended, 404 if there is no such job.
        """
        return JobDocument.from_json(self._call("POST", f"/jobs/{job_id}/cancel"))

    def list(self, *, limit: int = 20, cursor: str | None = None, status: str | None = None) -> JobPage:
        """One page of jobs, newest first (``items``, ``next_cursor``)."""
        body = self._call("GET", "/jobs", params=protocol.list_params(limit, cursor, status))
        return JobPage.model_validate(body)

    # ------------------------------------------------------------------ following a job

    def _documents(self, job_id: str, timeout: float | None) -> Iterator[JobDocument]:
        """The job's document again and again until it ends: polling, paced by what changes.

        A server-sent event stream would replace this generator and nothing else.

        Raises:
            JobTimeoutError: The job had not ended after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval, seen = self._pacing.initial, None
        while True:
            job = self.get(job_id)
            yield job
            if job.finished:
                return
            interval, seen = self._pacing.next(interval, seen, job)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise JobTimeoutError(job, timeout or 0.0)
                interval = min(interval, remaining)
            time.sleep(interval)

    def updates(self, job_id: str, *, timeout: float | None = 600.0) -> Iterator[JobUpdate]:
        """Follow a job: one update per change, every transition in order, until the job ends.

        The first update carries every event so far; the last one carries the final document.

        Raises:
            JobTimeoutError: The job had not ended after ``timeout`` seconds.
        """
        tracker = protocol.Tracker()
        for job in self._documents(job_id, timeout):
            update = tracker.update(job)
            if update is not None:
                yield update

    def stream(self, job_id: str, *, timeout: float | None = 600.0) -> Iterator[JobEvent]:
        """Every transition of the job as the server records it, until the job ends.

        Reads ``GET /jobs/{id}/events`` (server-sent events): no polling, and every transition,
        however short the state. A dropped connection is resumed after the last event received
        (``Last-Event-ID``), so nothing is missed or repeated.

        Raises:
            JobTimeoutError: The job had not ended after ``timeout`` seconds.
            ApiRequestError: The API refused (404: no such job).
            ApiUnreachableError: No answer from the API.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_id: str | None = None
        while True:
            try:
                with self._http.stream(
                    "GET", f"/jobs/{job_id}/events", headers=protocol.stream_headers(last_id)
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        protocol.decode(response)
                    parser = protocol.EventParser()
                    for line in response.iter_lines():
                        message = parser.feed(line)
                        if message is not None:
                            last_id = message.id or last_id
                            if message.event == "end":
                                return
                            if message.event == "transition":
                                yield JobEvent.model_validate_json(message.data)
                        if deadline is not None and time.monotonic() > deadline:
                            raise JobTimeoutError(self.get(job_id), timeout or 0.0)
            except (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                # The stream dropped (a proxy, a restart): resume after the last event.
                if deadline is not None and time.monotonic() > deadline:
                    raise JobTimeoutError(self.get(job_id), timeout or 0.0) from exc
            except httpx.TransportError as exc:
                raise protocol.unreachable(self.url, exc) from exc
            time.sleep(protocol.STREAM_RETRY_SECONDS)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = 600.0,
        on_update: Callable[[JobUpdate], None] | None = None,
    ) -> JobDocument:
        """Follow the job until it completes, fails or is cancelled; the final document.

        Args:
            job_id: The job.
            timeout: Seconds before giving up (``None``: no limit).
            on_update: Called with every update (new events, provider state, retries).

        Raises:
            JobTimeoutError: The job had not ended in time.
        """
        last: JobDocument | None = None
        for update in self.updates(job_id, timeout=timeout):
            if on_update is not None:
                on_update(update)
            last = update.job
        assert last is not None  # updates() yields at least the first document
        return last

    def result(
        self, job_id: str, *, timeout: float | None = 600.0, require_quantum: bool = False
    ) -> JobResult:
        """Wait for the job and return its typed result.

        Raises:
            JobFailedError: The job failed (the exception carries the document).
            JobCancelledError: The job was cancelled.
            ClassicalFallbackError: ``require_quantum`` and the QPU did not answer.
            JobTimeoutError: The job had not ended in time.
        """
        return protocol.result_of(self.wait(job_id, timeout=timeout), require_quantum=require_quantum)


class Job:
    """One job on the API, as Braket's task and IBM's job objects are: ask it how it is doing.

    Attributes:
        id: The job id.
        estimated_cost: USD from the provider's price list, when the API gave one at submission.
        created_at: When the API accepted it (known for jobs returned by ``submit``).
        accepted: The API's answer to the submission (``None`` for a handle made from an id).
    """

    def __init__(self, client: Client, accepted: JobAccepted | str) -> None:
        self._client = client
        self.accepted: JobAccepted | None = accepted if isinstance(accepted, JobAccepted) else None
        if isinstance(accepted, JobAccepted):
            self.id: str = accepted.job_id
            self.estimated_cost: float | None = accepted.estimated_cost
            self.created_at: datetime | None = accepted.created_at
        else:
            self.id, self.estimated_cost, self.created_at = accepted, None, None

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def document(self, *, include_request: bool = False) -> JobDocument:
        """The job document, fetched now (with the request as accepted if ``include_request``)."""
        return self._client.get(self.id, include_request=include_request)

    def status(self) -> JobState:
        """The job's state now (``JobState.REMOTE_QUEUED``...; ``.api_name`` is the API's word)."""
        return self.document().status

    def events(self) -> list[JobEvent]:
        """Every transition so far, oldest first."""
        return self.document().events

    def cancel(self) -> JobDocument:
        """Ask for the job (and its provider task) to be cancelled."""
        return self._client.cancel(self.id)

    def updates(self, *, timeout: float | None = 600.0) -> Iterator[JobUpdate]:
        """Follow the job: every transition once, in order, until it ends."""
        return self._client.updates(self.id, timeout=timeout)

    def stream(self, *, timeout: float | None = 600.0) -> Iterator[JobEvent]:
        """Every transition as the server records it (server-sent events), until the job ends."""
        return self._client.stream(self.id, timeout=timeout)

    def wait(
        self, *, timeout: float | None = 600.0, on_update: Callable[[JobUpdate], None] | None = None
    ) -> JobDocument:
        """Follow the job until it ends; the final document."""
        return self._client.wait(self.id, timeout=timeout, on_update=on_update)

    def result(self, timeout: float | None = 600.0, *, require_quantum: bool = False) -> JobResult:
        """Wait for the job and return its typed result (``.selected``, ``.objective``, ``.source``...).

        Args:
            timeout: Seconds to wait (``None``: no limit).
            require_quantum: Raise :class:`~qhybrid.client.errors.ClassicalFallbackError` when the
                QPU did not answer and the job completed with the classical answer.

        Raises:
            JobFailedError: The job failed (the exception carries the document).
            JobCancelledError: The job was cancelled.
            ClassicalFallbackError: ``require_quantum`` and the QPU did not answer.
            JobTimeoutError: The job had not ended in time.
        """
        return self._client.result(self.id, timeout=timeout, require_quantum=require_quantum)

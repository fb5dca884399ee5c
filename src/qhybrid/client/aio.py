"""The asynchronous client: :class:`AsyncClient` and :class:`AsyncJob`, twins of the synchronous ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
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


class AsyncClient:
    """Talks to one qhybrid API from asyncio code (``httpx.AsyncClient``).

    Args:
        url: Where the API listens; default ``QHYBRID_API_URL``, else ``http://127.0.0.1:8000``.
        api_key: Sent as ``Authorization: Bearer``; default ``QHYBRID_API_KEY``, else none.
        timeout: Seconds per HTTP request.
        poll_initial: While following a job, the pause after a change (seconds).
        poll_max: The longest pause while nothing changes (it doubles up to this).
        transport: An ``httpx`` async transport to use instead of the network.

    Example:
        >>> async with AsyncClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
        ...     job = await client.submit(request)
        ...     result = await job.result(timeout=600)
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        poll_initial: float = protocol.INITIAL_INTERVAL,
        poll_max: float = protocol.MAX_INTERVAL,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._pacing = protocol.Pacing(poll_initial, poll_max)
        options = protocol.http_options(url, api_key, timeout)
        self.url: str = options["base_url"]
        self._http = httpx.AsyncClient(transport=transport, **options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc
        return protocol.decode(response)

    async def submit(
        self, request: Mapping[str, Any] | BaseModel, *, idempotency_key: str | None = None
    ) -> AsyncJob:
        """Submit a portfolio optimization request; the accepted job.

        Raises:
            ApiRequestError: The API refused the request (the error names the field and the rule).
            ApiUnreachableError: No answer from the API.
        """
        body = await self._call(
            "POST",
            "/optimize_portfolio",
            json=protocol.request_body(request),
            headers=protocol.submit_headers(idempotency_key),
        )
        return AsyncJob(self, JobAccepted.model_validate(body))

    def job(self, job_id: str) -> AsyncJob:
        """A handle on an existing job (no request is made)."""
        return AsyncJob(self, job_id)

    async def get(self, job_id: str, *, include_request: bool = False) -> JobDocument:
        """The job document (``GET /jobs/{id}``); the request as accepted only if ``include_request``."""
        params = protocol.document_params(include_request)
        return JobDocument.from_json(await self._call("GET", f"/jobs/{job_id}", params=params))

    async def cancel(self, job_id: str) -> JobDocument:
        """Ask for the job to be cancelled; the document as of the request."""
        return JobDocument.from_json(await self._call("POST", f"/jobs/{job_id}/cancel"))

    async def list(self, *, limit: int = 20, cursor: str | None = None, status: str | None = None) -> JobPage:
        """One page of jobs, newest first."""
        body = await self._call("GET", "/jobs", params=protocol.list_params(limit, cursor, status))
        return JobPage.model_validate(body)

    async def _documents(self, job_id: str, timeout: float | None) -> AsyncIterator[JobDocument]:
        """The job's document again and again until it ends (polling; an SSE stream would go here)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval, seen = self._pacing.initial, None
        while True:
            job = await self.get(job_id)
            yield job
            if job.finished:
                return
            interval, seen = self._pacing.next(interval, seen, job)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise JobTimeoutError(job, timeout or 0.0)
                interval = min(interval, remaining)
            await asyncio.sleep(interval)

    async def updates(self, job_id: str, *, timeout: float | None = 600.0) -> AsyncIterator[JobUpdate]:
        """Follow a job: one update per change, every transition in order, until the job ends.

        Raises:
            JobTimeoutError: The job had not ended after ``timeout`` seconds.
        """
        tracker = protocol.Tracker()
        async for job in self._documents(job_id, timeout):
            update = tracker.update(job)
            if update is not None:
                yield update

    async def stream(self, job_id: str, *, timeout: float | None = 600.0) -> AsyncIterator[JobEvent]:
        """Every transition of the job as the server records it (server-sent events), until it ends.

        A dropped connection is resumed after the last event received (``Last-Event-ID``).

        Raises:
            JobTimeoutError: The job had not ended after ``timeout`` seconds.
            ApiRequestError: The API refused (404: no such job).
            ApiUnreachableError: No answer from the API.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_id: str | None = None
        while True:
            try:
                async with self._http.stream(
                    "GET", f"/jobs/{job_id}/events", headers=protocol.stream_headers(last_id)
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        protocol.decode(response)
                    parser = protocol.EventParser()
                    async for line in response.aiter_lines():
                        message = parser.feed(line)
                        if message is not None:
                            last_id = message.id or last_id
                            if message.event == "end":
                                return
                            if message.event == "transition":
                                yield JobEvent.model_validate_json(message.data)
                        if deadline is not None and time.monotonic() > deadline:
                            raise JobTimeoutError(await self.get(job_id), timeout or 0.0)
            except (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                # The stream dropped (a proxy, a restart): resume after the last event.
                if deadline is not None and time.monotonic() > deadline:
                    raise JobTimeoutError(await self.get(job_id), timeout or 0.0) from exc
            except httpx.TransportError as exc:
                raise protocol.unreachable(self.url, exc) from exc
            await asyncio.sleep(protocol.STREAM_RETRY_SECONDS)

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = 600.0,
        on_update: Callable[[JobUpdate], None] | None = None,
    ) -> JobDocument:
        """Follow the job until it ends; the final document.

        Raises:
            JobTimeoutError: The job had not ended in time.
        """
        last: JobDocument | None = None
        async for update in self.updates(job_id, timeout=timeout):
            if on_update is not None:
                on_update(update)
            last = update.job
        assert last is not None  # updates() yields at least the first document
        return last

    async def result(
        self, job_id: str, *, timeout: float | None = 600.0, require_quantum: bool = False
    ) -> JobResult:
        """Wait for the job and return its typed result.

        Raises:
            JobFailedError: The job failed (the exception carries the document).
            JobCancelledError: The job was cancelled.
            ClassicalFallbackError: ``require_quantum`` and the QPU did not answer.
            JobTimeoutError: The job had not ended in time.
        """
        job = await self.wait(job_id, timeout=timeout)
        return protocol.result_of(job, require_quantum=require_quantum)


class AsyncJob:
    """One job on the API, for asyncio code: the twin of :class:`~qhybrid.client.sync.Job`.

    Attributes:
        id: The job id.
        estimated_cost: USD from the provider's price list, when the API gave one at submission.
        created_at: When the API accepted it (known for jobs returned by ``submit``).
        accepted: The API's answer to the submission (``None`` for a handle made from an id).
    """

    def __init__(self, client: AsyncClient, accepted: JobAccepted | str) -> None:
        self._client = client
        self.accepted: JobAccepted | None = accepted if isinstance(accepted, JobAccepted) else None
        if isinstance(accepted, JobAccepted):
            self.id: str = accepted.job_id
            self.estimated_cost: float | None = accepted.estimated_cost
            self.created_at: datetime | None = accepted.created_at
        else:
            self.id, self.estimated_cost, self.created_at = accepted, None, None

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"

    async def document(self, *, include_request: bool = False) -> JobDocument:
        """The job document, fetched now (with the request as accepted if ``include_request``)."""
        return await self._client.get(self.id, include_request=include_request)

    async def status(self) -> JobState:
        """The job's state now."""
        return (await self.document()).status

    async def events(self) -> list[JobEvent]:
        """Every transition so far, oldest first."""
        return (await self.document()).events

    async def cancel(self) -> JobDocument:
        """Ask for the job (and its provider task) to be cancelled."""
        return await self._client.cancel(self.id)

    def updates(self, *, timeout: float | None = 600.0) -> AsyncIterator[JobUpdate]:
        """Follow the job: every transition once, in order, until it ends."""
        return self._client.updates(self.id, timeout=timeout)

    def stream(self, *, timeout: float | None = 600.0) -> AsyncIterator[JobEvent]:
        """Every transition as the server records it (server-sent events), until the job ends."""
        return self._client.stream(self.id, timeout=timeout)

    async def wait(
        self, *, timeout: float | None = 600.0, on_update: Callable[[JobUpdate], None] | None = None
    ) -> JobDocument:
        """Follow the job until it ends; the final document."""
        return await self._client.wait(self.id, timeout=timeout, on_update=on_update)

    async def result(self, timeout: float | None = 600.0, *, require_quantum: bool = False) -> JobResult:
        """Wait for the job and return its typed result.

        Raises:
            JobFailedError: The job failed (the exception carries the document).
            JobCancelledError: The job was cancelled.
            ClassicalFallbackError: ``require_quantum`` and the QPU did not answer.
            JobTimeoutError: The job had not ended in time.
        """
        return await self._client.result(self.id, timeout=timeout, require_quantum=require_quantum)

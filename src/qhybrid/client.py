"""A small Python client for the qhybrid API: ``submit()`` a portfolio, ``wait()`` for its job.

Example:
    >>> from qhybrid.client import Client
    >>> with Client("http://127.0.0.1:8000") as client:  # doctest: +SKIP
    ...     job_id = client.submit(request)
    ...     job = client.wait(job_id, timeout=600)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import httpx

#: Statuses after which a job never changes.
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


class ApiRequestError(Exception):
    """The API answered with an error.

    Attributes:
        status_code: HTTP status.
        body: The decoded error body (``error``, ``message``, ``errors``) or the raw text.
    """

    def __init__(self, status_code: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.body = body


class JobTimeoutError(TimeoutError):
    """The job did not finish within the time given to :meth:`Client.wait`.

    Attributes:
        job: The job document as last seen.
    """

    def __init__(self, job: dict[str, Any], timeout: float) -> None:
        super().__init__(f"job {job.get('job_id')} still {job.get('status')} after {timeout:.0f}s")
        self.job = job


class Client:
    """Talks to one qhybrid API.

    Args:
        base_url: Where the API listens, e.g. ``http://127.0.0.1:8000``.
        api_key: Sent as ``Authorization: Bearer`` when the API requires keys.
        timeout: Seconds per HTTP request.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, trust_env=False
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _json(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiRequestError(response.status_code, body)
        return body

    def submit(self, request: Mapping[str, Any], *, idempotency_key: str | None = None) -> str:
        """Submit a portfolio optimization request.

        Returns:
            The job id.

        Raises:
            ApiRequestError: If the API refuses the request (the body says which field and rule).
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = self._json(self._http.post("/optimize_portfolio", json=dict(request), headers=headers))
        return str(body["job_id"])

    def get(self, job_id: str) -> dict[str, Any]:
        """The job document."""
        body: dict[str, Any] = self._json(self._http.get(f"/jobs/{job_id}"))
        return body

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask for the job to be cancelled; returns the job document."""
        body: dict[str, Any] = self._json(self._http.post(f"/jobs/{job_id}/cancel"))
        return body

    def list(
        self, *, limit: int = 20, cursor: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        """One page of jobs (``items``, ``next_cursor``)."""
        params: dict[str, str | int] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        if status:
            params["status"] = status
        body: dict[str, Any] = self._json(self._http.get("/jobs", params=params))
        return body

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        initial_interval: float = 0.2,
        max_interval: float = 2.0,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the job until it completes, fails or is cancelled.

        The interval doubles from ``initial_interval`` up to ``max_interval``, and starts over
        whenever the status changes, so a moving job is followed closely and a waiting one cheaply.

        Args:
            job_id: The job to follow.
            timeout: Seconds before giving up.
            initial_interval: First pause between polls.
            max_interval: Longest pause between polls.
            on_update: Called with the document every time the status changes.

        Returns:
            The final job document.

        Raises:
            JobTimeoutError: If the job is still running after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        interval = initial_interval
        last_status: str | None = None
        while True:
            job = self.get(job_id)
            if job["status"] != last_status:
                last_status = job["status"]
                interval = initial_interval
                if on_update is not None:
                    on_update(job)
            if job["status"] in FINAL_STATUSES:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimeoutError(job, timeout)
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, max_interval)

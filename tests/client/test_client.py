"""The client against a REAL API process (uvicorn, SQLite, no worker): jobs stay where the API puts them.

What needs a worker and a cloud (a result, a classical fallback) is in
``tests/integration/test_client_and_cli.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from qhybrid.client import (
    ApiRequestError,
    ApiUnreachableError,
    AsyncClient,
    Client,
    JobCancelledError,
    JobDocument,
    JobState,
    JobTimeoutError,
)
from tests.api.conftest import valid_request
from tests.support.processes import Process, free_port, start_process

pytestmark = pytest.mark.integration

KEY = "client-test-key"
PRICE = {"QHYBRID_CLOUD_PRICE_PER_TASK": "0.3", "QHYBRID_CLOUD_PRICE_PER_SHOT": "0.0001"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real API with an API key and a price list, and no worker."""
    folder = tmp_path_factory.mktemp("client-api")
    port = free_port()
    process: Process = start_process(
        "api",
        ["-m", "qhybrid", "serve", "--port", str(port)],
        log_dir=folder,
        env={"QHYBRID_DATA_DIR": str(folder / "data"), "QHYBRID_API_KEYS": KEY, **PRICE},
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    yield f"http://127.0.0.1:{port}"
    process.stop()


def test_submit_returns_a_job_that_answers_status_events_cancel_and_result(api: str) -> None:
    with Client(api, KEY) as client:
        job = client.submit(valid_request(shots=1000))
        assert job.estimated_cost == pytest.approx(0.3 + 1000 * 0.0001)  # kept, not dropped
        assert job.accepted is not None and job.accepted.status is JobState.ACCEPTED
        assert job.status() is JobState.ACCEPTED
        (event,) = job.events()
        assert (event.from_status, event.status) == (None, JobState.ACCEPTED)
        assert job.document().request is None  # left out unless asked for
        document = job.document(include_request=True)
        assert isinstance(document, JobDocument)
        assert document.request is not None and document.request["shots"] == 1000
        assert document.raw["job_id"] == job.id  # the JSON as the API sent it
        cancelled = job.cancel()
        assert cancelled.status is JobState.CANCELLED
        with pytest.raises(JobCancelledError) as caught:
            job.result(timeout=30)
        assert caught.value.job.job_id == job.id  # the typed document travels with the error
        assert [e.status for e in caught.value.job.events] == [JobState.ACCEPTED, JobState.CANCELLED]
        with pytest.raises(ApiRequestError) as again:
            job.cancel()
        assert again.value.status_code == 409
        assert client.job(job.id).status() is JobState.CANCELLED
        page = client.list(limit=5, status="cancelled")
        assert job.id in [item.job_id for item in page.items]


def test_refusals_are_typed_errors_naming_the_field(api: str) -> None:
    with Client(api, KEY) as client:
        with pytest.raises(ApiRequestError) as bad:
            client.submit(valid_request(budget=3))
        assert bad.value.status_code == 422
        assert bad.value.error == "invalid_request"
        assert [e["field"] for e in bad.value.errors] == ["budget"]
        with pytest.raises(ApiRequestError) as missing:
            client.get("no-such-job")
        assert (missing.value.status_code, missing.value.error) == (404, "not_found")
    with Client(api, api_key="") as anonymous, pytest.raises(ApiRequestError) as refused:
        anonymous.list()
    assert refused.value.status_code == 401


def test_the_key_and_the_url_come_from_the_environment(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QHYBRID_API_URL", api)
    monkeypatch.setenv("QHYBRID_API_KEY", KEY)
    with Client() as client:
        assert client.url == api
        assert isinstance(client.list(limit=1).items, list)


def test_waiting_past_the_timeout_raises_with_the_last_document(api: str) -> None:
    with Client(api, KEY) as client:
        job = client.submit(valid_request())
        with pytest.raises(JobTimeoutError) as caught:
            job.result(timeout=0.3)  # no worker: the job stays accepted
        assert caught.value.job.status is JobState.ACCEPTED
        assert caught.value.timeout == 0.3
        job.cancel()


def test_no_api_is_a_typed_error_not_a_traceback_from_httpx() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as client, pytest.raises(ApiUnreachableError) as caught:
        client.get("x")
    assert caught.value.url == url
    assert "refused" in caught.value.reason.lower()


def test_a_pydantic_request_is_sent_as_its_json(api: str) -> None:
    from qhybrid.domain.request import JobRequest

    request = JobRequest.model_validate(valid_request(shots=512))
    with Client(api, KEY) as client:
        job = client.submit(request)
        assert job.document().shots == 512
        job.cancel()


def test_the_async_twin_does_the_same(api: str) -> None:
    async def scenario() -> dict[str, Any]:
        async with AsyncClient(api, KEY) as client:
            job = await client.submit(valid_request(shots=1000))
            status = await job.status()
            events = await job.events()
            await job.cancel()
            try:
                await job.result(timeout=30)
            except JobCancelledError as exc:
                cancelled = exc.job
            with_timeout = await client.submit(valid_request())
            try:
                await with_timeout.result(timeout=0.3)
            except JobTimeoutError as exc:
                timed_out = exc.job
            await with_timeout.cancel()
            try:
                await client.get("no-such-job")
            except ApiRequestError as exc:
                missing = exc.status_code
            return {
                "cost": job.estimated_cost,
                "status": status,
                "events": [e.status for e in events],
                "cancelled": cancelled.status,
                "timed_out": timed_out.status,
                "missing": missing,
            }

    outcome = asyncio.run(scenario())
    assert outcome == {
        "cost": pytest.approx(0.4),
        "status": JobState.ACCEPTED,
        "events": [JobState.ACCEPTED],
        "cancelled": JobState.CANCELLED,
        "timed_out": JobState.ACCEPTED,
        "missing": 404,
    }


def test_async_unreachable_is_typed() -> None:
    async def scenario() -> None:
        async with AsyncClient(f"http://127.0.0.1:{free_port()}") as client:
            await client.list()

    with pytest.raises(ApiUnreachableError):
        asyncio.run(scenario())


def test_the_event_stream_yields_every_transition_and_ends_with_the_job(api: str) -> None:
    with Client(api, KEY) as client:
        job = client.submit(valid_request())
        seen: list[JobState] = []

        def follow() -> None:
            seen.extend(event.status for event in job.stream(timeout=60))

        reader = threading.Thread(target=follow)
        reader.start()
        job.cancel()  # no worker: cancelled at once, which ends the stream
        reader.join(timeout=60)
        assert not reader.is_alive()
        assert seen == [JobState.ACCEPTED, JobState.CANCELLED]
        with pytest.raises(ApiRequestError) as missing:
            list(client.job("no-such-job").stream(timeout=10))
        assert missing.value.status_code == 404

    async def follow_async() -> list[tuple[int | None, JobState]]:
        async with AsyncClient(api, KEY) as client:
            job = await client.submit(valid_request())
            await job.cancel()
            return [(event.id, event.status) async for event in job.stream(timeout=60)]

    events = asyncio.run(follow_async())
    assert [status for _, status in events] == [JobState.ACCEPTED, JobState.CANCELLED]
    assert all(event_id is not None for event_id, _ in events)

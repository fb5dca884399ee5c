"""The SQS queue on a real local SQS endpoint (moto's server mode, its own process, started by
the session): the URL, delays and their hops past 15 minutes, visibility matched to the lease,
deletion after the handler, redelivery after a failure, stopping, and the journey on top."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from qhybrid.core.config import Settings
from qhybrid.domain.states import JobState
from qhybrid.jobs.models import utcnow
from qhybrid.jobs.queue import SqsQueue
from qhybrid.jobs.queue.sqs_engine import (
    LEASE_MARGIN_SECONDS,
    MAX_VISIBILITY_SECONDS,
    NOT_BEFORE,
    SqsAddress,
    SqsConsumer,
    parse_sqs_url,
    visibility_for,
)
from tests.support.cloud import CloudServer
from tests.support.journey import build
from tests.support.servers import MotoServer


def make(url: str, *, lease_seconds: float = 300, handler: Any = None, **options: Any) -> SqsQueue:
    return SqsQueue(parse_sqs_url(url), lease_seconds=lease_seconds, handler=handler, **options)


def counts(queue: SqsQueue) -> dict[str, int]:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    answer = queue.client.get_queue_attributes(QueueUrl=queue.url, AttributeNames=names)
    return {name: int(answer["Attributes"][name]) for name in names}


def eventually(check: Callable[[], bool], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def consumers() -> Iterator[list[SqsConsumer]]:
    started: list[SqsConsumer] = []
    yield started
    for consumer in started:
        consumer.stop(graceful=False)


# ------------------------------------------------------------------------------- the URL


def test_sqs_url_names_queue_region_endpoint_and_options() -> None:
    assert parse_sqs_url("sqs://jobs") == SqsAddress("jobs")
    address = parse_sqs_url(
        "sqs://qhybrid-jobs_1?region=eu-west-1&endpoint=http://127.0.0.1:9324"
        "&owner=123456789012&create=true&wait=5"
    )
    assert address == SqsAddress(
        queue_name="qhybrid-jobs_1",
        region="eu-west-1",
        endpoint_url="http://127.0.0.1:9324",
        owner="123456789012",
        create=True,
        wait_seconds=5,
    )


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("redis://jobs", "starts with sqs://"),
        ("sqs://key:secret@jobs", "credentials do not go in the URL"),
        ("sqs://jobs.fifo", "FIFO queues"),
        ("sqs://jobs/extra", "has no path"),
        ("sqs://jo%20bs", "queue name must be"),
        ("sqs://" + "q" * 81, "queue name must be"),
        ("sqs://jobs?visibility=3", "unknown parameter 'visibility'"),
        ("sqs://jobs?endpoint=127.0.0.1:9324", "endpoint must be an http"),
        ("sqs://jobs?owner=42", "12-digit"),
        ("sqs://jobs?create=maybe", "create must be true or false"),
        ("sqs://jobs?wait=21", "between 1 and 20"),
        ("sqs://jobs?wait=soon", "whole seconds"),
    ],
)
def test_sqs_url_refuses_what_it_cannot_mean(url: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        parse_sqs_url(url)


def test_sqs_queue_needs_a_region(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(ValueError, match="no AWS region"):
        make("sqs://jobs")
    assert make("sqs://jobs", region="eu-central-1").region == "eu-central-1"  # QHYBRID_AWS_REGION


def test_sqs_visibility_timeout_is_the_lease_plus_a_margin() -> None:
    assert visibility_for(300) == 300 + LEASE_MARGIN_SECONDS
    assert visibility_for(0.5) == 1 + LEASE_MARGIN_SECONDS
    assert visibility_for(10**6) == MAX_VISIBILITY_SECONDS
    assert make("sqs://jobs?region=eu-west-1", lease_seconds=20).visibility_timeout == 22


# -------------------------------------------------------------------------- on the endpoint


def test_sqs_message_is_the_job_id_and_delays_round_up(sqs_queue_url: str) -> None:
    queue = make(sqs_queue_url)  # a producer, as the API is
    queue.ping()
    queue.kick("job-1")
    queue.kick_at("job-2", utcnow() + timedelta(seconds=30.2))
    assert queue.pending() == 1
    assert queue.scheduled() == 1
    got = queue.receive(wait_seconds=1)
    assert [m["Body"] for m in got] == ["job-1"]
    assert NOT_BEFORE not in got[0].get("MessageAttributes", {})
    # The delayed one waits its 31 s (30.2 rounded up: never early) and carries no hop attribute.
    assert counts(queue)["ApproximateNumberOfMessagesDelayed"] == 1


def test_sqs_ping_fails_on_a_missing_queue(sqs_server: MotoServer) -> None:
    queue = make(sqs_server.queue_url().replace("&create=true", ""))
    with pytest.raises(Exception, match="does not exist"):
        queue.ping()


def test_sqs_kick_beyond_the_longest_delay_hops_until_due(sqs_queue_url: str) -> None:
    seen: list[str] = []
    # SQS delays at most 900 s; a queue whose longest delay is 1 s shows the hops in seconds.
    queue = make(sqs_queue_url, handler=seen.append, max_delay_seconds=1)
    due = utcnow() + timedelta(seconds=3)
    queue.kick_at("job-far", due)
    early = 0
    while not seen:
        messages = queue.receive(wait_seconds=2)
        for message in messages:
            assert message["Body"] == "job-far"
            assert set(message.get("MessageAttributes", {})) <= {NOT_BEFORE}  # nothing else travels
            hop = message.get("MessageAttributes", {}).get(NOT_BEFORE)
            if hop is not None:  # sent before its time: carries the time it is due
                assert float(hop["StringValue"]) == pytest.approx(due.timestamp(), abs=0.01)
                early += 1
            queue.process(message)
        assert early < 10
    assert utcnow() >= due - timedelta(milliseconds=50)  # handled only once due
    assert seen == ["job-far"]
    assert early >= 1  # it arrived early and was sent on, not handled
    assert eventually(lambda: sum(counts(queue).values()) == 0)


def test_sqs_unacknowledged_message_returns_after_the_lease(sqs_queue_url: str) -> None:
    # A worker that receives a message and dies never deletes it: it must come back once the lease
    # it would have taken has expired, so another worker can claim the job.
    queue = make(sqs_queue_url, lease_seconds=1)
    queue.kick("job-orphan")
    first = queue.receive(wait_seconds=1)
    assert [m["Body"] for m in first] == ["job-orphan"]
    assert queue.receive(wait_seconds=1) == []  # invisible while the lease would hold
    assert counts(queue)["ApproximateNumberOfMessagesNotVisible"] == 1
    again = queue.receive(wait_seconds=5)
    assert [m["Body"] for m in again] == ["job-orphan"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_sqs_message_deleted_after_the_handler_returns(
    sqs_queue_url: str, consumers: list[SqsConsumer]
) -> None:
    seen: list[str] = []
    queue = make(sqs_queue_url, handler=seen.append)
    consumer = queue.consumer(workers=2)
    consumers.append(consumer)
    consumer.start()
    queue.kick("job-a")
    assert eventually(lambda: seen == ["job-a"])
    assert eventually(lambda: sum(counts(queue).values()) == 0), counts(queue)


def test_sqs_failed_handler_is_delivered_again(sqs_queue_url: str, consumers: list[SqsConsumer]) -> None:
    calls: list[str] = []

    def flaky(job_id: str) -> None:
        calls.append(job_id)
        if len(calls) == 1:
            raise ConnectionError("database unreachable")

    queue = make(sqs_queue_url, handler=flaky, retry_initial_seconds=1, retry_max_seconds=1)
    consumer = queue.consumer(workers=1)
    consumers.append(consumer)
    consumer.start()
    queue.kick("job-b")
    assert eventually(lambda: len(calls) == 2), calls
    assert calls == ["job-b", "job-b"]
    assert eventually(lambda: sum(counts(queue).values()) == 0), counts(queue)


def test_sqs_consumer_stops_without_waiting_for_its_long_poll(sqs_server: MotoServer) -> None:
    seen: list[str] = []
    queue = make(sqs_server.queue_url(wait=20), handler=seen.append)
    queue.ping()
    consumer = queue.consumer(workers=2)
    consumer.start()
    time.sleep(0.5)  # both threads are in a 20 s long poll now
    stopper = threading.Thread(target=consumer.stop)
    stopper.start()
    stopper.join(10)
    assert not stopper.is_alive(), "stop waited for the long poll"
    # A message the abandoned poll receives after the stop is put back, not handled.
    queue.kick("job-after-stop")
    assert eventually(
        lambda: queue.pending() == 1 and counts(queue)["ApproximateNumberOfMessagesNotVisible"] == 0, 25
    )
    assert seen == []


def test_sqs_graceful_stop_waits_for_the_running_handler(sqs_queue_url: str) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(job_id: str) -> None:
        entered.set()
        release.wait(30)

    queue = make(sqs_queue_url, handler=slow)
    consumer = queue.consumer(workers=1)
    consumer.start()
    queue.kick("job-slow")
    assert entered.wait(10)
    stopper = threading.Thread(target=consumer.stop)
    stopper.start()
    stopper.join(1)
    assert stopper.is_alive(), "stop returned while a handler was running"
    assert consumer.busy == 1
    release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert eventually(lambda: sum(counts(queue).values()) == 0)  # and its message was deleted


# ------------------------------------------------------------------------------ the journey


def test_sqs_duplicate_deliveries_submit_once(
    cloud_settings: Settings,
    cloud_process: CloudServer,
    sqs_queue_url: str,
    consumer_for: Callable[..., None],
) -> None:
    services = build(cloud_settings.model_copy(update={"queue_url": sqs_queue_url}))
    assert isinstance(services.queue, SqsQueue)
    consumer_for(services)
    job_id = services.new_job()
    for _ in range(5):  # at-least-once delivery, exaggerated: every copy races for the lease
        services.queue.kick(job_id)
    assert services.wait_for(job_id, {JobState.COMPLETED, JobState.FAILED}) == "COMPLETED"
    task = services.store.remote_task(job_id, 1)
    assert task is not None
    assert cloud_process.submissions()[task.client_token] == 1
    assert services.store.remote_task(job_id, 2) is None

"""The queue adapter on real engines: SqliteHuey on a file, RedisHuey on the machine's Redis and
Amazon SQS on a local endpoint (moto's server mode); SQS specifics are in test_sqs_queue.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from qhybrid.core.config import Settings
from qhybrid.jobs.models import utcnow
from qhybrid.jobs.queue import HueyQueue, JobQueue, SqsQueue, huey_engine, make_huey, make_queue


@pytest.fixture(params=["sqlite", "redis", "sqs"])
def queue_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "sqlite":
        return settings
    if request.param == "sqs":
        url: str = request.getfixturevalue("sqs_queue_url")
        return settings.model_copy(update={"queue_url": url})
    name: str = request.getfixturevalue("queue_name")
    redis_url: str = request.getfixturevalue("redis_server")
    return settings.model_copy(update={"redis_url": redis_url, "queue_name": name})


@pytest.fixture
def seen() -> list[str]:
    return []


@pytest.fixture
def running(queue_settings: Settings, seen: list[str]) -> Iterator[tuple[JobQueue, threading.Event]]:
    """A real consumer (threads) feeding job ids to a recording handler."""
    arrived = threading.Event()

    def handler(job_id: str) -> None:
        seen.append(job_id)
        arrived.set()

    queue = make_queue(queue_settings, handler=handler)
    consumer = queue.consumer(workers=1)
    consumer.start()
    yield queue, arrived
    consumer.stop(graceful=True)


def test_engine_follows_the_settings(settings: Settings) -> None:
    assert type(make_huey(settings)).__name__ == "_SqliteHuey"
    with_redis = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    assert "RedisHuey" in type(make_huey(with_redis)).__name__
    assert make_queue(with_redis).engine == "redis"
    assert make_queue(settings).engine == "sqlite"
    by_url = settings.model_copy(update={"queue_url": "redis://127.0.0.1:1/0"})
    assert make_queue(by_url).engine == "redis"
    sqs = settings.model_copy(update={"queue_url": "sqs://jobs?region=eu-west-1"})
    queue = make_queue(sqs)
    assert isinstance(queue, SqsQueue)
    assert queue.engine == "sqs"
    assert queue.region == "eu-west-1"


@pytest.mark.parametrize("queue_settings", ["sqlite", "redis"], indirect=True)
def test_huey_messages_carry_the_job_id_only(queue_settings: Settings) -> None:
    queue = HueyQueue(make_huey(queue_settings))  # a producer, as the API is
    queue.kick("job-1")
    when = utcnow() + timedelta(hours=1)
    queue.kick_at("job-2", when)
    # A delayed message goes straight into the durable schedule, with its eta (naive UTC, as Huey's).
    pending = queue.huey.pending()
    assert [(t.args, t.kwargs, t.eta) for t in pending] == [(("job-1",), {}, None)]
    scheduled = queue.huey.scheduled()
    assert [(t.name, t.args, t.kwargs) for t in scheduled] == [("advance", ("job-2",), {})]
    assert scheduled[0].eta == when.replace(tzinfo=None)
    assert (queue.pending(), queue.scheduled()) == (1, 1)
    queue.ping()


@pytest.mark.parametrize("queue_settings", ["sqlite", "redis"], indirect=True)
def test_due_scheduled_kicks_go_ahead_of_queued_kicks(queue_settings: Settings) -> None:
    # A due poll or retry belongs to a job under way: it must not wait behind a backlog of new jobs.
    queue = HueyQueue(make_huey(queue_settings))
    queue.kick_many(["new-1", "new-2", "new-3"])
    queue.kick_at("poll-1", utcnow() - timedelta(seconds=2))
    queue.kick_at("poll-2", utcnow() - timedelta(seconds=1))
    queue.kick_at("later", utcnow() + timedelta(hours=1))
    scheduler = huey_engine._Scheduler(queue.huey, threading.Event(), 1, False)
    scheduler.sleep_for_interval = lambda *_: None  # one tick, no sleep
    scheduler.loop()
    order = []
    while (task := queue.huey.dequeue()) is not None:
        order.append(task.args[0])
    assert order == ["poll-1", "poll-2", "new-1", "new-2", "new-3"]
    assert queue.scheduled() == 1


def test_kick_reaches_a_consumer(running: tuple[JobQueue, threading.Event], seen: list[str]) -> None:
    queue, arrived = running
    queue.kick("job-now")
    assert arrived.wait(10), "consumer never ran the kicked job"
    assert seen == ["job-now"]


def test_kick_many_reaches_a_consumer(running: tuple[JobQueue, threading.Event], seen: list[str]) -> None:
    # The accept path's group commit kicks its jobs together (one LPUSH on Redis, batches of ten on SQS).
    queue, _ = running
    job_ids = [f"job-{index}" for index in range(23)]
    queue.kick_many(job_ids)
    deadline = time.monotonic() + 20
    while len(seen) < len(job_ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(seen) == sorted(job_ids)


@pytest.mark.parametrize("queue_settings", ["sqlite", "redis"], indirect=True)
def test_huey_kick_many_sends_the_same_messages_as_kick(queue_settings: Settings) -> None:
    queue = HueyQueue(make_huey(queue_settings))
    queue.kick_many(["job-1", "job-2", "job-3"])
    queue.kick("job-4")
    pending = queue.huey.pending()
    assert [(t.name, t.args, t.kwargs, t.eta) for t in pending] == [
        ("advance", (job_id,), {}, None) for job_id in ["job-1", "job-2", "job-3", "job-4"]
    ]


def test_kick_at_waits_for_its_time(running: tuple[JobQueue, threading.Event], seen: list[str]) -> None:
    queue, arrived = running
    started = time.monotonic()
    queue.kick_at("job-later", utcnow() + timedelta(seconds=1.5))
    assert arrived.wait(15), "scheduled kick never ran"
    waited = time.monotonic() - started
    assert seen == ["job-later"]
    # Ordering, not timing: the message did not run before its time.
    assert waited >= 1.4


def test_a_producer_without_handler_cannot_consume(settings: Settings) -> None:
    queue = HueyQueue(make_huey(settings))
    queue.kick("x")
    task = queue.huey.dequeue()
    with pytest.raises(RuntimeError, match="no handler"):
        task.execute()

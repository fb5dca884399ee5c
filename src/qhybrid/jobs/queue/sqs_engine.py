"""Amazon SQS as the queue engine, configured by ``QHYBRID_QUEUE_URL=sqs://<queue-name>?…``.

The URL: ``sqs://<queue-name>`` with optional query parameters

- ``region``: the AWS region (else ``QHYBRID_AWS_REGION``, else the AWS chain's);
- ``endpoint``: an endpoint override, for a local SQS (moto, ElasticMQ) or a VPC endpoint;
- ``owner``: the 12-digit account that owns the queue, when it is another account's;
- ``create``: ``true`` to create the queue if it does not exist (development; production queues
  come from the infrastructure code, with their redrive policy);
- ``wait``: seconds of a long poll (``WaitTimeSeconds``, 1–20, default 20).

Credentials are never in the URL: boto3 reads them from the AWS chain (environment, profile,
instance or task role).

How the queue's guarantees map onto the journey's:

- **Delays.** ``kick_at`` sends with ``DelaySeconds`` rounded *up* (SQS counts whole seconds, and a
  message arriving before the job's ``next_poll_at`` would be released untouched). SQS delays at
  most 15 minutes: a later ``kick_at`` goes out with the maximum delay and a ``qhybrid_not_before``
  attribute; a consumer receiving it early sends it on again (another hop, up to 15 minutes) and
  deletes the early copy, so a long wait costs one message per 15 minutes and no worker time. If a
  hop is lost, the reconciler re-kicks the job once its poll is overdue.
- **Visibility.** Every receive sets ``VisibilityTimeout`` to the lease (``QHYBRID_LEASE_SECONDS``)
  plus 2 seconds: a message whose worker died comes back just after the lease it would have taken
  expired, so the next worker can claim the job.
- **Acknowledgement.** A message is deleted after the handler returns. If the handler raises (the
  database unreachable, say), the message is made visible again after a backoff instead
  (``retry_initial_seconds`` doubling per receive, at most ``retry_max_seconds``).
- **At least once.** SQS may deliver a message twice; the journey claims a lease before any work
  and releases a job woken before its time, so a duplicate does nothing.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from qhybrid.core.config import Settings
from qhybrid.jobs.models import utcnow
from qhybrid.jobs.queue.base import JobHandler, JobQueue, StopHandler

log = logging.getLogger("qhybrid.queue.sqs")

#: SQS's largest ``DelaySeconds``.
MAX_DELAY_SECONDS = 15 * 60
#: SQS's largest ``VisibilityTimeout``.
MAX_VISIBILITY_SECONDS = 12 * 3600
#: Extra visibility beyond the lease: the lease starts when the job is claimed, after the receive.
LEASE_MARGIN_SECONDS = 2
#: Message attribute of a kick that was due later than SQS can delay (epoch seconds).
NOT_BEFORE = "qhybrid_not_before"
#: A message this close to its time is handled (the journey tolerates 50 ms early).
EARLY_TOLERANCE_SECONDS = 0.05

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


@dataclass(frozen=True)
class SqsAddress:
    """Where the queue is, as parsed from an ``sqs://`` URL."""

    queue_name: str
    region: str | None = None
    endpoint_url: str | None = None
    owner: str | None = None
    create: bool = False
    wait_seconds: int = 20


def parse_sqs_url(url: str) -> SqsAddress:
    """Parse ``sqs://<queue-name>?region=&endpoint=&owner=&create=&wait=``.

    Raises:
        ValueError: Naming the part of the URL and the rule it breaks.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqs":
        raise ValueError(f"queue_url: an SQS URL starts with sqs://, got {parts.scheme!r}")
    if "@" in parts.netloc:
        raise ValueError("queue_url: credentials do not go in the URL; boto3 reads them from the AWS chain")
    name = parts.netloc
    if parts.path not in ("", "/"):
        raise ValueError(f"queue_url: sqs://<queue-name> has no path, got {parts.path!r}")
    if name.endswith(".fifo"):
        raise ValueError("queue_url: FIFO queues cannot delay single messages; use a standard queue")
    if not _QUEUE_NAME.match(name):
        raise ValueError(f"queue_url: the queue name must be 1-80 letters, digits, '-' or '_', got {name!r}")
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in ("region", "endpoint", "owner", "create", "wait"):
            raise ValueError(
                f"queue_url: unknown parameter {key!r} (known: region, endpoint, owner, create, wait)"
            )
        options[key] = value
    endpoint = options.get("endpoint") or None
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"queue_url: endpoint must be an http:// or https:// URL, got {endpoint!r}")
    owner = options.get("owner") or None
    if owner is not None and not _ACCOUNT.match(owner):
        raise ValueError(f"queue_url: owner must be a 12-digit AWS account id, got {owner!r}")
    create = options.get("create", "false").lower()
    if create not in _TRUE | _FALSE:
        raise ValueError(f"queue_url: create must be true or false, got {create!r}")
    try:
        wait = int(options.get("wait", "20"))
    except ValueError:
        raise ValueError(f"queue_url: wait must be whole seconds, got {options['wait']!r}") from None
    if not 1 <= wait <= 20:
        raise ValueError(f"queue_url: wait must be between 1 and 20 seconds (SQS's limit), got {wait}")
    return SqsAddress(
        queue_name=name,
        region=options.get("region") or None,
        endpoint_url=endpoint,
        owner=owner,
        create=create in _TRUE,
        wait_seconds=wait,
    )


def visibility_for(lease_seconds: float) -> int:
    """The visibility timeout that matches a lease: the lease, rounded up, plus a margin."""
    return min(MAX_VISIBILITY_SECONDS, math.ceil(lease_seconds) + LEASE_MARGIN_SECONDS)


class SqsQueue(JobQueue):
    """The queue over an Amazon SQS standard queue; the message body is the job id.

    Args:
        address: The parsed ``sqs://`` URL.
        lease_seconds: The journey's lease, which sets the visibility timeout.
        region: Used when the URL names none (else the AWS chain's region).
        handler: What a consumer runs for a job id (unset for producers).
        retry_initial_seconds: Visibility backoff after a failed handler, doubled per receive.
        retry_max_seconds: Cap of that backoff.
        max_delay_seconds: The longest delay of one message (SQS: 900; tests lower it to see hops).
    """

    def __init__(
        self,
        address: SqsAddress,
        *,
        lease_seconds: float,
        region: str | None = None,
        handler: JobHandler | None = None,
        retry_initial_seconds: float = 1.0,
        retry_max_seconds: float = 60.0,
        max_delay_seconds: int = MAX_DELAY_SECONDS,
    ) -> None:
        super().__init__(handler)
        self.address = address
        self.visibility_timeout = visibility_for(lease_seconds)
        self.max_delay_seconds = max(1, min(MAX_DELAY_SECONDS, max_delay_seconds))
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        region_name = address.region or region or boto3.session.Session().region_name
        if region_name is None:
            raise ValueError(
                "queue_url: no AWS region; add ?region=… to the sqs:// URL or set QHYBRID_AWS_REGION"
            )
        self.region = region_name
        # The read timeout must outlast a long poll; standard retries ride out a throttled call.
        config = Config(
            connect_timeout=5,
            read_timeout=address.wait_seconds + 10,
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=50,
        )
        self.client: Any = boto3.client(
            "sqs", region_name=region_name, endpoint_url=address.endpoint_url, config=config
        )
        self._url: str | None = None
        self._url_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, handler: JobHandler | None = None) -> SqsQueue:
        """The queue ``QHYBRID_QUEUE_URL`` names, its visibility matched to ``QHYBRID_LEASE_SECONDS``."""
        if settings.queue_url is None:
            raise ValueError("queue_url: not set")
        return cls(
            parse_sqs_url(settings.queue_url),
            lease_seconds=settings.lease_seconds,
            region=settings.aws_region,
            handler=handler,
            retry_initial_seconds=settings.retry_initial_seconds,
            retry_max_seconds=settings.retry_max_seconds,
        )

    @property
    def engine(self) -> str:
        """``sqs``."""
        return "sqs"

    @property
    def url(self) -> str:
        """The queue's URL, looked up (or created, with ``create=true``) on first use."""
        if self._url is not None:
            return self._url
        with self._url_lock:
            if self._url is None:
                self._url = self._resolve()
            return self._url

    def _resolve(self) -> str:
        lookup: dict[str, str] = {"QueueName": self.address.queue_name}
        if self.address.owner:
            lookup["QueueOwnerAWSAccountId"] = self.address.owner
        try:
            return str(self.client.get_queue_url(**lookup)["QueueUrl"])
        except ClientError as exc:
            if not self.address.create or _error_code(exc) not in _MISSING_QUEUE:
                raise
        # CreateQueue is idempotent for equal attributes, so racing producers and workers agree.
        return str(self.client.create_queue(QueueName=self.address.queue_name)["QueueUrl"])

    # ------------------------------------------------------------------------ producing

    def kick(self, job_id: str) -> None:
        """Ask a worker to look at the job now."""
        self.client.send_message(QueueUrl=self.url, MessageBody=job_id)

    def kick_many(self, job_ids: Sequence[str]) -> None:
        """Ask workers to look at several jobs now: ``SendMessageBatch``, ten messages a call.

        Raises:
            RuntimeError: If SQS refused some of the messages (the jobs are stored; the
                reconciler kicks them later).
        """
        refused: list[str] = []
        for start in range(0, len(job_ids), 10):
            chunk = job_ids[start : start + 10]
            answer = self.client.send_message_batch(
                QueueUrl=self.url,
                Entries=[{"Id": str(index), "MessageBody": job_id} for index, job_id in enumerate(chunk)],
            )
            refused += [chunk[int(failed["Id"])] for failed in answer.get("Failed", [])]
        if refused:
            raise RuntimeError(f"SQS refused the messages of {len(refused)} job(s): {', '.join(refused)}")

    def kick_at(self, job_id: str, when: datetime) -> None:
        """Ask a worker to look at the job at ``when``: ``DelaySeconds``, in hops beyond 15 minutes."""
        remaining = (when - utcnow()).total_seconds()
        if remaining <= 0:
            self.kick(job_id)
            return
        message: dict[str, Any] = {
            "QueueUrl": self.url,
            "MessageBody": job_id,
            "DelaySeconds": min(self.max_delay_seconds, math.ceil(remaining)),
        }
        if remaining > self.max_delay_seconds:
            message["MessageAttributes"] = {
                NOT_BEFORE: {"DataType": "Number", "StringValue": f"{when.timestamp():.3f}"}
            }
        self.client.send_message(**message)

    # ------------------------------------------------------------------------ inspecting

    def _count(self, attribute: str) -> int:
        answer = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=[attribute])
        return int(answer["Attributes"][attribute])

    def ping(self) -> None:
        """Raise if the queue cannot be reached (or does not exist)."""
        self._count("ApproximateNumberOfMessages")

    def pending(self) -> int:
        """Messages visible now (SQS's approximate count)."""
        return self._count("ApproximateNumberOfMessages")

    def scheduled(self) -> int:
        """Messages still delayed (SQS's approximate count)."""
        return self._count("ApproximateNumberOfMessagesDelayed")

    # ------------------------------------------------------------------------ consuming

    def consumer(
        self, *, workers: int, shutdown_timeout: float | None = None, on_stop: StopHandler | None = None
    ) -> SqsConsumer:
        """A consumer with ``workers`` threads, each long-polling for one message at a time."""
        return SqsConsumer(self, workers=workers, shutdown_timeout=shutdown_timeout, on_stop=on_stop)

    def receive(self, wait_seconds: int | None = None) -> list[dict[str, Any]]:
        """Long-poll for one message; it stays invisible to others for :attr:`visibility_timeout`."""
        answer = self.client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=self.address.wait_seconds if wait_seconds is None else wait_seconds,
            VisibilityTimeout=self.visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=[NOT_BEFORE],
        )
        messages: list[dict[str, Any]] = answer.get("Messages", [])
        return messages

    def process(self, message: dict[str, Any]) -> None:
        """Handle one received message: hop it on if early, else run the handler and delete it."""
        job_id = str(message["Body"])
        handle = str(message["ReceiptHandle"])
        not_before = _not_before(message)
        if not_before is not None and time.time() < not_before - EARLY_TOLERANCE_SECONDS:
            # Sent before its time only because SQS cannot delay longer: send it on, then drop
            # this copy (a crash in between leaves a duplicate, which is harmless).
            self.kick_at(job_id, datetime.fromtimestamp(not_before, UTC))
            self._delete(handle)
            return
        try:
            self.dispatch(job_id)
        except Exception:
            receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            backoff = min(self._retry_max, self._retry_initial * 2 ** max(0, receives - 1))
            log.exception("job %s: handler failed; redelivery in %.0f s", job_id, math.ceil(backoff))
            self.release(handle, after_seconds=math.ceil(backoff))
            return
        self._delete(handle)

    def release(self, handle: str, *, after_seconds: int = 0) -> None:
        """Make a received message visible again after ``after_seconds`` (0: at once)."""
        try:
            self.client.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=handle, VisibilityTimeout=after_seconds
            )
        except Exception:
            # The message comes back when its visibility timeout ends anyway.
            log.warning("could not release an SQS message; it returns after its visibility timeout")

    def _delete(self, handle: str) -> None:
        try:
            self.client.delete_message(QueueUrl=self.url, ReceiptHandle=handle)
        except Exception:
            # Not deleted means delivered again later, which the lease makes harmless.
            log.warning("could not delete an SQS message; it will be delivered again", exc_info=True)


_MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


def _error_code(exc: ClientError) -> str:
    error: dict[str, str] = exc.response.get("Error", {})
    return error.get("QueryErrorCode") or error.get("Code", "")


def _not_before(message: dict[str, Any]) -> float | None:
    attribute = message.get("MessageAttributes", {}).get(NOT_BEFORE)
    if attribute is None:
        return None
    try:
        return float(attribute["StringValue"])
    except (KeyError, ValueError):
        return None  # not ours to interpret: handle the message now


class SqsConsumer:
    """``workers`` threads, each long-polling SQS for one message and handling it.

    One message per thread keeps the back-pressure right: a thread asks for work only when it is
    free, so no message waits invisible in a busy process while another worker idles.

    Args:
        queue: The SQS queue (with its handler set).
        workers: Threads, i.e. jobs handled at once.
        shutdown_timeout: On SIGTERM, seconds to let running handlers finish (``None``: no limit).
        on_stop: Told the signal's name and whether the stop waits, when the consumer stops.
    """

    def __init__(
        self,
        queue: SqsQueue,
        *,
        workers: int,
        shutdown_timeout: float | None = None,
        on_stop: StopHandler | None = None,
    ) -> None:
        self.queue = queue
        self.workers = workers
        self.shutdown_timeout = shutdown_timeout
        self.on_stop = on_stop
        self._stopping = threading.Event()
        self._state = threading.Condition()
        self._busy = 0
        self._threads: list[threading.Thread] = []

    @property
    def busy(self) -> int:
        """Handlers running now."""
        with self._state:
            return self._busy

    def start(self) -> None:
        """Start the threads and return."""
        for index in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"qhybrid-sqs-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, graceful: bool = True, *, timeout: float | None = None) -> None:
        """Stop receiving; with ``graceful``, wait (up to ``timeout``) for the handlers in progress.

        A thread blocked in a long poll is not waited for: whatever it receives after the stop is
        made visible again at once, and if the process exits first the message returns after its
        visibility timeout. A handler still running when this returns is the worker's to release.
        """
        with self._state:
            self._stopping.set()
            if graceful:
                self._state.wait_for(lambda: self._busy == 0, timeout=timeout)

    def run(self) -> None:
        """Consume until SIGINT or SIGTERM (call from the main thread).

        As with Huey's consumer: SIGTERM (what supervisors send) lets the running handlers finish
        for up to ``shutdown_timeout``; SIGINT (Ctrl-C) stops at once.
        """
        received: list[int] = []

        def on_signal(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            self._stopping.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            # A timed wait keeps the main thread responsive to signals.
            while not self._stopping.wait(0.5):
                pass
            graceful = bool(received) and received[0] == signal.SIGTERM
            if self.on_stop is not None:
                self.on_stop(signal.Signals(received[0]).name if received else "stop", graceful)
            self.stop(graceful=graceful, timeout=self.shutdown_timeout)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                messages = self.queue.receive()
            except Exception as exc:
                failures += 1
                pause = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.warning("SQS receive failed (%s); retrying in %.1f s", exc, pause)
                self._stopping.wait(pause)
                continue
            failures = 0
            for message in messages:
                with self._state:
                    stopping = self._stopping.is_set()
                    if not stopping:
                        self._busy += 1
                if stopping:
                    self.queue.release(str(message["ReceiptHandle"]))
                    continue
                try:
                    self.queue.process(message)
                except Exception:
                    # The handler's own failures are handled in process(); this is SQS failing
                    # mid-hop. The message returns after its visibility timeout.
                    log.exception("SQS message left to its visibility timeout")
                finally:
                    with self._state:
                        self._busy -= 1
                        self._state.notify_all()

"""What every queue engine offers the journey, the API and the reconciler.

A message carries a job id and nothing else; the database says what to do with it. The queue only
wakes workers up, so a lost message costs latency (the reconciler re-kicks) and a duplicate costs
nothing (a job is worked on only under its lease, and a job woken before its ``next_poll_at`` is
released untouched).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

JobHandler = Callable[[str], None]


class Consumer(Protocol):
    """Runs a queue's handler on the messages it receives, in threads."""

    def start(self) -> None:
        """Start consuming in background threads and return."""

    def stop(self, graceful: bool = True) -> None:
        """Stop receiving; with ``graceful``, return once the handlers in progress returned."""

    def run(self) -> None:
        """Consume in the calling (main) thread until SIGINT or SIGTERM."""


#: Called when a consumer starts to stop: the signal's name and whether it waits for the steps.
StopHandler = Callable[[str, bool], None]


class JobQueue(ABC):
    """Wakes workers up about jobs.

    Args:
        handler: What a consumer runs for a job id; producers (the API) leave it unset and a
            worker sets it once its journey exists.
    """

    def __init__(self, handler: JobHandler | None = None) -> None:
        self.handler = handler

    def dispatch(self, job_id: str) -> None:
        """Run the handler for a received job id.

        Raises:
            RuntimeError: If this queue is a producer only (no handler).
        """
        if self.handler is None:
            raise RuntimeError("this JobQueue has no handler; only a worker can consume")
        self.handler(job_id)

    @property
    @abstractmethod
    def engine(self) -> str:
        """The engine's name, for logs: ``sqlite``, ``redis`` or ``sqs``."""

    @abstractmethod
    def kick(self, job_id: str) -> None:
        """Ask a worker to look at the job now."""

    def kick_many(self, job_ids: Sequence[str]) -> None:
        """Ask workers to look at several jobs now; engines that can send them in one round trip do."""
        for job_id in job_ids:
            self.kick(job_id)

    @abstractmethod
    def kick_at(self, job_id: str, when: datetime) -> None:
        """Ask a worker to look at the job at ``when`` (kept durably by the queue engine)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise if the queue engine cannot be reached."""

    @abstractmethod
    def pending(self) -> int:
        """Messages waiting to be consumed now (not counting scheduled ones)."""

    @abstractmethod
    def scheduled(self) -> int:
        """Messages waiting for their time."""

    @abstractmethod
    def consumer(
        self, *, workers: int, shutdown_timeout: float | None = None, on_stop: StopHandler | None = None
    ) -> Consumer:
        """A consumer running this queue's handler in ``workers`` threads.

        Args:
            workers: Threads.
            shutdown_timeout: On SIGTERM, seconds to let running handlers finish (``None``: no limit);
                SIGINT stops at once.
            on_stop: Told the signal's name and whether the stop waits, when the consumer stops.
        """

"""The contract every QPU provider adapter implements.

It follows Amazon Braket's task model: a program is submitted once (idempotently, under a client
token), and everything afterwards goes by task id, so any worker can resume any task after a
restart. Provider states are normalised to :class:`TaskState`.
"""

from __future__ import annotations

import abc
import email.utils
import time
from dataclasses import dataclass, field

from qhybrid.domain.device import DeviceTarget, Pricing
from qhybrid.domain.errors import PermanentError, TransientError
from qhybrid.domain.states import TaskState


class BackendError(Exception):
    """A provider call failed."""


class TransientBackendError(BackendError, TransientError):
    """A provider failure worth retrying later: network errors, timeouts, throttling, 5xx answers."""


class PermanentBackendError(BackendError, PermanentError):
    """A failure that retrying cannot fix: a refused program, a missing task, bad credentials."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header (delta-seconds or HTTP date).

    Args:
        value: The header value, if any.
        now: Current Unix time, for the HTTP-date form (defaults to ``time.time()``).

    Returns:
        A non-negative number of seconds, or ``None`` when absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN: no usable advice
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class TaskStatus:
    """A snapshot of a remote task.

    Attributes:
        state: Normalised state.
        provider_state: The provider's own word for it, kept for the record.
        queue_position: Tasks ahead of this one, when the provider tells.
        message: Failure reason or other provider remark.
    """

    state: TaskState
    provider_state: str
    queue_position: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class TaskResult:
    """Measurement outcomes of a completed task.

    Attributes:
        counts: Outcome → number of shots. Character ``i`` of an outcome is classical bit ``i``
            (the first character is bit 0), whatever the provider's own ordering.
        shots: Shots actually taken.
        metadata: Provider facts worth keeping (execution time, device, simulator seed...).
    """

    counts: dict[str, int]
    shots: int
    metadata: dict[str, object] = field(default_factory=dict)


class QuantumBackend(abc.ABC):
    """A QPU provider behind the task contract; implementations must be safe to use from threads."""

    #: The name a request uses to select this backend.
    name: str

    @abc.abstractmethod
    def target(self) -> DeviceTarget:
        """The device the programs are transpiled for."""

    @abc.abstractmethod
    def submit(self, program: str, shots: int, client_token: str) -> str:
        """Submit an OpenQASM 3 program; the same client token never creates a second task.

        Returns:
            The provider's task id.
        """

    @abc.abstractmethod
    def find_task(self, client_token: str) -> str | None:
        """The id of the task created under ``client_token``, or ``None`` if there is none."""

    @abc.abstractmethod
    def status(self, task_id: str) -> TaskStatus:
        """The task's current state."""

    @abc.abstractmethod
    def result(self, task_id: str) -> TaskResult:
        """The outcomes of a COMPLETED task."""

    @abc.abstractmethod
    def cancel(self, task_id: str) -> None:
        """Ask the provider to cancel the task; harmless on a task already finished."""

    def pricing(self) -> Pricing | None:
        """The device's price list, or ``None`` for free (local) devices."""
        return None

    def estimated_seconds(self, shots: int, circuit_seconds: float | None = None) -> float:
        """QPU seconds a task is expected to use (for per-second pricing); 0 when not charged by time."""
        return 0.0

    def link(self) -> dict[str, object]:
        """How this adapter reaches the provider (transport and TLS), for the job's record."""
        return {"transport": "local process (no network)"}

    def close(self) -> None:  # noqa: B027 - optional hook, most adapters hold nothing to release
        """Release connections held by the adapter."""

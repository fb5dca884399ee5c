"""The contract every QPU provider adapter implements.

It follows Amazon Braket's task model: a program is submitted once (idempotently, under a client
token), and everything afterwards goes by task id, so any worker can resume any task after a
restart. Provider states are normalised to :class:`TaskState`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TaskState(StrEnum):
    """Normalised state of a remote quantum task."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


#: States after which a task never changes again.
TERMINAL_TASK_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})


class BackendError(Exception):
    """A provider call failed."""


class TransientBackendError(BackendError):
    """A failure worth retrying later: network errors, timeouts, throttling, 5xx answers.

    Attributes:
        retry_after: Seconds the provider asked us to wait, when it said so.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentBackendError(BackendError):
    """A failure that retrying cannot fix: a refused program, a missing task, bad credentials."""


@dataclass(frozen=True)
class DeviceTarget:
    """What the transpiler needs to know about a device.

    Attributes:
        name: Provider's device name.
        num_qubits: Physical qubits available.
        basis_gates: Native gate names (Qiskit spelling).
        coupling_map: Directed qubit pairs a two-qubit gate may act on; ``None`` means all-to-all.
        qiskit_target: The provider's ``qiskit.transpiler.Target`` when it has one (IBM backends,
            Braket devices through qiskit-braket-provider): it carries gate and readout error
            rates, which the transpiler uses to choose the qubit layout.
        provider: Who runs the device (``emulated-cloud``, ``braket``, ``ibm``...).
    """

    name: str
    num_qubits: int
    basis_gates: tuple[str, ...]
    coupling_map: tuple[tuple[int, int], ...] | None = None
    qiskit_target: Any = None
    provider: str = "unknown"

    @classmethod
    def from_qiskit(
        cls,
        qiskit_target: Any,
        *,
        name: str,
        basis_gates: tuple[str, ...],
        provider: str,
        all_to_all: bool = False,
    ) -> DeviceTarget:
        """The target of a device described by a ``qiskit.transpiler.Target``.

        Args:
            qiskit_target: The provider's target (qubits, coupling map, error rates).
            name: The device's name.
            basis_gates: The gates our programs may use on it.
            provider: Who runs it.
            all_to_all: Ignore the target's coupling map (devices that route any pair).
        """
        coupling = None if all_to_all else qiskit_target.build_coupling_map()
        edges = None if coupling is None else tuple((int(a), int(b)) for a, b in coupling.get_edges())
        return cls(
            name=name,
            num_qubits=int(qiskit_target.num_qubits),
            basis_gates=basis_gates,
            coupling_map=edges,
            qiskit_target=qiskit_target,
            provider=provider,
        )


@dataclass(frozen=True)
class Pricing:
    """A provider's public price list for one device.

    Attributes:
        per_task: Charged once per task.
        per_shot: Charged per shot.
        per_second: Charged per second of QPU time (IBM's model).
        currency: ISO currency code.
        source: Where the figures come from (page and date), for the record.
    """

    per_task: float = 0.0
    per_shot: float = 0.0
    per_second: float = 0.0
    currency: str = "USD"
    source: str = ""

    def estimate(self, shots: int, seconds: float = 0.0) -> float:
        """Cost of one task of ``shots`` shots using ``seconds`` of QPU time."""
        return self.per_task + self.per_shot * shots + self.per_second * seconds


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

"""What the transpiler and the cost check need to know about a device, without calling its provider."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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

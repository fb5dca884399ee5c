"""The QAOA circuit of an Ising problem and its transpilation for a device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.transpiler import CouplingMap

from qhybrid.backends.base import DeviceTarget
from qhybrid.core.qubo import Ising
from qhybrid.quantum.angles import QaoaAngles

#: Instructions that are not gates: not counted in gate metrics.
_NON_GATES = frozenset({"measure", "barrier", "delay", "reset"})


class CircuitTooLargeError(ValueError):
    """The circuit needs more qubits than the device offers."""


@dataclass(frozen=True)
class CircuitMetrics:
    """Size of a transpiled circuit.

    Attributes:
        logical_qubits: Qubits of the circuit before transpilation (one per variable).
        physical_qubits: Device qubits the transpiled circuit actually touches (routing may use
            more than the logical count).
        depth: Circuit depth, measurements included.
        two_qubit_gates: Gates acting on two qubits.
        total_gates: All gates; measurements and barriers are not counted.
    """

    logical_qubits: int
    physical_qubits: int
    depth: int
    two_qubit_gates: int
    total_gates: int

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dictionary."""
        return {
            "logical_qubits": self.logical_qubits,
            "physical_qubits": self.physical_qubits,
            "depth": self.depth,
            "two_qubit_gates": self.two_qubit_gates,
            "total_gates": self.total_gates,
        }


def qaoa_circuit(ising: Ising, angles: QaoaAngles, *, measure: bool = True) -> QuantumCircuit:
    """The QAOA circuit for ``ising`` with angles for the normalised Hamiltonian.

    Qubit ``i`` carries variable ``i``; with ``s = ising.scale()`` each layer applies
    ``RZ(2γ h_i / s)`` and ``RZZ(2γ J_ij / s)`` for the nonzero terms, i.e. ``exp(−iγ H / s)`` up
    to a global phase, then ``RX(2β)`` = ``exp(−iβX)`` on every qubit. This is exactly the
    evolution of :func:`qhybrid.quantum.simulator.qaoa_statevector` on ``cost_vector() / s``.

    Args:
        ising: The problem.
        angles: One ``(γ, β)`` pair per layer.
        measure: Whether to end with ``measure q[i] -> c[i]`` on every qubit.

    Returns:
        A circuit with ``n`` qubits and ``n`` classical bits.
    """
    n = ising.num_qubits
    scale = ising.scale()
    circuit = QuantumCircuit(n, n, name="qaoa")
    circuit.h(range(n))
    fields = [(i, float(ising.h[i])) for i in range(n) if ising.h[i] != 0.0]
    rows, cols = np.nonzero(ising.couplings)
    couplings = [(int(i), int(j), float(ising.couplings[i, j])) for i, j in zip(rows, cols, strict=True)]
    for gamma, beta in zip(angles.gammas, angles.betas, strict=True):
        for i, h in fields:
            circuit.rz(2.0 * gamma * h / scale, i)
        for i, j, coupling in couplings:
            circuit.rzz(2.0 * gamma * coupling / scale, i, j)
        circuit.rx(2.0 * beta, range(n))
    if measure:
        circuit.measure(range(n), range(n))
    return circuit


def _coupling_map(target: DeviceTarget) -> CouplingMap | None:
    if target.coupling_map is None:
        return None
    coupling = CouplingMap()
    for qubit in range(target.num_qubits):
        coupling.add_physical_qubit(qubit)
    for a, b in target.coupling_map:
        if not (0 <= a < target.num_qubits and 0 <= b < target.num_qubits) or a == b:
            raise ValueError(f"device {target.name!r} has an invalid coupling ({a}, {b})")
        coupling.add_edge(a, b)
    return coupling


def circuit_metrics(logical_qubits: int, circuit: QuantumCircuit) -> CircuitMetrics:
    """Measure a (transpiled) circuit.

    Args:
        logical_qubits: Qubits of the circuit before transpilation.
        circuit: The circuit to measure.
    """
    touched: set[int] = set()
    two_qubit = 0
    total = 0
    for instruction in circuit.data:
        name = instruction.operation.name
        if name == "barrier":
            continue
        touched.update(circuit.find_bit(qubit).index for qubit in instruction.qubits)
        if name in _NON_GATES:
            continue
        total += 1
        if len(instruction.qubits) == 2:
            two_qubit += 1
    return CircuitMetrics(
        logical_qubits=logical_qubits,
        physical_qubits=len(touched),
        depth=int(circuit.depth()),
        two_qubit_gates=two_qubit,
        total_gates=total,
    )


def transpile_for(
    circuit: QuantumCircuit, target: DeviceTarget, *, seed: int, optimization_level: int = 3
) -> tuple[QuantumCircuit, CircuitMetrics]:
    """Transpile for a device's basis gates and connectivity.

    With a coupling map the result is laid out on the device's physical qubits (routing may add
    swaps); without one (all-to-all) no layout is forced and the circuit keeps its logical qubit
    count. Either way a measurement keeps its classical bit, so classical bit ``i`` still holds
    variable ``i``.

    Args:
        circuit: The logical circuit.
        target: The device.
        seed: Seed of the transpiler's stochastic passes (layout, routing).
        optimization_level: Qiskit optimisation level, 0 to 3.

    Returns:
        The transpiled circuit and its metrics.

    Raises:
        CircuitTooLargeError: If the circuit has more qubits than the device.
        ValueError: On an invalid coupling map.
    """
    if circuit.num_qubits > target.num_qubits:
        raise CircuitTooLargeError(
            f"the circuit needs {circuit.num_qubits} qubits but device {target.name!r} "
            f"has only {target.num_qubits}"
        )
    transpiled = transpile(
        circuit,
        basis_gates=list(target.basis_gates),
        coupling_map=_coupling_map(target),
        optimization_level=optimization_level,
        seed_transpiler=seed,
    )
    return transpiled, circuit_metrics(circuit.num_qubits, transpiled)

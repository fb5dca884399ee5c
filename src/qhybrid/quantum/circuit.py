"""The QAOA circuit of an Ising problem and its transpilation for a device."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import CircuitInstruction
from qiskit.transpiler import CouplingMap, PassManager, generate_preset_pass_manager

from qhybrid.domain import conditioned
from qhybrid.domain.device import DeviceTarget
from qhybrid.domain.errors import PermanentError
from qhybrid.domain.qubo import FloatArray, Ising
from qhybrid.quantum.angles import QaoaAngles
from qhybrid.quantum.qasm import ALLOWED_GATES
from qhybrid.quantum.subspace import ring_edges

#: Instructions that are not gates: not counted in gate metrics.
_NON_GATES = frozenset({"measure", "barrier", "delay", "reset"})


class CircuitTooLargeError(PermanentError, ValueError):
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
        layout: Physical qubit of each logical qubit, when the circuit was laid out on a device.
        estimated_success: Product of ``1 − error`` over every gate and measurement, from the
            device's calibration data (``None`` when the device publishes none): a rough chance
            that a shot runs without any error.
        readout_errors: Per classical bit ``i``, the published readout error of the physical
            qubit measured into it (``None`` when the device publishes none): what readout-error
            mitigation of the counts needs.
    """

    logical_qubits: int
    physical_qubits: int
    depth: int
    two_qubit_gates: int
    total_gates: int
    layout: tuple[int, ...] | None = None
    estimated_success: float | None = None
    readout_errors: tuple[float, ...] | None = None

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dictionary."""
        return {
            "logical_qubits": self.logical_qubits,
            "physical_qubits": self.physical_qubits,
            "depth": self.depth,
            "two_qubit_gates": self.two_qubit_gates,
            "total_gates": self.total_gates,
            "layout": None if self.layout is None else list(self.layout),
            "estimated_success": self.estimated_success,
            "readout_errors": None if self.readout_errors is None else list(self.readout_errors),
        }


def _native_gates() -> dict[str, Any]:
    """Qiskit's native gate records for :class:`_Gates`' fast path, or ``{}`` where they do not hold.

    ``QuantumCircuit._append`` is documented public API (``:meta public:``), but the gate enum and
    ``CircuitInstruction.from_standard`` are not: a Qiskit release may move or change them. So the
    fast path is used only if, on this Qiskit, it builds the very circuit the public methods build;
    otherwise every gate goes through the public methods (the same circuit, a little slower).
    """
    try:
        from qiskit._accelerate.circuit import StandardGate

        native = {
            name: getattr(StandardGate, name.upper()) for name in ("x", "cx", "ry", "rz", "rzz", "rxx", "ryy")
        }
        fast, public = QuantumCircuit(2), QuantumCircuit(2)
        for name, qubits, params in (
            ("x", (0,), ()),
            ("cx", (0, 1), ()),
            ("ry", (1,), (0.25,)),
            ("rz", (0,), (0.5,)),
            ("rzz", (0, 1), (0.75,)),
            ("rxx", (1, 0), (1.0,)),
            ("ryy", (0, 1), (1.25,)),
        ):
            bits = tuple(fast.qubits[qubit] for qubit in qubits)
            fast._append(CircuitInstruction.from_standard(native[name], bits, params), _standard_gate=True)
            getattr(public, name)(*params, *qubits)
        return native if fast == public else {}
    except Exception:  # another Qiskit: the public methods
        return {}


_NATIVE: dict[str, Any] = _native_gates()


class _Gates:
    """Standard gates appended to a circuit through Qiskit's unchecked fast path.

    ``QuantumCircuit.cx``, ``.ry``, ... convert and broadcast their arguments and look for
    duplicate qubits on every call: most of the cost of building a job's circuit. The qubits here
    are the circuit's own, by index, so each gate goes straight in as the very record those
    methods make (``CircuitInstruction.from_standard``; tested equal, gate by gate). Qiskit's
    gate enum is not public API: without it the public methods are used.
    """

    def __init__(self, circuit: QuantumCircuit) -> None:
        self._circuit = circuit
        self._append = circuit._append
        self._qubits = circuit.qubits

    def _gate(self, name: str, qubits: tuple[int, ...], params: tuple[float, ...] = ()) -> None:
        gate = _NATIVE.get(name)
        if gate is None:
            getattr(self._circuit, name)(*params, *qubits)
            return
        bits = tuple(self._qubits[qubit] for qubit in qubits)
        self._append(CircuitInstruction.from_standard(gate, bits, params), _standard_gate=True)

    def x(self, qubit: int) -> None:
        self._gate("x", (qubit,))

    def cx(self, control: int, target: int) -> None:
        self._gate("cx", (control, target))

    def ry(self, theta: float, qubit: int) -> None:
        self._gate("ry", (qubit,), (float(theta),))

    def rz(self, theta: float, qubit: int) -> None:
        self._gate("rz", (qubit,), (float(theta),))

    def rzz(self, theta: float, first: int, second: int) -> None:
        self._gate("rzz", (first, second), (float(theta),))

    def rxx(self, theta: float, first: int, second: int) -> None:
        self._gate("rxx", (first, second), (float(theta),))

    def ryy(self, theta: float, first: int, second: int) -> None:
        self._gate("ryy", (first, second), (float(theta),))


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
    circuit = QuantumCircuit(n, n, name="qaoa")
    circuit.h(range(n))
    for gamma, beta in zip(angles.gammas, angles.betas, strict=True):
        append_cost_layer(circuit, ising, gamma)
        circuit.rx(2.0 * beta, range(n))
    if measure:
        circuit.measure(range(n), range(n))
    return circuit


def append_cost_layer(circuit: QuantumCircuit, ising: Ising, gamma: float) -> None:
    """Append ``exp(−iγ H / s)`` (up to a global phase), ``s = ising.scale()``.

    That is ``RZ(2γ h_i / s)`` on each qubit with a nonzero field, then ``RZZ(2γ J_ij / s)`` on
    each nonzero coupling, row by row. Qubit ``i`` of ``circuit`` carries variable ``i``.

    Args:
        circuit: A circuit with at least ``n`` qubits; modified in place.
        ising: The problem.
        gamma: The phase angle for the normalised Hamiltonian.
    """
    scale = ising.scale()
    gates = _Gates(circuit)
    for i in np.flatnonzero(ising.h):
        gates.rz(2.0 * gamma * float(ising.h[i]) / scale, int(i))
    rows, cols = np.nonzero(ising.couplings)
    for i, j in zip(rows, cols, strict=True):
        gates.rzz(2.0 * gamma * float(ising.couplings[i, j]) / scale, int(i), int(j))


def append_xy_mixer(circuit: QuantumCircuit, beta: float) -> None:
    """Append the ring XY mixer: ``exp(−iβ(XX+YY)/2)`` = ``RXX(β)·RYY(β)`` per edge.

    The edges come in the order of :func:`qhybrid.quantum.subspace.ring_edges` (even, odd,
    closing), the order the subspace simulator multiplies them in; they do not commute, so the
    order is part of the definition.

    Args:
        circuit: The circuit, modified in place; its first ``n`` qubits are the ring.
        beta: The mixer angle.
    """
    gates = _Gates(circuit)
    for i, j in ring_edges(circuit.num_qubits):
        # XX and YY commute, so the two rotations together are exactly the edge's XY rotation.
        gates.rxx(beta, i, j)
        gates.ryy(beta, i, j)


def append_warm_mixer(circuit: QuantumCircuit, thetas: Sequence[float], beta: float) -> None:
    """Append Egger et al.'s warm-start mixer ``RY(θ_i)·RZ(−2β)·RY(−θ_i)`` on every qubit.

    Args:
        circuit: The circuit, modified in place.
        thetas: ``θ_i`` per qubit (:func:`qhybrid.quantum.simulator.warm_start_thetas`).
        beta: The mixer angle.
    """
    gates = _Gates(circuit)
    for qubit, theta in enumerate(thetas):
        gates.ry(-float(theta), qubit)
        gates.rz(-2.0 * beta, qubit)
        gates.ry(float(theta), qubit)


def _controlled_ry(circuit: _Gates, theta: float, control: int, target: int) -> None:
    """``RY(θ)`` on ``target`` if ``control`` is 1, from two CX: ``X·RY(−θ/2)·X = RY(θ/2)``."""
    circuit.ry(theta / 2.0, target)
    circuit.cx(control, target)
    circuit.ry(-theta / 2.0, target)
    circuit.cx(control, target)


def _doubly_controlled_ry(circuit: _Gates, theta: float, first: int, second: int, target: int) -> None:
    """``RY(θ)`` on ``target`` if both controls are 1, from four CX and four ``RY(±θ/4)``.

    ``X·RY(φ)·X = RY(−φ)``: the CX flip the sign of the rotations that follow them while their
    control is set. With no control set the four quarters cancel, with one set they still cancel
    in pairs, with both set they all point the same way and add up to ``RY(θ)``. Every gate is
    real, so unlike the cheaper relative-phase Toffoli constructions there is no stray phase.
    """
    quarter = theta / 4.0
    circuit.ry(quarter, target)
    circuit.cx(first, target)
    circuit.ry(-quarter, target)
    circuit.cx(second, target)
    circuit.ry(quarter, target)
    circuit.cx(first, target)
    circuit.ry(-quarter, target)
    circuit.cx(second, target)


def _split_and_cyclic_shift(
    circuit: _Gates, last: int, k: int, keep: Callable[[int, int], float] | None = None
) -> None:
    """Bärtschi–Eidenbenz's ``SCS_{l,k}`` on the paper's qubits ``l−k .. l`` (1-based, ``l = last``).

    Paper qubit ``j`` is our qubit ``j − 1``. On ``|0…0 1^m>`` (``m ≤ k`` ones at the end) it
    yields ``√π|0…0 1^m> + √(1 − π)|0…0 1^m 0>`` with ``π = keep(l, m)``, by default ``m / l``
    (the Dicke state): the block ``m`` moves the boundary one to the left with the right
    amplitude, conditioned on the state having ``m`` ones. ``π`` is the probability that paper
    qubit ``l`` holds a one given ``m`` ones among paper qubits ``1..l``.
    """

    def q(paper: int) -> int:
        return paper - 1

    def angle(m: int) -> float:
        probability = m / last if keep is None else keep(last, m)
        return 2.0 * math.acos(math.sqrt(min(1.0, max(0.0, probability))))

    # Block (i) on (l−1, l).
    circuit.cx(q(last - 1), q(last))
    _controlled_ry(circuit, angle(1), q(last), q(last - 1))
    circuit.cx(q(last - 1), q(last))
    # Blocks (ii)_m on (l−m, l−m+1, l).
    for m in range(2, k + 1):
        circuit.cx(q(last - m), q(last))
        _doubly_controlled_ry(circuit, angle(m), q(last), q(last - m + 1), q(last - m))
        circuit.cx(q(last - m), q(last))


def weighted_dicke_circuit(values: Sequence[float] | FloatArray, weight: int) -> QuantumCircuit:
    """Prepare ``Σ_{|x| = B} √P(x) |x>`` with ``P`` the conditioned rounding of ``values``.

    The Bärtschi–Eidenbenz circuit of :func:`dicke_circuit` (same gates, same count) with each
    split probability ``m / l`` replaced by ``P(x_l = 1 | m ones among the first l variables)``
    of the conditional Bernoulli distribution (:func:`qhybrid.domain.conditioned.inclusion_table`).
    The Dicke construction decides the qubits from the last one down, and that probability
    depends only on ``(l, m)``, so the same unary bookkeeping prepares the weighted state exactly.
    With every value equal it is the Dicke state.

    Args:
        values: ``c``, one value in ``[0, 1]`` per qubit (clipped away from 0 and 1 by the caller
            if every state should get some amplitude).
        weight: ``B``.

    Returns:
        A circuit on ``n`` qubits without classical bits.

    Raises:
        ValueError: As :func:`qhybrid.domain.conditioned.inclusion_table`.
    """
    circuit = QuantumCircuit(len(values), name=f"weighted_dicke_{len(values)}_{weight}")
    append_weighted_dicke(circuit, values, weight)
    return circuit


def append_weighted_dicke(circuit: QuantumCircuit, values: Sequence[float] | FloatArray, weight: int) -> None:
    """Append :func:`weighted_dicke_circuit`'s gates to ``circuit``'s first ``len(values)`` qubits.

    The same gates in the same order as composing that circuit, without building it and copying
    it over (a third of the cost of building a job's circuit).

    Raises:
        ValueError: As :func:`qhybrid.domain.conditioned.inclusion_table`.
    """
    table = conditioned.inclusion_table(np.asarray(values, dtype=np.float64), weight)

    def keep(last: int, m: int) -> float:
        return float(table[last - 1, m])

    _append_dicke(circuit, len(values), weight, keep)


def _dicke(
    num_qubits: int, weight: int, keep: Callable[[int, int], float] | None, *, name: str
) -> QuantumCircuit:
    circuit = QuantumCircuit(num_qubits, name=name)
    _append_dicke(circuit, num_qubits, weight, keep)
    return circuit


def _append_dicke(
    circuit: QuantumCircuit, num_qubits: int, weight: int, keep: Callable[[int, int], float] | None
) -> None:
    gates = _Gates(circuit)
    for qubit in range(num_qubits - weight, num_qubits):
        gates.x(qubit)
    if weight in (0, num_qubits):
        return
    for last in range(num_qubits, weight, -1):
        _split_and_cyclic_shift(gates, last, weight, keep)
    for last in range(weight, 1, -1):
        _split_and_cyclic_shift(gates, last, last - 1, keep)


def dicke_circuit(num_qubits: int, weight: int) -> QuantumCircuit:
    """Deterministic preparation of the Dicke state ``|D^n_k>`` from ``|0…0>``.

    The construction of Bärtschi and Eidenbenz (2019): put ``k`` ones on the last ``k`` qubits,
    then apply ``SCS_{l,k}`` for ``l = n … k+1`` and ``SCS_{l,l−1}`` for ``l = k … 2``. It uses
    ``O(n·k)`` gates (CX and RY only, controlled rotations decomposed as in
    :func:`_doubly_controlled_ry`) and prepares exactly the uniform superposition of the
    ``C(n, k)`` weight-``k`` basis states with real positive amplitudes.

    Args:
        num_qubits: ``n ≥ 1``.
        weight: ``k`` in ``0..n``.

    Returns:
        A circuit on ``n`` qubits without classical bits.

    Raises:
        ValueError: On sizes out of range.
    """
    if num_qubits < 1 or not 0 <= weight <= num_qubits:
        raise ValueError(f"need 0 <= weight <= num_qubits and num_qubits >= 1, got {weight} and {num_qubits}")
    return _dicke(num_qubits, weight, None, name=f"dicke_{num_qubits}_{weight}")


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
    # One pass over the instructions, reading only their names and bits (building each gate's
    # Python object, as instruction.operation and QuantumCircuit.depth do, cost more than the rest).
    qubit_index = {qubit: i for i, qubit in enumerate(circuit.qubits)}
    clbit_index = {clbit: len(qubit_index) + i for i, clbit in enumerate(circuit.clbits)}
    # The depth as QuantumCircuit.depth() counts it: every instruction but a directive (barrier)
    # is one layer on all its qubits and bits; a directive lines them up without a layer.
    levels = [0] * (len(qubit_index) + len(clbit_index))
    touched: set[int] = set()
    two_qubit = 0
    total = 0
    # A transpiled program applies its gates to a few dozen operand tuples, over and over (Qiskit
    # interns them): their wire numbers are looked up once per tuple, not once per instruction.
    wires_of: dict[tuple[Any, Any], tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for instruction in circuit.data:
        operands = (instruction.qubits, instruction.clbits)
        known = wires_of.get(operands)
        if known is None:
            found = tuple(qubit_index[qubit] for qubit in operands[0])
            known = wires_of[operands] = (found, found + tuple(clbit_index[clbit] for clbit in operands[1]))
        qubits, wires = known
        layer = 0 if instruction.is_directive() else 1
        if len(wires) == 1:  # most gates: the max over one wire is that wire
            levels[wires[0]] += layer
        elif wires:
            level = max([levels[wire] for wire in wires]) + layer
            for wire in wires:
                levels[wire] = level
        name = instruction.name
        if name == "barrier":
            continue
        touched.update(qubits)
        if name in _NON_GATES:
            continue
        total += 1
        if len(qubits) == 2:
            two_qubit += 1
    return CircuitMetrics(
        logical_qubits=logical_qubits,
        physical_qubits=len(touched),
        depth=max(levels, default=0),
        two_qubit_gates=two_qubit,
        total_gates=total,
    )


#: Target operations that are not gates the program format needs to carry.
_NON_GATE_OPERATIONS = frozenset(
    {
        "measure",
        "barrier",
        "delay",
        "reset",
        "id",
        "if_else",
        "for_loop",
        "while_loop",
        "switch_case",
        "store",
    }
)


def estimated_success(circuit: QuantumCircuit, qiskit_target: Any) -> float | None:
    """Product of ``1 − error`` over the circuit's instructions, from the target's calibration.

    Returns ``None`` when the target publishes no error rate at all (simulators).
    """
    probability = 1.0
    known = False
    for instruction in circuit.data:
        name = instruction.operation.name
        if name == "barrier":
            continue
        qargs = tuple(circuit.find_bit(qubit).index for qubit in instruction.qubits)
        try:
            properties = qiskit_target[name][qargs]
        except KeyError:
            continue
        error = getattr(properties, "error", None)
        if error is not None:
            known = True
            probability *= max(0.0, 1.0 - float(error))
    return probability if known else None


def readout_errors(circuit: QuantumCircuit, qiskit_target: Any) -> tuple[float, ...] | None:
    """Per classical bit, the target's readout error of the qubit measured into it.

    ``None`` unless every classical bit is measured exactly once from a qubit whose ``measure``
    error the target publishes (simulators publish none).
    """
    errors: dict[int, float] = {}
    for instruction in circuit.data:
        if instruction.operation.name != "measure":
            continue
        qubit = circuit.find_bit(instruction.qubits[0]).index
        clbit = circuit.find_bit(instruction.clbits[0]).index
        try:
            error = getattr(qiskit_target["measure"][(qubit,)], "error", None)
        except (KeyError, TypeError):
            return None
        if error is None or clbit in errors:
            return None
        errors[clbit] = float(error)
    if sorted(errors) != list(range(circuit.num_clbits)) or not errors:
        return None
    return tuple(errors[bit] for bit in range(circuit.num_clbits))


#: Qiskit's switch for its Rust passes' thread pool: "TRUE" says "already running in parallel",
#: and the passes then run on the calling thread (``QISKIT_FORCE_THREADS=TRUE`` overrides it).
QISKIT_SERIAL_VARIABLE = "QISKIT_IN_PARALLEL"


def transpile_on_calling_thread() -> bool:
    """Make Qiskit's transpiler passes run on the thread that calls them, for this process.

    Some of Qiskit's Rust passes (the level-3 two-qubit peephole among them) hand their work to a
    Rayon pool of one thread per core and wait for it. For circuits of a few qubits this buys
    nothing and costs CPU: on the 2-core VM, 30 six-asset circuits transpiled alternately with and
    without the pool in one process took 4.41 ms of process CPU per circuit with it and 3.86 ms
    without (``docs/benchmarks.md``), with the same programs. A worker already runs one job per
    thread, so the pool only adds threads contending for the same cores.

    Call it once at process start, before other threads run: it sets an environment variable,
    which Qiskit reads at each pass. A value the operator set is left alone.

    Returns:
        True if this call set it.
    """
    if QISKIT_SERIAL_VARIABLE in os.environ:
        return False
    os.environ[QISKIT_SERIAL_VARIABLE] = "TRUE"
    return True


_PASS_MANAGERS = threading.local()


def _all_to_all_pass_manager(basis: tuple[str, ...], optimization_level: int) -> PassManager:
    """Qiskit's preset pass manager for a device without a coupling map, one per thread and basis.

    It is what :func:`qiskit.transpile` builds for these arguments (without a coupling map its
    only seeded passes, layout and routing, do not run), kept per thread because a pass
    manager's passes hold state while they run.
    """
    cache: dict[tuple[tuple[str, ...], int], PassManager] | None = getattr(_PASS_MANAGERS, "cache", None)
    if cache is None:
        cache = _PASS_MANAGERS.cache = {}
    key = (basis, optimization_level)
    if key not in cache:
        cache[key] = generate_preset_pass_manager(
            optimization_level=optimization_level, basis_gates=list(basis), seed_transpiler=0
        )
    return cache[key]


def _target_plan(target: DeviceTarget) -> tuple[Any, list[str] | None, CouplingMap | None]:
    """How to transpile: with the provider's Target (error-aware) or with basis gates + coupling map."""
    if target.qiskit_target is None:
        return None, list(target.basis_gates), _coupling_map(target)
    gates = set(target.qiskit_target.operation_names) - _NON_GATE_OPERATIONS
    if gates <= ALLOWED_GATES:
        # Every native gate fits the program format: use the Target itself, so level 3 picks
        # the layout by the device's gate and readout error rates (VF2Layout / VF2PostLayout).
        return target.qiskit_target, None, None
    # Some native gates cannot be carried by the program format (e.g. rzz, ecr, iswap): translate
    # to the gates the adapter says the device accepts in a program (its basis_gates, which the
    # provider compiles to native gates) and keep the device's connectivity.
    basis = sorted((set(target.basis_gates) | gates) & ALLOWED_GATES)
    if not any(_STANDARD_ARITY.get(gate) == 2 for gate in basis):
        raise UnsupportedTargetError(
            f"device {target.name!r} has no two-qubit gate the program format carries "
            f"(native: {', '.join(sorted(gates))}; allowed: {', '.join(sorted(ALLOWED_GATES))})"
        )
    return None, basis, target.qiskit_target.build_coupling_map()


class UnsupportedTargetError(PermanentError, ValueError):
    """The device's gate set cannot express the program format's gates."""


_STANDARD_ARITY = {"cx": 2, "cy": 2, "cz": 2, "cp": 2, "swap": 2}


def transpile_for(
    circuit: QuantumCircuit, target: DeviceTarget, *, seed: int, optimization_level: int = 3
) -> tuple[QuantumCircuit, CircuitMetrics]:
    """Transpile for a device's basis gates and connectivity.

    With the provider's ``qiskit_target`` the circuit is transpiled against it, so layout and
    routing follow the published error rates; otherwise against the basis gates and coupling map.
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
        The transpiled circuit and its metrics (with the layout and the estimated success
        probability when the device publishes calibration data).

    Raises:
        CircuitTooLargeError: If the circuit has more qubits than the device.
        UnsupportedTargetError: If the device's gates cannot carry the program format.
        ValueError: On an invalid coupling map.
    """
    if circuit.num_qubits > target.num_qubits:
        raise CircuitTooLargeError(
            f"the circuit needs {circuit.num_qubits} qubits but device {target.name!r} "
            f"has only {target.num_qubits}"
        )
    qiskit_target, basis, coupling = _target_plan(target)
    if qiskit_target is None and coupling is None and basis is not None:
        # All-to-all: no layout or routing, so the seed changes nothing and the same pass manager
        # serves every job (building it cost more than running it).
        transpiled = _all_to_all_pass_manager(tuple(basis), optimization_level).run(circuit)
    else:
        transpiled = transpile(
            circuit,
            target=qiskit_target,
            basis_gates=basis,
            coupling_map=coupling,
            optimization_level=optimization_level,
            seed_transpiler=seed,
        )
    metrics = circuit_metrics(circuit.num_qubits, transpiled)
    layout = None
    if transpiled.layout is not None and transpiled.num_qubits != circuit.num_qubits:
        layout = tuple(int(q) for q in transpiled.layout.final_index_layout()[: circuit.num_qubits])
    success, readout = None, None
    if target.qiskit_target is not None:
        success = estimated_success(transpiled, target.qiskit_target)
        readout = readout_errors(transpiled, target.qiskit_target)
    return transpiled, replace(metrics, layout=layout, estimated_success=success, readout_errors=readout)

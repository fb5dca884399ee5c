from __future__ import annotations

import re

import numpy as np
import pytest
import qiskit.qasm3
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, transpile
from qiskit.circuit import Gate, Parameter
from qiskit.circuit.library import CXGate, RZGate, get_standard_gate_name_mapping
from qiskit.quantum_info import Operator

from qhybrid.domain.device import DeviceTarget
from qhybrid.quantum.angles import QaoaAngles
from qhybrid.quantum.circuit import qaoa_circuit, transpile_for
from qhybrid.quantum.qasm import (
    ALLOWED_GATES,
    ANGLE_MAX_STEPS,
    angle_literal,
    angle_steps,
    grid_literal,
    to_openqasm3,
)
from tests.quantum.test_simulator import random_ising

ONE_QUBIT = ["x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx"]
ROTATIONS = ["rx", "ry", "rz", "p"]
TWO_QUBIT = ["cx", "cy", "cz", "swap"]


def test_canonical_text() -> None:
    circuit = QuantumCircuit(3, 2)
    circuit.h(0)
    circuit.cx(0, 2)
    circuit.barrier()
    circuit.rz(0.5, 1)
    circuit.cp(-1e-05, 2, 1)
    circuit.measure(0, 1)  # measurements come out last and in bit order, whatever their order here
    circuit.measure(2, 0)
    assert to_openqasm3(circuit) == (
        "OPENQASM 3.0;\n"
        'include "stdgates.inc";\n'
        "qubit[3] q;\n"
        "bit[2] c;\n"
        "h q[0];\n"
        "cx q[0], q[2];\n"
        "rz(0.5) q[1];\n"
        "cp(-1e-05) q[2], q[1];\n"
        "c[0] = measure q[2];\n"
        "c[1] = measure q[0];\n"
    )
    # Exponent literals such as -1e-05 parse back to the same numbers.
    loaded = qiskit.qasm3.loads(to_openqasm3(circuit))
    assert [float(p) for i in loaded.data for p in i.operation.params] == [0.5, -1e-05]


def random_circuit(n: int, depth: int, seed: int) -> QuantumCircuit:
    rng = np.random.default_rng(seed)
    circuit = QuantumCircuit(n)
    for _ in range(depth):
        kind = rng.integers(3)
        if kind == 0:
            getattr(circuit, str(rng.choice(ONE_QUBIT)))(int(rng.integers(n)))
        elif kind == 1:
            getattr(circuit, str(rng.choice(ROTATIONS)))(float(rng.normal()), int(rng.integers(n)))
        else:
            a, b = (int(q) for q in rng.choice(n, size=2, replace=False))
            name = str(rng.choice([*TWO_QUBIT, "cp"]))
            if name == "cp":
                circuit.cp(float(rng.normal()), a, b)
            else:
                getattr(circuit, name)(a, b)
    return circuit


def equal_up_to_phase(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    """Whether two unitaries agree up to a global phase."""
    index = np.unravel_index(np.argmax(np.abs(b)), b.shape)
    phase = a[index] / b[index]
    return bool(np.allclose(a, phase * b, atol=atol))


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_is_the_same_unitary_up_to_the_grid(seed: int) -> None:
    circuit = random_circuit(4, 60, seed)
    circuit.global_phase = 0.0
    measured = QuantumCircuit(4, 1).compose(circuit)
    measured.measure(0, 0)
    text = to_openqasm3(measured)
    loaded = qiskit.qasm3.loads(text)
    assert loaded.num_qubits == 4
    unitary = Operator(loaded.remove_final_measurements(inplace=False)).data
    # Each of at most 60 angles moved by at most 5e-7 rad (the grid), so the unitary by less
    # than 60 · 5e-7 / 2 in any entry; without the rounding it is the same unitary.
    assert equal_up_to_phase(unitary, Operator(circuit).data, atol=2e-5)
    assert not equal_up_to_phase(unitary, Operator(random_circuit(4, 60, seed + 100)).data, atol=1e-2)


def test_angles_are_reduced_and_rounded_to_the_grid() -> None:
    assert angle_literal(0.5) == "0.5"
    assert angle_literal(0.123456789) == "0.123457"
    assert angle_literal(1.0000004) == "1.0"
    assert angle_literal(-1e-05) == "-1e-05"
    assert angle_literal(4e-07) == "0.0"  # below half a step: no rotation
    assert angle_literal(np.pi) == "3.141593"
    assert angle_literal(3 * np.pi) in ("3.141593", "-3.141593")  # ±π: the same rotation
    assert angle_literal(2 * np.pi + 0.25) == "0.25"
    assert angle_literal(-2 * np.pi - 0.25) == "-0.25"
    assert angle_literal(1e300) == grid_literal(angle_steps(1e300))
    # Every grid point has one spelling, of at most 7 significant digits.
    rng = np.random.default_rng(3)
    for steps in [*rng.integers(-ANGLE_MAX_STEPS, ANGLE_MAX_STEPS + 1, size=2000), ANGLE_MAX_STEPS, 1, -1]:
        text = grid_literal(int(steps))
        assert round(float(text) * 1e6) == steps
        digits = text.lstrip("-").split("e")[0].replace(".", "").strip("0")
        assert len(digits) <= 7, text
    with pytest.raises(ValueError, match="not finite"):
        angle_steps(float("nan"))


def test_measurements_must_be_final_and_one_per_bit() -> None:
    circuit = QuantumCircuit(2, 2)
    circuit.measure(0, 0)
    circuit.x(0)
    circuit.measure(1, 1)
    with pytest.raises(ValueError, match="after its measurement"):
        to_openqasm3(circuit)
    twice = QuantumCircuit(2, 2)
    twice.measure(0, 0)
    twice.measure(0, 1)
    with pytest.raises(ValueError, match="measured twice"):
        to_openqasm3(twice)
    overwritten = QuantumCircuit(2, 2)
    overwritten.measure(0, 0)
    overwritten.measure(1, 0)
    with pytest.raises(ValueError, match="measured twice"):
        to_openqasm3(overwritten)
    partial = QuantumCircuit(2, 2)
    partial.measure(1, 1)
    with pytest.raises(ValueError, match=r"not measured: \[0\]"):
        to_openqasm3(partial)


def test_transpiled_qaoa_round_trips_with_its_measurements() -> None:
    ising = random_ising(5, seed=4)
    angles = QaoaAngles(gammas=(0.4,), betas=(-0.3,), expectation=0.0, evaluations=0)
    line = tuple((i, i + 1) for i in range(6)) + tuple((i + 1, i) for i in range(6))
    device = DeviceTarget("line7", 7, ("rz", "sx", "x", "cx"), line)
    transpiled, _ = transpile_for(qaoa_circuit(ising, angles), device, seed=1)
    text = to_openqasm3(transpiled)
    loaded = qiskit.qasm3.loads(text)
    assert (loaded.num_qubits, loaded.num_clbits) == (7, 5)
    assert to_openqasm3(loaded) == text  # canonical: emitting the parsed program is a fixed point
    assert equal_up_to_phase(
        Operator(loaded.remove_final_measurements(inplace=False)).data,
        Operator(transpiled.remove_final_measurements(inplace=False)).data,
        atol=1e-4,
    )
    gate = re.compile(r"([a-z]+)(\(-?[0-9][0-9.e+-]*(,-?[0-9][0-9.e+-]*)*\))? q\[\d+\](, q\[\d+\])*;")
    measure = re.compile(r"c\[\d+\] = measure q\[\d+\];")
    for statement in text.splitlines()[4:]:
        match = gate.fullmatch(statement)
        assert match is not None or measure.fullmatch(statement) is not None, statement
        assert match is None or match.group(1) in ALLOWED_GATES
    assert "pi" not in text
    assert "//" not in text
    assert text.count('"') == 2
    assert text.count('"stdgates.inc"') == 1


def test_registers_are_flattened() -> None:
    circuit = QuantumCircuit(QuantumRegister(1, "a"), QuantumRegister(2, "b"), ClassicalRegister(1, "x"))
    circuit.add_register(ClassicalRegister(2, "y"))
    circuit.x(2)
    circuit.measure([2, 0, 1], [2, 0, 1])
    assert to_openqasm3(circuit).splitlines()[2:] == [
        "qubit[3] q;",
        "bit[3] c;",
        "x q[2];",
        "c[0] = measure q[0];",
        "c[1] = measure q[1];",
        "c[2] = measure q[2];",
    ]


@pytest.mark.parametrize(
    "build",
    [
        lambda c: c.ccx(0, 1, 2),
        lambda c: c.rzz(0.3, 0, 1),
        lambda c: c.u(0.1, 0.2, 0.3, 0),
        lambda c: c.ecr(0, 1),
        lambda c: c.reset(0),
        lambda c: c.append(CXGate(ctrl_state=0), [0, 1]),
        lambda c: c.append(Gate("h", 1, []), [0]),
        lambda c: c.append(Gate("rx", 1, [0.1, 0.2]), [0]),
    ],
)
def test_rejects_disallowed_instructions(build: object) -> None:
    circuit = QuantumCircuit(3, 1)
    build(circuit)  # type: ignore[operator]
    circuit.measure(0, 0)
    with pytest.raises(ValueError, match=r"not (allowed|the standard)"):
        to_openqasm3(circuit)


def test_rejects_symbolic_and_non_finite_parameters() -> None:
    theta = Parameter("theta")
    circuit = QuantumCircuit(1, 1)
    circuit.rz(theta, 0)
    circuit.measure(0, 0)
    with pytest.raises(ValueError, match="symbolic"):
        to_openqasm3(circuit)
    bound = circuit.assign_parameters({theta: 0.25})
    assert "rz(0.25) q[0];" in to_openqasm3(bound)
    circuit = QuantumCircuit(1, 1)
    circuit.rx(float("inf"), 0)
    circuit.measure(0, 0)
    with pytest.raises(ValueError, match="non-finite"):
        to_openqasm3(circuit)


def test_rejects_empty_registers() -> None:
    with pytest.raises(ValueError, match="at least one"):
        to_openqasm3(QuantumCircuit(2))


class _RedefinedRZ(RZGate):  # type: ignore[misc]
    """A Python subclass of RZ with another definition: Qiskit still stores it as its RZ."""

    def _define(self) -> None:
        definition = QuantumCircuit(1)
        definition.x(0)
        self.definition = definition


def test_a_subclass_of_a_standard_gate_is_exported_as_qiskit_runs_it() -> None:
    # The export reads a standard gate from Qiskit's native record (name and angles) without
    # building its Python object, so it no longer sees a Python subclass. What it writes is what
    # Qiskit itself does with such a gate: its transpiler runs the native RZ, not the subclass's
    # definition, so the text says the gate Qiskit compiled.
    circuit = QuantumCircuit(1, 1)
    circuit.append(_RedefinedRZ(0.25), [0])
    circuit.measure(0, 0)
    assert circuit.data[0].is_standard_gate()
    transpiled = transpile(circuit, basis_gates=["rz", "sx", "x", "cx"], optimization_level=0)
    assert type(transpiled.data[0].operation) is RZGate
    assert "rz(0.25) q[0];" in to_openqasm3(circuit)
    assert to_openqasm3(circuit) == to_openqasm3(transpiled)


def test_standard_gates_export_as_their_python_objects_say() -> None:
    # The native record and the gate's Python object agree on name and angles for every gate
    # the export allows (the export reads the former, the check reads the latter otherwise).
    circuit = QuantumCircuit(2, 2)
    for name in sorted(ALLOWED_GATES):
        gate = get_standard_gate_name_mapping()[name]
        params = [0.125 * (index + 1) for index in range(len(gate.params))]
        circuit.append(type(gate)(*params), list(range(gate.num_qubits)))
    circuit.measure([0, 1], [0, 1])
    lines = to_openqasm3(circuit).splitlines()[4:-2]
    expected = []
    for instruction in circuit.data[:-2]:
        operation = instruction.operation
        assert instruction.is_standard_gate()
        operands = ", ".join(f"q[{circuit.find_bit(q).index}]" for q in instruction.qubits)
        angles = ",".join(repr(float(p)) for p in operation.params)
        head = f"{operation.name}({angles})" if angles else operation.name
        expected.append(f"{head} {operands};")
    assert lines == expected

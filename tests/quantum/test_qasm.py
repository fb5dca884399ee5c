from __future__ import annotations

import re

import numpy as np
import pytest
import qiskit.qasm3
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Gate, Parameter
from qiskit.circuit.library import CXGate
from qiskit.quantum_info import Operator

from qhybrid.domain.device import DeviceTarget
from qhybrid.quantum.angles import QaoaAngles
from qhybrid.quantum.circuit import qaoa_circuit, transpile_for
from qhybrid.quantum.qasm import ALLOWED_GATES, to_openqasm3
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
    circuit.measure(2, 0)
    circuit.measure(0, 1)
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


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_is_the_same_unitary(seed: int) -> None:
    circuit = random_circuit(4, 60, seed)
    circuit.global_phase = 0.0
    text = to_openqasm3(QuantumCircuit(4, 1).compose(circuit))
    loaded = qiskit.qasm3.loads(text)
    assert loaded.num_qubits == 4
    assert Operator(loaded).equiv(Operator(circuit))


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
    assert Operator(loaded.remove_final_measurements(inplace=False)).equiv(
        Operator(transpiled.remove_final_measurements(inplace=False))
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
    circuit.measure(2, 2)
    assert to_openqasm3(circuit).splitlines()[2:] == [
        "qubit[3] q;",
        "bit[3] c;",
        "x q[2];",
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
    with pytest.raises(ValueError, match="not"):
        to_openqasm3(circuit)


def test_rejects_symbolic_and_non_finite_parameters() -> None:
    theta = Parameter("theta")
    circuit = QuantumCircuit(1, 1)
    circuit.rz(theta, 0)
    with pytest.raises(ValueError, match="symbolic"):
        to_openqasm3(circuit)
    bound = circuit.assign_parameters({theta: 0.25})
    assert "rz(0.25) q[0];" in to_openqasm3(bound)
    circuit = QuantumCircuit(1, 1)
    circuit.rx(float("inf"), 0)
    with pytest.raises(ValueError, match="non-finite"):
        to_openqasm3(circuit)


def test_rejects_empty_registers() -> None:
    with pytest.raises(ValueError, match="at least one"):
        to_openqasm3(QuantumCircuit(2))

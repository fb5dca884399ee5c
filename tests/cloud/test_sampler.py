"""The emulated QPU's program loading and sampling (``qhybrid.cloud.sampler``)."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit, qasm3
from qiskit.quantum_info import Operator
from qiskit_aer import AerSimulator

from qhybrid.cloud import sampler
from qhybrid.cloud.sampler import ProgramError, check_program, load_program, sample_instant, simulate
from tests.cloud.helpers import BELL, BELL_CANONICAL, X_ON_BIT0, X_ON_BIT0_CANONICAL

#: A transpiled QAOA layer on 4 qubits in the device's basis, as the trusted zone emits it.
QAOA = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[4] q;\nbit[4] c;\n'
    "rz(1.178097) q[3];\nsx q[3];\nrz(-1.570796) q[3];\nrz(-0.392699) q[1];\nsx q[1];\n"
    "cx q[3], q[1];\nsx q[3];\nrz(-1.302276) q[3];\nsx q[3];\nrz(1.302276) q[1];\ncx q[3], q[1];\n"
    "x q[0];\ncx q[2], q[0];\nrz(0.540345) q[0];\ncx q[2], q[0];\nsx q[2];\nrz(2.601248) q[2];\n"
    "c[0] = measure q[0];\nc[1] = measure q[1];\nc[2] = measure q[2];\nc[3] = measure q[3];\n"
)
REGISTERS = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[2] a;\nbit[1] b;\n'
    "x q[2];\na[0] = measure q[0];\na[1] = measure q[1];\nb[0] = measure q[2];\n"
)
CUSTOM_GATE = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\ngate myg(t) a, b { rz(t) a; cx a, b; }\n'
    "qubit[2] q;\nbit[2] c;\nh q[0];\nmyg(0.3) q[0], q[1];\nc = measure q;\n"
)
OTHER_INCLUDE = 'OPENQASM 3.0;\ninclude "qelib1.inc";\nqubit[1] q;\nbit[1] c;\nc = measure q;\n'


def _measurements(circuit: QuantumCircuit) -> list[tuple[int, int]]:
    return [
        (circuit.find_bit(op.qubits[0]).index, circuit.find_bit(op.clbits[0]).index)
        for op in circuit.data
        if op.operation.name == "measure"
    ]


@pytest.mark.parametrize(
    "program", [QAOA, REGISTERS, X_ON_BIT0, BELL, X_ON_BIT0_CANONICAL, BELL_CANONICAL], ids=str.__len__
)
def test_the_native_importer_reads_the_programs_as_the_reference_importer_does(program: str) -> None:
    native = sampler._load_native(program)
    reference = qasm3.loads(program)
    assert native is not None
    assert [(r.name, r.size) for r in native.cregs] == [(r.name, r.size) for r in reference.cregs]
    assert _measurements(native) == _measurements(reference)
    assert Operator(native.remove_final_measurements(inplace=False)).equiv(
        Operator(reference.remove_final_measurements(inplace=False))
    )


def test_the_reference_importer_is_asked_only_when_the_native_one_cannot_read_a_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    reference = qasm3.loads

    def counting(program: str) -> QuantumCircuit:
        calls.append(program)
        return reference(program)

    monkeypatch.setattr(qasm3, "loads", counting)
    load_program(QAOA)
    load_program(BELL)
    assert calls == []
    # A gate definition: the native importer refuses it, the reference one reads it.
    assert load_program(CUSTOM_GATE).num_qubits == 2
    assert calls == [CUSTOM_GATE]


def test_a_foreign_include_goes_to_the_reference_importer_without_a_native_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The native importer panics (a BaseException) on an include file it cannot find.
    def must_not_run(program: str) -> QuantumCircuit:
        raise AssertionError("native importer called")

    monkeypatch.setattr(qasm3, "loads_experimental", must_not_run)
    with pytest.raises(ProgramError, match="not valid OpenQASM 3"):
        load_program(OTHER_INCLUDE)


@pytest.mark.parametrize("program", ["OPENQASM 3.0;\nqubit[2] q\n", "garbage"])
def test_a_program_neither_importer_reads_is_refused_with_the_reference_reason(program: str) -> None:
    with pytest.raises(ProgramError, match=r"^program is not valid OpenQASM 3: \S"):
        check_program(program, max_qubits=8)


def test_simulate_gives_the_counts_of_a_simulator_seeded_per_task() -> None:
    # One simulator serves every task with the seed given per run: the counts are those a
    # simulator built with that seed gives (bit 0 first here, last in Qiskit's keys).
    first = simulate(QAOA, shots=500, seed=11, max_qubits=8)
    second = simulate(QAOA, shots=500, seed=11, max_qubits=8)
    other = simulate(QAOA, shots=500, seed=12, max_qubits=8)
    fresh = AerSimulator(seed_simulator=11).run(qasm3.loads(QAOA), shots=500).result().get_counts()
    assert first.counts == second.counts == {key[::-1]: count for key, count in fresh.items()}
    assert other.counts != first.counts
    assert sum(first.counts.values()) == 500


def test_the_instant_device_draws_uniform_shots_over_the_measured_bits_and_says_so() -> None:
    outcome = sample_instant(REGISTERS, shots=4000, seed=5, max_qubits=8)
    assert outcome.metadata["simulator"] == "none (emulated-instant: uniform random shots)"
    assert sum(outcome.counts.values()) == 4000
    # Three classical bits (a[2] and b[1]), all 8 outcomes, none far from 500: nothing simulated
    # (the program would always give 001 on a simulator).
    assert all(len(key) == 3 for key in outcome.counts)
    assert len(outcome.counts) == 8
    assert all(350 < count < 650 for count in outcome.counts.values())
    assert sample_instant(REGISTERS, shots=4000, seed=5, max_qubits=8).counts == outcome.counts
    assert simulate(REGISTERS, shots=100, seed=5, max_qubits=8).counts == {"001": 100}


def test_a_program_checked_at_submission_is_not_parsed_again_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    parses: list[str] = []
    real = sampler.load_program

    def counting(program: str) -> QuantumCircuit:
        parses.append(program)
        return real(program)

    monkeypatch.setattr(sampler, "load_program", counting)
    program = QAOA.replace("x q[0];", "x q[1];")  # a text no other test parsed
    check_program(program, max_qubits=8)
    first = simulate(program, shots=100, seed=3, max_qubits=8)
    assert len(parses) == 1
    # Taken once: a second run of the same text (a resubmission) parses it again, same counts.
    again = simulate(program, shots=100, seed=3, max_qubits=8)
    assert len(parses) == 2
    assert again.counts == first.counts


@pytest.mark.parametrize(
    "statement",
    [
        *(f"{gate} q[0];" for gate in ("x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "id")),
        *(f"{gate}(0.37) q[1];" for gate in ("rx", "ry", "rz", "p", "u1")),
        "u2(0.1, 0.2) q[0];",
        "u3(0.1, 0.2, 0.3) q[0];",
        *(f"{gate} q[0], q[1];" for gate in ("cx", "cy", "cz", "ch", "swap", "cp(0.3)", "crx(0.2)")),
        "cu(0.1, 0.2, 0.3, 0.4) q[0], q[1];",
        "ccx q[0], q[1], q[2];",
        "cswap q[0], q[1], q[2];",
        "rz(-1.5e-3) q[0];",
        "barrier q;",
    ],
)
def test_every_standard_gate_means_the_same_to_both_importers(statement: str) -> None:
    header = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[3] c;\nh q[2];\n'
    program = f"{header}{statement}\nc = measure q;\n"
    native = sampler._load_native(program)
    assert native is not None
    reference = qasm3.loads(program)
    assert Operator(native.remove_final_measurements(inplace=False)).equiv(
        Operator(reference.remove_final_measurements(inplace=False))
    )


_ONE_QUBIT = ("x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx")
_ROTATIONS = ("rx", "ry", "rz", "p")
_TWO_QUBIT = ("cx", "cy", "cz", "swap")


def _canonical_program(rng: np.random.Generator) -> str:
    """A random program in the trusted zone's canonical form: every gate it may carry, grid angles."""
    qubits = int(rng.integers(1, 9))
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";', f"qubit[{qubits}] q;", f"bit[{qubits}] c;"]
    for _ in range(int(rng.integers(0, 60))):
        kind = int(rng.integers(0, 4 if qubits > 1 else 2))
        angle = repr(int(rng.choice([rng.integers(-3141593, 3141594), rng.integers(-20, 21)])) / 1_000_000)
        first, second = (int(q) for q in rng.permutation(qubits)[:2]) if qubits > 1 else (0, 0)
        if kind == 0:
            lines.append(f"{rng.choice(_ONE_QUBIT)} q[{first}];")
        elif kind == 1:
            lines.append(f"{rng.choice(_ROTATIONS)}({angle}) q[{first}];")
        elif kind == 2:
            lines.append(f"{rng.choice(_TWO_QUBIT)} q[{first}], q[{second}];")
        else:
            lines.append(f"cp({angle}) q[{first}], q[{second}];")
    lines += [f"c[{bit}] = measure q[{int(q)}];" for bit, q in enumerate(rng.permutation(qubits))]
    return "\n".join(lines) + "\n"


def _same_circuit(first: QuantumCircuit, second: QuantumCircuit) -> bool:
    return (
        first == second
        and list(first.data) == list(second.data)
        and first.qregs == second.qregs
        and first.cregs == second.cregs
        and first.global_phase == second.global_phase
        and first.metadata == second.metadata
    )


def test_a_canonical_program_is_read_as_the_native_importer_reads_it() -> None:
    # Every gate the trusted zone may send, grid angles down to 1e-06 and their exponent spelling,
    # measurements in any qubit order: the very circuit of Qiskit's native importer.
    rng = np.random.default_rng(12)
    programs = [_canonical_program(rng) for _ in range(300)]
    programs += [QAOA, X_ON_BIT0_CANONICAL, BELL_CANONICAL]
    assert any("e-0" in program for program in programs)
    for program in programs:
        canonical = sampler._load_canonical(program)
        native = sampler._load_native(program)
        assert canonical is not None and native is not None
        assert _same_circuit(canonical, native), program
        assert _same_circuit(load_program(program), native)


@pytest.mark.parametrize(
    "line",
    [
        "rzz(0.5) q[0], q[1];",  # a Qiskit gate stdgates.inc does not define
        "u(0.1,0.2,0.3) q[0];",
        "id q[0];",
        "x(0.5) q[0];",  # a parameter the gate does not take
        "rz q[0];",
        "rz(pi) q[0];",
        "rz(0.5 ) q[0];",
        "rz(1/2) q[0];",
        "x q[3];",  # out of range
        "x q[01];",
        "x  q[0];",
        "cx q[0], q[0];",
        "cx q[0],q[1];",
        "c[3] = measure q[0];",
        "c[0] = measure q[7];",
        "barrier q;",
        "// a comment",
        "",
    ],
)
def test_anything_else_goes_to_the_importers_as_before(line: str) -> None:
    header = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[3] c;\n'
    program = f"{header}{line}\nc[0] = measure q[0];\n"
    assert sampler._load_canonical(program) is None
    try:
        expected: QuantumCircuit | str = sampler._load_native(program) or qasm3.loads(program)
    except Exception:
        expected = "refused"
    try:
        got: QuantumCircuit | str = load_program(program)
    except ProgramError:
        got = "refused"
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
    else:
        assert _same_circuit(got, expected)


@pytest.mark.parametrize(
    "program",
    [
        QAOA.replace("qubit[4] q;", "qubit[4] r;"),
        QAOA.replace("OPENQASM 3.0;", "OPENQASM 3;"),
        QAOA[:-1],  # no final newline
        QAOA.replace("bit[4] c;", "bit[0] c;"),
        REGISTERS,
    ],
    ids=str.__len__,
)
def test_other_headers_go_to_the_importers(program: str) -> None:
    assert sampler._load_canonical(program) is None


def test_the_canonical_reader_is_used_only_where_it_builds_the_native_importers_circuit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It builds gates through Qiskit records that are not public API: checked once at import.
    assert sampler._CANONICAL_READER_HOLDS  # on the installed Qiskit
    assert not sampler._canonical_reader_holds(lambda program: QuantumCircuit(3, 3))
    assert not sampler._canonical_reader_holds(
        lambda program: sampler._load_canonical(program.replace("0.375", "0.5"))
    )

    def broken(program: str) -> QuantumCircuit | None:
        raise AttributeError("_standard_gate")

    assert not sampler._canonical_reader_holds(broken)
    # Where it does not hold, programs go to the importers: the same circuit.
    monkeypatch.setattr(sampler, "_CANONICAL_READER_HOLDS", False)
    monkeypatch.setattr(sampler, "_load_canonical", broken)
    assert load_program(BELL_CANONICAL) == sampler._load_native(BELL_CANONICAL)

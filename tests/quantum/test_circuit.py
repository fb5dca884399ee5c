from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit, qasm3
from qiskit.circuit import CircuitInstruction
from qiskit.circuit.library import HGate
from qiskit.quantum_info import Statevector
from qiskit_aer import AerSimulator

from qhybrid.domain.device import DeviceTarget
from qhybrid.domain.qubo import Ising
from qhybrid.portfolio.classical import brute_force
from qhybrid.portfolio.postprocess import postprocess
from qhybrid.portfolio.selection import to_qubo
from qhybrid.quantum import circuit as circuit_module
from qhybrid.quantum.angles import QaoaAngles, optimize_angles
from qhybrid.quantum.circuit import CircuitMetrics, CircuitTooLargeError, qaoa_circuit, transpile_for
from qhybrid.quantum.decode import decode_counts
from qhybrid.quantum.qasm import to_openqasm3
from qhybrid.quantum.simulator import qaoa_statevector
from tests.portfolio.factories import random_problem
from tests.quantum.test_simulator import random_ising

LINE = tuple((i, i + 1) for i in range(7)) + tuple((i + 1, i) for i in range(7))
LINE_DEVICE = DeviceTarget("line8", 8, ("rz", "sx", "x", "cx"), LINE)
ALL_TO_ALL = DeviceTarget("ions", 32, ("rx", "ry", "rz", "cz"), None)
ANGLES = QaoaAngles(gammas=(0.3, 0.55), betas=(-0.45, -0.2), expectation=0.0, evaluations=0)


def simulated_probabilities(ising: Ising, angles: QaoaAngles) -> np.ndarray:
    cost = ising.cost_vector() / ising.scale()
    state = qaoa_statevector(cost, ising.num_qubits, angles.gammas, angles.betas)
    return np.abs(state) ** 2


def measured_distribution(circuit: QuantumCircuit, num_clbits: int) -> np.ndarray:
    """Exact distribution of the classical register; index bit k = classical bit k."""
    measured: dict[int, int] = {}
    for instruction in circuit.data:
        qubits = [circuit.find_bit(q).index for q in instruction.qubits]
        if instruction.operation.name == "measure":
            measured[circuit.find_bit(instruction.clbits[0]).index] = qubits[0]
        else:
            # Measurements must be final: nothing may act on a measured qubit afterwards.
            assert not set(qubits) & set(measured.values())
    assert sorted(measured) == list(range(num_clbits))
    unitary = circuit.remove_final_measurements(inplace=False)
    probabilities = Statevector(unitary).probabilities([measured[k] for k in range(num_clbits)])
    return np.asarray(probabilities, dtype=np.float64)


def test_logical_circuit_shape() -> None:
    ising = random_ising(4, seed=0)
    circuit = qaoa_circuit(ising, ANGLES)
    assert (circuit.num_qubits, circuit.num_clbits) == (4, 4)
    ops = circuit.count_ops()
    assert ops["h"] == 4
    assert ops["rx"] == 8
    assert ops["rzz"] == 2 * int(np.count_nonzero(ising.couplings))
    assert ops["rz"] == 2 * int(np.count_nonzero(ising.h))
    assert ops["measure"] == 4
    assert "measure" not in qaoa_circuit(ising, ANGLES, measure=False).count_ops()


@pytest.mark.parametrize("device", [LINE_DEVICE, ALL_TO_ALL], ids=lambda d: d.name)
@pytest.mark.parametrize("n", [3, 5, 6])
def test_transpiled_circuit_keeps_the_distribution(device: DeviceTarget, n: int) -> None:
    ising = random_ising(n, seed=20 + n, density=0.8)
    transpiled, metrics = transpile_for(qaoa_circuit(ising, ANGLES), device, seed=11)
    used = set(transpiled.count_ops()) - {"measure", "barrier"}
    assert used <= set(device.basis_gates)
    np.testing.assert_allclose(
        measured_distribution(transpiled, n), simulated_probabilities(ising, ANGLES), atol=1e-9
    )
    assert metrics.logical_qubits == n
    assert n <= metrics.physical_qubits <= device.num_qubits
    assert metrics.two_qubit_gates >= int(np.count_nonzero(ising.couplings))
    assert metrics.total_gates > metrics.two_qubit_gates
    assert metrics.depth > 0


def test_coupling_map_is_respected() -> None:
    ising = random_ising(6, seed=3)  # all-to-all couplings on a line: routing needed
    transpiled, metrics = transpile_for(qaoa_circuit(ising, ANGLES), LINE_DEVICE, seed=5)
    assert transpiled.num_qubits == 8
    edges = set(LINE)
    for instruction in transpiled.data:
        if len(instruction.qubits) == 2:
            pair = tuple(transpiled.find_bit(q).index for q in instruction.qubits)
            assert pair in edges
    assert metrics.two_qubit_gates == sum(1 for i in transpiled.data if len(i.qubits) == 2)


def test_all_to_all_keeps_the_logical_width() -> None:
    transpiled, metrics = transpile_for(qaoa_circuit(random_ising(5, seed=1), ANGLES), ALL_TO_ALL, seed=0)
    assert transpiled.num_qubits == 5
    assert metrics.physical_qubits == 5


def test_transpilation_is_seeded() -> None:
    circuit = qaoa_circuit(random_ising(6, seed=2), ANGLES)
    first, _ = transpile_for(circuit, LINE_DEVICE, seed=3)
    second, _ = transpile_for(circuit, LINE_DEVICE, seed=3)
    assert first == second


def test_too_large() -> None:
    circuit = qaoa_circuit(random_ising(9, seed=0), ANGLES)
    with pytest.raises(CircuitTooLargeError, match=r"9 qubits.*'line8' has only 8"):
        transpile_for(circuit, LINE_DEVICE, seed=0)
    with pytest.raises(ValueError, match="invalid coupling"):
        transpile_for(circuit, DeviceTarget("bad", 12, ("rz", "sx", "cx"), ((0, 12),)), seed=0)


def test_sampled_counts_decode_to_the_simulated_distribution() -> None:
    # End to end with a sampler: Aer prints classical bit 0 LAST, TaskResult wants it first.
    n = 5
    ising = random_ising(n, seed=8)
    transpiled, _ = transpile_for(qaoa_circuit(ising, ANGLES), LINE_DEVICE, seed=2)
    shots = 40_000
    result = AerSimulator(seed_simulator=1).run(transpiled, shots=shots).result()
    counts = {key[::-1]: value for key, value in result.get_counts().items()}
    bits, frequencies = decode_counts(counts, n)
    observed = np.zeros(2**n)
    observed[bits @ (1 << np.arange(n))] = frequencies / shots
    expected = simulated_probabilities(ising, ANGLES)
    assert 0.5 * np.abs(observed - expected).sum() < 0.03


def test_metrics_as_dict() -> None:
    metrics = CircuitMetrics(logical_qubits=3, physical_qubits=4, depth=10, two_qubit_gates=5, total_gates=20)
    assert metrics.as_dict() == {
        "logical_qubits": 3,
        "physical_qubits": 4,
        "depth": 10,
        "two_qubit_gates": 5,
        "total_gates": 20,
        "layout": None,
        "estimated_success": None,
        "readout_errors": None,
    }


def test_fake_heron_target_gives_layout_and_success_estimate() -> None:
    from qiskit_ibm_runtime.fake_provider import FakeTorino

    from qhybrid.quantum.qasm import to_openqasm3

    device = FakeTorino()
    target = DeviceTarget(
        name=device.name,
        num_qubits=device.num_qubits,
        basis_gates=tuple(device.target.operation_names),
        qiskit_target=device.target,
        provider="ibm",
    )
    circuit = QuantumCircuit(3, 3)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.cx(1, 2)
    circuit.measure(range(3), range(3))
    transpiled, metrics = transpile_for(circuit, target, seed=1)
    assert metrics.layout is not None and len(set(metrics.layout)) == 3
    assert metrics.estimated_success is not None and 0.5 < metrics.estimated_success < 1.0
    coupling = {tuple(edge) for edge in device.target.build_coupling_map().get_edges()}
    for instruction in transpiled.data:
        if len(instruction.qubits) == 2:
            pair = tuple(transpiled.find_bit(q).index for q in instruction.qubits)
            assert pair in coupling
    assert "qubit[133] q;" in to_openqasm3(transpiled)


def test_end_to_end_portfolio() -> None:
    # Problem -> QUBO -> Ising -> angles -> circuit -> device -> OpenQASM 3 -> sampler -> counts
    # -> decision, compared with the exact optimum.
    problem = random_problem(6, 3, seed=2, kind="negative")
    qubo, _ = to_qubo(problem)
    ising = qubo.to_ising()
    angles = optimize_angles(ising, 2, seed=0)
    transpiled, _ = transpile_for(qaoa_circuit(ising, angles), LINE_DEVICE, seed=0)
    program = qasm3.loads(to_openqasm3(transpiled))
    result = AerSimulator(seed_simulator=3).run(program, shots=4000).result()
    counts = {key[::-1]: value for key, value in result.get_counts().items()}
    bits, frequencies = decode_counts(counts, 6)
    optimum = brute_force(problem)
    analysis = postprocess(problem, bits, frequencies, optimum_bits=optimum.bits)
    assert analysis.shots == 4000
    assert analysis.quantum_source == "sample"
    assert analysis.quantum_best_bits == optimum.bits
    assert analysis.quantum_best_objective == pytest.approx(optimum.objective)
    assert analysis.feasible_share > 0.6
    expected = simulated_probabilities(ising, angles)[sum(b << i for i, b in enumerate(optimum.bits))]
    assert analysis.optimum_share == pytest.approx(expected, abs=0.02)


def test_all_to_all_transpile_is_qiskits_level_3_from_one_pass_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import qiskit
    from qiskit.transpiler import generate_preset_pass_manager as real

    from qhybrid.quantum import circuit as circuit_module

    built: list[int] = []

    def counted(*args: object, **kwargs: object) -> object:
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(circuit_module, "generate_preset_pass_manager", counted)
    monkeypatch.setattr(circuit_module._PASS_MANAGERS, "cache", {}, raising=False)
    device = DeviceTarget("emulator", 32, ("rz", "sx", "x", "cx"), None)
    for seed in range(4):
        circuit = qaoa_circuit(random_ising(5 + seed, seed=seed, density=0.8), ANGLES)
        ours, _ = transpile_for(circuit, device, seed=seed)
        theirs = qiskit.transpile(
            circuit, basis_gates=list(device.basis_gates), optimization_level=3, seed_transpiler=seed
        )
        assert to_openqasm3(ours) == to_openqasm3(theirs)
    # Built once for this thread and basis, whatever the seed; a coupling map still transpiles anew.
    assert built == [1]
    transpile_for(qaoa_circuit(random_ising(5, seed=1), ANGLES), LINE_DEVICE, seed=0)
    assert built == [1]


def test_metrics_count_the_depth_as_qiskit_does() -> None:
    from qhybrid.quantum.circuit import circuit_metrics

    device = DeviceTarget("emulator", 32, ("rz", "sx", "x", "cx"), None)
    for seed in range(3):
        transpiled, metrics = transpile_for(qaoa_circuit(random_ising(6, seed=seed), ANGLES), device, seed=0)
        assert metrics.depth == transpiled.depth()
    # Barriers line the wires up without a layer; measurements count on their bits too.
    circuit = QuantumCircuit(3, 2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.barrier()
    circuit.x(2)
    circuit.measure(2, 0)
    circuit.measure(0, 1)
    circuit.x(1)
    metrics = circuit_metrics(3, circuit)
    assert metrics.depth == circuit.depth() == 4
    assert (metrics.physical_qubits, metrics.two_qubit_gates, metrics.total_gates) == (3, 1, 4)


def test_metrics_agree_with_qiskit_on_random_circuits() -> None:
    # The operand tuples' wire numbers are remembered per tuple: repeated and mixed operands,
    # partial barriers, resets and measurements must still give Qiskit's own figures.
    from qhybrid.quantum.circuit import circuit_metrics

    rng = np.random.default_rng(7)
    for _ in range(20):
        circuit = QuantumCircuit(5, 3)
        idle = int(rng.integers(0, 5))  # one qubit may stay untouched
        used = [q for q in range(5) if q != idle]
        for _ in range(int(rng.integers(5, 40))):
            kind = int(rng.integers(0, 6))
            a, b = (int(q) for q in rng.choice(used, size=2, replace=False))
            if kind == 0:
                circuit.rz(float(rng.normal()), a)
            elif kind == 1:
                circuit.cx(a, b)
            elif kind == 2:
                circuit.barrier(a) if rng.random() < 0.5 else circuit.barrier(a, b)
            elif kind == 3:
                circuit.measure(a, int(rng.integers(0, 3)))
            elif kind == 4:
                circuit.reset(a)
            else:
                circuit.sx(b)
        metrics = circuit_metrics(5, circuit)
        ops = circuit.count_ops()
        gates = sum(
            count for name, count in ops.items() if name not in ("measure", "barrier", "reset", "delay")
        )
        touched = {
            circuit.find_bit(qubit).index
            for instruction in circuit.data
            if instruction.name != "barrier"
            for qubit in instruction.qubits
        }
        assert metrics.depth == circuit.depth()
        assert metrics.total_gates == gates
        assert metrics.two_qubit_gates == ops.get("cx", 0)
        assert metrics.physical_qubits == len(touched)


@pytest.mark.parametrize("native", [True, False])
def test_fast_gates_are_the_public_methods_records(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # _Gates appends through Qiskit's unchecked path (or, without its native gate enum, the
    # public methods): the instructions must be exactly those the public methods make.
    if not native:
        monkeypatch.setattr(circuit_module, "_NATIVE", {})
    fast, public = QuantumCircuit(3, 3), QuantumCircuit(3, 3)
    gates = circuit_module._Gates(fast)
    for name, qubits, params in [
        ("x", (2,), ()),
        ("cx", (0, 2), ()),
        ("ry", (1,), (0.25,)),
        ("rz", (0,), (-1.5,)),
        ("rzz", (1, 2), (0.75,)),
        ("rxx", (2, 0), (np.float64(0.125),)),
        ("ryy", (0, 1), (3.0,)),
    ]:
        getattr(gates, name)(*params, *qubits)
        getattr(public, name)(*params, *qubits)
    assert len(fast.data) == 7
    assert list(fast.data) == list(public.data)
    assert [type(p) for i in fast.data for p in i.params] == [float] * 5
    assert fast == public


def test_the_fast_path_is_on_for_the_installed_qiskit_and_off_when_its_records_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On the pinned Qiskit the self-check passes (the benchmarks' figures assume the fast path)...
    assert set(circuit_module._NATIVE) == {"x", "cx", "ry", "rz", "rzz", "rxx", "ryy"}

    # ... and a Qiskit whose private records differ (here: one that builds another gate) turns it off.
    class WrongRecords:
        @staticmethod
        def from_standard(gate: object, bits: tuple[object, ...], params: tuple[float, ...]) -> object:
            return CircuitInstruction(HGate(), bits[:1])

    monkeypatch.setattr(circuit_module, "CircuitInstruction", WrongRecords)
    assert circuit_module._native_gates() == {}


def test_transpiling_on_the_calling_thread_gives_the_same_programs(monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker turns Qiskit's Rust thread pool off (transpile_on_calling_thread): on the all-to-all
    # device every job's program must be the one the pool gives, byte for byte. (With a coupling
    # map, level 3's layout varies from run to run with or without the pool: see benchmarks.md.)
    device = DeviceTarget("emulator", 32, ("rz", "sx", "x", "cx"), None)
    rng = np.random.default_rng(7)
    circuits = []
    for seed in range(40):
        gammas, betas = rng.uniform(-1, 1, (2, 1 + seed % 2))
        angles = QaoaAngles(gammas=tuple(gammas), betas=tuple(betas), expectation=0.0, evaluations=0)
        ising = random_ising(3 + seed % 6, seed=100 + seed, density=float(rng.uniform(0.3, 1.0)))
        circuits.append(qaoa_circuit(ising, angles))
    monkeypatch.delenv(circuit_module.QISKIT_SERIAL_VARIABLE, raising=False)
    pooled = [to_openqasm3(transpile_for(c, device, seed=seed)[0]) for seed, c in enumerate(circuits)]
    monkeypatch.setenv(circuit_module.QISKIT_SERIAL_VARIABLE, "TRUE")
    serial = [to_openqasm3(transpile_for(c, device, seed=seed)[0]) for seed, c in enumerate(circuits)]
    assert serial == pooled


def test_transpile_on_calling_thread_sets_qiskits_switch_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv(circuit_module.QISKIT_SERIAL_VARIABLE, "unset")  # restored afterwards
    monkeypatch.delenv(circuit_module.QISKIT_SERIAL_VARIABLE)
    assert circuit_module.transpile_on_calling_thread() is True
    assert os.environ[circuit_module.QISKIT_SERIAL_VARIABLE] == "TRUE"
    # An operator's own value stands.
    monkeypatch.setenv(circuit_module.QISKIT_SERIAL_VARIABLE, "FALSE")
    assert circuit_module.transpile_on_calling_thread() is False
    assert os.environ[circuit_module.QISKIT_SERIAL_VARIABLE] == "FALSE"

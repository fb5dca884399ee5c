from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qiskit import qasm3
from qiskit_aer import AerSimulator

from benchmarks.learn_angles import ising_of, real_problem
from qhybrid.domain.device import DeviceTarget
from qhybrid.domain.qubo import Ising
from qhybrid.portfolio.classical import brute_force
from qhybrid.quantum.angles import (
    TableEntry,
    angle_table,
    interpolate_angles,
    parse_angle_table,
    table_angles,
)
from qhybrid.quantum.circuit import transpile_for
from qhybrid.quantum.engine import (
    QaoaPlan,
    build_circuit,
    final_distribution,
    plan_qaoa,
    simulate_qaoa,
)
from qhybrid.quantum.qasm import to_openqasm3
from qhybrid.quantum.spec import QaoaSpec
from qhybrid.quantum.subspace import ring_edges
from tests.quantum.test_simulator import random_ising

LINE = tuple((i, i + 1) for i in range(5)) + tuple((i + 1, i) for i in range(5))
LINE_DEVICE = DeviceTarget("line6", 6, ("rz", "sx", "x", "cx"), LINE)
ALL_TO_ALL = DeviceTarget("ions", 32, ("rx", "ry", "rz", "cz"), None)


@pytest.fixture(scope="module")
def real_instance() -> tuple[Ising, int, np.ndarray, tuple[int, ...]]:
    problem = real_problem(10, 5, seed=12345)
    return ising_of(problem), problem.budget, np.linspace(0.1, 0.9, 10), brute_force(problem).bits


def test_interpolate_angles() -> None:
    gammas, betas = interpolate_angles(np.array([0.4]), np.array([-0.2]))
    np.testing.assert_allclose(gammas, [0.4, 0.4])
    np.testing.assert_allclose(betas, [-0.2, -0.2])
    gammas, _ = interpolate_angles(np.array([0.2, 0.6]), np.array([0.0, 0.0]))
    # x'_1 = x_1, x'_2 = (x_1 + x_2)/2, x'_3 = x_2
    np.testing.assert_allclose(gammas, [0.2, 0.4, 0.6])
    with pytest.raises(ValueError, match="as many"):
        interpolate_angles(np.array([0.1]), np.array([0.1, 0.2]))


def entry(variant: str, n: int, ratio: float, reps: int, objective: str = "mean") -> TableEntry:
    return TableEntry(variant, objective, n, ratio, tuple([0.1 * n] * reps), tuple([ratio] * reps))


def test_table_lookup_rules() -> None:
    table = (
        entry("xy", 8, 0.5, 1),
        entry("xy", 12, 0.5, 1),
        entry("xy", 12, 0.25, 1),
        entry("xy", 12, 0.5, 2),
        entry("xy", 12, 0.5, 2, "cvar"),
        entry("x", 12, 0.5, 1),
    )
    found = table_angles(table, variant="xy", objective="mean", reps=1, num_qubits=20, ratio=0.45)
    assert found is not None
    theta, chosen, added = found
    assert (chosen.num_qubits, chosen.ratio, added) == (12, 0.5, 0)
    np.testing.assert_allclose(theta, [1.2, 0.5])
    # Deeper than the table: INTERP from the deepest entry.
    found = table_angles(table, variant="xy", objective="mean", reps=4, num_qubits=12, ratio=0.5)
    assert found is not None
    assert found[0].size == 8 and found[1].reps == 2 and found[2] == 2
    # CVaR entries first, mean as the fallback.
    found = table_angles(table, variant="xy", objective="cvar", reps=2, num_qubits=12, ratio=0.5)
    assert found is not None and found[1].objective == "cvar"
    found = table_angles(table, variant="x", objective="cvar", reps=1, num_qubits=12, ratio=0.5)
    assert found is not None and found[1].objective == "mean"
    assert table_angles(table, variant="x-warm", objective="mean", reps=1, num_qubits=12, ratio=0.5) is None
    # x-warm: the nearest ε comes before the nearest ratio.
    warm = (
        TableEntry("x-warm", "mean", 12, 0.5, (1.0,), (1.0,), warm_epsilon=0.25),
        TableEntry("x-warm", "mean", 12, 0.25, (2.0,), (2.0,), warm_epsilon=0.1),
    )
    found = table_angles(
        warm, variant="x-warm", objective="mean", reps=1, num_qubits=12, ratio=0.5, warm_epsilon=0.12
    )
    assert found is not None and found[1].warm_epsilon == 0.1


def test_malformed_table() -> None:
    with pytest.raises(ValueError, match="malformed"):
        parse_angle_table('{"entries": [{"variant": "x"}]}')
    row = {"variant": "x", "objective": "mean", "num_qubits": 4, "ratio": 0.5, "gammas": [], "betas": []}
    with pytest.raises(ValueError, match="malformed"):
        parse_angle_table(json.dumps({"entries": [row]}))


def test_shipped_table_covers_every_variant(tmp_path: Path) -> None:
    table = angle_table()
    for variant in ("x", "x-warm", "xy", "xy-basis"):
        for objective in ("mean", "cvar"):
            depths = {e.reps for e in table if e.variant == variant and e.objective == objective}
            assert depths == {1, 2, 3, 4, 5}, (variant, objective)
    assert all(np.all(np.isfinite(e.gammas)) and np.all(np.isfinite(e.betas)) for e in table)
    assert {e.warm_epsilon for e in table if e.variant == "x-warm"} == {0.1, 0.25}
    assert {e.warm_epsilon for e in table if e.variant != "x-warm"} == {None}
    copy = tmp_path / "table.json"
    copy.write_text(json.dumps({"entries": [{**vars(table[0])}]}))
    assert angle_table(copy) == (table[0],)


@pytest.mark.parametrize(
    ("mixer", "objective", "warm"),
    [("xy", "mean", False), ("xy", "cvar", False), ("x", "mean", False), ("x-warm", "mean", True)],
)
def test_table_start_refined_beats_the_ramp_start(
    real_instance: tuple[Ising, int, np.ndarray, tuple[int, ...]], mixer: str, objective: str, warm: bool
) -> None:
    ising, budget, relaxed, _ = real_instance
    spec = QaoaSpec(mixer=mixer, reps=2, objective=objective, init="table", maxiter=30)  # type: ignore[arg-type]
    warm_start = relaxed if warm else None
    plan = plan_qaoa(ising, spec, seed=0, hamming_weight=budget, warm_start=warm_start)
    assert plan.simulated["table_used"] == 1.0
    assert (plan.simulated["table_num_qubits"], plan.simulated["table_ratio"]) == (10.0, 0.5)
    model = simulate_qaoa(ising, spec, hamming_weight=budget, warm_start=warm_start)
    ramp_value = model.value(model.ramp_start(2)) * model.spread + model.shift
    assert plan.simulated["objective"] <= ramp_value + 1e-12
    assert plan.simulated["objective"] <= plan.simulated["start_objective"] + 1e-12


def test_plan_facts_agree_with_the_distribution(
    real_instance: tuple[Ising, int, np.ndarray, tuple[int, ...]],
) -> None:
    ising, budget, _, optimum = real_instance
    plan = plan_qaoa(ising, QaoaSpec(mixer="xy", reps=2, maxiter=20), seed=0, hamming_weight=budget)
    bits, probabilities = final_distribution(ising, plan)
    assert bits.shape == (252, 10) and bits.dtype == np.uint8
    assert np.all(bits.sum(axis=1) == budget)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-12)
    energies = ising.energy_of_bits(bits)
    assert plan.angles.expectation == pytest.approx(float(probabilities @ energies), rel=1e-9)
    assert plan.simulated["expectation"] == plan.angles.expectation
    assert plan.simulated["objective"] == pytest.approx(plan.angles.expectation, rel=1e-9)
    row = int(np.flatnonzero((bits == np.array(optimum)).all(axis=1))[0])
    assert plan.simulated["ground_probability"] == pytest.approx(probabilities[row], rel=1e-9)
    assert probabilities[row] > 1.0 / 252  # amplified over the Dicke state
    assert 0.5 < plan.simulated["approximation_ratio"] <= 1.0
    assert plan.simulated["dimension"] == 252.0
    assert plan.angles.evaluations == int(plan.simulated["evaluations"]) > 0
    json.dumps(plan.as_dict())
    assert plan.as_dict()["spec"] == plan.spec.as_dict()


def test_x_distribution_covers_all_states() -> None:
    ising = random_ising(5, seed=3)
    plan = plan_qaoa(ising, QaoaSpec(mixer="x", reps=1, init="ramp", maxiter=10), seed=1)
    bits, probabilities = final_distribution(ising, plan)
    assert bits.shape == (32, 5)
    np.testing.assert_array_equal(bits @ (1 << np.arange(5)), np.arange(32))
    assert probabilities.sum() == pytest.approx(1.0)
    assert plan.simulated["table_used"] == 0.0


def test_deterministic_for_a_seed() -> None:
    ising = random_ising(7, seed=4)
    spec = QaoaSpec(mixer="xy", reps=2, init="ramp", maxiter=20)
    first = plan_qaoa(ising, spec, seed=3, hamming_weight=3)
    second = plan_qaoa(ising, spec, seed=3, hamming_weight=3)
    assert first.angles == second.angles
    assert {k: v for k, v in first.simulated.items() if k != "seconds"} == {
        k: v for k, v in second.simulated.items() if k != "seconds"
    }


def test_warm_start_is_stored_as_used() -> None:
    ising = random_ising(5, seed=8)
    relaxed = np.array([0.0, 0.9, 0.4, 1.0, 0.6])
    spec = QaoaSpec(mixer="xy", reps=1, maxiter=0)
    xy = plan_qaoa(ising, spec, seed=0, hamming_weight=2, warm_start=relaxed)
    assert xy.warm_start == (0.0, 1.0, 0.0, 1.0, 0.0)
    warm_spec = QaoaSpec(mixer="x-warm", reps=1, maxiter=0, warm_epsilon=0.2)
    warm = plan_qaoa(ising, warm_spec, seed=0, warm_start=relaxed)
    assert warm.warm_start == pytest.approx((0.2, 0.8, 0.4, 0.8, 0.6))
    assert warm.simulated["objective"] == warm.simulated["start_objective"]


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        (QaoaSpec(mixer="xy"), {}, "needs the hamming_weight"),
        (QaoaSpec(mixer="xy"), {"hamming_weight": 7}, "hamming_weight must be in"),
        (QaoaSpec(mixer="x-warm"), {}, "needs warm_start"),
        (QaoaSpec(mixer="x"), {"warm_start": np.full(5, 0.5)}, "takes no warm_start"),
        (QaoaSpec(mixer="x-warm"), {"warm_start": np.full(4, 0.5)}, "warm_start must hold 5"),
        (QaoaSpec(mixer="x-warm"), {"warm_start": np.full(5, 1.5)}, "warm_start must hold 5"),
    ],
)
def test_plan_validation(spec: QaoaSpec, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_qaoa(random_ising(5, seed=0), spec, seed=0, **kwargs)  # type: ignore[arg-type]


def test_xy_circuit_layout() -> None:
    ising = random_ising(5, seed=6)
    plan = plan_qaoa(ising, QaoaSpec(mixer="xy", reps=2, maxiter=0), seed=0, hamming_weight=2)
    circuit = build_circuit(ising, plan)
    mixer = [
        (instruction.operation.name, tuple(circuit.find_bit(q).index for q in instruction.qubits))
        for instruction in circuit.data
        if instruction.operation.name in ("rxx", "ryy")
    ]
    expected = [(name, edge) for edge in ring_edges(5) for name in ("rxx", "ryy")]
    assert mixer == expected * 2
    assert circuit.count_ops()["measure"] == 5


def sampled_distribution(program: str, num_bits: int, shots: int) -> np.ndarray:
    circuit = qasm3.loads(program)
    counts = AerSimulator().run(circuit, shots=shots, seed_simulator=7).result().get_counts()
    distribution = np.zeros(1 << num_bits)
    for key, count in counts.items():
        distribution[int(key.replace(" ", ""), 2)] += count / shots  # Qiskit prints bit 0 last
    return distribution


@pytest.mark.parametrize("device", [LINE_DEVICE, ALL_TO_ALL], ids=lambda d: d.name)
@pytest.mark.parametrize("variant", ["xy", "xy-basis", "x-warm", "xy-warm"])
def test_exported_circuit_samples_the_simulated_distribution(device: DeviceTarget, variant: str) -> None:
    n, shots = 6, 40_000
    ising = random_ising(n, seed=21, density=0.8)
    mixer = "xy" if variant == "xy-basis" else variant
    warm = np.array([0.9, 0.1, 0.6, 0.3, 0.8, 0.2]) if variant != "xy" else None
    spec = QaoaSpec(mixer=mixer, reps=2, init="ramp", maxiter=15)  # type: ignore[arg-type]
    plan = plan_qaoa(ising, spec, seed=0, hamming_weight=3, warm_start=warm)
    transpiled, metrics = transpile_for(build_circuit(ising, plan), device, seed=5)
    assert set(transpiled.count_ops()) - {"measure", "barrier"} <= set(device.basis_gates)
    assert metrics.logical_qubits == n
    sampled = sampled_distribution(to_openqasm3(transpiled), n, shots)
    bits, probabilities = final_distribution(ising, plan)
    simulated = np.zeros(1 << n)
    simulated[bits.astype(np.int64) @ (1 << np.arange(n))] = probabilities
    assert 0.5 * np.abs(sampled - simulated).sum() < 0.05


def test_plan_is_frozen() -> None:
    ising = random_ising(4, seed=0)
    plan = plan_qaoa(ising, QaoaSpec(mixer="x", reps=1, maxiter=0), seed=0)
    assert isinstance(plan, QaoaPlan)
    with pytest.raises(AttributeError):
        plan.hamming_weight = 3  # type: ignore[misc]


def test_default_selection_variant_puts_at_least_the_rounding_on_the_optimum() -> None:
    """xy-warm against conditioned rounding on one real instance, exactly (ratios in one run)."""
    from qhybrid.domain import conditioned
    from qhybrid.portfolio.baselines import exact
    from qhybrid.portfolio.data import sp500_problem

    problem = sp500_problem(10, 5, seed=1)
    optimum = np.array(exact(problem).bits, dtype=np.uint8)
    ising = problem.to_qubo()[0].to_ising()
    relaxed = problem.relaxation()
    plan = plan_qaoa(ising, QaoaSpec(mixer="xy-warm", reps=2), seed=0, hamming_weight=5, warm_start=relaxed)
    bits, probabilities = final_distribution(ising, plan)
    circuit = float(probabilities[np.all(bits == optimum, axis=1)].sum())
    rounding = float(np.exp(conditioned.log_probabilities(relaxed, 5, optimum[np.newaxis, :]))[0])
    clipped = float(
        np.exp(conditioned.log_probabilities(np.clip(relaxed, 0.1, 0.9), 5, optimum[np.newaxis, :]))[0]
    )
    assert circuit >= rounding * (1.0 - 1e-6)  # ε = 1e-9 margin of the start
    assert circuit > clipped  # the reference clips the weights to [0.1, 0.9]
    # The angles started at γ = β = 0 (the rounding itself) and only moved to lower the mean.
    assert plan.simulated["objective"] <= plan.simulated["start_objective"] + 1e-12


@pytest.mark.parametrize(("mixer", "objective", "warm"), [("xy", "mean", False), ("xy-warm", "cvar", True)])
def test_candidates_simulated_together_give_each_ones_own_value(
    real_instance: tuple[Ising, int, np.ndarray, tuple[int, ...]], mixer: str, objective: str, warm: bool
) -> None:
    ising, budget, relaxed, _ = real_instance
    spec = QaoaSpec(mixer=mixer, reps=2, objective=objective)  # type: ignore[arg-type]
    model = simulate_qaoa(ising, spec, hamming_weight=budget, warm_start=relaxed if warm else None)
    assert hasattr(model.simulator, "values")  # the subspace simulator batches
    rng = np.random.default_rng(0)
    thetas = [np.zeros(4)] + [rng.normal(0.0, 0.5, size=4) for _ in range(9)]
    before = model.evaluations
    together = model.values(thetas)
    assert model.evaluations == before + 10
    # The same arithmetic on every amplitude: equal to the last bit, so argmin picks the same one.
    assert together == [model.value(theta) for theta in thetas]
    with pytest.raises(ValueError, match="same even length"):
        model.values([np.zeros(4), np.zeros(2)])

"""Every QAOA variant: simulator state against Qiskit's statevector of the built circuit, gradients."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit.quantum_info import Statevector

from qhybrid.domain.qubo import Ising
from qhybrid.quantum.angles import QaoaAngles
from qhybrid.quantum.engine import QaoaPlan, build_circuit, plan_statevector, simulate_qaoa
from qhybrid.quantum.objective import CvarObjective, MeanObjective, Objective
from qhybrid.quantum.simulator import FullStateSimulator, warm_start_thetas
from qhybrid.quantum.spec import QaoaSpec
from qhybrid.quantum.subspace import (
    SubspaceXYSimulator,
    build_subspace,
    conditioned_state,
    subspace_cost,
    weight_basis,
)
from tests.quantum.test_simulator import random_ising

VARIANTS = ["x", "x-warm", "xy", "xy-basis", "xy-warm"]


def random_plan(ising: Ising, variant: str, reps: int, seed: int) -> QaoaPlan:
    """A plan with random angles (no optimisation), as plan_qaoa would store it."""
    n = ising.num_qubits
    rng = np.random.default_rng(seed)
    weight = int(rng.integers(1, n)) if n > 1 else 1
    warm: tuple[float, ...] | None = None
    if variant in ("x-warm", "xy-warm"):
        warm = tuple(float(v) for v in np.clip(rng.random(n), 0.25, 0.75))
    elif variant == "xy-basis":
        bits = np.zeros(n)
        bits[rng.choice(n, size=weight, replace=False)] = 1.0
        warm = tuple(float(b) for b in bits)
    mixer = "xy" if variant == "xy-basis" else variant
    angles = QaoaAngles(
        gammas=tuple(float(g) for g in rng.uniform(-1.0, 1.0, size=reps)),
        betas=tuple(float(b) for b in rng.uniform(-1.0, 1.0, size=reps)),
        expectation=0.0,
        evaluations=0,
    )
    spec = QaoaSpec(mixer=mixer, reps=reps)  # type: ignore[arg-type]
    return QaoaPlan(spec=spec, angles=angles, hamming_weight=weight, warm_start=warm, simulated={})


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n", range(3, 9))
@pytest.mark.parametrize("reps", [1, 2, 3])
def test_simulator_matches_the_circuit(variant: str, n: int, reps: int) -> None:
    ising = random_ising(n, seed=100 * n + reps, density=0.7)
    plan = random_plan(ising, variant, reps, seed=n + 10 * reps)
    reference = Statevector(build_circuit(ising, plan, measure=False)).data
    state = plan_statevector(ising, plan)
    if variant.startswith("xy"):
        assert plan.hamming_weight is not None
        basis = weight_basis(n, plan.hamming_weight)
        outside = np.ones(1 << n, dtype=bool)
        outside[basis] = False
        assert np.abs(reference[outside]).max(initial=0.0) < 1e-10
        reference = reference[basis]
    np.testing.assert_allclose(np.abs(state) ** 2, np.abs(reference) ** 2, atol=1e-10)
    # Equal up to a global phase, not only in distribution.
    assert abs(np.vdot(reference, state)) == pytest.approx(1.0, abs=1e-10)


def test_warm_start_state_has_the_relaxed_marginals() -> None:
    values = np.array([0.0, 0.3, 0.5, 0.9, 1.0])
    thetas = warm_start_thetas(values, 0.1)
    simulator = FullStateSimulator(np.zeros(32), 5, thetas=thetas)
    probabilities = np.abs(simulator.initial_state()) ** 2
    ones = [(probabilities * ((np.arange(32) >> i) & 1)).sum() for i in range(5)]
    np.testing.assert_allclose(ones, np.clip(values, 0.1, 0.9), atol=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        warm_start_thetas(np.array([1.2]), 0.1)
    with pytest.raises(ValueError, match="warm_epsilon"):
        warm_start_thetas(np.array([0.2]), 0.7)
    with pytest.raises(ValueError, match="thetas"):
        FullStateSimulator(np.zeros(8), 3, thetas=np.zeros(2))


def simulator_for(variant: str, ising: Ising, seed: int) -> tuple[object, np.ndarray]:
    n = ising.num_qubits
    rng = np.random.default_rng(seed)
    if variant in ("x", "x-warm"):
        cost = ising.cost_vector() / ising.scale()
        thetas = warm_start_thetas(rng.random(n), 0.2) if variant == "x-warm" else None
        return FullStateSimulator(cost, n, thetas=thetas), cost
    subspace = build_subspace(n, n // 2)
    cost = subspace_cost(ising, subspace.basis) / ising.scale()
    if variant == "xy-warm":
        initial = conditioned_state(subspace, rng.uniform(0.05, 0.95, size=n))
        return SubspaceXYSimulator(subspace, cost, initial=initial), cost
    start = int(subspace.basis[rng.integers(subspace.dimension)]) if variant == "xy-basis" else None
    return SubspaceXYSimulator(subspace, cost, start=start), cost


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("objective_name", ["mean", "cvar"])
@pytest.mark.parametrize("n", [4, 7])
def test_adjoint_gradient_matches_finite_differences(variant: str, objective_name: str, n: int) -> None:
    ising = random_ising(n, seed=5 * n)
    simulator, cost = simulator_for(variant, ising, seed=n)
    assert isinstance(simulator, FullStateSimulator | SubspaceXYSimulator)
    objective: Objective = CvarObjective(cost, 0.3) if objective_name == "cvar" else MeanObjective(cost)
    rng = np.random.default_rng(n)
    gammas = list(rng.uniform(-1.0, 1.0, size=3))
    betas = list(rng.uniform(-1.0, 1.0, size=3))
    value, grad_gamma, grad_beta = simulator.value_and_gradient(gammas, betas, objective)
    assert value == pytest.approx(simulator.value(gammas, betas, objective), abs=1e-12)
    eps = 1e-6
    for k in range(3):
        for angles, gradient, is_gamma in ((gammas, grad_gamma, True), (betas, grad_beta, False)):
            up, down = list(angles), list(angles)
            up[k] += eps
            down[k] -= eps
            if is_gamma:
                numeric = simulator.value(up, betas, objective) - simulator.value(down, betas, objective)
            else:
                numeric = simulator.value(gammas, up, objective) - simulator.value(gammas, down, objective)
            assert gradient[k] == pytest.approx(numeric / (2 * eps), abs=1e-6)


def test_simulated_qaoa_gradient_in_search_units() -> None:
    ising = random_ising(6, seed=1)
    model = simulate_qaoa(ising, QaoaSpec(mixer="xy", objective="cvar", cvar_alpha=0.25), hamming_weight=3)
    theta = np.array([0.4, 0.9, -0.3, -0.5])
    value, gradient = model.value_and_gradient(theta)
    eps = 1e-6
    for k in range(4):
        step = np.zeros(4)
        step[k] = eps
        numeric = (model.value(theta + step) - model.value(theta - step)) / (2 * eps)
        assert gradient[k] == pytest.approx(numeric, abs=1e-6)
    assert model.evaluations == 9
    assert value == pytest.approx(model.value(theta))


@pytest.mark.parametrize("n", [9, 13, 16])
def test_cost_vector_on_larger_sizes(n: int) -> None:
    # The cost vector is assembled from two halves of the spins: check odd and even splits.
    ising = random_ising(n, seed=n)
    cost = ising.cost_vector()
    assert cost.shape == (1 << n,) and cost.flags["C_CONTIGUOUS"]
    index = np.random.default_rng(n).integers(0, 1 << n, size=200)
    bits = (index[:, np.newaxis] >> np.arange(n)) & 1
    np.testing.assert_allclose(cost[index], ising.energy_of_bits(bits), atol=1e-11)

from __future__ import annotations

import numpy as np
import pytest

from qhybrid.portfolio.classical import brute_force
from qhybrid.portfolio.formulation import PENALTY_MARGIN
from qhybrid.portfolio.selection import penalty_weight, to_qubo
from tests.portfolio.factories import all_bits, random_problem

KINDS = ("psd", "negative", "large_mu", "indefinite")
CASES = [
    (kind, n, budget, seed)
    for kind in KINDS
    for n, budget in [(1, 0), (1, 1), (3, 1), (4, 2), (5, 0), (5, 5), (6, 2), (7, 4), (8, 3), (10, 5)]
    for seed in range(3)
]


@pytest.mark.parametrize(("kind", "n", "budget", "seed"), CASES)
def test_energy_is_objective_plus_penalty_everywhere(kind: str, n: int, budget: int, seed: int) -> None:
    problem = random_problem(n, budget, seed, kind=kind)
    qubo, penalty = to_qubo(problem)
    assert penalty == penalty_weight(problem) > 0.0
    x = all_bits(n)
    expected = problem.objective(x) + penalty * (x.sum(axis=1) - budget) ** 2
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(qubo.energy(x), expected, rtol=0.0, atol=1e-12 * scale)
    # The Ising form (what the quantum side sees) has the same energies, index by index.
    np.testing.assert_allclose(qubo.to_ising().cost_vector(), expected, rtol=0.0, atol=1e-11 * scale)


@pytest.mark.parametrize(("kind", "n", "budget", "seed"), CASES)
def test_qubo_minimum_is_the_feasible_optimum(kind: str, n: int, budget: int, seed: int) -> None:
    problem = random_problem(n, budget, seed, kind=kind)
    qubo, _ = to_qubo(problem)
    x = all_bits(n)
    best = x[int(np.argmin(qubo.energy(x)))]
    assert problem.is_feasible(best)[0]
    solution = brute_force(problem)
    assert tuple(int(b) for b in best) == solution.bits
    assert float(problem.objective(best)[0]) == pytest.approx(solution.objective)


def test_every_infeasible_vector_has_a_better_neighbour_towards_the_budget() -> None:
    # The step of the docstring's argument, checked literally on a few instances.
    for seed in range(5):
        for kind in KINDS:
            problem = random_problem(7, 3, seed, kind=kind)
            qubo, _ = to_qubo(problem)
            x = all_bits(7)
            energies = qubo.energy(x)
            for k, row in enumerate(x):
                held = int(row.sum())
                if held == 3:
                    continue
                flips = np.flatnonzero(row == (0 if held < 3 else 1))
                neighbours = np.repeat(row[np.newaxis, :], flips.size, axis=0)
                neighbours[np.arange(flips.size), flips] ^= 1
                # Every such neighbour must be strictly better, not just one of them.
                assert np.all(qubo.energy(neighbours) < energies[k])


def test_penalty_scales_with_the_problem() -> None:
    problem = random_problem(6, 3, 0, kind="negative")
    scaled = type(problem)(
        problem.names,
        problem.expected_returns * 10.0,
        problem.covariance * 10.0,
        problem.risk_aversion,
        problem.budget,
    )
    assert penalty_weight(scaled) == pytest.approx(10.0 * penalty_weight(problem))


def test_degenerate_problem_still_gets_a_positive_penalty() -> None:
    problem = type(random_problem(3, 1, 0))(("a", "b", "c"), np.zeros(3), np.zeros((3, 3)), 1.0, 1)
    assert penalty_weight(problem) == pytest.approx(PENALTY_MARGIN)


def test_explicit_penalty() -> None:
    problem = random_problem(4, 2, 0)
    qubo, penalty = to_qubo(problem, penalty=3.0)
    assert penalty == 3.0
    assert qubo.offset == pytest.approx(3.0 * 4)
    with pytest.raises(ValueError, match="penalty"):
        to_qubo(problem, penalty=-1.0)
    with pytest.raises(ValueError, match="penalty"):
        to_qubo(problem, penalty=float("inf"))

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from qhybrid.portfolio.classical import brute_force
from qhybrid.portfolio.selection import SelectionProblem
from tests.portfolio.factories import random_problem


def reference(problem: SelectionProblem) -> tuple[tuple[int, ...], float]:
    """The first optimum in itertools order, one selection at a time."""
    n = problem.num_assets
    best: tuple[tuple[int, ...], float] | None = None
    for chosen in itertools.combinations(range(n), problem.budget):
        x = np.zeros(n, dtype=np.uint8)
        x[list(chosen)] = 1
        value = float(problem.objective(x)[0])
        if best is None or value < best[1]:
            best = (tuple(int(b) for b in x), value)
    assert best is not None
    return best


@pytest.mark.parametrize("kind", ["psd", "negative", "large_mu", "indefinite"])
@pytest.mark.parametrize(("n", "budget"), [(1, 0), (1, 1), (2, 1), (5, 2), (6, 6), (7, 0), (8, 3), (9, 5)])
def test_matches_itertools(kind: str, n: int, budget: int) -> None:
    for seed in range(2):
        problem = random_problem(n, budget, seed, kind=kind)
        bits, value = reference(problem)
        for chunk_size in (1, 7, 1 << 16):
            solution = brute_force(problem, chunk_size=chunk_size)
            assert solution.bits == bits
            assert solution.objective == pytest.approx(value, abs=1e-12)
            assert solution.method == "brute_force"
            assert solution.evaluated == math.comb(n, budget)


def test_ties_go_to_the_first_combination() -> None:
    problem = SelectionProblem(tuple("abcdef"), np.zeros(6), np.zeros((6, 6)), 1.0, 3)
    for chunk_size in (1, 5, 1 << 16):
        assert brute_force(problem, chunk_size=chunk_size).bits == (1, 1, 1, 0, 0, 0)
    # Assets 1 and 4 are equally attractive: the lower index wins.
    mu = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    problem = SelectionProblem(tuple("abcdef"), mu, np.zeros((6, 6)), 1.0, 1)
    assert brute_force(problem, chunk_size=2).bits == (0, 1, 0, 0, 0, 0)


def test_large_instance() -> None:
    problem = random_problem(24, 12, seed=0, kind="psd")
    solution = brute_force(problem)
    assert solution.evaluated == math.comb(24, 12)
    assert sum(solution.bits) == 12
    # Locally optimal at least: no single swap improves it.
    x = np.array(solution.bits)
    inside, outside = np.flatnonzero(x == 1), np.flatnonzero(x == 0)
    swaps = np.repeat(x[np.newaxis, :], inside.size * outside.size, axis=0)
    pairs = np.array(list(itertools.product(inside, outside)))
    swaps[np.arange(len(pairs)), pairs[:, 0]] = 0
    swaps[np.arange(len(pairs)), pairs[:, 1]] = 1
    assert np.all(problem.objective(swaps) >= solution.objective - 1e-12)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        brute_force(random_problem(4, 2, 0), chunk_size=0)
    with pytest.raises(ValueError, match="too many"):
        brute_force(random_problem(60, 30, 0))

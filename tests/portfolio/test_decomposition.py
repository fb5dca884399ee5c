"""Large-neighbourhood search pieces: restriction exactness, sub-problem choice, the annealer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qhybrid.portfolio.classical import brute_force
from qhybrid.portfolio.decomposition import (
    apply_candidate,
    choose_subproblems,
    classical_start,
    restrict,
    swap_anneal,
    swap_deltas,
)
from qhybrid.portfolio.factor_model import factor_problem
from qhybrid.portfolio.selection import SelectionProblem


@pytest.fixture(scope="module")
def problem() -> SelectionProblem:
    return factor_problem(30, 5, seed=2)


def test_the_restricted_problem_plus_its_offset_is_the_full_objective(problem: SelectionProblem) -> None:
    rng = np.random.default_rng(0)
    bits = np.zeros(30, dtype=np.uint8)
    bits[rng.choice(30, 5, replace=False)] = 1
    indices = tuple(sorted(int(i) for i in rng.choice(30, 8, replace=False)))
    sub = restrict(problem, bits, indices)
    assert sub.problem.budget == int(bits[list(indices)].sum())
    assert sub.problem.names == tuple(problem.names[i] for i in indices)
    # Every sub-selection with the sub-budget, put back, has the full objective the identity says.
    for chosen in itertools.combinations(range(8), sub.problem.budget):
        candidate = np.zeros(8, dtype=np.uint8)
        candidate[list(chosen)] = 1
        full = apply_candidate(sub, bits, candidate)
        assert full.sum() == 5
        assert float(sub.problem.objective(candidate)[0]) + sub.offset == pytest.approx(
            float(problem.objective(full)[0]), rel=1e-12, abs=1e-15
        )


def test_swap_deltas_are_the_true_changes_of_one_swap(problem: SelectionProblem) -> None:
    bits = np.zeros(30, dtype=np.uint8)
    bits[[1, 4, 9, 16, 25]] = 1
    impact, matrix = swap_deltas(problem, bits)
    held, free = np.flatnonzero(bits), np.flatnonzero(bits == 0)
    base = float(problem.objective(bits)[0])
    for a, i in enumerate(held):
        for b, j in enumerate(free):
            swapped = bits.copy()
            swapped[i], swapped[j] = 0, 1
            assert matrix[a, b] == pytest.approx(float(problem.objective(swapped)[0]) - base, abs=1e-14)
    assert impact[held[0]] == pytest.approx(matrix[0].min())


def test_sub_problems_are_disjoint_mixed_and_reproducible(problem: SelectionProblem) -> None:
    bits = np.array(classical_start(problem, seconds=0.1, seed=1)[0].bits, dtype=np.uint8)
    first = choose_subproblems(problem, bits, size=8, count=3, rng=np.random.default_rng([7, 1]))
    again = choose_subproblems(problem, bits, size=8, count=3, rng=np.random.default_rng([7, 1]))
    assert first == again and len(first) == 3
    seen: set[int] = set()
    for part in first:
        assert len(part) <= 8 and not seen & set(part)
        seen |= set(part)
        held = int(bits[list(part)].sum())
        assert 1 <= held < len(part)  # something to swap in and out


def test_the_annealer_keeps_the_budget_and_finds_a_small_optimum(problem: SelectionProblem) -> None:
    small = factor_problem(14, 4, seed=3)
    found = swap_anneal(small, seconds=0.2, seed=4)
    assert sum(found.bits) == 4 and found.method == "swap_annealing"
    assert found.objective == pytest.approx(brute_force(small).objective, rel=1e-12)
    start, greedy = classical_start(problem, seconds=0.2, seed=5)
    assert sum(start.bits) == 5 and start.objective <= greedy.objective

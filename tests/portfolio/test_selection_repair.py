from __future__ import annotations

import itertools

import numpy as np

from qhybrid.portfolio.selection import repair
from tests.portfolio.factories import all_bits, random_problem


def test_repair_reaches_the_budget_greedily() -> None:
    for seed, kind in itertools.product(range(4), ["psd", "negative", "large_mu"]):
        problem = random_problem(7, 3, seed, kind=kind)
        for x in all_bits(7):
            repaired = repair(problem, x)
            assert repaired.dtype == np.uint8
            assert int(repaired.sum()) == 3
            held = int(x.sum())
            if held == 3:
                assert np.array_equal(repaired, x)
            elif held < 3:
                assert np.all(repaired >= x)  # only additions
            else:
                assert np.all(repaired <= x)  # only removals


def test_repair_takes_the_best_step_each_time() -> None:
    problem = random_problem(6, 4, 5, kind="negative")
    x = np.array([0, 1, 0, 0, 0, 0], dtype=np.uint8)
    expected = x.copy()
    while expected.sum() < 4:
        options = []
        for i in np.flatnonzero(expected == 0):
            candidate = expected.copy()
            candidate[i] = 1
            options.append((float(problem.objective(candidate)[0]), int(i)))
        expected[min(options)[1]] = 1
    assert np.array_equal(repair(problem, x), expected)

    x = np.ones(6, dtype=np.uint8)
    problem = random_problem(6, 2, 6, kind="negative")
    expected = x.copy()
    while expected.sum() > 2:
        options = []
        for i in np.flatnonzero(expected == 1):
            candidate = expected.copy()
            candidate[i] = 0
            options.append((float(problem.objective(candidate)[0]), int(i)))
        expected[min(options)[1]] = 0
    assert np.array_equal(repair(problem, x), expected)

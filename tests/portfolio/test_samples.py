from __future__ import annotations

import itertools

import numpy as np
import pytest

from qhybrid.portfolio.classical import brute_force
from qhybrid.portfolio.model import PortfolioProblem
from qhybrid.portfolio.samples import REPAIR_CANDIDATES, SampleAnalysis, analyse_samples, repair
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


def test_best_feasible_sample_on_the_true_objective() -> None:
    problem = random_problem(5, 2, 0, kind="negative")
    solution = brute_force(problem)
    x = all_bits(5)
    counts = np.arange(1, 33, dtype=np.int64)
    analysis = analyse_samples(problem, x, counts, optimum_bits=solution.bits)
    assert analysis.source == "sample"
    assert analysis.best_bits == solution.bits
    assert analysis.best_objective == pytest.approx(solution.objective)
    assert analysis.shots == int(counts.sum())
    assert analysis.distinct == 32
    feasible = problem.is_feasible(x)
    assert analysis.feasible_share == pytest.approx(counts[feasible].sum() / counts.sum())
    index = sum(b << i for i, b in enumerate(solution.bits))
    assert analysis.best_share == pytest.approx(counts[index] / counts.sum())
    assert analysis.optimum_share == analysis.best_share


def test_the_penalty_plays_no_part() -> None:
    # An infeasible sample with a much lower objective must not win.
    problem = PortfolioProblem(("a", "b", "c"), np.array([1.0, 1.0, 1.0]), np.zeros((3, 3)), 1.0, 1)
    bits = np.array([[1, 1, 1], [0, 0, 1]], dtype=np.uint8)
    analysis = analyse_samples(problem, bits, np.array([900, 100], dtype=np.int64))
    assert analysis.best_bits == (0, 0, 1)
    assert analysis.best_objective == -1.0
    assert analysis.feasible_share == pytest.approx(0.1)
    assert analysis.best_share == pytest.approx(0.1)
    assert analysis.optimum_share is None


def test_duplicates_and_zero_counts_are_merged() -> None:
    problem = random_problem(3, 1, 0)
    bits = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8)
    analysis = analyse_samples(problem, bits, np.array([2, 3, 5, 0], dtype=np.int64))
    assert analysis.shots == 10
    assert analysis.distinct == 2
    assert analysis.feasible_share == 1.0
    assert analysis.best_bits in {(1, 0, 0), (0, 1, 0)}


def test_ties_prefer_the_more_frequent_sample() -> None:
    problem = PortfolioProblem(("a", "b", "c"), np.zeros(3), np.zeros((3, 3)), 1.0, 1)
    bits = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8)
    analysis = analyse_samples(problem, bits, np.array([1, 5, 4], dtype=np.int64))
    assert analysis.best_bits == (0, 1, 0)
    # Equally frequent: the lowest asset index wins, as in brute_force.
    analysis = analyse_samples(problem, bits, np.array([1, 5, 5], dtype=np.int64))
    assert analysis.best_bits == (0, 1, 0)
    analysis = analyse_samples(problem, bits, np.array([5, 5, 5], dtype=np.int64))
    assert analysis.best_bits == (1, 0, 0)


def test_repair_when_nothing_is_feasible() -> None:
    problem = random_problem(6, 3, 2, kind="negative")
    rng = np.random.default_rng(0)
    x = all_bits(6)
    infeasible = x[~problem.is_feasible(x)]
    counts = rng.integers(1, 100, size=len(infeasible)).astype(np.int64)
    analysis = analyse_samples(problem, infeasible, counts, optimum_bits=brute_force(problem).bits)
    assert analysis.source == "repaired"
    assert analysis.feasible_share == 0.0
    assert analysis.best_share == 0.0
    assert analysis.optimum_share == 0.0
    assert sum(analysis.best_bits) == 3
    # The best of the repaired, most frequent samples.
    order = np.lexsort((*infeasible.T[::-1], -counts))[:REPAIR_CANDIDATES]
    repaired = np.stack([repair(problem, infeasible[k]) for k in order])
    assert analysis.best_objective == pytest.approx(float(problem.objective(repaired).min()))
    as_dict = analysis.as_dict()
    assert as_dict["best_bits"] == list(analysis.best_bits)
    assert set(as_dict) == set(SampleAnalysis.__dataclass_fields__)


def test_validation() -> None:
    problem = random_problem(3, 1, 0)
    bits = np.array([[1, 0, 0]], dtype=np.uint8)
    with pytest.raises(ValueError, match="shape"):
        analyse_samples(problem, np.array([[1, 0]], dtype=np.uint8), np.array([1], dtype=np.int64))
    with pytest.raises(ValueError, match="counts"):
        analyse_samples(problem, bits, np.array([1, 2], dtype=np.int64))
    with pytest.raises(ValueError, match="non-negative"):
        analyse_samples(problem, bits, np.array([-1], dtype=np.int64))
    with pytest.raises(ValueError, match="shot"):
        analyse_samples(problem, bits, np.array([0], dtype=np.int64))
    with pytest.raises(ValueError, match="0 and 1"):
        analyse_samples(problem, np.array([[2, 0, 0]], dtype=np.uint8), np.array([1], dtype=np.int64))
    with pytest.raises(ValueError, match="length 3"):
        analyse_samples(problem, bits, np.array([1], dtype=np.int64), optimum_bits=(1, 0))

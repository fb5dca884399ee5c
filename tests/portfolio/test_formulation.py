from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import pytest

from qhybrid.portfolio.baselines import exact
from qhybrid.portfolio.formulation import Formulation, project_weighted
from qhybrid.portfolio.lots import LotsProblem
from qhybrid.portfolio.selection import SelectionProblem, repair, to_qubo
from tests.portfolio.factories import all_bits, random_problem
from tests.portfolio.test_lots import random_lots

KINDS = ["psd", "negative", "large_mu", "indefinite"]


def formulations() -> list[Formulation]:
    """Selection and lots instances of every kind, small enough to enumerate."""
    found: list[Formulation] = []
    for kind in KINDS:
        for seed in range(2):
            found.append(random_problem(7, 3, seed, kind=kind))
            found.append(random_lots(4, 6, seed, kind=kind, max_span=4))
    return found


def swap_neighbours(f: Formulation, bits: np.ndarray) -> np.ndarray:
    """Every feasible point one move away: a 1-swap, or one lot moved between two assets."""
    if isinstance(f, LotsProblem):
        lots = f.lots_of(bits)[0]
        moved = []
        for i in range(f.num_assets):
            for j in range(f.num_assets):
                if i != j and lots[i] > f.min_lots[i] and lots[j] < f.max_lots[j]:
                    other = lots.copy()
                    other[i] -= 1
                    other[j] += 1
                    moved.append(f.bits_of(other))
        return np.array(moved, dtype=np.uint8).reshape(-1, f.num_variables)
    inside, outside = np.flatnonzero(bits == 1), np.flatnonzero(bits == 0)
    swaps = []
    for i in inside.tolist():
        for j in outside.tolist():
            other = bits.copy()
            other[i], other[j] = 0, 1
            swaps.append(other)
    return np.array(swaps, dtype=np.uint8).reshape(-1, f.num_variables)


def test_both_problems_are_formulations() -> None:
    selection: Formulation = random_problem(5, 2, 0)
    lots: Formulation = random_lots(3, 4, 0)
    assert isinstance(selection, Formulation)
    assert isinstance(lots, Formulation)
    assert selection.hamming_weight == 2
    assert lots.hamming_weight is None
    assert selection.num_variables == 5
    evaluation = selection.evaluate(np.array([1, 1, 0, 0, 0]))
    assert evaluation.as_dict()["objective"] == evaluation.objective


def test_selection_methods_delegate() -> None:
    problem = random_problem(6, 3, 1, kind="negative")
    qubo, weight = problem.to_qubo()
    reference, reference_weight = to_qubo(problem)
    np.testing.assert_array_equal(qubo.matrix, reference.matrix)
    assert weight == reference_weight
    for bits in all_bits(6):
        np.testing.assert_array_equal(problem.repair(bits), repair(problem, bits))


@pytest.mark.parametrize("f", formulations(), ids=lambda f: type(f).__name__)
def test_repair_is_always_feasible(f: Formulation) -> None:
    bits = all_bits(f.num_variables)
    repaired = np.stack([f.repair(b) for b in bits])
    assert f.is_feasible(repaired).all()
    feasible = f.is_feasible(bits)
    # Feasible inputs are returned as they are.
    np.testing.assert_array_equal(repaired[feasible], bits[feasible])


@pytest.mark.parametrize("f", formulations(), ids=lambda f: type(f).__name__)
def test_local_search_improves_to_a_local_optimum(f: Formulation) -> None:
    bits = all_bits(f.num_variables)
    rng = np.random.default_rng(0)
    for start in bits[rng.choice(bits.shape[0], size=24, replace=False)]:
        repaired = f.repair(start)
        result = f.local_search(start)
        assert f.is_feasible(result)[0]
        value = f.objective(result)[0]
        assert value <= f.objective(repaired)[0] + 1e-12
        neighbours = swap_neighbours(f, result)
        if neighbours.shape[0]:
            scale = max(1.0, abs(value))
            assert f.objective(neighbours).min() >= value - 1e-9 * scale


def test_local_search_keeps_a_local_optimum() -> None:
    problem = random_problem(9, 4, 3)
    optimum = np.array(exact(problem).bits, dtype=np.uint8)
    np.testing.assert_array_equal(problem.local_search(optimum), optimum)
    lots = random_lots(4, 6, 3)
    best = np.array(exact(lots).bits, dtype=np.uint8)
    assert lots.objective(lots.local_search(best))[0] == pytest.approx(lots.objective(best)[0])


def relaxed_value(f: Formulation, values: np.ndarray) -> tuple[float, float]:
    """The objective at a relaxed point and the residual of its equality constraint."""
    if isinstance(f, LotsProblem):
        lots = f.min_lots.astype(np.float64)
        for i, (variables, coefficients) in enumerate(f.encoding):
            lots[i] += coefficients @ values[variables]
        w = lots / f.total_lots
        value = f.risk_aversion * w @ f.covariance @ w - f.expected_returns @ w
        return float(value), float(lots.sum() - f.total_lots)
    assert isinstance(f, SelectionProblem)
    value = f.risk_aversion * values @ f.covariance @ values - f.expected_returns @ values
    return float(value), float(values.sum() - f.budget)


@pytest.mark.parametrize("kind", ["psd", "negative", "large_mu"])  # convex: Σ is PSD
@pytest.mark.parametrize("seed", range(3))
def test_relaxation_bounds_the_optimum(kind: str, seed: int) -> None:
    problems: list[Formulation] = [
        random_problem(10, 4, seed, kind=kind),
        random_lots(5, 8, seed, kind=kind, max_span=5),
    ]
    for f in problems:
        values = f.relaxation()
        assert values.shape == (f.num_variables,)
        assert np.all((values >= 0.0) & (values <= 1.0))
        value, residual = relaxed_value(f, values)
        assert abs(residual) < 1e-9
        optimum = exact(f).objective
        assert value <= optimum + 1e-10 * max(1.0, abs(optimum))


@pytest.mark.parametrize("seed", range(4))
def test_selection_relaxation_satisfies_kkt(seed: int) -> None:
    # Convex QP: x is optimal iff the gradient is λ on free coordinates, ≥ λ at 0 and ≤ λ at 1.
    problem = random_problem(12, 5, seed)
    x = problem.relaxation()
    gradient = 2.0 * problem.risk_aversion * problem.covariance @ x - problem.expected_returns
    free = (x > 1e-7) & (x < 1 - 1e-7)
    assert free.any()
    level = float(np.median(gradient[free]))
    tolerance = 1e-6 * float(np.abs(gradient).max())
    assert np.all(np.abs(gradient[free] - level) <= tolerance)
    assert np.all(gradient[x <= 1e-7] >= level - tolerance)
    assert np.all(gradient[x >= 1 - 1e-7] <= level + tolerance)


def test_relaxation_of_sp500_like_scale() -> None:
    # Daily figures (1e-4): the solver must not stop on absolute tolerances.
    problem = random_problem(10, 4, 0)
    small = SelectionProblem(
        problem.names, problem.expected_returns * 1e-3, problem.covariance * 1e-4, 5.0, 4
    )
    value, residual = relaxed_value(small, small.relaxation())
    assert abs(residual) < 1e-9
    assert value <= exact(small).objective


def test_relaxation_with_forced_values() -> None:
    problem = random_problem(5, 5, 0)
    np.testing.assert_array_equal(problem.relaxation(), np.ones(5))
    fixed = LotsProblem(("a", "b"), np.zeros(2), np.eye(2), 1.0, 3, np.array([1, 0]), np.array([1, 2]))
    np.testing.assert_allclose(fixed.relaxation(), np.ones(2))


def test_projection() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = rng.normal(size=6)
        weights = rng.uniform(0.5, 3.0, size=6)
        total = float(rng.uniform(0.0, weights.sum()))
        projected = project_weighted(values, weights, total)
        assert np.all((projected >= 0.0) & (projected <= 1.0))
        assert weights @ projected == pytest.approx(total, abs=1e-12)


def test_a_relaxation_is_solved_once_and_handed_out_as_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    from qhybrid.portfolio import formulation as module

    calls: list[int] = []
    real = module.solve_relaxation

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(module, "solve_relaxation", counted)
    monkeypatch.setattr(module, "_relaxed", OrderedDict())
    problem = random_problem(6, 3, seed=8)
    first = problem.relaxation()
    first[:] = -1.0  # a caller's change to its copy reaches nobody else
    second = problem.relaxation()
    assert calls == [1]
    np.testing.assert_array_equal(second, real(*_selection_levels(problem)))
    # Another problem is solved anew.
    random_problem(6, 2, seed=8).relaxation()
    assert calls == [1, 1]


def _selection_levels(problem: Any) -> tuple[Any, ...]:
    n = problem.num_assets
    return (
        problem.risk_aversion * problem.covariance,
        problem.expected_returns,
        np.zeros(n, dtype=np.int64),
        np.ones(n, dtype=np.int64),
        problem.budget,
    )


@pytest.mark.parametrize(
    "problem",
    [random_problem(8, 4, seed, kind=kind) for seed in range(3) for kind in ("psd", "indefinite")]
    + [random_lots(4, 6, seed) for seed in range(3)],
    ids=lambda problem: type(problem).__name__,
)
def test_a_shared_search_memo_changes_no_answer(problem: Formulation) -> None:
    # refine shares one memo among its candidates' local searches: from every start, with the
    # memo filled by every earlier start, the search must end exactly where it ends alone.
    starts = all_bits(problem.num_variables)
    memo: dict[bytes, Any] = {}
    alone = [problem.local_search(x) for x in starts]
    shared = [problem.local_search(x, memo) for x in starts]
    for x, y in zip(alone, shared, strict=True):
        assert np.array_equal(x, y)
        y[:] = 1 - y  # an answer handed out is the caller's: the memo must not change with it
    assert memo  # the memo was used
    again = [problem.local_search(x, memo) for x in starts]
    assert all(np.array_equal(x, y) for x, y in zip(alone, again, strict=True))

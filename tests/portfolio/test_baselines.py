from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from numpy.typing import ArrayLike, NDArray

from qhybrid.domain.qubo import FloatArray, Qubo
from qhybrid.portfolio import baselines
from qhybrid.portfolio.baselines import (
    count_lot_vectors,
    enumerate_lot_vectors,
    exact,
    objective_range,
    scip,
    simulated_annealing,
)
from qhybrid.portfolio.classical import ClassicalSolution, brute_force
from qhybrid.portfolio.formulation import EvaluationLike, Formulation, SearchMemo
from qhybrid.portfolio.lots import LotsProblem
from qhybrid.portfolio.selection import SelectionProblem
from tests.portfolio.factories import all_bits, random_problem
from tests.portfolio.test_lots import random_lots

KINDS = ["psd", "negative", "large_mu", "indefinite"]


def all_feasible_values(f: Formulation) -> FloatArray:
    bits = all_bits(f.num_variables)
    return f.objective(bits[f.is_feasible(bits)])


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-9)


def test_solution_is_compatible() -> None:
    old = ClassicalSolution(bits=(1, 0), objective=-1.0, method="x", evaluated=1)
    assert old.seconds == 0.0
    assert not old.optimal
    solution = brute_force(random_problem(6, 3, 0))
    assert solution.optimal
    assert solution.seconds >= 0.0
    assert solution.as_dict()["method"] == "brute_force"
    assert solution.as_dict()["bits"] == list(solution.bits)


@pytest.mark.parametrize("kind", KINDS)
def test_exact_equals_scip_on_selection(kind: str) -> None:
    for seed, (n, budget) in enumerate([(6, 2), (9, 4), (12, 6)]):
        problem = random_problem(n, budget, seed, kind=kind)
        reference = exact(problem)
        solved = scip(problem, time_limit=20.0)
        assert reference.method == "brute_force"
        assert solved.method == "scip"
        assert solved.optimal
        assert sum(solved.bits) == budget
        assert close(solved.objective, reference.objective)


@pytest.mark.parametrize("kind", KINDS)
def test_exact_equals_scip_on_lots(kind: str) -> None:
    for seed, (n, total) in enumerate([(3, 4), (4, 7), (5, 9)]):
        problem = random_lots(n, total, seed, kind=kind, max_span=5)
        reference = exact(problem)
        solved = scip(problem, time_limit=20.0)
        assert reference.method == "enumeration"
        assert reference.optimal
        assert reference.evaluated == count_lot_vectors(problem.min_lots, problem.max_lots, total)
        assert solved.optimal
        assert problem.is_feasible(np.array(solved.bits))[0]
        assert close(solved.objective, reference.objective)
        assert close(reference.objective, float(all_feasible_values(problem).min()))


def test_exact_switches_to_scip(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = random_problem(10, 5, 0)
    lots = random_lots(4, 6, 0)
    expected = exact(problem).objective, exact(lots).objective
    monkeypatch.setattr(baselines, "BRUTE_FORCE_LIMIT", 10)
    monkeypatch.setattr(baselines, "LOTS_ENUMERATION_LIMIT", 10)
    switched = exact(problem), exact(lots)
    assert [s.method for s in switched] == ["scip", "scip"]
    assert all(s.optimal for s in switched)
    assert close(switched[0].objective, expected[0])
    assert close(switched[1].objective, expected[1])


def test_scip_proves_a_30_asset_instance() -> None:
    # Budget 6: C(30, 6) = 593,775 selections, which brute force checks in a blink.
    problem = random_problem(30, 6, 7)
    solved = scip(problem, time_limit=30.0)
    assert solved.optimal
    assert solved.seconds < 30.0
    assert close(solved.objective, brute_force(problem).objective)


def test_scip_on_a_hard_30_asset_instance_beats_annealing() -> None:
    # Budget 15: C(30, 15) ≈ 1.6e8 selections; SCIP must still prove its answer.
    problem = random_problem(30, 15, 3, kind="negative")
    solved = scip(problem, time_limit=30.0)
    assert solved.optimal
    annealed = simulated_annealing(problem, num_reads=50, seed=0)
    assert solved.objective <= annealed.objective + 1e-9


@pytest.mark.parametrize("kind", KINDS)
def test_annealing_finds_small_optima(kind: str) -> None:
    problem = random_problem(8, 3, 1, kind=kind)
    annealed = simulated_annealing(problem, num_reads=100, seed=1)
    assert annealed.method == "simulated_annealing"
    assert annealed.evaluated == 100
    assert not annealed.optimal
    assert close(annealed.objective, exact(problem).objective)
    lots = random_lots(3, 5, 1, kind=kind, max_span=3)
    annealed = simulated_annealing(lots, num_reads=100, seed=1, local_search=True)
    assert lots.is_feasible(np.array(annealed.bits))[0]
    assert close(annealed.objective, exact(lots).objective)


def test_annealing_is_reproducible_and_validates() -> None:
    problem = random_problem(10, 4, 2, kind="negative")
    first = simulated_annealing(problem, num_reads=20, seed=5)
    assert simulated_annealing(problem, num_reads=20, seed=5).bits == first.bits
    with pytest.raises(ValueError, match="num_reads"):
        simulated_annealing(problem, num_reads=0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        simulated_annealing(problem, seed=-1)


@pytest.mark.parametrize("kind", KINDS)
def test_objective_range_is_exact(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    problems: list[Formulation] = [random_problem(8, 3, 2, kind=kind), random_lots(4, 6, 2, kind=kind)]
    for f in problems:
        values = all_feasible_values(f)
        best, worst = objective_range(f)
        assert close(best, float(values.min()))
        assert close(worst, float(values.max()))
    # The same through SCIP, maximising on the other side.
    monkeypatch.setattr(baselines, "BRUTE_FORCE_LIMIT", 1)
    monkeypatch.setattr(baselines, "LOTS_ENUMERATION_LIMIT", 1)
    for f in problems:
        values = all_feasible_values(f)
        best, worst = objective_range(f)
        assert close(best, float(values.min()))
        assert close(worst, float(values.max()))


def test_lot_vectors_are_counted_and_listed() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 5))
        lower = rng.integers(0, 3, size=n)
        upper = lower + rng.integers(0, 4, size=n)
        total = int(rng.integers(0, 12))
        expected = [
            v
            for v in itertools.product(*(range(lo, hi + 1) for lo, hi in zip(lower, upper, strict=True)))
            if sum(v) == total
        ]
        assert count_lot_vectors(lower, upper, total) == len(expected)
        if expected:
            listed = enumerate_lot_vectors(lower, upper, total)
            assert [tuple(row) for row in listed.tolist()] == expected
    # Counts stay exact far beyond what could be listed.
    assert count_lot_vectors(np.zeros(40, dtype=np.int64), np.full(40, 100), 1000) > 10**40


class Wrapped:
    """A formulation the baselines do not know by type (it delegates to a selection problem)."""

    def __init__(self, problem: SelectionProblem) -> None:
        self.problem = problem

    @property
    def names(self) -> tuple[str, ...]:
        return self.problem.names

    @property
    def num_variables(self) -> int:
        return self.problem.num_variables

    @property
    def hamming_weight(self) -> int | None:
        return self.problem.hamming_weight

    def objective(self, x: ArrayLike) -> FloatArray:
        return self.problem.objective(x)

    def is_feasible(self, x: ArrayLike) -> NDArray[np.bool_]:
        return self.problem.is_feasible(x)

    def evaluate(self, x: ArrayLike) -> EvaluationLike:
        return self.problem.evaluate(x)

    def to_qubo(self) -> tuple[Qubo, float]:
        return self.problem.to_qubo()

    def repair(self, x: ArrayLike) -> NDArray[np.uint8]:
        return self.problem.repair(x)

    def local_search(self, x: ArrayLike, memo: SearchMemo | None = None) -> NDArray[np.uint8]:
        return self.problem.local_search(x, memo)

    def relaxation(self) -> FloatArray:
        return self.problem.relaxation()


def test_other_formulations_are_enumerated() -> None:
    problem = random_problem(8, 3, 4, kind="indefinite")
    wrapped = Wrapped(problem)
    solution = exact(wrapped)
    assert solution.method == "enumeration"
    assert close(solution.objective, brute_force(problem).objective)
    assert objective_range(wrapped) == pytest.approx(objective_range(problem))
    assert close(simulated_annealing(wrapped, num_reads=50, seed=0).objective, solution.objective)
    with pytest.raises(TypeError, match="scip"):
        scip(wrapped)


def test_lots_in_range_for_real_scale() -> None:
    # Daily returns and variances (1e-4): SCIP's tolerances must not blur the optimum.
    base = random_problem(6, 0, 5)
    problem = LotsProblem(
        base.names,
        base.expected_returns * 1e-3,
        base.covariance * 1e-4,
        3.0,
        8,
        np.zeros(6, dtype=np.int64),
        np.full(6, 4),
    )
    assert close(scip(problem, time_limit=20.0).objective, exact(problem).objective)


def test_annealing_sweeps_follow_the_problems_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from dwave.samplers import SimulatedAnnealingSampler

    from qhybrid.portfolio.baselines import ANNEALING_SWEEPS, SMALL_ANNEALING_SWEEPS, annealing_sweeps

    assert annealing_sweeps(8) == SMALL_ANNEALING_SWEEPS < ANNEALING_SWEEPS == annealing_sweeps(9)
    seen: list[object] = []
    real = SimulatedAnnealingSampler.sample

    def recorded(self: SimulatedAnnealingSampler, bqm: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("num_sweeps"))
        return real(self, bqm, **kwargs)

    monkeypatch.setattr(SimulatedAnnealingSampler, "sample", recorded)
    simulated_annealing(random_problem(6, 3, seed=1), num_reads=5, seed=0)
    simulated_annealing(random_problem(10, 3, seed=1), num_reads=5, seed=0)
    simulated_annealing(random_problem(6, 3, seed=1), num_reads=5, seed=0, num_sweeps=7)
    assert seen == [SMALL_ANNEALING_SWEEPS, ANNEALING_SWEEPS, 7]


def _old_simulated_annealing_bits(f: Formulation, num_reads: int, seed: int) -> tuple[tuple[int, ...], int]:
    """The baseline's answer as chosen before (commit 3ef9154, verbatim), and the infeasible samples."""
    import dimod
    from dwave.samplers import SimulatedAnnealingSampler

    qubo, _ = f.to_qubo()
    matrix = qubo.matrix
    bqm = dimod.BinaryQuadraticModel(
        np.diag(matrix).copy(), np.triu(2.0 * matrix, k=1), qubo.offset, dimod.BINARY
    )
    sampler = SimulatedAnnealingSampler()  # type: ignore[no-untyped-call]
    sweeps = baselines.annealing_sweeps(f.num_variables)
    sampleset = sampler.sample(bqm, num_reads=num_reads, num_sweeps=sweeps, seed=seed)
    columns = [list(sampleset.variables).index(v) for v in range(f.num_variables)]
    samples = np.asarray(sampleset.record.sample, dtype=np.uint8)[:, columns]
    distinct = np.unique(samples, axis=0)
    candidates = np.stack([f.repair(row) for row in distinct])
    values = f.objective(candidates)
    infeasible = int(np.count_nonzero(~f.is_feasible(distinct)))
    return tuple(int(v) for v in candidates[int(np.argmin(values))]), infeasible


def test_repairing_only_the_infeasible_samples_gives_the_same_answer() -> None:
    # Selections and lots of 4 to 12 variables; few reads and sweeps leave infeasible samples to
    # repair and ties to break, so both paths of the choice are taken.
    problems: list[Formulation] = [
        random_problem(n, 1 + seed % (n - 1), seed=seed) for n in (4, 6, 8, 11) for seed in range(10)
    ]
    problems += [random_lots(3, 2 + seed % 4, seed=seed, max_span=2) for seed in range(10)]
    problems += [random_lots(4, 3 + seed % 5, seed=seed) for seed in range(10)]
    repaired = 0
    for seed, problem in enumerate(problems):
        for reads in (3, 40):
            old, infeasible = _old_simulated_annealing_bits(problem, reads, seed)
            assert simulated_annealing(problem, num_reads=reads, seed=seed).bits == old
            repaired += infeasible
    assert repaired > 20  # the repair path was exercised

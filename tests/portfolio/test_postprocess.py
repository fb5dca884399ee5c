from __future__ import annotations

import numpy as np
import pytest

from qhybrid.portfolio.baselines import exact
from qhybrid.portfolio.classical import brute_force
from qhybrid.portfolio.lots import LotsProblem
from qhybrid.portfolio.postprocess import postprocess
from qhybrid.portfolio.selection import SelectionProblem, repair
from tests.portfolio.factories import all_bits, random_problem
from tests.portfolio.test_lots import random_lots


def sampled(bits: np.ndarray, counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(bits, dtype=np.uint8), np.array(counts, dtype=np.int64)


def test_best_sample_already_optimal() -> None:
    problem = random_problem(8, 3, 0)
    optimum = np.array(exact(problem).bits, dtype=np.uint8)
    feasible = all_bits(8)[problem.is_feasible(all_bits(8))]
    other = feasible[int(np.argmax(problem.objective(feasible)))]
    bits, counts = sampled(np.stack([optimum, other, optimum]), [3, 5, 2])
    result = postprocess(problem, bits, counts, optimum_bits=tuple(int(b) for b in optimum))
    assert result.quantum_source == "sample"
    assert result.found_by == "sample"
    assert result.quantum_best_bits == tuple(optimum)
    assert result.refined_bits == result.quantum_best_bits
    assert result.refined_objective == result.quantum_best_objective
    assert result.shots == 10
    assert result.distinct == 2
    assert result.quantum_best_share == pytest.approx(0.5)
    assert result.optimum_share == pytest.approx(0.5)
    assert result.optimum_in_samples is True
    assert result.feasible_share == 1.0


def test_local_search_reaches_the_optimum() -> None:
    problem = random_problem(10, 4, 1, kind="negative")
    optimum = exact(problem)
    rng = np.random.default_rng(0)
    feasible = all_bits(10)[problem.is_feasible(all_bits(10))]
    values = problem.objective(feasible)
    worst = feasible[np.argsort(values)[-20:]]  # only poor portfolios were measured
    bits, counts = sampled(worst, rng.integers(1, 5, size=20).tolist())
    result = postprocess(problem, bits, counts, optimum_bits=optimum.bits)
    assert result.quantum_source == "sample"
    assert result.quantum_best_objective == pytest.approx(float(problem.objective(worst).min()))
    assert result.found_by == "local_search"
    assert result.refined_objective < result.quantum_best_objective
    assert result.refined_objective == pytest.approx(optimum.objective)
    assert result.optimum_share == 0.0
    assert result.optimum_in_samples is False


def test_no_feasible_sample_is_repaired() -> None:
    problem = random_problem(8, 3, 2)
    bits, counts = sampled(np.array([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1]]), [7, 3])
    result = postprocess(problem, bits, counts)
    assert result.quantum_source == "repaired"
    assert problem.is_feasible(np.array(result.quantum_best_bits))[0]
    assert result.feasible_share == 0.0
    assert result.quantum_best_share == 0.0
    assert result.refined_objective <= result.quantum_best_objective
    assert result.found_by in ("repair", "local_search")
    assert result.optimum_share is None
    assert result.optimum_in_samples is None


def test_repair_gets_the_credit() -> None:
    problem = random_problem(8, 3, 3)
    optimum = np.array(exact(problem).bits, dtype=np.uint8)
    # One feasible but poor sample, and the optimum with an extra asset that repair drops.
    feasible = all_bits(8)[problem.is_feasible(all_bits(8))]
    poor = feasible[int(np.argmax(problem.objective(feasible)))]
    over = optimum.copy()
    extra = [i for i in range(8) if over[i] == 0]
    for i in extra:
        candidate = over.copy()
        candidate[i] = 1
        if np.array_equal(problem.repair(candidate), optimum):
            over = candidate
            break
    assert over.sum() == 4, "no single extra asset repairs back to the optimum"
    bits, counts = sampled(np.stack([poor, over]), [1, 1])
    result = postprocess(problem, bits, counts)
    assert result.quantum_source == "sample"
    assert result.quantum_best_bits == tuple(poor)
    assert result.found_by == "repair"
    assert result.refined_bits == tuple(optimum)


def test_is_deterministic_under_row_order() -> None:
    problem = random_problem(8, 4, 5, kind="indefinite")
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 2, size=(60, 8)).astype(np.uint8)
    counts = rng.integers(1, 4, size=60)
    first = postprocess(problem, bits, counts, top_k=5)
    order = rng.permutation(60)
    assert postprocess(problem, bits[order], counts[order], top_k=5) == first


def test_lots_shares_count_decisions_not_codes() -> None:
    # Asset a's span is 2: codes 01 and 10 both hold one lot.
    problem = LotsProblem(
        ("a", "b"), np.array([0.1, 0.05]), np.diag([0.04, 0.01]), 1.0, 2, np.array([0, 0]), np.array([2, 2])
    )
    assert problem.num_variables == 4
    one_each_a = np.array([1, 0, 1, 0], dtype=np.uint8)
    one_each_b = np.array([0, 1, 0, 1], dtype=np.uint8)
    assert problem.lots_of(np.stack([one_each_a, one_each_b])).tolist() == [[1, 1], [1, 1]]
    result = postprocess(
        problem,
        np.stack([one_each_a, one_each_b, np.zeros(4, dtype=np.uint8)]),
        np.array([2, 3, 5]),
        optimum_bits=tuple(int(b) for b in one_each_b),
    )
    assert result.quantum_best_share == pytest.approx(0.5)
    assert result.optimum_share == pytest.approx(0.5)
    assert result.feasible_share == pytest.approx(0.5)


def test_lots_refinement_finds_the_optimum() -> None:
    problem = random_lots(4, 7, 1, kind="negative", max_span=4)
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, size=(30, problem.num_variables)).astype(np.uint8)
    result = postprocess(problem, bits, np.ones(30, dtype=np.int64))
    assert problem.is_feasible(np.array(result.refined_bits))[0]
    assert result.refined_objective == pytest.approx(exact(problem).objective)
    assert result.as_dict()["found_by"] == result.found_by


def test_as_dict_is_json_friendly() -> None:
    problem = random_problem(5, 2, 0)
    result = postprocess(problem, np.array([[1, 1, 0, 0, 0]], dtype=np.uint8), np.array([4]))
    data = result.as_dict()
    assert data["quantum_best_bits"] == [1, 1, 0, 0, 0]
    assert isinstance(data["refined_bits"], list)
    assert data["shots"] == 4
    assert set(data) == {
        "quantum_best_bits",
        "quantum_best_objective",
        "quantum_source",
        "refined_bits",
        "refined_objective",
        "found_by",
        "shots",
        "distinct",
        "feasible_share",
        "quantum_best_share",
        "optimum_share",
        "optimum_in_samples",
    }


def test_validation() -> None:
    problem = random_problem(4, 2, 0)
    good = np.array([[1, 1, 0, 0]], dtype=np.uint8)
    with pytest.raises(ValueError, match="shape"):
        postprocess(problem, np.zeros((1, 5), dtype=np.uint8), np.array([1]))
    with pytest.raises(ValueError, match="counts must have shape"):
        postprocess(problem, good, np.array([1, 2]))
    with pytest.raises(ValueError, match="non-negative"):
        postprocess(problem, good, np.array([-1]))
    with pytest.raises(ValueError, match="at least one shot"):
        postprocess(problem, good, np.array([0]))
    with pytest.raises(ValueError, match="0 and 1"):
        postprocess(problem, np.array([[2, 0, 0, 0]], dtype=np.uint8), np.array([1]))
    with pytest.raises(ValueError, match="top_k"):
        postprocess(problem, good, np.array([1]), top_k=0)
    with pytest.raises(ValueError, match="length"):
        postprocess(problem, good, np.array([1]), optimum_bits=(1, 0))


# Semantics of the quantum best (what the samples themselves gave), before any refinement.


def test_quantum_best_best_feasible_sample_on_the_true_objective() -> None:
    problem = random_problem(5, 2, 0, kind="negative")
    solution = brute_force(problem)
    x = all_bits(5)
    counts = np.arange(1, 33, dtype=np.int64)
    analysis = postprocess(problem, x, counts, optimum_bits=solution.bits)
    assert analysis.quantum_source == "sample"
    assert analysis.quantum_best_bits == solution.bits
    assert analysis.quantum_best_objective == pytest.approx(solution.objective)
    assert analysis.shots == int(counts.sum())
    assert analysis.distinct == 32
    feasible = problem.is_feasible(x)
    assert analysis.feasible_share == pytest.approx(counts[feasible].sum() / counts.sum())
    index = sum(b << i for i, b in enumerate(solution.bits))
    assert analysis.quantum_best_share == pytest.approx(counts[index] / counts.sum())
    assert analysis.optimum_share == analysis.quantum_best_share


def test_quantum_best_the_penalty_plays_no_part() -> None:
    # An infeasible sample with a much lower objective must not win.
    problem = SelectionProblem(("a", "b", "c"), np.array([1.0, 1.0, 1.0]), np.zeros((3, 3)), 1.0, 1)
    bits = np.array([[1, 1, 1], [0, 0, 1]], dtype=np.uint8)
    analysis = postprocess(problem, bits, np.array([900, 100], dtype=np.int64))
    assert analysis.quantum_best_bits == (0, 0, 1)
    assert analysis.quantum_best_objective == -1.0
    assert analysis.feasible_share == pytest.approx(0.1)
    assert analysis.quantum_best_share == pytest.approx(0.1)
    assert analysis.optimum_share is None


def test_quantum_best_duplicates_and_zero_counts_are_merged() -> None:
    problem = random_problem(3, 1, 0)
    bits = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8)
    analysis = postprocess(problem, bits, np.array([2, 3, 5, 0], dtype=np.int64))
    assert analysis.shots == 10
    assert analysis.distinct == 2
    assert analysis.feasible_share == 1.0
    assert analysis.quantum_best_bits in {(1, 0, 0), (0, 1, 0)}


def test_quantum_best_ties_prefer_the_more_frequent_sample() -> None:
    problem = SelectionProblem(("a", "b", "c"), np.zeros(3), np.zeros((3, 3)), 1.0, 1)
    bits = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8)
    analysis = postprocess(problem, bits, np.array([1, 5, 4], dtype=np.int64))
    assert analysis.quantum_best_bits == (0, 1, 0)
    # Equally frequent: the lowest asset index wins, as in brute_force.
    analysis = postprocess(problem, bits, np.array([1, 5, 5], dtype=np.int64))
    assert analysis.quantum_best_bits == (0, 1, 0)
    analysis = postprocess(problem, bits, np.array([5, 5, 5], dtype=np.int64))
    assert analysis.quantum_best_bits == (1, 0, 0)


def test_quantum_best_repair_when_nothing_is_feasible() -> None:
    problem = random_problem(6, 3, 2, kind="negative")
    rng = np.random.default_rng(0)
    x = all_bits(6)
    infeasible = x[~problem.is_feasible(x)]
    counts = rng.integers(1, 100, size=len(infeasible)).astype(np.int64)
    analysis = postprocess(problem, infeasible, counts, optimum_bits=brute_force(problem).bits)
    assert analysis.quantum_source == "repaired"
    assert analysis.feasible_share == 0.0
    assert analysis.quantum_best_share == 0.0
    assert analysis.optimum_share == 0.0
    assert sum(analysis.quantum_best_bits) == 3
    # The best of the repaired, most frequent samples.
    order = np.lexsort((*infeasible.T[::-1], -counts))[:32]
    repaired = np.stack([repair(problem, infeasible[k]) for k in order])
    assert analysis.quantum_best_objective == pytest.approx(float(problem.objective(repaired).min()))


def test_validation_of_samples() -> None:
    problem = random_problem(3, 1, 0)
    bits = np.array([[1, 0, 0]], dtype=np.uint8)
    with pytest.raises(ValueError, match="shape"):
        postprocess(problem, np.array([[1, 0]], dtype=np.uint8), np.array([1], dtype=np.int64))
    with pytest.raises(ValueError, match="counts"):
        postprocess(problem, bits, np.array([1, 2], dtype=np.int64))
    with pytest.raises(ValueError, match="non-negative"):
        postprocess(problem, bits, np.array([-1], dtype=np.int64))
    with pytest.raises(ValueError, match="shot"):
        postprocess(problem, bits, np.array([0], dtype=np.int64))
    with pytest.raises(ValueError, match="0 and 1"):
        postprocess(problem, np.array([[2, 0, 0]], dtype=np.uint8), np.array([1], dtype=np.int64))
    with pytest.raises(ValueError, match="length 3"):
        postprocess(problem, bits, np.array([1], dtype=np.int64), optimum_bits=(1, 0))


def test_judged_outcomes_and_repairs_are_those_of_numpys_unique_and_repair_on_every_candidate() -> None:
    from qhybrid.portfolio.formulation import Formulation
    from qhybrid.portfolio.postprocess import judge

    # Outcomes merged by packed integers and only infeasible candidates repaired: the same
    # Judged as np.unique(axis=0) and a repair of every candidate (the code of 3ef9154) gave.
    rng = np.random.default_rng(12)
    problems: list[Formulation] = [
        random_problem(n, 1 + seed % (n - 1), seed=seed) for n in (3, 6, 9) for seed in range(6)
    ]
    problems += [random_lots(3, 2 + seed % 4, seed=seed, max_span=2) for seed in range(6)]
    infeasible_candidates = 0
    for problem in problems:
        for _ in range(4):
            rows = (rng.random((int(rng.integers(1, 200)), problem.num_variables)) < 0.4).astype(np.uint8)
            counts = rng.integers(0, 5, size=(rows.shape[0],), dtype=np.int64)
            counts[0] += 1
            judged = judge(problem, rows, counts, top_k=int(rng.integers(1, 40)))
            expected, inverse = np.unique(rows, axis=0, return_inverse=True)
            merged = np.bincount(inverse.reshape(-1), weights=counts, minlength=expected.shape[0])
            assert np.array_equal(judged.unique, expected[merged > 0])
            assert np.array_equal(judged.counts, np.rint(merged[merged > 0]).astype(np.int64))
            for k, repaired in zip(judged.candidates.tolist(), judged.repaired, strict=True):
                assert repaired.dtype == np.uint8
                assert np.array_equal(repaired, problem.repair(judged.unique[k]))
                infeasible_candidates += int(not judged.feasible[k])
    assert infeasible_candidates > 50

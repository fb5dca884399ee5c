from __future__ import annotations

import numpy as np
import pytest

from qhybrid.portfolio.baselines import exact
from qhybrid.portfolio.lots import LotsProblem
from qhybrid.portfolio.postprocess import postprocess
from qhybrid.portfolio.samples import analyse_samples
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
    # The quantum best agrees with the worker's analysis.
    analysis = analyse_samples(problem, bits, counts)
    assert analysis.best_bits == result.quantum_best_bits
    assert analysis.source == result.quantum_source


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


@pytest.mark.parametrize("kind", ["psd", "negative", "indefinite"])
def test_agrees_with_analyse_samples(kind: str) -> None:
    problem = random_problem(7, 3, 4, kind=kind)
    rng = np.random.default_rng(1)
    bits = all_bits(7)[rng.choice(128, size=40, replace=False)]
    counts = rng.integers(0, 6, size=40)
    counts[0] = 1
    optimum = exact(problem).bits
    result = postprocess(problem, bits.astype(np.uint8), counts, optimum_bits=optimum)
    analysis = analyse_samples(problem, bits.astype(np.uint8), counts, optimum_bits=optimum)
    assert result.quantum_best_bits == analysis.best_bits
    assert result.quantum_best_objective == analysis.best_objective
    assert result.quantum_source == analysis.source
    assert result.feasible_share == pytest.approx(analysis.feasible_share)
    assert result.quantum_best_share == pytest.approx(analysis.best_share)
    assert result.optimum_share == pytest.approx(analysis.optimum_share)
    assert result.distinct == analysis.distinct
    assert result.refined_objective <= result.quantum_best_objective


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

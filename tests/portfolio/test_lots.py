from __future__ import annotations

import itertools

import numpy as np
import pytest

from qhybrid.portfolio.baselines import exact
from qhybrid.portfolio.lots import LotsProblem, bounded_coefficients
from tests.portfolio.factories import all_bits, random_problem


def random_lots(n: int, total: int, seed: int, *, kind: str = "psd", max_span: int = 4) -> LotsProblem:
    """A random lots instance whose bounds admit an allocation of ``total`` lots."""
    if total > n * (1 + max_span):
        raise ValueError("no bounds of that span admit the total")
    rng = np.random.default_rng(seed + 1000)
    base = random_problem(n, 0, seed, kind=kind)
    while True:
        low = rng.integers(0, 2, size=n)
        high = low + rng.integers(0, max_span + 1, size=n)
        if low.sum() <= total <= high.sum():
            break
    return LotsProblem(
        base.names, base.expected_returns, base.covariance, base.risk_aversion, total, low, high
    )


@pytest.mark.parametrize("span", range(70))
def test_coefficients_reach_exactly_the_span(span: int) -> None:
    coefficients = bounded_coefficients(span)
    assert coefficients.size == span.bit_length()
    assert np.all(coefficients >= 1)
    sums = {
        int(sum(c)) for k in range(coefficients.size + 1) for c in itertools.combinations(coefficients, k)
    }
    assert sums == set(range(span + 1))


def test_coefficients_reject_negative_span() -> None:
    with pytest.raises(ValueError, match="span"):
        bounded_coefficients(-1)


def test_encoding_covers_exactly_the_bounds() -> None:
    problem = LotsProblem(
        tuple("abcd"), np.zeros(4), np.eye(4), 1.0, 10, np.array([0, 2, 3, 1]), np.array([5, 2, 9, 4])
    )
    assert problem.num_variables == 3 + 0 + 3 + 2
    encoding = problem.encoding
    assert [e.variables for e in encoding] == [slice(0, 3), slice(3, 3), slice(3, 6), slice(6, 8)]
    assert [e.coefficients.tolist() for e in encoding] == [[1, 2, 2], [], [1, 2, 3], [1, 2]]
    lots = problem.lots_of(all_bits(problem.num_variables))
    for i in range(4):
        assert set(lots[:, i].tolist()) == set(range(problem.min_lots[i], problem.max_lots[i] + 1))
    assert problem.hamming_weight is None


def test_bits_and_lots_round_trip() -> None:
    problem = random_lots(4, 6, seed=0, max_span=5)
    bits = all_bits(problem.num_variables)
    lots = problem.lots_of(bits)
    # Every lot vector's canonical code decodes to it, in a batch and one by one.
    assert np.array_equal(problem.lots_of(problem.bits_of(lots)), lots)
    assert np.array_equal(problem.lots_of(problem.bits_of(lots[7]))[0], lots[7])
    assert problem.bits_of(lots[7]).shape == (problem.num_variables,)
    with pytest.raises(ValueError, match="within"):
        problem.bits_of(problem.max_lots + 1)
    with pytest.raises(ValueError, match="integers"):
        problem.bits_of(problem.min_lots + 0.5)
    with pytest.raises(ValueError, match="length"):
        problem.bits_of(np.zeros(problem.num_assets + 1, dtype=np.int64))


@pytest.mark.parametrize("kind", ["psd", "negative", "large_mu", "indefinite"])
@pytest.mark.parametrize(("n", "total"), [(2, 3), (3, 4), (4, 6), (5, 5)])
def test_qubo_energy_is_objective_plus_penalty(kind: str, n: int, total: int) -> None:
    for seed in range(3):
        problem = random_lots(n, total, seed, kind=kind, max_span=3)
        bits = all_bits(problem.num_variables)
        qubo, weight = problem.to_qubo()
        assert weight > 0.0
        excess = problem.lots_of(bits).sum(axis=1) - total
        expected = problem.objective(bits) + weight * excess.astype(np.float64) ** 2
        np.testing.assert_allclose(qubo.energy(bits), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["psd", "negative", "large_mu", "indefinite"])
@pytest.mark.parametrize(("n", "total"), [(2, 3), (3, 5), (4, 6), (5, 7)])
def test_qubo_minimum_is_feasible_and_optimal(kind: str, n: int, total: int) -> None:
    for seed in range(4):
        problem = random_lots(n, total, seed, kind=kind, max_span=4)
        bits = all_bits(problem.num_variables)
        qubo, _ = problem.to_qubo()
        energies = qubo.energy(bits)
        minimisers = bits[energies <= energies.min() + 1e-9 * max(1.0, abs(energies.min()))]
        assert problem.is_feasible(minimisers).all()
        optimum = exact(problem)
        assert energies.min() == pytest.approx(optimum.objective, rel=1e-9, abs=1e-12)


def test_penalty_is_the_argument_not_the_range() -> None:
    # The bound grows like 1/L while the objective's range does not shrink with L.
    problem = random_lots(4, 20, 0, max_span=10)
    _, weight = problem.to_qubo()
    objectives = problem.objective(all_bits(problem.num_variables))
    assert weight < objectives.max() - objectives.min()
    _, explicit = problem.to_qubo(penalty=3.0)
    assert explicit == 3.0
    with pytest.raises(ValueError, match="penalty"):
        problem.to_qubo(penalty=-1.0)


def test_objective_and_evaluation() -> None:
    problem = LotsProblem(
        ("x", "y", "z"),
        np.array([0.1, 0.2, 0.05]),
        np.array([[0.04, 0.01, 0.0], [0.01, 0.09, 0.0], [0.0, 0.0, 0.01]]),
        2.0,
        4,
        np.array([0, 0, 1]),
        np.array([3, 3, 3]),
    )
    lots = np.array([1, 0, 3])
    bits = problem.bits_of(lots)
    w = lots / 4.0
    expected = 2.0 * w @ problem.covariance @ w - problem.expected_returns @ w
    assert problem.objective(bits)[0] == pytest.approx(expected)
    assert problem.is_feasible(bits)[0]
    evaluation = problem.evaluate(bits)
    assert evaluation.selected == ("x", "z")
    assert evaluation.lots == {"x": 1, "y": 0, "z": 3}
    assert evaluation.weights == {"x": 0.25, "y": 0.0, "z": 0.75}
    assert evaluation.objective == pytest.approx(expected)
    assert evaluation.variance == pytest.approx(w @ problem.covariance @ w)
    assert evaluation.expected_return == pytest.approx(problem.expected_returns @ w)
    data = evaluation.as_dict()
    assert data["selected"] == ["x", "z"]
    assert data["lots"] == {"x": 1, "y": 0, "z": 3}
    assert data["bits"] == list(bits)
    assert data["feasible"] is True
    assert not problem.evaluate(problem.bits_of(np.array([3, 3, 3]))).feasible
    with pytest.raises(ValueError, match="one bit vector"):
        problem.evaluate(np.zeros((2, problem.num_variables)))


def test_fixed_assets_need_no_bits() -> None:
    problem = LotsProblem(("a", "b"), np.zeros(2), np.eye(2), 1.0, 3, np.array([1, 2]), np.array([1, 2]))
    assert problem.num_variables == 0
    assert problem.lots_of(np.zeros(0, dtype=np.uint8)).tolist() == [[1, 2]]
    assert problem.is_feasible(np.zeros(0, dtype=np.uint8))[0]
    assert problem.to_qubo()[0].num_variables == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_lots": np.array([-1, 0, 0])}, ">= 0"),
        ({"max_lots": np.array([3, 0, 3]), "min_lots": np.array([0, 1, 0])}, "max_lots must be >= min_lots"),
        ({"total_lots": 7}, "maximum lots add up to 6"),
        ({"min_lots": np.array([2, 2, 2]), "total_lots": 5}, "minimum lots add up to 6"),
        ({"total_lots": 0}, ">= 1"),
        ({"total_lots": 2.5}, "integer"),
        ({"min_lots": np.array([0.5, 0, 0])}, "integers"),
        ({"max_lots": np.array([2, 2])}, "shape"),
        ({"risk_aversion": -1.0}, "risk_aversion"),
        ({"names": ("a", "a", "b")}, "unique"),
    ],
)
def test_validation(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {
        "names": ("a", "b", "c"),
        "expected_returns": np.zeros(3),
        "covariance": np.eye(3),
        "risk_aversion": 1.0,
        "total_lots": 4,
        "min_lots": np.zeros(3, dtype=np.int64),
        "max_lots": np.full(3, 2),
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LotsProblem(**arguments)  # type: ignore[arg-type]


def test_arrays_are_read_only() -> None:
    problem = random_lots(3, 4, 0)
    for array in (problem.min_lots, problem.max_lots, problem.expected_returns, problem.covariance):
        assert not array.flags.writeable

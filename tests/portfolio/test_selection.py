from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from qhybrid.portfolio.selection import Evaluation, SelectionProblem
from tests.portfolio.factories import random_problem


def small() -> SelectionProblem:
    return SelectionProblem(
        names=("A", "B", "C"),
        expected_returns=np.array([0.1, 0.2, 0.05]),
        covariance=np.array([[0.04, 0.01, 0.0], [0.01, 0.09, -0.02], [0.0, -0.02, 0.01]]),
        risk_aversion=2.0,
        budget=2,
    )


def test_objective_matches_the_formula() -> None:
    problem = small()
    x = np.array([1, 1, 0])
    expected = 2.0 * (0.04 + 0.09 + 2 * 0.01) - 0.3
    assert problem.objective(x) == pytest.approx([expected])
    assert problem.num_assets == 3


def test_objective_is_batched_and_agrees_with_evaluate() -> None:
    problem = random_problem(6, 3, seed=1, kind="negative")
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 2, size=(20, 6))
    values = problem.objective(xs)
    assert values.shape == (20,)
    for x, value in zip(xs, values, strict=True):
        manual = problem.risk_aversion * x @ problem.covariance @ x - problem.expected_returns @ x
        assert value == pytest.approx(manual)
        assert problem.evaluate(x).objective == pytest.approx(value)
    assert problem.is_feasible(xs).tolist() == [int(x.sum()) == 3 for x in xs]


def test_evaluate() -> None:
    evaluation = small().evaluate(np.array([0, 1, 1]))
    assert evaluation == Evaluation(
        selected=("B", "C"),
        bits=(0, 1, 1),
        expected_return=pytest.approx(0.25),  # type: ignore[arg-type]
        variance=pytest.approx(0.09 + 0.01 - 0.04),  # type: ignore[arg-type]
        objective=pytest.approx(2.0 * 0.06 - 0.25),  # type: ignore[arg-type]
    )
    as_dict = evaluation.as_dict()
    assert as_dict["selected"] == ["B", "C"]
    assert as_dict["bits"] == [0, 1, 1]
    assert set(as_dict) == {"selected", "bits", "expected_return", "variance", "objective"}


def test_is_feasible_single_vector() -> None:
    problem = small()
    assert problem.is_feasible(np.array([1, 0, 1])).tolist() == [True]
    assert problem.is_feasible(np.array([1, 1, 1])).tolist() == [False]


def test_arrays_are_frozen_copies() -> None:
    mu = np.array([0.1, 0.2])
    problem = SelectionProblem(("A", "B"), mu, np.eye(2), 1.0, 1)
    mu[0] = 5.0
    assert problem.expected_returns[0] == 0.1
    with pytest.raises(ValueError):
        problem.expected_returns[0] = 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"names": ()}, "at least one"),
        ({"names": ("A", "A")}, "unique"),
        ({"expected_returns": np.zeros(3)}, "expected_returns"),
        ({"covariance": np.eye(3)}, "covariance"),
        ({"covariance": np.array([[1.0, 0.5], [0.0, 1.0]])}, "symmetric"),
        ({"expected_returns": np.array([np.nan, 0.0])}, "finite"),
        ({"risk_aversion": -1.0}, "risk_aversion"),
        ({"budget": 3}, "budget"),
        ({"budget": -1}, "budget"),
        ({"budget": 1.5}, "integer"),
        ({"budget": True}, "integer"),
    ],
)
def test_validation(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "names": ("A", "B"),
        "expected_returns": np.array([0.1, 0.2]),
        "covariance": np.eye(2),
        "risk_aversion": 1.0,
        "budget": 1,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SelectionProblem(**arguments)  # type: ignore[arg-type]


def test_portfolio_package_does_not_load_qiskit() -> None:
    # The business side must stay importable (and auditable) without any circuit machinery.
    code = (
        "import sys, qhybrid.portfolio.selection, qhybrid.portfolio.lots, qhybrid.portfolio.classical, "
        "qhybrid.portfolio.postprocess; print(any(m.split('.')[0].startswith('qiskit') for m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "False"


def test_bit_validation() -> None:
    problem = small()
    with pytest.raises(ValueError, match="length 3"):
        problem.objective(np.array([1, 0]))
    with pytest.raises(ValueError, match="0 and 1"):
        problem.objective(np.array([1, 2, 0]))
    with pytest.raises(ValueError, match="one bit vector"):
        problem.evaluate(np.array([[1, 0, 1]]))

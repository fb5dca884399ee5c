from __future__ import annotations

import numpy as np
import pytest

from qhybrid.quantum.objective import CvarObjective, MeanObjective, cvar


def direct_cvar(values: np.ndarray, probabilities: np.ndarray, alpha: float) -> float:
    """The textbook definition, one state at a time: fill the lowest α of the mass."""
    remaining = alpha
    total = 0.0
    for k in np.argsort(values, kind="stable"):
        taken = min(probabilities[k], remaining)
        total += taken * values[k]
        remaining -= taken
        if remaining <= 0.0:
            break
    return total / alpha


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_cvar_matches_the_direct_computation(alpha: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=50)
    values[:5] = values[5]  # ties must not matter
    probabilities = rng.random(50) ** 3
    probabilities /= probabilities.sum()
    expected = direct_cvar(values, probabilities, alpha)
    assert cvar(values, probabilities, alpha) == pytest.approx(expected, abs=1e-12)
    value, observable = CvarObjective(values, alpha).evaluate(probabilities)
    assert value == pytest.approx(expected, abs=1e-12)
    assert observable.shape == values.shape
    # The observable is nonzero only strictly below the boundary state.
    assert np.all(observable <= 0.0)


def test_cvar_of_one_is_the_mean_and_mean_objective() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=20)
    probabilities = rng.random(20)
    probabilities /= probabilities.sum()
    mean, observable = MeanObjective(values).evaluate(probabilities)
    assert mean == pytest.approx(float(probabilities @ values))
    np.testing.assert_array_equal(observable, values)
    assert CvarObjective(values, 1.0).evaluate(probabilities)[0] == pytest.approx(mean, abs=1e-12)


def test_cvar_gradient_observable_is_the_derivative_in_the_probabilities() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=30)
    probabilities = rng.random(30)
    probabilities /= probabilities.sum()
    objective = CvarObjective(values, 0.2)
    _, observable = objective.evaluate(probabilities)
    eps = 1e-7
    for k in range(30):
        up = probabilities.copy()
        up[k] += eps
        numeric = (objective.evaluate(up)[0] - objective.evaluate(probabilities)[0]) / eps
        assert observable[k] == pytest.approx(numeric, abs=1e-5)


def test_alpha_validation() -> None:
    with pytest.raises(ValueError, match="alpha"):
        CvarObjective(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="alpha"):
        cvar(np.zeros(3), np.ones(3) / 3, 1.1)
    with pytest.raises(ValueError, match="shape"):
        cvar(np.zeros(3), np.ones(4) / 4, 0.5)

"""The long-only efficient frontier: feasible weights, ordered, and no long-only portfolio beats it."""

from __future__ import annotations

import numpy as np
import pytest

from qhybrid.portfolio.frontier import efficient_frontier, portfolio_point


def universe(seed: int, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, n + 2)) * 0.01
    return rng.normal(0.0008, 0.0005, size=n), factors @ factors.T + np.eye(n) * 1e-5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_random_long_only_portfolio_beats_the_frontier(seed: int) -> None:
    mu, sigma = universe(seed)
    frontier = efficient_frontier(mu, sigma, points=30)
    assert len(frontier) == 30
    returns = [p.expected_return for p in frontier]
    assert returns == sorted(returns)
    assert returns[-1] == pytest.approx(mu.max(), rel=1e-6)
    for point in frontier:
        assert point.weights.min() >= 0 and point.weights.sum() == pytest.approx(1.0)
    # 5000 random long-only portfolios: none has a lower volatility at a return a point reaches.
    weights = np.random.default_rng(seed + 100).dirichlet(np.ones(mu.size), size=5000)
    rets, vols = weights @ mu, np.sqrt(np.einsum("ij,jk,ik->i", weights, sigma, weights))
    for point in frontier:
        dominated = (rets >= point.expected_return) & (vols < point.volatility * (1 - 1e-6))
        assert not dominated.any()


def test_the_first_point_is_the_minimum_variance_portfolio() -> None:
    mu, sigma = universe(4)
    lowest = efficient_frontier(mu, sigma, points=5)[0]
    weights = np.random.default_rng(9).dirichlet(np.ones(mu.size), size=5000)
    vols = np.sqrt(np.einsum("ij,jk,ik->i", weights, sigma, weights))
    assert lowest.volatility <= vols.min() + 1e-9
    equal = portfolio_point(np.full(mu.size, 1 / mu.size), mu, sigma)
    assert equal.expected_return == pytest.approx(mu.mean())


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="mu must be"):
        efficient_frontier(np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="points"):
        efficient_frontier(np.zeros(2), np.eye(2), points=1)

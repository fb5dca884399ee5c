"""The long-only mean-variance efficient frontier of a universe (Markowitz), for the dashboard.

For target returns ``r`` from the minimum-variance portfolio's return to the best asset's, each
point is ``argmin wᵀΣw`` subject to ``Σw = 1``, ``w ≥ 0`` and ``μᵀw = r`` (SLSQP). The frontier
is computed in the trusted zone on the job's own μ and Σ: it is a picture of the universe the job
chose from, next to the portfolio it chose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

FloatArray = NDArray[np.float64]

#: Points on the frontier by default: enough for a smooth curve, cheap for ≤ 64 assets.
DEFAULT_POINTS = 30


@dataclass(frozen=True)
class FrontierPortfolio:
    """One long-only portfolio: its weights, return and volatility."""

    weights: FloatArray
    expected_return: float
    volatility: float


def portfolio_point(weights: FloatArray, mu: FloatArray, sigma: FloatArray) -> FrontierPortfolio:
    """Return and volatility of ``weights`` on ``μ`` and ``Σ``."""
    w = np.asarray(weights, dtype=np.float64)
    variance = float(w @ sigma @ w)
    return FrontierPortfolio(w, float(w @ mu), float(np.sqrt(max(variance, 0.0))))


def _min_variance(mu: FloatArray, sigma: FloatArray, target: float | None, start: FloatArray) -> FloatArray:
    n = mu.shape[0]
    constraints: list[dict[str, object]] = [{"type": "eq", "fun": lambda w: float(w.sum() - 1.0)}]
    if target is not None:
        # Scaled so that SLSQP's tolerance means the same for daily and annual returns.
        scale = max(float(np.abs(mu).max()), 1e-12)
        constraints.append({"type": "eq", "fun": lambda w: float((w @ mu - target) / scale)})
    scale_sigma = max(float(np.abs(np.diag(sigma)).max()), 1e-18)
    solution = minimize(
        lambda w: float(w @ sigma @ w) / scale_sigma,
        start,
        jac=lambda w: 2.0 * (sigma @ w) / scale_sigma,
        bounds=[(0.0, 1.0)] * n,
        constraints=constraints,
        method="SLSQP",
        options={"maxiter": 500, "ftol": 1e-12},
    )
    weights = np.clip(np.asarray(solution.x, dtype=np.float64), 0.0, None)
    total = weights.sum()
    return weights / total if total > 0 else np.full(n, 1.0 / n)


def efficient_frontier(
    mu: FloatArray, sigma: FloatArray, points: int = DEFAULT_POINTS
) -> list[FrontierPortfolio]:
    """The efficient (upper) branch of the long-only frontier, ordered by expected return.

    Args:
        mu: Expected returns, shape ``(n,)``.
        sigma: Covariance, shape ``(n, n)``, positive semidefinite.
        points: How many target returns (at least 2).

    Raises:
        ValueError: On inconsistent shapes or fewer than 2 points.
    """
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    n = mu.shape[0]
    if mu.ndim != 1 or sigma.shape != (n, n) or n < 1:
        raise ValueError(f"mu must be (n,) and sigma (n, n); got {mu.shape} and {sigma.shape}")
    if points < 2:
        raise ValueError(f"points must be at least 2, got {points}")
    start = np.full(n, 1.0 / n)
    lowest = portfolio_point(_min_variance(mu, sigma, None, start), mu, sigma)
    top = float(mu.max())
    if top - lowest.expected_return <= 1e-15 * max(1.0, abs(top)):
        return [lowest]
    frontier = [lowest]
    previous = lowest.weights
    for target in np.linspace(lowest.expected_return, top, points)[1:]:
        # Each point starts from its neighbour: the weights move little from one target to the next.
        weights = _min_variance(mu, sigma, float(target), previous)
        frontier.append(portfolio_point(weights, mu, sigma))
        previous = weights
    return frontier

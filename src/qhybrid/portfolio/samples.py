"""Greedy repair of a selection to its budget, on the true objective."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qhybrid.portfolio.model import PortfolioProblem, as_bit_matrix


def repair(problem: PortfolioProblem, x: ArrayLike) -> NDArray[np.uint8]:
    """Greedily bring one selection to the budget.

    While fewer than ``budget`` assets are held, add the asset whose addition lowers the
    objective most; while more are held, drop the one whose removal lowers it most. Ties go to
    the lowest asset index. Each step uses the exact marginal change, computed for all candidate
    assets at once: adding ``i`` changes ``f`` by ``q(Σ_ii + 2(Σx)_i) − μ_i``, dropping ``i``
    by ``μ_i − q(2(Σx)_i − Σ_ii)``.

    Args:
        problem: The portfolio problem.
        x: One bit vector of shape ``(n,)``.

    Returns:
        A feasible bit vector (``uint8``); ``x`` itself (as a copy) if it was already feasible.
    """
    if np.ndim(x) != 1:
        raise ValueError(f"repair takes one bit vector, got shape {np.shape(x)}")
    bits = as_bit_matrix(x, problem.num_assets)[0]
    q = problem.risk_aversion
    cov = problem.covariance
    mu = problem.expected_returns
    diagonal = np.diag(cov)
    load = cov @ bits  # (Σx)_i, updated incrementally as assets come and go
    held = round(float(bits.sum()))
    while held != problem.budget:
        if held < problem.budget:
            change = np.where(bits == 0.0, q * (diagonal + 2.0 * load) - mu, np.inf)
            i = int(np.argmin(change))
            bits[i] = 1.0
            load += cov[:, i]
            held += 1
        else:
            change = np.where(bits == 1.0, mu - q * (2.0 * load - diagonal), np.inf)
            i = int(np.argmin(change))
            bits[i] = 0.0
            load -= cov[:, i]
            held -= 1
    return np.asarray(bits, dtype=np.uint8)

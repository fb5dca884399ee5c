"""From a :class:`PortfolioProblem` to an anonymous QUBO with the budget as a penalty.

The QUBO energy is ``f(x) + A (Σ x_i − B)²`` where ``f(x) = q xᵀΣx − μᵀx`` is the portfolio
objective, ``B`` the budget and ``A`` the penalty weight from :func:`penalty_weight`.
"""

from __future__ import annotations

import math

import numpy as np

from qhybrid.core.qubo import Qubo
from qhybrid.portfolio.model import PortfolioProblem

#: Factor applied to the worst-case objective change; anything above 1 keeps the argument strict,
#: and a modest value keeps the penalty from drowning the objective in the QAOA landscape.
PENALTY_MARGIN = 1.25


def penalty_weight(problem: PortfolioProblem) -> float:
    """A penalty weight ``A`` large enough that every minimiser of the QUBO is feasible.

    The argument. Let ``f(x) = q xᵀΣx − μᵀx`` and ``k = Σ x_i``. Take any infeasible ``x`` and
    move one step towards the budget ``B``:

    * if ``k < B``, add an asset ``i`` not in ``x``: ``f`` changes by
      ``Δ⁺ = q (Σ_ii + 2 Σ_{j∈x} Σ_ij) − μ_i``. Since ``x`` holds at most ``B − 1`` assets,
      ``Δ⁺ ≤ U⁺_i = q Σ_ii − μ_i + 2q · (sum of the B − 1 largest values max(Σ_ij, 0), j ≠ i)``;
    * if ``k > B``, drop an asset ``i`` of ``x``: ``f`` changes by
      ``Δ⁻ = μ_i − q (Σ_ii + 2 Σ_{j∈x, j≠i} Σ_ij) ≤ U⁻_i = μ_i − q Σ_ii + 2q Σ_{j≠i} max(−Σ_ij, 0)``.

    Let ``D`` be the largest ``U⁺_i`` (only when ``B ≥ 1``, otherwise no step adds) and ``U⁻_i``
    (only when ``B < n``). Meanwhile the penalty falls from ``A (k − B)²`` to
    ``A (|k − B| − 1)²``, that is by ``A (2|k − B| − 1) ≥ A``. So when ``A > D`` every infeasible
    ``x`` has a neighbour of strictly lower QUBO energy, hence no infeasible ``x`` is a minimiser;
    on feasible vectors the penalty vanishes, so the QUBO minimisers are exactly the portfolio
    optima. We take ``A = PENALTY_MARGIN · D``. One-sided bounds (rather than absolute values)
    keep ``A`` small, which matters to QAOA: a huge penalty flattens the objective's landscape.
    If ``D ≤ 0`` (moving towards the budget never hurts) any positive ``A`` works and we use the
    problem's coefficient scale.

    Args:
        problem: The portfolio problem.

    Returns:
        A strictly positive, finite penalty weight.
    """
    n = problem.num_assets
    budget = problem.budget
    q = problem.risk_aversion
    mu = problem.expected_returns
    cov = problem.covariance
    diagonal = np.diag(cov)
    off_diagonal = cov - np.diag(diagonal)
    bounds: list[float] = []
    if budget >= 1:
        # Sorting each row's positive parts descending lets us sum the B − 1 largest ones.
        positive = np.sort(np.maximum(off_diagonal, 0.0), axis=1)[:, ::-1]
        top = positive[:, : budget - 1].sum(axis=1)
        bounds.append(float(np.max(q * diagonal - mu + 2.0 * q * top)))
    if budget < n:
        negative = np.maximum(-off_diagonal, 0.0).sum(axis=1)
        bounds.append(float(np.max(mu - q * diagonal + 2.0 * q * negative)))
    worst = max(bounds)
    if worst <= 0.0:
        scale = float(max(np.abs(mu).max(), q * np.abs(cov).max()))
        worst = scale if scale > 0.0 else 1.0
    weight = PENALTY_MARGIN * worst
    if not math.isfinite(weight):
        raise ValueError("the problem's coefficients are too large for a finite penalty")
    return weight


def to_qubo(problem: PortfolioProblem, penalty: float | None = None) -> tuple[Qubo, float]:
    """The QUBO whose energy is ``f(x) + A (Σ x_i − B)²`` exactly, offset included.

    Expanding with ``x_i² = x_i``: ``(Σx − B)² = xᵀ(11ᵀ)x − 2B Σ x_i + B²``, so
    ``Q = qΣ + A·11ᵀ − diag(μ + 2AB)`` and ``offset = A B²``.

    Args:
        problem: The portfolio problem.
        penalty: ``A``; ``None`` means :func:`penalty_weight`. A value below that bound is
            accepted but may make an infeasible vector the QUBO minimum.

    Returns:
        The QUBO and the penalty weight used.

    Raises:
        ValueError: If ``penalty`` is negative or not finite.
    """
    weight = penalty_weight(problem) if penalty is None else float(penalty)
    if not math.isfinite(weight) or weight < 0.0:
        raise ValueError(f"penalty must be finite and >= 0, got {penalty}")
    n = problem.num_assets
    budget = float(problem.budget)
    matrix = problem.risk_aversion * problem.covariance + weight * np.ones((n, n))
    matrix = matrix - np.diag(problem.expected_returns + 2.0 * weight * budget)
    return Qubo(matrix=matrix, offset=weight * budget * budget), weight

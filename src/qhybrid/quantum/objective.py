"""What the QAOA angle search minimises over the simulated output distribution.

Every objective here is a function of the probabilities ``p_k = |ψ_k|²`` of the simulated basis
states. For the adjoint gradient it also returns a DIAGONAL OBSERVABLE ``O`` such that, at the
current point, ``∂objective/∂θ = ∂<ψ(θ)|O|ψ(θ)>/∂θ`` with ``O`` held fixed: the simulators then
differentiate ``<O>`` exactly like an energy.

* :class:`MeanObjective` — ``E[f] = Σ p_k f_k``; ``O = f``.
* :class:`CvarObjective` — ``CVaR_α``, the mean of the lowest ``α`` fraction of the cost
  distribution (Barkoutsos et al. 2020). With the states sorted by cost and ``k*`` the first one
  at which the cumulative probability reaches ``α``,
  ``CVaR_α = (Σ_{j<k*} p_j f_j + (α − Σ_{j<k*} p_j) f_{k*}) / α``: the boundary state only counts
  with the weight that is left. Rewritten as ``f_{k*} + Σ_{j<k*} p_j (f_j − f_{k*}) / α``, its
  derivative with respect to ``p_j`` is ``(f_j − f_{k*}) / α`` below the boundary and ``0`` from
  the boundary on (the boundary state's own probability only moves the boundary). That is ``O``.
  The function is piecewise smooth: the derivative jumps where the boundary state changes.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from qhybrid.domain.qubo import FloatArray


class Objective(Protocol):
    """A function of the output distribution with a gradient observable (see the module docstring)."""

    def evaluate(self, probabilities: FloatArray) -> tuple[float, FloatArray]:
        """``(value, O)`` at the given basis-state probabilities."""
        ...


class MeanObjective:
    """The expectation ``Σ p_k f_k`` of a diagonal cost ``f``.

    Args:
        cost: ``f`` over the simulated basis states.
    """

    def __init__(self, cost: FloatArray) -> None:
        self.cost = np.asarray(cost, dtype=np.float64)

    def evaluate(self, probabilities: FloatArray) -> tuple[float, FloatArray]:
        """``(E[f], f)``."""
        return float(probabilities @ self.cost), self.cost


class CvarObjective:
    """``CVaR_α`` of a diagonal cost: the mean of its lowest ``α`` probability mass.

    Args:
        cost: ``f`` over the simulated basis states.
        alpha: The fraction ``0 < α ≤ 1``; ``α = 1`` is the plain mean.

    Raises:
        ValueError: If ``alpha`` is not in ``(0, 1]``.
    """

    def __init__(self, cost: FloatArray, alpha: float) -> None:
        if not (math.isfinite(alpha) and 0.0 < alpha <= 1.0):
            raise ValueError(f"cvar alpha must be in (0, 1], got {alpha}")
        self.cost = np.asarray(cost, dtype=np.float64)
        self.alpha = float(alpha)
        # The order is fixed by the cost alone: sort once, reuse at every evaluation.
        self._order = np.argsort(self.cost, kind="stable")
        self._sorted = self.cost[self._order]

    def evaluate(self, probabilities: FloatArray) -> tuple[float, FloatArray]:
        """``(CVaR_α, O)`` with ``O`` the gradient observable of the module docstring."""
        ordered = probabilities[self._order]
        cumulative = np.cumsum(ordered)
        # Rounding can leave the total a hair below 1 when α = 1: then the last state is the boundary.
        boundary = min(int(np.searchsorted(cumulative, self.alpha, side="left")), ordered.size - 1)
        edge = float(self._sorted[boundary])
        head = self._sorted[:boundary]
        value = edge + float(ordered[:boundary] @ (head - edge)) / self.alpha
        observable = np.zeros_like(self.cost)
        observable[self._order[:boundary]] = (head - edge) / self.alpha
        return value, observable


def cvar(cost: FloatArray, probabilities: FloatArray, alpha: float) -> float:
    """``CVaR_α`` of the distribution ``probabilities`` over the values ``cost``.

    A direct computation (sort, accumulate, take the lowest ``α`` mass, split the boundary
    state), independent of :class:`CvarObjective`'s rewritten form.

    Args:
        cost: Values, shape ``(m,)``.
        probabilities: Their probabilities, shape ``(m,)``, summing to 1.
        alpha: The fraction ``0 < α ≤ 1``.

    Returns:
        The mean of the lowest ``α`` fraction of the distribution.

    Raises:
        ValueError: If ``alpha`` is not in ``(0, 1]`` or the shapes differ.
    """
    if not (math.isfinite(alpha) and 0.0 < alpha <= 1.0):
        raise ValueError(f"cvar alpha must be in (0, 1], got {alpha}")
    values = np.asarray(cost, dtype=np.float64)
    weights = np.asarray(probabilities, dtype=np.float64)
    if values.shape != weights.shape:
        raise ValueError(f"cost and probabilities differ in shape: {values.shape} and {weights.shape}")
    order = np.argsort(values, kind="stable")
    taken = np.clip(alpha - (np.cumsum(weights[order]) - weights[order]), 0.0, weights[order])
    return float(taken @ values[order]) / alpha

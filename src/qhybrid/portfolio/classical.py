"""Exact classical reference: the best feasible selection by exhaustive enumeration."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qhybrid.domain.qubo import FloatArray
from qhybrid.portfolio.selection import SelectionProblem

#: Refuse enumerations beyond this many selections: they would run for hours.
MAX_SELECTIONS = 1 << 34


@dataclass(frozen=True)
class ClassicalSolution:
    """The result of a classical solver.

    Attributes:
        bits: The selection, 0/1 per asset.
        objective: Its objective ``q · xᵀΣx − μᵀx``.
        method: Which solver produced it (``"brute_force"``, ``"scip"``, ...).
        evaluated: How many feasible selections were evaluated (solver nodes for SCIP, samples for
            annealing).
        seconds: Wall-clock time the solver took.
        optimal: Whether the solution is proven optimal (enumeration, or SCIP's status).
    """

    bits: tuple[int, ...]
    objective: float
    method: str
    evaluated: int
    seconds: float = 0.0
    optimal: bool = False

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dictionary (tuples become lists)."""
        return {
            "bits": list(self.bits),
            "objective": self.objective,
            "method": self.method,
            "evaluated": self.evaluated,
            "seconds": self.seconds,
            "optimal": self.optimal,
        }


def _subsets(size: int, count: int) -> NDArray[np.uint8]:
    """Every ``count``-subset of ``range(size)`` as a 0/1 row, in ``itertools.combinations`` order."""
    total = math.comb(size, count)
    bits = np.zeros((total, size), dtype=np.uint8)
    if count == 0 or total == 0:
        return bits
    flat = np.fromiter(
        itertools.chain.from_iterable(itertools.combinations(range(size), count)),
        dtype=np.intp,
        count=total * count,
    )
    bits[np.arange(total)[:, np.newaxis], flat.reshape(total, count)] = 1
    return bits


def _half_objectives(bits: FloatArray, risk: float, cov: FloatArray, mu: FloatArray) -> FloatArray:
    """``q · aᵀΣa − μᵀa`` for each row ``a`` of ``bits`` restricted to one half of the assets."""
    return np.asarray(risk * np.einsum("mi,mi->m", bits @ cov, bits) - bits @ mu, dtype=np.float64)


def _first_in_order(candidates: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The row that comes first in ``itertools.combinations`` order among equal-weight rows.

    For selections of equal size, the earlier combination is the one that holds the lowest index
    where the two differ, i.e. the lexicographically largest bit row read from ``x_0``.
    """
    if candidates.shape[0] == 1:
        return np.asarray(candidates[0], dtype=np.uint8)
    order = np.lexsort(candidates.T[::-1])
    return np.asarray(candidates[order[-1]], dtype=np.uint8)


def brute_force(problem: SelectionProblem, *, chunk_size: int = 1 << 16) -> ClassicalSolution:
    """The exact optimum over all ``C(n, B)`` feasible selections.

    The assets are split in a low and a high half. For each way ``k_low + k_high = B`` of sharing
    the budget, the objective of ``x = (a, b)`` is ``f_low(a) + f_high(b) + 2q·aᵀΣ_lh b``: the
    half objectives are computed once per half-selection and the cross terms of a whole block
    of pairs come from one matrix product. Blocks hold at most ``chunk_size`` pairs, which bounds
    the memory, and no combination of the full ``n`` assets is ever materialised.

    Ties (equal computed objectives) go to the selection that comes first in
    ``itertools.combinations(range(n), B)`` order, whatever the block order.

    Args:
        problem: The portfolio problem.
        chunk_size: Maximum number of selections evaluated in one vectorised block.

    Returns:
        The optimal selection; its objective is recomputed with :meth:`SelectionProblem.objective`.

    Raises:
        ValueError: If ``chunk_size < 1`` or there are more than :data:`MAX_SELECTIONS` selections.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    started = time.perf_counter()
    n = problem.num_assets
    budget = problem.budget
    total = math.comb(n, budget)
    if total > MAX_SELECTIONS:
        raise ValueError(f"C({n}, {budget}) = {total} selections is too many to enumerate")
    risk = problem.risk_aversion
    cov = problem.covariance
    mu = problem.expected_returns
    n_low = n // 2
    cov_low, cov_high = cov[:n_low, :n_low], cov[n_low:, n_low:]
    cross = 2.0 * risk * cov[:n_low, n_low:]

    best_value = math.inf
    best_bits: NDArray[np.uint8] | None = None
    for k_low in range(max(0, budget - (n - n_low)), min(budget, n_low) + 1):
        low_bits = _subsets(n_low, k_low)
        high_bits = _subsets(n - n_low, budget - k_low)
        low = low_bits.astype(np.float64)
        high = high_bits.astype(np.float64)
        f_low = _half_objectives(low, risk, cov_low, mu[:n_low])
        f_high = _half_objectives(high, risk, cov_high, mu[n_low:])
        low_cross = low @ cross
        cols = min(high.shape[0], chunk_size)
        rows = max(1, chunk_size // cols)
        for r0 in range(0, low.shape[0], rows):
            r = slice(r0, r0 + rows)
            for c0 in range(0, high.shape[0], cols):
                c = slice(c0, c0 + cols)
                values = low_cross[r] @ high[c].T
                values += f_low[r, np.newaxis]
                values += f_high[np.newaxis, c]
                value = float(values.min())
                if value > best_value:
                    continue
                i, j = np.nonzero(values == value)
                candidate = _first_in_order(
                    np.concatenate([low_bits[r][i], high_bits[c][j]], axis=1),
                )
                if best_bits is None or value < best_value:
                    best_value, best_bits = value, candidate
                else:
                    best_bits = _first_in_order(np.stack([best_bits, candidate]))
    if best_bits is None:  # pragma: no cover - C(n, B) >= 1 whenever 0 <= B <= n
        raise AssertionError("no feasible selection")
    return ClassicalSolution(
        bits=tuple(int(b) for b in best_bits),
        objective=float(problem.objective(best_bits)[0]),
        method="brute_force",
        evaluated=total,
        seconds=time.perf_counter() - started,
        optimal=True,
    )

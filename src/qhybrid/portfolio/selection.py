"""Markowitz binary asset selection under a cardinality budget.

The problem follows the convention of qiskit-finance's ``PortfolioOptimization``: choose a binary
vector ``x`` (``x_i = 1`` buys asset ``i``) that minimises ``q · xᵀΣx − μᵀx`` subject to
``Σ x_i = budget``, where ``q`` is the risk aversion, ``Σ`` the covariance matrix and ``μ`` the
expected returns. This module holds the business data (asset names included) and never leaves
the trusted zone; only the anonymous :class:`~qhybrid.domain.qubo.Qubo` derived from it does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qhybrid.domain.qubo import FloatArray, Qubo
from qhybrid.portfolio.formulation import (
    PENALTY_MARGIN,
    SearchMemo,
    as_bit_matrix,
    best_transfer_search,
    relax_levels,
)


def _frozen(array: FloatArray) -> FloatArray:
    """A read-only copy, so a frozen dataclass cannot be mutated through its arrays."""
    copy = np.array(array, dtype=np.float64, copy=True)
    copy.setflags(write=False)
    return copy


@dataclass(frozen=True)
class Evaluation:
    """One selection judged on the true business data.

    Attributes:
        selected: Names of the bought assets, in the problem's asset order.
        bits: The selection as 0/1 per asset.
        expected_return: ``μᵀx``.
        variance: ``xᵀΣx``.
        objective: ``q · xᵀΣx − μᵀx`` (lower is better).
    """

    selected: tuple[str, ...]
    bits: tuple[int, ...]
    expected_return: float
    variance: float
    objective: float

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dictionary (tuples become lists)."""
        return {
            "selected": list(self.selected),
            "bits": list(self.bits),
            "expected_return": self.expected_return,
            "variance": self.variance,
            "objective": self.objective,
        }


@dataclass(frozen=True)
class SelectionProblem:
    """Pick exactly ``budget`` assets minimising ``risk_aversion · xᵀΣx − μᵀx``.

    Attributes:
        names: Asset names, unique, one per asset.
        expected_returns: ``μ``, shape ``(n,)``.
        covariance: ``Σ``, symmetric, shape ``(n, n)``.
        risk_aversion: ``q ≥ 0``.
        budget: Number of assets to buy, ``0 ≤ budget ≤ n``.

    Raises:
        ValueError: On inconsistent shapes, non-finite numbers, a non-symmetric covariance,
            duplicate names, a negative risk aversion or a budget out of range.
    """

    names: tuple[str, ...]
    expected_returns: FloatArray
    covariance: FloatArray
    risk_aversion: float
    budget: int

    def __post_init__(self) -> None:
        names = tuple(self.names)
        n = len(names)
        if n == 0:
            raise ValueError("a portfolio needs at least one asset")
        if not all(isinstance(name, str) for name in names):
            raise ValueError("asset names must be strings")
        if len(set(names)) != n:
            raise ValueError("asset names must be unique")
        mu = np.asarray(self.expected_returns, dtype=np.float64)
        cov = np.asarray(self.covariance, dtype=np.float64)
        if mu.shape != (n,):
            raise ValueError(f"expected_returns must have shape {(n,)}, got {mu.shape}")
        if cov.shape != (n, n):
            raise ValueError(f"covariance must have shape {(n, n)}, got {cov.shape}")
        if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(cov))):
            raise ValueError("expected_returns and covariance must be finite")
        tolerance = 1e-9 * max(float(np.abs(cov).max()), 1e-300)
        if not np.allclose(cov, cov.T, rtol=0.0, atol=tolerance):
            raise ValueError("covariance must be symmetric")
        risk = float(self.risk_aversion)
        if not math.isfinite(risk) or risk < 0.0:
            raise ValueError(f"risk_aversion must be finite and >= 0, got {self.risk_aversion}")
        if isinstance(self.budget, bool) or int(self.budget) != self.budget:
            raise ValueError(f"budget must be an integer, got {self.budget!r}")
        budget = int(self.budget)
        if not 0 <= budget <= n:
            raise ValueError(f"budget must be between 0 and {n}, got {budget}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "expected_returns", _frozen(mu))
        # Exact symmetry lets every consumer (QUBO, brute force) rely on Σ == Σᵀ bit for bit.
        object.__setattr__(self, "covariance", _frozen((cov + cov.T) / 2.0))
        object.__setattr__(self, "risk_aversion", risk)
        object.__setattr__(self, "budget", budget)

    @property
    def num_assets(self) -> int:
        """Number of assets ``n``."""
        return len(self.names)

    @property
    def num_variables(self) -> int:
        """Number of binary variables: one per asset."""
        return self.num_assets

    @property
    def hamming_weight(self) -> int:
        """Every feasible selection holds exactly ``budget`` ones (what an XY mixer preserves)."""
        return self.budget

    def objective(self, x: ArrayLike) -> FloatArray:
        """``q · xᵀΣx − μᵀx`` for every row of ``x``.

        Args:
            x: One bit vector ``(n,)`` or a batch ``(m, n)``.

        Returns:
            Shape ``(m,)`` (``(1,)`` for a single vector), like :meth:`Qubo.energy`.
        """
        xs = as_bit_matrix(x, self.num_assets)
        variance = np.einsum("mi,mi->m", xs @ self.covariance, xs)
        return np.asarray(self.risk_aversion * variance - xs @ self.expected_returns, dtype=np.float64)

    def is_feasible(self, x: ArrayLike) -> NDArray[np.bool_]:
        """Whether each row of ``x`` buys exactly ``budget`` assets; shape ``(m,)``."""
        xs = as_bit_matrix(x, self.num_assets)
        return np.asarray(np.rint(xs.sum(axis=1)).astype(np.int64) == self.budget, dtype=np.bool_)

    def evaluate(self, x: ArrayLike) -> Evaluation:
        """Judge one selection on the true data.

        Args:
            x: A single bit vector of shape ``(n,)`` (feasible or not).

        Raises:
            ValueError: If ``x`` is not one bit vector of length ``n``.
        """
        if np.ndim(x) != 1:
            raise ValueError(f"evaluate takes one bit vector, got shape {np.shape(x)}")
        xs = as_bit_matrix(x, self.num_assets)[0]
        bits = tuple(int(b) for b in xs)
        variance = float(xs @ self.covariance @ xs)
        expected_return = float(xs @ self.expected_returns)
        return Evaluation(
            selected=tuple(name for name, bit in zip(self.names, bits, strict=True) if bit),
            bits=bits,
            expected_return=expected_return,
            variance=variance,
            objective=float(self.objective(xs)[0]),
        )

    def to_qubo(self, penalty: float | None = None) -> tuple[Qubo, float]:
        """The QUBO ``f(x) + A (Σx − B)²`` and ``A``; see :func:`to_qubo`."""
        return to_qubo(self, penalty)

    def repair(self, x: ArrayLike) -> NDArray[np.uint8]:
        """Greedily bring one selection to the budget; see :func:`repair`."""
        return repair(self, x)

    def local_search(self, x: ArrayLike, memo: SearchMemo | None = None) -> NDArray[np.uint8]:
        """Best-improvement 1-swap search: exchange a held and a non-held asset while it helps.

        All ``B (n − B)`` swaps are scored at once from ``g = Σx`` (swapping ``i`` out and ``j``
        in changes ``f`` by ``q(Σ_ii + Σ_jj − 2Σ_ij + 2g_j − 2g_i) + μ_i − μ_j``) and the best
        one is applied until none improves; ties go to the lowest ``i``, then the lowest ``j``.

        Args:
            x: One bit vector ``(n,)``; an infeasible one is repaired first with :meth:`repair`.
            memo: Shared by searches on this problem (:func:`best_transfer_search`).

        Returns:
            A feasible selection no single swap improves, never worse than the (repaired) input.
        """
        start = self.repair(x)
        n = self.num_assets
        levels = best_transfer_search(
            start,
            np.zeros(n, dtype=np.int64),
            np.ones(n, dtype=np.int64),
            self.risk_aversion * self.covariance,
            self.expected_returns,
            memo,
        )
        return np.asarray(levels, dtype=np.uint8)

    def relaxation(self) -> FloatArray:
        """The continuous relaxation ``min q xᵀΣx − μᵀx`` over ``0 ≤ x ≤ 1``, ``Σx = B``.

        A convex QP when ``Σ`` is positive semidefinite (a covariance is), solved with SLSQP;
        its value is a lower bound on every feasible selection's objective. The warm-start QAOA
        of Egger et al. (2021) starts from this point.

        Returns:
            ``x*`` in ``[0, 1]^n`` with ``Σ x* = B``.
        """
        n = self.num_assets
        return relax_levels(
            self.risk_aversion * self.covariance,
            self.expected_returns,
            np.zeros(n, dtype=np.int64),
            np.ones(n, dtype=np.int64),
            self.budget,
        )


def penalty_weight(problem: SelectionProblem) -> float:
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


def to_qubo(problem: SelectionProblem, penalty: float | None = None) -> tuple[Qubo, float]:
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


def repair(problem: SelectionProblem, x: ArrayLike) -> NDArray[np.uint8]:
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

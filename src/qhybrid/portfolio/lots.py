"""Portfolio weights in integer lots: the formulation behind "how much of each", not just "which".

Each asset ``i`` holds an integer number of lots ``ℓ_i ∈ [min_i, max_i]``, the lots add up to
``L`` and the weight of asset ``i`` is ``w_i = ℓ_i / L``. The objective is Markowitz's
``q · wᵀΣw − μᵀw``. For a quantum solver the lots are written in binary: asset ``i`` gets
``k_i`` bits ``b`` with ``ℓ_i = min_i + Σ_k c_k b_k`` and coefficients ``1, 2, 4, …, 2^(k−2)`` and
a last one that makes the largest code exactly ``max_i − min_i`` (so no code falls outside the
bounds and no qubit is wasted on them). The sum constraint becomes a QUBO penalty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qhybrid.domain.qubo import FloatArray, Qubo
from qhybrid.portfolio.formulation import (
    PENALTY_MARGIN,
    IntArray,
    SearchMemo,
    as_bit_matrix,
    best_transfer_search,
    greedy_fill,
    relax_levels,
)
from qhybrid.portfolio.selection import SelectionProblem


class AssetEncoding(NamedTuple):
    """How one asset's lots are written in bits.

    Attributes:
        variables: The asset's bits in the bit vector (empty when ``min_i == max_i``).
        coefficients: Their weights; ``ℓ_i = min_i + Σ_k coefficients[k] · x[variables][k]``.
    """

    variables: slice
    coefficients: IntArray


def bounded_coefficients(span: int) -> IntArray:
    """Binary coefficients whose 0/1 combinations are exactly ``0, 1, …, span``.

    ``k = span.bit_length()`` bits: ``1, 2, …, 2^(k−2)`` and ``c = span − (2^(k−1) − 1)``. The first
    ``k − 1`` bits reach every value in ``[0, 2^(k−1) − 1]``; as ``1 ≤ c ≤ 2^(k−1)``, adding ``c``
    reaches ``[c, span]``, and the two ranges meet. The largest code is ``span``, so none exceeds it.

    Args:
        span: ``max − min ≥ 0``.

    Returns:
        The coefficients (empty for ``span == 0``).
    """
    if span < 0:
        raise ValueError(f"span must be >= 0, got {span}")
    if span == 0:
        return np.zeros(0, dtype=np.int64)
    k = span.bit_length()
    powers = [1 << p for p in range(k - 1)]
    return np.array([*powers, span - ((1 << (k - 1)) - 1)], dtype=np.int64)


@dataclass(frozen=True)
class LotsEvaluation:
    """One lot allocation judged on the true business data.

    Attributes:
        selected: Names of the assets holding at least one lot, in the problem's order.
        bits: The bit vector.
        lots: Lots per asset, every asset included.
        weights: ``ℓ_i / L`` per asset.
        feasible: Whether the lots add up to ``L``.
        expected_return: ``μᵀw``.
        variance: ``wᵀΣw``.
        objective: ``q · wᵀΣw − μᵀw`` (lower is better).
    """

    selected: tuple[str, ...]
    bits: tuple[int, ...]
    lots: dict[str, int]
    weights: dict[str, float]
    feasible: bool
    expected_return: float
    variance: float
    objective: float

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dictionary (tuples become lists, mappings are copied)."""
        return {
            "selected": list(self.selected),
            "bits": list(self.bits),
            "lots": dict(self.lots),
            "weights": dict(self.weights),
            "feasible": self.feasible,
            "expected_return": self.expected_return,
            "variance": self.variance,
            "objective": self.objective,
        }


def _frozen_ints(values: ArrayLike, name: str, n: int) -> IntArray:
    """A read-only int64 copy of a length-``n`` integer vector, or a clear ValueError."""
    raw = np.asarray(values)
    if raw.shape != (n,):
        raise ValueError(f"{name} must have shape {(n,)}, got {raw.shape}")
    integral = np.issubdtype(raw.dtype, np.integer) or (
        np.issubdtype(raw.dtype, np.floating) and np.all(np.isfinite(raw)) and np.all(raw == np.rint(raw))
    )
    if raw.dtype == np.bool_ or not integral:
        raise ValueError(f"{name} must hold integers")
    ints = np.array(raw, dtype=np.int64, copy=True)
    ints.setflags(write=False)
    return ints


@dataclass(frozen=True)
class LotsProblem:
    """Hold ``ℓ_i ∈ [min_i, max_i]`` lots of each asset, ``Σ ℓ_i = L``, minimising ``q·wᵀΣw − μᵀw``.

    Attributes:
        names: Asset names, unique.
        expected_returns: ``μ``, shape ``(n,)``.
        covariance: ``Σ``, symmetric, shape ``(n, n)``.
        risk_aversion: ``q ≥ 0``.
        total_lots: ``L ≥ 1``; weights are ``ℓ_i / L``.
        min_lots: ``min_i ≥ 0`` per asset.
        max_lots: ``max_i ≥ min_i`` per asset.

    Raises:
        ValueError: On the same data errors as :class:`SelectionProblem`, non-integer or negative
            bounds, ``max_i < min_i``, or a total outside ``[Σ min_i, Σ max_i]`` (no allocation).
    """

    names: tuple[str, ...]
    expected_returns: FloatArray
    covariance: FloatArray
    risk_aversion: float
    total_lots: int
    min_lots: IntArray
    max_lots: IntArray
    _coefficients: IntArray = field(init=False, repr=False, compare=False)
    _owner: NDArray[np.intp] = field(init=False, repr=False, compare=False)
    _starts: NDArray[np.intp] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.total_lots, bool) or int(self.total_lots) != self.total_lots:
            raise ValueError(f"total_lots must be an integer, got {self.total_lots!r}")
        total = int(self.total_lots)
        if total < 1:
            raise ValueError(f"total_lots must be >= 1, got {total}")
        # The selection problem already validates names, μ, Σ and q; reuse it rather than repeat it.
        data = SelectionProblem(self.names, self.expected_returns, self.covariance, self.risk_aversion, 0)
        n = data.num_assets
        low = _frozen_ints(self.min_lots, "min_lots", n)
        high = _frozen_ints(self.max_lots, "max_lots", n)
        if np.any(low < 0):
            raise ValueError("min_lots must be >= 0")
        if np.any(high < low):
            bad = [data.names[i] for i in np.flatnonzero(high < low)]
            raise ValueError(f"max_lots must be >= min_lots, not so for {bad}")
        if int(low.sum()) > total:
            raise ValueError(f"the minimum lots add up to {int(low.sum())} > total_lots = {total}")
        if int(high.sum()) < total:
            raise ValueError(f"the maximum lots add up to {int(high.sum())} < total_lots = {total}")
        codes = [bounded_coefficients(int(span)) for span in high - low]
        sizes = np.array([c.size for c in codes], dtype=np.intp)
        coefficients = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)
        coefficients.setflags(write=False)
        owner = np.repeat(np.arange(n, dtype=np.intp), sizes)
        owner.setflags(write=False)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
        starts.setflags(write=False)
        object.__setattr__(self, "names", data.names)
        object.__setattr__(self, "expected_returns", data.expected_returns)
        object.__setattr__(self, "covariance", data.covariance)
        object.__setattr__(self, "risk_aversion", data.risk_aversion)
        object.__setattr__(self, "total_lots", total)
        object.__setattr__(self, "min_lots", low)
        object.__setattr__(self, "max_lots", high)
        object.__setattr__(self, "_coefficients", coefficients)
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_starts", starts)

    # -- shape of the encoding ---------------------------------------------------------------

    @property
    def num_assets(self) -> int:
        """Number of assets ``n``."""
        return len(self.names)

    @property
    def num_variables(self) -> int:
        """Number of bits (qubits): ``Σ_i bit_length(max_i − min_i)``."""
        return int(self._coefficients.size)

    @property
    def hamming_weight(self) -> None:
        """Feasible codes have no fixed number of ones, so no XY mixer applies."""
        return None

    @property
    def encoding(self) -> tuple[AssetEncoding, ...]:
        """Per asset, its bits' slice in the bit vector and their coefficients."""
        return tuple(
            AssetEncoding(slice(int(a), int(b)), self._coefficients[a:b])
            for a, b in zip(self._starts[:-1], self._starts[1:], strict=True)
        )

    def _lot_matrix(self) -> FloatArray:
        """``G`` with ``ℓ = min + Gx``: ``G[i, v]`` is bit ``v``'s coefficient if it belongs to ``i``."""
        matrix = np.zeros((self.num_assets, self.num_variables), dtype=np.float64)
        matrix[self._owner, np.arange(self.num_variables)] = self._coefficients
        return matrix

    # -- bits <-> lots -----------------------------------------------------------------------

    def lots_of(self, x: ArrayLike) -> IntArray:
        """Lots per asset of each bit vector.

        Args:
            x: One bit vector ``(num_variables,)`` or a batch ``(m, num_variables)``.

        Returns:
            Shape ``(m, n)`` (``(1, n)`` for one vector), each within ``[min_i, max_i]``.
        """
        xs = as_bit_matrix(x, self.num_variables).astype(np.int64)
        lots = np.zeros((xs.shape[0], self.num_assets), dtype=np.int64)
        # Scatter-add each bit's coefficient onto its asset, for the whole batch at once.
        np.add.at(lots.T, self._owner, (xs * self._coefficients).T)
        return np.asarray(lots + self.min_lots, dtype=np.int64)

    def bits_of(self, lots: ArrayLike) -> NDArray[np.uint8]:
        """The canonical code of lot vectors: the inverse of :meth:`lots_of`.

        The last bit of an asset is set exactly when the lower bits cannot reach ``ℓ_i − min_i``
        on their own; the lower bits then hold the rest in plain binary.

        Args:
            lots: One lot vector ``(n,)`` or a batch ``(m, n)``, integers within the bounds.

        Returns:
            Bits of shape ``(num_variables,)`` or ``(m, num_variables)``, like the input.

        Raises:
            ValueError: On a wrong shape, non-integers or lots outside ``[min_i, max_i]``.
        """
        raw = np.asarray(lots)
        single = raw.ndim == 1
        table = np.atleast_2d(raw)
        if table.ndim != 2 or table.shape[1] != self.num_assets:
            raise ValueError(f"expected lot vectors of length {self.num_assets}, got shape {raw.shape}")
        if not (np.issubdtype(table.dtype, np.integer) or np.all(table == np.rint(table))):
            raise ValueError("lots must be integers")
        values = np.rint(table).astype(np.int64)
        if np.any(values < self.min_lots) or np.any(values > self.max_lots):
            raise ValueError("lots must lie within [min_lots, max_lots]")
        rest = values - self.min_lots
        bits = np.zeros((values.shape[0], self.num_variables), dtype=np.uint8)
        for i, (variables, coefficients) in enumerate(self.encoding):
            if coefficients.size == 0:
                continue
            last = variables.stop - 1
            low_reach = (1 << (coefficients.size - 1)) - 1
            top = rest[:, i] > low_reach
            bits[:, last] = top
            remainder = rest[:, i] - top * coefficients[-1]
            shifts = np.arange(coefficients.size - 1)
            bits[:, variables.start : last] = (remainder[:, np.newaxis] >> shifts) & 1
        return bits[0] if single else bits

    # -- the true objective ------------------------------------------------------------------

    def _scaled(self) -> tuple[FloatArray, FloatArray]:
        """``(A, b)`` with ``objective = ℓᵀAℓ − bᵀℓ``: ``A = qΣ/L²``, ``b = μ/L``."""
        total = float(self.total_lots)
        return self.risk_aversion * self.covariance / (total * total), self.expected_returns / total

    def objective(self, x: ArrayLike) -> FloatArray:
        """``q · wᵀΣw − μᵀw`` with ``w = ℓ/L``, for every row of ``x`` (feasible or not).

        Returns:
            Shape ``(m,)`` (``(1,)`` for one vector).
        """
        weights = self.lots_of(x).astype(np.float64) / float(self.total_lots)
        variance = np.einsum("mi,mi->m", weights @ self.covariance, weights)
        return np.asarray(self.risk_aversion * variance - weights @ self.expected_returns, dtype=np.float64)

    def is_feasible(self, x: ArrayLike) -> NDArray[np.bool_]:
        """Whether the lots of each row add up to ``L`` (the bounds hold for every code)."""
        return np.asarray(self.lots_of(x).sum(axis=1) == self.total_lots, dtype=np.bool_)

    def evaluate(self, x: ArrayLike) -> LotsEvaluation:
        """Judge one bit vector on the true data.

        Raises:
            ValueError: If ``x`` is not one bit vector of length ``num_variables``.
        """
        if np.ndim(x) != 1:
            raise ValueError(f"evaluate takes one bit vector, got shape {np.shape(x)}")
        bits = as_bit_matrix(x, self.num_variables).astype(np.int64)[0]
        lots = self.lots_of(bits)[0]
        weights = lots.astype(np.float64) / float(self.total_lots)
        variance = float(weights @ self.covariance @ weights)
        expected_return = float(weights @ self.expected_returns)
        return LotsEvaluation(
            selected=tuple(name for name, held in zip(self.names, lots, strict=True) if held > 0),
            bits=tuple(int(b) for b in bits),
            lots={name: int(v) for name, v in zip(self.names, lots, strict=True)},
            weights={name: float(v) for name, v in zip(self.names, weights, strict=True)},
            feasible=bool(lots.sum() == self.total_lots),
            expected_return=expected_return,
            variance=variance,
            objective=float(self.objective(bits)[0]),
        )

    # -- the QUBO ----------------------------------------------------------------------------

    def penalty_weight(self) -> float:
        """A weight ``A`` for ``A (Σℓ − L)²`` large enough that every QUBO minimiser is feasible.

        The argument, on lot vectors (every ``ℓ`` in the bounds has a code, and the QUBO energy of
        a code depends only on its ``ℓ``). Write ``F(ℓ) = ℓᵀAℓ − bᵀℓ`` (``A = qΣ/L²``, ``b = μ/L``)
        and ``s = Σℓ − L``. Take an infeasible ``ℓ``:

        * if ``s < 0`` some asset ``i`` has ``ℓ_i < max_i`` (as ``Σ max ≥ L > Σℓ``); one more lot
          there changes ``F`` by ``Δ⁺_i = A_ii + 2(Aℓ)_i − b_i``, and ``ℓ`` lies in the box with
          ``Σℓ ≤ L − 1``, so ``(Aℓ)_i ≤ P_i``, the largest value of ``Σ_j A_ij ℓ_j`` over that set
          (a fractional knapsack: start at ``min``, fill the largest positive ``A_ij`` first);
        * if ``s > 0`` some ``ℓ_i > min_i``; one lot fewer changes ``F`` by
          ``Δ⁻_i = A_ii − 2(Aℓ)_i + b_i``, with ``(Aℓ)_i ≥ N_i``, the smallest value of
          ``Σ_j A_ij ℓ_j`` over the box with ``Σℓ ≥ L + 1`` (negative ``A_ij`` at ``max``, then
          the smallest non-negative ones until the sum is reached).

        Meanwhile the penalty falls from ``A s²`` to ``A (|s| − 1)²``, i.e. by ``A (2|s| − 1) ≥ A``.
        With ``D`` the largest of the bounds ``A_ii + 2P_i − b_i`` and ``A_ii − 2N_i + b_i`` (each
        side only if such infeasible vectors exist), ``A > D`` gives every infeasible ``ℓ`` a
        neighbour of strictly lower energy, so no minimiser is infeasible, and on feasible vectors
        the energy is the objective. We take ``A = PENALTY_MARGIN · D``; these bounds scale like
        ``q σ²/L + μ/L``, far below the objective's whole range, which keeps the QAOA landscape
        from being flattened by the penalty. If ``D ≤ 0``, any positive weight works and we use
        the coefficient scale.

        Returns:
            A strictly positive, finite weight.
        """
        a, b = self._scaled()
        low = self.min_lots.astype(np.float64)
        high = self.max_lots.astype(np.float64)
        total = self.total_lots
        diagonal = np.diag(a)
        bounds: list[float] = []
        if int(self.min_lots.sum()) <= total - 1:
            most = np.array([_knapsack_max(row, low, high, total - 1) for row in a])
            bounds.append(float(np.max(diagonal + 2.0 * most - b)))
        if int(self.max_lots.sum()) >= total + 1:
            least = np.array([-_knapsack_max(-row, low, high, None, at_least=total + 1) for row in a])
            bounds.append(float(np.max(diagonal - 2.0 * least + b)))
        worst = max(bounds, default=0.0)
        if worst <= 0.0:
            scale = float(max(np.abs(b).max(), np.abs(a).max()))
            worst = scale if scale > 0.0 else 1.0
        weight = PENALTY_MARGIN * worst
        if not math.isfinite(weight):
            raise ValueError("the problem's coefficients are too large for a finite penalty")
        return weight

    def to_qubo(self, penalty: float | None = None) -> tuple[Qubo, float]:
        """The QUBO whose energy is ``F(min + Gx) + A (Σℓ − L)²`` exactly, offset included.

        With ``ℓ = m + Gx``, ``c = Gᵀ1`` (each bit's coefficient) and ``d = Σm − L``:
        ``F = xᵀ(GᵀAG)x + (2GᵀAm − Gᵀb)ᵀx + mᵀAm − bᵀm`` and
        ``(Σℓ − L)² = xᵀccᵀx + 2d cᵀx + d²``; linear terms go on the diagonal (``x_v² = x_v``).

        Args:
            penalty: ``A``; ``None`` means :meth:`penalty_weight`.

        Returns:
            The QUBO and the penalty weight used.

        Raises:
            ValueError: If ``penalty`` is negative or not finite.
        """
        weight = self.penalty_weight() if penalty is None else float(penalty)
        if not math.isfinite(weight) or weight < 0.0:
            raise ValueError(f"penalty must be finite and >= 0, got {penalty}")
        a, b = self._scaled()
        g = self._lot_matrix()
        low = self.min_lots.astype(np.float64)
        c = self._coefficients.astype(np.float64)
        d = float(self.min_lots.sum() - self.total_lots)
        matrix = g.T @ a @ g + weight * np.outer(c, c)
        linear = 2.0 * g.T @ (a @ low) - g.T @ b + 2.0 * weight * d * c
        matrix = matrix + np.diag(linear)
        offset = float(low @ a @ low - b @ low + weight * d * d)
        return Qubo(matrix=matrix, offset=offset), weight

    # -- classical moves ---------------------------------------------------------------------

    def repair(self, x: ArrayLike) -> NDArray[np.uint8]:
        """Bring the lots to ``L`` greedily, one lot at a time, on the true objective.

        While lots are missing, add one where it raises ``q·wᵀΣw − μᵀw`` least; while there are
        too many, remove one where that is cheapest (ties: lowest asset index).

        Args:
            x: One bit vector ``(num_variables,)``.

        Returns:
            A feasible code; ``x`` itself (as a copy) if it was already feasible.
        """
        if np.ndim(x) != 1:
            raise ValueError(f"repair takes one bit vector, got shape {np.shape(x)}")
        bits = np.asarray(as_bit_matrix(x, self.num_variables)[0], dtype=np.uint8)
        lots = self.lots_of(bits)[0]
        if int(lots.sum()) == self.total_lots:
            return bits
        a, b = self._scaled()
        repaired = greedy_fill(lots, self.min_lots, self.max_lots, self.total_lots, a, b)
        return np.asarray(self.bits_of(repaired), dtype=np.uint8)

    def local_search(self, x: ArrayLike, memo: SearchMemo | None = None) -> NDArray[np.uint8]:
        """Best-improvement search moving one lot from one asset to another while it helps.

        Args:
            x: One bit vector; an infeasible one is repaired first with :meth:`repair`.
            memo: Shared by searches on this problem (:func:`best_transfer_search`).

        Returns:
            A feasible code no single lot move improves (``x``'s own code if it already was one).
        """
        start = self.repair(x)
        lots = self.lots_of(start)[0]
        a, b = self._scaled()
        moved = best_transfer_search(lots, self.min_lots, self.max_lots, a, b, memo)
        if np.array_equal(moved, lots):
            return start
        return np.asarray(self.bits_of(moved), dtype=np.uint8)

    def relaxation(self) -> FloatArray:
        """The continuous relaxation: real lots in ``[min_i, max_i]`` adding up to ``L``, as bits.

        The convex QP over real lot counts is solved (see
        :func:`~qhybrid.portfolio.formulation.relax_levels`) and mapped to bit values: every bit
        of asset ``i`` gets ``t_i = (ℓ_i − min_i)/(max_i − min_i)``, so ``min_i + Σ_k c_k t_i = ℓ_i``
        (the coefficients add up to the span). Relaxing the bits directly gives the same optimal
        value, since ``G [0, 1]^V`` is exactly the box of lots.

        Returns:
            Values in ``[0, 1]^num_variables``.
        """
        a, b = self._scaled()
        t = relax_levels(a, b, self.min_lots, self.max_lots, self.total_lots)
        return np.asarray(t[self._owner], dtype=np.float64)


def _knapsack_max(
    row: FloatArray, low: FloatArray, high: FloatArray, at_most: int | None, *, at_least: int | None = None
) -> float:
    """``max Σ_j row_j ℓ_j`` over ``low ≤ ℓ ≤ high`` with ``Σℓ ≤ at_most`` or ``Σℓ ≥ at_least``.

    A fractional knapsack, solved greedily (and integral, since capacities are integers): start
    from ``low``; under ``Σℓ ≤ at_most`` spend the spare units on the largest positive
    coefficients; under ``Σℓ ≥ at_least`` raise every positive coefficient to ``high`` and then,
    if the sum is still short, the least negative ones until it is reached.
    """
    levels = low.copy()
    order = np.argsort(-row, kind="stable")
    if at_most is not None:
        spare = float(at_most) - float(low.sum())
        for j in order:
            if row[j] <= 0.0 or spare <= 0.0:
                break
            step = min(high[j] - low[j], spare)
            levels[j] += step
            spare -= step
    else:
        assert at_least is not None
        positive = row > 0.0
        levels[positive] = high[positive]
        short = float(at_least) - float(levels.sum())
        for j in order:
            if short <= 0.0:
                break
            if positive[j]:
                continue
            step = min(high[j] - levels[j], short)
            levels[j] += step
            short -= step
    return float(row @ levels)

"""What every portfolio formulation offers the solvers, and the integer moves they share.

Two formulations live in :mod:`qhybrid.portfolio`: binary asset selection under a cardinality
budget (:class:`~qhybrid.portfolio.selection.SelectionProblem`) and integer lots under a total
(:class:`~qhybrid.portfolio.lots.LotsProblem`). Both are, underneath, the same integer problem

``minimise F(ℓ) = ℓᵀAℓ − bᵀℓ  subject to  lower ≤ ℓ ≤ upper (integers),  Σ ℓ_i = total``

with ``ℓ`` the selection bits (``A = qΣ``, ``b = μ``, bounds 0 and 1, total ``B``) or the lot
counts (``A = qΣ/L²``, ``b = μ/L``, the lot bounds, total ``L``). The helpers below work on that
shared form, so repair, local search and the continuous relaxation are written (and tested) once.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

from qhybrid.domain.qubo import FloatArray, Qubo

IntArray = NDArray[np.int64]

#: Factor applied to the worst-case objective change; anything above 1 keeps the argument strict,
#: and a modest value keeps the penalty from drowning the objective in the QAOA landscape.
PENALTY_MARGIN = 1.25


def as_bit_matrix(x: ArrayLike, num_bits: int) -> FloatArray:
    """Validate a bit vector or a batch of them and return it as a float ``(m, num_bits)`` matrix.

    Args:
        x: Shape ``(num_bits,)`` or ``(m, num_bits)``; every entry must be 0 or 1.
        num_bits: Expected number of columns.

    Returns:
        The bits as ``float64``, always two-dimensional.

    Raises:
        ValueError: On a wrong shape or an entry other than 0 and 1.
    """
    xs = np.asarray(x)
    if xs.ndim == 1:
        xs = xs[np.newaxis, :]
    if xs.ndim != 2 or xs.shape[1] != num_bits:
        raise ValueError(f"expected bit vectors of length {num_bits}, got shape {np.shape(x)}")
    values = xs.astype(np.float64)
    if not np.all((values == 0.0) | (values == 1.0)):
        raise ValueError("bit vectors may only contain 0 and 1")
    return values


def unique_rows(bits: ArrayLike) -> tuple[NDArray[np.uint8], NDArray[np.intp], NDArray[np.int64]]:
    """Distinct rows of a 0/1 matrix, as ``np.unique(axis=0, return_inverse=True, return_counts=True)``.

    Each row of up to 62 bits is packed into one integer, its first bit the most significant:
    sorting the integers sorts the rows as ``np.unique(axis=0)`` does, at a fraction of the cost.

    Returns:
        The distinct rows (``uint8``, sorted), the index of each input row among them, and how
        many input rows each one stands for.
    """
    rows = np.asarray(bits, dtype=np.uint8)
    n = rows.shape[1]
    if n > 62:
        unique, inverse, counts = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    else:
        powers = np.left_shift(np.int64(1), np.arange(n - 1, -1, -1, dtype=np.int64))
        codes, inverse, counts = np.unique(
            rows.astype(np.int64) @ powers, return_inverse=True, return_counts=True
        )
        unique = ((codes[:, np.newaxis] & powers[np.newaxis, :]) != 0).astype(np.uint8)
    return unique, inverse.reshape(-1), counts.astype(np.int64)


@runtime_checkable
class EvaluationLike(Protocol):
    """A decision judged on the true data: an objective and a JSON-friendly report."""

    @property
    def objective(self) -> float:
        """The true objective (lower is better)."""
        ...

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dictionary."""
        ...


@runtime_checkable
class Formulation(Protocol):
    """A portfolio problem over ``num_variables`` binary variables, as the solvers see it.

    Bit vectors are ``(num_variables,)`` 0/1 arrays, batches ``(m, num_variables)``. The objective
    is always the TRUE business objective (no penalty); feasibility is the problem's own
    constraint, which :meth:`to_qubo` turns into a penalty.
    """

    @property
    def names(self) -> tuple[str, ...]:
        """Asset names."""
        ...

    @property
    def num_variables(self) -> int:
        """Number of binary variables (qubits)."""
        ...

    @property
    def hamming_weight(self) -> int | None:
        """The number of ones every feasible bit vector has, if there is one (XY mixers need it)."""
        ...

    def objective(self, x: ArrayLike) -> FloatArray:
        """The true objective of each row of ``x``; shape ``(m,)``."""
        ...

    def is_feasible(self, x: ArrayLike) -> NDArray[np.bool_]:
        """Whether each row of ``x`` satisfies the constraint; shape ``(m,)``."""
        ...

    def evaluate(self, x: ArrayLike) -> EvaluationLike:
        """One bit vector judged on the true data."""
        ...

    def to_qubo(self) -> tuple[Qubo, float]:
        """The penalised QUBO whose minimisers are the optima, and the penalty weight."""
        ...

    def repair(self, x: ArrayLike) -> NDArray[np.uint8]:
        """A feasible bit vector obtained greedily from ``x`` (``x`` itself if feasible)."""
        ...

    def local_search(self, x: ArrayLike, memo: SearchMemo | None = None) -> NDArray[np.uint8]:
        """A local optimum of the true objective reached from ``x`` by improving moves.

        ``memo``, shared by searches on this same formulation, keeps where each state visited
        leads (see :func:`best_transfer_search`).
        """
        ...

    def relaxation(self) -> FloatArray:
        """The continuous relaxation's optimum as values in ``[0, 1]^num_variables``."""
        ...


def _move_tolerance(diagonal: FloatArray, load: FloatArray, b: FloatArray, a: FloatArray) -> float:
    """Improvements smaller than this are rounding noise, not progress.

    Every change is a sum of a handful of the terms below; ``1e-12`` of their magnitude is far
    above the rounding error of that sum and far below any real difference between portfolios.
    Without it, two moves of equal value could undo each other forever.
    """
    magnitude = float(np.abs(diagonal).max() + 2.0 * np.abs(load).max() + np.abs(b).max())
    return 1e-12 * (magnitude + 2.0 * float(np.abs(a).max()))


def greedy_fill(
    levels: ArrayLike, lower: IntArray, upper: IntArray, total: int, a: FloatArray, b: FloatArray
) -> IntArray:
    """Bring ``Σ ℓ`` to ``total`` one unit at a time, each step the cheapest for ``F``.

    While the sum is short, add one unit to the level whose increase changes ``F`` least
    (``Δ⁺_i = A_ii + 2(Aℓ)_i − b_i``); while it is over, remove one unit where that is cheapest
    (``Δ⁻_i = A_ii − 2(Aℓ)_i + b_i``). Levels stay within their bounds; ties go to the lowest index.

    Args:
        levels: Integer levels ``(n,)`` within their bounds.
        lower: Lower bounds ``(n,)``.
        upper: Upper bounds ``(n,)``.
        total: The required sum, with ``Σ lower ≤ total ≤ Σ upper``.
        a: ``A``, symmetric ``(n, n)``.
        b: ``b``, shape ``(n,)``.

    Returns:
        Levels with sum ``total``.
    """
    current = np.array(levels, dtype=np.int64)
    diagonal = np.diag(a)
    held = int(current.sum())
    while held != total:
        load = a @ current
        if held < total:
            change = np.where(current < upper, diagonal + 2.0 * load - b, np.inf)
            step = 1
        else:
            change = np.where(current > lower, diagonal - 2.0 * load + b, np.inf)
            step = -1
        i = int(np.argmin(change))
        if not math.isfinite(float(change[i])):  # pragma: no cover - excluded by the bounds check
            raise ValueError("the total cannot be reached within the bounds")
        current[i] += step
        held += step
    return current


#: Where :func:`best_transfer_search` ends from each state it visited (the state's bytes).
SearchMemo = dict[bytes, IntArray]


def best_transfer_search(
    levels: ArrayLike,
    lower: IntArray,
    upper: IntArray,
    a: FloatArray,
    b: FloatArray,
    memo: SearchMemo | None = None,
) -> IntArray:
    """Best-improvement local search moving one unit from one level to another.

    Moving a unit from ``i`` to ``j`` keeps the sum and changes ``F`` by
    ``Δ_ij = (A_jj + 2g_j − b_j) + (A_ii − 2g_i + b_i) − 2A_ij`` with ``g = Aℓ``; all ``n²`` moves
    are scored with one broadcast and the best one is taken while it improves ``F`` by more than
    rounding noise. Each step strictly lowers ``F`` over a finite set, so the search ends, at a
    point no single transfer improves. For 0/1 levels a transfer is a swap of a held and a
    non-held asset. Ties go to the lowest donor, then the lowest receiver.

    Args:
        levels: Integer levels ``(n,)`` within their bounds.
        lower: Lower bounds ``(n,)``.
        upper: Upper bounds ``(n,)``.
        a: ``A``, symmetric ``(n, n)``.
        b: ``b``, shape ``(n,)``.
        memo: Where the search ended from each state visited before, for searches with the same
            ``lower``, ``upper``, ``a`` and ``b`` only. Each step depends on the current state
            alone (the load is recomputed, not carried), so a search that reaches a state seen
            before ends where that one did: the answer is the same, without the steps.

    Returns:
        The locally optimal levels (same sum).
    """
    current = np.array(levels, dtype=np.int64)
    if memo is None:
        return _transfer_search(current, lower, upper, a, b, [])
    path: list[bytes] = []
    result = _transfer_search(current, lower, upper, a, b, path, memo)
    for key in path:
        memo[key] = result
    return result.copy()


def _transfer_search(
    current: IntArray,
    lower: IntArray,
    upper: IntArray,
    a: FloatArray,
    b: FloatArray,
    path: list[bytes],
    memo: SearchMemo | None = None,
) -> IntArray:
    n = current.size
    diagonal = np.diag(a)
    off_self = ~np.eye(n, dtype=np.bool_)
    while True:
        if memo is not None:
            key = current.tobytes()
            known = memo.get(key)
            if known is not None:
                return known
            path.append(key)
        load = a @ current  # recomputed each step: no drift from incremental updates
        gain_in = diagonal + 2.0 * load - b
        gain_out = diagonal - 2.0 * load + b
        change = gain_out[:, np.newaxis] + gain_in[np.newaxis, :] - 2.0 * a
        allowed = (current > lower)[:, np.newaxis] & (current < upper)[np.newaxis, :] & off_self
        change = np.where(allowed, change, np.inf)
        k = int(np.argmin(change))
        if not change.flat[k] < -_move_tolerance(diagonal, load, b, a):
            return current
        i, j = divmod(k, n)
        current[i] -= 1
        current[j] += 1


#: Relaxations kept by :func:`relax_levels` (PREPARING's warm start and FINALIZING's rounding
#: solve the same one).
_RELAXED_KEPT = 64
_relaxed: OrderedDict[tuple[object, ...], FloatArray] = OrderedDict()
_relaxed_lock = threading.Lock()


def relax_levels(a: FloatArray, b: FloatArray, lower: IntArray, upper: IntArray, total: int) -> FloatArray:
    """:func:`solve_relaxation`, remembered for the last few problems (a copy each time).

    A job solves the same relaxation in PREPARING (the warm start) and in FINALIZING (the
    conditioned rounding); SLSQP is deterministic, so a remembered answer is the answer.
    """
    key = (
        np.shape(a),
        *(
            np.ascontiguousarray(array, dtype=dtype).tobytes()
            for array, dtype in ((a, np.float64), (b, np.float64), (lower, np.int64), (upper, np.int64))
        ),
        int(total),
    )
    with _relaxed_lock:
        kept = _relaxed.get(key)
        if kept is not None:
            _relaxed.move_to_end(key)
            return kept.copy()
    solved = solve_relaxation(a, b, lower, upper, total)
    with _relaxed_lock:
        _relaxed[key] = solved.copy()
        while len(_relaxed) > _RELAXED_KEPT:
            _relaxed.popitem(last=False)
    return solved


def solve_relaxation(
    a: FloatArray, b: FloatArray, lower: IntArray, upper: IntArray, total: int
) -> FloatArray:
    """The continuous relaxation ``min ℓᵀAℓ − bᵀℓ`` over ``lower ≤ ℓ ≤ upper``, ``Σ ℓ = total``.

    Solved in the unit coordinates ``t_i = (ℓ_i − lower_i)/(upper_i − lower_i) ∈ [0, 1]`` (fixed
    levels drop out), with the objective divided by its coefficient scale so that SLSQP's
    absolute tolerances are meaningful for daily returns of order 1e-4. SLSQP starts from the
    projection of the uniform point and uses the exact gradient; the answer is projected back
    onto the constraints to remove the solver's last rounding. For a positive semidefinite ``A``
    the problem is a convex QP and this is its global minimum; otherwise it is a local one.
    The same optimum in bit coordinates is ``t_i`` for every bit of asset ``i``: the bits'
    coefficients add up to ``upper_i − lower_i``, so that bit point encodes ``ℓ_i`` exactly.

    Args:
        a: ``A``, symmetric ``(n, n)``.
        b: ``b``, shape ``(n,)``.
        lower: Lower bounds ``(n,)``.
        upper: Upper bounds ``(n,)``.
        total: Required sum.

    Returns:
        ``t``, shape ``(n,)``, in ``[0, 1]``; fixed levels get 0.

    Raises:
        RuntimeError: If SLSQP fails.
    """
    width = (upper - lower).astype(np.float64)
    free = width > 0.0
    t = np.zeros(width.size, dtype=np.float64)
    if not free.any():
        return t
    base = lower.astype(np.float64)
    rest = float(total) - float(base.sum())
    # In t: ℓ = lower + W t, F = tᵀ(WAW)t + (2WAlower − Wb)ᵀt + const.
    w = width[free]
    quad = a[np.ix_(free, free)] * w[:, np.newaxis] * w[np.newaxis, :]
    linear = w * (2.0 * (a @ base)[free] - b[free])
    scale = max(float(np.abs(quad).max()), float(np.abs(linear).max()))
    if scale == 0.0:
        scale = 1.0
    quad = quad / scale
    linear = linear / scale
    initial = project_weighted(np.full(w.size, 0.5), w, rest)

    def fun(v: FloatArray) -> float:
        return float(v @ quad @ v + linear @ v)

    def jac(v: FloatArray) -> FloatArray:
        return np.asarray(2.0 * quad @ v + linear, dtype=np.float64)

    result = minimize(
        fun,
        initial,
        jac=jac,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * w.size,
        constraints=[{"type": "eq", "fun": lambda v: float(w @ v) - rest, "jac": lambda v: w}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    if not result.success and result.status != 8:  # pragma: no cover - SLSQP is robust here
        raise RuntimeError(f"the continuous relaxation failed: {result.message}")
    solved = project_weighted(np.asarray(result.x, dtype=np.float64), w, rest)
    # Snap the projection's last-bit residues (±1e-16) onto the bounds they stand for.
    solved[solved < 1e-13] = 0.0
    solved[solved > 1.0 - 1e-13] = 1.0
    t[free] = solved
    return t


def project_weighted(values: FloatArray, weights: FloatArray, total: float) -> FloatArray:
    """Project onto ``{0 ≤ v ≤ 1, Σ w_i v_i = total}`` for positive weights ``w``.

    The Euclidean projection moves along the constraint's normal ``w`` until a bound stops a
    coordinate, so it is ``clip(v − τw, 0, 1)`` for the ``τ`` that makes the weighted sum right
    (the KKT conditions of the projection say exactly this). The sum decreases in ``τ``, so
    bisection finds it to machine precision.

    Args:
        values: The point ``(n,)``.
        weights: Positive weights ``(n,)``.
        total: Required weighted sum, between 0 and ``Σ w``.

    Returns:
        The projected point.
    """
    low = float(np.min((values - 1.0) / weights))
    high = float(np.max(values / weights))
    for _ in range(200):
        middle = (low + high) / 2.0
        if weights @ np.clip(values - middle * weights, 0.0, 1.0) > total:
            low = middle
        else:
            high = middle
        if high - low <= 1e-15 * max(1.0, abs(low), abs(high)):
            break
    return np.asarray(np.clip(values - (low + high) / 2.0 * weights, 0.0, 1.0), dtype=np.float64)

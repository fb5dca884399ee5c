"""Classical baselines a quant would check a quantum answer against.

* :func:`exact` — the proven optimum: vectorised enumeration while it is cheap, SCIP beyond.
* :func:`scip` — a mixed-integer quadratic program solved by SCIP (branch and bound, with a
  proof of optimality when it finishes within the time limit).
* :func:`simulated_annealing` — D-Wave's classical annealer on the same penalised QUBO the
  quantum circuit sees, its samples repaired and judged on the true objective: the fair
  heuristic to compare QAOA with.
* :func:`objective_range` — best and worst feasible objective, for approximation ratios.

All of them work on the shared integer form of :mod:`qhybrid.portfolio.formulation`:
``minimise ℓᵀAℓ − bᵀℓ``, ``lower ≤ ℓ ≤ upper`` integers, ``Σℓ = total``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import dimod
import numpy as np
from dwave.samplers import SimulatedAnnealingSampler
from numpy.typing import NDArray
from pyscipopt import Model, quicksum

from qhybrid.domain.qubo import FloatArray
from qhybrid.portfolio.classical import ClassicalSolution, brute_force
from qhybrid.portfolio.formulation import Formulation, IntArray, unique_rows
from qhybrid.portfolio.lots import LotsProblem
from qhybrid.portfolio.selection import SelectionProblem

#: Selections up to this many are enumerated: ``C(25, 12) ≈ 5.2e6`` took 0.01 s on the idle
#: 2-core machine (about 1 s while other jobs competed for it); beyond, SCIP.
BRUTE_FORCE_LIMIT = 10_000_000
#: Lot vectors up to this many are enumerated (about half a second); SCIP solves the convex
#: integer QP of larger allocations in well under a second.
LOTS_ENUMERATION_LIMIT = 500_000
#: Formulations of another kind are enumerated over all bit vectors up to this many variables.
GENERIC_ENUMERATION_BITS = 22
#: Rows evaluated in one vectorised block.
_CHUNK = 1 << 16
#: Sweeps of the annealing baseline: dwave-samplers' default schedule length ...
ANNEALING_SWEEPS = 1000
#: ... except on problems of at most this many variables, which anneal for
#: :data:`SMALL_ANNEALING_SWEEPS`: on the 200 selections of 4 to 8 assets and 80 allocations in
#: lots of ``benchmarks/worker_compute.py`` 100 sweeps returned the same portfolio as 1,000 every
#: time, for a sixth of the CPU, and so did 30 (and 20), for about two thirds of 100's CPU
#: (docs/benchmarks.md). At most 2⁸ bit vectors, 200 reads: the answer is the proven optimum there.
SMALL_PROBLEM_VARIABLES = 8
SMALL_ANNEALING_SWEEPS = 30


def annealing_sweeps(num_variables: int) -> int:
    """Sweeps of :func:`simulated_annealing`'s schedule for a problem of ``num_variables``."""
    return SMALL_ANNEALING_SWEEPS if num_variables <= SMALL_PROBLEM_VARIABLES else ANNEALING_SWEEPS


@dataclass(frozen=True)
class _IntegerForm:
    """A formulation as ``min ℓᵀAℓ − bᵀℓ`` over integer ``ℓ`` in a box with ``Σℓ = total``."""

    a: FloatArray
    b: FloatArray
    lower: IntArray
    upper: IntArray
    total: int
    to_bits: Callable[[IntArray], NDArray[np.uint8]]

    @property
    def binary(self) -> bool:
        """Whether every level is 0/1 (then ``ℓ_i² = ℓ_i`` may be used)."""
        return bool(np.all(self.lower == 0) and np.all(self.upper == 1))

    def value(self, levels: FloatArray) -> FloatArray:
        """``ℓᵀAℓ − bᵀℓ`` for each row."""
        return np.asarray(np.einsum("mi,mi->m", levels @ self.a, levels) - levels @ self.b, dtype=np.float64)


def _integer_form(f: Formulation) -> _IntegerForm | None:
    """The integer form of the formulations this module knows, ``None`` for others."""
    if isinstance(f, SelectionProblem):
        n = f.num_assets
        return _IntegerForm(
            a=f.risk_aversion * f.covariance,
            b=f.expected_returns,
            lower=np.zeros(n, dtype=np.int64),
            upper=np.ones(n, dtype=np.int64),
            total=f.budget,
            to_bits=lambda levels: np.asarray(levels, dtype=np.uint8),
        )
    if isinstance(f, LotsProblem):
        total = float(f.total_lots)
        return _IntegerForm(
            a=f.risk_aversion * f.covariance / (total * total),
            b=f.expected_returns / total,
            lower=f.min_lots,
            upper=f.max_lots,
            total=f.total_lots,
            to_bits=f.bits_of,
        )
    return None


def _solution(
    f: Formulation, bits: NDArray[np.uint8], method: str, evaluated: int, started: float, *, optimal: bool
) -> ClassicalSolution:
    """A :class:`ClassicalSolution` whose objective is recomputed on the true data."""
    return ClassicalSolution(
        bits=tuple(int(v) for v in bits),
        objective=float(f.objective(bits)[0]),
        method=method,
        evaluated=evaluated,
        seconds=time.perf_counter() - started,
        optimal=optimal,
    )


# -- enumeration ---------------------------------------------------------------------------------


def count_lot_vectors(lower: IntArray, upper: IntArray, total: int) -> int:
    """How many integer vectors lie in ``[lower, upper]`` with sum ``total``.

    Dynamic programming over the assets on the shifted sum ``total − Σ lower``: the number of
    ways to reach ``s`` after asset ``i`` is a window sum of the ways before it (a cumulative sum
    makes each step vectorised). Python integers keep the count exact however large it is.
    """
    rest = total - int(lower.sum())
    if rest < 0 or rest > int((upper - lower).sum()):
        return 0
    ways = np.zeros(rest + 1, dtype=object)
    ways[0] = 1
    for span in (upper - lower).tolist():
        cumulative = np.concatenate([[0], np.cumsum(ways)])
        s = np.arange(rest + 1)
        ways = cumulative[s + 1] - cumulative[np.maximum(s - span, 0)]
    return int(ways[rest])


def enumerate_lot_vectors(lower: IntArray, upper: IntArray, total: int) -> IntArray:
    """Every integer vector in ``[lower, upper]`` with sum ``total``, in lexicographic order.

    Built one asset at a time; a prefix is kept only if the remaining assets can still complete
    it, so no intermediate table is larger than the answer.
    """
    spans = (upper - lower).astype(np.int64)
    rest = total - int(lower.sum())
    reach = np.concatenate([np.cumsum(spans[::-1])[::-1], [0]])  # most the later assets can add
    prefixes = np.zeros((1, 0), dtype=np.int32)
    sums = np.zeros(1, dtype=np.int64)
    for i, span in enumerate(spans.tolist()):
        values = np.arange(span + 1, dtype=np.int64)
        new_sums = (sums[:, np.newaxis] + values[np.newaxis, :]).reshape(-1)
        keep = (new_sums <= rest) & (new_sums + reach[i + 1] >= rest)
        parent = np.repeat(np.arange(prefixes.shape[0]), span + 1)[keep]
        prefixes = np.column_stack([prefixes[parent], np.tile(values, prefixes.shape[0])[keep]]).astype(
            np.int32
        )
        sums = new_sums[keep]
    return np.asarray(prefixes + lower[np.newaxis, :], dtype=np.int64)


def _scan(form: _IntegerForm, levels: IntArray) -> tuple[int, float, int, float]:
    """Index and value of the first minimum and the first maximum of ``F`` over the rows."""
    best = (-1, math.inf)
    worst = (-1, -math.inf)
    for start in range(0, levels.shape[0], _CHUNK):
        values = form.value(levels[start : start + _CHUNK].astype(np.float64))
        i, j = int(np.argmin(values)), int(np.argmax(values))
        if values[i] < best[1]:
            best = (start + i, float(values[i]))
        if values[j] > worst[1]:
            worst = (start + j, float(values[j]))
    return best[0], best[1], worst[0], worst[1]


def _all_feasible_bits(f: Formulation) -> NDArray[np.uint8]:
    """Every feasible bit vector of a small formulation of unknown kind."""
    nv = f.num_variables
    if nv > GENERIC_ENUMERATION_BITS:
        raise TypeError(
            f"{type(f).__name__} with {nv} variables: only SelectionProblem and LotsProblem "
            f"are solved beyond {GENERIC_ENUMERATION_BITS} variables"
        )
    index = np.arange(1 << nv, dtype=np.int64)
    bits = ((index[:, np.newaxis] >> np.arange(nv)) & 1).astype(np.uint8)
    feasible = bits[f.is_feasible(bits)]
    if feasible.shape[0] == 0:
        raise ValueError("the formulation has no feasible bit vector")
    return feasible


# -- SCIP ----------------------------------------------------------------------------------------


def _scip_levels(
    form: _IntegerForm, start: IntArray, time_limit: float, *, maximise: bool
) -> tuple[IntArray, bool, int]:
    """Solve ``min (or max) ℓᵀAℓ − bᵀℓ`` with SCIP; returns the levels, optimality and nodes.

    SCIP wants a linear objective, so an auxiliary ``t ≥ ±(ℓᵀAℓ − bᵀℓ)`` is minimised. The
    coefficients are divided by their scale so that SCIP's absolute tolerances (1e-6 on
    constraints) are small against the objective, daily returns being of order 1e-4. For 0/1
    levels ``ℓ_i² = ℓ_i`` lets us move ``λ_min(A)`` from the diagonal to the linear term:
    the quadratic becomes positive semidefinite with a zero eigenvalue, which convexifies an
    indefinite ``A`` and tightens SCIP's continuous relaxation for a convex one. ``start`` is
    handed to SCIP as a first incumbent.
    """
    n = form.lower.size
    sign = -1.0 if maximise else 1.0
    a = sign * form.a
    b = sign * form.b
    top = float(max(1, int(np.abs(form.upper).max())))
    scale = max(float(np.abs(a).max()) * top * top, float(np.abs(b).max()) * top)
    scale = scale if scale > 0.0 else 1.0
    a = a / scale
    b = b / scale
    shift = 0.0
    if form.binary:
        shift = float(np.linalg.eigvalsh(a)[0])
        a = a - shift * np.eye(n)
        b = b - shift  # + shift·Σℓ_i moves to the linear part: −bᵀℓ becomes −(b − shift)ᵀℓ

    model = Model("qhybrid")
    model.hideOutput()
    model.setParam("limits/time", float(time_limit))
    # Presolve turns products of binaries into AND constraints, after which SCIP's default of
    # unlimited root separation rounds spent seconds on aggregation cuts at the root of
    # 20-asset S&P instances; five rounds made those 10-25x faster and never slowed the
    # 30-40 asset random instances we measured.
    model.setParam("separating/maxroundsroot", 5)
    vtype = "B" if form.binary else "I"
    x = [model.addVar(f"l{i}", vtype, lb=int(form.lower[i]), ub=int(form.upper[i])) for i in range(n)]
    t = model.addVar(name="t", vtype="C", lb=None, ub=None)
    model.addCons(quicksum(x) == form.total)
    quadratic = quicksum(
        (a[i, i] if i == j else 2.0 * a[i, j]) * x[i] * x[j]
        for i in range(n)
        for j in range(i, n)
        if a[i, j] != 0.0
    )
    linear = quicksum(-b[i] * x[i] for i in range(n) if b[i] != 0.0)
    model.addCons(t >= quadratic + linear)
    model.setObjective(t, "minimize")

    # The caller's heuristic point as a first incumbent prunes the tree from the start.
    incumbent = model.createSol()
    for i in range(n):
        model.setSolVal(incumbent, x[i], float(start[i]))
    levels = start.astype(np.float64)
    model.setSolVal(incumbent, t, float(levels @ a @ levels - b @ levels))
    model.addSol(incumbent)

    model.optimize()
    status = model.getStatus()
    nodes = int(model.getNNodes())
    if model.getNSols() == 0:  # pragma: no cover - the incumbent is always accepted
        return start, False, nodes
    best = model.getBestSol()
    solved = np.array([round(model.getSolVal(best, v)) for v in x], dtype=np.int64)
    return solved, status == "optimal", nodes


def _heuristic_start(f: Formulation, form: _IntegerForm) -> IntArray:
    """A good feasible point cheaply: grow the empty portfolio greedily, then local search."""
    bits = f.local_search(np.zeros(f.num_variables, dtype=np.uint8))
    if isinstance(f, LotsProblem):
        return np.asarray(f.lots_of(bits)[0], dtype=np.int64)
    return np.asarray(bits, dtype=np.int64)


def scip(f: Formulation, *, time_limit: float = 60.0) -> ClassicalSolution:
    """The optimum by SCIP's branch and bound (a mixed-integer quadratic program).

    Selection: binaries ``x``, ``Σx = B``. Lots: integers ``min_i ≤ ℓ_i ≤ max_i``, ``Σℓ = L``.
    SCIP's answer is polished by :meth:`Formulation.local_search` (which only moves on a real
    improvement, so for an optimal answer it changes nothing beyond SCIP's tolerances).

    Args:
        f: A :class:`SelectionProblem` or a :class:`LotsProblem`.
        time_limit: Seconds SCIP may spend.

    Returns:
        ``method="scip"``; ``optimal`` is SCIP's status ``"optimal"`` (proven within its
        tolerances); ``evaluated`` is the number of branch-and-bound nodes.

    Raises:
        TypeError: For a formulation of another kind.
    """
    started = time.perf_counter()
    form = _integer_form(f)
    if form is None:
        raise TypeError(f"scip supports SelectionProblem and LotsProblem, not {type(f).__name__}")
    levels, optimal, nodes = _scip_levels(form, _heuristic_start(f, form), time_limit, maximise=False)
    bits = form.to_bits(levels)
    polished = f.local_search(bits)
    if f.objective(polished)[0] < f.objective(bits)[0]:
        bits = polished
    return _solution(f, bits, "scip", nodes, started, optimal=optimal)


def exact(f: Formulation, *, time_limit: float = 60.0) -> ClassicalSolution:
    """The proven optimum, by the cheapest exact method.

    Selections are enumerated with :func:`~qhybrid.portfolio.classical.brute_force` while there
    are at most :data:`BRUTE_FORCE_LIMIT` of them (``n ≤ 25`` at any budget); lot allocations
    while there are at most :data:`LOTS_ENUMERATION_LIMIT` lot vectors; beyond, :func:`scip`.
    Formulations of another kind are enumerated over all bit vectors when small enough.

    Args:
        f: The formulation.
        time_limit: Seconds SCIP may spend, when it is used.

    Returns:
        The optimum; ``optimal`` is ``False`` only if SCIP hit the time limit.
    """
    started = time.perf_counter()
    if isinstance(f, SelectionProblem):
        if math.comb(f.num_assets, f.budget) <= BRUTE_FORCE_LIMIT:
            return brute_force(f)
        return scip(f, time_limit=time_limit)
    form = _integer_form(f)
    if form is None:
        feasible = _all_feasible_bits(f)
        values = f.objective(feasible)
        best = feasible[int(np.argmin(values))]
        return _solution(f, best, "enumeration", int(feasible.shape[0]), started, optimal=True)
    if count_lot_vectors(form.lower, form.upper, form.total) > LOTS_ENUMERATION_LIMIT:
        return scip(f, time_limit=time_limit)
    levels = enumerate_lot_vectors(form.lower, form.upper, form.total)
    i, _, _, _ = _scan(form, levels)
    return _solution(f, form.to_bits(levels[i]), "enumeration", int(levels.shape[0]), started, optimal=True)


def objective_range(f: Formulation, *, time_limit: float = 60.0) -> tuple[float, float]:
    """The best and the worst objective over all feasible bit vectors, exactly.

    The approximation ratio of a sampler with mean feasible objective ``E[f]`` is
    ``(worst − E[f]) / (worst − best)``: 1 at the optimum, 0 at the worst portfolio.
    The worst selection is the best one of the negated problem (``−μ``, ``−Σ``: the model
    accepts indefinite matrices); large instances go to SCIP, maximising.

    Args:
        f: The formulation.
        time_limit: Seconds SCIP may spend on each side, when it is used.

    Returns:
        ``(best, worst)``, recomputed with ``f.objective``.

    Raises:
        RuntimeError: If SCIP could not prove either end within the time limit.
    """
    if isinstance(f, SelectionProblem):
        negated = SelectionProblem(f.names, -f.expected_returns, -f.covariance, f.risk_aversion, f.budget)
        low, high = exact(f, time_limit=time_limit), exact(negated, time_limit=time_limit)
        if not (low.optimal and high.optimal):
            raise RuntimeError("SCIP did not prove the objective range within the time limit")
        return low.objective, float(f.objective(np.array(high.bits))[0])
    form = _integer_form(f)
    if form is None:
        values = f.objective(_all_feasible_bits(f))
        return float(values.min()), float(values.max())
    if count_lot_vectors(form.lower, form.upper, form.total) <= LOTS_ENUMERATION_LIMIT:
        levels = enumerate_lot_vectors(form.lower, form.upper, form.total)
        i, _, j, _ = _scan(form, levels)
        ends = [form.to_bits(levels[i]), form.to_bits(levels[j])]
    else:
        start = _heuristic_start(f, form)
        low_levels, low_ok, _ = _scip_levels(form, start, time_limit, maximise=False)
        high_levels, high_ok, _ = _scip_levels(form, start, time_limit, maximise=True)
        if not (low_ok and high_ok):
            raise RuntimeError("SCIP did not prove the objective range within the time limit")
        ends = [form.to_bits(low_levels), form.to_bits(high_levels)]
    return float(f.objective(ends[0])[0]), float(f.objective(ends[1])[0])


# -- simulated annealing -------------------------------------------------------------------------


def simulated_annealing(
    f: Formulation,
    *,
    num_reads: int = 200,
    seed: int,
    local_search: bool = False,
    num_sweeps: int | None = None,
) -> ClassicalSolution:
    """Classical annealing on the penalised QUBO, judged on the true objective.

    ``dwave-samplers``' Metropolis annealer (its default geometric schedule, derived from the
    QUBO's coefficients, over :func:`annealing_sweeps` sweeps) draws ``num_reads`` samples of
    the very QUBO QAOA would see. The distinct samples are repaired with
    :meth:`Formulation.repair` (optionally improved by :meth:`Formulation.local_search`) and
    evaluated on the TRUE objective; the best is kept,
    ties going to the lexicographically smallest sample.

    Args:
        f: The formulation.
        num_reads: Number of annealing runs.
        seed: Seed of the annealer (0 ≤ seed < 2³²), for reproducible results.
        local_search: Also run the local search on every repaired sample.
        num_sweeps: Sweeps of the schedule; :func:`annealing_sweeps` of the problem's size by default.

    Returns:
        ``method="simulated_annealing"``, ``evaluated = num_reads``, ``optimal=False``.

    Raises:
        ValueError: If ``num_reads < 1`` or the seed is out of range.
    """
    if num_reads < 1:
        raise ValueError(f"num_reads must be >= 1, got {num_reads}")
    if not 0 <= seed < 1 << 32:
        raise ValueError(f"seed must be in [0, 2^32), got {seed}")
    started = time.perf_counter()
    qubo, _ = f.to_qubo()
    matrix = qubo.matrix
    # Q is symmetric: the pair (i, j), i < j, carries 2·Q_ij; linear terms sit on the diagonal.
    bqm = dimod.BinaryQuadraticModel(
        np.diag(matrix).copy(), np.triu(2.0 * matrix, k=1), qubo.offset, dimod.BINARY
    )
    sampler = SimulatedAnnealingSampler()  # type: ignore[no-untyped-call]
    sweeps = annealing_sweeps(f.num_variables) if num_sweeps is None else num_sweeps
    sampleset = sampler.sample(bqm, num_reads=num_reads, num_sweeps=sweeps, seed=seed)
    columns = [list(sampleset.variables).index(v) for v in range(f.num_variables)]
    samples = np.asarray(sampleset.record.sample, dtype=np.uint8)[:, columns]
    distinct, _, _ = unique_rows(samples)  # sorted rows: a deterministic order for ties
    if local_search:
        candidates = np.stack([f.local_search(row) for row in distinct])
    else:
        # Repair returns a feasible row as it is (Formulation.repair): only the others need it.
        candidates = distinct.copy()
        for index in np.flatnonzero(~f.is_feasible(distinct)).tolist():
            candidates[index] = f.repair(distinct[index])
    values = f.objective(candidates)
    best = candidates[int(np.argmin(values))]
    return _solution(f, best, "simulated_annealing", num_reads, started, optimal=False)

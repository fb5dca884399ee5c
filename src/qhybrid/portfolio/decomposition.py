"""Selections larger than the device: a classical outer loop over small sub-problems.

Large-neighbourhood search (LNS) for :class:`SelectionProblem`:

1. **Classical start** (:func:`classical_start`): greedy fill and 1-swap local search, then the
   swap-move annealer (:func:`swap_anneal`) for a few seconds; the better of the two.
2. **Rounds.** Each round picks a few disjoint sub-problems of at most ``k`` assets
   (:func:`choose_subproblems`), each a mix of held and not-held assets ranked by their energy
   impact (the best single swap that involves them). Everything outside a sub-problem stays fixed;
   :func:`restrict` writes what is left as a smaller :class:`SelectionProblem` whose budget is
   the number of held assets inside it, so any feasible answer to it keeps the full budget.
3. **Take the improvement** (:func:`apply_candidate`): a sub-problem's answer replaces the current
   one on its assets when the FULL objective gets lower.

Why not dwave-hybrid: ``dwave-hybrid`` 0.6.16 installs and imports with numpy 2.4 (it uses the same
dimod and networkx as qhybrid), but it pulls ``dwave-system`` and ``dwave-cloud-client`` (another
HTTP client in the trusted zone), its decomposers cut the penalised QUBO without keeping the budget
inside each piece, and its workflows keep their state in memory while a sampler call blocks. Here
every round must survive a worker's death between the submission of its provider tasks and their
answers, so the loop is written as pure steps over stored data (see :mod:`qhybrid.jobs.decomposed`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qhybrid.domain.qubo import FloatArray
from qhybrid.portfolio.classical import ClassicalSolution
from qhybrid.portfolio.selection import SelectionProblem

Bits = NDArray[np.uint8]


@dataclass(frozen=True)
class SubProblem:
    """A sub-problem: the assets ``indices`` free, the others fixed at the current selection.

    Attributes:
        indices: Positions of the free assets in the full problem, increasing.
        problem: The restricted problem on those assets: ``Σ_SS``, ``μ_S − 2q Σ_SF x_F`` and the
            budget the current selection spends inside ``S``.
        offset: The fixed part's objective, so that ``full(x) = problem.objective(x_S) + offset``
            for every ``x`` that agrees with the current selection outside ``S``.
    """

    indices: tuple[int, ...]
    problem: SelectionProblem
    offset: float


def restrict(problem: SelectionProblem, bits: Bits, indices: tuple[int, ...]) -> SubProblem:
    """The sub-problem on ``indices`` with every other asset fixed at ``bits``.

    With ``x = (x_S, x_F)``: ``q xᵀΣx − μᵀx = q x_Sᵀ Σ_SS x_S − (μ_S − 2q Σ_SF x_F)ᵀ x_S
    + (q x_Fᵀ Σ_FF x_F − μ_Fᵀ x_F)``. The last bracket is the offset.

    Args:
        problem: The full problem.
        bits: The current (feasible) selection, shape ``(n,)``.
        indices: The free assets.

    Returns:
        The sub-problem; its assets keep their names.
    """
    free = np.array(indices, dtype=np.int64)
    fixed_mask = np.ones(problem.num_assets, dtype=np.bool_)
    fixed_mask[free] = False
    x = np.asarray(bits, dtype=np.float64)
    x_fixed = np.where(fixed_mask, x, 0.0)
    q = problem.risk_aversion
    sigma, mu = problem.covariance, problem.expected_returns
    linear = mu[free] - 2.0 * q * (sigma[free] @ x_fixed)
    offset = float(q * x_fixed @ sigma @ x_fixed - mu @ x_fixed)
    sub = SelectionProblem(
        names=tuple(problem.names[i] for i in free),
        expected_returns=linear,
        covariance=sigma[np.ix_(free, free)],
        risk_aversion=q,
        budget=round(float(x[free].sum())),
    )
    return SubProblem(tuple(int(i) for i in free), sub, offset)


def swap_deltas(problem: SelectionProblem, bits: Bits) -> tuple[FloatArray, FloatArray]:
    """Each asset's energy impact: the best change of the objective by one swap that moves it.

    Swapping held ``i`` out and not-held ``j`` in changes the objective by
    ``q(Σ_ii + Σ_jj − 2Σ_ij + 2g_j − 2g_i) + μ_i − μ_j`` with ``g = Σx``.

    Returns:
        ``(impact, matrix)``: ``impact[a]`` the lowest change of a swap involving asset ``a``
        (``+inf`` when no swap exists), and the held × not-held matrix of changes.
    """
    x = np.asarray(bits, dtype=np.float64)
    held = np.flatnonzero(x > 0.5)
    free = np.flatnonzero(x < 0.5)
    q, sigma, mu = problem.risk_aversion, problem.covariance, problem.expected_returns
    g = sigma @ x
    diagonal = np.diag(sigma)
    out_part = q * (diagonal[held] - 2.0 * g[held]) + mu[held]
    in_part = q * (diagonal[free] + 2.0 * g[free]) - mu[free]
    matrix = out_part[:, None] + in_part[None, :] - 2.0 * q * sigma[np.ix_(held, free)]
    impact = np.full(problem.num_assets, np.inf)
    if held.size and free.size:
        impact[held] = matrix.min(axis=1)
        impact[free] = matrix.min(axis=0)
    return impact, matrix


def choose_subproblems(
    problem: SelectionProblem,
    bits: Bits,
    *,
    size: int,
    count: int,
    rng: np.random.Generator,
) -> list[tuple[int, ...]]:
    """Disjoint sets of at most ``size`` assets, each about half held and half not held.

    Assets are drawn without replacement with a preference for those of lowest energy impact
    (the most promising swaps): weights ``exp(−rank / (n/4))`` so that the draws still reach the
    whole universe over the rounds. Each set takes up to ``⌊size/2⌋`` held assets, fewer when the budget is
    too small to give every set that many.

    Args:
        problem: The full problem.
        bits: The current feasible selection.
        size: Free assets per sub-problem (``≥ 2``).
        count: Sub-problems wanted; fewer come back when the assets run out.
        rng: Source of the draws (seeded by the caller, so a redone step picks the same sets).

    Returns:
        Sorted index tuples; each holds at least one held and one not-held asset.
    """
    if size < 2:
        raise ValueError(f"sub-problems need at least 2 assets, got {size}")
    impact, _ = swap_deltas(problem, bits)
    x = np.asarray(bits) > 0
    held_pool = list(_ranked_draw(np.flatnonzero(x), impact, rng))
    free_pool = list(_ranked_draw(np.flatnonzero(~x), impact, rng))
    chosen: list[tuple[int, ...]] = []
    # Spread the held assets over the sub-problems, so a small budget still reaches all of them.
    held_share = min(size // 2, max(1, len(held_pool) // max(count, 1)))
    for _ in range(count):
        want_held = min(held_share, len(held_pool))
        want_free = min(size - want_held, len(free_pool))
        want_held = min(size - want_free, len(held_pool))
        if want_held < 1 or want_free < 1:
            break
        part = held_pool[:want_held] + free_pool[:want_free]
        del held_pool[:want_held], free_pool[:want_free]
        chosen.append(tuple(sorted(int(i) for i in part)))
    return chosen


def _ranked_draw(pool: NDArray[np.int64], impact: FloatArray, rng: np.random.Generator) -> list[int]:
    if pool.size == 0:
        return []
    order = pool[np.argsort(impact[pool], kind="stable")]
    weights = np.exp(-np.arange(order.size) / max(order.size / 4.0, 1.0))
    picked = rng.choice(order.size, size=order.size, replace=False, p=weights / weights.sum())
    return [int(order[i]) for i in picked]


def apply_candidate(sub: SubProblem, bits: Bits, candidate: Bits) -> Bits:
    """``bits`` with the sub-problem's assets set to ``candidate`` (a feasible sub-selection)."""
    out = np.array(bits, dtype=np.uint8, copy=True)
    out[np.array(sub.indices, dtype=np.int64)] = np.asarray(candidate, dtype=np.uint8)
    return out


def classical_start(
    problem: SelectionProblem, *, seconds: float, seed: int, chains: int = 32
) -> tuple[ClassicalSolution, ClassicalSolution]:
    """The LNS's start: greedy + 1-swap local search, then swap-move annealing from it.

    Args:
        problem: The full problem.
        seconds: Wall time the annealer may use.
        seed: Seeds the annealer.
        chains: Parallel annealing chains.

    Returns:
        ``(start, greedy)``: the better of the two (method ``greedy+local_search`` or
        ``swap_annealing``) and the greedy solution itself.
    """
    started = time.perf_counter()
    greedy_bits = problem.local_search(np.zeros(problem.num_assets, dtype=np.uint8))
    greedy = _solution(problem, greedy_bits, "greedy+local_search", 1, started)
    annealed = swap_anneal(problem, seconds=seconds, seed=seed, chains=chains, start=greedy_bits)
    return (annealed if annealed.objective < greedy.objective else greedy), greedy


def swap_anneal(
    problem: SelectionProblem,
    *,
    seconds: float,
    seed: int,
    chains: int = 32,
    sweeps: int = 100,
    start: Bits | None = None,
) -> ClassicalSolution:
    """Swap-move simulated annealing, restarted until ``seconds`` of wall time are spent.

    Every chain holds exactly ``budget`` assets; a move swaps a held and a not-held asset
    (Metropolis acceptance on the true objective's change). One run is ``sweeps × n`` moves per
    chain on a geometric schedule from the typical move's size down to 10⁻³ of it; all chains
    move at once (vectorised). Runs repeat, half the chains restarting from the best so far,
    while time remains; the best chain is polished by 1-swap local search.

    Args:
        problem: The full problem (``0 < budget < n``).
        seconds: Wall time budget (at least one run is made).
        seed: Seeds the moves.
        chains: Parallel chains.
        sweeps: Moves per chain per asset, per run.
        start: A feasible selection some chains start from; random otherwise.

    Returns:
        ``method="swap_annealing"``; ``evaluated`` counts the moves tried.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n, budget = problem.num_assets, problem.budget
    if not 0 < budget < n:
        bits = problem.local_search(np.zeros(n, dtype=np.uint8))
        return _solution(problem, bits, "swap_annealing", 0, started)
    q, sigma, mu = problem.risk_aversion, problem.covariance, problem.expected_returns
    diagonal = np.diag(sigma)
    best_bits = None if start is None else np.asarray(start, dtype=np.uint8)
    best_value = math.inf if best_bits is None else float(problem.objective(best_bits)[0])
    moves = 0
    steps = sweeps * n
    # The typical size of a move: the spread of single-swap changes around a random selection.
    probe = np.zeros(n)
    probe[rng.choice(n, budget, replace=False)] = 1.0
    _, deltas = swap_deltas(problem, probe.astype(np.uint8))
    scale = float(np.std(deltas)) or 1.0
    temperatures = scale * np.geomspace(1.0, 1e-3, steps)
    while True:
        held = np.empty((chains, budget), dtype=np.int64)
        free = np.empty((chains, n - budget), dtype=np.int64)
        for c in range(chains):
            if best_bits is not None and c < chains // 2:
                x0 = best_bits
            else:
                x0 = np.zeros(n, dtype=np.uint8)
                x0[rng.choice(n, budget, replace=False)] = 1
            held[c], free[c] = np.flatnonzero(x0), np.flatnonzero(x0 == 0)
        x = np.zeros((chains, n))
        np.put_along_axis(x, held, 1.0, axis=1)
        g = x @ sigma
        a_pos = rng.integers(0, budget, size=(steps, chains))
        b_pos = rng.integers(0, n - budget, size=(steps, chains))
        uniform = np.log(rng.random((steps, chains)))
        chain_index = np.arange(chains)
        for step in range(steps):
            i = held[chain_index, a_pos[step]]
            j = free[chain_index, b_pos[step]]
            g_i, g_j = g[chain_index, i], g[chain_index, j]
            delta = (
                q * (diagonal[i] + diagonal[j] - 2.0 * sigma[i, j] + 2.0 * g_j - 2.0 * g_i) + mu[i] - mu[j]
            )
            accept = delta * (-1.0 / temperatures[step]) > uniform[step]
            if accept.any():
                c = chain_index[accept]
                g[c] += sigma[j[accept]] - sigma[i[accept]]
                held[c, a_pos[step, accept]] = j[accept]
                free[c, b_pos[step, accept]] = i[accept]
        moves += steps * chains
        final = np.zeros((chains, n), dtype=np.uint8)
        np.put_along_axis(final, held, 1, axis=1)
        values = problem.objective(final)
        k = int(np.argmin(values))
        if values[k] < best_value:
            best_value, best_bits = float(values[k]), final[k]
        if time.perf_counter() - started >= seconds:
            break
    assert best_bits is not None
    polished = problem.local_search(best_bits)
    return _solution(problem, polished, "swap_annealing", moves, started)


def _solution(
    problem: SelectionProblem, bits: Bits, method: str, evaluated: int, started: float
) -> ClassicalSolution:
    chosen = np.asarray(bits, dtype=np.uint8)
    return ClassicalSolution(
        bits=tuple(int(b) for b in chosen),
        objective=float(problem.objective(chosen)[0]),
        method=method,
        evaluated=evaluated,
        seconds=time.perf_counter() - started,
        optimal=False,
    )

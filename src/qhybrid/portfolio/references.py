"""Classical references a circuit's samples are measured against, on the TRUE problem.

A circuit's samples only show what the circuit contributes when they are set beside classical
samplers given the same budget (:class:`qhybrid.domain.result.Contribution`):

* :func:`conditioned_rounding`: the continuous relaxation rounded at random, conditioned on the
  budget (exact conditional Bernoulli sampling, :mod:`qhybrid.domain.conditioned`);
* :func:`swap_annealing`: simulated annealing with budget-preserving moves (swap one held asset for
  one not held; for lots, move one lot from one asset to another), one chain per shot, vectorised
  with numpy, for a given wall time;
* :func:`sample_stats`: what a set of samples achieved (best, share on the optimum, mean,
  feasible share);
* :func:`circuit_helped`: the verdict.

Everything here sees the true μ and Σ and never leaves the trusted zone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qhybrid.domain import conditioned
from qhybrid.domain.qubo import FloatArray
from qhybrid.domain.result import SamplerReport
from qhybrid.portfolio.formulation import Formulation, relax_levels
from qhybrid.portfolio.lots import LotsProblem
from qhybrid.portfolio.selection import SelectionProblem

#: Objectives closer than this (relative) count as the same value.
TIE_TOLERANCE = 1e-9
#: Chains the annealer runs at most; more shots are drawn from their final states.
MAX_CHAINS = 8192
#: Final temperature as a share of the initial one.
FINAL_TEMPERATURE_SHARE = 1e-3


@dataclass(frozen=True)
class _Levels:
    """A formulation as integer levels ``ℓ`` in ``[low, high]`` with ``Σℓ = total``.

    The objective is ``ℓᵀAℓ − bᵀℓ`` (selection: ``ℓ = x``, ``A = qΣ``, ``b = μ``; lots:
    ``A = qΣ/L²``, ``b = μ/L``), and ``to_bits`` maps levels to the formulation's bits.
    """

    a: FloatArray
    b: FloatArray
    low: NDArray[np.int64]
    high: NDArray[np.int64]
    total: int
    to_bits: Callable[[NDArray[np.int64]], NDArray[np.uint8]]


def _levels(formulation: Formulation) -> _Levels:
    if isinstance(formulation, SelectionProblem):
        n = formulation.num_assets
        return _Levels(
            formulation.risk_aversion * formulation.covariance,
            np.asarray(formulation.expected_returns, dtype=np.float64),
            np.zeros(n, dtype=np.int64),
            np.ones(n, dtype=np.int64),
            int(formulation.budget),
            lambda levels: np.asarray(levels, dtype=np.uint8),
        )
    if isinstance(formulation, LotsProblem):
        total = float(formulation.total_lots)
        lots = formulation

        def to_bits(levels: NDArray[np.int64]) -> NDArray[np.uint8]:
            return np.atleast_2d(np.asarray(lots.bits_of(levels), dtype=np.uint8))

        return _Levels(
            formulation.risk_aversion * formulation.covariance / (total * total),
            np.asarray(formulation.expected_returns, dtype=np.float64) / total,
            np.asarray(formulation.min_lots, dtype=np.int64),
            np.asarray(formulation.max_lots, dtype=np.int64),
            int(formulation.total_lots),
            to_bits,
        )
    raise TypeError(f"no classical references for {type(formulation).__name__}")


def conditioned_rounding(formulation: Formulation, shots: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """``shots`` roundings of the continuous relaxation, each meeting the budget exactly.

    The relaxed levels ``ℓ*`` (real, within the bounds, adding up to the budget) are split into
    ``⌊ℓ*⌋`` and fractional parts ``f``; each asset gets one more unit with probability ``f_i``,
    independently, conditioned on the total being the budget (:mod:`qhybrid.domain.conditioned`).
    For a selection that is ``x ~ Bernoulli(relaxed weights)`` conditioned on ``Σx = B``. The
    weights are not clipped.

    Returns:
        Bits, shape ``(shots, num_variables)``, every row feasible.
    """
    levels = _levels(formulation)
    relaxed = relax_levels(levels.a, levels.b, levels.low, levels.high, levels.total)
    real = np.clip(levels.low + relaxed * (levels.high - levels.low), levels.low, levels.high)
    floor = np.minimum(np.floor(real + 1e-9).astype(np.int64), levels.high)
    fraction = np.clip(real - floor, 0.0, 1.0)
    extra = levels.total - int(floor.sum())
    # Rounding error can leave the fractions a hair off their sum: take the largest ones if the
    # conditioned draw is impossible.
    fraction = np.where(floor >= levels.high, 0.0, fraction)
    extra = max(0, min(extra, int(np.count_nonzero(floor < levels.high))))
    positives = int(np.count_nonzero(fraction > 0.0))
    if positives < extra:
        order = np.argsort(-fraction, kind="stable")
        fraction[order[:extra]] = np.maximum(fraction[order[:extra]], 1e-6)
    draws = conditioned.sample(fraction, extra, shots, rng).astype(np.int64)
    return levels.to_bits(floor[np.newaxis, :] + draws)


@dataclass(frozen=True)
class Annealed:
    """What :func:`swap_annealing` returns: the samples and how it ran."""

    bits: NDArray[np.uint8]
    seconds: float
    chains: int
    steps: int


def swap_annealing(
    formulation: Formulation, shots: int, seconds: float, rng: np.random.Generator
) -> Annealed:
    """Simulated annealing with budget-preserving moves, for about ``seconds`` of wall time.

    One chain per shot (at most :data:`MAX_CHAINS`; more shots are drawn from their final
    states), each started from a random feasible point. A step proposes, in every chain at once,
    moving one unit from a random asset above its lower bound to a random other asset below its
    upper bound (a selection: swap a held asset for one not held), and accepts it by the
    Metropolis rule. The temperature falls geometrically from the median size of a first round
    of proposals to :data:`FINAL_TEMPERATURE_SHARE` of it; the number of steps comes from timing
    the first steps, and the run stops when the wall time is used up.

    Returns:
        The final states as bits ``(shots, num_variables)``, the time used, chains and steps.
    """
    started = time.perf_counter()
    levels = _levels(formulation)
    n = levels.low.size
    chains = max(1, min(shots, MAX_CHAINS))
    state = _random_feasible(levels, chains, rng)
    a, b = levels.a, levels.b
    diagonal = np.diag(a)
    load = state.astype(np.float64) @ a  # (Aℓ) per chain
    rows = np.arange(chains)

    def propose() -> tuple[NDArray[np.intp], NDArray[np.intp], FloatArray]:
        down = state > levels.low
        up = state < levels.high
        source = np.argmax(np.where(down, rng.random((chains, n)), -1.0), axis=1)
        keys = np.where(up, rng.random((chains, n)), -1.0)
        keys[rows, source] = -1.0
        target = np.argmax(keys, axis=1)
        delta = (
            2.0 * (load[rows, target] - load[rows, source])
            + diagonal[source]
            + diagonal[target]
            - 2.0 * a[source, target]
            - (b[target] - b[source])
        )
        # A chain with nowhere to move (every unit pinned) proposes nothing.
        delta = np.where(keys[rows, target] < 0.0, np.inf, delta)
        return source, target, delta

    def step(temperature: float) -> None:
        source, target, delta = propose()
        with np.errstate(over="ignore"):
            accept = (delta <= 0.0) | (rng.random(chains) < np.exp(-np.maximum(delta, 0.0) / temperature))
        accept &= np.isfinite(delta)
        moved = np.flatnonzero(accept)
        if moved.size:
            state[moved, source[moved]] -= 1
            state[moved, target[moved]] += 1
            load[moved] += a[target[moved]] - a[source[moved]]

    _, _, first = propose()
    finite = np.abs(first[np.isfinite(first)])
    initial = float(np.median(finite)) if finite.size and float(np.median(finite)) > 0.0 else 1.0
    # Time a few steps at the initial temperature to size the schedule to the wall time.
    calibration = 8
    probe = time.perf_counter()
    for _ in range(calibration):
        step(initial)
    per_step = max((time.perf_counter() - probe) / calibration, 1e-7)
    steps = max(1, int((seconds - (time.perf_counter() - started)) / per_step))
    ratio = FINAL_TEMPERATURE_SHARE ** (1.0 / max(1, steps - 1))
    temperature = initial
    done = calibration
    deadline = started + seconds
    for index in range(steps):
        step(temperature)
        temperature *= ratio
        done += 1
        if index % 16 == 15 and time.perf_counter() > deadline:
            break
    final = levels.to_bits(state)
    if shots > chains:
        final = final[rng.integers(0, chains, size=shots)]
    return Annealed(np.asarray(final, dtype=np.uint8), time.perf_counter() - started, chains, done)


def _random_feasible(levels: _Levels, count: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """``count`` uniform-ish random feasible level vectors: units dealt one at a time at random."""
    n = levels.low.size
    state = np.tile(levels.low, (count, 1))
    rows = np.arange(count)
    for _ in range(levels.total - int(levels.low.sum())):
        keys = np.where(state < levels.high, rng.random((count, n)), -1.0)
        state[rows, np.argmax(keys, axis=1)] += 1
    return state


def sample_stats(
    formulation: Formulation,
    bits: NDArray[np.uint8],
    weights: NDArray[np.int64] | NDArray[np.float64],
    optimum: NDArray[np.uint8] | None,
) -> SamplerReport:
    """What a set of samples achieved on the true problem.

    Args:
        formulation: The true problem.
        bits: Distinct (or repeated) outcomes, ``(m, num_variables)``.
        weights: Shots per outcome, ``(m,)``.
        optimum: The proven optimum's bits, or ``None`` when no optimum is proven.

    Returns:
        Best feasible objective, its share, the share on the optimum, the mean objective over the
        feasible shots and the feasible share (``None`` where there is no feasible shot).
    """
    rows = np.atleast_2d(np.asarray(bits, dtype=np.uint8))
    shots = np.asarray(weights, dtype=np.float64)
    total = float(shots.sum())
    feasible = formulation.is_feasible(rows)
    values = formulation.objective(rows)
    feasible_shots = float(shots[feasible].sum())
    optimum_share = None
    if optimum is not None:
        hit = np.all(rows == np.asarray(optimum, dtype=np.uint8)[np.newaxis, :], axis=1)
        optimum_share = float(shots[hit].sum()) / total if total > 0 else 0.0
    if feasible_shots <= 0.0:
        return SamplerReport(
            shots=round(total),
            best_objective=None,
            best_share=None,
            optimum_share=optimum_share,
            mean_objective=None,
            feasible_share=0.0,
        )
    best = float(values[feasible].min())
    at_best = feasible & (values <= best + TIE_TOLERANCE * max(1.0, abs(best)))
    return SamplerReport(
        shots=round(total),
        best_objective=best,
        best_share=float(shots[at_best].sum()) / total,
        optimum_share=optimum_share,
        mean_objective=float((shots[feasible] * values[feasible]).sum() / feasible_shots),
        feasible_share=feasible_shots / total,
    )


def beats(first: SamplerReport, second: SamplerReport) -> bool:
    """Whether ``first`` did strictly better than ``second`` (see :func:`circuit_helped`)."""
    if first.best_objective is None:
        return False
    if second.best_objective is None:
        return True
    tolerance = TIE_TOLERANCE * max(1.0, abs(second.best_objective))
    if first.best_objective < second.best_objective - tolerance:
        return True
    if first.best_objective > second.best_objective + tolerance:
        return False
    # Same best value: more shots on the proven optimum wins; without a known optimum, a tie.
    if first.optimum_share is None or second.optimum_share is None:
        return False
    return first.optimum_share > second.optimum_share


def better_of(first: SamplerReport, second: SamplerReport) -> SamplerReport:
    """The stronger of two references (``first`` on a tie)."""
    return second if beats(second, first) else first


def circuit_helped(
    circuit: SamplerReport, start_state: SamplerReport, rounding: SamplerReport, annealing: SamplerReport
) -> bool:
    """True only when the circuit's samples beat its own start state AND the better classical sampler.

    "A beats B": A's best feasible objective is lower than B's by more than a relative
    :data:`TIE_TOLERANCE`; or the two are equal within it, the optimum is proven, and A put a
    strictly larger share of its shots on the optimum. A sampler with no feasible shot beats
    nothing. The classical sampler is the better of ``rounding`` and ``annealing`` by the same
    rule. Every report must be of the same number of shots on the true problem.
    """
    return beats(circuit, start_state) and beats(circuit, better_of(rounding, annealing))


def annealing_budget(reported: float | None, *, floor: float, cap: float) -> float:
    """The annealer's wall time: the circuit's sampling time, within ``[floor, cap]``.

    Raises:
        ValueError: On a floor above the cap or a non-positive cap.
    """
    if cap <= 0.0 or floor > cap:
        raise ValueError(f"need 0 < floor <= cap, got {floor} and {cap}")
    if reported is None or not math.isfinite(reported):
        return cap
    return min(cap, max(floor, reported))

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

import copy
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from qhybrid.domain import conditioned
from qhybrid.domain.qubo import FloatArray
from qhybrid.domain.result import SamplerReport
from qhybrid.portfolio import kernels
from qhybrid.portfolio.formulation import Formulation, relax_levels
from qhybrid.portfolio.lots import LotsProblem
from qhybrid.portfolio.selection import SelectionProblem

#: Objectives closer than this (relative) count as the same value.
TIE_TOLERANCE = 1e-9
#: Chains the annealer runs at most; more shots are drawn from their final states.
MAX_CHAINS = 8192
#: Final temperature as a share of the initial one.
FINAL_TEMPERATURE_SHARE = 1e-3
#: The annealer's floor: a complete schedule of this many sweeps (one proposed move per asset in
#: every chain), whatever the machine's speed.
MIN_SWEEPS = 64


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
    """What :func:`swap_annealing` returns: the samples and how it ran.

    ``steps`` are those of the run whose final states are returned; ``seconds`` is the wall time of
    everything the annealer did (the floor's run included). ``stopped`` says why it stopped:
    ``"wall_time"`` (the budget was used up), ``"min_sweeps"`` (the budget held no more steps
    than the floor) or ``"optimum"`` (every chain ended on the proven optimum after the floor's
    run, so no longer run could report more).
    """

    bits: NDArray[np.uint8]
    seconds: float
    chains: int
    steps: int
    stopped: Literal["wall_time", "min_sweeps", "optimum"] = "wall_time"


class _Chains:
    """``count`` annealing chains on the levels, started from uniform random feasible points.

    A step proposes, in every chain at once, moving one unit from a random asset above its lower
    bound to a random other asset below its upper bound (a selection: swap a held asset for one
    not held, each chosen uniformly), and accepts it by the Metropolis rule: ``δ ≤ T·E`` with
    ``E ~ Exp(1)``, which is ``u < exp(−δ/T)`` for ``u = e^{−E}``.
    """

    def __init__(self, levels: _Levels, count: int, rng: np.random.Generator) -> None:
        self.levels = levels
        self.count = count
        self.rng = rng
        self.rows = np.arange(count)
        a, b = levels.a, levels.b
        diagonal = np.diag(a)
        # The part of a move's change that does not depend on the state, for s -> t.
        self.fixed = (
            diagonal[:, np.newaxis]
            + diagonal[np.newaxis, :]
            - 2.0 * a
            - (b[np.newaxis, :] - b[:, np.newaxis])
        )
        self.state = _random_feasible(levels, count, rng)
        self.load = self.state.astype(np.float64) @ a  # (Aℓ) per chain

    def restart(self) -> _Chains:
        """Fresh chains on the same problem."""
        return _Chains(self.levels, self.count, self.rng)

    def propose(self) -> tuple[NDArray[np.intp], NDArray[np.intp], FloatArray]:
        """One proposed move per chain: source, target, the objective's change (inf: no move)."""
        rows, rng, n = self.rows, self.rng, self.levels.low.size
        down = self.state > self.levels.low
        up = self.state < self.levels.high
        source = np.argmax(np.where(down, rng.random((self.count, n)), -1.0), axis=1)
        keys = np.where(up, rng.random((self.count, n)), -1.0)
        keys[rows, source] = -1.0
        target = np.argmax(keys, axis=1)
        delta = 2.0 * (self.load[rows, target] - self.load[rows, source]) + self.fixed[source, target]
        # A chain with nowhere to move (every unit pinned) proposes nothing.
        return source, target, np.where(keys[rows, target] < 0.0, np.inf, delta)

    def first_changes(self) -> FloatArray:
        """The changes of one round of proposals (not applied): the schedule's scale."""
        return self.propose()[2]

    def steps(self, temperatures: FloatArray) -> None:
        """One Metropolis step of every chain at each of ``temperatures``, in order."""
        for temperature in temperatures.tolist():
            self.step(temperature)

    def step(self, temperature: float) -> None:
        """One Metropolis step of every chain at ``temperature``."""
        source, target, delta = self.propose()
        moved = np.flatnonzero(delta <= temperature * self.rng.standard_exponential(self.count))
        if moved.size:
            s, t = source[moved], target[moved]
            self.state[moved, s] -= 1
            self.state[moved, t] += 1
            self.load[moved] += self.levels.a[t] - self.levels.a[s]

    def bits(self) -> NDArray[np.uint8]:
        """The chains' states as the formulation's bits."""
        return np.asarray(self.levels.to_bits(self.state), dtype=np.uint8)


class _TableChains:
    """The same chains for a selection with few feasible states, on a table of every swap.

    Each chain is the index of its selection among the ``C(n, B)`` feasible ones (kept as its
    row's offset); ``next_row[s, m]`` and ``change[s, m]`` give the selection reached (as a row
    offset) and the objective's change of swap ``m`` (the
    ``i``-th held asset for the ``j``-th free one, ``m = i·(n − B) + j``). Drawing ``m``
    uniformly is drawing the held and the free asset uniformly, so the chains are those of
    :class:`_Chains` (same proposals, same Metropolis rule, a uniform start), only a step costs
    a few table look-ups whatever ``n``.
    """

    def __init__(self, levels: _Levels, count: int, rng: np.random.Generator) -> None:
        n, budget = levels.low.size, levels.total
        selections = _selections(n, budget)
        held = np.nonzero(selections)[1].reshape(selections.shape[0], budget)
        free = np.nonzero(1 - selections)[1].reshape(selections.shape[0], n - budget)
        powers = np.left_shift(1, np.arange(n, dtype=np.int64))
        codes = selections.astype(np.int64) @ powers
        index = np.full(1 << n, -1, dtype=np.int64)
        index[codes] = np.arange(codes.size)
        swapped = (
            codes[:, np.newaxis, np.newaxis] - powers[held][:, :, np.newaxis] + powers[free][:, np.newaxis, :]
        )
        self.moves = budget * (n - budget)
        following = index[swapped.reshape(codes.size, self.moves)]
        x = selections.astype(np.float64)
        values = np.einsum("si,si->s", x @ levels.a, x) - x @ levels.b
        self.change = (values[following] - values[:, np.newaxis]).ravel()
        # A chain is kept as the offset of its row in the tables (selection index × moves), so
        # that a step adds the move and looks up: nothing else per step.
        self.next_row = (following * self.moves).ravel()
        self.selections = selections
        self.rng = rng
        self.count = count
        self.restarted()

    def restarted(self) -> None:
        """Every chain at a uniform random selection, no random numbers in hand."""
        self.row = self.rng.integers(0, self.selections.shape[0], self.count) * self.moves
        self._block: tuple[NDArray[np.int64], FloatArray] | None = None
        self._used = 0

    def restart(self) -> _TableChains:
        """Fresh chains on the same table."""
        fresh = copy.copy(self)
        fresh.restarted()
        return fresh

    def _draws(self, count: int) -> tuple[NDArray[np.int64], FloatArray]:
        # Random numbers are drawn for _BLOCK steps at once, in the same calls whatever the steps
        # are asked for at a time: the chains depend only on the number of steps run.
        if self._block is None or self._used == _BLOCK:
            self._block = (
                self.rng.integers(0, self.moves, (_BLOCK, self.count)),
                self.rng.standard_exponential((_BLOCK, self.count)),
            )
            self._used = 0
        moves, exponentials = self._block
        start, self._used = self._used, min(_BLOCK, self._used + count)
        return moves[start : self._used], exponentials[start : self._used]

    def first_changes(self) -> FloatArray:
        """The changes of one round of proposals (not applied): the schedule's scale."""
        cells = self.row + self.rng.integers(0, self.moves, self.count)
        return np.asarray(self.change[cells], dtype=np.float64)

    def steps(self, temperatures: FloatArray) -> None:
        """One Metropolis step of every chain at each of ``temperatures``, in order.

        A step draws a move and an exponential per chain and moves chain ``c`` to
        ``next_row[cell]`` when ``change[cell] <= temperature · exponential`` (``cell`` = its row
        plus the move): compiled (:func:`qhybrid.portfolio.kernels.table_steps`), on the random
        numbers drawn here.
        """
        kernel = kernels.table_steps()
        temperatures = np.ascontiguousarray(temperatures, dtype=np.float64)
        done = 0
        while done < temperatures.size:
            moves, exponentials = self._draws(temperatures.size - done)
            kernel(
                self.row,
                moves,
                exponentials,
                self.change,
                self.next_row,
                temperatures[done : done + moves.shape[0]],
            )
            done += moves.shape[0]

    def step(self, temperature: float) -> None:
        """One Metropolis step of every chain at ``temperature``."""
        self.steps(np.array([temperature], dtype=np.float64))

    def bits(self) -> NDArray[np.uint8]:
        """The chains' states as bits."""
        return self.selections[self.row // self.moves]


#: Steps whose random numbers are drawn at once by :class:`_TableChains`.
_BLOCK = 64
#: Steps :func:`_anneal` runs between two looks at its deadline.
_CHECK = 16
#: Selections are annealed on a table (:class:`_TableChains`) while it has at most this many cells.
TABLE_CELLS = 1 << 18


def _selections(n: int, budget: int) -> NDArray[np.uint8]:
    """Every selection of ``budget`` of ``n`` assets, one 0/1 row each."""
    combos = np.array(list(itertools.combinations(range(n), budget)), dtype=np.intp).reshape(-1, budget)
    bits = np.zeros((combos.shape[0], n), dtype=np.uint8)
    bits[np.arange(combos.shape[0])[:, np.newaxis], combos] = 1
    return bits


def _chains(levels: _Levels, count: int, rng: np.random.Generator) -> _Chains | _TableChains:
    """Chains on a table for a small selection with something to swap, else the general ones."""
    n, budget = levels.low.size, levels.total
    binary = bool(np.all(levels.low == 0) and np.all(levels.high == 1))
    if binary and 0 < budget < n and n <= 24 and math.comb(n, budget) * budget * (n - budget) <= TABLE_CELLS:
        return _TableChains(levels, count, rng)
    return _Chains(levels, count, rng)


def _anneal(
    chains: _Chains | _TableChains, steps: int, *, deadline: float | None = None, at_least: int = 0
) -> int:
    """A geometric schedule over ``steps`` steps; stops at ``deadline`` (never before ``at_least``)."""
    first = chains.first_changes()
    finite = np.abs(first[np.isfinite(first)])
    median = float(np.median(finite)) if finite.size else 0.0
    temperature = median if median > 0.0 else 1.0
    ratio = FINAL_TEMPERATURE_SHARE ** (1.0 / max(1, steps - 1))
    done = 0
    # Steps run _CHECK at a time (the deadline is looked at between them): each chunk's
    # temperatures are the running product, multiplied as one step after another would.
    while done < steps:
        chunk = np.empty(min(_CHECK, steps - done), dtype=np.float64)
        for k in range(chunk.size):
            chunk[k] = temperature
            temperature *= ratio
        chains.steps(chunk)
        done += chunk.size
        if (
            deadline is not None
            and done % _CHECK == 0
            and done >= at_least
            and time.perf_counter() > deadline
        ):
            break
    return done


def swap_annealing(
    formulation: Formulation,
    shots: int,
    seconds: float,
    rng: np.random.Generator,
    *,
    min_sweeps: int = MIN_SWEEPS,
    optimum: NDArray[np.uint8] | None = None,
) -> Annealed:
    """Simulated annealing with budget-preserving moves for ``seconds`` of wall time, ``min_sweeps`` at least.

    One chain per shot (at most :data:`MAX_CHAINS`; more shots are drawn from their final
    states), each started from a uniform random feasible point (:class:`_Chains`). The temperature
    falls geometrically from the median size of a first round of proposals to
    :data:`FINAL_TEMPERATURE_SHARE` of it.

    First a complete schedule of ``min_sweeps`` sweeps (a sweep: one proposed move per asset, in
    every chain) runs, whatever the machine: the floor, and the measure of a step's time. If
    ``seconds`` holds no more steps than that, its final states are the answer; likewise if the
    proven ``optimum`` is given and every chain ended on it (the best a sampler can report: a
    longer run could not do better). Otherwise fresh chains run a schedule sized to the whole of
    ``seconds``, stopping when it is used up, never below the floor.

    Returns:
        The final states as bits ``(shots, num_variables)``, the time used, chains, steps and why
        it stopped.
    """
    started = time.perf_counter()
    levels = _levels(formulation)
    chains = max(1, min(shots, MAX_CHAINS))
    floor_steps = max(1, int(min_sweeps) * levels.low.size)
    first = _chains(levels, chains, rng)
    # A step's time from the floor's run alone (not the table's construction), so that the
    # schedule sized from it fills the wall time.
    probe = time.perf_counter()
    _anneal(first, floor_steps)
    per_step = max((time.perf_counter() - probe) / floor_steps, 1e-9)
    steps = int(seconds / per_step)
    final, done = first.bits(), floor_steps
    stopped: Literal["wall_time", "min_sweeps", "optimum"] = "min_sweeps"
    if steps > floor_steps:
        target = None if optimum is None else np.asarray(optimum, dtype=np.uint8)
        if target is not None and bool(np.all(final == target[np.newaxis, :])):
            stopped = "optimum"
        else:
            final, done = _equal_time(first.restart(), steps, seconds, floor_steps)
            stopped = "wall_time"
    if shots > chains:
        final = final[rng.integers(0, chains, size=shots)]
    return Annealed(final, time.perf_counter() - started, chains, done, stopped)


def _equal_time(
    chains: _Chains | _TableChains, steps: int, seconds: float, floor_steps: int
) -> tuple[NDArray[np.uint8], int]:
    """Fresh chains annealed over ``steps`` steps or ``seconds``, whichever ends first: their bits, steps.

    The part of the reference that costs what the circuit's sampling took (the worker profile
    reports it on its own row).
    """
    done = _anneal(chains, steps, deadline=time.perf_counter() + seconds, at_least=floor_steps)
    return chains.bits(), done


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

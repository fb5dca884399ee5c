"""The classical references and the circuit_helped verdict."""

from __future__ import annotations

import numpy as np
import pytest

from qhybrid.domain.result import SamplerReport
from qhybrid.portfolio.baselines import exact
from qhybrid.portfolio.data import sp500_problem
from qhybrid.portfolio.lots import LotsProblem
from qhybrid.portfolio.references import (
    annealing_budget,
    beats,
    circuit_helped,
    conditioned_rounding,
    sample_stats,
    swap_annealing,
)
from tests.portfolio.factories import random_problem


def report(best: float | None, optimum_share: float | None = 0.1, mean: float | None = None) -> SamplerReport:
    return SamplerReport(
        shots=100,
        best_objective=best,
        best_share=None if best is None else 0.1,
        optimum_share=optimum_share,
        mean_objective=mean if mean is not None else best,
        feasible_share=0.0 if best is None else 1.0,
    )


def test_circuit_helped_only_when_it_beats_its_start_and_the_better_classical_sampler() -> None:
    # A lower best than all three references.
    assert circuit_helped(report(-2.0), report(-1.0), report(-1.5), report(-1.0))
    # Tie on the best (the optimum) and strictly more shots on it than every reference.
    assert circuit_helped(report(-2.0, 0.6), report(-2.0, 0.2), report(-2.0, 0.5), report(-2.0, 0.4))
    # The start state already did as well: the layers added nothing.
    assert not circuit_helped(report(-2.0, 0.6), report(-2.0, 0.6), report(-1.0), report(-1.0))
    # Beat the start, but annealing found a better portfolio.
    assert not circuit_helped(report(-2.0), report(-1.0), report(-1.0), report(-2.5))
    # Tie with rounding on best and share: not a win.
    assert not circuit_helped(report(-2.0, 0.4), report(-1.0), report(-2.0, 0.4), report(-1.0))
    # Tie on best without a proven optimum: not a win.
    assert not circuit_helped(report(-2.0, None), report(-2.0, None), report(-1.0, None), report(-1.0, None))
    # No feasible shot beats nothing; anything feasible beats it.
    assert not circuit_helped(report(None), report(None), report(None), report(None))
    assert beats(report(5.0), report(None)) and not beats(report(None), report(5.0))


def test_sample_stats_on_a_known_problem() -> None:
    problem = random_problem(6, 3, seed=2)
    optimum = np.array(exact(problem).bits, dtype=np.uint8)
    infeasible = np.ones(6, dtype=np.uint8)
    other = np.array([1, 1, 1, 0, 0, 0], dtype=np.uint8)
    if np.array_equal(other, optimum):
        other = np.array([0, 0, 0, 1, 1, 1], dtype=np.uint8)
    stats = sample_stats(problem, np.array([optimum, other, infeasible]), np.array([2, 1, 1]), optimum)
    assert stats.shots == 4
    assert stats.feasible_share == pytest.approx(0.75)
    assert stats.optimum_share == pytest.approx(0.5)
    assert stats.best_objective == pytest.approx(float(problem.objective(optimum)[0]))
    expected_mean = (2 * problem.objective(optimum)[0] + problem.objective(other)[0]) / 3
    assert stats.mean_objective == pytest.approx(float(expected_mean))
    assert sample_stats(problem, infeasible[np.newaxis, :], np.array([3]), None).best_objective is None


def test_rounding_and_annealing_keep_the_budget_and_annealing_finds_the_optimum() -> None:
    problem = sp500_problem(10, 5, seed=1)
    optimum = np.array(exact(problem).bits, dtype=np.uint8)
    rng = np.random.default_rng(0)
    rounded = conditioned_rounding(problem, 500, rng)
    assert rounded.shape == (500, 10) and np.all(problem.is_feasible(rounded))
    annealed = swap_annealing(problem, 256, 0.3, rng)
    assert annealed.bits.shape == (256, 10) and np.all(problem.is_feasible(annealed.bits))
    assert annealed.steps > 8 and annealed.chains == 256
    assert np.any(np.all(annealed.bits == optimum, axis=1))


def test_lots_references_keep_the_lot_budget() -> None:
    base = sp500_problem(5, 2, seed=3)
    lots = LotsProblem(
        base.names,
        base.expected_returns,
        base.covariance,
        base.risk_aversion,
        8,
        np.zeros(5, dtype=np.int64),
        np.full(5, 4, dtype=np.int64),
    )
    rng = np.random.default_rng(1)
    assert np.all(lots.is_feasible(conditioned_rounding(lots, 200, rng)))
    assert np.all(lots.is_feasible(swap_annealing(lots, 64, 0.1, rng).bits))


def test_annealing_budget_is_the_sampling_time_within_floor_and_cap() -> None:
    assert annealing_budget(0.4, floor=0.05, cap=2.0) == 0.4
    assert annealing_budget(0.001, floor=0.05, cap=2.0) == 0.05
    assert annealing_budget(30.0, floor=0.05, cap=2.0) == 2.0
    assert annealing_budget(None, floor=0.05, cap=2.0) == 2.0
    with pytest.raises(ValueError):
        annealing_budget(1.0, floor=3.0, cap=2.0)


def test_the_swap_table_holds_every_swap_and_its_exact_change() -> None:
    from qhybrid.portfolio.references import _levels, _TableChains

    problem = random_problem(7, 3, seed=4)
    chains = _TableChains(_levels(problem), 16, np.random.default_rng(0))
    selections = chains.selections
    values = problem.objective(selections)
    count = selections.shape[0]
    assert count == 35 and chains.moves == 12
    following = chains.next_row.reshape(count, chains.moves) // chains.moves
    change = chains.change.reshape(count, chains.moves)
    for state in range(count):
        held = np.flatnonzero(selections[state])
        free = np.flatnonzero(selections[state] == 0)
        for move in range(chains.moves):
            i, j = divmod(move, free.size)
            expected = selections[state].copy()
            expected[held[i]], expected[free[j]] = 0, 1
            assert np.array_equal(selections[following[state, move]], expected)
            difference = values[following[state, move]] - values[state]
            assert change[state, move] == pytest.approx(difference, abs=1e-15)


def test_the_annealer_runs_its_floor_whatever_the_wall_time_and_says_why_it_stopped() -> None:
    problem = random_problem(6, 3, seed=2)
    optimum = np.array(exact(problem).bits, dtype=np.uint8)
    # No wall time at all: the floor's complete schedule, min_sweeps sweeps of n steps.
    floor = swap_annealing(problem, 128, 0.0, np.random.default_rng(0), min_sweeps=40)
    assert (floor.stopped, floor.steps) == ("min_sweeps", 40 * 6)
    # Time for more, no optimum known: the schedule fills the wall time.
    timed = swap_annealing(problem, 128, 0.05, np.random.default_rng(0), min_sweeps=40)
    assert timed.stopped == "wall_time" and timed.steps > 40 * 6
    # With the proven optimum and every chain on it after the floor, no longer run could do better.
    stopped = swap_annealing(problem, 128, 0.05, np.random.default_rng(0), min_sweeps=40, optimum=optimum)
    assert stopped.stopped == "optimum" and stopped.steps == 40 * 6
    assert np.all(stopped.bits == optimum)
    # A wrong "optimum" is never reached by every chain: the full wall time is used.
    wrong = swap_annealing(problem, 128, 0.05, np.random.default_rng(0), min_sweeps=40, optimum=1 - optimum)
    assert wrong.stopped == "wall_time" and wrong.steps > 40 * 6


def test_table_and_general_chains_reach_the_same_distribution() -> None:
    from qhybrid.portfolio.references import _anneal, _Chains, _levels, _TableChains

    # At a fixed high temperature both are the same Metropolis chain: after many steps from the
    # same start distribution, the shares of each selection agree within sampling error.
    problem = random_problem(5, 2, seed=6)
    levels = _levels(problem)
    # A temperature of the size of a move's change: far from uniform, far from frozen.
    temperature = float(np.median(np.abs(_TableChains(levels, 1, np.random.default_rng(0)).change)))
    shares = []
    for kind in (_TableChains, _Chains):
        chains = kind(levels, 20_000, np.random.default_rng(3))
        for _ in range(30):
            chains.step(temperature)
        bits = chains.bits()
        codes = bits.astype(np.int64) @ (1 << np.arange(5))
        shares.append(np.bincount(codes, minlength=32) / codes.size)
    assert np.max(np.abs(shares[0] - shares[1])) < 0.02
    assert np.max(shares[0]) > 2.0 / 10  # not the uniform distribution over the 10 selections
    assert _anneal(_TableChains(levels, 8, np.random.default_rng(0)), 10) == 10

"""The compiled annealing step gives the NumPy step's chains, bit for bit."""

from __future__ import annotations

import time

import numpy as np
import pytest

from qhybrid.portfolio import references
from qhybrid.portfolio.references import _anneal, _levels, _TableChains, swap_annealing
from tests.portfolio.factories import random_problem


class _NumpyTableChains(_TableChains):
    """The table chains as they stepped before the kernel (commit 3ef9154), verbatim: the reference."""

    def _old_draws(self) -> tuple[np.ndarray, np.ndarray]:
        if self._block is None or self._used == references._BLOCK:
            self._block = (
                self.rng.integers(0, self.moves, (references._BLOCK, self.count)),
                self.rng.standard_exponential((references._BLOCK, self.count)),
            )
            self._used = 0
        moves, exponentials = self._block
        self._used += 1
        return moves[self._used - 1], exponentials[self._used - 1]

    def step(self, temperature: float) -> None:
        moves, exponentials = self._old_draws()
        cell = self.row + moves
        accept = self.change.take(cell) <= temperature * exponentials
        np.copyto(self.row, self.next_row.take(cell), where=accept)


def _old_anneal(
    chains: _NumpyTableChains, steps: int, *, deadline: float | None = None, at_least: int = 0
) -> int:
    """``references._anneal`` as it was before the kernel (commit 3ef9154), verbatim."""
    first = chains.first_changes()
    finite = np.abs(first[np.isfinite(first)])
    median = float(np.median(finite)) if finite.size else 0.0
    temperature = median if median > 0.0 else 1.0
    ratio = references.FINAL_TEMPERATURE_SHARE ** (1.0 / max(1, steps - 1))
    done = 0
    for index in range(steps):
        chains.step(temperature)
        temperature *= ratio
        done += 1
        if deadline is not None and index % 16 == 15 and done >= at_least and time.perf_counter() > deadline:
            break
    return done


def _cases() -> list[tuple[int, int, int, int, int]]:
    """(assets, budget, chains, steps, seed): sizes of the worker's jobs and odd ones."""
    rng = np.random.default_rng(20261207)
    cases = []
    for seed in range(120):
        n = int(rng.integers(3, 11))
        budget = int(rng.integers(1, n))
        chains = int(rng.choice([1, 7, 64, 512, 1000]))
        steps = int(rng.choice([1, 15, 16, 17, 63, 64, 65, 64 * n, 200]))
        cases.append((n, budget, chains, steps, seed))
    return cases


@pytest.mark.parametrize(("n", "budget", "chains", "steps", "seed"), _cases())
def test_the_compiled_step_gives_the_numpy_steps_chains(
    n: int, budget: int, chains: int, steps: int, seed: int
) -> None:
    levels = _levels(random_problem(n, budget, seed=seed))
    old = _NumpyTableChains(levels, chains, np.random.default_rng(seed))
    new = _TableChains(levels, chains, np.random.default_rng(seed))
    assert _old_anneal(old, steps) == _anneal(new, steps) == steps
    assert np.array_equal(old.row, new.row)
    # The same random numbers were drawn: whatever draws next (a restart, the shots) agrees too.
    assert old.rng.bit_generator.state == new.rng.bit_generator.state
    assert np.array_equal(old.restart().row, new.restart().row)


@pytest.mark.parametrize("at_least", [0, 1, 16, 40, 100])
def test_a_passed_deadline_stops_both_at_the_same_step(at_least: int) -> None:
    levels = _levels(random_problem(6, 3, seed=at_least))
    old = _NumpyTableChains(levels, 256, np.random.default_rng(at_least))
    new = _TableChains(levels, 256, np.random.default_rng(at_least))
    # A deadline already past: both stop at the first look at it after ``at_least`` steps.
    done = _old_anneal(old, 1000, deadline=0.0, at_least=at_least)
    assert done == _anneal(new, 1000, deadline=0.0, at_least=at_least)
    assert done == max(16, -(-at_least // 16) * 16)
    assert np.array_equal(old.row, new.row)


def test_single_steps_and_chunks_walk_the_same_chains() -> None:
    levels = _levels(random_problem(7, 3, seed=9))
    one = _TableChains(levels, 300, np.random.default_rng(5))
    many = _TableChains(levels, 300, np.random.default_rng(5))
    temperatures = np.geomspace(0.01, 1e-5, 150)
    for temperature in temperatures:
        one.step(float(temperature))
    many.steps(temperatures)
    assert np.array_equal(one.row, many.row)


def test_the_floor_of_a_workers_job_is_unchanged() -> None:
    # The whole annealer on the worker's jobs (6-8 assets, half held, 512 shots, no wall time).
    for n in (6, 7, 8):
        for seed in range(10):
            problem = random_problem(n, n // 2, seed=seed)
            new = swap_annealing(problem, 512, 0.0, np.random.default_rng(seed))
            levels = _levels(problem)
            old = _NumpyTableChains(levels, 512, np.random.default_rng(seed))
            _old_anneal(old, 64 * n)
            assert new.steps == 64 * n
            assert np.array_equal(new.bits, old.bits())

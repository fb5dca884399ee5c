"""The decomposition's pure steps: closing a round takes a sampled sub-answer only when it lowers
the full objective, and the round budget stops the loop at the rounds' average pace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from qhybrid.core.config import Settings
from qhybrid.domain.result import StartReport
from qhybrid.jobs.subproblems import LoopState, PartOutcome, close_round, should_stop
from qhybrid.portfolio.classical import brute_force
from qhybrid.portfolio.decomposition import restrict
from qhybrid.portfolio.factor_model import factor_problem
from qhybrid.proxy.obfuscation import ObfuscationKey

PROBLEM = factor_problem(30, 5, seed=2)
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def state_at(bits: np.ndarray, **fields: object) -> LoopState:
    objective = float(PROBLEM.objective(bits)[0])
    start = StartReport(
        objective=objective,
        method="greedy+local_search",
        seconds=0.1,
        greedy_objective=objective,
        annealing_objective=objective,
    )
    listed = [int(b) for b in bits]
    return LoopState(
        qubits=8,
        assets=8,
        start=start,
        start_bits=listed,
        greedy_bits=listed,
        annealing_bits=listed,
        current=listed,
        objective=objective,
        began_at=NOW,
        **fields,
    )


def counts_of(rows: list[np.ndarray], shots: list[int]) -> dict[str, int]:
    # Character i is bit i (bit 0 first), as the providers' counts are read.
    return {"".join(str(int(b)) for b in row): n for row, n in zip(rows, shots, strict=True)}


def test_a_sampled_sub_answer_that_lowers_the_objective_is_taken() -> None:
    bits = np.zeros(30, dtype=np.uint8)
    bits[:5] = 1  # a poor selection, so the sub-problem has room to improve
    indices = (0, 1, 2, 3, 10, 11, 12, 13)
    sub = restrict(PROBLEM, bits, indices)
    best = np.array(brute_force(sub.problem).bits, dtype=np.uint8)
    current = bits[list(indices)]
    assert float(sub.problem.objective(best)[0]) < float(sub.problem.objective(current)[0])
    outcome = PartOutcome(
        part=0,
        subproblem={"indices": list(indices), "budget": sub.problem.budget, "qubits_sent": 8},
        task_id="t-0",
        state="COMPLETED",
        counts=counts_of([best, current, np.ones(8, dtype=np.uint8)], [10, 5, 3]),
        key=ObfuscationKey.identity(8),
    )
    state = state_at(bits)
    closed = close_round(PROBLEM, state, [outcome], last_round=False, stopped=None)
    report = closed.rounds[0]
    assert report.improved_parts == [0] and report.subproblems[0].improved
    assert report.subproblems[0].optimum_in_samples is True
    assert report.subproblems[0].feasible_share == pytest.approx(15 / 18)
    taken = bits.copy()
    taken[list(indices)] = best
    assert report.objective_after_subproblems == pytest.approx(float(PROBLEM.objective(taken)[0]), abs=1e-15)
    assert report.objective_after <= report.objective_after_subproblems
    assert closed.quantum_taken and closed.round == 2
    assert closed.final_step in ("subproblem", "refinement") and closed.final_round == 1
    assert sum(closed.current) == 5
    assert closed.objective == pytest.approx(float(PROBLEM.objective(np.array(closed.current))[0]))


def test_samples_no_better_than_the_current_answer_change_nothing() -> None:
    bits = np.array(PROBLEM.local_search(np.zeros(30, dtype=np.uint8)), dtype=np.uint8)
    indices = tuple(sorted([*np.flatnonzero(bits)[:2].tolist(), *np.flatnonzero(bits == 0)[:6].tolist()]))
    current = bits[list(indices)]
    outcome = PartOutcome(
        part=0,
        subproblem={"indices": list(indices), "budget": int(current.sum()), "qubits_sent": 8},
        task_id="t-0",
        state="COMPLETED",
        counts=counts_of([current], [7]),
        key=ObfuscationKey.identity(8),
    )
    failed = PartOutcome(
        part=1,
        subproblem={"indices": [20, 21], "budget": 1, "qubits_sent": 2},
        task_id="t-1",
        state="FAILED",
        counts=None,
        key=None,
    )
    closed = close_round(PROBLEM, state_at(bits), [outcome, failed], last_round=True, stopped="rounds")
    report = closed.rounds[0]
    assert report.improved_parts == [] and not report.refinement_improved
    assert [s.state for s in report.subproblems] == ["COMPLETED", "FAILED"]
    assert report.subproblems[1].shots is None
    assert closed.current == [int(b) for b in bits] and not closed.quantum_taken
    assert (closed.final_step, closed.round, closed.stopped) == ("classical_start", 1, "rounds")


def test_the_round_budget_stops_at_the_rounds_average_pace() -> None:
    settings = Settings(decomposition_rounds=4, decomposition_seconds=30)
    bits = np.zeros(30, dtype=np.uint8)
    bits[:5] = 1
    first = state_at(bits)
    assert should_stop(first, settings=settings, now=NOW + timedelta(seconds=10)) is None
    # One round took 16 s: a second would end at about 32 s, past the 30 s budget.
    assert should_stop(first, settings=settings, now=NOW + timedelta(seconds=16)) == "time"
    third = first.model_copy(update={"round": 3})
    assert should_stop(third, settings=settings, now=NOW + timedelta(seconds=21)) is None
    last = first.model_copy(update={"round": 4})
    assert should_stop(last, settings=settings, now=NOW + timedelta(seconds=1)) == "rounds"

"""Decomposed jobs, the computing side: selections larger than the device, by sub-problems.

A selection job whose problem (decoys included) needs more qubits than ``QHYBRID_MAX_QUBITS`` or
the device has is solved by large-neighbourhood search (:mod:`qhybrid.portfolio.decomposition`):

```
PREPARING    begin:       μ, Σ -> classical start (greedy + local search, swap-move annealing)
SUBMITTING   build_part:  per sub-problem of the round: restrict -> obfuscate (own key) -> plan -> compile
(QPU)                     one provider task per sub-problem
REMOTE_*     close_round: counts -> true bits under each task's own key -> take what improves -> refine
             ... next round (SUBMITTING) until the rounds or the time run out
FINALIZING   result:      the loop's answer against SCIP (time-limited) and the annealer; the block
                          ``result.decomposition`` says which step produced it
```

Every function here is a pure step over stored data (:class:`LoopState` is kept in
``jobs.decomposition``), so the journey (:mod:`qhybrid.jobs.decomposed`) can redo any step after a
worker died and get the same sub-problems.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from qhybrid.core.config import Settings
from qhybrid.domain.device import DeviceTarget
from qhybrid.domain.request import JobRequest
from qhybrid.domain.result import (
    BaselineAnswer,
    Baselines,
    Decomposition,
    EstimateReport,
    Fallback,
    JobResult,
    Portfolio,
    RoundReport,
    Source,
    StartReport,
    SubproblemReport,
)
from qhybrid.jobs import pipeline
from qhybrid.jobs.sizing import subproblem_assets, subproblem_qubits
from qhybrid.portfolio import baselines
from qhybrid.portfolio.classical import MAX_SELECTIONS, ClassicalSolution, brute_force
from qhybrid.portfolio.decomposition import (
    apply_candidate,
    choose_subproblems,
    classical_start,
    restrict,
)
from qhybrid.portfolio.selection import SelectionProblem
from qhybrid.proxy.obfuscation import ObfuscationKey
from qhybrid.quantum.decode import decode_counts

#: Sub-problems up to this many selections also get their optimum enumerated, to report whether
#: the circuit's samples contained it (C(20, 10) ≈ 1.8e5 is milliseconds).
OPTIMUM_CHECK_LIMIT = 2_000_000

Step = Literal["classical_start", "subproblem", "refinement", "classical_baseline"]


class LoopState(BaseModel):
    """The outer loop's state, stored as ``jobs.decomposition`` and rewritten at every step."""

    model_config = ConfigDict(extra="ignore")

    version: Literal[1] = 1
    qubits: int
    assets: int
    start: StartReport
    start_bits: list[int]
    greedy_bits: list[int]
    annealing_bits: list[int]
    current: list[int]
    objective: float
    round: int = 1
    rounds: list[RoundReport] = []
    sent: list[int] = []
    began_at: datetime
    estimate: EstimateReport | None = None
    final_step: Step = "classical_start"
    final_round: int | None = None
    quantum_taken: bool = False
    stopped: str | None = None

    def bits(self) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """The current answer as a bit vector."""
        return np.array(self.current, dtype=np.uint8)


def problem_of(request: JobRequest, moments: pipeline.Moments) -> SelectionProblem:
    """The selection problem of a decomposed job."""
    formulation = pipeline.formulate(request, moments)
    if not isinstance(formulation, SelectionProblem):  # is_decomposed admits selections only
        raise TypeError("only selections are decomposed")
    return formulation


def begin(
    request: JobRequest,
    moments: pipeline.Moments,
    *,
    seed: int,
    settings: Settings,
    capacity: int | None,
    now: datetime,
) -> LoopState:
    """PREPARING of a decomposed job: the classical start and the loop's first state."""
    problem = problem_of(request, moments)
    qubits = subproblem_qubits(settings, capacity)
    best, greedy = classical_start(problem, seconds=settings.decomposition_start_seconds, seed=seed)
    annealing = best if best.method == "swap_annealing" else None
    annealing_bits = list(best.bits) if annealing is not None else list(greedy.bits)
    annealing_objective = best.objective if annealing is not None else greedy.objective
    return LoopState(
        qubits=qubits,
        assets=subproblem_assets(qubits, request, settings),
        start=StartReport(
            objective=best.objective,
            method=best.method,
            seconds=best.seconds,
            greedy_objective=greedy.objective,
            annealing_objective=annealing_objective,
        ),
        start_bits=list(best.bits),
        greedy_bits=list(greedy.bits),
        annealing_bits=annealing_bits,
        current=list(best.bits),
        objective=best.objective,
        began_at=now,
        estimate=moments.report,
    )


def round_subsets(
    problem: SelectionProblem, state: LoopState, *, seed: int, parts: int
) -> list[tuple[int, ...]]:
    """The round's sub-problems: the same for the same state and seed (a redone step agrees)."""
    if state.assets < 2:
        return []
    rng = np.random.default_rng([seed, state.round])
    return choose_subproblems(problem, state.bits(), size=state.assets, count=parts, rng=rng)


@dataclass(frozen=True)
class PartProgram:
    """One sub-problem ready to send: its program, the key that reads its counts, what it covers."""

    text: str
    key: ObfuscationKey
    subproblem: dict[str, Any]


def task_name(round_number: int, part: int) -> str:
    """The name a sub-problem's key is sealed under (with the job id)."""
    return f"r{round_number}p{part}"


def build_part(
    request: JobRequest,
    problem: SelectionProblem,
    state: LoopState,
    indices: tuple[int, ...],
    target: DeviceTarget,
    *,
    seed: int,
    settings: Settings,
) -> PartProgram:
    """One sub-problem through the single-task pipeline's steps 3–5, under a fresh key of its own.

    The sub-problem is a :class:`SelectionProblem` of its own (restricted budget, the fixed assets'
    pull folded into its returns), so it is obfuscated, planned and compiled exactly as a small job.
    """
    sub = restrict(problem, state.bits(), indices)
    spec = pipeline.qaoa_spec(request, sub.problem, settings)
    level = pipeline.privacy_level(request, settings)
    obfuscated = pipeline.obfuscate(sub.problem, spec, level, pipeline.noise_key_of(settings))
    qaoa = pipeline.plan(obfuscated, spec, seed)
    text, _ = pipeline.compile_program(obfuscated, qaoa, target, seed)
    return PartProgram(
        text=text,
        key=obfuscated.key,
        subproblem={
            "indices": list(indices),
            "budget": sub.problem.budget,
            "qubits_sent": obfuscated.sent.num_qubits,
        },
    )


@dataclass(frozen=True)
class PartOutcome:
    """What the provider answered for one sub-problem."""

    part: int
    subproblem: Mapping[str, Any]
    task_id: str | None
    state: str
    counts: Mapping[str, int] | None
    key: ObfuscationKey | None


def close_round(
    problem: SelectionProblem,
    state: LoopState,
    outcomes: Sequence[PartOutcome],
    *,
    last_round: bool,
    stopped: str | None,
) -> LoopState:
    """Take every sampled sub-answer that lowers the full objective, then refine classically.

    Sub-problems of a round are disjoint, so each one's budget still holds after another was
    applied; each candidate is judged on the FULL problem with the answers taken so far.
    """
    current = state.bits()
    before = float(problem.objective(current)[0])
    objective = before
    tolerance = 1e-12 * max(1.0, abs(before))
    reports: list[SubproblemReport] = []
    improved_parts: list[int] = []
    final_step, final_round, quantum_taken = state.final_step, state.final_round, state.quantum_taken
    for outcome in outcomes:
        indices = tuple(int(i) for i in outcome.subproblem["indices"])
        report: dict[str, Any] = {
            "round": state.round,
            "part": outcome.part,
            "assets": len(indices),
            "budget": int(outcome.subproblem["budget"]),
            "qubits_sent": int(outcome.subproblem["qubits_sent"]),
            "task_id": outcome.task_id,
            "state": outcome.state,
            "improved": False,
        }
        if outcome.counts is not None and outcome.key is not None:
            sub = restrict(problem, current, indices)
            true_counts = pipeline.deobfuscate(outcome.counts, outcome.key)
            bitstrings, weights = decode_counts(true_counts, len(indices))
            feasible = bitstrings.sum(axis=1) == sub.problem.budget
            shots = int(weights.sum())
            report.update(
                shots=shots,
                feasible_share=float(weights[feasible].sum() / shots) if shots else 0.0,
                objective_before=objective,
            )
            if feasible.any():
                values = sub.problem.objective(bitstrings[feasible]) + sub.offset
                k = int(np.argmin(values))
                candidate = bitstrings[feasible][k]
                report["objective_candidate"] = float(values[k])
                report["optimum_in_samples"] = _optimum_among(sub.problem, bitstrings[feasible])
                if values[k] < objective - tolerance:
                    current = apply_candidate(sub, current, candidate)
                    objective = float(problem.objective(current)[0])
                    report["improved"] = True
                    improved_parts.append(outcome.part)
                    final_step, final_round, quantum_taken = "subproblem", state.round, True
        reports.append(SubproblemReport.model_validate(report))
    after_parts = objective
    refined = problem.local_search(current)
    refined_objective = float(problem.objective(refined)[0])
    refinement_improved = refined_objective < objective - tolerance
    if refinement_improved:
        current, objective = refined, refined_objective
        final_step, final_round = "refinement", state.round
    round_report = RoundReport(
        round=state.round,
        objective_before=before,
        objective_after_subproblems=after_parts,
        objective_after=objective,
        improved_parts=improved_parts,
        refinement_improved=refinement_improved,
        subproblems=reports,
    )
    return state.model_copy(
        update={
            "current": [int(b) for b in current],
            "objective": objective,
            "rounds": [*state.rounds, round_report],
            "round": state.round if last_round else state.round + 1,
            "final_step": final_step,
            "final_round": final_round,
            "quantum_taken": quantum_taken,
            "stopped": stopped,
        }
    )


def _optimum_among(problem: SelectionProblem, feasible: np.ndarray[Any, np.dtype[np.uint8]]) -> bool | None:
    if math.comb(problem.num_assets, problem.budget) > min(OPTIMUM_CHECK_LIMIT, MAX_SELECTIONS):
        return None
    best = np.array(brute_force(problem).bits, dtype=np.uint8)
    optimum = float(problem.objective(best)[0])
    values = problem.objective(feasible)
    return bool(np.any(values <= optimum + 1e-12 * max(1.0, abs(optimum))))


def should_stop(state: LoopState, *, settings: Settings, now: datetime) -> str | None:
    """Why no further round should start after the current one (``state.round``), or ``None``.

    ``time``: another round, as long as the rounds so far took on average, would end after
    ``QHYBRID_DECOMPOSITION_SECONDS`` from the start, so the job's wall time stays bounded.
    """
    if state.round >= settings.decomposition_rounds:
        return "rounds"
    elapsed = (now - state.began_at).total_seconds()
    if elapsed * (state.round + 1) / state.round > settings.decomposition_seconds:
        return "time"
    return None


def result(
    request: JobRequest,
    moments: pipeline.Moments,
    state: LoopState,
    *,
    settings: Settings,
    fallback_reason: str | None,
) -> JobResult:
    """FINALIZING of a decomposed job: the loop's answer (or, on fallback, the classical start).

    The answer is never worse than the classical baselines (SCIP within
    ``QHYBRID_DECOMPOSITION_EXACT_SECONDS`` and the swap-move annealer of the start).
    """
    problem = problem_of(request, moments)
    started = time.perf_counter()
    exact = baselines.scip(problem, time_limit=settings.decomposition_exact_seconds)
    annealing = _solution(problem, state.annealing_bits, "swap_annealing", state.start.seconds)
    best = exact if exact.objective <= annealing.objective else annealing
    exact_answer = _answer(problem, exact, time.perf_counter() - started)
    annealing_answer = _answer(problem, annealing, state.start.seconds)
    best_answer = exact_answer if best is exact else annealing_answer
    sent = [r.assets for rnd in state.rounds for r in rnd.subproblems]
    final_step: Step = state.final_step
    final_round = state.final_round
    source: Source
    if fallback_reason is not None:
        bits = state.start_bits
        source, found_by = "classical_fallback", state.start.method
        final_step, final_round = "classical_start", None
    else:
        bits = state.current
        source = "quantum+decomposition" if state.quantum_taken else "classical_baseline"
        found_by = final_step if final_round is None else f"{final_step} (round {final_round})"
        if state.objective > best.objective + 1e-12 * max(1.0, abs(best.objective)):
            bits, source, found_by = list(best.bits), "classical_baseline", best.method
            final_step, final_round = "classical_baseline", None
    answer = _portfolio(problem, bits)
    decomposition = Decomposition(
        assets=problem.num_assets,
        budget=problem.budget,
        subproblem_qubits=state.qubits,
        subproblems_sent=len(sent),
        subproblem_sizes=sent,
        start=state.start,
        rounds=state.rounds,
        final_objective=answer.objective,
        final_step=final_step,
        final_round=final_round,
        stopped="fallback" if fallback_reason is not None else (state.stopped or "rounds"),
    )
    fields: dict[str, Any] = {}
    if fallback_reason is not None:
        fields["fallback"] = Fallback(reason=fallback_reason)
    return JobResult(
        **answer.model_dump(exclude_none=True),
        source=source,
        found_by=found_by,
        classical=best_answer,
        baselines=Baselines(exact=exact_answer, simulated_annealing=annealing_answer),
        gap=pipeline.relative_gap(answer.objective, best.objective),
        gap_abs=answer.objective - best.objective,
        quantum_best=None,
        refined=None,
        quantum=None,
        estimate=moments.report,
        decomposition=decomposition,
        **fields,
    )


def _solution(
    problem: SelectionProblem, bits: Sequence[int], method: str, seconds: float
) -> ClassicalSolution:
    chosen = np.array(bits, dtype=np.uint8)
    return ClassicalSolution(
        bits=tuple(int(b) for b in chosen),
        objective=float(problem.objective(chosen)[0]),
        method=method,
        evaluated=0,
        seconds=seconds,
        optimal=False,
    )


def _portfolio(problem: SelectionProblem, bits: Sequence[int]) -> Portfolio:
    return Portfolio.model_validate(problem.evaluate(np.array(bits, dtype=np.uint8)).as_dict())


def _answer(problem: SelectionProblem, solution: ClassicalSolution, seconds: float) -> BaselineAnswer:
    return BaselineAnswer(
        **_portfolio(problem, solution.bits).model_dump(exclude_none=True),
        method=solution.method,
        optimal=solution.optimal,
        seconds=seconds,
    )

"""What the circuit contributed to a job: its samples beside classical samplers with the same shots.

FINALIZING calls :func:`contribution` after judging the counts. The four rows and the verdict are
defined in :class:`qhybrid.domain.result.Contribution`; the samplers live in
:mod:`qhybrid.portfolio.references` (classical) and :func:`qhybrid.quantum.engine.sample_start_state`
(the circuit's own start, drawn in the sent basis and brought back through the job's key, exactly
as the counts are).
"""

from __future__ import annotations

import numpy as np

from qhybrid.domain.result import AnnealingReport, Contribution, Prepared, SamplerReport
from qhybrid.portfolio.formulation import Formulation, unique_rows
from qhybrid.portfolio.references import (
    annealing_budget,
    better_of,
    circuit_helped,
    conditioned_rounding,
    sample_stats,
    swap_annealing,
)
from qhybrid.proxy.obfuscation import ObfuscationKey
from qhybrid.quantum.engine import sample_start_state

#: The annealer's wall time is the circuit's sampling time, but never above this, which bounds
#: what the reference adds to FINALIZING. Its floor is not a time but a complete schedule of
#: :data:`~qhybrid.portfolio.references.MIN_SWEEPS` sweeps, the same on any machine (a task the
#: provider reports as instantaneous still gets a credible annealer).
ANNEALING_CAP_SECONDS = 2.0


def _distinct(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct outcomes (in ``np.unique(axis=0)``'s order) and their shots."""
    unique, _, counts = unique_rows(bits)
    return unique, counts


def contribution(
    formulation: Formulation,
    circuit_bits: np.ndarray,
    circuit_counts: np.ndarray,
    *,
    prepared: Prepared,
    key: ObfuscationKey,
    optimum: np.ndarray | None,
    seed: int,
    sampling_seconds: float | None,
    time_source: str,
) -> Contribution:
    """The circuit's samples, its start state, conditioned rounding and swap annealing, judged alike.

    Args:
        formulation: The true problem.
        circuit_bits: The circuit's distinct outcomes over the true variables, ``(m, n)``.
        circuit_counts: Shots per outcome.
        prepared: What PREPARING recorded (the plan's mixer, start state and sent width).
        key: The job's obfuscation key (the start state is drawn in the sent basis).
        optimum: The proven optimum's bits, or ``None``.
        seed: The job's seed (every reference is reproducible).
        sampling_seconds: The circuit's sampling time (``None`` if unknown).
        time_source: Where ``sampling_seconds`` comes from (``provider_usage`` or ``task_wall_time``).
    """
    shots = int(np.asarray(circuit_counts).sum())
    rng = np.random.default_rng([seed, 0x51A7])
    circuit = sample_stats(formulation, circuit_bits, circuit_counts, optimum)
    qaoa = prepared.qaoa
    sent = sample_start_state(
        qaoa.spec.mixer,
        prepared.privacy.qubits_sent,
        hamming_weight=qaoa.hamming_weight,
        warm_start=qaoa.warm_start,
        shots=shots,
        rng=rng,
    )
    start_state = sample_stats(formulation, *_distinct(key.true_bits(sent)), optimum)
    rounding = sample_stats(formulation, *_distinct(conditioned_rounding(formulation, shots, rng)), optimum)
    budget = annealing_budget(sampling_seconds, floor=0.0, cap=ANNEALING_CAP_SECONDS)
    # With the proven optimum the annealer may stop once every chain sits on it: no longer run
    # could report a better row.
    annealed = swap_annealing(formulation, shots, budget, rng, optimum=optimum)
    annealing = AnnealingReport(
        **sample_stats(formulation, *_distinct(annealed.bits), optimum).model_dump(),
        seconds=annealed.seconds,
        budget_seconds=budget,
        time_source="cap" if sampling_seconds is None else time_source,
        chains=annealed.chains,
        steps=annealed.steps,
        stopped=annealed.stopped,
    )
    helped = circuit_helped(circuit, start_state, rounding, annealing)
    return Contribution(
        circuit=circuit,
        start_state=start_state,
        rounding=rounding,
        annealing=annealing,
        circuit_helped=helped,
        verdict=verdict(circuit, start_state, rounding, annealing, helped),
    )


def _describe(report: SamplerReport) -> str:
    if report.best_objective is None:
        return "no feasible shot"
    share = "" if report.optimum_share is None else f", {report.optimum_share:.1%} of shots on the optimum"
    return f"best {report.best_objective:.6g}{share}"


def verdict(
    circuit: SamplerReport,
    start_state: SamplerReport,
    rounding: SamplerReport,
    annealing: SamplerReport,
    helped: bool,
) -> str:
    """One sentence: did the circuit beat its start and the better classical sampler, with the figures."""
    classical = better_of(rounding, annealing)
    name = "rounding" if classical is rounding else "annealing"
    if helped:
        head = "the circuit helped: it beat its own start state and the better classical sampler"
    else:
        head = "the circuit did not beat both references"
    return (
        f"{head} (circuit {_describe(circuit)}; start state {_describe(start_state)}; "
        f"{name} {_describe(classical)})"
    )

"""What a completed job answers: ``JobResult`` and its parts, one typed contract.

The worker builds a :class:`JobResult`, stores it as JSON, and the API validates it back into the
same model, so ``/openapi.json`` documents every field a client reads. What PREPARING records about
the circuit (:class:`Prepared`) is typed here too, because the result repeats it.

Every objective is the TRUE business objective ``q·wᵀΣw − μᵀw`` (lower is better), evaluated in
the trusted zone on the real μ and Σ, never on anything that was obfuscated or penalised.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from qhybrid.domain.privacy import PrivacyLevel

#: Which step produced the returned portfolio:
#: ``quantum``: a measured sample itself; ``quantum+refinement``: classical repair or local search
#: starting from the samples; ``quantum+decomposition``: a decomposed job whose answer includes at
#: least one sub-problem answer the circuit sampled (``decomposition.final_step`` says which step
#: came last); ``classical_baseline``: the samples lost to the classical baseline (for a decomposed
#: job: no sub-problem improved the classical start); ``classical_fallback``: the QPU could not
#: answer (``fallback.reason`` says why).
Source = Literal[
    "quantum", "quantum+refinement", "quantum+decomposition", "classical_baseline", "classical_fallback"
]

#: Sources that count as a quantum answer (the circuit's samples were the starting point).
QUANTUM_SOURCES: frozenset[str] = frozenset({"quantum", "quantum+refinement", "quantum+decomposition"})

Formulation = Literal["selection", "weights"]


class _Part(BaseModel):
    # Stored results are read back as they were written: a field added later must not make an
    # older document unreadable, and an unknown key from a newer writer is ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Portfolio(_Part):
    """A portfolio judged on the true data."""

    selected: list[str] = Field(description="Names of the assets held, in the request's order.")
    bits: list[int] = Field(description="The binary decision variables (one per qubit).")
    expected_return: float = Field(description="wᵀμ.")
    variance: float = Field(description="wᵀΣw.")
    objective: float = Field(description="q·wᵀΣw − μᵀw; lower is better.")
    lots: dict[str, int] | None = Field(default=None, description="weights: lots held per asset.")
    weights: dict[str, float] | None = Field(default=None, description="weights: share of each asset.")
    feasible: bool | None = Field(default=None, description="weights: whether the lots meet every bound.")


class BaselineAnswer(Portfolio):
    """A classical solver's portfolio."""

    method: str = Field(description="brute_force, lot_enumeration, scip or simulated_annealing.")
    optimal: bool = Field(description="Proven optimal.")
    seconds: float = Field(description="Solver wall time.")


class QuantumBest(Portfolio):
    """The best portfolio among the circuit's own samples, before any classical refinement."""

    source: Literal["sample", "repaired"] = Field(
        description="sample: a measured feasible sample; repaired: no sample was feasible, the best "
        "repaired one."
    )
    gap: float = Field(description="Relative gap to the classical baseline.")


class Refined(Portfolio):
    """The best portfolio after classical repair and local search from the samples."""

    found_by: Literal["sample", "repair", "local_search"] = Field(description="The step that found it.")
    gap: float = Field(description="Relative gap to the classical baseline.")


class Baselines(_Part):
    """The classical answers every job is compared with."""

    exact: BaselineAnswer = Field(description="Exact (or best proven within the time limit).")
    simulated_annealing: BaselineAnswer


class Fallback(_Part):
    """Why the QPU did not answer."""

    reason: str


class PrivacyReport(_Part):
    """What the QPU saw."""

    level: PrivacyLevel
    qubits_sent: int = Field(description="Qubits of the sent (obfuscated) problem, decoys included.")


class Link(_Part):
    """How the trusted zone reached the provider."""

    model_config = ConfigDict(extra="allow", frozen=True)

    transport: str
    tls_version: str | None = None
    tls_group: str | None = None
    tls_cipher: str | None = None
    post_quantum: bool | None = Field(default=None, description="A hybrid post-quantum key exchange.")


class QaoaSpecReport(_Part):
    """The QAOA variant that was run."""

    mixer: str
    reps: int
    objective: str
    cvar_alpha: float
    init: str
    maxiter: int
    warm_epsilon: float


class AnglesReport(_Part):
    """The trained angles."""

    gammas: list[float]
    betas: list[float]
    expectation: float
    evaluations: int


class QaoaReport(_Part):
    """How the circuit was planned on the local simulator, for the sent problem."""

    spec: QaoaSpecReport
    angles: AnglesReport
    hamming_weight: int | None
    warm_start: list[float] | None
    simulated: dict[str, float] = Field(description="Facts of the planning simulation.")


class CircuitReport(_Part):
    """The transpiled circuit."""

    logical_qubits: int
    physical_qubits: int
    depth: int
    two_qubit_gates: int
    total_gates: int
    layout: list[int] | None
    estimated_success: float | None = Field(description="Π(1 − error) over the circuit's gates.")
    readout_errors: list[float] | None = Field(
        default=None, description="Published readout error of the qubit measured into each classical bit."
    )


class EstimateReport(_Part):
    """How μ and Σ were estimated from prices."""

    estimator: str
    shrinkage: float | None
    observations: int
    returns: str
    assets: int


class Prepared(_Part):
    """What PREPARING records: the problem that was sent and the circuit that carries it."""

    formulation: Formulation
    qubits: int = Field(description="Binary variables of the true problem.")
    privacy: PrivacyReport
    penalty: float = Field(description="Weight of the constraint penalty in the QUBO.")
    seed: int
    device: str
    qaoa: QaoaReport
    circuit: CircuitReport
    estimate: EstimateReport | None
    seconds: dict[str, float] = Field(default_factory=dict, description="Time spent planning, transpiling.")


class SampleReport(_Part):
    """What the samples gave, judged on the true problem."""

    quantum_best_bits: list[int]
    quantum_best_objective: float
    quantum_source: Literal["sample", "repaired"]
    refined_bits: list[int]
    refined_objective: float
    found_by: Literal["sample", "repair", "local_search"]
    shots: int
    distinct: int = Field(description="Distinct outcomes.")
    feasible_share: float
    quantum_best_share: float
    optimum_share: float | None
    optimum_in_samples: bool | None


class TopSample(_Part):
    """One of the most frequent measured outcomes, de-obfuscated and judged on the true problem.

    Built in the trusted zone after the counts came back; the provider only ever saw the
    obfuscated bit strings.
    """

    selected: list[str] = Field(description="Assets held by this outcome.")
    bits: list[int]
    lots: dict[str, int] | None = Field(default=None, description="weights: lots per asset.")
    count: int = Field(description="Shots that measured this outcome.")
    objective: float = Field(description="True objective; lower is better.")
    feasible: bool = Field(description="Whether it meets the budget (or every lot bound).")
    optimum: bool = Field(description="Whether it is the classical baseline's best portfolio.")


class SamplerReport(_Part):
    """What one sampler's shots achieved on the true problem (same shots for every sampler)."""

    shots: int = Field(description="Shots (samples) drawn.")
    best_objective: float | None = Field(
        description="Best true objective among the feasible shots; null when none is feasible."
    )
    best_share: float | None = Field(description="Share of the shots on that best value.")
    optimum_share: float | None = Field(
        description="Share of the shots on the proven optimum; null when no optimum is proven."
    )
    mean_objective: float | None = Field(description="Mean true objective over the feasible shots.")
    feasible_share: float = Field(description="Share of the shots that meet the budget.")


class AnnealingReport(SamplerReport):
    """The swap-move annealer's shots and the wall time it was given."""

    seconds: float = Field(description="Wall time the annealer ran.")
    budget_seconds: float = Field(description="Wall time it was given (see time_source).")
    time_source: Literal["provider_usage", "task_wall_time", "cap"] = Field(
        description="What the budget equals: the provider's reported usage seconds, the task's wall "
        "time from submission to completion as the worker saw it, or the cap when neither is known; "
        "always clamped to the deployment's floor and cap."
    )
    chains: int
    steps: int
    stopped: Literal["wall_time", "min_sweeps", "optimum"] = Field(
        default="wall_time",
        description="Why the annealer stopped: its wall time was used up; the wall time held no more "
        "than its floor, a complete schedule of a fixed number of sweeps; or every chain ended on the "
        "proven optimum after that floor, so no longer run could report a better row.",
    )


class Contribution(_Part):
    """What the circuit added, judged against classical samplers with the same number of shots.

    All four rows are judged on the TRUE problem (after de-obfuscation, true μ and Σ):
    ``circuit`` the counts that came back; ``start_state`` the circuit's own starting state
    (``p = 0``, no cost or mixer layer) sampled classically in the trusted zone, through the same
    obfuscation key; ``rounding`` the continuous relaxation rounded at random conditioned on the
    budget (weights not clipped); ``annealing`` a budget-preserving swap-move annealer, one chain per
    shot, given the wall time of the circuit's sampling step.

    ``circuit_helped`` is true only when the circuit beat its start state AND the better of
    rounding and annealing. "A beats B": A's best feasible objective is lower by more than a
    relative 1e-9, or equal within it with the optimum proven and a strictly larger share of A's
    shots on it. A sampler with no feasible shot beats nothing.
    """

    circuit: SamplerReport
    start_state: SamplerReport
    rounding: SamplerReport
    annealing: AnnealingReport
    circuit_helped: bool
    verdict: str = Field(description="The comparison in one sentence.")


class ReadoutReport(_Part):
    """Readout-error mitigation of the counts (in the trusted zone)."""

    applied: bool = Field(description="Whether the counts were corrected.")
    reason: str = Field(description="Why (or why not).")
    method: str | None = Field(default=None, description="How: e.g. tensored per-qubit inverse.")
    mean_error: float | None = Field(default=None, description="Mean readout error of the measured qubits.")


class QuantumRun(_Part):
    """The QPU task and the circuit behind a quantum answer."""

    backend: str
    task_id: str | None
    attempt: int
    shots: int
    link: Link | None
    formulation: Formulation | None
    qubits: int | None
    privacy: PrivacyReport | None
    penalty: float | None
    seed: int | None
    device: str | None
    qaoa: QaoaReport | None
    circuit: CircuitReport | None
    samples: SampleReport
    best_share: float = Field(description="Share of shots on the circuit's best sample.")
    optimum_share: float | None = Field(description="Share of shots on the proven optimum, when known.")
    optimum_in_samples: bool | None
    top_samples: list[TopSample] | None = Field(
        default=None, description="The most frequent outcomes, most frequent first (at most 12)."
    )

    contribution: Contribution | None = Field(
        default=None, description="The circuit's samples against classical samplers with the same shots."
    )
    readout: ReadoutReport | None = Field(default=None, description="Readout-error mitigation of the counts.")


class SubproblemReport(_Part):
    """One sub-problem of a decomposed job: a provider task of its own, under its own key."""

    round: int
    part: int = Field(description="Index of the sub-problem within its round.")
    assets: int = Field(description="Free assets (binary variables) of the sub-problem.")
    budget: int = Field(description="Assets the sub-problem must hold (those the current answer held).")
    qubits_sent: int = Field(description="Qubits of the sent (obfuscated) sub-problem, decoys included.")
    task_id: str | None
    state: str = Field(description="The provider task's final state.")
    shots: int | None = None
    feasible_share: float | None = Field(default=None, description="Share of shots holding the budget.")
    objective_before: float | None = Field(
        default=None, description="Full problem's objective before this sub-problem's answer was tried."
    )
    objective_candidate: float | None = Field(
        default=None, description="Full objective with the best sampled sub-selection put in."
    )
    improved: bool = Field(description="The sampled answer lowered the full objective and was taken.")
    optimum_in_samples: bool | None = Field(
        default=None, description="The sub-problem's own optimum (enumerated) was among the samples."
    )


class RoundReport(_Part):
    """One round of the decomposition's outer loop."""

    round: int
    objective_before: float
    objective_after_subproblems: float = Field(description="After the sampled answers that improved.")
    objective_after: float = Field(description="After the classical 1-swap refinement that ends the round.")
    improved_parts: list[int] = Field(description="Sub-problems whose sampled answer was taken.")
    refinement_improved: bool
    subproblems: list[SubproblemReport]


class StartReport(_Part):
    """The classical start of a decomposed job."""

    objective: float
    method: str = Field(description="greedy+local_search or swap_annealing (the better one).")
    seconds: float
    greedy_objective: float
    annealing_objective: float


class Decomposition(_Part):
    """How a problem larger than the device was solved: a classical outer loop over sub-problems.

    Large-neighbourhood search: a classical start, then rounds; each round sends a few disjoint
    sub-problems (held and not-held assets mixed, the rest fixed) to the QPU, each obfuscated under
    its own key, takes every sampled answer that lowers the full objective, and ends with a
    classical 1-swap refinement. ``final_step`` says plainly which step produced the answer.
    """

    method: Literal["large_neighbourhood_search"] = "large_neighbourhood_search"
    assets: int
    budget: int
    subproblem_qubits: int = Field(description="Most qubits a sub-problem may use (decoys included).")
    subproblems_sent: int
    subproblem_sizes: list[int] = Field(description="Free assets of every sub-problem sent, in order.")
    start: StartReport
    rounds: list[RoundReport]
    final_objective: float
    final_step: Literal["classical_start", "subproblem", "refinement", "classical_baseline"] = Field(
        description="The step whose portfolio is returned: the classical start (nothing improved it), "
        "a sampled sub-problem answer, the classical refinement of a round, or the classical baseline "
        "(SCIP) when it beat the loop."
    )
    final_round: int | None = Field(description="The round of final_step, if any.")
    stopped: str = Field(description="Why the loop ended: rounds, time, no_subproblems, fallback.")


class JobResult(Portfolio):
    """The answer of a completed job: the returned portfolio and how it compares.

    The returned portfolio is never worse than the classical baseline; ``source`` says which step
    produced it, and a classical fallback is marked as such, never as a quantum answer.
    """

    source: Source
    found_by: str = Field(description="The step or solver that found the returned portfolio.")
    classical: BaselineAnswer = Field(description="The classical baseline (the better of baselines).")
    baselines: Baselines
    gap: float = Field(description="(objective − classical.objective) / |classical.objective|.")
    gap_abs: float = Field(description="objective − classical.objective.")
    quantum_best: QuantumBest | None
    refined: Refined | None
    quantum: QuantumRun | None
    estimate: EstimateReport | None
    fallback: Fallback | None = None
    decomposition: Decomposition | None = Field(
        default=None,
        description="Jobs larger than the device: the sub-problems and what each round improved.",
    )

    @property
    def is_quantum(self) -> bool:
        """Whether the circuit's samples were the starting point of the answer."""
        return self.source in QUANTUM_SOURCES


class PricingReport(_Part):
    """The published price list an estimate used."""

    per_task: float
    per_shot: float
    per_second: float
    source: str


class Cost(_Part):
    """What the QPU task costs: estimated at submission, actual once the task ran."""

    currency: str = "USD"
    estimated: float | None = Field(default=None, description="From the provider's published price list.")
    estimated_seconds: float | None = Field(default=None, description="QPU seconds assumed by the estimate.")
    pricing: PricingReport | None = None
    actual: float | None = Field(default=None, description="From the shots taken and seconds billed.")
    actual_seconds: float | None = None
    note: str | None = Field(default=None, description="Why no estimate could be made.")

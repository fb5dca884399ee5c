"""The hybrid pipeline, step by step: what the journey's PREPARING and FINALIZING compute.

```
PREPARING   estimate -> formulate -> obfuscate -> plan -> compile      (the program crosses the boundary)
FINALIZING  mitigate -> deobfuscate -> judge -> refine -> compare     (after the QPU answered)
fallback    compare, with no samples                                   (the QPU could not answer)
```

Each step is a function with typed input and output, listed in :data:`STEPS` in that order;
:func:`prepare`, :func:`finish` and :func:`fall_back` chain them. The state handling (leases,
retries, the provider) lives in :mod:`qhybrid.jobs.journey`; nothing here touches the database.

μ and Σ are estimated once, in PREPARING, and kept with the job (:class:`Moments`), so FINALIZING
judges the samples on exactly the numbers the circuit was built from.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qhybrid.core.budget import check_budget, time_budget
from qhybrid.core.config import Settings
from qhybrid.domain.device import DeviceTarget
from qhybrid.domain.privacy import PrivacyLevel
from qhybrid.domain.program import Program
from qhybrid.domain.qubo import FloatArray, Ising
from qhybrid.domain.request import JobRequest
from qhybrid.domain.result import (
    BaselineAnswer,
    Baselines,
    EstimateReport,
    Fallback,
    JobResult,
    Portfolio,
    Prepared,
    QuantumBest,
    QuantumRun,
    ReadoutReport,
    Refined,
    SampleReport,
    Source,
    TopSample,
)
from qhybrid.jobs import attribution
from qhybrid.portfolio import baselines
from qhybrid.portfolio.classical import ClassicalSolution
from qhybrid.portfolio.data import estimate as estimate_moments
from qhybrid.portfolio.formulation import Formulation
from qhybrid.portfolio.lots import LotsProblem
from qhybrid.portfolio.postprocess import Judged, PostProcessed
from qhybrid.portfolio.postprocess import judge as judge_samples
from qhybrid.portfolio.postprocess import refine as refine_samples
from qhybrid.portfolio.selection import SelectionProblem
from qhybrid.proxy.keyed import NoiseKey, load_noise_key
from qhybrid.proxy.obfuscation import ObfuscatedProblem, ObfuscationKey, deobfuscate_counts
from qhybrid.proxy.obfuscation import obfuscate as obfuscate_problem
from qhybrid.quantum.circuit import CircuitMetrics, transpile_for
from qhybrid.quantum.decode import decode_counts
from qhybrid.quantum.engine import QaoaPlan, build_circuit, plan_qaoa
from qhybrid.quantum.qasm import to_openqasm3
from qhybrid.quantum.readout import mean_error, mitigate_counts
from qhybrid.quantum.spec import WARM_MIXERS, XY_MIXERS, QaoaSpec

#: Objectives closer than this (relative) count as equal when comparing quantum and classical.
TIE_TOLERANCE = 1e-12


# ------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Moments:
    """μ and Σ of the request's assets, as estimated (or given), with how they were obtained.

    Attributes:
        names: Asset names, in the request's order.
        expected_returns: μ, shape ``(n,)``.
        covariance: Σ, shape ``(n, n)``.
        report: How μ and Σ were estimated from prices; ``None`` when the request gave them.
    """

    names: tuple[str, ...]
    expected_returns: FloatArray
    covariance: FloatArray
    report: EstimateReport | None

    def to_bytes(self) -> bytes:
        """μ and Σ as a numpy archive (exact float64, no pickle), to be kept with the job."""
        buffer = io.BytesIO()
        np.savez(buffer, mu=self.expected_returns, sigma=self.covariance)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, names: tuple[str, ...], report: EstimateReport | None) -> Moments:
        """The moments :meth:`to_bytes` stored, for the assets ``names``."""
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            mu, sigma = np.array(archive["mu"]), np.array(archive["sigma"])
        if mu.shape != (len(names),) or sigma.shape != (len(names), len(names)):
            raise ValueError(f"stored moments have shapes {mu.shape}, {sigma.shape} for {len(names)} assets")
        return cls(names, mu, sigma, report)


def job_seed(request: JobRequest, job_id: str) -> int:
    """The seed of a job's randomised steps: the request's, or one derived from the job id."""
    seed = request.options.seed
    return seed if seed is not None else uuid.UUID(job_id).int % (2**31)


def default_reps(num_qubits: int) -> int:
    """Layers when neither the request nor the deployment sets them: p = 3 to 14 qubits, 2 to 17, then 1.

    Each layer costs a full pass over the 2^n state in every optimizer step; measured on the
    quality benchmark, p = 1 already reaches an approximation ratio of 0.90–0.93 with the warm
    start at n = 16–20, and keeps a 20-asset job within about 10 s end to end.
    """
    if num_qubits <= 14:
        return 3
    return 2 if num_qubits <= 17 else 1


def qaoa_spec(request: JobRequest, formulation: Formulation, settings: Settings) -> QaoaSpec:
    """The QAOA variant a request asks for; ``auto`` picks the best measured for the formulation."""
    options = request.options
    # Measured on real data (docs/benchmarks.md, quality table): for a selection the XY mixer from
    # the budget-conditioned relaxation puts the most probability on the optimum; lots have a
    # weighted budget that no XY mixer keeps, so they take the warm-started X mixer.
    mixer = options.mixer
    if mixer == "auto":
        mixer = "xy-warm" if isinstance(formulation, SelectionProblem) else "x-warm"
    return QaoaSpec(
        mixer=mixer,
        reps=options.reps or settings.default_reps or default_reps(formulation.num_variables),
        objective=options.objective,
        cvar_alpha=options.cvar_alpha,
        init=options.init,
        maxiter=options.maxiter,
    )


def privacy_level(request: JobRequest, settings: Settings) -> PrivacyLevel:
    """The request's obfuscation level; the deployment's default for requests stored without one."""
    return request.privacy or settings.privacy_default


# ------------------------------------------------------------------------------ PREPARING


def estimate(request: JobRequest) -> Moments:
    """Step 1: μ and Σ, from the request's moments or estimated from its prices."""
    if request.prices is not None:
        fit = estimate_moments(
            np.array(request.prices.values, dtype=np.float64),
            estimator=request.estimator,
            returns=request.returns,
        )
        return Moments(
            tuple(request.prices.assets),
            fit.expected_returns,
            fit.covariance,
            EstimateReport.model_validate(fit.as_dict()),
        )
    # JobRequest's rule: without prices, assets and covariance are both given.
    assert request.assets is not None
    assert request.covariance is not None
    return Moments(
        tuple(asset.name for asset in request.assets),
        np.array([asset.expected_return for asset in request.assets], dtype=np.float64),
        np.array(request.covariance, dtype=np.float64),
        None,
    )


def formulate(request: JobRequest, moments: Moments) -> Formulation:
    """Step 2: the business problem (selection, or integer lots) on the estimated moments."""
    mu, sigma, names = moments.expected_returns, moments.covariance, moments.names
    if request.formulation == "selection":
        return SelectionProblem(names, mu, sigma, request.risk_aversion, request.budget)
    low, high = zip(*(request.lot_range(name) for name in names), strict=True)
    return LotsProblem(
        names,
        mu,
        sigma,
        request.risk_aversion,
        request.budget,
        np.array(low, dtype=np.int64),
        np.array(high, dtype=np.int64),
    )


@dataclass(frozen=True)
class Obfuscated:
    """What step 3 gives: the problem to send, the key that inverts it, and the QUBO's penalty.

    ``true`` is the real (penalised) problem the sent one hides: the angle search may aim at it
    through the key (:func:`plan`). It stays in the trusted zone like the key.
    """

    sent: ObfuscatedProblem
    key: ObfuscationKey
    penalty: float
    true: Ising | None = None

    def true_energy(self, sent_bits: NDArray[np.uint8]) -> FloatArray:
        """The real problem's energy of sent outcomes (decoys dropped, flips and permutation undone)."""
        assert self.true is not None
        return self.true.energy_of_bits(self.key.true_bits(sent_bits))


def variable_labels(formulation: Formulation) -> tuple[str, ...]:
    """Each variable's identity, whatever its position: the asset's name, or its name and lot bit.

    The keyed part of the noise follows these (:mod:`qhybrid.proxy.keyed`), so that the same
    asset (pair) gets the same draw in every job of the client.
    """
    if isinstance(formulation, LotsProblem):
        return tuple(
            f"{name}/lot-bit-{bit}x{int(coefficient)}"
            for name, encoding in zip(formulation.names, formulation.encoding, strict=True)
            for bit, coefficient in enumerate(encoding.coefficients)
        )
    return tuple(formulation.names)


def noise_key_of(settings: Settings) -> NoiseKey:
    """The deployment's noise key: ``QHYBRID_PRIVACY_NOISE_KEY`` or ``<data_dir>/proxy/noise-key``."""
    value = settings.privacy_noise_key.get_secret_value() if settings.privacy_noise_key else None
    return load_noise_key(value, settings.noise_key_path)


def obfuscate(
    formulation: Formulation, spec: QaoaSpec, level: PrivacyLevel, noise_key: NoiseKey | None = None
) -> Obfuscated:
    """Step 3: QUBO -> Ising (no labels) -> permuted, gauged, rescaled, decoyed, noised under a fresh key.

    With the deployment's ``noise_key`` most of the noise is keyed to the variables' identities,
    the same in every job (``docs/security.md``: leakage over many jobs).
    """
    qubo, penalty = formulation.to_qubo()
    ising = qubo.to_ising()
    sent, key = obfuscate_problem(
        ising,
        level=level,
        mixer=spec.mixer,
        hamming_weight=formulation.hamming_weight if spec.mixer in XY_MIXERS else None,
        warm_start=formulation.relaxation() if spec.mixer in WARM_MIXERS else None,
        labels=variable_labels(formulation),
        noise_key=noise_key,
    )
    return Obfuscated(sent, key, penalty, ising)


def plan(obfuscated: Obfuscated, spec: QaoaSpec, seed: int) -> QaoaPlan:
    """Step 4: QAOA angles, found on the local simulator for the problem that is sent."""
    sent = obfuscated.sent
    # xy-warm starts at the rounding of the relaxation and its layers can only refine it: trained
    # on the noised problem they drift to the noise's optimum (P(optimum) 0.99 -> 0.08 on a real
    # 6-asset instance at privacy standard), so they aim at the true problem behind the key. The
    # other variants keep the angles of the sent problem, as measured in docs/benchmarks.md.
    target = obfuscated.true_energy if spec.mixer == "xy-warm" and obfuscated.true is not None else None
    return plan_qaoa(
        sent.ising,
        spec,
        seed=seed,
        hamming_weight=sent.hamming_weight,
        warm_start=sent.warm_start,
        target=target,
    )


def compile_program(
    obfuscated: Obfuscated, qaoa: QaoaPlan, target: DeviceTarget, seed: int
) -> tuple[str, CircuitMetrics]:
    """Step 5: the circuit, transpiled for the device, as restricted OpenQASM 3 text."""
    transpiled, metrics = transpile_for(build_circuit(obfuscated.sent.ising, qaoa), target, seed=seed)
    return to_openqasm3(transpiled), metrics


@dataclass(frozen=True)
class Preparation:
    """What PREPARING hands the journey: the program, the key to seal, the moments to keep."""

    program: Program
    key: ObfuscationKey
    moments: Moments


def prepare(request: JobRequest, target: DeviceTarget, *, seed: int, settings: Settings) -> Preparation:
    """Steps 1–5: business problem -> program for the device, under a fresh obfuscation key.

    Raises:
        CircuitTooLargeError: If the device has too few qubits.
        TimeBudgetExceededError: If it takes longer than ``QHYBRID_PREPARE_SECONDS``.
    """
    started = time.perf_counter()
    with time_budget(settings.prepare_seconds, "PREPARING (QHYBRID_PREPARE_SECONDS)"):
        moments = estimate(request)
        check_budget("estimate")
        formulation = formulate(request, moments)
        spec = qaoa_spec(request, formulation, settings)
        level = privacy_level(request, settings)
        check_budget("formulate")
        obfuscated = obfuscate(formulation, spec, level, noise_key_of(settings))
        check_budget("obfuscate")
        # The angle search checks the budget at every evaluation of its objective.
        qaoa = plan(obfuscated, spec, seed)
        planned = time.perf_counter()
        check_budget("plan")
        text, metrics = compile_program(obfuscated, qaoa, target, seed)
        check_budget("compile")
    prepared = Prepared.model_validate(
        {
            "formulation": request.formulation,
            "qubits": formulation.num_variables,
            "privacy": {"level": level, "qubits_sent": obfuscated.sent.num_qubits},
            "penalty": obfuscated.penalty,
            "seed": seed,
            "device": target.name,
            "qaoa": qaoa.as_dict(),
            "circuit": metrics.as_dict(),
            "estimate": None if moments.report is None else moments.report.model_dump(),
            "seconds": {"plan": planned - started, "transpile": time.perf_counter() - planned},
        }
    )
    return Preparation(Program(text=text, prepared=prepared), obfuscated.key, moments)


# ------------------------------------------------------------------------------ FINALIZING


def mitigate(
    request: JobRequest, prepared: Prepared | None, counts: Mapping[str, int]
) -> tuple[dict[str, int], ReadoutReport]:
    """Step 6a: the counts corrected for the device's published readout errors, in the sent basis.

    The tensored per-qubit inverse on the observed outcomes (:mod:`qhybrid.quantum.readout`),
    applied when the device published a readout error for every measured qubit and
    ``options.readout_mitigation`` is on; otherwise the counts are returned as they came.
    """
    errors = None if prepared is None else prepared.circuit.readout_errors
    if not request.options.readout_mitigation:
        return dict(counts), ReadoutReport(applied=False, reason="turned off by options.readout_mitigation")
    if not errors:
        return dict(counts), ReadoutReport(applied=False, reason="the device publishes no readout errors")
    return dict(mitigate_counts(counts, errors)), ReadoutReport(
        applied=True,
        reason="the device publishes per-qubit readout errors",
        method="tensored per-qubit inverse on the observed outcomes",
        mean_error=mean_error(errors),
    )


def deobfuscate(counts: Mapping[str, int], key: ObfuscationKey) -> dict[str, int]:
    """Step 6: counts of the sent register back to the true variables.

    Decoys are dropped, the gauge and the permutation undone, before anything is judged.
    """
    return deobfuscate_counts(dict(counts), key)


def judge(formulation: Formulation, counts: Mapping[str, int]) -> Judged:
    """Step 7: every sample evaluated on the TRUE problem; the circuit's own best."""
    bitstrings, weights = decode_counts(counts, formulation.num_variables)
    return judge_samples(formulation, bitstrings, weights)


def refine(formulation: Formulation, judged: Judged, optimum: ClassicalSolution) -> PostProcessed:
    """Step 8: classical repair and local search from the most promising samples."""
    return refine_samples(formulation, judged, optimum_bits=optimum.bits if optimum.optimal else None)


@dataclass(frozen=True)
class Classical:
    """The classical baselines of a job: the better one and both."""

    best: ClassicalSolution
    exact: BaselineAnswer
    annealing: BaselineAnswer

    @property
    def best_answer(self) -> BaselineAnswer:
        """The better baseline, as reported."""
        return self.annealing if self.best.method == "simulated_annealing" else self.exact


def solve_classically(formulation: Formulation, seed: int, settings: Settings) -> Classical:
    """The exact (or best proven) answer and simulated annealing; the better of the two is the baseline."""
    best = baselines.exact(formulation, time_limit=settings.exact_time_limit_seconds)
    annealed = baselines.simulated_annealing(formulation, num_reads=200, seed=seed)
    exact_answer, annealed_answer = _answer(formulation, best), _answer(formulation, annealed)
    if annealed.objective < best.objective - TIE_TOLERANCE * max(1.0, abs(best.objective)):
        best = annealed  # SCIP stopped at its time limit and annealing did better
    return Classical(best, exact_answer, annealed_answer)


def compare(
    formulation: Formulation,
    processed: PostProcessed,
    classical: Classical,
    *,
    refine_enabled: bool,
    run: Callable[[SampleReport, PostProcessed], QuantumRun],
    report: EstimateReport | None,
) -> JobResult:
    """Step 9: the answer, never worse than the classical baseline, and which step produced it."""
    best = classical.best
    bits = processed.refined_bits if refine_enabled else processed.quantum_best_bits
    objective = processed.refined_objective if refine_enabled else processed.quantum_best_objective
    found_by = processed.found_by if refine_enabled else processed.quantum_source
    source: Source = "quantum" if found_by == "sample" else "quantum+refinement"
    if objective > best.objective + TIE_TOLERANCE * max(1.0, abs(best.objective)):
        # Never answer worse than the classical fallback would have; say so.
        bits, found_by, source = best.bits, best.method, "classical_baseline"
    answer = _portfolio(formulation, bits)
    samples = SampleReport.model_validate(processed.as_dict())
    return JobResult(
        **answer.model_dump(exclude_none=True),
        source=source,
        found_by=found_by,
        classical=classical.best_answer,
        baselines=Baselines(exact=classical.exact, simulated_annealing=classical.annealing),
        gap=relative_gap(answer.objective, best.objective),
        gap_abs=answer.objective - best.objective,
        quantum_best=QuantumBest(
            **_portfolio(formulation, processed.quantum_best_bits).model_dump(exclude_none=True),
            source=samples.quantum_source,
            gap=relative_gap(processed.quantum_best_objective, best.objective),
        ),
        refined=Refined(
            **_portfolio(formulation, processed.refined_bits).model_dump(exclude_none=True),
            found_by=samples.found_by,
            gap=relative_gap(processed.refined_objective, best.objective),
        ),
        quantum=run(samples, processed),
        estimate=report,
    )


#: The pipeline's steps in order; the QPU runs between ``compile_program`` and ``deobfuscate``.
STEPS: tuple[Callable[..., Any], ...] = (
    estimate,
    formulate,
    obfuscate,
    plan,
    compile_program,
    mitigate,
    deobfuscate,
    judge,
    refine,
    compare,
)


@dataclass(frozen=True)
class TaskFacts:
    """What the journey knows of the provider task whose counts are being judged."""

    backend: str
    task_id: str | None
    attempt: int
    shots: int
    link: Mapping[str, object] | None
    #: The circuit's sampling time, the annealing reference's budget (``None``: unknown).
    sampling_seconds: float | None = None
    #: Where it comes from: ``provider_usage`` or ``task_wall_time``.
    time_source: str = "task_wall_time"


def finish(
    request: JobRequest,
    moments: Moments,
    counts: Mapping[str, int],
    key: ObfuscationKey,
    *,
    seed: int,
    prepared: Prepared | None,
    task: TaskFacts,
    settings: Settings,
) -> JobResult:
    """Steps 6–9: the result of a job whose QPU task completed."""
    formulation = formulate(request, moments)
    mitigated, readout = mitigate(request, prepared, counts)
    judged = judge(formulation, deobfuscate(mitigated, key))
    classical = solve_classically(formulation, seed, settings)
    processed = refine(formulation, judged, classical.best)
    contribution = None
    if prepared is not None:
        contribution = attribution.contribution(
            formulation,
            judged.unique,
            judged.counts,
            prepared=prepared,
            key=key,
            optimum=np.array(classical.best.bits, dtype=np.uint8) if classical.best.optimal else None,
            seed=seed,
            sampling_seconds=task.sampling_seconds,
            time_source=task.time_source,
        )

    def run(samples: SampleReport, processed: PostProcessed) -> QuantumRun:
        return QuantumRun.model_validate(
            {
                "backend": task.backend,
                "task_id": task.task_id,
                "attempt": task.attempt,
                "shots": task.shots,
                "link": task.link,
                **(
                    {}
                    if prepared is None
                    else prepared.model_dump(
                        include={
                            "formulation",
                            "qubits",
                            "privacy",
                            "penalty",
                            "seed",
                            "device",
                            "qaoa",
                            "circuit",
                        }
                    )
                ),
                "samples": samples,
                "top_samples": top_samples(formulation, judged, classical.best.bits),
                "best_share": processed.quantum_best_share,
                "optimum_share": processed.optimum_share,
                "optimum_in_samples": processed.optimum_in_samples,
                "contribution": contribution,
                "readout": readout,
            }
        )

    return compare(
        formulation,
        processed,
        classical,
        refine_enabled=request.options.refine,
        run=run,
        report=moments.report,
    )


#: Outcomes a result lists in ``quantum.top_samples``.
TOP_SAMPLES = 12


def top_samples(
    formulation: Formulation, judged: Judged, optimum_bits: tuple[int, ...], limit: int = TOP_SAMPLES
) -> list[TopSample]:
    """The most frequent de-obfuscated outcomes, judged on the true problem, most frequent first.

    Ties in frequency go to the lower objective, so the list does not depend on the counts' order.
    """
    objectives = formulation.objective(judged.unique)
    order = np.lexsort((objectives, -judged.counts))[:limit]
    optimum = tuple(int(b) for b in optimum_bits)
    samples = []
    for k in order:
        portfolio = _portfolio(formulation, judged.unique[k])
        samples.append(
            TopSample(
                selected=portfolio.selected,
                bits=portfolio.bits,
                lots=portfolio.lots,
                count=int(judged.counts[k]),
                objective=portfolio.objective,
                feasible=bool(judged.feasible[k]),
                optimum=tuple(portfolio.bits) == optimum,
            )
        )
    return samples


def fall_back(
    request: JobRequest, moments: Moments, *, seed: int, reason: str, settings: Settings
) -> JobResult:
    """The classical answer given when the QPU could not answer, marked as such."""
    formulation = formulate(request, moments)
    classical = solve_classically(formulation, seed, settings)
    answer = _portfolio(formulation, classical.best.bits)
    return JobResult(
        **answer.model_dump(exclude_none=True),
        source="classical_fallback",
        found_by=classical.best.method,
        fallback=Fallback(reason=reason),
        classical=_answer(formulation, classical.best),
        baselines=Baselines(exact=classical.exact, simulated_annealing=classical.annealing),
        gap=0.0,
        gap_abs=0.0,
        quantum_best=None,
        refined=None,
        quantum=None,
        estimate=moments.report,
    )


def relative_gap(objective: float, reference: float) -> float:
    """``(objective − reference) / |reference|``, or the plain difference when the reference is ~0."""
    difference = objective - reference
    return difference / abs(reference) if abs(reference) > 1e-12 else difference


def _portfolio(formulation: Formulation, bits: tuple[int, ...] | Any) -> Portfolio:
    return Portfolio.model_validate(formulation.evaluate(np.array(bits, dtype=np.uint8)).as_dict())


def _answer(formulation: Formulation, solution: ClassicalSolution) -> BaselineAnswer:
    return BaselineAnswer(
        **_portfolio(formulation, solution.bits).model_dump(exclude_none=True),
        method=solution.method,
        optimal=solution.optimal,
        seconds=solution.seconds,
    )

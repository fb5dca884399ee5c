"""What the journey's PREPARING and FINALIZING steps compute, kept apart from the state handling.

PREPARING: the request becomes a formulation (selection or lots, from μ/Σ or from prices), its
QUBO goes through the proxy to an abstract Ising problem, QAOA angles are chosen on the local
simulator, and the circuit is transpiled for the device and exported as OpenQASM 3.

FINALIZING: the counts are decoded, every sample is judged on the true problem, the best ones are
repaired and refined classically, and the answer is compared with the classical baselines. The
answer returned is never worse than the classical one; the result says which step found it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from qhybrid.backends.base import DeviceTarget
from qhybrid.core.config import Settings
from qhybrid.portfolio.baselines import exact, simulated_annealing
from qhybrid.portfolio.classical import ClassicalSolution
from qhybrid.portfolio.data import estimate
from qhybrid.portfolio.formulation import Formulation
from qhybrid.portfolio.lots import LotsProblem
from qhybrid.portfolio.model import PortfolioProblem
from qhybrid.portfolio.postprocess import postprocess
from qhybrid.proxy.abstract import abstract_problem
from qhybrid.proxy.obfuscation import ObfuscationKey, PrivacyLevel, obfuscate
from qhybrid.quantum.circuit import transpile_for
from qhybrid.quantum.decode import decode_counts
from qhybrid.quantum.engine import build_circuit, plan_qaoa
from qhybrid.quantum.qasm import to_openqasm3
from qhybrid.quantum.spec import QaoaSpec

#: Objectives closer than this (relative) count as equal when comparing quantum and classical.
TIE_TOLERANCE = 1e-12


def request_seed(request: dict[str, Any], job_id: str) -> int:
    """The seed of a job's randomised steps: the request's, or one derived from the job id."""
    seed = (request.get("options") or {}).get("seed")
    return int(seed) if seed is not None else uuid.UUID(job_id).int % (2**31)


def formulation_from_request(request: dict[str, Any]) -> tuple[Formulation, dict[str, Any] | None]:
    """The problem a validated request describes, and the estimation facts when it came as prices."""
    facts: dict[str, Any] | None = None
    prices = request.get("prices")
    if prices:
        names = tuple(str(name) for name in prices["assets"])
        fit = estimate(
            np.array(prices["values"], dtype=np.float64),
            estimator=request.get("estimator", "ledoit_wolf"),
            returns=request.get("returns", "simple"),
        )
        mu, sigma = fit.expected_returns, fit.covariance
        facts = fit.as_dict()
    else:
        names = tuple(str(asset["name"]) for asset in request["assets"])
        mu = np.array([float(asset["expected_return"]) for asset in request["assets"]], dtype=np.float64)
        sigma = np.array(request["covariance"], dtype=np.float64)
    risk = float(request["risk_aversion"])
    budget = int(request["budget"])
    if request.get("formulation", "selection") == "selection":
        return PortfolioProblem(names, mu, sigma, risk, budget), facts
    bounds = request.get("lot_bounds") or {}
    default_max = int(request.get("max_lots", 3))
    low = np.array([int(bounds.get(name, (0, default_max))[0]) for name in names], dtype=np.int64)
    high = np.array([int(bounds.get(name, (0, default_max))[1]) for name in names], dtype=np.int64)
    return LotsProblem(names, mu, sigma, risk, budget, low, high), facts


def default_reps(num_qubits: int) -> int:
    """Layers when the request sets none: p = 3 up to 14 qubits, 2 up to 17, then 1.

    Each layer costs a full pass over the 2^n state in every optimizer step; measured on the
    quality benchmark, p = 1 already reaches an approximation ratio of 0.90–0.93 with the warm
    start at n = 16–20, and keeps a 20-asset job within about 10 s end to end.
    """
    if num_qubits <= 14:
        return 3
    return 2 if num_qubits <= 17 else 1


def privacy_level(request: dict[str, Any], settings: Settings) -> PrivacyLevel:
    """The request's obfuscation level, or the deployment's default."""
    level: PrivacyLevel = request.get("privacy") or settings.privacy_default
    return level


def qaoa_spec(request: dict[str, Any], formulation: Formulation, settings: Settings) -> QaoaSpec:
    """The QAOA variant a request asks for; ``auto`` picks the best measured for the formulation."""
    options = request.get("options") or {}
    mixer = options.get("mixer", "auto")
    if mixer == "auto":
        # The warm start from the continuous relaxation measured best on real data for both
        # formulations (docs/benchmarks.md, quality table).
        mixer = "x-warm"
    return QaoaSpec(
        mixer=mixer,
        reps=int(options.get("reps") or settings.default_reps or default_reps(formulation.num_variables)),
        objective=options.get("objective", "mean"),
        cvar_alpha=float(options.get("cvar_alpha", 0.1)),
        init=options.get("init", "table"),
        maxiter=int(options.get("maxiter") or 100),
    )


@dataclass(frozen=True)
class Program:
    """What PREPARING produces.

    The text that crosses the boundary, the facts kept inside, and the job's obfuscation key (to be
    sealed before it is stored; never logged).
    """

    text: str
    facts: dict[str, Any]
    key: ObfuscationKey


def prepare_program(
    request: dict[str, Any], target: DeviceTarget, *, seed: int, settings: Settings
) -> Program:
    """Business problem -> QUBO -> proxy -> Ising -> QAOA plan -> circuit for the device -> OpenQASM 3.

    Raises:
        CircuitTooLargeError: If the device has too few qubits.
    """
    started = time.perf_counter()
    formulation, estimate_facts = formulation_from_request(request)
    qubo, penalty = formulation.to_qubo()
    spec = qaoa_spec(request, formulation, settings)
    level = privacy_level(request, settings)
    # The proxy: labels are already gone (a QUBO has none); the numbers are permuted, gauged,
    # rescaled, padded with decoys and noised under a fresh random key. QAOA is planned for the
    # problem that is sent, since that is the one the QPU runs.
    sent, key = obfuscate(
        abstract_problem(qubo),
        level=level,
        mixer=spec.mixer,
        hamming_weight=formulation.hamming_weight if spec.mixer == "xy" else None,
        warm_start=formulation.relaxation() if spec.mixer == "x-warm" else None,
    )
    plan = plan_qaoa(
        sent.ising, spec, seed=seed, hamming_weight=sent.hamming_weight, warm_start=sent.warm_start
    )
    planned = time.perf_counter()
    transpiled, metrics = transpile_for(build_circuit(sent.ising, plan), target, seed=seed)
    text = to_openqasm3(transpiled)
    return Program(
        text=text,
        key=key,
        facts={
            "formulation": "selection" if isinstance(formulation, PortfolioProblem) else "weights",
            "qubits": formulation.num_variables,
            "privacy": {"level": level, "qubits_sent": sent.num_qubits},
            "penalty": penalty,
            "seed": seed,
            "device": target.name,
            "qaoa": plan.as_dict(),
            "circuit": metrics.as_dict(),
            "estimate": estimate_facts,
            "seconds": {"plan": planned - started, "transpile": time.perf_counter() - planned},
        },
    )


def _solution(formulation: Formulation, solution: ClassicalSolution) -> dict[str, Any]:
    evaluated = formulation.evaluate(np.array(solution.bits, dtype=np.uint8)).as_dict()
    return {
        **evaluated,
        "method": solution.method,
        "optimal": solution.optimal,
        "seconds": solution.seconds,
    }


def relative_gap(objective: float, reference: float) -> float:
    """``(objective − reference) / |reference|``, or the plain difference when the reference is ~0."""
    difference = objective - reference
    return difference / abs(reference) if abs(reference) > 1e-12 else difference


def _baselines(
    formulation: Formulation, seed: int, settings: Settings
) -> tuple[ClassicalSolution, dict[str, Any]]:
    """The exact (or best proven) answer and simulated annealing; returns the better and both."""
    best = exact(formulation, time_limit=settings.exact_time_limit_seconds)
    annealed = simulated_annealing(formulation, num_reads=200, seed=seed)
    table = {"exact": _solution(formulation, best), "simulated_annealing": _solution(formulation, annealed)}
    if annealed.objective < best.objective - TIE_TOLERANCE * max(1.0, abs(best.objective)):
        best = annealed  # SCIP stopped at its time limit and annealing did better
    return best, table


def quantum_result(
    request: dict[str, Any],
    counts: dict[str, int],
    *,
    seed: int,
    prepared: dict[str, Any],
    facts: dict[str, Any],
    settings: Settings,
) -> dict[str, Any]:
    """The result of a job whose QPU task completed.

    Args:
        request: The validated request document.
        counts: Outcomes with bit 0 first, as the backend contract delivers them.
        seed: The job's seed (for the annealing baseline).
        prepared: What PREPARING recorded (QAOA plan, circuit metrics...).
        facts: Provider facts to report (backend, task id, shots...).
        settings: Limits of the classical solvers.
    """
    formulation, estimate_facts = formulation_from_request(request)
    bitstrings, weights = decode_counts(counts, formulation.num_variables)
    classical, baselines = _baselines(formulation, seed, settings)
    optimum = classical.bits if classical.optimal else None
    processed = postprocess(formulation, bitstrings, weights, optimum_bits=optimum)
    refine = (request.get("options") or {}).get("refine", True)
    bits = processed.refined_bits if refine else processed.quantum_best_bits
    objective = processed.refined_objective if refine else processed.quantum_best_objective
    found_by = processed.found_by if refine else processed.quantum_source
    source = "quantum" if found_by == "sample" else "quantum+refinement"
    if objective > classical.objective + TIE_TOLERANCE * max(1.0, abs(classical.objective)):
        # Never answer worse than the classical fallback would have; say so.
        bits, objective, found_by, source = (
            classical.bits,
            classical.objective,
            classical.method,
            "classical_baseline",
        )
    answer = formulation.evaluate(np.array(bits, dtype=np.uint8)).as_dict()
    objective = formulation.evaluate(np.array(bits, dtype=np.uint8)).objective
    quantum_best = formulation.evaluate(np.array(processed.quantum_best_bits, dtype=np.uint8)).as_dict()
    refined = formulation.evaluate(np.array(processed.refined_bits, dtype=np.uint8)).as_dict()
    return {
        **answer,
        "source": source,
        "found_by": found_by,
        "classical": baselines["exact"]
        if classical.method != "simulated_annealing"
        else baselines["simulated_annealing"],
        "baselines": baselines,
        "gap": relative_gap(objective, classical.objective),
        "gap_abs": objective - classical.objective,
        "quantum_best": {
            **quantum_best,
            "source": processed.quantum_source,
            "gap": relative_gap(processed.quantum_best_objective, classical.objective),
        },
        "refined": {
            **refined,
            "found_by": processed.found_by,
            "gap": relative_gap(processed.refined_objective, classical.objective),
        },
        "quantum": {
            **facts,
            "formulation": prepared.get("formulation"),
            "qubits": prepared.get("qubits"),
            "privacy": prepared.get("privacy"),
            "penalty": prepared.get("penalty"),
            "seed": prepared.get("seed"),
            "device": prepared.get("device"),
            "qaoa": prepared.get("qaoa"),
            "circuit": prepared.get("circuit"),
            "samples": processed.as_dict(),
            "best_share": processed.quantum_best_share,
            "optimum_share": processed.optimum_share,
            "optimum_in_samples": processed.optimum_in_samples,
        },
        "estimate": estimate_facts,
    }


def fallback_result(request: dict[str, Any], *, seed: int, reason: str, settings: Settings) -> dict[str, Any]:
    """The classical answer given when the QPU could not answer, marked as such."""
    formulation, estimate_facts = formulation_from_request(request)
    classical, baselines = _baselines(formulation, seed, settings)
    answer = formulation.evaluate(np.array(classical.bits, dtype=np.uint8)).as_dict()
    return {
        **answer,
        "source": "classical_fallback",
        "found_by": classical.method,
        "fallback": {"reason": reason},
        "classical": _solution(formulation, classical),
        "baselines": baselines,
        "gap": 0.0,
        "gap_abs": 0.0,
        "quantum_best": None,
        "refined": None,
        "quantum": None,
        "estimate": estimate_facts,
    }

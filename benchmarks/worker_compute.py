"""The compute in a small job's steps, before and after, in one run: references, baselines, compile.

Three comparisons, each interleaved instance by instance so that both sides see the same load,
each timed with this thread's CPU (``time.thread_time``):

1. **The contribution's annealing reference.** The swap annealer as it was (commit be457d6: a wall
   time of the circuit's sampling time, never below 50 ms) beside the annealer now (the same
   budget, a floor of ``MIN_SWEEPS`` sweeps instead of 50 ms, cheap table steps, and a stop once
   every chain sits on the proven optimum), on the same instances and budgets. Per size: the mean
   share of shots on the optimum, the instances whose best shot is the optimum, the instances with
   every shot on it, the CPU, and why the new one stopped.
2. **The simulated-annealing baseline.** dwave-samplers with 1,000 sweeps (its default, as before)
   beside the sweeps now used for the problem's size: same answer or not, and the CPU.
3. **The compile step's transpile** for the all-to-all emulated device: ``qiskit.transpile`` at
   level 3 (as before) beside the cached level-3 pass manager now used: identical programs or not,
   and the CPU; level 2 is shown too, for its gate counts.

    .venv/bin/python -m benchmarks.worker_compute [--instances 40] [--budget 0.06] [--table baseline]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from typing import Any

import numpy as np
from numpy.typing import NDArray
from qiskit import transpile

from benchmarks.report import machine, markdown_table
from benchmarks.worker_profile import small_request
from qhybrid.core.config import Settings
from qhybrid.domain.device import DeviceTarget
from qhybrid.domain.request import JobRequest
from qhybrid.jobs import pipeline
from qhybrid.portfolio import baselines, references
from qhybrid.portfolio.formulation import Formulation
from qhybrid.portfolio.lots import LotsProblem
from qhybrid.portfolio.references import FINAL_TEMPERATURE_SHARE, MAX_CHAINS, Annealed
from qhybrid.portfolio.selection import SelectionProblem
from qhybrid.quantum.circuit import transpile_for
from qhybrid.quantum.engine import build_circuit
from qhybrid.quantum.qasm import to_openqasm3

#: The floor the old reference had (commit be457d6, jobs/attribution.py).
OLD_FLOOR_SECONDS = 0.05
EMULATOR = DeviceTarget(
    name="emulator", num_qubits=32, basis_gates=("rz", "sx", "x", "cx"), provider="emulated-cloud"
)


def old_swap_annealing(
    formulation: Formulation, shots: int, seconds: float, rng: np.random.Generator
) -> Annealed:
    """The annealer of commit be457d6, verbatim but for names: for the comparison only."""
    started = time.perf_counter()
    levels = references._levels(formulation)
    n = levels.low.size
    chains = max(1, min(shots, MAX_CHAINS))
    state = references._random_feasible(levels, chains, rng)
    a, b = levels.a, levels.b
    diagonal = np.diag(a)
    load = state.astype(np.float64) @ a
    rows = np.arange(chains)

    def propose() -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
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


def selection(assets: int, seed: int, budget: int | None = None) -> SelectionProblem:
    """The worker profile's instance of ``assets`` assets (its budget unless one is given)."""
    body = small_request(assets, seed)
    if budget is not None:
        body["budget"] = budget
    request = JobRequest.model_validate(body)
    problem = pipeline.formulate(request, pipeline.estimate(request))
    assert isinstance(problem, SelectionProblem)
    return problem


def lots(assets: int, seed: int) -> LotsProblem:
    """A small allocation in lots, up to 8 variables."""
    base = selection(assets, seed)
    rng = np.random.default_rng(seed)
    high = rng.integers(1, 4, size=assets)
    total = int(rng.integers(1, int(high.sum()) + 1))
    return LotsProblem(
        base.names,
        base.expected_returns,
        base.covariance,
        base.risk_aversion,
        total,
        np.zeros(assets, dtype=np.int64),
        high.astype(np.int64),
    )


def annealing_table(instances: int, budgets: list[float], shots: int) -> list[dict[str, Any]]:
    """Old and new annealing reference, interleaved, per size and budget."""
    rows = []
    for budget in budgets:
        for assets in (6, 7, 8):
            found: dict[str, list[tuple[float, bool, bool, float, int]]] = {"old": [], "new": []}
            stops: Counter[str] = Counter()
            for index in range(instances):
                problem = selection(assets, 1000 + index)
                optimum = np.array(baselines.exact(problem).bits, dtype=np.uint8)
                best = float(problem.objective(optimum)[0])
                for side in ("old", "new") if index % 2 == 0 else ("new", "old"):
                    rng = np.random.default_rng([index, 0x51A7])
                    started = time.thread_time()
                    if side == "old":
                        annealed = old_swap_annealing(problem, shots, max(OLD_FLOOR_SECONDS, budget), rng)
                    else:
                        annealed = references.swap_annealing(problem, shots, budget, rng, optimum=optimum)
                        stops[annealed.stopped] += 1
                    cpu = time.thread_time() - started
                    hits = np.all(annealed.bits == optimum[np.newaxis, :], axis=1)
                    values = problem.objective(annealed.bits)
                    found[side].append(
                        (
                            float(hits.mean()),
                            bool(values.min() <= best + 1e-12),
                            bool(hits.all()),
                            cpu,
                            annealed.steps,
                        )
                    )
            for side in ("old", "new"):
                results = found[side]
                rows.append(
                    {
                        "budget (s)": f"{budget:g}",
                        "n": assets,
                        "reference": "be457d6 (50 ms floor)" if side == "old" else "now (64-sweep floor)",
                        "mean optimum share": f"{statistics.fmean(r[0] for r in results):.3f}",
                        "min optimum share": f"{min(r[0] for r in results):.3f}",
                        "best = optimum": f"{sum(r[1] for r in results)}/{len(results)}",
                        "every shot on it": f"{sum(r[2] for r in results)}/{len(results)}",
                        "steps of the returned run (mean)": f"{statistics.fmean(r[4] for r in results):.0f}",
                        "CPU ms (mean)": f"{1000 * statistics.fmean(r[3] for r in results):.1f}",
                        "stopped": ", ".join(f"{k} {v}" for k, v in sorted(stops.items()))
                        if side == "new"
                        else "",
                    }
                )
    return rows


def baseline_table(instances: int, before: int = 1000) -> list[dict[str, Any]]:
    """dwave-samplers with ``before`` sweeps and with the sweeps now used, on problems of 4 to 8 variables."""
    rows = []
    cases: list[tuple[str, Formulation, int]] = []
    for assets in (4, 5, 6, 7, 8):
        for index in range(instances):
            cases.append(
                (f"selection n={assets}", selection(assets, 5000 + index, 1 + index % (assets - 1)), index)
            )
    for assets in (3, 4):
        for index in range(instances):
            allocation = lots(assets, 7000 + index)
            if allocation.num_variables <= baselines.SMALL_PROBLEM_VARIABLES:
                cases.append((f"lots, {assets} assets", allocation, index))
    by_kind: dict[str, list[tuple[bool, bool, float, float, bool, bool]]] = {}
    for index, (kind, problem, seed) in enumerate(cases):
        timing = {}
        answers = {}
        for sweeps in (before, None) if index % 2 == 0 else (None, before):
            started = time.thread_time()
            answers[sweeps] = baselines.simulated_annealing(
                problem, num_reads=200, seed=seed, num_sweeps=sweeps
            )
            timing[sweeps] = time.thread_time() - started
        same_bits = answers[before].bits == answers[None].bits
        same = same_bits
        if isinstance(problem, LotsProblem):
            # Lots are spelled in bits with some redundancy (two 1-lot bits): the portfolio is the lots.
            same = bool(
                np.array_equal(
                    problem.lots_of(np.array(answers[before].bits)),
                    problem.lots_of(np.array(answers[None].bits)),
                )
            )
        worse = answers[None].objective > answers[before].objective + 1e-12
        best = baselines.exact(problem).objective
        optimal = answers[None].objective <= best + 1e-12 * max(1.0, abs(best))
        by_kind.setdefault(kind, []).append((same, worse, timing[before], timing[None], same_bits, optimal))
    for kind, results in by_kind.items():
        rows.append(
            {
                "problems": kind,
                "instances": len(results),
                "sweeps now": baselines.SMALL_ANNEALING_SWEEPS,
                f"same portfolio as {before:,} sweeps": f"{sum(r[0] for r in results)}/{len(results)}",
                "same bits": f"{sum(r[4] for r in results)}/{len(results)}",
                "worse": sum(r[1] for r in results),
                "at the proven optimum, now": f"{sum(r[5] for r in results)}/{len(results)}",
                f"CPU ms, {before:,} sweeps": f"{1000 * statistics.fmean(r[2] for r in results):.2f}",
                "CPU ms, now": f"{1000 * statistics.fmean(r[3] for r in results):.2f}",
            }
        )
    return rows


def compile_table(instances: int) -> list[dict[str, Any]]:
    """``qiskit.transpile`` level 3 and 2 beside the cached pass manager, for the emulated device."""
    settings = Settings()
    rows = []
    for mixer in ("xy-warm", "x-warm", "x"):
        for privacy in ("off", "standard"):
            counts: dict[str, list[tuple[int, int, int, float]]] = {"3": [], "2": [], "now": []}
            identical = 0
            for index in range(instances):
                assets = (4, 6, 8)[index % 3]
                body = small_request(assets, 300 + index)
                body["options"].update({"mixer": mixer, "reps": 1 + index % 2})
                body["privacy"] = privacy
                request = JobRequest.model_validate(body)
                formulation = pipeline.formulate(request, pipeline.estimate(request))
                spec = pipeline.qaoa_spec(request, formulation, settings)
                hidden = pipeline.obfuscate(formulation, spec, pipeline.privacy_level(request, settings))
                plan = pipeline.plan(hidden, spec, index)
                circuit = build_circuit(hidden.sent.ising, plan)
                programs = {}
                for side in ("3", "2", "now") if index % 2 == 0 else ("now", "2", "3"):
                    started = time.thread_time()
                    if side == "now":
                        out = transpile_for(circuit, EMULATOR, seed=index)[0]
                    else:
                        out = transpile(
                            circuit,
                            basis_gates=list(EMULATOR.basis_gates),
                            optimization_level=int(side),
                            seed_transpiler=index,
                        )
                    cpu = time.thread_time() - started
                    programs[side] = to_openqasm3(out)
                    counts[side].append((out.count_ops().get("cx", 0), out.size(), out.depth(), cpu))
                identical += programs["3"] == programs["now"]
            for side, label in (
                ("3", "transpile, level 3 (before)"),
                ("2", "transpile, level 2"),
                ("now", "cached level-3 pass manager (now)"),
            ):
                results = counts[side]
                reference = counts["3"]
                rows.append(
                    {
                        "mixer, privacy": f"{mixer}, {privacy}",
                        "transpile": label,
                        "2-qubit gates (sum)": sum(r[0] for r in results),
                        "gates (sum)": sum(r[1] for r in results),
                        "depth (sum)": sum(r[2] for r in results),
                        "instances with more gates than level 3": sum(
                            r[1] > q[1] for r, q in zip(results, reference, strict=True)
                        ),
                        "same program as level 3": f"{identical}/{len(results)}" if side == "now" else "",
                        "CPU ms (mean)": f"{1000 * statistics.fmean(r[3] for r in results):.2f}",
                    }
                )
    return rows


def main() -> None:
    """Print the three tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=40, help="instances per size")
    parser.add_argument(
        "--budget",
        type=float,
        action="append",
        help="the circuit's sampling time given to the annealer (seconds; repeatable). Default: 0 "
        "(a provider reporting an instantaneous task) and 0.06 (the worker profile's task wall time)",
    )
    parser.add_argument("--shots", type=int, default=512)
    parser.add_argument(
        "--table",
        choices=["annealing", "baseline", "compile"],
        action="append",
        help="print only these tables (repeatable); default: all three",
    )
    parser.add_argument(
        "--baseline-before", type=int, default=1000, help="sweeps of the baseline's 'before' column"
    )
    args = parser.parse_args()
    tables = set(args.table or ["annealing", "baseline", "compile"])
    budgets = args.budget or [0.0, 0.06]
    # Warm-up: imports and first calls, not counted.
    references.swap_annealing(selection(6, 1), 64, 0.0, np.random.default_rng(0))
    old_swap_annealing(selection(6, 1), 64, 0.001, np.random.default_rng(0))
    baselines.simulated_annealing(selection(6, 1), num_reads=10, seed=0)
    compile_table(1)
    load = os.getloadavg()
    print(f"# {machine()}; load average {load[0]:.2f} (1 min) at the start")
    if "annealing" in tables:
        print(f"\n## The annealing reference: {args.instances} instances per size, {args.shots} shots\n")
        print("\n".join(markdown_table(annealing_table(args.instances, budgets, args.shots))))
    if "baseline" in tables:
        print(f"\n## The simulated-annealing baseline (200 reads): {args.instances} instances per size\n")
        print("\n".join(markdown_table(baseline_table(args.instances, args.baseline_before))))
    if "compile" in tables:
        print(f"\n## Compile for the all-to-all emulated device: {args.instances} circuits per row\n")
        print("\n".join(markdown_table(compile_table(args.instances))))
    print(f"\n# load average {os.getloadavg()[0]:.2f} (1 min) at the end")


if __name__ == "__main__":
    main()

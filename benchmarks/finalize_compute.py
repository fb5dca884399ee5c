"""FINALIZING's compute before and after the anneal branch, in one run, on the worker's instances.

Three comparisons, each interleaved instance by instance (before, after, after, before, ...) so
that both sides see the same load, each timed with this thread's CPU (``time.thread_time``):

1. **The annealing reference's floor** (``swap_annealing`` with no wall time: 64 sweeps of 512
   chains): the NumPy table step as it was (3ef9154, kept verbatim in ``tests/portfolio/test_kernels.py``)
   beside the numba kernel; the final states must be identical.
2. **The simulated-annealing baseline** (200 reads): 100 sweeps with every distinct sample
   repaired (3ef9154, verbatim below) beside 30 sweeps with only the infeasible ones repaired;
   same portfolio or not, and at the proven optimum or not.
3. **Judging the counts** (``postprocess.judge``): outcomes merged with ``np.unique(axis=0)`` and
   every candidate repaired (3ef9154, verbatim below) beside packed integers and only infeasible
   candidates repaired, on 512 shots (about four in five feasible, as the XY mixer's counts are);
   the same ``Judged`` or not.

    .venv/bin/python -m benchmarks.finalize_compute [--instances 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import dimod
import numpy as np
from dwave.samplers import SimulatedAnnealingSampler
from numpy.typing import NDArray

from benchmarks.report import machine, markdown_table
from benchmarks.worker_compute import selection
from qhybrid.portfolio import baselines, kernels, references
from qhybrid.portfolio.formulation import Formulation, as_bit_matrix
from qhybrid.portfolio.postprocess import Judged, judge
from qhybrid.portfolio.references import conditioned_rounding, swap_annealing
from tests.portfolio.test_kernels import _NumpyTableChains, _old_anneal

SHOTS = 512


def old_floor(formulation: Formulation, rng: np.random.Generator) -> NDArray[np.uint8]:
    """The floor of ``swap_annealing`` at 3ef9154 (no wall time): the NumPy table step."""
    levels = references._levels(formulation)
    chains = _NumpyTableChains(levels, SHOTS, rng)
    _old_anneal(chains, references.MIN_SWEEPS * levels.low.size)
    return chains.bits()


def old_simulated_annealing(f: Formulation, seed: int) -> tuple[int, ...]:
    """The baseline at 3ef9154, verbatim but for names: 100 sweeps, every distinct sample repaired."""
    qubo, _ = f.to_qubo()
    matrix = qubo.matrix
    bqm = dimod.BinaryQuadraticModel(
        np.diag(matrix).copy(), np.triu(2.0 * matrix, k=1), qubo.offset, dimod.BINARY
    )
    sampler = SimulatedAnnealingSampler()  # type: ignore[no-untyped-call]
    sampleset = sampler.sample(bqm, num_reads=200, num_sweeps=100, seed=seed)
    columns = [list(sampleset.variables).index(v) for v in range(f.num_variables)]
    samples = np.asarray(sampleset.record.sample, dtype=np.uint8)[:, columns]
    distinct = np.unique(samples, axis=0)
    candidates = np.stack([f.repair(row) for row in distinct])
    values = f.objective(candidates)
    best = candidates[int(np.argmin(values))]
    float(f.objective(best)[0])  # _solution's objective, as before
    return tuple(int(v) for v in best)


def old_judge(
    f: Formulation, bitstrings: NDArray[np.uint8], counts: NDArray[np.int64], top_k: int = 32
) -> Judged:
    """``postprocess.judge`` at 3ef9154, verbatim but for names and the argument checks."""
    nv = f.num_variables
    rows = as_bit_matrix(np.asarray(bitstrings), nv).astype(np.uint8)
    unique_all, inverse = np.unique(rows, axis=0, return_inverse=True)
    merged_all = np.bincount(inverse.reshape(-1), weights=counts, minlength=unique_all.shape[0])
    seen = merged_all > 0
    unique, merged = unique_all[seen], np.rint(merged_all[seen]).astype(np.int64)
    shots = int(merged.sum())
    feasible = f.is_feasible(unique)
    objectives = f.objective(unique)
    reversed_bits = tuple(1 - unique.T[::-1].astype(np.int64))
    rank_value = np.where(feasible, objectives, 0.0)
    order = np.lexsort((*reversed_bits, -merged, rank_value, ~feasible))
    candidates = order[:top_k]
    repaired = tuple(f.repair(unique[k]) for k in candidates)
    repaired_values = f.objective(np.stack(repaired))
    if feasible.any():
        quantum_best, quantum_source = unique[order[0]], "sample"
    else:
        quantum_best, quantum_source = repaired[int(np.argmin(repaired_values))], "repaired"
    return Judged(
        unique=unique,
        counts=merged,
        feasible=feasible,
        candidates=candidates,
        repaired=repaired,
        repaired_objectives=repaired_values,
        quantum_best=np.asarray(quantum_best, dtype=np.uint8),
        quantum_objective=float(f.objective(quantum_best)[0]),
        quantum_source=quantum_source,
        shots=shots,
    )


def same_judged(a: Judged, b: Judged) -> bool:
    """Every field equal."""
    arrays = ("unique", "counts", "feasible", "candidates", "repaired_objectives", "quantum_best")
    return (
        all(np.array_equal(getattr(a, name), getattr(b, name)) for name in arrays)
        and len(a.repaired) == len(b.repaired)
        and all(np.array_equal(x, y) for x, y in zip(a.repaired, b.repaired, strict=True))
        and (a.quantum_objective, a.quantum_source, a.shots)
        == (b.quantum_objective, b.quantum_source, b.shots)
    )


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    """The result and the thread CPU seconds of one call."""
    started = time.thread_time()
    result = function()
    return result, time.thread_time() - started


def compare(
    label: str,
    cases: list[Any],
    before: Callable[[Any], Any],
    after: Callable[[Any], Any],
    same: Callable[[Any, Any], bool],
    repeats: int,
) -> dict[str, Any]:
    """One row: both sides on every case, interleaved, ``repeats`` times."""
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    equal = 0
    for repeat in range(repeats):
        for index, case in enumerate(cases):
            order = ("before", "after") if (index + repeat) % 2 == 0 else ("after", "before")
            results = {}
            for side in order:
                function = before if side == "before" else after
                results[side], seconds = timed(partial(function, case))
                cpu[side].append(seconds)
            equal += repeat == 0 and same(results["before"], results["after"])
    return {
        "part": label,
        "instances": len(cases),
        "same result": f"{equal}/{len(cases)}",
        "CPU ms before (median)": f"{1000 * statistics.median(cpu['before']):.3f}",
        "CPU ms now (median)": f"{1000 * statistics.median(cpu['after']):.3f}",
        "now / before": f"{statistics.median(cpu['after']) / statistics.median(cpu['before']):.2f}",
    }


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=20, help="instances per size")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    started = time.thread_time()
    kernels.warm_up()
    compile_seconds = time.thread_time() - started
    rows = []
    print(f"# {machine()}; load average {os.getloadavg()[0]:.2f} (1 min) at the start")
    print(f"# numba kernel compiled in {compile_seconds:.2f} s of thread CPU (import included)")
    for n in (6, 7, 8):
        problems = [(selection(n, 100 + index), 100 + index) for index in range(args.instances)]
        rows.append(
            compare(
                f"annealing floor, n={n}",
                problems,
                lambda case: old_floor(case[0], np.random.default_rng(case[1])),
                lambda case: swap_annealing(case[0], SHOTS, 0.0, np.random.default_rng(case[1])).bits,
                lambda a, b: bool(np.array_equal(a, b)),
                args.repeats,
            )
        )

        def same_portfolio(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
            return a == b

        rows.append(
            compare(
                f"annealing baseline, n={n}",
                problems,
                lambda case: old_simulated_annealing(case[0], case[1]),
                lambda case: baselines.simulated_annealing(case[0], num_reads=200, seed=case[1]).bits,
                same_portfolio,
                args.repeats,
            )
        )
        samples = []
        for problem, seed in problems:
            rng = np.random.default_rng(seed)
            shots = conditioned_rounding(problem, SHOTS, rng)
            noisy = rng.random(SHOTS) < 0.2
            shots[noisy] = (rng.random((int(noisy.sum()), n)) < 0.5).astype(np.uint8)
            samples.append((problem, shots, np.ones(SHOTS, dtype=np.int64)))
        rows.append(
            compare(
                f"judge, n={n}",
                samples,
                lambda case: old_judge(*case),
                lambda case: judge(*case),
                same_judged,
                args.repeats,
            )
        )
    print("\n".join(markdown_table(rows)))
    print(f"\n# load average {os.getloadavg()[0]:.2f} (1 min) at the end")


if __name__ == "__main__":
    main()

"""QAOA answer quality on real data, beside the classical references every circuit must beat.

Seeded S&P 500 subsets (skfolio's dataset, Ledoit-Wolf covariance; instance k uses a random
subset and the k-th most recent three-year window, so instance 1 ends 2022-12-28). For every
instance, each QAOA variant at p = 1..3 AND these reference rows, all judged the same way:

- ``start x-warm (p=0)``: the ``x-warm`` circuit's own start state, no layer at all: independent
  bits, ``P(x_i = 1) = c_i`` clipped to [0.1, 0.9] (exact distribution over all 2^n states);
- ``rounding ε=0.1``: the relaxation rounded at random conditioned on the budget, weights clipped
  to [0.1, 0.9] (how issue 10 computed its reference; exact);
- ``rounding`` (= ``start xy-warm (p=0)``): the same, weights not clipped (exact). It is also
  the ``xy-warm`` circuit's start state at ε = 0;
- ``anneal T s``: swap-move simulated annealing (:func:`qhybrid.portfolio.references.swap_annealing`),
  one chain per shot (4096), for T seconds of wall time (sampled: P(opt) is the share of chains);
- ``uniform+refine``: 4096 uniformly random bit strings (no circuit at all), then the same
  post-processing as a job: what the refinement does on its own.

Circuit rows are computed from the exact final state of the trusted-zone simulator (the same
circuit the QPU gets, privacy off), then 4096 shots are drawn and post-processed as a job is.

Columns:
- ``P(opt)``: probability of the exact optimum (share of shots for the sampled rows).
- ``ratio``: approximation ratio over feasible portfolios, ``(worst − E[f | feasible]) / (worst −
  best)`` (1 = always optimal).
- ``feas``: probability mass on feasible portfolios.
- ``in 4096``: whether the optimum was among 4096 shots; ``returned``: which step of the
  post-processing produced the returned portfolio, and whether it is the exact optimum.

Run: ``.venv/bin/python -m benchmarks.quality [--sizes 12 16 20] [--reps 1 2 3]
[--instances-at 16=10] [--budgets half quarter] [--variants x-warm xy-warm] [--anneal 0.05 0.25 1]
[--epsilons 0.01 0.05]`` (``--epsilons`` adds ``xy-warm`` rows with that start clipping)
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks.report import machine, markdown_header, markdown_row
from qhybrid.domain import conditioned
from qhybrid.portfolio.baselines import exact, objective_range
from qhybrid.portfolio.data import sp500_problem
from qhybrid.portfolio.postprocess import postprocess
from qhybrid.portfolio.references import swap_annealing
from qhybrid.portfolio.selection import SelectionProblem
from qhybrid.quantum.engine import final_distribution, plan_qaoa
from qhybrid.quantum.spec import WARM_MIXERS, XY_MIXERS, QaoaSpec
from qhybrid.quantum.subspace import basis_bits, weight_basis

VARIANTS: dict[str, dict[str, Any]] = {
    "x": {"mixer": "x"},
    "x-warm": {"mixer": "x-warm"},
    "xy": {"mixer": "xy"},
    "xy+cvar": {"mixer": "xy", "objective": "cvar", "cvar_alpha": 0.1},
    "xy-warm": {"mixer": "xy-warm"},
}
SHOTS = 4096


def _row(
    problem: SelectionProblem,
    name: str,
    reps: int | str,
    bits: np.ndarray,
    probabilities: np.ndarray,
    optimum: np.ndarray,
    extremes: tuple[float, float],
    seed: int,
    seconds: float,
) -> dict[str, Any]:
    """Judge one distribution (exact probabilities, or shares of sampled shots)."""
    best, worst = extremes
    probabilities = probabilities / probabilities.sum()
    feasible = problem.is_feasible(bits)
    values = problem.objective(bits)
    is_optimum = np.all(bits == optimum, axis=1)
    p_opt = float(probabilities[is_optimum].sum())
    mass = float(probabilities[feasible].sum())
    mean = float((probabilities[feasible] * values[feasible]).sum() / mass) if mass > 0 else float("nan")
    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(probabilities), size=SHOTS, p=probabilities)
    unique, counts = np.unique(drawn, return_counts=True)
    processed = postprocess(problem, bits[unique], counts.astype(np.int64), optimum_bits=tuple(optimum))
    returned_optimal = abs(processed.refined_objective - best) <= 1e-12 * max(1.0, abs(best))
    return {
        "n": problem.num_assets,
        "B": problem.budget,
        "seed": seed,
        "variant": name,
        "p": reps,
        "P(opt)": p_opt,
        "ratio": (worst - mean) / (worst - best) if worst > best else 1.0,
        "feas": mass,
        "in 4096": bool(processed.optimum_in_samples),
        "returned": f"{processed.found_by}{'' if returned_optimal else ' (NOT optimal)'}",
        "optimal": returned_optimal,
        "s": seconds,
    }


def circuit_row(
    problem: SelectionProblem,
    variant: str,
    reps: int,
    seed: int,
    optimum: np.ndarray,
    extremes: tuple[float, float],
) -> dict[str, Any]:
    """One (instance, variant, p) cell: the exact final state of the circuit."""
    qubo, _ = problem.to_qubo()
    ising = qubo.to_ising()
    spec = QaoaSpec(reps=reps, **VARIANTS[variant])
    started = time.perf_counter()
    plan = plan_qaoa(
        ising,
        spec,
        seed=seed,
        hamming_weight=problem.budget if spec.mixer in XY_MIXERS else None,
        warm_start=problem.relaxation() if spec.mixer in WARM_MIXERS else None,
    )
    seconds = time.perf_counter() - started
    bits, probabilities = final_distribution(ising, plan)
    return _row(problem, variant, reps, bits, probabilities, optimum, extremes, seed, seconds)


def reference_rows(
    problem: SelectionProblem,
    seed: int,
    optimum: np.ndarray,
    extremes: tuple[float, float],
    anneal: list[float],
) -> list[dict[str, Any]]:
    """The classical rows of one instance (see the module docstring)."""
    n, budget = problem.num_assets, problem.budget
    relaxed = problem.relaxation()
    rows = []
    # Independent bits from the clipped relaxation: the x-warm circuit at p = 0, over all 2^n states.
    every = basis_bits(np.arange(1 << n, dtype=np.int64), n)
    clipped = np.clip(relaxed, 0.1, 0.9)
    independent = np.exp(every @ np.log(clipped) + (1 - every) @ np.log(1.0 - clipped))
    rows.append(_row(problem, "start x-warm", 0, every, independent, optimum, extremes, seed, 0.0))
    feasible = basis_bits(weight_basis(n, budget), n)
    for label, values in (("rounding ε=0.1", clipped), ("rounding", np.clip(relaxed, 0.0, 1.0))):
        started = time.perf_counter()
        exact_p = np.exp(conditioned.log_probabilities(values, budget, feasible))
        rows.append(
            _row(
                problem, label, "–", feasible, exact_p, optimum, extremes, seed, time.perf_counter() - started
            )
        )
    rng = np.random.default_rng(seed)
    for seconds in anneal:
        annealed = swap_annealing(problem, SHOTS, seconds, rng)
        unique, counts = np.unique(annealed.bits, axis=0, return_counts=True)
        rows.append(
            _row(
                problem,
                f"anneal {seconds:g} s",
                "–",
                unique,
                counts.astype(np.float64),
                optimum,
                extremes,
                seed,
                annealed.seconds,
            )
        )
    uniform = (rng.random((SHOTS, n)) < 0.5).astype(np.uint8)
    unique, counts = np.unique(uniform, axis=0, return_counts=True)
    rows.append(
        _row(problem, "uniform+refine", "–", unique, counts.astype(np.float64), optimum, extremes, seed, 0.0)
    )
    return rows


def _format(row: dict[str, Any]) -> list[str]:
    return [
        str(row["n"]),
        str(row["B"]),
        str(row["seed"]),
        row["variant"],
        str(row["p"]),
        f"{row['P(opt)']:.4f}",
        f"{row['ratio']:.3f}",
        f"{row['feas']:.2f}",
        "yes" if row["in 4096"] else "no",
        row["returned"],
        f"{row['s']:.2f}",
    ]


def _instances(spec: list[str]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for item in spec:
        size, _, number = item.partition("=")
        counts[int(size)] = int(number)
    return counts


def main() -> None:
    """Run the grid and print a Markdown table plus a summary per variant and size."""
    parser = argparse.ArgumentParser(description="QAOA quality on S&P 500 subsets, with classical references")
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 16, 20])
    parser.add_argument("--reps", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--instances-at", nargs="*", default=[], help="SIZE=COUNT, e.g. 16=10 (default 1)")
    parser.add_argument("--budgets", nargs="+", choices=["half", "quarter"], default=["half"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--anneal", type=float, nargs="*", default=[0.05, 0.25, 1.0])
    parser.add_argument(
        "--epsilons", type=float, nargs="*", default=[], help="extra xy-warm rows with these warm_epsilon"
    )
    args = parser.parse_args()
    for epsilon in args.epsilons:
        VARIANTS[f"xy-warm ε={epsilon:g}"] = {"mixer": "xy-warm", "warm_epsilon": epsilon}
        args.variants.append(f"xy-warm ε={epsilon:g}")
    instances = _instances(args.instances_at)
    headers = ["n", "B", "inst", "variant", "p", "P(opt)", "ratio", "feas", "in 4096", "returned", "s"]
    print(f"# QAOA quality and classical references, S&P 500 subsets, {SHOTS} shots")
    print(f"# {machine()}")
    print("\n".join(markdown_header(headers)), flush=True)
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        budgets = sorted(
            {max(1, n // 2) if b == "half" else max(1, n // 4) for b in args.budgets}, reverse=True
        )
        for budget in budgets:
            for seed in range(1, instances.get(n, 1) + 1):
                problem = sp500_problem(n, budget, seed=seed, end_offset_days=756 * (seed - 1))
                optimum = np.array(exact(problem).bits, dtype=np.uint8)
                extremes = objective_range(problem)
                cells = reference_rows(problem, seed, optimum, extremes, args.anneal)
                cells += [
                    circuit_row(problem, variant, reps, seed, optimum, extremes)
                    for variant in args.variants
                    for reps in args.reps
                ]
                for row in cells:
                    rows.append(row)
                    print(markdown_row(_format(row)), flush=True)
    print()
    print(
        "| n | B | instances | row | p | mean P(opt) | × rounding ε=0.1 | × rounding | mean ratio "
        "| mean feas | in 4096 | returned optimal |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted({(r["n"], r["B"]) for r in rows}):
        cells = [r for r in rows if (r["n"], r["B"]) == key]
        base = {
            name: np.mean([r["P(opt)"] for r in cells if r["variant"] == name])
            for name in ("rounding ε=0.1", "rounding")
        }
        for name, reps in dict.fromkeys((r["variant"], r["p"]) for r in cells):
            group = [r for r in cells if r["variant"] == name and r["p"] == reps]
            p_opt = float(np.mean([r["P(opt)"] for r in group]))
            print(
                f"| {key[0]} | {key[1]} | {len(group)} | {name} | {reps} | {p_opt:.3f} | "
                f"{p_opt / base['rounding ε=0.1']:.2f} | {p_opt / base['rounding']:.2f} | "
                f"{np.mean([r['ratio'] for r in group]):.3f} | {np.mean([r['feas'] for r in group]):.2f} | "
                f"{sum(r['in 4096'] for r in group)}/{len(group)} | "
                f"{sum(r['optimal'] for r in group)}/{len(group)} |"
            )


if __name__ == "__main__":
    main()

"""QAOA answer quality on real data: P(optimum), approximation ratio, optimum among the shots.

Seeded S&P 500 subsets (skfolio's dataset, Ledoit-Wolf covariance; seed k uses a random subset and
the k-th most recent three-year window, so seed 1 ends 2022-12-28), budgets n/2 and n/4,
p = 1..3, for each QAOA variant. Everything is computed from the exact final state of the
trusted-zone simulator (the same circuit the QPU gets), then 4096 shots are drawn from it and
post-processed exactly as a job is.

Columns:
- ``P(opt)``: probability of the exact optimum; ``×unif``: that over 1/C(n, B), the chance of a
  uniformly random feasible portfolio.
- ``ratio``: approximation ratio over feasible portfolios, ``(worst − E[f | feasible]) / (worst −
  best)`` with best/worst the exact extreme objectives (1 = always optimal, 0.5 ≈ random).
- ``feas``: probability mass on feasible portfolios (1 for the XY mixer by construction).
- ``in 4096``: whether the optimum was among 4096 shots; ``returned``: which step produced the
  returned portfolio, and whether it is the exact optimum.

Run: ``.venv/bin/python -m benchmarks.quality [--sizes 6 8 10 12 16 20] [--reps 1 2 3] [--seeds 1]``
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from benchmarks.report import machine, markdown_header, markdown_row
from qhybrid.portfolio.baselines import exact, objective_range
from qhybrid.portfolio.data import sp500_problem
from qhybrid.portfolio.postprocess import postprocess
from qhybrid.portfolio.selection import SelectionProblem
from qhybrid.quantum.engine import final_distribution, plan_qaoa
from qhybrid.quantum.spec import QaoaSpec

VARIANTS: dict[str, dict[str, Any]] = {
    "x": {"mixer": "x"},
    "x-warm": {"mixer": "x-warm"},
    "xy": {"mixer": "xy"},
    "xy+cvar": {"mixer": "xy", "objective": "cvar", "cvar_alpha": 0.1},
}
SHOTS = 4096


def evaluate(problem: SelectionProblem, variant: str, reps: int, seed: int) -> dict[str, Any]:
    """One (instance, variant, p) cell of the table."""
    n, budget = problem.num_assets, problem.budget
    best, worst = objective_range(problem)
    optimum = exact(problem)
    qubo, _ = problem.to_qubo()
    ising = qubo.to_ising()
    spec = QaoaSpec(reps=reps, **VARIANTS[variant])
    started = time.perf_counter()
    plan = plan_qaoa(
        ising,
        spec,
        seed=seed,
        hamming_weight=budget if spec.mixer == "xy" else None,
        warm_start=problem.relaxation() if spec.mixer == "x-warm" else None,
    )
    seconds = time.perf_counter() - started
    bits, probabilities = final_distribution(ising, plan)
    probabilities = probabilities / probabilities.sum()
    feasible = problem.is_feasible(bits)
    values = problem.objective(bits)
    is_optimum = np.all(bits == np.array(optimum.bits, dtype=np.uint8), axis=1)
    p_opt = float(probabilities[is_optimum].sum())
    mass = float(probabilities[feasible].sum())
    mean = float((probabilities[feasible] * values[feasible]).sum() / mass) if mass > 0 else float("nan")
    ratio = (worst - mean) / (worst - best) if worst > best else 1.0
    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(probabilities), size=SHOTS, p=probabilities)
    unique, counts = np.unique(drawn, return_counts=True)
    processed = postprocess(problem, bits[unique], counts.astype(np.int64), optimum_bits=optimum.bits)
    returned_optimal = abs(processed.refined_objective - best) <= 1e-12 * max(1.0, abs(best))
    return {
        "n": n,
        "B": budget,
        "variant": variant,
        "p": reps,
        "P(opt)": p_opt,
        "×unif": p_opt * math.comb(n, budget),
        "ratio": ratio,
        "feas": mass,
        "in 4096": bool(processed.optimum_in_samples),
        "returned": f"{processed.found_by}{'' if returned_optimal else ' (NOT optimal)'}",
        "optimal": returned_optimal,
        "plan s": seconds,
    }


def _format(row: dict[str, Any]) -> list[str]:
    return [
        str(row["n"]),
        str(row["B"]),
        row["variant"],
        str(row["p"]),
        f"{row['P(opt)']:.4f}",
        f"{row['×unif']:.1f}",
        f"{row['ratio']:.3f}",
        f"{row['feas']:.2f}",
        "yes" if row["in 4096"] else "no",
        row["returned"],
        f"{row['plan s']:.2f}",
    ]


def main() -> None:
    """Run the grid and print a Markdown table plus a summary."""
    parser = argparse.ArgumentParser(description="QAOA quality on S&P 500 subsets")
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 8, 10, 12, 16, 20])
    parser.add_argument("--reps", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args()
    headers = ["n", "B", "variant", "p", "P(opt)", "×unif", "ratio", "feas", "in 4096", "returned", "plan s"]
    print(f"# QAOA quality, S&P 500 subsets, {SHOTS} shots, seeds {args.seeds}")
    print(f"# {machine()}")
    print("\n".join(markdown_header(headers)), flush=True)
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        for budget in sorted({max(1, n // 2), max(1, n // 4)}, reverse=True):
            for seed in args.seeds:
                # Seed k: a random subset and the k-th most recent three-year window (with all 20
                # stocks only the period can vary).
                problem = sp500_problem(n, budget, seed=seed, end_offset_days=756 * (seed - 1))
                for variant in args.variants:
                    for reps in args.reps:
                        row = evaluate(problem, variant, reps, seed)
                        rows.append(row)
                        print(markdown_row(_format(row)), flush=True)
    print()
    print(
        "| variant | p | mean ratio n=12–20 | min ratio n=12–20 | optimum in 4096 (n≤20) | returned optimal |"
    )
    print("|---|---|---|---|---|---|")
    for variant in args.variants:
        for reps in args.reps:
            cells = [r for r in rows if r["variant"] == variant and r["p"] == reps]
            big = [r["ratio"] for r in cells if 12 <= r["n"] <= 20]
            hits = sum(r["in 4096"] for r in cells)
            optimal = sum(r["optimal"] for r in cells)
            print(
                f"| {variant} | {reps} | {np.mean(big) if big else float('nan'):.3f} | "
                f"{min(big) if big else float('nan'):.3f} | {hits}/{len(cells)} | {optimal}/{len(cells)} |"
            )


if __name__ == "__main__":
    main()

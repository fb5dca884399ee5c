"""Learn the shipped QAOA angle table on real S&P 500 data.

    .venv/bin/python -m benchmarks.learn_angles              # learn, write src/qhybrid/data/qaoa_angles.json
    .venv/bin/python -m benchmarks.learn_angles --evaluate   # held-out instances with the shipped table

Data: skfolio's ``load_sp500_dataset()`` (20 stocks, daily prices 1990–2022, shipped in the wheel,
no download). Daily simple returns over the last :data:`WINDOW_DAYS` trading days; for a seeded
random subset of ``n`` stocks, ``μ`` is the sample mean and ``Σ`` the Ledoit-Wolf covariance.
The risk aversion is set per instance so that risk and return vary equally over the feasible
selections: ``q = std(μᵀx) / std(xᵀΣx)`` over all (or 20 000 sampled) ``x`` with ``Σx = B``,
rounded to two significant digits (median 0.83, range 0.23–2.8 over the learning instances).
With a much smaller ``q`` the optimum is just the ``B`` highest returns, with a much larger one
the minimum-variance selection; in between it is in general neither, and real covariances leave
many near-ties, which is what makes the instances hard for QAOA.

Learning, per variant (``x``, ``x-warm`` at ``ε = 0.25`` and ``0.1``, ``xy``, ``xy-basis``),
objective (mean, CVaR at ``α = 0.1``), size ``n ∈ {6, 8, 10, 12}`` and budget ``B = round(r·n)`` for
``r ∈ {1/4, 1/3, 1/2, 2/3}`` (deduplicated), on :data:`INSTANCES` instances:

1. ``p = 1``: a grid scan of ``(γ, β)``, then L-BFGS-B from the best grid points;
2. ``p → p + 1``: INTERP from the depth-``p`` optimum (plus one perturbed restart), L-BFGS-B;
3. the entry for ``p`` is, among each instance's optimum and their median, the angles with the
   best objective averaged over the instances (all in the normalised units of
   :mod:`qhybrid.quantum.engine`, so averaging across instances is meaningful): the angles that
   transfer best, not one instance's favourite.

The whole run takes about 4 minutes on 2 vCPUs (one thread is used). Warm starts come from the
continuous relaxation (SLSQP on ``q xᵀΣx − μᵀx`` with ``Σx = B`` and
``0 ≤ x ≤ 1``): ``x-warm`` uses it as is, ``xy-basis`` its ``B`` largest entries.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from skfolio.datasets import load_sp500_dataset
from sklearn.covariance import LedoitWolf

from benchmarks.simulator import machine_line
from qhybrid.domain.qubo import FloatArray, Ising
from qhybrid.portfolio.selection import SelectionProblem, to_qubo
from qhybrid.quantum.angles import interpolate_angles
from qhybrid.quantum.engine import SimulatedQaoa, final_distribution, plan_qaoa, simulate_qaoa
from qhybrid.quantum.simulator import single_threaded_blas
from qhybrid.quantum.spec import QaoaSpec

TABLE = Path(__file__).resolve().parents[1] / "src" / "qhybrid" / "data" / "qaoa_angles.json"
WINDOW_DAYS = 756  # three years of trading days, ending 2022-12-28
SIZES = (6, 8, 10, 12)
RATIOS = (1 / 4, 1 / 3, 1 / 2, 2 / 3)
MAX_REPS = 5
INSTANCES = 4
#: (variant, warm-start ε): x-warm's best angles depend on ε, so two common values are learned.
VARIANTS: tuple[tuple[str, float | None], ...] = (
    ("x", None),
    ("x-warm", 0.25),
    ("x-warm", 0.1),
    ("xy", None),
    ("xy-basis", None),
)
OBJECTIVES = ("mean", "cvar")
CVAR_ALPHA = 0.1
GRID_GAMMAS = np.linspace(0.05, 2.0, 16)
GRID_BETAS = np.linspace(-math.pi / 2, math.pi / 2, 17)[1:-1]
GRID_STARTS = 3
MAXITER = 200
SAMPLE_SELECTIONS = 20_000


# --------------------------------------------------------------------------- real instances


@cache
def daily_returns(window: int = 0) -> FloatArray:
    """Daily simple returns of the 20 stocks over :data:`WINDOW_DAYS` days, ``(T, 20)``.

    Window 0 is the last one (ending 2022-12-28, the learning data); window ``k`` ends ``k`` window
    lengths earlier, so held-out instances can also differ in time (there are only 20 stocks).
    """
    prices = load_sp500_dataset()
    returns = prices.pct_change().iloc[1:]
    end = len(returns) - window * WINDOW_DAYS
    return np.asarray(returns.iloc[end - WINDOW_DAYS : end].to_numpy(), dtype=np.float64)


@cache
def tickers() -> tuple[str, ...]:
    return tuple(str(c) for c in load_sp500_dataset().columns)


def feasible_selections(n: int, budget: int, rng: np.random.Generator) -> FloatArray:
    """All selections of ``budget`` out of ``n`` (or a random sample when there are too many)."""
    if math.comb(n, budget) <= SAMPLE_SELECTIONS:
        combos = np.array(list(itertools.combinations(range(n), budget)), dtype=np.intp).reshape(-1, budget)
    else:
        combos = np.argsort(rng.random((SAMPLE_SELECTIONS, n)), axis=1)[:, :budget]
    x = np.zeros((combos.shape[0], n))
    x[np.arange(combos.shape[0])[:, np.newaxis], combos] = 1.0
    return x


def real_problem(n: int, budget: int, seed: int, window: int = 0) -> SelectionProblem:
    """A portfolio problem on ``n`` seeded random stocks (see the module docstring)."""
    returns = daily_returns(window)
    rng = np.random.default_rng(seed)
    assets = np.sort(rng.choice(returns.shape[1], size=n, replace=False))
    chosen = returns[:, assets]
    mu = chosen.mean(axis=0)
    covariance = LedoitWolf().fit(chosen).covariance_
    x = feasible_selections(n, budget, rng)
    variance = np.einsum("mi,ij,mj->m", x, covariance, x)
    risk = float(f"{(x @ mu).std() / variance.std():.2g}")
    names = tuple(tickers()[i] for i in assets)
    return SelectionProblem(
        names=names, expected_returns=mu, covariance=covariance, risk_aversion=risk, budget=budget
    )


def relaxation(problem: SelectionProblem) -> FloatArray:
    """The continuous relaxation's minimiser: ``0 ≤ x ≤ 1``, ``Σx = B`` (convex: Σ is PSD)."""
    n = problem.num_assets
    q, cov, mu = problem.risk_aversion, problem.covariance, problem.expected_returns
    result = minimize(
        lambda x: q * x @ cov @ x - mu @ x,
        np.full(n, problem.budget / n),
        jac=lambda x: 2.0 * q * cov @ x - mu,
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - problem.budget, "jac": lambda x: np.ones(n)}],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 500},
    )
    return np.asarray(np.clip(result.x, 0.0, 1.0), dtype=np.float64)


def ising_of(problem: SelectionProblem) -> Ising:
    return to_qubo(problem)[0].to_ising()


def budgets(n: int) -> list[int]:
    return sorted({max(1, round(r * n)) for r in RATIOS})


# --------------------------------------------------------------------------- learning


def model_for(
    variant: str, objective: str, problem: SelectionProblem, epsilon: float | None = None
) -> SimulatedQaoa:
    mixer = "xy" if variant.startswith("xy") else variant
    spec = QaoaSpec(
        mixer=mixer,  # type: ignore[arg-type]
        reps=1,
        objective=objective,  # type: ignore[arg-type]
        cvar_alpha=CVAR_ALPHA,
        warm_epsilon=0.25 if epsilon is None else epsilon,
    )
    warm = relaxation(problem) if variant in ("x-warm", "xy-basis") else None
    return simulate_qaoa(ising_of(problem), spec, hamming_weight=problem.budget, warm_start=warm)


def learn_instance(model: SimulatedQaoa) -> list[FloatArray]:
    """The chain of optima ``θ*_1 … θ*_P`` for one instance."""
    grid = [np.array([g, b]) for g in GRID_GAMMAS for b in GRID_BETAS]
    values = np.array([model.value(theta) for theta in grid])
    best, best_value = grid[int(np.argmin(values))], float(values.min())
    for index in np.argsort(values)[:GRID_STARTS]:
        theta, value = model.refine(grid[int(index)], MAXITER)
        if value < best_value - 1e-12:
            best, best_value = theta, value
    chain = [best]
    rng = np.random.default_rng(len(chain))
    for _ in range(2, MAX_REPS + 1):
        gammas, betas = interpolate_angles(chain[-1][: chain[-1].size // 2], chain[-1][chain[-1].size // 2 :])
        start = np.concatenate([gammas, betas])
        best, best_value = model.refine(start, MAXITER)
        theta, value = model.refine(start * rng.uniform(0.8, 1.2, size=start.size), MAXITER)
        if value < best_value - 1e-12:
            best, best_value = theta, value
        chain.append(best)
    return chain


@dataclass
class Learned:
    variant: str
    objective: str
    n: int
    budget: int
    reps: int
    theta: FloatArray
    regret: float  # mean over instances of objective(table) − objective(own optimum), normalised units
    ratio_mean: float  # mean approximation ratio over the instances at the table angles


def learn_shape(
    variant: str, objective: str, n: int, budget: int, seeds: list[int], epsilon: float | None = None
) -> list[Learned]:
    problems = [real_problem(n, budget, seed) for seed in seeds]
    models = [model_for(variant, objective, problem, epsilon) for problem in problems]
    chains = [learn_instance(model) for model in models]
    learned = []
    for p in range(1, MAX_REPS + 1):
        own = [chain[p - 1] for chain in chains]
        candidates = [*own, np.median(np.array(own), axis=0)]
        scores = [[model.value(theta) for model in models] for theta in candidates]
        choice = int(np.argmin([statistics.fmean(row) for row in scores]))
        optimum = [model.value(theta) for model, theta in zip(models, own, strict=True)]
        regret = statistics.fmean(s - o for s, o in zip(scores[choice], optimum, strict=True))
        ratios = [model.facts(candidates[choice])["approximation_ratio"] for model in models]
        learned.append(
            Learned(variant, objective, n, budget, p, candidates[choice], regret, statistics.fmean(ratios))
        )
    return learned


def learn(instances: int) -> dict[str, object]:
    entries: list[dict[str, object]] = []
    risks: list[float] = []
    started = time.perf_counter()
    shapes = [(n, b) for n in SIZES for b in budgets(n)]
    for n, budget in shapes:
        seeds = [1000 * n + 10 * budget + k for k in range(instances)]
        risks += [real_problem(n, budget, seed).risk_aversion for seed in seeds]
        for variant, epsilon in VARIANTS:
            for objective in OBJECTIVES:
                tick = time.perf_counter()
                for item in learn_shape(variant, objective, n, budget, seeds, epsilon):
                    half = item.theta.size // 2
                    entries.append(
                        {
                            "variant": variant,
                            **({} if epsilon is None else {"warm_epsilon": epsilon}),
                            "objective": objective,
                            "num_qubits": n,
                            "budget": budget,
                            "ratio": round(budget / n, 6),
                            "reps": item.reps,
                            "gammas": [round(float(g), 6) for g in item.theta[:half]],
                            "betas": [round(float(b), 6) for b in item.theta[half:]],
                            "regret": round(item.regret, 6),
                            "approximation_ratio": round(item.ratio_mean, 4),
                        }
                    )
                label = variant if epsilon is None else f"{variant}/{epsilon}"
                print(
                    f"n={n:2d} B={budget:2d} {label:12s} {objective:5s} "
                    f"{time.perf_counter() - tick:6.1f} s  ratio p1..p{MAX_REPS}: "
                    + " ".join(f"{e['approximation_ratio']:.3f}" for e in entries[-MAX_REPS:]),
                    flush=True,
                )
    print(f"learned {len(entries)} entries in {time.perf_counter() - started:.0f} s")
    print(f"risk aversion: median {statistics.median(risks):.3g}, range {min(risks):.3g} .. {max(risks):.3g}")
    return {
        "format": 1,
        "generated_by": "python -m benchmarks.learn_angles",
        "units": "gamma multiplies the cost divided by its standard deviation over the searched space "
        "(uniform over all 2^n states for x and x-warm, over the weight-B states for xy); beta is the "
        "mixer angle",
        "data": {
            "source": "skfolio load_sp500_dataset, 20 stocks",
            "returns": f"daily simple returns, last {WINDOW_DAYS} trading days (to 2022-12-28)",
            "estimators": "sample mean; sklearn LedoitWolf covariance",
            "risk_aversion": "per instance std(mu.x)/std(x.Sigma.x) over feasible x, 2 significant digits; "
            f"median {statistics.median(risks):.3g}",
            "instances_per_shape": instances,
            "cvar_alpha": CVAR_ALPHA,
        },
        "entries": entries,
    }


# --------------------------------------------------------------------------- evaluation


def evaluate(sizes: list[int], instances: int, shots: int) -> None:
    """Held-out instances with the shipped table: other subsets, instance ``k`` on window ``k``.

    The ratio is over the feasible selections, ``(f_max − E[f | feasible]) / (f_max − f_min)``
    with ``f`` the portfolio objective; for the X mixers the infeasible shots are dropped.
    """
    print(
        f"| n | B | variant | objective | p | init | ratio (feasible) | P(feasible) | P(opt) | "
        f"P(opt in {shots} shots) | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        budget = n // 2
        for seed in range(instances):
            problem = real_problem(n, budget, 777_000 + 100 * n + seed, window=seed)
            ising = ising_of(problem)
            warm = relaxation(problem)
            configurations: list[tuple[str, str, FloatArray | None, float]] = [
                ("xy", "mean", None, 0.25),
                ("xy", "cvar", None, 0.25),
                ("xy", "cvar", warm, 0.25),
                ("x", "mean", None, 0.25),
                ("x-warm", "mean", warm, 0.25),
                ("x-warm", "mean", warm, 0.1),
            ]
            for mixer, objective, start, epsilon in configurations:
                for reps in (1, 2, 3):
                    spec = QaoaSpec(
                        mixer=mixer,  # type: ignore[arg-type]
                        reps=reps,
                        objective=objective,  # type: ignore[arg-type]
                        init="table",
                        maxiter=20,
                        warm_epsilon=epsilon,
                    )
                    tick = time.perf_counter()
                    plan = plan_qaoa(ising, spec, seed=0, hamming_weight=budget, warm_start=start)
                    bits, probabilities = final_distribution(ising, plan)
                    seconds = time.perf_counter() - tick
                    feasible = bits.sum(axis=1) == budget
                    values = problem.objective(bits[feasible])
                    weights = probabilities[feasible]
                    low, high = float(values.min()), float(values.max())
                    mean = float(weights @ values) / float(weights.sum())
                    optimum = float(weights[values <= low + 1e-12 * max(1.0, abs(low))].sum())
                    label = mixer + ("-basis" if mixer == "xy" and start is not None else "")
                    label += f" ε={epsilon}" if mixer == "x-warm" else ""
                    print(
                        f"| {n} | {budget} | {label} | {objective} | {reps} | table+20 | "
                        f"{(high - mean) / (high - low):.3f} | {float(weights.sum()):.3f} | {optimum:.4f} | "
                        f"{1.0 - (1.0 - optimum) ** shots:.3f} | {seconds:.2f} |",
                        flush=True,
                    )


def table_text(table: dict[str, object]) -> str:
    """Readable JSON with one line per entry (the table has hundreds)."""
    head = {key: value for key, value in table.items() if key != "entries"}
    lines = json.dumps(head, indent=1)[:-2] + ',\n "entries": [\n'
    entries = table["entries"]
    assert isinstance(entries, list)
    lines += ",\n".join("  " + json.dumps(entry) for entry in entries)
    return lines + "\n ]\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluate", action="store_true", help="evaluate the shipped table instead")
    parser.add_argument("--instances", type=int, default=INSTANCES)
    parser.add_argument("--sizes", type=int, nargs="*", default=[12, 16, 20])
    parser.add_argument("--shots", type=int, default=4096)
    args = parser.parse_args()
    print(machine_line())
    with single_threaded_blas():
        if args.evaluate:
            evaluate(args.sizes, args.instances, args.shots)
            return
        table = learn(args.instances)
    TABLE.write_text(table_text(table))
    print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()

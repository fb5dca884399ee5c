"""Time to solution: qhybrid end to end vs qiskit-optimization's ``MinimumEigenOptimizer(QAOA)``.

On the same real-data instances (S&P 500 subsets, n = 12 and 20, budget n/2):

- qhybrid: a real API, worker and emulated cloud (zero queue delay) on the embedded default; the
  clock runs from ``POST /optimize_portfolio`` to the completed job, over HTTP.
- qiskit-optimization: ``MinimumEigenOptimizer(QAOA(Aer SamplerV2, COBYLA, reps=p))`` on the same
  ``QuadraticProgram`` (its own penalty conversion), in process.

Both report wall time, the objective found on the true problem, and whether it is the exact optimum.
Needs the benchmark extra: ``.venv/bin/pip install -e '.[bench]'``.

Run: ``.venv/bin/python -m benchmarks.time_to_solution [--sizes 12 20] [--reps 2]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import machine, markdown_table
from qhybrid.client import Client
from qhybrid.portfolio.baselines import exact
from qhybrid.portfolio.data import sp500_problem
from qhybrid.portfolio.selection import SelectionProblem
from tests.support.cloud import start_cloud
from tests.support.processes import Process, free_port, start_process


def request_of(problem: SelectionProblem, *, reps: int | None, seed: int) -> dict[str, Any]:
    """The API request for a problem (``reps=None``: the service's default for the size)."""
    options: dict[str, Any] = {"seed": seed}
    if reps is not None:
        options["reps"] = reps
    return {
        "assets": [
            {"name": name, "expected_return": float(mu)}
            for name, mu in zip(problem.names, problem.expected_returns, strict=True)
        ],
        "covariance": problem.covariance.tolist(),
        "risk_aversion": problem.risk_aversion,
        "budget": problem.budget,
        "shots": 4096,
        "options": options,
    }


def start_stack(folder: Path) -> tuple[list[Process], str]:
    """Cloud (HTTPS, no queue or run delay), API and worker, embedded default, fast polling."""
    cloud = start_cloud(
        folder / "cloud", queue_delay=0, run_delay=0, token="bench", extra_args=["--log-level", "warning"]
    )
    api_port = free_port()
    env = {
        "QHYBRID_DATA_DIR": str(folder / "qhybrid"),
        "QHYBRID_CLOUD_URL": cloud.base_url,
        "QHYBRID_CLOUD_TOKEN": cloud.token,
        "QHYBRID_CLOUD_CA_FILE": str(cloud.ca_file),
        "QHYBRID_POLL_INITIAL_SECONDS": "0.1",
        "QHYBRID_POLL_MAX_SECONDS": "0.5",
        "QHYBRID_LOG_LEVEL": "WARNING",
    }
    api = start_process(
        "api",
        ["-m", "qhybrid", "serve", "--port", str(api_port), "--log-level", "warning"],
        log_dir=folder,
        env=env,
        health_url=f"http://127.0.0.1:{api_port}/readyz",
    )
    worker = start_process(
        "worker", ["-m", "qhybrid", "worker", "--log-level", "warning"], log_dir=folder, env=env
    )
    return [cloud.process, api, worker], f"http://127.0.0.1:{api_port}"


def run_qhybrid(api_url: str, problem: SelectionProblem, *, reps: int | None, seed: int) -> dict[str, Any]:
    """One job over HTTP; wall time from the POST to the completed document."""
    with Client(api_url, poll_initial=0.05, poll_max=0.2) as client:
        started = time.perf_counter()
        job = client.submit(request_of(problem, reps=reps, seed=seed)).wait(timeout=600).raw
        seconds = time.perf_counter() - started
    if job["status"] != "completed":
        raise RuntimeError(f"job ended {job['status']}: {job.get('error')}")
    result = job["result"]
    return {
        "seconds": seconds,
        "objective": result["objective"],
        "found_by": result["found_by"],
        "quantum_best_gap": result["quantum_best"]["gap"],
        "optimum_share": result["quantum"]["optimum_share"],
        "reps": result["quantum"]["qaoa"]["spec"]["reps"],
    }


def run_qiskit_optimization(problem: SelectionProblem, *, reps: int, seed: int) -> dict[str, Any]:
    """``MinimumEigenOptimizer(QAOA(...))`` on the same problem."""
    from qiskit_aer.primitives import SamplerV2
    from qiskit_optimization import QuadraticProgram
    from qiskit_optimization.algorithms import MinimumEigenOptimizer
    from qiskit_optimization.minimum_eigensolvers import QAOA
    from qiskit_optimization.optimizers import COBYLA

    n = problem.num_assets
    program = QuadraticProgram("portfolio")
    for i in range(n):
        program.binary_var(f"x{i}")
    quadratic = {
        (f"x{i}", f"x{j}"): problem.risk_aversion * float(problem.covariance[i, j])
        for i in range(n)
        for j in range(n)
    }
    program.minimize(linear=[-float(m) for m in problem.expected_returns], quadratic=quadratic)
    program.linear_constraint(linear=[1] * n, sense="==", rhs=problem.budget, name="budget")
    sampler = SamplerV2(default_shots=4096, seed=seed)
    # The sampler gets the logical circuit: Aer runs any gate, so no pass manager is needed.
    qaoa = QAOA(sampler=sampler, optimizer=COBYLA(maxiter=100), reps=reps)
    started = time.perf_counter()
    answer = MinimumEigenOptimizer(qaoa).solve(program)
    seconds = time.perf_counter() - started
    if answer.x is None:
        return {"seconds": seconds, "objective": float("nan"), "found_by": f"no answer ({answer.status})"}
    bits = np.array([round(v) for v in answer.x], dtype=np.uint8)
    feasible = bool(problem.is_feasible(bits)[0])
    return {
        "seconds": seconds,
        "objective": float(problem.objective(bits)[0]) if feasible else float("nan"),
        "found_by": "MinimumEigenOptimizer" if feasible else "infeasible answer",
    }


def main() -> None:
    """Run both on each size and print a Markdown table."""
    parser = argparse.ArgumentParser(description="qhybrid vs qiskit-optimization, time to solution")
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 20])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        processes, api_url = start_stack(Path(tmp))
        try:
            for n in args.sizes:
                problem = sp500_problem(n, n // 2, seed=args.seed)
                best = exact(problem)
                ours = run_qhybrid(api_url, problem, reps=args.reps, seed=args.seed)
                default = run_qhybrid(api_url, problem, reps=None, seed=args.seed)
                theirs = run_qiskit_optimization(problem, reps=args.reps, seed=args.seed)
                for name, row in (
                    (f"qhybrid, p={args.reps} (API → result)", ours),
                    (f"qhybrid, default p={default['reps']} (API → result)", default),
                    (f"qiskit-optimization MEO(QAOA), p={args.reps}", theirs),
                ):
                    rows.append(
                        {
                            "n": n,
                            "B": n // 2,
                            "solver": name,
                            "wall s": f"{row['seconds']:.2f}",
                            "objective": f"{row['objective']:.6g}",
                            "exact optimum": "yes"
                            if abs(row["objective"] - best.objective) <= 1e-12
                            else "no",
                            "found by": row["found_by"],
                        }
                    )
                ratio = theirs["seconds"] / ours["seconds"]
                rows.append(
                    {
                        "n": n,
                        "B": n // 2,
                        "solver": f"wall-time ratio qiskit-optimization / qhybrid: {ratio:.1f}×",
                        "wall s": "",
                        "objective": f"{best.objective:.6g} (exact)",
                        "exact optimum": "",
                        "found by": "",
                    }
                )
        finally:
            for proc in reversed(processes):
                proc.stop()
    print(f"# time to solution, p={args.reps}, 4096 shots, S&P 500 subsets (seed {args.seed})")
    print(f"# {machine()}")
    print("\n".join(markdown_table(rows)))


if __name__ == "__main__":
    main()

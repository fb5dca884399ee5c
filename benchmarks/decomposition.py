"""Universes larger than the device: a decomposed job vs SCIP (60 s) vs swap-move annealing.

On factor-model universes calibrated on skfolio's bundled S&P 500 sample
(:mod:`qhybrid.portfolio.factor_model`, synthetic assets), n = 100, 200 and 500, budget n/10:

- qhybrid: a real API, worker and emulated cloud (zero queue and run delay) on the embedded
  default; the clock runs from ``POST /optimize_portfolio`` to the completed job, over HTTP. The
  job is decomposed (sub-problems of ``QHYBRID_SUBPROBLEM_QUBITS`` qubits, each a provider task).
- SCIP (pyscipopt) with a 60 s time limit, in process.
- swap-move simulated annealing (:func:`qhybrid.portfolio.decomposition.swap_anneal`) given the
  same wall time as the job took, in process.

The table says which step of the job produced its answer (classical start, a sub-problem's
sampled answer, the classical refinement, or the SCIP baseline) and how many rounds' sub-problems
improved anything.

Run: ``.venv/bin/python -m benchmarks.decomposition [--sizes 100 200 500] [--scip-seconds 60]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import machine, markdown_table
from qhybrid.client import Client
from qhybrid.portfolio.baselines import scip
from qhybrid.portfolio.decomposition import swap_anneal
from qhybrid.portfolio.factor_model import factor_problem
from qhybrid.portfolio.selection import SelectionProblem
from tests.support.cloud import start_cloud
from tests.support.processes import Process, free_port, start_process


def request_of(problem: SelectionProblem, *, seed: int, shots: int) -> dict[str, Any]:
    """The API request for a problem."""
    return {
        "assets": [
            {"name": name, "expected_return": float(mu)}
            for name, mu in zip(problem.names, problem.expected_returns, strict=True)
        ],
        "covariance": problem.covariance.tolist(),
        "risk_aversion": problem.risk_aversion,
        "budget": problem.budget,
        "shots": shots,
        "options": {"seed": seed},
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
        "QHYBRID_POLL_INITIAL_SECONDS": "0.2",
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


def run_job(api_url: str, problem: SelectionProblem, *, seed: int, shots: int) -> dict[str, Any]:
    """One job over HTTP; wall time from the POST to the completed document."""
    with Client(api_url, poll_initial=0.05, poll_max=0.3, timeout=120) as client:
        started = time.perf_counter()
        job = client.submit(request_of(problem, seed=seed, shots=shots)).wait(timeout=900).raw
        seconds = time.perf_counter() - started
    if job["status"] != "completed":
        raise RuntimeError(f"job ended {job['status']}: {job.get('error')}")
    result = job["result"]
    block = result["decomposition"]
    return {
        "seconds": seconds,
        "objective": result["objective"],
        "source": result["source"],
        "final_step": block["final_step"]
        + (f" (round {block['final_round']})" if block["final_round"] else ""),
        "start": block["start"]["objective"],
        "start_method": block["start"]["method"],
        "sent": block["subproblems_sent"],
        "rounds": len(block["rounds"]),
        "improving_parts": sum(len(r["improved_parts"]) for r in block["rounds"]),
        "refinements": sum(1 for r in block["rounds"] if r["refinement_improved"]),
        "optimum_found": sum(
            1 for r in block["rounds"] for s in r["subproblems"] if s.get("optimum_in_samples")
        ),
    }


def main() -> None:
    """Run the three solvers on each size and print a Markdown table."""
    parser = argparse.ArgumentParser(description="decomposed jobs vs SCIP vs swap-move annealing")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 500])
    parser.add_argument("--scip-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shots", type=int, default=2048)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        processes, api_url = start_stack(Path(tmp))
        try:
            for n in args.sizes:
                problem = factor_problem(n, n // 10, seed=args.seed)
                ours = run_job(api_url, problem, seed=args.seed, shots=args.shots)
                started = time.perf_counter()
                exact = scip(problem, time_limit=args.scip_seconds)
                scip_seconds = time.perf_counter() - started
                annealed = swap_anneal(problem, seconds=ours["seconds"], seed=args.seed)
                best = min(ours["objective"], exact.objective, annealed.objective)
                scale = max(1.0, abs(best)) * 1e-12
                for name, seconds, objective, how in (
                    (
                        "qhybrid decomposed job (API → result)",
                        ours["seconds"],
                        ours["objective"],
                        ours["final_step"],
                    ),
                    (
                        f"SCIP ({args.scip_seconds:g} s limit)",
                        scip_seconds,
                        exact.objective,
                        "proven optimal" if exact.optimal else "time limit",
                    ),
                    (
                        "swap-move annealing (job's wall time)",
                        annealed.seconds,
                        annealed.objective,
                        "annealing",
                    ),
                ):
                    rows.append(
                        {
                            "n": n,
                            "B": n // 10,
                            "solver": name,
                            "wall s": f"{seconds:.1f}",
                            "objective": f"{objective:.8g}",
                            "best of three": "yes" if objective <= best + scale else "no",
                            "answer from": how,
                        }
                    )
                notes.append(
                    f"n={n}: job source {ours['source']}; classical start {ours['start']:.8g} "
                    f"({ours['start_method']}); {ours['rounds']} rounds, {ours['sent']} sub-problems sent, "
                    f"{ours['improving_parts']} sampled sub-answers taken, {ours['refinements']} rounds "
                    f"improved by the classical refinement; {ours['optimum_found']} sub-problems had "
                    "their own optimum among the samples"
                )
        finally:
            for proc in reversed(processes):
                proc.stop()
    print(f"# decomposed jobs, factor-model universes (seed {args.seed}), budget n/10, {args.shots} shots")
    print(f"# {machine()}")
    print("\n".join(markdown_table(rows)))
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()

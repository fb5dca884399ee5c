"""Readout-error mitigation on a noisy device: P(optimum) with and without, on ``ibm-local:FakeTorino``.

Each instance (a seeded S&P 500 subset, n assets, budget n/2) goes through the job's own
PREPARING (``pipeline.prepare``: relaxation, obfuscation at the request's privacy level, angles,
transpilation for FakeTorino at level 3, OpenQASM 3), is run in qiskit-ibm-runtime's local
testing mode with FakeTorino's device noise (gate, readout and relaxation errors, as the
``ibm-local`` backend does), and the same counts are then judged twice on the true problem:
raw, and after ``pipeline.mitigate`` (the tensored per-qubit inverse on the observed outcomes,
with FakeTorino's published readout errors). Columns: share of shots on the exact optimum and on
feasible portfolios (a portfolio of the budget), raw and mitigated.

Run: ``.venv/bin/python -m benchmarks.readout [--sizes 6 8 10] [--instances 3] [--mixers xy-warm x-warm]``
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks.report import machine, markdown_header, markdown_row
from qhybrid.backends.ibm import fake_backend, ibm_target, run_fake_backend
from qhybrid.core.config import Settings
from qhybrid.domain.request import JobRequest
from qhybrid.jobs import pipeline
from qhybrid.portfolio.baselines import exact
from qhybrid.portfolio.data import sp500_problem
from qhybrid.quantum.decode import decode_counts

SHOTS = 4096


def _request(
    names: tuple[str, ...], mu: np.ndarray, sigma: np.ndarray, q: float, budget: int, mixer: str
) -> dict[str, Any]:
    return {
        "assets": [{"name": name, "expected_return": float(m)} for name, m in zip(names, mu, strict=True)],
        "covariance": sigma.tolist(),
        "risk_aversion": q,
        "budget": budget,
        "backend": "ibm-local:FakeTorino",
        "shots": SHOTS,
        "privacy": "standard",
        "options": {"reps": 1, "seed": 1, "mixer": mixer},
    }


def _shares(problem: Any, counts: dict[str, int], optimum: np.ndarray) -> tuple[float, float]:
    bits, weights = decode_counts(counts, problem.num_assets)
    total = float(weights.sum())
    hit = np.all(bits == optimum, axis=1)
    return float(weights[hit].sum()) / total, float(weights[problem.is_feasible(bits)].sum()) / total


def main() -> None:
    """Print the table and the means."""
    parser = argparse.ArgumentParser(description="Readout mitigation on FakeTorino")
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 8, 10])
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--mixers", nargs="+", default=["xy-warm", "x-warm"])
    args = parser.parse_args()
    settings = Settings()
    target = ibm_target(fake_backend("FakeTorino"))
    headers = ["n", "inst", "mixer", "mean readout error", "P(opt) raw", "P(opt) mitigated", "feas raw",
               "feas mitigated", "s"]  # fmt: skip
    print(
        f"# Readout mitigation on ibm-local:FakeTorino (device noise), {SHOTS} shots, p = 1, privacy standard"
    )
    print(f"# {machine()}")
    print("\n".join(markdown_header(headers)), flush=True)
    rows = []
    for n in args.sizes:
        for seed in range(1, args.instances + 1):
            problem = sp500_problem(n, n // 2, seed=seed, end_offset_days=756 * (seed - 1))
            optimum = np.array(exact(problem).bits, dtype=np.uint8)
            for mixer in args.mixers:
                started = time.perf_counter()
                body = _request(
                    problem.names, problem.expected_returns, problem.covariance, problem.risk_aversion,
                    problem.budget, mixer,
                )  # fmt: skip
                request = JobRequest.model_validate(body)
                preparation = pipeline.prepare(request, target, seed=seed, settings=settings)
                prepared = preparation.program.prepared
                counts, _ = run_fake_backend("FakeTorino", preparation.program.text, SHOTS, seed=seed)
                raw = pipeline.deobfuscate(counts, preparation.key)
                mitigated_sent, report = pipeline.mitigate(request, prepared, counts)
                mitigated = pipeline.deobfuscate(mitigated_sent, preparation.key)
                p_raw, f_raw = _shares(problem, raw, optimum)
                p_mit, f_mit = _shares(problem, mitigated, optimum)
                row = {
                    "n": n, "inst": seed, "mixer": mixer, "error": report.mean_error or 0.0,
                    "raw": p_raw, "mit": p_mit, "f_raw": f_raw, "f_mit": f_mit,
                    "s": time.perf_counter() - started,
                }  # fmt: skip
                rows.append(row)
                print(
                    markdown_row(
                        [
                            n,
                            seed,
                            mixer,
                            f"{row['error']:.4f}",
                            f"{p_raw:.4f}",
                            f"{p_mit:.4f}",
                            f"{f_raw:.3f}",
                            f"{f_mit:.3f}",
                            f"{row['s']:.1f}",
                        ]
                    ),
                    flush=True,
                )
    print()
    print(
        "| n | mixer | instances | mean P(opt) raw | mean P(opt) mitigated | mean feas raw "
        "| mean feas mitigated |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for mixer in args.mixers:
            group = [r for r in rows if r["n"] == n and r["mixer"] == mixer]
            print(
                f"| {n} | {mixer} | {len(group)} | {np.mean([r['raw'] for r in group]):.4f} | "
                f"{np.mean([r['mit'] for r in group]):.4f} | {np.mean([r['f_raw'] for r in group]):.3f} | "
                f"{np.mean([r['f_mit'] for r in group]):.3f} |"
            )


if __name__ == "__main__":
    main()

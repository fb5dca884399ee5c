"""Time to compute a job's efficient frontier (``GET /jobs/{id}/frontier``) by universe size.

Universes from a factor model (20 factors plus specific variance), 30 points each, the QP of
:mod:`qhybrid.portfolio.frontier` (cvxpy with Clarabel). Wall time of the whole frontier, median of
three runs.

Run: ``.venv/bin/python -m benchmarks.frontier [--sizes 10,40,100,500]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.report import machine, markdown_table
from qhybrid.portfolio.frontier import efficient_frontier


def universe(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(n, 20)) * 0.01
    return rng.normal(0.0008, 0.0005, n), loadings @ loadings.T + np.eye(n) * 1e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,40,100,500")
    args = parser.parse_args()
    rows = []
    for n in (int(size) for size in args.sizes.split(",")):
        mu, sigma = universe(n)
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            points = efficient_frontier(mu, sigma, 30)
            runs.append(time.perf_counter() - started)
        rows.append(
            {"assets": n, "points": len(points), "seconds (median of 3)": f"{statistics.median(runs):.2f}"}
        )
    print(machine())
    for line in markdown_table(rows):
        print(line)


if __name__ == "__main__":
    main()

"""Size and validation time of large requests (both input forms) against the body limit.

For n assets: a factor-model universe (``portfolio/factor_model.py``) sent as moments (μ and an
n × n covariance) and as a price history of ``rows`` days, serialised with full float64 text as a
client's ``json.dumps`` writes it. Validation is ``JobRequest.model_validate_json`` (what FastAPI
runs on the body), best of ``--repeat`` runs.

Run: ``.venv/bin/python -m benchmarks.large_requests [--sizes 100 500] [--rows 260 756]``
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from benchmarks.report import machine, markdown_table
from qhybrid.core.config import Settings
from qhybrid.domain.request import JobRequest
from qhybrid.portfolio.factor_model import factor_universe


def moments_body(n: int) -> dict[str, Any]:
    """A moments request of ``n`` synthetic assets."""
    names, mu, sigma = factor_universe(n, seed=3)
    return {
        "assets": [{"name": name, "expected_return": float(m)} for name, m in zip(names, mu, strict=True)],
        "covariance": sigma.tolist(),
        "budget": n // 10,
    }


def prices_body(n: int, rows: int) -> dict[str, Any]:
    """A price-history request of ``n`` synthetic assets over ``rows`` days."""
    names, mu, sigma = factor_universe(n, seed=4)
    returns = np.random.default_rng(4).multivariate_normal(mu, sigma, size=rows - 1)
    prices = 100.0 * np.vstack([np.ones(n), np.cumprod(1.0 + returns, axis=0)])
    return {"prices": {"assets": list(names), "values": prices.tolist()}, "budget": n // 10}


def main() -> None:
    """Print one row per (form, n, rows)."""
    parser = argparse.ArgumentParser(description="large requests: size and validation time")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--rows", type=int, nargs="+", default=[260, 756])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    limit = Settings().max_body_bytes
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        cases = [("moments", None, moments_body(n))] + [("prices", r, prices_body(n, r)) for r in args.rows]
        for form, days, body in cases:
            text = json.dumps(body)
            best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                JobRequest.model_validate_json(text)
                best = min(best, time.perf_counter() - started)
            rows.append(
                {
                    "form": form,
                    "assets": n,
                    "rows": "–" if days is None else days,
                    "body MB": f"{len(text) / 1e6:.1f}",
                    "within 16 MB default": "yes" if len(text) <= limit else "no",
                    "validation s (best)": f"{best:.3f}",
                }
            )
    print(f"# large requests; QHYBRID_MAX_BODY_BYTES default {limit}")
    print(f"# {machine()}")
    print("\n".join(markdown_table(rows)))


if __name__ == "__main__":
    main()

"""Seeded random portfolio problems shared by the portfolio and quantum tests."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qhybrid.portfolio.selection import SelectionProblem


def random_problem(n: int, budget: int, seed: int, *, kind: str = "psd") -> SelectionProblem:
    """A random instance.

    Kinds: ``"psd"`` a realistic factor-model covariance with small positive returns;
    ``"negative"`` a covariance with strongly negative correlations and returns of both signs;
    ``"large_mu"`` returns that dwarf the risk term; ``"indefinite"`` a symmetric but indefinite
    "covariance" (the QUBO argument does not need positive semidefiniteness).
    """
    rng = np.random.default_rng(seed)
    if kind == "psd":
        factors = rng.normal(scale=0.1, size=(n, 2))
        cov = factors @ factors.T + np.diag(rng.uniform(0.005, 0.03, size=n))
        mu = rng.uniform(0.0, 0.15, size=n)
        risk = 0.5
    elif kind == "negative":
        a = rng.normal(size=(n, n))
        cov = a @ a.T / n
        mu = rng.normal(size=n)
        risk = float(rng.uniform(0.2, 3.0))
    elif kind == "large_mu":
        a = rng.normal(size=(n, n))
        cov = a @ a.T / n
        mu = rng.normal(scale=100.0, size=n)
        risk = 1.0
    elif kind == "indefinite":
        a = rng.normal(size=(n, n))
        cov = (a + a.T) / 2.0
        mu = rng.normal(size=n)
        risk = 1.5
    else:
        raise ValueError(kind)
    return SelectionProblem(
        names=tuple(f"asset{i}" for i in range(n)),
        expected_returns=mu,
        covariance=cov,
        risk_aversion=risk,
        budget=budget,
    )


def all_bits(n: int) -> NDArray[np.uint8]:
    """Every bit vector of length ``n``; row ``k`` is the basis index ``k`` (bit i = x_i)."""
    index = np.arange(1 << n)
    return ((index[:, np.newaxis] >> np.arange(n)[np.newaxis, :]) & 1).astype(np.uint8)

"""Turning measured bitstrings back into a portfolio decision, judged on the true data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qhybrid.portfolio.model import PortfolioProblem, as_bit_matrix

#: When no sample is feasible, this many of the most frequent distinct samples are repaired.
REPAIR_CANDIDATES = 32


@dataclass(frozen=True)
class SampleAnalysis:
    """What a batch of measurement outcomes says about the portfolio.

    Attributes:
        best_bits: The best selection found (always feasible).
        best_objective: Its true objective ``q · xᵀΣx − μᵀx``.
        source: ``"sample"`` if it was measured as such, ``"repaired"`` if no sample was feasible
            and it came from repairing the most frequent samples.
        shots: Total number of shots.
        distinct: Number of distinct outcomes observed.
        feasible_share: Share of shots that bought exactly ``budget`` assets.
        best_share: Share of shots equal to ``best_bits`` (0 for a repaired, unseen selection).
        optimum_share: Share of shots equal to the given optimum, ``None`` if none was given.
    """

    best_bits: tuple[int, ...]
    best_objective: float
    source: str
    shots: int
    distinct: int
    feasible_share: float
    best_share: float
    optimum_share: float | None

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dictionary (tuples become lists)."""
        return {
            "best_bits": list(self.best_bits),
            "best_objective": self.best_objective,
            "source": self.source,
            "shots": self.shots,
            "distinct": self.distinct,
            "feasible_share": self.feasible_share,
            "best_share": self.best_share,
            "optimum_share": self.optimum_share,
        }


def repair(problem: PortfolioProblem, x: ArrayLike) -> NDArray[np.uint8]:
    """Greedily bring one selection to the budget.

    While fewer than ``budget`` assets are held, add the asset whose addition lowers the
    objective most; while more are held, drop the one whose removal lowers it most. Ties go to
    the lowest asset index. Each step uses the exact marginal change, computed for all candidate
    assets at once: adding ``i`` changes ``f`` by ``q(Σ_ii + 2(Σx)_i) − μ_i``, dropping ``i``
    by ``μ_i − q(2(Σx)_i − Σ_ii)``.

    Args:
        problem: The portfolio problem.
        x: One bit vector of shape ``(n,)``.

    Returns:
        A feasible bit vector (``uint8``); ``x`` itself (as a copy) if it was already feasible.
    """
    if np.ndim(x) != 1:
        raise ValueError(f"repair takes one bit vector, got shape {np.shape(x)}")
    bits = as_bit_matrix(x, problem.num_assets)[0]
    q = problem.risk_aversion
    cov = problem.covariance
    mu = problem.expected_returns
    diagonal = np.diag(cov)
    load = cov @ bits  # (Σx)_i, updated incrementally as assets come and go
    held = round(float(bits.sum()))
    while held != problem.budget:
        if held < problem.budget:
            change = np.where(bits == 0.0, q * (diagonal + 2.0 * load) - mu, np.inf)
            i = int(np.argmin(change))
            bits[i] = 1.0
            load += cov[:, i]
            held += 1
        else:
            change = np.where(bits == 1.0, mu - q * (2.0 * load - diagonal), np.inf)
            i = int(np.argmin(change))
            bits[i] = 0.0
            load -= cov[:, i]
            held -= 1
    return np.asarray(bits, dtype=np.uint8)


def analyse_samples(
    problem: PortfolioProblem,
    bitstrings: NDArray[np.uint8],
    counts: NDArray[np.int64],
    optimum_bits: tuple[int, ...] | None = None,
) -> SampleAnalysis:
    """Find the best feasible selection among measured outcomes, on the TRUE objective.

    The QUBO (with its penalty) is never used here: feasibility is checked and objectives are
    computed on the :class:`PortfolioProblem` itself. Among feasible samples the lowest objective
    wins, ties going to the more frequent one, then to the one holding the lowest asset indices
    (the tie rule of :func:`~qhybrid.portfolio.classical.brute_force`). If
    no sample is feasible, the :data:`REPAIR_CANDIDATES` most frequent ones are repaired with
    :func:`repair` and the best repaired selection is reported.

    Args:
        problem: The portfolio problem.
        bitstrings: Outcomes, shape ``(m, n)``, 0/1; repeated rows are merged.
        counts: Shots per row, shape ``(m,)``, non-negative with a positive total.
        optimum_bits: The known optimum (e.g. from brute force), to report how often it was seen.

    Returns:
        The analysis.

    Raises:
        ValueError: On inconsistent shapes, non-binary entries, negative counts or zero shots.
    """
    n = problem.num_assets
    raw = np.asarray(bitstrings)
    if raw.ndim != 2 or raw.shape[1] != n:
        raise ValueError(f"bitstrings must have shape (m, {n}), got {raw.shape}")
    weights = np.asarray(counts)
    if weights.shape != (raw.shape[0],):
        raise ValueError(f"counts must have shape {(raw.shape[0],)}, got {weights.shape}")
    if weights.size and (not np.issubdtype(weights.dtype, np.integer) or weights.min() < 0):
        raise ValueError("counts must be non-negative integers")
    rows = as_bit_matrix(raw, n).astype(np.uint8)
    if optimum_bits is not None:
        as_bit_matrix(np.asarray(optimum_bits), n)  # validates length and 0/1 entries

    # Merge repeated outcomes and forget outcomes that were never seen.
    unique, inverse = np.unique(rows, axis=0, return_inverse=True)
    merged = np.bincount(inverse.reshape(-1), weights=weights, minlength=unique.shape[0])
    seen = merged > 0
    unique = unique[seen]
    merged = np.rint(merged[seen]).astype(np.int64)
    shots = int(merged.sum())
    if shots <= 0:
        raise ValueError("there must be at least one shot")

    feasible = problem.is_feasible(unique)
    if feasible.any():
        candidates = unique[feasible]
        objectives = problem.objective(candidates)
        # np.lexsort's last key is the primary one: objective, then frequency, then x_0 = 1
        # before x_0 = 0, and so on (the earliest combination, as in brute_force).
        keys = (*(1 - candidates.T[::-1].astype(np.int64)), -merged[feasible], objectives)
        best = candidates[np.lexsort(keys)[0]]
        source = "sample"
    else:
        order = np.lexsort((*unique.T[::-1], -merged))[:REPAIR_CANDIDATES]
        repaired = np.stack([repair(problem, unique[k]) for k in order])
        objectives = problem.objective(repaired)
        # argmin keeps the first minimum, i.e. the one repaired from the most frequent sample.
        best = repaired[int(np.argmin(objectives))]
        source = "repaired"

    def share(bits: NDArray[np.uint8]) -> float:
        match = np.all(unique == bits[np.newaxis, :], axis=1)
        return float(merged[match].sum()) / shots

    optimum_share = None
    if optimum_bits is not None:
        optimum_share = share(np.asarray(optimum_bits, dtype=np.uint8))
    return SampleAnalysis(
        best_bits=tuple(int(b) for b in best),
        best_objective=float(problem.objective(best)[0]),
        source=source,
        shots=shots,
        distinct=int(unique.shape[0]),
        feasible_share=float(merged[feasible].sum()) / shots,
        best_share=share(best),
        optimum_share=optimum_share,
    )

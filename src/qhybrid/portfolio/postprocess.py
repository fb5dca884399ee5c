"""From measured bitstrings to the answer a quant can defend, on the TRUE objective.

Two answers are reported side by side, so the quantum part's own merit stays visible:

* the *quantum best*: the best feasible measured sample (or, if none was feasible, the best
  repaired one among the most frequent samples) — what the circuit delivered;
* the *refined* answer: the best point after repairing and locally improving the most promising
  samples with the classical moves of the formulation — what the hybrid pipeline returns.

The QUBO and its penalty are never used here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qhybrid.portfolio.formulation import Formulation
from qhybrid.portfolio.lots import LotsProblem
from qhybrid.portfolio.model import as_bit_matrix


@dataclass(frozen=True)
class PostProcessed:
    """What the samples gave, before and after classical refinement.

    Attributes:
        quantum_best_bits: The best measured feasible sample, or the best repaired one.
        quantum_best_objective: Its true objective.
        quantum_source: ``"sample"`` or ``"repaired"`` (no sample was feasible).
        refined_bits: The returned answer: the best of everything below.
        refined_objective: Its true objective (``≤ quantum_best_objective``).
        found_by: The step that produced the answer: ``"sample"`` (a measured feasible sample
            already was the best), ``"repair"`` (repairing an infeasible sample) or
            ``"local_search"`` (the local search improved on both).
        shots: Total shots.
        distinct: Distinct outcomes observed.
        feasible_share: Share of shots that were feasible.
        quantum_best_share: Share of shots that measured the quantum best decision.
        optimum_share: Share of shots that measured the given optimum, ``None`` without one.
        optimum_in_samples: Whether the optimum was measured at all, ``None`` without one.
    """

    quantum_best_bits: tuple[int, ...]
    quantum_best_objective: float
    quantum_source: str
    refined_bits: tuple[int, ...]
    refined_objective: float
    found_by: str
    shots: int
    distinct: int
    feasible_share: float
    quantum_best_share: float
    optimum_share: float | None
    optimum_in_samples: bool | None

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dictionary (tuples become lists)."""
        return {
            "quantum_best_bits": list(self.quantum_best_bits),
            "quantum_best_objective": self.quantum_best_objective,
            "quantum_source": self.quantum_source,
            "refined_bits": list(self.refined_bits),
            "refined_objective": self.refined_objective,
            "found_by": self.found_by,
            "shots": self.shots,
            "distinct": self.distinct,
            "feasible_share": self.feasible_share,
            "quantum_best_share": self.quantum_best_share,
            "optimum_share": self.optimum_share,
            "optimum_in_samples": self.optimum_in_samples,
        }


def _decisions(f: Formulation, rows: NDArray[np.uint8]) -> NDArray[np.int64]:
    """What each row decides: the bits themselves, or the lots for a lot encoding.

    Several codes can hold the same lots (coefficients 1 and 1 both add one lot), and a shot of
    either measured the same portfolio, so shares are counted on decisions, not on codes.
    """
    if isinstance(f, LotsProblem):
        return f.lots_of(rows)
    return rows.astype(np.int64)


def postprocess(
    f: Formulation,
    bitstrings: NDArray[np.uint8],
    counts: NDArray[np.int64],
    *,
    optimum_bits: tuple[int, ...] | None = None,
    top_k: int = 32,
) -> PostProcessed:
    """Judge measured samples on the true objective and refine the best of them classically.

    Steps, all deterministic:

    1. Merge repeated outcomes; evaluate every distinct one on the true objective.
    2. Quantum best: the feasible sample of lowest objective (ties: more frequent, then the
       lexicographically larger bit row, i.e. the earliest combination as in
       :func:`~qhybrid.portfolio.classical.brute_force`); if none is feasible, the
       ``top_k`` most frequent samples are repaired and the best repaired point is taken (ties:
       the more frequent source).
    3. Candidates: the ``top_k`` distinct samples ranked feasible first by objective, then
       infeasible by frequency (the order of step 2, so the quantum best is among them). Each is
       repaired (:meth:`Formulation.repair`) and then improved (:meth:`Formulation.local_search`).
    4. The answer is the lowest objective among the quantum best, the repaired candidates and
       the locally optimal ones; on a tie the earliest stage (sample, repair, local search),
       then the earliest candidate wins, which is what ``found_by`` reports.

    Args:
        f: The formulation the samples encode.
        bitstrings: Outcomes, shape ``(m, num_variables)``, 0/1; repeated rows are merged.
        counts: Shots per row, shape ``(m,)``, non-negative integers with a positive total.
        optimum_bits: A known optimum (e.g. from :func:`~qhybrid.portfolio.baselines.exact`), to
            report how often its decision was measured.
        top_k: How many candidates are refined (and repaired when no sample is feasible).

    Returns:
        The post-processed result.

    Raises:
        ValueError: On inconsistent shapes, non-binary entries, negative counts, zero shots or
            ``top_k < 1``.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    nv = f.num_variables
    raw = np.asarray(bitstrings)
    if raw.ndim != 2 or raw.shape[1] != nv:
        raise ValueError(f"bitstrings must have shape (m, {nv}), got {raw.shape}")
    weights = np.asarray(counts)
    if weights.shape != (raw.shape[0],):
        raise ValueError(f"counts must have shape {(raw.shape[0],)}, got {weights.shape}")
    if weights.size and (not np.issubdtype(weights.dtype, np.integer) or weights.min() < 0):
        raise ValueError("counts must be non-negative integers")
    rows = as_bit_matrix(raw, nv).astype(np.uint8)
    if optimum_bits is not None:
        as_bit_matrix(np.asarray(optimum_bits), nv)  # validates length and 0/1 entries

    unique, inverse = np.unique(rows, axis=0, return_inverse=True)
    merged = np.bincount(inverse.reshape(-1), weights=weights, minlength=unique.shape[0])
    seen = merged > 0
    unique = unique[seen]
    merged = np.rint(merged[seen]).astype(np.int64)
    shots = int(merged.sum())
    if shots <= 0:
        raise ValueError("there must be at least one shot")

    feasible = f.is_feasible(unique)
    objectives = f.objective(unique)
    # Ranking of step 3 (np.lexsort: last key primary). Lexicographically larger rows first,
    # as brute_force's tie rule; infeasible rows sort after feasible ones, by frequency.
    reversed_bits = tuple(1 - unique.T[::-1].astype(np.int64))
    rank_value = np.where(feasible, objectives, 0.0)
    order = np.lexsort((*reversed_bits, -merged, rank_value, ~feasible))
    candidates = order[:top_k]

    repaired = [f.repair(unique[k]) for k in candidates]
    repaired_values = f.objective(np.stack(repaired))
    if feasible.any():
        quantum_best = unique[order[0]]
        quantum_source = "sample"
        found_by = "sample"
    else:
        # argmin keeps the first minimum: the point repaired from the most frequent sample.
        quantum_best = repaired[int(np.argmin(repaired_values))]
        quantum_source = "repaired"
        found_by = "repair"
    quantum_objective = float(f.objective(quantum_best)[0])

    best_bits, best_value = quantum_best, quantum_objective
    # Batched objective evaluations of the same bits can differ in the last ulp (different
    # summation orders), so a later stage must win by more than rounding to take the credit.
    tolerance = 1e-12 * max(1.0, abs(quantum_objective))
    k = int(np.argmin(repaired_values))
    if repaired_values[k] < best_value - tolerance:
        best_bits, best_value, found_by = repaired[k], float(repaired_values[k]), "repair"
    improved = [f.local_search(bits) for bits in repaired]
    improved_values = f.objective(np.stack(improved))
    k = int(np.argmin(improved_values))
    if improved_values[k] < best_value - tolerance:
        best_bits, best_value, found_by = improved[k], float(improved_values[k]), "local_search"

    decisions = _decisions(f, unique)

    def share(bits: NDArray[np.uint8]) -> float:
        match = np.all(decisions == _decisions(f, bits[np.newaxis, :])[0], axis=1)
        return float(merged[match].sum()) / shots

    optimum_share: float | None = None
    optimum_in_samples: bool | None = None
    if optimum_bits is not None:
        optimum_share = share(np.asarray(optimum_bits, dtype=np.uint8))
        optimum_in_samples = optimum_share > 0.0
    return PostProcessed(
        quantum_best_bits=tuple(int(b) for b in quantum_best),
        quantum_best_objective=quantum_objective,
        quantum_source=quantum_source,
        refined_bits=tuple(int(b) for b in best_bits),
        refined_objective=best_value,
        found_by=found_by,
        shots=shots,
        distinct=int(unique.shape[0]),
        feasible_share=float(merged[feasible].sum()) / shots,
        quantum_best_share=share(np.asarray(quantum_best, dtype=np.uint8)),
        optimum_share=optimum_share,
        optimum_in_samples=optimum_in_samples,
    )

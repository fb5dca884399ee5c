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

from qhybrid.portfolio.formulation import Formulation, SearchMemo, as_bit_matrix, unique_rows
from qhybrid.portfolio.lots import LotsProblem


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


@dataclass(frozen=True)
class Judged:
    """The samples judged on the true objective, before any refinement.

    Attributes:
        unique: Distinct outcomes, ``(m, num_variables)``.
        counts: Shots per distinct outcome.
        feasible: Whether each distinct outcome meets the constraint.
        candidates: Indices into ``unique`` of the ``top_k`` most promising outcomes: feasible
            ones by objective, then infeasible ones by frequency.
        repaired: Each candidate brought to the constraint (:meth:`Formulation.repair`).
        repaired_objectives: Their true objectives.
        quantum_best: The best feasible sample, or the best repaired candidate if none is feasible.
        quantum_objective: Its true objective.
        quantum_source: ``"sample"`` or ``"repaired"``.
        shots: Total shots.
    """

    unique: NDArray[np.uint8]
    counts: NDArray[np.int64]
    feasible: NDArray[np.bool_]
    candidates: NDArray[np.int64]
    repaired: tuple[NDArray[np.uint8], ...]
    repaired_objectives: NDArray[np.float64]
    quantum_best: NDArray[np.uint8]
    quantum_objective: float
    quantum_source: str
    shots: int


def _merged(
    f: Formulation, bitstrings: NDArray[np.uint8], counts: NDArray[np.int64]
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Validate the samples and merge repeated outcomes (zero counts dropped)."""
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
    unique, inverse, _ = unique_rows(rows)
    merged = np.bincount(inverse, weights=weights, minlength=unique.shape[0])
    seen = merged > 0
    return unique[seen], np.rint(merged[seen]).astype(np.int64)


def judge(
    f: Formulation, bitstrings: NDArray[np.uint8], counts: NDArray[np.int64], *, top_k: int = 32
) -> Judged:
    """Judge measured samples on the true objective: the circuit's own best, and the candidates.

    Deterministic. Repeated outcomes are merged and every distinct one is evaluated. The quantum
    best is the feasible sample of lowest objective (ties: more frequent, then the
    lexicographically larger bit row, i.e. the earliest combination as in
    :func:`~qhybrid.portfolio.classical.brute_force`); if none is feasible, the ``top_k`` most
    frequent samples are repaired and the best repaired point is taken (ties: the more frequent
    source). The candidates for :func:`refine` are the ``top_k`` distinct samples ranked feasible
    first by objective, then infeasible by frequency, so the quantum best is among them.

    Raises:
        ValueError: On inconsistent shapes, non-binary entries, negative counts, zero shots or
            ``top_k < 1``.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    unique, merged = _merged(f, bitstrings, counts)
    shots = int(merged.sum())
    if shots <= 0:
        raise ValueError("there must be at least one shot")
    feasible = f.is_feasible(unique)
    objectives = f.objective(unique)
    # np.lexsort: last key primary. Lexicographically larger rows first, as brute_force's tie
    # rule; infeasible rows sort after feasible ones, by frequency.
    reversed_bits = tuple(1 - unique.T[::-1].astype(np.int64))
    rank_value = np.where(feasible, objectives, 0.0)
    order = np.lexsort((*reversed_bits, -merged, rank_value, ~feasible))
    candidates = order[:top_k]
    # Repair returns a feasible row as it is (Formulation.repair): only the others need it.
    repaired = tuple(unique[k].copy() if feasible[k] else f.repair(unique[k]) for k in candidates.tolist())
    repaired_values = f.objective(np.stack(repaired))
    if feasible.any():
        quantum_best, quantum_source = unique[order[0]], "sample"
    else:
        # argmin keeps the first minimum: the point repaired from the most frequent sample.
        quantum_best, quantum_source = repaired[int(np.argmin(repaired_values))], "repaired"
    return Judged(
        unique=unique,
        counts=merged,
        feasible=feasible,
        candidates=candidates,
        repaired=repaired,
        repaired_objectives=repaired_values,
        quantum_best=np.asarray(quantum_best, dtype=np.uint8),
        quantum_objective=float(f.objective(quantum_best)[0]),
        quantum_source=quantum_source,
        shots=shots,
    )


def refine(f: Formulation, judged: Judged, *, optimum_bits: tuple[int, ...] | None = None) -> PostProcessed:
    """Improve the judged candidates classically and report both answers side by side.

    Each candidate, already repaired, is improved by :meth:`Formulation.local_search`. The answer
    is the lowest objective among the quantum best, the repaired candidates and the locally
    optimal ones; on a tie the earliest stage (sample, repair, local search), then the earliest
    candidate wins, which is what ``found_by`` reports.

    Args:
        f: The formulation the samples encode.
        judged: What :func:`judge` made of the samples.
        optimum_bits: A known optimum (e.g. from :func:`~qhybrid.portfolio.baselines.exact`), to
            report how often its decision was measured.
    """
    if optimum_bits is not None:
        as_bit_matrix(np.asarray(optimum_bits), f.num_variables)  # validates length and 0/1 entries
    best_bits, best_value = judged.quantum_best, judged.quantum_objective
    found_by = "sample" if judged.quantum_source == "sample" else "repair"
    # Batched objective evaluations of the same bits can differ in the last ulp (different
    # summation orders), so a later stage must win by more than rounding to take the credit.
    tolerance = 1e-12 * max(1.0, abs(judged.quantum_objective))
    k = int(np.argmin(judged.repaired_objectives))
    if judged.repaired_objectives[k] < best_value - tolerance:
        best_bits, best_value, found_by = judged.repaired[k], float(judged.repaired_objectives[k]), "repair"
    # One memo for all candidates: their searches often pass through the same states.
    memo: SearchMemo = {}
    improved = [f.local_search(bits, memo) for bits in judged.repaired]
    improved_values = f.objective(np.stack(improved))
    k = int(np.argmin(improved_values))
    if improved_values[k] < best_value - tolerance:
        best_bits, best_value, found_by = improved[k], float(improved_values[k]), "local_search"

    decisions = _decisions(f, judged.unique)

    def share(bits: NDArray[np.uint8]) -> float:
        match = np.all(decisions == _decisions(f, bits[np.newaxis, :])[0], axis=1)
        return float(judged.counts[match].sum()) / judged.shots

    optimum_share: float | None = None
    optimum_in_samples: bool | None = None
    if optimum_bits is not None:
        optimum_share = share(np.asarray(optimum_bits, dtype=np.uint8))
        optimum_in_samples = optimum_share > 0.0
    return PostProcessed(
        quantum_best_bits=tuple(int(b) for b in judged.quantum_best),
        quantum_best_objective=judged.quantum_objective,
        quantum_source=judged.quantum_source,
        refined_bits=tuple(int(b) for b in best_bits),
        refined_objective=best_value,
        found_by=found_by,
        shots=judged.shots,
        distinct=int(judged.unique.shape[0]),
        feasible_share=float(judged.counts[judged.feasible].sum()) / judged.shots,
        quantum_best_share=share(judged.quantum_best),
        optimum_share=optimum_share,
        optimum_in_samples=optimum_in_samples,
    )


def postprocess(
    f: Formulation,
    bitstrings: NDArray[np.uint8],
    counts: NDArray[np.int64],
    *,
    optimum_bits: tuple[int, ...] | None = None,
    top_k: int = 32,
) -> PostProcessed:
    """Judge measured samples on the true objective and refine the best of them classically.

    :func:`judge` then :func:`refine`; see both.

    Args:
        f: The formulation the samples encode.
        bitstrings: Outcomes, shape ``(m, num_variables)``, 0/1; repeated rows are merged.
        counts: Shots per row, shape ``(m,)``, non-negative integers with a positive total.
        optimum_bits: A known optimum, to report how often its decision was measured.
        top_k: How many candidates are refined (and repaired when no sample is feasible).

    Raises:
        ValueError: On inconsistent shapes, non-binary entries, negative counts, zero shots or
            ``top_k < 1``.
    """
    if optimum_bits is not None:
        as_bit_matrix(np.asarray(optimum_bits), f.num_variables)
    return refine(f, judge(f, bitstrings, counts, top_k=top_k), optimum_bits=optimum_bits)

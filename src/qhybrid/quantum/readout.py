"""Readout-error mitigation of measured counts: the tensored per-qubit inverse, on the observed outcomes.

A device that publishes a readout error ``e_i`` per qubit (the probability that a measurement
returns the wrong bit; symmetric, as a Qiskit ``Target`` gives it) turns the true distribution
``p`` into ``q = A p`` with ``A = ⊗_i M_i``, ``M_i = [[1 − e_i, e_i], [e_i, 1 − e_i]]``. Its inverse
is the tensor product of the 2 × 2 inverses, so one entry is a closed form:

    ``A⁻¹(t, s) = K · Π_{i : t_i ≠ s_i} r_i``, ``r_i = −e_i / (1 − e_i)``, ``K = Π_i (1 − e_i)/(1 − 2e_i)``.

The correction is evaluated only on the outcomes that were observed (like M3's subspace reduction,
Nation et al. 2021): ``p̂(t) = Σ_s A⁻¹(t, s) q(s)`` for every observed ``t``, as one matrix product
in chunks (``m × m`` entries for ``m`` distinct outcomes; the Hamming distances come from a bit
matrix product). The quasi-probabilities are then projected back to a distribution (negative
entries dropped, renormalised) and rounded to integer counts with the same total (largest
remainders), so that everything downstream keeps reading counts.

Why not the ``mthree`` package: it needs Cython, orjson, psutil and runningman at run time, and
calibrates by running circuits on the device; here the calibration is the device's published
errors, and the tensored inverse on the observed outcomes is a few lines of numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from qhybrid.quantum.decode import decode_counts

#: Rows of ``A⁻¹`` evaluated at once (memory ``chunk × m`` floats).
_CHUNK = 512


def mitigate_counts(counts: Mapping[str, int], errors: Sequence[float]) -> dict[str, int]:
    """Counts corrected for per-qubit readout errors, with the same total.

    Args:
        counts: Outcome → shots, character ``i`` = classical bit ``i`` (the backend contract).
        errors: ``e_i`` per classical bit, each in ``[0, ½)``.

    Returns:
        Corrected counts over the observed outcomes (outcomes whose corrected count rounds to 0
        are dropped); the total is unchanged.

    Raises:
        ValueError: On errors out of range or of the wrong length, or malformed counts.
    """
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 1 or not np.all(np.isfinite(e)) or np.any((e < 0.0) | (e >= 0.5)):
        raise ValueError("readout errors must be numbers in [0, 0.5)")
    bits, shots = decode_counts(counts, e.size)
    total = int(shots.sum())
    if total == 0:
        return {}
    corrected = corrected_distribution(bits, shots.astype(np.float64) / total, e)
    integers = _round_counts(corrected, total)
    keep = integers > 0
    outcomes = (bits[keep] + ord("0")).astype(np.uint8)
    return {row.tobytes().decode("ascii"): int(n) for row, n in zip(outcomes, integers[keep], strict=True)}


def corrected_distribution(
    bits: NDArray[np.uint8], observed: NDArray[np.float64], errors: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``A⁻¹ q`` on the observed outcomes, projected to a probability distribution.

    Args:
        bits: Distinct observed outcomes ``(m, n)``.
        observed: Their observed probabilities ``q`` (summing to 1).
        errors: ``e_i`` per bit.

    Returns:
        Probabilities over the same outcomes (non-negative, summing to 1).
    """
    rows = np.asarray(bits, dtype=np.float64)
    ratio = errors / (1.0 - errors)
    # A zero error contributes a factor 0 on a differing bit: log 0 = −inf makes those terms vanish.
    with np.errstate(divide="ignore"):
        log_ratio = np.log(ratio)
    finite = np.isfinite(log_ratio)
    log_ratio = np.where(finite, log_ratio, 0.0)
    scale = float(np.prod((1.0 - errors) / (1.0 - 2.0 * errors)))
    ones = rows.sum(axis=1)
    weighted = rows @ log_ratio
    zero_rows = rows[:, ~finite]
    quasi = np.empty(rows.shape[0])
    for start in range(0, rows.shape[0], _CHUNK):
        block = rows[start : start + _CHUNK]
        # Hamming distance and Σ log r over the differing bits, for every (t, s) pair at once.
        distance = block.sum(axis=1)[:, np.newaxis] + ones[np.newaxis, :] - 2.0 * block @ rows.T
        log_sum = (
            weighted[start : start + _CHUNK, np.newaxis]
            + weighted[np.newaxis, :]
            - 2.0 * (block * log_ratio) @ rows.T
        )
        entries = np.exp(log_sum) * np.where(np.rint(distance) % 2 == 1, -1.0, 1.0)
        if zero_rows.shape[1]:
            # Bits with zero error: outcomes that differ there have A⁻¹ = 0.
            block_zero = block[:, ~finite]
            differs = block_zero.sum(axis=1)[:, np.newaxis] + zero_rows.sum(axis=1)[np.newaxis, :]
            differs = differs - 2.0 * block_zero @ zero_rows.T
            entries = np.where(differs > 0.5, 0.0, entries)
        quasi[start : start + block.shape[0]] = scale * (entries @ observed)
    positive = np.clip(quasi, 0.0, None)
    mass = float(positive.sum())
    if mass <= 0.0 or not math.isfinite(mass):
        return np.asarray(observed, dtype=np.float64)
    return positive / mass


def _round_counts(probabilities: NDArray[np.float64], total: int) -> NDArray[np.int64]:
    """Integers proportional to ``probabilities`` summing to ``total`` (largest remainders)."""
    exact = probabilities * total
    floor = np.floor(exact).astype(np.int64)
    missing = total - int(floor.sum())
    if missing > 0:
        order = np.argsort(-(exact - floor), kind="stable")
        floor[order[:missing]] += 1
    return floor


def mean_error(errors: Sequence[float]) -> float:
    """The mean readout error (reported with the result)."""
    return float(np.mean(np.asarray(errors, dtype=np.float64))) if len(errors) else 0.0

"""Independent Bernoulli variables conditioned on their sum: the rounding of a relaxed selection.

Given ``c ∈ [0, 1]^n`` (a relaxed selection, ``Σ c = B``) the *conditioned rounding* draws
``x ∈ {0, 1}^n`` with probability ``P(x) ∝ Π c_i^{x_i} (1 − c_i)^{1 − x_i}`` restricted to
``Σ x = B`` (the conditional Bernoulli distribution). It is the natural classical reference for a
warm-started, weight-preserving circuit, and it is also that circuit's start state: the amplitudes
of the ``"xy-warm"`` QAOA start are ``√P(x)``.

Everything follows from one table. With ``Z(l, m)`` = the total weight of the assignments of the
first ``l`` variables that hold ``m`` ones (``Z(l, m) = (1 − c_l) Z(l − 1, m) + c_l Z(l − 1, m − 1)``),

    ``P(x_l = 1 | m ones among variables 0..l) = c_l · Z(l, m − 1) / Z(l + 1, m)``

(0-based ``l``, ``Z`` over the first ``l`` variables). It depends only on ``(l, m)``, so the
distribution can be sampled exactly from the last variable down, and prepared by the
Bärtschi–Eidenbenz Dicke circuit with these probabilities in place of ``m / l``
(:func:`qhybrid.quantum.circuit.weighted_dicke_circuit`). Numbers only, no labels.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from qhybrid.domain.qubo import FloatArray


def _checked(values: FloatArray, weight: int) -> FloatArray:
    c = np.asarray(values, dtype=np.float64)
    if c.ndim != 1 or not np.all(np.isfinite(c)) or np.any((c < 0.0) | (c > 1.0)):
        raise ValueError("relaxed values must be a vector of numbers in [0, 1]")
    if isinstance(weight, bool) or not 0 <= int(weight) <= c.size:
        raise ValueError(f"weight must be in 0..{c.size}, got {weight!r}")
    # At least `weight` values must be positive and `n − weight` below one, or no assignment of
    # weight B has positive probability.
    if int(np.count_nonzero(c > 0.0)) < weight or int(np.count_nonzero(c < 1.0)) < c.size - weight:
        raise ValueError(f"no selection of {weight} variables has positive probability under these values")
    return c


def inclusion_table(values: FloatArray, weight: int) -> FloatArray:
    """``T[l, m] = P(x_l = 1 | m ones among variables 0..l)`` under the conditioned rounding.

    Args:
        values: ``c``, one value in ``[0, 1]`` per variable.
        weight: ``B``, the number of ones.

    Returns:
        Shape ``(n, B + 1)``. Entries that no assignment reaches (``Z(l + 1, m) = 0``) hold
        ``m / (l + 1)``, the unweighted Dicke value, so that every entry is a probability.

    Raises:
        ValueError: On values outside ``[0, 1]``, a weight out of range, or values under which
            no weight-``B`` assignment is possible.
    """
    c = _checked(values, weight)
    n, width = c.size, int(weight) + 1
    table = np.empty((n, width), dtype=np.float64)
    previous = np.zeros(width)
    previous[0] = 1.0  # Z(0, ·): the empty prefix holds zero ones
    for index in range(n):
        take = np.zeros(width)
        take[1:] = c[index] * previous[:-1]
        row = (1.0 - c[index]) * previous + take
        counts = np.arange(width)
        fallback = counts / (index + 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            table[index] = np.where(row > 0.0, take / np.where(row > 0.0, row, 1.0), fallback)
        # Rows are rescaled by their largest entry so that long prefixes cannot underflow; the
        # ratios above only use one row and the previous one, taken before rescaling.
        peak = float(row.max())
        previous = row / peak if peak > 0.0 else row
    return np.clip(table, 0.0, 1.0)


def sample(values: FloatArray, weight: int, shots: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """``shots`` exact draws of the conditioned rounding, vectorised over shots.

    Args:
        values: ``c``, one value in ``[0, 1]`` per variable.
        weight: ``B``.
        shots: Number of draws, ``≥ 0``.
        rng: Randomness.

    Returns:
        Bits, shape ``(shots, n)``; every row holds exactly ``B`` ones.

    Raises:
        ValueError: As :func:`inclusion_table`, or on a negative ``shots``.
    """
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    table = inclusion_table(values, weight)
    n = table.shape[0]
    bits = np.zeros((shots, n), dtype=np.uint8)
    remaining = np.full(shots, int(weight), dtype=np.int64)
    for index in range(n - 1, -1, -1):
        chosen = rng.random(shots) < table[index, remaining]
        bits[:, index] = chosen
        remaining -= chosen
    return bits


def log_probabilities(values: FloatArray, weight: int, bits: NDArray[np.uint8]) -> FloatArray:
    """Exact ``log P(x)`` of each row of ``bits`` under the conditioned rounding.

    Rows whose weight is not ``B`` get ``−inf``.

    Args:
        values: ``c``.
        weight: ``B``.
        bits: Shape ``(m, n)``.

    Raises:
        ValueError: As :func:`inclusion_table`, or on bits of the wrong width.
    """
    c = _checked(values, weight)
    rows = np.atleast_2d(np.asarray(bits, dtype=np.float64))
    if rows.shape[1] != c.size:
        raise ValueError(f"bit vectors must have {c.size} entries, got {rows.shape[1]}")
    # P(x) = Π_l P(x_l | ones among 0..l), read off the table from the last variable down.
    table = inclusion_table(c, weight)
    logp = np.zeros(rows.shape[0])
    remaining = np.full(rows.shape[0], int(weight), dtype=np.int64)
    valid = rows.sum(axis=1) == weight
    remaining[~valid] = 0
    with np.errstate(divide="ignore"):
        for index in range(c.size - 1, -1, -1):
            probability = table[index, np.clip(remaining, 0, weight)]
            bit = rows[:, index]
            logp += np.log(np.where(bit > 0.5, probability, 1.0 - probability))
            remaining -= bit.astype(np.int64)
    logp[~valid] = -np.inf
    return logp

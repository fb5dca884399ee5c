"""The abstract mathematics shared by the portfolio model, the proxy and the quantum code.

A :class:`Qubo` or an :class:`Ising` problem carries numbers only: no asset names, no amounts, no
labels. It is the vocabulary in which the trusted zone speaks to the quantum side.

Bit convention everywhere in qhybrid: variable ``i`` is bit ``i`` of a basis-state index (little
endian, as in Qiskit), ``x_i = 1`` is the state ``|1>`` and its spin is ``z_i = 1 - 2 x_i = -1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def _spin_table(num_bits: int) -> FloatArray:
    """Spins of every index below ``2^num_bits``: row ``a`` holds ``z_i = 1 − 2·bit_i(a)``."""
    index = np.arange(1 << num_bits, dtype=np.int64)[:, np.newaxis]
    bits = (index >> np.arange(num_bits, dtype=np.int64)[np.newaxis, :]) & 1
    return np.asarray(1.0 - 2.0 * bits, dtype=np.float64)


@dataclass(frozen=True)
class Qubo:
    """Minimise ``xᵀ Q x + offset`` over binary vectors ``x``.

    Attributes:
        matrix: Symmetric ``n × n`` matrix ``Q``; the diagonal holds the linear terms (``x_i² = x_i``).
        offset: Constant added to every energy.
    """

    matrix: FloatArray
    offset: float = 0.0

    def __post_init__(self) -> None:
        q = np.asarray(self.matrix, dtype=np.float64)
        if q.ndim != 2 or q.shape[0] != q.shape[1]:
            raise ValueError(f"QUBO matrix must be square, got shape {q.shape}")
        # Symmetrising keeps energies unchanged and lets every consumer assume Q == Qᵀ.
        object.__setattr__(self, "matrix", (q + q.T) / 2.0)

    @property
    def num_variables(self) -> int:
        """Number of binary variables."""
        return int(self.matrix.shape[0])

    def energy(self, x: NDArray[np.integer] | NDArray[np.bool_] | FloatArray) -> FloatArray:
        """Energies of one bit vector (shape ``(n,)``) or a batch (shape ``(m, n)``)."""
        xs = np.atleast_2d(np.asarray(x, dtype=np.float64))
        values = np.einsum("mi,ij,mj->m", xs, self.matrix, xs) + self.offset
        return np.asarray(values, dtype=np.float64)

    def to_ising(self) -> Ising:
        """The equivalent Ising problem under ``x_i = (1 - z_i) / 2``."""
        q = self.matrix
        h = -q.sum(axis=1) / 2.0
        couplings = np.triu(q, k=1) / 2.0
        offset = self.offset + float(np.trace(q)) / 2.0 + float(couplings.sum())
        return Ising(h=h, couplings=couplings, offset=offset)


@dataclass(frozen=True)
class Ising:
    """Minimise ``offset + Σ h_i z_i + Σ_{i<j} J_ij z_i z_j`` over spins ``z_i ∈ {+1, -1}``.

    Attributes:
        h: Local fields, shape ``(n,)``.
        couplings: Strictly upper-triangular ``J``, shape ``(n, n)``.
        offset: Constant added to every energy.
    """

    h: FloatArray
    couplings: FloatArray
    offset: float = 0.0

    def __post_init__(self) -> None:
        h = np.asarray(self.h, dtype=np.float64)
        j = np.asarray(self.couplings, dtype=np.float64)
        if j.shape != (h.size, h.size):
            raise ValueError(f"couplings must have shape {(h.size, h.size)}, got {j.shape}")
        # Only the upper triangle is meaningful; folding the lower one in accepts either layout.
        object.__setattr__(self, "h", h)
        object.__setattr__(self, "couplings", np.triu(j, k=1) + np.tril(j, k=-1).T)

    @property
    def num_qubits(self) -> int:
        """Number of spins (one qubit each)."""
        return int(self.h.size)

    def energy_of_bits(self, x: NDArray[np.integer] | NDArray[np.bool_] | FloatArray) -> FloatArray:
        """Energies of one bit vector or a batch of bit vectors (``x_i = 1`` means ``z_i = -1``)."""
        z = 1.0 - 2.0 * np.atleast_2d(np.asarray(x, dtype=np.float64))
        values = self.offset + z @ self.h + np.einsum("mi,ij,mj->m", z, self.couplings, z)
        return np.asarray(values, dtype=np.float64)

    def cost_vector(self) -> FloatArray:
        """Energy of every basis state, indexed by the integer whose bit ``i`` is ``x_i``.

        The spins are split into a low half (bits ``0 .. L−1``) and a high half (the rest). For
        an index ``a + 2^L b`` the energy is ``offset + c_low[a] + c_high[b] + z_low(a)ᵀ J_× z_high(b)``
        with ``J_×`` the couplings between the halves, so the whole vector is one
        ``(2^H × (H + 2)) @ ((H + 2) × 2^L)`` matrix product instead of one
        pass over ``2^n`` numbers per coupling. Memory is the result (``8 · 2^n`` bytes) plus
        ``O(n · 2^{n/2})``; ``n = 24`` takes a fraction of a second.
        """
        n = self.num_qubits
        low = n // 2
        high = n - low
        z_low = _spin_table(low)
        z_high = _spin_table(high)
        j = self.couplings
        h = self.h
        c_low = z_low @ h[:low] + np.einsum("ai,ij,aj->a", z_low, j[:low, :low], z_low)
        c_high = z_high @ h[low:] + np.einsum("bi,ij,bj->b", z_high, j[low:, low:], z_high)
        # Both halves' own energies ride along in the same product as two extra columns of ones,
        # so the 2^n result is written exactly once. Row b, column a is the index a + 2^L b: C
        # order makes the final reshape free.
        left = np.column_stack([z_high, c_high, np.ones(1 << high)])
        right = np.vstack([(z_low @ j[:low, low:]).T, np.ones(1 << low), c_low + self.offset])
        return np.asarray(left @ right, dtype=np.float64).reshape(-1)

    def scale(self) -> float:
        """A positive magnitude of the coefficients, used to normalise QAOA angles."""
        magnitude = float(max(np.abs(self.h).max(initial=0.0), np.abs(self.couplings).max(initial=0.0)))
        return magnitude if magnitude > 0.0 else 1.0

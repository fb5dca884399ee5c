"""XY-mixer QAOA simulated on the Hamming-weight-``B`` subspace only.

The ring XY mixer only swaps a ``1`` with a neighbouring ``0``, so it never changes the number of
ones: started in the span of the ``C(n, B)`` basis states of weight ``B`` (a Dicke state, or one
such basis state), the whole evolution stays there. Simulating just those amplitudes is exact and
needs ``C(n, B)`` instead of ``2^n`` numbers (184 756 instead of 1 048 576 at ``n = 20, B = 10``).

Basis: the weight-``B`` indices in increasing order (:func:`weight_basis`); bit ``i`` of an index is
qubit ``i``, as everywhere in qhybrid.

Mixer: one layer is the ORDERED product of the two-qubit rotations
``exp(−iβ (X_i X_j + Y_i Y_j) / 2)`` over the ring edges in the order of :func:`ring_edges`:
first the even edges ``(0,1), (2,3), …``, then the odd edges ``(1,2), (3,4), …``, then the
closing edge ``(n−1, 0)`` when it is not already there. Edges within the first two groups are
disjoint, so a circuit runs each group in one layer of two-qubit gates; the circuit
(:func:`qhybrid.quantum.engine.build_circuit`) applies ``RXX(β)·RYY(β)`` per edge in exactly this
order. On a pair of basis states that differ by swapping the bits of edge ``(i, j)`` the gate is the
2 × 2 rotation ``[[cos β, −i sin β], [−i sin β, cos β]]``; every other state is left alone. The
pairs of every edge are precomputed once (:class:`Subspace`), and each gate is applied as one
vectorised rotation on them.

Gradients come from a backward (adjoint) pass through every individual edge gate, for the mean
or the CVaR objective (:mod:`qhybrid.quantum.objective`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from qhybrid.domain import conditioned
from qhybrid.domain.qubo import FloatArray, Ising
from qhybrid.quantum.objective import Objective
from qhybrid.quantum.simulator import (
    AngleValues,
    ComplexArray,
    probabilities_of,
    single_threaded_blas,
    validated_angles,
)

IndexArray = NDArray[np.intp]

#: Basis states whose energies are computed per batch in :func:`subspace_cost`.
_COST_CHUNK = 1 << 16


def ring_edges(num_qubits: int) -> tuple[tuple[int, int], ...]:
    """The ring's edges in mixer order: even ``(0,1), (2,3)…``, odd ``(1,2), (3,4)…``, closing ``(n−1, 0)``.

    Two qubits have the single edge ``(0, 1)``; one qubit has none.

    Raises:
        ValueError: If ``num_qubits < 1``.
    """
    if num_qubits < 1:
        raise ValueError(f"num_qubits must be >= 1, got {num_qubits}")
    even = [(i, i + 1) for i in range(0, num_qubits - 1, 2)]
    odd = [(i, i + 1) for i in range(1, num_qubits - 1, 2)]
    closing = [(num_qubits - 1, 0)] if num_qubits > 2 else []
    return tuple(even + odd + closing)


def weight_basis(num_qubits: int, weight: int) -> NDArray[np.int64]:
    """Every basis index with exactly ``weight`` bits set among ``num_qubits``, increasing.

    Raises:
        ValueError: If ``weight`` is not in ``0..num_qubits`` or ``num_qubits`` is not in ``1..40``.
    """
    if not 1 <= num_qubits <= 40:
        raise ValueError(f"num_qubits must be in 1..40, got {num_qubits}")
    if not 0 <= weight <= num_qubits:
        raise ValueError(f"hamming weight must be in 0..{num_qubits}, got {weight}")
    # Scan 2^low indices at a time for each value of the high bits: memory stays O(2^low).
    low = min(num_qubits, 20)
    block = np.arange(1 << low, dtype=np.int64)
    block_weight = np.bitwise_count(block)
    parts = []
    for high in range(1 << (num_qubits - low)):
        wanted = weight - int(high).bit_count()
        if 0 <= wanted <= low:
            parts.append(block[block_weight == wanted] + (high << low))
    return np.concatenate(parts)


def basis_bits(basis: NDArray[np.int64], num_qubits: int) -> NDArray[np.uint8]:
    """Bit matrix of basis indices: row ``k``, column ``i`` is bit ``i`` of ``basis[k]``."""
    shifts = np.arange(num_qubits, dtype=np.int64)
    return ((basis[:, np.newaxis] >> shifts[np.newaxis, :]) & 1).astype(np.uint8)


def subspace_cost(ising: Ising, basis: NDArray[np.int64]) -> FloatArray:
    """The Ising energy of each basis state (a batched ``Ising.energy_of_bits``), memory ``O(chunk · n)``."""
    n = ising.num_qubits
    cost = np.empty(basis.size, dtype=np.float64)
    for start in range(0, basis.size, _COST_CHUNK):
        z = 1.0 - 2.0 * basis_bits(basis[start : start + _COST_CHUNK], n).astype(np.float64)
        cost[start : start + z.shape[0]] = (
            ising.offset + z @ ising.h + np.einsum("mi,mi->m", z @ ising.couplings, z)
        )
    return cost


@dataclass(frozen=True)
class Subspace:
    """The weight-``B`` basis and, per ring edge, the pairs of positions its XY gate rotates.

    Attributes:
        num_qubits: ``n``.
        weight: ``B``.
        basis: The ``C(n, B)`` indices, increasing.
        edges: :func:`ring_edges` of ``n``.
        pairs: For each edge ``(i, j)``, the positions ``p`` (bit ``i`` set, bit ``j`` clear) and
            ``q`` (the same index with the two bits swapped), each of size ``C(n−2, B−1)``.
    """

    num_qubits: int
    weight: int
    basis: NDArray[np.int64]
    edges: tuple[tuple[int, int], ...]
    pairs: tuple[tuple[IndexArray, IndexArray], ...]

    @property
    def dimension(self) -> int:
        """``C(n, B)``."""
        return int(self.basis.size)

    def position(self, index: int) -> int:
        """Position of a weight-``B`` basis index in :attr:`basis`.

        Raises:
            ValueError: If ``index`` is not in the subspace.
        """
        where = int(np.searchsorted(self.basis, index))
        if where >= self.basis.size or int(self.basis[where]) != index:
            raise ValueError(f"basis state {index} does not have hamming weight {self.weight}")
        return where


@lru_cache(maxsize=4)
def build_subspace(num_qubits: int, weight: int) -> Subspace:
    """The :class:`Subspace` of ``(n, B)``; cached, since the index tables only depend on the sizes.

    Memory: the basis (``8·C(n, B)`` bytes) and ``n`` pairs of index arrays of ``C(n−2, B−1)``
    entries each: 17 MB at ``n = 20, B = 10``, 290 MB at ``n = 24, B = 12``.

    Raises:
        ValueError: As :func:`weight_basis`.
    """
    basis = weight_basis(num_qubits, weight)
    edges = ring_edges(num_qubits)
    pairs = []
    for i, j in edges:
        selected = ((basis >> i) & 1 == 1) & ((basis >> j) & 1 == 0)
        p = np.flatnonzero(selected).astype(np.intp)
        partners = basis[p] ^ ((1 << i) | (1 << j))
        q = np.searchsorted(basis, partners).astype(np.intp)
        pairs.append((p, q))
    for array in (basis, *(a for pair in pairs for a in pair)):
        array.setflags(write=False)
    return Subspace(num_qubits=num_qubits, weight=weight, basis=basis, edges=edges, pairs=tuple(pairs))


def dicke_state(dimension: int) -> ComplexArray:
    """The Dicke state on a subspace of ``dimension`` states: every amplitude ``1/√dimension``."""
    return np.full(dimension, 1.0 / math.sqrt(dimension), dtype=np.complex128)


def conditioned_state(subspace: Subspace, values: FloatArray) -> ComplexArray:
    """The warm weight-``B`` start: amplitude ``√P(x)`` of the conditioned rounding of ``values``.

    Measuring it samples exactly the conditioned rounding (:mod:`qhybrid.domain.conditioned`);
    :func:`qhybrid.quantum.circuit.weighted_dicke_circuit` prepares it.

    Raises:
        ValueError: As :func:`qhybrid.domain.conditioned.inclusion_table`.
    """
    state = np.empty(subspace.dimension, dtype=np.complex128)
    for start in range(0, subspace.dimension, _COST_CHUNK):
        chunk = subspace.basis[start : start + _COST_CHUNK]
        logp = conditioned.log_probabilities(values, subspace.weight, basis_bits(chunk, subspace.num_qubits))
        state[start : start + chunk.size] = np.exp(0.5 * logp)
    # Exact in theory; renormalised against rounding.
    state /= np.linalg.norm(state)
    return state


def _rotate(state: ComplexArray, p: IndexArray, q: IndexArray, cos: float, sin: float) -> None:
    """``exp(−iβ(XX+YY)/2)`` on the pairs ``(p, q)``: ``(a, b) → (c·a − i s·b, c·b − i s·a)``."""
    a = state[p]
    b = state[q]
    minus_i_sin = -1j * sin
    state[p] = cos * a + minus_i_sin * b
    state[q] = cos * b + minus_i_sin * a


class SubspaceXYSimulator:
    """QAOA with the ring XY mixer on the weight-``B`` subspace (see the module docstring).

    Args:
        subspace: From :func:`build_subspace`.
        cost: Energy of each subspace state, in :attr:`Subspace.basis` order; the phase layer is
            ``exp(−iγ·cost)``.
        start: ``None`` for the Dicke state, otherwise a weight-``B`` basis index to start from.
        initial: A normalised start state over the subspace (e.g. :func:`conditioned_state`);
            exclusive with ``start``.

    Raises:
        ValueError: On a cost of the wrong shape or a start outside the subspace.
    """

    def __init__(
        self,
        subspace: Subspace,
        cost: FloatArray,
        *,
        start: int | None = None,
        initial: ComplexArray | None = None,
    ) -> None:
        values = np.asarray(cost, dtype=np.float64)
        if values.shape != (subspace.dimension,):
            raise ValueError(f"cost must have shape {(subspace.dimension,)}, got {values.shape}")
        if start is not None and initial is not None:
            raise ValueError("give a start basis state or an initial state, not both")
        if initial is not None and np.shape(initial) != (subspace.dimension,):
            raise ValueError(f"initial must have shape {(subspace.dimension,)}, got {np.shape(initial)}")
        self.subspace = subspace
        self.cost = values
        self.start = None if start is None else subspace.position(start)
        self.initial = None if initial is None else np.array(initial, dtype=np.complex128)

    @property
    def dimension(self) -> int:
        """``C(n, B)``."""
        return self.subspace.dimension

    def initial_state(self) -> ComplexArray:
        """The Dicke state, the chosen basis state, or the given initial state."""
        if self.initial is not None:
            return self.initial.copy()
        if self.start is None:
            return dicke_state(self.dimension)
        state = np.zeros(self.dimension, dtype=np.complex128)
        state[self.start] = 1.0
        return state

    def _apply_mixer(self, state: ComplexArray, beta: float) -> None:
        cos, sin = math.cos(beta), math.sin(beta)
        for p, q in self.subspace.pairs:
            _rotate(state, p, q, cos, sin)

    def _forward(self, gs: list[float], bs: list[float]) -> ComplexArray:
        state = self.initial_state()
        for gamma, beta in zip(gs, bs, strict=True):
            state *= np.exp(-1j * gamma * self.cost)
            self._apply_mixer(state, beta)
        return state

    def statevector(self, gammas: AngleValues, betas: AngleValues) -> ComplexArray:
        """The subspace amplitudes after the layers ``(γ_k, β_k)``.

        Raises:
            ValueError: On different numbers of gammas and betas or non-finite angles.
        """
        gs, bs = validated_angles(gammas, betas)
        with single_threaded_blas():
            return self._forward(gs, bs)

    def value(self, gammas: AngleValues, betas: AngleValues, objective: Objective) -> float:
        """The objective at the state of :meth:`statevector`."""
        return objective.evaluate(probabilities_of(self.statevector(gammas, betas)))[0]

    def values(self, thetas: Sequence[FloatArray], objective: Objective) -> list[float]:
        """:meth:`value` at each of many angle vectors ``θ = (γ_1..γ_p, β_1..β_p)``, simulated together.

        The states of all candidates are advanced as the rows of one array (the same arithmetic
        on each amplitude as :meth:`statevector`, elementwise), which saves the per-call overhead
        that dominates on small subspaces; each row's objective is then evaluated on its own.

        Raises:
            ValueError: On vectors of different or odd lengths or non-finite angles.
        """
        angles = [validated_angles(theta[: len(theta) // 2], theta[len(theta) // 2 :]) for theta in thetas]
        if not angles:
            return []
        layers = {len(gs) for gs, _ in angles}
        if len(layers) != 1 or any(len(theta) % 2 for theta in thetas):
            raise ValueError("every angle vector needs the same even length")
        states = np.tile(self.initial_state(), (len(angles), 1))
        with single_threaded_blas():
            for layer in range(layers.pop()):
                gammas = np.array([[-1j * gs[layer]] for gs, _ in angles])
                states *= np.exp(gammas * self.cost[np.newaxis, :])
                cos = np.array([[math.cos(bs[layer])] for _, bs in angles])
                minus_i_sin = np.array([[-1j * math.sin(bs[layer])] for _, bs in angles])
                for p, q in self.subspace.pairs:
                    a = states[:, p]
                    b = states[:, q]
                    states[:, p] = cos * a + minus_i_sin * b
                    states[:, q] = cos * b + minus_i_sin * a
        return [objective.evaluate(probabilities_of(state))[0] for state in states]

    def value_and_gradient(
        self, gammas: AngleValues, betas: AngleValues, objective: Objective
    ) -> tuple[float, FloatArray, FloatArray]:
        """The objective and its exact gradient by one backward pass through every gate.

        For a gate ``exp(−iθH)``, ``∂<O>/∂θ = 2 Im <λ|H|φ>`` with ``φ`` the state just after it and
        ``λ`` the observable's image ``O·ψ`` carried back there. Each β is shared by the ``n``
        edge gates of its layer, so its derivative is the sum of their terms; for an edge,
        ``<λ|H|φ> = Σ conj(λ_p) φ_q + conj(λ_q) φ_p`` over its pairs.

        Args:
            gammas: Phase angles, one per layer.
            betas: Mixer angles, one per layer.
            objective: What to differentiate (mean or CVaR of the cost).

        Returns:
            ``(value, ∂/∂γ, ∂/∂β)``.
        """
        gs, bs = validated_angles(gammas, betas)
        with single_threaded_blas():
            return self._value_and_gradient(gs, bs, objective)

    def _value_and_gradient(
        self, gs: list[float], bs: list[float], objective: Objective
    ) -> tuple[float, FloatArray, FloatArray]:
        phi = self._forward(gs, bs)
        value, observable = objective.evaluate(probabilities_of(phi))
        lam = phi * observable
        grad_gamma = np.zeros(len(gs))
        grad_beta = np.zeros(len(bs))
        for layer in range(len(gs) - 1, -1, -1):
            cos, sin = math.cos(bs[layer]), math.sin(bs[layer])
            overlap = 0.0
            for p, q in reversed(self.subspace.pairs):
                phi_p, phi_q, lam_p, lam_q = phi[p], phi[q], lam[p], lam[q]
                overlap += float((np.vdot(lam_p, phi_q) + np.vdot(lam_q, phi_p)).imag)
                # Undo the gate on both vectors: the rotation by −β.
                phi[p] = cos * phi_p + (1j * sin) * phi_q
                phi[q] = cos * phi_q + (1j * sin) * phi_p
                lam[p] = cos * lam_p + (1j * sin) * lam_q
                lam[q] = cos * lam_q + (1j * sin) * lam_p
            grad_beta[layer] = 2.0 * overlap
            grad_gamma[layer] = 2.0 * float(np.vdot(lam, phi * self.cost).imag)
            if layer > 0:
                inverse = np.exp(1j * gs[layer] * self.cost)
                phi *= inverse
                lam *= inverse
        return value, grad_gamma, grad_beta


def full_xy_statevector(
    cost: FloatArray, num_qubits: int, gammas: AngleValues, betas: AngleValues, start: ComplexArray
) -> ComplexArray:
    """The same XY-mixer QAOA on all ``2^n`` amplitudes: the reference the subspace is checked against.

    Each edge gate works on strided views of the state (bit ``i`` set and bit ``j`` clear versus
    the opposite), the usual way a full-state simulator applies a two-qubit gate.

    Args:
        cost: Energy of every basis state, shape ``(2^n,)``.
        num_qubits: ``n``.
        gammas: Phase angles, one per layer.
        betas: Mixer angles, one per layer.
        start: Initial state, shape ``(2^n,)`` (e.g. a Dicke state embedded in the full space).

    Returns:
        The final state, shape ``(2^n,)``.

    Raises:
        ValueError: On inconsistent shapes or angles.
    """
    gs, bs = validated_angles(gammas, betas)
    values = np.asarray(cost, dtype=np.float64)
    if values.shape != (1 << num_qubits,) or np.shape(start) != values.shape:
        raise ValueError(f"cost and start must have shape {(1 << num_qubits,)}")
    state = np.array(start, dtype=np.complex128)
    edges = ring_edges(num_qubits)
    for gamma, beta in zip(gs, bs, strict=True):
        state *= np.exp(-1j * gamma * values)
        cos, minus_i_sin = math.cos(beta), -1j * math.sin(beta)
        for i, j in edges:
            low, high = min(i, j), max(i, j)
            view = state.reshape(1 << (num_qubits - 1 - high), 2, 1 << (high - low - 1), 2, 1 << low)
            # The gate is symmetric in its two qubits: which bit is "i" does not matter.
            a = view[:, 1, :, 0, :].copy()
            b = view[:, 0, :, 1, :].copy()
            view[:, 1, :, 0, :] = cos * a + minus_i_sin * b
            view[:, 0, :, 1, :] = cos * b + minus_i_sin * a
    return state

"""A small, exact QAOA statevector simulator in numpy.

The state is a ``2^n`` complex vector indexed like Qiskit (bit ``i`` of the index is qubit ``i``).
A QAOA layer is the diagonal phase ``exp(−iγ·cost)`` followed by the transverse-field mixer
``⊗_i exp(−iβ X_i)``. The mixer is applied a block of up to :data:`MIXER_BLOCK` qubits at a
time: on a block it is the Kronecker power of the 2 × 2 rotation, a small dense matrix that one
(batched) matrix product applies to the whole state. That touches the state ``n / MIXER_BLOCK``
times instead of ``n`` times, which is several times faster than qubit-by-qubit updates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from qhybrid.core.qubo import FloatArray

ComplexArray = NDArray[np.complex128]

#: Qubits handled by one dense block of the mixer (a 32 × 32 matrix).
MIXER_BLOCK = 5


def _validated(
    cost: FloatArray, num_qubits: int, gammas: Sequence[float], betas: Sequence[float]
) -> tuple[FloatArray, list[float], list[float]]:
    if num_qubits < 1:
        raise ValueError(f"num_qubits must be >= 1, got {num_qubits}")
    values = np.asarray(cost, dtype=np.float64)
    if values.shape != (1 << num_qubits,):
        raise ValueError(f"cost must have shape {(1 << num_qubits,)}, got {values.shape}")
    gs = [float(g) for g in gammas]
    bs = [float(b) for b in betas]
    if len(gs) != len(bs):
        raise ValueError(f"need as many gammas as betas, got {len(gs)} and {len(bs)}")
    if not all(math.isfinite(a) for a in gs + bs):
        raise ValueError("angles must be finite")
    return values, gs, bs


def _blocks(num_qubits: int) -> list[tuple[int, int]]:
    """``(first qubit, width)`` of each mixer block."""
    return [(j, min(MIXER_BLOCK, num_qubits - j)) for j in range(0, num_qubits, MIXER_BLOCK)]


def _rotation_block(beta: float, width: int) -> ComplexArray:
    """``exp(−iβX)^{⊗width}``; its entries are ``cos β^(w−d) · (−i sin β)^d``, d = Hamming distance."""
    single = np.array(
        [[math.cos(beta), -1j * math.sin(beta)], [-1j * math.sin(beta), math.cos(beta)]],
        dtype=np.complex128,
    )
    block = single
    for _ in range(width - 1):
        block = np.asarray(np.kron(block, single), dtype=np.complex128)
    return block


def _x_sum_block(width: int) -> ComplexArray:
    """``Σ_i X_i`` over a block of ``width`` qubits: 1 wherever two indices differ in one bit."""
    index = np.arange(1 << width)
    distance = np.bitwise_count(index[:, np.newaxis] ^ index[np.newaxis, :])
    return np.asarray(distance == 1, dtype=np.complex128)


def _apply_block(
    matrix: ComplexArray, source: ComplexArray, target: ComplexArray, first: int, width: int
) -> None:
    """``target = matrix`` acting on qubits ``first .. first + width − 1`` of ``source``."""
    size = 1 << width
    if first == 0:
        # Every block matrix used here is symmetric, so the row-vector product needs no transpose.
        np.matmul(source.reshape(-1, size), matrix, out=target.reshape(-1, size))
    else:
        np.matmul(matrix, source.reshape(-1, size, 1 << first), out=target.reshape(-1, size, 1 << first))


def _apply_mixer(
    state: ComplexArray, spare: ComplexArray, num_qubits: int, beta: float
) -> tuple[ComplexArray, ComplexArray]:
    """Apply ``⊗ exp(−iβX)`` ping-ponging between two buffers.

    Returns:
        ``(result, spare)``: the buffer holding the result and the other one, now free.
    """
    for first, width in _blocks(num_qubits):
        _apply_block(_rotation_block(beta, width), state, spare, first, width)
        state, spare = spare, state
    return state, spare


def _phase(cost: FloatArray, gamma: float, out: ComplexArray) -> ComplexArray:
    """``exp(−iγ·cost)`` written into ``out`` without temporaries."""
    np.multiply(cost, -1j * gamma, out=out)
    return np.exp(out, out=out)


def qaoa_statevector(
    cost: FloatArray, num_qubits: int, gammas: Sequence[float], betas: Sequence[float]
) -> ComplexArray:
    """The QAOA state for a diagonal cost.

    Starts from ``|+>^n``; each layer ``k`` multiplies by ``exp(−iγ_k·cost)`` elementwise and
    then applies ``exp(−iβ_k X)`` on every qubit, i.e. what ``RZ(2γh)``, ``RZZ(2γJ)`` and
    ``RX(2β)`` do in :func:`qhybrid.quantum.circuit.qaoa_circuit` (up to a global phase).

    Args:
        cost: Energy of each basis state, shape ``(2^n,)`` (``Ising.cost_vector()``, possibly
            divided by ``Ising.scale()``).
        num_qubits: ``n``.
        gammas: Phase angles, one per layer.
        betas: Mixer angles, one per layer.

    Returns:
        The normalised statevector (little-endian indexing, as in Qiskit).

    Raises:
        ValueError: On inconsistent sizes or non-finite angles.
    """
    values, gs, bs = _validated(cost, num_qubits, gammas, betas)
    dim = values.size
    state = np.full(dim, 1.0 / math.sqrt(dim), dtype=np.complex128)
    spare = np.empty_like(state)
    for gamma, beta in zip(gs, bs, strict=True):
        state *= _phase(values, gamma, spare)
        state, spare = _apply_mixer(state, spare, num_qubits, beta)
    return state


def _expectation(state: ComplexArray, cost: FloatArray) -> float:
    probabilities = state.real * state.real + state.imag * state.imag
    return float(probabilities @ cost)


def qaoa_expectation(
    cost: FloatArray, num_qubits: int, gammas: Sequence[float], betas: Sequence[float]
) -> float:
    """``<ψ(γ, β)| cost |ψ(γ, β)>`` for the state of :func:`qaoa_statevector`."""
    values = np.asarray(cost, dtype=np.float64)
    return _expectation(qaoa_statevector(values, num_qubits, gammas, betas), values)


def qaoa_expectation_and_gradient(
    cost: FloatArray, num_qubits: int, gammas: Sequence[float], betas: Sequence[float]
) -> tuple[float, FloatArray, FloatArray]:
    """The expectation and its exact gradient, by adjoint (reverse-mode) differentiation.

    For a gate ``exp(−iθH)``, ``∂E/∂θ = 2 Im <λ|H|φ>`` where ``φ`` is the state just after the
    gate and ``λ`` is ``cost·ψ`` carried back to that point. Walking the layers backwards,
    undoing each one on both ``φ`` and ``λ``, yields every derivative for about three times the
    cost of one forward simulation, whatever the number of layers.

    Args:
        cost: As for :func:`qaoa_statevector`.
        num_qubits: ``n``.
        gammas: Phase angles, one per layer.
        betas: Mixer angles, one per layer.

    Returns:
        ``(expectation, ∂E/∂γ, ∂E/∂β)``.
    """
    values, gs, bs = _validated(cost, num_qubits, gammas, betas)
    phi = qaoa_statevector(values, num_qubits, gs, bs)
    energy = _expectation(phi, values)
    lam = phi * values
    spare = np.empty_like(phi)
    grad_gamma = np.zeros(len(gs))
    grad_beta = np.zeros(len(bs))
    for layer in range(len(gs) - 1, -1, -1):
        # Mixer: H = Σ X_i, a sum over blocks, each block's part applied as a dense matrix.
        overlap = 0.0
        for first, width in _blocks(num_qubits):
            _apply_block(_x_sum_block(width), phi, spare, first, width)
            overlap += float(np.vdot(lam, spare).imag)
        grad_beta[layer] = 2.0 * overlap
        phi, spare = _apply_mixer(phi, spare, num_qubits, -bs[layer])
        lam, spare = _apply_mixer(lam, spare, num_qubits, -bs[layer])
        # Phase: H = cost, diagonal.
        np.multiply(phi, values, out=spare)
        grad_gamma[layer] = 2.0 * float(np.vdot(lam, spare).imag)
        if layer > 0:
            inverse = np.conjugate(_phase(values, gs[layer], spare), out=spare)
            phi *= inverse
            lam *= inverse
    return energy, grad_gamma, grad_beta

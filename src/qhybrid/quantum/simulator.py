"""Exact full-statevector QAOA in numpy: the transverse-field mixer and its warm-started variant.

The state is a ``2^n`` complex vector indexed like Qiskit (bit ``i`` of the index is qubit ``i``).
A layer is the diagonal phase ``exp(−iγ·cost)`` followed by a product of one-qubit mixers
``⊗_i exp(−iβ G_i)`` with ``G_i = a_i X + b_i Z`` and ``a_i² + b_i² = 1``:

* the standard QAOA (Farhi et al.) starts from ``|+>^n`` and mixes with ``G_i = X``;
* warm-started QAOA (Egger, Mareček, Woerner 2021) starts from ``⊗ RY(θ_i)|0>`` with
  ``θ_i = 2·arcsin(√c_i)``, ``c_i`` a continuous relaxation's value (so qubit ``i`` reads 1 with
  probability ``c_i``), and mixes with ``RY(θ_i)·RZ(−2β)·RY(−θ_i) = exp(iβ(sin θ_i X + cos θ_i Z))``,
  i.e. ``G_i = −(sin θ_i X + cos θ_i Z)``, of which the start state is the ground state.

The mixer is applied a block of up to :data:`MIXER_BLOCK` qubits at a time: on a block it is the
Kronecker product of the 2 × 2 rotations, a small dense matrix that one (batched) matrix product
applies to the whole state. That touches the state ``n / MIXER_BLOCK`` times instead of ``n``
times, which is several times faster than qubit-by-qubit updates.

Gradients come from one backward (adjoint) pass whatever the number of layers; the objective is
the mean or the CVaR of the cost (:mod:`qhybrid.quantum.objective`). Memory at ``n = 24``: the
state and a spare buffer (256 MiB each), a third one during a gradient, the cost and one
observable (128 MiB each).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

from qhybrid.domain.qubo import FloatArray
from qhybrid.quantum.objective import MeanObjective, Objective

ComplexArray = NDArray[np.complex128]
#: Angles as a list or a numpy vector.
AngleValues = Sequence[float] | NDArray[np.float64]

#: Qubits handled by one dense block of the mixer (a 32 × 32 matrix).
MIXER_BLOCK = 5

_PAULI_X = np.array([[0.0, 1.0], [1.0, 0.0]])
_PAULI_Z = np.array([[1.0, 0.0], [0.0, -1.0]])


@lru_cache(maxsize=1)
def _thread_pools() -> ThreadpoolController:
    return ThreadpoolController()


#: How deep this thread is in :func:`single_threaded_blas` blocks.
_blas_limited = threading.local()


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block in one BLAS thread.

    The simulators' matrix products are tall and skinny (a ``2^n × 32`` state against a
    ``32 × 32`` block) or tiny; measured on a 2-vCPU machine, OpenBLAS's threads made them 2× (at
    24 qubits) to 15× (at 16 qubits) SLOWER, and their spinning also slowed the optimiser around
    them. The limit is process-wide while the block runs and costs about 15 µs to set; inside a
    block of the same thread (the angle search wraps its thousands of simulations in one) it is
    already set and left alone.
    """
    if getattr(_blas_limited, "depth", 0) > 0:
        _blas_limited.depth += 1
        try:
            yield
        finally:
            _blas_limited.depth -= 1
        return
    with _thread_pools().limit(limits=1, user_api="blas"):
        _blas_limited.depth = 1
        try:
            yield
        finally:
            _blas_limited.depth = 0


def pin_single_threaded_blas() -> None:
    """One BLAS thread for the whole process from now on: a worker's start-up, on its main thread.

    :func:`single_threaded_blas` alone does not hold in a process whose threads open and close
    blocks side by side. threadpoolctl (3.8) lets one thread at a time change OpenBLAS's
    process-wide pool, silently ignores the others, and restores the size it found when that
    thread's block closes: so one worker thread leaving its block gave the pool back its threads
    while another thread was still simulating inside its own, and that one could leave the pool
    at one thread for good. A worker runs one job per thread and wants one BLAS thread everywhere
    (the products are small; more threads contend for the same cores). Called on the main thread,
    which then keeps control of the pool while it lives: the blocks of the job threads change
    nothing. ``tests/quantum/test_simulator.py`` shows the limit holding across threads.
    """
    _thread_pools().limit(limits=1, user_api="blas")


def _validated(
    cost: FloatArray, num_qubits: int, gammas: AngleValues, betas: AngleValues
) -> tuple[FloatArray, list[float], list[float]]:
    if num_qubits < 1:
        raise ValueError(f"num_qubits must be >= 1, got {num_qubits}")
    values = np.asarray(cost, dtype=np.float64)
    if values.shape != (1 << num_qubits,):
        raise ValueError(f"cost must have shape {(1 << num_qubits,)}, got {values.shape}")
    return values, *validated_angles(gammas, betas)


def validated_angles(gammas: AngleValues, betas: AngleValues) -> tuple[list[float], list[float]]:
    """The angles as float lists.

    Raises:
        ValueError: If the lengths differ or an angle is not finite.
    """
    gs = [float(g) for g in gammas]
    bs = [float(b) for b in betas]
    if len(gs) != len(bs):
        raise ValueError(f"need as many gammas as betas, got {len(gs)} and {len(bs)}")
    if not all(math.isfinite(a) for a in gs + bs):
        raise ValueError("angles must be finite")
    return gs, bs


def warm_start_thetas(values: FloatArray, epsilon: float) -> FloatArray:
    """Egger et al.'s start angles ``θ_i = 2·arcsin(√c_i)`` with ``c_i`` clipped to ``[ε, 1 − ε]``.

    Clipping keeps every qubit away from a basis state: at ``c_i ∈ {0, 1}`` the mixer would
    commute with qubit ``i``'s start state and QAOA could never move it.

    Args:
        values: Relaxed solution, one value in ``[0, 1]`` per variable.
        epsilon: Regularisation ``0 ≤ ε ≤ ½``.

    Returns:
        ``θ``, one angle per variable.

    Raises:
        ValueError: On values outside ``[0, 1]`` or a bad ``epsilon``.
    """
    c = np.asarray(values, dtype=np.float64)
    if c.ndim != 1 or not np.all(np.isfinite(c)) or np.any((c < 0.0) | (c > 1.0)):
        raise ValueError("warm-start values must be a vector of numbers in [0, 1]")
    if not (math.isfinite(epsilon) and 0.0 <= epsilon <= 0.5):
        raise ValueError(f"warm_epsilon must be in [0, 0.5], got {epsilon}")
    return np.asarray(2.0 * np.arcsin(np.sqrt(np.clip(c, epsilon, 1.0 - epsilon))), dtype=np.float64)


def _blocks(num_qubits: int) -> list[tuple[int, int]]:
    """``(first qubit, width)`` of each mixer block."""
    return [(j, min(MIXER_BLOCK, num_qubits - j)) for j in range(0, num_qubits, MIXER_BLOCK)]


def _apply_block(
    matrix: ComplexArray, source: ComplexArray, target: ComplexArray, first: int, width: int
) -> None:
    """``target = matrix`` acting on qubits ``first .. first + width − 1`` of ``source``."""
    size = 1 << width
    if first == 0:
        # Rows of the reshaped state are the blocks' amplitude vectors: multiply by the transpose.
        np.matmul(source.reshape(-1, size), matrix.T, out=target.reshape(-1, size))
    else:
        np.matmul(matrix, source.reshape(-1, size, 1 << first), out=target.reshape(-1, size, 1 << first))


def _phase(cost: FloatArray, gamma: float, out: ComplexArray, work: FloatArray) -> ComplexArray:
    """``exp(−iγ·cost)`` written into ``out``; cos and sin of a real vector beat a complex exp."""
    np.multiply(cost, -gamma, out=work)
    np.cos(work, out=out.real)
    np.sin(work, out=out.imag)
    return out


def probabilities_of(state: ComplexArray, out: FloatArray | None = None) -> FloatArray:
    """``|ψ_k|²`` for every amplitude, written into ``out`` when given (no temporaries)."""
    pairs = state.view(np.float64).reshape(-1, 2)
    result = np.empty(state.size, dtype=np.float64) if out is None else out
    np.einsum("ij,ij->i", pairs, pairs, out=result)
    return result


class FullStateSimulator:
    """QAOA on all ``2^n`` amplitudes with a one-qubit mixer (see the module docstring).

    Args:
        cost: Energy of each basis state, shape ``(2^n,)`` (``Ising.cost_vector()``, possibly
            shifted and scaled); the phase layer is ``exp(−iγ·cost)``.
        num_qubits: ``n``.
        thetas: ``None`` for the standard ``|+>`` start and ``X`` mixer; otherwise Egger et al.'s
            angles ``θ_i`` (:func:`warm_start_thetas`), one per qubit.

    Raises:
        ValueError: On inconsistent sizes or non-finite ``thetas``.
    """

    def __init__(self, cost: FloatArray, num_qubits: int, *, thetas: FloatArray | None = None) -> None:
        self.cost, _, _ = _validated(cost, num_qubits, [], [])
        self.num_qubits = num_qubits
        if thetas is None:
            self.thetas: FloatArray | None = None
            x_weights, z_weights = np.ones(num_qubits), np.zeros(num_qubits)
            self._start = np.tile([math.sqrt(0.5), math.sqrt(0.5)], (num_qubits, 1))
        else:
            angles = np.asarray(thetas, dtype=np.float64)
            if angles.shape != (num_qubits,) or not np.all(np.isfinite(angles)):
                raise ValueError(f"thetas must be {num_qubits} finite angles, got shape {angles.shape}")
            self.thetas = angles
            x_weights, z_weights = -np.sin(angles), -np.cos(angles)
            self._start = np.column_stack([np.cos(angles / 2.0), np.sin(angles / 2.0)])
        # G_i = a_i X + b_i Z, one 2 × 2 real symmetric matrix per qubit.
        self._generators = x_weights[:, np.newaxis, np.newaxis] * _PAULI_X + (
            z_weights[:, np.newaxis, np.newaxis] * _PAULI_Z
        )
        self._blocks = _blocks(num_qubits)
        self._generator_blocks = [self._generator_block(first, width) for first, width in self._blocks]
        self._complex: list[ComplexArray] = []
        self._work = np.empty(self.dimension, dtype=np.float64)

    @property
    def dimension(self) -> int:
        """Number of simulated amplitudes, ``2^n``."""
        return int(self.cost.size)

    def _buffers(self, count: int) -> list[ComplexArray]:
        """``count`` state-sized buffers, allocated once and reused by every call.

        Fresh multi-hundred-MiB arrays cost a page fault per 4 KiB on first touch, which at
        ``n = 24`` is as slow as a mixer layer; keeping them makes repeated evaluations cheap.
        """
        while len(self._complex) < count:
            self._complex.append(np.empty(self.dimension, dtype=np.complex128))
        return self._complex[:count]

    def _write_initial_state(self, state: ComplexArray) -> None:
        """The start state ``⊗_i (s_i0 |0> + s_i1 |1>)``, built in place qubit by qubit."""
        state[0] = 1.0
        for qubit in range(self.num_qubits):
            # Appending qubit i doubles the filled prefix: bit i = 1 is the upper half.
            size = 1 << qubit
            np.multiply(state[:size], self._start[qubit, 1], out=state[size : 2 * size])
            state[:size] *= self._start[qubit, 0]

    def initial_state(self) -> ComplexArray:
        """The start state ``⊗_i (cos(θ_i/2) |0> + sin(θ_i/2) |1>)`` (``|+>^n`` without thetas)."""
        state = np.empty(self.dimension, dtype=np.complex128)
        self._write_initial_state(state)
        return state

    def _rotation_block(self, beta: float, first: int, width: int) -> ComplexArray:
        """``⊗ exp(−iβ G_i)`` over the block; bit ``k`` of its index is qubit ``first + k``."""
        block = np.ones((1, 1), dtype=np.complex128)
        for qubit in range(first, first + width):
            # G² = 1, hence exp(−iβG) = cos β − i sin β G.
            single = math.cos(beta) * np.eye(2) - 1j * math.sin(beta) * self._generators[qubit]
            size = 2 * block.shape[0]
            # kron(single, block) without np.kron's generality, which dominated small simulations.
            block = (single[:, np.newaxis, :, np.newaxis] * block[np.newaxis, :, np.newaxis, :]).reshape(
                size, size
            )
        return block

    def _generator_block(self, first: int, width: int) -> ComplexArray:
        """``Σ_i G_i`` over the block's qubits, as a dense ``2^w × 2^w`` matrix."""
        total = np.zeros((1 << width, 1 << width), dtype=np.complex128)
        for k in range(width):
            term = np.kron(np.eye(1 << (width - 1 - k)), np.kron(self._generators[first + k], np.eye(1 << k)))
            total += term
        return total

    def _apply_mixer(
        self, state: ComplexArray, spare: ComplexArray, beta: float
    ) -> tuple[ComplexArray, ComplexArray]:
        """Apply ``⊗ exp(−iβ G_i)`` ping-ponging between two buffers; returns ``(result, free)``."""
        for first, width in self._blocks:
            _apply_block(self._rotation_block(beta, first, width), state, spare, first, width)
            state, spare = spare, state
        return state, spare

    def _forward(self, gs: list[float], bs: list[float]) -> tuple[ComplexArray, ComplexArray]:
        """Run the layers in the reusable buffers; returns ``(state, free buffer)``."""
        state, spare = self._buffers(2)
        self._write_initial_state(state)
        for gamma, beta in zip(gs, bs, strict=True):
            state *= _phase(self.cost, gamma, spare, self._work)
            state, spare = self._apply_mixer(state, spare, beta)
        return state, spare

    def statevector(self, gammas: AngleValues, betas: AngleValues) -> ComplexArray:
        """The QAOA state after the layers ``(γ_k, β_k)``, as a new array.

        Raises:
            ValueError: On different numbers of gammas and betas or non-finite angles.
        """
        gs, bs = validated_angles(gammas, betas)
        with single_threaded_blas():
            return self._forward(gs, bs)[0].copy()

    def value(self, gammas: AngleValues, betas: AngleValues, objective: Objective) -> float:
        """The objective at the state of :meth:`statevector`, without the copy."""
        gs, bs = validated_angles(gammas, betas)
        with single_threaded_blas():
            state, _ = self._forward(gs, bs)
            return objective.evaluate(probabilities_of(state, self._work))[0]

    def value_and_gradient(
        self, gammas: AngleValues, betas: AngleValues, objective: Objective
    ) -> tuple[float, FloatArray, FloatArray]:
        """The objective and its exact gradient, by adjoint (reverse-mode) differentiation.

        For a gate ``exp(−iθH)``, ``∂<O>/∂θ = 2 Im <λ|H|φ>`` where ``φ`` is the state just after
        the gate and ``λ`` is ``O·ψ`` carried back to that point. Walking the layers backwards,
        undoing each one on both ``φ`` and ``λ``, yields every derivative for about three times
        the cost of one forward simulation.

        Args:
            gammas: Phase angles, one per layer.
            betas: Mixer angles, one per layer.
            objective: What to differentiate (mean or CVaR of a cost over these basis states).

        Returns:
            ``(value, ∂/∂γ, ∂/∂β)``.
        """
        gs, bs = validated_angles(gammas, betas)
        with single_threaded_blas():
            return self._value_and_gradient(gs, bs, objective)

    def _value_and_gradient(
        self, gs: list[float], bs: list[float], objective: Objective
    ) -> tuple[float, FloatArray, FloatArray]:
        phi, spare = self._forward(gs, bs)
        lam = next(buffer for buffer in self._buffers(3) if buffer is not phi and buffer is not spare)
        value, observable = objective.evaluate(probabilities_of(phi, self._work))
        np.multiply(phi, observable, out=lam)
        grad_gamma = np.zeros(len(gs))
        grad_beta = np.zeros(len(bs))
        for layer in range(len(gs) - 1, -1, -1):
            # Mixer: H = Σ_i G_i, a sum over blocks, each block's part applied as a dense matrix.
            overlap = 0.0
            for (first, width), generator in zip(self._blocks, self._generator_blocks, strict=True):
                _apply_block(generator, phi, spare, first, width)
                overlap += float(np.vdot(lam, spare).imag)
            grad_beta[layer] = 2.0 * overlap
            phi, spare = self._apply_mixer(phi, spare, -bs[layer])
            lam, spare = self._apply_mixer(lam, spare, -bs[layer])
            # Phase: H = cost, diagonal.
            np.multiply(phi, self.cost, out=spare)
            grad_gamma[layer] = 2.0 * float(np.vdot(lam, spare).imag)
            if layer > 0:
                inverse = _phase(self.cost, -gs[layer], spare, self._work)
                phi *= inverse
                lam *= inverse
        return value, grad_gamma, grad_beta


def qaoa_statevector(
    cost: FloatArray, num_qubits: int, gammas: AngleValues, betas: AngleValues
) -> ComplexArray:
    """The standard QAOA state for a diagonal cost.

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
    return FullStateSimulator(values, num_qubits).statevector(gs, bs)


def qaoa_expectation(cost: FloatArray, num_qubits: int, gammas: AngleValues, betas: AngleValues) -> float:
    """``<ψ(γ, β)| cost |ψ(γ, β)>`` for the state of :func:`qaoa_statevector`."""
    values = np.asarray(cost, dtype=np.float64)
    return float(probabilities_of(qaoa_statevector(values, num_qubits, gammas, betas)) @ values)


def qaoa_expectation_and_gradient(
    cost: FloatArray, num_qubits: int, gammas: AngleValues, betas: AngleValues
) -> tuple[float, FloatArray, FloatArray]:
    """The expectation of :func:`qaoa_statevector` and its exact adjoint gradient.

    Args:
        cost: As for :func:`qaoa_statevector`.
        num_qubits: ``n``.
        gammas: Phase angles, one per layer.
        betas: Mixer angles, one per layer.

    Returns:
        ``(expectation, ∂E/∂γ, ∂E/∂β)``.
    """
    values, gs, bs = _validated(cost, num_qubits, gammas, betas)
    return FullStateSimulator(values, num_qubits).value_and_gradient(gs, bs, MeanObjective(values))

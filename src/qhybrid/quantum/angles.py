"""Choosing QAOA angles on the local statevector simulator.

Angles refer to the NORMALISED Hamiltonian ``H / s`` with ``s = ising.scale()``, the same
convention as :func:`qhybrid.quantum.circuit.qaoa_circuit`, so they transfer to the circuit as
they are. The search is deterministic for a given seed:

1. a coarse scan of linear-ramp schedules ``γ_k = Δγ (k + ½)/p``, ``β_k = −Δβ (1 − (k + ½)/p)``
   (a discretised annealing path; the mixer ``exp(−iβX)`` needs ``β < 0`` to follow it), with
   ``Δγ`` measured in units of ``1 / std(H / s)`` so that the first phase layer turns the
   typical energy difference by about a radian whatever the problem's size;
2. L-BFGS-B with exact adjoint gradients from the best ramp and, when a simulation is cheap,
   from a few seeded random perturbations of it; the lowest expectation wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from qhybrid.core.qubo import FloatArray, Ising
from qhybrid.quantum.simulator import qaoa_expectation, qaoa_expectation_and_gradient

#: Ramp amplitudes scanned for ``Δγ · std(H / s)`` and ``Δβ``.
GAMMA_SPANS = (0.5, 1.0, 2.0, 4.0)
BETA_SPANS = (0.5, 1.0)
#: Random restarts are added when the state has at most this many amplitudes.
RESTART_MAX_DIMENSION = 1 << 14
RESTARTS = 3


@dataclass(frozen=True)
class QaoaAngles:
    """QAOA angles for the normalised Hamiltonian.

    Attributes:
        gammas: Phase angles ``γ_k``, one per layer.
        betas: Mixer angles ``β_k``, one per layer.
        expectation: ``<H>`` in the Ising problem's own units (offset included) at these angles.
        evaluations: Simulations run to find them (a value-and-gradient call counts once).
    """

    gammas: tuple[float, ...]
    betas: tuple[float, ...]
    expectation: float
    evaluations: int

    def __post_init__(self) -> None:
        if len(self.gammas) != len(self.betas):
            raise ValueError(f"need as many gammas as betas, got {len(self.gammas)} and {len(self.betas)}")

    @property
    def reps(self) -> int:
        """Number of QAOA layers ``p``."""
        return len(self.gammas)

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dictionary."""
        return {
            "gammas": list(self.gammas),
            "betas": list(self.betas),
            "expectation": self.expectation,
            "evaluations": self.evaluations,
        }


def linear_ramp(reps: int, gamma_span: float, beta_span: float) -> FloatArray:
    """Linear-ramp angles ``[γ_0 … γ_{p−1}, β_0 … β_{p−1}]`` (see the module docstring)."""
    t = (np.arange(reps, dtype=np.float64) + 0.5) / reps
    return np.concatenate([gamma_span * t, -beta_span * (1.0 - t)])


def optimize_angles(ising: Ising, reps: int, *, seed: int, maxiter: int = 200) -> QaoaAngles:
    """Angles minimising the QAOA expectation of the normalised Hamiltonian.

    Args:
        ising: The problem; its cost vector (``2^n`` energies) is computed once.
        reps: Number of layers ``p ≥ 1``.
        seed: Seed of the random restarts; equal seeds give equal angles.
        maxiter: Iteration limit of each local optimisation.

    Returns:
        The best angles found and the expectation of the (unnormalised) Hamiltonian there.

    Raises:
        ValueError: If ``reps < 1`` or ``maxiter < 1``.
    """
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if maxiter < 1:
        raise ValueError(f"maxiter must be >= 1, got {maxiter}")
    n = ising.num_qubits
    scale = ising.scale()
    cost = ising.cost_vector()
    cost /= scale
    spread = float(cost.std())
    spread = spread if spread > 0.0 else 1.0
    evaluations = 0

    def value(theta: FloatArray) -> float:
        nonlocal evaluations
        evaluations += 1
        return qaoa_expectation(cost, n, theta[:reps].tolist(), theta[reps:].tolist())

    def value_and_gradient(theta: FloatArray) -> tuple[float, FloatArray]:
        nonlocal evaluations
        evaluations += 1
        energy, grad_gamma, grad_beta = qaoa_expectation_and_gradient(
            cost, n, theta[:reps].tolist(), theta[reps:].tolist()
        )
        return energy, np.concatenate([grad_gamma, grad_beta])

    ramps = [linear_ramp(reps, g / spread, b) for g in GAMMA_SPANS for b in BETA_SPANS]
    ramp_values = [value(theta) for theta in ramps]
    best_ramp = ramps[int(np.argmin(ramp_values))]
    starts = [best_ramp]
    if cost.size <= RESTART_MAX_DIMENSION:
        rng = np.random.default_rng(seed)
        starts += [best_ramp * rng.uniform(0.5, 1.5, size=best_ramp.size) for _ in range(RESTARTS)]

    best_theta, best_value = best_ramp, min(ramp_values)
    for start in starts:
        result = minimize(
            value_and_gradient, start, jac=True, method="L-BFGS-B", options={"maxiter": maxiter}
        )
        # Strict improvement keeps the earliest start on ties, so the result is reproducible.
        if float(result.fun) < best_value:
            best_theta, best_value = np.asarray(result.x, dtype=np.float64), float(result.fun)
    return QaoaAngles(
        gammas=tuple(float(g) for g in best_theta[:reps]),
        betas=tuple(float(b) for b in best_theta[reps:]),
        expectation=best_value * scale,
        evaluations=evaluations,
    )

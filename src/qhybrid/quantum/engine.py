"""The QAOA engine: choose angles in the trusted zone, then build the matching circuit.

:func:`plan_qaoa` simulates the chosen variant exactly (numbers only: an :class:`Ising` problem,
never asset names), finds angles and records what the simulation saw; :func:`build_circuit` turns
the plan into the circuit that performs exactly the simulated evolution; :func:`final_distribution`
gives the simulated output distribution, e.g. to compare with a device's samples.

Variants (:data:`qhybrid.quantum.spec.Mixer`):

* ``"x"`` — ``|+>^n``, transverse-field mixer, full ``2^n`` state
  (:class:`~qhybrid.quantum.simulator.FullStateSimulator`);
* ``"x-warm"`` — Egger et al.'s warm start from a relaxed solution ``c ∈ [0, 1]^n``, full state;
* ``"xy"`` — ring XY mixer on the weight-``B`` subspace
  (:class:`~qhybrid.quantum.subspace.SubspaceXYSimulator`), from the Dicke state, or from one
  weight-``B`` basis state when a warm start is given (its ``B`` largest entries are set);
* ``"xy-warm"`` — the same mixer from the conditioned rounding of the relaxed solution (amplitude
  ``√P(x)``, :mod:`qhybrid.domain.conditioned`; prepared by a weighted Dicke circuit). Its cost
  layers only need ``μ`` and ``Σ``: inside the weight-``B`` subspace the budget penalty is a
  constant. Its angles start at ``γ = β = 0`` (the start state itself) and the search keeps them
  there unless it finds better, so the circuit is never worse than its start on the objective.

Angle units. Inside the search, the cost is shifted and divided by its standard deviation ``σ``
over the searched space (uniform over all ``2^n`` states for the X mixers, where
``σ² = Σ h_i² + Σ J_ij²`` exactly; uniform over the weight-``B`` states for XY): that is the unit
of the angle table and it makes ``γ`` comparable across instances. The plan's
:class:`~qhybrid.quantum.angles.QaoaAngles` use the circuit's convention, the Hamiltonian divided
by ``s = ising.scale()``: ``γ_plan = γ_search · s / σ``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from qiskit import QuantumCircuit
from scipy.optimize import minimize

from qhybrid.core.budget import check_budget
from qhybrid.domain import conditioned
from qhybrid.domain.qubo import FloatArray, Ising
from qhybrid.quantum.angles import QaoaAngles, angle_table, linear_ramp, table_angles
from qhybrid.quantum.circuit import (
    append_cost_layer,
    append_warm_mixer,
    append_weighted_dicke,
    append_xy_mixer,
    dicke_circuit,
    qaoa_circuit,
)
from qhybrid.quantum.objective import CvarObjective, MeanObjective, Objective
from qhybrid.quantum.simulator import (
    AngleValues,
    ComplexArray,
    FullStateSimulator,
    probabilities_of,
    single_threaded_blas,
    warm_start_thetas,
)
from qhybrid.quantum.spec import XY_MIXERS, QaoaSpec
from qhybrid.quantum.subspace import (
    SubspaceXYSimulator,
    basis_bits,
    build_subspace,
    conditioned_state,
    subspace_cost,
)

#: Largest full-state simulation: three 1 GiB buffers at 26 qubits.
MAX_FULL_STATE_QUBITS = 26
#: Largest subspace simulation (amplitudes); ``C(26, 13)`` is about 10.4 million.
MAX_SUBSPACE_DIMENSION = 1 << 24
#: Ramp scan: ``Δγ`` in units of ``1/σ`` and ``|Δβ|``; both signs of ``β`` are tried, because
#: which one follows the annealing path depends on the mixer's sign convention.
RAMP_GAMMA_SPANS = (0.25, 0.5, 1.0, 2.0)
RAMP_BETA_SPANS = (0.5, 1.0)
#: ``init="ramp"`` adds seeded random restarts when the state has at most this many amplitudes.
RESTART_MAX_DIMENSION = 1 << 14
RESTARTS = 3
#: ``"xy-warm"``: first linear ramps tried from ``γ = β = 0`` (``Δγ`` in units of ``1/σ``, ``|Δβ|``).
#: Small, because the start is already good and large angles scramble it.
WARM_XY_GAMMA_SPANS = (0.05, 0.1, 0.2, 0.4)
WARM_XY_BETA_SPANS = (0.05, 0.1, 0.2)
#: An energy of basis states given as bits ``(m, n)`` (column ``i`` = qubit ``i``): shape ``(m,)``.
EnergyOf = Callable[[NDArray[np.uint8]], FloatArray]
#: Basis states whose target energies are computed per call of an :data:`EnergyOf`.
_TARGET_CHUNK = 1 << 16
#: Relative tolerance for "same energy as the minimum" when reporting the ground-state probability.
_GROUND_TOLERANCE = 1e-9


class _Simulator(Protocol):
    @property
    def dimension(self) -> int: ...

    def statevector(self, gammas: AngleValues, betas: AngleValues) -> ComplexArray: ...

    def value(self, gammas: AngleValues, betas: AngleValues, objective: Objective) -> float: ...

    def value_and_gradient(
        self, gammas: AngleValues, betas: AngleValues, objective: Objective
    ) -> tuple[float, FloatArray, FloatArray]: ...


@dataclass(frozen=True)
class QaoaPlan:
    """Everything needed to build the circuit, and what the trusted-zone simulation saw.

    Attributes:
        spec: What was asked for.
        angles: Angles for the Hamiltonian divided by ``ising.scale()`` (the circuit's convention);
            ``angles.expectation`` is ``<H>`` in the Ising problem's units.
        hamming_weight: ``B`` for the XY mixer (and the table lookup of the X mixers), if given.
        warm_start: ``"x-warm"`` and ``"xy-warm"``: the relaxed values clipped to ``[ε, 1 − ε]``;
            ``"xy"``: the 0/1 start state; otherwise ``None``.
        simulated: Facts from the simulation, all in the Ising problem's units where they have
            one: ``objective`` (reached), ``start_objective``, ``expectation``, ``cvar`` (at
            ``spec.cvar_alpha``), ``ground_probability`` (of the lowest-energy state(s) of the
            searched space), ``approximation_ratio`` (``(max − E)/(max − min)`` over the searched
            space), ``cost_std``, ``dimension``, ``evaluations``, ``seconds``, ``table_used``
            (1 if the angles started from the table, 0 for a ramp scan), and with the table
            ``table_num_qubits``, ``table_ratio``, ``interpolated_layers``.
    """

    spec: QaoaSpec
    angles: QaoaAngles
    hamming_weight: int | None
    warm_start: tuple[float, ...] | None
    simulated: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dictionary."""
        return {
            "spec": self.spec.as_dict(),
            "angles": self.angles.as_dict(),
            "hamming_weight": self.hamming_weight,
            "warm_start": None if self.warm_start is None else list(self.warm_start),
            "simulated": dict(self.simulated),
        }


def _variant(spec: QaoaSpec, warm_start: tuple[float, ...] | None) -> str:
    if spec.mixer == "xy" and warm_start is not None:
        return "xy-basis"
    return spec.mixer


def _checked_inputs(
    ising: Ising, spec: QaoaSpec, hamming_weight: int | None, warm_start: FloatArray | Sequence[float] | None
) -> tuple[int | None, tuple[float, ...] | None]:
    """Validate the instance-side inputs; returns ``(B, warm start as stored in the plan)``."""
    n = ising.num_qubits
    if n < 1:
        raise ValueError("the Ising problem has no variables")
    weight: int | None = None
    if hamming_weight is not None:
        if isinstance(hamming_weight, bool) or int(hamming_weight) != hamming_weight:
            raise ValueError(f"hamming_weight must be an integer, got {hamming_weight!r}")
        weight = int(hamming_weight)
        if not 0 <= weight <= n:
            raise ValueError(f"hamming_weight must be in 0..{n}, got {weight}")
    if spec.mixer in XY_MIXERS and weight is None:
        raise ValueError(f"mixer {spec.mixer!r} needs the hamming_weight B it preserves")
    if warm_start is None:
        if spec.mixer in ("x-warm", "xy-warm"):
            raise ValueError(
                f"mixer {spec.mixer!r} needs warm_start: a relaxed solution with one value per variable"
            )
        return weight, None
    if spec.mixer == "x":
        raise ValueError("mixer 'x' takes no warm_start (use 'x-warm', or 'xy' with a basis state)")
    values = np.asarray(warm_start, dtype=np.float64)
    if values.shape != (n,) or not np.all(np.isfinite(values)) or np.any((values < 0.0) | (values > 1.0)):
        raise ValueError(f"warm_start must hold {n} numbers in [0, 1], got shape {values.shape}")
    if spec.mixer in ("x-warm", "xy-warm"):
        # xy-warm at ε = 0 keeps a 1e-9 margin so that every weight-B state stays reachable.
        epsilon = spec.epsilon if spec.mixer == "x-warm" else max(spec.epsilon, 1e-9)
        clipped = np.clip(values, epsilon, 1.0 - epsilon)
        return weight, tuple(float(v) for v in clipped)
    # XY: the weight-B basis state of the B largest values (ties to the lower index).
    assert weight is not None
    bits = np.zeros(n)
    bits[np.argsort(-values, kind="stable")[:weight]] = 1.0
    return weight, tuple(float(b) for b in bits)


class SimulatedQaoa:
    """One variant's exact simulation of one instance, on the normalised cost, with its objective.

    Angles are ``θ = [γ_0 … γ_{p−1}, β_0 … β_{p−1}]`` in search units (module docstring). Built
    by :func:`simulate_qaoa`; :func:`plan_qaoa` uses it, and so can angle-learning scripts.

    Attributes:
        spec: The spec (mixer, depth, objective).
        variant: Angle-table variant: ``"x"``, ``"x-warm"``, ``"xy"``, ``"xy-basis"`` or ``"xy-warm"``.
        hamming_weight: ``B`` if known.
        warm_start: As :attr:`QaoaPlan.warm_start`.
        cost: The normalised cost over the simulated basis states.
        shift: Mean subtracted from the Ising energies.
        spread: Standard deviation they were divided by (``σ``).
        basis: The simulated basis indices for XY; ``None`` for all ``2^n``.
        evaluations: Simulations run so far (a value-and-gradient call counts once).
    """

    def __init__(
        self,
        ising: Ising,
        spec: QaoaSpec,
        hamming_weight: int | None,
        warm_start: tuple[float, ...] | None,
        target: EnergyOf | None = None,
    ) -> None:
        n = ising.num_qubits
        self.spec = spec
        self.variant = _variant(spec, warm_start)
        self.hamming_weight = hamming_weight
        self.warm_start = warm_start
        self.evaluations = 0
        self._scale = ising.scale()
        self.basis: NDArray[np.int64] | None
        self.simulator: _Simulator
        if spec.mixer in XY_MIXERS:
            assert hamming_weight is not None
            if math.comb(n, hamming_weight) > MAX_SUBSPACE_DIMENSION:
                raise ValueError(
                    f"the weight-{hamming_weight} subspace of {n} qubits is too large to simulate"
                )
            subspace = build_subspace(n, hamming_weight)
            cost = subspace_cost(ising, subspace.basis)
            shift, spread = float(cost.mean()), float(cost.std())
            spread = spread if spread > 0.0 else 1.0
            cost -= shift
            cost /= spread
            if spec.mixer == "xy-warm":
                assert warm_start is not None
                initial = conditioned_state(subspace, np.array(warm_start))
                self.simulator = SubspaceXYSimulator(subspace, cost, initial=initial)
            else:
                start = None if warm_start is None else sum(1 << i for i, bit in enumerate(warm_start) if bit)
                self.simulator = SubspaceXYSimulator(subspace, cost, start=start)
            self.basis = subspace.basis
        else:
            if n > MAX_FULL_STATE_QUBITS:
                raise ValueError(
                    f"{n} qubits is too many for the full-state simulator (at most {MAX_FULL_STATE_QUBITS})"
                )
            # Uniform over all 2^n states the spins are independent ±1: the mean is the offset and
            # the variance is the sum of the squared coefficients.
            shift = float(ising.offset)
            spread = math.sqrt(float(np.sum(ising.h**2) + np.sum(ising.couplings**2)))
            spread = spread if spread > 0.0 else 1.0
            cost = ising.cost_vector()
            cost -= shift
            cost /= spread
            thetas = None if warm_start is None else warm_start_thetas(np.array(warm_start), spec.epsilon)
            self.simulator = FullStateSimulator(cost, n, thetas=thetas)
            self.basis = None
        self.cost = cost
        self.shift = shift
        self.spread = spread
        # What the angles minimise: by default the cost the circuit's phases carry; with a target,
        # another energy of the same basis states (the true problem behind an obfuscated one).
        self.target_cost, self.target_shift, self.target_spread = cost, shift, spread
        if target is not None:
            energies = _energies_of(target, self.basis, n)
            target_shift, target_spread = float(energies.mean()), float(energies.std())
            target_spread = target_spread if target_spread > 0.0 else 1.0
            self.target_cost = (energies - target_shift) / target_spread
            self.target_shift, self.target_spread = target_shift, target_spread
        goal = self.target_cost
        self.objective: Objective = (
            CvarObjective(goal, spec.cvar_alpha) if spec.objective == "cvar" else MeanObjective(goal)
        )

    @property
    def dimension(self) -> int:
        """Number of simulated amplitudes."""
        return self.simulator.dimension

    @property
    def gamma_unit(self) -> float:
        """``s / σ``: a search-unit ``γ`` times this is the circuit's ``γ`` (Hamiltonian ``H / s``)."""
        return self._scale / self.spread

    def _split(self, theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        half = theta.size // 2
        return theta[:half], theta[half:]

    def value(self, theta: FloatArray) -> float:
        """The objective (normalised units) at ``θ``."""
        check_budget("the angle search")
        self.evaluations += 1
        return self.simulator.value(*self._split(theta), self.objective)

    def values(self, thetas: list[FloatArray]) -> list[float]:
        """:meth:`value` at each of ``thetas``; simulated together where the simulator can."""
        batched = getattr(self.simulator, "values", None)
        if batched is None:
            return [self.value(theta) for theta in thetas]
        check_budget("the angle search")
        self.evaluations += len(thetas)
        return list(batched(thetas, self.objective))

    def value_and_gradient(self, theta: FloatArray) -> tuple[float, FloatArray]:
        """The objective (normalised units) and its exact gradient at ``θ``."""
        check_budget("the angle search")
        self.evaluations += 1
        value, grad_gamma, grad_beta = self.simulator.value_and_gradient(*self._split(theta), self.objective)
        return value, np.concatenate([grad_gamma, grad_beta])

    def refine(
        self, theta: FloatArray, maxiter: int, *, start_value: float | None = None
    ) -> tuple[FloatArray, float]:
        """Up to ``maxiter`` L-BFGS-B steps from ``θ``; returns the better of the end and the start.

        Args:
            theta: Start angles.
            maxiter: Iteration limit; ``0`` returns the start.
            start_value: The objective at ``θ`` if already known (saves a simulation).
        """
        if start_value is None:
            start_value = self.value(theta)
        if maxiter < 1:
            return np.array(theta, dtype=np.float64), start_value
        result = minimize(
            self.value_and_gradient, theta, jac=True, method="L-BFGS-B", options={"maxiter": maxiter}
        )
        if float(result.fun) < start_value:
            return np.asarray(result.x, dtype=np.float64), float(result.fun)
        return np.array(theta, dtype=np.float64), start_value

    def ramp_start(self, reps: int) -> FloatArray:
        """The best linear ramp over :data:`RAMP_GAMMA_SPANS` × ``±``:data:`RAMP_BETA_SPANS`."""
        ramps = [
            linear_ramp(reps, gamma_span, sign * beta_span)
            for gamma_span in RAMP_GAMMA_SPANS
            for beta_span in RAMP_BETA_SPANS
            for sign in (1.0, -1.0)
        ]
        values = self.values(ramps)
        return ramps[int(np.argmin(values))]

    def warm_xy_start(self, reps: int) -> FloatArray:
        """``"xy-warm"``: the best of ``γ = β = 0`` and small linear ramps (:data:`WARM_XY_GAMMA_SPANS`)."""
        candidates = [np.zeros(2 * reps)] + [
            linear_ramp(reps, gamma_span, sign * beta_span)
            for gamma_span in WARM_XY_GAMMA_SPANS
            for beta_span in WARM_XY_BETA_SPANS
            for sign in (1.0, -1.0)
        ]
        values = self.values(candidates)
        # argmin keeps the first on ties: the zero angles unless a ramp is strictly better.
        return candidates[int(np.argmin(values))]

    def probabilities(self, theta: FloatArray) -> FloatArray:
        """Output probabilities of the simulated basis states at ``θ``."""
        return probabilities_of(self.simulator.statevector(*self._split(theta)))

    def facts(self, theta: FloatArray) -> dict[str, float]:
        """Expectation, CVaR, ground-state probability and approximation ratio at ``θ``.

        All of the energy the angles minimise (the target's, when one was given), in its units.
        """
        probabilities = self.probabilities(theta)
        cost = self.target_cost
        low, high = float(cost.min()), float(cost.max())
        normalised_mean = float(probabilities @ cost)
        tolerance = _GROUND_TOLERANCE * max(abs(low), abs(high), 1.0)
        cvar_value, _ = CvarObjective(cost, self.spec.cvar_alpha).evaluate(probabilities)
        return {
            "expectation": normalised_mean * self.target_spread + self.target_shift,
            "cvar": cvar_value * self.target_spread + self.target_shift,
            "ground_probability": float(probabilities[cost <= low + tolerance].sum()),
            "approximation_ratio": (high - normalised_mean) / (high - low) if high > low else 1.0,
        }


def _energies_of(target: EnergyOf, basis: NDArray[np.int64] | None, num_qubits: int) -> FloatArray:
    """``target`` on every simulated basis state (the subspace's, or all ``2^n``), in chunks."""
    size = (1 << num_qubits) if basis is None else basis.size
    energies = np.empty(size, dtype=np.float64)
    for start in range(0, size, _TARGET_CHUNK):
        stop = min(size, start + _TARGET_CHUNK)
        indices = np.arange(start, stop, dtype=np.int64) if basis is None else basis[start:stop]
        values = np.asarray(target(basis_bits(indices, num_qubits)), dtype=np.float64)
        if values.shape != (stop - start,) or not np.all(np.isfinite(values)):
            raise ValueError("the target energy must give one finite number per basis state")
        energies[start:stop] = values
    return energies


def simulate_qaoa(
    ising: Ising,
    spec: QaoaSpec,
    *,
    hamming_weight: int | None = None,
    warm_start: FloatArray | Sequence[float] | None = None,
    target: EnergyOf | None = None,
) -> SimulatedQaoa:
    """Validate the inputs as :func:`plan_qaoa` does and set up the simulation.

    Raises:
        ValueError: As :func:`plan_qaoa`.
    """
    weight, warm = _checked_inputs(ising, spec, hamming_weight, warm_start)
    return SimulatedQaoa(ising, spec, weight, warm, target)


def plan_qaoa(
    ising: Ising,
    spec: QaoaSpec,
    *,
    seed: int,
    hamming_weight: int | None = None,
    warm_start: FloatArray | None = None,
    target: EnergyOf | None = None,
) -> QaoaPlan:
    """Find QAOA angles for ``ising`` by exact simulation (numbers only; nothing leaves this call).

    Starting angles: with ``spec.init == "table"`` the nearest entry of the shipped angle table
    for the variant, depth, size and ``B/n`` (deepened by INTERP if the table is shallower; a
    ramp scan if the table has nothing for the variant); with ``"ramp"`` the best of a scan of
    linear-ramp schedules, plus seeded random perturbations of it on small instances. Each start
    is refined by up to ``spec.maxiter`` L-BFGS-B steps with exact adjoint gradients of the
    objective; the best point wins. The result is deterministic for a given seed.

    Args:
        ising: The problem.
        spec: Mixer, depth, objective and angle search.
        seed: Seed of the random restarts (``init="ramp"`` on small instances).
        hamming_weight: ``B``: required by ``"xy"`` (the preserved number of ones); for the X
            mixers it only selects the table entry (``B/n``, else ½ is assumed).
        warm_start: ``"x-warm"`` (required): the relaxed solution, ``n`` values in ``[0, 1]``;
            ``"xy"`` (optional): start from the basis state of its ``B`` largest values instead
            of the Dicke state; ``"x"``: not allowed.
        target: What the angles minimise, if not ``ising`` itself: an energy of the same basis
            states. The circuit's phases still carry ``ising`` (the problem that is sent); the
            trusted zone passes the TRUE problem read through the obfuscation key, so that the
            angles serve the real objective rather than the noise added to hide it.

    Returns:
        The plan.

    Raises:
        ValueError: On inputs inconsistent with the mixer or an instance too large to simulate.
    """
    started = time.perf_counter()
    # One BLAS thread for the whole search (see single_threaded_blas): toggling the pool size
    # around every simulation also cost time.
    with single_threaded_blas():
        model = simulate_qaoa(
            ising, spec, hamming_weight=hamming_weight, warm_start=warm_start, target=target
        )
        return _plan(model, ising.num_qubits, seed, started)


def _plan(model: SimulatedQaoa, num_qubits: int, seed: int, started: float) -> QaoaPlan:
    spec = model.spec
    facts: dict[str, float] = {}
    found = None
    if spec.init == "table" and spec.mixer != "xy-warm":
        ratio = 0.5 if model.hamming_weight is None else model.hamming_weight / num_qubits
        found = table_angles(
            angle_table(),
            variant=model.variant,
            objective=spec.objective,
            reps=spec.reps,
            num_qubits=num_qubits,
            ratio=ratio,
            warm_epsilon=spec.epsilon if spec.mixer == "x-warm" else None,
        )
    starts: list[FloatArray]
    if found is not None:
        theta, entry, added = found
        starts = [theta]
        facts.update(
            table_used=1.0,
            table_num_qubits=float(entry.num_qubits),
            table_ratio=entry.ratio,
            interpolated_layers=float(added),
        )
    elif spec.mixer == "xy-warm":
        # No table: the start state is already the classical reference, so the search starts
        # there (γ = β = 0) or at the best small ramp, and L-BFGS-B keeps the better of its end
        # and its start.
        starts = [model.warm_xy_start(spec.reps)]
        facts["table_used"] = 0.0
    else:
        theta = model.ramp_start(spec.reps)
        starts = [theta]
        facts["table_used"] = 0.0
        if spec.init == "ramp" and model.dimension <= RESTART_MAX_DIMENSION:
            rng = np.random.default_rng(seed)
            starts += [theta * rng.uniform(0.5, 1.5, size=theta.size) for _ in range(RESTARTS)]
    start_value = model.value(starts[0])
    best_theta, best_value = model.refine(starts[0], spec.maxiter, start_value=start_value)
    for start in starts[1:]:
        candidate, value = model.refine(start, spec.maxiter)
        # Strict improvement keeps the earliest start on ties, so the result is reproducible.
        if value < best_value:
            best_theta, best_value = candidate, value
    facts.update(model.facts(best_theta))
    reps = spec.reps
    angles = QaoaAngles(
        gammas=tuple(float(g * model.gamma_unit) for g in best_theta[:reps]),
        betas=tuple(float(b) for b in best_theta[reps:]),
        expectation=facts["expectation"],
        evaluations=model.evaluations,
    )
    facts.update(
        objective=best_value * model.target_spread + model.target_shift,
        start_objective=start_value * model.target_spread + model.target_shift,
        cost_std=model.spread,
        dimension=float(model.dimension),
        evaluations=float(model.evaluations),
        seconds=time.perf_counter() - started,
    )
    return QaoaPlan(
        spec=spec,
        angles=angles,
        hamming_weight=model.hamming_weight,
        warm_start=model.warm_start,
        simulated=facts,
    )


def _plan_model(ising: Ising, plan: QaoaPlan) -> tuple[SimulatedQaoa, FloatArray]:
    """The plan's simulation and its angles converted back to search units."""
    model = SimulatedQaoa(ising, plan.spec, plan.hamming_weight, plan.warm_start)
    gammas = np.array(plan.angles.gammas, dtype=np.float64) / model.gamma_unit
    return model, np.concatenate([gammas, np.array(plan.angles.betas, dtype=np.float64)])


def plan_statevector(ising: Ising, plan: QaoaPlan) -> ComplexArray:
    """The simulated final state: ``C(n, B)`` subspace amplitudes for XY, ``2^n`` otherwise.

    Up to a global phase it is the state of ``build_circuit(ising, plan, measure=False)``
    (restricted to the subspace for XY).
    """
    with single_threaded_blas():
        model, theta = _plan_model(ising, plan)
        half = theta.size // 2
        return model.simulator.statevector(theta[:half], theta[half:])


def final_distribution(ising: Ising, plan: QaoaPlan) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    """The simulated output distribution of the plan's circuit.

    Args:
        ising: The problem the plan was made for.
        plan: From :func:`plan_qaoa`.

    Returns:
        ``(bits, probabilities)``: bitstrings ``(m, n)`` with column ``i`` = variable ``i``, and
        their probabilities. For XY the ``m = C(n, B)`` weight-``B`` states (nothing else has any
        weight), otherwise all ``m = 2^n`` states in index order.
    """
    with single_threaded_blas():
        model, theta = _plan_model(ising, plan)
        probabilities = model.probabilities(theta)
    n = ising.num_qubits
    basis = model.basis if model.basis is not None else np.arange(1 << n, dtype=np.int64)
    return basis_bits(basis, n), probabilities


def build_circuit(ising: Ising, plan: QaoaPlan, *, measure: bool = True) -> QuantumCircuit:
    """The circuit that performs the plan's simulated evolution (up to a global phase).

    Qubit ``i`` carries variable ``i``. Per variant:

    * ``"x"``: :func:`~qhybrid.quantum.circuit.qaoa_circuit` (H, then RZ/RZZ and RX per layer);
    * ``"xy"``: the Dicke state (:func:`~qhybrid.quantum.circuit.dicke_circuit`) or X gates on
      the warm start's ones, then per layer the cost phase and the XY mixer as ``RXX(β)·RYY(β)``
      per ring edge in the simulator's order;
    * ``"xy-warm"``: the weighted Dicke state of the warm start
      (:func:`~qhybrid.quantum.circuit.weighted_dicke_circuit`), then the layers as for ``"xy"``;
    * ``"x-warm"``: ``RY(θ_i)`` on each qubit, then per layer the cost phase and
      ``RY(−θ_i)``, ``RZ(−2β)``, ``RY(θ_i)`` on each qubit.

    Args:
        ising: The problem the plan was made for.
        plan: From :func:`plan_qaoa`.
        measure: Whether to end with ``measure q[i] -> c[i]`` on every qubit.

    Returns:
        A circuit with ``n`` qubits and ``n`` classical bits; ``rzz``/``rxx``/``ryy`` are left for
        the transpiler to decompose.
    """
    spec = plan.spec
    if spec.mixer == "x":
        return qaoa_circuit(ising, plan.angles, measure=measure)
    n = ising.num_qubits
    circuit = QuantumCircuit(n, n, name=f"qaoa-{spec.mixer}")
    if spec.mixer in XY_MIXERS:
        if plan.hamming_weight is None:
            raise ValueError(f"an {spec.mixer!r} plan needs its hamming_weight")
        if spec.mixer == "xy-warm":
            if plan.warm_start is None:
                raise ValueError("an 'xy-warm' plan needs its warm_start")
            append_weighted_dicke(circuit, plan.warm_start, plan.hamming_weight)
        elif plan.warm_start is None:
            circuit.compose(dicke_circuit(n, plan.hamming_weight), qubits=range(n), inplace=True)
        else:
            for qubit, bit in enumerate(plan.warm_start):
                if bit:
                    circuit.x(qubit)
        for gamma, beta in zip(plan.angles.gammas, plan.angles.betas, strict=True):
            append_cost_layer(circuit, ising, gamma)
            append_xy_mixer(circuit, beta)
    else:
        if plan.warm_start is None:
            raise ValueError("an 'x-warm' plan needs its warm_start")
        thetas = warm_start_thetas(np.array(plan.warm_start), spec.epsilon)
        for qubit, theta in enumerate(thetas):
            circuit.ry(float(theta), qubit)
        for gamma, beta in zip(plan.angles.gammas, plan.angles.betas, strict=True):
            append_cost_layer(circuit, ising, gamma)
            append_warm_mixer(circuit, [float(t) for t in thetas], beta)
    if measure:
        circuit.measure(range(n), range(n))
    return circuit


def sample_start_state(
    mixer: str,
    num_qubits: int,
    *,
    hamming_weight: int | None,
    warm_start: Sequence[float] | None,
    shots: int,
    rng: np.random.Generator,
) -> NDArray[np.uint8]:
    """Samples of a plan's starting state (``p = 0``: no cost or mixer layer), drawn classically.

    The state a circuit starts from is a classical distribution in disguise; its samples are the
    reference a circuit must beat to show that its layers did something. Per mixer:

    * ``"x"``: ``|+>^n``, every bit a fair coin;
    * ``"x-warm"``: ``RY(2·asin√c_i)|0>``, bit ``i`` is 1 with probability ``c_i`` (the plan's
      clipped values), independently;
    * ``"xy"``: the Dicke state (uniform over weight ``B``), or the plan's single basis state;
    * ``"xy-warm"``: the conditioned rounding of the plan's clipped values at weight ``B``.

    Args:
        mixer: The plan's mixer.
        num_qubits: Width of the register the plan ran on (the sent problem's).
        hamming_weight: The plan's ``B``.
        warm_start: The plan's stored warm start (:attr:`QaoaPlan.warm_start`).
        shots: Number of samples.
        rng: Randomness.

    Returns:
        Bits ``(shots, num_qubits)`` in the plan's (sent) basis.

    Raises:
        ValueError: On a mixer without the inputs it needs.
    """
    n = num_qubits
    if mixer == "x":
        return (rng.random((shots, n)) < 0.5).astype(np.uint8)
    if warm_start is None and mixer != "xy":
        raise ValueError(f"mixer {mixer!r} needs the plan's warm start")
    if mixer == "x-warm":
        assert warm_start is not None
        return (rng.random((shots, n)) < np.asarray(warm_start, dtype=np.float64)).astype(np.uint8)
    if mixer not in XY_MIXERS or hamming_weight is None:
        raise ValueError(f"cannot sample the start state of mixer {mixer!r} without its hamming weight")
    if mixer == "xy" and warm_start is not None:
        return np.tile(np.asarray(warm_start, dtype=np.uint8), (shots, 1))
    values = np.full(n, 0.5) if warm_start is None else np.asarray(warm_start, dtype=np.float64)
    return conditioned.sample(values, hamming_weight, shots, rng)

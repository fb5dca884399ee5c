"""What QAOA to run: the mixer, the depth, the objective and how the angles are found."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal, get_args

#: ``"x"``: transverse field from ``|+>^n`` (the constraint, if any, is a penalty in the cost);
#: ``"xy"``: ring XY mixer from a Dicke state (or one basis state), which keeps the number of ones
#: fixed, so a cardinality constraint holds exactly; ``"x-warm"``: Egger et al.'s warm start from a
#: continuous relaxation; ``"xy-warm"``: the ring XY mixer from the relaxation conditioned on the
#: cardinality (a weighted Dicke state), so the start is already feasible and data-driven.
Mixer = Literal["x", "xy", "x-warm", "xy-warm"]
#: Mixers that keep the Hamming weight (they need ``B`` and never leave the feasible subspace).
XY_MIXERS: frozenset[str] = frozenset({"xy", "xy-warm"})
#: Mixers whose start state is built from the relaxed solution (they need a warm start).
WARM_MIXERS: frozenset[str] = frozenset({"x-warm", "xy-warm"})
ObjectiveName = Literal["mean", "cvar"]
AngleInit = Literal["table", "ramp"]

#: Default ``ε`` of ``"x-warm"`` (:attr:`QaoaSpec.warm_epsilon`).
X_WARM_EPSILON = 0.1

#: Deeper circuits than this are refused: their angle search would be slow and their depth useless
#: on today's devices.
MAX_REPS = 20


@dataclass(frozen=True)
class QaoaSpec:
    """How to run QAOA on an abstract Ising problem.

    Attributes:
        mixer: See :data:`Mixer`.
        reps: Number of layers ``p``, ``1 ≤ p ≤`` :data:`MAX_REPS`.
        objective: ``"mean"`` minimises ``E[f]``; ``"cvar"`` minimises the mean of the lowest
            ``cvar_alpha`` fraction of the output distribution, which favours states that put
            weight on the best solutions over a good average.
        cvar_alpha: ``α`` in ``(0, 1]`` (only used by ``"cvar"``).
        init: ``"table"`` starts from the shipped angle table (angles learned on smaller real
            instances of the same shape), ``"ramp"`` from a scan of linear-ramp schedules; both
            are then refined by gradient steps.
        maxiter: Refinement steps (L-BFGS-B iterations), ``0`` keeps the starting angles.
        warm_epsilon: ``ε`` in ``[0, ½]``: ``"x-warm"`` and ``"xy-warm"`` clip the relaxed values
            to ``[ε, 1 − ε]``. ``None`` takes the mixer's default: ``0.1`` for ``"x-warm"``
            (Egger et al.: at 0 or 1 a qubit's start commutes with its mixer and never moves),
            ``0`` for the others (the XY mixer moves a qubit whatever its start, and clipping
            only blurs the start: P(optimum) 0.417 at ``ε = 0``, 0.376 at 0.02, 0.307 at 0.05 on
            the benchmark's 10 instances at ``n = 16``, ``p = 1``; ``docs/benchmarks.md``).

    Raises:
        ValueError: On any value out of range, with a message naming the field.
    """

    mixer: Mixer = "x-warm"
    reps: int = 3
    objective: ObjectiveName = "mean"
    cvar_alpha: float = 0.1
    init: AngleInit = "table"
    maxiter: int = 100
    warm_epsilon: float | None = None

    def __post_init__(self) -> None:
        if self.warm_epsilon is None:
            object.__setattr__(self, "warm_epsilon", X_WARM_EPSILON if self.mixer == "x-warm" else 0.0)
        _choice("mixer", self.mixer, get_args(Mixer))
        _choice("objective", self.objective, get_args(ObjectiveName))
        _choice("init", self.init, get_args(AngleInit))
        _integer("reps", self.reps, 1, MAX_REPS)
        _integer("maxiter", self.maxiter, 0, 100_000)
        alpha = _real("cvar_alpha", self.cvar_alpha)
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"cvar_alpha must be in (0, 1], got {self.cvar_alpha}")
        epsilon = _real("warm_epsilon", self.warm_epsilon)
        if not 0.0 <= epsilon <= 0.5:
            raise ValueError(f"warm_epsilon must be in [0, 0.5], got {self.warm_epsilon}")
        object.__setattr__(self, "reps", int(self.reps))
        object.__setattr__(self, "maxiter", int(self.maxiter))
        object.__setattr__(self, "cvar_alpha", alpha)
        object.__setattr__(self, "warm_epsilon", epsilon)

    @property
    def epsilon(self) -> float:
        """:attr:`warm_epsilon` as resolved for the mixer (never ``None`` after construction)."""
        return 0.0 if self.warm_epsilon is None else float(self.warm_epsilon)

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly dictionary."""
        return {
            "mixer": self.mixer,
            "reps": self.reps,
            "objective": self.objective,
            "cvar_alpha": self.cvar_alpha,
            "init": self.init,
            "maxiter": self.maxiter,
            "warm_epsilon": self.warm_epsilon,
        }


def _choice(field: str, value: object, allowed: tuple[object, ...]) -> None:
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{field} must be one of {choices}, got {value!r}")


def _integer(field: str, value: object, low: int, high: int) -> None:
    # bool is an int subclass: reps=True must not pass for 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= int(value) <= high:
        raise ValueError(f"{field} must be an integer in {low}..{high}, got {value!r}")


def _real(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{field} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{field} must be finite, got {value!r}")
    return number

"""What QAOA to run: the mixer, the depth, the objective and how the angles are found."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal, get_args

#: ``"x"``: transverse field from ``|+>^n`` (the constraint, if any, is a penalty in the cost);
#: ``"xy"``: ring XY mixer from a Dicke state (or one basis state), which keeps the number of ones
#: fixed, so a cardinality constraint holds exactly; ``"x-warm"``: Egger et al.'s warm start from a
#: continuous relaxation.
Mixer = Literal["x", "xy", "x-warm"]
ObjectiveName = Literal["mean", "cvar"]
AngleInit = Literal["table", "ramp"]

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
        warm_epsilon: ``ε`` in ``[0, ½]``: ``"x-warm"`` clips the relaxed values to
            ``[ε, 1 − ε]`` so that no qubit starts frozen in a basis state.

    Raises:
        ValueError: On any value out of range, with a message naming the field.
    """

    mixer: Mixer = "x-warm"
    reps: int = 3
    objective: ObjectiveName = "mean"
    cvar_alpha: float = 0.1
    init: AngleInit = "table"
    maxiter: int = 100
    warm_epsilon: float = 0.1

    def __post_init__(self) -> None:
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

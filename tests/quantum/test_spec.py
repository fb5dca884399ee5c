from __future__ import annotations

import json

import numpy as np
import pytest

from qhybrid.quantum.spec import QaoaSpec


def test_defaults_and_as_dict() -> None:
    spec = QaoaSpec()
    assert spec.as_dict() == {
        "mixer": "x-warm",
        "reps": 3,
        "objective": "mean",
        "cvar_alpha": 0.1,
        "init": "table",
        "maxiter": 100,
        "warm_epsilon": 0.1,
    }
    json.dumps(spec.as_dict())


def test_numpy_numbers_are_accepted() -> None:
    spec = QaoaSpec(reps=np.int64(2), cvar_alpha=np.float64(0.5), maxiter=0)  # type: ignore[arg-type]
    assert spec.reps == 2
    assert type(spec.reps) is int
    assert spec.maxiter == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mixer": "z"}, "mixer must be one of"),
        ({"objective": "max"}, "objective must be one of"),
        ({"init": "random"}, "init must be one of"),
        ({"reps": 0}, "reps must be an integer"),
        ({"reps": True}, "reps must be an integer"),
        ({"reps": 2.0}, "reps must be an integer"),
        ({"reps": 99}, "reps must be an integer"),
        ({"maxiter": -1}, "maxiter must be an integer"),
        ({"cvar_alpha": 0.0}, "cvar_alpha must be in"),
        ({"cvar_alpha": 1.5}, "cvar_alpha must be in"),
        ({"cvar_alpha": float("nan")}, "cvar_alpha must be finite"),
        ({"cvar_alpha": "0.1"}, "cvar_alpha must be a number"),
        ({"warm_epsilon": -0.1}, "warm_epsilon must be in"),
        ({"warm_epsilon": 0.6}, "warm_epsilon must be in"),
    ],
)
def test_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QaoaSpec(**kwargs)  # type: ignore[arg-type]

"""Request and response bodies of the HTTP API.

Validation happens here, before anything is stored: a request that fails any rule is answered
with a 4xx naming the field and the rule, and leaves no trace in the database.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

#: Symmetry and PSD checks tolerate rounding of this size relative to the largest |Σ_ij|.
RELATIVE_TOLERANCE = 1e-8
ABSOLUTE_TOLERANCE = 1e-12


class Asset(BaseModel):
    """One investable asset: a name that stays in the trusted zone and its expected return."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=64, description="Asset name or ticker.")
    expected_return: float = Field(description="Expected return μ_i (any consistent period).")


class SolverOptions(BaseModel):
    """Optional knobs of the quantum solver."""

    model_config = ConfigDict(extra="forbid")

    reps: int | None = Field(default=None, ge=1, le=8, description="QAOA layers p.")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="Seed of every random step.")
    maxiter: int | None = Field(default=None, ge=1, le=5000, description="Angle-optimizer iterations.")


class OptimizeRequest(BaseModel):
    """A portfolio to optimize: minimise ``q·xᵀΣx − μᵀx`` subject to ``Σx = budget``, x binary."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "assets": [
                        {"name": "AAPL", "expected_return": 0.0012},
                        {"name": "MSFT", "expected_return": 0.0009},
                    ],
                    "covariance": [[0.00031, 0.00012], [0.00012, 0.00024]],
                    "risk_aversion": 0.5,
                    "budget": 1,
                    "backend": "local",
                    "shots": 2048,
                }
            ]
        },
    )

    assets: list[Asset] = Field(min_length=2, description="Assets with expected returns μ.")
    covariance: list[list[float]] = Field(description="Covariance Σ, n × n, symmetric PSD.")
    risk_aversion: float = Field(default=0.5, ge=0.0, le=1e6, description="Risk aversion q ≥ 0.")
    budget: int = Field(description="Number of assets to hold, 1 ≤ budget < n.")
    backend: str = Field(default="local", min_length=1, max_length=64, description="QPU backend name.")
    shots: int | None = Field(default=None, ge=1, description="Samples to take on the QPU.")
    options: SolverOptions = Field(default_factory=SolverOptions)
    deadline_seconds: float | None = Field(
        default=None, gt=0, le=30 * 24 * 3600, description="Give up on the QPU after this long."
    )

    @field_validator("assets")
    @classmethod
    def _unique_names(cls, assets: list[Asset]) -> list[Asset]:
        seen: dict[str, int] = {}
        for index, asset in enumerate(assets):
            if asset.name in seen:
                raise PydanticCustomError(
                    "unique_names",
                    "asset names must be unique: {name!r} appears at positions {first} and {second}",
                    {"name": asset.name, "first": seen[asset.name], "second": index},
                )
            seen[asset.name] = index
        return assets

    @field_validator("covariance")
    @classmethod
    def _valid_covariance(cls, rows: list[list[float]], info: ValidationInfo) -> list[list[float]]:
        n = len(rows)
        if n == 0:
            raise PydanticCustomError("square", "covariance must be a non-empty square matrix")
        for index, row in enumerate(rows):
            if len(row) != n:
                raise PydanticCustomError(
                    "square",
                    "covariance must be square: row {row} has {length} entries, expected {n}",
                    {"row": index, "length": len(row), "n": n},
                )
        assets = info.data.get("assets")
        if assets is not None and len(assets) != n:
            raise PydanticCustomError(
                "dimensions",
                "covariance is {n}×{n} but there are {assets} assets",
                {"n": n, "assets": len(assets)},
            )
        sigma = np.array(rows, dtype=np.float64)
        if not np.isfinite(sigma).all():
            raise PydanticCustomError("finite", "covariance entries must be finite numbers")
        tolerance = ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * float(np.abs(sigma).max())
        asymmetry = np.abs(sigma - sigma.T)
        if float(asymmetry.max()) > tolerance:
            i, j = np.unravel_index(int(asymmetry.argmax()), asymmetry.shape)
            raise PydanticCustomError(
                "symmetric",
                "covariance must be symmetric: [{i}][{j}]={a} but [{j}][{i}]={b}",
                {"i": int(i), "j": int(j), "a": float(sigma[i, j]), "b": float(sigma[j, i])},
            )
        smallest = float(np.linalg.eigvalsh((sigma + sigma.T) / 2.0).min())
        if smallest < -tolerance:
            raise PydanticCustomError(
                "positive_semidefinite",
                "covariance must be positive semi-definite: smallest eigenvalue is {value}",
                {"value": f"{smallest:.3g}"},
            )
        return rows

    @field_validator("budget")
    @classmethod
    def _budget_in_range(cls, budget: int, info: ValidationInfo) -> int:
        assets = info.data.get("assets")
        if budget < 1:
            raise PydanticCustomError(
                "budget_range", "budget must be at least 1, got {budget}", {"budget": budget}
            )
        if assets is not None and budget >= len(assets):
            raise PydanticCustomError(
                "budget_range",
                "budget must be less than the number of assets ({n}), got {budget}",
                {"n": len(assets), "budget": budget},
            )
        return budget

    @field_validator("risk_aversion")
    @classmethod
    def _finite_risk_aversion(cls, value: float) -> float:
        if not math.isfinite(value):  # allow_inf_nan already refuses; kept explicit for clarity
            raise PydanticCustomError("finite", "risk_aversion must be a finite number")
        return value


class JobAccepted(BaseModel):
    """The answer to an accepted request: where to find the job."""

    job_id: str
    status: str
    created_at: datetime
    links: dict[str, str]


class JobEventOut(BaseModel):
    """One transition of the job."""

    at: datetime
    from_status: str | None
    status: str
    detail: str | None


class RemoteTaskOut(BaseModel):
    """The provider task of the job's current attempt."""

    attempt: int
    backend: str
    task_id: str | None
    state: str | None
    provider_state: str | None
    queue_position: int | None
    polls: int
    submitted_at: datetime | None
    updated_at: datetime


class JobDocument(BaseModel):
    """Everything known about a job."""

    job_id: str
    status: str
    backend: str
    shots: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    deadline_at: datetime
    attempt: int
    cancel_requested: bool
    error: str | None = Field(description="Why the job failed, when it did.")
    last_error: str | None = Field(description="The last transient error, if the current step is retrying.")
    next_check_at: datetime | None = Field(description="When a worker looks at the job next.")
    events: list[JobEventOut]
    remote_task: RemoteTaskOut | None
    request: dict[str, Any]
    result: dict[str, Any] | None


class JobSummary(BaseModel):
    """A job in a list."""

    job_id: str
    status: str
    backend: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    objective: float | None


class JobPage(BaseModel):
    """One page of jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[JobSummary]
    next_cursor: str | None


class ErrorItem(BaseModel):
    """One broken rule."""

    field: str
    rule: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx answer has this shape."""

    error: str
    message: str
    errors: list[ErrorItem] = Field(default_factory=list)

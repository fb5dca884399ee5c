"""What a client asks for: ``JobRequest``, validated once, with every default written here.

Validation happens before anything is stored: a request that fails any rule is answered with a
4xx naming the field and the rule, and leaves no trace. The worker validates the stored document
back into the same model, so the API and the worker read one contract.
Limits that depend on the deployment (``QHYBRID_MAX_ASSETS``...) are checked by the API.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

from qhybrid.domain.privacy import PrivacyLevel

#: The backend of a request that names none: the emulated public cloud (``local`` is an alias).
DEFAULT_BACKEND = "emulated-cloud"

#: Magnitude bounds: far beyond any real portfolio's numbers (a daily return of 1e3 is +100,000 %,
#: a covariance entry of 1e6 a volatility of 1,000 per period), and small enough that every energy
#: the pipeline computes stays finite. Values past them are typing errors or attacks.
MAX_ABS_RETURN = 1e3
MAX_ABS_COVARIANCE = 1e6
MAX_PRICE = 1e12

#: Symmetry and PSD checks tolerate rounding of this size relative to the largest |Σ_ij|.
RELATIVE_TOLERANCE = 1e-8
ABSOLUTE_TOLERANCE = 1e-12

#: JSON's numbers and booleans as JSON means them. Pydantic's lax mode would read ``true`` as 1,
#: ``"2.5"`` as 2.5 and ``"no"`` as false; here each is a 422 naming the field. An integer is a
#: number (``1`` for ``1.0``), a number with a fraction is not an integer.
Number = Annotated[float, Strict()]
Integer = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]

#: Validation-context key under which ``domain.request_json`` hands over the price rows it has
#: already checked (the very list object): ``PriceHistory`` then keeps them without re-validating.
PREVALIDATED_PRICE_ROWS = "qhybrid.prevalidated_price_rows"


class Asset(BaseModel):
    """One investable asset: a name that stays in the trusted zone and its expected return."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=64, description="Asset name or ticker.")
    expected_return: Number = Field(
        ge=-MAX_ABS_RETURN,
        le=MAX_ABS_RETURN,
        description=f"Expected return μ_i (any consistent period), |μ_i| ≤ {MAX_ABS_RETURN:g}.",
    )


class PriceHistory(BaseModel):
    """Price series from which the trusted zone estimates μ and Σ: one column per asset."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    assets: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]] = (
        Field(min_length=2, description="Asset names, one per column of values.")
    )
    values: list[list[Number]] = Field(
        min_length=3, description="Prices: one row per date, one column per asset."
    )
    dates: list[str] | None = Field(default=None, description="Optional labels of the rows (e.g. ISO dates).")

    @field_validator("assets")
    @classmethod
    def _unique_assets(cls, names: list[str]) -> list[str]:
        _check_unique(names)
        return names

    @field_validator("values", mode="wrap")
    @classmethod
    def _valid_values(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> list[list[float]]:
        if info.context is not None and info.context.get(PREVALIDATED_PRICE_ROWS) is value:
            # Read from the JSON bytes by ``domain.request_json``, which checked every rule below
            # (and the minimum of rows) on a numpy array; validating the 15,000 numbers of a large
            # history again one by one is what that path avoids. Only that code sets the context.
            return cast(list[list[float]], value)
        rows: list[list[float]] = handler(value)
        names = info.data.get("assets")
        width = len(names) if names is not None else len(rows[0])
        try:
            # One conversion checks the shape of every row at once; a ragged list fails it.
            array = np.array(rows, dtype=np.float64)
        except ValueError:
            array = None
        if array is None or array.ndim != 2 or array.shape[1] != width:
            for index, row in enumerate(rows):
                if len(row) != width:
                    raise PydanticCustomError(
                        "dimensions",
                        "row {row} has {length} prices, expected one per asset ({n})",
                        {"row": index, "length": len(row), "n": width},
                    )
            array = np.array(rows, dtype=np.float64)
        if not np.isfinite(array).all():
            raise PydanticCustomError("finite", "prices must be finite numbers")
        if (array <= 0).any():
            row, column = np.argwhere(array <= 0)[0]
            raise PydanticCustomError(
                "positive",
                "prices must be positive: row {row}, column {column} is {value}",
                {"row": int(row), "column": int(column), "value": float(array[row, column])},
            )
        if (array > MAX_PRICE).any():
            row, column = np.argwhere(array > MAX_PRICE)[0]
            raise PydanticCustomError(
                "max_magnitude",
                "prices must be at most {limit}: row {row}, column {column} is {value}",
                {
                    "limit": f"{MAX_PRICE:g}",
                    "row": int(row),
                    "column": int(column),
                    "value": f"{array[row, column]:g}",
                },
            )
        return rows

    @field_validator("dates")
    @classmethod
    def _dates_match(cls, dates: list[str] | None, info: ValidationInfo) -> list[str] | None:
        rows = info.data.get("values")
        if dates is not None and rows is not None and len(dates) != len(rows):
            raise PydanticCustomError(
                "dimensions",
                "{dates} dates for {rows} rows of prices",
                {"dates": len(dates), "rows": len(rows)},
            )
        return dates


class SolverOptions(BaseModel):
    """Optional knobs of the quantum solver."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    reps: Integer | None = Field(
        default=None, ge=1, le=8, description="QAOA layers p; unset: QHYBRID_DEFAULT_REPS, else by size."
    )
    seed: Integer | None = Field(default=None, ge=0, le=2**31 - 1, description="Seed of every random step.")
    maxiter: Integer = Field(default=100, ge=1, le=5000, description="Angle-optimizer iterations.")
    mixer: Literal["auto", "x", "xy", "x-warm", "xy-warm"] = Field(
        default="auto",
        description="QAOA mixer: 'xy' keeps the number of held assets fixed (selection only), 'xy-warm' "
        "does so from the continuous relaxation conditioned on the budget (selection only), 'x-warm' "
        "starts from the continuous relaxation, 'x' is the standard mixer; 'auto' picks the best measured "
        "for the formulation ('xy-warm' for selection, 'x-warm' for weights).",
    )
    objective: Literal["mean", "cvar"] = Field(default="mean", description="What the angles minimise.")
    cvar_alpha: Number = Field(default=0.1, gt=0.0, le=1.0, description="Tail share for objective 'cvar'.")
    init: Literal["table", "ramp"] = Field(default="table", description="Angle initialisation.")
    fallback: Flag = Field(
        default=True, description="Answer classically (marked as such) if the QPU fails for good or too late."
    )
    refine: Flag = Field(default=True, description="Repair and refine samples by classical local search.")
    readout_mitigation: Flag = Field(
        default=True,
        description="Correct the counts for the device's published readout errors (in the trusted zone), "
        "when the device publishes them; false keeps the raw counts.",
    )


class JobRequest(BaseModel):
    """A portfolio to optimize: minimise ``q·wᵀΣw − μᵀw`` under a budget.

    ``formulation`` ``selection``: w is binary, ``budget`` assets are held. ``weights``: every asset
    holds an integer number of lots within its bounds, the lots sum to ``budget`` and ``w`` is the
    share of each asset.
    """

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
                    "backend": "emulated-cloud",
                    "shots": 2048,
                }
            ]
        },
    )

    assets: list[Asset] | None = Field(
        default=None, min_length=2, description="Assets with expected returns μ."
    )
    covariance: list[list[Number]] | None = Field(
        default=None, validate_default=True, description="Covariance Σ, n × n, symmetric PSD (with assets)."
    )
    prices: PriceHistory | None = Field(
        default=None,
        validate_default=True,
        description="Price history to estimate μ and Σ from (instead of them).",
    )
    estimator: Literal["ledoit_wolf", "sample"] = Field(
        default="ledoit_wolf", description="Covariance estimator for prices: Ledoit-Wolf shrinkage or sample."
    )
    returns: Literal["simple", "log"] = Field(default="simple", description="Returns computed from prices.")
    formulation: Literal["selection", "weights"] = Field(default="selection", description="What is decided.")
    budget: Integer = Field(
        description="selection: number of assets to hold (1 ≤ budget < n); weights: total lots."
    )
    max_lots: Integer = Field(
        default=3, ge=1, le=255, description="weights: default upper bound of lots per asset."
    )
    lot_bounds: dict[str, tuple[Integer, Integer]] | None = Field(
        default=None, validate_default=True, description="weights: [min, max] lots per asset name."
    )
    risk_aversion: Number = Field(default=0.5, ge=0.0, le=1e6, description="Risk aversion q ≥ 0.")
    backend: str = Field(
        default=DEFAULT_BACKEND,
        min_length=1,
        max_length=64,
        description="QPU backend name: emulated-cloud (alias local), braket-local[:dm], braket:<device ARN>, "
        "ibm-local:<FakeName>, ibm:<backend>.",
    )
    shots: Integer | None = Field(
        default=None, ge=1, description="Samples to take on the QPU; unset: QHYBRID_DEFAULT_SHOTS."
    )
    options: SolverOptions = Field(default_factory=SolverOptions)
    deadline_seconds: Number | None = Field(
        default=None, gt=0, le=30 * 24 * 3600, description="Answer classically if the QPU has not by then."
    )
    privacy: PrivacyLevel | None = Field(
        default=None,
        description="Obfuscation of what is sent to the QPU: more privacy costs sample quality, never "
        "correctness; unset: the deployment's default (QHYBRID_PRIVACY_DEFAULT, 'standard').",
    )
    max_cost: Number | None = Field(
        default=None,
        ge=0,
        le=1e7,
        description="Refuse the job if the QPU task is estimated to cost more (USD).",
    )

    @field_validator("assets")
    @classmethod
    def _unique_names(cls, assets: list[Asset] | None) -> list[Asset] | None:
        if assets is not None:
            _check_unique([asset.name for asset in assets])
        return assets

    @field_validator("covariance")
    @classmethod
    def _valid_covariance(
        cls, rows: list[list[float]] | None, info: ValidationInfo
    ) -> list[list[float]] | None:
        assets = info.data.get("assets")
        if rows is None:
            if assets is not None:
                raise PydanticCustomError("required", "covariance is required with assets")
            return None
        if "assets" in info.data and assets is None:
            raise PydanticCustomError(
                "requires_assets", "covariance needs assets (names and expected returns)"
            )
        return _check_covariance(rows, None if assets is None else len(assets))

    @field_validator("prices")
    @classmethod
    def _one_source(cls, prices: PriceHistory | None, info: ValidationInfo) -> PriceHistory | None:
        given_assets = info.data.get("assets") is not None
        if prices is None and not given_assets and "assets" in info.data:
            raise PydanticCustomError("required", "give prices, or assets with covariance")
        if prices is not None and given_assets:
            raise PydanticCustomError("exclusive", "give either prices or assets with covariance, not both")
        return prices

    @field_validator("budget")
    @classmethod
    def _budget_in_range(cls, budget: int, info: ValidationInfo) -> int:
        if budget < 1:
            raise PydanticCustomError(
                "budget_range", "budget must be at least 1, got {budget}", {"budget": budget}
            )
        names = _names(info.data)
        if (
            info.data.get("formulation", "selection") == "selection"
            and names is not None
            and budget >= len(names)
        ):
            raise PydanticCustomError(
                "budget_range",
                "budget must be less than the number of assets ({n}), got {budget}",
                {"n": len(names), "budget": budget},
            )
        return budget

    @field_validator("lot_bounds")
    @classmethod
    def _valid_bounds(
        cls, bounds: dict[str, tuple[int, int]] | None, info: ValidationInfo
    ) -> dict[str, tuple[int, int]] | None:
        if info.data.get("formulation") != "weights":
            if bounds is not None:
                raise PydanticCustomError("weights_only", "lot_bounds apply to formulation 'weights' only")
            return None
        names = _names(info.data)
        budget = info.data.get("budget")
        default_max = info.data.get("max_lots", cls.model_fields["max_lots"].default)
        if names is None or budget is None:
            return bounds
        for name, (low, high) in (bounds or {}).items():
            if name not in names:
                raise PydanticCustomError("known_asset", "no asset named {name!r}", {"name": name})
            if not 0 <= low <= high or high > 255:
                raise PydanticCustomError(
                    "bounds", "bounds of {name!r} must satisfy 0 ≤ min ≤ max ≤ 255", {"name": name}
                )
        lows = [(bounds or {}).get(name, (0, default_max))[0] for name in names]
        highs = [(bounds or {}).get(name, (0, default_max))[1] for name in names]
        if not sum(lows) <= budget <= sum(highs):
            raise PydanticCustomError(
                "feasible",
                "budget {budget} lots cannot be reached: the bounds allow {low} to {high} lots in total",
                {"budget": budget, "low": sum(lows), "high": sum(highs)},
            )
        return bounds

    @field_validator("options")
    @classmethod
    def _mixer_fits(cls, options: SolverOptions, info: ValidationInfo) -> SolverOptions:
        if options.mixer in ("xy", "xy-warm") and info.data.get("formulation") == "weights":
            raise PydanticCustomError(
                "mixer_formulation",
                "mixer '{mixer}' keeps the number of held assets fixed; "
                "it suits formulation 'selection' only",
                {"mixer": options.mixer},
            )
        return options

    def asset_names(self) -> list[str]:
        """The asset names, from ``assets`` or from ``prices``."""
        names = _names({"assets": self.assets, "prices": self.prices})
        return names or []

    def lot_range(self, name: str) -> tuple[int, int]:
        """``(min, max)`` lots of the asset ``name``: its ``lot_bounds``, else ``(0, max_lots)``."""
        return (self.lot_bounds or {}).get(name, (0, self.max_lots))

    def num_qubits(self) -> int:
        """Binary variables of the formulation: one per asset, or the lots' binary expansion."""
        names = self.asset_names()
        if self.formulation == "selection":
            return len(names)
        return sum((high - low).bit_length() for low, high in map(self.lot_range, names))


def _names(data: dict[str, Any]) -> list[str] | None:
    assets = data.get("assets")
    if assets is not None:
        return [asset.name for asset in assets]
    prices = data.get("prices")
    if prices is not None:
        return list(prices.assets)
    return None


def _check_unique(names: list[str]) -> None:
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise PydanticCustomError(
                "unique_names",
                "asset names must be unique: {name!r} appears at positions {first} and {second}",
                {"name": name, "first": seen[name], "second": index},
            )
        seen[name] = index


def _check_covariance(rows: list[list[float]], num_assets: int | None) -> list[list[float]]:
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
    if num_assets is not None and num_assets != n:
        raise PydanticCustomError(
            "dimensions",
            "covariance is {n}×{n} but there are {assets} assets",
            {"n": n, "assets": num_assets},
        )
    sigma = np.array(rows, dtype=np.float64)
    if not np.isfinite(sigma).all():
        raise PydanticCustomError("finite", "covariance entries must be finite numbers")
    if float(np.abs(sigma).max()) > MAX_ABS_COVARIANCE:
        i, j = np.unravel_index(int(np.abs(sigma).argmax()), sigma.shape)
        raise PydanticCustomError(
            "max_magnitude",
            "covariance entries must be at most {limit} in magnitude: [{i}][{j}] is {value}",
            {"limit": f"{MAX_ABS_COVARIANCE:g}", "i": int(i), "j": int(j), "value": f"{sigma[i, j]:g}"},
        )
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


#: Version of the request document the API stores now (``jobs.request_version``).
#: 1: before the typed contract; ``options.maxiter`` may be null (meaning the default) and
#: ``privacy`` null (meaning the deployment's default, resolved when the job runs).
#: 2: as :class:`JobRequest` dumps it, with ``shots`` and ``privacy`` resolved at acceptance.
REQUEST_VERSION = 2


def upgrade_stored_request(document: dict[str, Any], version: int) -> dict[str, Any]:
    """A stored request document in the current version's shape (no validation: cheap enough to echo).

    Raises:
        ValueError: For a version this code does not know (a newer API wrote the row).
    """
    if version == 1:
        options = dict(document.get("options") or {})
        if options.get("maxiter") is None:
            options.pop("maxiter", None)
        return {**document, "options": options}
    if version != REQUEST_VERSION:
        raise ValueError(f"stored request version {version} is newer than this code ({REQUEST_VERSION})")
    return document


def load_stored_request(document: dict[str, Any], version: int) -> JobRequest:
    """The request a job row holds, whatever version of the API wrote it, validated.

    Raises:
        ValueError: For an unknown version, or a document that breaks the contract
            (``pydantic.ValidationError`` is a ``ValueError``).
    """
    return JobRequest.model_validate(upgrade_stored_request(document, version))

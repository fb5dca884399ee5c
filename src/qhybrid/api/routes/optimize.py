"""``POST /optimize_portfolio``: validate, store an ACCEPTED job (group commit), kick, answer 202."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from qhybrid.api.deps import ServicesDep, TenantDep, require_json
from qhybrid.api.errors import ApiError, error_responses, invalid
from qhybrid.api.schemas import ErrorItem, JobAccepted, JobLinks
from qhybrid.backends.registry import check_backend, known_capacity, static_pricing, static_seconds
from qhybrid.core.config import Settings
from qhybrid.domain.request import REQUEST_VERSION, JobRequest
from qhybrid.domain.request_json import ParsedPrices, parse_price_request, stored_document
from qhybrid.domain.result import Cost, PricingReport
from qhybrid.domain.states import TERMINAL_STATES, JobState
from qhybrid.jobs.models import utcnow
from qhybrid.jobs.sizing import is_decomposed, subproblem_assets, subproblem_qubits
from qhybrid.jobs.store import IdempotencyConflictError, NewJob, TenantCapError, TenantCaps
from qhybrid.proxy.obfuscation import decoy_count

router = APIRouter(tags=["jobs"])

_ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted: a worker runs the job.",
        "headers": {
            "Location": {"description": "The job's URL: /jobs/{job_id}.", "schema": {"type": "string"}},
            "Retry-After": {
                "description": "Seconds before the job's document is worth asking for (unfinished jobs).",
                "schema": {"type": "integer"},
            },
        },
    }
}


def check_limits(request: JobRequest, settings: Settings) -> None:
    """Rules that depend on the deployment's configuration rather than on the request alone.

    Raises:
        ApiError: 422 naming the field and the configured limit.
    """
    names = request.asset_names()
    if len(names) > settings.max_assets:
        field = "assets" if request.assets is not None else "prices.assets"
        raise invalid(
            field,
            "max_assets",
            f"at most {settings.max_assets} assets are allowed (QHYBRID_MAX_ASSETS), got {len(names)}",
        )
    if request.prices is not None and len(request.prices.values) > settings.max_price_rows:
        raise invalid(
            "prices.values",
            "max_price_rows",
            f"at most {settings.max_price_rows} rows of prices are allowed (QHYBRID_MAX_PRICE_ROWS), "
            f"got {len(request.prices.values)}",
        )
    backend_problem = check_backend(request.backend, settings)
    capacity = None if backend_problem is not None else known_capacity(request.backend)
    decomposed = is_decomposed(request, settings, capacity)
    qubits = request.num_qubits()
    # Decoy variables ride along as extra qubits, so the limit applies to what is sent.
    level = request.privacy or settings.privacy_default
    decoys = decoy_count(level, qubits)
    if not decomposed and qubits + decoys > settings.max_qubits:
        field = "lot_bounds" if request.formulation == "weights" else "assets"
        if decoys and qubits <= settings.max_qubits:
            raise invalid(
                "privacy",
                "max_qubits",
                f"privacy {level!r} adds {decoys} decoy qubits to the problem's {qubits}: "
                f"{qubits + decoys} qubits; at most {settings.max_qubits} are allowed "
                "(QHYBRID_MAX_QUBITS); choose a lower privacy level or a smaller problem",
            )
        raise invalid(
            field,
            "max_qubits",
            f"the problem needs {qubits} qubits; at most {settings.max_qubits} are allowed "
            "(QHYBRID_MAX_QUBITS)",
        )
    qubits += decoys
    if request.shots is not None and request.shots > settings.max_shots:
        raise invalid(
            "shots",
            "max_shots",
            f"at most {settings.max_shots} shots are allowed (QHYBRID_MAX_SHOTS), got {request.shots}",
        )
    if backend_problem is not None:
        raise invalid("backend", "known_backend", backend_problem)
    if decomposed:
        # Solved by sub-problems: each one, decoys included, must fit on the device.
        per_part = subproblem_qubits(settings, capacity)
        if subproblem_assets(per_part, request, settings) < 2:
            raise invalid(
                "privacy",
                "subproblem_qubits",
                f"a sub-problem of {per_part} qubits cannot hold two assets with privacy {level!r}'s "
                "decoys (QHYBRID_SUBPROBLEM_QUBITS, or the device); choose a lower privacy level",
            )
    elif capacity is not None and qubits > capacity:
        raise invalid(
            "backend",
            "device_capacity",
            f"{request.backend} has {capacity} qubits; the problem needs {qubits}",
        )


def cost_estimate(request: JobRequest, shots: int, settings: Settings) -> Cost:
    """The QPU task's estimated cost from the provider's published price list, checked against max_cost.

    Raises:
        ApiError: 422 on ``max_cost`` when the estimate exceeds it or cannot be made.
    """
    try:
        pricing = static_pricing(request.backend, settings)
    except LookupError as exc:
        if request.max_cost is not None:
            raise invalid("max_cost", "cost_known", f"cannot check max_cost: {exc}") from exc
        return Cost(estimated=None, note=str(exc))
    if pricing is None:
        return Cost(estimated=0.0)
    seconds = static_seconds(request.backend, shots)
    estimated = pricing.estimate(shots, seconds)
    if is_decomposed(request, settings, known_capacity(request.backend)):
        # One task per sub-problem: the most the outer loop may send.
        estimated *= settings.decomposition_rounds * settings.decomposition_parts
    if request.max_cost is not None and estimated > request.max_cost:
        raise invalid(
            "max_cost",
            "max_cost",
            f"estimated cost {estimated:.2f} {pricing.currency} ({pricing.per_task:g} per task + "
            f"{pricing.per_shot:g} × {shots} shots + {pricing.per_second:g} × {seconds:g} s) "
            f"exceeds max_cost {request.max_cost:g}",
        )
    return Cost(
        currency=pricing.currency,
        estimated=estimated,
        estimated_seconds=seconds,
        pricing=PricingReport(
            per_task=pricing.per_task,
            per_shot=pricing.per_shot,
            per_second=pricing.per_second,
            source=pricing.source,
        ),
    )


def parse_body(raw: bytes) -> tuple[JobRequest, ParsedPrices | None]:
    """The request body as a :class:`JobRequest`, parsed and validated in one pass.

    A valid price-history body is read by :func:`parse_price_request` (the matrix checked as one
    numpy array, read by pysimdjson or orjson: no Python float validated one by one), and what it
    returns goes back with the request for :func:`stored_document`. Any other body, and any body
    that path does not accept, is read by pydantic from the JSON bytes (``model_validate_json``).
    A body that fails is parsed again the way FastAPI does it, so that every error keeps today's
    field, rule and message.

    Raises:
        RequestValidationError: Malformed JSON, a missing body or a broken rule.
    """
    parsed = parse_price_request(raw)
    if parsed is not None:
        return parsed.request, parsed
    return _parse_general(raw), None


def _parse_general(raw: bytes) -> JobRequest:
    if raw:
        try:
            return JobRequest.model_validate_json(raw)
        except ValidationError:
            pass
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from exc
    try:
        return JobRequest.model_validate(document, from_attributes=True)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from exc


#: The body is read by :func:`parse_body`, not by FastAPI; OpenAPI still documents it.
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}},
    }
}


@router.post(
    "/optimize_portfolio",
    status_code=202,
    response_model=JobAccepted,
    responses=_ACCEPTED | error_responses(400, 401, 408, 409, 413, 415, 422, 429),
    summary="Submit a portfolio optimization job",
    operation_id="submit_job",
    dependencies=[Depends(require_json)],
    openapi_extra=_BODY,
)
async def optimize_portfolio(
    request: Request,
    services: ServicesDep,
    tenant: TenantDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Retrying with the same key returns the same job instead of a new one.",
        ),
    ] = None,
) -> Response:
    """Accept the job and answer at once; a worker does the rest. ``GET /jobs/{id}`` follows it."""
    # Validation runs here, on the event loop: it is CPU work, and vectorised (numpy) where it
    # touches many numbers. The database and the queue are reached by the intake's group commit.
    body, parsed = parse_body(await request.body())
    settings = services.settings
    check_limits(body, settings)
    # The deployment's defaults are written into the stored request, so the job records what ran.
    shots = body.shots or settings.default_shots
    body = body.model_copy(update={"shots": shots, "privacy": body.privacy or settings.privacy_default})
    cost = cost_estimate(body, shots, settings)
    if settings.max_cost_per_day is not None and cost.estimated is None:
        raise invalid(
            "backend",
            "cost_known",
            f"cannot check QHYBRID_MAX_COST_PER_DAY: {cost.note or 'no price list for this backend'}",
        )
    # Serialised once: this text is hashed (idempotency) and stored as it is. A parsed price
    # matrix is written from its array; the text is the same as ``model_dump_json()``'s.
    document = stored_document(body, parsed)
    new = NewJob(
        id=str(uuid.uuid4()),
        request_json=document,
        request_hash=hashlib.sha256(document.encode()).hexdigest(),
        backend=body.backend,
        shots=shots,
        deadline_at=utcnow() + timedelta(seconds=body.deadline_seconds or settings.job_deadline_seconds),
        idempotency_key=idempotency_key,
        cost=cost.model_dump(mode="json"),
        request_version=REQUEST_VERSION,
        tenant=tenant,
    )
    caps = TenantCaps(settings.max_active_jobs_per_tenant, settings.max_cost_per_day)
    try:
        accepted = await services.intake.accept(new, caps)
    except IdempotencyConflictError as exc:
        raise ApiError(
            409, "idempotency_conflict", f"idempotency-key: {exc}", field="idempotency-key"
        ) from exc
    except TenantCapError as exc:
        raise ApiError(
            429,
            "limit_exceeded",
            f"tenant: {exc}",
            [ErrorItem(field="tenant", rule=exc.cap, message=str(exc))],
        ) from exc
    # Read from the outcome: a job created now has no ORM object built for the answer.
    job_id = accepted.job_id
    state = JobState(accepted.state)
    headers = {"Location": f"/jobs/{job_id}"}
    if not accepted.created:
        headers["Idempotent-Replayed"] = "true"
    if state not in TERMINAL_STATES:
        # A worker picks the job up at once; a second is the pace at which it has news.
        headers["Retry-After"] = "1"
    answer = JobAccepted(
        job_id=job_id,
        estimated_cost=accepted.estimated_cost,
        status=state,
        created_at=accepted.created_at,
        links=JobLinks(self=f"/jobs/{job_id}", cancel=f"/jobs/{job_id}/cancel"),
    )
    # Returned as bytes: FastAPI would validate the answer again before serialising it.
    return Response(answer.model_dump_json(), status_code=202, media_type="application/json", headers=headers)

"""One shape for every 4xx: ``{"error", "message", "errors": [{"field", "rule", "message"}]}``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qhybrid.api.schemas import ErrorBody, ErrorItem


class ApiError(Exception):
    """An error answered with ``status`` and the standard error body.

    Args:
        status: HTTP status code.
        error: Short machine-readable kind (``invalid_request``, ``not_found``...).
        message: Human-readable sentence naming the field and the rule where there is one.
        errors: The individual broken rules.
        headers: Extra response headers.
        field: The request part at fault, when there is one; adds the matching error item.
    """

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        errors: Sequence[ErrorItem] = (),
        headers: Mapping[str, str] | None = None,
        *,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.errors = list(errors)
        if field is not None and not self.errors:
            # The message reads "<field>: <rule broken>"; the item repeats it in structured form.
            detail = message.split(": ", 1)[1] if message.startswith(f"{field}: ") else message
            self.errors.append(ErrorItem(field=field, rule=error, message=detail))
        self.headers = headers


def invalid(field: str, rule: str, message: str) -> ApiError:
    """A 422 for one broken rule of one field."""
    return ApiError(
        422, "invalid_request", f"{field}: {message}", [ErrorItem(field=field, rule=rule, message=message)]
    )


def field_path(loc: Sequence[int | str]) -> str:
    """``("body", "covariance", 2, 1)`` → ``covariance[2][1]``; ``("body",)`` → ``body``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or [parts[0]]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def _from_validation(errors: Sequence[Any]) -> ApiError:
    items = [
        ErrorItem(
            field=field_path(err.get("loc", ())),
            rule=str(err.get("type", "invalid")),
            message=str(err.get("msg")),
        )
        for err in errors
    ]
    broken = next((err for err in errors if err.get("type") == "json_invalid"), None)
    if broken is not None:
        position = next((p for p in broken.get("loc", ())[1:] if isinstance(p, int)), None)
        where = f" at character {position}" if position is not None else ""
        message = f"not valid JSON{where} ({broken.get('msg')})"
        return ApiError(
            400,
            "invalid_json",
            f"body: {message}",
            [ErrorItem(field="body", rule="json_invalid", message=message)],
        )
    if not items:
        return ApiError(422, "invalid_request", "request is invalid")
    summary = "; ".join(f"{item.field}: {item.message}" for item in items[:5])
    if len(items) > 5:
        summary += f"; and {len(items) - 5} more"
    return ApiError(422, "invalid_request", summary, items)


def _response(err: ApiError) -> JSONResponse:
    body = ErrorBody(error=err.error, message=err.message, errors=err.errors)
    return JSONResponse(status_code=err.status, content=body.model_dump(), headers=err.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route validation errors, HTTP errors and :class:`ApiError` to the standard body."""

    async def on_api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _response(exc)

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _response(_from_validation(exc.errors()))

    async def on_http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _response(ApiError(exc.status_code, kind, str(exc.detail), headers=exc.headers))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


_DESCRIPTIONS = {
    400: "Malformed JSON, or a malformed header.",
    401: "A valid 'Authorization: Bearer <api key>' header is required.",
    403: "The key is valid but not for this route (e.g. /metrics is the operations tenant's).",
    404: "No such job (or another tenant's).",
    408: "The body did not arrive within QHYBRID_BODY_TIMEOUT_SECONDS.",
    409: "Conflict with the job's state or with an earlier use of the Idempotency-Key.",
    413: "The body is larger than QHYBRID_MAX_BODY_BYTES.",
    415: "The body is not declared as JSON.",
    422: "A field breaks a rule; the body names the field and the rule.",
    429: "Over the tenant's rate limit (Retry-After says when to retry), or one of its caps "
    "(active jobs, estimated cost per day).",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given 4xx codes, all documented with :class:`ErrorBody`.

    Declaring 422 here also replaces FastAPI's default validation-error schema, which is not
    the shape this API answers with.
    """
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}

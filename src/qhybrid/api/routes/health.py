"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from qhybrid.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive", operation_id="healthz")
def healthz() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process serves requests."""
    return {"status": "ok"}


@router.get(
    "/readyz", summary="The database and the queue answer", response_model=None, operation_id="readyz"
)
def readyz(services: ServicesDep) -> JSONResponse:
    """200 when the database and the queue both answer, else 503 naming what failed."""
    checks: dict[str, str] = {}
    for name, probe in (("database", services.db.ping), ("queue", services.queue.ping)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready", reported by name
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "unavailable", "checks": checks},
    )

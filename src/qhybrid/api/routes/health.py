"""Liveness and readiness."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from qhybrid.api.deps import ServicesDep, current_tenant

log = logging.getLogger("qhybrid.api")

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive", operation_id="healthz")
def healthz() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process serves requests."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database and the queue answer",
    response_model=None,
    operation_id="readyz",
    dependencies=[Depends(current_tenant)],
)
def readyz(services: ServicesDep) -> JSONResponse:
    """200 when the database and the queue both answer, else 503 saying which one does not.

    Nothing internal is answered (no exception text, no address); the log has the reason.
    """
    checks: dict[str, str] = {}
    for name, probe in (("database", services.db.ping), ("queue", services.queue.ping)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; the reason goes to the log only
            log.warning("readiness: the %s does not answer: %s: %s", name, type(exc).__name__, exc)
            checks[name] = "failing"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "unavailable", "checks": checks},
    )

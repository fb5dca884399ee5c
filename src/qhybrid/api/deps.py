"""Dependencies of the routes: settings, the job store, the queue, the caller's tenant.

Every dependency here is ``async def``: they only read memory, and FastAPI runs a plain ``def``
dependency in its thread pool, a thread hop per dependency per request (seven on the accept
path, most of its cost before they became coroutines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from qhybrid.api.auth import TENANT_STATE, Authenticator
from qhybrid.api.errors import ApiError
from qhybrid.api.ratelimit import RateLimiter
from qhybrid.core.config import Settings
from qhybrid.jobs.database import Database
from qhybrid.jobs.intake import Intake
from qhybrid.jobs.queue import JobQueue
from qhybrid.jobs.store import JobStore


@dataclass
class AppServices:
    """What the application builds once at start and every request shares."""

    settings: Settings
    db: Database
    store: JobStore
    queue: JobQueue
    auth: Authenticator
    limiter: RateLimiter
    auth_failures: RateLimiter
    intake: Intake


async def get_services(request: Request) -> AppServices:
    """The services of the running application."""
    services: AppServices = request.app.state.services
    return services


ServicesDep = Annotated[AppServices, Depends(get_services)]


async def get_settings_dep(services: ServicesDep) -> Settings:
    """The application's settings."""
    return services.settings


async def get_store(services: ServicesDep) -> JobStore:
    """The job store."""
    return services.store


async def get_queue(services: ServicesDep) -> JobQueue:
    """The queue adapter."""
    return services.queue


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[JobStore, Depends(get_store)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]


#: Declares the bearer scheme in OpenAPI (Swagger's Authorize button); the check is TenantAuth's.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key, when the deployment sets any.")


async def current_tenant(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str:
    """The tenant :class:`qhybrid.api.auth.TenantAuth` found for the request's key.

    Raises:
        ApiError: 401 if the request did not pass through the authentication layer (never
            expected; refusing is the safe answer).
    """
    tenant = (request.scope.get("state") or {}).get(TENANT_STATE)
    if not isinstance(tenant, str):
        raise ApiError(
            401,
            "unauthorized",
            "authorization: a valid 'Bearer <api key>' header is required",
            headers={"WWW-Authenticate": "Bearer"},
            field="authorization",
        )
    return tenant


TenantDep = Annotated[str, Depends(current_tenant)]


async def require_json(request: Request) -> None:
    """Refuse bodies that do not declare JSON.

    Raises:
        ApiError: 415 naming the Content-Type header.
    """
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content-type: must be application/json, got {content_type or 'nothing'!r}",
            field="content-type",
        )

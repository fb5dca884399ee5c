"""Dependencies of the routes: settings, the job store, the queue, authentication.

Every dependency here is ``async def``: they only read memory, and FastAPI runs a plain ``def``
dependency in its thread pool, a thread hop per dependency per request (seven on the accept
path, most of its cost before they became coroutines).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from qhybrid.api.errors import ApiError
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


#: Declares the bearer scheme in OpenAPI (Swagger's Authorize button); the check is ours.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key, when the deployment sets any.")


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Check ``Authorization: Bearer <key>`` when API keys are configured.

    Raises:
        ApiError: 401 when the key is missing or unknown.
    """
    if not settings.api_keys:
        return
    token = credentials.credentials if credentials is not None else ""
    # compare_digest on every key: the time taken does not reveal how much of a key matched.
    if credentials is None or not any(
        hmac.compare_digest(token.encode(), key.encode()) for key in settings.api_keys
    ):
        raise ApiError(
            401,
            "unauthorized",
            "authorization: a valid 'Bearer <api key>' header is required",
            headers={"WWW-Authenticate": "Bearer"},
            field="authorization",
        )


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

"""The FastAPI application: ``create_app(settings)``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from qhybrid import __version__
from qhybrid.api.auth import Authenticator, TenantAuth
from qhybrid.api.deps import AppServices
from qhybrid.api.errors import install_error_handlers
from qhybrid.api.limits import SubmissionRateLimit
from qhybrid.api.middleware import BodySizeLimit
from qhybrid.api.ratelimit import RateLimiter
from qhybrid.api.routes import health, jobs, optimize
from qhybrid.backends.registry import warm_up
from qhybrid.core.config import Settings, get_settings
from qhybrid.jobs.database import Database
from qhybrid.jobs.queue import make_queue
from qhybrid.jobs.store import JobStore
from qhybrid.jobs.tenants import KeyStore, pepper_of

log = logging.getLogger("qhybrid.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; the database is migrated when the application starts.

    Args:
        settings: Configuration; the environment's when omitted.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_dirs()
        # Backend names are validated on request threads; load what that needs here, once.
        warm_up()
        db = Database(settings.resolved_database_url)
        db.migrate()
        queue = make_queue(settings)
        auth = Authenticator(settings, KeyStore(db, pepper_of(settings)))
        app.state.services = AppServices(
            settings=settings,
            db=db,
            store=JobStore(db),
            queue=queue,
            auth=auth,
            limiter=RateLimiter(settings),
            auth_failures=RateLimiter(settings, settings.auth_failure_limit or "", namespace="auth-failure"),
        )
        auth.warn_if_open()
        log.info("api ready: database=%s queue=%s", db.engine.url.get_backend_name(), queue.engine)
        try:
            yield
        finally:
            db.dispose()

    app = FastAPI(
        title="qhybrid",
        version=__version__,
        summary="Portfolio optimization on quantum processors without exposing business data.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(optimize.router)
    app.include_router(jobs.router)
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_body_bytes, timeout_seconds=settings.body_timeout_seconds
    )
    app.add_middleware(SubmissionRateLimit)
    # Added last, so it runs first: no key, no body read; over the rate limit, no body read.
    app.add_middleware(TenantAuth)
    _describe_in_markdown(app)
    return app


def _describe_in_markdown(app: FastAPI) -> None:
    """Serve the OpenAPI text in Markdown, as the specification says it is.

    Descriptions come from docstrings, which write code as reStructuredText (double backticks);
    Swagger and Redoc render Markdown and showed the double backticks literally.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _rest_to_markdown(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _rest_to_markdown(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: value.replace("``", "`")
            if key in ("description", "summary") and isinstance(value, str)
            else _rest_to_markdown(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rest_to_markdown(item) for item in node]
    return node

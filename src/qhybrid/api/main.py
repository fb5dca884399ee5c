"""The FastAPI application: ``create_app(settings)``."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from qhybrid import __version__
from qhybrid.api.auth import Authenticator, TenantAuth
from qhybrid.api.deps import AppServices
from qhybrid.api.errors import install_error_handlers
from qhybrid.api.limits import SubmissionRateLimit
from qhybrid.api.middleware import BodySizeLimit, RequestMetrics
from qhybrid.api.ratelimit import RateLimiter
from qhybrid.api.routes import health, jobs, metrics, optimize, ui
from qhybrid.backends.registry import warm_up
from qhybrid.core.config import Settings, get_settings
from qhybrid.jobs.database import Database
from qhybrid.jobs.intake import Intake
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
        store = JobStore(db)
        intake = Intake(store, queue)
        await intake.start()
        auth = Authenticator(settings, KeyStore(db, pepper_of(settings)))
        app.state.services = AppServices(
            settings=settings,
            db=db,
            store=store,
            queue=queue,
            auth=auth,
            limiter=RateLimiter(settings),
            auth_failures=RateLimiter(settings, settings.auth_failure_limit or "", namespace="auth-failure"),
            intake=intake,
        )
        auth.warn_if_open()
        # Everything built so far (modules, schemas, engines) lives as long as the process: move it
        # out of the collector's reach. Otherwise every full collection, which a large price body's
        # lists of rows set off, walks the whole heap (profiled: most of a price request's time).
        gc.collect()
        gc.freeze()
        log.info("api ready: database=%s queue=%s", db.engine.url.get_backend_name(), queue.engine)
        try:
            yield
        finally:
            await intake.stop()
            db.dispose()

    app = FastAPI(
        title="qhybrid",
        version=__version__,
        summary="Portfolio optimization on quantum processors without exposing business data.",
        lifespan=lifespan,
        # /docs is served from the wheel's own Swagger UI (routes/ui.py), not from a CDN; ReDoc is
        # not served (its bundle would be a second megabyte-sized copy of the same page).
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(ui.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(optimize.router)
    app.include_router(jobs.router)
    app.mount("/static", StaticFiles(directory=ui.STATIC_DIR), name="static")
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_body_bytes, timeout_seconds=settings.body_timeout_seconds
    )
    app.add_middleware(SubmissionRateLimit)
    # Added late, so it runs early: no key, no body read; over the rate limit, no body read.
    app.add_middleware(TenantAuth)
    # Outermost: every answer is counted, a 401, 429 or 413 included (as route "unmatched").
    app.add_middleware(RequestMetrics)
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

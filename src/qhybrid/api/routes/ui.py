"""The dashboard at ``/`` and the API's interactive documentation at ``/docs``, served from the wheel.

Every asset ships in the package (``qhybrid/api/static``): the dashboard's script, style and SVG
charts are ours, Swagger UI is the npm registry's ``swagger-ui-dist`` committed with its license.
Nothing comes from a CDN, so both work in a trusted zone without internet, and the pages' Content
Security Policy makes the browser refuse anything from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

#: Only this origin: scripts, styles, images, and the API calls the dashboard makes.
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
#: Swagger UI starts from a short inline script FastAPI writes; nothing else inline, nothing remote.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard() -> FileResponse:
    """The dashboard's page; its data comes from the API with the key the user types."""
    return FileResponse(
        STATIC_DIR / "dashboard" / "index.html",
        headers={"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-cache"},
    )


@router.get("/docs")
def docs() -> HTMLResponse:
    """Swagger UI on ``/openapi.json``, from the assets shipped in the wheel."""
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="qhybrid API",
        swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger-ui/swagger-ui.css",
        swagger_favicon_url="/static/dashboard/favicon.svg",
        # The validator badge would ask validator.swagger.io about the document.
        swagger_ui_parameters={"validatorUrl": None},
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page

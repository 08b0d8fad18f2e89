"""The dashboard and the API docs, served from files in the package (no CDN: both work on a
LAN without internet).

``GET /`` is the page (``dashboard/index.html``); its scripts, styles and the vendored
MessagePack decoder are static files under ``/ui/`` (``xiaozhi_hub/dashboard/``). The page
signs in with an API key kept in the browser, reads the fleet once over the REST API and
then follows it live over the stream (``/api/v1/stream``). ``GET /docs`` is Swagger UI from
the vendored ``swagger-ui-dist`` files (``dashboard/vendor/swagger-ui/``), not FastAPI's
default CDN URLs; ReDoc, which has no such option, is switched off in
:func:`~xiaozhi_hub.http.app.create_app`.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DOCS_PATH", "UI_PATH", "add_dashboard_routes", "dashboard_html"]

UI_PATH = "/ui"
DOCS_PATH = "/docs"
_SWAGGER = f"{UI_PATH}/vendor/swagger-ui"


def dashboard_html() -> str:
    """The page, read from the installed package (``xiaozhi_hub/dashboard/index.html``)."""
    return resources.files("xiaozhi_hub").joinpath("dashboard/index.html").read_text("utf-8")


def add_dashboard_routes(app: FastAPI) -> None:
    """``GET /`` (the page, read once when the app is built), ``/ui/*`` (its files) and
    ``GET /docs`` (Swagger UI on the vendored assets)."""
    page = dashboard_html()

    @app.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{_SWAGGER}/swagger-ui-bundle.js",
            swagger_css_url=f"{_SWAGGER}/swagger-ui.css",
            swagger_favicon_url=f"{_SWAGGER}/favicon-32x32.png",
        )

    app.mount(UI_PATH, StaticFiles(packages=[("xiaozhi_hub", "dashboard")]), name="ui")

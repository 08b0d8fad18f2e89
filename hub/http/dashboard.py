"""The dashboard: one static page (``dashboard/index.html``, shipped as package data) that
lists the devices through the REST API with the operator's API key, kept in the browser."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

__all__ = ["add_dashboard_routes", "dashboard_html"]


def dashboard_html() -> str:
    """The page, read from the installed package (``xiaozhi_hub/dashboard/index.html``)."""
    return resources.files("xiaozhi_hub").joinpath("dashboard/index.html").read_text("utf-8")


def add_dashboard_routes(app: FastAPI) -> None:
    """``GET /``: the page, read once when the app is built."""
    page = dashboard_html()

    @app.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page)

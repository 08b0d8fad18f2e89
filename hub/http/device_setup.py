"""The setup (OTA) endpoint real xiaozhi firmware calls at boot (firmware reference §3).

``/xiaozhi/ota/`` answers the clock, the firmware offer (none: the device's own version) and
where to connect: the edge's WebSocket URL, a device token signed with the hub's secret and
the binary protocol version. ``/xiaozhi/ota/activate`` is the activation poll: every device is
auto-approved, so it always answers 200. These answer in the firmware's own JSON, not in the
REST envelopes, and need no credentials.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from xiaozhi import jsonutil
from xiaozhi.errors import InvalidTopic, WireError
from xiaozhi.tokens import issue_token
from xiaozhi.topics import normalize_device_id
from xiaozhi_hub.http.envelopes import MAX_BODY_BYTES
from xiaozhi_hub.settings import HubSettings

__all__ = ["add_setup_routes"]

log = structlog.get_logger("xiaozhi.hub.http")

_MAX_HEADER_CHARS = 128


def _header(request: Request, name: str) -> str | None:
    value = request.headers.get(name, "").strip()
    return value[:_MAX_HEADER_CHARS] if value else None


def _firmware_version(body: Mapping[str, Any], user_agent: str | None) -> str:
    """The device's own version (so nothing is offered as an upgrade)."""
    application = body.get("application")
    if isinstance(application, dict) and isinstance(application.get("version"), str):
        return str(application["version"])[:32]
    if user_agent and "/" in user_agent:
        return user_agent.rsplit("/", 1)[1][:32]
    return "0.0.0"


def _edge_url(settings: HubSettings, request: Request) -> str:
    if settings.edge_public_url:
        return settings.edge_public_url
    host = request.url.hostname or "127.0.0.1"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"ws://{host}:{settings.edge_port}/xiaozhi/v1/"


def _timezone_offset_minutes() -> int:
    return int(time.localtime().tm_gmtoff // 60)


def add_setup_routes(app: FastAPI, settings: HubSettings, secret: bytes) -> None:
    """``/xiaozhi/ota/`` and ``/xiaozhi/ota/activate``; ``secret`` signs the device tokens."""

    @app.post("/xiaozhi/ota/", tags=["firmware"], operation_id="ota_setup")
    async def ota(request: Request) -> JSONResponse:
        """Setup for real firmware (firmware reference §3): clock, firmware, WebSocket + token."""
        device_id = _header(request, "device-id")
        client_id = _header(request, "client-id")
        body: dict[str, Any] = {}
        raw = await request.body()
        if raw.strip():
            try:
                body = jsonutil.loads_object(raw, max_bytes=MAX_BODY_BYTES)
            except WireError as err:
                return JSONResponse({"error": f"invalid JSON body: {err}"}, status_code=400)
        device_id = device_id or _str(body.get("mac_address"))
        client_id = client_id or _str(body.get("uuid"))
        ws_url = _edge_url(settings, request)
        if device_id is None or client_id is None:
            if request.method == "GET":
                message = "xiaozhi setup endpoint: POST with Device-Id and Client-Id headers"
                return JSONResponse({"message": message, "websocket": {"url": ws_url}})
            missing = "Device-Id" if device_id is None else "Client-Id"
            return JSONResponse({"error": f"missing {missing} header"}, status_code=400)
        try:
            normalized = normalize_device_id(device_id)
        except InvalidTopic as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        now = time.time()
        token = issue_token(secret, client_id=client_id, device_id=device_id, issued_at=int(now))
        user_agent = _header(request, "user-agent")
        answer = {
            "server_time": {
                "timestamp": int(now * 1000),
                "timezone_offset": _timezone_offset_minutes(),
            },
            "firmware": {"version": _firmware_version(body, user_agent), "url": ""},
            "websocket": {"url": ws_url, "token": token, "version": settings.device_binary_version},
        }
        log.info(
            "ota_setup",
            device_id=normalized,
            client_id=client_id,
            activation_version=_header(request, "activation-version"),
            user_agent=user_agent,
        )
        return JSONResponse(answer)

    app.add_api_route("/xiaozhi/ota/", ota, methods=["GET"], operation_id="ota_setup_get")
    app.add_api_route("/xiaozhi/ota", ota, methods=["GET", "POST"], include_in_schema=False)

    @app.post("/xiaozhi/ota/activate", tags=["firmware"])
    async def activate(request: Request) -> JSONResponse:
        """The firmware's activation poll: 200 = activated. Every device is auto-approved
        (the hub hands out no activation code), so this only answers a device that asks."""
        log.info("ota_activate", device_id=_header(request, "device-id"))
        return JSONResponse({"status": "activated"})


def _str(value: Any) -> str | None:
    return value[:_MAX_HEADER_CHARS] if isinstance(value, str) and value.strip() else None

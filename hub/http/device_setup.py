"""The setup (OTA) endpoint real xiaozhi firmware calls at boot (firmware reference §3).

``/xiaozhi/ota/`` answers the clock, the firmware offer (none: the device's own version) and,
for an approved ``(Device-Id, Client-Id)`` pair only, where to connect: the edge's WebSocket
URL, a device token signed with the hub's Ed25519 key and the binary protocol version. Any
other pair gets an ``activation`` block (``message``, a 6-digit ``code``, ``challenge``,
``timeout_ms``) and no token: real firmware shows and speaks the code and polls
``/xiaozhi/ota/activate`` (202 while pending, 200 once an operator approved it;
:mod:`xiaozhi_hub.activations`). With ``XIAOZHI_DEVICE_APPROVAL=auto`` every pair is approved
at its first call (labs, ``xiaozhi up``), with a warning. These answer in the firmware's own
JSON, not in the REST envelopes, and need no credentials: the activation is the credential.
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
from xiaozhi.activation import HMAC_ALGORITHM, hmac_matches
from xiaozhi.errors import InvalidTopic, WireError
from xiaozhi.mqtt_credentials import (
    DEFAULT_GROUP,
    PUBLISH_TOPIC,
    DeviceClientId,
    encode_username,
)
from xiaozhi.tokens import Ed25519PrivateKey, issue_token
from xiaozhi.topics import normalize_device_id
from xiaozhi_hub.activations import Activations, DeviceApproval, Pending, TooManyPending
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
    if user_agent and "/" in user_agent.split()[0]:  # `board/version`, other products after
        return user_agent.split()[0].rsplit("/", 1)[1][:32]
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


def _activations(request: Request) -> Activations:
    activations: Activations = request.app.state.service.activations
    return activations


def _activation_block(entry: Pending, now: float) -> dict[str, Any]:
    """What firmware shows (``message``), speaks (``code``) and polls with (``challenge``)."""
    return {
        "message": f"{entry.code}\nApprove this code on the xiaozhi hub",
        "code": entry.code,
        "challenge": entry.challenge,
        "timeout_ms": max(0, int((entry.expires_at - now) * 1000)),
    }


async def _body(request: Request) -> dict[str, Any] | JSONResponse:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return jsonutil.loads_object(raw, max_bytes=MAX_BODY_BYTES)
    except WireError as err:
        return JSONResponse({"error": f"invalid JSON body: {err}"}, status_code=400)


def add_setup_routes(app: FastAPI, settings: HubSettings, signing_key: Ed25519PrivateKey) -> None:
    """``/xiaozhi/ota/`` and ``/xiaozhi/ota/activate``; ``signing_key`` signs device tokens."""

    @app.post("/xiaozhi/ota/", tags=["firmware"], operation_id="ota_setup")
    async def ota(request: Request) -> JSONResponse:
        """Setup for real firmware (firmware reference §3): clock, firmware, and WebSocket +
        token for an approved device, an activation code for any other."""
        device_id = _header(request, "device-id")
        client_id = _header(request, "client-id")
        body = await _body(request)
        if isinstance(body, JSONResponse):
            return body
        device_id = device_id or _str(body.get("mac_address"))
        client_id = client_id or _str(body.get("uuid"))
        if device_id is None or client_id is None:
            if request.method == "GET":
                message = "xiaozhi setup endpoint: POST with Device-Id and Client-Id headers"
                url = _edge_url(settings, request)
                return JSONResponse({"message": message, "websocket": {"url": url}})
            missing = "Device-Id" if device_id is None else "Client-Id"
            return JSONResponse({"error": f"missing {missing} header"}, status_code=400)
        try:
            normalized = normalize_device_id(device_id)
        except InvalidTopic as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        now = time.time()
        user_agent = _header(request, "user-agent")
        answer: dict[str, Any] = {
            "server_time": {
                "timestamp": int(now * 1000),
                "timezone_offset": _timezone_offset_minutes(),
            },
            "firmware": {"version": _firmware_version(body, user_agent), "url": ""},
        }
        approved, extra = _connection_or_activation(
            request, settings, signing_key, device_id, normalized, client_id, now
        )
        if isinstance(extra, JSONResponse):
            return extra
        answer.update(extra)
        log.info(
            "ota_setup",
            device_id=normalized,
            client_id=client_id,
            approved=approved,
            activation_version=_header(request, "activation-version"),
            user_agent=user_agent,
        )
        return JSONResponse(answer)

    app.add_api_route("/xiaozhi/ota/", ota, methods=["GET"], operation_id="ota_setup_get")
    app.add_api_route("/xiaozhi/ota", ota, methods=["GET", "POST"], include_in_schema=False)
    _add_activate_route(app, settings)


def _add_activate_route(app: FastAPI, settings: HubSettings) -> None:
    @app.post("/xiaozhi/ota/activate", tags=["firmware"])
    async def activate(request: Request) -> JSONResponse:
        """The firmware's activation poll (``Ota::Activate``): 202 while an operator has not
        approved the pair, 200 once approved; 403 for a challenge or HMAC that does not
        match, 404 when nothing is pending (the device runs setup again for a new code)."""
        pair = _pair(request)
        if isinstance(pair, JSONResponse):
            return pair
        normalized, client_id = pair
        body = await _body(request)
        if isinstance(body, JSONResponse):
            return body
        activations = _activations(request)
        if activations.is_approved(normalized, client_id):
            log.info("ota_activate", device_id=normalized, status="activated")
            return JSONResponse({"status": "activated"})
        now = time.time()
        entry = activations.find_pending(normalized, client_id, now)
        if entry is None:
            return JSONResponse(
                {"error": "no activation pending for this device: run setup again"},
                status_code=404,
            )
        refused, verified = _check_proof(settings, entry, body)
        if refused is not None:
            log.warning("activation_proof_refused", device_id=normalized, reason=refused)
            return JSONResponse({"error": refused}, status_code=403)
        if verified and not entry.hmac_verified:
            activations.mark_hmac_verified(entry)
        return JSONResponse(
            {"status": "pending", "timeout_ms": int((entry.expires_at - now) * 1000)},
            status_code=202,
        )


def _connection_or_activation(
    request: Request,
    settings: HubSettings,
    signing_key: Ed25519PrivateKey,
    device_id: str,
    normalized: str,
    client_id: str,
    now: float,
) -> tuple[bool, dict[str, Any] | JSONResponse]:
    """The ``websocket`` block with a token for an approved pair (``auto`` approval approves
    it here, with a warning), else the ``activation`` block; or a 503 when too many wait."""
    activations = _activations(request)
    approved = activations.is_approved(normalized, client_id)
    if not approved and settings.device_approval is DeviceApproval.AUTO:
        activations.approve_pair(normalized, client_id, now, by="auto")
        log.warning(
            "device_auto_approved",
            device_id=normalized,
            client_id=client_id,
            hint="XIAOZHI_DEVICE_APPROVAL=auto: any device that asks gets a token",
        )
        approved = True
    if approved:
        token = issue_token(
            signing_key, client_id=client_id, device_id=device_id, issued_at=int(now)
        )
        if _transport(request, settings, normalized) == "mqtt-udp":
            return True, {"mqtt": mqtt_block(settings, request, device_id, client_id, token)}
        websocket = {
            "url": _edge_url(settings, request),
            "token": token,
            "version": settings.device_binary_version,
        }
        return True, {"websocket": websocket}
    try:
        entry = activations.request(
            normalized,
            client_id,
            now,
            raw_device_id=device_id,
            serial_number=_header(request, "serial-number"),
            user_agent=_header(request, "user-agent"),
        )
    except TooManyPending as err:
        log.warning("activation_refused", device_id=normalized, reason=str(err))
        return False, JSONResponse({"error": str(err)}, status_code=503)
    log.info(
        "activation_pending",
        device_id=normalized,
        client_id=client_id,
        code=entry.code,
        hint="approve: POST /api/v1/activations/approve or bridge/request/device/approve",
    )
    return False, {"activation": _activation_block(entry, now)}


def _transport(request: Request, settings: HubSettings, device_id: str) -> str:
    """The home model's word for this device, else the fleet's setting."""
    device = request.app.state.service.home.device(device_id)
    chosen = device.transport if device is not None else None
    return chosen or settings.device_transport


def mqtt_block(
    settings: HubSettings, request: Request, device_id: str, client_id: str, token: str
) -> dict[str, Any]:
    """The ``mqtt`` block that puts firmware in MQTT + UDP mode (firmware reference §2.1-2.2),
    in the xinnan forms (:mod:`xiaozhi.mqtt_credentials`), with the device token as the
    password: the edge checks it with the hub's public key, as on WebSocket.

    No ``subscribe_topic``: the edge pushes to ``devices/p2p/<mac>`` unasked.
    """
    endpoint = settings.edge_mqtt_endpoint
    if not endpoint:
        host = request.url.hostname or "127.0.0.1"
        endpoint = f"{host}:{settings.edge_mqtt_port}"
    user = {"ip": request.client.host} if request.client is not None else {}
    return {
        "endpoint": endpoint,
        "client_id": str(DeviceClientId(DEFAULT_GROUP, device_id, client_id)),
        "username": encode_username(user),
        "password": token,
        "publish_topic": PUBLISH_TOPIC,
        "keepalive": 240,
    }


def _pair(request: Request) -> tuple[str, str] | JSONResponse:
    """The poll's normalized ``Device-Id`` and its ``Client-Id``, or the 400 answer."""
    device_id = _header(request, "device-id")
    client_id = _header(request, "client-id")
    if device_id is None or client_id is None:
        missing = "Device-Id" if device_id is None else "Client-Id"
        return JSONResponse({"error": f"missing {missing} header"}, status_code=400)
    try:
        return normalize_device_id(device_id), client_id
    except InvalidTopic as err:
        return JSONResponse({"error": str(err)}, status_code=400)


def _check_proof(
    settings: HubSettings, entry: Pending, body: Mapping[str, Any]
) -> tuple[str | None, bool]:
    """Why the poll's challenge or HMAC is refused (or None), and whether a board key checked
    the HMAC (firmware reference §3.2).

    An empty body (a board without an eFuse serial number) proves nothing and is fine. A
    ``challenge`` must be the one this activation issued. An ``hmac`` is checked when the hub
    knows that serial number's key (``XIAOZHI_ACTIVATION_HMAC_KEYS``); a key it does not know
    leaves the HMAC unchecked (``hmac_verified`` stays false in the listing).
    """
    challenge = body.get("challenge")
    if challenge is not None and challenge != entry.challenge:
        return "challenge does not match this device's activation", False
    given = body.get("hmac")
    if not given:
        return None, False
    if body.get("algorithm", HMAC_ALGORITHM) != HMAC_ALGORITHM:
        algorithm = body.get("algorithm")
        return f"unsupported algorithm {algorithm!r} (expected {HMAC_ALGORITHM!r})", False
    serial = body.get("serial_number") or entry.serial_number
    key = settings.hmac_keys.get(serial) if isinstance(serial, str) else None
    if key is None:
        return None, False
    if not isinstance(given, str) or not hmac_matches(key, entry.challenge, given):
        return "activation HMAC does not match this board's key", False
    return None, True


def _str(value: Any) -> str | None:
    return value[:_MAX_HEADER_CHARS] if isinstance(value, str) and value.strip() else None

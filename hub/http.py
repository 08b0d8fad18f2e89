"""The hub's HTTP side (FastAPI on ``XIAOZHI_HUB_PORT``, design.md §6).

========================  ==========================================================  =========
path                      what                                                        auth
========================  ==========================================================  =========
``/api/v1/...``           REST, seed 003's envelopes (below)                          key / JWT
``/xiaozhi/ota/``         setup for real firmware (firmware reference §3)             none
``/xiaozhi/ota/activate`` activation poll: always 200, devices are auto-approved      none
``/health``               broker connected, hub state (503 unless online)             none
``/metrics``              Prometheus text format                                      none
``/openapi.json``,        the API description                                         none
``/docs``
``/``                     a one-page dashboard listing devices through the REST API   (key)
========================  ==========================================================  =========

Every REST answer is an envelope, errors included (401, 403, 404, 405, 422, 500)::

    {"success": true, "data": ..., "message": "...", "timestamp": "...", "request_id": "req_..."}
    {"success": false, "error": {"code": "DEVICE_NOT_FOUND", "message": "...", "details": {}},
     "timestamp": "...", "request_id": "req_..."}

Authentication (:class:`Principal`) runs before the request body is looked at: ``X-API-Key``
(keys and roles from ``XIAOZHI_API_KEYS``) or ``Authorization: Bearer <JWT>`` (HS256, issued by
``POST /api/v1/auth/token`` in exchange for an API key). No or bad credentials: 401; a read-only
credential on a command endpoint: 403.

:func:`run_hub` runs the whole hub (MQTT service + HTTP server) as an async context manager,
for ``xiaozhi hub`` and ``xiaozhi up``; :func:`create_app` alone lets a FastAPI lifespan own the
service (``uvicorn --factory xiaozhi_hub.http:app_from_env``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
import jwt
import structlog
import uvicorn
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from xiaozhi import __version__, jsonutil
from xiaozhi.commands import parse_parameters
from xiaozhi.errors import InvalidMessage, InvalidTopic, WireError
from xiaozhi.payloads import CommandPayload
from xiaozhi.tokens import issue_token
from xiaozhi.topics import normalize_device_id
from xiaozhi_hub.home import Home
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.metrics import CONTENT_TYPE
from xiaozhi_hub.registry import Registry
from xiaozhi_hub.service import HubService, HubState
from xiaozhi_hub.settings import (
    ApiRole,
    HubSettings,
    derive_jwt_secret,
    load_hub_settings,
    resolve_secret,
)
from xiaozhi_hub.unit import now_wire

__all__ = [
    "API_PREFIX",
    "ApiError",
    "ErrorEnvelope",
    "Principal",
    "RunningHub",
    "ServedApp",
    "SuccessEnvelope",
    "app_from_env",
    "create_app",
    "run_hub",
    "serve_app",
]

log = structlog.get_logger("xiaozhi.hub.http")

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 64 * 1024
_MAX_HEADER_CHARS = 128
_JWT_ALGORITHM = "HS256"
_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


# -- envelopes -----------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str = Field(examples=["DEVICE_NOT_FOUND"])
    message: str = Field(examples=["unknown device 'kitchen'"])
    details: dict[str, Any] = Field(default_factory=dict)


class SuccessEnvelope(BaseModel):
    """Seed 003's "Standard Response Structure"."""

    success: Literal[True] = True
    data: Any = None
    message: str = Field(examples=["OK"])
    timestamp: str = Field(examples=["2024-01-01T00:00:00.000Z"])
    request_id: str = Field(examples=["req_3f2a9c1b7d4e"])


class ErrorEnvelope(BaseModel):
    """Seed 003's "Error Response Structure"."""

    success: Literal[False] = False
    error: ErrorBody
    timestamp: str
    request_id: str


class ApiError(Exception):
    """An error answered with the error envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = dict(details or {})
        self.headers = dict(headers or {})


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or f"req_{secrets.token_hex(6)}"


def _ok(request: Request, data: Any, message: str = "OK", *, status: int = 200) -> JSONResponse:
    body = {
        "success": True,
        "data": data,
        "message": message,
        "timestamp": now_wire(),
        "request_id": _request_id(request),
    }
    return JSONResponse(body, status_code=status)


def _error(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {
        "success": False,
        "error": {"code": code, "message": message, "details": dict(details or {})},
        "timestamp": now_wire(),
        "request_id": _request_id(request),
    }
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorEnvelope, "description": "No, unknown or expired credentials"},
    403: {"model": ErrorEnvelope, "description": "Valid credentials without the needed role"},
    422: {"model": ErrorEnvelope, "description": "The request does not validate"},
}


# -- request bodies ------------------------------------------------------------------------


class CommandRequest(BaseModel):
    """A device, group or broadcast command (the ``xiaozhi/commands/...`` payload)."""

    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, max_length=64, examples=["set_volume"])
    parameters: dict[str, Any] = Field(default_factory=dict, examples=[{"volume": 80}])
    message_id: str | None = Field(default=None, min_length=1, max_length=128)


class VoiceTestRequest(BaseModel):
    """Text to recognize as if ``device_id`` (in ``area``) had heard it; nothing runs."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=500, examples=["turn on the living room light"])
    device_id: str | None = Field(default=None, max_length=64, examples=["demo_kitchen"])
    area: str | None = Field(default=None, max_length=64, examples=["kitchen"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl_seconds: int | None = Field(default=None, ge=60, description="At most the default TTL.")


# -- authentication -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``subject`` names the key by fingerprint, never the key itself."""

    subject: str
    role: ApiRole
    via: Literal["api_key", "jwt"]

    def allows(self, role: ApiRole) -> bool:
        return self.role is ApiRole.WRITE or role is ApiRole.READ


def _fingerprint(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


class _Auth:
    """Checks ``X-API-Key`` and bearer JWTs; issues JWTs."""

    def __init__(self, settings: HubSettings, jwt_key: bytes) -> None:
        self.keys = settings.api_key_roles
        self.jwt_key = jwt_key
        self.ttl = settings.jwt_ttl_seconds
        self.issuer = settings.jwt_issuer

    def authenticate(self, api_key: str | None, authorization: str | None) -> Principal:
        challenge = {"WWW-Authenticate": 'Bearer realm="xiaozhi-hub"'}
        if api_key is not None:
            key = api_key.strip()
            for known, role in self.keys.items():
                if secrets.compare_digest(known.encode(), key.encode()):
                    return Principal(_fingerprint(known), role, "api_key")
            raise ApiError(401, "INVALID_API_KEY", "unknown API key", headers=challenge)
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(
                    401,
                    "INVALID_TOKEN",
                    "expected 'Authorization: Bearer <JWT>'",
                    headers=challenge,
                )
            return self._decode(token.strip(), challenge)
        raise ApiError(
            401,
            "MISSING_CREDENTIALS",
            "send an 'X-API-Key' header or 'Authorization: Bearer <JWT>'",
            headers=challenge,
        )

    def _decode(self, token: str, challenge: dict[str, str]) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self.jwt_key,
                algorithms=[_JWT_ALGORITHM],
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
            role = ApiRole(claims.get("role"))
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "TOKEN_EXPIRED", "the JWT has expired", headers=challenge) from None
        except (jwt.InvalidTokenError, ValueError) as err:
            raise ApiError(401, "INVALID_TOKEN", f"invalid JWT: {err}", headers=challenge) from None
        return Principal(str(claims["sub"]), role, "jwt")

    def issue(self, principal: Principal, ttl: int | None) -> tuple[str, int]:
        lifetime = min(ttl or self.ttl, self.ttl)
        now = int(time.time())
        claims = {
            "sub": principal.subject,
            "role": principal.role.value,
            "iss": self.issuer,
            "iat": now,
            "exp": now + lifetime,
        }
        return jwt.encode(claims, self.jwt_key, algorithm=_JWT_ALGORITHM), lifetime


# Declared for OpenAPI (the "Authorize" button); the middleware does the checking.
_api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer_scheme = HTTPBearer(auto_error=False, bearerFormat="JWT")


def _requires(role: ApiRole) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        _key: Annotated[str | None, Security(_api_key_scheme)] = None,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)] = None,
    ) -> Principal:
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None:  # pragma: no cover - the middleware always sets it
            raise ApiError(401, "MISSING_CREDENTIALS", "not authenticated")
        if not principal.allows(role):
            raise ApiError(
                403,
                "FORBIDDEN",
                f"this credential is {principal.role.value}-only; this needs {role.value}",
                {"role": principal.role.value, "required": role.value},
            )
        return principal

    return dependency


_Reader = Annotated[Principal, Depends(_requires(ApiRole.READ))]
_Writer = Annotated[Principal, Depends(_requires(ApiRole.WRITE))]


# -- the app --------------------------------------------------------------------------------


def _service(request: Request) -> HubService:
    return request.app.state.service  # type: ignore[no-any-return]


def create_app(
    settings: HubSettings,
    *,
    service: HubService | None = None,
    secret: bytes | None = None,
) -> FastAPI:
    """The FastAPI app.

    Args:
        settings: the hub's settings.
        service: an already started service (:func:`run_hub`); None: the app's lifespan
            creates, starts and stops one.
        secret: the token-signing secret; default :func:`~xiaozhi_hub.settings.resolve_secret`.
    """
    secret = secret if secret is not None else resolve_secret(settings)
    auth = _Auth(settings, derive_jwt_secret(settings, secret))
    if not auth.keys:
        log.warning("no_api_keys", note="the REST API refuses every request: set XIAOZHI_API_KEYS")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if service is not None:
            app.state.service = service
            yield
            return
        owned = HubService(settings)
        await owned.start()
        app.state.service = owned
        try:
            yield
        finally:
            await owned.stop()

    app = FastAPI(
        title="xiaozhi hub",
        version=__version__,
        description="Voice commands to Home Assistant-style actions for fleets of xiaozhi "
        "devices. REST answers use seed 003's envelopes; see docs/hub.md.",
        lifespan=lifespan,
        # A hard guard for bodies without Content-Length (plain-text 413); the middleware below
        # answers bodies that announce more than MAX_BODY_BYTES with the error envelope.
        max_body_size=4 * MAX_BODY_BYTES,
        # Every /api/v1 call needs a custom header (X-API-Key or Authorization), which already
        # forces a CORS preflight: a JSON body without a Content-Type header is accepted.
        strict_content_type=False,
    )
    if service is not None:
        app.state.service = service
    app.state.settings = settings

    @app.middleware("http")
    async def request_context(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get("x-request-id", "")
        usable = given.isascii() and given.replace("-", "").replace("_", "").isalnum()
        request.state.request_id = given if usable and len(given) <= 64 else None
        request.state.request_id = _request_id(request)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            response: Response = _error(
                request,
                413,
                "PAYLOAD_TOO_LARGE",
                f"body of {length} bytes > limit {MAX_BODY_BYTES}",
                {"limit": MAX_BODY_BYTES},
            )
            response.headers["X-Request-ID"] = request.state.request_id
            return response
        if request.url.path.startswith(API_PREFIX + "/"):
            try:
                request.state.principal = auth.authenticate(
                    request.headers.get("x-api-key"), request.headers.get("authorization")
                )
            except ApiError as err:
                response = _error(
                    request, err.status, err.code, err.message, err.details, headers=err.headers
                )
                response.headers["X-Request-ID"] = request.state.request_id
                return response
        response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return _error(request, err.status, err.code, err.message, err.details, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(err.status_code, f"HTTP_{err.status_code}")
        message = err.detail if isinstance(err.detail, str) else code.lower()
        return _error(request, err.status_code, code, message, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body",
                "message": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in err.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return _error(
                request, 400, "INVALID_JSON", "the body is not valid JSON", {"errors": errors}
            )
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        message = f"{first['field']}: {first['message']}"
        return _error(request, 422, "VALIDATION_ERROR", message, {"errors": errors})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("http_request_failed", path=request.url.path, exc_info=err)
        return _error(request, 500, "INTERNAL_ERROR", "internal error")

    _add_api(app, auth)
    _add_device_endpoints(app, settings, secret)
    return app


def _known_device(registry: Registry, device_id: str) -> None:
    if registry.device(device_id) is None:
        raise ApiError(404, "DEVICE_NOT_FOUND", f"unknown device {device_id!r}", {"id": device_id})


def _command(body: CommandRequest, device_id: str | None = None) -> CommandPayload:
    command = CommandPayload(
        command=body.command,
        parameters=body.parameters,
        message_id=body.message_id or secrets.token_hex(16),
        timestamp=now_wire(),
        device_id=device_id,
    )
    try:
        parse_parameters(command)  # a known command's parameters must fit its model
    except InvalidMessage as err:
        raise ApiError(
            422, "INVALID_PARAMETERS", str(err), {"field": err.field or "parameters"}
        ) from err
    return command


def _add_api(app: FastAPI, auth: _Auth) -> None:
    api = API_PREFIX

    @app.post(f"{api}/auth/token", tags=["auth"], response_model=SuccessEnvelope, responses=_ERRORS)
    async def issue_jwt(
        request: Request, principal: _Reader, body: TokenRequest | None = None
    ) -> JSONResponse:
        """Exchange an API key (``X-API-Key``) for a JWT with the same role."""
        if principal.via != "api_key":
            raise ApiError(403, "API_KEY_REQUIRED", "a JWT is issued for an API key only")
        token, lifetime = auth.issue(principal, body.ttl_seconds if body else None)
        data = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": lifetime,
            "role": principal.role.value,
        }
        return _ok(request, data, "token issued")

    @app.get(f"{api}/devices", tags=["devices"], response_model=SuccessEnvelope, responses=_ERRORS)
    async def list_devices(request: Request, _: _Reader) -> JSONResponse:
        """Every device the hub knows, with status, telemetry and sensors."""
        registry = _service(request).registry
        data = [_device_json(registry, d.device_id) for d in registry.devices()]
        return _ok(request, data, f"{len(data)} devices")

    @app.get(
        f"{api}/devices/{{device_id}}",
        tags=["devices"],
        response_model=SuccessEnvelope,
        responses={**_ERRORS, 404: {"model": ErrorEnvelope}},
    )
    async def get_device(request: Request, device_id: str, _: _Reader) -> JSONResponse:
        registry = _service(request).registry
        _known_device(registry, device_id)
        return _ok(request, _device_json(registry, device_id))

    @app.post(
        f"{api}/devices/{{device_id}}/command",
        tags=["devices"],
        status_code=202,
        response_model=SuccessEnvelope,
        responses={**_ERRORS, 404: {"model": ErrorEnvelope}},
    )
    async def device_command(
        request: Request, device_id: str, body: CommandRequest, _: _Writer
    ) -> JSONResponse:
        """Publish a command on ``xiaozhi/commands/{device_id}`` (QoS 1, never retained)."""
        service = _service(request)
        _known_device(service.registry, device_id)
        command = _command(body, device_id)
        topic = service.topics.command(device_id)
        _published(service.publish_command(topic, command))
        record = service.registry.device(device_id)
        data = {
            "device_id": device_id,
            "topic": topic,
            "command": command.command,
            "message_id": command.message_id,
            "connected": bool(record and record.connected),
        }
        return _ok(request, data, "command published", status=202)

    @app.post(
        f"{api}/broadcast",
        tags=["commands"],
        status_code=202,
        response_model=SuccessEnvelope,
        responses=_ERRORS,
    )
    async def broadcast(request: Request, body: CommandRequest, _: _Writer) -> JSONResponse:
        """Publish on ``xiaozhi/commands/broadcast``: MQTT devices read it, the hub fans it out
        to WebSocket devices."""
        service = _service(request)
        command = _command(body)
        topic = service.topics.broadcast_command()
        _published(service.publish_command(topic, command))
        data = {"topic": topic, "command": command.command, "message_id": command.message_id}
        return _ok(request, data, "broadcast published", status=202)

    @app.get(f"{api}/groups", tags=["commands"], response_model=SuccessEnvelope, responses=_ERRORS)
    async def list_groups(request: Request, _: _Reader) -> JSONResponse:
        data = _service(request).registry.snapshot_groups()
        return _ok(request, data, f"{len(data)} groups")

    @app.post(
        f"{api}/groups/{{group_id}}/command",
        tags=["commands"],
        status_code=202,
        response_model=SuccessEnvelope,
        responses={**_ERRORS, 404: {"model": ErrorEnvelope}},
    )
    async def group_command(
        request: Request, group_id: str, body: CommandRequest, _: _Writer
    ) -> JSONResponse:
        """Publish on ``xiaozhi/commands/group/{group_id}``; the hub fans it out to members."""
        service = _service(request)
        group = service.registry.group(group_id)
        if group is None:
            raise ApiError(404, "GROUP_NOT_FOUND", f"unknown group {group_id!r}", {"id": group_id})
        command = _command(body)
        topic = service.topics.group_command(group_id)
        _published(service.publish_command(topic, command))
        data = {
            "group_id": group_id,
            "topic": topic,
            "command": command.command,
            "message_id": command.message_id,
            "members": list(group.members),
        }
        return _ok(request, data, "group command published", status=202)

    @app.post(
        f"{api}/voice/test", tags=["voice"], response_model=SuccessEnvelope, responses=_ERRORS
    )
    async def voice_test(request: Request, body: VoiceTestRequest, _: _Reader) -> JSONResponse:
        """Recognize text as a voice command: intent, slots, actions, answer; nothing runs."""
        service = _service(request)
        if body.area is not None and service.home.area(body.area) is None:
            known = [a.id for a in service.home.areas]
            raise ApiError(422, "UNKNOWN_AREA", f"unknown area {body.area!r}", {"known": known})
        if not service.intents_loaded:
            raise ApiError(503, "NOT_READY", "the intent engine is still loading")
        result = await service.plan_text(body.text, device_id=body.device_id, area=body.area)
        data = result.to_json_dict()
        data["would_execute"] = data.pop("executed")
        data["executed"] = False
        data["device_id"] = body.device_id
        return _ok(request, data, result.response_text)

    @app.get(f"{api}/stats", tags=["hub"], response_model=SuccessEnvelope, responses=_ERRORS)
    async def stats(request: Request, _: _Reader) -> JSONResponse:
        return _ok(request, _service(request).stats())


def _published(ok: bool) -> None:
    if not ok:
        raise ApiError(503, "QUEUE_FULL", "the MQTT queue is full; try again")


def _device_json(registry: Registry, device_id: str) -> dict[str, Any]:
    record = registry.device(device_id)
    assert record is not None
    data = record.to_json_dict()
    data["groups"] = registry.groups_of(device_id)
    data["area_name"] = registry.home.area_name(record.area)
    return data


# -- OTA, health, metrics, dashboard -------------------------------------------------------


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


def _add_device_endpoints(app: FastAPI, settings: HubSettings, secret: bytes) -> None:
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

    @app.get("/health", tags=["hub"])
    async def health(request: Request) -> JSONResponse:
        """200 when online and connected to the broker, 503 otherwise."""
        service = _service(request)
        connected = service.owner.connected.is_set()
        healthy = connected and service.state is HubState.ONLINE
        data = {
            "status": "ok" if healthy else "unavailable",
            "hub": service.state.value,
            "hub_id": service.settings.hub_id,
            "broker_connected": connected,
            "intents_loaded": service.intents_loaded,
            "devices": len(service.registry.devices()),
        }
        return JSONResponse(data, status_code=200 if healthy else 503)

    @app.get("/metrics", tags=["hub"])
    async def metrics(request: Request) -> Response:
        return Response(_service(request).metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(_DASHBOARD)


def _str(value: Any) -> str | None:
    return value[:_MAX_HEADER_CHARS] if isinstance(value, str) and value.strip() else None


_DASHBOARD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xiaozhi hub</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px system-ui,sans-serif;margin:2em;color:#222}
 table{border-collapse:collapse;width:100%} th,td{padding:.4em .6em;border-bottom:1px solid #ddd;
 text-align:left} .connected{color:#080} .disconnected{color:#a00} #err{color:#a00}
</style></head><body>
<h1>xiaozhi hub</h1>
<p><label>API key <input id="key" type="password" size="32"></label>
<button id="save">Save</button> <a href="/docs">API docs</a> · <a href="/metrics">metrics</a></p>
<p id="err"></p>
<table><thead><tr><th>device</th><th>name</th><th>area</th><th>status</th><th>transport</th>
<th>last seen</th></tr></thead><tbody id="devices"></tbody></table>
<script>
const keyInput = document.getElementById("key");
keyInput.value = localStorage.getItem("xiaozhi_api_key") || "";
document.getElementById("save").onclick = () => {
  localStorage.setItem("xiaozhi_api_key", keyInput.value); load(); };
function cell(row, text, cls) {
  const td = row.insertCell(); td.textContent = text ?? ""; if (cls) td.className = cls; }
async function load() {
  const err = document.getElementById("err");
  const res = await fetch("/api/v1/devices", {headers: {"X-API-Key": keyInput.value}});
  const body = await res.json();
  if (!body.success) { err.textContent = body.error.message; return; }
  err.textContent = "";
  const tbody = document.getElementById("devices"); tbody.replaceChildren();
  for (const d of body.data) {
    const row = tbody.insertRow();
    cell(row, d.id); cell(row, d.name); cell(row, d.area_name);
    cell(row, d.status || "never seen", d.status); cell(row, d.transport); cell(row, d.last_seen);
  }
}
load(); setInterval(load, 5000);
</script></body></html>
"""


# -- running it -----------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn's server with a readiness event and, when embedded, no signal handlers."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the process that embeds us owns the signals

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@dataclass(frozen=True, slots=True)
class ServedApp:
    server: uvicorn.Server
    host: str
    port: int

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def _listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@contextlib.asynccontextmanager
async def serve_app(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, graceful_seconds: float = 5.0
) -> AsyncIterator[ServedApp]:
    """Serve an ASGI app with uvicorn in this event loop until the block exits.

    The socket is bound here first, so a taken port raises ``OSError`` to the caller (uvicorn
    would exit the process). Returns once the server accepts connections: no polling.
    """
    sock = _listen_socket(host, port)
    actual_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_seconds),
        lifespan="on",
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"http-{actual_port}")
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not server.ready.is_set():
        ready.cancel()
        sock.close()
        raise RuntimeError(f"the HTTP server on {host}:{actual_port} did not start") from (
            task.exception() if task.done() and not task.cancelled() else None
        )
    try:
        yield ServedApp(server, host, actual_port)
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass(frozen=True, slots=True)
class RunningHub:
    """A running hub: its MQTT service, its app and where HTTP listens."""

    service: HubService
    app: FastAPI
    served: ServedApp

    @property
    def url(self) -> str:
        """``http://host:port`` of the REST API, OTA endpoint and dashboard."""
        return self.served.url

    @property
    def port(self) -> int:
        return self.served.port


@contextlib.asynccontextmanager
async def run_hub(
    settings: HubSettings,
    *,
    mqtt_url: str | None = None,
    home: Home | None = None,
    engine: IntentEngine | None = None,
    environ: Mapping[str, str] | None = None,
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[RunningHub]:
    """Run the hub (MQTT units, then HTTP) until the block exits; then stop HTTP, publish
    ``bridge/state`` offline and disconnect.

    Args:
        settings: the hub's settings (:func:`~xiaozhi_hub.settings.load_hub_settings`).
        mqtt_url: overrides ``settings.mqtt_url`` (``xiaozhi up``'s managed broker).
        home, engine, environ, http_transport: see :class:`~xiaozhi_hub.service.HubService`.

    Raises:
        HubSettingsError: the secret file cannot be created.
        HomeConfigError: the home file does not validate.
        HubStartError: the broker is unreachable or a unit failed.
        OSError: the HTTP port is taken.
    """
    if mqtt_url is not None:
        settings = settings.model_copy(update={"mqtt_url": mqtt_url})
    secret = resolve_secret(settings)
    service = HubService(
        settings, home=home, engine=engine, environ=environ, http_transport=http_transport
    )
    await service.start()
    try:
        app = create_app(settings, service=service, secret=secret)
        async with serve_app(app, host=settings.hub_host, port=settings.hub_port) as served:
            yield RunningHub(service, app, served)
    finally:
        await service.stop()


def app_from_env() -> FastAPI:
    """An app whose lifespan owns the service, from the environment (for uvicorn --factory)."""
    return create_app(load_hub_settings())

"""The hub's HTTP app (FastAPI on ``XIAOZHI_HUB_PORT``) and running the whole hub.

:func:`create_app` builds the app from its parts: the request-id and body-size middleware,
authentication (:mod:`.auth`), the envelopes every error is answered with (:mod:`.envelopes`),
the REST routes (:mod:`.rest`), the live stream WebSocket (:mod:`.stream`), the setup
endpoint (:mod:`.device_setup`), ``/health``, ``/metrics`` and the dashboard
(:mod:`.dashboard`). :func:`run_hub` runs the MQTT service and the app together, for
``xiaozhi hub`` and ``xiaozhi up``; uvicorn is embedded through
:func:`xiaozhi_runtime.asgi.serve_app`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from xiaozhi import __version__
from xiaozhi.tokens import Ed25519PrivateKey
from xiaozhi_hub.home import Home
from xiaozhi_hub.http.auth import Authenticator
from xiaozhi_hub.http.dashboard import add_dashboard_routes
from xiaozhi_hub.http.device_setup import add_setup_routes
from xiaozhi_hub.http.envelopes import (
    API_PREFIX,
    MAX_BODY_BYTES,
    STATUS_CODES,
    ApiError,
    error_response,
    request_id,
)
from xiaozhi_hub.http.monitor import add_monitor_routes
from xiaozhi_hub.http.rest import add_rest_routes, service_of
from xiaozhi_hub.http.stream import WS_MAX_SIZE, add_stream_routes
from xiaozhi_hub.intents import IntentEngine
from xiaozhi_hub.metrics import CONTENT_TYPE
from xiaozhi_hub.service import HubService, HubState
from xiaozhi_hub.settings import (
    HubCertificate,
    HubSettings,
    derive_jwt_secret,
    load_hub_settings,
    resolve_device_token_key,
    resolve_hub_tls,
    resolve_secret,
)
from xiaozhi_runtime.asgi import ServedApp, listen, serve_app

__all__ = ["RunningHub", "app_from_env", "create_app", "run_hub"]

log = structlog.get_logger("xiaozhi.hub.http")


def create_app(
    settings: HubSettings,
    *,
    service: HubService | None = None,
    secret: bytes | None = None,
    signing_key: Ed25519PrivateKey | None = None,
) -> FastAPI:
    """The FastAPI app.

    Args:
        settings: the hub's settings.
        service: an already started service (:func:`run_hub`); None: the app's lifespan
            creates, starts and stops one.
        secret: the hub's secret (REST JWTs derive from it); default
            :func:`~xiaozhi_hub.settings.resolve_secret`.
        signing_key: the device token key; default
            :func:`~xiaozhi_hub.settings.resolve_device_token_key`.
    """
    secret = secret if secret is not None else resolve_secret(settings)
    if signing_key is None:
        signing_key = resolve_device_token_key(settings)
    auth = Authenticator(settings, derive_jwt_secret(settings, secret))
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
        # /docs is served from vendored files by add_dashboard_routes (offline LANs); ReDoc
        # only loads from a CDN, so it is off.
        docs_url=None,
        redoc_url=None,
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
        request.state.request_id = request_id(request)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            response: Response = error_response(
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
                response = error_response(
                    request, err.status, err.code, err.message, err.details, headers=err.headers
                )
                response.headers["X-Request-ID"] = request.state.request_id
                return response
        response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(
            request, err.status, err.code, err.message, err.details, headers=err.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(err.status_code, f"HTTP_{err.status_code}")
        message = err.detail if isinstance(err.detail, str) else code.lower()
        return error_response(request, err.status_code, code, message, headers=err.headers)

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
            return error_response(
                request, 400, "INVALID_JSON", "the body is not valid JSON", {"errors": errors}
            )
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        message = f"{first['field']}: {first['message']}"
        return error_response(request, 422, "VALIDATION_ERROR", message, {"errors": errors})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("http_request_failed", path=request.url.path, exc_info=err)
        return error_response(request, 500, "INTERNAL_ERROR", "internal error")

    add_rest_routes(app, auth)
    add_stream_routes(app, auth)
    add_monitor_routes(app, auth)
    add_setup_routes(app, settings, signing_key)
    _add_probe_routes(app)
    add_dashboard_routes(app)
    return app


def _add_probe_routes(app: FastAPI) -> None:
    """``/health`` and ``/metrics``: for load balancers and Prometheus, no credentials."""

    @app.get("/health", tags=["hub"])
    async def health(request: Request) -> JSONResponse:
        """200 when online and connected to the broker, 503 otherwise."""
        service = service_of(request)
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
        return Response(service_of(request).metrics.exposition(), media_type=CONTENT_TYPE)


@dataclass(frozen=True, slots=True)
class RunningHub:
    """A running hub: its MQTT service, its app and where HTTP listens."""

    service: HubService
    app: FastAPI
    served: ServedApp
    tls: HubCertificate | None = None
    """The certificate it serves https with; None: plain http."""

    @property
    def url(self) -> str:
        """``http://host:port`` (``https://`` with TLS) of the REST API, OTA endpoint and
        dashboard."""
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
        HubSettingsError: the secret, key or self-signed certificate files cannot be created.
        HomeConfigError: the home file does not validate.
        HubStartError: the broker is unreachable or a unit failed.
        OSError: the HTTP port is taken.
    """
    if mqtt_url is not None:
        settings = settings.model_copy(update={"mqtt_url": mqtt_url})
    secret = resolve_secret(settings)
    signing_key = resolve_device_token_key(settings)
    tls = resolve_hub_tls(settings)
    # The port first: a taken one fails before the hub is online on the broker.
    listener = listen(settings.hub_host, settings.hub_port, setting="XIAOZHI_HUB_PORT")
    try:
        service = HubService(
            settings, home=home, engine=engine, environ=environ, http_transport=http_transport
        )
        await service.start()
    except BaseException:
        listener.close()
        raise
    try:
        app = create_app(settings, service=service, secret=secret, signing_key=signing_key)
        certificate = (tls.cert_file, tls.key_file) if tls is not None else None
        async with serve_app(
            app, listener=listener, ws_max_size=WS_MAX_SIZE, certificate=certificate
        ) as served:
            yield RunningHub(service, app, served, tls)
    finally:
        listener.close()
        await service.stop()


def app_from_env() -> FastAPI:
    """An app whose lifespan owns the service, from the environment (for uvicorn --factory)."""
    return create_app(load_hub_settings())

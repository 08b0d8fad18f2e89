"""The hub's HTTP side (FastAPI on ``XIAOZHI_HUB_PORT``, design.md §6), one module per role.

========================  ==========================================================  =========
path                      what (module)                                               auth
========================  ==========================================================  =========
``/api/v1/...``           REST, seed 003's envelopes (:mod:`.rest`, :mod:`.envelopes`)  key / JWT
``/api/v1/stream``        the live stream, seed 002 over a WebSocket (:mod:`.stream`)   key / JWT
``/api/v1/devices/{id}/`` a device's live microphone, seed 004 packets over a           key / JWT
``listen``                WebSocket (:mod:`.monitor`)
``/xiaozhi/ota/``         setup for real firmware (:mod:`.device_setup`)              none
``/xiaozhi/ota/activate`` activation poll: 202 pending, 200 once approved            none
``/health``               broker connected, hub state (503 unless online)             none
``/metrics``              Prometheus text format                                      none
``/openapi.json``,        the API description                                         none
``/docs``
``/``                     a one-page dashboard (:mod:`.dashboard`, a package file)    (key)
========================  ==========================================================  =========

Authentication (:mod:`.auth`) runs before the request body is looked at: ``X-API-Key`` or
``Authorization: Bearer <JWT>``. No or bad credentials: 401; a read-only credential on a
command endpoint: 403.

:func:`run_hub` runs the whole hub (MQTT service + HTTP server) as an async context manager,
for ``xiaozhi hub`` and ``xiaozhi up``; :func:`create_app` alone lets a FastAPI lifespan own the
service (``uvicorn --factory xiaozhi_hub.http:app_from_env``). Both live in :mod:`.app`.
"""

from xiaozhi_hub.http.app import RunningHub, app_from_env, create_app, run_hub
from xiaozhi_hub.http.auth import Principal
from xiaozhi_hub.http.envelopes import API_PREFIX, ApiError, ErrorEnvelope, SuccessEnvelope

__all__ = [
    "API_PREFIX",
    "ApiError",
    "ErrorEnvelope",
    "Principal",
    "RunningHub",
    "SuccessEnvelope",
    "app_from_env",
    "create_app",
    "run_hub",
]

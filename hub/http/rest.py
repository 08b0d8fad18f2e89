"""The REST API under ``/api/v1/`` (seed 003's envelopes; :mod:`.envelopes`).

==================================  =========================================  ======
route                               what                                       role
==================================  =========================================  ======
``POST /auth/token``                a JWT for an API key                       read
``GET /devices``, ``/devices/{id}``  the registry's devices; one device's also  read
                                    has ``mcp_tools`` (its last announced, or
                                    null) and ``mcp_tools_at``
``PATCH /devices/{id}``             rename and/or set its area (the bridge's    write
                                    ``device/rename``, ``device/area``)
``POST /devices/{id}/command``      a command on the device's topic            write
``POST /devices/remove``            bulk removal: ``{"simulated": true}`` and  write
                                    /or ``{"not_seen_for_seconds": N}`` (the
                                    bridge's ``device/remove``); ``removed``
``POST /broadcast``                 a command on ``commands/broadcast``        write
``GET /groups``                     the groups                                 read
``POST /groups/{id}/command``       a command on the group's topic             write
``POST /voice/test``                text → intent, actions, answer; nothing    read
                                    runs (the hub's one voice pipeline)
``GET /stats``                      the service's counters                     read
``GET /home``                       floors, areas, entities (binding, state),  read
                                    groups: the home model as the hub sees it
``GET /utterances``                 the ids of the utterances whose audio      read
                                    this hub keeps
``GET /utterances/{id}/audio``      one of the last utterances this hub        read
                                    transcribed, as a WAV file (16-bit mono)
``GET /activations``                devices waiting for approval (their code)  read
``POST /activations/approve``       approve one (by ``code`` or ``device_id``)  write
``POST /activations/reject``        drop one; its next setup gets a new code   write
==================================  =========================================  ======

Approving is the operator's consent of design.md §9 (:mod:`xiaozhi_hub.activations`): the
device's next setup call, which real firmware makes as soon as its poll answers 200, gets
its token.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from xiaozhi import jsonutil
from xiaozhi.commands import parse_parameters
from xiaozhi.errors import InvalidMessage
from xiaozhi.payloads import CommandPayload
from xiaozhi_hub.activations import ActivationNotFound
from xiaozhi_hub.current_state import CurrentState
from xiaozhi_hub.device_tools import DeviceToolsUnit
from xiaozhi_hub.home import Binding, HomeAssistantBinding, MqttBinding, XiaozhiBinding
from xiaozhi_hub.http.auth import Authenticator, Reader, Writer
from xiaozhi_hub.http.envelopes import (
    API_PREFIX,
    ERROR_RESPONSES,
    ApiError,
    ErrorEnvelope,
    SuccessEnvelope,
    ok,
)
from xiaozhi_hub.registry import Registry
from xiaozhi_hub.service import HubService
from xiaozhi_hub.unit import now_wire

log = structlog.get_logger("xiaozhi.hub.http")

__all__ = [
    "ActivationRequest",
    "CommandRequest",
    "DeviceEditRequest",
    "RemoveDevicesRequest",
    "TokenRequest",
    "VoiceTestRequest",
    "add_rest_routes",
    "service_of",
]


def service_of(request: Request) -> HubService:
    """The app's running :class:`~xiaozhi_hub.service.HubService`."""
    service: HubService = request.app.state.service
    return service


class RemoveDevicesRequest(BaseModel):
    """``POST /devices/remove``: which learnt devices to forget (both given: both hold)."""

    model_config = ConfigDict(extra="forbid")
    simulated: bool | None = None
    not_seen_for_seconds: float | None = Field(default=None, ge=0)


class DeviceEditRequest(BaseModel):
    """``PATCH /devices/{id}``: a new display name and/or area (``null``: in no area)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100, examples=["Desk"])
    area: str | None = Field(default=None, max_length=64, examples=["kitchen"])


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


class ActivationRequest(BaseModel):
    """One pending activation: by the ``code`` the device shows, or by its ``device_id``
    (plus ``client_id`` when that device has several pending)."""

    model_config = ConfigDict(extra="forbid")

    code: str | None = Field(default=None, min_length=1, max_length=16, examples=["123456"])
    device_id: str | None = Field(default=None, min_length=1, max_length=64)
    client_id: str | None = Field(default=None, min_length=1, max_length=128)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl_seconds: int | None = Field(default=None, ge=60, description="At most the default TTL.")


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


def add_rest_routes(app: FastAPI, auth: Authenticator) -> None:
    """The ``/api/v1/`` routes (module docstring); ``auth`` issues the JWTs."""
    api = API_PREFIX

    @app.post(
        f"{api}/auth/token",
        tags=["auth"],
        response_model=SuccessEnvelope,
        responses=ERROR_RESPONSES,
    )
    async def issue_jwt(
        request: Request, principal: Reader, body: TokenRequest | None = None
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
        return ok(request, data, "token issued")

    @app.get(
        f"{api}/devices",
        tags=["devices"],
        response_model=SuccessEnvelope,
        responses=ERROR_RESPONSES,
    )
    async def list_devices(request: Request, _: Reader) -> JSONResponse:
        """Every device the hub knows, with status, telemetry and sensors."""
        registry = service_of(request).registry
        data = [_device_json(registry, d.device_id) for d in registry.devices()]
        return ok(request, data, f"{len(data)} devices")

    _add_removal_route(app)
    _add_edit_route(app)

    @app.get(
        f"{api}/devices/{{device_id}}",
        tags=["devices"],
        response_model=SuccessEnvelope,
        responses={**ERROR_RESPONSES, 404: {"model": ErrorEnvelope}},
    )
    async def get_device(request: Request, device_id: str, _: Reader) -> JSONResponse:
        service = service_of(request)
        _known_device(service.registry, device_id)
        return ok(request, _device_json(service.registry, device_id, service.device_tools))

    @app.post(
        f"{api}/devices/{{device_id}}/command",
        tags=["devices"],
        status_code=202,
        response_model=SuccessEnvelope,
        responses={**ERROR_RESPONSES, 404: {"model": ErrorEnvelope}},
    )
    async def device_command(
        request: Request, device_id: str, body: CommandRequest, _: Writer
    ) -> JSONResponse:
        """Publish a command on ``xiaozhi/commands/{device_id}`` (QoS 1, never retained)."""
        service = service_of(request)
        _known_device(service.registry, device_id)
        command = _command(body, device_id)
        topic = service.topics.command(device_id)
        _published(await service.command_device(device_id, command))
        record = service.registry.device(device_id)
        data = {
            "device_id": device_id,
            "topic": topic,
            "command": command.command,
            "message_id": command.message_id,
            "connected": bool(record and record.connected),
        }
        return ok(request, data, "command published", status=202)

    @app.post(
        f"{api}/broadcast",
        tags=["commands"],
        status_code=202,
        response_model=SuccessEnvelope,
        responses=ERROR_RESPONSES,
    )
    async def broadcast(request: Request, body: CommandRequest, _: Writer) -> JSONResponse:
        """Publish on ``xiaozhi/commands/broadcast``: MQTT devices read it, edges hand it to
        their WebSocket devices."""
        service = service_of(request)
        command = _command(body)
        topic = service.topics.broadcast_command()
        _published(service.publish_command(topic, command))
        data = {"topic": topic, "command": command.command, "message_id": command.message_id}
        return ok(request, data, "broadcast published", status=202)

    @app.get(
        f"{api}/groups",
        tags=["commands"],
        response_model=SuccessEnvelope,
        responses=ERROR_RESPONSES,
    )
    async def list_groups(request: Request, _: Reader) -> JSONResponse:
        data = service_of(request).registry.snapshot_groups()
        return ok(request, data, f"{len(data)} groups")

    @app.post(
        f"{api}/groups/{{group_id}}/command",
        tags=["commands"],
        status_code=202,
        response_model=SuccessEnvelope,
        responses={**ERROR_RESPONSES, 404: {"model": ErrorEnvelope}},
    )
    async def group_command(
        request: Request, group_id: str, body: CommandRequest, _: Writer
    ) -> JSONResponse:
        """Publish on ``xiaozhi/commands/group/{group_id}``; the hub fans it out to members."""
        service = service_of(request)
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
        return ok(request, data, "group command published", status=202)

    @app.post(
        f"{api}/voice/test",
        tags=["voice"],
        response_model=SuccessEnvelope,
        responses=ERROR_RESPONSES,
    )
    async def voice_test(request: Request, body: VoiceTestRequest, _: Reader) -> JSONResponse:
        """Recognize text as a voice command: intent, slots, actions, answer; nothing runs."""
        service = service_of(request)
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
        return ok(request, data, result.response_text)

    _add_activation_routes(app)
    _add_hub_routes(app)


def _add_activation_routes(app: FastAPI) -> None:
    api = API_PREFIX

    @app.get(
        f"{api}/activations",
        tags=["devices"],
        response_model=SuccessEnvelope,
        responses=ERROR_RESPONSES,
    )
    async def list_activations(request: Request, _: Reader) -> JSONResponse:
        """Devices that ran setup and wait for an operator: code, ids, time left."""
        now = time.time()
        data = [p.to_json_dict(now) for p in service_of(request).activations.pending(now)]
        return ok(request, data, f"{len(data)} pending")

    @app.post(
        f"{api}/activations/approve",
        tags=["devices"],
        response_model=SuccessEnvelope,
        responses={**ERROR_RESPONSES, 404: {"model": ErrorEnvelope}},
    )
    async def approve_activation(
        request: Request, body: ActivationRequest, principal: Writer
    ) -> JSONResponse:
        """Approve a device: its next setup call (firmware makes it at once) gets its token."""
        activations = service_of(request).activations
        try:
            approved = activations.approve(
                time.time(),
                by=f"rest:{principal.subject}",
                code=body.code,
                device_id=body.device_id,
                client_id=body.client_id,
            )
        except ActivationNotFound as err:
            raise ApiError(404, "ACTIVATION_NOT_FOUND", str(err)) from err
        log.info(
            "device_approved",
            device_id=approved.device_id,
            client_id=approved.client_id,
            by=approved.by,
        )
        return ok(request, approved.to_json_dict(), "device approved")

    @app.post(
        f"{api}/activations/reject",
        tags=["devices"],
        response_model=SuccessEnvelope,
        responses={**ERROR_RESPONSES, 404: {"model": ErrorEnvelope}},
    )
    async def reject_activation(
        request: Request, body: ActivationRequest, _: Writer
    ) -> JSONResponse:
        """Drop a pending activation; the device's next setup call gets a new code."""
        try:
            rejected = service_of(request).activations.reject(
                time.time(), code=body.code, device_id=body.device_id, client_id=body.client_id
            )
        except ActivationNotFound as err:
            raise ApiError(404, "ACTIVATION_NOT_FOUND", str(err)) from err
        data = {"device_id": rejected.device_id, "client_id": rejected.client_id}
        return ok(request, data, "activation rejected")


def _published(ok: bool) -> None:
    if not ok:
        raise ApiError(503, "QUEUE_FULL", "the MQTT queue is full; try again")


def _device_json(
    registry: Registry, device_id: str, tools: DeviceToolsUnit | None = None
) -> dict[str, Any]:
    record = registry.device(device_id)
    assert record is not None
    data = record.to_json_dict()
    data["groups"] = registry.groups_of(device_id)
    data["area_name"] = registry.home.area_name(record.area)
    if tools is not None:  # one device's page: a fleet's lists would weigh on GET /devices
        kept = tools.of(device_id)
        data["mcp_tools"] = None if kept is None else list(kept.tools)
        data["mcp_tools_at"] = None if kept is None else kept.timestamp
    return data


def _add_removal_route(app: FastAPI) -> None:
    @app.post(
        f"{API_PREFIX}/devices/remove",
        tags=["devices"],
        response_model=SuccessEnvelope,
        responses={**ERROR_RESPONSES, 422: {"model": ErrorEnvelope}},
    )
    async def remove_devices(
        request: Request, body: RemoveDevicesRequest, _: Writer
    ) -> JSONResponse:
        """Forget the learnt devices the filter matches (the bridge request
        ``device/remove`` with a filter): ``removed`` lists their ids."""
        service = service_of(request)
        filters = body.model_dump(exclude_none=True)
        if not filters:
            raise ApiError(422, "FILTER_REQUIRED", "give 'simulated' and/or 'not_seen_for_seconds'")
        answer = await service.bridge_requests.apply("device/remove", jsonutil.dumps(filters))
        if answer.error is not None:
            raise ApiError(422, "INVALID_FILTER", answer.error)
        removed = list(answer.data.get("removed", []))
        count = f"{len(removed)} device{'' if len(removed) == 1 else 's'}"
        return ok(request, {"removed": removed}, f"{count} removed")


def _add_edit_route(app: FastAPI) -> None:
    @app.patch(
        f"{API_PREFIX}/devices/{{device_id}}",
        tags=["devices"],
        response_model=SuccessEnvelope,
        responses={**ERROR_RESPONSES, 404: {"model": ErrorEnvelope}},
    )
    async def edit_device(
        request: Request, device_id: str, body: DeviceEditRequest, _: Writer
    ) -> JSONResponse:
        """Rename the device and/or put it in an area (``"area": null``: none): the bridge
        requests ``device/rename`` and ``device/area``, saved across restarts like them."""
        service = service_of(request)
        _known_device(service.registry, device_id)
        given = body.model_fields_set
        if not given:
            raise ApiError(422, "EDIT_REQUIRED", "give 'name' and/or 'area'")
        if "area" in given and body.area is not None and service.home.area(body.area) is None:
            known = [a.id for a in service.home.areas]
            raise ApiError(422, "UNKNOWN_AREA", f"unknown area {body.area!r}", {"known": known})
        edits = []
        if "name" in given:
            edits.append(("device/rename", {"id": device_id, "name": body.name}))
        if "area" in given:
            edits.append(("device/area", {"id": device_id, "area": body.area}))
        for path, fields in edits:
            answer = await service.bridge_requests.apply(path, jsonutil.dumps(fields))
            if answer.error is not None:
                raise ApiError(422, "INVALID_EDIT", answer.error, {"request": path})
        return ok(request, _device_json(service.registry, device_id), "device updated")


def _add_hub_routes(app: FastAPI) -> None:
    @app.get(
        f"{API_PREFIX}/stats",
        tags=["hub"],
        response_model=SuccessEnvelope,
        responses=ERROR_RESPONSES,
    )
    async def stats(request: Request, _: Reader) -> JSONResponse:
        return ok(request, service_of(request).stats())

    @app.get(
        f"{API_PREFIX}/home",
        tags=["hub"],
        response_model=SuccessEnvelope,
        responses=ERROR_RESPONSES,
    )
    async def home_model(request: Request, _: Reader) -> JSONResponse:
        """The home model: floors, areas (with their devices), entities with their binding
        and current state (null when the hub cannot know it: an ``mqtt`` or
        ``homeassistant`` entity is not read back), groups."""
        service = service_of(request)
        home, registry = service.home, service.registry
        now = CurrentState(service.states, registry.device)
        devices_in: dict[str | None, list[str]] = {}
        for record in registry.devices():
            devices_in.setdefault(record.area, []).append(record.device_id)
        data = {
            "floors": [f.model_dump() for f in home.floors],
            "areas": [
                {**a.model_dump(), "devices": sorted(devices_in.get(a.id, []))} for a in home.areas
            ],
            "entities": [
                {
                    "entity_id": e.entity_id,
                    "name": e.name,
                    "aliases": list(e.aliases),
                    "domain": e.domain,
                    "area": e.area,
                    "binding": _binding_json(e.binding),
                    "state": now.of(e),
                }
                for e in home.entities
            ],
            "groups": registry.snapshot_groups(),
        }
        counts = f"{len(home.areas)} areas, {len(home.entities)} entities"
        return ok(request, data, counts)

    @app.get(
        f"{API_PREFIX}/utterances",
        tags=["voice"],
        response_model=SuccessEnvelope,
        responses=ERROR_RESPONSES,
    )
    async def utterances_kept(request: Request, _: Reader) -> JSONResponse:
        """The ``message_id`` of every utterance whose audio this hub keeps, oldest first:
        the dashboard offers "play" for those only (a typed phrase, or one another replica
        transcribed, has none here)."""
        speech = service_of(request).speech
        kept = [] if speech is None else speech.audio.ids()
        return ok(request, kept, f"{len(kept)} utterances kept")

    @app.get(
        f"{API_PREFIX}/utterances/{{message_id}}/audio",
        tags=["voice"],
        response_class=Response,
        responses={
            200: {"content": {"audio/wav": {}}, "description": "The utterance as a WAV file"},
            404: {"model": ErrorEnvelope, "description": "Not (or no longer) kept here"},
            **ERROR_RESPONSES,
        },
    )
    async def utterance_audio(request: Request, message_id: str, _: Reader) -> Response:
        """The audio of one of the last utterances this hub transcribed (by the
        ``message_id`` its pipeline steps share), as the recogniser heard it: 16-bit mono
        PCM in a WAV file. The hub keeps the last 50 (8 MB at most), in memory."""
        speech = service_of(request).speech
        wav = None if speech is None else speech.audio.wav(message_id)
        if wav is None:
            raise ApiError(404, "UTTERANCE_NOT_FOUND", f"no audio kept for {message_id!r}")
        return Response(wav, media_type="audio/wav", headers={"Cache-Control": "no-store"})


def _binding_json(binding: Binding) -> dict[str, Any]:
    """What acts on an entity, without its payload templates: type and target."""
    if isinstance(binding, XiaozhiBinding):
        return {"type": binding.type, "target": binding.device_id}
    if isinstance(binding, MqttBinding):
        return {"type": binding.type, "target": binding.topic}
    if isinstance(binding, HomeAssistantBinding):
        target = f"{binding.base_url} {binding.entity_id or ''}".strip()
        return {"type": binding.type, "target": target}
    return {"type": binding.type, "target": "in the hub's memory"}

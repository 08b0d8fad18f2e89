"""zigbee2mqtt-style bridge requests: ``xiaozhi/bridge/request/{path}`` → ``…/response/{path}``.

A table maps each path to its handler (zigbee2mqtt's ``lib/extension/bridge.ts``). Every
request gets one :class:`~xiaozhi.payloads.BridgeResponse` (``status``, ``data``, ``error``,
the request's ``transaction`` echoed), also for bad JSON, a missing field, an unknown device
or path, or a bug in a handler (then with a generic message): never no answer.

==========================  ======================================  ==========================
path                        request fields                          ``data`` of the answer
==========================  ======================================  ==========================
``device/rename``           ``id`` (or ``from``), ``name`` (or      ``id``, ``from``, ``to``
                            ``to``)
``device/remove``           ``id``; or a filter instead: ``simulated``  ``id``; with a filter
                            (true/false), ``not_seen_for_seconds``  ``removed``: the ids
                            (disconnected and silent that long)
``device/remove_simulated`` none: ``device/remove`` with            ``removed``: the ids
                            ``{"simulated": true}``
``device/area``             ``id``, ``area`` (an area id of the     ``id``, ``from``, ``to``
                            home, or null: none)
``group/add``               ``id``, optional ``name``               ``id``, ``name``
``group/remove``            ``id``                                  ``id``
``group/members/add``       ``group``, ``device``                   ``group``, ``device``
``group/members/remove``    ``group``, ``device``                   ``group``, ``device``
``intent/test``             ``text``, optional ``device_id``,       intent, slots, actions,
                            ``area``                                response; nothing executed
``health_check``            none                                    ``healthy`` and counts
``device/pending``          none                                    ``pending``: activations
                                                                    waiting for approval
``device/approve``          ``code``, or ``id`` (+ ``client_id``    ``id``, ``client_id``,
                            when that device has several pending)   ``approved_at``
``device/reject``           as ``device/approve``                   ``id``, ``client_id``
==========================  ======================================  ==========================

Renames, areas, removals and group edits are saved in the state directory and survive a
restart (:mod:`xiaozhi_hub.registry_edits`); a removed device stays removed until it is heard
from again.

A filtered removal takes learnt devices only (those of the home file are removed one by one,
by ``id``): it forgets them as expiry does, clearing their retained status and readings
(:attr:`BridgeApi.on_forget`), so a fleet of one-time ids leaves nothing behind; a device that
speaks again is learnt again.

``device/approve`` is the operator's consent of design.md §9 (:mod:`xiaozhi_hub.activations`):
the device's next setup call gets its token. ``device/remove`` also forgets its approvals.

:meth:`BridgeApi.handle` also says which retained topics must be re-published:
:data:`CHANGED_DEVICES`, :data:`CHANGED_GROUPS`, :data:`CHANGED_INFO`, and
``"discovery/<device_id>"`` for a device whose Home Assistant discovery must be re-sent
(renamed) or cleared (removed: ``registry.device(id)`` is then None).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from xiaozhi import jsonutil
from xiaozhi.errors import InvalidMessage, OperationFailed, PayloadTooLarge
from xiaozhi.payloads import BridgeRequest, BridgeResponse, validate_model
from xiaozhi_hub.activations import Activations
from xiaozhi_hub.pipeline import VoicePipeline
from xiaozhi_hub.registry import DeviceRecord, Registry

__all__ = [
    "CHANGED_DEVICES",
    "CHANGED_GROUPS",
    "CHANGED_INFO",
    "DEFAULT_MAX_REQUEST_BYTES",
    "BridgeApi",
    "RequestError",
    "discovery_change",
]

CHANGED_DEVICES = "devices"  # re-publish xiaozhi/bridge/devices
CHANGED_GROUPS = "groups"  # re-publish xiaozhi/bridge/groups
CHANGED_INFO = "info"  # re-publish xiaozhi/bridge/info

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024
"""Largest request payload read (bytes); bigger ones are answered with an error unread."""

log = structlog.get_logger("xiaozhi.hub")

_MAX_TEXT_CHARS = 500

Reply = tuple[dict[str, Any], set[str]]
"""A handler's answer: the response's ``data`` and what changed (module docstring)."""

Handler = Callable[[dict[str, Any]], Reply | Awaitable[Reply]]
"""A request handler: plain for the registry edits (they run at once, in arrival order),
a coroutine function where it must wait without blocking the loop (``intent/test``)."""


def discovery_change(device_id: str) -> str:
    """The ``changed`` entry saying a device's HA discovery must be re-sent or cleared."""
    return f"discovery/{device_id}"


class RequestError(OperationFailed):
    """A request that cannot be done; its message is the response's ``error``."""


def _optional(request: Mapping[str, Any], *names: str) -> str | None:
    """The first of ``names`` present in the request, which must be a non-empty string."""
    for name in names:
        if name in request:
            value = request[name]
            if not isinstance(value, str) or not value.strip():
                raise RequestError(f"field {name!r} must be a non-empty string, got {value!r}")
            return value.strip()
    return None


def _required(request: Mapping[str, Any], *names: str) -> str:
    """Like :func:`_optional`, refusing a request without any of ``names``."""
    value = _optional(request, *names)
    if value is None:
        raise RequestError(f"missing required field {names[0]!r}")
    return value


class BridgeApi:
    """The request table over a :class:`~xiaozhi_hub.registry.Registry`.

    Args:
        registry: the state the requests read and edit.
        pipeline: the hub's voice pipeline for ``intent/test`` (answered with an error while
            it is None or not :attr:`~xiaozhi_hub.pipeline.VoicePipeline.ready`).
        max_request_bytes: requests larger than this are refused before parsing.
        activations: the approvals ``device/pending|approve|reject`` work on (answered with
            an error while None).
    """

    def __init__(
        self,
        registry: Registry,
        pipeline: VoicePipeline | None = None,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        activations: Activations | None = None,
    ) -> None:
        self.registry = registry
        self.activations = activations
        self.pipeline = pipeline
        self.max_request_bytes = max_request_bytes
        self.on_forget: Callable[[DeviceRecord], None] = lambda _: None
        """Clears a device forgotten by a filtered removal from the broker (set by the
        unit that publishes)."""
        self.handlers: dict[str, Handler] = {
            "device/rename": self._device_rename,
            "device/remove": self._device_remove,
            "device/remove_simulated": self._device_remove_simulated,
            "device/area": self._device_area,
            "group/add": self._group_add,
            "group/remove": self._group_remove,
            "group/members/add": self._group_members_add,
            "group/members/remove": self._group_members_remove,
            "intent/test": self._intent_test,
            "health_check": self._health_check,
            "device/pending": self._device_pending,
            "device/approve": self._device_approve,
            "device/reject": self._device_reject,
        }

    async def handle(self, path: str, raw_payload: bytes) -> tuple[BridgeResponse, set[str]]:
        """Answer one request; a bug in a handler is logged here, with its traceback.

        A plain handler runs before the first suspension, so requests handled in arrival
        order (one task each, in order) edit the registry in that order.

        Args:
            path: the topic after ``xiaozhi/bridge/request/`` (``device/rename``).
            raw_payload: the request's JSON; empty means ``{}``.

        Returns:
            The response for ``xiaozhi/bridge/response/{path}``, and which retained topics
            to re-publish (module docstring). Failed requests change nothing.
        """
        transaction = None
        try:
            request = self._parse(raw_payload)
            transaction = request.get("transaction")
            validate_model(BridgeRequest, request)  # a bad transaction is refused, not echoed
            handler = self.handlers.get(path)
            if handler is None:
                known = ", ".join(sorted(self.handlers))
                raise RequestError(f"unknown request {path!r} (known: {known})")
            reply = handler(request)
            if inspect.isawaitable(reply):
                reply = await reply
            data, changed = reply
        except (OperationFailed, InvalidMessage, PayloadTooLarge) as err:  # our own words
            if isinstance(err, InvalidMessage) and err.field == "transaction":
                transaction = None
            return BridgeResponse.failure(str(err), transaction=transaction), set()
        except Exception as err:  # a bug: answer anyway, without details (style.md)
            log.error("bridge_request_failed", path=path, exc_info=err)
            return BridgeResponse.failure(
                f"internal error while handling {path!r}", transaction=transaction
            ), set()
        return BridgeResponse.ok(data, transaction=transaction), changed

    def _parse(self, raw: bytes) -> dict[str, Any]:
        if not raw or not raw.strip():
            return {}
        return jsonutil.loads_object(raw, max_bytes=self.max_request_bytes)

    # -- handlers --------------------------------------------------------------------------

    def _device_rename(self, request: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        device_id = _required(request, "id", "from")
        name = _required(request, "name", "to")
        old = self.registry.rename(device_id, name)
        data = {"id": device_id, "from": old, "to": name}
        return data, {CHANGED_DEVICES, discovery_change(device_id)}

    def _device_area(self, request: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        device_id = _required(request, "id")
        if "area" not in request:
            raise RequestError("missing required field 'area' (an area id, or null for none)")
        area = request["area"]
        if area is not None and not isinstance(area, str):
            raise RequestError(f"'area' must be an area id or null, not {area!r}")
        old = self.registry.set_area(device_id, area or None)
        data = {"id": device_id, "from": old, "to": area or None}
        return data, {CHANGED_DEVICES, discovery_change(device_id)}

    def _device_remove(self, request: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        if "id" not in request and ("simulated" in request or "not_seen_for_seconds" in request):
            return self._remove_matching(request)
        device_id = _required(request, "id")
        self.registry.remove(device_id)
        if self.activations is not None:
            self.activations.forget(device_id)
        changed = {CHANGED_DEVICES, CHANGED_GROUPS, CHANGED_INFO, discovery_change(device_id)}
        return {"id": device_id}, changed

    def _device_remove_simulated(self, _: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        return self._remove_matching({"simulated": True})

    def _remove_matching(self, request: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        simulated = request.get("simulated")
        if simulated is not None and not isinstance(simulated, bool):
            raise RequestError(f"'simulated' must be true or false, not {simulated!r}")
        seconds = request.get("not_seen_for_seconds")
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0
        ):
            raise RequestError(
                f"'not_seen_for_seconds' must be a number of seconds >= 0, not {seconds!r}"
            )
        chosen = self.registry.select(
            time.time(), simulated=simulated, not_seen_for_seconds=seconds
        )
        for record in chosen:
            self.registry.forget(record.device_id)
            self.on_forget(record)
            if self.activations is not None:
                self.activations.forget(record.device_id)
        removed = [record.device_id for record in chosen]
        changed = {discovery_change(device_id) for device_id in removed}
        if removed:
            changed |= {CHANGED_DEVICES, CHANGED_GROUPS, CHANGED_INFO}
        return {"removed": removed}, changed

    def _approvals(self) -> Activations:
        if self.activations is None:
            raise RequestError("this hub keeps no activations")
        return self.activations

    def _device_pending(self, _: dict[str, Any]) -> Reply:
        now = time.time()
        pending = [p.to_json_dict(now) for p in self._approvals().pending(now)]
        return {"pending": pending}, set()

    def _named_activation(self, request: dict[str, Any]) -> dict[str, str | None]:
        code = _optional(request, "code")
        device_id = _optional(request, "id", "device_id")
        if code is None and device_id is None:
            raise RequestError("missing required field 'code' (or 'id')")
        return {"code": code, "device_id": device_id, "client_id": _optional(request, "client_id")}

    def _device_approve(self, request: dict[str, Any]) -> Reply:
        named = self._named_activation(request)
        approved = self._approvals().approve(time.time(), by="bridge", **named)
        log.info(
            "device_approved",
            device_id=approved.device_id,
            client_id=approved.client_id,
            by="bridge",
        )
        data = {
            "id": approved.device_id,
            "client_id": approved.client_id,
            "approved_at": approved.approved_at,
        }
        return data, set()

    def _device_reject(self, request: dict[str, Any]) -> Reply:
        named = self._named_activation(request)
        rejected = self._approvals().reject(time.time(), **named)
        return {"id": rejected.device_id, "client_id": rejected.client_id}, set()

    def _group_add(self, request: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        group_id = _required(request, "id")
        name = _optional(request, "name", "friendly_name")
        group = self.registry.group_add(group_id, name)
        return {"id": group.group_id, "name": group.name}, {CHANGED_GROUPS, CHANGED_INFO}

    def _group_remove(self, request: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        group_id = _required(request, "id")
        self.registry.group_remove(group_id)
        return {"id": group_id}, {CHANGED_GROUPS, CHANGED_DEVICES, CHANGED_INFO}

    def _members(self, request: dict[str, Any]) -> tuple[str, str]:
        group_id, device_id = _required(request, "group"), _required(request, "device")
        return group_id, device_id

    def _group_members_add(self, request: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        group_id, device_id = self._members(request)
        added = self.registry.group_members_add(group_id, device_id)
        changed = {CHANGED_GROUPS, CHANGED_DEVICES} if added else set()
        return {"group": group_id, "device": device_id}, changed

    def _group_members_remove(self, request: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        group_id, device_id = self._members(request)
        self.registry.group_members_remove(group_id, device_id)
        return {"group": group_id, "device": device_id}, {CHANGED_GROUPS, CHANGED_DEVICES}

    @property
    def intents_loaded(self) -> bool:
        return self.pipeline is not None and self.pipeline.ready

    async def _intent_test(self, request: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        pipeline = self.pipeline
        if pipeline is None or not pipeline.ready:
            raise RequestError("the intent engine is not loaded")
        text = _required(request, "text")
        if len(text) > _MAX_TEXT_CHARS:
            raise RequestError(f"text of {len(text)} characters > limit {_MAX_TEXT_CHARS}")
        device_id = _optional(request, "device_id")
        area = _optional(request, "area")
        if area is not None and self.registry.home.area(area) is None:
            known = ", ".join(a.id for a in self.registry.home.areas)
            raise RequestError(f"unknown area {area!r} (known: {known})")
        result = await pipeline.plan_text(text, device_id=device_id, area=area)
        data = result.to_json_dict()
        data["would_execute"] = data.pop("executed")
        data["executed"] = False  # a test never executes anything
        data["device_id"] = device_id
        return data, set()

    def _health_check(self, _: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        devices = self.registry.devices()
        return {
            "healthy": True,
            "devices": len(devices),
            "connected": sum(1 for d in devices if d.connected),
            "intents_loaded": self.intents_loaded,
        }, set()

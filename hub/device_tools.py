"""The device-tools unit: the MCP tools each firmware device last announced, for its page.

Firmware announces its MCP tools once, when it connects: the edge publishes them as an
``mcp_tools`` event on ``xiaozhi/events/{device_id}``, not retained. A dashboard page opened
later would never see them, so the hub keeps each device's last list here and
``GET /api/v1/devices/{id}`` serves it (``mcp_tools``, ``mcp_tools_at``).

Device events need ``xiaozhi/events/+``, which the hub's own connection must not subscribe to
(it also matches ``events/voice_command``, which every replica would then execute besides its
shared subscription). So this unit opens one MQTT connection of its own at start, subscribed
to ``events/+``, and reads only the ``mcp_tools`` events on it (the payloads are not parsed
otherwise): subscribed before any device connects, it misses no announcement, with no
per-device subscription racing the device. A device connected before the hub started
announced its tools to nobody: its edge publishes the same event again when it sees this
replica's state come ``online`` (``bridge/hubs/{hub_id}/state``, published by the monitor unit,
which starts after this one has subscribed; edge/monitor.py).

Bounded: at most :data:`MAX_DEVICES` devices (the least recently announced go first) of
:data:`MAX_TOOLS` names each; a device removed or expired from the registry is forgotten.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from xiaozhi.errors import InvalidTopic
from xiaozhi.payloads import EventType
from xiaozhi.topics import TopicKind
from xiaozhi_hub.unit import MAX_PAYLOAD_BYTES, HubContext, Route
from xiaozhi_runtime.mqtt import MqttOwner

__all__ = ["MAX_DEVICES", "MAX_TOOLS", "DeviceTools", "DeviceToolsUnit"]

MAX_DEVICES: Final = 10_000
"""Devices whose tools are kept."""
MAX_TOOLS: Final = 256
"""Tool names kept per device (the edge keeps as many from ``tools/list``)."""
_MAX_NAME_CHARS: Final = 128
_MARKER: Final = EventType.MCP_TOOLS.value.encode()
_CONNECT_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class DeviceTools:
    """One device's last announcement."""

    tools: tuple[str, ...]
    timestamp: str | None  # the event's, as the edge sent it


class DeviceToolsUnit:
    """Keeps each device's last ``mcp_tools`` event (module docstring)."""

    def __init__(self, ctx: HubContext) -> None:
        self._ctx = ctx
        self.routes: Mapping[TopicKind, Route] = {}  # its own connection brings its messages
        self._kept: collections.OrderedDict[str, DeviceTools] = collections.OrderedDict()
        self.owner: MqttOwner | None = None
        self.updated = asyncio.Event()
        """Set whenever an announcement is kept (cleared by whoever waits on it)."""

    async def start(self) -> None:
        """Connect (bounded wait: it subscribes once connected anyway) and subscribe."""
        settings = self._ctx.settings
        owner = self.owner = MqttOwner(
            settings.mqtt_url,
            client_id=f"{settings.hub_id}-tools",
            on_message=self._on_message,
            tls_context=settings.mqtt_tls(),
        )
        await owner.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(owner.connected.wait(), _CONNECT_SECONDS)
        await owner.subscribe([self._ctx.topics.all_events()])

    async def stop(self) -> None:
        owner, self.owner = self.owner, None
        if owner is not None:
            await owner.stop(flush_seconds=0)

    def of(self, device_id: str) -> DeviceTools | None:
        """What ``device_id`` last announced; None when the hub heard nothing since it
        started."""
        return self._kept.get(device_id)

    def forget(self, device_id: str) -> None:
        """The registry forgot the device (removed, expired): its tools go too."""
        self._kept.pop(device_id, None)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if _MARKER not in payload:
            return  # every other event of the fleet: not parsed
        try:
            parsed = self._ctx.topics.parse(topic)
        except InvalidTopic:
            return  # the hub's own connection hears it too, and reports it
        if parsed.kind is not TopicKind.DEVICE_EVENTS or parsed.device_id is None:
            return
        if len(payload) > MAX_PAYLOAD_BYTES:
            self._ctx.invalid("mcp_tools", topic, "payload too large")
            return
        try:
            event = json.loads(payload)
        except ValueError as err:
            self._ctx.invalid("mcp_tools", topic, err)
            return
        if not isinstance(event, dict) or event.get("event_type") != EventType.MCP_TOOLS.value:
            return
        tools, stamp = event.get("tools"), event.get("timestamp")
        if not isinstance(tools, list):
            self._ctx.invalid("mcp_tools", topic, "tools is not a list")
            return
        names = {t for t in tools if isinstance(t, str) and 0 < len(t) <= _MAX_NAME_CHARS}
        self._kept.pop(parsed.device_id, None)
        self._kept[parsed.device_id] = DeviceTools(
            tuple(sorted(names))[:MAX_TOOLS], stamp if isinstance(stamp, str) else None
        )
        while len(self._kept) > MAX_DEVICES:
            self._kept.popitem(last=False)
        self.updated.set()

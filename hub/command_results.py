"""The command-results unit: the hub hears a device's ``command_result`` for a command it sent.

A spoken answer must follow what happened ("Turning on the office light." only once the
device said it did). When the hub acts on a xiaozhi device it sends a command with a fresh
``message_id`` and waits, bounded, for the device's ``command_result`` naming that id on
``xiaozhi/events/{device_id}`` (published by the edge for firmware devices, by MQTT devices
themselves: :mod:`xiaozhi.commands`).

The hub subscribes to a device's events once it has commanded it, and to a firmware device's
(an edge's WebSocket or MQTT + UDP one) as soon as it connects; it keeps these subscriptions.
From the latter it keeps each device's last ``mcp_tools`` event in the registry
(:meth:`~xiaozhi_hub.registry.Registry.apply_tools`): firmware announces its MCP tools once,
on connecting, events are not retained, and the dashboard's device page opened later must still
list them (``GET /api/v1/devices/{id}``'s ``mcp_tools``). The edge publishes ``mcp_tools`` only
after the device's ``connected`` status and two MCP round trips, so the subscription made on
that status is in place in time; a device connected before the hub started announced its tools
to nobody, and shows them at its next connection.

It never subscribes to ``xiaozhi/events/+``, which would also match ``events/voice_command``
outside the shared group and make every replica execute every voice command.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

from xiaozhi.commands import CommandResult
from xiaozhi.errors import WireError
from xiaozhi.payloads import EventType
from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub.unit import MAX_PAYLOAD_BYTES, HubContext, Route, UnitTasks

__all__ = ["CommandResultsUnit"]

_MARKER = EventType.COMMAND_RESULT.value.encode()
_TOOLS_MARKER = EventType.MCP_TOOLS.value.encode()


class CommandResultsUnit:
    """Futures for the ``command_result`` of commands in flight, resolved from device events."""

    def __init__(self, ctx: HubContext) -> None:
        self._ctx = ctx
        self._waiting: dict[str, asyncio.Future[CommandResult]] = {}
        self._watched: set[str] = set()
        self._running = False
        self._to_watch: set[str] = set()  # connected firmware devices, subscribed in batches
        self._tasks = UnitTasks("device_events_subscription", limit=1)
        self.routes: Mapping[TopicKind, Route] = {TopicKind.DEVICE_EVENTS: self._on_event}

    async def start(self) -> None:
        """Nothing to subscribe yet: devices are watched when commanded or connected."""
        self._running = True

    async def stop(self) -> None:
        self._running = False
        self._to_watch.clear()
        await self._tasks.drain()
        filters = [self._ctx.topics.device_events(d) for d in sorted(self._watched)]
        self._watched.clear()
        if filters:
            await self._ctx.owner.unsubscribe(filters)
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    async def watch(self, device_id: str) -> None:
        """Subscribe to ``device_id``'s events (once; the broker's SUBACK awaited), so its
        answer to a command sent after this returns cannot be missed."""
        if device_id in self._watched:
            return
        await self._ctx.owner.subscribe([self._ctx.topics.device_events(device_id)])
        self._watched.add(device_id)

    def watch_soon(self, device_id: str) -> None:
        """Subscribe to ``device_id``'s events without waiting (a firmware device that just
        connected: its ``mcp_tools`` event follows). Devices connecting together (a hub's
        start reading the retained statuses of a whole fleet) share one SUBSCRIBE."""
        if not self._running or device_id in self._watched or device_id in self._to_watch:
            return
        self._to_watch.add(device_id)
        if len(self._to_watch) == 1:
            self._tasks.spawn(self._watch_batch(), name="device-events-subscribe")

    def unwatch(self, device_id: str) -> None:
        """A device forgotten (removed, expired): its events subscription goes, so a fleet
        of one-time ids leaves none behind."""
        self._to_watch.discard(device_id)
        if self._running and device_id in self._watched:
            self._watched.discard(device_id)
            filters = [self._ctx.topics.device_events(device_id)]
            self._tasks.spawn(self._ctx.owner.unsubscribe(filters), name="device-events-unsub")

    async def _watch_batch(self) -> None:
        batch = sorted(self._to_watch - self._watched)
        self._to_watch.clear()
        if batch:
            await self._ctx.owner.subscribe([self._ctx.topics.device_events(d) for d in batch])
            self._watched.update(batch)

    def expect(self, message_id: str) -> asyncio.Future[CommandResult]:
        """A future for the result naming ``message_id``; :meth:`forget` it when done."""
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        return future

    def awaits(self, message_id: str) -> bool:
        """True while someone here waits for the result of ``message_id`` (the hub's own
        command: the voice unit reports its failure itself)."""
        return message_id in self._waiting

    def forget(self, message_id: str) -> None:
        self._waiting.pop(message_id, None)

    @property
    def watched(self) -> frozenset[str]:
        """The devices whose events the hub is subscribed to."""
        return frozenset(self._watched)

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    def _on_event(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        # Every event of a watched device arrives here (the hub's own included): only a
        # payload that can be an awaited result, or a tools list, is parsed.
        if _TOOLS_MARKER in payload:
            self._on_tools(topic, parsed, payload)
            return
        if not self._waiting or _MARKER not in payload:
            return
        try:
            result = CommandResult.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
        except WireError as err:
            self._ctx.invalid("command_result", topic, err)
            return
        if result.event_type != EventType.COMMAND_RESULT.value or result.message_id is None:
            return
        if result.device_id != parsed.device_id:
            self._ctx.invalid("command_result", topic, "device_id differs from the topic's")
            return
        future = self._waiting.pop(result.message_id, None)
        if future is not None and not future.done():
            future.set_result(result)

    def _on_tools(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        """An ``mcp_tools`` event: the device's tools, kept in the registry."""
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
        assert parsed.device_id is not None
        self._ctx.registry.apply_tools(
            parsed.device_id, tools, stamp if isinstance(stamp, str) else None
        )

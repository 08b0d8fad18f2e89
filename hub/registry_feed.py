"""The unit that feeds the registry from the topic tree (device status, sensors, connection
events, edges' availability) and publishes what each change says: the snapshots, a device's
discovery, and an edge's devices disconnected when its will says it died.

These subscriptions are *not* shared: every replica applies every message, so their
registries agree.

It also forgets learnt devices gone for ``device_expire_after_seconds`` (a fleet's one-time
ids, a simulator's runs): their entry, discovery, and the retained status and sensor readings
that would bring them back at the next start. Each replica expires on its own clock; clearing a
retained topic twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import cast

import structlog

from xiaozhi.errors import InvalidTopic, WireError
from xiaozhi.payloads import (
    Availability,
    ConnectionEvent,
    DeviceStatus,
    DeviceTransport,
    EdgeState,
    SensorPayload,
    StatusPayload,
)
from xiaozhi.timestamps import parse_wire_timestamp
from xiaozhi.topics import ParsedTopic, TopicKind, validate_device_id
from xiaozhi_hub.registry import Change, DeviceRecord
from xiaozhi_hub.snapshots import Snapshots
from xiaozhi_hub.unit import MAX_PAYLOAD_BYTES, HubContext, Route, now_wire

__all__ = ["RegistryFeedUnit", "clear_retained"]

log = structlog.get_logger("xiaozhi.hub")

_EXPIRY_CHECK_SECONDS = 60.0
"""How often gone devices are looked for (more often when the expiry time is short)."""


def clear_retained(ctx: HubContext, record: DeviceRecord) -> None:
    """Clear a forgotten device's retained status and sensor readings, which would bring it
    back at the next start (expiry, bulk removal)."""
    ctx.retained.clear(ctx.topics.status(record.device_id))
    for sensor_type in record.sensors:
        ctx.retained.clear(ctx.topics.sensor(record.device_id, sensor_type))


class RegistryFeedUnit:
    """Feeds the registry from the topic tree and publishes what each change says."""

    def __init__(
        self,
        ctx: HubContext,
        snapshots: Snapshots,
        on_discovery: Callable[[str], None],
        on_forget: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._ctx = ctx
        self._snapshots = snapshots
        self._on_discovery = on_discovery
        self._on_forget = on_forget  # an expired device's MCP tools go too
        self.edges: dict[str, Availability] = {}
        self._expiry: asyncio.Task[None] | None = None
        self.routes: Mapping[TopicKind, Route] = {
            TopicKind.STATUS: self._on_status,
            TopicKind.SENSOR: self._on_sensor,
            TopicKind.DEVICE_CONNECTED: self._on_connection,
            TopicKind.DEVICE_DISCONNECTED: self._on_connection,
            TopicKind.BRIDGE_EDGE: self._on_edge,
        }

    @property
    def filters(self) -> list[str]:
        topics = self._ctx.topics
        return [
            topics.all_status(),
            topics.all_sensors(),
            topics.device_connected(),
            topics.device_disconnected(),
            topics.all_edges(),
        ]

    async def start(self) -> None:
        await self._ctx.owner.subscribe(self.filters)
        expire_after = self._ctx.settings.device_expire_after_seconds
        if expire_after > 0:
            every = min(_EXPIRY_CHECK_SECONDS, max(expire_after / 10, 0.05))
            self._expiry = asyncio.create_task(self._expire_every(every), name="hub-expiry")

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
            self._expiry = None
        await self._ctx.owner.unsubscribe(self.filters)

    async def _expire_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)  # a timer, not a wait for something to happen
            self.expire(time.time())

    def expire(self, now: float) -> list[str]:
        """Forget the devices :meth:`~xiaozhi_hub.registry.Registry.expire` says are gone;
        returns their ids."""
        ctx = self._ctx
        gone = ctx.registry.expire(now, ctx.settings.device_expire_after_seconds)
        for record in gone:
            clear_retained(ctx, record)
            self._on_discovery(record.device_id)  # no longer in the registry: cleared
            self._on_forget(record.device_id)
            log.info("device_expired", device_id=record.device_id, last_seen=record.last_seen)
        if gone:
            self._snapshots.mark()
        return [record.device_id for record in gone]

    def changed(self, change: Change) -> None:
        if change.snapshot:
            self._snapshots.mark()
        if change.discovery:
            self._on_discovery(change.device_id)

    def _on_status(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        if not payload:
            return  # a retained status being cleared
        try:
            status = StatusPayload.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
        except WireError as err:
            self._ctx.invalid("status", topic, err)
            return
        if status.device_id != parsed.device_id:
            self._ctx.invalid("status", topic, f"device_id {status.device_id!r} != topic")
            return
        now = time.time()
        if status.status is DeviceStatus.DISCONNECTED:
            # A retained "disconnected" read at start says when the device left: count its
            # absence from then, or a hub restarted weekly would never expire anything.
            now = min(now, parse_wire_timestamp(status.timestamp) or now)
        self.changed(self._ctx.registry.apply_status(status, now))

    def _on_sensor(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        if not payload:
            return
        try:
            reading = SensorPayload.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
        except WireError as err:
            self._ctx.invalid("sensor", topic, err)
            return
        if (reading.device_id, reading.sensor_type) != (parsed.device_id, parsed.sensor_type):
            self._ctx.invalid("sensor", topic, "device_id or sensor_type differs from the topic")
            return
        self.changed(self._ctx.registry.apply_sensor(reading, time.time()))

    def _on_connection(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        try:
            event = ConnectionEvent.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
            validate_device_id(event.device_id)
        except (WireError, InvalidTopic) as err:
            self._ctx.invalid("connection", topic, err)
            return
        if event.event_type != parsed.kind.value:
            self._ctx.invalid("connection", topic, f"event_type {event.event_type!r} != topic")
            return
        self.changed(self._ctx.registry.apply_connection(event, time.time()))

    def _on_edge(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        if not payload:
            return
        try:
            state = EdgeState.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
        except WireError as err:
            self._ctx.invalid("edge", topic, err)
            return
        edge_id = cast(str, parsed.edge_id)
        self.edges[edge_id] = state.state
        if state.state is not Availability.OFFLINE:
            return
        ctx = self._ctx
        gone = ctx.registry.mark_edge_offline(edge_id)
        log.info("edge_offline", edge_id=edge_id, devices_disconnected=len(gone))
        stamp = now_wire()
        for device_id in gone:
            record = ctx.registry.device(device_id)
            transport = record.transport if record else None
            status = StatusPayload(
                status=DeviceStatus.DISCONNECTED,
                device_id=device_id,
                timestamp=stamp,
                transport=transport,
                edge_id=edge_id,
            )
            # Retained but not remembered: the edge owns this topic once it is back.
            ctx.publish(ctx.topics.status(device_id), status.to_wire(), retain=True)
            event = ConnectionEvent(
                event_type="device_disconnected",
                device_id=device_id,
                transport=transport or DeviceTransport.WEBSOCKET,
                edge_id=edge_id,
                timestamp=stamp,
                reason="edge_offline",
            )
            ctx.publish(ctx.topics.device_disconnected(), event.to_wire())
        if gone:
            self._snapshots.mark()

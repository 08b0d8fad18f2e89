"""The unit that publishes Home Assistant MQTT discovery; :mod:`xiaozhi_hub.discovery` builds
the payloads as pure functions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub import discovery
from xiaozhi_hub.unit import HubContext, Route, new_id

__all__ = ["DiscoveryUnit"]

log = structlog.get_logger("xiaozhi.hub")


class DiscoveryUnit:
    """Home Assistant MQTT discovery (:mod:`xiaozhi_hub.discovery` builds the payloads).

    At start: read the retained ``homeassistant/+/+/+/config`` until the probe comes back,
    clear those of ours that no device produces any more, publish every device's configs.
    Later: publish (or clear) one device's when the registry says so; re-send all when Home
    Assistant's birth message ``online`` arrives. Devices marked simulated get none unless
    ``discover_simulated`` is set.
    """

    def __init__(
        self,
        ctx: HubContext,
        on_ha_online: Callable[[], None],
        states: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._ctx = ctx
        self._states = states if states is not None else {}
        self._on_ha_online = on_ha_online
        self._probe = ctx.topics.hub_probe(ctx.settings.hub_id)
        self._nonce = b""
        self._probe_seen = asyncio.Event()
        self._scanning = False
        self._seen: set[str] = set()
        self._by_device: dict[str, set[str]] = {}
        self.ready = False
        self.routes: Mapping[TopicKind, Route] = {
            TopicKind.HA_DISCOVERY: self._on_config,
            TopicKind.HA_STATUS: self._on_ha_status,
        }

    @property
    def probe(self) -> str:
        return self._probe

    @property
    def enabled(self) -> bool:
        return self._ctx.settings.discovery_enabled

    async def start(self) -> None:
        if not self.enabled:
            return
        ctx = self._ctx
        scan = [ctx.topics.all_discovery_configs(), self._probe]
        self._scanning = True
        await ctx.owner.subscribe([*scan, ctx.topics.ha_status()])
        self._nonce = new_id().encode()
        self._probe_seen.clear()
        ctx.publish(self._probe, self._nonce)
        complete = True
        try:
            await asyncio.wait_for(
                self._probe_seen.wait(), ctx.settings.discovery_scan_timeout_seconds
            )
        except TimeoutError:
            complete = False
            log.warning("discovery_scan_incomplete", note="stale configs are kept this time")
        self._scanning = False
        await ctx.owner.unsubscribe(scan)
        self.ready = True
        current = self.publish_all()
        if complete:
            stale = discovery.stale_topics(self._seen, current, topics=ctx.topics)
            for topic in sorted(stale):
                ctx.retained.clear(topic)
            log.info("discovery_ready", published=len(current), cleared=len(stale))
        self._seen.clear()

    async def stop(self) -> None:
        if self.enabled:
            await self._ctx.owner.unsubscribe([self._ctx.topics.ha_status()])

    def on_probe(self, payload: bytes) -> None:
        if payload == self._nonce:
            self._probe_seen.set()

    def publish_all(self, *, force: bool = False) -> set[str]:
        """Publish every device's configs and the home's own entities'; returns every topic
        published."""
        ctx = self._ctx
        topics: set[str] = set()
        for record in ctx.registry.devices():
            topics |= self._publish_device(record.device_id, force=force)
        home = ctx.registry.home
        for entity in home.entities:
            if entity.binding.type != "virtual":
                continue  # its owner (zigbee2mqtt, Home Assistant, a device) shows it already
            configs = discovery.entity_configs(
                entity,
                self._states.get(entity.entity_id, {}),
                topics=ctx.topics,
                area_name=home.area_name(entity.area),
            )
            for topic, payload in configs:
                ctx.retained.publish(topic, discovery.encode(payload), force=force)
                topics.add(topic)
        return topics

    def device_changed(self, device_id: str) -> None:
        """A device appeared, changed (renamed, new sensor) or was removed."""
        if self.enabled and self.ready:
            self._publish_device(device_id)

    def _publish_device(self, device_id: str, *, force: bool = False) -> set[str]:
        ctx = self._ctx
        record = ctx.registry.device(device_id)
        before = self._by_device.get(device_id, set())
        if record is not None and record.simulated and not ctx.settings.discover_simulated:
            record = None  # a simulated device stays out of Home Assistant: cleared if shown
        if record is None:
            for topic in sorted(before):
                ctx.retained.clear(topic)
            self._by_device.pop(device_id, None)
            return set()
        configs = discovery.device_configs(
            record, topics=ctx.topics, area_name=ctx.registry.home.area_name(record.area)
        )
        now = {topic for topic, _ in configs}
        for topic, payload in configs:
            ctx.retained.publish(topic, discovery.encode(payload), force=force)
        for topic in sorted(before - now):
            ctx.retained.clear(topic)
        self._by_device[device_id] = now
        return now

    def _on_config(self, topic: str, _: ParsedTopic, payload: bytes) -> None:
        if self._scanning and payload:
            self._seen.add(topic)

    def _on_ha_status(self, topic: str, _: ParsedTopic, payload: bytes) -> None:
        if payload.strip().lower() == b"online" and self.ready:
            log.info("home_assistant_online", note="re-sending discovery")
            self._on_ha_online()
            self.publish_all(force=True)

"""The hub's MQTT side: units around one :class:`~xiaozhi_runtime.mqtt.MqttOwner` (style.md §4).

:class:`HubService` owns the broker connection (will and birth on ``xiaozhi/bridge/state``),
connects it, then starts its units in the order of :attr:`HubService.units`; each unit's
constructor only wires dependencies, ``start()`` subscribes, ``stop()`` undoes it.

==================  ================================================  ===========================
unit                subscribes to                                     does
==================  ================================================  ===========================
BridgeStateUnit     ``bridge/state``                                  re-asserts ``online`` when
                                                                      another replica's will or
                                                                      clean stop said offline
RegistryUnit        ``status/+``, ``sensors/+/+``,                    feeds the registry; an
                    ``events/device_connected|device_disconnected``,  edge's ``offline`` marks its
                    ``bridge/edges/+``                                devices disconnected
DiscoveryUnit       ``homeassistant/+/+/+/config`` (at start only),   clears stale configs, then
                    ``homeassistant/status``                          publishes every device's;
                                                                      re-sends on HA ``online``
VoiceUnit           ``$share/hub/xiaozhi/events/voice_command``       intent → actions →
                                                                      executors → ``respond``
FanOutUnit          ``$share/hub/xiaozhi/commands/group/+``,          one command per member on
                    ``$share/hub/xiaozhi/commands/broadcast``         its own command topic
BridgeUnit          ``bridge/request/#``                              answers on
                                                                      ``bridge/response/<path>``
==================  ================================================  ===========================

Scale-out: voice commands and group/broadcast commands are consumed through shared
subscriptions (``$share/<XIAOZHI_HUB_SHARE_GROUP>/…``), so N replicas handle each exactly once.
Bridge requests and the registry feed are *not* shared: every replica applies each edit so
their registries agree, and each answers it (an integrator with N replicas gets N identical
responses; ``transaction`` correlates them). Virtual entity state is per replica, in memory.

Retained snapshots (``bridge/devices|groups|info``, ``status/broadcast``,
``status/group/{id}``, discovery configs) go through :class:`RetainedPublisher`: published
only when their bytes change, and remembered by the owner, which re-publishes them after a
broker restart that lost them.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import enum
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any, cast

import httpx
import structlog

from xiaozhi import __version__, jsonutil
from xiaozhi.errors import InvalidTopic, WireError
from xiaozhi.payloads import (
    Action,
    Availability,
    BridgeState,
    CommandPayload,
    ConnectionEvent,
    DeviceStatus,
    DeviceTransport,
    EdgeState,
    EventPayload,
    EventType,
    SensorPayload,
    StatusPayload,
    VoiceCommandEvent,
)
from xiaozhi.topics import ParsedTopic, TopicKind, TopicTree, validate_device_id, validate_id
from xiaozhi_hub import discovery
from xiaozhi_hub.actions import Plan, plan
from xiaozhi_hub.bridge_api import CHANGED_DEVICES, CHANGED_GROUPS, CHANGED_INFO, BridgeApi
from xiaozhi_hub.executors import (
    ExecutorError,
    HomeAssistantEffect,
    MqttEffect,
    VirtualEffect,
    XiaozhiCommandEffect,
    effect_for,
    fan_out,
    respond_effect,
)
from xiaozhi_hub.home import (
    DEMO_HOME_PATH,
    Binding,
    Home,
    HomeAssistantBinding,
    VirtualBinding,
    load_home,
)
from xiaozhi_hub.intents import IntentEngine, IntentMatch, NoMatch
from xiaozhi_hub.metrics import HubMetrics
from xiaozhi_hub.registry import Change, Registry, RegistryError
from xiaozhi_hub.resolve import resolve
from xiaozhi_hub.settings import HubSettings
from xiaozhi_runtime.mqtt import MqttOwner, OutMessage

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "HubService",
    "HubStartError",
    "HubState",
    "RetainedPublisher",
    "SerializedEngine",
    "now_iso",
    "probe_topic",
]

log = structlog.get_logger("xiaozhi.hub")

MAX_PAYLOAD_BYTES = 64 * 1024
"""Largest MQTT payload the hub parses (bytes); larger ones are refused and counted."""

MQTT_CONNECT_TIMEOUT_SECONDS = 30.0
_VOICE_DEDUP_IDS = 4096  # voice command message ids remembered against QoS 1 redelivery
_STOP_GRACE_SECONDS = 5.0


class HubStartError(RuntimeError):
    """The hub could not start (broker unreachable, a unit failed)."""


class HubState(enum.StrEnum):
    """Where the service is in its life; ``/health`` reports it."""

    CREATED = "created"
    STARTING = "starting"  # connecting, loading intents, reading retained state
    ONLINE = "online"
    STOPPING = "stopping"  # offline published, flushing
    STOPPED = "stopped"


def now_iso() -> str:
    """The current UTC time as ``2024-01-01T00:00:00.000Z`` (the seeds' timestamp form)."""
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _new_id() -> str:
    return uuid.uuid4().hex


def probe_topic(topics: TopicTree, hub_id: str) -> str:
    """``{base}/bridge/hubs/{hub_id}/probe``: a topic private to one replica.

    The hub publishes a nonce here after subscribing to retained topics; since the broker
    delivers in order on one connection, the nonce coming back means every retained message
    of the earlier subscriptions has arrived (a readiness event instead of a timer). Not part
    of design.md §5's tree: nobody else publishes or subscribes here.
    """
    return f"{topics.bridge_state().rsplit('/', 1)[0]}/hubs/{validate_id(hub_id)}/probe"


def _shared(group: str, topic_filter: str) -> str:
    """``$share/{group}/{filter}``: one replica of the group gets each message."""
    return f"$share/{validate_id(group, what='share group')}/{topic_filter}"


def _group_commands_filter(topics: TopicTree) -> str:
    """``{base}/commands/group/+`` built from the tree's own group command topic."""
    return topics.group_command("any").rsplit("/", 1)[0] + "/+"


_ENGINE_LOCKS: weakref.WeakKeyDictionary[IntentEngine, threading.Lock] = weakref.WeakKeyDictionary()


class SerializedEngine:
    """An :class:`IntentEngine` shared by the event loop and worker threads, one call at a time.

    hassil parses templates lazily, so two recognitions at once could race; a lock is cheap
    (a warm recognition takes ~2 ms).
    """

    def __init__(self, engine: IntentEngine) -> None:
        self.engine = engine
        self.home = engine.home
        self.language = engine.language
        self._lock = _ENGINE_LOCKS.setdefault(engine, threading.Lock())  # one per engine

    def recognize(self, text: str, *, device_area: str | None = None) -> IntentMatch | NoMatch:
        with self._lock:
            return self.engine.recognize(text, device_area=device_area)


class RetainedPublisher:
    """Publishes the hub's retained state: skipped when unchanged, remembered by the owner."""

    def __init__(self, owner: MqttOwner) -> None:
        self._owner = owner
        self._last: dict[str, bytes] = {}

    def publish(self, topic: str, payload: bytes, *, force: bool = False) -> bool:
        """Publish retained (QoS 1) unless the same bytes went out last; True when sent."""
        if not force and payload and self._last.get(topic) == payload:
            return False
        if payload:
            self._last[topic] = payload
        else:
            self._last.pop(topic, None)
        self._owner.retain(OutMessage(topic, payload, qos=1, retain=True))
        return True

    def clear(self, topic: str) -> None:
        """Delete a retained message (an empty retained payload), ours or a stale one."""
        self.publish(topic, b"", force=True)


Route = Callable[[str, ParsedTopic, bytes], None]


class _Context:
    """What every unit shares; built once by :class:`HubService`."""

    def __init__(
        self,
        settings: HubSettings,
        owner: MqttOwner,
        registry: Registry,
        metrics: HubMetrics,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.owner = owner
        self.registry = registry
        self.metrics = metrics
        self.retained = RetainedPublisher(owner)
        self.state = HubState.CREATED
        self.counters: collections.Counter[str] = collections.Counter()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """A non-retained (or not remembered) publish; False when the queue dropped it."""
        return self._owner_publish(OutMessage(topic, payload, qos=qos, retain=retain))

    def _owner_publish(self, message: OutMessage) -> bool:
        if not self.owner.publish_nowait(message):
            log.warning("mqtt_publish_dropped", topic=message.topic)
            return False
        return True

    def event(self, device_id: str, event_type: str, **fields: Any) -> None:
        """An event on ``xiaozhi/events/{device_id}`` (QoS 1, never retained)."""
        payload = EventPayload(
            event_type=event_type, device_id=device_id, timestamp=now_iso(), **fields
        )
        self.publish(self.topics.device_events(device_id), payload.to_wire())

    def invalid(self, kind: str, topic: str, error: Exception | str) -> None:
        """Count and log a refused message (never a crash, never silent)."""
        self.metrics.invalid_messages.labels(kind).inc()
        log.warning("mqtt_message_refused", kind=kind, topic=topic, error=str(error)[:200])


# -- snapshots ---------------------------------------------------------------------------


class Snapshots:
    """Retained ``bridge/devices|groups|info``, ``status/broadcast`` and ``status/group/{id}``.

    :meth:`mark` coalesces a burst of changes (the retained statuses read at start) into one
    publication on the next event-loop pass.
    """

    def __init__(self, ctx: _Context) -> None:
        self._ctx = ctx
        self._scheduled = False
        self._group_topics: set[str] = set()

    def mark(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self, *, force: bool = False) -> None:
        self._scheduled = False
        ctx, topics, registry = self._ctx, self._ctx.topics, self._ctx.registry
        retained = ctx.retained
        retained.publish(
            topics.bridge_devices(), jsonutil.dumps(registry.snapshot_devices()), force=force
        )
        retained.publish(
            topics.bridge_groups(), jsonutil.dumps(registry.snapshot_groups()), force=force
        )
        info = registry.info(version=__version__, config=ctx.settings.public_config())
        retained.publish(topics.bridge_info(), jsonutil.dumps(info), force=force)
        devices = registry.devices()
        connected = {d.device_id for d in devices if d.connected}
        fleet = {
            "devices": len(devices),
            "connected": len(connected),
            "groups": len(registry.groups()),
        }
        retained.publish(topics.broadcast_status(), jsonutil.dumps(fleet), force=force)
        current: set[str] = set()
        for group in registry.groups():
            topic = topics.group_status(group.group_id)
            current.add(topic)
            summary = {
                "group_id": group.group_id,
                "name": group.name,
                "members": list(group.members),
                "connected": [m for m in group.members if m in connected],
                "status": (
                    DeviceStatus.CONNECTED.value
                    if any(m in connected for m in group.members)
                    else DeviceStatus.DISCONNECTED.value
                ),
            }
            retained.publish(topic, jsonutil.dumps(summary), force=force)
        for topic in self._group_topics - current:
            retained.clear(topic)
        self._group_topics = current


# -- units -------------------------------------------------------------------------------


class BridgeStateUnit:
    """Keeps ``bridge/state`` online while this replica runs.

    The will (and a clean stop) of *one* replica sets it offline although others still run;
    any live replica that sees ``offline`` publishes ``online`` again.
    """

    def __init__(self, ctx: _Context) -> None:
        self._ctx = ctx
        self.routes: dict[TopicKind, Route] = {TopicKind.BRIDGE_STATE: self._on_state}

    async def start(self) -> None:
        await self._ctx.owner.subscribe([self._ctx.topics.bridge_state()])

    async def stop(self) -> None:
        await self._ctx.owner.unsubscribe([self._ctx.topics.bridge_state()])

    def online(self) -> None:
        ctx = self._ctx
        payload = BridgeState(state=Availability.ONLINE).to_wire()
        ctx.publish(ctx.topics.bridge_state(), payload, retain=True)

    def _on_state(self, topic: str, _: ParsedTopic, payload: bytes) -> None:
        if not payload:
            return
        try:
            state = BridgeState.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
        except WireError as err:
            self._ctx.invalid("bridge_state", topic, err)
            return
        running = self._ctx.state in (HubState.STARTING, HubState.ONLINE)
        if state.state is Availability.OFFLINE and running:
            log.info("bridge_state_reasserted", hub_id=self._ctx.settings.hub_id)
            self.online()


class RegistryUnit:
    """Feeds the registry from the topic tree and publishes what each change says."""

    def __init__(
        self,
        ctx: _Context,
        snapshots: Snapshots,
        on_discovery: Callable[[str], None],
    ) -> None:
        self._ctx = ctx
        self._snapshots = snapshots
        self._on_discovery = on_discovery
        self.edges: dict[str, Availability] = {}
        self.routes: dict[TopicKind, Route] = {
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

    async def stop(self) -> None:
        await self._ctx.owner.unsubscribe(self.filters)

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
        self.changed(self._ctx.registry.apply_status(status, time.time()))

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
        stamp = now_iso()
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


class DiscoveryUnit:
    """Home Assistant MQTT discovery (:mod:`xiaozhi_hub.discovery` builds the payloads).

    At start: read the retained ``homeassistant/+/+/+/config`` until the probe comes back,
    clear those of ours that no device produces any more, publish every device's configs.
    Later: publish (or clear) one device's when the registry says so; re-send all when Home
    Assistant's birth message ``online`` arrives.
    """

    def __init__(self, ctx: _Context, on_ha_online: Callable[[], None]) -> None:
        self._ctx = ctx
        self._on_ha_online = on_ha_online
        self._probe = probe_topic(ctx.topics, ctx.settings.hub_id)
        self._nonce = b""
        self._probe_seen = asyncio.Event()
        self._scanning = False
        self._seen: set[str] = set()
        self._by_device: dict[str, set[str]] = {}
        self.ready = False
        self.routes: dict[TopicKind, Route] = {
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
        self._nonce = _new_id().encode()
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
        """Publish every device's configs; returns every topic published."""
        topics: set[str] = set()
        for record in self._ctx.registry.devices():
            topics |= self._publish_device(record.device_id, force=force)
        return topics

    def device_changed(self, device_id: str) -> None:
        """A device appeared, changed (renamed, new sensor) or was removed."""
        if self.enabled and self.ready:
            self._publish_device(device_id)

    def _publish_device(self, device_id: str, *, force: bool = False) -> set[str]:
        ctx = self._ctx
        record = ctx.registry.device(device_id)
        before = self._by_device.get(device_id, set())
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


class VoiceUnit:
    """Voice commands → intent → actions → executors → the speaking device's answer."""

    def __init__(
        self,
        ctx: _Context,
        *,
        home: Home,
        engine: IntentEngine | None,
        states: dict[str, dict[str, Any]],
        environ: Mapping[str, str],
        http: Callable[[], httpx.AsyncClient],
        on_engine: Callable[[SerializedEngine], None],
    ) -> None:
        self._ctx = ctx
        self._home = home
        self._given_engine = engine
        self.engine: SerializedEngine | None = None
        self.states = states
        self._environ = environ
        self._http = http
        self._on_engine = on_engine
        self._semaphore = asyncio.Semaphore(ctx.settings.max_concurrent_voice_commands)
        self._tasks: set[asyncio.Task[None]] = set()
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.routes: dict[TopicKind, Route] = {TopicKind.VOICE_COMMAND_EVENTS: self._on_voice}

    @property
    def filter(self) -> str:
        return self._ctx.topics.shared_voice_commands(self._ctx.settings.hub_share_group)

    async def start(self) -> None:
        engine = self._given_engine
        if engine is None:
            engine = await asyncio.to_thread(self._load_engine)
        self.engine = SerializedEngine(engine)
        self._on_engine(self.engine)
        await self._ctx.owner.subscribe([self.filter])

    def _load_engine(self) -> IntentEngine:
        engine = IntentEngine(self._home, self._ctx.settings.language)
        seconds = engine.warm_up()
        log.info("intents_loaded", language=engine.language, warm_up_ms=round(seconds * 1000))
        return engine

    async def stop(self) -> None:
        await self._ctx.owner.unsubscribe([self.filter])
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=_STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    # -- planning (shared with the REST voice test) ---------------------------------------

    async def plan_text(
        self, text: str, *, device_id: str | None = None, area: str | None = None
    ) -> Plan:
        """Recognize (in a worker thread), resolve and plan; nothing is executed."""
        if self.engine is None:
            raise HubStartError("the intent engine is not loaded yet")
        registry = self._ctx.registry
        device_area = area if area is not None else registry.area_of(device_id)
        started = time.perf_counter()
        match = await asyncio.to_thread(self.engine.recognize, text, device_area=device_area)
        self._ctx.metrics.intent_latency.observe(time.perf_counter() - started)
        resolution = resolve(
            match, registry.home, speaking_device=device_id, device_areas=registry.device_areas()
        )
        record = registry.device(device_id) if device_id else None
        return plan(match, resolution, record, states=self.states)

    # -- voice commands --------------------------------------------------------------------

    def _on_voice(self, topic: str, _: ParsedTopic, payload: bytes) -> None:
        ctx = self._ctx
        try:
            event = VoiceCommandEvent.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
            validate_device_id(event.device_id)
        except (WireError, InvalidTopic) as err:
            ctx.metrics.voice_commands.labels("invalid").inc()
            ctx.invalid("voice_command", topic, err)
            return
        if event.message_id is not None:
            if event.message_id in self._recent:
                ctx.metrics.voice_commands.labels("duplicate").inc()
                return
            self._recent[event.message_id] = None
            if len(self._recent) > _VOICE_DEDUP_IDS:
                self._recent.popitem(last=False)
        task = asyncio.create_task(self._handle(event), name=f"voice-{event.device_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, event: VoiceCommandEvent) -> None:
        try:
            async with self._semaphore:
                await self._run(event)
        except Exception:
            log.exception("voice_command_failed", device_id=event.device_id)

    def _area_of(self, event: VoiceCommandEvent) -> str | None:
        area = self._ctx.registry.area_of(event.device_id)
        if area is None and event.area and self._home.area(event.area) is not None:
            area = event.area
        return area

    async def _run(self, event: VoiceCommandEvent) -> None:
        ctx = self._ctx
        device_id = event.device_id
        base_id = event.message_id or _new_id()
        result = await self.plan_text(event.command, device_id=device_id, area=self._area_of(event))
        log.info(
            "voice_command",
            device_id=device_id,
            text=event.command[:100],
            intent=result.intent,
            actions=len(result.actions),
            error=result.error,
        )
        failures = 0
        for index, action in enumerate(result.actions, start=1):
            binding = result.bindings[action.entity_id]
            common = {"message_id": base_id, "index": index, "executor": binding.type}
            ctx.event(device_id, EventType.ACTION.value, action=action.to_json_dict(), **common)
            status, detail = await self.execute(action, binding, message_id=f"{base_id}-{index}")
            ctx.metrics.actions.labels(binding.type, status).inc()
            ctx.counters[f"actions_{status}"] += 1
            fields: dict[str, Any] = {"status": status, **common}
            fields["error" if status == "error" else "result"] = detail
            ctx.event(
                device_id, EventType.ACTION_RESULT.value, action=action.to_json_dict(), **fields
            )
            failures += status == "error"
        text = _answer(result, failures)
        respond = respond_effect(
            device_id,
            text,
            stt=event.command,
            actions=result.actions,
            session_id=event.session_id,
            topics=ctx.topics,
            message_id=base_id,
            timestamp=now_iso(),
        )
        ctx.publish(respond.topic, respond.wire(), qos=respond.qos)
        ctx.event(
            device_id,
            EventType.RESPONSE.value,
            message_id=base_id,
            text=text,
            stt=event.command,
            intent=result.intent,
            executed=result.executed,
            actions=[a.to_json_dict() for a in result.actions],
            **({"error": result.error} if result.error else {}),
        )
        outcome = "executed" if result.executed else "not_executed"
        ctx.metrics.voice_commands.labels(outcome).inc()
        ctx.counters[f"voice_commands_{outcome}"] += 1

    async def execute(
        self, action: Action, binding: Binding, *, message_id: str
    ) -> tuple[str, Any]:
        """Carry out one action; ``("ok", result)`` or ``("error", message)``."""
        ctx = self._ctx
        try:
            effect = effect_for(
                action, binding, topics=ctx.topics, message_id=message_id, timestamp=now_iso()
            )
        except ExecutorError as err:
            return "error", str(err)
        if isinstance(effect, XiaozhiCommandEffect):
            if not ctx.publish(effect.topic, effect.wire(), qos=effect.qos):
                return "error", "MQTT queue full: command dropped"
            return "ok", {"topic": effect.topic, "command": effect.payload.command}
        if isinstance(effect, MqttEffect):
            if not ctx.publish(effect.topic, effect.payload, qos=effect.qos, retain=effect.retain):
                return "error", "MQTT queue full: message dropped"
            return "ok", {"topic": effect.topic}
        if isinstance(effect, HomeAssistantEffect):
            return await self._call_home_assistant(effect)
        assert isinstance(effect, VirtualEffect)
        new = effect.apply(self.states.get(effect.entity_id))
        self.states[effect.entity_id] = new
        return "ok", {"state": new}

    async def _call_home_assistant(self, effect: HomeAssistantEffect) -> tuple[str, Any]:
        token = self._environ.get(effect.token_env)
        if not token:
            return "error", f"environment variable {effect.token_env} (the HA token) is not set"
        headers = {**effect.headers, **effect.authorization(token)}
        try:
            response = await self._http().request(
                effect.method, effect.url, json=dict(effect.json), headers=headers
            )
        except httpx.HTTPError as err:
            return "error", f"Home Assistant unreachable: {str(err) or type(err).__name__}"
        if response.status_code >= 400:
            return "error", f"Home Assistant answered HTTP {response.status_code}"
        return "ok", {"status_code": response.status_code}


def _answer(result: Plan, failures: int) -> str:
    """The sentence to say: the plan's, unless actions failed."""
    if not failures:
        return result.response_text
    if failures == len(result.actions):
        return "Sorry, that didn't work."
    return f"{result.response_text} Sorry, {failures} of {len(result.actions)} didn't work."


class FanOutUnit:
    """Group and broadcast commands → one command per member on its own topic.

    Broadcast goes to WebSocket devices only: MQTT devices subscribe to the broadcast topic
    themselves (:meth:`~xiaozhi_hub.registry.Registry.broadcast_members`).
    """

    def __init__(self, ctx: _Context) -> None:
        self._ctx = ctx
        self.routes: dict[TopicKind, Route] = {
            TopicKind.GROUP_COMMAND: self._on_command,
            TopicKind.BROADCAST_COMMAND: self._on_command,
        }

    @property
    def filters(self) -> list[str]:
        ctx = self._ctx
        group = ctx.settings.hub_share_group
        return [
            _shared(group, _group_commands_filter(ctx.topics)),
            _shared(group, ctx.topics.broadcast_command()),
        ]

    async def start(self) -> None:
        await self._ctx.owner.subscribe(self.filters)

    async def stop(self) -> None:
        await self._ctx.owner.unsubscribe(self.filters)

    def _on_command(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        ctx = self._ctx
        try:
            command = CommandPayload.from_wire(payload, max_bytes=MAX_PAYLOAD_BYTES)
        except WireError as err:
            ctx.invalid("command", topic, err)
            return
        if parsed.kind is TopicKind.GROUP_COMMAND:
            try:
                members = ctx.registry.members_of(cast(str, parsed.group_id))
            except RegistryError as err:
                ctx.invalid("command", topic, err)
                return
            kind = "group"
        else:
            members = ctx.registry.broadcast_members(transports={DeviceTransport.WEBSOCKET})
            kind = "broadcast"
        command = command.model_copy(
            update={
                "message_id": command.message_id or _new_id(),
                "timestamp": command.timestamp or now_iso(),
            }
        )
        for effect in fan_out(command, members, topics=ctx.topics):
            ctx.publish(effect.topic, effect.wire(), qos=effect.qos)
        ctx.metrics.fan_out.labels(kind).inc(len(members))
        log.info("fan_out", kind=kind, topic=topic, command=command.command, members=len(members))


class BridgeUnit:
    """zigbee2mqtt-style requests: the table is :class:`~xiaozhi_hub.bridge_api.BridgeApi`."""

    def __init__(
        self,
        ctx: _Context,
        api: BridgeApi,
        snapshots: Snapshots,
        on_discovery: Callable[[str], None],
    ) -> None:
        self._ctx = ctx
        self.api = api
        self._snapshots = snapshots
        self._on_discovery = on_discovery
        self.routes: dict[TopicKind, Route] = {TopicKind.BRIDGE_REQUEST: self._on_request}

    @property
    def prefix(self) -> str:
        return self._ctx.topics.bridge_requests().removesuffix("#")

    async def start(self) -> None:
        await self._ctx.owner.subscribe([self._ctx.topics.bridge_requests()])

    async def stop(self) -> None:
        await self._ctx.owner.unsubscribe([self._ctx.topics.bridge_requests()])

    def _on_request(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        self.answer(cast(str, parsed.path), payload)

    def on_bad_path(self, topic: str, payload: bytes) -> None:
        """A request topic whose path is outside the id grammar: answer if we can."""
        path = topic.removeprefix(self.prefix)
        try:
            self._ctx.topics.bridge_response(path)
        except InvalidTopic as err:
            self._ctx.metrics.bridge_requests.labels("unanswerable").inc()
            self._ctx.invalid("bridge_request", topic, f"cannot answer: {err}")
            return
        self.answer(path, payload)

    def answer(self, path: str, payload: bytes) -> None:
        ctx = self._ctx
        response, changed = self.api.handle(path, payload)
        if self.api.last_exception is not None:
            error = self.api.last_exception
            log.error("bridge_request_failed", path=path, exc_info=error)
        ctx.publish(ctx.topics.bridge_response(path), response.to_wire())
        ctx.metrics.bridge_requests.labels(response.status.value).inc()
        log.info("bridge_request", path=path, status=response.status.value, error=response.error)
        if changed & {CHANGED_DEVICES, CHANGED_GROUPS, CHANGED_INFO}:
            self._snapshots.mark()
        for item in changed:
            if item.startswith("discovery/"):
                self._on_discovery(item.removeprefix("discovery/"))


# -- the service ---------------------------------------------------------------------------


class HubService:
    """The hub's units around one MQTT connection.

    Args:
        settings: the hub's settings (broker, topics, share group, language...).
        home: the home model; default: load ``settings.config`` (or the demo home).
        engine: an already warmed intent engine for ``home`` (tests share one); default: one
            is loaded and warmed in a worker thread at start.
        environ: where Home Assistant tokens are read (``token_env``); default ``os.environ``.
        http_transport: an httpx transport for Home Assistant calls (tests); default: network.

    Raises:
        HomeConfigError: the home file does not validate (from the constructor).
    """

    def __init__(
        self,
        settings: HubSettings,
        *,
        home: Home | None = None,
        engine: IntentEngine | None = None,
        environ: Mapping[str, str] | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.home = home if home is not None else load_home(settings.config or DEMO_HOME_PATH)
        self.registry = Registry(self.home)
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.states: dict[str, dict[str, Any]] = {
            e.entity_id: dict(e.binding.state)
            for e in self.home.entities
            if isinstance(e.binding, VirtualBinding)
        }
        self._http_transport = http_transport
        self._http: httpx.AsyncClient | None = None
        self.owner = MqttOwner(
            settings.mqtt_url,
            client_id=settings.hub_id,
            will=OutMessage(self.topics.bridge_state(), self._bridge_state(False), 1, True),
            birth=[OutMessage(self.topics.bridge_state(), self._bridge_state(True), 1, True)],
            on_message=self._on_message,
        )
        self.metrics = HubMetrics(self.registry, lambda: self.owner.stats)
        self._ctx = _Context(settings, self.owner, self.registry, self.metrics)
        self.bridge_api = BridgeApi(self.registry, None, states=lambda: self.states)
        self.snapshots = Snapshots(self._ctx)

        # The units, in start order (stopped in reverse): listed here and nowhere else.
        self.bridge_state = BridgeStateUnit(self._ctx)
        self.discovery = DiscoveryUnit(self._ctx, on_ha_online=self.bridge_state.online)
        self.registry_unit = RegistryUnit(self._ctx, self.snapshots, self.discovery.device_changed)
        self.voice = VoiceUnit(
            self._ctx,
            home=self.home,
            engine=engine,
            states=self.states,
            environ=self.environ,
            http=self._http_client,
            on_engine=self._engine_loaded,
        )
        self.fan_out = FanOutUnit(self._ctx)
        self.bridge = BridgeUnit(
            self._ctx, self.bridge_api, self.snapshots, self.discovery.device_changed
        )
        self.units: list[Any] = [
            self.bridge_state,
            self.registry_unit,
            self.discovery,  # after the registry: its probe also ends the registry's burst
            self.voice,
            self.fan_out,
            self.bridge,
        ]
        self._routes: dict[TopicKind, Route] = {}
        for unit in self.units:
            self._routes.update(unit.routes)
        self._started_units: list[Any] = []
        self.started_at: float | None = None

    @staticmethod
    def _bridge_state(online: bool) -> bytes:
        state = Availability.ONLINE if online else Availability.OFFLINE
        return BridgeState(state=state).to_wire()

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> HubState:
        return self._ctx.state

    @property
    def counters(self) -> collections.Counter[str]:
        return self._ctx.counters

    @property
    def edges(self) -> dict[str, Availability]:
        return self.registry_unit.edges

    @property
    def engine(self) -> SerializedEngine | None:
        return self.voice.engine

    def _engine_loaded(self, engine: SerializedEngine) -> None:
        self.bridge_api.engine = cast(IntentEngine, engine)

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.settings.ha_timeout_seconds, transport=self._http_transport
            )
        return self._http

    # -- lifetime --------------------------------------------------------------------------

    async def start(self, *, connect_timeout: float = MQTT_CONNECT_TIMEOUT_SECONDS) -> None:
        """Connect, then start every unit; returns once the hub is online.

        Raises:
            HubStartError: the broker did not answer within ``connect_timeout`` seconds, or
                a unit failed to start (everything started is stopped again).
        """
        self._ctx.state = HubState.STARTING
        self._check_tokens()
        await self.owner.start()
        try:
            await asyncio.wait_for(self.owner.connected.wait(), connect_timeout)
        except TimeoutError:
            await self.owner.stop(flush_seconds=0)
            self._ctx.state = HubState.STOPPED
            raise HubStartError(
                f"broker {self.settings.mqtt_url} did not answer within {connect_timeout:g} s"
            ) from None
        try:
            for unit in self.units:
                await unit.start()
                self._started_units.append(unit)
        except Exception as err:
            await self.stop()
            raise HubStartError(f"{type(unit).__name__} failed to start: {err}") from err
        self.snapshots.flush(force=True)
        self._ctx.state = HubState.ONLINE
        self.started_at = time.time()
        log.info(
            "hub_online",
            hub_id=self.settings.hub_id,
            broker=self.settings.mqtt_url,
            devices=len(self.registry.devices()),
        )

    async def stop(self) -> None:
        """Stop the units, publish ``bridge/state`` offline, flush and disconnect."""
        if self._ctx.state is HubState.STOPPED:
            return
        self._ctx.state = HubState.STOPPING
        for unit in reversed(self._started_units):
            try:
                await unit.stop()
            except Exception:
                log.exception("unit_stop_failed", unit=type(unit).__name__)
        self._started_units.clear()
        # A clean disconnect does not fire the will: say offline ourselves, first.
        self.owner.publish_nowait(
            OutMessage(self.topics.bridge_state(), self._bridge_state(False), 1, True)
        )
        await self.owner.stop(flush_seconds=_STOP_GRACE_SECONDS)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._ctx.state = HubState.STOPPED
        log.info("hub_stopped", hub_id=self.settings.hub_id)

    def _check_tokens(self) -> None:
        for entity in self.home.entities:
            binding = entity.binding
            if isinstance(binding, HomeAssistantBinding) and not self.environ.get(
                binding.token_env
            ):
                log.warning(
                    "home_assistant_token_missing",
                    entity_id=entity.entity_id,
                    token_env=binding.token_env,
                )

    # -- dispatch --------------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        """Route one message to its unit; runs on the event loop, so every handler is quick."""
        if topic == self.discovery.probe:
            self.discovery.on_probe(payload)
            return
        try:
            parsed = self.topics.parse(topic)
        except InvalidTopic as err:
            if topic.startswith(self.bridge.prefix):
                self.bridge.on_bad_path(topic, payload)
            else:
                self._ctx.invalid("topic", topic, err)
            return
        route = self._routes.get(parsed.kind)
        if route is not None:
            route(topic, parsed, payload)

    # -- for the HTTP layer ----------------------------------------------------------------

    async def plan_text(
        self, text: str, *, device_id: str | None = None, area: str | None = None
    ) -> Plan:
        """The voice test: recognize, resolve and plan ``text``; nothing is executed."""
        return await self.voice.plan_text(text, device_id=device_id, area=area)

    def publish_command(self, topic: str, command: CommandPayload) -> bool:
        """Publish a command (QoS 1, never retained); False when the queue dropped it."""
        return self._ctx.publish(topic, command.to_wire(), qos=1)

    def stats(self) -> dict[str, Any]:
        """Counters for ``/api/v1/stats``."""
        devices = self.registry.devices()
        owner = self.owner.stats
        return {
            "hub_id": self.settings.hub_id,
            "state": self.state.value,
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 1) if self.started_at else 0,
            "devices": {"known": len(devices), "connected": sum(d.connected for d in devices)},
            "groups": len(self.registry.groups()),
            "edges": {edge: state.value for edge, state in sorted(self.edges.items())},
            "counters": dict(sorted(self.counters.items())),
            "intents_loaded": self.engine is not None,
            "mqtt": {
                "connected": owner.connected,
                "connects": owner.connects,
                "published": owner.published,
                "acknowledged": owner.acknowledged,
                "received": owner.received,
                "dropped_qos0": owner.dropped_qos0,
                "dropped_qos1": owner.dropped_qos1,
                "queued": owner.queued,
                "inflight": owner.inflight,
            },
        }

"""The stream unit: what the hub hears on MQTT, offered to every live-stream session.

The hub has one MQTT connection (:class:`~xiaozhi_runtime.mqtt.MqttOwner`); every message it
receives is also handed to :meth:`StreamUnit.tap` by the service, turned once into a
:class:`~xiaozhi.stream_session.StreamItem` and offered to each attached session (the
``/api/v1/stream`` WebSocket, :mod:`xiaozhi_hub.http.stream`). No session opens an MQTT
connection of its own, and a slow one only fills its own bounded queue.

What the hub already subscribes to brings statuses (telemetry), sensor readings, connection
events, edge and hub bridge state, entity states and voice commands. Device events
(``action``, ``action_result``, ``response``: the voice pipeline's steps; ``command_result``,
``error``, ``mcp_tools``...) are on ``xiaozhi/events/{device_id}``, which the hub's connection
cannot subscribe to with a wildcard (``events/+`` also matches ``events/voice_command``, which
every replica would then execute besides its shared subscription). So once a first stream
client connects (a hub nobody watches pays nothing), this unit opens one MQTT connection of its
own, subscribed to ``events/+``, whose messages only ever reach the stream: every device's
events from its very first one, with no per-device subscription racing the device (the first
version subscribed at a device's first status and could miss what came before the broker's
SUBACK). From that connection it takes the device events and the fleet-wide voice commands
(so each replica's stream shows every utterance, not only its share); everything else on it
comes over the hub's own connection too and is left there. The connection stays until the hub
stops.

Message types (seed 002's table, as :class:`~xiaozhi.stream_frame.MessageType` documents):

=====================  =============================================================
``ECG_DATA``           ``status/{id}`` (telemetry), ``sensors/{id}/{type}``
``ANOMALY_ALERT``      device events, ``device_connected`` / ``device_disconnected``
``PREDICTION_RESULT``  the voice pipeline: ``voice_command``, ``action``,
                       ``action_result``, ``response`` events and voice commands
``FEATURE_DATA``       ``status/group/{id}``, ``status/broadcast``, ``bridge/state``,
                       ``bridge/edges/{id}``, ``bridge/info``, ``entities/{id}``,
                       ``device_edit`` (a rename, area or removal),
                       ``activation`` (a device pending, approved, rejected, expired)
=====================  =============================================================

A voice command an edge publishes twice (``events/voice_command`` and its copy on
``events/{device_id}``, same bytes) is offered once.

The hub's own log lines (what ``xiaozhi hub`` writes, at its level: the process's logging is
configured by the command line, so a hub embedded elsewhere has none) are ``ANOMALY_ALERT``
frames of kind ``log`` under ``{base}/bridge/hubs/{hub_id}/log``, a topic of the stream only
(MQTT never carries it). Each edge's warning and error lines come the same way, kind ``log``
with its ``edge_id``, from ``{base}/bridge/edges/{edge_id}/log`` (QoS 0, rate-limited by the
edge), read by the stream's own connection from the first client on.
A device renamed, moved to another area or removed by a bridge request
(or ``PATCH /devices/{id}``) is a ``FEATURE_DATA`` frame of kind ``device_edit`` under
``{base}/bridge/devices/{device_id}``, also of the stream only: ``{"id", "name", "area",
"area_name"}``, or ``{"id", "removed": true}``. An activation that changed (a device's setup call
made it pending; an operator approved or rejected it; its code expired) is a ``FEATURE_DATA``
frame of kind ``activation`` under ``{base}/bridge/activations/{device_id}``, of the stream
only: ``{"change", "device_id", "client_id", ...}`` (:meth:`StreamUnit.activation_changed`).
``PRIORITY``: connection events, a new pending activation,
``error`` events, bridge state. ``BROADCAST`` (to every
session whatever its filters): the hub's own ``bridge/state``. Retained kinds are remembered
(last message per topic, bounded by the fleet) and sent to a session when it subscribes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import structlog

from xiaozhi.dedup import RecentIds
from xiaozhi.errors import InvalidTopic
from xiaozhi.stream_frame import MessageType
from xiaozhi.stream_session import StreamItem, StreamSession, topic_matches
from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub.unit import HubContext, Route, UnitTasks
from xiaozhi_runtime.logs import add_log_listener
from xiaozhi_runtime.mqtt import MqttOwner

__all__ = ["StreamSink", "StreamUnit"]

log = structlog.get_logger("xiaozhi.hub.stream")

_TYPES: dict[TopicKind, MessageType] = {
    TopicKind.STATUS: MessageType.ECG_DATA,
    TopicKind.SENSOR: MessageType.ECG_DATA,
    TopicKind.DEVICE_EVENTS: MessageType.ANOMALY_ALERT,
    TopicKind.DEVICE_CONNECTED: MessageType.ANOMALY_ALERT,
    TopicKind.DEVICE_DISCONNECTED: MessageType.ANOMALY_ALERT,
    TopicKind.BRIDGE_EDGE_LOG: MessageType.ANOMALY_ALERT,
    TopicKind.VOICE_COMMAND_EVENTS: MessageType.PREDICTION_RESULT,
    TopicKind.DEVICE_VOICE_COMMAND: MessageType.PREDICTION_RESULT,
    TopicKind.GROUP_STATUS: MessageType.FEATURE_DATA,
    TopicKind.BROADCAST_STATUS: MessageType.FEATURE_DATA,
    TopicKind.BRIDGE_STATE: MessageType.FEATURE_DATA,
    TopicKind.BRIDGE_EDGE: MessageType.FEATURE_DATA,
    TopicKind.BRIDGE_INFO: MessageType.FEATURE_DATA,
    TopicKind.BRIDGE_HUB: MessageType.FEATURE_DATA,
    TopicKind.ENTITY_STATE: MessageType.FEATURE_DATA,
}
"""What the stream carries. Left out: commands, bridge requests and responses, utterance
audio, Home Assistant discovery, and the big ``bridge/devices|groups`` snapshots (the
statuses carry the fleet)."""

_RETAINED = frozenset(
    {
        TopicKind.STATUS,
        TopicKind.SENSOR,
        TopicKind.GROUP_STATUS,
        TopicKind.BROADCAST_STATUS,
        TopicKind.BRIDGE_STATE,
        TopicKind.BRIDGE_EDGE,
        TopicKind.BRIDGE_INFO,
        TopicKind.BRIDGE_HUB,
        TopicKind.ENTITY_STATE,
    }
)
_PRIORITY_KINDS = frozenset(
    {
        TopicKind.DEVICE_CONNECTED,
        TopicKind.DEVICE_DISCONNECTED,
        TopicKind.BRIDGE_STATE,
        TopicKind.BRIDGE_EDGE,
        TopicKind.BRIDGE_HUB,
    }
)
_VOICE_STEPS = frozenset({"voice_command", "action", "action_result", "response"})
_OWN_KINDS = frozenset(
    {TopicKind.DEVICE_EVENTS, TopicKind.VOICE_COMMAND_EVENTS, TopicKind.BRIDGE_EDGE_LOG}
)
"""Taken from the unit's own ``events/+`` connection only (module docstring)."""
_CONNECT_SECONDS = 10.0


class StreamSink(Protocol):
    """A live-stream connection as the unit sees it (:mod:`xiaozhi_hub.http.stream`)."""

    session: StreamSession

    def offer(self, item: StreamItem, *, retained: bool = False) -> None:
        """Queue ``item`` if the session wants it; never blocks, never raises."""
        ...


def _payload(raw: bytes) -> Any:
    """The payload as a value: JSON when it is JSON, else text; None for an empty one."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


class StreamUnit:
    """Feeds the live stream from the hub's MQTT connection (module docstring)."""

    def __init__(self, ctx: HubContext) -> None:
        self._ctx = ctx
        self.routes: Mapping[TopicKind, Route] = {}  # it taps every message instead
        self._sinks: set[StreamSink] = set()
        # Raw, parsed only when a client subscribes: a hub nobody watches parses nothing more.
        self._retained: dict[str, tuple[ParsedTopic, bytes]] = {}
        self._tasks = UnitTasks("stream_events", limit=1)
        self.events_owner: MqttOwner | None = None
        """The connection subscribed to ``events/+`` (module docstring); None until a first
        client attaches."""
        self.events_subscribed = asyncio.Event()  # its subscription acknowledged
        # An edge publishes what a device heard twice: on events/voice_command (for the hub)
        # and a copy on events/{device_id}; the stream shows it once.
        self._heard = RecentIds(64)
        self.offered = 0
        # The hub's own log lines, under a topic of this replica that MQTT never carries.
        self.log_topic = ctx.topics.hub_probe(ctx.settings.hub_id).rsplit("/", 1)[0] + "/log"
        self._stop_logs: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._active = False  # the events connection opened (from the first client on)
        self.signing_in = 0
        """Connections open without credentials yet (:meth:`begin_sign_in`)."""
        self.refused: collections.Counter[str] = collections.Counter()
        """Connections refused before they signed in, by reason (``busy``, ``timeout``)."""

    async def start(self) -> None:
        """Listen to the hub's log; device events are read from the first client on."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # The hub's own lines, and those of shared code (``xiaozhi.mqtt``...): under
        # ``xiaozhi up`` the edge's lines are the edge's log feed's, so each comes once.
        self._stop_logs = add_log_listener(self._on_log, component="xiaozhi.hub", rest=True)

    async def stop(self) -> None:
        if self._stop_logs is not None:
            self._stop_logs()
            self._stop_logs = None
        await self._tasks.drain()
        owner, self.events_owner = self.events_owner, None
        if owner is not None:
            await owner.stop(flush_seconds=0)

    async def _open_events(self) -> None:
        """The ``events/+`` connection: connect, subscribe, and say so."""
        ctx = self._ctx
        settings = ctx.settings
        owner = MqttOwner(
            settings.mqtt_url,
            client_id=f"{settings.hub_id}-stream",
            on_message=self._on_event,
            tls_context=settings.mqtt_tls(),
        )
        self.events_owner = owner
        await owner.start()
        with contextlib.suppress(TimeoutError):  # not up yet: it subscribes once connected
            await asyncio.wait_for(owner.connected.wait(), _CONNECT_SECONDS)
        await owner.subscribe([ctx.topics.all_events(), ctx.topics.all_edge_logs()])
        if owner.connected.is_set():
            self.events_subscribed.set()

    def _on_event(self, topic: str, payload: bytes) -> None:
        """A message of the stream's own connection: device events, voice commands and
        edges' log lines."""
        try:
            parsed = self._ctx.topics.parse(topic)
        except InvalidTopic:
            return  # the hub's own connection hears it too, and reports it
        if parsed.kind in _OWN_KINDS:
            self._offer(topic, parsed, payload)

    # -- sessions ----------------------------------------------------------------------------

    @property
    def sessions(self) -> int:
        return len(self._sinks)

    def stats(self) -> dict[str, Any]:
        """For ``/api/v1/stats``: messages offered, and each session's queue and drops."""
        return {
            "offered": self.offered,
            "events_connected": bool(self.events_owner and self.events_owner.connected.is_set()),
            "retained": len(self._retained),
            "signing_in": self.signing_in,
            "refused": dict(self.refused),
            "sessions": [
                {
                    "version": int(s.session.version),
                    "filters": len(s.session.filters),
                    "queued": s.session.queued,
                    "unacked": s.session.unacked,
                    "replaying": s.session.replaying,
                    "dropped": s.session.dropped,
                }
                for s in self._sinks
            ],
        }

    def begin_sign_in(self) -> bool:
        """A connection without credentials on its upgrade request opens: False (and counted
        as refused, ``busy``) when ``stream_max_signing_in`` of them are open already. An
        unauthenticated socket is not yet anyone's: without this bound (and the sign-in
        deadline) anyone who can reach the port holds as many open as they like."""
        if self.signing_in >= self._ctx.settings.stream_max_signing_in:
            self.refuse("busy")
            return False
        self.signing_in += 1
        self._ctx.metrics.stream_signing_in.set(self.signing_in)
        return True

    def end_sign_in(self) -> None:
        """A connection counted by :meth:`begin_sign_in` signed in, or ended."""
        self.signing_in -= 1
        self._ctx.metrics.stream_signing_in.set(self.signing_in)

    def refuse(self, reason: str) -> None:
        """A connection refused before it signed in (``/api/v1/stats``, ``/metrics``)."""
        self.refused[reason] += 1
        self._ctx.metrics.stream_refused.labels(reason=reason).inc()

    def attach(self, sink: StreamSink) -> None:
        self._sinks.add(sink)
        self._ctx.metrics.stream_sessions.set(len(self._sinks))
        if not self._active:
            self._active = True
            self._tasks.spawn(self._open_events(), name="stream-events")

    def detach(self, sink: StreamSink) -> None:
        self._sinks.discard(sink)
        self._ctx.metrics.stream_sessions.set(len(self._sinks))

    def dropped(self, count: int) -> None:
        """A session dropped ``count`` messages for a slow client (``/metrics``)."""
        self._ctx.metrics.stream_dropped.inc(count)

    def retained(self, filters: Iterable[str]) -> list[StreamItem]:
        """The remembered state matching any of ``filters``, for a session that subscribed."""
        wanted = list(filters)
        items = (
            self._item(topic, parsed, payload)
            for topic, (parsed, payload) in self._retained.items()
            if any(topic_matches(f, topic) for f in wanted)
        )
        return [item for item in items if item is not None]

    # -- MQTT ----------------------------------------------------------------------------------

    def tap(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        """One message the hub received: remember it if retained, offer it to every session."""
        kind = parsed.kind
        if kind not in _TYPES or kind in _OWN_KINDS:
            return
        if kind in _RETAINED:
            if payload:
                self._retained[topic] = (parsed, payload)
            else:
                self._retained.pop(topic, None)
        self._offer(topic, parsed, payload)

    def _offer(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        if not self._sinks:
            return
        item = self._item(topic, parsed, payload)
        if item is None:
            return
        self.offered += 1
        for sink in list(self._sinks):
            sink.offer(item)

    def _item(self, topic: str, parsed: ParsedTopic, payload: bytes) -> StreamItem | None:
        """The message as the stream carries it; None for the copy of a voice command."""
        kind = parsed.kind
        value = _payload(payload)
        event_type = value.get("event_type") if isinstance(value, dict) else None
        if kind is TopicKind.VOICE_COMMAND_EVENTS:
            self._heard.seen(hashlib.blake2b(payload, digest_size=16).hexdigest())
        elif (
            kind is TopicKind.DEVICE_EVENTS
            and event_type == "voice_command"
            and hashlib.blake2b(payload, digest_size=16).hexdigest() in self._heard
        ):
            return None
        message_type = _TYPES[kind]
        if kind is TopicKind.DEVICE_EVENTS and event_type in _VOICE_STEPS:
            message_type = MessageType.PREDICTION_RESULT
        if kind is TopicKind.BRIDGE_EDGE_LOG:  # a log line, like the hub's own
            level = value.get("level") if isinstance(value, dict) else None
            line = {"topic": topic, "kind": "log", "edge_id": parsed.edge_id, "payload": value}
            return StreamItem(message_type, topic, line, priority=level in ("error", "critical"))
        data: dict[str, Any] = {"topic": topic, "kind": kind.value, "payload": value}
        for name in ("device_id", "sensor_type", "edge_id", "hub_id", "group_id", "entity_id"):
            field = getattr(parsed, name)
            if field is not None:
                data[name] = field
        if isinstance(event_type, str):
            data["event_type"] = event_type
        return StreamItem(
            message_type,
            topic,
            data,
            priority=kind in _PRIORITY_KINDS or event_type == "error",
            broadcast=kind is TopicKind.BRIDGE_STATE,
        )

    def device_edited(self, device_id: str) -> None:
        """A bridge request renamed, moved or removed ``device_id``: tell every session (the
        statuses do not carry the registry's name and area)."""
        if not self._sinks:
            return
        record = self._ctx.registry.device(device_id)
        payload: dict[str, Any] = {"id": device_id, "removed": True}
        if record is not None:
            payload = {
                "id": device_id,
                "name": record.name,
                "area": record.area,
                "area_name": self._ctx.registry.home.area_name(record.area),
            }
        topic = f"{self._ctx.topics.base}/bridge/devices/{device_id}"
        data = {"topic": topic, "kind": "device_edit", "device_id": device_id, "payload": payload}
        self.offered += 1
        item = StreamItem(MessageType.FEATURE_DATA, topic, data)
        for sink in list(self._sinks):
            sink.offer(item)

    def activation_changed(self, change: str, entry: dict[str, Any]) -> None:
        """A device became pending, was approved, rejected, or its code expired
        (:attr:`~xiaozhi_hub.activations.Activations.on_change`): tell every session, so the
        dashboard's approvals list follows without polling. ``PRIORITY`` for a new pending
        one: someone is waiting at that device for an operator."""
        if not self._sinks:
            return
        device_id = entry["device_id"]
        topic = f"{self._ctx.topics.base}/bridge/activations/{device_id}"
        data = {
            "topic": topic,
            "kind": "activation",
            "device_id": device_id,
            "payload": {"change": change, **entry},
        }
        self.offered += 1
        item = StreamItem(MessageType.FEATURE_DATA, topic, data, priority=change == "pending")
        for sink in list(self._sinks):
            sink.offer(item)

    # -- the hub's log ---------------------------------------------------------------------

    def _on_log(self, event: dict[str, Any]) -> None:
        """A log event of this process (any thread); offered on the event loop's thread."""
        if not self._sinks or self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._offer_log(event)
        else:
            self._loop.call_soon_threadsafe(self._offer_log, event)

    def _offer_log(self, event: dict[str, Any]) -> None:
        level = str(event.pop("level", "info"))
        record = {
            "level": level,
            "event": str(event.pop("event", "")),
            **event,
        }
        # Only what MessagePack carries: anything else (a Path, an exception) as its text.
        payload = json.loads(json.dumps(record, default=str))
        item = StreamItem(
            MessageType.ANOMALY_ALERT,
            self.log_topic,
            {"topic": self.log_topic, "kind": "log", "payload": payload},
            priority=level in ("error", "critical"),
        )
        self.offered += 1
        for sink in list(self._sinks):
            sink.offer(item)

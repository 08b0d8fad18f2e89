"""What the hub's units share: the :class:`Unit` protocol, the context, retained publishing.

A unit is one role of the hub's MQTT side (zigbee2mqtt's extensions, style.md §4): its
constructor only wires dependencies, :meth:`Unit.start` subscribes, :meth:`Unit.stop` undoes
it, and :attr:`Unit.routes` says which messages it handles, by the :class:`TopicKind` the
topic parses to. :class:`~xiaozhi_hub.service.HubService` lists the units in one place,
connects MQTT before starting any of them, and routes each message to the one unit whose
table names its kind.

What every unit needs is one :class:`HubContext`, built once by the service: settings, the
topic tree, the MQTT owner, the registry, the metrics, and :class:`RetainedPublisher`, which
publishes retained state only when its bytes change and lets the owner remember it, so it
is re-published after a broker restart that lost it.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

import structlog

from xiaozhi.payloads import EventPayload
from xiaozhi.timestamps import wire_timestamp
from xiaozhi.topics import ParsedTopic, TopicKind
from xiaozhi_hub.metrics import HubMetrics
from xiaozhi_hub.registry import Registry
from xiaozhi_hub.settings import HubSettings
from xiaozhi_runtime.mqtt import MqttOwner, OutMessage

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "STOP_GRACE_SECONDS",
    "HubContext",
    "HubState",
    "RetainedPublisher",
    "Route",
    "Unit",
    "UnitTasks",
    "new_id",
    "now_wire",
]

log = structlog.get_logger("xiaozhi.hub")

MAX_PAYLOAD_BYTES = 64 * 1024
"""Largest MQTT payload the hub parses (bytes); larger ones are refused and counted."""

STOP_GRACE_SECONDS = 5.0
"""How long stopping waits for in-flight work (voice commands, requests, the MQTT flush)."""

Route = Callable[[str, ParsedTopic, bytes], None]
"""A message handler: ``(topic, parsed topic, payload)``. It runs on the event loop, so it
must be quick: anything slow is a task the unit owns and awaits in ``stop()``."""


class Unit(Protocol):
    """One role of the hub's MQTT side (module docstring)."""

    @property
    def routes(self) -> Mapping[TopicKind, Route]:
        """The messages this unit handles; no two units of a service name the same kind."""
        ...

    async def start(self) -> None:
        """Subscribe (and read whatever retained state the unit needs before it serves)."""
        ...

    async def stop(self) -> None:
        """Unsubscribe and finish or cancel the unit's own tasks."""
        ...


class UnitTasks:
    """The work a unit started from its message handlers (handlers must return at once).

    At most ``limit`` run at once (the others wait their turn); an exception is logged with
    ``what`` and never escapes; :meth:`drain` waits :data:`STOP_GRACE_SECONDS` for them at
    stop, then cancels the rest.
    """

    def __init__(self, what: str, limit: int | None = None) -> None:
        self._what = what
        self._semaphore = asyncio.Semaphore(limit) if limit else None
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str, **context: Any) -> None:
        """Run ``work`` in a task of its own; ``context`` goes into the log of a failure."""
        task = asyncio.create_task(self._run(work, context), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, work: Coroutine[Any, Any, None], context: dict[str, Any]) -> None:
        try:
            if self._semaphore is None:
                await work
            else:
                async with self._semaphore:
                    await work
        except Exception:
            log.exception(f"{self._what}_failed", **context)

    async def drain(self) -> None:
        """Let running work finish (bounded), cancel what is left, and wait for it."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


class HubState(enum.StrEnum):
    """Where the service is in its life; ``/health`` reports it."""

    CREATED = "created"
    STARTING = "starting"  # connecting, loading intents, reading retained state
    ONLINE = "online"
    STOPPING = "stopping"  # offline published, flushing
    STOPPED = "stopped"


def new_id() -> str:
    """A fresh message id for what the hub originates (commands, answers)."""
    return uuid.uuid4().hex


def now_wire() -> str:
    """The current time in the one wire form (:func:`~xiaozhi.timestamps.wire_timestamp`)."""
    return wire_timestamp(time.time())


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


class HubContext:
    """What every unit shares; built once by :class:`~xiaozhi_hub.service.HubService`."""

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
        message = OutMessage(topic, payload, qos=qos, retain=retain)
        if not self.owner.publish_nowait(message):
            log.warning("mqtt_publish_dropped", topic=topic)
            return False
        return True

    def event(self, device_id: str, event_type: str, **fields: Any) -> None:
        """An event on ``xiaozhi/events/{device_id}`` (QoS 1, never retained)."""
        payload = EventPayload(
            event_type=event_type, device_id=device_id, timestamp=now_wire(), **fields
        )
        self.publish(self.topics.device_events(device_id), payload.to_wire())

    def invalid(self, kind: str, topic: str, error: Exception | str) -> None:
        """Count and log a refused message (never a crash, never silent)."""
        self.metrics.invalid_messages.labels(kind).inc()
        log.warning("mqtt_message_refused", kind=kind, topic=topic, error=str(error)[:200])

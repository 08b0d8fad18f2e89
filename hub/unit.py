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
import contextvars
import enum
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

import structlog

from xiaozhi import jsonutil
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

    At most ``limit`` run at once; the others wait their turn in order, as coroutines not
    yet started (no task each: a backlog of thousands of commands made every start scan
    the waiters of an `asyncio.Semaphore`, docs/benchmarks.md). A task may give its place
    back before it ends (:meth:`give_back`), for a wait that is not work (a device's
    answer). An exception is logged with ``what`` and never escapes; :meth:`drain` waits
    :data:`STOP_GRACE_SECONDS` for the work at stop, then cancels the rest.
    """

    def __init__(self, what: str, limit: int | None = None) -> None:
        self._what = what
        self._limit = limit
        self._running = 0  # places held
        self._waiting: collections.deque[tuple[Coroutine[Any, Any, None], str, dict[str, Any]]]
        self._waiting = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str, **context: Any) -> None:
        """Run ``work`` in a task of its own, now or once a place is free; ``context`` goes
        into the log of a failure."""
        if self._limit is not None and self._running >= self._limit:
            self._waiting.append((work, name, context))
        else:
            self._start(work, name, context)

    @property
    def waiting(self) -> int:
        """Work not started yet: every place is taken."""
        return len(self._waiting)

    def give_back(self) -> None:
        """Free the calling task's place for the next waiting work; what the task does
        next (a bounded wait for somebody else) runs outside the limit."""
        place = _place.get()
        if place is not None and place.tasks is self:
            place.free()

    def _start(self, work: Coroutine[Any, Any, None], name: str, context: dict[str, Any]) -> None:
        self._running += 1
        task = asyncio.create_task(self._run(work, context, _Place(self)), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _next(self) -> None:
        while self._waiting and (self._limit is None or self._running < self._limit):
            self._start(*self._waiting.popleft())

    async def _run(
        self, work: Coroutine[Any, Any, None], context: dict[str, Any], place: _Place
    ) -> None:
        _place.set(place)  # this task's own context
        try:
            await work
        except Exception:
            log.exception(f"{self._what}_failed", **context)
        finally:
            place.free()

    async def drain(self) -> None:
        """Let running and waiting work finish (bounded), cancel what is left, and wait
        for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE_SECONDS
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        for work, _, _ in self._waiting:
            work.close()  # never started: nothing to cancel
        self._waiting.clear()
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


class _Place:
    """One task's place among a :class:`UnitTasks`' ``limit``, freed once."""

    __slots__ = ("held", "tasks")

    def __init__(self, tasks: UnitTasks) -> None:
        self.tasks = tasks
        self.held = True

    def free(self) -> None:
        if self.held:
            self.held = False
            self.tasks._running -= 1
            self.tasks._next()


_place: contextvars.ContextVar[_Place | None] = contextvars.ContextVar("unit_place", default=None)


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
        """An event on ``xiaozhi/events/{device_id}`` (QoS 1, never retained).

        The JSON is what :class:`~xiaozhi.payloads.EventPayload` writes (its fields, then
        ``fields`` as given), built as a dict: four events per voice command made the
        model's validation and dump a hot spot (tests/hub/test_hub_voice.py compares them).
        """
        payload = {"event_type": event_type, "device_id": device_id, "timestamp": now_wire()}
        payload.update(fields)
        self.publish(self.topics.device_events(device_id), jsonutil.dumps(payload))

    def invalid(self, kind: str, topic: str, error: Exception | str) -> None:
        """Count and log a refused message (never a crash, never silent)."""
        self.metrics.invalid_messages.labels(kind).inc()
        log.warning("mqtt_message_refused", kind=kind, topic=topic, error=str(error)[:200])

"""The monitor unit: a device's live uplink audio for the dashboard, from whichever edge holds it.

The browser talks only to the hub (same origin, the API key), and the hub does not know the
edges' HTTP addresses; it joins the edges' audio monitor on MQTT instead, as one more
listening process (docs/topics.md §2.14). When a first listener for a device attaches
(:meth:`MonitorUnit.attach`, from ``/api/v1/devices/{id}/listen``), the hub publishes the
retained want ``xiaozhi/monitor/{device_id}/listeners/{hub_id}`` and subscribes to
``xiaozhi/monitor/{device_id}/audio``; the edge holding the device then publishes each uplink
Opus frame there as a seed 004 packet, which this unit hands to its listeners, re-numbered
and re-stamped per listener (:class:`~xiaozhi.audio_monitor.ListenerStream`), as an edge's
own ``/api/ws/audio`` does. When the last one leaves, the want is cleared and the
subscription dropped: while nobody watches, no audio crosses the broker.

A want left behind by a hub that stopped uncleanly would keep the edge publishing. The hub's
own will is ``bridge/state``, shared by every replica, so the wants go over a connection of
their own (``{hub_id}-monitor``, opened when the unit starts) whose birth is
``xiaozhi/bridge/hubs/{hub_id}/state`` ``online`` and whose will is ``offline`` there,
retained: edges watch ``bridge/hubs/+/state`` and drop (and delete) the wants of a hub gone
offline, as they do an edge's (:mod:`xiaozhi_edge.monitor`). The birth goes out before any
want on that connection, so a hub started again under the same id is ``online`` before its
first want. Opened at start, not at the first want, that state is also every replica's own
availability, which the dashboard's Bridge page shows one row per hub (the stream carries it):
a second connection per hub, because a will needs a connection of its own. Besides, at start
the unit reads its own retained wants (``monitor/+/listeners/{hub_id}``) and clears those it
has no listener for, and a clean stop clears all of its own and says ``offline``.

That state carries more than ``online``/``offline``, so the Bridge page shows every replica's
figures, not only those of the hub it talks to: ``hub_id``, ``version`` and ``started_at``
(fixed for a run, so the will and the ``offline`` of a clean stop carry them too) and, while
online, a few figures that change (:data:`STATE_FIELDS`: devices known and connected, stream
sessions, MQTT connects), re-published retained when they changed, looked at every
:data:`STATE_REFRESH_SECONDS`. It stays cheap: one retained message of about 210 bytes per
replica, at most every 30 s, and the connection re-publishes the latest after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from xiaozhi import __version__, jsonutil
from xiaozhi.audio_monitor import decode_audio_packet
from xiaozhi.errors import WireError
from xiaozhi.payloads import Availability, EdgeState
from xiaozhi.timestamps import wire_timestamp
from xiaozhi.topics import ParsedTopic, TopicKind, publish_options
from xiaozhi_hub.unit import HubContext, Route, UnitTasks
from xiaozhi_runtime.monitor_listener import MonitorListener
from xiaozhi_runtime.mqtt import MqttOwner, OutMessage

__all__ = ["STATE_FIELDS", "STATE_REFRESH_SECONDS", "MonitorUnit"]

log = structlog.get_logger("xiaozhi.hub.monitor")

_AUDIO_QOS, _ = publish_options(TopicKind.MONITOR_AUDIO)
_WANT_QOS, _WANT_RETAIN = publish_options(TopicKind.MONITOR_LISTENERS)
_STATE_QOS, _STATE_RETAIN = publish_options(TopicKind.BRIDGE_HUB)
_STOP_FLUSH_SECONDS = 5.0
STATE_REFRESH_SECONDS = 30.0
"""How often the figures of this hub's state are looked at (re-published only when changed)."""
STATE_FIELDS = ("devices", "stream_sessions", "mqtt_connects")
"""The changing figures an online state carries (module docstring)."""


class MonitorUnit:
    """The hub as an audio-monitor listener (module docstring).

    Args:
        ctx: what the units share.
        figures: the changing figures of this hub's state (:data:`STATE_FIELDS`), from the
            service, which knows them all.
    """

    def __init__(self, ctx: HubContext, figures: Callable[[], dict[str, Any]]) -> None:
        self._ctx = ctx
        self._figures = figures
        self._started_at = time.time()
        self._published: dict[str, Any] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._want_id = ctx.settings.hub_id
        self._tasks = UnitTasks("monitor_subscription")
        self.wants_owner: MqttOwner | None = None
        """The connection the wants go over, with this hub's state as its birth and will
        (module docstring); None until the unit starts, and after it stops."""
        self.listeners: dict[str, set[MonitorListener]] = {}  # device id -> listeners
        self.routes: Mapping[TopicKind, Route] = {
            TopicKind.MONITOR_AUDIO: self._on_audio,
            TopicKind.MONITOR_LISTENERS: self._on_own_want,
        }

    @property
    def _own_wants(self) -> str:
        return f"{self._ctx.topics.base}/monitor/+/listeners/{self._want_id}"

    async def start(self) -> None:
        self._started_at = time.time()
        self._wants()  # this hub's state: online now, its will if it dies (module docstring)
        await self._ctx.owner.subscribe([self._own_wants], qos=_WANT_QOS)
        self._refresher = asyncio.create_task(self._refresh_every(), name="hub-state")

    async def _refresh_every(self) -> None:
        while True:
            await asyncio.sleep(STATE_REFRESH_SECONDS)
            self.refresh_state()

    def refresh_state(self) -> bool:
        """Re-publish this hub's online state when its figures changed; True if it did."""
        owner = self.wants_owner
        if owner is None or self._figures() == self._published:
            return False
        return owner.retain(self._state(online=True))

    async def stop(self) -> None:
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        for device_id in list(self.listeners):
            self._want(device_id, wanted=False)
        self.listeners.clear()
        await self._ctx.owner.unsubscribe([self._own_wants])
        await self._tasks.drain()
        owner, self.wants_owner = self.wants_owner, None
        if owner is not None:
            # A clean disconnect does not fire the will: say offline ourselves, after the wants.
            # Not connected: the broker lost the connection and fired the will already, so
            # the stop does not wait for a broker that may be down (open since start now).
            owner.retain(self._state(online=False))
            connected = owner.connected.is_set()
            await owner.stop(flush_seconds=_STOP_FLUSH_SECONDS if connected else 0)

    def _state(self, *, online: bool) -> OutMessage:
        """This hub's state: who and what it is (static), and online its figures now."""
        figures: dict[str, Any] = {}
        if online:
            figures = self._published = self._figures()
        now = time.time()
        state = EdgeState(
            state=Availability.ONLINE if online else Availability.OFFLINE,
            hub_id=self._want_id,
            version=__version__,
            started_at=wire_timestamp(self._started_at),
            timestamp=wire_timestamp(now),
            **figures,
        )
        topic = self._ctx.topics.hub_state(self._want_id)
        return OutMessage(topic, state.to_wire(), _STATE_QOS, _STATE_RETAIN)

    def _wants(self) -> MqttOwner:
        """The wants' connection, opened (and its birth queued first) when the unit starts."""
        owner = self.wants_owner
        if owner is None:
            settings = self._ctx.settings
            owner = self.wants_owner = MqttOwner(
                settings.mqtt_url,
                client_id=f"{settings.hub_id}-monitor",
                will=self._state(online=False),
                birth=[self._state(online=True)],
                tls_context=settings.mqtt_tls(),
            )
            self._tasks.spawn(owner.start(), name="monitor-wants")
        return owner

    def stats(self) -> dict[str, int]:
        """For ``/api/v1/stats``: the devices listened to and the listeners (pages)."""
        return {
            "devices": len(self.listeners),
            "listeners": sum(len(v) for v in self.listeners.values()),
        }

    def attach(self, listener: MonitorListener) -> None:
        """Add a listener; the first one for its device registers the hub's want."""
        device_id = listener.device_id
        listeners = self.listeners.get(device_id)
        if listeners is not None:
            listeners.add(listener)
            return
        self.listeners[device_id] = {listener}
        self._want(device_id, wanted=True)
        log.info("monitor_started", device_id=device_id)

    def detach(self, listener: MonitorListener) -> None:
        """Remove a listener; the last one for its device clears the want."""
        device_id = listener.device_id
        listeners = self.listeners.get(device_id)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self.listeners[device_id]
            self._want(device_id, wanted=False)
            log.info("monitor_stopped", device_id=device_id)

    def _want(self, device_id: str, *, wanted: bool) -> None:
        ctx = self._ctx
        topic = ctx.topics.monitor_listeners(device_id, self._want_id)
        payload = jsonutil.dumps({"edge_id": self._want_id}) if wanted else b""
        self._wants().retain(OutMessage(topic, payload, _WANT_QOS, _WANT_RETAIN))
        audio = [ctx.topics.monitor_audio(device_id)]
        subscription = (
            ctx.owner.subscribe(audio, qos=_AUDIO_QOS) if wanted else ctx.owner.unsubscribe(audio)
        )
        self._tasks.spawn(subscription, name=f"monitor-{device_id}", device_id=device_id)

    def _on_audio(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        device_id = parsed.device_id
        listeners = self.listeners.get(device_id or "")
        if not listeners:
            return  # the edge's last packets after the want was cleared
        try:
            packet = decode_audio_packet(payload)
        except WireError as err:
            self._ctx.invalid("monitor_audio", topic, err)
            return
        now = asyncio.get_running_loop().time()
        for listener in listeners:
            if listener.offer(packet.opus, packet.duration_ms, now):
                self._ctx.counters["monitor_lagged_packets"] += 1

    def _on_own_want(self, topic: str, parsed: ParsedTopic, payload: bytes) -> None:
        device_id = parsed.device_id
        mine = parsed.edge_id == self._want_id
        if payload and device_id and mine and device_id not in self.listeners:
            # left by this hub's last run (or an edit): nobody here listens
            self._wants().retain(OutMessage(topic, b"", _WANT_QOS, _WANT_RETAIN))

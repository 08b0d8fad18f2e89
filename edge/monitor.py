"""The audio monitor (seed 004): a device's uplink Opus for listeners, on any edge process.

A listener connects to ``/api/ws/audio?device_id=...`` on whichever edge process (or worker)
its load balancer picks; the device may be on another. Each process serves its own
listeners, and the processes meet on two topics (docs/topics.md §2.14):

* ``xiaozhi/monitor/{device_id}/listeners/{edge_id}``, retained: an edge publishes it when it
  gets its first listener for the device, and clears it (empty payload) when the last one
  leaves. Every edge subscribes to ``xiaozhi/monitor/+/listeners/+`` and so knows, for each
  device, which *other* edges want it. Retained, so the edge the device reaches later (a
  reconnect, another worker) still learns it.
* ``xiaozhi/monitor/{device_id}/audio``, QoS 0: the edge holding the device publishes each
  uplink Opus frame there, as a seed 004 audio monitor packet, only while another edge wants
  it. An edge with listeners subscribes to it and hands the packets to them, re-stamped per
  listener as its own packets are. A device held here reaches its listeners here directly
  (its relayed copy is ignored), so the audio crosses the broker only for another process.

A want whose edge has died would keep the audio flowing forever, so every edge also watches
``xiaozhi/bridge/edges/+``: an edge that goes ``offline`` (its will) loses its wants, and
they are cleared at the broker. A hub that listens (for its dashboard) wants under its hub
id, and its will is on ``xiaozhi/bridge/hubs/{hub_id}/state`` (``bridge/state`` is shared
by every replica), so edges watch ``xiaozhi/bridge/hubs/+/state`` the same way.

The same states tell when a hub replica comes online: it keeps each device's MCP tools from
the ``mcp_tools`` events it hears, which firmware sends once, on connecting. So a replica
that comes online (first seen, back from offline, or with a new ``started_at``) has this
edge publish every held device's last ``mcp_tools`` event again (``EdgeServer.announce_tools``).

Each listener has a 50-packet queue; one that falls behind loses its oldest packets
(``monitor_lagged_packets``), never slowing the device or the other listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from xiaozhi import jsonutil
from xiaozhi.audio_monitor import (
    AudioPacket,
    decode_audio_packet,
    encode_audio_packet,
)
from xiaozhi.binary import FrameType
from xiaozhi.errors import InvalidTopic, WireError
from xiaozhi.payloads import Availability, EdgeState
from xiaozhi.topics import TopicKind, normalize_device_id, publish_options
from xiaozhi_runtime.monitor_listener import MonitorListener
from xiaozhi_runtime.mqtt import OutMessage

if TYPE_CHECKING:
    from xiaozhi_edge.server import DeviceConnection, EdgeServer

__all__ = ["MONITOR_PATH", "AudioMonitor"]

MONITOR_PATH: Final = "/api/ws/audio"
_PING_SECONDS: Final = 30.0  # seed 004's keep-alive
_U32: Final = 0xFFFFFFFF
_AUDIO_QOS, _AUDIO_RETAIN = publish_options(TopicKind.MONITOR_AUDIO)
_WANT_QOS, _WANT_RETAIN = publish_options(TopicKind.MONITOR_LISTENERS)


class AudioMonitor:
    """The audio monitor of one edge process: its listeners and the relay between edges.

    Args:
        server: The edge process (its MQTT owner, topics, devices held, counters, tasks).
    """

    def __init__(self, server: EdgeServer) -> None:
        self._server = server
        self._topics = server.topics
        self._edge_id = server.settings.edge_id
        self.listeners: dict[str, set[MonitorListener]] = {}  # device id -> listeners here
        self._wanted: dict[str, set[str]] = {}  # device id -> other edges with listeners
        self._offline: set[str] = set()  # edges whose last state was offline
        self._hubs_online: dict[str, object] = {}  # hub id -> its run's started_at, online
        self._relayed: dict[str, int] = {}  # device id -> packets published (sequence)
        base = self._topics.base
        self._prefixes = (f"{base}/monitor/", f"{base}/bridge/edges/", f"{base}/bridge/hubs/")

    @property
    def listener_count(self) -> int:
        """Listeners connected to this process."""
        return sum(len(v) for v in self.listeners.values())

    async def start(self) -> None:
        """Learn who wants which device (retained), and which edges and hubs are gone."""
        topics = self._topics
        await self._server.owner.subscribe(
            [topics.all_monitor_listeners(), topics.all_edges(), topics.all_hub_states()], qos=1
        )

    # ------------------------------------------------------------------ the device side

    def tap(self, conn: DeviceConnection, data: bytes, now: float) -> None:
        """Copy a device's uplink Opus frame to its listeners here and, while another edge
        wants it, to ``xiaozhi/monitor/{device_id}/audio``. Two dict lookups when nobody
        listens."""
        session = conn.session
        device_id = session.device_id
        if device_id is None:
            return
        local = self.listeners.get(device_id)
        remote = device_id in self._wanted
        if (local is None and not remote) or not session.ready:
            return
        try:
            frame = session.decode_binary(data)
        except WireError:
            return  # the session reports the bad frame; listeners just skip it
        if frame.type is not FrameType.OPUS:
            return
        duration_ms = session.frame_duration_ms
        if local is not None:
            self._offer(local, frame.payload, duration_ms, now)
        if remote:
            sequence = self._relayed.get(device_id, 0)
            self._relayed[device_id] = sequence + 1
            packet = AudioPacket(
                int(now * 1000) & _U32, duration_ms, sequence & _U32, frame.payload
            )
            topic = self._topics.monitor_audio(device_id)
            message = OutMessage(topic, encode_audio_packet(packet), _AUDIO_QOS, _AUDIO_RETAIN)
            self._server.owner.publish_nowait(message)

    def _offer(
        self, listeners: set[MonitorListener], opus: bytes, duration_ms: int, now: float
    ) -> None:
        for listener in listeners:
            if listener.offer(opus, duration_ms, now):
                self._server.counters.monitor_lagged_packets += 1

    # ------------------------------------------------------------------ MQTT

    def handles(self, topic: str) -> bool:
        """True for the topics :meth:`on_mqtt` takes (not commands)."""
        return topic.startswith(self._prefixes)

    def on_mqtt(self, topic: str, payload: bytes, now: float) -> None:
        """A want, a relayed packet, or an edge's or a hub's state."""
        try:
            parsed = self._topics.parse(topic)
        except InvalidTopic:
            return
        device_id, edge_id = parsed.device_id, parsed.edge_id
        if parsed.kind is TopicKind.MONITOR_AUDIO and device_id is not None:
            self._on_relayed(device_id, payload, now)
        elif parsed.kind is TopicKind.MONITOR_LISTENERS and device_id and edge_id:
            self._on_want(device_id, edge_id, wanted=bool(payload))
        elif parsed.kind in (TopicKind.BRIDGE_EDGE, TopicKind.BRIDGE_HUB):
            # A hub wants under its hub id: its state ends its wants as an edge's ends an edge's;
            # a hub's coming online also has this edge's devices announce their tools again.
            listener_id = edge_id or parsed.hub_id
            try:
                state = EdgeState.from_wire(payload)
            except WireError:
                return
            online = state.state is Availability.ONLINE
            if listener_id is not None:
                self._on_edge_state(listener_id, online=online)
            if parsed.hub_id is not None:
                self._on_hub_state(parsed.hub_id, state, online=online)

    def _on_hub_state(self, hub_id: str, state: EdgeState, *, online: bool) -> None:
        """A hub replica that comes online (first seen, back from offline, or restarted: a
        new ``started_at``) has heard no device announce its MCP tools: announce them again.
        Its figures changing re-publish the same run's state, which is not a start."""
        if not online:
            self._hubs_online.pop(hub_id, None)
            return
        started_at = (state.model_extra or {}).get("started_at")
        if hub_id in self._hubs_online and self._hubs_online[hub_id] == started_at:
            return
        self._hubs_online[hub_id] = started_at
        self._server.announce_tools()

    def _on_relayed(self, device_id: str, payload: bytes, now: float) -> None:
        listeners = self.listeners.get(device_id)
        if listeners is None or device_id in self._server.by_device:
            return  # nobody here, or the device is here and its frames reach them directly
        try:
            packet = decode_audio_packet(payload)
        except WireError:
            return
        self._offer(listeners, packet.opus, packet.duration_ms, now)

    def _on_want(self, device_id: str, edge_id: str, *, wanted: bool) -> None:
        if edge_id == self._edge_id:
            return
        if wanted and edge_id in self._offline:
            self._clear_want(device_id, edge_id)  # left behind by an edge that died
            return
        edges = self._wanted.get(device_id)
        if wanted:
            if edges is None:
                edges = self._wanted[device_id] = set()
            edges.add(edge_id)
        elif edges is not None:
            edges.discard(edge_id)
            if not edges:
                del self._wanted[device_id]
                self._relayed.pop(device_id, None)

    def _on_edge_state(self, edge_id: str, *, online: bool) -> None:
        if edge_id == self._edge_id:
            return
        if online:
            self._offline.discard(edge_id)
            return
        self._offline.add(edge_id)
        for device_id, edges in list(self._wanted.items()):
            if edge_id in edges:
                self._on_want(device_id, edge_id, wanted=False)
                self._clear_want(device_id, edge_id)

    def _clear_want(self, device_id: str, edge_id: str) -> None:
        topic = self._topics.monitor_listeners(device_id, edge_id)
        self._server.owner.publish_nowait(OutMessage(topic, b"", _WANT_QOS, _WANT_RETAIN))

    # ------------------------------------------------------------------ the listener side

    async def serve(self, ws: ServerConnection) -> None:
        """One listener's connection, until it closes."""
        assert ws.request is not None
        raw = parse_qs(urlsplit(ws.request.path).query).get("device_id", [""])[-1]
        device_id = normalize_device_id(raw)  # checked in the handshake already
        loop = asyncio.get_running_loop()
        listener = MonitorListener(device_id, loop.time())
        self._join(listener)
        reader = self._server.spawn(_drain_input(ws))
        # A listener that leaves wakes the loop at once: its want is cleared then, and an
        # edge's stop does not wait a ping interval for this handler.
        reader.add_done_callback(lambda _: listener.ready.set())
        try:
            # One text frame first, so a listener knows it is attached; then binary packets.
            await ws.send(jsonutil.dumps_text({"type": "monitor", "device_id": device_id}))
            last_ping = loop.time()
            while not reader.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(listener.ready.wait(), _PING_SECONDS)
                listener.ready.clear()
                while listener.queue:
                    await ws.send(listener.queue.popleft())
                if loop.time() - last_ping >= _PING_SECONDS:
                    await ws.ping()
                    last_ping = loop.time()
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()
            self._leave(listener)

    def _join(self, listener: MonitorListener) -> None:
        device_id = listener.device_id
        listeners = self.listeners.get(device_id)
        if listeners is not None:
            listeners.add(listener)
            return
        self.listeners[device_id] = {listener}
        owner, topics = self._server.owner, self._topics
        want = jsonutil.dumps({"edge_id": self._edge_id})
        topic = topics.monitor_listeners(device_id, self._edge_id)
        owner.retain(OutMessage(topic, want, _WANT_QOS, _WANT_RETAIN))
        self._server.spawn(owner.subscribe([topics.monitor_audio(device_id)], qos=_AUDIO_QOS))

    def _leave(self, listener: MonitorListener) -> None:
        device_id = listener.device_id
        listeners = self.listeners.get(device_id)
        if listeners is None:
            return
        listeners.discard(listener)
        if listeners:
            return
        del self.listeners[device_id]
        owner, topics = self._server.owner, self._topics
        topic = topics.monitor_listeners(device_id, self._edge_id)
        owner.retain(OutMessage(topic, b"", _WANT_QOS, _WANT_RETAIN))  # clears it
        self._server.spawn(owner.unsubscribe([topics.monitor_audio(device_id)]))


async def _drain_input(ws: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass  # listeners have nothing to say; this notices their close

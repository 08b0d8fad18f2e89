"""The one owner of the broker connection in a process (zigbee2mqtt's `lib/mqtt.ts` pattern).

Why it exists: awaiting aiomqtt's `publish()` once per message tops out near 12,000 msg/s and
fell seconds behind at 1,000 talking devices (design.md section 8). Here the hot path calls
:meth:`MqttOwner.publish_nowait`, which only appends to a bounded queue; one writer task is
the only code that talks to the broker. It yields to the event loop once per batch, so the
socket is written in large chunks.

QoS 0 messages do not go through paho's `publish`: at 1,000 devices flat out, paho's
per-message work (an `MQTTMessageInfo` with a `threading.Condition`, a wake-up byte on its
socket pair, one `send()` per packet, a `ReasonCode` and a `Properties` for the `on_publish`
chained below) was about 60 % of the edge's CPU (docs/benchmarks.md, "Telemetry, 2026-12-07").
The writer encodes each QoS 0 PUBLISH itself (with the one PUBLISH encoder,
:func:`xiaozhi.mqtt_packets.encode_publish`) and hands the run of them to paho's own outgoing
queue as one packet, so paho writes it with one `send()`, in order with everything else it sends
(QoS 1 publishes, PINGREQ, SUBSCRIBE), and resumes a partial write where it stopped. That queue
is paho's private `_packet_queue`, which is why `paho-mqtt` is pinned; ``tests/runtime``
publishes through it to a real Mosquitto.
QoS 1 messages still go through `publish`: paho keeps them until their PUBACK.

Delivery rules, all counted in :class:`OwnerStats` (never a silent drop):

* The queue is bounded twice: in messages and in bytes (each message's topic, payload and
  :data:`MESSAGE_OVERHEAD_BYTES`), so a few large messages cannot hold more memory than
  many small ones; ``/stats`` shows both (``queued``, ``queued_bytes``).
* QoS 0 is at most once: when the queue is full the message is dropped and counted.
* QoS 1 is at least once: a message stays ours until the broker's PUBACK. If the connection
  drops first, it is queued again, ahead of newer messages. Above the high watermark
  :attr:`MqttOwner.room` is cleared so producers that can wait (a device's reads) pause;
  only past the hard bound is a QoS 1 message dropped, and counted.
* Retained messages are remembered and published again after every reconnect, ahead of the
  backlog: a broker restart that lost them loses nothing for long.
* Subscriptions are remembered and made again after every reconnect.
* With ``clean_session=False`` the session is persistent: the broker keeps this client's
  subscriptions and the QoS 1 messages for it across a disconnect and across its own restart
  (with persistence), so nothing published meanwhile is lost. The session belongs to this
  process's life only: its first connect discards whatever session an earlier process with the
  same client id left (an edge restarted holds none of its devices: commands queued for them
  must not be delivered to it), and filters given up while disconnected are unsubscribed at
  the next connect.

Reconnection is this owner's policy (aiomqtt leaves it to the caller): a loop around
``async with aiomqtt.Client(...)`` with capped exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import structlog

from xiaozhi.backoff import Backoff
from xiaozhi.config import parse_mqtt_url, redact_mqtt_url
from xiaozhi.mqtt_packets import encode_publish

__all__ = ["MESSAGE_OVERHEAD_BYTES", "MqttOwner", "OutMessage", "OwnerStats"]

log = structlog.get_logger("xiaozhi.mqtt")

_BATCH = 2000  # messages handed to paho between two yields to the event loop

PAHO_BACKLOG_BYTES = 1 << 20
"""Most bytes handed to paho and not yet written to the socket. Past it the writer waits, so
a stalled broker fills *our* bounded queue (whose watermark pauses the devices' reads) rather
than paho's unbounded one: under a flood with the broker stopped, the edge otherwise kept
every message in paho's deque (hundreds of MB)."""

MESSAGE_OVERHEAD_BYTES = 200
"""What a queued message costs beyond its topic and payload: the `OutMessage`, the two
objects' headers and the deque's slot (about 190 bytes measured with tracemalloc,
``xiaozhi bench overload``)."""

_BACKLOG_POLL_SECONDS = 0.005
"""How often the writer looks again while paho's backlog is over the bound (paho offers no
event for "written"; the check is a sum over a few packets)."""


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One message to publish. Build topics with `xiaozhi.topics`, never by hand."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


@dataclass(slots=True)
class OwnerStats:
    """Counters a process reports on /stats and /metrics."""

    connected: bool = False
    connects: int = 0
    published: int = 0  # handed to the broker connection
    acknowledged: int = 0  # QoS 1 PUBACKs received
    received: int = 0
    dropped_qos0: int = 0  # queue full (in messages or in bytes)
    dropped_qos1: int = 0  # queue past its hard bound (in messages or in bytes)
    requeued_qos1: int = 0  # sent, connection lost before PUBACK, queued again
    queued: int = 0
    queued_bytes: int = 0  # queued and in flight, as counted against the byte bound
    inflight: int = 0
    retained_remembered: int = 0  # retained messages kept to publish again after a reconnect
    socket_backlog_bytes: int = 0  # handed to paho, not yet written to the socket


class MqttOwner:
    """Owns the broker connection: a writer queue, the will, retained state, subscriptions.

    Args:
        url: ``mqtt://[user:password@]host[:port]``.
        client_id: unique per process (duplicate ids kick each other off the broker).
        will: the last will (e.g. ``bridge/edges/{id}`` offline, retained).
        birth: published first on every connect (e.g. the matching online message).
        on_message: called with (topic, payload) for every message of a subscription;
            runs on the event loop, so it must be quick (hand work to a queue or task).
        drop_retained: called with the topic of each retained message a subscription
            brings; True drops it before ``on_message`` (the caller counts and logs). For
            topics where a retained message is stale by nature, e.g. a voice command that
            Mosquitto would otherwise hand again to every hub that subscribes (shared
            subscriptions included).
        max_queued_messages: hard bound of messages waiting for the broker (queued and
            in flight); QoS 0 is dropped past it, QoS 1 is dropped past it too, and both
            are counted.
        max_queued_bytes: the same bound in bytes (module docstring); None for none.
        high_watermark: above this many pending messages :attr:`room` is cleared (default
            three quarters of the bound); likewise above three quarters of
            ``max_queued_bytes``.
        keepalive_seconds: MQTT keepalive.
        reconnect_min_seconds, reconnect_max_seconds: backoff between connection attempts.
        clean_session: False keeps the broker-side session (subscriptions and queued QoS 1
            messages) across disconnects and broker restarts, for a subscriber that must not
            miss a message; the first connect still starts afresh (module docstring).
        tls_context: for an ``mqtts://`` URL, how to verify the broker (and which client
            certificate to show): :func:`xiaozhi_runtime.tls.mqtt_tls_context`. Unset with
            ``mqtts://``: the system's trust store, the broker's host name checked.
    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        will: OutMessage | None = None,
        birth: Sequence[OutMessage] = (),
        on_message: Callable[[str, bytes], None] | None = None,
        drop_retained: Callable[[str], bool] | None = None,
        max_queued_messages: int = 200_000,
        max_queued_bytes: int | None = None,
        high_watermark: int | None = None,
        keepalive_seconds: int = 30,
        reconnect_min_seconds: float = 0.1,
        reconnect_max_seconds: float = 10.0,
        clean_session: bool = True,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self._username, self._password, tls = parse_mqtt_url(url)
        self._tls = tls_context or (ssl.create_default_context() if tls else None)
        self.url = url
        self.client_id = client_id
        self._will = will
        self._birth = tuple(birth)
        self._on_message = on_message
        self._drop_retained = drop_retained
        self._max_queued = max_queued_messages
        self._high_watermark = high_watermark or (max_queued_messages * 3) // 4
        self._max_bytes = max_queued_bytes or 1 << 62
        self._high_bytes = (self._max_bytes * 3) // 4
        self._bytes = 0  # of the messages in the queue and in flight
        self._keepalive = keepalive_seconds
        self._clean_session = clean_session
        self._backoff = Backoff(
            base_seconds=reconnect_min_seconds, max_seconds=reconnect_max_seconds, attempts=0
        )

        self._queue: collections.deque[OutMessage] = collections.deque()
        self._inflight: collections.deque[tuple[paho.MQTTMessageInfo, OutMessage]] = (
            collections.deque()
        )
        self._retained: dict[str, OutMessage] = {}
        self._subscriptions: dict[str, int] = {}
        # Given up while disconnected: a persistent session still has them at the broker.
        self._stale_filters: set[str] = set()
        self._client: aiomqtt.Client | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set on every PUBACK and written batch
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()  # set while there is no broker connection
        self.disconnected.set()
        self.room = asyncio.Event()
        self.room.set()
        self._stats = OwnerStats()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ producers

    def publish_nowait(self, message: OutMessage) -> bool:
        """Queue a message without waiting; False when it was dropped (and counted).

        A message that will wait (the queue is longer than the writer takes in one pass)
        keeps a copy of its payload of exact size: orjson's ``bytes`` keep its whole 4 KiB
        write buffer, so 200,000 queued sensor readings held 800 MB (docs/benchmarks.md,
        "Issue 14, point 4"). A message that leaves in this pass is not copied.
        """
        pending = len(self._queue) + len(self._inflight)
        size = len(message.topic) + len(message.payload) + MESSAGE_OVERHEAD_BYTES
        if pending >= self._max_queued or self._bytes + size > self._max_bytes:
            if message.qos:
                self._stats.dropped_qos1 += 1
            else:
                self._stats.dropped_qos0 += 1
            return False
        if pending >= _BATCH:
            message = replace(message, payload=bytes(memoryview(message.payload)))
        self._queue.append(message)
        self._bytes += size
        if pending + 1 >= self._high_watermark or self._bytes >= self._high_bytes:
            self.room.clear()
        self._wake.set()
        return True

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> bool:
        """Shorthand for :meth:`publish_nowait`; retained messages also go to the cache."""
        message = OutMessage(topic, payload, qos, retain)
        if retain:
            return self.retain(message)
        return self.publish_nowait(message)

    def retain(self, message: OutMessage) -> bool:
        """Publish a retained message and remember it for re-publishing after reconnects.

        An empty payload deletes the retained message at the broker and forgets it here. The
        remembered payload is a copy of exact size: orjson's ``bytes`` keep its whole write
        buffer (4 KiB for a device's 340-byte status), and an edge remembers one status per
        device (docs/benchmarks.md).
        """
        if message.payload:
            message = replace(message, payload=bytes(memoryview(message.payload)))
            self._retained[message.topic] = message
        else:
            self._retained.pop(message.topic, None)
        return self.publish_nowait(message)

    def forget(self, topic: str) -> None:
        """Stop remembering ``topic``'s retained message (the broker keeps it): for a topic
        whose owner has gone (a device that left this edge), so memory follows what is held
        here, not every id ever seen."""
        self._retained.pop(topic, None)

    async def subscribe(self, filters: Iterable[str], qos: int = 1) -> None:
        """Subscribe now if connected, and again after every reconnect."""
        new = [f for f in filters if self._subscriptions.get(f) != qos]
        for topic_filter in new:
            self._subscriptions[topic_filter] = qos
            self._stale_filters.discard(topic_filter)
        client = self._client
        if new and client is not None and self.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError):  # the reconnect re-subscribes
                await client.subscribe([(f, qos) for f in new])

    async def unsubscribe(self, filters: Iterable[str]) -> None:
        gone = [f for f in filters if self._subscriptions.pop(f, None) is not None]
        client = self._client
        if not gone:
            return
        if not self._clean_session:
            self._stale_filters.update(gone)  # until the broker has confirmed it
        if client is not None and self.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe(gone)
                self._stale_filters.difference_update(gone)

    @property
    def subscriptions(self) -> dict[str, int]:
        return dict(self._subscriptions)

    @property
    def stats(self) -> OwnerStats:
        self._reap_acks()
        self._stats.queued = len(self._queue)
        self._stats.queued_bytes = self._bytes
        self._stats.inflight = len(self._inflight)
        self._stats.retained_remembered = len(self._retained)
        client = self._client
        self._stats.socket_backlog_bytes = _paho_backlog(client._client) if client else 0
        self._stats.connected = self.connected.is_set()
        return self._stats

    @property
    def pending(self) -> int:
        """Messages not yet acknowledged by the broker (QoS 1) or not yet handed to it."""
        self._reap_acks()
        return len(self._queue) + len(self._inflight)

    # ------------------------------------------------------------------ lifetime

    async def start(self, *, wait_connected: float | None = None) -> None:
        """Start the connection loop; optionally wait until the first connect."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mqtt-owner-{self.client_id}")
        if wait_connected is not None:
            await asyncio.wait_for(self.connected.wait(), wait_connected)

    async def stop(self, *, flush_seconds: float = 5.0) -> None:
        """Flush what is queued (up to `flush_seconds`), then disconnect cleanly.

        A clean disconnect does not fire the will: publish any offline message yourself
        before calling this.
        """
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_flushed(), flush_seconds)
        task, self._task = self._task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.connected.clear()

    async def wait_flushed(self) -> None:
        """Return once nothing is pending: every message handed over, every QoS 1 acked."""
        while self.pending:
            if not self.connected.is_set():
                await self.connected.wait()
            self._progress.clear()
            self._wake.set()
            if self.pending:
                await self._progress.wait()

    async def _run(self) -> None:
        while True:
            connects_before = self._stats.connects
            error: str | None = None
            try:
                await self._session()
            except aiomqtt.MqttError as err:
                error = str(err)
            self._connection_lost()
            if self._stats.connects > connects_before:
                self._backoff.reset()  # it was up: the next outage starts small again
            delay = self._backoff.next_delay() or self._backoff.max_seconds
            if error is not None:
                log.warning(
                    "mqtt_disconnected",
                    broker=redact_mqtt_url(self.url),
                    error=error,
                    retry_in=delay,
                )
            await asyncio.sleep(delay)

    def _connection_lost(self) -> None:
        self.connected.clear()
        self.disconnected.set()
        self._client = None
        unacked = [m for info, m in self._inflight if not info.is_published()]
        self._inflight.clear()
        self._queue.extendleft(reversed(unacked))
        self._bytes = sum(map(_size, self._queue))  # the acked ones left with the in-flight
        self._stats.requeued_qos1 += len(unacked)
        self._progress.set()

    def _make_client(self, *, fresh: bool = False) -> aiomqtt.Client:
        """A client for one connection; ``fresh`` makes a throwaway clean-session one that
        only discards the broker's session for this client id."""
        will = None
        if self._will is not None and not fresh:
            w = self._will
            will = aiomqtt.Will(w.topic, w.payload, w.qos, w.retain)
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self._username,
            password=self._password,
            identifier=self.client_id,
            tls_context=self._tls,
            will=will,
            keepalive=self._keepalive,
            clean_session=self._clean_session or fresh,
            max_inflight_messages=1000,
            timeout=10,
            # Nagle's algorithm held small publishes and PUBACKs back: a QoS 1 round trip took
            # 88 ms with it and about 1 ms without (docs/benchmarks.md); the broker side is
            # mosquitto's `set_tcp_nodelay true`.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _session(self) -> None:
        if not self._clean_session and self._stats.connects == 0:
            # A clean connect and a DISCONNECT: the broker drops an earlier process's session.
            async with self._make_client(fresh=True):
                pass
        client = self._make_client()
        async with client:
            self._watch_acks(client)
            self._client = client
            self._stats.connects += 1
            reconnect = self._stats.connects > 1
            if self._stale_filters:
                stale = sorted(self._stale_filters)
                await client.unsubscribe(stale)
                self._stale_filters.difference_update(stale)
            if self._subscriptions:
                by_qos = list(self._subscriptions.items())
                await client.subscribe(by_qos)
            # Birth first, then (after a reconnect) the retained state, then the backlog.
            replay = list(self._birth)
            if reconnect:
                replay += list(self._retained.values())
            self._queue.extendleft(reversed(replay))
            self._bytes += sum(map(_size, replay))
            self.connected.set()
            self.disconnected.clear()
            log.info("mqtt_connected", broker=redact_mqtt_url(self.url), client_id=self.client_id)
            self._wake.set()
            writer = asyncio.create_task(self._writer(client), name="mqtt-writer")
            try:
                async for message in client.messages:
                    self._stats.received += 1
                    topic = str(message.topic)
                    if message.retain and self._drop_retained and self._drop_retained(topic):
                        continue
                    if self._on_message is not None:
                        payload = message.payload
                        if not isinstance(payload, bytes):
                            payload = b"" if payload is None else str(payload).encode()
                        self._dispatch(topic, payload)
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await writer

    def _dispatch(self, topic: str, payload: bytes) -> None:
        try:
            self._on_message(topic, payload)  # type: ignore[misc]
        except Exception:  # a handler bug must not take the connection down
            log.exception("mqtt_on_message_failed", topic=topic)

    def _watch_acks(self, client: aiomqtt.Client) -> None:
        """Chain onto paho's on_publish so PUBACKs wake whoever waits for a flush."""
        inner = client._client  # aiomqtt keeps its paho client here; we add, never replace
        previous = inner.on_publish

        def on_publish(*args: Any) -> None:
            if previous is not None:
                previous(*args)
            self._reap_acks()  # frees room for producers paused at the high watermark
            self._progress.set()

        inner.on_publish = on_publish

    @staticmethod
    def _hand_over(paho_client: paho.Client, run: list[bytes]) -> None:
        """Queue QoS 0 packets in paho's outgoing queue as one packet (module docstring).

        One `MQTTMessageInfo` for the run: paho marks it published once the last byte is
        written, and calls `on_publish` once, with mid 0 (which paho never gives out).
        """
        if run:
            data = run[0] if len(run) == 1 else b"".join(run)
            paho_client._packet_queue(paho.PUBLISH, data, 0, 0, paho.MQTTMessageInfo(0))

    def _reap_acks(self) -> None:
        inflight = self._inflight
        acked = 0
        while inflight and inflight[0][0].is_published():
            self._bytes -= _size(inflight.popleft()[1])
            acked += 1
        if acked:
            self._stats.acknowledged += acked
            self._maybe_room()

    def _maybe_room(self) -> None:
        """Let paused producers go on once the queue is below both watermarks."""
        if (
            len(self._queue) + len(self._inflight) < self._high_watermark
            and self._bytes < self._high_bytes
        ):
            self.room.set()

    async def _writer(self, client: aiomqtt.Client) -> None:
        """Move messages from the bounded queue to paho, at most
        :data:`PAHO_BACKLOG_BYTES` ahead of the socket."""
        paho_client = client._client  # non-blocking publish; see the module docstring
        mqtt5 = paho_client.protocol == paho.MQTTv5
        queue = self._queue
        while True:
            if not queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not paho_client.is_connected():
                raise aiomqtt.MqttCodeError(paho.MQTT_ERR_NO_CONN, "could not publish")
            if _paho_backlog(paho_client) > PAHO_BACKLOG_BYTES:
                await asyncio.sleep(_BACKLOG_POLL_SECONDS)  # the socket is full: let it drain
                continue
            sent = 0
            run: list[bytes] = []  # QoS 0 packets not yet handed to paho
            while queue and sent < _BATCH:
                message = queue.popleft()
                if not message.qos:
                    self._bytes -= _size(message)
                    try:
                        packet = encode_publish(
                            message.topic, message.payload, retain=message.retain, mqtt5=mqtt5
                        )
                    except ValueError:
                        self._hand_over(paho_client, run)
                        raise
                    run.append(packet)
                    sent += 1
                    continue
                self._hand_over(paho_client, run)
                run = []
                info = paho_client.publish(
                    message.topic, message.payload, message.qos, message.retain
                )
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    queue.appendleft(message)
                    raise aiomqtt.MqttCodeError(info.rc, "could not publish")
                self._inflight.append((info, message))
                sent += 1
            self._hand_over(paho_client, run)
            self._stats.published += sent
            self._progress.set()
            self._reap_acks()
            self._maybe_room()
            await asyncio.sleep(0)  # let the event loop write the socket


def _size(message: OutMessage) -> int:
    """What `message` counts against the byte bound."""
    return len(message.topic) + len(message.payload) + MESSAGE_OVERHEAD_BYTES


def _paho_backlog(paho_client: paho.Client) -> int:
    """Bytes paho holds for the socket (its private ``_out_packet``; paho is pinned)."""
    return sum(packet["to_process"] for packet in paho_client._out_packet)

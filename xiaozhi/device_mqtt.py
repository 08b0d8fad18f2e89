"""The server side of firmware's MQTT connection, sans-I/O: bytes in, events and bytes out.

The edge terminates real firmware's MQTT (firmware reference §2.2) the way it terminates
WebSockets; it is not a broker. This state machine serves exactly what the firmware sends and
refuses the rest with a reason (MQTT 3.1.1 carries none on the wire, so the reason is for the
log and the counters)::

    AWAIT_CONNECT --CONNECT (CONNACK 0 sent)--> OPEN --DISCONNECT / refusal--> CLOSED
          \\--anything else, bad CONNECT---------------------------------------^

* CONNECT: MQTT 3.1.1 only (CONNACK 1 otherwise). Who may connect is the caller's decision:
  it gets :class:`Connected` and answers with :meth:`DeviceMqttProtocol.accept` or
  :meth:`~DeviceMqttProtocol.refuse` (CONNACK 2, 4 or 5).
* PUBLISH at QoS 0: a :class:`Message`. QoS 1 or 2 closes (the gateway refuses them too).
* PINGREQ: PINGRESP, and :class:`Pinged` so the caller can count it.
* SUBSCRIBE: SUBACK with "failure" for every filter, the connection stays: older firmware
  subscribes to ``subscribe_topic`` and then works without it, since the edge pushes to
  ``devices/p2p/<mac>`` unasked (reference §2.2).
* DISCONNECT: :class:`Closed` with reason ``disconnect``.
* Anything else (UNSUBSCRIBE, PUBACK..., a second CONNECT, malformed or oversized bytes):
  :class:`Closed` with the reason; the caller closes the socket.

Use: ``receive_data(bytes)`` returns events, ``data_to_send()`` the bytes to write, after
every call; after ``accept()``, ``receive_data(b"")`` returns what the client sent right
behind its CONNECT. :meth:`~DeviceMqttProtocol.publish` queues a push to the device.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from xiaozhi.errors import UnsupportedPacket, UnsupportedVersion, WireError
from xiaozhi.mqtt_packets import (
    SUBACK_FAILURE,
    ConnackCode,
    Connect,
    PacketType,
    decode_connect,
    decode_publish,
    decode_subscribe,
    encode_connack,
    encode_pingresp,
    encode_publish,
    encode_suback,
    split_packet,
)

__all__ = [
    "Closed",
    "Connected",
    "DeviceMqttProtocol",
    "Event",
    "LinkState",
    "Message",
    "Pinged",
    "Subscribed",
]


class LinkState(enum.StrEnum):
    """Where a device's MQTT connection is; every transition is in :class:`DeviceMqttProtocol`."""

    AWAIT_CONNECT = "await_connect"  # socket open, no CONNECT yet
    AWAIT_ACCEPT = "await_accept"  # CONNECT read; the caller checks the credentials (what
    # follows it stays buffered until accept())
    OPEN = "open"  # CONNACK 0 sent: publishes flow both ways
    CLOSED = "closed"  # refused, disconnected or failed: write what is queued, close


@dataclass(frozen=True, slots=True)
class Connected:
    """A CONNECT arrived; answer with ``accept()`` or ``refuse(code, reason)``."""

    connect: Connect


@dataclass(frozen=True, slots=True)
class Message:
    """A QoS 0 PUBLISH from the device (its JSON on ``publish_topic``)."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pinged:
    """A PINGREQ, answered with PINGRESP already."""


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A SUBSCRIBE, answered with a failure SUBACK (nothing here to subscribe to)."""

    filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is over; ``reason`` says why (``disconnect`` when the device asked)."""

    reason: str
    error: WireError | None = None


Event: TypeAlias = Connected | Message | Pinged | Subscribed | Closed

_NAMES = {int(t): t.name for t in PacketType}


class DeviceMqttProtocol:
    """One device's MQTT connection (see the module docstring).

    Args:
        max_packet_bytes: The largest packet body accepted; a bigger declared length closes
            the connection before its body is read.
    """

    def __init__(self, *, max_packet_bytes: int) -> None:
        self.max_packet_bytes = max_packet_bytes
        self.state = LinkState.AWAIT_CONNECT
        self.connect: Connect | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []

    @property
    def closed(self) -> bool:
        """True once refused, disconnected or failed: write what is queued, then close."""
        return self.state is LinkState.CLOSED

    def data_to_send(self) -> bytes:
        """What to write to the socket now (empty when nothing)."""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def accept(self) -> None:
        """The caller admits the device: CONNACK 0, publishes flow."""
        if self.state is not LinkState.AWAIT_ACCEPT:
            raise RuntimeError(f"accept() in state {self.state}, expected after Connected")
        self.state = LinkState.OPEN
        self._out.append(encode_connack(ConnackCode.ACCEPTED))

    def refuse(self, code: ConnackCode) -> None:
        """The caller refuses the device: CONNACK ``code``, then close."""
        if self.state is not LinkState.AWAIT_ACCEPT:
            raise RuntimeError(f"refuse() in state {self.state}, expected after Connected")
        self.state = LinkState.CLOSED
        self._out.append(encode_connack(code))

    def publish(self, topic: str, payload: bytes) -> None:
        """Push ``payload`` to the device (QoS 0); dropped once closed."""
        if self.state is LinkState.OPEN:
            self._out.append(encode_publish(topic, payload))

    def receive_data(self, data: bytes) -> list[Event]:
        """Bytes from the socket; returns the events they complete, in order.

        Never raises for what the peer sent: a violation becomes :class:`Closed`.
        """
        if self.closed:
            return []
        self._buffer += data
        events: list[Event] = []
        # Stop after a CONNECT until the caller decides: a client may send more right behind
        # its CONNECT (MQTT 3.1.1 §3.1.4); call receive_data(b"") after accept() for them.
        while self.state in (LinkState.AWAIT_CONNECT, LinkState.OPEN):
            try:
                found = split_packet(self._buffer, max_packet_bytes=self.max_packet_bytes)
                if found is None:
                    break
                first, body, used = found
                del self._buffer[:used]
                event = self._packet(first, body)
            except UnsupportedVersion as err:
                self._out.append(encode_connack(ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION))
                event = self._fail(err)
            except WireError as err:
                event = self._fail(err)
            events.append(event)
        return events

    def _fail(self, err: WireError) -> Closed:
        self.state = LinkState.CLOSED
        self._buffer.clear()
        return Closed(str(err), err)

    def _refuse(self, packet: str, reason: str) -> Closed:
        return self._fail(UnsupportedPacket(packet=packet, reason=reason))

    def _packet(self, first: int, body: bytes) -> Event:
        kind, flags = first >> 4, first & 0x0F
        name = _NAMES.get(kind, f"packet type {kind}")
        if self.state is LinkState.AWAIT_CONNECT:
            if kind != PacketType.CONNECT:
                return self._refuse(name, "the first packet must be CONNECT")
            self.connect = decode_connect(body)
            self.state = LinkState.AWAIT_ACCEPT
            return Connected(self.connect)
        return self._open_packet(kind, flags, name, body)

    def _open_packet(self, kind: int, flags: int, name: str, body: bytes) -> Event:
        if kind == PacketType.PUBLISH:
            message = decode_publish(flags, body)
            if message.qos:
                return self._refuse(name, f"QoS {message.qos}: devices publish at QoS 0 here")
            return Message(message.topic, message.payload)
        if kind == PacketType.PINGREQ:
            self._out.append(encode_pingresp())
            return Pinged()
        if kind == PacketType.SUBSCRIBE:
            subscribe = decode_subscribe(body)
            codes = (SUBACK_FAILURE,) * len(subscribe.filters)
            self._out.append(encode_suback(subscribe.packet_id, codes))
            return Subscribed(subscribe.filters)
        if kind == PacketType.DISCONNECT:
            self.state = LinkState.CLOSED
            return Closed("disconnect")
        return self._refuse(
            name,
            "this edge terminates firmware MQTT (CONNECT, PUBLISH QoS 0, PINGREQ, "
            "DISCONNECT); it is not a broker",
        )

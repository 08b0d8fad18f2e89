"""Real firmware's MQTT + UDP transport, served by the edge itself (firmware reference §2).

Firmware whose setup answer carries an ``mqtt`` block keeps one MQTT connection from boot,
publishes its JSON on ``publish_topic`` and expects the server to push to
``devices/p2p/<mac>`` without ever subscribing; each voice session opens with a hello over
MQTT whose answer gives a UDP address and an AES-128-CTR key, and the audio travels as
encrypted datagrams. A stock broker cannot do the push, so the edge terminates these MQTT
connections itself, as it terminates WebSockets: the system's bus stays Mosquitto.

This module only moves bytes. The protocol logic is elsewhere and sans-I/O:

* :class:`~xiaozhi.device_mqtt.DeviceMqttProtocol`: the device's MQTT connection (CONNECT,
  PUBLISH QoS 0, PINGREQ, DISCONNECT; anything else refused with a reason);
* :class:`~xiaozhi.udp_audio.AudioChannel`: one voice session's datagrams (decrypt, replay
  and Opus checks, NAT learning, sealing the downlink);
* :class:`~xiaozhi_edge.session.DeviceSession`: the very session a WebSocket drives. Each
  hello starts one, wrapped in a :class:`~xiaozhi_edge.server.DeviceConnection` whose socket
  is a :class:`VoiceChannel`: its text goes out as an MQTT push, its binary frames (raw Opus,
  binary version 1) as datagrams, so TTS is paced by the same code as on WebSocket.

A voice session is what a WebSocket connection is for WebSocket firmware (which also opens
its socket per session, reference §1.1): the device is ``connected`` from the hello to the
goodbye (either side's), the idle timeout or the MQTT connection's end. A new hello on the
same MQTT connection replaces the session: new key, new ssrc, sequences from 0 (§2.3).

UDP datagrams are routed by their ssrc. Malformed, undecryptable, replayed and unknown-ssrc
datagrams are counted by reason and dropped; they never reach a session, so a hostile sender
cannot disturb another device's audio.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import structlog

from xiaozhi import jsonutil
from xiaozhi.device_mqtt import (
    Closed,
    Connected,
    DeviceMqttProtocol,
    Message,
    Pinged,
    Subscribed,
)
from xiaozhi.errors import (
    AuthenticationFailed,
    InvalidTopic,
    StaleSequence,
    Undecryptable,
    WireError,
)
from xiaozhi.mqtt_credentials import (
    DeviceClientId,
    decode_username,
    parse_client_id,
    password_matches,
)
from xiaozhi.mqtt_packets import ConnackCode, Connect
from xiaozhi.payloads import DeviceTransport
from xiaozhi.timestamps import wire_timestamp
from xiaozhi.tokens import Ed25519PublicKey, verify_token
from xiaozhi.topics import normalize_device_id
from xiaozhi.udp_audio import HEADER, KEY_BYTES, AudioChannel
from xiaozhi_edge.identity import ConnectionIdentity
from xiaozhi_edge.server import DEVICE_RECEIVE_BUFFER_BYTES, DeviceConnection
from xiaozhi_edge.settings import DeviceAuth, EdgeSettings

if TYPE_CHECKING:
    from xiaozhi_edge.server import EdgeServer

__all__ = ["MqttUdpCounters", "MqttUdpListener", "Refused", "VoiceChannel", "authenticate"]

log = structlog.get_logger("xiaozhi.edge.mqtt_udp")

_READ_BYTES: Final = 65_536
_KEEPALIVE_GRACE: Final = 1.5  # MQTT 3.1.1 §3.1.2.10: one and a half keep-alive periods
_DEVICE_GOODBYE: Final = "goodbye"  # the session's close reason for the device's own goodbye


class Refused(Exception):
    """A CONNECT the edge refuses: the CONNACK code to answer and the reason to log."""

    def __init__(self, code: ConnackCode, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def authenticate(
    connect: Connect,
    *,
    mode: DeviceAuth,
    token_key: Ed25519PublicKey | None,
    allowed: frozenset[str],
    signature_key: bytes | None,
    now: int,
) -> tuple[DeviceClientId, ConnectionIdentity]:
    """Who is connecting, from the xinnan-form credentials (:mod:`xiaozhi.mqtt_credentials`).

    ``token`` mode: the password is the device token the hub's setup endpoint signed for the
    client id's uuid and MAC (as in ``Authorization`` on WebSocket); or, when
    ``signature_key`` is set, the xinnan HMAC signature. ``allowlist``: the MAC is listed.
    ``open``: any well-formed client id.

    Raises:
        Refused: with CONNACK 2 (client id), 4 (user name or password) or 5 (not listed).
    """
    try:
        client = parse_client_id(connect.client_id)
        device_id = normalize_device_id(client.device_id)
    except (AuthenticationFailed, InvalidTopic) as err:
        raise Refused(ConnackCode.IDENTIFIER_REJECTED, str(err)) from err
    authenticated = mode is not DeviceAuth.OPEN
    if mode is DeviceAuth.TOKEN:
        _check_password(connect, client, token_key, signature_key, now)
    elif mode is DeviceAuth.ALLOWLIST and device_id not in {
        normalize_device_id(d) for d in allowed
    }:
        raise Refused(ConnackCode.NOT_AUTHORIZED, "device not in the allow-list")
    identity = ConnectionIdentity.from_handshake(
        client.device_id, client_id=client.uuid, authenticated=authenticated
    )
    return client, identity


def _check_password(
    connect: Connect,
    client: DeviceClientId,
    token_key: Ed25519PublicKey | None,
    signature_key: bytes | None,
    now: int,
) -> None:
    username, password = connect.username or "", connect.password or ""
    if signature_key is not None and password_matches(
        signature_key, connect.client_id, username, password
    ):
        return
    try:
        if username:
            decode_username(username)
        if client.uuid is None:
            raise AuthenticationFailed("a token needs the '<group>@@@<mac>@@@<uuid>' client id")
        assert token_key is not None  # load_edge_settings refuses token mode without it
        verify_token(
            token_key, password or None, client_id=client.uuid, device_id=client.device_id, now=now
        )
    except AuthenticationFailed as err:
        raise Refused(ConnackCode.BAD_USERNAME_OR_PASSWORD, err.reason) from err


@dataclass
class MqttUdpCounters:
    """What the transport counts (``/stats`` ``mqtt_udp``, ``/metrics``)."""

    links_accepted: int = 0
    links_refused: dict[str, int] = field(default_factory=dict)  # by CONNACK code name
    packets_refused: int = 0  # connections closed for a packet a terminator does not serve
    subscribes_refused: int = 0  # SUBSCRIBEs answered with a failure SUBACK
    hellos: int = 0
    datagrams_received: int = 0
    datagrams_sent: int = 0
    datagrams_dropped: dict[str, int] = field(default_factory=dict)  # by reason
    sequence_gaps: int = 0  # uplink datagrams lost in flight (accepted, like the firmware)

    def drop(self, reason: str) -> None:
        self.datagrams_dropped[reason] = self.datagrams_dropped.get(reason, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "links_accepted": self.links_accepted,
            "links_refused": dict(self.links_refused),
            "packets_refused": self.packets_refused,
            "subscribes_refused": self.subscribes_refused,
            "hellos": self.hellos,
            "datagrams_received": self.datagrams_received,
            "datagrams_sent": self.datagrams_sent,
            "datagrams_dropped": dict(self.datagrams_dropped),
            "sequence_gaps": self.sequence_gaps,
        }


class VoiceChannel:
    """One voice session's "socket" for :class:`DeviceConnection`: text as an MQTT push,
    binary frames (raw Opus) as encrypted datagrams, close as the end of the session."""

    def __init__(self, link: DeviceLink, channel: AudioChannel) -> None:
        self.link = link
        self.channel = channel
        self.conn: DeviceConnection | None = None
        self.ended = False
        self.remote_address = link.remote_address
        self.protocol = None  # no WebSocket under it: the edge's log reads close_fields
        # How the session ended, for the edge's ``device_disconnected`` line.
        self.close_fields: dict[str, object] = {"closed_by": "network"}

    @property
    def session_id(self) -> str | None:
        return self.conn.session.session_id if self.conn is not None else None

    async def send(self, message: str | bytes) -> None:
        """What :class:`DeviceConnection` sends the device."""
        if isinstance(message, str):
            await self.link.push(self._with_udp(message))
            return
        listener = self.link.listener
        peer = self.channel.peer
        if self.ended or peer is None or listener.transport is None:
            # The device's address is known from its first datagram only (reference §2.4).
            listener.counters.drop("downlink_before_first_datagram" if peer is None else "ended")
            return
        timestamp = self.channel.local_sequence * self.channel.frame_duration_ms
        listener.transport.sendto(self.channel.seal(message, timestamp), peer)
        listener.counters.datagrams_sent += 1

    def _with_udp(self, text: str) -> str:
        """The server hello as MQTT firmware needs it: ``transport: udp`` and the ``udp``
        block, or the firmware ignores it and times out after 10 s (reference §2.3)."""
        if '"hello"' not in text:
            return text
        message = jsonutil.loads_object(text)
        if message.get("type") != "hello":
            return text
        message["transport"] = "udp"
        message["udp"] = {
            "server": self.link.udp_host,
            "port": self.link.listener.udp_port,
            "encryption": "aes-128-ctr",  # the gateway sends it; the firmware ignores it
            "key": self.channel.key.hex(),
            "nonce": self.channel.nonce.hex(),
        }
        return jsonutil.dumps_text(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The session closed (goodbye, timeout, policy) or the edge stops: end it. The
        device is told with a goodbye, except when it said goodbye itself (§2.5)."""
        del code
        await self.end(goodbye=reason != _DEVICE_GOODBYE)

    def on_datagram(self, opus: bytes, now: float) -> None:
        """One decrypted uplink Opus packet (already checked by :class:`AudioChannel`)."""
        conn = self.conn
        if conn is None or self.ended:
            return
        conn.server.monitor.tap(conn, opus, now)
        outputs = conn.session.on_binary(opus, now, wire_timestamp(time.time()))
        if outputs:
            conn.execute_soon(outputs)

    async def end(self, *, goodbye: bool, superseded: bool = False) -> None:
        """End the session once: stop routing its ssrc, say goodbye, publish the status."""
        if self.ended:
            return
        self.ended = True
        if superseded:
            self.close_fields = {"closed_by": "device", "close_reason": "new hello"}
        elif goodbye:
            self.close_fields = {"closed_by": "edge", "close_reason": "goodbye"}
        else:
            self.close_fields = {"closed_by": "device", "close_reason": "goodbye"}
        link = self.link
        link.listener.channels.pop(self.channel.ssrc, None)
        if link.voice is self:
            link.voice = None
        conn = self.conn
        if conn is None:
            return
        if goodbye and conn.session.session_id is not None:
            await link.push(
                jsonutil.dumps_text({"type": "goodbye", "session_id": conn.session.session_id})
            )
        if superseded:
            conn.session.supersede(asyncio.get_running_loop().time(), wire_timestamp(time.time()))
        await conn.finish()


class DeviceLink:
    """One firmware MQTT connection: its protocol object, its identity, its voice session."""

    def __init__(
        self,
        listener: MqttUdpListener,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.listener = listener
        self.reader = reader
        self.writer = writer
        self.protocol = DeviceMqttProtocol(max_packet_bytes=listener.settings.max_frame_bytes)
        self.remote_address = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        self.udp_host: str = listener.settings.device_udp_host or (
            local[0] if local else "127.0.0.1"
        )
        self.client: DeviceClientId | None = None
        self.identity: ConnectionIdentity | None = None
        self.voice: VoiceChannel | None = None
        self.log = log.bind(remote=self.remote_address)

    async def run(self) -> None:
        keepalive: float | None = None
        try:
            while not self.protocol.closed:
                data = await asyncio.wait_for(self.reader.read(_READ_BYTES), keepalive)
                if not data:
                    break
                events = collections.deque(self.protocol.receive_data(data))
                while events:
                    event = events.popleft()
                    await self._event(event)
                    if isinstance(event, Connected) and not self.protocol.closed:
                        events.extend(self.protocol.receive_data(b""))  # sent behind CONNECT
                await self._flush()
                connect = self.protocol.connect
                if connect is not None and connect.keepalive_seconds:
                    keepalive = connect.keepalive_seconds * _KEEPALIVE_GRACE
        except TimeoutError:
            self.log.info("device_mqtt_keepalive_expired")
        except (ConnectionError, OSError):
            pass
        finally:
            if self.voice is not None:
                await self.voice.end(goodbye=False)
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()

    async def _flush(self) -> None:
        data = self.protocol.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def push(self, text: str) -> None:
        """Publish ``text`` to the device's inbox, ``devices/p2p/<mac>`` (no SUBSCRIBE
        needed: firmware since January 2025 never sends one, reference §2.2)."""
        if self.client is None or self.protocol.closed:
            return
        self.protocol.publish(self.client.inbox_topic, text.encode("utf-8"))
        with contextlib.suppress(ConnectionError, OSError):
            await self._flush()

    async def _event(self, event: Connected | Message | Pinged | Subscribed | Closed) -> None:
        counters = self.listener.counters
        match event:
            case Connected(connect=connect):
                self._admit(connect)
            case Message(payload=payload):
                await self._message(payload)
            case Subscribed(filters=filters):
                counters.subscribes_refused += 1
                self.log.info("device_mqtt_subscribe_refused", filters=list(filters)[:4])
            case Closed(reason=reason, error=error):
                if error is not None:
                    counters.packets_refused += 1
                    self.log.info("device_mqtt_closed", reason=reason)
            case Pinged():
                pass

    def _admit(self, connect: Connect) -> None:
        listener = self.listener
        try:
            self.client, self.identity = authenticate(
                connect,
                mode=listener.settings.device_auth,
                token_key=listener.server._token_key,
                allowed=listener.settings.allowed_devices,
                signature_key=listener.signature_key,
                now=int(time.time()),
            )
        except Refused as err:
            counts = listener.counters.links_refused
            counts[err.code.name] = counts.get(err.code.name, 0) + 1
            self.log.info("device_mqtt_refused", code=err.code.name, reason=err.reason)
            self.protocol.refuse(err.code)
            return
        if listener.stopping:
            self.protocol.refuse(ConnackCode.SERVER_UNAVAILABLE)
            return
        listener.counters.links_accepted += 1
        self.log = self.log.bind(device_id=self.identity.device_id)
        self.protocol.accept()

    async def _message(self, payload: bytes) -> None:
        server = self.listener.server
        try:
            message = jsonutil.loads_object(payload, max_bytes=server.limits.max_frame_bytes)
        except WireError as err:
            self.log.info("device_mqtt_bad_json", reason=str(err))
            message = None
        kind = message.get("type") if message is not None else None
        if kind == "hello" and message is not None:
            await self._hello(message)
            return
        voice = self.voice
        if voice is None or voice.conn is None:
            # No voice session: tell the device, as the gateway does (reference §2.5).
            if kind != "goodbye" and message is not None:
                session_id = message.get("session_id")
                await self.push(jsonutil.dumps_text({"type": "goodbye", "session_id": session_id}))
            return
        conn = voice.conn
        loop = asyncio.get_running_loop()
        text = payload.decode("utf-8", "replace")
        outputs = conn.session.on_text(text, loop.time(), wire_timestamp(time.time()))
        if outputs:
            await conn.execute(outputs)
        owner = server.owner
        if not owner.room.is_set():
            server.counters.reads_paused += 1
            await owner.room.wait()  # backpressure: pause this device's reads

    async def _hello(self, message: dict[str, Any]) -> None:
        """A new voice session: new key and ssrc, sequences from 0 (reference §2.3)."""
        listener = self.listener
        server = listener.server
        if self.voice is not None:
            await self.voice.end(goodbye=False, superseded=True)
        listener.counters.hellos += 1
        # Uplink datagrams carry raw Opus: the session's binary version 1, whatever `version`
        # the hello says (MQTT firmware sends 3 for its JSON, reference §2.3).
        message.pop("version", None)
        channel = AudioChannel(key=secrets.token_bytes(KEY_BYTES), ssrc=listener.new_ssrc())
        voice = VoiceChannel(self, channel)
        session = server.new_session(self.identity, transport=DeviceTransport.MQTT_UDP)
        conn = DeviceConnection(server, voice, session)  # type: ignore[arg-type]
        voice.conn = conn
        listener.channels[channel.ssrc] = voice
        self.voice = voice
        server.connections.add(conn)
        server.idle.clear()
        loop = asyncio.get_running_loop()
        outputs = session.on_text(
            jsonutil.dumps_text(message), loop.time(), wire_timestamp(time.time())
        )
        channel.frame_duration_ms = session.frame_duration_ms
        await conn.execute(outputs)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, listener: MqttUdpListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.listener.on_datagram(data, addr)


class MqttUdpListener:
    """The MQTT listener and the UDP socket of one edge process (started by the edge when
    ``XIAOZHI_DEVICE_MQTT_PORT`` is set)."""

    def __init__(self, server: EdgeServer) -> None:
        self.server = server
        self.settings: EdgeSettings = server.settings
        key = self.settings.device_mqtt_signature_key
        self.signature_key = key.get_secret_value().encode() if key is not None else None
        self.counters = MqttUdpCounters()
        self.links: set[DeviceLink] = set()
        self.channels: dict[int, VoiceChannel] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.stopping = False
        self.received = asyncio.Event()  # set after each datagram is handled (tests, bench)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def mqtt_port(self) -> int:
        """The bound MQTT port (the setting may be 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def udp_port(self) -> int:
        """The bound UDP port, the one every hello announces."""
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def new_ssrc(self) -> int:
        """A random ssrc no live session has (0 is never used: it reads as "unset")."""
        while True:
            ssrc = int.from_bytes(os.urandom(4), "big")
            if ssrc and ssrc not in self.channels:
                return ssrc

    async def start(self, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.settings.edge_host, self.settings.device_mqtt_port
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(host, self.settings.device_udp_port)
        )
        self._server = await asyncio.start_server(
            self._handle, host, port or 0, reuse_port=reuse_port or None
        )
        for sock in self._server.sockets:  # as the WebSocket listener's, for the same reason
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, DEVICE_RECEIVE_BUFFER_BYTES)
        log.info("device_mqtt_listening", mqtt_port=self.mqtt_port, udp_port=self.udp_port)

    async def stop(self) -> None:
        """Stop accepting, end every voice session with a goodbye, close the links."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for voice in list(self.channels.values()):
            await voice.close(1012, "edge restarting")
        for link in list(self.links):
            link.writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.shutdown_timeout_seconds)
        if self.transport is not None:
            self.transport.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = DeviceLink(self, reader, writer)
        self.links.add(link)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await link.run()
        finally:
            self.links.discard(link)
            if task is not None:
                self._tasks.discard(task)

    def on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """Route one datagram by its ssrc; count and drop anything that does not open."""
        try:
            self._route(data, addr)
        finally:
            self.received.set()

    def _route(self, data: bytes, addr: tuple[str, int]) -> None:
        counters = self.counters
        counters.datagrams_received += 1
        if len(data) < HEADER.size:
            counters.drop("malformed")
            return
        voice = self.channels.get(int.from_bytes(data[4:8], "big"))
        if voice is None:
            counters.drop("unknown_ssrc")
            return
        channel = voice.channel
        gaps = channel.gaps
        try:
            _, opus = channel.open(data, addr)
        except StaleSequence:
            counters.drop("stale_sequence")
            return
        except Undecryptable:
            counters.drop("undecryptable")
            return
        except WireError:
            counters.drop("malformed")
            return
        counters.sequence_gaps += channel.gaps - gaps
        voice.on_datagram(opus, asyncio.get_running_loop().time())

    def stats(self) -> dict[str, Any]:
        return {
            "mqtt_port": self.mqtt_port if self._server is not None else None,
            "udp_port": self.udp_port if self.transport is not None else None,
            "links": len(self.links),
            "voice_sessions": len(self.channels),
            **self.counters.snapshot(),
        }

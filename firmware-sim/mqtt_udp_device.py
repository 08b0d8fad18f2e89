"""A device in the real firmware's MQTT + UDP mode (firmware reference §2, issue 16 point 5).

What ``mqtt_protocol.cc`` does, over the same
:class:`~xiaozhi_sim.firmware_protocol.FirmwareSession` the WebSocket device drives (its
transport set to ``udp``):

* setup: the OTA answer's ``mqtt`` block (``endpoint`` ``host:port``, ``client_id``,
  ``username``, ``password``, ``publish_topic``) chooses this mode; without it a wake fails;
* one MQTT 3.1.1 connection with those credentials, kept across voice sessions, that **never
  subscribes**: the server pushes to ``devices/p2p/<mac>`` and paho delivers it anyway;
* each wake publishes a hello (``version: 3``, ``transport: udp``); the server's hello gives
  ``udp {server, port, key, nonce}``: a UDP socket is opened, sequences restart at 0;
* uplink Opus goes as AES-128-CTR datagrams (:func:`xiaozhi.udp_audio.encode_datagram`),
  downlink datagrams are checked (type, length, a sequence above the last) and decrypted
  before the session decodes them as TTS;
* the device's own close publishes a goodbye; the server's goodbye for the current session
  closes the audio channel without an answer (§2.5).

:class:`MqttUdpLink` stands where the WebSocket stands for
:class:`~xiaozhi_sim.ws_device.WsDevice` (``send``, ``recv``, ``close``), so everything above
the wire (speaking, ``say``, TTS recording, MCP, timeouts) is the WebSocket device's.
Hostile variants for tests: :attr:`Fault.BAD_KEY`, :attr:`Fault.REPLAYED_SEQUENCE`,
:attr:`Fault.WRONG_SSRC`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
from websockets.exceptions import ConnectionClosed

from xiaozhi import jsonutil
from xiaozhi.errors import WireError
from xiaozhi.messages import Transport
from xiaozhi.udp_audio import (
    HEADER,
    aes_ctr,
    decode_datagram,
    encode_datagram,
    opus_duration_ms,
)
from xiaozhi_sim.device import ChannelError, Fault, FaultNotApplicable, FaultResult
from xiaozhi_sim.firmware_protocol import FirmwareSession, SeedSession
from xiaozhi_sim.mic_and_speaker import FRAME_MS, MicrophoneEncoder
from xiaozhi_sim.paho_loop import PahoAsyncio
from xiaozhi_sim.ws_device import WsDevice

__all__ = ["MqttSetup", "MqttUdpDevice", "MqttUdpLink"]

CONNECT_TIMEOUT_SECONDS: Final = 10.0
_SILENCE_PCM: Final = bytes(2 * 16 * FRAME_MS)  # one frame of 16 kHz 16-bit silence


def _silence() -> bytes:
    """One real 60 ms Opus packet of silence (the microphone when nobody speaks)."""
    return next(MicrophoneEncoder().packets(_SILENCE_PCM))


@dataclass(frozen=True, slots=True)
class MqttSetup:
    """The setup answer's ``mqtt`` block (firmware reference §2.1)."""

    host: str
    port: int
    client_id: str
    username: str | None
    password: str | None
    publish_topic: str
    keepalive: int = 240

    @classmethod
    def from_answer(cls, answer: dict[str, Any] | None) -> MqttSetup | None:
        block = (answer or {}).get("mqtt")
        if not isinstance(block, dict) or not isinstance(block.get("endpoint"), str):
            return None
        host, _, port = block["endpoint"].rpartition(":")
        if not host or not port.isdigit():
            host, port = block["endpoint"], "8883"  # the firmware's default (TLS)
        keepalive = block.get("keepalive")
        return cls(
            host=host,
            port=int(port),
            client_id=str(block.get("client_id", "")),
            username=block.get("username"),
            password=block.get("password"),
            publish_topic=str(block.get("publish_topic") or "device-server"),
            keepalive=keepalive if isinstance(keepalive, int) and keepalive > 0 else 240,
        )


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, link: MqttUdpLink) -> None:
        self.link = link

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.link.on_datagram(data)


class MqttUdpLink:
    """One voice session's channel over the device's MQTT connection and a UDP socket."""

    def __init__(self, device: MqttUdpDevice) -> None:
        self.device = device
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.udp: asyncio.DatagramTransport | None = None
        self.key = self.nonce = b""
        self.local_sequence = 0  # last sent
        self.remote_sequence = 0  # last accepted
        self.last_datagram = b""
        self.session_id: str | None = None
        self.closed = False
        self.server_goodbye = False
        self.dropped = 0

    # -- what the device receives ------------------------------------------------------

    def on_push(self, payload: bytes) -> None:
        """A message the server pushed to ``devices/p2p/<mac>``."""
        if self.closed:
            return
        text = payload.decode("utf-8", "replace")
        with contextlib.suppress(WireError):
            obj = jsonutil.loads_object(text)
            if obj.get("type") == "goodbye" and obj.get("session_id") == self.session_id:
                self.server_goodbye = True  # §2.5: close, and say nothing back
                self.inbox.put_nowait(None)
                return
        self.inbox.put_nowait(text)

    def on_datagram(self, data: bytes) -> None:
        """One downlink datagram, checked as ``OnMessage`` does, then decrypted."""
        try:
            header, ciphertext = decode_datagram(data)
        except WireError:
            self.dropped += 1
            return
        if header.sequence <= self.remote_sequence or not self.key:
            self.dropped += 1
            return
        self.remote_sequence = header.sequence
        self.inbox.put_nowait(aes_ctr(self.key, data[: HEADER.size], ciphertext))

    async def recv(self) -> str | bytes:
        item = await self.inbox.get()
        if item is None:
            raise ConnectionClosed(None, None)
        if isinstance(item, str) and '"hello"' in item:
            await self._open_udp(item)
        return item

    async def _open_udp(self, text: str) -> None:
        """The server hello: take key and nonce, sequences to 0, open the UDP socket."""
        with contextlib.suppress(WireError, KeyError, TypeError, ValueError):
            obj = jsonutil.loads_object(text)
            if obj.get("type") != "hello" or obj.get("transport") != "udp":
                return
            udp = obj["udp"]
            key, nonce = bytes.fromhex(udp["key"]), bytes.fromhex(udp["nonce"])
            if len(key) != 16 or len(nonce) != 16:
                return
            self.key, self.nonce = key, nonce
            self.local_sequence = self.remote_sequence = 0
            session_id = obj.get("session_id")
            self.session_id = session_id if isinstance(session_id, str) else None
            if self.udp is not None:
                self.udp.close()
            loop = asyncio.get_running_loop()
            self.udp, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), remote_addr=(str(udp["server"]), int(udp["port"]))
            )
            # The firmware's microphone streams as soon as the channel opens; its first
            # datagram is also what teaches the server the device's address (§2.4).
            self.send_audio(_silence())

    # -- what the device sends ----------------------------------------------------------

    async def send(self, message: str | bytes) -> None:
        if self.closed:
            raise ConnectionClosed(None, None)
        if isinstance(message, str):
            self.device.publish(message)
        else:
            self.send_audio(message)

    def datagram(
        self, opus: bytes, *, key: bytes | None = None, sequence: int | None = None
    ) -> bytes:
        """One uplink datagram as ``SendAudio`` builds it (the next sequence unless given)."""
        if sequence is None:
            self.local_sequence += 1
            sequence = self.local_sequence
        return encode_datagram(key or self.key, self.nonce, opus, timestamp=0, sequence=sequence)

    def bad_key_datagram(self, opus: bytes) -> bytes:
        """``opus`` sealed with a random key. AES-CTR has no integrity check: under the real
        key it decrypts to noise, which a server tells from audio only by its Opus header;
        keep a key whose noise does not pass for a packet of 60 ms (about 93 % do not), so
        the fault is always one the server can notice."""
        while True:
            data = self.datagram(opus, key=os.urandom(16), sequence=self.local_sequence + 1)
            noise = aes_ctr(self.key, data[: HEADER.size], data[HEADER.size :])
            if opus_duration_ms(noise) != FRAME_MS:
                self.local_sequence += 1
                return data

    def send_audio(self, opus: bytes) -> None:
        if self.udp is None or not self.key:
            return  # no channel yet: the firmware's SendAudio returns false
        self.last_datagram = self.datagram(opus)
        self.udp.sendto(self.last_datagram)

    def send_raw(self, data: bytes) -> None:
        if self.udp is None:
            raise ChannelError("no UDP channel: the server hello has not come")
        self.udp.sendto(data)

    async def close(self) -> None:
        """``CloseAudioChannel``: a goodbye unless the server said it, then the UDP socket."""
        if self.closed:
            return
        self.closed = True
        if self.session_id is not None and not self.server_goodbye:
            self.device.publish(
                jsonutil.dumps_text({"session_id": self.session_id, "type": "goodbye"})
            )
        if self.udp is not None:
            self.udp.close()
        self.inbox.put_nowait(None)


class MqttUdpDevice(WsDevice):
    """A firmware device whose setup answer carries an ``mqtt`` block.

    Args: those of :class:`WsDevice` (its ``binary_version`` is ignored: datagrams carry raw
    Opus), plus ``paho``: the process's paho driver (one thread-free loop for a fleet).
    """

    def __init__(self, *args: Any, paho: PahoAsyncio | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.paho = paho
        self.client: mqtt.Client | None = None
        self.mqtt_rc: int | None = None
        self._link: MqttUdpLink | None = None

    def _new_session(
        self, hello_timeout: float = 10.0, silence_timeout: float = 120.0
    ) -> FirmwareSession | SeedSession:
        return FirmwareSession(
            self.identity,
            self.model,
            self.mcp,
            version=1,
            mode=self.mode,
            hello_timeout=hello_timeout,
            silence_timeout=silence_timeout,
            transport=Transport.UDP,
        )

    @property
    def mqtt_setup(self) -> MqttSetup | None:
        return MqttSetup.from_answer(self.setup.response)

    # -- the MQTT connection (kept from the first wake until stop) ----------------------

    def publish(self, text: str) -> None:
        setup = self.mqtt_setup
        if self.client is None or setup is None:
            return
        self.client.publish(setup.publish_topic, text.encode(), qos=0)

    async def _mqtt(self, setup: MqttSetup) -> mqtt.Client:
        if self.client is not None and self.client.is_connected():
            return self.client
        if self.client is not None:
            await self._mqtt_stop()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=setup.client_id,
            protocol=mqtt.MQTTv311,
        )
        if setup.username is not None:
            client.username_pw_set(setup.username, setup.password)
        loop = asyncio.get_running_loop()

        def changed() -> None:
            self._notify()

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            self.mqtt_rc = 0 if not reason.is_failure else int(reason.value)
            loop.call_soon_threadsafe(changed)

        def on_disconnect(*_args: Any) -> None:
            loop.call_soon_threadsafe(changed)
            link = self._link
            if link is not None:
                loop.call_soon_threadsafe(link.inbox.put_nowait, None)

        def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
            link = self._link
            if link is not None:
                loop.call_soon_threadsafe(link.on_push, bytes(message.payload))

        client.on_connect, client.on_disconnect = on_connect, on_disconnect
        client.on_message = on_message  # no SUBSCRIBE, ever: pushes arrive unasked
        self.client, self.mqtt_rc = client, None
        if self.paho is not None:
            self.paho.attach(client)
            client.connect(setup.host, setup.port, keepalive=setup.keepalive)
        else:
            client.connect_async(setup.host, setup.port, keepalive=setup.keepalive)
            client.loop_start()
        ok = await self.wait_until(lambda: self.mqtt_rc is not None, CONNECT_TIMEOUT_SECONDS)
        if not ok or self.mqtt_rc != 0:
            code = self.mqtt_rc
            await self._mqtt_stop()
            where = f"{setup.host}:{setup.port}"
            raise ChannelError(f"MQTT {where}: " + ("no CONNACK" if not ok else f"refused {code}"))
        self.log.info("mqtt_udp_connected", endpoint=f"{setup.host}:{setup.port}")
        return client

    async def _mqtt_stop(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        client.disconnect()
        if self.paho is None:
            await asyncio.to_thread(client.loop_stop)

    # -- the channel: WsDevice's, over MQTT + UDP ----------------------------------------

    async def _connect(self, url: str, headers: dict[str, str]) -> None:
        del url, headers
        session = self.session
        setup = self.mqtt_setup
        session.begin_connect(self.now())
        try:
            if setup is None:
                note = self.setup.error or "no 'mqtt' block in the setup answer"
                raise ChannelError(f"{self.device_id}: not in MQTT + UDP mode ({note})")
            self._link = MqttUdpLink(self)
            await self._mqtt(setup)
        except (ChannelError, OSError) as err:
            self._link = None
            session.channel_closed(self.now())
            self.stats.error("connect")
            self._record("error", {"type": "connect_failed", "error": str(err)})
            if isinstance(err, ChannelError):
                raise
            raise ChannelError(f"{self.device_id}: {err}") from err
        link = self._link
        self._ws = link  # type: ignore[assignment]  # what WsDevice reads and writes
        self.stats.connects += 1
        session.connected(self.now())
        await self._flush()
        self._reader = self.spawn(self._read_loop(link), "mqtt-udp-reader")  # type: ignore[arg-type]

    @property
    def link(self) -> MqttUdpLink | None:
        """The open voice session's channel (tests read its counters)."""
        return self._link

    async def stop(self) -> None:
        await super().stop()
        await self._mqtt_stop()

    async def inject(self, fault: Fault, **options: Any) -> FaultResult:
        """The datagram faults (``bad_key``, ``replayed_sequence``, ``wrong_ssrc``), each one
        datagram of 60 ms of silence; the WebSocket faults do not exist here."""
        del options
        if fault not in (Fault.BAD_KEY, Fault.REPLAYED_SEQUENCE, Fault.WRONG_SSRC):
            raise FaultNotApplicable(f"{fault} is not a fault of the MQTT + UDP transport")
        if not self.connected:
            await self.wake()
        link = self._link
        assert link is not None
        if fault is Fault.BAD_KEY:
            data = link.bad_key_datagram(_silence())
            detail = "a datagram sealed with a key the server never gave"
        elif fault is Fault.REPLAYED_SEQUENCE:
            if not link.last_datagram:
                link.send_audio(_silence())
            data = link.last_datagram
            detail = "the last datagram sent again"
        else:
            datagram = bytearray(link.datagram(_silence()))
            (ssrc,) = struct.unpack_from(">I", datagram, 4)
            struct.pack_into(">I", datagram, 4, ssrc ^ 0xFFFFFFFF)
            data = bytes(datagram)
            detail = "a datagram for an ssrc the server never gave"
        link.send_raw(data)
        result = FaultResult(fault, detail=detail)
        self._record("fault", result.as_message())
        return result

"""A firmware-like MQTT + UDP client for tests, built from the protocol, not from our codecs.

It does what ``mqtt_protocol.cc`` does (firmware reference §2): paho-mqtt connects with the
setup answer's client id, user name and password and **never subscribes**; JSON goes to the
publish topic at QoS 0; whatever the server pushes arrives through paho's ``on_message``. The
UDP side builds each datagram by hand (struct and `cryptography`'s AES-128-CTR): the server's
nonce with length, timestamp and sequence written in, as ``SendAudio`` does, so a mistake in
``xiaozhi/udp_audio.py`` cannot cancel itself out here.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.support import Recorder

HELLO = {
    "type": "hello",
    "version": 3,
    "transport": "udp",
    "features": {"mcp": True},
    "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60},
}


_CONNACK_3_1_1 = {0: 0, 132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


def ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, inbox: asyncio.Queue[bytes]) -> None:
        self.inbox = inbox

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.inbox.put_nowait(data)


class MqttUdpFirmware:
    """One device in MQTT mode. Use ``async with``; ``rc`` is the CONNACK code."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        publish_topic: str = "device-server",
    ) -> None:
        self.host, self.port = host, port
        self.publish_topic = publish_topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.rc: int | None = None
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.audio: asyncio.Queue[bytes] = asyncio.Queue()
        self.udp: asyncio.DatagramTransport | None = None
        self.key = self.nonce = b""
        self.sequence = 0  # last sent, as local_sequence_
        self.remote_sequence = 0
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.disconnected = False

    def _notify(self) -> None:
        self._loop.call_soon_threadsafe(self._changed.set)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        # paho 2 reports a 3.1.1 CONNACK code as its MQTT 5 reason code; back to 3.1.1's.
        self.rc = _CONNACK_3_1_1.get(reason.value, reason.value)
        self._notify()

    def _on_disconnect(self, *_args: Any) -> None:
        self.disconnected = True
        self._notify()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(
            self.messages.append, (message.topic, json.loads(message.payload))
        )
        self._notify()

    async def __aenter__(self) -> MqttUdpFirmware:
        self.client.connect_async(self.host, self.port, keepalive=240)
        self.client.loop_start()
        await self.until(lambda: self.rc is not None or self.disconnected, "CONNACK")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        if self.udp is not None:
            self.udp.close()

    async def until(self, check: Callable[[], Any], what: str, seconds: float = 10.0) -> Any:
        """Wait for ``check()`` to be truthy after a message or connection change."""
        async with asyncio.timeout(seconds):
            while not (found := check()):
                self._changed.clear()
                await self._changed.wait()
        assert found, what
        return found

    async def message(
        self, kind: str, after: int = 0, check: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """The first pushed message of ``type`` ``kind`` from index ``after`` on."""

        def find() -> dict[str, Any] | None:
            for _topic, payload in self.messages[after:]:
                if payload.get("type") == kind and (check is None or check(payload)):
                    return payload
            return None

        result: dict[str, Any] = await self.until(find, kind)
        return result

    def publish(self, payload: dict[str, Any]) -> None:
        self.client.publish(self.publish_topic, json.dumps(payload), qos=0)

    async def hello(self, **changes: Any) -> dict[str, Any]:
        """Open the audio channel as ``OpenAudioChannel`` does: hello, wait for the server's
        (with ``transport: udp``), take its key and nonce, sequences back to 0."""
        after = len(self.messages)
        self.publish({**HELLO, **changes})
        server = await self.message("hello", after, lambda m: m.get("transport") == "udp")
        udp = server["udp"]
        self.key, self.nonce = bytes.fromhex(udp["key"]), bytes.fromhex(udp["nonce"])
        assert len(self.key) == len(self.nonce) == 16
        self.sequence = self.remote_sequence = 0
        if self.udp is None:
            self.udp, _ = await self._loop.create_datagram_endpoint(
                lambda: _Udp(self.audio), remote_addr=(udp["server"], udp["port"])
            )
        self.session_id = server["session_id"]
        return server

    def datagram(
        self, opus: bytes, *, sequence: int | None = None, key: bytes | None = None
    ) -> bytes:
        """One datagram as ``SendAudio`` builds it (the next sequence unless given)."""
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        header = bytearray(self.nonce)
        struct.pack_into(">H", header, 2, len(opus))
        struct.pack_into(">II", header, 8, 0, sequence)
        return bytes(header) + ctr(key or self.key, bytes(header), opus)

    def send_audio(self, opus: bytes, **options: Any) -> bytes:
        data = self.datagram(opus, **options)
        self.send_raw(data)
        return data

    def send_raw(self, data: bytes) -> None:
        assert self.udp is not None
        self.udp.sendto(data)

    async def receive_audio(self, seconds: float = 10.0) -> bytes:
        """The next downlink packet, checked and decrypted as the firmware's ``OnMessage``."""
        async with asyncio.timeout(seconds):
            data = await self.audio.get()
        assert data[0] == 0x01
        (length,) = struct.unpack_from(">H", data, 2)
        (sequence,) = struct.unpack_from(">I", data, 12)
        assert len(data) == 16 + length
        assert sequence > self.remote_sequence, (sequence, self.remote_sequence)
        self.remote_sequence = sequence
        return ctr(self.key, data[:16], data[16:])


async def listening(device: MqttUdpFirmware, recorder: Recorder, events: str) -> None:
    """Return once the edge has the listen start: a wake word sent behind it on the same
    MQTT connection is published (audio before the start is dropped, as the firmware's
    wake-word burst is)."""
    device.publish({"session_id": device.session_id, "type": "listen", "state": "detect",
                    "text": "你好小智"})  # fmt: skip
    await recorder.expect(events, lambda e: e["event_type"] == "wake_word")

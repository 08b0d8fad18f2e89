"""A fleet behind an existing xiaozhi-mqtt-gateway points at this edge (issue 16 point 4).

:class:`Gateway` behaves as the xinnan Node gateway's ``WebSocketBridge`` (``app.js``) does for
one voice session of one MQTT + UDP device: it opens ``ws://.../xiaozhi/v1/?from=mqtt_gateway``
with the headers it sends (``device-id`` the MAC, ``client-id``, ``protocol-version: 2``,
``authorization: Bearer test-token``), says hello with ``version: 2``, sends each Opus packet
the device sent over UDP behind a 16-byte header (zero, timestamp @8, length @12), and reads
downlink audio as it does: ``timestamp`` @8, ``opus[16 : 16 + length@12]``. The byte work is
written out here, not borrowed from the edge's codec, so the test holds the edge to the
gateway's layout.

What a user notices: the device's words reach the bus as one utterance and its typed phrase as
a voice command; an answer comes back as paced, decodable TTS the gateway can relay, with a
clock the device can echo. In ``token`` mode the gateway is admitted only with the token it
signs with its ``SERVER_SECRET`` (``app.js`` ``WebSocketBridge.connect``, also written out
here), which the edge holds as ``XIAOZHI_GATEWAY_SECRET``; anything else gets a 401.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import struct
import time
import uuid
from typing import Any

import opuslib
import pytest
import structlog
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import StartEdge
from tests.edge.devices import Device
from tests.edge.helpers import tone_packets
from tests.support import Recorder, device_token_keys
from xiaozhi.payloads import CommandPayload, UtterancePayload
from xiaozhi.tokens import issue_token
from xiaozhi.topics import TopicTree
from xiaozhi_edge.server import EdgeServer
from xiaozhi_edge.settings import EdgeSettingsError, load_edge_settings

pytestmark = pytest.mark.integration  # a real Mosquitto

TOPICS = TopicTree()
GATEWAY = "?from=mqtt_gateway"
SECRET = "Te1st12134"  # the integration guide's example SERVER_SECRET


def new_mac() -> str:
    raw = uuid.uuid4().hex[:12]
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


class Gateway:
    """One ``WebSocketBridge``: the gateway's WebSocket for one device's voice session."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.texts: list[dict[str, Any]] = []
        self.audio: list[tuple[float, int, bytes]] = []  # (arrival, timestamp @8, opus)
        self.raw: list[bytes] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @staticmethod
    def headers(
        mac: str,
        *,
        secret: str | None = None,
        client_id: str | None = "uuid",
        timestamp: int | None = None,
    ) -> dict[str, str]:
        """What ``WebSocketBridge.connect`` sends: without ``SERVER_SECRET`` the token is
        ``test-token``; with it, ``base64url(HMAC-SHA256(secret, "clientId|mac|ts")).ts``,
        ``clientId`` the board's uuid or ``default-client-id`` (and then no client-id)."""
        token = "test-token"
        if secret is not None:
            at = int(time.time()) if timestamp is None else timestamp
            signed = f"{client_id or 'default-client-id'}|{mac}|{at}".encode()
            digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
            token = f"{base64.urlsafe_b64encode(digest).decode().rstrip('=')}.{at}"
        headers = {"device-id": mac, "protocol-version": "2", "authorization": f"Bearer {token}"}
        if client_id:
            headers["client-id"] = client_id
        return headers

    @classmethod
    async def connect(
        cls, port: int, mac: str, headers: dict[str, str] | None = None, *, query: str = GATEWAY
    ) -> Gateway:
        if headers is None:  # no SERVER_SECRET set at the gateway
            headers = cls.headers(mac, client_id=str(uuid.uuid4()))
        url = f"ws://127.0.0.1:{port}/xiaozhi/v1/{query}"
        return cls(await websockets.connect(url, additional_headers=headers))

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for data in self.ws:
                if isinstance(data, str):
                    self.texts.append(json.loads(data))
                else:  # app.js: readUInt32BE(8), readUInt32BE(12), subarray(16, 16 + len)
                    self.raw.append(data)
                    timestamp, length = struct.unpack_from(">II", data, 8)
                    self.audio.append((loop.time(), timestamp, data[16 : 16 + length]))
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        self._changed.set()

    async def until(self, check: Any, within: float = 15.0) -> None:
        async def wait() -> None:
            while not check():
                assert not self._reader.done(), f"connection closed; got {self.texts}"
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), within)

    async def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next(
                (
                    m
                    for m in self.texts
                    if m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())
                ),
                None,
            )

        await self.until(lambda: found() is not None)
        message = found()
        assert message is not None
        return message

    async def hello(self) -> dict[str, Any]:
        # parseHelloMessage -> bridge.connect(json.audio_params, json.features)
        await self.send_json(
            {
                "type": "hello",
                "version": 2,
                "transport": "websocket",
                "audio_params": {
                    "format": "opus",
                    "sample_rate": 16000,
                    "channels": 1,
                    "frame_duration": 60,
                },
                "features": {"mcp": False},
            }
        )
        return await self.expect("hello")

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def send_audio(self, opus: bytes, timestamp: int) -> None:
        # WebSocketBridge.sendAudio: Buffer.alloc(16 + n), timestamp @8, n @12, opus @16
        await self.ws.send(bytes(8) + struct.pack(">II", timestamp, len(opus)) + opus)

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


async def test_a_gateway_session_s_speech_and_phrase_reach_the_bus(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    edge = await start_edge()
    mac = new_mac()
    device_id = mac.replace(":", "")
    gateway = await Gateway.connect(edge.port, mac)
    server = await gateway.hello()
    # the gateway resolves on this hello and forwards its session_id and audio_params
    assert server["session_id"]
    assert server["audio_params"]["frame_duration"] == 60
    await integrator.expect(TOPICS.status(device_id), lambda s: s["status"] == "connected")

    spoken = tone_packets(1200)  # 20 frames of real Opus, as the device sent them over UDP
    await gateway.send_json({"session_id": server["session_id"], "type": "listen",
                             "state": "start", "mode": "manual"})  # fmt: skip
    for index, packet in enumerate(spoken):
        await gateway.send_audio(packet, timestamp=1000 + 60 * index)
    await gateway.send_json({"session_id": server["session_id"], "type": "listen",
                             "state": "stop"})  # fmt: skip
    message = await integrator.first(lambda m: m.topic == TOPICS.utterance(device_id))
    # every packet, header stripped, in order: the utterance is the device's own audio
    assert UtterancePayload.from_wire(message.payload).opus_packets() == spoken

    await gateway.send_json({"session_id": server["session_id"], "type": "listen",
                             "state": "detect", "text": "turn on the kitchen light"})  # fmt: skip
    voice = await integrator.expect(
        TOPICS.voice_command_events(), lambda e: e["device_id"] == device_id
    )
    assert voice["command"] == "turn on the kitchen light"
    assert not [m for m in gateway.texts if m.get("type") == "error"]
    await gateway.close()
    await integrator.expect(TOPICS.status(device_id), lambda s: s["status"] == "disconnected")


async def test_an_answer_reaches_the_gateway_as_headed_paced_tts(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    edge = await start_edge()
    mac = new_mac()
    device_id = mac.replace(":", "")
    gateway = await Gateway.connect(edge.port, mac)
    await gateway.hello()
    await integrator.expect(TOPICS.device_connected(), lambda e: e["device_id"] == device_id)
    text = "The kitchen light is on."
    payload = CommandPayload(
        command="respond", parameters={"text": text}, message_id=uuid.uuid4().hex
    )
    await integrator.publish(TOPICS.command(device_id), payload.to_wire())
    await gateway.expect("tts", state="start")
    assert (await gateway.expect("tts", state="sentence_start"))["text"] == text
    await gateway.expect("tts", state="stop")

    assert len(gateway.audio) > 5
    decoder = opuslib.Decoder(16000, 1)
    for _, _, opus in gateway.audio:
        assert len(decoder.decode(opus, 960)) == 960 * 2  # real 60 ms Opus, whole
    # the xinnan server's header: type 1, u16 length, the packet's index, the clock, length
    for index, frame in enumerate(gateway.raw):
        kind, flag, short, sequence, _, length = struct.unpack_from(">BBHIII", frame)
        assert (kind, flag, short, sequence, length) == (1, 0, length, index, len(frame) - 16)
    # the clock advances one frame per packet, for the device's AEC echo
    stamps = [timestamp for _, timestamp, _ in gateway.audio]
    assert [b - a for a, b in itertools.pairwise(stamps)] == [60] * (len(stamps) - 1)
    # paced as on any WebSocket: a 5-frame pre-buffer, then one frame per 60 ms
    spread = gateway.audio[-1][0] - gateway.audio[0][0]
    assert spread >= (len(gateway.audio) - 5) * 0.060 * 0.8
    await gateway.close()


async def test_a_plain_firmware_socket_is_not_taken_for_the_gateway(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    """Without ``?from=mqtt_gateway`` a version-2 socket keeps the firmware's own v2 header:
    the gateway's (version field 0) is refused there, as it always was."""
    edge = await start_edge()
    mac = new_mac()
    url = f"ws://127.0.0.1:{edge.port}/xiaozhi/v1/"
    async with websockets.connect(
        url, additional_headers={"device-id": mac, "protocol-version": "2"}
    ) as ws:
        gateway = Gateway(ws)
        server = await gateway.hello()
        await gateway.send_json({"session_id": server["session_id"], "type": "listen",
                                 "state": "start", "mode": "manual"})  # fmt: skip
        await gateway.send_audio(tone_packets(60)[0], timestamp=0)
        error = await gateway.expect("error")
        assert "version" in json.dumps(error).lower()


async def _speak(gateway: Gateway, session_id: str, spoken: list[bytes]) -> None:
    """A manual listen carrying ``spoken`` behind the gateway's 16-byte header."""
    await gateway.send_json({"session_id": session_id, "type": "listen", "state": "start",
                             "mode": "manual"})  # fmt: skip
    for index, packet in enumerate(spoken):
        await gateway.send_audio(packet, timestamp=1000 + 60 * index)
    await gateway.send_json({"session_id": session_id, "type": "listen", "state": "stop"})


async def _token_edge(start_edge: StartEdge, **settings: object) -> tuple[EdgeServer, str, str]:
    """An edge in token mode; also the hub's device token for one device it admits."""
    key, public = device_token_keys()
    edge = await start_edge(device_auth="token", device_token_public_key=public, **settings)
    mac = new_mac()
    token = issue_token(key, client_id="client-uuid-1", device_id=mac, issued_at=int(time.time()))
    return edge, mac, token


async def test_in_token_mode_a_gateway_signing_with_the_shared_secret_is_served(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    edge, _, _ = await _token_edge(start_edge, gateway_secret=SECRET)
    for client_id in (str(uuid.uuid4()), None):  # a GID@@@mac@@@uuid device, a GID@@@mac one
        mac = new_mac()
        device_id = mac.replace(":", "")
        headers = Gateway.headers(mac, secret=SECRET, client_id=client_id)
        gateway = await Gateway.connect(edge.port, mac, headers)
        server = await gateway.hello()
        await integrator.expect(
            TOPICS.device_connected(), lambda e, d=device_id: e["device_id"] == d
        )
        spoken = tone_packets(600)
        await _speak(gateway, server["session_id"], spoken)
        message = await integrator.first(lambda m, d=device_id: m.topic == TOPICS.utterance(d))
        assert UtterancePayload.from_wire(message.payload).opus_packets() == spoken
        await gateway.close()


async def test_in_token_mode_a_gateway_token_that_does_not_verify_is_refused_with_401(
    start_edge: StartEdge, integrator: Recorder
) -> None:
    edge, device_mac, device_token = await _token_edge(start_edge, gateway_secret=SECRET)
    mac = new_mac()
    now = int(time.time())
    signed = Gateway.headers(mac, secret=SECRET)
    device_headers = {
        **Gateway.headers(device_mac, client_id="client-uuid-1"),
        "authorization": f"Bearer {device_token}",
    }
    for headers, query, reason in [
        (Gateway.headers(mac), GATEWAY, "the gateway sent 'test-token': set its SERVER_SECRET"),
        (Gateway.headers(mac, secret="Another1secret"), GATEWAY, "not valid for this device"),
        (Gateway.headers(mac, secret=SECRET, timestamp=now - 400), GATEWAY, "expired"),
        (Gateway.headers(mac, secret=SECRET, timestamp=now + 400), GATEWAY, "in the future"),
        ({k: v for k, v in signed.items() if k != "authorization"}, GATEWAY, "no token"),
        ({**signed, "device-id": new_mac()}, GATEWAY, "not valid for this device"),
        ({**signed, "client-id": "another-board"}, GATEWAY, "not valid for this device"),
        # the hub's device token is not the gateway's, and the gateway's is no device token
        (device_headers, GATEWAY, "gateway token not valid for this device"),
        (signed, "", "token not valid for this device"),
    ]:
        with pytest.raises(websockets.InvalidStatus) as info:
            await Gateway.connect(edge.port, mac, headers, query=query)
        assert info.value.response.status_code == 401
        assert reason in json.loads(info.value.response.body)["error"]

    # devices keep their own tokens beside the gateway
    device = await Device.connect(
        edge.port, device_id=device_mac, headers={"Authorization": f"Bearer {device_token}"}
    )
    await device.hello()
    await device.close()
    # Nothing of the refused one reached the bus: a later, served session's status came
    # through this edge's one MQTT connection after anything they could have published.
    served = new_mac()
    gateway = await Gateway.connect(edge.port, served, Gateway.headers(served, secret=SECRET))
    await gateway.hello()
    await integrator.expect(
        TOPICS.status(served.replace(":", "")), lambda s: s["status"] == "connected"
    )
    assert not [m for m in integrator.messages if mac.replace(":", "") in m.topic + str(m.obj)]
    await gateway.close()


async def test_in_token_mode_without_a_gateway_secret_the_refusal_names_the_setting(
    start_edge: StartEdge,
) -> None:
    edge, _, _ = await _token_edge(start_edge)
    mac = new_mac()
    for headers in (Gateway.headers(mac), Gateway.headers(mac, secret=SECRET)):
        with pytest.raises(websockets.InvalidStatus) as info:
            await Gateway.connect(edge.port, mac, headers)
        assert info.value.response.status_code == 401
        assert "XIAOZHI_GATEWAY_SECRET" in json.loads(info.value.response.body)["error"]


def test_the_gateway_secret_is_never_echoed() -> None:
    with pytest.raises(EdgeSettingsError) as info:
        load_edge_settings(device_auth="open", gateway_secret="short")
    assert "XIAOZHI_GATEWAY_SECRET=<hidden>: at least 8 characters" in str(info.value)
    assert "short" not in str(info.value)
    settings = load_edge_settings(device_auth="open", gateway_secret=SECRET)
    assert SECRET not in repr(settings) + str(settings)


async def test_a_gateway_secret_an_edge_does_not_check_is_logged_as_a_warning(
    start_edge: StartEdge,
) -> None:
    """In ``allowlist`` mode the secret is not consulted: the operator is told at start."""
    with structlog.testing.capture_logs() as logs:
        await start_edge(device_auth="allowlist", gateway_secret=SECRET)
        await _token_edge(start_edge, gateway_secret=SECRET)
    (unused,) = [line for line in logs if line["event"] == "gateway_secret_unused"]
    assert unused["log_level"] == "warning"
    assert "allowlist mode" in unused["hint"]
    assert SECRET not in str(logs)
